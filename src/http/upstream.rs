//! Upstream connections: a pool per worker thread, per cluster, host and
//! protocol (no locks, no cross-thread hand-off on the request path), over
//! hyper's connection-level client.
//!
//! HTTP/1.1: an idle connection is checked out for one request and goes
//! back to the pool when its response body has been read to the end and the
//! request fully written (`h1_client`, which drives the exchange inline).
//! Upgrades get a hyper connection of their own, never pooled. HTTP/2 (over
//! hyper): one connection per host carries every stream, until
//! `max_concurrent_streams`.
//!
//! Why not hyper-util's pooled client: measured here, it cost more than
//! the rest of the request path together (a shared locked pool, a key hash
//! per request, boxed futures); see the issue notes for figures.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::RequestBody;
use super::h1_client;
use crate::model::cluster::{Cluster, Host};
use crate::model::stats::ClusterStats;

/// Idle HTTP/1.1 connections kept per host and worker.
const MAX_IDLE_PER_HOST: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    cluster: u64,
    addr: SocketAddr,
}

#[derive(Default)]
struct HostPool {
    /// Newest at the back (reused first), oldest at the front (checked
    /// for a close by the origin as new ones come back).
    idle: std::collections::VecDeque<(h1_client::Conn, Instant)>,
    /// HTTP/2 connections; another one is opened when every one carries
    /// `h2_max_streams`.
    h2: Vec<Arc<H2Conn>>,
}

/// An HTTP/2 connection and its open streams. Requests that arrive while it
/// is being established reserve a stream and wait for it (the `OnceCell`),
/// so a burst does not open one connection per request.
#[derive(Default)]
struct H2Conn {
    sender: tokio::sync::OnceCell<http2::SendRequest<RequestBody>>,
    open: AtomicU32,
}

impl H2Conn {
    fn is_closed(&self) -> bool {
        self.sender.get().is_some_and(|s| s.is_closed())
    }
}

/// foldhash: the pools are looked up twice per request, and SipHash (std's
/// default, DoS-resistant) buys nothing for keys that come from the config.
type PoolMap = HashMap<Key, HostPool, foldhash::fast::RandomState>;

thread_local! {
    static POOLS: RefCell<PoolMap> = RefCell::new(PoolMap::default());
    /// When this worker last swept, and the snapshot it swept against (a
    /// `Weak`, so its address cannot be reused by a later snapshot).
    static LAST_SWEEP: RefCell<Option<(Instant, std::sync::Weak<crate::model::Snapshot>)>> =
        const { RefCell::new(None) };
}

/// How often a worker drops the pools of clusters and hosts that are gone.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Drops this worker's pools whose cluster (by id) or host left the
/// snapshot (CDS/EDS/DNS updates): idle HTTP/1.1 connections close now,
/// HTTP/2 ones once their last stream ends (each stream holds its
/// connection). Only after the snapshot changed (nothing can be gone
/// otherwise), at most once per [`SWEEP_EVERY`], and only when there are
/// pools: the request path usually pays one pointer comparison.
pub fn sweep(snapshot: &Arc<crate::model::Snapshot>) {
    let due = LAST_SWEEP.with(|l| {
        let mut last = l.borrow_mut();
        match &*last {
            Some((_, seen)) if std::ptr::eq(seen.as_ptr(), Arc::as_ptr(snapshot)) => false,
            Some((t, _)) if t.elapsed() < SWEEP_EVERY => false,
            _ => {
                *last = Some((Instant::now(), Arc::downgrade(snapshot)));
                true
            }
        }
    });
    if !due {
        return;
    }
    POOLS.with(|p| {
        let mut pools = p.borrow_mut();
        if pools.is_empty() {
            return;
        }
        let live: std::collections::HashSet<(u64, SocketAddr)> = snapshot
            .clusters
            .values()
            .flat_map(|c| c.hosts.all.iter().map(move |h| (c.id, h.addr)))
            .collect();
        pools.retain(|k, _| live.contains(&(k.cluster, k.addr)));
    });
}

/// Why a request could not be sent.
#[derive(Debug)]
pub enum SendError {
    /// The TCP connection failed (refused, unreachable…).
    Connect(std::io::Error),
    /// `connect_timeout` passed.
    ConnectTimeout,
    /// The connection broke (or, over HTTP/2, the stream was reset) before
    /// a response arrived.
    Request(super::body::BodyError),
    /// The upstream's HTTP/1.1 response broke the protocol (a malformed or
    /// oversized head, bad framing, a 101 nobody asked for).
    Protocol(&'static str),
}

/// What a response holds of an HTTP/2 connection until its body ends: its
/// place among the connection's open streams (given back when dropped).
pub struct Lease {
    _slot: StreamSlot,
}

/// One open (or reserved) stream on an HTTP/2 connection.
struct StreamSlot(Arc<H2Conn>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body as the upstream side delivers it.
pub enum Upstream {
    /// HTTP/2, or an upgrade's response (over hyper).
    Hyper(Incoming),
    /// HTTP/1.1 read inline from a pooled connection (boxed: it holds the
    /// connection, and a response is moved several times on its way out).
    H1(Box<h1_client::Body>),
}

impl Upstream {
    /// Whether the response's map may hold hop-by-hop fields (hyper's
    /// responses are not looked into: they are rare here).
    pub fn has_hop_by_hop_fields(&self) -> bool {
        match self {
            Upstream::Hyper(_) => true,
            Upstream::H1(b) => b.has_hop_by_hop_fields(),
        }
    }
}

/// How long a connection sits idle before a check-in looks at whether the
/// origin closed it (busy pools cycle faster and pay nothing).
const STALE_CHECK_AFTER: Duration = Duration::from_secs(1);

/// Puts an HTTP/1.1 connection whose exchange ended cleanly back in its
/// pool, and drops the oldest idle ones the origin has closed meanwhile
/// (with no connection task, nothing else would notice: the socket would
/// sit in CLOSE_WAIT, counted as active, until reused).
pub(super) fn check_in(key: Key, conn: h1_client::Conn) {
    POOLS.with(|p| {
        let mut pools = p.borrow_mut();
        let pool = pools.entry(key).or_default();
        let now = Instant::now();
        while let Some((oldest, since)) = pool.idle.front_mut() {
            if now.duration_since(*since) < STALE_CHECK_AFTER || oldest.is_usable() {
                break;
            }
            pool.idle.pop_front();
        }
        if pool.idle.len() < MAX_IDLE_PER_HOST {
            pool.idle.push_back((conn, now));
        }
    });
}

/// Sends `req` to `host`, on a pooled connection when there is one.
/// Returns the response and, for HTTP/2, the stream's lease. `raw_head_ok`:
/// an HTTP/1.1 response may keep its head raw (`h1_client::exchange`).
pub async fn send(
    cluster: &Cluster,
    host: &Arc<Host>,
    h2: bool,
    upgrade: bool,
    raw_head_ok: bool,
    req: Request<RequestBody>,
) -> Result<(Response<Upstream>, Option<Lease>), SendError> {
    let key = Key {
        cluster: cluster.id,
        addr: host.addr,
    };
    // The other protocols' futures are boxed where they start: inline, their
    // states (hyper's request and handshake futures) made this future
    // 2.3 KiB, which every HTTP/1.1 request had to make room for and copy
    // (a third of its first-level data write misses in bench/instructions'
    // CACHE_SIM). The HTTP/1.1 path is small enough to live in its caller.
    if h2 {
        return Box::pin(send_h2(cluster, host, key, req)).await;
    }
    if upgrade {
        return Box::pin(send_upgrade(cluster, host, req)).await;
    }

    let (parts, body) = req.into_parts();
    let empty = hyper::body::Body::is_end_stream(&body);
    let raw = body.inner.raw_head();
    let framing = h1_client::request_framing(
        &parts.method,
        raw.map_or_else(
            || parts.headers.contains_key(http::header::CONTENT_LENGTH),
            |r| r.connection.content_length,
        ),
        empty,
        hyper::body::Body::size_hint(&body).exact(),
    );
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // A raw head's map holds the proxy's additions, written after its lines.
    let head = h1_client::encode_head(&parts.method, target, raw, &parts.headers, framing);
    let chunked = framing == h1_client::RequestFraming::Chunked;
    let is_head = parts.method == http::Method::HEAD;
    let mut body = (!empty).then_some(body);
    // A reused connection the origin closed just as we sent fails before
    // any response byte. The request is then sent once more, on another
    // connection, only when that cannot repeat an effect (RFC 9112 §9.3.1:
    // idempotent, no body). Connections seen closed while idle are skipped
    // before anything is sent (`is_usable`).
    let mut may_retry = body.is_none() && parts.method.is_idempotent();
    // One exchange call site, whichever connection it goes on: two made
    // this future keep room for two exchanges (1.5 KiB, copied into its box).
    loop {
        let pooled = POOLS.with(|p| p.borrow_mut().get_mut(&key).and_then(|pool| pool.idle.pop_back()));
        let (conn, reused) = match pooled {
            Some((mut conn, since)) => {
                if cluster.idle_timeout.is_some_and(|t| since.elapsed() >= t) || !conn.is_usable() {
                    continue;
                }
                (conn, true)
            }
            None => {
                let io = pending(cluster, Box::pin(tcp(cluster, host, false))).await?;
                (h1_client::Conn::new(io.into_inner()), false)
            }
        };
        match h1_client::exchange(
            conn,
            key,
            head.clone(),
            body.take(),
            chunked,
            is_head,
            raw_head_ok,
        )
        .await
        {
            Ok(resp) => return Ok((resp.map(Upstream::H1), None)),
            Err(h1_client::Error::ClosedBeforeResponse(_)) if reused && may_retry => may_retry = false,
            Err(h1_client::Error::Protocol(what)) => return Err(SendError::Protocol(what)),
            Err(e) => return Err(SendError::Request(e.into())),
        }
    }
}

/// [`send`] over HTTP/2.
async fn send_h2(
    cluster: &Cluster,
    host: &Arc<Host>,
    key: Key,
    req: Request<RequestBody>,
) -> Result<(Response<Upstream>, Option<Lease>), SendError> {
    let max = cluster.h2_max_streams;
    // A live connection with a free stream (possibly still connecting),
    // else a new one; the stream is reserved before any await.
    let conn = POOLS.with(|p| {
        let mut pools = p.borrow_mut();
        let pool = pools.entry(key).or_default();
        pool.h2.retain(|c| !c.is_closed());
        let conn = match pool.h2.iter().find(|c| c.open.load(Ordering::Relaxed) < max) {
            Some(c) => c.clone(),
            None => {
                let c = Arc::new(H2Conn::default());
                pool.h2.push(c.clone());
                c
            }
        };
        conn.open.fetch_add(1, Ordering::Relaxed);
        conn
    });
    let slot = StreamSlot(conn.clone());
    let mut sender = conn
        .sender
        // Boxed: connecting is rare, and its future (hyper's handshake)
        // would otherwise make every request's future several KiB
        // larger, copied at each await nesting (measured: memmove was
        // 4% of the worker's CPU).
        .get_or_try_init(|| Box::pin(connect_h2(cluster, host)))
        .await?
        .clone();
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| SendError::Request(e.into()))?;
    Ok((resp.map(Upstream::Hyper), Some(Lease { _slot: slot })))
}

/// [`send`] for an upgrade.
async fn send_upgrade(
    cluster: &Cluster,
    host: &Arc<Host>,
    req: Request<RequestBody>,
) -> Result<(Response<Upstream>, Option<Lease>), SendError> {
    // An upgraded connection becomes the tunnel: a new one, never
    // pooled, over hyper (which hands over the raw socket).
    let mut sender = pending(cluster, Box::pin(connect_h1(cluster, host))).await?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| SendError::Request(e.into()))?;
    Ok((resp.map(Upstream::Hyper), None))
}

/// A request waiting for a new upstream connection (Envoy's "pending").
async fn pending<T>(
    cluster: &Cluster,
    connecting: impl std::future::Future<Output = Result<T, SendError>>,
) -> Result<T, SendError> {
    cluster.stats.upstream_rq_pending_total.inc();
    cluster.stats.upstream_rq_pending_active.inc();
    let connected = connecting.await;
    cluster.stats.upstream_rq_pending_active.dec();
    connected
}

async fn tcp(cluster: &Cluster, host: &Arc<Host>, h2: bool) -> Result<TokioIo<Counted>, SendError> {
    let stream = match tokio::time::timeout(cluster.connect_timeout, TcpStream::connect(host.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(SendError::Connect(e)),
        Err(_) => return Err(SendError::ConnectTimeout),
    };
    let _ = stream.set_nodelay(true);
    Ok(TokioIo::new(Counted::open(
        stream,
        cluster.stats.clone(),
        host.clone(),
        h2,
    )))
}

async fn connect_h1(
    cluster: &Cluster,
    host: &Arc<Host>,
) -> Result<http1::SendRequest<RequestBody>, SendError> {
    let io = tcp(cluster, host, false).await?;
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| SendError::Request(e.into()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("upstream HTTP/1.1 connection ended: {e}");
        }
    });
    Ok(sender)
}

async fn connect_h2(
    cluster: &Cluster,
    host: &Arc<Host>,
) -> Result<http2::SendRequest<RequestBody>, SendError> {
    let io = tcp(cluster, host, true).await?;
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .keep_alive_interval(None)
        .handshake(io)
        .await
        .map_err(|e| SendError::Request(e.into()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("upstream HTTP/2 connection ended: {e}");
        }
    });
    Ok(sender)
}

/// An upstream TCP connection, counted in the cluster's and the host's
/// stats while open. `TokioIo<Counted>` is what hyper reads and writes.
pub struct Counted {
    io: TcpStream,
    stats: Arc<ClusterStats>,
    host: Arc<Host>,
}

impl Counted {
    /// The socket, for `h1_client`'s readiness-based reads and writes.
    pub fn stream(&self) -> &TcpStream {
        &self.io
    }

    fn open(io: TcpStream, stats: Arc<ClusterStats>, host: Arc<Host>, h2: bool) -> Counted {
        stats.upstream_cx_total.inc();
        stats.upstream_cx_active.inc();
        if h2 {
            stats.upstream_cx_http2_total.inc();
        } else {
            stats.upstream_cx_http1_total.inc();
        }
        host.stats.cx_total.inc();
        host.stats.cx_active.inc();
        Counted { io, stats, host }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.stats.upstream_cx_active.dec();
        self.host.stats.cx_active.dec();
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
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
