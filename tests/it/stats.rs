//! Data-plane stats as Envoy names them, read back through the admin's
//! `/stats` after real traffic.

use std::collections::HashMap;

use super::support::client::get;
use super::support::{front_bootstrap, origin, route, static_cluster, Legate};

async fn stats(admin: std::net::SocketAddr) -> HashMap<String, String> {
    let r = get(admin, "/stats", &[]).await;
    assert_eq!(r.status, 200);
    r.body
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_under_envoy_names() {
    let o = origin::start("service1").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let routes = format!(
        "{}{}",
        route("/dead", "dead", ""),
        route("/service/1", "service1", "")
    );
    let clusters = format!(
        "{}{}",
        static_cluster("service1", o, ""),
        static_cluster("dead", dead, "")
    );
    let config = front_bootstrap("", &routes, &clusters)
        + "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n";
    let legate = Legate::start(&config, &["--concurrency", "1"]);
    let admin = legate.admin.expect("admin address");
    let front = legate.addr("front");
    for _ in 0..3 {
        assert_eq!(get(front, "/service/1", &[]).await.status, 200);
    }
    assert_eq!(get(front, "/nowhere", &[]).await.status, 404);
    assert_eq!(get(front, "/dead", &[]).await.status, 503);

    let s = stats(admin).await;
    let listener = format!("listener.127.0.0.1_{}.downstream_cx_total", front.port());
    let want: &[(&str, &str)] = &[
        ("cluster.service1.upstream_rq_total", "3"),
        ("cluster.service1.upstream_rq_200", "3"),
        ("cluster.service1.upstream_rq_2xx", "3"),
        ("cluster.service1.upstream_rq_completed", "3"),
        ("cluster.service1.upstream_cx_total", "1"),
        ("cluster.service1.upstream_cx_http1_total", "1"),
        ("cluster.service1.upstream_rq_pending_total", "1"),
        ("cluster.service1.membership_total", "1"),
        ("cluster.service1.membership_healthy", "1"),
        ("cluster.dead.upstream_cx_connect_fail", "1"),
        ("cluster.dead.upstream_rq_503", "1"),
        ("http.ingress_http.downstream_rq_total", "5"),
        ("http.ingress_http.downstream_rq_2xx", "3"),
        ("http.ingress_http.downstream_rq_4xx", "1"),
        ("http.ingress_http.downstream_rq_5xx", "1"),
        ("http.ingress_http.no_route", "1"),
        ("http.ingress_http.rq_total", "4"),
        ("cluster_manager.active_clusters", "2"),
        ("cluster_manager.cluster_added", "2"),
        ("server.state", "0"),
        ("listener_manager.workers_started", "1"),
    ];
    let mut wrong = Vec::new();
    for (name, value) in want {
        if s.get(*name).map(String::as_str) != Some(*value) {
            wrong.push(format!("{name}: want {value}, got {:?}", s.get(*name)));
        }
    }
    assert!(
        s.get(&listener)
            .is_some_and(|v| v.parse::<u64>().unwrap_or(0) >= 5),
        "{listener}: {:?}",
        s.get(&listener)
    );
    assert!(s.contains_key("server.total_connections"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_files_count_filesystem_stats() {
    let o = origin::start("service1").await;
    let dir = super::support::Dir::new();
    let log = dir.0.path().join("access.log");
    let hcm = format!(
        "          access_log:\n          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {}\n",
        log.display()
    );
    let config = front_bootstrap(
        &hcm,
        &route("/", "service1", ""),
        &static_cluster("service1", o, ""),
    ) + "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n";
    let legate = Legate::start(&config, &[]);
    let admin = legate.admin.expect("admin address");
    for _ in 0..4 {
        assert_eq!(get(legate.addr("front"), "/", &[]).await.status, 200);
    }
    // The writer thread counts lines as it takes them, and writes within
    // about a second: wait (bounded) for both.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let s = stats(admin).await;
        let n = |k: &str| s.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        if n("filesystem.write_buffered") >= 4 && n("filesystem.write_completed") >= 1 {
            assert_eq!(n("filesystem.write_failed"), 0);
            assert!(
                s.contains_key("filesystem.flushed_by_timer") && s.contains_key("filesystem.reopen_failed")
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "filesystem stats did not move: {s:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 4);
}
