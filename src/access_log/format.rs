//! Envoy's substitution format strings (`%START_TIME%`, `%REQ(:PATH)%`, …) and
//! JSON formats, compiled once at config load and rendered per request.
//!
//! Rendering follows Envoy's `FormatterImpl` / `JsonFormatterImpl`
//! (`source/common/formatter/`): a missing value is `-` in text (empty with
//! `omit_empty_values`) and `null` in JSON (the key dropped with
//! `omit_empty_values`); a JSON value that is exactly one operator keeps its
//! type, so `%RESPONSE_CODE%` is a number.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::OnceLock;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Datelike, Timelike, Utc};
use http::header::{HeaderMap, HeaderName, HOST};
use http::Version;

use crate::proto::envoy::config::core::v3::{
    data_source, substitution_format_string, SubstitutionFormatString,
};
use crate::stream_info::StreamInfo;

/// `SubstitutionFormatUtils::DEFAULT_FORMAT`, byte for byte.
pub const DEFAULT_FORMAT: &str =
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" \
%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \
\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// `%START_TIME%` without an argument.
const DEFAULT_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%E3SZ";

/// A compiled access-log format: text or JSON.
#[derive(Debug)]
pub struct Format {
    kind: Kind,
    omit_empty: bool,
}

#[derive(Debug)]
enum Kind {
    Text(Template),
    Json(Vec<(String, JsonNode)>),
}

/// A compiled text template: literals and operators.
#[derive(Debug, Clone)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    Op(Operator),
}

#[derive(Debug)]
enum JsonNode {
    Object(Vec<(String, JsonNode)>),
    List(Vec<JsonNode>),
    /// A string that is exactly one operator: keeps the operator's type.
    Typed(Operator),
    /// A string with text around (or between) operators: always a string.
    Text(Template),
    /// A literal number, bool or null from the config, copied as is.
    Const(serde_json::Value),
}

#[derive(Debug, Clone)]
struct Operator {
    cmd: Command,
    max_len: Option<usize>,
}

#[derive(Debug, Clone)]
enum Command {
    StartTime(TimeFormat),
    Req {
        main: HeaderRef,
        alt: Option<HeaderRef>,
        strip_query: bool,
    },
    Resp {
        main: HeaderRef,
        alt: Option<HeaderRef>,
    },
    Trailer {
        main: HeaderRef,
        alt: Option<HeaderRef>,
    },
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseFlagsLong,
    ResponseCodeDetails,
    BytesReceived,
    BytesSent,
    Duration,
    RequestDuration,
    ResponseDuration,
    ResponseTxDuration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocalAddress(AddrPart),
    UpstreamRemoteAddress(AddrPart),
    UpstreamTransportFailureReason,
    DownstreamRemoteAddress(AddrPart),
    DownstreamDirectRemoteAddress(AddrPart),
    DownstreamLocalAddress(AddrPart),
    RouteName,
    ConnectionId,
    /// Read once at config load, as Envoy does.
    Constant(Option<String>),
    /// Operators whose source legate never sets (no TLS, no filter writes
    /// metadata): Envoy renders them `-` in the same situation.
    AlwaysMissing,
}

#[derive(Debug, Clone, Copy)]
enum AddrPart {
    WithPort,
    WithoutPort,
    Port,
}

#[derive(Debug, Clone)]
enum HeaderRef {
    Method,
    Path,
    Authority,
    Scheme,
    Status,
    /// An unknown pseudo-header: never present.
    OtherPseudo,
    Named(HeaderName),
}

#[derive(Debug, Clone)]
enum TimeFormat {
    /// `%Y-%m-%dT%H:%M:%E3SZ`, formatted without chrono's item machinery.
    Default,
    Custom(Vec<TimePart>),
}

#[derive(Debug, Clone)]
enum TimePart {
    Chrono(Vec<Item<'static>>),
    /// `%f` (9 digits) and `%1f`..`%9f`: leading digits of the fraction.
    Fraction(usize),
    /// `%E#S`: seconds with # fractional digits.
    SecondsFraction(usize),
    /// `%E*S`: seconds with every significant fractional digit.
    SecondsFull,
}

/// The value of one operator for one request.
enum Value<'a> {
    Missing,
    Str(Cow<'a, str>),
    Num(u64),
}

impl Format {
    /// Envoy's default format (used when a logger has no format).
    pub fn default_text() -> Format {
        // DEFAULT_FORMAT is a constant that the tests parse.
        Format::text(DEFAULT_FORMAT, false).unwrap_or_else(|_| Format {
            kind: Kind::Text(Template { parts: vec![] }),
            omit_empty: false,
        })
    }

    /// A text format. No newline is added: Envoy writes exactly what the
    /// format says, so configs end theirs with `\n`.
    pub fn text(format: &str, omit_empty_values: bool) -> Result<Format, String> {
        Ok(Format {
            kind: Kind::Text(Template::parse(format)?),
            omit_empty: omit_empty_values,
        })
    }

    /// A JSON format: one object per line, keys in the Struct's order
    /// (prost's Struct is a sorted map, so keys come out sorted).
    pub fn json(format: &prost_types::Struct, omit_empty_values: bool) -> Result<Format, String> {
        Ok(Format {
            kind: Kind::Json(json_object(format, "")?),
            omit_empty: omit_empty_values,
        })
    }

    /// `SubstitutionFormatString` (`log_format`).
    pub fn from_proto(sfs: &SubstitutionFormatString) -> Result<Format, String> {
        use substitution_format_string::Format as F;
        if !sfs.formatters.is_empty() {
            return Err("formatters: formatter extensions are not supported by legate yet".into());
        }
        match &sfs.format {
            Some(F::TextFormat(s)) => {
                Format::text(s, sfs.omit_empty_values).map_err(|e| format!("text_format: {e}"))
            }
            Some(F::TextFormatSource(ds)) => {
                let s = data_source_string(ds).map_err(|e| format!("text_format_source: {e}"))?;
                Format::text(&s, sfs.omit_empty_values).map_err(|e| format!("text_format_source: {e}"))
            }
            Some(F::JsonFormat(st)) => {
                Format::json(st, sfs.omit_empty_values).map_err(|e| format!("json_format{e}"))
            }
            None => Err("needs one of `text_format_source`, `json_format` or `text_format`".into()),
        }
    }

    /// One log line for `info` (a JSON line ends with `\n`).
    pub fn render(&self, info: &StreamInfo) -> String {
        match &self.kind {
            Kind::Text(t) => {
                let mut out = String::with_capacity(256);
                t.render_into(info, &mut out, if self.omit_empty { "" } else { "-" });
                out
            }
            Kind::Json(fields) => {
                let value = self.json_object_value(fields, info);
                let mut line = serde_json::to_string(&value).unwrap_or_else(|_| "{}".into());
                line.push('\n');
                line
            }
        }
    }

    fn json_object_value(&self, fields: &[(String, JsonNode)], info: &StreamInfo) -> serde_json::Value {
        let mut map = serde_json::Map::with_capacity(fields.len());
        for (k, node) in fields {
            let v = self.json_value(node, info);
            if !(self.omit_empty && v.is_null()) {
                map.insert(k.clone(), v);
            }
        }
        serde_json::Value::Object(map)
    }

    fn json_value(&self, node: &JsonNode, info: &StreamInfo) -> serde_json::Value {
        match node {
            JsonNode::Object(fields) => self.json_object_value(fields, info),
            JsonNode::List(items) => serde_json::Value::Array(
                items
                    .iter()
                    .map(|n| self.json_value(n, info))
                    .filter(|v| !(self.omit_empty && v.is_null()))
                    .collect(),
            ),
            JsonNode::Typed(op) => match op.value(info) {
                Value::Missing => serde_json::Value::Null,
                Value::Num(n) => serde_json::Value::from(n),
                Value::Str(s) => serde_json::Value::String(truncate(s, op.max_len).into_owned()),
            },
            JsonNode::Text(t) => {
                let mut s = String::new();
                t.render_into(info, &mut s, if self.omit_empty { "" } else { "-" });
                serde_json::Value::String(s)
            }
            JsonNode::Const(v) => v.clone(),
        }
    }
}

/// Expands `%…%` operators in a header value (`request_headers_to_add` and
/// friends) for one request. Missing values expand to nothing, as Envoy's
/// header formatter. A value that does not parse is returned unchanged: the
/// config loader is the place to reject it (see [`Template::parse`]).
pub fn expand_header_value(value: &str, info: &StreamInfo) -> String {
    if !value.contains('%') {
        return value.to_string();
    }
    match Template::parse(value) {
        Ok(t) => t.render(info, ""),
        Err(_) => value.to_string(),
    }
}

impl Template {
    /// Parses a format string; an unknown operator or a malformed `%…%` is
    /// an error naming it.
    pub fn parse(format: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = format;
        while let Some(pos) = rest.find('%') {
            literal.push_str(&rest[..pos]);
            rest = &rest[pos..];
            if let Some(after) = rest.strip_prefix("%%") {
                literal.push('%');
                rest = after;
                continue;
            }
            let (op, after) = parse_operator(rest, format.len() - rest.len())?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Op(op));
            rest = after;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// Renders with `missing` for absent values.
    pub fn render(&self, info: &StreamInfo, missing: &str) -> String {
        let mut out = String::with_capacity(128);
        self.render_into(info, &mut out, missing);
        out
    }

    fn render_into(&self, info: &StreamInfo, out: &mut String, missing: &str) {
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Op(op) => op.write(info, out, missing),
            }
        }
    }

    /// The template is exactly one operator (a typed JSON value).
    fn single_operator(&self) -> Option<&Operator> {
        match self.parts.as_slice() {
            [Part::Op(op)] => Some(op),
            _ => None,
        }
    }
}

fn json_object(st: &prost_types::Struct, path: &str) -> Result<Vec<(String, JsonNode)>, String> {
    st.fields
        .iter()
        .map(|(k, v)| {
            let p = format!("{path}.{k}");
            Ok((k.clone(), json_node(v, &p)?))
        })
        .collect()
}

fn json_node(v: &prost_types::Value, path: &str) -> Result<JsonNode, String> {
    use prost_types::value::Kind as K;
    Ok(match &v.kind {
        Some(K::StringValue(s)) => {
            let t = Template::parse(s).map_err(|e| format!("{path}: {e}"))?;
            match t.single_operator() {
                Some(op) => JsonNode::Typed(op.clone()),
                None => JsonNode::Text(t),
            }
        }
        Some(K::StructValue(st)) => JsonNode::Object(json_object(st, path)?),
        Some(K::ListValue(l)) => JsonNode::List(
            l.values
                .iter()
                .enumerate()
                .map(|(i, v)| json_node(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        // Integral numbers print without `.0`, as protobuf's JSON printer does.
        Some(K::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => {
            JsonNode::Const(serde_json::Value::from(*n as i64))
        }
        Some(K::NumberValue(n)) => JsonNode::Const(
            serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, serde_json::Value::Number),
        ),
        Some(K::BoolValue(b)) => JsonNode::Const(serde_json::Value::Bool(*b)),
        Some(K::NullValue(_)) | None => JsonNode::Const(serde_json::Value::Null),
    })
}

/// The text of a `DataSource`, read at config load.
fn data_source_string(ds: &crate::proto::envoy::config::core::v3::DataSource) -> Result<String, String> {
    use data_source::Specifier as S;
    match &ds.specifier {
        Some(S::InlineString(s)) => Ok(s.clone()),
        Some(S::InlineBytes(b)) => {
            String::from_utf8(b.clone()).map_err(|_| "inline_bytes is not valid UTF-8".to_string())
        }
        Some(S::Filename(f)) => std::fs::read_to_string(f).map_err(|e| format!("cannot read `{f}`: {e}")),
        Some(S::EnvironmentVariable(v)) => {
            std::env::var(v).map_err(|_| format!("environment variable `{v}` is not set"))
        }
        None => Err("needs `inline_string`, `inline_bytes`, `filename` or `environment_variable`".into()),
    }
}

/// Parses `%NAME(ARG):LEN%` at the start of `s` (which starts with `%`);
/// `at` is its byte offset in the whole format, for messages.
fn parse_operator(s: &str, at: usize) -> Result<(Operator, &str), String> {
    let bytes = s.as_bytes();
    let mut i = 1;
    while i < bytes.len() && (bytes[i].is_ascii_uppercase() || bytes[i].is_ascii_digit() || bytes[i] == b'_')
    {
        i += 1;
    }
    let name = &s[1..i];
    let invalid = || {
        let shown: String = s.chars().take(40).collect();
        format!("invalid command operator at position {at}: `{shown}` (operators are written %NAME%, %NAME(ARG)% or %NAME(ARG):LENGTH%; write %% for a literal %)")
    };
    if name.is_empty() {
        return Err(invalid());
    }
    let mut arg = None;
    if bytes.get(i) == Some(&b'(') {
        let close = s[i..]
            .find(')')
            .ok_or_else(|| format!("missing `)` in `%{name}(…`"))?
            + i;
        arg = Some(&s[i + 1..close]);
        i = close + 1;
    }
    let mut max_len = None;
    if bytes.get(i) == Some(&b':') {
        let start = i + 1;
        let mut j = start;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
        let digits = &s[start..j];
        max_len = Some(
            digits
                .parse::<usize>()
                .map_err(|_| format!("the length after `%{name}(…):` must be a number"))?,
        );
        i = j;
    }
    if bytes.get(i) != Some(&b'%') {
        return Err(invalid());
    }
    let cmd = command(name, arg)?;
    Ok((Operator { cmd, max_len }, &s[i + 1..]))
}

fn command(name: &str, arg: Option<&str>) -> Result<Command, String> {
    let no_arg = |c: Command| match arg {
        None => Ok(c),
        Some(_) => Err(format!("`%{name}%` takes no parameter")),
    };
    let need_arg = || match arg {
        Some(a) if !a.is_empty() => Ok(a),
        _ => Err(format!("`%{name}(…)%` needs a parameter")),
    };
    use AddrPart::*;
    use Command as C;
    match name {
        "START_TIME" => Ok(C::StartTime(TimeFormat::parse(arg.unwrap_or(""))?)),
        "REQ" | "REQ_WITHOUT_QUERY" => {
            let (main, alt) = header_pair(name, need_arg()?)?;
            Ok(C::Req {
                main,
                alt,
                strip_query: name == "REQ_WITHOUT_QUERY",
            })
        }
        "RESP" => {
            let (main, alt) = header_pair(name, need_arg()?)?;
            Ok(C::Resp { main, alt })
        }
        "TRAILER" => {
            let (main, alt) = header_pair(name, need_arg()?)?;
            Ok(C::Trailer { main, alt })
        }
        "ENVIRONMENT" => Ok(C::Constant(std::env::var(need_arg()?).ok())),
        "DYNAMIC_METADATA" | "FILTER_STATE" => {
            need_arg()?;
            Ok(C::AlwaysMissing)
        }
        "PROTOCOL" => no_arg(C::Protocol),
        "RESPONSE_CODE" => no_arg(C::ResponseCode),
        "RESPONSE_FLAGS" => no_arg(C::ResponseFlags),
        "RESPONSE_FLAGS_LONG" => no_arg(C::ResponseFlagsLong),
        "RESPONSE_CODE_DETAILS" => no_arg(C::ResponseCodeDetails),
        "BYTES_RECEIVED" => no_arg(C::BytesReceived),
        "BYTES_SENT" => no_arg(C::BytesSent),
        "DURATION" => no_arg(C::Duration),
        "REQUEST_DURATION" => no_arg(C::RequestDuration),
        "RESPONSE_DURATION" => no_arg(C::ResponseDuration),
        "RESPONSE_TX_DURATION" => no_arg(C::ResponseTxDuration),
        "UPSTREAM_HOST" => no_arg(C::UpstreamHost),
        "UPSTREAM_CLUSTER" => no_arg(C::UpstreamCluster),
        "UPSTREAM_LOCAL_ADDRESS" => no_arg(C::UpstreamLocalAddress(WithPort)),
        "UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => no_arg(C::UpstreamLocalAddress(WithoutPort)),
        "UPSTREAM_LOCAL_PORT" => no_arg(C::UpstreamLocalAddress(Port)),
        "UPSTREAM_REMOTE_ADDRESS" => no_arg(C::UpstreamRemoteAddress(WithPort)),
        "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => no_arg(C::UpstreamRemoteAddress(WithoutPort)),
        "UPSTREAM_REMOTE_PORT" => no_arg(C::UpstreamRemoteAddress(Port)),
        "UPSTREAM_TRANSPORT_FAILURE_REASON" => no_arg(C::UpstreamTransportFailureReason),
        "DOWNSTREAM_REMOTE_ADDRESS" => no_arg(C::DownstreamRemoteAddress(WithPort)),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => no_arg(C::DownstreamRemoteAddress(WithoutPort)),
        "DOWNSTREAM_REMOTE_PORT" => no_arg(C::DownstreamRemoteAddress(Port)),
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => no_arg(C::DownstreamDirectRemoteAddress(WithPort)),
        "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => {
            no_arg(C::DownstreamDirectRemoteAddress(WithoutPort))
        }
        "DOWNSTREAM_DIRECT_REMOTE_PORT" => no_arg(C::DownstreamDirectRemoteAddress(Port)),
        "DOWNSTREAM_LOCAL_ADDRESS" => no_arg(C::DownstreamLocalAddress(WithPort)),
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => no_arg(C::DownstreamLocalAddress(WithoutPort)),
        "DOWNSTREAM_LOCAL_PORT" => no_arg(C::DownstreamLocalAddress(Port)),
        "HOSTNAME" => no_arg(C::Constant(hostname())),
        "ROUTE_NAME" => no_arg(C::RouteName),
        "CONNECTION_ID" => no_arg(C::ConnectionId),
        // Plaintext downstream only: Envoy renders these `-` without TLS.
        "REQUESTED_SERVER_NAME" | "DOWNSTREAM_TLS_VERSION" => no_arg(C::AlwaysMissing),
        _ => Err(format!("unknown or unsupported command operator `%{name}%`")),
    }
}

/// `H` or `H?ALT` of `REQ(…)`.
fn header_pair(op: &str, arg: &str) -> Result<(HeaderRef, Option<HeaderRef>), String> {
    let mut it = arg.split('?');
    let main = header_ref(op, it.next().unwrap_or(""))?;
    let alt = it.next().map(|a| header_ref(op, a)).transpose()?;
    if it.next().is_some() {
        return Err(format!("more than one alternative header in `%{op}({arg})%`"));
    }
    Ok((main, alt))
}

fn header_ref(op: &str, name: &str) -> Result<HeaderRef, String> {
    let lower = name.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "" => return Err(format!("empty header name in `%{op}(…)%`")),
        ":method" => HeaderRef::Method,
        ":path" => HeaderRef::Path,
        ":authority" => HeaderRef::Authority,
        ":scheme" => HeaderRef::Scheme,
        ":status" => HeaderRef::Status,
        p if p.starts_with(':') => HeaderRef::OtherPseudo,
        n => HeaderRef::Named(
            HeaderName::from_bytes(n.as_bytes())
                .map_err(|_| format!("`{name}` in `%{op}(…)%` is not a valid header name"))?,
        ),
    })
}

/// The host name, read once (`%HOSTNAME%`).
fn hostname() -> Option<String> {
    static HOSTNAME: OnceLock<Option<String>> = OnceLock::new();
    HOSTNAME
        .get_or_init(|| {
            ["/proc/sys/kernel/hostname", "/etc/hostname"]
                .iter()
                .find_map(|p| std::fs::read_to_string(p).ok())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        })
        .clone()
}

impl TimeFormat {
    fn parse(f: &str) -> Result<TimeFormat, String> {
        if f.is_empty() || f == DEFAULT_TIME_FORMAT {
            return Ok(TimeFormat::Default);
        }
        let mut parts = Vec::new();
        let mut chunk = String::new();
        let flush = |chunk: &mut String, parts: &mut Vec<TimePart>| -> Result<(), String> {
            if !chunk.is_empty() {
                let items = StrftimeItems::new(chunk)
                    .parse_to_owned()
                    .map_err(|_| format!("invalid START_TIME format `{f}`"))?;
                parts.push(TimePart::Chrono(items));
                chunk.clear();
            }
            Ok(())
        };
        let mut rest = f;
        while let Some(pos) = rest.find('%') {
            chunk.push_str(&rest[..pos]);
            rest = &rest[pos..];
            let b = rest.as_bytes();
            let special = match (b.get(1), b.get(2), b.get(3)) {
                (Some(b'%'), _, _) => {
                    chunk.push_str("%%");
                    rest = &rest[2..];
                    continue;
                }
                (Some(b'f'), _, _) => Some((TimePart::Fraction(9), 2)),
                (Some(d @ b'1'..=b'9'), Some(b'f'), _) => {
                    Some((TimePart::Fraction(usize::from(d - b'0')), 3))
                }
                (Some(b'E'), Some(d @ b'0'..=b'9'), Some(b'S')) => {
                    Some((TimePart::SecondsFraction(usize::from(d - b'0')), 4))
                }
                (Some(b'E'), Some(b'*'), Some(b'S')) => Some((TimePart::SecondsFull, 4)),
                // absl extensions chrono spells differently (always UTC here).
                (Some(b'E'), Some(b'*'), Some(b'z')) => {
                    chunk.push_str("%::z");
                    rest = &rest[4..];
                    continue;
                }
                (Some(b'E'), Some(b'z'), _) => {
                    chunk.push_str("%:z");
                    rest = &rest[3..];
                    continue;
                }
                (Some(b'E'), Some(b'4'), Some(b'Y')) => {
                    chunk.push_str("%Y");
                    rest = &rest[4..];
                    continue;
                }
                _ => None,
            };
            match special {
                Some((part, len)) => {
                    flush(&mut chunk, &mut parts)?;
                    parts.push(part);
                    rest = &rest[len..];
                }
                None => {
                    // A chrono specifier (with its flags); chrono validates it.
                    chunk.push('%');
                    rest = &rest[1..];
                }
            }
        }
        chunk.push_str(rest);
        flush(&mut chunk, &mut parts)?;
        Ok(TimeFormat::Custom(parts))
    }

    fn write(&self, t: std::time::SystemTime, out: &mut String) {
        let dt: DateTime<Utc> = t.into();
        // A leap second shows as nanos >= 1e9; clamp it into the second.
        let nanos = dt.nanosecond().min(999_999_999);
        match self {
            TimeFormat::Default => {
                let _ = write!(
                    out,
                    "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                    dt.year(),
                    dt.month(),
                    dt.day(),
                    dt.hour(),
                    dt.minute(),
                    dt.second(),
                    nanos / 1_000_000
                );
            }
            TimeFormat::Custom(parts) => {
                for p in parts {
                    match p {
                        TimePart::Chrono(items) => {
                            let _ = write!(out, "{}", dt.format_with_items(items.iter()));
                        }
                        TimePart::Fraction(n) => push_fraction(out, nanos, *n),
                        TimePart::SecondsFraction(n) => {
                            let _ = write!(out, "{:02}", dt.second());
                            if *n > 0 {
                                out.push('.');
                                push_fraction(out, nanos, *n);
                            }
                        }
                        TimePart::SecondsFull => {
                            let _ = write!(out, "{:02}", dt.second());
                            if nanos > 0 {
                                let digits = format!("{nanos:09}");
                                out.push('.');
                                out.push_str(digits.trim_end_matches('0'));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The first `n` (1..=9) digits of the 9-digit fraction.
fn push_fraction(out: &mut String, nanos: u32, n: usize) {
    let digits = format!("{nanos:09}");
    out.push_str(&digits[..n.clamp(1, 9)]);
}

/// Truncates to at most `max` bytes, on a character boundary.
fn truncate(s: Cow<'_, str>, max: Option<usize>) -> Cow<'_, str> {
    match max {
        Some(max) if s.len() > max => {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            match s {
                Cow::Borrowed(b) => Cow::Borrowed(&b[..end]),
                Cow::Owned(mut o) => {
                    o.truncate(end);
                    Cow::Owned(o)
                }
            }
        }
        _ => s,
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn address(a: &SocketAddr, part: AddrPart) -> Value<'static> {
    match part {
        AddrPart::WithPort => Value::Str(Cow::Owned(a.to_string())),
        AddrPart::WithoutPort => Value::Str(Cow::Owned(a.ip().to_string())),
        AddrPart::Port => Value::Num(u64::from(a.port())),
    }
}

fn opt_str<S: AsRef<str>>(s: &Option<S>) -> Value<'_> {
    match s {
        Some(s) => Value::Str(Cow::Borrowed(s.as_ref())),
        None => Value::Missing,
    }
}

fn header_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Cow<'a, str>> {
    headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()))
}

fn request_header<'a>(info: &'a StreamInfo, h: &HeaderRef) -> Option<Cow<'a, str>> {
    match h {
        // A request rejected before its head was parsed has neither.
        HeaderRef::Method => (!info.path.is_empty()).then_some(Cow::Borrowed(info.method.as_str())),
        HeaderRef::Path => (!info.path.is_empty()).then_some(Cow::Borrowed(&info.path)),
        HeaderRef::Authority => (!info.authority.is_empty()).then_some(Cow::Borrowed(&info.authority)),
        HeaderRef::Scheme => Some(Cow::Borrowed(info.scheme)),
        HeaderRef::Status | HeaderRef::OtherPseudo => None,
        // Envoy keeps Host as :authority; `REQ(HOST)` finds it either way.
        HeaderRef::Named(n) if *n == HOST => header_value(&info.request_headers, n)
            .or_else(|| (!info.authority.is_empty()).then_some(Cow::Borrowed(&info.authority))),
        HeaderRef::Named(n) => header_value(&info.request_headers, n),
    }
}

fn response_header<'a>(
    info: &'a StreamInfo,
    map: Option<&'a HeaderMap>,
    h: &HeaderRef,
) -> Option<Cow<'a, str>> {
    match h {
        HeaderRef::Status if info.response_code != 0 => Some(Cow::Owned(info.response_code.to_string())),
        HeaderRef::Named(n) => map.and_then(|m| header_value(m, n)),
        _ => None,
    }
}

impl Operator {
    fn value<'a>(&'a self, info: &'a StreamInfo) -> Value<'a> {
        use Command as C;
        let str_or_missing = |v: Option<Cow<'a, str>>| v.map_or(Value::Missing, Value::Str);
        match &self.cmd {
            C::StartTime(f) => {
                let mut s = String::with_capacity(32);
                f.write(info.start_time, &mut s);
                Value::Str(Cow::Owned(s))
            }
            C::Req {
                main,
                alt,
                strip_query,
            } => {
                let v =
                    request_header(info, main).or_else(|| alt.as_ref().and_then(|a| request_header(info, a)));
                str_or_missing(v.map(|v| {
                    if !*strip_query {
                        return v;
                    }
                    match v {
                        Cow::Borrowed(b) => Cow::Borrowed(b.split('?').next().unwrap_or(b)),
                        Cow::Owned(o) => Cow::Owned(o.split('?').next().unwrap_or("").to_string()),
                    }
                }))
            }
            C::Resp { main, alt } => {
                let m = info.response_headers.as_ref();
                str_or_missing(
                    response_header(info, m, main)
                        .or_else(|| alt.as_ref().and_then(|a| response_header(info, m, a))),
                )
            }
            C::Trailer { main, alt } => {
                let m = info.response_trailers.as_ref();
                let get = |h: &HeaderRef| match h {
                    HeaderRef::Named(n) => m.and_then(|m| header_value(m, n)),
                    _ => None,
                };
                str_or_missing(get(main).or_else(|| alt.as_ref().and_then(get)))
            }
            C::Protocol => match info.protocol {
                Some(Version::HTTP_09) => Value::Str(Cow::Borrowed("HTTP/0.9")),
                Some(Version::HTTP_10) => Value::Str(Cow::Borrowed("HTTP/1.0")),
                Some(Version::HTTP_11) => Value::Str(Cow::Borrowed("HTTP/1.1")),
                Some(Version::HTTP_2) => Value::Str(Cow::Borrowed("HTTP/2")),
                Some(Version::HTTP_3) => Value::Str(Cow::Borrowed("HTTP/3")),
                _ => Value::Missing,
            },
            C::ResponseCode => Value::Num(u64::from(info.response_code)),
            // `-` (not missing) when no flag is set: Envoy's value, even in JSON.
            C::ResponseFlags | C::ResponseFlagsLong if info.response_flags.is_empty() => {
                Value::Str(Cow::Borrowed("-"))
            }
            C::ResponseFlags => Value::Str(Cow::Owned(info.response_flags.short())),
            C::ResponseFlagsLong => Value::Str(Cow::Owned(info.response_flags.long())),
            C::ResponseCodeDetails => match &info.response_code_details {
                Some(s) => Value::Str(Cow::Borrowed(s)),
                None => Value::Missing,
            },
            C::BytesReceived => Value::Num(info.bytes_received),
            C::BytesSent => Value::Num(info.bytes_sent),
            C::Duration => Value::Num(millis(info.duration())),
            C::RequestDuration => info
                .last_request_byte
                .map_or(Value::Missing, |d| Value::Num(millis(d))),
            C::ResponseDuration => info
                .first_upstream_response_byte
                .map_or(Value::Missing, |d| Value::Num(millis(d))),
            C::ResponseTxDuration => match (info.end, info.first_upstream_response_byte) {
                (Some(end), Some(first)) => Value::Num(millis(end.saturating_sub(first))),
                _ => Value::Missing,
            },
            C::UpstreamHost => info
                .upstream_host
                .as_ref()
                .map_or(Value::Missing, |a| address(a, AddrPart::WithPort)),
            C::UpstreamRemoteAddress(p) => info
                .upstream_host
                .as_ref()
                .map_or(Value::Missing, |a| address(a, *p)),
            C::UpstreamCluster => opt_str(&info.upstream_cluster),
            C::UpstreamLocalAddress(p) => info
                .upstream_local_address
                .as_ref()
                .map_or(Value::Missing, |a| address(a, *p)),
            C::UpstreamTransportFailureReason => opt_str(&info.upstream_transport_failure_reason),
            C::DownstreamRemoteAddress(p) => address(&info.downstream_remote_address, *p),
            C::DownstreamDirectRemoteAddress(p) => address(&info.downstream_direct_remote_address, *p),
            C::DownstreamLocalAddress(p) => address(&info.downstream_local_address, *p),
            C::RouteName => opt_str(&info.route_name),
            C::ConnectionId => Value::Num(info.connection_id),
            C::Constant(v) => opt_str(v),
            C::AlwaysMissing => Value::Missing,
        }
    }

    /// Appends the text form (`missing` when absent), truncated to `:LEN`.
    fn write(&self, info: &StreamInfo, out: &mut String, missing: &str) {
        match self.value(info) {
            Value::Missing => out.push_str(missing),
            Value::Num(n) => {
                let start = out.len();
                let _ = write!(out, "{n}");
                if let Some(max) = self.max_len {
                    out.truncate(start + max.min(out.len() - start));
                }
            }
            Value::Str(s) => out.push_str(&truncate(s, self.max_len)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_info::ResponseFlags;
    use http::{HeaderValue, Method};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// 2024-01-01T00:00:00Z
    const T0: u64 = 1_704_067_200;

    fn info() -> StreamInfo {
        let mut headers = HeaderMap::new();
        headers.insert("user-agent", HeaderValue::from_static("curl/8.0"));
        headers.insert(
            "x-request-id",
            HeaderValue::from_static("6b0e7c5d-1111-4c2a-9d1e-0123456789ab"),
        );
        headers.insert("host", HeaderValue::from_static("localhost:8000"));
        let mut i = StreamInfo::new(
            Method::GET,
            "/service/1",
            "localhost:8000",
            Version::HTTP_11,
            headers,
            "172.18.0.1:53422".parse().unwrap(),
            "172.18.0.3:8000".parse().unwrap(),
        );
        i.start_time = UNIX_EPOCH + Duration::from_secs(T0);
        i.response_code = 200;
        let mut resp = HeaderMap::new();
        resp.insert("x-envoy-upstream-service-time", HeaderValue::from_static("1"));
        resp.insert(
            "content-type",
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        i.response_headers = Some(resp);
        i.bytes_sent = 81;
        i.end = Some(Duration::from_micros(2_700));
        i.first_upstream_response_byte = Some(Duration::from_micros(1_900));
        i.upstream_host = Some("127.0.0.1:8081".parse().unwrap());
        i.upstream_cluster = Some("service1".into());
        i
    }

    fn text(f: &str, info: &StreamInfo) -> String {
        Format::text(f, false).unwrap().render(info)
    }

    #[test]
    fn default_format_matches_envoy_byte_for_byte() {
        let line = Format::default_text().render(&info());
        assert_eq!(
            line,
            "[2024-01-01T00:00:00.000Z] \"GET /service/1 HTTP/1.1\" 200 - 0 81 2 1 \"-\" \"curl/8.0\" \
             \"6b0e7c5d-1111-4c2a-9d1e-0123456789ab\" \"localhost:8000\" \"127.0.0.1:8081\"\n"
        );
    }

    #[test]
    fn default_format_for_a_local_reply() {
        let mut i = info();
        i.response_code = 404;
        i.response_headers = Some(HeaderMap::new());
        i.response_flags.insert(ResponseFlags::NO_ROUTE_FOUND);
        i.upstream_host = None;
        i.bytes_sent = 0;
        i.request_headers
            .insert("x-forwarded-for", HeaderValue::from_static("10.0.0.9"));
        i.request_headers
            .insert("x-envoy-original-path", HeaderValue::from_static("/orig?q=1"));
        assert_eq!(
            Format::default_text().render(&i),
            "[2024-01-01T00:00:00.000Z] \"GET /orig?q=1 HTTP/1.1\" 404 NR 0 0 2 - \"10.0.0.9\" \"curl/8.0\" \
             \"6b0e7c5d-1111-4c2a-9d1e-0123456789ab\" \"localhost:8000\" \"-\"\n"
        );
    }

    #[test]
    fn each_operator() {
        let mut i = info();
        i.bytes_received = 12;
        i.last_request_byte = Some(Duration::from_micros(500));
        i.upstream_local_address = Some("127.0.0.1:40000".parse().unwrap());
        i.upstream_transport_failure_reason = Some("delayed connect error: 111".into());
        i.response_code_details = Some("via_upstream".into());
        i.route_name = Some("r1".into());
        i.connection_id = 7;
        i.downstream_remote_address = "[2001:db8::1]:1234".parse().unwrap();
        i.response_flags =
            ResponseFlags::UPSTREAM_CONNECTION_FAILURE | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        i.response_trailers = Some(trailers);
        i.path = "/a/b?x=1&y=2".into();
        let cases: &[(&str, &str)] = &[
            ("%PROTOCOL%", "HTTP/1.1"),
            ("%RESPONSE_CODE%", "200"),
            ("%RESPONSE_FLAGS%", "UF,URX"),
            (
                "%RESPONSE_FLAGS_LONG%",
                "UpstreamConnectionFailure,UpstreamRetryLimitExceeded",
            ),
            ("%RESPONSE_CODE_DETAILS%", "via_upstream"),
            ("%BYTES_RECEIVED%", "12"),
            ("%BYTES_SENT%", "81"),
            ("%DURATION%", "2"),
            ("%REQUEST_DURATION%", "0"),
            ("%RESPONSE_DURATION%", "1"),
            ("%RESPONSE_TX_DURATION%", "0"),
            ("%UPSTREAM_HOST%", "127.0.0.1:8081"),
            ("%UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "127.0.0.1"),
            ("%UPSTREAM_CLUSTER%", "service1"),
            ("%UPSTREAM_LOCAL_ADDRESS%", "127.0.0.1:40000"),
            (
                "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
                "delayed connect error: 111",
            ),
            ("%DOWNSTREAM_REMOTE_ADDRESS%", "[2001:db8::1]:1234"),
            ("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "2001:db8::1"),
            ("%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%", "172.18.0.1:53422"),
            ("%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%", "172.18.0.1"),
            ("%DOWNSTREAM_LOCAL_ADDRESS%", "172.18.0.3:8000"),
            ("%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%", "172.18.0.3"),
            ("%DOWNSTREAM_LOCAL_PORT%", "8000"),
            ("%ROUTE_NAME%", "r1"),
            ("%CONNECTION_ID%", "7"),
            ("%REQ(:METHOD)%", "GET"),
            ("%REQ(:PATH)%", "/a/b?x=1&y=2"),
            ("%REQ_WITHOUT_QUERY(:PATH)%", "/a/b"),
            ("%REQ(:AUTHORITY)%", "localhost:8000"),
            ("%REQ(HOST)%", "localhost:8000"),
            ("%REQ(:SCHEME)%", "http"),
            ("%REQ(User-Agent)%", "curl/8.0"),
            ("%RESP(CONTENT-TYPE)%", "text/html; charset=utf-8"),
            ("%RESP(:STATUS)%", "200"),
            ("%TRAILER(GRPC-STATUS)%", "0"),
            ("%REQUESTED_SERVER_NAME%", "-"),
            ("%DYNAMIC_METADATA(envoy.lb:canary)%", "-"),
            ("100%% %RESPONSE_CODE%", "100% 200"),
            ("no operators", "no operators"),
            ("", ""),
        ];
        for (f, want) in cases {
            assert_eq!(text(f, &i), *want, "format {f}");
        }
    }

    #[test]
    fn missing_values_render_dash_or_nothing() {
        let mut i = info();
        i.protocol = None;
        i.upstream_host = None;
        i.upstream_cluster = None;
        i.response_headers = None;
        i.first_upstream_response_byte = None;
        i.authority = "".into();
        i.request_headers.remove("host");
        let f = "%PROTOCOL%|%UPSTREAM_HOST%|%UPSTREAM_CLUSTER%|%RESP(X-FOO)%|%REQ(X-BAR)%|%RESPONSE_DURATION%|\
                 %REQUEST_DURATION%|%RESPONSE_TX_DURATION%|%ROUTE_NAME%|%UPSTREAM_LOCAL_ADDRESS%|\
                 %TRAILER(GRPC-STATUS)%|%RESPONSE_CODE_DETAILS%|%REQ(:AUTHORITY)%|%REQ(HOST)%|%RESPONSE_FLAGS%";
        assert_eq!(text(f, &i), "-|-|-|-|-|-|-|-|-|-|-|-|-|-|-");
        let omit = Format::text(f, true).unwrap().render(&i);
        // RESPONSE_FLAGS is `-` even then: Envoy's value for "no flags".
        assert_eq!(omit, "||||||||||||||-");
        let mut none = info();
        none.response_code = 0;
        assert_eq!(text("%RESPONSE_CODE%", &none), "0");
    }

    #[test]
    fn req_alternative_and_truncation() {
        let mut i = info();
        i.request_headers
            .insert("x-short", HeaderValue::from_static("abc"));
        i.request_headers
            .insert("x-utf8", HeaderValue::from_bytes("é1é".as_bytes()).unwrap());
        let cases: &[(&str, &str)] = &[
            ("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "/service/1"),
            ("%REQ(X-MISSING?USER-AGENT)%", "curl/8.0"),
            ("%REQ(USER-AGENT?X-MISSING)%", "curl/8.0"),
            ("%REQ(X-MISSING?X-ALSO-MISSING)%", "-"),
            ("%REQ(USER-AGENT):4%", "curl"),
            ("%REQ(USER-AGENT):0%", ""),
            ("%REQ(X-SHORT):10%", "abc"),
            ("%REQ(X-MISSING?:PATH):4%", "/ser"),
            ("%REQ(X-MISSING):1%", "-"),
            // Never splits a character.
            ("%REQ(X-UTF8):1%", ""),
            ("%REQ(X-UTF8):3%", "é1"),
            ("%RESPONSE_CODE:1%", "2"),
            ("%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME?X-OTHER):5%", "1"),
        ];
        for (f, want) in cases {
            assert_eq!(text(f, &i), *want, "format {f}");
        }
    }

    #[test]
    fn start_time_formats() {
        let mut i = info();
        i.start_time = UNIX_EPOCH + Duration::new(T0 + 3_723, 123_456_789); // 01:02:03.123456789
        let cases: &[(&str, &str)] = &[
            ("%START_TIME%", "2024-01-01T01:02:03.123Z"),
            ("%START_TIME(%Y-%m-%dT%H:%M:%E3SZ)%", "2024-01-01T01:02:03.123Z"),
            ("%START_TIME(%Y/%m/%d)%", "2024/01/01"),
            ("%START_TIME(%s)%", "1704070923"),
            ("%START_TIME(%s.%3f)%", "1704070923.123"),
            ("%START_TIME(%f)%", "123456789"),
            ("%START_TIME(%1f|%2f|%6f|%9f)%", "1|12|123456|123456789"),
            ("%START_TIME(%H:%M:%E6S)%", "01:02:03.123456"),
            ("%START_TIME(%E*S)%", "03.123456789"),
            ("%START_TIME(%E0S)%", "03"),
            ("%START_TIME(%Ez|%z|%Z)%", "+00:00|+0000|UTC"),
            ("%START_TIME(%E4Y %b %e)%", "2024 Jan  1"),
            ("%START_TIME(100%%)%", "100%"),
            ("%START_TIME()%", "2024-01-01T01:02:03.123Z"),
        ];
        for (f, want) in cases {
            assert_eq!(text(f, &i), *want, "format {f}");
        }
        i.start_time = UNIX_EPOCH + Duration::from_secs(T0);
        assert_eq!(text("%START_TIME(%E*S)%", &i), "00");
        assert!(Format::text("%START_TIME(%Q)%", false)
            .unwrap_err()
            .contains("START_TIME"));
    }

    #[test]
    fn start_time_is_utc_and_pre_epoch_works() {
        let mut i = info();
        i.start_time = SystemTime::UNIX_EPOCH - Duration::from_millis(1);
        assert_eq!(text("%START_TIME%", &i), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn environment_and_hostname() {
        // PATH is set in any test environment; the variable is read at compile time.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(text("%ENVIRONMENT(PATH)%", &info()), path);
        assert_eq!(text("%ENVIRONMENT(PATH):3%", &info()), &path[..3.min(path.len())]);
        assert_eq!(
            text("%ENVIRONMENT(LEGATE_SURELY_UNSET_VARIABLE_42)%", &info()),
            "-"
        );
        let host = text("%HOSTNAME%", &info());
        assert!(!host.is_empty());
    }

    #[test]
    fn bad_formats_are_errors_naming_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("%NOT_AN_OPERATOR%", "%NOT_AN_OPERATOR%"),
            ("%REQ%", "needs a parameter"),
            ("%REQ()%", "needs a parameter"),
            ("%PROTOCOL(x)%", "takes no parameter"),
            ("%REQ(A?B?C)%", "more than one alternative"),
            ("%REQ(bad header)%", "not a valid header name"),
            ("%REQ(X:%", "missing `)`"),
            ("100%", "position 3"),
            ("%lower%", "position 0"),
            ("%DURATION", "invalid command operator"),
            ("%REQ(X):abc%", "must be a number"),
        ];
        for (f, want) in cases {
            let err = Format::text(f, false).unwrap_err();
            assert!(
                err.contains(want),
                "format {f}: error `{err}` should mention `{want}`"
            );
        }
    }

    fn json_struct(v: serde_json::Value) -> prost_types::Struct {
        fn conv(v: serde_json::Value) -> prost_types::Value {
            use prost_types::value::Kind as K;
            let kind = match v {
                serde_json::Value::Null => K::NullValue(0),
                serde_json::Value::Bool(b) => K::BoolValue(b),
                serde_json::Value::Number(n) => K::NumberValue(n.as_f64().unwrap()),
                serde_json::Value::String(s) => K::StringValue(s),
                serde_json::Value::Array(a) => K::ListValue(prost_types::ListValue {
                    values: a.into_iter().map(conv).collect(),
                }),
                serde_json::Value::Object(o) => K::StructValue(prost_types::Struct {
                    fields: o.into_iter().map(|(k, v)| (k, conv(v))).collect(),
                }),
            };
            prost_types::Value { kind: Some(kind) }
        }
        match conv(v).kind {
            Some(prost_types::value::Kind::StructValue(s)) => s,
            _ => unreachable!(),
        }
    }

    #[test]
    fn json_keeps_types_nests_and_nulls_missing_values() {
        let f = Format::json(
            &json_struct(serde_json::json!({
                "code": "%RESPONSE_CODE%",
                "bytes": "%BYTES_SENT%",
                "duration": "%DURATION%",
                "port": "%DOWNSTREAM_LOCAL_PORT%",
                "method": "%REQ(:METHOD)%",
                "svc_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
                "missing": "%REQ(X-NOPE)%",
                "flags": "%RESPONSE_FLAGS%",
                "mixed": "code=%RESPONSE_CODE% via %REQ(X-NOPE)%",
                "literal": "plain",
                "nested": {"host": "%UPSTREAM_HOST%", "route": "%ROUTE_NAME%", "deeper": {"p": "%PROTOCOL%"}},
                "list": ["%RESPONSE_CODE%", "%ROUTE_NAME%", "x"],
                "const": 3,
            })),
            false,
        )
        .unwrap();
        let line = f.render(&info());
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "code": 200, "bytes": 81, "duration": 2, "port": 8000, "method": "GET",
                "svc_time": "1", "missing": null, "flags": "-",
                "mixed": "code=200 via -", "literal": "plain",
                "nested": {"host": "127.0.0.1:8081", "route": null, "deeper": {"p": "HTTP/1.1"}},
                "list": [200, null, "x"], "const": 3,
            })
        );
        // Keys come out in the Struct's (sorted) order.
        assert!(
            line.starts_with("{\"bytes\":81,\"code\":200,\"const\":3,\"duration\":2,"),
            "{line}"
        );
    }

    #[test]
    fn json_omit_empty_values() {
        let f = Format::json(
            &json_struct(serde_json::json!({
                "code": "%RESPONSE_CODE%",
                "missing": "%REQ(X-NOPE)%",
                "mixed": "[%REQ(X-NOPE)%]",
                "nested": {"route": "%ROUTE_NAME%"},
                "list": ["%ROUTE_NAME%", "%BYTES_SENT%"],
            })),
            true,
        )
        .unwrap();
        assert_eq!(
            f.render(&info()),
            "{\"code\":200,\"list\":[81],\"mixed\":\"[]\",\"nested\":{}}\n"
        );
    }

    #[test]
    fn json_errors_name_the_key() {
        let err = Format::json(&json_struct(serde_json::json!({"a": {"b": "%BOGUS%"}})), false).unwrap_err();
        assert!(err.contains(".a.b") && err.contains("%BOGUS%"), "{err}");
    }

    #[test]
    fn substitution_format_string_variants() {
        use substitution_format_string::Format as F;
        let sfs = |format: F, omit: bool| SubstitutionFormatString {
            format: Some(format),
            omit_empty_values: omit,
            ..Default::default()
        };
        let ds = |s: data_source::Specifier| crate::proto::envoy::config::core::v3::DataSource {
            specifier: Some(s),
            ..Default::default()
        };
        let i = info();
        let f = Format::from_proto(&sfs(
            F::TextFormat("%RESPONSE_CODE% %ROUTE_NAME%\n".into()),
            false,
        ))
        .unwrap();
        assert_eq!(f.render(&i), "200 -\n");
        let f = Format::from_proto(&sfs(
            F::TextFormatSource(ds(data_source::Specifier::InlineString(
                "%PROTOCOL% %ROUTE_NAME%".into(),
            ))),
            true,
        ))
        .unwrap();
        assert_eq!(f.render(&i), "HTTP/1.1 ");
        let f = Format::from_proto(&sfs(
            F::TextFormatSource(ds(data_source::Specifier::InlineBytes(b"%BYTES_SENT%".to_vec()))),
            false,
        ))
        .unwrap();
        assert_eq!(f.render(&i), "81");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fmt.txt");
        std::fs::write(&p, "%UPSTREAM_CLUSTER%\n").unwrap();
        let f = Format::from_proto(&sfs(
            F::TextFormatSource(ds(data_source::Specifier::Filename(
                p.to_string_lossy().into_owned(),
            ))),
            false,
        ))
        .unwrap();
        assert_eq!(f.render(&i), "service1\n");
        let f = Format::from_proto(&sfs(
            F::JsonFormat(json_struct(serde_json::json!({"c": "%RESPONSE_CODE%"}))),
            false,
        ))
        .unwrap();
        assert_eq!(f.render(&i), "{\"c\":200}\n");

        let err = Format::from_proto(&sfs(F::TextFormat("%NOPE%".into()), false)).unwrap_err();
        assert!(
            err.starts_with("text_format: ") && err.contains("%NOPE%"),
            "{err}"
        );
        let err = Format::from_proto(&SubstitutionFormatString::default()).unwrap_err();
        assert!(err.contains("text_format_source"), "{err}");
        let err = Format::from_proto(&sfs(
            F::TextFormatSource(ds(data_source::Specifier::Filename(
                "/nonexistent/legate-fmt".into(),
            ))),
            false,
        ))
        .unwrap_err();
        assert!(err.contains("/nonexistent/legate-fmt"), "{err}");
    }

    #[test]
    fn header_value_expansion() {
        let i = info();
        assert_eq!(expand_header_value("plain", &i), "plain");
        assert_eq!(
            expand_header_value("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", &i),
            "172.18.0.1"
        );
        assert_eq!(expand_header_value("[%ROUTE_NAME%]", &i), "[]");
        assert_eq!(expand_header_value("50%", &i), "50%");
        assert_eq!(expand_header_value("100%% sure", &i), "100% sure");
    }
}
