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
