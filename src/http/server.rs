//! Serving one downstream connection with the HTTP connection manager's
//! codec settings (AUTO: HTTP/1.1 and h2c prior knowledge on one port).

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::proxy::{handle, ConnInfo};
use crate::model::listener::Codec;

/// Counts a downstream connection in the listener's and the HCM's stats
/// while it is open.
struct ConnectionStats(Arc<ConnInfo>);

impl ConnectionStats {
    fn open(conn: &Arc<ConnInfo>) -> ConnectionStats {
        conn.listener_stats.downstream_cx_total.inc();
        conn.listener_stats.downstream_cx_active.inc();
        let hcm = &conn.listener.hcm;
        hcm.stats.downstream_cx_total.inc();
        hcm.stats.downstream_cx_active.inc();
        crate::model::stats::server_total_connections().inc();
        ConnectionStats(conn.clone())
    }
}

impl Drop for ConnectionStats {
    fn drop(&mut self) {
        self.0.listener_stats.downstream_cx_active.dec();
        self.0.listener.hcm.stats.downstream_cx_active.dec();
        crate::model::stats::server_total_connections().dec();
    }
}

/// How long a draining connection that has not sent a request yet is kept
/// open for one to arrive.
const FIRST_REQUEST_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Serves `stream` until the client closes it or a drain is requested, in
/// which case in-flight requests finish first (HTTP/1: `connection: close`
/// on the next response; HTTP/2: GOAWAY).
pub async fn serve_connection(stream: TcpStream, conn: Arc<ConnInfo>, mut drain: watch::Receiver<bool>) {
    let hcm = conn.listener.hcm.clone();
    let listener_stats_guard = ConnectionStats::open(&conn);
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    let info = conn.clone();
    let svc = service_fn(move |req| handle(conn.clone(), req));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(hcm.request_headers_timeout)
        .max_headers(hcm.max_headers_count as usize + 1);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(hcm.max_request_headers_kb.saturating_mul(1024))
        .adaptive_window(true);
    let builder = match hcm.codec {
        Codec::Auto => builder,
        Codec::Http1 => builder.http1_only(),
        Codec::Http2 => builder.http2_only(),
    };
    let connection = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(connection);
    let draining = async {
        if !*drain.borrow() {
            let _ = drain.changed().await;
        }
    };
    tokio::select! {
        res = connection.as_mut() => {
            if let Err(e) = res {
                tracing::debug!("downstream connection ended: {e}");
            }
            return;
        }
        _ = draining => {}
        _ = info.max_requests_reached.notified() => {
            // HTTP/2 after `max_requests_per_connection`: GOAWAY, then the
            // open streams finish (bounded like any drain).
            connection.as_mut().graceful_shutdown();
            finish_draining(connection, &info).await;
            return;
        }
    }
    // A connection accepted just before the drain has a request on its way:
    // closing it before that request is read would fail it. Give it a moment
    // to arrive (it then finishes, with `connection: close`).
    let grace = tokio::time::Instant::now() + FIRST_REQUEST_GRACE;
    while info.requests.load(std::sync::atomic::Ordering::Relaxed) == 0 && tokio::time::Instant::now() < grace
    {
        tokio::select! {
            res = connection.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!("downstream connection ended: {e}");
                }
                return;
            }
            _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
        }
    }
    connection.as_mut().graceful_shutdown();
    finish_draining(connection, &info).await;
    drop(listener_stats_guard);
}

/// Requests in flight on a connection told to shut down get
/// `--drain-time-s` (a changed or removed listener's connections, as at
/// shutdown); then the connection closes.
async fn finish_draining<F, E>(connection: std::pin::Pin<&mut F>, info: &ConnInfo)
where
    F: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    match tokio::time::timeout(info.drain_time, connection).await {
        Ok(Err(e)) => tracing::debug!("downstream connection ended while draining: {e}"),
        Ok(Ok(())) => {}
        Err(_) => tracing::debug!("downstream connection closed at the end of the drain time"),
    }
}
