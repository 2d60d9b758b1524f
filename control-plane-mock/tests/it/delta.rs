//! Delta over ADS with tonic's generated client.

use std::collections::HashMap;

use control_plane_mock::{EventKind, ResourceType, Server, Snapshot};
use legate::proto::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use legate::proto::google::rpc::Status;

use super::support::*;

fn req(node_id: &str, type_url: &str, sub: &[&str], unsub: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: node(node_id),
        type_url: type_url.into(),
        resource_names_subscribe: sub.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: unsub.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

/// Delta ACK events carry the system version; match on the stream's
/// latest response instead: wait for any ACK after the response with `nonce`.
async fn delta_acked(mock: &control_plane_mock::Handle, nonce: &str) {
    let sent = mock
        .events()
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::Response && e.nonce == nonce)
        .map(|e| e.seq)
        .expect("the response was logged");
    let got = mock
        .wait_for_event(WAIT, |e| e.kind == EventKind::Ack && e.seq > sent)
        .await;
    assert!(got.is_some(), "ACK of nonce {nonce} not seen");
}

fn sent(r: &legate::proto::envoy::service::discovery::v3::DeltaDiscoveryResponse) -> Vec<String> {
    let mut v: Vec<String> = r.resources.iter().map(|r| r.name.clone()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn wildcard_updates_removals_and_nack() {
    let mock = Server::start(
        loopback(),
        Snapshot::from_yaml("clusters: [{name: a}, {name: b}]").unwrap(),
    )
    .await
    .unwrap();
    let mut c = Delta::connect(mock.addr(), "d1").await;
    c.send(req("d1", CDS, &[], &[], "")).await;
    let r1 = c.recv().await;
    assert_eq!(sent(&r1), ["a", "b"]);
    assert!(r1
        .resources
        .iter()
        .all(|r| !r.version.is_empty() && r.resource.is_some()));
    c.send(req("d1", CDS, &[], &[], &r1.nonce)).await;
    delta_acked(&mock, &r1.nonce).await;

    // Only the difference: `a` changed, `b` removed.
    mock.upsert(None, ResourceType::Cluster, "{name: a, connect_timeout: 4s}")
        .unwrap();
    let r2 = c.recv().await;
    assert_eq!(sent(&r2), ["a"]);
    assert!(r2.removed_resources.is_empty());
    c.send(req("d1", CDS, &[], &[], &r2.nonce)).await;
    delta_acked(&mock, &r2.nonce).await;
    mock.remove(None, ResourceType::Cluster, "b").unwrap();
    let r3 = c.recv().await;
    assert!(r3.resources.is_empty());
    assert_eq!(r3.removed_resources, ["b"]);

    // NACK: logged, nothing re-sent.
    let mut nack = req("d1", CDS, &[], &[], &r3.nonce);
    nack.error_detail = Some(Status {
        code: 13,
        message: "rejected".into(),
        details: vec![],
    });
    c.send(nack).await;
    assert!(mock
        .wait_for_event(WAIT, |e| e.kind == EventKind::Nack)
        .await
        .is_some());
    c.expect_quiet().await;
    let clients = mock.clients();
    assert_eq!(clients[0].mode, "delta");
    assert_eq!(clients[0].types[CDS].last_nack.as_ref().map(|n| n.code), Some(13));
    mock.shutdown().await;
}

#[tokio::test]
async fn named_subscriptions_and_initial_resource_versions() {
    let mock = Server::start(
        loopback(),
        Snapshot::from_yaml("endpoints: [{cluster_name: a}, {cluster_name: b}, {cluster_name: c}]").unwrap(),
    )
    .await
    .unwrap();
    // Learn `a`'s version from a first stream, as a reconnecting client would.
    let mut first = Delta::connect(mock.addr(), "d2").await;
    first.send(req("d2", EDS, &["a"], &[], "")).await;
    let r = first.recv().await;
    let version_a = r.resources[0].version.clone();
    drop(first);

    let mut c = Delta::connect(mock.addr(), "d2").await;
    let mut hello = req("d2", EDS, &["a", "b", "missing"], &[], "");
    hello.initial_resource_versions = HashMap::from([("a".to_string(), version_a)]);
    c.send(hello).await;
    let r1 = c.recv().await;
    // `a` is already held at its version; `missing` does not exist.
    assert_eq!(sent(&r1), ["b"]);
    assert_eq!(r1.removed_resources, ["missing"]);
    c.send(req("d2", EDS, &[], &[], &r1.nonce)).await;
    delta_acked(&mock, &r1.nonce).await;
    // Unsubscribed names are not pushed; subscribed ones are.
    c.send(req("d2", EDS, &[], &["b"], "")).await;
    mock.wait_for_event(WAIT, |e| e.kind == EventKind::Request && e.resources == ["-b"])
        .await
        .expect("the unsubscription is seen");
    mock.upsert(None, ResourceType::Endpoint, "{cluster_name: b, endpoints: [{}]}")
        .unwrap();
    c.expect_quiet().await;
    mock.upsert(None, ResourceType::Endpoint, "{cluster_name: missing}")
        .unwrap();
    let r2 = c.recv().await;
    assert_eq!(sent(&r2), ["missing"]);
    // Only what was subscribed: `c` never shows up.
    assert!(mock
        .events()
        .iter()
        .filter(|e| e.kind == EventKind::Response)
        .all(|e| !e.resources.contains(&"c".to_string())));
    mock.shutdown().await;
}
