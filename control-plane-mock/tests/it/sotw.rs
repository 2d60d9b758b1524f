//! SotW over ADS and a per-type service, with tonic's generated clients.

use control_plane_mock::{EventKind, ResourceType, Server, Snapshot};
use legate::proto::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use legate::proto::envoy::service::discovery::v3::DiscoveryRequest;
use tokio_stream::wrappers::ReceiverStream;

use super::support::*;

const TWO: &str = "
clusters:
- {name: a, connect_timeout: 1s}
- {name: b, connect_timeout: 1s}
endpoints:
- {cluster_name: a}
- {cluster_name: b}
";

#[tokio::test]
async fn wildcard_ack_update_push_and_removal() {
    let mock = Server::start(loopback(), Snapshot::from_yaml(TWO).unwrap())
        .await
        .unwrap();
    let mut c = Sotw::connect(mock.addr(), "n1").await;
    c.send(CDS, &[], "", "", None).await;
    let r1 = c.recv().await;
    assert_eq!(names(&r1), ["a", "b"]);
    assert_eq!(r1.type_url, CDS);
    c.ack(&r1, &[]).await;
    acked(&mock, &r1).await;
    c.expect_quiet().await;

    // An upsert is pushed at once, with the full state and a new version.
    mock.upsert(None, ResourceType::Cluster, "{name: c}").unwrap();
    let r2 = c.recv().await;
    assert_eq!(names(&r2), ["a", "b", "c"]);
    assert_ne!(r2.version_info, r1.version_info);
    assert_ne!(r2.nonce, r1.nonce);
    c.ack(&r2, &[]).await;
    acked(&mock, &r2).await;

    // Removal in SotW: the next full state leaves it out.
    mock.remove(None, ResourceType::Cluster, "b").unwrap();
    let r3 = c.recv().await;
    assert_eq!(names(&r3), ["a", "c"]);
    c.ack(&r3, &[]).await;
    let acked = mock
        .wait_for_event(WAIT, |e| e.kind == EventKind::Ack && e.version == r3.version_info)
        .await;
    assert!(acked.is_some(), "the ACK of {} is logged", r3.version_info);
    let clients = mock.clients();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].node_id, "n1");
    assert_eq!(clients[0].service, "ADS");
    assert_eq!(
        clients[0].types[CDS].acked_version.as_deref(),
        Some(r3.version_info.as_str())
    );
    assert_eq!(clients[0].types[CDS].subscribed, ["*"]);
    mock.shutdown().await;
}

#[tokio::test]
async fn nack_is_recorded_and_not_resent_until_the_snapshot_changes() {
    let mock = Server::start(loopback(), Snapshot::from_yaml(TWO).unwrap())
        .await
        .unwrap();
    let mut c = Sotw::connect(mock.addr(), "n1").await;
    c.send(CDS, &[], "", "", None).await;
    let r1 = c.recv().await;
    c.ack(&r1, &[]).await;
    acked(&mock, &r1).await;
    mock.upsert(None, ResourceType::Cluster, "{name: a, connect_timeout: 7s}")
        .unwrap();
    let r2 = c.recv().await;
    assert_eq!(cluster_timeout(&r2, "a"), Some(7));
    // NACK: the previous version, the new nonce, an error_detail.
    c.send(
        CDS,
        &[],
        &r1.version_info,
        &r2.nonce,
        Some("connect_timeout too long"),
    )
    .await;
    let nack = mock
        .wait_for_event(WAIT, |e| e.kind == EventKind::Nack)
        .await
        .expect("NACK logged");
    assert_eq!(nack.version, r2.version_info);
    assert!(
        nack.detail.contains("connect_timeout too long"),
        "{}",
        nack.detail
    );
    c.expect_quiet().await;
    let status = &mock.clients()[0].types[CDS];
    assert_eq!(status.acked_version.as_deref(), Some(r1.version_info.as_str()));
    let last = status.last_nack.as_ref().expect("last NACK in /clients");
    assert_eq!((last.version.as_str(), last.code), (r2.version_info.as_str(), 3));
    // A fix is pushed.
    mock.upsert(None, ResourceType::Cluster, "{name: a, connect_timeout: 2s}")
        .unwrap();
    let r3 = c.recv().await;
    assert_eq!(cluster_timeout(&r3, "a"), Some(2));
    mock.shutdown().await;
}

#[tokio::test]
async fn named_subscriptions_get_only_what_they_asked_for() {
    let mock = Server::start(loopback(), Snapshot::from_yaml(TWO).unwrap())
        .await
        .unwrap();
    let mut c = Sotw::connect(mock.addr(), "n1").await;
    c.send(EDS, &["a"], "", "", None).await;
    let r1 = c.recv().await;
    assert_eq!(names(&r1), ["a"]);
    c.ack(&r1, &["a"]).await;
    acked(&mock, &r1).await;
    // A change to `b`, which nobody asked for, is not sent.
    mock.upsert(None, ResourceType::Endpoint, "{cluster_name: b, endpoints: [{}]}")
        .unwrap();
    c.expect_quiet().await;
    // Asking for more is answered although nothing changed.
    c.send(EDS, &["a", "b"], &r1.version_info, &r1.nonce, None).await;
    let r2 = c.recv().await;
    assert_eq!(names(&r2), ["a", "b"]);
    // A stale nonce is ignored.
    c.send(EDS, &["a"], &r1.version_info, &r1.nonce, None).await;
    assert!(mock
        .wait_for_event(WAIT, |e| e.kind == EventKind::Stale)
        .await
        .is_some());
    c.expect_quiet().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn per_node_overrides() {
    let yaml = format!(
        "{TWO}nodes:\n  special:\n    clusters: [{{name: a, connect_timeout: 9s}}, {{name: only-special}}]\n"
    );
    let mock = Server::start(loopback(), Snapshot::from_yaml(&yaml).unwrap())
        .await
        .unwrap();
    let mut plain = Sotw::connect(mock.addr(), "plain").await;
    let mut special = Sotw::connect(mock.addr(), "special").await;
    plain.send(CDS, &[], "", "", None).await;
    special.send(CDS, &[], "", "", None).await;
    let p = plain.recv().await;
    let s = special.recv().await;
    assert_eq!(names(&p), ["a", "b"]);
    assert_eq!(names(&s), ["a", "b", "only-special"]);
    assert_eq!(cluster_timeout(&p, "a"), Some(1));
    assert_eq!(cluster_timeout(&s, "a"), Some(9));
    plain.ack(&p, &[]).await;
    special.ack(&s, &[]).await;
    acked(&mock, &p).await;
    acked(&mock, &s).await;
    // An override for one node reaches that node only.
    mock.upsert(
        Some("plain"),
        ResourceType::Cluster,
        "{name: b, connect_timeout: 5s}",
    )
    .unwrap();
    let p2 = plain.recv().await;
    assert_eq!(cluster_timeout(&p2, "b"), Some(5));
    special.expect_quiet().await;
    mock.shutdown().await;
}

#[tokio::test]
async fn per_type_service_and_type_url_rules() {
    let mock = Server::start(loopback(), Snapshot::from_yaml(TWO).unwrap())
        .await
        .unwrap();
    // CDS service: the type URL may be left out.
    let mut client = ClusterDiscoveryServiceClient::new(channel(mock.addr()).await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(DiscoveryRequest {
        node: node("per-type"),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = tokio::time::timeout(WAIT, client.stream_clusters(ReceiverStream::new(rx)))
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    let r = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(names(&r), ["a", "b"]);
    assert_eq!(r.type_url, CDS);
    // ...but not a different one.
    tx.send(DiscoveryRequest {
        type_url: LDS.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // ADS without a type URL is an error.
    let mut c = Sotw::connect(mock.addr(), "n").await;
    c.send("", &[], "", "", None).await;
    let status = c.recv_status().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("type URL is required"),
        "{}",
        status.message()
    );
    mock.shutdown().await;
}

#[tokio::test]
async fn a_changed_cluster_re_pushes_its_endpoints() {
    let yaml = "clusters: [{name: a, type: EDS, eds_cluster_config: {eds_config: {ads: {}}}}]\nendpoints: [{cluster_name: a}]\n";
    let mock = Server::start(loopback(), Snapshot::from_yaml(yaml).unwrap())
        .await
        .unwrap();
    let mut c = Sotw::connect(mock.addr(), "n1").await;
    c.send(CDS, &[], "", "", None).await;
    let cds = c.recv().await;
    c.ack(&cds, &[]).await;
    c.send(EDS, &["a"], "", "", None).await;
    let eds = c.recv().await;
    c.ack(&eds, &["a"]).await;
    acked(&mock, &eds).await;
    // Envoy re-warms an updated cluster and waits for its endpoints: both
    // come, clusters first.
    mock.upsert(
        None,
        ResourceType::Cluster,
        "{name: a, type: EDS, connect_timeout: 3s, eds_cluster_config: {eds_config: {ads: {}}}}",
    )
    .unwrap();
    let first = c.recv().await;
    let second = c.recv().await;
    assert_eq!((first.type_url.as_str(), second.type_url.as_str()), (CDS, EDS));
    assert_eq!(names(&second), ["a"]);
    mock.shutdown().await;
}
