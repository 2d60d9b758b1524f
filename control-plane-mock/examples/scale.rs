//! Scale check: N clusters (EDS) with N ClusterLoadAssignments, decoded from
//! a snapshot file's text, served, and pushed to one ADS client over
//! loopback (SotW CDS, SotW EDS for all N names, then delta CDS), plus the
//! cost of one changed cluster.
//!
//!     cargo run --release -p control-plane-mock --example scale -- [N]
//!
//! RSS is the whole process (mock and client): an upper bound for the mock.

use std::time::{Duration, Instant};

use control_plane_mock::{ResourceType, Server, Snapshot};
use legate::proto::envoy::config::core::v3::Node;
use legate::proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use legate::proto::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tokio_stream::wrappers::ReceiverStream;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const WAIT: Duration = Duration::from_secs(120);

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn snapshot_text(n: usize) -> String {
    let mut s = String::with_capacity(n * 400);
    s.push_str("clusters:\n");
    for i in 0..n {
        s.push_str(&format!(
            "- {{name: svc-{i}, type: EDS, connect_timeout: 1s, lb_policy: ROUND_ROBIN, eds_cluster_config: {{eds_config: {{ads: {{}}, resource_api_version: V3}}}}}}\n"
        ));
    }
    s.push_str("endpoints:\n");
    for i in 0..n {
        let (a, b) = (i / 250, i % 250);
        s.push_str(&format!(
            "- {{cluster_name: svc-{i}, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 10.{a}.{b}.1, port_value: 8080}}}}}}}}, {{endpoint: {{address: {{socket_address: {{address: 10.{a}.{b}.2, port_value: 8080}}}}}}}}]}}]}}\n"
        ));
    }
    s
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let rss0 = rss_mib();
    let text = snapshot_text(n);
    println!(
        "snapshot: {n} clusters + {n} ClusterLoadAssignments, {:.1} MiB of YAML",
        text.len() as f64 / 1048576.0
    );

    let t = Instant::now();
    let snapshot = Snapshot::from_yaml(&text)?;
    let load = t.elapsed();
    drop(text);
    println!("load (decode + validate + hash):       {}", ms(load));

    let t = Instant::now();
    let mock = Server::start("127.0.0.1:0".parse()?, snapshot).await?;
    println!("publish (views):                       {}", ms(t.elapsed()));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", mock.addr()))?
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .connect()
        .await?;
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel.clone()).max_decoding_message_size(usize::MAX);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let node = Some(Node {
        id: "scale".into(),
        ..Default::default()
    });

    let t = Instant::now();
    tx.send(DiscoveryRequest {
        node: node.clone(),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await?;
    let cds = tokio::time::timeout(WAIT, stream.message())
        .await??
        .ok_or("stream ended")?;
    let cds_time = t.elapsed();
    println!(
        "SotW CDS push, {} clusters:           {}",
        cds.resources.len(),
        ms(cds_time)
    );
    tx.send(DiscoveryRequest {
        node: node.clone(),
        type_url: CDS.into(),
        version_info: cds.version_info.clone(),
        response_nonce: cds.nonce.clone(),
        ..Default::default()
    })
    .await?;

    let names: Vec<String> = (0..n).map(|i| format!("svc-{i}")).collect();
    let t = Instant::now();
    tx.send(DiscoveryRequest {
        node: node.clone(),
        type_url: EDS.into(),
        resource_names: names.clone(),
        ..Default::default()
    })
    .await?;
    let eds = tokio::time::timeout(WAIT, stream.message())
        .await??
        .ok_or("stream ended")?;
    println!(
        "SotW EDS push, {} assignments:        {}",
        eds.resources.len(),
        ms(t.elapsed())
    );
    tx.send(DiscoveryRequest {
        node: node.clone(),
        type_url: EDS.into(),
        version_info: eds.version_info.clone(),
        response_nonce: eds.nonce.clone(),
        resource_names: names,
        ..Default::default()
    })
    .await?;
    // Let the ACKs land so the next push is not answered as stale.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // One changed cluster: SotW re-sends the full CDS state (and that
    // cluster's endpoints); delta sends one of each.
    let t = Instant::now();
    mock.upsert(
        None,
        ResourceType::Cluster,
        "{name: svc-7, type: EDS, connect_timeout: 2s, eds_cluster_config: {eds_config: {ads: {}}}}",
    )?;
    let upd = tokio::time::timeout(WAIT, stream.message())
        .await??
        .ok_or("stream ended")?;
    println!(
        "one cluster changed, SotW CDS re-push:  {} ({} clusters)",
        ms(t.elapsed()),
        upd.resources.len()
    );

    let mut delta_client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let (dtx, drx) = tokio::sync::mpsc::channel(4);
    let mut dstream = delta_client
        .delta_aggregated_resources(ReceiverStream::new(drx))
        .await?
        .into_inner();
    let t = Instant::now();
    dtx.send(DeltaDiscoveryRequest {
        node: node.clone(),
        type_url: CDS.into(),
        ..Default::default()
    })
    .await?;
    let d = tokio::time::timeout(WAIT, dstream.message())
        .await??
        .ok_or("stream ended")?;
    println!(
        "delta CDS push, {} clusters:          {}",
        d.resources.len(),
        ms(t.elapsed())
    );
    dtx.send(DeltaDiscoveryRequest {
        type_url: CDS.into(),
        response_nonce: d.nonce.clone(),
        ..Default::default()
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    mock.upsert(
        None,
        ResourceType::Cluster,
        "{name: svc-8, type: EDS, connect_timeout: 2s, eds_cluster_config: {eds_config: {ads: {}}}}",
    )?;
    let d2 = loop {
        let m = tokio::time::timeout(WAIT, dstream.message())
            .await??
            .ok_or("stream ended")?;
        if m.resources.iter().any(|r| r.name == "svc-8") {
            break m;
        }
    };
    println!(
        "one cluster changed, delta push:        {} ({} cluster)",
        ms(t.elapsed()),
        d2.resources.len()
    );
    println!(
        "RSS: {:.0} MiB at start, {:.0} MiB now (mock + client in one process)",
        rss0,
        rss_mib()
    );
    mock.shutdown().await;
    Ok(())
}
