//! Envoy's admin interface (`admin.address` in the bootstrap): the same
//! endpoints, methods, status codes and output formats, served on the main
//! runtime (never on a data-plane worker).
//!
//! Every admin request is written to `admin.access_log` (the legacy
//! `access_log_path` arrives there too, turned into a file logger by the
//! config loader) as Envoy's admin connection manager logs it.
//!
//! Not implemented yet: `/runtime_modify` values are shown by `/runtime`
//! but nothing in legate reads runtime keys, the profilers, `/init_dump`,
//! `/contention`, `/stats/recentlookups*`, `/tap`, and TLS (`/certs` is empty).

pub mod clusters;
pub mod config_dump;
pub mod handlers;
pub mod logging;
pub mod server_info;
pub mod stats_format;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use prost_reflect::{DynamicMessage, ReflectMessage};
use tokio::sync::Notify;

use crate::access_log::AccessLog;
use crate::config::Loaded;
use crate::model::Shared;
use crate::proto::envoy::config::bootstrap::v3::Bootstrap;
use crate::stats::{self, HistogramSnapshot};
use crate::stream_info::StreamInfo;

/// `envoy.admin.v3.ServerInfo.State`, also the `server.state` gauge value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ServerState {
    Live = 0,
    Draining = 1,
    PreInitializing = 2,
    Initializing = 3,
}

impl ServerState {
    pub fn name(self) -> &'static str {
        match self {
            ServerState::Live => "LIVE",
            ServerState::Draining => "DRAINING",
            ServerState::PreInitializing => "PRE_INITIALIZING",
            ServerState::Initializing => "INITIALIZING",
        }
    }

    fn from_u8(v: u8) -> ServerState {
        match v {
            0 => ServerState::Live,
            1 => ServerState::Draining,
            2 => ServerState::PreInitializing,
            _ => ServerState::Initializing,
        }
    }
}

/// The process's initialization state (before health-check failure is
/// considered): PRE_INITIALIZING, INITIALIZING while xDS warms, LIVE,
/// DRAINING at shutdown. Set by the runtime and the xDS manager.
static SERVER_STATE: AtomicU8 = AtomicU8::new(ServerState::PreInitializing as u8);

/// Sets the server state and its gauges (`server.state`, `server.live`).
pub fn set_server_state(s: ServerState) {
    SERVER_STATE.store(s as u8, Ordering::Relaxed);
    let st = stats::store();
    st.gauge("server.state").set(s as i64);
    st.gauge("server.live").set(i64::from(s == ServerState::Live));
}

/// The server state as set by [`set_server_state`].
pub fn server_state() -> ServerState {
    ServerState::from_u8(SERVER_STATE.load(Ordering::Relaxed))
}

/// Interval histograms: the values recorded during the last complete
/// `stats_flush_interval`, as Envoy shows them next to the cumulative ones.
#[derive(Default)]
struct Interval {
    /// Cumulative snapshot at the last flush.
    at_flush: Option<HistogramSnapshot>,
    /// What was recorded between the two last flushes.
    last: Option<HistogramSnapshot>,
}

/// Everything the admin handlers read. Built once at startup; the parts
/// that change (clusters, hosts) are read from the live snapshot (per-cluster `membership_*`
/// are kept by the model's `ClusterStats`).
pub struct AdminState {
    pub bootstrap: Bootstrap,
    /// The bootstrap (after `--service-*` overrides) in proto3 JSON with
    /// proto field names, as `/config_dump` prints it.
    pub bootstrap_json: serde_json::Value,
    /// Descriptor of the bootstrap, to reach every other message type
    /// (field-mask checks in `/config_dump`).
    pub bootstrap_desc: prost_reflect::MessageDescriptor,
    pub shared: Shared,
    /// Data-plane listeners and their bound addresses (real ports).
    pub listeners: Arc<crate::runtime::listeners::ListenerManager>,
    /// The xDS config manager, when the bootstrap has dynamic resources.
    pub xds: Option<Arc<crate::xds::manager::Manager>>,
    /// The admin listener's own address, once bound.
    pub admin_address: Option<SocketAddr>,
    pub started: Instant,
    pub started_wall: SystemTime,
    pub concurrency: usize,
    /// `std::env::args()` at startup.
    pub args: Vec<String>,
    healthcheck_failed: AtomicBool,
    /// Notified by `/quitquitquit`; the runtime's shutdown wait ends on it.
    pub quit: Arc<Notify>,
    intervals: Mutex<HashMap<String, Interval>>,
    /// `/runtime_modify` overrides (the admin layer).
    pub runtime_overrides: Mutex<BTreeMap<String, String>>,
    pub stats_flush_interval: Duration,
    /// Set by the runtime: drains all listeners, or only the INBOUND ones
    /// (`true`); returns how many it drained.
    pub drain_listeners: Option<DrainListeners>,
    /// `admin.access_log`, built (files opened) once at startup.
    access_logs: Vec<AccessLog>,
    /// Envoy's `LocalInfo` address, which the admin appends to
    /// `x-forwarded-for` in place of a loopback peer.
    local_ip: IpAddr,
}

/// The runtime's listener drain, for `/drain_listeners`.
pub type DrainListeners = Arc<dyn Fn(bool) -> usize + Send + Sync>;

impl AdminState {
    /// Fails when an `admin.access_log` entry is invalid or its file cannot
    /// be opened; the error starts with the field path
    /// (`admin.access_log[0].typed_config.path: …`).
    pub fn new(
        loaded: &Loaded,
        shared: Shared,
        listeners: Arc<crate::runtime::listeners::ListenerManager>,
        concurrency: usize,
    ) -> Result<AdminState, String> {
        let access_logs = match &loaded.bootstrap.admin {
            Some(admin) => {
                crate::access_log::build_all(&admin.access_log).map_err(|e| format!("admin.{e}"))?
            }
            None => Vec::new(),
        };
        let bootstrap_desc = loaded.dynamic.descriptor();
        // From the typed bootstrap, not `loaded.dynamic`: `--service-node`
        // and friends were applied to the typed one only.
        let bootstrap_json = DynamicMessage::decode(
            bootstrap_desc.clone(),
            loaded.bootstrap.encode_to_vec().as_slice(),
        )
        .ok()
        .and_then(|m| to_json(&m).ok())
        .unwrap_or_else(|| to_json(&loaded.dynamic).unwrap_or(serde_json::Value::Null));
        let stats_flush_interval = loaded
            .bootstrap
            .stats_flush_interval
            .as_ref()
            .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(5));
        Ok(AdminState {
            bootstrap: loaded.bootstrap.clone(),
            bootstrap_json,
            bootstrap_desc,
            shared,
            listeners,
            xds: None,
            admin_address: None,
            started: Instant::now(),
            started_wall: SystemTime::now(),
            concurrency,
            args: std::env::args().collect(),
            healthcheck_failed: AtomicBool::new(false),
            quit: Arc::new(Notify::new()),
            intervals: Mutex::new(HashMap::new()),
            runtime_overrides: Mutex::new(BTreeMap::new()),
            stats_flush_interval,
            drain_listeners: None,
            access_logs,
            local_ip: crate::local_info::address(),
        })
    }

    /// LIVE, or DRAINING once health checks are failed or shutdown began
    /// (Envoy's `Utility::serverState`).
    pub fn state(&self) -> ServerState {
        if self.healthcheck_failed.load(Ordering::Relaxed) {
            return ServerState::Draining;
        }
        ServerState::from_u8(SERVER_STATE.load(Ordering::Relaxed))
    }

    pub fn set_state(&self, s: ServerState) {
        SERVER_STATE.store(s as u8, Ordering::Relaxed);
        self.publish_state();
    }

    /// `/healthcheck/fail` (true) and `/healthcheck/ok` (false).
    pub fn set_healthcheck_failed(&self, failed: bool) {
        self.healthcheck_failed.store(failed, Ordering::Relaxed);
        self.publish_state();
    }

    pub fn healthcheck_failed(&self) -> bool {
        self.healthcheck_failed.load(Ordering::Relaxed)
    }

    fn publish_state(&self) {
        let s = self.state();
        let st = stats::store();
        st.gauge("server.state").set(s as i64);
        st.gauge("server.live").set(i64::from(s == ServerState::Live));
    }

    /// Cumulative and last-interval views of a histogram.
    pub fn histogram_views(
        &self,
        name: &str,
        h: &stats::Histogram,
    ) -> (HistogramSnapshot, Option<HistogramSnapshot>) {
        let cum = h.snapshot();
        let intervals = self.intervals.lock().unwrap_or_else(|e| e.into_inner());
        let last = intervals.get(name).and_then(|i| i.last.clone());
        (cum, last)
    }

    /// One stats flush: rotate the interval histograms, refresh gauges.
    pub fn flush_stats(&self) {
        let mut intervals = self.intervals.lock().unwrap_or_else(|e| e.into_inner());
        for (name, h) in stats::store().histograms() {
            let now = h.snapshot();
            // A histogram never recorded into has no interval to keep: an
            // entry for each (two per cluster) was 1.4 KB per cluster at
            // 10,000 clusters. Its first interval, once recorded, is then
            // measured from nothing, which is what an empty `at_flush` gives.
            if now.count == 0 && !intervals.contains_key(&name) {
                continue;
            }
            let entry = intervals.entry(name).or_default();
            let delta = match &entry.at_flush {
                Some(prev) => now.since(prev),
                None => now.clone(),
            };
            entry.last = Some(delta).filter(|d| d.count > 0);
            entry.at_flush = Some(now);
        }
        drop(intervals);
        self.refresh_gauges();
    }

    /// Gauges computed rather than maintained: uptime, memory, and counts
    /// read from the live snapshot (per-cluster `membership_*`
    /// are kept by the model's `ClusterStats`).
    pub fn refresh_gauges(&self) {
        let st = stats::store();
        st.gauge("server.uptime")
            .set(self.started.elapsed().as_secs() as i64);
        if let Some(rss) = server_info::rss_bytes() {
            st.gauge("server.memory_allocated").set(rss as i64);
            st.gauge("server.memory_heap_size").set(rss as i64);
            st.gauge("server.memory_physical_size").set(rss as i64);
        }
        let snap = self.shared.load();
        st.gauge("cluster_manager.active_clusters")
            .set(snap.clusters.len() as i64);
        st.gauge("listener_manager.total_listeners_active")
            .set(snap.listeners.len() as i64);
        self.publish_state();
    }
}

/// Proto3 JSON with proto field names (what Envoy's admin prints).
pub fn to_json(msg: &DynamicMessage) -> Result<serde_json::Value, String> {
    let opts = prost_reflect::SerializeOptions::new().use_proto_field_name(true);
    let mut ser = serde_json::Serializer::new(Vec::new());
    msg.serialize_with_options(&mut ser, &opts)
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&ser.into_inner()).map_err(|e| e.to_string())
}

/// Sets the server gauges every process has, admin or not. Call once the
/// listeners are bound and the workers started.
pub fn init_server_stats(concurrency: usize, listeners: usize) {
    let st = stats::store();
    let state = server_state();
    st.gauge("server.live").set(i64::from(state == ServerState::Live));
    st.gauge("server.state").set(state as i64);
    st.gauge("server.concurrency").set(concurrency as i64);
    // Envoy: a gauge of the build's numeric version; legate has none.
    st.gauge("server.version").set(0);
    st.gauge("server.hot_restart_epoch").set(0);
    st.gauge("server.uptime").set(0);
    st.gauge("listener_manager.total_listeners_active")
        .set(listeners as i64);
    st.gauge("listener_manager.total_listeners_warming").set(0);
    st.gauge("listener_manager.total_listeners_draining").set(0);
    st.gauge("listener_manager.workers_started").set(1);
    st.text_readout("server.version_text", &server_info::version_string());
}

/// Why a non-loopback admin address is dangerous, logged at startup.
pub fn warn_if_exposed(addr: SocketAddr) {
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "the admin interface listens on {addr}, which is not a loopback address: anyone who can \
             reach it can shut legate down (/quitquitquit), stop traffic (/healthcheck/fail, \
             /drain_listeners), change log levels (/logging), reset stats, and read the whole \
             configuration including secrets and internal addresses (/config_dump). It has no \
             authentication: bind it to 127.0.0.1 or protect it with a firewall"
        );
    }
}

// ---------------------------------------------------------------------------
// The HTTP server

/// What a handler returns.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

pub const TEXT: &str = "text/plain; charset=UTF-8";
pub const JSON: &str = "application/json";
pub const HTML: &str = "text/html; charset=UTF-8";

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: TEXT,
            body: body.into(),
        }
    }

    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: JSON,
            body: body.into(),
        }
    }

    pub fn html(body: impl Into<String>) -> Reply {
        Reply {
            status: 200,
            content_type: HTML,
            body: body.into(),
        }
    }
}

/// Serves the admin interface on `listener` until the runtime stops.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AdminState>) {
    // Periodic stats flush (interval histograms, computed gauges).
    {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(state.stats_flush_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                state.flush_stats();
            }
        });
    }
    let st = stats::store();
    let cx_total = st.counter("listener.admin.downstream_cx_total");
    let cx_active = st.gauge("listener.admin.downstream_cx_active");
    let hcm_cx_total = st.counter("http.admin.downstream_cx_total");
    let hcm_cx_active = st.gauge("http.admin.downstream_cx_active");
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("admin: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        cx_total.inc();
        cx_active.inc();
        hcm_cx_total.inc();
        hcm_cx_active.inc();
        let state = state.clone();
        let (cx_active, hcm_cx_active) = (cx_active.clone(), hcm_cx_active.clone());
        let peer = Peer {
            remote,
            local: stream.local_addr().unwrap_or(remote),
        };
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req, peer).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
            cx_active.dec();
            hcm_cx_active.dec();
        });
    }
}

/// The two ends of one admin connection.
#[derive(Clone, Copy, Debug)]
struct Peer {
    remote: SocketAddr,
    local: SocketAddr,
}

async fn handle(state: &AdminState, req: Request<Incoming>, peer: Peer) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let st = stats::store();
    st.counter("http.admin.downstream_rq_total").inc();
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_string();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let mut info =
        (!state.access_logs.is_empty()).then(|| request_info(&parts, &path_and_query, peer, state.local_ip));
    // No endpoint reads a body; it is consumed (and counted) before the
    // answer, as Envoy's admin filter buffers it.
    let received = body_len(body).await;
    if let Some(info) = info.as_mut() {
        info.bytes_received = received;
        info.mark_last_request_byte();
    }
    let reply = handlers::dispatch(state, &method, &path_and_query);
    let class = reply.status / 100;
    if (1..=5).contains(&class) {
        st.counter(&format!("http.admin.downstream_rq_{class}xx")).inc();
    }
    st.counter("http.admin.downstream_rq_completed").inc();
    st.histogram("http.admin.downstream_rq_time")
        .record(started.elapsed().as_millis() as u64);
    let body_bytes = reply.body.len() as u64;
    let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() = http::StatusCode::from_u16(reply.status).unwrap_or(http::StatusCode::OK);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(reply.content_type),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, max-age=0"),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    if let Some(mut info) = info {
        info.response_code = resp.status().as_u16();
        info.bytes_sent = body_bytes;
        info.response_headers = Some(resp.headers().clone());
        info.response_code_details = Some("admin_filter_response".into());
        info.finish();
        for log in &state.access_logs {
            log.log(&info);
        }
    }
    resp
}

/// The access-log record of an admin request, with the request headers as
/// Envoy's admin connection manager leaves them: it uses the remote address
/// (`use_remote_address: true`), so it appends the peer to
/// `x-forwarded-for` — its own local address for a loopback peer — and sets
/// `x-forwarded-proto`.
fn request_info(parts: &http::request::Parts, path: &str, peer: Peer, local_ip: IpAddr) -> StreamInfo {
    let mut headers = parts.headers.clone();
    // The admin connection manager is an edge with no internal addresses.
    let edge = crate::http::headers::XffPolicy {
        use_remote_address: true,
        trusted_hops: 0,
        skip_append: false,
    };
    crate::http::headers::mutate_request(
        &mut headers,
        peer.remote.ip(),
        local_ip,
        edge,
        &Default::default(),
        "http",
    );
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    StreamInfo::new(
        parts.method.clone(),
        path,
        authority,
        parts.version,
        headers,
        peer.remote,
        peer.local,
    )
}

/// Reads a request body to its end, keeping only its length.
async fn body_len(mut body: Incoming) -> u64 {
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    n
}

// ---------------------------------------------------------------------------
// Query strings

/// A decoded query string, in order (Envoy's `parseAndDecodeQueryString`:
/// `%XX` decoded, `+` kept as is).
#[derive(Debug, Default)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(path_and_query: &str) -> Query {
        let Some((_, q)) = path_and_query.split_once('?') else {
            return Query::default();
        };
        Query(
            q.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (percent_decode(k), percent_decode(v)),
                    None => (percent_decode(kv), String::new()),
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Pretty JSON as Envoy's `MessageUtil::getJsonStringFromMessage(.., pretty)`
/// prints it (protobuf's printer: one-space indent).
pub fn pretty_json(v: &serde_json::Value) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    if v.serialize(&mut ser).is_err() {
        return "{}".to_string();
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = Query::parse("/stats?filter=a%2Eb+c&usedonly&type=Counters");
        assert_eq!(q.get("filter"), Some("a.b+c"));
        assert!(q.has("usedonly"));
        assert_eq!(q.get("usedonly"), Some(""));
        assert_eq!(q.get("type"), Some("Counters"));
        assert_eq!(q.get("nope"), None);
        assert!(Query::parse("/stats").0.is_empty());
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn access_log_record_has_envoys_admin_request_headers() {
        let server: IpAddr = "10.1.2.3".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9901".parse().unwrap();
        let req = |xff: Option<&str>| {
            let mut b = Request::builder()
                .method("POST")
                .uri("/healthcheck/fail?x=1")
                .version(http::Version::HTTP_11)
                .header("host", "localhost:9901");
            if let Some(x) = xff {
                b = b.header("x-forwarded-for", x);
            }
            b.body(()).unwrap().into_parts().0
        };
        // (peer, incoming XFF, logged XFF)
        let cases = [
            ("127.0.0.1:5000", None, "10.1.2.3"),
            ("[::1]:5000", Some("1.1.1.1"), "1.1.1.1,10.1.2.3"),
            ("192.168.0.7:5000", None, "192.168.0.7"),
            (
                "192.168.0.7:5000",
                Some("1.1.1.1, 2.2.2.2"),
                "1.1.1.1, 2.2.2.2,192.168.0.7",
            ),
        ];
        for (remote, xff, want) in cases {
            let remote: SocketAddr = remote.parse().unwrap();
            let info = request_info(&req(xff), "/healthcheck/fail?x=1", Peer { remote, local }, server);
            assert_eq!(info.request_headers["x-forwarded-for"], want, "{remote} {xff:?}");
            assert_eq!(info.request_headers["x-forwarded-proto"], "http");
            // Nothing is internal to the admin: every request is external.
            assert_eq!(
                info.request_headers["x-envoy-external-address"],
                remote.ip().to_string().as_str()
            );
            assert_eq!(&*info.authority, "localhost:9901");
            assert_eq!(&*info.path, "/healthcheck/fail?x=1");
            assert_eq!(info.method, http::Method::POST);
            assert_eq!(info.downstream_remote_address, remote);
            assert_eq!(info.downstream_local_address, local);
        }
        assert!(!crate::local_info::address().is_unspecified());
    }

    #[test]
    fn pretty_json_one_space() {
        let v = serde_json::json!({"a": [1]});
        assert_eq!(pretty_json(&v), "{\n \"a\": [\n  1\n ]\n}");
    }
}
