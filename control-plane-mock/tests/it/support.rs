//! Clients for the tests: tonic's generated xDS clients over real loopback
//! sockets, with bounded waits, and a bare HTTP/1.1 client for the admin API.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use legate::proto::envoy::config::core::v3::Node;
use legate::proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use legate::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use legate::proto::google::rpc::Status;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

pub const WAIT: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(400);

pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

pub fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.into(),
        cluster: "test".into(),
        ..Default::default()
    })
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// One ADS SotW stream.
pub struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    node: String,
}

pub async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(WAIT)
        .connect()
        .await
        .expect("connect to the mock")
}

impl Sotw {
    pub async fn connect(addr: SocketAddr, node_id: &str) -> Sotw {
        let mut client =
            AggregatedDiscoveryServiceClient::new(channel(addr).await).max_decoding_message_size(usize::MAX);
        let (tx, rx) = mpsc::channel(16);
        let rx = tokio::time::timeout(WAIT, client.stream_aggregated_resources(ReceiverStream::new(rx)))
            .await
            .expect("open the stream in time")
            .expect("open the stream")
            .into_inner();
        Sotw {
            tx,
            rx,
            node: node_id.into(),
        }
    }

    pub async fn send(&self, type_url: &str, names: &[&str], version: &str, nonce: &str, nack: Option<&str>) {
        let req = DiscoveryRequest {
            version_info: version.into(),
            node: node(&self.node),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            error_detail: nack.map(|m| Status {
                code: 3,
                message: m.into(),
                details: vec![],
            }),
            ..Default::default()
        };
        self.tx.send(req).await.expect("send a request");
    }

    pub async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("a response in time")
            .expect("no stream error")
            .expect("the stream is open")
    }

    /// Err(status) when the server ends the stream with an error.
    pub async fn recv_status(&mut self) -> tonic::Status {
        match tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("an answer in time")
        {
            Err(s) => s,
            Ok(m) => panic!("expected an error, got {m:?}"),
        }
    }

    pub async fn expect_quiet(&mut self) {
        if let Ok(m) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no response, got {m:?}");
        }
    }

    /// Sends an ACK for `resp`.
    pub async fn ack(&self, resp: &DiscoveryResponse, names: &[&str]) {
        self.send(&resp.type_url, names, &resp.version_info, &resp.nonce, None)
            .await;
    }
}

/// One ADS delta stream.
pub struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
    pub node: String,
}

impl Delta {
    pub async fn connect(addr: SocketAddr, node_id: &str) -> Delta {
        let mut client = AggregatedDiscoveryServiceClient::new(channel(addr).await);
        let (tx, rx) = mpsc::channel(16);
        let rx = tokio::time::timeout(WAIT, client.delta_aggregated_resources(ReceiverStream::new(rx)))
            .await
            .expect("open the stream in time")
            .expect("open the stream")
            .into_inner();
        Delta {
            tx,
            rx,
            node: node_id.into(),
        }
    }

    pub async fn send(&self, req: DeltaDiscoveryRequest) {
        self.tx.send(req).await.expect("send a request");
    }

    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("a response in time")
            .expect("no stream error")
            .expect("the stream is open")
    }

    pub async fn expect_quiet(&mut self) {
        if let Ok(m) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected no response, got {m:?}");
        }
    }
}

/// Names of the resources in a SotW response.
pub fn names(resp: &DiscoveryResponse) -> Vec<String> {
    use legate::proto::envoy::config::cluster::v3::Cluster;
    use legate::proto::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use legate::proto::envoy::config::listener::v3::Listener;
    let mut out: Vec<String> = resp
        .resources
        .iter()
        .map(|a| match a.type_url.as_str() {
            CDS => Cluster::decode(a.value.as_slice()).map(|c| c.name),
            EDS => ClusterLoadAssignment::decode(a.value.as_slice()).map(|c| c.cluster_name),
            LDS => Listener::decode(a.value.as_slice()).map(|c| c.name),
            other => panic!("unexpected type {other}"),
        })
        .map(|r| r.expect("a resource that decodes"))
        .collect();
    out.sort();
    out
}

pub fn cluster_timeout(resp: &DiscoveryResponse, name: &str) -> Option<i64> {
    use legate::proto::envoy::config::cluster::v3::Cluster;
    resp.resources
        .iter()
        .filter_map(|a| Cluster::decode(a.value.as_slice()).ok())
        .find(|c| c.name == name)
        .and_then(|c| c.connect_timeout)
        .map(|d| d.seconds)
}

/// A bare HTTP/1.1 request; returns (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to admin");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: mock\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read");
        let text = String::from_utf8_lossy(&buf).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("a status line");
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default();
        (status, body)
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("admin answered in time")
}

/// Waits until the mock has logged an ACK of `resp` (so a following change
/// is not raced against it: an ACK that arrives after a newer push is stale).
pub async fn acked(mock: &control_plane_mock::Handle, resp: &DiscoveryResponse) {
    let (t, n) = (resp.type_url.clone(), resp.nonce.clone());
    let got = mock
        .wait_for_event(WAIT, |e| {
            e.kind == control_plane_mock::EventKind::Ack && e.type_url == t && e.version == resp.version_info
        })
        .await;
    assert!(got.is_some(), "ACK of nonce {n} ({t}) not seen");
}
