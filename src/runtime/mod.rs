//! The process: a main runtime (signals, DNS, later admin and xDS) and
//! `--concurrency` data-plane workers, each a current-thread tokio runtime
//! with its own SO_REUSEPORT socket per listener.

pub mod dns;
pub mod listen;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::Loaded;
use crate::http::proxy::ConnInfo;
use crate::http::server::serve_connection;
use crate::model::listener::Listener;
use crate::model::stats::ListenerStats;
use crate::model::{Shared, Snapshot};

pub struct Options {
    pub concurrency: usize,
    pub drain_time: Duration,
}

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// Runs the proxy until SIGTERM/SIGINT, then drains. Returns the exit code.
pub fn run(loaded: &Loaded, opts: Options) -> Result<(), String> {
    let snapshot = Snapshot::from_bootstrap(&loaded.bootstrap)?;
    if loaded.bootstrap.dynamic_resources.is_some() {
        tracing::warn!(
            "xDS is not implemented yet: dynamic_resources are not used; serving static_resources only"
        );
    }
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
    // DNS clusters resolve before the listeners accept, as Envoy warms them.
    main_rt.block_on(dns::start(shared.clone()));

    let listeners: Vec<Arc<Listener>> = shared.load().listeners.clone();
    let mut sockets = Vec::new();
    for l in &listeners {
        let set = listen::bind(l.address, opts.concurrency)
            .map_err(|e| format!("listener {}: cannot bind {}: {e}", l.name, l.address))?;
        tracing::info!("listener {} listening on {}", l.name, set.local_addr);
        sockets.push((l.clone(), set));
    }

    // One drain signal per listener: shutdown drains them all, the admin's
    // /drain_listeners all or only the inbound ones.
    let drains: Vec<(Arc<Listener>, watch::Sender<bool>)> = listeners
        .iter()
        .map(|l| (l.clone(), watch::channel(false).0))
        .collect();
    let drains = Arc::new(drains);
    // Envoy names listener stats by the bound address (`listener.127.0.0.1_8080.`).
    let listener_stats: Vec<Arc<ListenerStats>> = sockets
        .iter()
        .map(|(_, set)| Arc::new(ListenerStats::new(&set.local_addr.to_string())))
        .collect();
    let active = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for worker in 0..opts.concurrency {
        let mine: Vec<WorkerSocket> = sockets
            .iter_mut()
            .zip(drains.iter())
            .zip(listener_stats.iter())
            .map(|(((l, set), (_, drain)), stats)| {
                (l.clone(), set.sockets.remove(0), drain.subscribe(), stats.clone())
            })
            .collect();
        let shared = shared.clone();
        let active = active.clone();
        let t = std::thread::Builder::new()
            .name(format!("legate-worker-{worker}"))
            .spawn(move || worker_main(worker, mine, shared, active))
            .map_err(|e| format!("cannot start worker {worker}: {e}"))?;
        threads.push(t);
    }
    // --- Admin interface and server stats (src/admin, src/stats.rs) ---
    // Logged before "all N workers started": tests read the admin address
    // from the log up to that line.
    crate::admin::init_server_stats(opts.concurrency, listeners.len());
    let drain_listeners: crate::admin::DrainListeners = {
        let drains = drains.clone();
        Arc::new(move |inbound_only: bool| drain(&drains, inbound_only))
    };
    let quit = start_admin(
        loaded,
        &main_rt,
        &shared,
        &sockets,
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
        // server.state DRAINING (1), as Envoy reports while shutting down.
        crate::stats::store().gauge("server.state").set(1);
        drain(&drains, false);
        let deadline = tokio::time::Instant::now() + drain_time;
        while active.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    crate::access_log::sink::flush_all();
    // Workers exit once drained (or are abandoned at the deadline).
    for t in threads {
        if active.load(Ordering::Relaxed) == 0 {
            let _ = t.join();
        }
    }
    Ok(())
}

/// Binds `admin.address` (if any) on the main runtime and serves the admin
/// interface there. Returns its state (for `/quitquitquit`).
fn start_admin(
    loaded: &Loaded,
    main_rt: &tokio::runtime::Runtime,
    shared: &Shared,
    sockets: &[(Arc<Listener>, listen::SocketSet)],
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
    let bound = sockets
        .iter()
        .map(|(l, set)| (l.name.clone(), set.local_addr))
        .collect();
    let mut state = crate::admin::AdminState::new(loaded, shared.clone(), bound, concurrency)?;
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

/// Stops the listeners (all, or the INBOUND ones) from accepting and tells
/// their connections to close once idle. Returns how many it drained.
fn drain(drains: &[(Arc<Listener>, watch::Sender<bool>)], inbound_only: bool) -> usize {
    let mut n = 0;
    for (l, tx) in drains {
        if !inbound_only || l.inbound {
            let _ = tx.send(true);
            n += 1;
        }
    }
    n
}

/// A worker's share of one listener: its SO_REUSEPORT socket and the
/// listener's drain signal.
type WorkerSocket = (
    Arc<Listener>,
    std::net::TcpListener,
    watch::Receiver<bool>,
    Arc<ListenerStats>,
);

fn worker_main(worker: usize, sockets: Vec<WorkerSocket>, shared: Shared, active: Arc<AtomicUsize>) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("worker {worker}: cannot start its runtime: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let mut accepts = Vec::new();
        for (listener, socket, drain, stats) in sockets {
            let socket = match tokio::net::TcpListener::from_std(socket) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("worker {worker}: listener {}: {e}", listener.name);
                    continue;
                }
            };
            accepts.push(tokio::spawn(accept_loop(
                listener,
                socket,
                stats,
                shared.clone(),
                drain,
                active.clone(),
            )));
        }
        for a in accepts {
            let _ = a.await;
        }
        // Accepting has stopped; let the connections drain.
        while active.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

async fn accept_loop(
    listener: Arc<Listener>,
    socket: tokio::net::TcpListener,
    listener_stats: Arc<ListenerStats>,
    shared: Shared,
    mut drain: watch::Receiver<bool>,
    active: Arc<AtomicUsize>,
) {
    loop {
        let accepted = tokio::select! {
            a = socket.accept() => a,
            _ = drain.changed() => return,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off rather than spin.
                tracing::warn!("listener {}: accept failed: {e}", listener.name);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let local = stream.local_addr().unwrap_or(listener.address);
        let conn = Arc::new(ConnInfo {
            records_headers: listener.hcm.records_headers() || !listener.access_logs.is_empty(),
            requests: std::sync::atomic::AtomicU32::new(0),
            listener_stats: listener_stats.clone(),
            listener: listener.clone(),
            shared: shared.clone(),
            remote,
            local,
            connection_id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
        });
        active.fetch_add(1, Ordering::Relaxed);
        let active = active.clone();
        let drain = drain.clone();
        tokio::spawn(async move {
            serve_connection(stream, conn, drain).await;
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}
