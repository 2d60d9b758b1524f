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

// ---------------------------------------------------------------------------
// Admin JSON decoded as Envoy's own admin messages.

/// Decodes an admin JSON body with legate's config loader as the message
/// `type_name`: every field must exist in that message (or, inside an
/// `Any`, in the message its `@type` names) and have its proto3 JSON form,
/// so this proves the body is that Envoy message, not just similar JSON.
fn decode_admin<M: prost::Message + Default>(type_name: &str, body: &str) -> M {
    let node = legate::config::yaml::parse(body).unwrap_or_else(|e| panic!("{type_name}: {e:?}\n{body}"));
    let mut warnings = Vec::new();
    let mut lines = std::collections::HashMap::new();
    let msg = legate::config::decode::decode(type_name, &node, &mut warnings, &mut lines)
        .unwrap_or_else(|e| panic!("{type_name}: {e}\n{body}"));
    assert!(warnings.is_empty(), "{type_name}: {warnings:?}");
    msg.transcode_to::<M>()
        .unwrap_or_else(|e| panic!("{type_name}: {e}"))
}

/// Unpacks an `Any` known to hold `M`, checking its type URL.
fn unpack<M: prost::Message + Default>(any: &prost_types::Any, type_name: &str) -> M {
    assert_eq!(any.type_url, format!("type.googleapis.com/{type_name}"));
    M::decode(any.value.as_slice()).unwrap_or_else(|e| panic!("{type_name}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dump_decodes_as_envoy_config_dump() {
    use legate::proto::envoy::admin::v3 as admin_pb;
    use legate::proto::envoy::config::{
        cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
        route::v3::RouteConfiguration,
    };
    let (legate, admin, o) = start().await;
    let front = legate.addr("front");

    let r = get(admin, "/config_dump", &[]).await;
    assert_eq!(r.status, 200);
    let dump: admin_pb::ConfigDump = decode_admin("envoy.admin.v3.ConfigDump", &r.body);
    assert_eq!(dump.configs.len(), 6, "{}", r.body);

    let b: admin_pb::BootstrapConfigDump = unpack(&dump.configs[0], "envoy.admin.v3.BootstrapConfigDump");
    let bootstrap = b.bootstrap.expect("bootstrap");
    assert_eq!(bootstrap.node.as_ref().map(|n| n.id.as_str()), Some("front-node"));
    assert_eq!(
        bootstrap.node.as_ref().map(|n| n.cluster.as_str()),
        Some("front-cluster")
    );
    let updated = b.last_updated.expect("last_updated");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        (now - 600..=now).contains(&updated.seconds),
        "last_updated {updated:?} is the start time"
    );

    let c: admin_pb::ClustersConfigDump = unpack(&dump.configs[1], "envoy.admin.v3.ClustersConfigDump");
    assert_eq!(c.static_clusters.len(), 1);
    let cluster: Cluster = unpack(
        c.static_clusters[0].cluster.as_ref().expect("cluster"),
        "envoy.config.cluster.v3.Cluster",
    );
    assert_eq!(cluster.name, "service1");
    assert!(c.static_clusters[0].last_updated.is_some());
    assert!(c.dynamic_active_clusters.is_empty());

    let l: admin_pb::ListenersConfigDump = unpack(&dump.configs[2], "envoy.admin.v3.ListenersConfigDump");
    let listener: Listener = unpack(
        l.static_listeners[0].listener.as_ref().expect("listener"),
        "envoy.config.listener.v3.Listener",
    );
    assert_eq!(listener.name, "front");
    // The configured address (port 0), not the bound one.
    assert_ne!(front.port(), 0);

    let _: admin_pb::ScopedRoutesConfigDump =
        unpack(&dump.configs[3], "envoy.admin.v3.ScopedRoutesConfigDump");
    let routes: admin_pb::RoutesConfigDump = unpack(&dump.configs[4], "envoy.admin.v3.RoutesConfigDump");
    let rc: RouteConfiguration = unpack(
        routes.static_route_configs[0]
            .route_config
            .as_ref()
            .expect("route_config"),
        "envoy.config.route.v3.RouteConfiguration",
    );
    assert_eq!(rc.name, "local_route");
    assert_eq!(rc.virtual_hosts[0].domains, ["*"]);
    let _: admin_pb::SecretsConfigDump = unpack(&dump.configs[5], "envoy.admin.v3.SecretsConfigDump");

    // ?include_eds adds the endpoints dump, after the clusters.
    let r = get(admin, "/config_dump?include_eds", &[]).await;
    let dump: admin_pb::ConfigDump = decode_admin("envoy.admin.v3.ConfigDump", &r.body);
    assert_eq!(dump.configs.len(), 7, "{}", r.body);
    let e: admin_pb::EndpointsConfigDump = unpack(&dump.configs[2], "envoy.admin.v3.EndpointsConfigDump");
    let cla: ClusterLoadAssignment = unpack(
        e.static_endpoint_configs[0]
            .endpoint_config
            .as_ref()
            .expect("endpoint_config"),
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
    );
    assert_eq!(cla.cluster_name, "service1");
    let lb = &cla.endpoints[0].lb_endpoints[0];
    let Some(legate::proto::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(ep)) =
        &lb.host_identifier
    else {
        panic!("an endpoint: {lb:?}");
    };
    let addr = ep.address.as_ref().expect("address");
    let Some(legate::proto::envoy::config::core::v3::address::Address::SocketAddress(sa)) = &addr.address
    else {
        panic!("a socket address: {addr:?}");
    };
    assert_eq!(sa.address, o.ip().to_string());

    // One element of a repeated field per config.
    let r = get(admin, "/config_dump?resource=static_clusters", &[]).await;
    let dump: admin_pb::ConfigDump = decode_admin("envoy.admin.v3.ConfigDump", &r.body);
    let sc: admin_pb::clusters_config_dump::StaticCluster = unpack(
        &dump.configs[0],
        "envoy.admin.v3.ClustersConfigDump.StaticCluster",
    );
    assert!(sc.cluster.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_endpoints_decode_as_envoy_admin_messages() {
    use legate::proto::envoy::admin::v3 as admin_pb;
    use legate::proto::envoy::config::core::v3::address::Address as A;
    let (legate, admin, o) = start().await;
    let front = legate.addr("front");
    assert_eq!(get(front, "/x", &[]).await.status, 200);

    let r = get(admin, "/server_info", &[]).await;
    let info: admin_pb::ServerInfo = decode_admin("envoy.admin.v3.ServerInfo", &r.body);
    assert_eq!(info.state, admin_pb::server_info::State::Live as i32);
    assert_eq!(info.node.as_ref().map(|n| n.id.as_str()), Some("front-node"));
    let opts = info.command_line_options.expect("command_line_options");
    assert_eq!(opts.concurrency, 2);
    assert_eq!(opts.mode, admin_pb::command_line_options::Mode::Serve as i32);
    assert_eq!(opts.log_level, "info");
    assert!(opts.config_path.ends_with("legate.yaml"), "{}", opts.config_path);
    assert!(info.uptime_current_epoch.is_some());

    let r = get(admin, "/clusters?format=json", &[]).await;
    let clusters: admin_pb::Clusters = decode_admin("envoy.admin.v3.Clusters", &r.body);
    let c = &clusters.cluster_statuses[0];
    assert_eq!(c.name, "service1");
    assert!(!c.added_via_api);
    let thresholds = &c.circuit_breakers.as_ref().expect("circuit_breakers").thresholds;
    assert_eq!(thresholds.len(), 2);
    assert_eq!(thresholds[0].max_connections, Some(1024));
    let h = &c.host_statuses[0];
    let Some(A::SocketAddress(sa)) = h.address.as_ref().and_then(|a| a.address.as_ref()) else {
        panic!("a socket address: {h:?}");
    };
    assert_eq!(sa.address, o.ip().to_string());
    let rq_total = h.stats.iter().find(|s| s.name == "rq_total").expect("rq_total");
    assert_eq!(rq_total.value, 1);
    assert_eq!(rq_total.r#type, admin_pb::simple_metric::Type::Counter as i32);
    let rq_active = h.stats.iter().find(|s| s.name == "rq_active").expect("rq_active");
    assert_eq!(rq_active.r#type, admin_pb::simple_metric::Type::Gauge as i32);
    assert_eq!(
        h.health_status.as_ref().map(|s| s.eds_health_status),
        Some(legate::proto::envoy::config::core::v3::HealthStatus::Healthy as i32)
    );

    let r = get(admin, "/listeners?format=json", &[]).await;
    let listeners: admin_pb::Listeners = decode_admin("envoy.admin.v3.Listeners", &r.body);
    let l = &listeners.listener_statuses[0];
    assert_eq!(l.name, "front");
    let Some(A::SocketAddress(sa)) = l.local_address.as_ref().and_then(|a| a.address.as_ref()) else {
        panic!("a socket address: {l:?}");
    };
    assert_eq!(
        sa.port_specifier,
        Some(
            legate::proto::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(u32::from(
                front.port()
            ))
        )
    );

    let r = get(admin, "/memory", &[]).await;
    let m: admin_pb::Memory = decode_admin("envoy.admin.v3.Memory", &r.body);
    assert!(m.allocated > 0);
}

// ---------------------------------------------------------------------------
// admin.access_log

/// [`config`] with `admin_extra` lines added to the `admin:` block (2-space indent).
fn config_with_admin(origin: SocketAddr, admin_extra: &str) -> String {
    config(origin).replacen("admin:\n", &format!("admin:\n{admin_extra}"), 1)
}

fn file_logger(path: &std::path::Path, extra: &str) -> String {
    format!(
        "  access_log:\n  - name: envoy.access_loggers.file\n    typed_config:\n      \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n      path: {}\n{extra}",
        path.display()
    )
}

/// Envoy's default access-log line for one admin request: no upstream, no
/// request id (the admin generates none), `x-forwarded-for` set by the
/// admin's connection manager (which uses the remote address).
fn default_line_regex(
    method: &str,
    path: &str,
    code: u16,
    received: u64,
    sent: u64,
    ua: &str,
) -> regex::Regex {
    regex::Regex::new(&format!(
        r#"^\[\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\] "{method} {path} HTTP/1\.1" {code} - {received} {sent} \d+ - "(?P<xff>[^"]+)" "{ua}" "-" "127\.0\.0\.1:\d+" "-"$"#,
        path = regex::escape(path),
        ua = regex::escape(ua),
    ))
    .expect("regex")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_are_access_logged() {
    let logs = super::support::Dir::new();
    let log_path = logs.0.path().join("admin.log");
    let o = origin::start("service1").await;
    let mut legate = Legate::start(&config_with_admin(o, &file_logger(&log_path, "")), &[]);
    let admin = legate.admin.expect("admin address");

    let r = get(admin, "/ready", &[("user-agent", "curl/8.0")]).await;
    assert_eq!(r.body, "LIVE\n");
    let r = send(
        admin,
        "POST",
        "/healthcheck/ok",
        &[],
        Bytes::from_static(b"hello"),
        false,
    )
    .await;
    assert_eq!(r.body, "OK\n");
    // Data-plane requests go to the listener's logs, not the admin's.
    assert_eq!(get(legate.addr("front"), "/x", &[]).await.status, 200);

    // Lines reach the file within about a second, and at exit for sure.
    assert!(
        legate.terminate().is_some_and(|s| s.success()),
        "legate exits 0 on SIGTERM"
    );
    let text = std::fs::read_to_string(&log_path).expect("the admin access log exists");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let want = [
        default_line_regex("GET", "/ready", 200, 0, 5, "curl/8.0"),
        default_line_regex("POST", "/healthcheck/ok", 200, 5, 3, "-"),
    ];
    for (line, re) in lines.iter().zip(&want) {
        let caps = re
            .captures(line)
            .unwrap_or_else(|| panic!("`{line}` does not match {}", re.as_str()));
        // A loopback client is replaced by the server's own address, as Envoy does.
        let xff: std::net::IpAddr = caps["xff"].parse().expect("x-forwarded-for is one IP");
        assert!(xff.is_ipv4(), "{xff}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_access_log_path_and_custom_formats() {
    let logs = super::support::Dir::new();
    let legacy = logs.0.path().join("legacy.log");
    let custom = logs.0.path().join("custom.log");
    let o = origin::start("service1").await;
    // The legacy field and a v3 logger side by side; the v3 one with its
    // own format and a filter that keeps only errors.
    let extra = format!(
        "  access_log_path: {}\n{}",
        legacy.display(),
        file_logger(
            &custom,
            "      log_format:\n        text_format_source:\n          inline_string: \"%RESPONSE_CODE% %REQ(:PATH)% %BYTES_RECEIVED% %RESPONSE_CODE_DETAILS% %REQ(X-FORWARDED-PROTO)% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\\n\"\n    filter:\n      status_code_filter:\n        comparison: {op: GE, value: {default_value: 400, runtime_key: admin_errors}}\n"
        )
    );
    let mut legate = Legate::start(&config_with_admin(o, &extra), &[]);
    let admin = legate.admin.expect("admin address");
    let ready = get(admin, "/ready", &[]).await;
    assert_eq!(ready.status, 200);
    let nope = get(admin, "/nope?x=1", &[]).await;
    assert_eq!(nope.status, 404);
    // A state-changing endpoint with GET: Envoy's 405.
    let fail = get(admin, "/healthcheck/fail", &[]).await;
    assert_eq!(fail.status, 405);
    assert!(legate.terminate().is_some_and(|s| s.success()));

    let text = std::fs::read_to_string(&legacy).expect("access_log_path is written");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let want = [
        ("/ready", ready),
        ("/nope?x=1", nope),
        ("/healthcheck/fail", fail),
    ];
    for (line, (path, reply)) in lines.iter().zip(&want) {
        let re = default_line_regex("GET", path, reply.status, 0, reply.body.len() as u64, "-");
        assert!(re.is_match(line), "`{line}` does not match {}", re.as_str());
    }
    let text = std::fs::read_to_string(&custom).expect("custom log");
    assert_eq!(
        text,
        "404 /nope?x=1 0 admin_filter_response http 127.0.0.1\n\
         405 /healthcheck/fail 0 admin_filter_response http 127.0.0.1\n"
    );
}

#[test]
fn bad_admin_access_log_fails_startup_with_the_field_path() {
    let dir = super::support::Dir::new();
    let log = dir.0.path().join("a.log");
    let origin: SocketAddr = "127.0.0.1:9".parse().expect("address");
    let cases = [
        (
            file_logger(&log, "      format: \"%NOPE%\\n\"\n"),
            "admin.access_log[0].typed_config.format: unknown or unsupported command operator `%NOPE%`",
        ),
        (
            file_logger(&dir.0.path().join("missing/dir/a.log"), ""),
            "admin.access_log[0].typed_config.path: cannot open",
        ),
    ];
    for (extra, want) in cases {
        let path = dir.write("bad.yaml", &config_with_admin(origin, &extra));
        let mut child = std::process::Command::new(super::support::legate_bin())
            .args(["-c", path.to_str().expect("utf-8"), "--concurrency", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start legate");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("legate kept running with a bad admin access log ({want})");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read");
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(want), "`{want}` in:\n{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_show_endpoint_localities() {
    let o = origin::start("service1").await;
    let cluster = format!(
        "  - name: local\n    type: STATIC\n    load_assignment:\n      cluster_name: local\n      endpoints:\n      - locality: {{region: eu-west, zone: eu-west-1a, sub_zone: rack7}}\n        lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}}}]\n",
        o.port()
    );
    let config = super::support::front_bootstrap("", &super::support::route("/", "local", ""), &cluster)
        + "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n";
    let legate = Legate::start(&config, &[]);
    let admin = legate.admin.expect("admin");
    let text = get(admin, "/clusters", &[]).await.body;
    let host = format!("local::127.0.0.1:{}::", o.port());
    for line in ["region::eu-west", "zone::eu-west-1a", "sub_zone::rack7"] {
        assert!(
            text.contains(&format!("{host}{line}\n")),
            "{line} missing:\n{text}"
        );
    }
    let json = get(admin, "/clusters?format=json", &[]).await.json();
    let locality = &json["cluster_statuses"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "local"))
        .expect("cluster local")["host_statuses"][0]["locality"];
    assert_eq!(
        locality,
        &serde_json::json!({"region": "eu-west", "zone": "eu-west-1a", "sub_zone": "rack7"})
    );
}
