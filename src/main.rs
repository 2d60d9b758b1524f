//! The `legate` binary: Envoy's command line in front of the library.

use std::process::ExitCode;

// malloc/free were 12% of the worker's CPU under load with glibc's allocator;
// mimalloc keeps per-thread heaps, which suits one runtime per worker thread.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns the freed pages of the calling thread (the xDS thread) and of the
/// arenas to the OS now rather than after mimalloc's purge delay, which an
/// idle thread never reaches. Called after large xDS updates (see
/// `legate::allocator`). Measured with the xDS scale benchmark
/// (`xds_scale 10000`): RSS per cluster 12.5 -> 7.3 KiB (SotW) and
/// 13.5 -> 7.8 KiB (delta), the transient garbage of decoding 10,000
/// resources; one call took 0.2-1.5 ms, after the update's ACK.
fn release_freed_memory() {
    // SAFETY: `mi_collect` takes no pointers and may be called at any time
    // from any thread; `force` also purges pages freed by other threads.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    }
}

use clap::Parser;
use tracing_subscriber::EnvFilter;

use legate::cli::{component_directives, Args, Mode};
use legate::config;

fn init_logging(args: &Args) -> Result<(), String> {
    use tracing_subscriber::prelude::*;
    let mut filter = EnvFilter::new(args.log_level.directive());
    if let Some(spec) = &args.component_log_level {
        for d in component_directives(spec)? {
            filter = filter.add_directive(d.parse().map_err(|e| format!("--component-log-level: {e}"))?);
        }
    }
    // The filter can be swapped at run time by the admin's `/logging`.
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    legate::admin::logging::set_reloader(Box::new(move |directives: &str| {
        let filter = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    }));
    let output = match &args.log_path {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("--log-path {}: {e}", path.display()))?;
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .boxed()
        }
        None => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry().with(filter).with(output).init();
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    legate::allocator::set_release(release_freed_memory);
    if let Err(e) = init_logging(&args) {
        eprintln!("legate: {e}");
        return ExitCode::FAILURE;
    }
    // `--mode validate` also checks xDS response files (what
    // path_config_source points at); Envoy itself only validates bootstraps.
    if args.mode == Mode::Validate && args.config_yaml.is_none() {
        if let Some(path) = args.config_path.as_deref() {
            let is_xds = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| config::yaml::parse(&t).ok())
                .is_some_and(|n| config::is_xds_file(&n));
            if is_xds {
                return match config::load_xds_file(path) {
                    Ok(f) => {
                        for w in &f.warnings {
                            tracing::warn!("{w}");
                        }
                        println!(
                            "configuration '{}' OK (xDS response, {} resources)",
                            path.display(),
                            f.resources.len()
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("legate: error initializing configuration: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
        }
    }
    let loaded = match config::load_bootstrap(args.config_path.as_deref(), args.config_yaml.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            // stderr directly as well as the log: a bad config must be seen
            // even with `-l off` or `--log-path`.
            eprintln!("legate: error initializing configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut loaded = loaded;
    config::apply_node_overrides(
        &mut loaded.bootstrap,
        args.service_node.as_deref(),
        args.service_cluster.as_deref(),
        args.service_zone.as_deref(),
    );
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let shown = args
        .config_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "--config-yaml".to_string());
    match args.mode {
        Mode::Validate => {
            // What serving would compile (route tables, clusters, listener
            // options), without binding or resolving anything.
            if let Err(e) = legate::model::Snapshot::from_bootstrap(&loaded.bootstrap) {
                eprintln!("legate: error initializing configuration: {shown}: {e}");
                return ExitCode::FAILURE;
            }
            if args.print_config {
                match config::to_yaml(&loaded.dynamic) {
                    Ok(y) => print!("{y}"),
                    Err(e) => {
                        eprintln!("legate: cannot print the config: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            println!("configuration '{shown}' OK");
            ExitCode::SUCCESS
        }
        Mode::InitOnly => ExitCode::SUCCESS,
        Mode::Serve => {
            let concurrency = args
                .concurrency
                .filter(|n| *n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let sidecar = (!args.xds_server.is_empty()).then(|| legate::xds::manager::Sidecar {
                servers: args.xds_server.clone(),
                delta: args.xds_delta,
                cache: args.xds_cache.clone(),
            });
            let opts = legate::runtime::Options {
                concurrency,
                drain_time: std::time::Duration::from_secs(args.drain_time_s),
                sidecar,
            };
            match legate::runtime::run(&loaded, opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("legate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
