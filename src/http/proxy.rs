//! The request pipeline of the HTTP connection manager and router: route,
//! pick a cluster and host, forward, and answer locally when Envoy would.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};

use super::body::{DownstreamBody, RequestBody, RequestProgress, ResponseBody, RouteDeadline};
use super::headers::{self as hdr, RequestId};
use super::local_reply::{self, connect_failure_body, reply};
use super::upstream;
use crate::model::cluster::{Cluster, Host, Protocol};
use crate::model::listener::{Hcm, Listener, Routes, ServerHeader};
use crate::model::route_table::{
    self, redirect_location, rewrite_path, Action, ClusterTarget, HostRewrite, RequestView, Route,
    RouteAction, RouteTable, VirtualHost,
};
use crate::model::{Shared, Snapshot};
use crate::stream_info::{ResponseFlags, StreamInfo};

/// What a connection's requests share.
pub struct ConnInfo {
    pub listener: Arc<Listener>,
    /// `listener.hcm.records_headers()` or listener access logs, computed once.
    pub records_headers: bool,
    /// Requests seen on this connection (for `max_requests_per_connection`).
    pub requests: std::sync::atomic::AtomicU32,
    /// `listener.<bound address>.*` (the real port when the config said 0).
    pub listener_stats: Arc<crate::model::stats::ListenerStats>,
    pub shared: Shared,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    pub connection_id: u64,
    /// `--drain-time-s`: how long a draining connection may take to finish
    /// before it is closed.
    pub drain_time: std::time::Duration,
}

/// A finished response and the record to log when its body ends.
struct Outcome {
    response: Response<ResponseBody>,
    received: Option<Arc<RequestProgress>>,
}

pub async fn handle(
    conn: Arc<ConnInfo>,
    mut req: Request<DownstreamBody>,
) -> Result<Response<ResponseBody>, Infallible> {
    let hcm = conn.listener.hcm.clone();
    let settled = hdr::settle_request(
        req.headers(),
        conn.remote.ip(),
        crate::local_info::address(),
        hdr::XffPolicy {
            use_remote_address: hcm.use_remote_address,
            trusted_hops: hcm.xff_num_trusted_hops,
            skip_append: hcm.skip_xff_append,
        },
        &hcm.internal_addresses,
        "http",
    );
    // A head kept raw has none of the fields these rules read, replace or
    // remove (its map is empty): what they set is added after its own.
    let client = match req.body_mut().raw_head_mut() {
        Some(raw) => {
            let client = settled.client;
            raw.added = settled.set;
            if let Some(id) = request_id(&hcm, false, client.edge) {
                raw.added.push((hdr::X_REQUEST_ID.clone(), id));
            }
            client
        }
        None => {
            let client = settled.apply(req.headers_mut());
            assign_request_id(&hcm, client.edge, req.headers_mut());
            client
        }
    };
    let authority = authority_of(&req);
    // Header copies only when something will read them (access logs,
    // formatted header values): they cost an allocation per request.
    let record = conn.records_headers;
    let mut info = super::boxed_in_place(|| {
        StreamInfo::new(
            req.method().clone(),
            req.uri()
                .path_and_query()
                .map_or_else(|| req.uri().path(), |p| p.as_str()),
            authority.clone().unwrap_or_default(),
            req.version(),
            if record {
                req.headers().clone()
            } else {
                http::HeaderMap::new()
            },
            conn.remote,
            conn.local,
        )
    });
    info.connection_id = conn.connection_id;
    if client.from_xff {
        // Envoy's downstream remote address is the trusted client; one from
        // x-forwarded-for has no port.
        info.downstream_remote_address = SocketAddr::new(client.address, 0);
    }
    let stats = &hcm.stats;
    stats.downstream_rq_total.inc();
    stats.downstream_rq_active.inc();
    if req.version() == Version::HTTP_2 {
        stats.downstream_rq_http2_total.inc();
    } else {
        stats.downstream_rq_http1_total.inc();
    }
    let http1 = req.version() != Version::HTTP_2;
    let mut unanswered = Unanswered {
        info: Some(info),
        conn: &conn,
    };
    let outcome = route_and_forward(
        &conn,
        &hcm,
        req,
        authority,
        client.internal,
        client.rq_timeout_header,
        unanswered.info(),
    )
    .await;
    let info = unanswered.answered();
    Ok(finish(&conn, &hcm, outcome, info, http1))
}

/// A request's record until its response exists. Dropped before (the
/// client went away and the codec abandoned the request), it is logged as
/// Envoy does: response code 0 and `DC`.
struct Unanswered<'a> {
    info: Option<Box<StreamInfo>>,
    conn: &'a ConnInfo,
}

impl Unanswered<'_> {
    fn info(&mut self) -> &mut StreamInfo {
        self.info.as_mut().expect("present until answered")
    }

    fn answered(mut self) -> Box<StreamInfo> {
        self.info.take().expect("answered once")
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(mut info) = self.info.take() {
            info.response_code = 0;
            info.response_flags
                .insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
            info.end = Some(info.start.elapsed());
            complete(&self.conn.listener.hcm, &self.conn.listener, &info);
        }
    }
}

/// The end of a request: connection-manager stats and access logs.
fn complete(hcm: &Hcm, listener: &Listener, info: &StreamInfo) {
    let stats = &hcm.stats;
    stats.downstream_rq_active.dec();
    stats.downstream_rq_completed.inc();
    stats.downstream_rq_xx.record(info.response_code);
    // Envoy counts these as the stream resets: one flag test each.
    if info
        .response_flags
        .contains(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION)
    {
        stats.downstream_rq_rx_reset.inc();
    }
    if info.response_flags.contains(ResponseFlags::STREAM_IDLE_TIMEOUT) {
        stats.downstream_rq_idle_timeout.inc();
    }
    if info.reset_after_response_started {
        stats.downstream_rq_tx_reset.inc();
        if info.response_flags.contains(ResponseFlags::UPSTREAM_REMOTE_RESET) {
            stats.rq_reset_after_downstream_response_started.inc();
        }
    }
    stats
        .downstream_rq_time
        .record(info.end.unwrap_or_default().as_millis() as u64);
    for log in hcm.access_logs.iter().chain(listener.access_logs.iter()) {
        log.log(info);
    }
}

/// Answers a request a codec refused (malformed, too large, unsupported
/// framing, too slow): Envoy's local reply with the `DPE` flag (none for a
/// header timeout) and `details`, logged like any request. `head` is what
/// was parsed of the request, if anything; its version says which codec
/// (HTTP/1.1 replies also close the connection).
pub fn reject(
    conn: &Arc<ConnInfo>,
    head: Option<&http::request::Parts>,
    status: StatusCode,
    body: &str,
    flag: Option<ResponseFlags>,
    details: &str,
) -> Response<ResponseBody> {
    let hcm = conn.listener.hcm.clone();
    let mut info = Box::new(match head {
        Some(h) => StreamInfo::new(
            h.method.clone(),
            h.uri.path_and_query().map_or("/", |p| p.as_str()),
            h.headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            h.version,
            if conn.records_headers {
                h.headers.clone()
            } else {
                http::HeaderMap::new()
            },
            conn.remote,
            conn.local,
        ),
        None => StreamInfo::new(
            http::Method::GET,
            "",
            "",
            Version::HTTP_11,
            http::HeaderMap::new(),
            conn.remote,
            conn.local,
        ),
    });
    info.connection_id = conn.connection_id;
    let http1 = head.is_none_or(|h| h.version != Version::HTTP_2);
    hcm.stats.downstream_rq_total.inc();
    hcm.stats.downstream_rq_active.inc();
    if http1 {
        hcm.stats.downstream_rq_http1_total.inc();
    } else {
        hcm.stats.downstream_rq_http2_total.inc();
    }
    let outcome = local(&mut info, status, body, flag, details);
    let mut response = finish(conn, &hcm, outcome, info, http1);
    if http1 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The connection manager's part of every response: its headers, the
/// connection limits, and the record logged when the body ends.
fn finish(
    conn: &Arc<ConnInfo>,
    hcm: &Arc<Hcm>,
    outcome: Outcome,
    mut info: Box<StreamInfo>,
    http1: bool,
) -> Response<ResponseBody> {
    let nth = conn.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let mut response = outcome.response;
    // The downstream protocol decides the response's version, whatever the
    // upstream spoke (an HTTP/1.0 origin must not make us answer HTTP/1.0).
    *response.version_mut() = if http1 { Version::HTTP_11 } else { Version::HTTP_2 };
    finish_response_headers(hcm, &mut response, &info);
    if hcm.max_requests_per_connection.is_some_and(|max| nth == max) {
        // The last request this connection may carry. HTTP/1: the codec
        // closes it after this response. HTTP/2: the codec sent GOAWAY
        // when the stream opened, and the streams already open finish.
        hcm.stats.downstream_cx_max_requests_reached.inc();
        if http1 {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    info.response_code = response.status().as_u16();
    if conn.records_headers {
        info.response_headers = Some(response.headers().clone());
    }
    let logs = hcm.clone();
    let listener = conn.listener.clone();
    response.body_mut().complete_with(
        info,
        outcome.received,
        Box::new(move |info: Box<StreamInfo>| complete(&logs, &listener, &info)),
    );
    response
}

fn authority_of(req: &Request<DownstreamBody>) -> Option<Arc<str>> {
    // A raw head is in origin form with one `host` (`RawRequest::new`).
    if let Some(raw) = req.body().raw_head() {
        return Some(Arc::from(raw.host()));
    }
    req.uri().authority().map(|a| Arc::from(a.as_str())).or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(Arc::from)
    })
}

/// Envoy settles `x-request-id` as the request arrives, before routing, so
/// local replies (404 NR, 503 UH…) log one too: generated when absent (and
/// `generate_request_id`), or replaced at an edge unless
/// `preserve_external_request_id`.
fn assign_request_id(hcm: &Hcm, edge_external: bool, headers: &mut http::HeaderMap) {
    // One hashed lookup (the entry) whether the id is kept or replaced.
    let entry = headers.entry(&hdr::X_REQUEST_ID);
    let present = matches!(entry, http::header::Entry::Occupied(_));
    if let Some(v) = request_id(hcm, present, edge_external) {
        match entry {
            http::header::Entry::Occupied(mut e) => {
                e.insert(v);
            }
            http::header::Entry::Vacant(e) => {
                e.insert(v);
            }
        }
    }
}

/// A new `x-request-id` value when Envoy's rules want one for a request
/// that has one already (`present`) or not.
fn request_id(hcm: &Hcm, present: bool, edge_external: bool) -> Option<HeaderValue> {
    let decision = hdr::request_id_decision(
        present,
        hcm.generate_request_id,
        hcm.preserve_external_request_id,
        edge_external,
    );
    (decision == RequestId::Generate).then(new_request_id)
}

/// A v4 UUID from the thread-local PRNG (no getrandom syscall per
/// request), as a header value.
fn new_request_id() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut buf);
    // Hex digits and hyphens: always a valid value.
    HeaderValue::from_bytes(text.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

fn local(
    info: &mut StreamInfo,
    status: StatusCode,
    body: &str,
    flag: Option<ResponseFlags>,
    details: &str,
) -> Outcome {
    if let Some(f) = flag {
        info.response_flags.insert(f);
    }
    info.response_code_details = Some(details.to_string().into());
    Outcome {
        response: reply(status, body),
        received: None,
    }
}

/// Headers every response gets from the connection manager.
fn finish_response_headers(hcm: &Hcm, response: &mut Response<ResponseBody>, info: &StreamInfo) {
    let h = response.headers_mut();
    match (&hcm.server_header, &hcm.server_value) {
        (ServerHeader::Overwrite, Some(v)) => {
            h.insert(header::SERVER, v.clone());
        }
        (ServerHeader::AppendIfAbsent, Some(v)) if !h.contains_key(header::SERVER) => {
            h.insert(header::SERVER, v.clone());
        }
        _ => {}
    }
    if hcm.always_set_request_id_in_response {
        if let Some(id) = info.request_headers.get(&hdr::X_REQUEST_ID) {
            h.insert(hdr::X_REQUEST_ID.clone(), id.clone());
        }
    }
}

async fn route_and_forward(
    conn: &ConnInfo,
    hcm: &Hcm,
    mut req: Request<DownstreamBody>,
    authority: Option<Arc<str>>,
    internal: bool,
    rq_timeout_header: bool,
    info: &mut StreamInfo,
) -> Outcome {
    let http10 = req.version() == Version::HTTP_10 || req.version() == Version::HTTP_09;
    if http10 && !hcm.accept_http_10 {
        // Envoy refuses HTTP/1.0 unless http_protocol_options.accept_http_10.
        return local(info, StatusCode::UPGRADE_REQUIRED, "", None, "low_version");
    }
    // An HTTP/1.0 request may come without a Host: Envoy then uses
    // default_host_for_http_10.
    let authority = match authority {
        None if http10 && !hcm.default_host_for_http_10.is_empty() => {
            Some(Arc::from(hcm.default_host_for_http_10.as_str()))
        }
        a => a,
    };
    let Some(authority) = authority else {
        return local(
            info,
            StatusCode::BAD_REQUEST,
            "missing host header",
            Some(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR),
            "missing_host_header",
        );
    };
    // A raw head's fields count as its map's would; the map holds what
    // the proxy has added so far (all of it, without a raw head).
    let (raw_count, raw_bytes) = req.body().raw_head().map_or((0, 0), |r| r.size());
    let header_bytes: usize = raw_bytes
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum::<usize>();
    if header_bytes > hcm.max_request_headers_kb as usize * 1024
        || raw_count + req.headers().len() > hcm.max_headers_count as usize
    {
        return local(
            info,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "",
            None,
            "request_headers_too_large",
        );
    }

    let snap = conn.shared.load_full();
    upstream::sweep(&snap);
    let table: Arc<RouteTable> = match &hcm.routes {
        Routes::Static(t) => t.clone(),
        Routes::Rds(name) => match snap.routes.get(name) {
            Some(t) => t.clone(),
            None => {
                return local(
                    info,
                    StatusCode::NOT_FOUND,
                    "",
                    Some(ResponseFlags::NO_ROUTE_FOUND),
                    "route_not_found",
                )
            }
        },
    };
    if table.reads_request_headers() {
        if let Some(o) = give_map(&mut req, info) {
            return o;
        }
    }
    if !internal {
        // The route configuration's `internal_only_headers`, before routing
        // sees them.
        for name in &table.internal_only_headers {
            req.headers_mut().remove(name);
        }
    }
    let strip = hcm.strip_any_host_port
        || (hcm.strip_matching_host_port
            && route_table::strip_port_of(&authority) != &*authority
            && authority.rsplit(':').next() == Some(conn.listener.address.port().to_string().as_str()));
    let match_host = route_table::normalise_host(&authority, strip || table.ignore_port_in_host_matching);
    let path = info.path.clone();
    let view = RequestView {
        host: &match_host,
        path: &path,
        method: req.method(),
        headers: req.headers(),
    };
    let (vhost, route) = table.route(&view);
    let (Some(vhost), Some(route)) = (vhost, route) else {
        hcm.stats.no_route.inc();
        return local(
            info,
            StatusCode::NOT_FOUND,
            "",
            Some(ResponseFlags::NO_ROUTE_FOUND),
            "route_not_found",
        );
    };
    if !route.name.is_empty() {
        info.route_name = Some(route.name.clone());
    }
    if route.reads_request_headers {
        if let Some(o) = give_map(&mut req, info) {
            return o;
        }
    }
    if !conn.records_headers && table.has_formatted_headers() {
        // An RDS table with formatted values the listener did not plan for.
        info.request_headers = req.headers().clone();
    }
    // Requests in flight keep the snapshot they started with.
    let mut outcome = match &route.action {
        Action::Direct { status, body } => {
            hcm.stats.rq_direct_response.inc();
            local(
                info,
                *status,
                body.as_deref().unwrap_or(""),
                None,
                "direct_response",
            )
        }
        Action::Redirect(rd) => {
            hcm.stats.rq_redirect.inc();
            let location = redirect_location(rd, "http", &authority, &path, &route.matcher);
            let mut o = local(info, rd.status, "", None, "direct_response");
            if let Ok(v) = HeaderValue::from_str(&location) {
                o.response.headers_mut().insert(header::LOCATION, v);
            }
            o
        }
        Action::Route(action) => {
            if let Some(o) = upgrade_refused(hcm, action, &req, info) {
                return o;
            }
            forward(
                conn,
                hcm,
                &snap,
                &table,
                vhost,
                route,
                action,
                req,
                &authority,
                rq_timeout_header,
                info,
            )
            .await
        }
    };
    // Response header mutations: route, then virtual host, then route
    // configuration, so the outer levels win (Envoy's default order).
    let status = outcome.response.status();
    let fmt = |s: &str| expand(s, info, status);
    let resp_headers = outcome.response.headers_mut();
    route.response_headers.apply(resp_headers, &fmt);
    vhost.response_headers.apply(resp_headers, &fmt);
    table.response_headers.apply(resp_headers, &fmt);
    outcome
}

/// Gives a request kept raw its header map (`body::materialize`); a head
/// that cannot become one (httparse accepted what `http` refuses, e.g. a
/// name over 64 KiB) gets the 400 the codec gives a malformed head.
fn give_map(req: &mut Request<DownstreamBody>, info: &mut StreamInfo) -> Option<Outcome> {
    super::body::materialize(req).err().map(|_| {
        local(
            info,
            StatusCode::BAD_REQUEST,
            "Bad Request",
            Some(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR),
            "http1.codec_error",
        )
    })
}

/// Expands `%…%` operators in a header value with the access-log formatter.
fn expand(value: &str, info: &StreamInfo, status: StatusCode) -> String {
    let mut probe = info.clone();
    probe.response_code = status.as_u16();
    crate::access_log::format::expand_header_value(value, &probe)
}

/// An `Upgrade` the HCM and route do not allow gets Envoy's 403.
fn upgrade_refused(
    hcm: &Hcm,
    action: &RouteAction,
    req: &Request<DownstreamBody>,
    info: &mut StreamInfo,
) -> Option<Outcome> {
    let kind = upgrade_type(req)?;
    if allowed_upgrade(hcm, action, &kind) {
        None
    } else {
        Some(local(info, StatusCode::FORBIDDEN, "", None, "upgrade_failed"))
    }
}

fn upgrade_type(req: &Request<DownstreamBody>) -> Option<String> {
    // A raw head has no `upgrade` (`RawRequest::new`).
    if req.version() != Version::HTTP_11 || req.body().raw_head().is_some() {
        return None;
    }
    // `upgrade` first: nearly every request has none, one lookup then.
    let kind = req
        .headers()
        .get(header::UPGRADE)?
        .to_str()
        .ok()?
        .to_ascii_lowercase();
    let connection_upgrade =
        hdr::list_tokens(req.headers(), header::CONNECTION).any(|t| t.eq_ignore_ascii_case(b"upgrade"));
    // h2c upgrade requests are served as HTTP/1.1 with the header dropped.
    (connection_upgrade && kind != "h2c").then_some(kind)
}

fn allowed_upgrade(hcm: &Hcm, action: &RouteAction, kind: &str) -> bool {
    if let Some((_, enabled)) = action.upgrades.iter().find(|(t, _)| t == kind) {
        return *enabled;
    }
    hcm.upgrades.iter().any(|(t, enabled)| t == kind && *enabled)
}

fn pick_cluster(action: &RouteAction, req: &Request<DownstreamBody>) -> Option<Arc<str>> {
    match &action.target {
        ClusterTarget::Name(n) => Some(n.clone()),
        ClusterTarget::Header(h) => route_table::cluster_from_header(req.headers(), h).map(Arc::from),
        ClusterTarget::Weighted(clusters, total) => {
            let mut r = fastrand::u64(..*total);
            clusters.iter().find_map(|(name, w)| {
                if r < u64::from(*w) {
                    Some(name.clone())
                } else {
                    r -= u64::from(*w);
                    None
                }
            })
        }
    }
}

/// A request on its way to a host: counted in the host's and the cluster's
/// stats from `start` until dropped, with the outcome recorded once.
struct InFlight {
    host: Arc<Host>,
    cluster: Arc<Cluster>,
}

impl InFlight {
    fn start(cluster: Arc<Cluster>, host: Arc<Host>) -> InFlight {
        host.stats.rq_total.inc();
        host.stats.rq_active.inc();
        cluster.stats.upstream_rq_total.inc();
        cluster.stats.upstream_rq_active.inc();
        InFlight { host, cluster }
    }

    /// The upstream answered (or legate answered for it: 503/504), as
    /// Envoy charges the cluster's `upstream_rq_<class>`; `took`: since the
    /// request was sent (the caller's clock reads, shared with the other
    /// timings of the exchange).
    fn finish(&self, status: u16, took: std::time::Duration) {
        let c = &self.cluster.stats;
        c.upstream_rq_completed.inc();
        c.upstream_rq_xx.record(status);
        c.record_code(self.cluster.id, status);
        c.upstream_rq_time.record(took.as_millis() as u64);
        let h = &self.host.stats;
        if status >= 500 {
            h.rq_error.inc();
        } else {
            h.rq_success.inc();
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.host.stats.rq_active.dec();
        self.cluster.stats.upstream_rq_active.dec();
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    conn: &ConnInfo,
    hcm: &Hcm,
    snap: &Snapshot,
    table: &RouteTable,
    vhost: &VirtualHost,
    route: &Route,
    action: &RouteAction,
    mut req: Request<DownstreamBody>,
    authority: &str,
    rq_timeout_header: bool,
    info: &mut StreamInfo,
) -> Outcome {
    let Some(cluster_name) = pick_cluster(action, &req) else {
        // cluster_header absent: 404, as the proto documents.
        return local(
            info,
            StatusCode::NOT_FOUND,
            "",
            Some(ResponseFlags::NO_CLUSTER_FOUND),
            "cluster_not_found",
        );
    };
    let Some(cluster) = snap.clusters.get(&*cluster_name).cloned() else {
        info.upstream_cluster = Some(cluster_name);
        hcm.stats.no_cluster.inc();
        return local(
            info,
            action.cluster_not_found,
            "",
            Some(ResponseFlags::NO_CLUSTER_FOUND),
            "cluster_not_found",
        );
    };
    info.upstream_cluster = Some(cluster_name);
    hcm.stats.rq_total.inc();
    // RING_HASH / MAGLEV pick by the route's hash_policy (at random without a
    // hash). Envoy hashes `:authority` as received, so the raw authority.
    // A cookie policy may make its cookie up: the response sets it.
    let mut set_cookies = Vec::new();
    let hash = if cluster.lb.is_hashed() && !action.hash_policies.is_empty() {
        let view = RequestView {
            host: authority,
            path: &info.path,
            method: req.method(),
            headers: req.headers(),
        };
        let peer = route_table::Peer {
            // The trusted client (x-forwarded-for's when it says so), as Envoy.
            remote: info.downstream_remote_address,
            local: conn.local,
        };
        route_table::compute_hash(&action.hash_policies, &view, peer, &mut set_cookies)
    } else {
        None
    };
    let Some(host) = cluster.hosts.pick_hashed(cluster.lb, hash) else {
        cluster.stats.upstream_cx_none_healthy.inc();
        return local(
            info,
            StatusCode::SERVICE_UNAVAILABLE,
            local_reply::NO_HEALTHY_UPSTREAM,
            Some(ResponseFlags::NO_HEALTHY_UPSTREAM),
            "no_healthy_upstream",
        );
    };
    // One clock read for the exchange's start, one for its answer: the
    // upstream time, the service-time header and the first-byte time are
    // differences of the two (each read is a vDSO call).
    let sent_at = Instant::now();
    let in_flight = InFlight::start(cluster.clone(), host.clone());
    info.upstream_host = Some(host.addr);

    // `x-envoy-upstream-rq-timeout-ms` overrides the route timeout (0: none);
    // it is not forwarded (taken out here: one lookup, not two, and none
    // when the request arrived without it).
    let route_timeout = if rq_timeout_header {
        match req
            .headers_mut()
            .remove(&hdr::X_ENVOY_UPSTREAM_RQ_TIMEOUT_MS)
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(0) => None,
            Some(ms) => Some(std::time::Duration::from_millis(ms)),
            None => action.timeout,
        }
    } else {
        action.timeout
    };
    let upgrade = upgrade_type(&req);
    let h2 = match cluster.protocol {
        Protocol::Http2 => true,
        Protocol::Http1 => false,
        Protocol::Downstream => info.protocol == Some(Version::HTTP_2),
    } && upgrade.is_none();
    if h2 {
        // hyper sends a map.
        if let Some(o) = give_map(&mut req, info) {
            return o;
        }
    }
    let upstream_req = match build_upstream_request(
        hcm,
        table,
        vhost,
        route,
        action,
        &host,
        req,
        authority,
        info,
        upgrade.is_some(),
        route_timeout,
        h2,
    ) {
        Ok(r) => r,
        Err(e) => {
            return local(
                info,
                StatusCode::BAD_REQUEST,
                "",
                Some(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR),
                &e,
            )
        }
    };
    let (upstream_req, received) = upstream_req;
    // Response headers are awaited for the stream idle timeout (Envoy's 408
    // SI) and the route timeout (504 UT), whichever passes first.
    let idle = action.idle_timeout.or(hcm.stream_idle_timeout);
    // `request_timeout`: the whole request must have been received by then
    // (Envoy's 408), unless the response started first.
    let request_deadline = hcm
        .request_timeout
        .map(|t| tokio::time::Instant::from_std(info.start) + t);
    // An HTTP/1.1 response head may go to an HTTP/1.1 client as it came
    // when nothing here reads or changes its fields: the proxy's additions
    // (x-envoy-upstream-service-time, server, x-request-id, connection)
    // only replace same-named fields or follow them (`h1_server`).
    let raw_head_ok = info.protocol != Some(Version::HTTP_2)
        && !conn.records_headers
        && set_cookies.is_empty()
        && route.response_headers.is_empty()
        && vhost.response_headers.is_empty()
        && table.response_headers.is_empty()
        && !matches!(hcm.server_header, ServerHeader::AppendIfAbsent);
    // The response head races the timers, polled in one place (not nested
    // timeout futures, each of which moved the exchange's result again).
    // `request_timeout` counts only while the request is still arriving;
    // the route timeout starts once it has fully arrived, as Envoy's does
    // (at once for a request without a body, which is complete when sent).
    // One timer stands for the earlier of the stream idle and the route
    // deadlines: each armed timer costs a registration in tokio's wheel.
    let sent = tokio::time::Instant::from_std(sent_at);
    let request_timer = request_deadline.map(tokio::time::sleep_until);
    let complete_at_send = received.is_done();
    let mut route_deadline = None;
    let mut head_wait = idle.map(|i| (sent + i, Timeout::StreamIdle));
    let head_timer = head_wait.map(|(at, _)| tokio::time::sleep_until(at));
    tokio::pin!(request_timer, head_timer);
    // Pinned in place, not boxed: `upstream::send` boxes its large paths
    // (HTTP/2, upgrades) itself, and the rest is built where it stays (a
    // box cost an allocation and a copy of the whole future per request).
    // The block ends its borrows of the cluster and host.
    let waited = {
        let send = upstream::send(&cluster, &host, h2, upgrade.is_some(), raw_head_ok, upstream_req);
        tokio::pin!(send);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = send.as_mut().poll(cx) {
                return Poll::Ready(Ok(r));
            }
            if let Some(t) = request_timer.as_mut().as_pin_mut() {
                if !received.is_done() && t.poll(cx).is_ready() {
                    return Poll::Ready(Err(Timeout::Request));
                }
            }
            if let Some(t) = route_timeout {
                if route_deadline.is_none() && received.poll_done(cx) {
                    let from = if complete_at_send {
                        sent
                    } else {
                        tokio::time::Instant::now()
                    };
                    let at = from + t;
                    route_deadline = Some(at);
                    if head_wait.is_none_or(|(w, _)| at <= w) {
                        head_wait = Some((at, Timeout::Route));
                        match head_timer.as_mut().as_pin_mut() {
                            Some(timer) => timer.reset(at),
                            None => head_timer.set(Some(tokio::time::sleep_until(at))),
                        }
                    }
                }
            }
            if let Some(t) = head_timer.as_mut().as_pin_mut() {
                if t.poll(cx).is_ready() {
                    return Poll::Ready(Err(head_wait.map_or(Timeout::Route, |(_, why)| why)));
                }
            }
            Poll::Pending
        })
        .await
    };
    let result = match waited {
        Ok(r) => r,
        Err(timeout) => {
            let (status, body, flag, details) = match timeout {
                Timeout::Request => {
                    hcm.stats.downstream_rq_timeout.inc();
                    (
                        StatusCode::REQUEST_TIMEOUT,
                        "request timeout",
                        None,
                        "request_overall_timeout",
                    )
                }
                Timeout::StreamIdle => (
                    StatusCode::REQUEST_TIMEOUT,
                    "stream timeout",
                    Some(ResponseFlags::STREAM_IDLE_TIMEOUT),
                    "stream_idle_timeout",
                ),
                Timeout::Route => {
                    cluster.stats.upstream_rq_timeout.inc();
                    host.stats.rq_timeout.inc();
                    (
                        StatusCode::GATEWAY_TIMEOUT,
                        local_reply::UPSTREAM_TIMEOUT,
                        Some(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT),
                        "upstream_response_timeout",
                    )
                }
            };
            in_flight.finish(status.as_u16(), sent_at.elapsed());
            let mut o = local(info, status, body, flag, details);
            o.received = Some(received);
            return o;
        }
    };
    let answered_at = Instant::now();
    let upstream_time = answered_at - sent_at;
    let result = match result {
        // A switch the request did not ask for: the client could not follow
        // it (HTTP/2 has no 101 at all, RFC 9113 §8.6), so it is the
        // upstream's protocol error (the HTTP WG's advice to Envoy,
        // envoy#29071). The HTTP/1.1 pool never reuses a connection after
        // a 101.
        Ok((r, _)) if r.status() == StatusCode::SWITCHING_PROTOCOLS && upgrade.is_none() => Err(
            upstream::SendError::Protocol("101 to a request that asked for no upgrade"),
        ),
        other => other,
    };
    let (mut response, upstream_lease) = match result {
        Ok((r, lease)) => {
            in_flight.finish(r.status().as_u16(), upstream_time);
            (r, lease)
        }
        Err(e) => {
            tracing::debug!("upstream request failed: {e:?}");
            let (status, flag, reason, transport) = classify(&e);
            if matches!(e, upstream::SendError::ConnectTimeout) {
                cluster.stats.upstream_cx_connect_timeout.inc();
            }
            if flag == ResponseFlags::UPSTREAM_CONNECTION_FAILURE {
                cluster.stats.upstream_cx_connect_fail.inc();
                host.stats.cx_connect_fail.inc();
            }
            in_flight.finish(status.as_u16(), upstream_time);
            info.upstream_transport_failure_reason = transport.clone();
            let body = connect_failure_body(reason, transport.as_deref());
            let details = format!(
                "upstream_reset_before_response_started{{{}}}",
                reason.replace(' ', "_")
            );
            let mut o = local(info, status, &body, Some(flag), &details);
            o.received = Some(received);
            return o;
        }
    };
    drop(in_flight);
    info.first_upstream_response_byte = Some(answered_at - info.start);
    info.response_code_details = Some("via_upstream".into());
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching || response.body().has_hop_by_hop_fields() {
        hdr::remove_hop_by_hop(response.headers_mut(), switching);
    }
    for cookie in set_cookies {
        if let Ok(v) = HeaderValue::try_from(cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    if !hcm.suppress_envoy_headers {
        response.headers_mut().insert(
            hdr::X_ENVOY_UPSTREAM_SERVICE_TIME.clone(),
            hdr::millis(upstream_time.as_millis() as u64),
        );
    }
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // The downstream codec tunnels the two connections once it has
        // sent the 101 (only HTTP/1.1 carries upgrades).
        if upgrade.is_some() {
            let up = hyper::upgrade::on(&mut response);
            response
                .extensions_mut()
                .insert(super::h1_server::UpstreamUpgrade(up));
        }
        let (parts, _) = response.into_parts();
        return Outcome {
            response: Response::from_parts(parts, ResponseBody::empty()),
            received: Some(received),
        };
    }
    let (parts, body) = response.into_parts();
    Outcome {
        response: Response::from_parts(
            parts,
            ResponseBody::upstream(
                body,
                idle,
                // A response that came before the whole request did (an
                // early 413…) gets the route timeout from now.
                route_timeout.map(|t| {
                    let at = route_deadline.unwrap_or_else(|| tokio::time::Instant::now() + t);
                    RouteDeadline::new(at, cluster, host)
                }),
                upstream_lease,
            ),
        ),
        received: Some(received),
    }
}

/// Which timeout ended the wait for the upstream's response headers.
#[derive(Clone, Copy)]
enum Timeout {
    /// `request_timeout`: the downstream request did not arrive in time (408).
    Request,
    /// The stream idle timeout came before the route timeout (408 SI).
    StreamIdle,
    /// The route timeout (504 UT).
    Route,
}

/// The local reply's status, the response flag, Envoy's reset reason and
/// the transport failure reason for a failed upstream request. A protocol
/// error is a 502 `UPE`, as in Envoy since 1.18 (envoy#15033); the rest
/// are 503s.
fn classify(e: &upstream::SendError) -> (StatusCode, ResponseFlags, &'static str, Option<String>) {
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    match e {
        upstream::SendError::Connect(io) => (
            unavailable,
            ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
            "connection failure",
            Some(match io.raw_os_error() {
                Some(code) => format!("delayed connect error: {code}"),
                None => io.to_string(),
            }),
        ),
        upstream::SendError::ConnectTimeout => (
            unavailable,
            ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
            "connection timeout",
            None,
        ),
        upstream::SendError::Request(_) => (
            unavailable,
            ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            "connection termination",
            None,
        ),
        upstream::SendError::Protocol(_) => (
            StatusCode::BAD_GATEWAY,
            ResponseFlags::UPSTREAM_PROTOCOL_ERROR,
            "protocol error",
            None,
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn build_upstream_request(
    hcm: &Hcm,
    table: &RouteTable,
    vhost: &VirtualHost,
    route: &Route,
    action: &RouteAction,
    host: &Host,
    req: Request<DownstreamBody>,
    authority: &str,
    info: &mut StreamInfo,
    upgrading: bool,
    route_timeout: Option<std::time::Duration>,
    h2: bool,
) -> Result<(Request<RequestBody>, Arc<RequestProgress>), String> {
    let (mut parts, mut body) = req.into_parts();
    let mut headers = std::mem::take(&mut parts.headers);
    // The codec told whether any hop-by-hop field came (usually none).
    if upgrading || body.has_hop_by_hop_fields() {
        hdr::remove_hop_by_hop(&mut headers, upgrading);
    }
    // A raw head has no `expect` (`RawRequest::new`).
    if !hcm.proxy_100_continue && body.raw_head().is_none() {
        // Envoy answers `Expect: 100-continue` itself (hyper sends the 100
        // when the body is first read) and does not forward the header.
        hdr::remove_expect_continue(&mut headers);
    }
    // x-forwarded-for, x-forwarded-proto, x-envoy-internal and x-request-id
    // were settled when the request arrived (`handle`);
    // x-envoy-upstream-rq-timeout-ms was taken out by `forward`.
    // The two below are added after a raw head's own fields: it has no
    // x-envoy-* field (`RawRequest::new`), and `via` is appended anyway.
    if let Some(t) = route_timeout {
        if !hcm.suppress_envoy_headers {
            let ms = match &action.timeout_ms {
                Some(v) if action.timeout == Some(t) => v.clone(),
                _ => HeaderValue::from(t.as_millis() as u64),
            };
            match body.raw_head_mut() {
                Some(raw) => raw.added.push((hdr::X_ENVOY_EXPECTED_RQ_TIMEOUT_MS.clone(), ms)),
                None => {
                    headers.insert(hdr::X_ENVOY_EXPECTED_RQ_TIMEOUT_MS.clone(), ms);
                }
            }
        }
    }
    if !hcm.via.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&hcm.via) {
            match body.raw_head_mut() {
                Some(raw) => raw.added.push((header::VIA, v)),
                None => {
                    headers.append(header::VIA, v);
                }
            }
        }
    }
    // The request record sees the headers as sent upstream (x-request-id…).
    if !info.request_headers.is_empty() {
        info.request_headers = headers.clone();
    }

    let new_path = rewrite_path(action, &route.matcher, &info.path);
    if new_path.is_some() {
        if let Ok(v) = HeaderValue::from_str(&info.path) {
            headers.insert(hdr::X_ENVOY_ORIGINAL_PATH.clone(), v);
        }
    }
    let host_rewrite: Option<String> = match &action.host_rewrite {
        HostRewrite::None => None,
        HostRewrite::Literal(h) => Some(h.clone()),
        HostRewrite::Auto => Some(host.hostname.clone()),
        HostRewrite::Header(name) => Some(
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .unwrap_or_else(|| authority.to_string()),
        ),
    };
    if action.host_rewrite != HostRewrite::None {
        if let Ok(v) = HeaderValue::from_str(authority) {
            headers.insert(HeaderName::from_static("x-forwarded-host"), v);
        }
    }
    match &host_rewrite {
        Some(h) => {
            headers.insert(
                header::HOST,
                HeaderValue::from_str(h).map_err(|_| "invalid host".to_string())?,
            );
        }
        // Without a rewrite the request's own `host` (its authority) stays
        // as it came: no new value to build. A raw head's `host` is its
        // authority, and its map holds only the proxy's additions.
        None => {
            if body.raw_head().is_none()
                && headers
                    .get(header::HOST)
                    .is_none_or(|v| v.as_bytes() != authority.as_bytes())
            {
                headers.insert(
                    header::HOST,
                    HeaderValue::from_str(authority).map_err(|_| "invalid host".to_string())?,
                );
            }
        }
    }
    let host_header = host_rewrite.as_deref().unwrap_or(authority);

    // Request header mutations: route, virtual host, route configuration.
    let fmt = |s: &str| expand(s, info, StatusCode::OK);
    route.request_headers.apply(&mut headers, &fmt);
    vhost.request_headers.apply(&mut headers, &fmt);
    table.request_headers.apply(&mut headers, &fmt);

    // HTTP/1.1: origin-form (the connection already goes to `host`): the
    // request's own URI when it is in that form and not rewritten.
    // HTTP/2: absolute, so `:authority` is the request's host, as Envoy sends.
    let uri: Uri = match new_path {
        None if !h2 && parts.uri.authority().is_none() && parts.uri.scheme().is_none() => {
            std::mem::take(&mut parts.uri)
        }
        new_path => {
            let upstream_path = new_path.as_deref().unwrap_or(&info.path);
            if h2 {
                format!("http://{host_header}{upstream_path}").parse()
            } else {
                upstream_path.parse()
            }
            .map_err(|_| format!("invalid path `{upstream_path}`"))?
        }
    };
    if h2 {
        // HTTP/2 carries the host as `:authority` (from the URI), not `host`.
        headers.remove(header::HOST);
    }
    // A body-less request is complete from the start.
    let received = Arc::new(RequestProgress::default());
    if hyper::body::Body::is_end_stream(&body) {
        received.mark_done();
    }
    // The downstream request's parts become the upstream request's (no
    // builder: each of its steps moves the whole head). Extensions stay
    // behind (they are the downstream codec's), and the version is the
    // one legate speaks upstream (the h1 writers and hyper read it).
    parts.uri = uri;
    parts.headers = headers;
    parts.version = Version::HTTP_11;
    parts.extensions.clear();
    let upstream = Request::from_parts(
        parts,
        RequestBody {
            inner: body,
            received: received.clone(),
        },
    );
    Ok((upstream, received))
}
