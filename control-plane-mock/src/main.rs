//! `control-plane-mock`: serve a snapshot file over xDS, follow its edits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use control_plane_mock::{Options, Server, Snapshot};

const ABOUT: &str = "A small, correct xDS v3 control plane for local development, demos and tests.";

const LONG_ABOUT: &str = "\
A small, correct xDS v3 control plane for local development, demos and tests.

Serves the resources of SNAPSHOT (YAML or JSON) over gRPC (h2c) on --xds:
  envoy.service.discovery.v3.AggregatedDiscoveryService  (ADS: StreamAggregatedResources, DeltaAggregatedResources)
  envoy.service.listener.v3.ListenerDiscoveryService     (LDS: StreamListeners, DeltaListeners)
  envoy.service.route.v3.RouteDiscoveryService           (RDS: StreamRoutes, DeltaRoutes)
  envoy.service.cluster.v3.ClusterDiscoveryService       (CDS: StreamClusters, DeltaClusters)
  envoy.service.endpoint.v3.EndpointDiscoveryService     (EDS: StreamEndpoints, DeltaEndpoints)
Wildcard and named subscriptions, versions and nonces per type, ACK/NACK (by error_detail),
no re-send after a NACK until the snapshot changes, SotW full-state removal for LDS/CDS,
delta removed_resources and initial_resource_versions. Other type URLs get empty answers.

SNAPSHOT FILE (resources in Envoy's v3 YAML/JSON form, \"@type\" optional in typed lists):
  version: v1          # optional version_info; default: a counter bumped on every change
  listeners: [...]     # envoy.config.listener.v3.Listener
  routes: [...]        # envoy.config.route.v3.RouteConfiguration
  clusters: [...]      # envoy.config.cluster.v3.Cluster
  endpoints: [...]     # envoy.config.endpoint.v3.ClusterLoadAssignment
  resources: [...]     # any of the above, each with its \"@type\"
  nodes:               # per-node overrides, merged by name over the lists above
    <node-id>: {listeners: [...], routes: [...], clusters: [...], endpoints: [...]}
It is decoded with legate's config loader: the same leniencies and the same errors
(file:line: field.path: what was expected) as a legate bootstrap.

The file is watched: a good edit is published (new version, pushed to every subscribed
stream); a broken one is rejected with its error and the previous snapshot keeps being
served. Warnings (a route to a missing cluster, an EDS cluster without endpoints, an RDS
name with no route configuration) are logged and listed in /events.

ADMIN API (JSON, on --admin; loopback by default):
  GET    /healthz                               liveness, version being served
  GET    /snapshot                              the snapshot in the file format
  PUT    /snapshot                              replace it (body: snapshot file)
  GET    /resources/{type}                      names and versions (type: listeners|routes|clusters|endpoints)
  GET    /resources/{type}/{name}[?node=ID]     one resource
  PUT    /resources/{type}/{name}[?node=ID]     add or replace one (body: the resource); ?node: an override
  DELETE /resources/{type}/{name}[?node=ID]     remove one
  GET    /clients                               streams: node, service, mode, per type: subscription,
                                                versions sent and ACKed, last NACK with its error
  GET    /events[?since=SEQ]                    request/ACK/NACK/response/snapshot log, newest last, bounded
Admin edits last until the file changes again.

EXAMPLE:
  control-plane-mock control-plane-mock/examples/front-proxy.yaml
  curl -s localhost:18001/clients";

#[derive(Parser, Debug)]
#[command(name = "control-plane-mock", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    /// Snapshot file (YAML or JSON). Without it the mock starts empty.
    snapshot: Option<PathBuf>,

    /// Address of the xDS gRPC server.
    #[arg(long, default_value = "127.0.0.1:18000", value_name = "ADDR")]
    xds: SocketAddr,

    /// Address of the JSON admin API.
    #[arg(long, default_value = "127.0.0.1:18001", value_name = "ADDR")]
    admin: SocketAddr,

    /// Do not serve the admin API.
    #[arg(long)]
    no_admin: bool,

    /// Do not watch the snapshot file for changes.
    #[arg(long)]
    no_watch: bool,

    /// Decode and check the snapshot file, print its warnings, and exit
    /// (0: good, 1: rejected).
    #[arg(long)]
    check: bool,

    /// How many events /events keeps.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    events: usize,

    /// Log filter (tracing's EnvFilter syntax, e.g. `debug`); RUST_LOG also works.
    #[arg(long, default_value = "info", value_name = "FILTER")]
    log: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let snapshot = match &cli.snapshot {
        Some(path) => match Snapshot::from_file(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("control-plane-mock: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => Snapshot::new(),
    };
    let warnings = snapshot.warnings();
    if cli.check {
        for w in &warnings {
            println!("warning: {w}");
        }
        println!(
            "{}: ok, {} resources, {} warnings",
            cli.snapshot
                .as_ref()
                .map_or("(empty)".into(), |p| p.display().to_string()),
            snapshot.default.len(),
            warnings.len()
        );
        return ExitCode::SUCCESS;
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("control-plane-mock: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, snapshot)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control-plane-mock: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, snapshot: Snapshot) -> Result<(), control_plane_mock::Error> {
    let options = Options {
        event_capacity: cli.events,
    };
    let handle = Server::start_with(cli.xds, snapshot, options).await?;
    tracing::info!(
        "xDS (gRPC, h2c) on {} serving version {}",
        handle.addr(),
        handle.version()
    );
    if !cli.no_admin {
        let a = handle.start_admin(cli.admin).await?;
        tracing::info!("admin API on http://{a}/");
    }
    if let (Some(path), false) = (&cli.snapshot, cli.no_watch) {
        handle.watch_file(path)?;
        tracing::info!("watching {}", path.display());
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
