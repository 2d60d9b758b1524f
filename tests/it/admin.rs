//! The admin interface, whole-process: the real binary with `admin.address`
//! on port 0, checked against Envoy's formats, status codes and methods.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::support::client::{get, send, Reply};
use super::support::{origin, Legate};

/// A front proxy (one STATIC cluster) with the admin on 127.0.0.1:0 and a
/// static runtime layer.
fn config(origin: SocketAddr) -> String {
    format!(
        r#"
node: {{id: front-node, cluster: front-cluster}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
layered_runtime:
  layers:
  - name: static_layer_0
    static_layer:
      health_check: {{min_interval: 5}}
      overload: {{global_downstream_max_connections: 50000}}
static_resources:
  listeners:
  - name: front
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            name: local_route
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: service1}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: service1
    type: STATIC
    load_assignment:
      cluster_name: service1
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]
"#,
        port = origin.port()
    )
}

async fn post(addr: SocketAddr, path: &str) -> Reply {
    send(addr, "POST", path, &[], Bytes::new(), false).await
}

async fn start() -> (Legate, SocketAddr, SocketAddr) {
    let o = origin::start("service1").await;
    let legate = Legate::start(&config(o), &[]);
    let admin = legate.admin.expect("the log names the admin address");
    (legate, admin, o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_proxy_compose_healthcheck_passes() {
    let (_legate, admin, _) = start().await;
    // curl -s localhost:8001/stats?filter=server.state | grep 0 &&
    // curl -s localhost:8001/stats?filter=listener_manager.workers_started | grep 1
    let r = get(admin, "/stats?filter=server.state", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "server.state: 0\n");
    let r = get(admin, "/stats?filter=listener_manager.workers_started", &[]).await;
    assert_eq!(r.body, "listener_manager.workers_started: 1\n");
    let r = get(admin, "/ready", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "LIVE\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_index_and_unknown_paths() {
    let (_legate, admin, _) = start().await;
    let help = get(admin, "/help", &[]).await;
    assert_eq!(help.status, 200);
    assert!(help
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain"));
    assert!(help.body.starts_with("admin commands are:\n"), "{}", help.body);
    for line in [
        "  /clusters: upstream cluster status\n",
        "  /config_dump: dump current Envoy configs (experimental)\n",
        "  /quitquitquit (POST): exit the server\n",
        "  /ready: print server state, return 200 if LIVE, otherwise return 503\n",
        "  /stats: print server stats\n",
        "  /stats/prometheus: print server stats in prometheus format\n",
    ] {
        assert!(help.body.contains(line), "missing {line:?} in\n{}", help.body);
    }

    let home = get(admin, "/", &[]).await;
    assert_eq!(home.status, 200);
    assert!(home.header("content-type").unwrap_or("").starts_with("text/html"));
    assert!(home.body.contains("<a href='stats'>stats</a>"), "{}", home.body);
    assert!(home.body.contains("print server stats"));
    // State-changing endpoints are POST forms on the index.
    assert!(home.body.contains("<form action='quitquitquit' method='post'"));

    let nope = get(admin, "/nope", &[]).await;
    assert_eq!(nope.status, 404);
    assert!(
        nope.body.starts_with("invalid path. admin commands are:\n"),
        "{}",
        nope.body
    );
    // Exact paths: a trailing slash is another path.
    assert_eq!(get(admin, "/stats/", &[]).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changing_endpoints_require_post() {
    let (_legate, admin, _) = start().await;
    for path in [
        "/quitquitquit",
        "/healthcheck/fail",
        "/healthcheck/ok",
        "/logging",
        "/drain_listeners",
        "/reset_counters",
        "/runtime_modify?a=b",
    ] {
        let r = get(admin, path, &[]).await;
        assert_eq!(r.status, 405, "{path}");
        assert_eq!(r.body, "Method GET not allowed, POST required.", "{path}");
    }
    // None of them took effect.
    assert_eq!(get(admin, "/ready", &[]).await.body, "LIVE\n");

    let r = post(admin, "/healthcheck/fail").await;
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    let r = get(admin, "/ready", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "DRAINING\n"));
    let r = get(admin, "/stats?filter=^server\\.(live|state)$", &[]).await;
    assert_eq!(r.body, "server.live: 0\nserver.state: 1\n");
    assert_eq!(get(admin, "/server_info", &[]).await.json()["state"], "DRAINING");
    let r = post(admin, "/healthcheck/ok").await;
    assert_eq!(r.body, "OK\n");
    assert_eq!(get(admin, "/ready", &[]).await.status, 200);

    let r = post(admin, "/drain_listeners?skip_exit").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "skip_exit requires graceful\n")
    );

    let r = post(admin, "/logging").await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("active loggers:\n"), "{}", r.body);
    assert!(r.body.contains("\n  http: info\n"), "{}", r.body);
    // Levels change live (the binary registers a reloadable filter).
    let r = post(admin, "/logging?http=debug").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("\n  http: debug\n"), "{}", r.body);
    assert!(r.body.contains("\n  admin: info\n"), "{}", r.body);

    let r = post(admin, "/reset_counters").await;
    assert_eq!(r.body, "OK\n");
    let r = get(admin, "/stats?filter=^http\\.admin\\.downstream_rq_total$", &[]).await;
    // Reset, then this very request counted.
    assert_eq!(r.body, "http.admin.downstream_rq_total: 1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_and_listeners_show_real_addresses() {
    let (legate, admin, o) = start().await;
    let front = legate.addr("front");
    // Traffic, so host counters move.
    assert_eq!(get(front, "/x", &[]).await.status, 200);

    let r = get(admin, "/clusters", &[]).await;
    assert_eq!(r.status, 200);
    let host = format!("service1::{o}");
    let lines: Vec<&str> = r.body.lines().collect();
    let want_prefix = [
        "service1::observability_name::service1".to_string(),
        "service1::default_priority::max_connections::1024".into(),
        "service1::default_priority::max_pending_requests::1024".into(),
        "service1::default_priority::max_requests::1024".into(),
        "service1::default_priority::max_retries::3".into(),
        "service1::high_priority::max_connections::1024".into(),
        "service1::high_priority::max_pending_requests::1024".into(),
        "service1::high_priority::max_requests::1024".into(),
        "service1::high_priority::max_retries::3".into(),
        "service1::added_via_api::false".into(),
    ];
    assert_eq!(lines[..want_prefix.len()], want_prefix, "{}", r.body);
    let host_lines: Vec<&str> = lines[want_prefix.len()..]
        .iter()
        .map(|l| {
            l.strip_prefix(&format!("{host}::"))
                .unwrap_or_else(|| panic!("{l}"))
        })
        .collect();
    let keys: Vec<&str> = host_lines
        .iter()
        .map(|l| l.split("::").next().unwrap_or(""))
        .collect();
    assert_eq!(
        keys,
        [
            "cx_active",
            "cx_connect_fail",
            "cx_total",
            "rq_active",
            "rq_error",
            "rq_success",
            "rq_timeout",
            "rq_total",
            "hostname",
            "health_flags",
            "weight",
            "region",
            "zone",
            "sub_zone",
            "canary",
            "priority",
            "success_rate",
            "local_origin_success_rate",
        ]
    );
    for l in [
        "hostname::",
        "health_flags::healthy",
        "weight::1",
        "canary::false",
        "priority::0",
        "success_rate::-1",
    ] {
        assert!(host_lines.contains(&l), "{l} in {}", r.body);
    }
    assert!(host_lines.contains(&"rq_total::1"), "{}", r.body);

    let j = get(admin, "/clusters?format=json", &[]).await;
    assert_eq!(j.header("content-type"), Some("application/json"));
    let j = j.json();
    let c = &j["cluster_statuses"][0];
    assert_eq!(c["name"], "service1");
    assert_eq!(c["observability_name"], "service1");
    assert_eq!(c["circuit_breakers"]["thresholds"][1]["priority"], "HIGH");
    assert_eq!(c["circuit_breakers"]["thresholds"][0]["max_retries"], 3);
    let h = &c["host_statuses"][0];
    assert_eq!(h["address"]["socket_address"]["port_value"], o.port());
    assert_eq!(h["health_status"]["eds_health_status"], "HEALTHY");
    assert_eq!(h["weight"], 1);
    let rq_total = h["stats"]
        .as_array()
        .expect("stats")
        .iter()
        .find(|s| s["name"] == "rq_total")
        .expect("rq_total");
    assert_eq!(rq_total["value"], "1", "uint64 as a string");

    let r = get(admin, "/listeners", &[]).await;
    assert_eq!(r.body, format!("front::{front}\n"));
    let j = get(admin, "/listeners?format=json", &[]).await.json();
    assert_eq!(j["listener_statuses"][0]["name"], "front");
    assert_eq!(
        j["listener_statuses"][0]["local_address"]["socket_address"]["port_value"],
        front.port()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_info_runtime_memory_certs() {
    let (_legate, admin, _) = start().await;
    let r = get(admin, "/server_info", &[]).await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["state"], "LIVE");
    let version = j["version"].as_str().expect("version");
    let parts: Vec<&str> = version.split('/').collect();
    assert_eq!(parts.len(), 5, "{version}");
    assert_eq!(parts[2], "Clean");
    assert!(["RELEASE", "DEBUG"].contains(&parts[3]), "{version}");
    assert!(j["uptime_current_epoch"].as_str().expect("uptime").ends_with('s'));
    assert_eq!(j["command_line_options"]["concurrency"], 2);
    assert_eq!(j["command_line_options"]["mode"], "Serve");
    assert_eq!(j["node"]["id"], "front-node");
    assert_eq!(j["node"]["cluster"], "front-cluster");

    let rt = get(admin, "/runtime", &[]).await.json();
    assert_eq!(rt["layers"], serde_json::json!(["static_layer_0"]));
    assert_eq!(rt["entries"]["health_check.min_interval"]["final_value"], "5");
    let r = post(admin, "/runtime_modify?foo.bar=7").await;
    assert_eq!(r.body, "OK\n");
    let rt = get(admin, "/runtime", &[]).await.json();
    assert_eq!(rt["entries"]["foo.bar"]["final_value"], "7");

    let m = get(admin, "/memory", &[]).await.json();
    assert!(
        m["allocated"]
            .as_str()
            .expect("string")
            .parse::<u64>()
            .expect("number")
            > 0
    );
    let c = get(admin, "/certs", &[]).await.json();
    assert_eq!(c, serde_json::json!({"certificates": []}));
    let r = get(admin, "/hot_restart_version", &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dump_is_envoys_shape_and_order() {
    let (_legate, admin, _) = start().await;
    let r = get(admin, "/config_dump", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    let types: Vec<&str> = j["configs"]
        .as_array()
        .expect("configs")
        .iter()
        .map(|c| c["@type"].as_str().expect("@type"))
        .collect();
    let t = |s: &str| format!("type.googleapis.com/envoy.admin.v3.{s}");
    assert_eq!(
        types,
        [
            t("BootstrapConfigDump"),
            t("ClustersConfigDump"),
            t("ListenersConfigDump"),
            t("ScopedRoutesConfigDump"),
            t("RoutesConfigDump"),
            t("SecretsConfigDump"),
        ]
    );
    let c = &j["configs"];
    assert_eq!(c[0]["bootstrap"]["node"]["id"], "front-node");
    assert!(c[0]["last_updated"]
        .as_str()
        .expect("last_updated")
        .ends_with('Z'));
    let sc = &c[1]["static_clusters"][0];
    assert_eq!(
        sc["cluster"]["@type"],
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    );
    assert_eq!(sc["cluster"]["name"], "service1");
    assert!(sc["last_updated"].is_string());
    let sl = &c[2]["static_listeners"][0]["listener"];
    assert_eq!(
        sl["@type"],
        "type.googleapis.com/envoy.config.listener.v3.Listener"
    );
    assert_eq!(sl["name"], "front");
    let rc = &c[4]["static_route_configs"][0]["route_config"];
    assert_eq!(
        rc["@type"],
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    );
    assert_eq!(rc["name"], "local_route");

    // ?resource=: the elements of one repeated field.
    let r = get(admin, "/config_dump?resource=static_clusters", &[])
        .await
        .json();
    assert_eq!(
        r["configs"][0]["@type"],
        "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster"
    );
    assert_eq!(r["configs"][0]["cluster"]["name"], "service1");
    // ... with a mask through the Any.
    let r = get(
        admin,
        "/config_dump?resource=static_clusters&mask=cluster.name",
        &[],
    )
    .await
    .json();
    assert_eq!(
        r["configs"][0]["cluster"],
        serde_json::json!({"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "service1"})
    );
    let r = get(admin, "/config_dump?resource=version_info", &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        "version_info is not a repeated field. Use ?mask=version_info to get only this field"
    );
    assert_eq!(get(admin, "/config_dump?resource=nope", &[]).await.status, 404);
    // ?mask= alone keeps the dumps that have the field.
    let r = get(admin, "/config_dump?mask=static_clusters", &[]).await.json();
    assert_eq!(r["configs"].as_array().expect("configs").len(), 1);
    // ?include_eds adds the endpoints after the clusters.
    let r = get(admin, "/config_dump?include_eds", &[]).await.json();
    assert_eq!(
        r["configs"][2]["@type"],
        "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump"
    );
    assert_eq!(
        r["configs"][2]["static_endpoint_configs"][0]["endpoint_config"]["cluster_name"],
        "service1"
    );
    // ?name_regex= filters resources by name.
    let r = get(admin, "/config_dump?name_regex=nomatch", &[]).await.json();
    assert!(r["configs"][1].get("static_clusters").is_none(), "{r}");
}

/// Parses Prometheus text with the Python `prometheus_client` parser (a
/// client nobody on this team wrote; `.ci/run` installs it from PyPI) and
/// returns `name type samples` per metric family. Missing is a failure.
fn parse_with_prometheus_client(text: &str) -> Vec<String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let script = "import sys\n\
                  from prometheus_client.parser import text_string_to_metric_families\n\
                  for f in text_string_to_metric_families(sys.stdin.read()):\n    \
                  print(f.name, f.type, len(f.samples))\n";
    let probe = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .output()
        .expect("python3 runs");
    assert!(
        probe.status.success(),
        "python3's prometheus_client is missing: pip install prometheus_client (.ci/run does)"
    );
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python3 runs");
    assert!(
        out.status.success(),
        "prometheus_client rejected the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_formats() {
    let (legate, admin, _) = start().await;
    assert_eq!(get(legate.addr("front"), "/x", &[]).await.status, 200);
    // Admin requests themselves are counted (http.admin.*).
    assert_eq!(get(admin, "/ready", &[]).await.status, 200);

    let text = get(admin, "/stats", &[]).await.body;
    let names: Vec<&str> = text
        .lines()
        // Text readouts (`name: "v"`) come first, histograms last.
        .filter(|l| !l.contains(": \"") && !l.contains(": P0(") && !l.ends_with(": No recorded values"))
        .map(|l| l.split(": ").next().unwrap_or(""))
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "counters and gauges sorted by name");
    for want in [
        "server.live: 1\n",
        "server.concurrency: 2\n",
        "listener_manager.total_listeners_active: 1\n",
        "cluster_manager.active_clusters: 1\n",
        "cluster.service1.membership_total: 1\n",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    assert!(text.contains("server.uptime: "));
    let hist = text
        .lines()
        .find(|l| l.starts_with("http.admin.downstream_rq_time: "))
        .expect("admin request-time histogram");
    assert!(
        hist.contains("P0(") && hist.contains(" P99.5(") && hist.contains(" P100("),
        "{hist}"
    );

    let gauges = get(admin, "/stats?type=Gauges", &[]).await.body;
    assert!(gauges.contains("server.live: 1"));
    assert!(!gauges.contains("http.admin.downstream_rq_total"));
    let used = get(admin, "/stats?usedonly&filter=http\\.admin", &[]).await.body;
    assert!(used.contains("http.admin.downstream_rq_total: "), "{used}");
    assert_eq!(get(admin, "/stats?type=Nope", &[]).await.status, 400);
    assert_eq!(get(admin, "/stats?filter=(", &[]).await.status, 400);

    let j = get(admin, "/stats?format=json", &[]).await.json();
    let stats = j["stats"].as_array().expect("stats");
    assert!(stats
        .iter()
        .any(|s| s["name"] == "server.live" && s["value"] == 1));
    let h = stats
        .iter()
        .find_map(|s| s.get("histograms"))
        .expect("histograms entry");
    assert_eq!(
        h["supported_quantiles"],
        serde_json::json!([0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100])
    );
    assert!(
        h["computed_quantiles"][0]["values"]
            .as_array()
            .expect("values")
            .len()
            == 10
    );

    let p = get(admin, "/stats/prometheus", &[]).await;
    assert_eq!(p.status, 200);
    let body = p.body;
    assert!(
        body.contains("# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("envoy_http_downstream_rq_xx{envoy_response_code_class=\"2\",envoy_http_conn_manager_prefix=\"admin\"} "),
        "{body}"
    );
    assert!(
        body.contains("envoy_cluster_membership_total{envoy_cluster_name=\"service1\"} 1\n"),
        "{body}"
    );
    assert!(body.contains("# TYPE envoy_http_downstream_rq_time histogram\n"));
    assert!(body.contains(
        "envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix=\"admin\",le=\"0.5\"} "
    ));
    assert!(body.contains(
        "envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix=\"admin\",le=\"+Inf\"} "
    ));
    assert!(body.contains("envoy_http_downstream_rq_time_count{envoy_http_conn_manager_prefix=\"admin\"} "));
    // One # TYPE per metric name.
    let mut types: Vec<&str> = body.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let n = types.len();
    types.dedup();
    assert_eq!(types.len(), n);
    assert_eq!(get(admin, "/stats?format=prometheus", &[]).await.status, 200);
    let families = parse_with_prometheus_client(&body);
    assert!(
        families
            .iter()
            .any(|f| f.starts_with("envoy_http_downstream_rq_time histogram")),
        "{families:?}"
    );
    assert!(families.iter().any(|f| f.starts_with("envoy_server_live gauge")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quitquitquit_exits_0() {
    let (mut legate, admin, _) = start().await;
    let r = post(admin, "/quitquitquit").await;
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = legate.child.try_wait() {
            assert_eq!(status.code(), Some(0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "legate did not exit after /quitquitquit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_admin_address_no_admin_listener() {
    let o = origin::start("service1").await;
    let cfg = config(o).replace(
        "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n",
        "",
    );
    let legate = Legate::start(&cfg, &[]);
    assert_eq!(legate.admin, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_listeners_stops_inbound_then_all() {
    let o = origin::start("service1").await;
    // Two listeners on the same routes: `front` (outbound by default) and
    // `inbound` (traffic_direction: INBOUND), plus the admin.
    let base = super::support::front_bootstrap(
        "",
        &super::support::route("/", "service1", ""),
        &super::support::static_cluster("service1", o, ""),
    );
    let listener = base
        .split("  listeners:\n")
        .nth(1)
        .and_then(|rest| rest.split("  clusters:\n").next())
        .expect("listener block")
        .to_string();
    let inbound = listener.replacen(
        "- name: front\n",
        "- name: inbound\n    traffic_direction: INBOUND\n",
        1,
    );
    let config = base.replacen("  clusters:\n", &format!("{inbound}  clusters:\n"), 1)
        + "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n";
    let legate = Legate::start(&config, &[]);
    let admin = legate.admin.expect("admin address");
    let (front, inb) = (legate.addr("front"), legate.addr("inbound"));
    assert_eq!(get(inb, "/", &[]).await.status, 200);

    let r = post(admin, "/drain_listeners?inboundonly").await;
    assert_eq!((r.status, r.body.as_str()), (200, "OK\n"));
    // Bounded wait until the inbound listener refuses connections.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(inb).await.is_ok() {
        assert!(Instant::now() < deadline, "the inbound listener still accepts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get(front, "/", &[]).await.status,
        200,
        "the outbound listener must keep serving"
    );

    let r = post(admin, "/drain_listeners").await;
    assert_eq!(r.status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(front).await.is_ok() {
        assert!(Instant::now() < deadline, "the front listener still accepts");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The process stays up and the admin still answers.
    assert_eq!(get(admin, "/ready", &[]).await.status, 200);
}
