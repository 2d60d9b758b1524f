//! xDS scale benchmark (issue "xDS client", section Scale): N EDS clusters
//! with 2 endpoints each, N ClusterLoadAssignments, one listener and a route
//! configuration with N virtual hosts, served by control-plane-mock over
//! ADS to the real legate binary. Prints:
//! - the time from legate's start to serving the full set (LIVE), and the
//!   time legate itself spent applying it (its per-update log lines);
//! - the time to apply one changed ClusterLoadAssignment, SotW and delta;
//! - RSS with the full set against RSS with an empty config, per cluster.
//!
//! Run: `bench/xds-scale` (or `cargo run --release --example xds_scale -- N`),
//! with LEGATE_BIN pointing at a release build.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use control_plane_mock::{Resource, ResourceType as T, Server, Snapshot};
use legate::proto::envoy::config::cluster::v3 as cluster;
use legate::proto::envoy::config::core::v3 as core;
use legate::proto::envoy::config::endpoint::v3 as endpoint;
use legate::proto::envoy::config::listener::v3 as listener;
use legate::proto::envoy::config::route::v3 as route;
use legate::proto::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use prost::Message;

fn any<M: Message>(type_url: &str, m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url.into(),
        value: m.encode_to_vec(),
    }
}

fn ads() -> core::ConfigSource {
    core::ConfigSource {
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource::default(),
        )),
        resource_api_version: core::ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn socket(ip: &str, port: u32) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: ip.into(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

fn cla(name: &str, ports: [u32; 2]) -> endpoint::ClusterLoadAssignment {
    endpoint::ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![endpoint::LocalityLbEndpoints {
            lb_endpoints: ports
                .iter()
                .map(|p| endpoint::LbEndpoint {
                    host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                        endpoint::Endpoint {
                            address: Some(socket("127.0.0.1", *p)),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn snapshot(n: usize) -> Snapshot {
    let mut s = Snapshot::new();
    let mut add = |ty: T, a: prost_types::Any| {
        s.upsert(None, Resource::new(ty, a).expect("resource"), ty);
    };
    let mut vhosts = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("svc-{i}");
        let c = cluster::Cluster {
            name: name.clone(),
            cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
                cluster::cluster::DiscoveryType::Eds as i32,
            )),
            connect_timeout: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
            eds_cluster_config: Some(cluster::cluster::EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: String::new(),
            }),
            ..Default::default()
        };
        add(T::Cluster, any(T::Cluster.type_url(), &c));
        let port = 20_000 + (i as u32 % 20_000);
        add(
            T::Endpoint,
            any(T::Endpoint.type_url(), &cla(&name, [port, port + 1])),
        );
        vhosts.push(route::VirtualHost {
            name: name.clone(),
            domains: vec![format!("{name}.example")],
            routes: vec![route::Route {
                r#match: Some(route::RouteMatch {
                    path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::route::Action::Route(route::RouteAction {
                    cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(name)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    // XDS_SCALE_VHOSTS=1 keeps one virtual host (to see what the route table costs).
    if std::env::var("XDS_SCALE_VHOSTS").is_ok_and(|v| v == "1") {
        vhosts.truncate(1);
    }
    let rc = route::RouteConfiguration {
        name: "local_route".into(),
        virtual_hosts: vhosts,
        ..Default::default()
    };
    add(T::Route, any(T::Route.type_url(), &rc));
    let manager = hcm::HttpConnectionManager {
        stat_prefix: "ingress_http".into(),
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
            config_source: Some(ads()),
            route_config_name: "local_route".into(),
        })),
        http_filters: vec![hcm::HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(prost_types::Any {
                type_url: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router".into(),
                value: Vec::new(),
            })),
            ..Default::default()
        }],
        ..Default::default()
    };
    let l = listener::Listener {
        name: "front".into(),
        address: Some(socket("127.0.0.1", 0)),
        filter_chains: vec![listener::FilterChain {
            filters: vec![listener::Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(listener::filter::ConfigType::TypedConfig(any(
                    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    &manager,
                ))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    add(T::Listener, any(T::Listener.type_url(), &l));
    s
}

fn bootstrap(cp: SocketAddr, api_type: &str) -> String {
    format!(
        r#"node: {{id: bench, cluster: bench}}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    grpc_services: [{{envoy_grpc: {{cluster_name: xds}}}}]
  lds_config: {{ads: {{}}, resource_api_version: V3}}
  cds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: xds
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {port}}}}}}}}}]}}]
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
"#,
        ip = cp.ip(),
        port = cp.port()
    )
}

struct Proxy {
    child: Child,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_legate(bin: &str, cp: SocketAddr, api_type: &str) -> Proxy {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("legate.yaml");
    std::fs::write(&path, bootstrap(cp, api_type)).expect("write bootstrap");
    let mut child = Command::new(bin)
        .args([
            "-c",
            path.to_str().expect("path"),
            "--concurrency",
            "1",
            "-l",
            "info",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start legate");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Proxy {
        child,
        lines,
        _dir: dir,
    }
}

/// Waits for a log line containing `needle`, for at most `secs`; returns it.
fn wait_line(p: &Proxy, needle: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match p.lines.recv_timeout(left) {
            Ok(l) if l.contains(needle) => return l,
            Ok(_) => {}
            Err(_) => panic!("no log line with `{needle}` within {secs} s"),
        }
    }
}

/// `eds: applied version 7 (1 resources, 0 removed) in 1.234ms` → duration.
fn applied_in(line: &str) -> Duration {
    let text = line.rsplit(" in ").next().unwrap_or("").trim();
    let (num, unit) = text.split_at(text.find(|c: char| c.is_alphabetic()).unwrap_or(text.len()));
    let v: f64 = num.parse().unwrap_or(f64::NAN);
    Duration::from_secs_f64(match unit {
        "s" => v,
        "ms" => v / 1e3,
        "µs" | "us" => v / 1e6,
        "ns" => v / 1e9,
        _ => f64::NAN,
    })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let bin = std::env::var("LEGATE_BIN").unwrap_or_else(|_| "target/release/legate".into());
    let started = Instant::now();
    let full = snapshot(n);
    println!(
        "snapshot: {n} clusters, {n} CLAs x 2 endpoints, 1 listener, {n} virtual hosts (built in {})",
        ms(started.elapsed())
    );

    // Baseline: the same process with an empty control plane.
    let empty = Server::start("127.0.0.1:0".parse().expect("addr"), Snapshot::new())
        .await
        .expect("mock");
    let p = start_legate(&bin, empty.addr(), "GRPC");
    wait_line(&p, "the server is LIVE", 60);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = rss_kib(p.child.id());
    drop(p);
    empty.shutdown().await;

    for api_type in ["GRPC", "DELTA_GRPC"] {
        let cp = Server::start("127.0.0.1:0".parse().expect("addr"), full.clone())
            .await
            .expect("mock");
        let t0 = Instant::now();
        let p = start_legate(&bin, cp.addr(), api_type);
        let mut applied = Duration::ZERO;
        let mut live = None;
        let deadline = Instant::now() + Duration::from_secs(300);
        while live.is_none() {
            let line = p
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("legate did not go LIVE within 300 s");
            if line.contains(": applied version") {
                applied += applied_in(&line);
            }
            if line.contains("the server is LIVE") {
                live = Some(t0.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = rss_kib(p.child.id());
        // Again after a while: the allocator returns freed pages lazily.
        tokio::time::sleep(Duration::from_secs(
            std::env::var("XDS_SCALE_SETTLE_S")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ))
        .await;
        let settled = rss_kib(p.child.id());

        // One changed ClusterLoadAssignment, five times.
        let mut one = Vec::new();
        for k in 0..5u32 {
            let name = format!("svc-{}", n / 2);
            let a = any(T::Endpoint.type_url(), &cla(&name, [40_000 + k, 41_000 + k]));
            let mut snap = (*cp.snapshot()).clone();
            snap.upsert(
                None,
                Resource::new(T::Endpoint, a).expect("resource"),
                T::Endpoint,
            );
            let sent = Instant::now();
            cp.set_snapshot(snap);
            let line = wait_line(&p, "eds: applied version", 60);
            one.push((applied_in(&line), sent.elapsed(), line));
        }
        one.sort_by_key(|o| o.0);
        let (apply, end_to_end, line) = &one[one.len() / 2];
        let mode = if api_type == "GRPC" { "SotW" } else { "delta" };
        println!("--- ADS {mode} ---");
        println!(
            "full set: LIVE {} after start; legate applying it: {}",
            ms(live.unwrap_or_default()),
            ms(applied)
        );
        println!(
            "one changed CLA (median of 5): applied in {}, {} from the mock's push to applied [{}]",
            ms(*apply),
            ms(*end_to_end),
            line.split("eds: ").nth(1).unwrap_or("")
        );
        println!(
            "RSS: {} MiB with the full set, {} MiB empty: {:.1} KiB per cluster (cluster + CLA + virtual host); {:.1} KiB after XDS_SCALE_SETTLE_S",
            rss / 1024,
            base / 1024,
            (rss.saturating_sub(base)) as f64 / n as f64,
            (settled.saturating_sub(base)) as f64 / n as f64
        );
        drop(p);
        cp.shutdown().await;
    }
}
