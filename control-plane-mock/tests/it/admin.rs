//! The admin API and the file watcher, over real sockets.

use control_plane_mock::{EventKind, Server, Snapshot};
use serde_json::Value;

use super::support::*;

#[tokio::test]
async fn admin_api_reads_and_edits() {
    let mock = Server::start(loopback(), Snapshot::from_yaml("clusters: [{name: a}]").unwrap())
        .await
        .unwrap();
    let admin = mock.start_admin(loopback()).await.unwrap();
    let mut c = Sotw::connect(mock.addr(), "admin-test").await;
    c.send(CDS, &[], "", "", None).await;
    let r1 = c.recv().await;
    c.ack(&r1, &[]).await;
    acked(&mock, &r1).await;

    let (code, body) = http(admin, "GET", "/healthz", "").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(admin, "GET", "/snapshot", "").await;
    assert_eq!(code, 200);
    let snap: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(snap["clusters"][0]["name"], "a");

    // Upsert through the API is pushed.
    let (code, body) = http(admin, "PUT", "/resources/clusters/b", "{\"name\": \"b\"}").await;
    assert_eq!(code, 200, "{body}");
    let r2 = c.recv().await;
    assert_eq!(names(&r2), ["a", "b"]);
    c.ack(&r2, &[]).await;
    acked(&mock, &r2).await;
    // A name that disagrees with the path, or a bad field, is a 400 naming it.
    let (code, body) = http(admin, "PUT", "/resources/clusters/x", "{\"name\": \"y\"}").await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = http(
        admin,
        "PUT",
        "/resources/clusters/x",
        "name: x\nconect_timeout: 1s\n",
    )
    .await;
    assert_eq!(code, 400);
    assert!(body.contains("did you mean `connect_timeout`"), "{body}");
    let (code, _) = http(admin, "DELETE", "/resources/clusters/nope", "").await;
    assert_eq!(code, 404);
    let (code, _) = http(admin, "DELETE", "/resources/clusters/a", "").await;
    assert_eq!(code, 200);
    let r3 = c.recv().await;
    assert_eq!(names(&r3), ["b"]);
    c.ack(&r3, &[]).await;
    acked(&mock, &r3).await;

    // PUT /snapshot replaces everything; a broken one is rejected.
    let (code, body) = http(admin, "PUT", "/snapshot", "clusters: [{name: z}]").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(names(&c.recv().await), ["z"]);
    let (code, body) = http(admin, "PUT", "/snapshot", "clusters: [{name: z, type: NOPE}]").await;
    assert_eq!(code, 400);
    assert!(body.contains("clusters[0].type"), "{body}");

    mock.wait_for_event(WAIT, |e| e.kind == EventKind::Ack && e.version == r3.version_info)
        .await
        .expect("ACK");
    let (_, body) = http(admin, "GET", "/clients", "").await;
    let clients: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(clients[0]["node_id"], "admin-test");
    assert!(clients[0]["types"][CDS]["acked_version"].is_string(), "{body}");
    let (_, body) = http(admin, "GET", "/events?since=0", "").await;
    let events: Value = serde_json::from_str(&body).unwrap();
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for k in ["snapshot", "connect", "request", "response", "ack", "rejected"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let (code, _) = http(admin, "GET", "/nope", "").await;
    assert_eq!(code, 404);
    mock.shutdown().await;
}

#[tokio::test]
async fn file_edits_are_pushed_and_broken_files_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snapshot.yaml");
    std::fs::write(&path, "clusters: [{name: a}]\n").unwrap();
    let mock = Server::start(loopback(), Snapshot::from_file(&path).unwrap())
        .await
        .unwrap();
    mock.watch_file(&path).unwrap();
    let mut c = Sotw::connect(mock.addr(), "file").await;
    c.send(CDS, &[], "", "", None).await;
    let r1 = c.recv().await;
    c.ack(&r1, &[]).await;
    acked(&mock, &r1).await;

    // A good edit (written as editors do: a new file renamed over) is pushed.
    let tmp = dir.path().join(".snapshot.yaml.tmp");
    std::fs::write(&tmp, "clusters: [{name: a}, {name: b}]\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let r2 = c.recv().await;
    assert_eq!(names(&r2), ["a", "b"]);
    c.ack(&r2, &[]).await;
    acked(&mock, &r2).await;

    // A broken edit is rejected with file:line and field; nothing is pushed.
    std::fs::write(&path, "clusters:\n- name: a\n  connect_timeout: soon\n").unwrap();
    let rejected = mock
        .wait_for_event(WAIT, |e| e.kind == EventKind::Rejected)
        .await
        .expect("the broken file is rejected");
    assert!(rejected.detail.contains("snapshot.yaml:3"), "{}", rejected.detail);
    assert!(
        rejected.detail.contains("clusters[0].connect_timeout"),
        "{}",
        rejected.detail
    );
    c.expect_quiet().await;
    assert_eq!(mock.snapshot().default.len(), 2);

    // A warning (route to a missing cluster) still publishes, and says so.
    std::fs::write(
        &path,
        "clusters: [{name: a, type: EDS, eds_cluster_config: {eds_config: {ads: {}}}}]\n",
    )
    .unwrap();
    let warning = mock
        .wait_for_event(WAIT, |e| e.kind == EventKind::Warning)
        .await
        .expect("a warning");
    assert!(
        warning.detail.contains("no ClusterLoadAssignment `a`"),
        "{}",
        warning.detail
    );
    assert_eq!(names(&c.recv().await), ["a"]);
    mock.shutdown().await;
}
