//! Access log filters (`AccessLog.filter`), compiled once at config load and
//! evaluated per request. Semantics follow Envoy's
//! `source/common/access_log/access_log_impl.cc`.

use crate::model::route_table::{HeaderMatch, RequestView};
use crate::proto::envoy::config::accesslog::v3 as pb;
use crate::stream_info::{ResponseFlags, StreamInfo};

/// A compiled access log filter.
#[derive(Debug)]
pub enum AccessLogFilter {
    /// `status_code_filter`: the response code (0 when none was sent).
    StatusCode(Comparison),
    /// `duration_filter`: the request duration in milliseconds.
    Duration(Comparison),
    /// `not_health_check_filter`.
    NotHealthCheck,
    /// `response_flag_filter`: any of these flags; empty = any flag at all.
    ResponseFlag(ResponseFlags),
    /// `runtime_filter`: a sample of `numerator / denominator` requests.
    Runtime {
        numerator: u64,
        denominator: u64,
    },
    And(Vec<AccessLogFilter>),
    Or(Vec<AccessLogFilter>),
    /// `header_filter`: a request header matcher.
    Header(HeaderMatch),
    /// `grpc_status_filter`: the gRPC status (from trailers, headers or the
    /// HTTP status) is (or with `exclude`, is not) one of `statuses`.
    GrpcStatus {
        statuses: Vec<i32>,
        exclude: bool,
    },
}

/// `ComparisonFilter` with its `RuntimeUInt32.default_value` (runtime
/// overrides are not read: legate's runtime has no such keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Comparison {
    pub op: CompareOp,
    pub value: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ge,
    Le,
    Ne,
}

impl Comparison {
    fn compile(c: Option<&pb::ComparisonFilter>) -> Result<Comparison, String> {
        use pb::comparison_filter::Op;
        let c = c.ok_or("comparison: is required")?;
        let op = match Op::try_from(c.op) {
            Ok(Op::Eq) => CompareOp::Eq,
            Ok(Op::Ge) => CompareOp::Ge,
            Ok(Op::Le) => CompareOp::Le,
            Ok(Op::Ne) => CompareOp::Ne,
            Err(_) => return Err(format!("comparison.op: unknown operator {}", c.op)),
        };
        let value = c
            .value
            .as_ref()
            .ok_or("comparison.value: is required")?
            .default_value;
        Ok(Comparison {
            op,
            value: u64::from(value),
        })
    }

    pub fn matches(&self, lhs: u64) -> bool {
        match self.op {
            CompareOp::Eq => lhs == self.value,
            CompareOp::Ge => lhs >= self.value,
            CompareOp::Le => lhs <= self.value,
            CompareOp::Ne => lhs != self.value,
        }
    }
}

impl AccessLogFilter {
    /// Compiles a filter; errors start with the field path inside the filter
    /// (`and_filter.filters[1].response_flag_filter.flags[0]: …`).
    pub fn compile(f: &pb::AccessLogFilter) -> Result<AccessLogFilter, String> {
        use pb::access_log_filter::FilterSpecifier as S;
        fn within(field: &'static str) -> impl Fn(String) -> String {
            move |e| format!("{field}.{e}")
        }
        match &f.filter_specifier {
            Some(S::StatusCodeFilter(s)) => Ok(AccessLogFilter::StatusCode(
                Comparison::compile(s.comparison.as_ref()).map_err(within("status_code_filter"))?,
            )),
            Some(S::DurationFilter(d)) => Ok(AccessLogFilter::Duration(
                Comparison::compile(d.comparison.as_ref()).map_err(within("duration_filter"))?,
            )),
            Some(S::NotHealthCheckFilter(_)) => Ok(AccessLogFilter::NotHealthCheck),
            Some(S::ResponseFlagFilter(r)) => {
                let mut flags = ResponseFlags::NONE;
                for (i, name) in r.flags.iter().enumerate() {
                    let flag = ResponseFlags::from_short(name).ok_or_else(|| {
                        let all: Vec<&str> = ResponseFlags::all_short_names().collect();
                        format!(
                            "response_flag_filter.flags[{i}]: unknown response flag `{name}` (expected one of {})",
                            all.join(", ")
                        )
                    })?;
                    flags.insert(flag);
                }
                Ok(AccessLogFilter::ResponseFlag(flags))
            }
            Some(S::RuntimeFilter(r)) => {
                use crate::proto::envoy::r#type::v3::fractional_percent::DenominatorType;
                if r.runtime_key.is_empty() {
                    return Err("runtime_filter.runtime_key: must not be empty".into());
                }
                let (numerator, denominator) = match &r.percent_sampled {
                    // Envoy's default when neither runtime nor config says: 0%.
                    None => (0, 100),
                    Some(p) => {
                        let d = match DenominatorType::try_from(p.denominator) {
                            Ok(DenominatorType::Hundred) => 100,
                            Ok(DenominatorType::TenThousand) => 10_000,
                            Ok(DenominatorType::Million) => 1_000_000,
                            Err(_) => {
                                return Err(format!(
                                    "runtime_filter.percent_sampled.denominator: unknown value {}",
                                    p.denominator
                                ))
                            }
                        };
                        (u64::from(p.numerator).min(d), d)
                    }
                };
                Ok(AccessLogFilter::Runtime {
                    numerator,
                    denominator,
                })
            }
            Some(S::AndFilter(a)) => Ok(AccessLogFilter::And(compile_list(&a.filters, "and_filter")?)),
            Some(S::OrFilter(o)) => Ok(AccessLogFilter::Or(compile_list(&o.filters, "or_filter")?)),
            Some(S::HeaderFilter(h)) => {
                let m = h.header.as_ref().ok_or("header_filter.header: is required")?;
                Ok(AccessLogFilter::Header(
                    HeaderMatch::compile(m).map_err(within("header_filter.header"))?,
                ))
            }
            Some(S::GrpcStatusFilter(g)) => Ok(AccessLogFilter::GrpcStatus {
                statuses: g.statuses.clone(),
                exclude: g.exclude,
            }),
            Some(S::TraceableFilter(_)) => Err(
                "traceable_filter: this access log filter is not supported by legate yet (no tracing)".into(),
            ),
            Some(S::ExtensionFilter(e)) => Err(format!(
                "extension_filter: access log filter extension `{}` is not supported by legate yet",
                e.name
            )),
            None => Err(
                "an access log filter needs one of status_code_filter, duration_filter, \
                         not_health_check_filter, runtime_filter, and_filter, or_filter, header_filter, \
                         response_flag_filter or grpc_status_filter"
                    .into(),
            ),
        }
    }

    /// Whether the request is logged.
    pub fn evaluate(&self, info: &StreamInfo) -> bool {
        match self {
            AccessLogFilter::StatusCode(c) => c.matches(u64::from(info.response_code)),
            AccessLogFilter::Duration(c) => {
                c.matches(u64::try_from(info.duration().as_millis()).unwrap_or(u64::MAX))
            }
            AccessLogFilter::NotHealthCheck => !info.is_health_check(),
            AccessLogFilter::ResponseFlag(f) if f.is_empty() => !info.response_flags.is_empty(),
            AccessLogFilter::ResponseFlag(f) => info.response_flags.intersects(*f),
            AccessLogFilter::Runtime {
                numerator,
                denominator,
            } => fastrand::u64(0..*denominator) < *numerator,
            AccessLogFilter::And(fs) => fs.iter().all(|f| f.evaluate(info)),
            AccessLogFilter::Or(fs) => fs.iter().any(|f| f.evaluate(info)),
            AccessLogFilter::Header(h) => header_matches(h, info),
            AccessLogFilter::GrpcStatus { statuses, exclude } => {
                statuses.contains(&grpc_status(info)) != *exclude
            }
        }
    }
}

fn compile_list(filters: &[pb::AccessLogFilter], field: &str) -> Result<Vec<AccessLogFilter>, String> {
    filters
        .iter()
        .enumerate()
        .map(|(i, f)| AccessLogFilter::compile(f).map_err(|e| format!("{field}.filters[{i}].{e}")))
        .collect()
}

/// `grpc-status` from the trailers, else the headers, else mapped from the
/// HTTP status (Envoy's `Grpc::Common::getGrpcStatus` + `httpToGrpcStatus`);
/// UNKNOWN (2) when there is nothing. An unparsable value is -1 (matches
/// no status).
fn grpc_status(info: &StreamInfo) -> i32 {
    let from = |m: Option<&http::HeaderMap>| {
        m.and_then(|m| m.get("grpc-status")).map(|v| {
            std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .filter(|n| (0..=16).contains(n))
                .unwrap_or(-1)
        })
    };
    if let Some(s) = from(info.response_trailers.as_ref()).or_else(|| from(info.response_headers.as_ref())) {
        return s;
    }
    match info.response_code {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// A header filter: the route matcher's `HeaderMatch` (one implementation
/// of Envoy's header matching) applied to the logged request.
fn header_matches(m: &HeaderMatch, info: &StreamInfo) -> bool {
    let view = RequestView {
        host: &info.authority,
        path: &info.path,
        method: &info.method,
        headers: &info.request_headers,
    };
    m.matches(&view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::envoy::config::core::v3::RuntimeUInt32;
    use crate::proto::envoy::config::route::v3::{header_matcher, HeaderMatcher};
    use crate::proto::envoy::r#type::matcher::v3::RegexMatcher;
    use crate::proto::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};
    use http::{HeaderMap, HeaderValue, Method, Version};
    use pb::access_log_filter::FilterSpecifier as S;
    use std::time::Duration;

    fn info() -> StreamInfo {
        let mut h = HeaderMap::new();
        h.insert("user-agent", HeaderValue::from_static("curl/8.0"));
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        h.insert("x-num", HeaderValue::from_static("42"));
        let mut i = StreamInfo::new(
            Method::POST,
            "/api/v1?x=1",
            "example.com",
            Version::HTTP_11,
            h,
            "10.0.0.1:1000".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        );
        i.response_code = 503;
        i.end = Some(Duration::from_millis(150));
        i
    }

    fn filter(s: S) -> pb::AccessLogFilter {
        pb::AccessLogFilter {
            filter_specifier: Some(s),
        }
    }

    fn cmp(op: pb::comparison_filter::Op, v: u32) -> Option<pb::ComparisonFilter> {
        Some(pb::ComparisonFilter {
            op: op as i32,
            value: Some(RuntimeUInt32 {
                default_value: v,
                runtime_key: "k".into(),
            }),
        })
    }

    fn status(op: pb::comparison_filter::Op, v: u32) -> pb::AccessLogFilter {
        filter(S::StatusCodeFilter(pb::StatusCodeFilter {
            comparison: cmp(op, v),
        }))
    }

    fn flags(names: &[&str]) -> pb::AccessLogFilter {
        filter(S::ResponseFlagFilter(pb::ResponseFlagFilter {
            flags: names.iter().map(|s| s.to_string()).collect(),
        }))
    }

    fn header(
        name: &str,
        spec: Option<header_matcher::HeaderMatchSpecifier>,
        invert: bool,
    ) -> pb::AccessLogFilter {
        filter(S::HeaderFilter(pb::HeaderFilter {
            header: Some(HeaderMatcher {
                name: name.into(),
                header_match_specifier: spec,
                invert_match: invert,
                ..Default::default()
            }),
        }))
    }

    fn eval(f: &pb::AccessLogFilter, i: &StreamInfo) -> bool {
        AccessLogFilter::compile(f).unwrap().evaluate(i)
    }

    #[test]
    fn comparisons() {
        use pb::comparison_filter::Op;
        let i = info();
        let cases = [
            (status(Op::Eq, 503), true),
            (status(Op::Eq, 200), false),
            (status(Op::Ge, 500), true),
            (status(Op::Ge, 504), false),
            (status(Op::Le, 503), true),
            (status(Op::Le, 499), false),
            (status(Op::Ne, 200), true),
            (status(Op::Ne, 503), false),
            (
                filter(S::DurationFilter(pb::DurationFilter {
                    comparison: cmp(Op::Ge, 100),
                })),
                true,
            ),
            (
                filter(S::DurationFilter(pb::DurationFilter {
                    comparison: cmp(Op::Ge, 151),
                })),
                false,
            ),
            (
                filter(S::DurationFilter(pb::DurationFilter {
                    comparison: cmp(Op::Eq, 150),
                })),
                true,
            ),
        ];
        for (i_case, (f, want)) in cases.iter().enumerate() {
            assert_eq!(eval(f, &i), *want, "case {i_case}: {f:?}");
        }
        // No response sent: the status is 0.
        let mut none = info();
        none.response_code = 0;
        assert!(eval(&status(Op::Eq, 0), &none));
    }

    #[test]
    fn response_flags_and_health_checks() {
        let mut i = info();
        assert!(!eval(&flags(&[]), &i), "no flag set");
        i.response_flags.insert(ResponseFlags::NO_HEALTHY_UPSTREAM);
        assert!(eval(&flags(&[]), &i), "empty list = any flag");
        assert!(eval(&flags(&["UF", "UH"]), &i));
        assert!(!eval(&flags(&["UF", "NR"]), &i));

        let not_hc = filter(S::NotHealthCheckFilter(pb::NotHealthCheckFilter {}));
        assert!(eval(&not_hc, &i));
        i.request_headers
            .insert("user-agent", HeaderValue::from_static("Envoy/HC"));
        assert!(!eval(&not_hc, &i));
    }

    #[test]
    fn and_or_nest() {
        use pb::comparison_filter::Op;
        let i = info();
        let and = |fs: Vec<pb::AccessLogFilter>| filter(S::AndFilter(pb::AndFilter { filters: fs }));
        let or = |fs: Vec<pb::AccessLogFilter>| filter(S::OrFilter(pb::OrFilter { filters: fs }));
        assert!(eval(&and(vec![status(Op::Ge, 500), status(Op::Le, 599)]), &i));
        assert!(!eval(&and(vec![status(Op::Ge, 500), status(Op::Le, 502)]), &i));
        assert!(eval(&or(vec![status(Op::Eq, 200), status(Op::Eq, 503)]), &i));
        assert!(!eval(&or(vec![status(Op::Eq, 200), status(Op::Eq, 404)]), &i));
        assert!(eval(
            &or(vec![
                and(vec![status(Op::Eq, 200)]),
                and(vec![status(Op::Eq, 503)])
            ]),
            &i
        ));
        assert!(eval(&and(vec![]), &i), "an empty and is true");
        assert!(!eval(&or(vec![]), &i), "an empty or is false");
    }

    #[test]
    fn header_filters() {
        use header_matcher::HeaderMatchSpecifier as H;
        use string_matcher::MatchPattern as P;
        let sm = |p: P, ic: bool| {
            Some(H::StringMatch(StringMatcher {
                match_pattern: Some(p),
                ignore_case: ic,
            }))
        };
        let i = info();
        let cases = [
            (header("user-agent", None, false), true),
            (header("x-absent", None, false), false),
            (header("x-absent", Some(H::PresentMatch(false)), false), true),
            (header("x-absent", Some(H::PresentMatch(true)), true), true),
            (header("x-absent", Some(H::ExactMatch("v".into())), true), false),
            (
                header("User-Agent", sm(P::Exact("curl/8.0".into()), false), false),
                true,
            ),
            (
                header("user-agent", sm(P::Exact("CURL/8.0".into()), false), false),
                false,
            ),
            (
                header("user-agent", sm(P::Exact("CURL/8.0".into()), true), false),
                true,
            ),
            (
                header("user-agent", sm(P::Prefix("curl/".into()), false), false),
                true,
            ),
            (
                header("user-agent", sm(P::Suffix("/8.0".into()), false), false),
                true,
            ),
            (
                header("user-agent", sm(P::Contains("rl/8".into()), false), false),
                true,
            ),
            (
                header("user-agent", sm(P::Contains("rl/8".into()), false), true),
                false,
            ),
            (
                header(
                    "user-agent",
                    sm(
                        P::SafeRegex(RegexMatcher {
                            regex: "curl/[0-9.]+".into(),
                            ..Default::default()
                        }),
                        false,
                    ),
                    false,
                ),
                true,
            ),
            (
                header(
                    "user-agent",
                    sm(
                        P::SafeRegex(RegexMatcher {
                            regex: "curl".into(),
                            ..Default::default()
                        }),
                        false,
                    ),
                    false,
                ),
                false,
            ),
            (header("x-multi", sm(P::Exact("a,b".into()), false), false), true),
            (header(":method", Some(H::ExactMatch("POST".into())), false), true),
            (header(":path", Some(H::PrefixMatch("/api".into())), false), true),
            (
                header(":authority", Some(H::SuffixMatch(".com".into())), false),
                true,
            ),
            (
                header(
                    "x-num",
                    Some(H::RangeMatch(crate::proto::envoy::r#type::v3::Int64Range {
                        start: 40,
                        end: 43,
                    })),
                    false,
                ),
                true,
            ),
            (
                header(
                    "x-num",
                    Some(H::RangeMatch(crate::proto::envoy::r#type::v3::Int64Range {
                        start: 40,
                        end: 42,
                    })),
                    false,
                ),
                false,
            ),
        ];
        for (n, (f, want)) in cases.iter().enumerate() {
            assert_eq!(eval(f, &i), *want, "case {n}: {f:?}");
        }
    }

    #[test]
    fn runtime_filter_samples() {
        use crate::proto::envoy::r#type::v3::FractionalPercent;
        let rt = |n: u32, d: i32| {
            filter(S::RuntimeFilter(pb::RuntimeFilter {
                runtime_key: "access_log.sample".into(),
                percent_sampled: Some(FractionalPercent {
                    numerator: n,
                    denominator: d,
                }),
                use_independent_randomness: false,
            }))
        };
        let i = info();
        assert!((0..100).all(|_| eval(&rt(100, 0), &i)));
        assert!((0..100).all(|_| !eval(&rt(0, 0), &i)));
        let half = AccessLogFilter::compile(&rt(5000, 1)).unwrap();
        let hits = (0..2000).filter(|_| half.evaluate(&i)).count();
        assert!((700..1300).contains(&hits), "{hits} of 2000 at 50%");
    }

    #[test]
    fn grpc_status_filter() {
        use pb::grpc_status_filter::Status;
        let g = |statuses: &[Status], exclude: bool| {
            filter(S::GrpcStatusFilter(pb::GrpcStatusFilter {
                statuses: statuses.iter().map(|s| *s as i32).collect(),
                exclude,
            }))
        };
        let mut i = info(); // 503, no grpc-status: UNAVAILABLE
        assert!(eval(&g(&[Status::Unavailable], false), &i));
        assert!(!eval(&g(&[Status::Unavailable], true), &i));
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("5"));
        i.response_trailers = Some(t);
        assert!(eval(&g(&[Status::NotFound], false), &i));
        i.response_trailers = None;
        i.response_code = 200;
        assert!(eval(&g(&[Status::Unknown], false), &i));
    }

    #[test]
    fn config_errors_name_the_field() {
        use pb::comparison_filter::Op;
        let cases: Vec<(pb::AccessLogFilter, &str)> = vec![
            (
                flags(&["UH", "XX"]),
                "response_flag_filter.flags[1]: unknown response flag `XX`",
            ),
            (
                filter(S::AndFilter(pb::AndFilter {
                    filters: vec![status(Op::Eq, 1), flags(&["nope"])],
                })),
                "and_filter.filters[1].response_flag_filter.flags[0]",
            ),
            (
                filter(S::StatusCodeFilter(pb::StatusCodeFilter { comparison: None })),
                "status_code_filter.comparison",
            ),
            (
                filter(S::DurationFilter(pb::DurationFilter {
                    comparison: Some(pb::ComparisonFilter { op: 0, value: None }),
                })),
                "duration_filter.comparison.value",
            ),
            (
                filter(S::TraceableFilter(pb::TraceableFilter {})),
                "traceable_filter: this access log filter is not supported",
            ),
            (
                filter(S::ExtensionFilter(pb::ExtensionFilter {
                    name: "x.y".into(),
                    ..Default::default()
                })),
                "`x.y` is not supported",
            ),
            (
                pb::AccessLogFilter {
                    filter_specifier: None,
                },
                "needs one of",
            ),
            (
                header(
                    "x",
                    Some(header_matcher::HeaderMatchSpecifier::SafeRegexMatch(
                        RegexMatcher {
                            regex: "(".into(),
                            ..Default::default()
                        },
                    )),
                    false,
                ),
                "header_filter.header.safe_regex_match: invalid regex `(`",
            ),
            (header("", None, false), "header_filter.header.name"),
        ];
        for (f, want) in cases {
            let err = AccessLogFilter::compile(&f).unwrap_err();
            assert!(err.contains(want), "error `{err}` should contain `{want}`");
        }
    }
}
