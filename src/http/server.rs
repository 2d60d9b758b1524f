//! Serving one downstream connection with the HTTP connection manager's
//! codec settings (AUTO: HTTP/1.1 and h2c prior knowledge on one port).

use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::proxy::ConnInfo;
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
/// on the next response; HTTP/2: GOAWAY). Both codecs are legate's own:
/// `h1_server` (which hands over a connection that opens with the HTTP/2
/// preface, codec AUTO) and `h2_server`.
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
    super::h2_server::serve(stream, preface, conn, drain).await;
}
