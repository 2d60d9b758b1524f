//! Incremental (delta) protocol, one type on one stream, without I/O.
//!
//! The server remembers what the client holds (`known`: name → version, or
//! "told it does not exist") and sends only differences: changed or newly
//! subscribed resources in `resources`, deleted ones (and subscribed names
//! that do not exist) in `removed_resources`. The first request may carry
//! `initial_resource_versions` (what the client kept from a previous
//! stream), which is believed. A re-subscription to a held name is answered
//! again (the client may have dropped it). What was sent counts as held even
//! if NACKed: nothing is re-sent until it changes.

use std::collections::{BTreeMap, BTreeSet};

use legate::proto::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};

use crate::snapshot::Served;
use crate::sotw::Received;
use crate::subscription::Subscription;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Known {
    Version(String),
    /// The client was told (removed_resources) that it does not exist.
    Absent,
}

/// Per-type delta state on one stream.
#[derive(Debug)]
pub struct DeltaState {
    type_url: String,
    pub subscription: Subscription,
    known: BTreeMap<String, Known>,
    started: bool,
    /// Nonce and system version of the last response.
    pub last_sent: Option<(String, String)>,
    pub acked_version: Option<String>,
    pub last_nack: Option<(String, i32, String)>,
}

impl DeltaState {
    pub fn new(type_url: &str) -> DeltaState {
        DeltaState {
            type_url: type_url.to_string(),
            subscription: Subscription::default(),
            known: BTreeMap::new(),
            started: false,
            last_sent: None,
            acked_version: None,
            last_nack: None,
        }
    }

    pub fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
        resources: &BTreeMap<String, Served>,
        version: &str,
        nonce: impl FnOnce() -> String,
    ) -> (Received, Option<DeltaDiscoveryResponse>) {
        let latest = self.last_sent.as_ref().map(|(n, _)| n.as_str());
        let received = if req.response_nonce.is_empty() {
            Received::Initial
        } else if latest != Some(req.response_nonce.as_str()) {
            Received::Stale {
                nonce: req.response_nonce.clone(),
            }
        } else {
            let v = self
                .last_sent
                .as_ref()
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            match &req.error_detail {
                Some(err) => {
                    self.last_nack = Some((v.clone(), err.code, err.message.clone()));
                    Received::Nack {
                        version: v,
                        code: err.code,
                        message: err.message.clone(),
                    }
                }
                None => {
                    self.acked_version = Some(v.clone());
                    Received::Ack { version: v }
                }
            }
        };
        // Subscription changes count even on a stale request: in delta they
        // are not repeated in later requests.
        let first = !self.started;
        self.started = true;
        if first && req.resource_names_subscribe.is_empty() && req.resource_names_unsubscribe.is_empty() {
            self.subscription.wildcard = true;
        }
        self.subscription.subscribe(&req.resource_names_subscribe);
        for n in &req.resource_names_subscribe {
            self.known.remove(n);
        }
        self.subscription.unsubscribe(&req.resource_names_unsubscribe);
        for n in &req.resource_names_unsubscribe {
            self.known.remove(n);
        }
        if first {
            for (name, v) in &req.initial_resource_versions {
                self.known.insert(name.clone(), Known::Version(v.clone()));
            }
        }
        let (send, removed) = self.diff(resources);
        // The first request of a wildcard stream is answered even when empty,
        // so the client knows it has everything (there is nothing).
        if send.is_empty() && removed.is_empty() && !(first && self.subscription.wildcard) {
            return (received, None);
        }
        (received, Some(self.make(send, removed, version, nonce())))
    }

    /// After a snapshot change: the differences, if any.
    pub fn on_snapshot(
        &mut self,
        resources: &BTreeMap<String, Served>,
        version: &str,
        nonce: impl FnOnce() -> String,
    ) -> Option<DeltaDiscoveryResponse> {
        if !self.started {
            return None;
        }
        let (send, removed) = self.diff(resources);
        if send.is_empty() && removed.is_empty() {
            return None;
        }
        Some(self.make(send, removed, version, nonce()))
    }

    /// What to send and what to remove; `known` becomes what the client
    /// will hold once it has the response.
    fn diff(&mut self, resources: &BTreeMap<String, Served>) -> (Vec<Resource>, Vec<String>) {
        let mut scope: BTreeSet<&String> = self.subscription.names.iter().collect();
        if self.subscription.wildcard {
            scope.extend(resources.keys());
            scope.extend(self.known.keys());
        }
        let mut send = Vec::new();
        let mut removed = Vec::new();
        let mut known = BTreeMap::new();
        for name in scope {
            match (resources.get(name), self.known.get(name)) {
                (Some(s), Some(Known::Version(v))) if *v == s.version => {
                    known.insert(name.clone(), Known::Version(v.clone()));
                }
                (Some(s), _) => {
                    send.push(Resource {
                        name: name.clone(),
                        version: s.version.clone(),
                        resource: Some(s.resource.any.clone()),
                        ..Default::default()
                    });
                    known.insert(name.clone(), Known::Version(s.version.clone()));
                }
                (None, Some(Known::Absent)) => {
                    known.insert(name.clone(), Known::Absent);
                }
                (None, Some(Known::Version(_))) => {
                    removed.push(name.clone());
                    // A wildcard-only name that is gone is forgotten; a named
                    // one is remembered as absent until it comes back.
                    if self.subscription.names.contains(name) {
                        known.insert(name.clone(), Known::Absent);
                    }
                }
                (None, None) => {
                    // Only named subscriptions reach here: tell the client it
                    // does not exist rather than leave it waiting.
                    removed.push(name.clone());
                    known.insert(name.clone(), Known::Absent);
                }
            }
        }
        self.known = known;
        (send, removed)
    }

    fn make(
        &mut self,
        resources: Vec<Resource>,
        removed: Vec<String>,
        version: &str,
        nonce: String,
    ) -> DeltaDiscoveryResponse {
        self.last_sent = Some((nonce.clone(), version.to_string()));
        DeltaDiscoveryResponse {
            system_version_info: version.to_string(),
            resources,
            type_url: self.type_url.clone(),
            removed_resources: removed,
            nonce,
            ..Default::default()
        }
    }

    pub fn subscribed(&self) -> Vec<String> {
        self.subscription.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource_type::ResourceType;
    use crate::snapshot::View;
    use crate::Snapshot;

    fn view(yaml: &str) -> View {
        View::new(&Snapshot::from_yaml(yaml).unwrap().default)
    }

    fn req(sub: &[&str], unsub: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            resource_names_subscribe: sub.iter().map(|s| s.to_string()).collect(),
            resource_names_unsubscribe: unsub.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    /// (sent names, removed names) of a response.
    fn parts(r: &Option<DeltaDiscoveryResponse>) -> (Vec<String>, Vec<String>) {
        match r {
            Some(r) => (
                r.resources.iter().map(|r| r.name.clone()).collect(),
                r.removed_resources.clone(),
            ),
            None => (vec!["<none>".into()], vec![]),
        }
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn wildcard_updates_and_removals() {
        let v1 = view("clusters: [{name: a}, {name: b}]\n");
        let cds = ResourceType::Cluster;
        let mut st = DeltaState::new(cds.type_url());
        let mut n = 0;
        let mut nonce = || {
            n += 1;
            n.to_string()
        };
        let (r, resp) = st.on_request(&req(&[], &[], ""), v1.get(cds), "1", &mut nonce);
        assert_eq!(r, Received::Initial);
        assert_eq!(parts(&resp), (s(&["a", "b"]), s(&[])));
        let (r, resp) = st.on_request(&req(&[], &[], "1"), v1.get(cds), "1", &mut nonce);
        assert_eq!((r, resp), (Received::Ack { version: "1".into() }, None));
        // `a` changes, `b` goes, `c` comes: only the differences.
        let v2 = view("clusters: [{name: a, connect_timeout: 2s}, {name: c}]\n");
        let resp = st.on_snapshot(v2.get(cds), "2", &mut nonce);
        assert_eq!(parts(&resp), (s(&["a", "c"]), s(&["b"])));
        // NACKed: nothing re-sent until it changes.
        let mut nack = req(&[], &[], "2");
        nack.error_detail = Some(legate::proto::google::rpc::Status {
            code: 13,
            message: "no".into(),
            details: vec![],
        });
        let (r, resp) = st.on_request(&nack, v2.get(cds), "2", &mut nonce);
        assert!(matches!(r, Received::Nack { code: 13, .. }));
        assert!(resp.is_none());
        assert!(st.on_snapshot(v2.get(cds), "3", &mut nonce).is_none());
        assert_eq!(st.acked_version.as_deref(), Some("1"));
    }

    #[test]
    fn named_subscriptions_initial_versions_and_absent_names() {
        let v1 = view("endpoints: [{cluster_name: a}, {cluster_name: b}]\n");
        let eds = ResourceType::Endpoint;
        let va = v1.get(eds)["a"].version.clone();
        let mut st = DeltaState::new(eds.type_url());
        let mut n = 0;
        let mut nonce = || {
            n += 1;
            n.to_string()
        };
        // The client already holds `a` at its current version: only `b`,
        // and `x` does not exist.
        let mut first = req(&["a", "b", "x"], &[], "");
        first.initial_resource_versions.insert("a".into(), va);
        let (_, resp) = st.on_request(&first, v1.get(eds), "1", &mut nonce);
        assert_eq!(parts(&resp), (s(&["b"]), s(&["x"])));
        // Re-subscribing to a held name sends it again.
        let (r, resp) = st.on_request(&req(&["a"], &[], ""), v1.get(eds), "1", &mut nonce);
        assert_eq!(r, Received::Initial);
        assert_eq!(parts(&resp), (s(&["a"]), s(&[])));
        // Unsubscribed names are not pushed; `x` appearing is.
        let (_, resp) = st.on_request(&req(&[], &["b"], ""), v1.get(eds), "1", &mut nonce);
        assert!(resp.is_none());
        let v2 =
            view("endpoints: [{cluster_name: a}, {cluster_name: b, endpoints: [{}]}, {cluster_name: x}]\n");
        let resp = st.on_snapshot(v2.get(eds), "2", &mut nonce);
        assert_eq!(parts(&resp), (s(&["x"]), s(&[])));
        // A stale nonce still changes the subscription.
        let (r, resp) = st.on_request(&req(&["b"], &[], "1"), v2.get(eds), "2", &mut nonce);
        assert_eq!(r, Received::Stale { nonce: "1".into() });
        assert_eq!(parts(&resp), (s(&["b"]), s(&[])));
    }
}
