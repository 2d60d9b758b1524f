//! legate against an xDS server nobody on this team wrote: go-control-plane
//! (Debian's package, built by tests/xds-servers/go-control-plane/build.sh)
//! behind a small Go main of ours. SotW and delta ADS, an update pushed
//! by the server, and a NACK.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::support::client::send;
use super::support::{origin, Dir, Legate};
use super::xds::{eventually, listener_addr, origin_of};
use super::xds_grpc::ads_bootstrap;

/// The server binary, built on first use (the build is idempotent and
/// holds a lock, so parallel tests share one build).
fn gocp_bin() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = root.join("target/xds-servers/go-control-plane/bin/gocp-xds-server");
    if !bin.exists() {
        let status = Command::new(root.join("tests/xds-servers/go-control-plane/build.sh"))
            .stdout(Stdio::null())
            .status()
            .expect("run build.sh");
        assert!(
            status.success(),
            "tests/xds-servers/go-control-plane/build.sh failed: {status}"
        );
    }
    assert!(bin.exists(), "build.sh did not produce {}", bin.display());
    bin
}

struct Gocp {
    child: Child,
    grpc: SocketAddr,
    admin: SocketAddr,
    snapshot: PathBuf,
    _dir: Dir,
}

impl Gocp {
    fn start(node: &str, snapshot: &serde_json::Value) -> Gocp {
        let dir = Dir::new();
        let snap = dir.write("snapshot.json", &snapshot.to_string());
        let ready = dir.0.path().join("ready");
        // Its log (every request and response) goes to a file in the test's
        // directory: a NACK loop would flood the test output.
        let log = std::fs::File::create(dir.0.path().join("gocp.log")).expect("log file");
        let child = Command::new(gocp_bin())
            .args([
                "-node-id",
                node,
                "-listen",
                "127.0.0.1:0",
                "-admin",
                "127.0.0.1:0",
                "-poll",
                "0",
            ])
            .arg("-snapshot")
            .arg(&snap)
            .arg("-ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start gocp-xds-server");
        let deadline = Instant::now() + Duration::from_secs(15);
        let text = loop {
            if let Ok(t) = std::fs::read_to_string(&ready) {
                if t.contains("grpc=") {
                    break t;
                }
            }
            assert!(Instant::now() < deadline, "gocp-xds-server did not get ready");
            std::thread::sleep(Duration::from_millis(20));
        };
        let field = |k: &str| -> SocketAddr {
            text.split_whitespace()
                .find_map(|f| f.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {k} in the ready file: {text}"))
        };
        Gocp {
            child,
            grpc: field("grpc="),
            admin: field("admin="),
            snapshot: snap,
            _dir: dir,
        }
    }

    /// Replaces the snapshot and has the server load it (200) or refuse it.
    async fn reload(&self, snapshot: &serde_json::Value) -> u16 {
        let tmp = self.snapshot.with_extension("tmp");
        std::fs::write(&tmp, snapshot.to_string()).expect("write");
        std::fs::rename(&tmp, &self.snapshot).expect("rename");
        send(self.admin, "POST", "/reload", &[], Bytes::new(), false)
            .await
            .status
    }

    async fn events(&self) -> Vec<serde_json::Value> {
        let r = send(self.admin, "GET", "/events", &[], Bytes::new(), false).await;
        serde_json::from_str(&r.body).unwrap_or_default()
    }
}

impl Drop for Gocp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn snapshot(version: &str, endpoint: &str) -> serde_json::Value {
    let (ip, port) = endpoint.rsplit_once(':').expect("ip:port");
    let port: u16 = port.parse().unwrap_or(0);
    serde_json::json!({
        "version": version,
        "resources": [
            {
                "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                "name": "svc", "type": "EDS", "connect_timeout": "1s",
                "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}}
            },
            {
                "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
                "cluster_name": "svc",
                "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address":
                    {"address": ip, "port_value": port}}}}]}]
            },
            {
                "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                "name": "front",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress_http",
                        "rds": {"route_config_name": "local_route",
                                "config_source": {"ads": {}, "resource_api_version": "V3"}},
                        "http_filters": [{"name": "envoy.filters.http.router", "typed_config":
                            {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
                    }
                }]}]
            },
            {
                "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                "name": "local_route",
                "virtual_hosts": [{"name": "all", "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "svc"}}]}]
            }
        ]
    })
}

#[tokio::test]
async fn go_control_plane_serves_legate_over_sotw_and_delta_ads() {
    for api_type in ["GRPC", "DELTA_GRPC"] {
        let a = origin::start("a").await;
        let b = origin::start("b").await;
        let cp = Gocp::start("test-node", &snapshot("v1", &a.to_string()));
        let legate = Legate::start(&ads_bootstrap(cp.grpc, api_type, ""), &[]);
        let admin = legate.admin.expect("admin");
        let addr = listener_addr(admin, "front").await;
        assert_eq!(origin_of(addr, "/").await.as_deref(), Some("a"), "{api_type}");

        // go-control-plane pushes a new snapshot; legate follows and ACKs.
        assert_eq!(cp.reload(&snapshot("v2", &b.to_string())).await, 200);
        eventually(10, "the v2 endpoints", || async {
            (origin_of(addr, "/").await.as_deref() == Some("b")).then_some(())
        })
        .await;
        let events = cp.events().await;
        let acks = events
            .iter()
            .filter(|e| e["kind"].as_str().is_some_and(|k| k.starts_with("ACK")) && e["node"] == "test-node")
            .count();
        assert!(
            acks >= 4,
            "{api_type}: expected ACKs of every type, got {acks}: {events:?}"
        );

        // A hostname endpoint: legate NACKs it and keeps serving v2.
        let bad = snapshot("v3", "example.invalid:80");
        assert_eq!(cp.reload(&bad).await, 200);
        let nack = eventually(10, "legate's NACK in go-control-plane's log", || async {
            cp.events().await.into_iter().find(|e| e["kind"] == "NACK")
        })
        .await;
        assert!(
            nack["error_detail"].to_string().contains("example.invalid"),
            "{api_type}: {nack}"
        );
        for _ in 0..3 {
            assert_eq!(origin_of(addr, "/").await.as_deref(), Some("b"), "{api_type}");
        }
        assert_eq!(cp.reload(&snapshot("v4", &a.to_string())).await, 200);
        eventually(10, "the v4 endpoints after the NACK", || async {
            (origin_of(addr, "/").await.as_deref() == Some("a")).then_some(())
        })
        .await;
    }
}
