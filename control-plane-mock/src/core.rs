//! The state every part of the mock shares: the published snapshot (a
//! `watch` channel: a stream always sees the latest one, never a backlog),
//! the registry of clients and events, and the shutdown signal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::registry::{lock, Event, EventKind, Registry};
use crate::snapshot::{Published, Snapshot};
use crate::Error;

pub(crate) struct Core {
    snapshot: watch::Sender<Arc<Published>>,
    /// The change counter; held while a change is built and published so
    /// that two admin edits cannot lose one another.
    generation: Mutex<u64>,
    pub registry: Registry,
    next_stream: AtomicU64,
    pub shutdown: watch::Sender<bool>,
}

impl Core {
    pub fn new(snapshot: Snapshot, event_capacity: usize) -> Arc<Core> {
        let published = Arc::new(Published::new(1, Arc::new(snapshot)));
        let core = Arc::new(Core {
            snapshot: watch::Sender::new(published.clone()),
            generation: Mutex::new(1),
            registry: Registry::new(event_capacity),
            next_stream: AtomicU64::new(1),
            shutdown: watch::Sender::new(false),
        });
        core.record_published(&published, "initial");
        core
    }

    pub fn current(&self) -> Arc<Published> {
        self.snapshot.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Published>> {
        self.snapshot.subscribe()
    }

    pub fn next_stream_id(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::Relaxed)
    }

    /// Replaces the snapshot and pushes it to every stream.
    pub fn publish(&self, snapshot: Snapshot, source: &str) -> Arc<Published> {
        let snapshot = Arc::new(snapshot);
        let published = {
            let mut generation = lock(&self.generation);
            *generation += 1;
            let p = Arc::new(Published::new(*generation, snapshot));
            self.snapshot.send_replace(p.clone());
            p
        };
        self.record_published(&published, source);
        published
    }

    /// Applies an edit to a copy of the current snapshot and publishes it.
    /// The edited snapshot's version label is dropped: the old label no
    /// longer names its content, so the change counter is used instead.
    pub fn edit<T>(
        &self,
        source: &str,
        f: impl FnOnce(&mut Snapshot) -> Result<T, Error>,
    ) -> Result<(T, Arc<Published>), Error> {
        let published = {
            let mut generation = lock(&self.generation);
            let mut s = (*self.current().snapshot).clone();
            let out = f(&mut s)?;
            s.version = None;
            *generation += 1;
            let p = Arc::new(Published::new(*generation, Arc::new(s)));
            self.snapshot.send_replace(p.clone());
            (out, p)
        };
        self.record_published(&published.1, source);
        Ok(published)
    }

    fn record_published(&self, p: &Published, source: &str) {
        let mut e = Event::new(EventKind::Snapshot);
        e.version = p.version.clone();
        e.detail = format!("{source}: {} resources", p.snapshot.default.len());
        self.registry.record(e);
        for w in p.snapshot.warnings() {
            tracing::warn!("snapshot {}: {w}", p.version);
            let mut e = Event::new(EventKind::Warning);
            e.version = p.version.clone();
            e.detail = w;
            self.registry.record(e);
        }
    }

    /// Records a rejected snapshot (the previous one stays).
    pub fn rejected(&self, source: &str, error: &Error) {
        tracing::error!(
            "{source}: snapshot rejected, keeping version {}: {error}",
            self.current().version
        );
        let mut e = Event::new(EventKind::Rejected);
        let text = error.to_string();
        // File errors already start with the file's name.
        e.detail = if text.starts_with(source) {
            text
        } else {
            format!("{source}: {text}")
        };
        self.registry.record(e);
    }
}
