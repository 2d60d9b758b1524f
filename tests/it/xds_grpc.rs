//! xDS over gRPC through the real binary, against control-plane-mock run
//! in-process on a loopback port: ADS (SotW and delta), per-type streams,
//! NACKs, control-plane restarts, updates under load, and sidecar mode.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control_plane_mock::{Handle, ResourceType as T, Server, Snapshot};

use super::support::client::get;
use super::support::{origin, Dir, Legate};
use super::xds::{eventually, listener_addr, origin_of, stat};

fn endpoints(cluster: &str, addrs: &[SocketAddr]) -> String {
    let mut s = format!("cluster_name: {cluster}\nendpoints:\n- lb_endpoints:\n");
    for a in addrs {
        s.push_str(&format!(
            "  - endpoint:\n      address:\n        socket_address: {{address: {}, port_value: {}}}\n",
            a.ip(),
            a.port()
        ));
    }
    s
}

fn eds_cluster(name: &str) -> String {
    format!(
        "name: {name}\ntype: EDS\nconnect_timeout: 1s\neds_cluster_config:\n  eds_config: {{ads: {{}}, resource_api_version: V3}}\n"
    )
}

fn route_config(routes: &[(&str, &str)]) -> String {
    let mut s =
        String::from("name: local_route\nvirtual_hosts:\n- name: all\n  domains: [\"*\"]\n  routes:\n");
    for (prefix, cluster) in routes {
        s.push_str(&format!(
            "  - match: {{prefix: \"{prefix}\"}}\n    route: {{cluster: {cluster}}}\n"
        ));
    }
    s
}

/// The listener `front` on `addr` (port 0: any) with RDS `local_route`
/// from `rds_source` (a ConfigSource in flow style).
fn front_listener(addr: &str, rds_source: &str) -> String {
    format!(
        r#"name: front
address:
  socket_address: {{address: 127.0.0.1, port_value: {port}}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: ingress_http
      rds:
        route_config_name: local_route
        config_source: {rds_source}
      http_filters:
      - name: envoy.filters.http.router
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        port = addr.rsplit(':').next().unwrap_or("0")
    )
}

const ADS: &str = "{ads: {}, resource_api_version: V3}";

/// A mock snapshot: listener `front`, routes `/` → `svc`, EDS cluster `svc` on `a`.
fn snapshot(a: SocketAddr, listener_addr: &str) -> Snapshot {
    let mut s = Snapshot::new();
    s.upsert_yaml(None, T::Listener, &front_listener(listener_addr, ADS))
        .expect("listener");
    s.upsert_yaml(None, T::Route, &route_config(&[("/", "svc")]))
        .expect("route");
    s.upsert_yaml(None, T::Cluster, &eds_cluster("svc"))
        .expect("cluster");
    s.upsert_yaml(None, T::Endpoint, &endpoints("svc", &[a]))
        .expect("endpoints");
    s
}

/// An ADS bootstrap pointing at `cp` (the xDS cluster is h2c).
pub fn ads_bootstrap(cp: SocketAddr, api_type: &str, extra: &str) -> String {
    format!(
        r#"node: {{id: test-node, cluster: test}}
dynamic_resources:
  ads_config:
    api_type: {api_type}
    transport_api_version: V3
    grpc_services:
    - envoy_grpc: {{cluster_name: xds_cluster}}
  lds_config: {{ads: {{}}, resource_api_version: V3}}
  cds_config: {{ads: {{}}, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds_cluster
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
    load_assignment:
      cluster_name: xds_cluster
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: {{address: {ip}, port_value: {port}}}
{extra}admin:
  address:
    socket_address: {{address: 127.0.0.1, port_value: 0}}
"#,
        ip = cp.ip(),
        port = cp.port()
    )
}

async fn mock(snap: Snapshot) -> Handle {
    Server::start("127.0.0.1:0".parse().expect("addr"), snap)
        .await
        .expect("start the mock")
}

/// The version legate has ACKed for `type_url` on its stream(s).
fn acked(cp: &Handle, type_url: &str) -> Option<String> {
    cp.clients()
        .iter()
        .filter_map(|c| c.types.get(type_url).and_then(|t| t.acked_version.clone()))
        .next_back()
}

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

#[tokio::test]
async fn ads_sotw_and_delta_serve_the_control_planes_config_and_follow_its_updates() {
    for api_type in ["GRPC", "DELTA_GRPC"] {
        let a = origin::start("a").await;
        let b = origin::start("b").await;
        let cp = mock(snapshot(a, "127.0.0.1:0")).await;
        let legate = Legate::start(&ads_bootstrap(cp.addr(), api_type, ""), &[]);
        let admin = legate.admin.expect("admin");
        let addr = listener_addr(admin, "front").await;
        assert_eq!(origin_of(addr, "/").await.as_deref(), Some("a"), "{api_type}");
        assert_eq!(get(admin, "/ready", &[]).await.status, 200, "{api_type}");
        assert_eq!(
            stat(admin, "control_plane.connected_state").await,
            Some(1),
            "{api_type}"
        );
        let mode = cp.clients().first().map(|c| c.mode.clone()).unwrap_or_default();
        assert_eq!(mode, if api_type == "GRPC" { "sotw" } else { "delta" });

        // New endpoints, then a new cluster and a route to it: applied hot.
        cp.upsert(None, T::Endpoint, &endpoints("svc", &[b]))
            .expect("upsert");
        eventually(5, "svc's endpoints to become b", || async {
            (origin_of(addr, "/").await.as_deref() == Some("b")).then_some(())
        })
        .await;
        cp.upsert(None, T::Cluster, &eds_cluster("other"))
            .expect("cluster");
        cp.upsert(None, T::Endpoint, &endpoints("other", &[a]))
            .expect("endpoints");
        let v = cp
            .upsert(
                None,
                T::Route,
                &route_config(&[("/other", "other"), ("/", "svc")]),
            )
            .expect("route");
        eventually(5, "the route to `other`", || async {
            (origin_of(addr, "/other").await.as_deref() == Some("a")).then_some(())
        })
        .await;
        assert_eq!(origin_of(addr, "/").await.as_deref(), Some("b"));
        eventually(5, "legate to ACK the routes", || async {
            (acked(&cp, RDS).as_deref() == Some(v.as_str())).then_some(())
        })
        .await;
        let dump = get(admin, "/config_dump", &[]).await.json();
        let text = dump.to_string();
        assert!(text.contains("dynamic_active_clusters"), "{text}");
        assert!(text.contains("\"name\":\"other\""), "{text}");
        assert!(text.contains("dynamic_route_configs"), "{text}");
        assert!(
            stat(admin, "cluster_manager.cds.update_success")
                .await
                .unwrap_or(0)
                >= 2
        );
        assert!(
            stat(admin, "http.ingress_http.rds.local_route.update_success")
                .await
                .unwrap_or(0)
                >= 1
        );
        assert!(
            stat(admin, "listener_manager.lds.update_success")
                .await
                .unwrap_or(0)
                >= 1
        );
        // EDS counts per cluster: svc's assignment came twice, other's once.
        assert!(
            stat(admin, "cluster.svc.update_success").await.unwrap_or(0) >= 2,
            "{api_type}"
        );
        assert!(
            stat(admin, "cluster.other.update_success").await.unwrap_or(0) >= 1,
            "{api_type}"
        );
    }
}

#[tokio::test]
async fn an_invalid_resource_is_nacked_with_its_field_and_the_last_good_config_keeps_serving() {
    let a = origin::start("a").await;
    let cp = mock(snapshot(a, "127.0.0.1:0")).await;
    let legate = Legate::start(&ads_bootstrap(cp.addr(), "GRPC", ""), &[]);
    let admin = legate.admin.expect("admin");
    let addr = listener_addr(admin, "front").await;
    assert_eq!(origin_of(addr, "/").await.as_deref(), Some("a"));

    // A hostname as an EDS endpoint: it decodes and validates as a
    // ClusterLoadAssignment, but EDS endpoints must be IPs, so legate NACKs.
    let bad = endpoints("svc", &[a]).replace(&format!("address: {}", a.ip()), "address: example.invalid");
    let version = cp.upsert(None, T::Endpoint, &bad).expect("upsert");
    let nack = eventually(5, "a NACK of the bad endpoints", || async {
        cp.clients()
            .iter()
            .filter_map(|c| c.types.get(EDS).and_then(|t| t.last_nack.clone()))
            .find(|n| n.version == version)
    })
    .await;
    assert!(
        nack.message.contains("ClusterLoadAssignment svc"),
        "{}",
        nack.message
    );
    assert!(nack.message.contains("example.invalid"), "{}", nack.message);
    for _ in 0..5 {
        assert_eq!(origin_of(addr, "/").await.as_deref(), Some("a"));
    }
    assert!(stat(admin, "cluster.svc.update_rejected").await.unwrap_or(0) >= 1);

    // A cluster NACK is per type: RDS keeps working, and /config_dump says
    // why. The mock validates what it decodes, so this cluster (a negative
    // connect_timeout) is encoded directly, as a buggy control plane would.
    let broken = legate::proto::envoy::config::cluster::v3::Cluster {
        name: "broken".into(),
        connect_timeout: Some(prost_types::Duration {
            seconds: -1,
            nanos: 0,
        }),
        ..Default::default()
    };
    let any = prost_types::Any {
        type_url: CDS.into(),
        value: prost::Message::encode_to_vec(&broken),
    };
    let mut snap = (*cp.snapshot()).clone();
    snap.upsert(
        None,
        control_plane_mock::Resource::new(T::Cluster, any).expect("resource"),
        T::Cluster,
    );
    let version = cp.set_snapshot(snap);
    eventually(5, "a NACK of the bad cluster", || async {
        cp.clients()
            .iter()
            .filter_map(|c| c.types.get(CDS).and_then(|t| t.last_nack.clone()))
            .find(|n| n.version == version)
    })
    .await;
    assert!(
        stat(admin, "cluster_manager.cds.update_rejected")
            .await
            .unwrap_or(0)
            >= 1
    );
    let dump = get(admin, "/config_dump?resource=dynamic_active_clusters", &[])
        .await
        .body;
    assert!(!dump.contains("broken"), "{dump}");
    cp.upsert(None, T::Route, &route_config(&[("/x", "svc"), ("/", "svc")]))
        .expect("upsert");
    eventually(5, "good routes after the cluster NACK", || async {
        (origin_of(addr, "/x").await.as_deref() == Some("a")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn legate_keeps_serving_while_the_control_plane_is_down_and_resyncs_when_it_returns() {
    let a = origin::start("a").await;
    let b = origin::start("b").await;
    let cp = mock(snapshot(a, "127.0.0.1:0")).await;
    let cp_addr = cp.addr();
    let legate = Legate::start(&ads_bootstrap(cp_addr, "GRPC", ""), &[]);
    let admin = legate.admin.expect("admin");
    let addr = listener_addr(admin, "front").await;
    assert_eq!(origin_of(addr, "/").await.as_deref(), Some("a"));

    cp.shutdown().await;
    eventually(10, "connected_state 0", || async {
        (stat(admin, "control_plane.connected_state").await == Some(0)).then_some(())
    })
    .await;
    for _ in 0..5 {
        assert_eq!(origin_of(addr, "/").await.as_deref(), Some("a"));
    }
    assert!(
        stat(admin, "cluster_manager.cds.update_failure")
            .await
            .unwrap_or(0)
            >= 1
    );

    // A new control plane on the same address, with other endpoints.
    let mut snap = snapshot(a, "127.0.0.1:0");
    snap.upsert_yaml(None, T::Endpoint, &endpoints("svc", &[b]))
        .expect("endpoints");
    let _cp2 = Server::start(cp_addr, snap).await.expect("restart the mock");
    eventually(40, "the restarted control plane's endpoints", || async {
        (origin_of(addr, "/").await.as_deref() == Some("b")).then_some(())
    })
    .await;
    assert_eq!(stat(admin, "control_plane.connected_state").await, Some(1));
}

#[tokio::test]
async fn rds_on_its_own_grpc_stream_beside_ads_as_in_go_control_planes_example() {
    let a = origin::start("a").await;
    let rds = "{api_config_source: {api_type: GRPC, transport_api_version: V3, set_node_on_first_message_only: true, grpc_services: [{envoy_grpc: {cluster_name: xds_cluster}}]}, resource_api_version: V3}";
    let mut snap = snapshot(a, "127.0.0.1:0");
    snap.upsert_yaml(None, T::Listener, &front_listener("127.0.0.1:0", rds))
        .expect("listener");
    let cp = mock(snap).await;
    let legate = Legate::start(&ads_bootstrap(cp.addr(), "GRPC", ""), &[]);
    let admin = legate.admin.expect("admin");
    let addr = listener_addr(admin, "front").await;
    assert_eq!(origin_of(addr, "/").await.as_deref(), Some("a"));
    let services: Vec<String> = cp.clients().iter().map(|c| c.service.clone()).collect();
    assert!(services.contains(&"ADS".to_string()), "{services:?}");
    assert!(services.contains(&"RDS".to_string()), "{services:?}");
}

/// Requests flow on one connection per client task while the control plane
/// pushes 50 updates; every response must be a 200 from an origin that
/// the config before or after the request allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_updates_under_load_fail_no_request() {
    let a = origin::start("a").await;
    let b = origin::start("b").await;
    let c = origin::start("c").await;
    let cp = mock(snapshot(a, "127.0.0.1:0")).await;
    let legate = Legate::start(&ads_bootstrap(cp.addr(), "GRPC", ""), &[]);
    let admin = legate.admin.expect("admin");
    let addr = listener_addr(admin, "front").await;
    assert_eq!(origin_of(addr, "/").await.as_deref(), Some("a"));

    // The allowed origins per config step, appended before each push.
    let allowed: Arc<Mutex<Vec<Vec<&'static str>>>> = Arc::new(Mutex::new(vec![vec!["a"]]));
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (allowed, stop, served) = (allowed.clone(), stop.clone(), served.clone());
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            // Bounded: at most 20 000 requests per task.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let before = allowed.lock().expect("lock").len() - 1;
                let r = get(addr, "/", &[]).await;
                let after = allowed.lock().expect("lock").len() - 1;
                let from = r.header("x-origin").unwrap_or("").to_string();
                let ok_origins: Vec<&str> = allowed.lock().expect("lock")[before.saturating_sub(1)..=after]
                    .iter()
                    .flatten()
                    .copied()
                    .collect();
                if r.status != 200 || !ok_origins.contains(&from.as_str()) {
                    failures.push(format!(
                        "{} from `{from}` (allowed {ok_origins:?}): {}",
                        r.status, r.body
                    ));
                }
                served.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    let origins = [("a", a), ("b", b), ("c", c)];
    let mut svc: Vec<&'static str> = vec!["a"];
    let mut to_extra = false;
    let union = |x: &[&'static str], y: &[&'static str]| -> Vec<&'static str> {
        let mut u = x.to_vec();
        u.extend_from_slice(y);
        u
    };
    for i in 0..50 {
        let effective =
            |svc: &[&'static str], to_extra: bool| if to_extra { vec!["c"] } else { svc.to_vec() };
        match i % 5 {
            // Endpoint change: svc moves between origins.
            0 | 1 => {
                let (n1, a1) = origins[i % 3];
                let (n2, a2) = origins[(i + 1) % 3];
                let before = effective(&svc, to_extra);
                svc = vec![n1, n2];
                allowed
                    .lock()
                    .expect("lock")
                    .push(union(&before, &effective(&svc, to_extra)));
                let v = cp
                    .upsert(None, T::Endpoint, &endpoints("svc", &[a1, a2]))
                    .expect("upsert");
                wait_ack(&cp, EDS, &v).await;
            }
            // A cluster added (with its endpoints), then, once legate uses it,
            // the route flips to it (control planes push CDS → EDS → RDS: a
            // route to a cluster still warming would answer 503 NC, in
            // Envoy too). The CLA may be unchanged since the last cycle, in
            // which case the mock rightly pushes nothing for it.
            2 => {
                cp.upsert(None, T::Endpoint, &endpoints("extra", &[c]))
                    .expect("endpoints");
                let v = cp
                    .upsert(None, T::Cluster, &eds_cluster("extra"))
                    .expect("cluster");
                wait_ack(&cp, CDS, &v).await;
                let host = format!("extra::{c}::");
                eventually(10, "cluster extra active with its host", || async {
                    get(admin, "/clusters", &[])
                        .await
                        .body
                        .contains(&host)
                        .then_some(())
                })
                .await;
                allowed.lock().expect("lock").push(union(&svc, &["c"]));
                to_extra = true;
                let v = cp
                    .upsert(None, T::Route, &route_config(&[("/", "extra")]))
                    .expect("route");
                wait_ack(&cp, RDS, &v).await;
            }
            // The route flips back, then the extra cluster is removed.
            3 => {
                allowed.lock().expect("lock").push(union(&svc, &["c"]));
                to_extra = false;
                let v = cp
                    .upsert(None, T::Route, &route_config(&[("/", "svc")]))
                    .expect("route");
                wait_ack(&cp, RDS, &v).await;
                let v = cp.remove(None, T::Cluster, "extra").expect("remove");
                wait_ack(&cp, CDS, &v).await;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
        allowed.lock().expect("lock").push(effective(&svc, to_extra));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.expect("client task"));
    }
    let n = served.load(Ordering::Relaxed);
    assert!(n > 200, "only {n} requests were served during the updates");
    assert!(
        failures.is_empty(),
        "{} of {n} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        stat(admin, "cluster_manager.cds.update_rejected")
            .await
            .unwrap_or(0)
            == 0
    );
    // The removed cluster's endpoint assignment is not kept either.
    let dump = get(admin, "/config_dump?include_eds", &[]).await.body;
    assert!(!dump.contains("\"extra\""), "{dump}");
    assert!(dump.contains("\"svc\""), "{dump}");
}

/// Waits (bounded) until legate ACKs `version` of `type_url`: the update
/// is published by then.
async fn wait_ack(cp: &Handle, type_url: &str, version: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while acked(cp, type_url).as_deref() != Some(version) {
        assert!(
            std::time::Instant::now() < deadline,
            "no ACK of {type_url} {version} within 10 s; streams: {:#?}; last events: {:#?}",
            cp.clients(),
            cp.events().iter().rev().take(8).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sidecar_mode_serves_the_fallback_then_switches_to_the_control_plane_without_failing_requests() {
    for delta in [false, true] {
        sidecar_scenario(delta).await;
    }
}

async fn sidecar_scenario(delta: bool) {
    let fallback_origin = origin::start("fallback").await;
    let cp_origin = origin::start("cp").await;
    // A fixed port so the control plane's listener takes over the fallback's socket.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let fallback = super::support::front_bootstrap(
        "",
        &super::support::route("/", "svc", ""),
        &super::support::static_cluster("svc", fallback_origin, ""),
    )
    .replace("port_value: 0}", &format!("port_value: {port}}}"))
        + "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 0}}\nnode: {id: sidecar-1, cluster: test}\n";
    assert!(fallback.contains(&port.to_string()), "{fallback}");
    // The control plane is not up yet: the fallback serves at once.
    let cp_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let dir = Dir::new();
    let cache = dir.0.path().join("cache");
    let cache_arg = cache.display().to_string();
    let cp_arg = cp_port.to_string();
    let mut args = vec!["--xds-server", cp_arg.as_str(), "--xds-cache", cache_arg.as_str()];
    if delta {
        args.push("--xds-delta");
    }
    let legate = Legate::start(&fallback, &args);
    let admin = legate.admin.expect("admin");
    let addr: SocketAddr = listen.parse().expect("addr");
    assert_eq!(origin_of(addr, "/").await.as_deref(), Some("fallback"));
    assert_eq!(get(admin, "/ready", &[]).await.status, 200);
    let source = get(admin, "/config_source", &[]).await.json();
    assert_eq!(source["source"], "fallback", "{source}");

    // Requests keep flowing while the control plane comes up and legate switches.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 20_000 {
                let r = get(addr, "/", &[]).await;
                if r.status != 200 {
                    failures.push(format!("{}: {}", r.status, r.body));
                }
                n += 1;
            }
            (n, failures)
        })
    };
    let cp = Server::start(cp_port, snapshot(cp_origin, &listen))
        .await
        .expect("start the mock");
    let reachable = std::time::Instant::now();
    eventually(20, "the switch to the control plane", || async {
        (origin_of(addr, "/").await.as_deref() == Some("cp")).then_some(())
    })
    .await;
    // A figure for the notes, not an assertion (timing goals live in benchmarks).
    eprintln!(
        "sidecar ({}): first request served by the control plane's config {:?} after it became reachable",
        if delta { "delta" } else { "sotw" },
        reachable.elapsed()
    );
    stop.store(true, Ordering::Relaxed);
    let (n, failures) = load.await.expect("load");
    assert!(
        failures.is_empty(),
        "{} of {n} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let source = get(admin, "/config_source", &[]).await.json();
    assert_eq!(source["source"], "control_plane", "{source}");
    assert_eq!(stat(admin, "config_source.control_plane").await, Some(1));
    assert!(
        cache.join("xds-cache.bin").exists(),
        "the accepted config is cached"
    );
    drop(legate);

    // The control plane goes away; a restarted sidecar serves the cache.
    cp.shutdown().await;
    let legate = Legate::start(&fallback, &args);
    let admin = legate.admin.expect("admin");
    assert_eq!(origin_of(addr, "/").await.as_deref(), Some("cp"));
    let source = get(admin, "/config_source", &[]).await.json();
    assert_eq!(source["source"], "cache", "{source}");
    for ty in ["cds", "eds", "lds", "rds"] {
        let v = source["versions"][ty].as_str().unwrap_or("");
        assert!(!v.is_empty(), "the cache keeps the {ty} version: {source}");
    }
    drop(legate);

    // A cache written for another node is ignored.
    let mut other = args.clone();
    other.extend(["--service-node", "another-node"]);
    let legate = Legate::start(&fallback, &other);
    let admin = legate.admin.expect("admin");
    assert_eq!(origin_of(addr, "/").await.as_deref(), Some("fallback"));
    assert_eq!(
        get(admin, "/config_source", &[]).await.json()["source"],
        "fallback"
    );
    drop(legate);

    // A corrupt cache is reported and ignored: a clean start on the fallback.
    std::fs::write(cache.join("xds-cache.bin"), b"legate-xds-cache 1\ngarbage").expect("corrupt");
    let legate = Legate::start(&fallback, &args);
    let admin = legate.admin.expect("admin");
    assert_eq!(origin_of(addr, "/").await.as_deref(), Some("fallback"));
    let source = get(admin, "/config_source", &[]).await.json();
    assert_eq!(source["source"], "fallback", "{source}");
}

#[tokio::test]
async fn xds_server_with_dynamic_resources_is_a_clear_startup_error() {
    let cp: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let dir = Dir::new();
    let path = dir.write("ads.yaml", &ads_bootstrap(cp, "GRPC", ""));
    let out = std::process::Command::new(super::support::legate_bin())
        .args([
            "-c",
            path.to_str().expect("path"),
            "--xds-server",
            "127.0.0.1:18000",
        ])
        .output()
        .expect("run legate");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dynamic_resources") && err.contains("--xds-server"),
        "{err}"
    );
}
