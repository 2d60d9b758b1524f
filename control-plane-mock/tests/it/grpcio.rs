//! A client nobody on the team wrote: grpcio's built-in xDS client (gRPC's
//! C core, from PyPI) resolves `xds:///echo.test` through the mock — LDS
//! (an API listener with an HTTP connection manager) → RDS → CDS (EDS) →
//! EDS — to one of two echo servers, then follows an endpoint update.
//!
//! Needs `python3` with `grpcio` (`python3 -m pip install grpcio`); without
//! them the test fails and says so.

use std::process::Stdio;
use std::time::Duration;

use control_plane_mock::{EventKind, ResourceType, Server, Snapshot};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use super::support::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc_xds_client.py");

fn snapshot(port: u16) -> String {
    format!(
        r#"
listeners:
- name: echo.test
  api_listener:
    api_listener:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: echo
      rds:
        route_config_name: echo-route
        config_source: {{ads: {{}}, resource_api_version: V3}}
      http_filters:
      - name: router
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
routes:
- name: echo-route
  virtual_hosts:
  - name: echo
    domains: ["*"]
    routes:
    - match: {{prefix: ""}}
      route: {{cluster: echo-cluster}}
clusters:
- name: echo-cluster
  type: EDS
  lb_policy: ROUND_ROBIN
  eds_cluster_config: {{eds_config: {{ads: {{}}, resource_api_version: V3}}}}
endpoints:
- cluster_name: echo-cluster
  endpoints:
  - locality: {{zone: z}}
    load_balancing_weight: 1
    lb_endpoints:
    - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}
"#
    )
}

fn endpoints(port: u16) -> String {
    format!(
        "{{cluster_name: echo-cluster, endpoints: [{{locality: {{zone: z}}, load_balancing_weight: 1, lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_xds_client_resolves_and_follows_an_update() {
    let mock = Server::start(loopback(), Snapshot::new()).await.unwrap();
    let mut child = match Command::new("python3")
        .arg(SCRIPT)
        .arg(mock.addr().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "cannot run python3 ({e}); the test needs python3 with grpcio (python3 -m pip install grpcio)"
        ),
    };
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let step = Duration::from_secs(90);
    let mut next_line = async |what: &str| -> String {
        match tokio::time::timeout(step, lines.next_line()).await {
            Ok(Ok(Some(l))) if !l.starts_with("FAIL") => l,
            Ok(Ok(Some(l))) => panic!("the grpcio client failed waiting for {what}: {l}"),
            Ok(Ok(None)) => panic!(
                "the grpcio client exited before {what} (is grpcio installed? python3 -m pip install grpcio)"
            ),
            Ok(Err(e)) => panic!("reading the grpcio client: {e}"),
            Err(_) => panic!("no {what} from the grpcio client within {step:?}"),
        }
    };

    let ports = next_line("PORTS").await;
    let ports: Vec<u16> = ports
        .strip_prefix("PORTS ")
        .unwrap_or_else(|| panic!("expected PORTS, got {ports}"))
        .split(' ')
        .map(|p| p.parse().expect("a port"))
        .collect();
    let (a, b) = (ports[0], ports[1]);
    let s = Snapshot::from_yaml(&snapshot(a)).unwrap();
    assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    mock.set_snapshot(s);
    stdin.write_all(b"GO\n").await.unwrap();
    assert_eq!(next_line("GOT A").await, "GOT A");

    // The client walked the whole chain and ACKed every type.
    for ty in ResourceType::ALL {
        let url = ty.type_url();
        let ack = mock
            .wait_for_event(WAIT, |e| {
                e.kind == EventKind::Ack && e.type_url == url && e.node_id == "grpc-python"
            })
            .await;
        assert!(
            ack.is_some(),
            "grpcio ACKed no {url}; events: {:#?}",
            mock.events()
        );
    }
    assert!(
        !mock.events().iter().any(|e| e.kind == EventKind::Nack),
        "grpcio NACKed: {:#?}",
        mock.events()
            .iter()
            .filter(|e| e.kind == EventKind::Nack)
            .collect::<Vec<_>>()
    );
    let listeners = &mock.clients()[0].types[ResourceType::Listener.type_url()];
    assert_eq!(listeners.subscribed, ["echo.test"], "a named LDS subscription");

    // Move the service: the channel follows without a restart.
    mock.upsert(None, ResourceType::Endpoint, &endpoints(b)).unwrap();
    stdin.write_all(b"NEXT\n").await.unwrap();
    assert_eq!(next_line("GOT B").await, "GOT B");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the grpcio client exits")
        .expect("wait");
    assert!(status.success(), "the grpcio client exited with {status}");
    mock.shutdown().await;
}
