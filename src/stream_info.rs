//! What the HTTP pipeline records about one request: the input of access
//! logs (and of `%…%` header formatting).
//!
//! A `StreamInfo` is plain owned data filled in as the request progresses and
//! handed to the access loggers when the response ends. Nothing here is
//! shared between requests, so nothing here locks.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, Method, Version};

/// Envoy's response flags: why a request ended the way it did.
///
/// Bit `i` is row `i` of Envoy's flag table (`ResponseFlagUtils::CORE_RESPONSE_FLAGS`,
/// `source/common/stream_info/utility.h`), so iterating the bits in ascending
/// order gives Envoy's output order: `UF,URX`, `UC,DC`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u32);

/// (flag, short name, long name), in Envoy's table order.
const TABLE: [(ResponseFlags, &str, &str); 30] = [
    (
        ResponseFlags::FAILED_LOCAL_HEALTH_CHECK,
        "LH",
        "FailedLocalHealthCheck",
    ),
    (ResponseFlags::NO_HEALTHY_UPSTREAM, "UH", "NoHealthyUpstream"),
    (
        ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
        "UT",
        "UpstreamRequestTimeout",
    ),
    (ResponseFlags::LOCAL_RESET, "LR", "LocalReset"),
    (ResponseFlags::UPSTREAM_REMOTE_RESET, "UR", "UpstreamRemoteReset"),
    (
        ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
        "UF",
        "UpstreamConnectionFailure",
    ),
    (
        ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
        "UC",
        "UpstreamConnectionTermination",
    ),
    (ResponseFlags::UPSTREAM_OVERFLOW, "UO", "UpstreamOverflow"),
    (ResponseFlags::NO_ROUTE_FOUND, "NR", "NoRouteFound"),
    (ResponseFlags::DELAY_INJECTED, "DI", "DelayInjected"),
    (ResponseFlags::FAULT_INJECTED, "FI", "FaultInjected"),
    (ResponseFlags::RATE_LIMITED, "RL", "RateLimited"),
    (
        ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE,
        "UAEX",
        "UnauthorizedExternalService",
    ),
    (
        ResponseFlags::RATELIMIT_SERVICE_ERROR,
        "RLSE",
        "RateLimitServiceError",
    ),
    (
        ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
        "DC",
        "DownstreamConnectionTermination",
    ),
    (
        ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED,
        "URX",
        "UpstreamRetryLimitExceeded",
    ),
    (ResponseFlags::STREAM_IDLE_TIMEOUT, "SI", "StreamIdleTimeout"),
    (
        ResponseFlags::INVALID_ENVOY_REQUEST_HEADERS,
        "IH",
        "InvalidEnvoyRequestHeaders",
    ),
    (
        ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
        "DPE",
        "DownstreamProtocolError",
    ),
    (
        ResponseFlags::UPSTREAM_MAX_STREAM_DURATION_REACHED,
        "UMSDR",
        "UpstreamMaxStreamDurationReached",
    ),
    (
        ResponseFlags::RESPONSE_FROM_CACHE_FILTER,
        "RFCF",
        "ResponseFromCacheFilter",
    ),
    (
        ResponseFlags::NO_FILTER_CONFIG_FOUND,
        "NFCF",
        "NoFilterConfigFound",
    ),
    (ResponseFlags::DURATION_TIMEOUT, "DT", "DurationTimeout"),
    (
        ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
        "UPE",
        "UpstreamProtocolError",
    ),
    (ResponseFlags::NO_CLUSTER_FOUND, "NC", "NoClusterFound"),
    (ResponseFlags::OVERLOAD_MANAGER, "OM", "OverloadManagerTerminated"),
    (ResponseFlags::DNS_RESOLUTION_FAILED, "DF", "DnsResolutionFailed"),
    (ResponseFlags::DROP_OVERLOAD, "DO", "DropOverload"),
    (
        ResponseFlags::DOWNSTREAM_REMOTE_RESET,
        "DR",
        "DownstreamRemoteReset",
    ),
    (
        ResponseFlags::UNCONDITIONAL_DROP_OVERLOAD,
        "UDO",
        "UnconditionalDropOverload",
    ),
];

impl ResponseFlags {
    pub const NONE: ResponseFlags = ResponseFlags(0);
    /// LH
    pub const FAILED_LOCAL_HEALTH_CHECK: ResponseFlags = ResponseFlags(1 << 0);
    /// UH: no healthy upstream host (503).
    pub const NO_HEALTHY_UPSTREAM: ResponseFlags = ResponseFlags(1 << 1);
    /// UT: upstream request timeout (504).
    pub const UPSTREAM_REQUEST_TIMEOUT: ResponseFlags = ResponseFlags(1 << 2);
    /// LR
    pub const LOCAL_RESET: ResponseFlags = ResponseFlags(1 << 3);
    /// UR
    pub const UPSTREAM_REMOTE_RESET: ResponseFlags = ResponseFlags(1 << 4);
    /// UF: upstream connection failure (503).
    pub const UPSTREAM_CONNECTION_FAILURE: ResponseFlags = ResponseFlags(1 << 5);
    /// UC
    pub const UPSTREAM_CONNECTION_TERMINATION: ResponseFlags = ResponseFlags(1 << 6);
    /// UO: circuit breaker overflow (503).
    pub const UPSTREAM_OVERFLOW: ResponseFlags = ResponseFlags(1 << 7);
    /// NR: no route (404).
    pub const NO_ROUTE_FOUND: ResponseFlags = ResponseFlags(1 << 8);
    /// DI
    pub const DELAY_INJECTED: ResponseFlags = ResponseFlags(1 << 9);
    /// FI
    pub const FAULT_INJECTED: ResponseFlags = ResponseFlags(1 << 10);
    /// RL (429)
    pub const RATE_LIMITED: ResponseFlags = ResponseFlags(1 << 11);
    /// UAEX
    pub const UNAUTHORIZED_EXTERNAL_SERVICE: ResponseFlags = ResponseFlags(1 << 12);
    /// RLSE
    pub const RATELIMIT_SERVICE_ERROR: ResponseFlags = ResponseFlags(1 << 13);
    /// DC: the downstream connection went away before the response ended.
    pub const DOWNSTREAM_CONNECTION_TERMINATION: ResponseFlags = ResponseFlags(1 << 14);
    /// URX
    pub const UPSTREAM_RETRY_LIMIT_EXCEEDED: ResponseFlags = ResponseFlags(1 << 15);
    /// SI (408)
    pub const STREAM_IDLE_TIMEOUT: ResponseFlags = ResponseFlags(1 << 16);
    /// IH
    pub const INVALID_ENVOY_REQUEST_HEADERS: ResponseFlags = ResponseFlags(1 << 17);
    /// DPE
    pub const DOWNSTREAM_PROTOCOL_ERROR: ResponseFlags = ResponseFlags(1 << 18);
    /// UMSDR
    pub const UPSTREAM_MAX_STREAM_DURATION_REACHED: ResponseFlags = ResponseFlags(1 << 19);
    /// RFCF
    pub const RESPONSE_FROM_CACHE_FILTER: ResponseFlags = ResponseFlags(1 << 20);
    /// NFCF
    pub const NO_FILTER_CONFIG_FOUND: ResponseFlags = ResponseFlags(1 << 21);
    /// DT
    pub const DURATION_TIMEOUT: ResponseFlags = ResponseFlags(1 << 22);
    /// UPE
    pub const UPSTREAM_PROTOCOL_ERROR: ResponseFlags = ResponseFlags(1 << 23);
    /// NC: the route's cluster does not exist.
    pub const NO_CLUSTER_FOUND: ResponseFlags = ResponseFlags(1 << 24);
    /// OM
    pub const OVERLOAD_MANAGER: ResponseFlags = ResponseFlags(1 << 25);
    /// DF
    pub const DNS_RESOLUTION_FAILED: ResponseFlags = ResponseFlags(1 << 26);
    /// DO
    pub const DROP_OVERLOAD: ResponseFlags = ResponseFlags(1 << 27);
    /// DR
    pub const DOWNSTREAM_REMOTE_RESET: ResponseFlags = ResponseFlags(1 << 28);
    /// UDO
    pub const UNCONDITIONAL_DROP_OVERLOAD: ResponseFlags = ResponseFlags(1 << 29);

    pub const fn empty() -> ResponseFlags {
        ResponseFlags(0)
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub fn insert(&mut self, f: ResponseFlags) {
        self.0 |= f.0;
    }

    /// Every flag of `f` is set.
    pub const fn contains(self, f: ResponseFlags) -> bool {
        self.0 & f.0 == f.0
    }

    /// At least one flag of `f` is set.
    pub const fn intersects(self, f: ResponseFlags) -> bool {
        self.0 & f.0 != 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flag with this short name (`UH`, `URX`…), as written in
    /// `response_flag_filter.flags`. Case-sensitive, as Envoy.
    pub fn from_short(name: &str) -> Option<ResponseFlags> {
        TABLE.iter().find(|(_, s, _)| *s == name).map(|(f, _, _)| *f)
    }

    /// Every short name, in table order (for error messages).
    pub fn all_short_names() -> impl Iterator<Item = &'static str> {
        TABLE.iter().map(|(_, s, _)| *s)
    }

    /// `%RESPONSE_FLAGS%`: short names joined with `,` in table order; `-` when none.
    pub fn short(&self) -> String {
        let mut out = String::new();
        self.write_names(&mut out, false);
        out
    }

    /// `%RESPONSE_FLAGS_LONG%`: PascalCase names joined with `,`; `-` when none.
    pub fn long(&self) -> String {
        let mut out = String::new();
        self.write_names(&mut out, true);
        out
    }

    /// Appends `short()` / `long()` to `out` without an intermediate string.
    pub fn write_names(&self, out: &mut String, long: bool) {
        if self.is_empty() {
            out.push('-');
            return;
        }
        let mut first = true;
        for (f, short, long_name) in TABLE.iter() {
            if self.contains(*f) {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(if long { long_name } else { short });
            }
        }
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = ResponseFlags;
    fn bitor(self, rhs: ResponseFlags) -> ResponseFlags {
        ResponseFlags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ResponseFlags {
    fn bitor_assign(&mut self, rhs: ResponseFlags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResponseFlags({})", self.short())
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

/// One request as the access logs see it. Durations are measured from
/// `start`; `None` means "did not happen" and renders as `-`.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// Wall-clock time the request started (`%START_TIME%`).
    pub start_time: SystemTime,
    /// Monotonic start, the origin of every duration below.
    pub start: Instant,
    /// Downstream protocol; `None` when not HTTP (`%PROTOCOL%` renders `-`).
    pub protocol: Option<Version>,
    /// Request headers as the pipeline last saw them (after
    /// `request_headers_to_add`, with `x-request-id`, `x-envoy-original-path`…).
    pub request_headers: HeaderMap,
    pub method: Method,
    /// The `:path` (with query) the client sent. Shared, not `String`: the
    /// proxy keeps its own reference while routing, and a copy cost an
    /// allocation per request.
    pub path: Arc<str>,
    /// `:authority` (or `Host`), shared for the same reason.
    pub authority: Arc<str>,
    /// `:scheme` of the downstream request.
    pub scheme: &'static str,
    /// Status sent downstream; 0 when none was sent.
    pub response_code: u16,
    pub response_headers: Option<HeaderMap>,
    pub response_trailers: Option<HeaderMap>,
    pub response_flags: ResponseFlags,
    /// `%RESPONSE_CODE_DETAILS%` (`via_upstream`, `route_not_found`…).
    /// Borrowed for the fixed details (`via_upstream`): no allocation per request.
    pub response_code_details: Option<std::borrow::Cow<'static, str>>,
    /// Request body bytes received from downstream.
    pub bytes_received: u64,
    /// Response body bytes sent downstream.
    pub bytes_sent: u64,
    /// When the last request byte arrived (`%REQUEST_DURATION%`).
    pub last_request_byte: Option<Duration>,
    /// When the first upstream response byte arrived (`%RESPONSE_DURATION%`).
    pub first_upstream_response_byte: Option<Duration>,
    /// When the last response byte was sent (`%DURATION%`).
    pub end: Option<Duration>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<Arc<str>>,
    pub upstream_local_address: Option<SocketAddr>,
    pub upstream_transport_failure_reason: Option<String>,
    /// The client as Envoy sees it (after XFF trust, when implemented).
    pub downstream_remote_address: SocketAddr,
    pub downstream_local_address: SocketAddr,
    /// The peer of the TCP connection.
    pub downstream_direct_remote_address: SocketAddr,
    pub route_name: Option<String>,
    pub connection_id: u64,
    /// The response was cut off after it had started (a reset downstream).
    pub reset_after_response_started: bool,
}

impl StreamInfo {
    /// A record for a request that starts now; everything not given is unset.
    pub fn new(
        method: Method,
        path: impl Into<Arc<str>>,
        authority: impl Into<Arc<str>>,
        version: Version,
        headers: HeaderMap,
        remote: SocketAddr,
        local: SocketAddr,
    ) -> StreamInfo {
        StreamInfo {
            start_time: SystemTime::now(),
            start: Instant::now(),
            protocol: Some(version),
            request_headers: headers,
            method,
            path: path.into(),
            authority: authority.into(),
            scheme: "http",
            response_code: 0,
            response_headers: None,
            response_trailers: None,
            response_flags: ResponseFlags::NONE,
            response_code_details: None,
            bytes_received: 0,
            bytes_sent: 0,
            last_request_byte: None,
            first_upstream_response_byte: None,
            end: None,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local_address: None,
            upstream_transport_failure_reason: None,
            downstream_remote_address: remote,
            downstream_local_address: local,
            downstream_direct_remote_address: remote,
            route_name: None,
            connection_id: 0,
            reset_after_response_started: false,
        }
    }

    /// Time since the request started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// `%DURATION%`: until the end when known, else until now.
    pub fn duration(&self) -> Duration {
        self.end.unwrap_or_else(|| self.elapsed())
    }

    pub fn mark_last_request_byte(&mut self) {
        self.last_request_byte = Some(self.elapsed());
    }

    pub fn mark_first_upstream_response_byte(&mut self) {
        if self.first_upstream_response_byte.is_none() {
            self.first_upstream_response_byte = Some(self.elapsed());
        }
    }

    /// Records the end of the response (idempotent).
    pub fn finish(&mut self) {
        if self.end.is_none() {
            self.end = Some(self.elapsed());
        }
    }

    /// Whether Envoy would treat the request as a health check. legate has no
    /// health-check filter; Envoy's own health checker identifies itself with
    /// `user-agent: Envoy/HC`.
    pub fn is_health_check(&self) -> bool {
        self.request_headers
            .get(http::header::USER_AGENT)
            .is_some_and(|ua| ua.as_bytes() == b"Envoy/HC")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_render_in_envoy_table_order() {
        let cases: &[(ResponseFlags, &str, &str)] = &[
            (ResponseFlags::NONE, "-", "-"),
            (ResponseFlags::NO_ROUTE_FOUND, "NR", "NoRouteFound"),
            (
                ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED | ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
                "UF,URX",
                "UpstreamConnectionFailure,UpstreamRetryLimitExceeded",
            ),
            // DC sorts after RLSE in Envoy's table, not first.
            (
                ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION
                    | ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
                "UC,DC",
                "UpstreamConnectionTermination,DownstreamConnectionTermination",
            ),
            (
                ResponseFlags::UNCONDITIONAL_DROP_OVERLOAD | ResponseFlags::FAILED_LOCAL_HEALTH_CHECK,
                "LH,UDO",
                "FailedLocalHealthCheck,UnconditionalDropOverload",
            ),
        ];
        for (flags, short, long) in cases {
            assert_eq!(flags.short(), *short);
            assert_eq!(flags.long(), *long);
        }
    }

    #[test]
    fn every_flag_round_trips_through_its_short_name() {
        let mut all = ResponseFlags::NONE;
        for (i, (f, short, _)) in TABLE.iter().enumerate() {
            assert_eq!(f.bits(), 1 << i, "{short} is not at its table position");
            assert_eq!(ResponseFlags::from_short(short), Some(*f));
            all.insert(*f);
        }
        let shorts: Vec<&str> = ResponseFlags::all_short_names().collect();
        assert_eq!(all.short(), shorts.join(","));
        assert_eq!(ResponseFlags::from_short("XX"), None);
        assert_eq!(ResponseFlags::from_short("uh"), None);
    }

    #[test]
    fn insert_contains_intersects() {
        let mut f = ResponseFlags::empty();
        assert!(f.is_empty());
        f.insert(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT);
        assert!(f.contains(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT));
        assert!(!f.contains(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT | ResponseFlags::NO_ROUTE_FOUND));
        assert!(f.intersects(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT | ResponseFlags::NO_ROUTE_FOUND));
        assert!(!f.is_empty());
        assert_eq!(format!("{f}"), "UT");
        assert_eq!(format!("{f:?}"), "ResponseFlags(UT)");
    }

    #[test]
    fn new_sets_defaults_and_timing_helpers_work() {
        let remote: SocketAddr = "10.0.0.1:5555".parse().unwrap();
        let local: SocketAddr = "10.0.0.2:8080".parse().unwrap();
        let mut info = StreamInfo::new(
            Method::GET,
            "/a?b",
            "example.com",
            Version::HTTP_11,
            HeaderMap::new(),
            remote,
            local,
        );
        assert_eq!(info.protocol, Some(Version::HTTP_11));
        assert_eq!(info.response_code, 0);
        assert_eq!(info.downstream_direct_remote_address, remote);
        assert_eq!(info.scheme, "http");
        assert!(info.response_flags.is_empty());
        assert!(info.end.is_none());
        info.mark_first_upstream_response_byte();
        let first = info.first_upstream_response_byte;
        info.mark_first_upstream_response_byte();
        assert_eq!(
            info.first_upstream_response_byte, first,
            "the first byte is recorded once"
        );
        info.finish();
        let end = info.end.unwrap();
        info.finish();
        assert_eq!(info.end, Some(end));
        assert_eq!(info.duration(), end);
        assert!(!info.is_health_check());
        info.request_headers
            .insert(http::header::USER_AGENT, "Envoy/HC".parse().unwrap());
        assert!(info.is_health_check());
    }
}
