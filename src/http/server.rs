//! Serving one downstream connection with the HTTP connection manager's
//! codec settings (AUTO: HTTP/1.1 and h2c prior knowledge on one port).

use std::sync::Arc;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::body::DownstreamBody;
use super::h1_server::FIRST_REQUEST_GRACE;
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

/// Serves `stream` until the client closes it or a drain is requested, in
/// which case in-flight requests finish first (HTTP/1: `connection: close`
/// on the next response; HTTP/2: GOAWAY). HTTP/1.1 is served by our codec
/// (`h1_server`), HTTP/2 by hyper.
pub async fn serve_connection(stream: TcpStream, conn: Arc<ConnInfo>, drain: watch::Receiver<bool>) {
    let _stats = ConnectionStats::open(&conn);
    let _ = stream.set_nodelay(true);
    let (stream, preface) = match conn.listener.hcm.codec {
        Codec::Http2 => (stream, Bytes::new()),
        codec => {
            let sniff = codec == Codec::Auto;
            match super::h1_server::serve(stream, conn.clone(), drain.clone(), sniff).await {
                Some(handoff) => (handoff.stream, handoff.read),
                None => return,
            }
        }
    };
    serve_h2(
        Prefixed {
            read: preface,
            io: stream,
        },
        conn,
        drain,
    )
    .await;
}

/// An HTTP/2 connection, served by hyper.
async fn serve_h2(io: Prefixed, conn: Arc<ConnInfo>, mut drain: watch::Receiver<bool>) {
    let hcm = conn.listener.hcm.clone();
    let io = TokioIo::new(io);
    let info = conn.clone();
    // Boxed: hyper runs each stream as a task holding this future, and a
    // task's future is copied in when spawned and overwritten when done
    // (memmove was the largest libc cost on h2c); boxed, only a pointer is.
    let svc = service_fn(move |req: Request<Incoming>| {
        Box::into_pin(super::boxed_in_place(|| {
            handle(conn.clone(), req.map(DownstreamBody::H2))
        }))
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(hcm.max_request_headers_kb.saturating_mul(1024))
        .max_concurrent_streams(hcm.h2_max_concurrent_streams)
        .adaptive_window(true);
    let connection = builder.serve_connection(io, svc);
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
            // After `max_requests_per_connection`: GOAWAY, then the open
            // streams finish (bounded like any drain).
            connection.as_mut().graceful_shutdown();
            finish_draining(connection, &info).await;
            return;
        }
    }
    // A connection accepted just before the drain has a request on its way:
    // closing it before that request is read would fail it. Give it a moment
    // to arrive.
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
}

/// A socket whose first bytes were already read (the HTTP/2 preface the
/// HTTP/1.1 codec looked at): they are read again first.
struct Prefixed {
    read: Bytes,
    io: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
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
        true
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
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
