//! The process: a main runtime (signals, DNS, later admin and xDS) and
//! `--concurrency` data-plane workers, each a current-thread tokio runtime
//! with its own SO_REUSEPORT socket per listener.

pub mod dns;
pub mod listen;
pub mod listeners;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::Loaded;
use crate::model::{Shared, Snapshot};
use listeners::{ListenerManager, Workers};

pub struct Options {
    pub concurrency: usize,
    pub drain_time: Duration,
    /// `--xds-server` and friends: legate's sidecar mode.
    pub sidecar: Option<crate::xds::manager::Sidecar>,
}

/// Runs the proxy until SIGTERM/SIGINT, then drains. Returns the exit code.
pub fn run(loaded: &Loaded, opts: Options) -> Result<(), String> {
    let snapshot = Snapshot::from_bootstrap(&loaded.bootstrap)?;
    crate::model::stats::record_static_clusters(snapshot.clusters.len());
    let shared: Shared = Arc::new(ArcSwap::from_pointee(snapshot));
    let main_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("legate-main")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the main runtime: {e}"))?;

    // Admin access logs open files: fail on them before anything binds.
    if let Some(admin) = &loaded.bootstrap.admin {
        crate::access_log::build_all(&admin.access_log).map_err(|e| format!("admin.{e}"))?;
    }
    crate::admin::set_server_state(crate::admin::ServerState::PreInitializing);
    // DNS clusters resolve before the listeners accept, as Envoy warms them.
    main_rt.block_on(dns::start(shared.clone()));

    let (workers, threads, stop_workers) = start_workers(opts.concurrency)?;
    let listeners = Arc::new(ListenerManager::new(
        workers.clone(),
        shared.clone(),
        opts.drain_time,
    ));
    // Static listeners bind now, so a taken port stops startup; they accept
    // once the server is initialized (at once without xDS).
    let mut statics = Vec::new();
    for l in shared.load().listeners.iter() {
        let bound = listeners.bind(l)?;
        statics.push((l.clone(), bound));
    }
    let static_count = statics.len();
    let xds = crate::xds::manager::Manager::start(
        loaded,
        &main_rt,
        shared.clone(),
        listeners.clone(),
        statics,
        opts.sidecar.clone(),
    )?;

    // --- Admin interface and server stats (src/admin, src/stats.rs) ---
    // Logged before "all N workers started": tests read the admin address
    // from the log up to that line.
    crate::admin::init_server_stats(opts.concurrency, static_count);
    let drain_listeners: crate::admin::DrainListeners = {
        let listeners = listeners.clone();
        Arc::new(move |inbound_only: bool| listeners.drain(inbound_only))
    };
    let quit = start_admin(
        loaded,
        &main_rt,
        &shared,
        &listeners,
        xds.clone(),
        opts.concurrency,
        drain_listeners,
    )?
    .map(|s| s.quit.clone());
    // --- end admin ---
    tracing::info!("all {} workers started", opts.concurrency);

    main_rt.block_on(async {
        let cause = wait_for_shutdown_signal(quit).await;
        // A signal drains for up to --drain-time-s; /quitquitquit asks for a
        // prompt exit, so requests in flight get at most QUIT_DRAIN.
        let drain_time = match cause {
            Shutdown::Signal => opts.drain_time,
            Shutdown::Quit => opts.drain_time.min(QUIT_DRAIN),
        };
        tracing::info!("shutting down: draining for up to {drain_time:?}");
        crate::admin::set_server_state(crate::admin::ServerState::Draining);
        listeners.drain(false);
        let deadline = tokio::time::Instant::now() + drain_time;
        while workers.active.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    crate::access_log::sink::flush_all();
    let _ = stop_workers.send(true);
    // Workers exit once drained (or are abandoned at the deadline).
    for t in threads {
        if workers.active.load(Ordering::Relaxed) == 0 {
            let _ = t.join();
        }
    }
    Ok(())
}

/// The workers, their threads, and the signal that ends them.
type StartedWorkers = (Workers, Vec<std::thread::JoinHandle<()>>, watch::Sender<bool>);

/// Starts `n` worker threads, each a current-thread runtime that runs the
/// tasks the main runtime spawns on it (accept loops) until `stop`.
fn start_workers(n: usize) -> Result<StartedWorkers, String> {
    let (stop, _) = watch::channel(false);
    let active = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    let mut threads = Vec::new();
    for worker in 0..n.max(1) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("worker {worker}: cannot start its runtime: {e}"))?;
        handles.push(rt.handle().clone());
        let mut stop = stop.subscribe();
        let active = active.clone();
        let t = std::thread::Builder::new()
            .name(format!("legate-worker-{worker}"))
            .spawn(move || {
                // Every request updates stats here: with a shard of its own
                // the worker does so without atomic read-modify-writes.
                crate::stats::own_a_shard();
                rt.block_on(async move {
                    let _ = stop.wait_for(|s| *s).await;
                    // Let the connections drain (the main thread bounds the wait).
                    while active.load(Ordering::Relaxed) > 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
            })
            .map_err(|e| format!("cannot start worker {worker}: {e}"))?;
        threads.push(t);
    }
    Ok((Workers { handles, active }, threads, stop))
}

/// Binds `admin.address` (if any) on the main runtime and serves the admin
/// interface there. Returns its state (for `/quitquitquit`).
fn start_admin(
    loaded: &Loaded,
    main_rt: &tokio::runtime::Runtime,
    shared: &Shared,
    listeners: &Arc<ListenerManager>,
    xds: Option<Arc<crate::xds::manager::Manager>>,
    concurrency: usize,
    drain_listeners: crate::admin::DrainListeners,
) -> Result<Option<Arc<crate::admin::AdminState>>, String> {
    let Some(admin) = loaded.bootstrap.admin.as_ref() else {
        return Ok(None);
    };
    if admin.address.is_none() {
        return Ok(None);
    }
    let addr = crate::model::listener::socket_addr(admin.address.as_ref())
        .map_err(|e| format!("admin.address: {e}"))?;
    let listener = main_rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .map_err(|e| format!("admin: cannot bind {addr}: {e}"))?;
    let local = listener.local_addr().unwrap_or(addr);
    tracing::info!("admin address: {local}");
    crate::admin::warn_if_exposed(local);
    let mut state = crate::admin::AdminState::new(loaded, shared.clone(), listeners.clone(), concurrency)?;
    state.xds = xds;
    state.admin_address = Some(local);
    state.drain_listeners = Some(drain_listeners);
    let state = Arc::new(state);
    main_rt.spawn(crate::admin::serve(listener, state.clone()));
    Ok(Some(state))
}

/// How long `/quitquitquit` lets requests in flight finish.
const QUIT_DRAIN: Duration = Duration::from_secs(5);

enum Shutdown {
    Signal,
    Quit,
}

/// Waits for SIGTERM/SIGINT, or `/quitquitquit` when the admin is served.
async fn wait_for_shutdown_signal(quit: Option<Arc<tokio::sync::Notify>>) -> Shutdown {
    let quit = async move {
        match quit {
            Some(q) => q.notified().await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = wait_for_signal() => Shutdown::Signal,
        _ = quit => Shutdown::Quit,
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
    ) else {
        tracing::error!("cannot install signal handlers; stop legate with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = usr1.recv() => {
                tracing::info!("SIGUSR1: reopening access log files");
                crate::access_log::sink::reopen_all();
            }
        }
    }
}
