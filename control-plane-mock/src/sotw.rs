//! State-of-the-world protocol, one type on one stream, without I/O: what a
//! request means (first request, ACK, NACK, stale) and what to send.
//!
//! Rules (see the xDS protocol reference):
//! - A request whose nonce is not the latest one sent for the type is stale
//!   and ignored: the client will answer the newer response.
//! - `error_detail` marks a NACK; nothing is re-sent after one until what
//!   would be sent changes (snapshot or subscription).
//! - LDS/CDS: a stream that never named a resource is a wildcard one; `*`
//!   subscribes to everything explicitly. Responses carry every resource in
//!   scope (full state), so a resource missing from one was removed.
//! - A changed subscription is answered even when nothing changed, so newly
//!   requested resources arrive.

use std::collections::BTreeMap;

use legate::proto::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use crate::snapshot::Served;
use crate::subscription::Subscription;

/// What a request was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// A request without a nonce: the first for the type on this stream.
    Initial,
    /// The client applied the response with this nonce.
    Ack { version: String },
    /// The client rejected the response with this nonce.
    Nack {
        version: String,
        code: i32,
        message: String,
    },
    /// The nonce is not the latest sent: ignored.
    Stale { nonce: String },
}

/// The last response sent for the type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub version: String,
    pub nonce: String,
    /// Name → version of every resource in it.
    pub resources: BTreeMap<String, String>,
}

/// Per-type SotW state on one stream.
#[derive(Debug)]
pub struct SotwState {
    type_url: String,
    full_state: bool,
    pub subscription: Subscription,
    pub sent: Option<Sent>,
    pub acked_version: Option<String>,
    pub last_nack: Option<(String, i32, String)>,
}

impl SotwState {
    /// `full_state`: LDS/CDS semantics (legacy wildcard, full responses).
    pub fn new(type_url: &str, full_state: bool) -> SotwState {
        SotwState {
            type_url: type_url.to_string(),
            full_state,
            subscription: Subscription::default(),
            sent: None,
            acked_version: None,
            last_nack: None,
        }
    }

    /// Handles a request; returns what it was and the response to send, if
    /// any. `resources` is the client's view of this type; `version` and
    /// `nonce` label a response if one is made.
    pub fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        resources: &BTreeMap<String, Served>,
        version: &str,
        nonce: impl FnOnce() -> String,
    ) -> (Received, Option<DiscoveryResponse>) {
        let latest = self.sent.as_ref().map(|s| s.nonce.as_str());
        let received = if req.response_nonce.is_empty() {
            Received::Initial
        } else if latest != Some(req.response_nonce.as_str()) {
            // A nonce from an earlier response (or a previous stream, which
            // the client should not send): a newer response is on its way.
            if latest.is_some() {
                return (
                    Received::Stale {
                        nonce: req.response_nonce.clone(),
                    },
                    None,
                );
            }
            Received::Initial
        } else if let Some(err) = &req.error_detail {
            let sent_version = self.sent.as_ref().map(|s| s.version.clone()).unwrap_or_default();
            self.last_nack = Some((sent_version.clone(), err.code, err.message.clone()));
            Received::Nack {
                version: sent_version,
                code: err.code,
                message: err.message.clone(),
            }
        } else {
            let v = self.sent.as_ref().map(|s| s.version.clone()).unwrap_or_default();
            self.acked_version = Some(v.clone());
            Received::Ack { version: v }
        };
        let changed = self
            .subscription
            .update_sotw(&req.resource_names, self.full_state);
        let content = self.content(resources);
        // After a NACK, `sent` is what the client rejected: the same content
        // is not sent again, a different one (the snapshot changed) is.
        let differs = self.sent.as_ref().is_none_or(|s| s.resources != content);
        if received == Received::Initial || changed || differs {
            let resp = self.respond(content, resources, version, nonce());
            return (received, Some(resp));
        }
        (received, None)
    }

    /// After a snapshot change: the response to send, if what the client
    /// subscribed to changed. Nothing before the client's first request.
    pub fn on_snapshot(
        &mut self,
        resources: &BTreeMap<String, Served>,
        version: &str,
        nonce: impl FnOnce() -> String,
    ) -> Option<DiscoveryResponse> {
        let sent = self.sent.as_ref()?;
        let content = self.content(resources);
        if sent.resources == content {
            return None;
        }
        Some(self.respond(content, resources, version, nonce()))
    }

    /// Name → version of what is in scope now.
    fn content(&self, resources: &BTreeMap<String, Served>) -> BTreeMap<String, String> {
        if self.subscription.wildcard {
            return resources
                .iter()
                .map(|(n, s)| (n.clone(), s.version.clone()))
                .collect();
        }
        self.subscription
            .names
            .iter()
            .filter_map(|n| resources.get(n).map(|s| (n.clone(), s.version.clone())))
            .collect()
    }

    fn respond(
        &mut self,
        content: BTreeMap<String, String>,
        resources: &BTreeMap<String, Served>,
        version: &str,
        nonce: String,
    ) -> DiscoveryResponse {
        let anys = content
            .keys()
            .filter_map(|n| resources.get(n))
            .map(|s| s.resource.any.clone())
            .collect();
        self.sent = Some(Sent {
            version: version.to_string(),
            nonce: nonce.clone(),
            resources: content,
        });
        DiscoveryResponse {
            version_info: version.to_string(),
            resources: anys,
            type_url: self.type_url.clone(),
            nonce,
            ..Default::default()
        }
    }

    /// The names subscribed to, `*` for a wildcard.
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
    use legate::proto::google::rpc::Status;
    use std::collections::BTreeSet;

    fn names_of(resp: &DiscoveryResponse) -> BTreeSet<String> {
        resp.resources
            .iter()
            .filter_map(|a| {
                let ty = ResourceType::from_type_url(&a.type_url)?;
                crate::snapshot::Resource::new(ty, a.clone()).ok().map(|r| r.name)
            })
            .collect()
    }

    fn view(yaml: &str) -> View {
        let s = Snapshot::from_yaml(yaml).unwrap();
        View::new(&s.default)
    }

    fn req(names: &[&str], nonce: &str, nack: bool) -> DiscoveryRequest {
        DiscoveryRequest {
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            response_nonce: nonce.into(),
            error_detail: nack.then(|| Status {
                code: 3,
                message: "bad".into(),
                details: vec![],
            }),
            ..Default::default()
        }
    }

    fn names(r: &Option<DiscoveryResponse>) -> Vec<String> {
        r.as_ref()
            .map(|r| names_of(r).into_iter().collect())
            .unwrap_or_else(|| vec!["<none>".into()])
    }

    const TWO: &str = "clusters: [{name: a}, {name: b}]\nendpoints: [{cluster_name: a}, {cluster_name: b}]\n";

    #[test]
    fn wildcard_ack_nack_and_stale_table() {
        let v = view(TWO);
        let cds = v.get(ResourceType::Cluster);
        let mut s = SotwState::new(ResourceType::Cluster.type_url(), true);
        let mut n = 0;
        let mut nonce = || {
            n += 1;
            n.to_string()
        };
        // (request names, nonce, nack) → (received, names sent)
        let (r, resp) = s.on_request(&req(&[], "", false), cds, "1", &mut nonce);
        assert_eq!(
            (r, names(&resp)),
            (Received::Initial, vec!["a".into(), "b".into()])
        );
        let (r, resp) = s.on_request(&req(&[], "1", false), cds, "1", &mut nonce);
        assert_eq!(r, Received::Ack { version: "1".into() });
        assert!(resp.is_none(), "an ACK of the current state needs no answer");
        let (r, resp) = s.on_request(&req(&[], "0", false), cds, "1", &mut nonce);
        assert_eq!(r, Received::Stale { nonce: "0".into() });
        assert!(resp.is_none());

        // A change is pushed, NACKed, and not re-sent until it changes again.
        let v2 = view("clusters: [{name: a, connect_timeout: 2s}, {name: b}]\n");
        let resp = s.on_snapshot(v2.get(ResourceType::Cluster), "2", &mut nonce);
        assert_eq!(resp.as_ref().map(|r| r.nonce.as_str()), Some("2"));
        let (r, resp) = s.on_request(
            &req(&[], "2", true),
            v2.get(ResourceType::Cluster),
            "2",
            &mut nonce,
        );
        assert!(
            matches!(r, Received::Nack { ref version, code: 3, .. } if version == "2"),
            "{r:?}"
        );
        assert!(resp.is_none(), "no re-send after a NACK");
        assert_eq!(s.acked_version.as_deref(), Some("1"));
        assert!(s
            .on_snapshot(v2.get(ResourceType::Cluster), "3", &mut nonce)
            .is_none());
        // Removal: full state without `b`.
        let v3 = view("clusters: [{name: a}]\n");
        let resp = s.on_snapshot(v3.get(ResourceType::Cluster), "4", &mut nonce);
        assert_eq!(names(&resp), vec!["a".to_string()]);
    }

    #[test]
    fn named_subscriptions_only_get_what_they_asked_for() {
        let v = view(TWO);
        let eds = v.get(ResourceType::Endpoint);
        let mut s = SotwState::new(ResourceType::Endpoint.type_url(), false);
        let mut n = 0;
        let mut nonce = || {
            n += 1;
            n.to_string()
        };
        // An empty EDS request is not a wildcard.
        let (_, resp) = s.on_request(&req(&[], "", false), eds, "1", &mut nonce);
        assert_eq!(names(&resp), Vec::<String>::new());
        let (_, resp) = s.on_request(&req(&["a"], "1", false), eds, "1", &mut nonce);
        assert_eq!(names(&resp), vec!["a".to_string()]);
        // Subscribing to more answers even though nothing changed.
        let (r, resp) = s.on_request(&req(&["a", "b"], "2", false), eds, "1", &mut nonce);
        assert_eq!(r, Received::Ack { version: "1".into() });
        assert_eq!(names(&resp), vec!["a".to_string(), "b".to_string()]);
        // A change to an unsubscribed resource is not pushed.
        let mut s2 = SotwState::new(ResourceType::Endpoint.type_url(), false);
        s2.on_request(&req(&["a"], "", false), eds, "1", &mut nonce);
        let v2 = view("endpoints: [{cluster_name: a}, {cluster_name: b, endpoints: [{}]}]\n");
        assert!(s2
            .on_snapshot(v2.get(ResourceType::Endpoint), "2", &mut nonce)
            .is_none());
    }

    #[test]
    fn cluster_change_re_pushes_its_endpoints() {
        let s = Snapshot::from_yaml(
            "clusters: [{name: a, type: EDS, eds_cluster_config: {eds_config: {ads: {}}}}]\nendpoints: [{cluster_name: a}]\n",
        )
        .unwrap();
        let v1 = View::new(&s.default);
        let mut st = SotwState::new(ResourceType::Endpoint.type_url(), false);
        let mut n = 0;
        let mut nonce = || {
            n += 1;
            n.to_string()
        };
        st.on_request(
            &req(&["a"], "", false),
            v1.get(ResourceType::Endpoint),
            "1",
            &mut nonce,
        );
        let s2 = Snapshot::from_yaml(
            "clusters: [{name: a, type: EDS, connect_timeout: 3s, eds_cluster_config: {eds_config: {ads: {}}}}]\nendpoints: [{cluster_name: a}]\n",
        )
        .unwrap();
        let v2 = View::new(&s2.default);
        assert!(st
            .on_snapshot(v2.get(ResourceType::Endpoint), "2", &mut nonce)
            .is_some());
    }
}
