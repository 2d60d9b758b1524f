//! A compiled route configuration: virtual-host selection and route
//! matching as Envoy does them. Pure functions over plain data, so the
//! decisions are table-tested without sockets.

use super::duration;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use regex::Regex;

use super::header_ops::HeaderOps;
use crate::proto::envoy::config::route::v3 as rpb;
use crate::proto::envoy::r#type::matcher::v3 as mpb;

/// Envoy's default route timeout.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub struct RouteTable {
    pub name: String,
    exact: HashMap<String, usize>,
    /// `*.foo.com` / `*-bar.foo.com`: (suffix, vhost), longest suffix first.
    suffixes: Vec<(String, usize)>,
    /// `foo.*`: (prefix, vhost), longest prefix first.
    prefixes: Vec<(String, usize)>,
    default: Option<usize>,
    pub virtual_hosts: Vec<VirtualHost>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// Port handling in Host matching (`ignore_port_in_host_matching`).
    pub ignore_port_in_host_matching: bool,
    /// `internal_only_headers`: removed from requests that are not internal.
    pub internal_only_headers: Vec<http::HeaderName>,
    formatted: bool,
    /// Routing itself, or every route, reads the request's fields (see
    /// [`RouteTable::reads_request_headers`]).
    reads_request_headers: bool,
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    pub routes: Vec<Route>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatcher,
    pub action: Action,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// Forwarding on this route reads or edits the request's fields beyond
    /// what every request gets (cluster_header, hash policies, rewrites,
    /// request header mutations at route or virtual host level): the
    /// request then needs a header map (see `h1_wire::RawRequest`).
    pub reads_request_headers: bool,
}

#[derive(Debug)]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// Anchored: must match the whole path without the query.
    Regex(Regex),
    SeparatedPrefix(String),
}

#[derive(Debug)]
pub struct RouteMatcher {
    pub path: PathMatch,
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatch>,
    pub query: Vec<QueryMatch>,
    pub grpc: bool,
}

#[derive(Debug)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(Regex),
}

#[derive(Debug)]
pub struct CaseStringMatch {
    pub m: StringMatch,
    pub ignore_case: bool,
}

#[derive(Debug)]
pub enum HeaderTest {
    String(CaseStringMatch),
    Present(bool),
    /// `[start, end)` on the value parsed as an integer.
    Range(i64, i64),
}

#[derive(Debug)]
pub struct HeaderMatch {
    pub name: String,
    pub test: HeaderTest,
    pub invert: bool,
    pub treat_missing_as_empty: bool,
}

#[derive(Debug)]
pub struct QueryMatch {
    pub name: String,
    /// None: present match.
    pub test: Option<CaseStringMatch>,
}

#[derive(Debug)]
pub enum Action {
    Route(RouteAction),
    Redirect(Redirect),
    Direct {
        status: StatusCode,
        body: Option<String>,
    },
}

#[derive(Debug)]
/// Cluster names are shared with each request's record (`StreamInfo`'s
/// upstream cluster) rather than copied per request.
pub enum ClusterTarget {
    Name(Arc<str>),
    Header(HeaderName),
    /// (cluster, weight), and the sum of weights.
    Weighted(Vec<(Arc<str>, u32)>, u64),
}

#[derive(Debug, PartialEq)]
pub enum HostRewrite {
    None,
    Literal(String),
    Auto,
    Header(HeaderName),
}

#[derive(Debug)]
pub struct RouteAction {
    pub target: ClusterTarget,
    pub cluster_not_found: StatusCode,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<(Regex, String)>,
    pub host_rewrite: HostRewrite,
    /// None: no timeout (`timeout: 0s`).
    pub timeout: Option<Duration>,
    /// `timeout` in milliseconds, as `x-envoy-expected-rq-timeout-ms`
    /// carries it upstream (made once, not per request).
    pub timeout_ms: Option<HeaderValue>,
    pub idle_timeout: Option<Duration>,
    /// Upgrade types allowed or refused at route level (overrides the HCM).
    pub upgrades: Vec<(String, bool)>,
    /// `hash_policy`, for RING_HASH and MAGLEV clusters ([`compute_hash`]).
    pub hash_policies: Vec<HashPolicy>,
}

/// One compiled `RouteAction.hash_policy` entry.
#[derive(Debug)]
pub struct HashPolicy {
    pub source: HashSource,
    /// Stop at this policy if a hash has been produced by now.
    pub terminal: bool,
}

/// How a generated hash-policy cookie is set on the response.
#[derive(Debug, Clone)]
pub struct CookieSpec {
    /// `Max-Age`; zero makes a session cookie (no `Max-Age`).
    pub ttl: std::time::Duration,
    pub path: String,
    pub attributes: Vec<(String, String)>,
}

/// The connection a request came on, for hash policies that use it.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub remote: std::net::SocketAddr,
    pub local: std::net::SocketAddr,
}

/// What a hash policy hashes.
#[derive(Debug)]
pub enum HashSource {
    /// Every value of the header (lower-cased name), each rewritten by
    /// `regex_rewrite` if set, sorted, and hashed as one concatenation.
    Header {
        name: String,
        rewrite: Option<(Regex, String)>,
    },
    /// The value of the cookie when the request has it; when it does not
    /// and `ttl` is set, a value made up from the connection's addresses,
    /// which the response then sets (Envoy's generated cookie).
    Cookie {
        name: String,
        generate: Option<CookieSpec>,
    },
    /// The downstream IP address as text (`connection_properties.source_ip`).
    SourceIp,
    /// The first value of the query parameter (`""` when it has no `=`).
    QueryParameter { name: String },
    /// A filter-state object; legate has no filter state, so never a hash
    /// (what Envoy does when the key is absent).
    FilterState { key: String },
}

#[derive(Debug)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<(Regex, String)>,
    pub status: StatusCode,
    pub strip_query: bool,
}

/// What the matcher looks at in a request.
pub struct RequestView<'a> {
    pub host: &'a str,
    /// `:path` with the query string.
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

/// Anchors a user regex so it must match the whole input, as RE2 full match.
pub fn full_regex(re: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| {
        format!(
            "invalid regex `{re}`: {}",
            e.to_string().lines().last().unwrap_or("syntax error")
        )
    })
}

fn string_match(m: &mpb::StringMatcher) -> Result<CaseStringMatch, String> {
    use mpb::string_matcher::MatchPattern;
    // With ignore_case the pattern is lower-cased once here; matching then
    // lower-cases only the value.
    let pattern = |s: &str| {
        if m.ignore_case {
            s.to_ascii_lowercase()
        } else {
            s.to_string()
        }
    };
    let sm = match &m.match_pattern {
        Some(MatchPattern::Exact(s)) => StringMatch::Exact(pattern(s)),
        Some(MatchPattern::Prefix(s)) => StringMatch::Prefix(pattern(s)),
        Some(MatchPattern::Suffix(s)) => StringMatch::Suffix(pattern(s)),
        Some(MatchPattern::Contains(s)) => StringMatch::Contains(pattern(s)),
        Some(MatchPattern::SafeRegex(r)) => StringMatch::Regex(full_regex(&r.regex)?),
        #[allow(unreachable_patterns)]
        _ => return Err("a string matcher needs exact, prefix, suffix, contains or safe_regex".into()),
    };
    Ok(CaseStringMatch {
        m: sm,
        ignore_case: m.ignore_case,
    })
}

impl CaseStringMatch {
    pub fn matches(&self, value: &str) -> bool {
        let lowered;
        let v = if self.ignore_case && !matches!(self.m, StringMatch::Regex(_)) {
            lowered = value.to_ascii_lowercase();
            lowered.as_str()
        } else {
            // Envoy ignores ignore_case for regexes.
            value
        };
        match &self.m {
            StringMatch::Exact(s) => v == s,
            StringMatch::Prefix(s) => v.starts_with(s.as_str()),
            StringMatch::Suffix(s) => v.ends_with(s.as_str()),
            StringMatch::Contains(s) => v.contains(s.as_str()),
            StringMatch::Regex(r) => r.is_match(v),
        }
    }
}

impl HeaderMatch {
    /// Compiles a `HeaderMatcher` (route matches and access-log header filters).
    pub fn compile(h: &rpb::HeaderMatcher) -> Result<HeaderMatch, String> {
        if h.name.is_empty() {
            return Err("name: must not be empty".into());
        }
        header_match(h)
    }
}

fn header_match(h: &rpb::HeaderMatcher) -> Result<HeaderMatch, String> {
    use rpb::header_matcher::HeaderMatchSpecifier as S;
    let exact = |m: StringMatch| {
        HeaderTest::String(CaseStringMatch {
            m,
            ignore_case: false,
        })
    };
    let test = match &h.header_match_specifier {
        Some(S::StringMatch(m)) => {
            HeaderTest::String(string_match(m).map_err(|e| format!("string_match: {e}"))?)
        }
        Some(S::ExactMatch(s)) => exact(StringMatch::Exact(s.clone())),
        Some(S::PrefixMatch(s)) => exact(StringMatch::Prefix(s.clone())),
        Some(S::SuffixMatch(s)) => exact(StringMatch::Suffix(s.clone())),
        Some(S::ContainsMatch(s)) => exact(StringMatch::Contains(s.clone())),
        Some(S::SafeRegexMatch(r)) => exact(StringMatch::Regex(
            full_regex(&r.regex).map_err(|e| format!("safe_regex_match: {e}"))?,
        )),
        Some(S::PresentMatch(p)) => HeaderTest::Present(*p),
        Some(S::RangeMatch(r)) => HeaderTest::Range(r.start, r.end),
        // No specifier: the header must be present.
        None => HeaderTest::Present(true),
    };
    Ok(HeaderMatch {
        name: h.name.to_ascii_lowercase(),
        test,
        invert: h.invert_match,
        treat_missing_as_empty: h.treat_missing_header_as_empty,
    })
}

/// The value Envoy matches for a header: pseudo-headers from the request
/// line, several values joined with `,`.
fn header_value(req: &RequestView, name: &str) -> Option<String> {
    match name {
        ":path" => return Some(req.path.to_string()),
        ":method" => return Some(req.method.as_str().to_string()),
        ":authority" | "host" => return Some(req.host.to_string()),
        _ => {}
    }
    let mut values = req.headers.get_all(name).iter().peekable();
    values.peek()?;
    Some(
        values
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(","),
    )
}

impl HeaderMatch {
    pub fn matches(&self, req: &RequestView) -> bool {
        let value = header_value(req, &self.name).or_else(|| self.treat_missing_as_empty.then(String::new));
        let hit = match (&self.test, &value) {
            (HeaderTest::Present(want), v) => {
                // present_match: false matches an absent header.
                return (v.is_some() == *want) != self.invert;
            }
            (_, None) => return false, // absent headers never match, even inverted (Envoy)
            (HeaderTest::String(m), Some(v)) => m.matches(v),
            (HeaderTest::Range(start, end), Some(v)) => {
                v.parse::<i64>().is_ok_and(|n| n >= *start && n < *end)
            }
        };
        hit != self.invert
    }
}

fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

impl RouteMatcher {
    pub fn matches(&self, req: &RequestView) -> bool {
        let (path_only, query) = req.path.split_once('?').unwrap_or((req.path, ""));
        let path_ok = match &self.path {
            PathMatch::Prefix(p) => starts_with(req.path, p, self.case_sensitive),
            PathMatch::Exact(p) => eq(path_only, p, self.case_sensitive),
            PathMatch::Regex(r) => r.is_match(path_only),
            PathMatch::SeparatedPrefix(p) => {
                starts_with(path_only, p, self.case_sensitive)
                    && (path_only.len() == p.len() || path_only.as_bytes()[p.len()] == b'/')
            }
        };
        if !path_ok {
            return false;
        }
        if self.grpc {
            let ct = req
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !ct.starts_with("application/grpc") {
                return false;
            }
        }
        self.headers.iter().all(|h| h.matches(req))
            && self
                .query
                .iter()
                .all(|q| match (query_value(query, &q.name), &q.test) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(v), Some(m)) => m.matches(v),
                })
    }
}

fn starts_with(s: &str, prefix: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        s.starts_with(prefix)
    } else {
        s.len() >= prefix.len()
            && s.is_char_boundary(prefix.len())
            && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    }
}

fn eq(a: &str, b: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        a == b
    } else {
        a.eq_ignore_ascii_case(b)
    }
}

impl RouteTable {
    /// Compiles a validated RouteConfiguration. Errors are messages for the
    /// caller to place (the bootstrap validator has checked most things).
    pub fn compile(rc: &rpb::RouteConfiguration) -> Result<RouteTable, String> {
        let mut table = RouteTable {
            name: rc.name.clone(),
            exact: HashMap::new(),
            suffixes: Vec::new(),
            prefixes: Vec::new(),
            default: None,
            // Exact: kept for the table's life (doubling left up to 40% spare).
            virtual_hosts: Vec::with_capacity(rc.virtual_hosts.len()),
            request_headers: HeaderOps::compile(&rc.request_headers_to_add, &rc.request_headers_to_remove)?,
            response_headers: HeaderOps::compile(
                &rc.response_headers_to_add,
                &rc.response_headers_to_remove,
            )?,
            ignore_port_in_host_matching: rc.ignore_port_in_host_matching,
            internal_only_headers: rc
                .internal_only_headers
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    http::HeaderName::from_bytes(h.as_bytes())
                        .map_err(|_| format!("internal_only_headers[{i}]: `{h}` is not a valid header name"))
                })
                .collect::<Result<_, _>>()?,
            formatted: false,
            reads_request_headers: false,
        };
        for (i, vh) in rc.virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                let d = d.to_ascii_lowercase();
                if d == "*" {
                    table.default = Some(i);
                } else if let Some(suffix) = d.strip_prefix('*') {
                    table.suffixes.push((suffix.to_string(), i));
                } else if let Some(prefix) = d.strip_suffix('*') {
                    table.prefixes.push((prefix.to_string(), i));
                } else {
                    table.exact.insert(d, i);
                }
            }
            let request_headers =
                HeaderOps::compile(&vh.request_headers_to_add, &vh.request_headers_to_remove)?;
            let mut routes = Vec::with_capacity(vh.routes.len());
            for (j, r) in vh.routes.iter().enumerate() {
                let mut route =
                    compile_route(r).map_err(|e| format!("virtual_hosts[{i}].routes[{j}]: {e}"))?;
                route.reads_request_headers |= !request_headers.is_empty();
                routes.push(route);
            }
            table.virtual_hosts.push(VirtualHost {
                name: vh.name.clone(),
                routes,
                request_headers,
                response_headers: HeaderOps::compile(
                    &vh.response_headers_to_add,
                    &vh.response_headers_to_remove,
                )?,
            });
        }
        // Longest wildcard wins.
        table.suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        table.prefixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        table.formatted = table.any_formatted();
        table.reads_request_headers = table.formatted
            || !table.request_headers.is_empty()
            || !table.internal_only_headers.is_empty()
            || table
                .virtual_hosts
                .iter()
                .flat_map(|v| &v.routes)
                .any(|r| !r.matcher.headers.is_empty() || r.matcher.grpc);
        Ok(table)
    }

    /// Whether a request's fields are read before or whatever the route
    /// (header or gRPC matchers, `internal_only_headers`, table-level request
    /// header mutations, formatted header values): the request then needs a
    /// header map from the start (see `h1_wire::RawRequest`). Computed once.
    pub fn reads_request_headers(&self) -> bool {
        self.reads_request_headers
    }

    /// Does any level add a header whose value has `%…%` operators?
    /// (Computed once at compile; read per request.)
    pub fn has_formatted_headers(&self) -> bool {
        self.formatted
    }

    fn any_formatted(&self) -> bool {
        let formatted = |o: &HeaderOps| o.add.iter().any(|a| a.formatted);
        formatted(&self.request_headers)
            || formatted(&self.response_headers)
            || self.virtual_hosts.iter().any(|v| {
                formatted(&v.request_headers)
                    || formatted(&v.response_headers)
                    || v.routes
                        .iter()
                        .any(|r| formatted(&r.request_headers) || formatted(&r.response_headers))
            })
    }

    /// Envoy's virtual-host selection: exact, then longest `*suffix`, then
    /// longest `prefix*`, then `*`. `host` is already lower-cased and has had
    /// its port stripped when configured to.
    pub fn select_vhost(&self, host: &str) -> Option<&VirtualHost> {
        let idx = self
            .exact
            .get(host)
            .copied()
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
                    .map(|(_, i)| *i)
            })
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
                    .map(|(_, i)| *i)
            })
            .or(self.default)?;
        self.virtual_hosts.get(idx)
    }

    /// The virtual host and the first matching route, if any.
    pub fn route<'t>(&'t self, req: &RequestView) -> (Option<&'t VirtualHost>, Option<&'t Route>) {
        let host = normalise_host(req.host, self.ignore_port_in_host_matching);
        let Some(vh) = self.select_vhost(&host) else {
            return (None, None);
        };
        (Some(vh), vh.routes.iter().find(|r| r.matcher.matches(req)))
    }
}

/// Lower-cases the host and strips the port when asked to. An IPv6 literal
/// keeps its brackets.
pub fn normalise_host(host: &str, strip_port: bool) -> std::borrow::Cow<'_, str> {
    let host = if strip_port { strip_port_of(host) } else { host };
    // Hosts nearly always come lower-case: no copy then.
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// `host:port` → `host`; `[::1]:80` → `[::1]`; anything else unchanged.
pub fn strip_port_of(host: &str) -> &str {
    if let Some(end) = host.rfind(']') {
        return &host[..=end];
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn compile_route(r: &rpb::Route) -> Result<Route, String> {
    use rpb::route_match::PathSpecifier as P;
    let m = r.r#match.as_ref().ok_or("a route needs a `match`")?;
    let case_sensitive = m.case_sensitive.unwrap_or(true);
    let path = match &m.path_specifier {
        Some(P::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(P::Path(p)) => PathMatch::Exact(p.clone()),
        Some(P::SafeRegex(re)) => PathMatch::Regex(full_regex(&re.regex)?),
        Some(P::PathSeparatedPrefix(p)) => PathMatch::SeparatedPrefix(p.clone()),
        _ => return Err("this path specifier is not supported by legate yet".into()),
    };
    let headers = m.headers.iter().map(header_match).collect::<Result<_, _>>()?;
    let query = m
        .query_parameters
        .iter()
        .map(|q| {
            use rpb::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
            Ok(QueryMatch {
                name: q.name.clone(),
                test: match &q.query_parameter_match_specifier {
                    Some(Q::StringMatch(sm)) => Some(string_match(sm)?),
                    _ => None,
                },
            })
        })
        .collect::<Result<_, String>>()?;
    let matcher = RouteMatcher {
        path,
        case_sensitive,
        headers,
        query,
        grpc: m.grpc.is_some(),
    };
    let action = match &r.action {
        Some(rpb::route::Action::Route(ra)) => Action::Route(compile_action(ra)?),
        Some(rpb::route::Action::Redirect(rd)) => Action::Redirect(compile_redirect(rd)?),
        Some(rpb::route::Action::DirectResponse(dr)) => Action::Direct {
            status: StatusCode::from_u16(dr.status.try_into().unwrap_or(0))
                .map_err(|_| format!("direct_response.status {} is not an HTTP status", dr.status))?,
            body: match dr.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                None => None,
                Some(crate::proto::envoy::config::core::v3::data_source::Specifier::InlineString(s)) => {
                    Some(s.clone())
                }
                Some(crate::proto::envoy::config::core::v3::data_source::Specifier::InlineBytes(b)) => {
                    Some(String::from_utf8_lossy(b).into_owned())
                }
                Some(crate::proto::envoy::config::core::v3::data_source::Specifier::Filename(f)) => Some(
                    std::fs::read_to_string(f)
                        .map_err(|e| format!("direct_response.body.filename {f}: {e}"))?,
                ),
                Some(crate::proto::envoy::config::core::v3::data_source::Specifier::EnvironmentVariable(
                    v,
                )) => Some(std::env::var(v).map_err(|_| format!("direct_response.body: ${v} is not set"))?),
            },
        },
        _ => return Err("a route needs `route`, `redirect` or `direct_response`".into()),
    };
    let request_headers = HeaderOps::compile(&r.request_headers_to_add, &r.request_headers_to_remove)?;
    let reads_request_headers = !request_headers.is_empty()
        || match &action {
            Action::Route(a) => {
                matches!(a.target, ClusterTarget::Header(_))
                    || !a.hash_policies.is_empty()
                    || a.prefix_rewrite.is_some()
                    || a.regex_rewrite.is_some()
                    || a.host_rewrite != HostRewrite::None
            }
            Action::Redirect(_) | Action::Direct { .. } => false,
        };
    Ok(Route {
        name: r.name.clone(),
        matcher,
        action,
        request_headers,
        response_headers: HeaderOps::compile(&r.response_headers_to_add, &r.response_headers_to_remove)?,
        reads_request_headers,
    })
}

fn compile_action(ra: &rpb::RouteAction) -> Result<RouteAction, String> {
    use rpb::route_action::{
        ClusterNotFoundResponseCode as Nf, ClusterSpecifier as C, HostRewriteSpecifier as H,
    };
    let target = match &ra.cluster_specifier {
        Some(C::Cluster(c)) => ClusterTarget::Name(Arc::from(c.as_str())),
        Some(C::ClusterHeader(h)) => ClusterTarget::Header(
            HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("`{h}` is not a header name"))?,
        ),
        Some(C::WeightedClusters(w)) => {
            let clusters: Vec<(Arc<str>, u32)> = w
                .clusters
                .iter()
                .map(|c| (Arc::from(c.name.as_str()), c.weight.unwrap_or(0)))
                .collect();
            let total: u64 = clusters.iter().map(|(_, w)| u64::from(*w)).sum();
            if total == 0 {
                return Err("weighted_clusters: the weights add up to 0".into());
            }
            ClusterTarget::Weighted(clusters, total)
        }
        _ => return Err("a route action needs `cluster`, `cluster_header` or `weighted_clusters`".into()),
    };
    let host_rewrite = match &ra.host_rewrite_specifier {
        None => HostRewrite::None,
        Some(H::HostRewriteLiteral(h)) => HostRewrite::Literal(h.clone()),
        Some(H::AutoHostRewrite(true)) => HostRewrite::Auto,
        Some(H::AutoHostRewrite(false)) => HostRewrite::None,
        Some(H::HostRewriteHeader(h)) => HostRewrite::Header(
            HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("`{h}` is not a header name"))?,
        ),
        Some(_) => return Err("this host rewrite is not supported by legate yet".into()),
    };
    let timeout = match &ra.timeout {
        None => Some(DEFAULT_ROUTE_TIMEOUT),
        Some(d) if d.seconds == 0 && d.nanos == 0 => None,
        Some(d) => Some(duration(d)),
    };
    Ok(RouteAction {
        target,
        cluster_not_found: match Nf::try_from(ra.cluster_not_found_response_code) {
            Ok(Nf::NotFound) => StatusCode::NOT_FOUND,
            Ok(Nf::InternalServerError) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        },
        prefix_rewrite: (!ra.prefix_rewrite.is_empty()).then(|| ra.prefix_rewrite.clone()),
        regex_rewrite: match &ra.regex_rewrite {
            Some(rr) => {
                let re = rr.pattern.as_ref().ok_or("regex_rewrite needs a `pattern`")?;
                Some((
                    Regex::new(&re.regex).map_err(|e| format!("invalid regex `{}`: {e}", re.regex))?,
                    rr.substitution.clone(),
                ))
            }
            None => None,
        },
        host_rewrite,
        timeout,
        timeout_ms: timeout.map(|t| HeaderValue::from(t.as_millis() as u64)),
        idle_timeout: ra.idle_timeout.as_ref().map(duration).filter(|d| !d.is_zero()),
        upgrades: ra
            .upgrade_configs
            .iter()
            .map(|u| (u.upgrade_type.to_ascii_lowercase(), u.enabled.unwrap_or(true)))
            .collect(),
        hash_policies: compile_hash_policies(&ra.hash_policy)?,
    })
}

fn compile_hash_policies(policies: &[rpb::route_action::HashPolicy]) -> Result<Vec<HashPolicy>, String> {
    use rpb::route_action::hash_policy::PolicySpecifier as P;
    let mut out = Vec::with_capacity(policies.len());
    for (i, p) in policies.iter().enumerate() {
        let source = match &p.policy_specifier {
            Some(P::Header(h)) => {
                if h.header_name.is_empty() {
                    return Err(format!("hash_policy[{i}].header.header_name must not be empty"));
                }
                let rewrite = match &h.regex_rewrite {
                    Some(rr) => {
                        let re = rr
                            .pattern
                            .as_ref()
                            .ok_or_else(|| format!("hash_policy[{i}].header.regex_rewrite needs a `pattern`"))?;
                        Some((
                            Regex::new(&re.regex).map_err(|e| format!("invalid regex `{}`: {e}", re.regex))?,
                            envoy_substitution(&rr.substitution),
                        ))
                    }
                    None => None,
                };
                HashSource::Header {
                    name: h.header_name.to_ascii_lowercase(),
                    rewrite,
                }
            }
            Some(P::Cookie(c)) if c.name.is_empty() => {
                return Err(format!("hash_policy[{i}].cookie.name must not be empty"))
            }
            Some(P::Cookie(c)) => HashSource::Cookie {
                name: c.name.clone(),
                generate: c.ttl.as_ref().map(|ttl| CookieSpec {
                    ttl: super::duration(ttl),
                    path: c.path.clone(),
                    attributes: c.attributes.iter().map(|a| (a.name.clone(), a.value.clone())).collect(),
                }),
            },
            // `source_ip: false` adds no policy at all in Envoy (its
            // `terminal` flag included).
            Some(P::ConnectionProperties(c)) if !c.source_ip => continue,
            Some(P::ConnectionProperties(_)) => HashSource::SourceIp,
            Some(P::QueryParameter(q)) if q.name.is_empty() => {
                return Err(format!("hash_policy[{i}].query_parameter.name must not be empty"))
            }
            Some(P::QueryParameter(q)) => HashSource::QueryParameter { name: q.name.clone() },
            Some(P::FilterState(f)) if f.key.is_empty() => {
                return Err(format!("hash_policy[{i}].filter_state.key must not be empty"))
            }
            Some(P::FilterState(f)) => HashSource::FilterState { key: f.key.clone() },
            None => {
                return Err(format!(
                    "hash_policy[{i}] needs one of `header`, `cookie`, `connection_properties`, `query_parameter`, `filter_state`"
                ))
            }
        };
        out.push(HashPolicy {
            source,
            terminal: p.terminal,
        });
    }
    Ok(out)
}

/// The request hash for a RING_HASH / MAGLEV cluster, as Envoy's
/// `HashPolicyImpl::generateHash`: each policy that yields a hash is folded
/// in as `hash = rotl(hash, 1) ^ new` (the first one as is), and a
/// `terminal` policy ends the walk once there is a hash. None when no policy
/// yields one (the load balancer then picks at random).
///
/// `req.host` stands for `:authority` and should be the request's authority
/// as received; `peer` is the downstream connection. A cookie policy that
/// makes up its cookie pushes the `set-cookie` value for the response onto
/// `set_cookies`.
pub fn compute_hash(
    policies: &[HashPolicy],
    req: &RequestView,
    peer: Peer,
    set_cookies: &mut Vec<String>,
) -> Option<u64> {
    let mut hash: Option<u64> = None;
    for p in policies {
        if let Some(new) = p.source.evaluate(req, peer, set_cookies) {
            let old = hash.map_or(0, |h| h.rotate_left(1));
            hash = Some(old ^ new);
        }
        if p.terminal && hash.is_some() {
            break;
        }
    }
    hash
}

fn xxhash64(bytes: &[u8]) -> u64 {
    super::lb::xxhash64(bytes, 0)
}

impl HashSource {
    fn evaluate(&self, req: &RequestView, peer: Peer, set_cookies: &mut Vec<String>) -> Option<u64> {
        match self {
            HashSource::Header { name, rewrite } => {
                let mut values: Vec<Vec<u8>> = match name.as_str() {
                    ":authority" => vec![req.host.as_bytes().to_vec()],
                    ":path" => vec![req.path.as_bytes().to_vec()],
                    ":method" => vec![req.method.as_str().as_bytes().to_vec()],
                    _ => req
                        .headers
                        .get_all(name.as_str())
                        .iter()
                        .map(|v| v.as_bytes().to_vec())
                        .collect(),
                };
                if values.is_empty() {
                    return None;
                }
                if let Some((re, sub)) = rewrite {
                    for v in values.iter_mut() {
                        let text = String::from_utf8_lossy(v);
                        *v = re.replace_all(&text, sub.as_str()).into_owned().into_bytes();
                    }
                }
                // Envoy sorts so that the order of repeated headers does not
                // matter, then hashes the values back to back.
                values.sort();
                Some(xxhash64(&values.concat()))
            }
            HashSource::Cookie { name, generate } => match cookie_value(req.headers, name) {
                Some(value) if !value.is_empty() => Some(xxhash64(value)),
                _ => {
                    let spec = generate.as_ref()?;
                    // As Envoy: the same for every request of a connection,
                    // so that racing requests get the same cookie.
                    let value = format!(
                        "{:016x}",
                        xxhash64(format!("{}{}", peer.remote, peer.local).as_bytes())
                    );
                    set_cookies.push(set_cookie_value(name, &value, spec));
                    Some(xxhash64(value.as_bytes()))
                }
            },
            HashSource::SourceIp => Some(xxhash64(peer.remote.ip().to_string().as_bytes())),
            HashSource::QueryParameter { name } => {
                let (_, query) = req.path.split_once('?')?;
                query_value(query, name).map(|v| xxhash64(v.as_bytes()))
            }
            HashSource::FilterState { .. } => None,
        }
    }
}

/// A `set-cookie` value as Envoy writes it: the value quoted, `Max-Age`
/// unless a session cookie, `Path` when set, the attributes, `HttpOnly`.
pub fn set_cookie_value(name: &str, value: &str, spec: &CookieSpec) -> String {
    let mut out = format!("{name}=\"{value}\"");
    if spec.ttl.as_secs() > 0 {
        out.push_str(&format!("; Max-Age={}", spec.ttl.as_secs()));
    }
    if !spec.path.is_empty() {
        out.push_str(&format!("; Path={}", spec.path));
    }
    for (n, v) in &spec.attributes {
        if v.is_empty() {
            out.push_str(&format!("; {n}"));
        } else {
            out.push_str(&format!("; {n}={v}"));
        }
    }
    out.push_str("; HttpOnly");
    out
}

/// The first cookie called `name` in the request's `cookie` headers, with
/// surrounding double quotes removed (Envoy's `Utility::parseCookieValue`).
fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    for header in headers.get_all(http::header::COOKIE) {
        for part in header.as_bytes().split(|b| *b == b';') {
            let Some(eq) = part.iter().position(|b| *b == b'=') else {
                continue;
            };
            let (k, v) = (&part[..eq], &part[eq + 1..]);
            let start = k.iter().position(|b| *b != b' ').unwrap_or(k.len());
            if &k[start..] == name.as_bytes() {
                let v = if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                    &v[1..v.len() - 1]
                } else {
                    v
                };
                return Some(v);
            }
        }
    }
    None
}

fn compile_redirect(rd: &rpb::RedirectAction) -> Result<Redirect, String> {
    use rpb::redirect_action::{
        PathRewriteSpecifier as P, RedirectResponseCode as C, SchemeRewriteSpecifier as S,
    };
    let status = match C::try_from(rd.response_code) {
        Ok(C::Found) => StatusCode::FOUND,
        Ok(C::SeeOther) => StatusCode::SEE_OTHER,
        Ok(C::TemporaryRedirect) => StatusCode::TEMPORARY_REDIRECT,
        Ok(C::PermanentRedirect) => StatusCode::PERMANENT_REDIRECT,
        _ => StatusCode::MOVED_PERMANENTLY,
    };
    let (mut path, mut prefix_rewrite, mut regex_rewrite) = (None, None, None);
    match &rd.path_rewrite_specifier {
        Some(P::PathRedirect(p)) => path = Some(p.clone()),
        Some(P::PrefixRewrite(p)) => prefix_rewrite = Some(p.clone()),
        Some(P::RegexRewrite(rr)) => {
            let re = rr.pattern.as_ref().ok_or("regex_rewrite needs a `pattern`")?;
            regex_rewrite = Some((
                Regex::new(&re.regex).map_err(|e| format!("invalid regex `{}`: {e}", re.regex))?,
                rr.substitution.clone(),
            ));
        }
        None => {}
        #[allow(unreachable_patterns)]
        Some(_) => return Err("this redirect path rewrite is not supported by legate yet".into()),
    }
    Ok(Redirect {
        scheme: match &rd.scheme_rewrite_specifier {
            Some(S::HttpsRedirect(true)) => Some("https".into()),
            Some(S::SchemeRedirect(s)) => Some(s.clone()),
            _ => None,
        },
        host: (!rd.host_redirect.is_empty()).then(|| rd.host_redirect.clone()),
        port: (rd.port_redirect != 0).then(|| u16::try_from(rd.port_redirect).unwrap_or(u16::MAX)),
        path,
        prefix_rewrite,
        regex_rewrite,
        status,
        strip_query: rd.strip_query,
    })
}

/// The path the upstream sees after `prefix_rewrite` / `regex_rewrite`;
/// None when the route does not rewrite.
pub fn rewrite_path(action: &RouteAction, matcher: &RouteMatcher, path: &str) -> Option<String> {
    if let Some(new_prefix) = &action.prefix_rewrite {
        let matched_len = match &matcher.path {
            PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p) => p.len(),
            PathMatch::Exact(p) => p.len(),
            PathMatch::Regex(_) => 0,
        };
        let rest = path.get(matched_len..).unwrap_or("");
        return Some(format!("{new_prefix}{rest}"));
    }
    if let Some((re, sub)) = &action.regex_rewrite {
        // The regex applies to the path without the query, which is kept.
        let (p, q) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let new = re.replace_all(p, envoy_substitution(sub).as_str()).into_owned();
        return Some(match q {
            Some(q) => format!("{new}?{q}"),
            None => new,
        });
    }
    None
}

/// Envoy (RE2) writes capture groups as `\1`; the regex crate as `${1}`.
pub fn envoy_substitution(sub: &str) -> String {
    let mut out = String::with_capacity(sub.len());
    let mut chars = sub.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                let d = chars.next().unwrap_or('0');
                out.push_str(&format!("${{{d}}}"));
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// The `location` of a redirect for a request to `scheme://host{path}`.
pub fn redirect_location(
    rd: &Redirect,
    scheme: &str,
    host: &str,
    path: &str,
    matcher: &RouteMatcher,
) -> String {
    let scheme = rd.scheme.as_deref().unwrap_or(scheme);
    let (host_only, port) = match host.rfind(']') {
        Some(end) => (&host[..=end], host[end + 1..].strip_prefix(':')),
        None => match host.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        },
    };
    let host_only = rd.host.as_deref().unwrap_or(host_only);
    let port = match (rd.port, port) {
        (Some(p), _) => Some(p.to_string()),
        // Switching to https drops the original port, as Envoy does.
        (None, Some(p)) if rd.scheme.is_none() => Some(p.to_string()),
        _ => None,
    };
    let (path_only, query) = path.split_once('?').map_or((path, None), |(p, q)| (p, Some(q)));
    let mut new_path = if let Some(p) = &rd.path {
        p.clone()
    } else if let Some(prefix) = &rd.prefix_rewrite {
        let n = match &matcher.path {
            PathMatch::Prefix(p) | PathMatch::SeparatedPrefix(p) | PathMatch::Exact(p) => p.len(),
            PathMatch::Regex(_) => 0,
        };
        format!("{prefix}{}", path_only.get(n..).unwrap_or(""))
    } else if let Some((re, sub)) = &rd.regex_rewrite {
        re.replace_all(path_only, envoy_substitution(sub).as_str())
            .into_owned()
    } else {
        path_only.to_string()
    };
    if let (Some(q), false) = (query, rd.strip_query) {
        if !new_path.contains('?') {
            new_path.push('?');
            new_path.push_str(q);
        }
    }
    match port {
        Some(p) => format!("{scheme}://{host_only}:{p}{new_path}"),
        None => format!("{scheme}://{host_only}{new_path}"),
    }
}

/// A header value for a request to a cluster chosen by header; helper kept
/// here so the decision stays with the route table.
pub fn cluster_from_header(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml;
    use std::net::IpAddr;

    fn table(yaml_text: &str) -> RouteTable {
        let node = yaml::parse(yaml_text).unwrap();
        let msg = crate::config::decode::decode(
            "envoy.config.route.v3.RouteConfiguration",
            &node,
            &mut Vec::new(),
            &mut HashMap::new(),
        )
        .unwrap();
        RouteTable::compile(&msg.transcode_to().unwrap()).unwrap()
    }

    fn pick<'a>(t: &'a RouteTable, host: &str, path: &str, headers: &[(&str, &str)]) -> Option<&'a str> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let req = RequestView {
            host,
            path,
            method: &Method::GET,
            headers: &h,
        };
        t.route(&req).1.map(|r| r.name.as_str())
    }

    #[test]
    fn virtual_host_selection_follows_envoy_order() {
        let t = table(
            r#"
virtual_hosts:
- {name: exact, domains: ["www.foo.com"], routes: [{name: exact, match: {prefix: /}, direct_response: {status: 200}}]}
- {name: suffix, domains: ["*.foo.com"], routes: [{name: suffix, match: {prefix: /}, direct_response: {status: 200}}]}
- {name: longsuffix, domains: ["*.bar.foo.com"], routes: [{name: longsuffix, match: {prefix: /}, direct_response: {status: 200}}]}
- {name: prefix, domains: ["foo.*"], routes: [{name: prefix, match: {prefix: /}, direct_response: {status: 200}}]}
- {name: any, domains: ["*"], routes: [{name: any, match: {prefix: /}, direct_response: {status: 200}}]}
"#,
        );
        let cases = [
            ("www.foo.com", "exact"),
            ("WWW.Foo.COM", "exact"),
            ("a.foo.com", "suffix"),
            ("x.bar.foo.com", "longsuffix"),
            (".foo.com", "any"), // the wildcard never matches an empty string
            ("foo.org", "prefix"),
            ("other", "any"),
            ("www.foo.com:8080", "any"), // the port is part of the host unless stripped
        ];
        for (host, want) in cases {
            assert_eq!(pick(&t, host, "/", &[]), Some(want), "{host}");
        }
    }

    #[test]
    fn what_reads_a_requests_fields_is_known_at_compile() {
        let vh = |route: &str, extra: &str| {
            format!("virtual_hosts: [{{name: v, domains: ['*'], routes: [{route}]{extra}}}]")
        };
        let plain = "{match: {prefix: /}, route: {cluster: c}}";
        // (route config, the table reads fields before routing, the route reads them)
        let cases: Vec<(String, bool, bool)> = vec![
            (vh(plain, ""), false, false),
            (vh("{match: {prefix: /}, redirect: {path_redirect: /x}}", ""), false, false),
            (vh("{match: {prefix: /, headers: [{name: a, present_match: true}]}, route: {cluster: c}}", ""), true, false),
            (vh("{match: {prefix: /, grpc: {}}, route: {cluster: c}}", ""), true, false),
            (format!("{}\ninternal_only_headers: [x-secret]", vh(plain, "")), true, false),
            (format!("{}\nrequest_headers_to_remove: [x-a]", vh(plain, "")), true, false),
            (vh("{match: {prefix: /}, route: {cluster: c}, response_headers_to_add: [{header: {key: a, value: '%PROTOCOL%'}}]}", ""), true, false),
            (vh("{match: {prefix: /}, route: {cluster: c}, response_headers_to_add: [{header: {key: a, value: b}}]}", ""), false, false),
            (vh(plain, ", request_headers_to_add: [{header: {key: a, value: b}}]"), false, true),
            (vh("{match: {prefix: /}, route: {cluster: c}, request_headers_to_remove: [a]}", ""), false, true),
            (vh("{match: {prefix: /}, route: {cluster_header: x-cluster}}", ""), false, true),
            (vh("{match: {prefix: /}, route: {cluster: c, prefix_rewrite: /x}}", ""), false, true),
            (vh("{match: {prefix: /}, route: {cluster: c, regex_rewrite: {pattern: {regex: a}, substitution: b}}}", ""), false, true),
            (vh("{match: {prefix: /}, route: {cluster: c, host_rewrite_literal: h}}", ""), false, true),
            (vh("{match: {prefix: /}, route: {cluster: c, auto_host_rewrite: true}}", ""), false, true),
            (vh("{match: {prefix: /}, route: {cluster: c, hash_policy: [{connection_properties: {source_ip: true}}]}}", ""), false, true),
        ];
        for (yaml, before, route) in cases {
            let t = table(&yaml);
            let r = &t.virtual_hosts[0].routes[0];
            assert_eq!(
                (t.reads_request_headers(), r.reads_request_headers),
                (before, route),
                "{yaml}"
            );
        }
    }

    #[test]
    fn no_virtual_host_means_no_route() {
        let t = table("virtual_hosts: [{name: a, domains: [a.com], routes: [{match: {prefix: /}, direct_response: {status: 200}}]}]");
        assert_eq!(pick(&t, "b.com", "/", &[]), None);
    }

    #[test]
    fn path_matchers() {
        let t = table(
            r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - {name: exact, match: {path: /exact}, direct_response: {status: 200}}
  - {name: regex, match: {safe_regex: {regex: "/re/[0-9]+"}}, direct_response: {status: 200}}
  - {name: sep, match: {path_separated_prefix: /api/dev}, direct_response: {status: 200}}
  - {name: nocase, match: {prefix: /CASE, case_sensitive: false}, direct_response: {status: 200}}
  - {name: prefix, match: {prefix: /}, direct_response: {status: 200}}
"#,
        );
        let cases = [
            ("/exact", "exact"),
            ("/exact?x=1", "exact"),
            ("/exact/", "prefix"),
            ("/re/123", "regex"),
            ("/re/123?q", "regex"),
            ("/re/12a", "prefix"), // the whole path must match
            ("/api/dev", "sep"),
            ("/api/dev/x", "sep"),
            ("/api/dev?q=1", "sep"),
            ("/api/developer", "prefix"),
            ("/case/x", "nocase"),
            ("/CaSe", "nocase"),
        ];
        for (path, want) in cases {
            assert_eq!(pick(&t, "h", path, &[]), Some(want), "{path}");
        }
    }

    #[test]
    fn header_and_query_matchers() {
        let t = table(
            r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - {name: exact, match: {prefix: /, headers: [{name: x-a, string_match: {exact: one}}]}, direct_response: {status: 200}}
  - {name: legacy, match: {prefix: /, headers: [{name: x-b, exact_match: two}]}, direct_response: {status: 200}}
  - {name: regex, match: {prefix: /, headers: [{name: x-c, string_match: {safe_regex: {regex: "v[0-9]"}}}]}, direct_response: {status: 200}}
  - {name: absent, match: {prefix: /, headers: [{name: x-d, present_match: false}, {name: x-e, present_match: true}]}, direct_response: {status: 200}}
  - {name: inverted, match: {prefix: /, headers: [{name: x-f, string_match: {prefix: "no"}, invert_match: true}]}, direct_response: {status: 200}}
  - {name: method, match: {prefix: /, headers: [{name: ":method", string_match: {exact: POST}}]}, direct_response: {status: 200}}
  - {name: query, match: {prefix: /, query_parameters: [{name: debug, string_match: {exact: "1"}}]}, direct_response: {status: 200}}
  - {name: fallback, match: {prefix: /}, direct_response: {status: 200}}
"#,
        );
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            ("/", &[("x-a", "one")], "exact"),
            ("/", &[("x-a", "One")], "fallback"),
            ("/", &[("x-b", "two")], "legacy"),
            ("/", &[("x-c", "v1")], "regex"),
            ("/", &[("x-c", "v12")], "fallback"),
            ("/", &[("x-e", "")], "absent"),
            ("/", &[("x-d", ""), ("x-e", "")], "fallback"),
            ("/", &[("x-f", "yes")], "inverted"),
            ("/", &[("x-f", "nope")], "fallback"),
            ("/?debug=1", &[], "query"),
            ("/?a=b&debug=1", &[], "query"),
            ("/?debug=2", &[], "fallback"),
        ];
        for (path, headers, want) in cases {
            assert_eq!(pick(&t, "h", path, headers), Some(*want), "{path} {headers:?}");
        }
    }

    #[test]
    fn rewrites() {
        let t = table(
            r#"
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - {name: p, match: {prefix: /service/1}, route: {cluster: c, prefix_rewrite: /}}
  - {name: r, match: {prefix: /re}, route: {cluster: c, regex_rewrite: {pattern: {regex: "^/re/(\\w+)/(\\w+)"}, substitution: "/\\2/\\1"}}}
"#,
        );
        let route = |name: &str| t.virtual_hosts[0].routes.iter().find(|r| r.name == name).unwrap();
        let rw = |name: &str, path: &str| {
            let r = route(name);
            let Action::Route(a) = &r.action else { panic!() };
            rewrite_path(a, &r.matcher, path)
        };
        assert_eq!(rw("p", "/service/1/x?y=1").as_deref(), Some("//x?y=1"));
        assert_eq!(rw("p", "/service/1").as_deref(), Some("/"));
        assert_eq!(rw("r", "/re/a/b?q").as_deref(), Some("/b/a?q"));
    }

    #[test]
    fn redirects() {
        let m = RouteMatcher {
            path: PathMatch::Prefix("/old".into()),
            case_sensitive: true,
            headers: vec![],
            query: vec![],
            grpc: false,
        };
        let base = Redirect {
            scheme: None,
            host: None,
            port: None,
            path: None,
            prefix_rewrite: None,
            regex_rewrite: None,
            status: StatusCode::MOVED_PERMANENTLY,
            strip_query: false,
        };
        let https = Redirect {
            scheme: Some("https".into()),
            ..base
        };
        assert_eq!(
            redirect_location(&https, "http", "a.com:8080", "/old/x?q=1", &m),
            "https://a.com/old/x?q=1"
        );
        let prefix = Redirect {
            prefix_rewrite: Some("/new".into()),
            strip_query: true,
            ..https
        };
        assert_eq!(
            redirect_location(&prefix, "http", "a.com", "/old/x?q=1", &m),
            "https://a.com/new/x"
        );
    }

    #[test]
    fn host_ports() {
        assert_eq!(strip_port_of("a.com:80"), "a.com");
        assert_eq!(strip_port_of("[::1]:80"), "[::1]");
        assert_eq!(strip_port_of("[::1]"), "[::1]");
        assert_eq!(strip_port_of("a.com"), "a.com");
        assert_eq!(envoy_substitution("/\\2/\\1$"), "/${2}/${1}$$");
    }

    /// The compiled hash policies of a one-route table with `policies`
    /// (YAML flow list).
    fn hash_policies(policies: &str) -> Vec<HashPolicy> {
        let t = table(&format!(
            "virtual_hosts: [{{name: a, domains: ['*'], routes: [{{match: {{prefix: /}}, route: {{cluster: c, hash_policy: {policies}}}}}]}}]"
        ));
        let route = t
            .virtual_hosts
            .into_iter()
            .next()
            .unwrap()
            .routes
            .into_iter()
            .next()
            .unwrap();
        match route.action {
            Action::Route(a) => a.hash_policies,
            _ => unreachable!(),
        }
    }

    #[test]
    fn hash_policies_hash_as_envoy() {
        let x = |s: &str| crate::model::lb::xxhash64(s.as_bytes(), 0);
        let combine = |a: u64, b: u64| a.rotate_left(1) ^ b;
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        // (case, policies, path, headers, source ip, expected hash)
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a str,
            Vec<(&'a str, &'a str)>,
            IpAddr,
            Option<u64>,
        );
        let cases: Vec<Case> = vec![
            ("header", "[{header: {header_name: X-User}}]", "/", vec![("x-user", "alice")], v4, Some(x("alice"))),
            ("header absent", "[{header: {header_name: x-user}}]", "/", vec![], v4, None),
            (
                "repeated header: sorted, concatenated",
                "[{header: {header_name: x-user}}]",
                "/",
                vec![("x-user", "b"), ("x-user", "a")],
                v4,
                Some(x("ab")),
            ),
            (
                "header regex_rewrite",
                r"[{header: {header_name: x-user, regex_rewrite: {pattern: {regex: '^(\w+)-.*$'}, substitution: '\1'}}}]",
                "/",
                vec![("x-user", "alice-123")],
                v4,
                Some(x("alice")),
            ),
            ("pseudo-header :authority", "[{header: {header_name: ':authority'}}]", "/", vec![], v4, Some(x("example.com"))),
            ("pseudo-header :path", "[{header: {header_name: ':path'}}]", "/a?b", vec![], v4, Some(x("/a?b"))),
            (
                "cookie",
                "[{cookie: {name: session}}]",
                "/",
                vec![("cookie", "a=1; session=xyz; c=2")],
                v4,
                Some(x("xyz")),
            ),
            (
                "quoted cookie, second cookie header",
                "[{cookie: {name: session}}]",
                "/",
                vec![("cookie", "a=1"), ("cookie", "session=\"xyz\"")],
                v4,
                Some(x("xyz")),
            ),
            ("cookie absent", "[{cookie: {name: session}}]", "/", vec![("cookie", "a=1")], v4, None),
            ("empty cookie", "[{cookie: {name: session}}]", "/", vec![("cookie", "session=")], v4, None),
            ("source ip v4", "[{connection_properties: {source_ip: true}}]", "/", vec![], v4, Some(x("10.1.2.3"))),
            ("source ip v6", "[{connection_properties: {source_ip: true}}]", "/", vec![], v6, Some(x("::1"))),
            ("query parameter, first value", "[{query_parameter: {name: u}}]", "/p?x=1&u=bob&u=carl", vec![], v4, Some(x("bob"))),
            ("query parameter without =", "[{query_parameter: {name: u}}]", "/p?u", vec![], v4, Some(x(""))),
            ("no query", "[{query_parameter: {name: u}}]", "/p", vec![], v4, None),
            ("filter state: legate has none", "[{filter_state: {key: k}}]", "/", vec![], v4, None),
            (
                "two policies combine",
                "[{header: {header_name: a}}, {header: {header_name: b}}]",
                "/",
                vec![("a", "1"), ("b", "2")],
                v4,
                Some(combine(x("1"), x("2"))),
            ),
            (
                "the same policy twice does not cancel out",
                "[{header: {header_name: a}}, {header: {header_name: a}}]",
                "/",
                vec![("a", "1")],
                v4,
                Some(combine(x("1"), x("1"))),
            ),
            (
                "a policy without a hash is skipped",
                "[{header: {header_name: a}}, {header: {header_name: b}}]",
                "/",
                vec![("b", "2")],
                v4,
                Some(x("2")),
            ),
            (
                "terminal with a hash stops",
                "[{header: {header_name: a}, terminal: true}, {header: {header_name: b}}]",
                "/",
                vec![("a", "1"), ("b", "2")],
                v4,
                Some(x("1")),
            ),
            (
                "terminal without a hash goes on",
                "[{header: {header_name: a}, terminal: true}, {header: {header_name: b}}]",
                "/",
                vec![("b", "2")],
                v4,
                Some(x("2")),
            ),
            (
                "terminal after an earlier hash stops",
                "[{header: {header_name: a}}, {cookie: {name: c}, terminal: true}, {header: {header_name: b}}]",
                "/",
                vec![("a", "1"), ("b", "2")],
                v4,
                Some(x("1")),
            ),
            (
                "source_ip: false is no policy, terminal included",
                "[{header: {header_name: a}}, {connection_properties: {source_ip: false}, terminal: true}, {header: {header_name: b}}]",
                "/",
                vec![("a", "1"), ("b", "2")],
                v4,
                Some(combine(x("1"), x("2"))),
            ),
            ("no policies", "[]", "/", vec![("a", "1")], v4, None),
        ];
        for (case, policies, path, headers, ip, want) in cases {
            let compiled = hash_policies(policies);
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            let req = RequestView {
                host: "example.com",
                path,
                method: &Method::GET,
                headers: &h,
            };
            let mut set_cookies = Vec::new();
            assert_eq!(
                compute_hash(&compiled, &req, peer(ip), &mut set_cookies),
                want,
                "{case}"
            );
            assert!(set_cookies.is_empty(), "{case}: {set_cookies:?}");
        }
    }

    fn peer(ip: IpAddr) -> Peer {
        Peer {
            remote: std::net::SocketAddr::new(ip, 40000),
            local: "127.0.0.1:10000".parse().unwrap(),
        }
    }

    #[test]
    fn an_absent_cookie_with_a_ttl_is_made_up_and_set() {
        let h = HeaderMap::new();
        let req = RequestView {
            host: "h",
            path: "/",
            method: &Method::GET,
            headers: &h,
        };
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        // The value: 16 hex digits of xxHash64(remote address + local address).
        let value = format!("{:016x}", xxhash64(b"10.1.2.3:40000127.0.0.1:10000"));
        // (policy, the set-cookie header)
        let cases = [
            (
                "[{cookie: {name: session, ttl: 60s, path: /}}]",
                format!("session=\"{value}\"; Max-Age=60; Path=/; HttpOnly"),
            ),
            ("[{cookie: {name: s, ttl: 0s}}]", format!("s=\"{value}\"; HttpOnly")),
            (
                "[{cookie: {name: s, ttl: 1.5s, attributes: [{name: SameSite, value: Lax}, {name: Secure}]}}]",
                format!("s=\"{value}\"; Max-Age=1; SameSite=Lax; Secure; HttpOnly"),
            ),
        ];
        for (policy, want) in cases {
            let mut set_cookies = Vec::new();
            let hash = compute_hash(&hash_policies(policy), &req, peer(ip), &mut set_cookies);
            assert_eq!(hash, Some(xxhash64(value.as_bytes())), "{policy}");
            assert_eq!(set_cookies, vec![want], "{policy}");
        }
        // The request has the cookie: it is used, nothing is set.
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("session=abc"));
        let req = RequestView { headers: &h, ..req };
        let mut set_cookies = Vec::new();
        let policy = hash_policies("[{cookie: {name: session, ttl: 60s}}]");
        assert_eq!(
            compute_hash(&policy, &req, peer(ip), &mut set_cookies),
            Some(xxhash64(b"abc"))
        );
        assert!(set_cookies.is_empty());
    }

    #[test]
    fn repeated_header_order_does_not_matter() {
        let p = hash_policies("[{header: {header_name: x}}]");
        let hash = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x", HeaderValue::from_str(v).unwrap());
            }
            let req = RequestView {
                host: "h",
                path: "/",
                method: &Method::GET,
                headers: &h,
            };
            compute_hash(&p, &req, peer(IpAddr::from([127, 0, 0, 1])), &mut Vec::new())
        };
        assert_eq!(hash(&["foo", "bar"]), hash(&["bar", "foo"]));
        assert_ne!(hash(&["foo"]), hash(&["bar"]));
    }
}
