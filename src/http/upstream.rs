//! Upstream connection pools, one set per worker thread (no cross-worker
//! locks on the request path): a hyper client per cluster and protocol,
//! which pools connections per host. Connections are counted in the
//! cluster's and the host's stats while open.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::RequestBody;
use crate::model::cluster::{Cluster, Host};
use crate::model::stats::ClusterStats;
use crate::model::Shared;

pub type UpstreamClient = Client<CountingConnector, RequestBody>;

thread_local! {
    /// Keyed by (cluster id, HTTP/2?). Cluster ids are unique per compiled
    /// cluster, so a changed cluster gets fresh pools.
    static CLIENTS: RefCell<HashMap<(u64, bool), UpstreamClient>> = RefCell::new(HashMap::new());
}

/// This worker's client for `cluster`, speaking HTTP/2 (prior knowledge)
/// when `h2`.
pub fn client(cluster: &Cluster, h2: bool, shared: &Shared) -> UpstreamClient {
    CLIENTS.with(|c| {
        c.borrow_mut()
            .entry((cluster.id, h2))
            .or_insert_with(|| build(cluster, h2, shared.clone()))
            .clone()
    })
}

fn build(cluster: &Cluster, h2: bool, shared: Shared) -> UpstreamClient {
    let mut inner = HttpConnector::new();
    inner.set_connect_timeout(Some(cluster.connect_timeout));
    inner.set_nodelay(true);
    inner.enforce_http(true);
    let connector = CountingConnector {
        inner,
        cluster: cluster.name.clone(),
        stats: cluster.stats.clone(),
        shared,
        h2,
    };
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(cluster.idle_timeout.or(Some(Duration::from_secs(3600))))
        // The proxy sets Host itself (it may rewrite it).
        .set_host(false)
        .http2_only(h2);
    if h2 {
        builder.http2_adaptive_window(true);
    }
    builder.build(connector)
}

/// Wraps the TCP connector to count connections (`upstream_cx_total`,
/// `upstream_cx_active`, per-host `cx_total`/`cx_active`).
#[derive(Clone)]
pub struct CountingConnector {
    inner: HttpConnector,
    cluster: String,
    stats: Arc<ClusterStats>,
    shared: Shared,
    h2: bool,
}

impl tower_service::Service<Uri> for CountingConnector {
    type Response = Counted;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Counted, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.inner, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = tower_service::Service::<Uri>::call(&mut self.inner, uri);
        let stats = self.stats.clone();
        let shared = self.shared.clone();
        let cluster = self.cluster.clone();
        let h2 = self.h2;
        Box::pin(async move {
            let io = connecting.await?;
            // Connecting is rare next to requests: finding the host in the
            // current snapshot here keeps the request path free of it.
            let host = io.inner().peer_addr().ok().and_then(|addr| {
                shared
                    .load()
                    .clusters
                    .get(&cluster)
                    .and_then(|c| c.hosts.find(addr).cloned())
            });
            Ok(Counted::open(io, stats, host, h2))
        })
    }
}

/// An upstream connection, counted while open.
pub struct Counted {
    io: TokioIo<TcpStream>,
    stats: Arc<ClusterStats>,
    host: Option<Arc<Host>>,
}

impl Counted {
    fn open(io: TokioIo<TcpStream>, stats: Arc<ClusterStats>, host: Option<Arc<Host>>, h2: bool) -> Counted {
        stats.upstream_cx_total.inc();
        stats.upstream_cx_active.inc();
        if h2 {
            stats.upstream_cx_http2_total.inc();
        } else {
            stats.upstream_cx_http1_total.inc();
        }
        if let Some(h) = &host {
            h.stats.cx_total.fetch_add(1, Ordering::Relaxed);
            h.stats.cx_active.fetch_add(1, Ordering::Relaxed);
        }
        Counted { io, stats, host }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.stats.upstream_cx_active.dec();
        if let Some(h) = &self.host {
            h.stats.cx_active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Connection for Counted {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl Read for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
