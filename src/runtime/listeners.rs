//! Listeners at run time: their bound sockets, the workers' accept loops,
//! and what adding, changing or removing one does (bootstrap or LDS).
//!
//! Each listener is a slot: one SO_REUSEPORT socket per worker, each with
//! an accept loop on that worker's runtime. The loop reads the listener's
//! current *generation* (its config and its drain signal) per accepted
//! connection, so a changed listener on the same address keeps its sockets:
//! new connections get the new config, and the old generation's connections
//! are told to drain (close once idle). Removing a slot stops its accept
//! loops (closing the sockets) and drains its connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::listen::{self, SocketSet};
use crate::http::proxy::ConnInfo;
use crate::http::server::serve_connection;
use crate::model::listener::Listener;
use crate::model::stats::ListenerStats;
use crate::model::Shared;

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// The data-plane workers, as the main runtime sees them.
#[derive(Clone)]
pub struct Workers {
    pub handles: Vec<tokio::runtime::Handle>,
    /// Downstream connections open, across workers (shutdown waits for 0).
    pub active: Arc<AtomicUsize>,
}

/// One configuration of a listener and the signal that drains the
/// connections accepted under it.
struct Generation {
    listener: Arc<Listener>,
    drain: watch::Sender<bool>,
}

struct Slot {
    local_addr: SocketAddr,
    current: Arc<ArcSwap<Generation>>,
    /// Stops the accept loops (their sockets close with them).
    stop: watch::Sender<bool>,
}

impl Slot {
    fn listener(&self) -> Arc<Listener> {
        self.current.load().listener.clone()
    }
}

/// Sockets bound for a listener that does not accept yet.
pub struct Bound {
    set: SocketSet,
}

impl Bound {
    pub fn local_addr(&self) -> SocketAddr {
        self.set.local_addr
    }
}

/// Every active listener. Only the main runtime calls it; workers see the
/// changes through the generations and stop signals.
pub struct ListenerManager {
    workers: Workers,
    shared: Shared,
    drain_time: Duration,
    slots: Mutex<BTreeMap<String, Slot>>,
}

impl ListenerManager {
    pub fn new(workers: Workers, shared: Shared, drain_time: Duration) -> ListenerManager {
        ListenerManager {
            workers,
            shared,
            drain_time,
            slots: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn workers(&self) -> usize {
        self.workers.handles.len()
    }

    pub fn active_connections(&self) -> usize {
        self.workers.active.load(Ordering::Relaxed)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Binds `l`'s address once per worker. Nothing accepts until [`start`](Self::start).
    pub fn bind(&self, l: &Listener) -> Result<Bound, String> {
        let set = listen::bind(l.address, self.workers())
            .map_err(|e| format!("listener {}: cannot bind {}: {e}", l.name, l.address))?;
        tracing::info!("listener {} listening on {}", l.name, set.local_addr);
        Ok(Bound { set })
    }

    /// The bound address of the active listener `name`.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.slots().get(name).map(|s| s.local_addr)
    }

    /// The active listener named `name`, as its connections see it.
    pub fn get(&self, name: &str) -> Option<Arc<Listener>> {
        self.slots().get(name).map(Slot::listener)
    }

    /// Active listeners and their bound addresses (real ports), by name.
    pub fn bound(&self) -> Vec<(String, SocketAddr)> {
        self.slots()
            .iter()
            .map(|(name, s)| (name.clone(), s.local_addr))
            .collect()
    }

    /// Starts accepting on `bound` for `l` (a new listener, or one whose
    /// address changed: the old slot of that name is removed first).
    pub fn start(&self, l: Arc<Listener>, bound: Bound) {
        self.remove(&l.name);
        let Bound { set } = bound;
        // Envoy names listener stats by the bound address (`listener.127.0.0.1_8080.`).
        let stats = Arc::new(ListenerStats::new(&set.local_addr.to_string()));
        let current = Arc::new(ArcSwap::from_pointee(Generation {
            listener: l.clone(),
            drain: watch::channel(false).0,
        }));
        let (stop, _) = watch::channel(false);
        for (socket, handle) in set.sockets.into_iter().zip(&self.workers.handles) {
            let accept = AcceptLoop {
                current: current.clone(),
                stats: stats.clone(),
                shared: self.shared.clone(),
                drain_time: self.drain_time,
                stop: stop.subscribe(),
                active: self.workers.active.clone(),
            };
            // The socket joins the worker's reactor on the worker itself.
            handle.spawn(accept.run(socket));
        }
        self.slots().insert(
            l.name.clone(),
            Slot {
                local_addr: set.local_addr,
                current,
                stop,
            },
        );
    }

    /// Replaces the config of the active listener `l.name` (same address):
    /// new connections get `l`; connections accepted under the previous
    /// config drain. Returns false when no such listener is active.
    pub fn update(&self, l: Arc<Listener>) -> bool {
        let slots = self.slots();
        let Some(slot) = slots.get(&l.name) else {
            return false;
        };
        let old = slot.current.swap(Arc::new(Generation {
            listener: l,
            drain: watch::channel(false).0,
        }));
        let _ = old.drain.send(true);
        true
    }

    /// Hands the sockets of the active listener `old` to `l` (sidecar mode:
    /// the control plane's listener on the fallback's address): new
    /// connections get `l`, the old ones drain. False when `old` is not active.
    pub fn take_over(&self, old: &str, l: Arc<Listener>) -> bool {
        let mut slots = self.slots();
        let Some(slot) = slots.remove(old) else {
            return false;
        };
        let previous = slot.current.swap(Arc::new(Generation {
            listener: l.clone(),
            drain: watch::channel(false).0,
        }));
        let _ = previous.drain.send(true);
        tracing::info!("listener {} takes over {} on {}", l.name, old, slot.local_addr);
        slots.insert(l.name.clone(), slot);
        true
    }

    /// Stops the listener `name` accepting and drains its connections.
    pub fn remove(&self, name: &str) -> bool {
        let Some(slot) = self.slots().remove(name) else {
            return false;
        };
        tracing::info!("listener {name} on {} removed: draining", slot.local_addr);
        let _ = slot.stop.send(true);
        let _ = slot.current.load().drain.send(true);
        true
    }

    /// Stops every listener (or only the INBOUND ones) accepting and drains
    /// their connections, keeping them listed. Returns how many.
    pub fn drain(&self, inbound_only: bool) -> usize {
        let slots = self.slots();
        let mut n = 0;
        for slot in slots.values() {
            let g = slot.current.load();
            if !inbound_only || g.listener.inbound {
                let _ = slot.stop.send(true);
                let _ = g.drain.send(true);
                n += 1;
            }
        }
        n
    }
}

struct AcceptLoop {
    current: Arc<ArcSwap<Generation>>,
    stats: Arc<ListenerStats>,
    shared: Shared,
    drain_time: Duration,
    stop: watch::Receiver<bool>,
    active: Arc<AtomicUsize>,
}

impl AcceptLoop {
    async fn run(mut self, socket: std::net::TcpListener) {
        let socket = match tokio::net::TcpListener::from_std(socket) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("listener {}: {e}", self.current.load().listener.name);
                return;
            }
        };
        // Bound to one address, the socket's is every connection's local
        // address: no getsockname per connection (a wildcard needs one).
        let fixed_local = socket.local_addr().ok().filter(|a| !a.ip().is_unspecified());
        loop {
            if *self.stop.borrow() {
                return;
            }
            let accepted = tokio::select! {
                a = socket.accept() => a,
                _ = self.stop.changed() => return,
            };
            let (stream, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off rather than spin.
                    tracing::warn!(
                        "listener {}: accept failed: {e}",
                        self.current.load().listener.name
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let generation = self.current.load_full();
            let listener = generation.listener.clone();
            let drain = generation.drain.subscribe();
            let local = match fixed_local {
                Some(a) => a,
                None => stream.local_addr().unwrap_or(listener.address),
            };
            let conn = Arc::new(ConnInfo {
                records_headers: listener.hcm.records_headers() || !listener.access_logs.is_empty(),
                requests: std::sync::atomic::AtomicU32::new(0),
                listener_stats: self.stats.clone(),
                listener,
                shared: self.shared.clone(),
                remote,
                local,
                connection_id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
                drain_time: self.drain_time,
            });
            self.active.fetch_add(1, Ordering::Relaxed);
            let active = self.active.clone();
            tokio::spawn(async move {
                serve_connection(stream, conn, drain).await;
                active.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
}
