//! `/stats` (text and JSON) and `/stats/prometheus`, in Envoy's formats,
//! with Envoy's default tag extraction for Prometheus names and labels.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use regex::Regex;

use super::{AdminState, Query, Reply};
use crate::stats::{self, HistogramSnapshot, BUCKETS, QUANTILES};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsType {
    All,
    Counters,
    Gauges,
    Histograms,
    TextReadouts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Prometheus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buckets {
    /// Quantile summary (the default).
    None,
    Cumulative,
    Disjoint,
}

/// `/stats` query parameters (Envoy's `StatsParams::parse`).
pub struct StatsParams {
    pub used_only: bool,
    pub filter: Option<Regex>,
    pub kind: StatsType,
    pub format: Format,
    pub buckets: Buckets,
    pub prometheus_text_readouts: bool,
}

impl StatsParams {
    /// Err is the 400 body.
    pub fn parse(q: &Query) -> Result<StatsParams, String> {
        let filter = match q.get("filter") {
            Some(f) => Some(Regex::new(f).map_err(|_| "Invalid re2 regex".to_string())?),
            None => None,
        };
        let buckets = match q.get("histogram_buckets") {
            None | Some("summary") | Some("none") => Buckets::None,
            Some("cumulative") => Buckets::Cumulative,
            Some("disjoint") => Buckets::Disjoint,
            Some(_) => {
                return Err("usage: /stats?histogram_buckets=(cumulative|disjoint|detailed|summary)\n".into())
            }
        };
        let kind = match q.get("type") {
            None | Some("All") => StatsType::All,
            Some("Counters") => StatsType::Counters,
            Some("Gauges") => StatsType::Gauges,
            Some("Histograms") => StatsType::Histograms,
            Some("TextReadouts") => StatsType::TextReadouts,
            Some(_) => return Err("invalid &type= param".into()),
        };
        let format = match q.get("format") {
            None | Some("text") => Format::Text,
            Some("json") => Format::Json,
            Some("prometheus") => Format::Prometheus,
            Some("html") => return Err("HTML output is not supported by legate".into()),
            Some("active-html") => return Err("Active HTML output is not supported by legate".into()),
            Some(_) => return Err("usage: /stats?format=(html|active-html|json|prometheus|text)\n\n".into()),
        };
        Ok(StatsParams {
            used_only: q.has("usedonly"),
            filter,
            kind,
            format,
            buckets,
            prometheus_text_readouts: q.has("text_readouts"),
        })
    }

    fn shows(&self, name: &str, used: bool) -> bool {
        (!self.used_only || used) && self.filter.as_ref().is_none_or(|re| re.is_match(name))
    }
}

/// The stats selected by the parameters, read once.
struct Selection {
    text_readouts: Vec<(String, String)>,
    /// Counters and gauges together, sorted by name.
    numbers: BTreeMap<String, i128>,
    histograms: Vec<(String, HistogramSnapshot, Option<HistogramSnapshot>)>,
}

fn select(state: &AdminState, p: &StatsParams) -> Selection {
    let st = stats::store();
    let mut sel = Selection {
        text_readouts: Vec::new(),
        numbers: BTreeMap::new(),
        histograms: Vec::new(),
    };
    if matches!(p.kind, StatsType::All | StatsType::TextReadouts) {
        sel.text_readouts = st
            .text_readouts()
            .into_iter()
            .filter(|(n, _)| p.shows(n, true))
            .collect();
    }
    if matches!(p.kind, StatsType::All | StatsType::Counters) {
        for (n, c) in st.counters() {
            if p.shows(&n, c.used()) {
                sel.numbers.insert(n, i128::from(c.value()));
            }
        }
    }
    if matches!(p.kind, StatsType::All | StatsType::Gauges) {
        for (n, g) in st.gauges() {
            if p.shows(&n, g.used()) {
                sel.numbers.insert(n, i128::from(g.value()));
            }
        }
    }
    if matches!(p.kind, StatsType::All | StatsType::Histograms) {
        for (n, h) in st.histograms() {
            if p.shows(&n, h.used()) {
                let (cum, interval) = state.histogram_views(&n, &h);
                sel.histograms.push((n, cum, interval));
            }
        }
    }
    sel
}

/// `GET /stats`.
pub fn stats(state: &AdminState, q: &Query) -> Reply {
    let p = match StatsParams::parse(q) {
        Ok(p) => p,
        Err(e) => return Reply::text(400, e),
    };
    state.refresh_gauges();
    match p.format {
        Format::Prometheus => Reply::text(200, prometheus(state, &p)),
        Format::Json => Reply::json(200, json(&select(state, &p))),
        Format::Text => Reply::text(200, text(&select(state, &p), p.buckets)),
    }
}

/// `GET /stats/prometheus`.
pub fn prometheus_handler(state: &AdminState, q: &Query) -> Reply {
    let p = match StatsParams::parse(q) {
        Ok(p) => p,
        Err(e) => return Reply::text(400, e),
    };
    state.refresh_gauges();
    Reply::text(200, prometheus(state, &p))
}

/// [`QUANTILES`] as the percentages Envoy prints (`P99.5`).
const PERCENTS: [f64; 10] = [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0];

/// A double as Envoy's `fmt::format("{}", v)` prints it (shortest form,
/// `nan`), rounded to 3 decimals: our quantiles are estimates anyway.
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        return "nan".to_string();
    }
    let r = (v * 1000.0).round() / 1000.0;
    format!("{r}")
}

fn quantiles_or_nan(s: Option<&HistogramSnapshot>) -> [f64; 10] {
    s.and_then(|s| s.quantiles()).unwrap_or([f64::NAN; 10])
}

fn text(sel: &Selection, buckets: Buckets) -> String {
    let mut out = String::new();
    for (n, v) in &sel.text_readouts {
        let _ = writeln!(out, "{n}: \"{v}\"");
    }
    for (n, v) in &sel.numbers {
        let _ = writeln!(out, "{n}: {v}");
    }
    for (n, cum, interval) in &sel.histograms {
        if cum.count == 0 {
            let _ = writeln!(out, "{n}: No recorded values");
            continue;
        }
        let parts: Vec<String> = match buckets {
            Buckets::None => {
                let c = quantiles_or_nan(Some(cum));
                let i = quantiles_or_nan(interval.as_ref());
                QUANTILES
                    .iter()
                    .enumerate()
                    .map(|(k, _)| format!("P{}({},{})", PERCENTS[k], fmt_value(i[k]), fmt_value(c[k])))
                    .collect()
            }
            Buckets::Cumulative | Buckets::Disjoint => {
                let empty = HistogramSnapshot::from_values(&[]);
                let iv = interval.as_ref().unwrap_or(&empty);
                let (ci, ii) = if buckets == Buckets::Cumulative {
                    (cum.cumulative().to_vec(), iv.cumulative().to_vec())
                } else {
                    (cum.buckets.to_vec(), iv.buckets.to_vec())
                };
                BUCKETS
                    .iter()
                    .enumerate()
                    .map(|(k, b)| format!("B{b}({},{})", ii[k], ci[k]))
                    .collect()
            }
        };
        let _ = writeln!(out, "{n}: {}", parts.join(" "));
    }
    out
}

/// A JSON number as Envoy prints it: integers without `.0`, NaN as null.
fn json_number(v: f64) -> serde_json::Value {
    if v.is_nan() {
        serde_json::Value::Null
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        serde_json::Value::from(v as i64)
    } else {
        serde_json::Value::from((v * 1000.0).round() / 1000.0)
    }
}

fn json(sel: &Selection) -> String {
    let mut stats = Vec::new();
    for (n, v) in &sel.text_readouts {
        stats.push(serde_json::json!({"name": n, "value": v}));
    }
    for (n, v) in &sel.numbers {
        let value = i64::try_from(*v).map(serde_json::Value::from).unwrap_or_default();
        stats.push(serde_json::json!({"name": n, "value": value}));
    }
    if !sel.histograms.is_empty() {
        let supported: Vec<serde_json::Value> = PERCENTS.iter().map(|q| json_number(*q)).collect();
        let computed: Vec<serde_json::Value> = sel
            .histograms
            .iter()
            .map(|(n, cum, interval)| {
                let c = quantiles_or_nan(Some(cum));
                let i = quantiles_or_nan(interval.as_ref());
                let values: Vec<serde_json::Value> = (0..QUANTILES.len())
                    .map(|k| serde_json::json!({"cumulative": json_number(c[k]), "interval": json_number(i[k])}))
                    .collect();
                serde_json::json!({"name": n, "values": values})
            })
            .collect();
        stats.push(serde_json::json!({"histograms": {
            "supported_quantiles": supported,
            "computed_quantiles": computed,
        }}));
    }
    serde_json::json!({ "stats": stats }).to_string()
}

// ---------------------------------------------------------------------------
// Prometheus

/// Envoy's default tag extractors (`source/common/config/well_known_names.cc`)
/// for the stats legate has: `(tag name, regex)`. Group 1 of each regex is
/// removed from the name, group 2 is the tag value. Extractors without a
/// fixed first token run first, as in Envoy's `TagProducerImpl`.
fn extractors() -> &'static [(&'static str, Regex)] {
    static X: std::sync::OnceLock<Vec<(&'static str, Regex)>> = std::sync::OnceLock::new();
    X.get_or_init(|| {
        const ADDR: &str = r"(?:[_.0-9]*|[_\[\]aAbBcCdDeEfF0-9]*)";
        let raw: Vec<(&'static str, String)> = vec![
            ("envoy.response_code", r"_rq(_(\d{3}))$".into()),
            ("envoy.response_code_class", r"_rq_((\d))xx$".into()),
            (
                "envoy.rds_route_config",
                r"^http\.\w+?\.rds\.((.*?)\.)\w+?$".into(),
            ),
            ("envoy.http_conn_manager_prefix", r"^http\.(([^.]*)\.)".into()),
            (
                "envoy.http_conn_manager_prefix",
                r"^listener\..*?\.http\.(([^.]*)\.)".into(),
            ),
            ("envoy.listener_address", format!(r"^listener\.(({ADDR})\.)")),
            (
                "envoy.worker_id",
                format!(r"^listener\.(?:{ADDR}\.)?(worker_(\d+)\.)"),
            ),
            ("envoy.cluster_name", r"^cluster\.(([^.]*)\.)".into()),
            ("envoy.tcp_prefix", r"^tcp\.(([^.]*)\.)".into()),
        ];
        raw.into_iter()
            .filter_map(|(n, r)| Regex::new(&r).ok().map(|re| (n, re)))
            .collect()
    })
}

/// `(tag-extracted name, tags)` for a stat name.
pub fn extract_tags(name: &str) -> (String, Vec<(String, String)>) {
    let mut remove: Vec<(usize, usize)> = Vec::new();
    let mut tags: Vec<(String, String)> = Vec::new();
    for (tag, re) in extractors() {
        if tags.iter().any(|(t, _)| t == tag) {
            continue;
        }
        let Some(c) = re.captures(name) else { continue };
        let (Some(whole), Some(value)) = (c.get(1), c.get(2)) else {
            continue;
        };
        // Envoy's listener regexes must capture something non-empty.
        if value.as_str().is_empty() {
            continue;
        }
        remove.push((whole.start(), whole.end()));
        tags.push((tag.to_string(), value.as_str().to_string()));
    }
    let mut out = String::with_capacity(name.len());
    for (i, ch) in name.char_indices() {
        if !remove.iter().any(|(s, e)| i >= *s && i < *e) {
            out.push(ch);
        }
    }
    (out, tags)
}

/// `[^a-zA-Z0-9_]` → `_` (Envoy's Prometheus `sanitizeName`).
fn prom_sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn labels(tags: &[(String, String)]) -> String {
    tags.iter()
        .map(|(k, v)| format!("{}=\"{}\"", prom_sanitize(k), label_value(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// `(full name, tags, item)` of the stats behind one Prometheus metric.
type Members<T> = Vec<(String, Vec<(String, String)>, T)>;

/// Groups `(full name, item)` by Prometheus metric name.
fn group<T>(items: Vec<(String, T)>) -> BTreeMap<String, Members<T>> {
    let mut groups: BTreeMap<String, Members<T>> = BTreeMap::new();
    for (name, item) in items {
        let (extracted, tags) = extract_tags(&name);
        let metric = format!("envoy_{}", prom_sanitize(&extracted));
        groups.entry(metric).or_default().push((name, tags, item));
    }
    for g in groups.values_mut() {
        g.sort_by(|a, b| a.0.cmp(&b.0));
    }
    groups
}

/// Prometheus text format 0.0.4, as Envoy writes it: counters, gauges,
/// (text readouts), histograms; one `# TYPE` per metric name, groups sorted
/// by name and separated by a blank line.
pub fn prometheus(state: &AdminState, p: &StatsParams) -> String {
    let st = stats::store();
    let mut out = String::new();
    let counters: Vec<(String, i128)> = st
        .counters()
        .into_iter()
        .filter(|(n, c)| p.shows(n, c.used()))
        .map(|(n, c)| (n, i128::from(c.value())))
        .collect();
    let gauges: Vec<(String, i128)> = st
        .gauges()
        .into_iter()
        .filter(|(n, g)| p.shows(n, g.used()))
        .map(|(n, g)| (n, i128::from(g.value())))
        .collect();
    for (kind, items) in [("counter", counters), ("gauge", gauges)] {
        for (metric, members) in group(items) {
            let _ = writeln!(out, "# TYPE {metric} {kind}");
            for (_, tags, v) in members {
                let _ = writeln!(out, "{metric}{{{}}} {v}", labels(&tags));
            }
            out.push('\n');
        }
    }
    if p.prometheus_text_readouts {
        let items: Vec<(String, String)> = st
            .text_readouts()
            .into_iter()
            .filter(|(n, _)| p.shows(n, true))
            .collect();
        for (metric, members) in group(items) {
            let _ = writeln!(out, "# TYPE {metric} gauge");
            for (_, mut tags, v) in members {
                tags.push(("text_value".to_string(), v));
                let _ = writeln!(out, "{metric}{{{}}} 1", labels(&tags));
            }
            out.push('\n');
        }
    }
    let hists: Vec<(String, HistogramSnapshot)> = st
        .histograms()
        .into_iter()
        .filter(|(n, h)| p.shows(n, h.used()))
        .map(|(n, h)| {
            let (cum, _) = state.histogram_views(&n, &h);
            (n, cum)
        })
        .collect();
    for (metric, members) in group(hists) {
        let _ = writeln!(out, "# TYPE {metric} histogram");
        for (_, tags, h) in members {
            let l = labels(&tags);
            let sep = if l.is_empty() {
                String::new()
            } else {
                format!("{l},")
            };
            let cum = h.cumulative();
            for (k, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(out, "{metric}_bucket{{{sep}le=\"{b}\"}} {}", cum[k]);
            }
            let _ = writeln!(out, "{metric}_bucket{{{sep}le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{metric}_sum{{{l}}} {}", h.sum);
            let _ = writeln!(out, "{metric}_count{{{l}}} {}", h.count);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn tag_extraction_table() {
        for (name, want_name, want_tags) in [
            (
                "cluster.service1.upstream_rq_total",
                "cluster.upstream_rq_total",
                tags(&[("envoy.cluster_name", "service1")]),
            ),
            (
                "http.ingress_http.downstream_rq_2xx",
                "http.downstream_rq_xx",
                tags(&[
                    ("envoy.response_code_class", "2"),
                    ("envoy.http_conn_manager_prefix", "ingress_http"),
                ]),
            ),
            (
                "cluster.service1.upstream_rq_200",
                "cluster.upstream_rq",
                tags(&[("envoy.response_code", "200"), ("envoy.cluster_name", "service1")]),
            ),
            (
                "listener.0.0.0.0_10000.downstream_cx_total",
                "listener.downstream_cx_total",
                tags(&[("envoy.listener_address", "0.0.0.0_10000")]),
            ),
            (
                "listener.[__]_8080.downstream_cx_active",
                "listener.downstream_cx_active",
                tags(&[("envoy.listener_address", "[__]_8080")]),
            ),
            (
                "listener.admin.downstream_cx_total",
                "listener.admin.downstream_cx_total",
                vec![],
            ),
            (
                "http.ingress_http.rds.local_route.config_reload",
                "http.rds.config_reload",
                tags(&[
                    ("envoy.rds_route_config", "local_route"),
                    ("envoy.http_conn_manager_prefix", "ingress_http"),
                ]),
            ),
            ("server.live", "server.live", vec![]),
        ] {
            let (n, t) = extract_tags(name);
            assert_eq!(n, want_name, "{name}");
            assert_eq!(t, want_tags, "{name}");
        }
    }

    #[test]
    fn values_format_like_envoy() {
        assert_eq!(fmt_value(f64::NAN), "nan");
        assert_eq!(fmt_value(1.0), "1");
        assert_eq!(fmt_value(1.05), "1.05");
        assert_eq!(fmt_value(33.333333333), "33.333");
        assert_eq!(json_number(3.0), serde_json::json!(3));
        assert_eq!(json_number(f64::NAN), serde_json::Value::Null);
        let labels: Vec<String> = PERCENTS.iter().map(|p| format!("P{p}")).collect();
        assert_eq!(labels.join(" "), "P0 P25 P50 P75 P90 P95 P99 P99.5 P99.9 P100");
    }

    #[test]
    fn params() {
        let p = StatsParams::parse(&Query::parse("/stats?type=Counters&usedonly&filter=^a")).expect("ok");
        assert_eq!(p.kind, StatsType::Counters);
        assert!(p.used_only);
        assert!(p.shows("abc", true));
        assert!(!p.shows("abc", false));
        assert!(!p.shows("bc", true));
        assert_eq!(
            StatsParams::parse(&Query::parse("/stats?type=x"))
                .err()
                .as_deref(),
            Some("invalid &type= param")
        );
        assert!(StatsParams::parse(&Query::parse("/stats?filter=(")).is_err());
    }
}
