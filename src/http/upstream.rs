//! Upstream connection pools, one set per worker thread (no cross-worker
//! locks on the request path): a hyper client per cluster and protocol,
//! which pools connections per host.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::RequestBody;
use crate::model::cluster::Cluster;

pub type UpstreamClient = Client<HttpConnector, RequestBody>;

thread_local! {
    /// Keyed by (cluster id, HTTP/2?). Cluster ids are unique per compiled
    /// cluster, so a changed cluster gets fresh pools.
    static CLIENTS: RefCell<HashMap<(u64, bool), UpstreamClient>> = RefCell::new(HashMap::new());
}

/// This worker's client for `cluster`, speaking HTTP/2 (prior knowledge)
/// when `h2`.
pub fn client(cluster: &Cluster, h2: bool) -> UpstreamClient {
    CLIENTS.with(|c| {
        c.borrow_mut()
            .entry((cluster.id, h2))
            .or_insert_with(|| build(cluster.connect_timeout, cluster.idle_timeout, h2))
            .clone()
    })
}

/// Drops this worker's pools for clusters that no longer exist.
pub fn retain(live: &dyn Fn(u64) -> bool) {
    CLIENTS.with(|c| c.borrow_mut().retain(|(id, _), _| live(*id)));
}

fn build(connect_timeout: Duration, idle: Option<Duration>, h2: bool) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(idle)
        // The proxy sets Host itself (it may rewrite it).
        .set_host(false)
        .http2_only(h2);
    if h2 {
        builder.http2_adaptive_window(true);
    }
    builder.build(connector)
}
