//! xDS through the real binary: file-based LDS/CDS/RDS (path_config_source)
//! and warming. gRPC control planes are in xds_grpc.rs.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::support::client::get;
use super::support::{origin, Dir, Legate};

/// Polls `f` every 50 ms until it returns Some, for at most `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bound address of listener `name`, from the admin's `/listeners`.
pub async fn listener_addr(admin: SocketAddr, name: &str) -> SocketAddr {
    eventually(10, &format!("listener {name} in /listeners"), || async {
        let r = get(admin, "/listeners?format=json", &[]).await;
        let v: serde_json::Value = serde_json::from_str(&r.body).ok()?;
        v["listener_statuses"].as_array()?.iter().find_map(|l| {
            if l["name"] != name {
                return None;
            }
            let sa = &l["local_address"]["socket_address"];
            format!("{}:{}", sa["address"].as_str()?, sa["port_value"].as_u64()?)
                .parse()
                .ok()
        })
    })
    .await
}

/// A stat's value from `/stats?filter=^NAME$`.
pub async fn stat(admin: SocketAddr, name: &str) -> Option<i64> {
    let r = get(admin, &format!("/stats?filter=^{}$", regex_escape(name)), &[]).await;
    r.body.lines().find_map(|l| {
        l.strip_prefix(&format!("{name}: "))
            .and_then(|v| v.trim().parse().ok())
    })
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

/// Which origin answered `GET path` on `addr` (None: not a 200).
pub async fn origin_of(addr: SocketAddr, path: &str) -> Option<String> {
    let r = get(addr, path, &[]).await;
    (r.status == 200).then(|| r.json()["origin"].as_str().unwrap_or("").to_string())
}

/// Writes `text` to `path` the way careful tools do: a temp file renamed over it.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

fn cds(version: &str, origin: SocketAddr) -> String {
    format!(
        r#"version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: svc
  connect_timeout: 1s
  load_assignment:
    cluster_name: svc
    endpoints:
    - lb_endpoints:
      - endpoint:
          address:
            socket_address: {{address: {ip}, port_value: {port}}}
"#,
        ip = origin.ip(),
        port = origin.port()
    )
}

fn listener(route_spec: &str) -> String {
    format!(
        r#"- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: listener_0
  address:
    socket_address: {{address: 127.0.0.1, port_value: 0}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: ingress_http
        http_filters:
        - name: envoy.filters.http.router
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
{route_spec}"#
    )
}

const INLINE_ROUTES: &str = r#"        route_config:
          name: local_route
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - match: {prefix: "/"}
              route: {cluster: svc}
"#;

fn bootstrap(dir: &Dir) -> String {
    format!(
        r#"node: {{id: test-node, cluster: test}}
dynamic_resources:
  cds_config:
    path_config_source: {{path: {cds}}}
  lds_config:
    path_config_source: {{path: {lds}}}
admin:
  address:
    socket_address: {{address: 127.0.0.1, port_value: 0}}
"#,
        cds = dir.0.path().join("cds.yaml").display(),
        lds = dir.0.path().join("lds.yaml").display()
    )
}

#[tokio::test]
async fn file_based_lds_and_cds_apply_hot_and_a_broken_file_changes_nothing() {
    let a = origin::start("a").await;
    let b = origin::start("b").await;
    let dir = Dir::new();
    dir.write("cds.yaml", &cds("1", a));
    dir.write(
        "lds.yaml",
        &format!("version_info: \"1\"\nresources:\n{}", listener(INLINE_ROUTES)),
    );
    let legate = Legate::start(&bootstrap(&dir), &[]);
    let admin = legate.admin.expect("admin");
    let addr = listener_addr(admin, "listener_0").await;
    assert_eq!(origin_of(addr, "/").await.as_deref(), Some("a"));
    assert_eq!(get(admin, "/ready", &[]).await.status, 200);

    // A new cluster version is picked up without a restart.
    replace(&dir.0.path().join("cds.yaml"), &cds("2", b));
    eventually(5, "cluster svc to point at b", || async {
        (origin_of(addr, "/").await.as_deref() == Some("b")).then_some(())
    })
    .await;
    let dump = get(admin, "/config_dump?resource=dynamic_active_clusters", &[])
        .await
        .json();
    let active = &dump["configs"][0];
    assert_eq!(active["version_info"], "2", "{dump}");
    assert_eq!(active["cluster"]["name"], "svc");

    // A broken file is rejected with a precise message; b keeps serving.
    let rejected_before = stat(admin, "cluster_manager.cds.update_rejected")
        .await
        .unwrap_or(0);
    replace(
        &dir.0.path().join("cds.yaml"),
        &cds("3", a).replace("connect_timeout: 1s", "connect_timeout: -1s"),
    );
    eventually(5, "the rejection to be counted", || async {
        (stat(admin, "cluster_manager.cds.update_rejected")
            .await
            .unwrap_or(0)
            > rejected_before)
            .then_some(())
    })
    .await;
    for _ in 0..5 {
        assert_eq!(origin_of(addr, "/").await.as_deref(), Some("b"));
    }
    let dump = get(admin, "/config_dump", &[]).await.body;
    assert!(
        dump.contains("\"version_info\": \"2\""),
        "the last good version stays: {dump}"
    );

    // Removing the cluster (an empty SotW set) makes the route answer 503 NC.
    replace(
        &dir.0.path().join("cds.yaml"),
        "version_info: \"4\"\nresources: []\n",
    );
    eventually(5, "the cluster removal", || async {
        (get(addr, "/", &[]).await.status == 503).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_listener_warms_until_its_routes_arrive_and_the_server_waits_for_it() {
    let a = origin::start("a").await;
    let dir = Dir::new();
    let rds_path = dir.0.path().join("rds.yaml");
    dir.write("cds.yaml", &cds("1", a));
    let rds_spec = format!(
        "        rds:\n          route_config_name: local_route\n          config_source:\n            initial_fetch_timeout: 0s\n            path_config_source: {{path: {}}}\n",
        rds_path.display()
    );
    dir.write(
        "lds.yaml",
        &format!("version_info: \"1\"\nresources:\n{}", listener(&rds_spec)),
    );
    let legate = Legate::start(&bootstrap(&dir), &[]);
    let admin = legate.admin.expect("admin");

    // No routes yet: the listener is warming and the server is not LIVE.
    eventually(5, "listener_0 warming", || async {
        let dump = get(admin, "/config_dump?resource=dynamic_listeners", &[])
            .await
            .body;
        dump.contains("warming_state").then_some(())
    })
    .await;
    let ready = get(admin, "/ready", &[]).await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("INITIALIZING"), "{}", ready.body);
    let listeners = get(admin, "/listeners", &[]).await.body;
    assert!(
        !listeners.contains("listener_0"),
        "a warming listener is not bound yet: {listeners}"
    );

    // The routes arrive: the listener starts and the server goes LIVE.
    replace(
        &rds_path,
        r#"version_info: "r1"
resources:
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: local_route
  virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
    - match: {prefix: "/"}
      route: {cluster: svc}
"#,
    );
    let addr = listener_addr(admin, "listener_0").await;
    assert_eq!(origin_of(addr, "/").await.as_deref(), Some("a"));
    assert_eq!(get(admin, "/ready", &[]).await.status, 200);
    let dump = get(admin, "/config_dump?resource=dynamic_route_configs", &[])
        .await
        .json();
    assert_eq!(dump["configs"][0]["version_info"], "r1", "{dump}");
}

/// An HTTP/1.1 keep-alive connection sends requests one by one; returns
/// (status, origin, whether the response said `connection: close`), or
/// None when the server closed the connection instead of answering.
async fn keepalive_get(stream: &mut tokio::net::TcpStream) -> Option<(u16, String, bool)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .is_err()
    {
        return None;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("response in time")
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end].to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = text[9..12].parse().unwrap_or(0);
                let origin = head
                    .lines()
                    .find_map(|l| l.strip_prefix("x-origin:"))
                    .unwrap_or("")
                    .trim()
                    .to_string();
                return Some((status, origin, head.contains("connection: close")));
            }
        }
    }
}

#[tokio::test]
async fn a_changed_listener_keeps_its_socket_and_drains_old_connections_and_a_removed_one_closes() {
    let a = origin::start("a").await;
    let b = origin::start("b").await;
    let dir = Dir::new();
    let two = format!(
        "{}{}",
        cds("1", a),
        cds("1", b)
            .replace("version_info: \"1\"\nresources:\n", "")
            .replace("name: svc", "name: other")
            .replace("cluster_name: svc", "cluster_name: other")
    );
    dir.write("cds.yaml", &two);
    dir.write(
        "lds.yaml",
        &format!("version_info: \"1\"\nresources:\n{}", listener(INLINE_ROUTES)),
    );
    let legate = Legate::start(&bootstrap(&dir), &[]);
    let admin = legate.admin.expect("admin");
    let addr = listener_addr(admin, "listener_0").await;
    let mut old = tokio::net::TcpStream::connect(addr).await.expect("connect");
    assert_eq!(keepalive_get(&mut old).await, Some((200, "a".into(), false)));

    // Same name and address, other routes: the socket stays (same port),
    // new connections get the new routes, the old connection is drained
    // (its next response says `connection: close`).
    let lds = dir.0.path().join("lds.yaml");
    let port = addr.port();
    replace(
        &lds,
        &format!(
            "version_info: \"2\"\nresources:\n{}",
            listener(&INLINE_ROUTES.replace("cluster: svc", "cluster: other"))
        )
        .replace("port_value: 0", &format!("port_value: {port}")),
    );
    eventually(5, "the new routes on a new connection", || async {
        (origin_of(addr, "/").await.as_deref() == Some("b")).then_some(())
    })
    .await;
    assert_eq!(listener_addr(admin, "listener_0").await, addr);
    // Drained: an idle old connection is closed (clients retry on a fresh
    // one), or a request already on it is answered with `connection: close`.
    match keepalive_get(&mut old).await {
        None => {}
        Some((status, _, closing)) => {
            assert_eq!(status, 200);
            assert!(closing, "the old connection must be drained, not kept");
        }
    }

    // Removed: the port stops accepting.
    replace(&lds, "version_info: \"3\"\nresources: []\n");
    eventually(5, "the listener's port to close", || async {
        tokio::net::TcpStream::connect(addr).await.is_err().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_removed_listeners_requests_in_flight_get_drain_time_then_the_connection_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = origin::start("a").await;
    let dir = Dir::new();
    dir.write("cds.yaml", &cds("1", a));
    dir.write(
        "lds.yaml",
        &format!("version_info: \"1\"\nresources:\n{}", listener(INLINE_ROUTES)),
    );
    let legate = Legate::start(&bootstrap(&dir), &["--drain-time-s", "1"]);
    let admin = legate.admin.expect("admin");
    let addr = listener_addr(admin, "listener_0").await;
    // A request the origin answers only after 20 s.
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /?sleep_ms=20000 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    replace(
        &dir.0.path().join("lds.yaml"),
        "version_info: \"2\"\nresources: []\n",
    );
    // Removed with a 1 s drain time: the connection closes long before the
    // origin would answer, without a response.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the draining connection was not closed within 10 s");
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
}
