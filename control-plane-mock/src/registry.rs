//! What the mock has seen: connected streams (`/clients`) and a bounded log
//! of protocol events (`/events`), for people and for tests to wait on.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::Notify;

/// One connected stream.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ClientInfo {
    /// Stream id, unique within the process.
    pub stream: u64,
    pub node_id: String,
    pub node_cluster: String,
    /// `ADS`, `LDS`, `RDS`, `CDS` or `EDS`.
    pub service: String,
    /// `sotw` or `delta`.
    pub mode: String,
    pub peer: String,
    /// Unix time in milliseconds.
    pub connected_at_ms: u64,
    /// Per type URL.
    pub types: BTreeMap<String, TypeStatus>,
}

/// One type on one stream.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TypeStatus {
    /// Names subscribed to; `*` for a wildcard.
    pub subscribed: Vec<String>,
    pub last_sent_version: Option<String>,
    pub last_sent_nonce: Option<String>,
    pub acked_version: Option<String>,
    pub last_nack: Option<Nack>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Nack {
    /// The version that was rejected.
    pub version: String,
    pub code: i32,
    pub message: String,
}

/// What happened.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Connect,
    Disconnect,
    /// A request without a nonce (first for the type on the stream).
    Request,
    Ack,
    Nack,
    /// A request with an old nonce, ignored.
    Stale,
    Response,
    /// A new snapshot was published.
    Snapshot,
    /// A snapshot (file or admin) was rejected; the previous one is kept.
    Rejected,
    /// A published snapshot has a consistency warning.
    Warning,
    /// A stream ended with a protocol error (e.g. no type URL on ADS).
    Error,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Event {
    /// Increasing from 1; `/events?since=N` returns events after N.
    pub seq: u64,
    pub time_ms: u64,
    pub kind: EventKind,
    /// Stream id (0 for snapshot events).
    pub stream: u64,
    pub node_id: String,
    pub type_url: String,
    pub version: String,
    pub nonce: String,
    /// Resource names (requested, or sent).
    pub resources: Vec<String>,
    pub detail: String,
}

impl Event {
    pub fn new(kind: EventKind) -> Event {
        Event {
            seq: 0,
            time_ms: 0,
            kind,
            stream: 0,
            node_id: String::new(),
            type_url: String::new(),
            version: String::new(),
            nonce: String::new(),
            resources: Vec::new(),
            detail: String::new(),
        }
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Locks a mutex even if a holder panicked: the data is plain records that
/// stay usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct Registry {
    clients: Mutex<BTreeMap<u64, ClientInfo>>,
    events: Mutex<EventLog>,
    notify: Notify,
}

struct EventLog {
    capacity: usize,
    next_seq: u64,
    items: VecDeque<Event>,
}

impl Registry {
    pub fn new(capacity: usize) -> Registry {
        Registry {
            clients: Mutex::new(BTreeMap::new()),
            events: Mutex::new(EventLog {
                capacity: capacity.max(1),
                next_seq: 1,
                items: VecDeque::new(),
            }),
            notify: Notify::new(),
        }
    }

    pub fn record(&self, mut e: Event) {
        {
            let mut log = lock(&self.events);
            e.seq = log.next_seq;
            e.time_ms = now_ms();
            log.next_seq += 1;
            if log.items.len() == log.capacity {
                log.items.pop_front();
            }
            log.items.push_back(e);
        }
        self.notify.notify_waiters();
    }

    /// Events with `seq > since`, oldest first.
    pub fn events_since(&self, since: u64) -> Vec<Event> {
        lock(&self.events)
            .items
            .iter()
            .filter(|e| e.seq > since)
            .cloned()
            .collect()
    }

    /// Waits (at most `timeout`) for an event matching `pred`, looking at
    /// the whole retained log first.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = 0;
        loop {
            // Register before looking, so an event recorded in between wakes us.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            for e in self.events_since(seen) {
                seen = e.seq;
                if pred(&e) {
                    return Some(e);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    pub fn set_client(&self, info: ClientInfo) {
        lock(&self.clients).insert(info.stream, info);
    }

    pub fn remove_client(&self, stream: u64) {
        lock(&self.clients).remove(&stream);
    }

    pub fn clients(&self) -> Vec<ClientInfo> {
        lock(&self.clients).values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_log_and_waiting() {
        let r = std::sync::Arc::new(Registry::new(3));
        for _ in 0..5 {
            r.record(Event::new(EventKind::Ack));
        }
        let seqs: Vec<u64> = r.events_since(0).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        let r2 = r.clone();
        let waiter = tokio::spawn(async move {
            r2.wait_for(Duration::from_secs(5), |e| e.kind == EventKind::Nack)
                .await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        r.record(Event::new(EventKind::Nack));
        let got = waiter.await.unwrap();
        assert_eq!(got.map(|e| e.seq), Some(6));
        assert!(r
            .wait_for(Duration::from_millis(20), |e| e.kind == EventKind::Connect)
            .await
            .is_none());
    }
}
