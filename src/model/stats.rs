//! The stats each part of the data plane updates, resolved from the store
//! once per compiled config so the request path only does atomic adds.
//! Names are Envoy's (`http.<prefix>.downstream_rq_2xx`, `cluster.<name>.upstream_rq_total`…).

use std::sync::Arc;

use crate::stats::{sanitize, store, Counter, Gauge, Histogram, Prefix};

/// `1xx`…`5xx` counters, indexed by `status / 100 - 1`.
pub struct CodeClasses([Arc<Counter>; 5]);

impl CodeClasses {
    /// `names`: the five stat names after `prefix` (`upstream_rq_1xx`…).
    fn new(prefix: &Prefix, names: &[&'static str; 5]) -> CodeClasses {
        CodeClasses(names.map(|n| store().counter_in(prefix, n)))
    }

    pub fn record(&self, status: u16) {
        if let Some(c) = (status / 100).checked_sub(1).and_then(|i| self.0.get(i as usize)) {
            c.inc();
        }
    }
}

/// `http.<stat_prefix>.*` of one HTTP connection manager (and its router).
pub struct HttpStats {
    pub downstream_cx_total: Arc<Counter>,
    pub downstream_cx_active: Arc<Gauge>,
    pub downstream_rq_total: Arc<Counter>,
    pub downstream_rq_active: Arc<Gauge>,
    pub downstream_rq_http1_total: Arc<Counter>,
    pub downstream_rq_http2_total: Arc<Counter>,
    pub downstream_rq_completed: Arc<Counter>,
    pub downstream_rq_xx: CodeClasses,
    pub downstream_rq_time: Arc<Histogram>,
    pub downstream_rq_timeout: Arc<Counter>,
    /// Connections that carried `max_requests_per_connection` requests.
    pub downstream_cx_max_requests_reached: Arc<Counter>,
    /// HTTP/1 requests the codec refused (malformed, too large…).
    pub downstream_cx_protocol_error: Arc<Counter>,
    /// HTTP/2 connections closed because too many of their streams were
    /// reset (by the client, or by legate for the client's stream errors)
    /// before their responses (Envoy's premature reset limit).
    pub downstream_rq_too_many_premature_resets: Arc<Counter>,
    /// Connections closed by `common_http_protocol_options.idle_timeout`.
    pub downstream_cx_idle_timeout: Arc<Counter>,
    /// Requests whose head did not arrive within `request_headers_timeout`.
    pub downstream_rq_header_timeout: Arc<Counter>,
    /// Requests whose client went away before their response ended.
    pub downstream_rq_rx_reset: Arc<Counter>,
    /// Responses legate had to cut off after they started (the origin
    /// reset, or the stream idle timeout fired).
    pub downstream_rq_tx_reset: Arc<Counter>,
    /// Requests ended by the stream idle timeout (before or after the
    /// response started).
    pub downstream_rq_idle_timeout: Arc<Counter>,
    /// Router: the origin reset after the response had started downstream.
    pub rq_reset_after_downstream_response_started: Arc<Counter>,
    pub no_route: Arc<Counter>,
    pub no_cluster: Arc<Counter>,
    pub rq_redirect: Arc<Counter>,
    pub rq_direct_response: Arc<Counter>,
    pub rq_total: Arc<Counter>,
}

impl HttpStats {
    pub fn new(stat_prefix: &str) -> HttpStats {
        let p = Prefix::new(format!("http.{}.", sanitize(stat_prefix)));
        let c = |n: &'static str| store().counter_in(&p, n);
        let g = |n: &'static str| store().gauge_in(&p, n);
        HttpStats {
            downstream_cx_total: c("downstream_cx_total"),
            downstream_cx_active: g("downstream_cx_active"),
            downstream_rq_total: c("downstream_rq_total"),
            downstream_rq_active: g("downstream_rq_active"),
            downstream_rq_http1_total: c("downstream_rq_http1_total"),
            downstream_rq_http2_total: c("downstream_rq_http2_total"),
            downstream_rq_completed: c("downstream_rq_completed"),
            downstream_rq_xx: CodeClasses::new(
                &p,
                &[
                    "downstream_rq_1xx",
                    "downstream_rq_2xx",
                    "downstream_rq_3xx",
                    "downstream_rq_4xx",
                    "downstream_rq_5xx",
                ],
            ),
            downstream_rq_time: store().histogram_in(&p, "downstream_rq_time"),
            downstream_rq_timeout: c("downstream_rq_timeout"),
            downstream_cx_max_requests_reached: c("downstream_cx_max_requests_reached"),
            downstream_cx_protocol_error: c("downstream_cx_protocol_error"),
            downstream_cx_idle_timeout: c("downstream_cx_idle_timeout"),
            downstream_rq_too_many_premature_resets: c("downstream_rq_too_many_premature_resets"),
            downstream_rq_header_timeout: c("downstream_rq_header_timeout"),
            downstream_rq_rx_reset: c("downstream_rq_rx_reset"),
            downstream_rq_tx_reset: c("downstream_rq_tx_reset"),
            downstream_rq_idle_timeout: c("downstream_rq_idle_timeout"),
            rq_reset_after_downstream_response_started: c("rq_reset_after_downstream_response_started"),
            no_route: c("no_route"),
            no_cluster: c("no_cluster"),
            rq_redirect: c("rq_redirect"),
            rq_direct_response: c("rq_direct_response"),
            rq_total: c("rq_total"),
        }
    }
}

/// `server.total_connections`: open downstream connections, all listeners.
pub fn server_total_connections() -> &'static Gauge {
    static G: std::sync::OnceLock<Arc<Gauge>> = std::sync::OnceLock::new();
    G.get_or_init(|| store().gauge("server.total_connections"))
}

/// `cluster_manager.*` for a static set of clusters (CDS will move these).
pub fn record_static_clusters(n: usize) {
    store().counter("cluster_manager.cluster_added").add(n as u64);
    store().gauge("cluster_manager.active_clusters").set(n as i64);
    store().gauge("cluster_manager.warming_clusters").set(0);
    store().counter("cluster_manager.cluster_modified");
    store().counter("cluster_manager.cluster_removed");
    store().counter("cluster_manager.cluster_updated");
}

/// `listener.<address>.*`.
pub struct ListenerStats {
    pub downstream_cx_total: Arc<Counter>,
    pub downstream_cx_active: Arc<Gauge>,
}

impl ListenerStats {
    /// `address` as Envoy names it: `127.0.0.1_10000` (`:` → `_`).
    pub fn new(address: &str) -> ListenerStats {
        let p = Prefix::new(format!("listener.{}.", sanitize(address)));
        ListenerStats {
            downstream_cx_total: store().counter_in(&p, "downstream_cx_total"),
            downstream_cx_active: store().gauge_in(&p, "downstream_cx_active"),
        }
    }
}

/// `cluster.<name>.`, the prefix of a cluster's stats.
pub fn cluster_prefix(cluster: &str) -> Prefix {
    Prefix::new(format!("cluster.{}.", sanitize(cluster)))
}

/// `cluster.<name>.*`.
pub struct ClusterStats {
    pub upstream_rq_total: Arc<Counter>,
    pub upstream_rq_active: Arc<Gauge>,
    pub upstream_rq_completed: Arc<Counter>,
    pub upstream_rq_xx: CodeClasses,
    pub upstream_rq_time: Arc<Histogram>,
    pub upstream_rq_timeout: Arc<Counter>,
    pub upstream_cx_total: Arc<Counter>,
    pub upstream_cx_active: Arc<Gauge>,
    pub upstream_cx_http1_total: Arc<Counter>,
    pub upstream_cx_http2_total: Arc<Counter>,
    pub upstream_cx_connect_fail: Arc<Counter>,
    pub upstream_cx_connect_timeout: Arc<Counter>,
    pub upstream_cx_none_healthy: Arc<Counter>,
    /// Requests that waited for a new upstream connection.
    pub upstream_rq_pending_total: Arc<Counter>,
    pub upstream_rq_pending_active: Arc<Gauge>,
    /// Registered so they read 0, as in Envoy, until legate can hit them.
    pub bind_errors: Arc<Counter>,
    pub lb_healthy_panic: Arc<Counter>,
    /// `cluster.<name>.` — for stats named at run time (`upstream_rq_<code>`).
    pub prefix: Prefix,
    pub membership_total: Arc<Gauge>,
    pub membership_healthy: Arc<Gauge>,
    pub membership_change: Arc<Counter>,
}

impl ClusterStats {
    pub fn new(cluster: &str) -> ClusterStats {
        let p = cluster_prefix(cluster);
        let c = |n: &'static str| store().counter_in(&p, n);
        let g = |n: &'static str| store().gauge_in(&p, n);
        ClusterStats {
            upstream_rq_total: c("upstream_rq_total"),
            upstream_rq_active: g("upstream_rq_active"),
            upstream_rq_completed: c("upstream_rq_completed"),
            upstream_rq_xx: CodeClasses::new(
                &p,
                &[
                    "upstream_rq_1xx",
                    "upstream_rq_2xx",
                    "upstream_rq_3xx",
                    "upstream_rq_4xx",
                    "upstream_rq_5xx",
                ],
            ),
            upstream_rq_time: store().histogram_in(&p, "upstream_rq_time"),
            upstream_rq_timeout: c("upstream_rq_timeout"),
            upstream_cx_total: c("upstream_cx_total"),
            upstream_cx_active: g("upstream_cx_active"),
            upstream_cx_http1_total: c("upstream_cx_http1_total"),
            upstream_cx_http2_total: c("upstream_cx_http2_total"),
            upstream_cx_connect_fail: c("upstream_cx_connect_fail"),
            upstream_cx_connect_timeout: c("upstream_cx_connect_timeout"),
            upstream_cx_none_healthy: c("upstream_cx_none_healthy"),
            upstream_rq_pending_total: c("upstream_rq_pending_total"),
            upstream_rq_pending_active: g("upstream_rq_pending_active"),
            bind_errors: c("bind_errors"),
            lb_healthy_panic: c("lb_healthy_panic"),
            // Written by the main runtime only (DNS, EDS): no shards.
            membership_total: store().gauge_single_in(&p, "membership_total"),
            membership_healthy: store().gauge_single_in(&p, "membership_healthy"),
            membership_change: store().counter_single_in(&p, "membership_change"),
            prefix: p,
        }
    }

    /// `cluster.<name>.upstream_rq_<code>`: looked up in a per-thread cache
    /// (one hash lookup, no lock, no shared write) and registered on first use.
    pub fn record_code(&self, id: u64, status: u16) {
        thread_local! {
            // foldhash: looked up once per proxied request; SipHash's DoS
            // resistance buys nothing for (cluster id, status) keys.
            static CODES: std::cell::RefCell<
                std::collections::HashMap<(u64, u16), Arc<Counter>, foldhash::fast::RandomState>,
            > = std::cell::RefCell::new(std::collections::HashMap::default());
        }
        CODES.with(|codes| {
            codes
                .borrow_mut()
                .entry((id, status))
                .or_insert_with(|| store().counter(&format!("{}upstream_rq_{status}", self.prefix.as_str())))
                .inc();
        });
    }

    /// Records a new host set's size (no health checks: all are healthy).
    pub fn set_membership(&self, n: usize) {
        self.membership_total.set(n as i64);
        self.membership_healthy.set(n as i64);
        self.membership_change.inc();
    }
}

/// The metric types carry no Debug; these bundles print their kind only
/// (the values are in the admin's /stats).
macro_rules! opaque_debug {
    ($($t:ty),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($t))
            }
        }
    )*};
}
opaque_debug!(CodeClasses, HttpStats, ListenerStats, ClusterStats);
