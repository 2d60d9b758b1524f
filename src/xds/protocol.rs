//! The xDS client protocol as sans-io state machines: what to request, how to
//! read a response, what to ACK or NACK. No sockets, no clocks, no logging:
//! `client.rs` feeds responses in and sends the requests that come out, and
//! the tables in the tests below pin every field of every request.
//!
//! One state value lives as long as a subscription (across reconnects), so a
//! new stream's first requests carry what was accepted before: the SotW
//! `version_info` and the delta `initial_resource_versions`. Everything that
//! is per stream (nonces, whether the node was sent, what the server was told)
//! is reset by `start_stream`.
//!
//! Types are independent: each `ResourceType` has its own version, nonce and
//! subscription, so a NACK of one type on ADS leaves the others untouched.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost::Message;

use super::{resource_name, Resource, ResourceType, Subscriptions, Update};
use crate::proto::envoy::config::core::v3::Node;
use crate::proto::envoy::service::discovery::v3::{
    self as discovery, DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use crate::proto::google::rpc::Status;

/// `google.rpc.Code.INTERNAL`, the code Envoy puts in a NACK's `error_detail`.
pub const NACK_CODE: i32 = 13;

/// The explicit wildcard subscription name.
pub const WILDCARD: &str = "*";

/// The message name of the `Resource` wrapper a SotW server may use (TTL,
/// "resource in SotW").
const WRAPPER_MESSAGE: &str = "envoy.service.discovery.v3.Resource";

/// Which types a stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// ADS: every type on one stream; the type URL says which.
    Aggregated,
    /// A per-type service (StreamClusters, DeltaRoutes, …): this type only.
    Single(ResourceType),
}

impl Scope {
    fn types(self) -> Vec<ResourceType> {
        match self {
            Scope::Aggregated => ResourceType::ALL.to_vec(),
            Scope::Single(ty) => vec![ty],
        }
    }
}

/// What the client wants of one type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// Every resource of the type (LDS, CDS).
    Wildcard,
    /// Exactly these names; empty means none (not a wildcard).
    Names(BTreeSet<String>),
}

impl Default for Want {
    fn default() -> Self {
        Want::Names(BTreeSet::new())
    }
}

impl Want {
    /// `ty`'s entry of an Interest: absent means "nothing of this type".
    pub fn from_subscriptions(subs: &Subscriptions, ty: ResourceType) -> Want {
        match subs.get(&ty) {
            Some(None) => Want::Wildcard,
            Some(Some(names)) => Want::Names(names.clone()),
            None => Want::default(),
        }
    }

    /// Nothing wanted. A first request with no names would be read as a
    /// legacy wildcard, so such a type is not requested at all.
    fn is_empty(&self) -> bool {
        matches!(self, Want::Names(n) if n.is_empty())
    }

    fn wants(&self, name: &str) -> bool {
        match self {
            Want::Wildcard => true,
            Want::Names(n) => n.contains(name),
        }
    }
}

/// A validated response waiting for the sink's verdict. Hand it back to
/// `ack` or `nack` (exactly once) to get the reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub ty: ResourceType,
    /// The response's `version_info` (delta: `system_version_info`).
    pub version: String,
    pub nonce: String,
    /// Delta: what the client holds after an ACK.
    held_changes: Vec<(String, String)>,
    held_removed: Vec<String>,
}

/// What to do with one response.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome<R> {
    /// Give `update` to the sink, then send `ack(pending)` or `nack(pending, error)`.
    Apply { update: Update, pending: Pending },
    /// Refused before the sink saw it (wrong type URL, undecodable or
    /// duplicate resources): send `nack`. `ty` is None for a type URL legacy
    /// does not know.
    Reject {
        ty: Option<ResourceType>,
        error: String,
        nack: R,
    },
    /// Nothing to apply and nothing to send (a type that was never requested
    /// on this stream; an ADS response without a type URL whose type cannot
    /// be told). `reason` is for the log.
    Ignore { reason: String },
}

/// The state of one xDS stream's subscriptions, SotW or delta.
pub trait Protocol {
    type Request;
    type Response;

    /// Records what the client wants now; while a stream is up, returns the
    /// requests that move the server to it.
    fn set_interest(&mut self, subs: &Subscriptions) -> Vec<Self::Request>;
    /// A new stream: the first requests, one per type that wants something.
    fn start_stream(&mut self) -> Vec<Self::Request>;
    /// The stream is gone; per-stream state is dropped at the next start.
    fn end_stream(&mut self);
    fn on_response(&mut self, response: Self::Response) -> Outcome<Self::Request>;
    /// The sink applied the update: accept it and build the ACK.
    fn ack(&mut self, pending: Pending) -> Self::Request;
    /// The sink refused the update: keep the previous state, build the NACK.
    fn nack(&mut self, pending: Pending, error: &str) -> Self::Request;
}

fn error_detail(message: &str) -> Status {
    Status {
        code: NACK_CODE,
        message: message.to_string(),
        details: Vec::new(),
    }
}

/// Hands out the node: on every request, or only on a stream's first one.
#[derive(Clone, Debug)]
struct NodeSender {
    node: Node,
    first_only: bool,
    sent: bool,
}

impl NodeSender {
    fn next(&mut self) -> Option<Node> {
        if self.first_only && self.sent {
            return None;
        }
        self.sent = true;
        Some(self.node.clone())
    }
}

/// Why a response's type could not be taken as a subscribed type.
enum TypeError {
    /// NACK it, with this type URL in the reply.
    Nack {
        ty: Option<ResourceType>,
        type_url: String,
        error: String,
    },
    Ignore(String),
}

/// The type a response is for. `resource_urls` are its resources' type URLs
/// (unwrapped), used only to attribute an ADS response that has no type URL:
/// answering it with an empty type URL would be a protocol error of ours.
fn response_type(
    scope: Scope,
    type_url: &str,
    resource_urls: impl FnOnce() -> Vec<String>,
) -> Result<ResourceType, TypeError> {
    match scope {
        Scope::Single(ty) => {
            if type_url.is_empty() || ResourceType::from_type_url(type_url) == Some(ty) {
                Ok(ty)
            } else {
                Err(TypeError::Nack {
                    ty: Some(ty),
                    type_url: ty.type_url().to_string(),
                    error: format!(
                        "the response's type_url is {type_url}, but this stream is for {}",
                        ty.type_url()
                    ),
                })
            }
        }
        Scope::Aggregated if type_url.is_empty() => {
            let types: BTreeSet<Option<ResourceType>> = resource_urls()
                .iter()
                .map(|u| ResourceType::from_type_url(u))
                .collect();
            match types.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(ty)] => Ok(*ty),
                _ => Err(TypeError::Ignore(
                    "an ADS response without a type_url, and its resources do not tell one type".into(),
                )),
            }
        }
        Scope::Aggregated => ResourceType::from_type_url(type_url).ok_or_else(|| TypeError::Nack {
            ty: None,
            type_url: type_url.to_string(),
            error: format!("legate does not subscribe to type_url {type_url}"),
        }),
    }
}

fn is_wrapper(any: &prost_types::Any) -> bool {
    crate::config::validate::type_url_name(&any.type_url) == WRAPPER_MESSAGE
}

/// A SotW resource as (wrapper name, body): unwraps a `Resource` wrapper.
fn unwrap_sotw(any: prost_types::Any) -> Result<(String, prost_types::Any), String> {
    if !is_wrapper(&any) {
        return Ok((String::new(), any));
    }
    let wrapper = discovery::Resource::decode(any.value.as_slice())
        .map_err(|e| format!("cannot decode {WRAPPER_MESSAGE}: {e}"))?;
    match wrapper.resource {
        Some(body) => Ok((wrapper.name, body)),
        // A TTL heartbeat. Skipping it would delete the resource from a
        // full-state (LDS/CDS) response, so it is refused instead: legate
        // does not advertise TTL support.
        None => Err(format!(
            "the {WRAPPER_MESSAGE} wrapper named {:?} carries no resource (TTL heartbeats are not supported)",
            wrapper.name
        )),
    }
}

/// The resource's name: the one its wrapper gives (Envoy keys resources by
/// it), else the decoded one. Checks the body's type and that it decodes.
fn checked_name(ty: ResourceType, body: &prost_types::Any, wrapper_name: &str) -> Result<String, String> {
    if ResourceType::from_type_url(&body.type_url) != Some(ty) {
        return Err(format!(
            "a resource has type_url {:?}, but the response is for {}",
            body.type_url,
            ty.type_url()
        ));
    }
    let name = resource_name(ty, body)?;
    Ok(if wrapper_name.is_empty() {
        name
    } else {
        wrapper_name.to_string()
    })
}

// ---------------------------------------------------------------- SotW

#[derive(Clone, Debug, Default)]
struct SotwType {
    want: Want,
    /// The last accepted version_info ("" before the first ACK).
    version: String,
    /// The latest nonce received for this type on this stream.
    nonce: String,
    /// A request for this type went out on this stream.
    requested: bool,
    /// A request with names went out on this stream: from then on an empty
    /// list means "none" to the server, so a wildcard must be spelled `*`.
    explicit: bool,
}

/// State-of-the-world subscriptions of one stream (ADS or per type).
#[derive(Clone, Debug)]
pub struct SotwState {
    scope: Scope,
    node: NodeSender,
    streaming: bool,
    types: BTreeMap<ResourceType, SotwType>,
}

impl SotwState {
    pub fn new(scope: Scope, node: Node, set_node_on_first_message_only: bool) -> SotwState {
        SotwState {
            scope,
            node: NodeSender {
                node,
                first_only: set_node_on_first_message_only,
                sent: false,
            },
            streaming: false,
            types: BTreeMap::new(),
        }
    }

    /// The last accepted version of `ty`.
    pub fn version(&self, ty: ResourceType) -> &str {
        self.types.get(&ty).map_or("", |t| t.version.as_str())
    }

    /// The latest nonce received for `ty` on the current stream.
    pub fn nonce(&self, ty: ResourceType) -> &str {
        self.types.get(&ty).map_or("", |t| t.nonce.as_str())
    }

    /// A request for `ty` from its current state: the last accepted version,
    /// the latest nonce, the full name set.
    fn request(&mut self, ty: ResourceType, error: Option<&str>) -> DiscoveryRequest {
        let node = self.node.next();
        let t = self.types.entry(ty).or_default();
        let resource_names: Vec<String> = match &t.want {
            Want::Wildcard if t.explicit => vec![WILDCARD.to_string()],
            Want::Wildcard => Vec::new(),
            Want::Names(n) => n.iter().cloned().collect(),
        };
        t.explicit |= !resource_names.is_empty();
        t.requested = true;
        DiscoveryRequest {
            version_info: t.version.clone(),
            node,
            resource_names,
            type_url: ty.type_url().to_string(),
            response_nonce: t.nonce.clone(),
            error_detail: error.map(error_detail),
            ..Default::default()
        }
    }

    fn validate(want: &Want, ty: ResourceType, response: DiscoveryResponse) -> Result<Vec<Resource>, String> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (i, any) in response.resources.into_iter().enumerate() {
            let (wrapper_name, body) = unwrap_sotw(any).map_err(|e| format!("resource {i}: {e}"))?;
            let name = checked_name(ty, &body, &wrapper_name).map_err(|e| format!("resource {i}: {e}"))?;
            if !seen.insert(name.clone()) {
                return Err(format!("the response names {} {name:?} twice", ty.message_name()));
            }
            // SotW servers may send more than was asked (RDS/EDS); those are
            // not ours to apply.
            if want.wants(&name) {
                out.push(Resource {
                    name,
                    version: response.version_info.clone(),
                    body,
                });
            }
        }
        Ok(out)
    }
}

impl Protocol for SotwState {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;

    fn set_interest(&mut self, subs: &Subscriptions) -> Vec<DiscoveryRequest> {
        let mut out = Vec::new();
        for ty in self.scope.types() {
            let want = Want::from_subscriptions(subs, ty);
            let t = self.types.entry(ty).or_default();
            if t.want == want {
                continue;
            }
            t.want = want;
            // A type the server never heard of on this stream, now wanting
            // nothing, needs no request (an empty one would be a wildcard).
            if self.streaming && (t.requested || !t.want.is_empty()) {
                out.push(self.request(ty, None));
            }
        }
        out
    }

    fn start_stream(&mut self) -> Vec<DiscoveryRequest> {
        self.streaming = true;
        self.node.sent = false;
        for t in self.types.values_mut() {
            t.nonce.clear();
            t.requested = false;
            t.explicit = false;
        }
        let wanted: Vec<ResourceType> = self
            .scope
            .types()
            .into_iter()
            .filter(|ty| self.types.get(ty).is_some_and(|t| !t.want.is_empty()))
            .collect();
        wanted.into_iter().map(|ty| self.request(ty, None)).collect()
    }

    fn end_stream(&mut self) {
        self.streaming = false;
    }

    fn on_response(&mut self, response: DiscoveryResponse) -> Outcome<DiscoveryRequest> {
        let ty = match response_type(self.scope, &response.type_url, || {
            response
                .resources
                .iter()
                .map(|a| {
                    unwrap_sotw(a.clone())
                        .map(|(_, b)| b.type_url)
                        .unwrap_or_default()
                })
                .collect()
        }) {
            Ok(ty) => ty,
            Err(TypeError::Ignore(reason)) => return Outcome::Ignore { reason },
            Err(TypeError::Nack {
                ty: Some(ty), error, ..
            }) => {
                self.types.entry(ty).or_default().nonce = response.nonce;
                let nack = self.request(ty, Some(&error));
                return Outcome::Reject {
                    ty: Some(ty),
                    error,
                    nack,
                };
            }
            Err(TypeError::Nack {
                ty: None,
                type_url,
                error,
            }) => {
                // A type legate has no state for: nothing was ever accepted.
                let nack = DiscoveryRequest {
                    node: self.node.next(),
                    type_url,
                    response_nonce: response.nonce,
                    error_detail: Some(error_detail(&error)),
                    ..Default::default()
                };
                return Outcome::Reject {
                    ty: None,
                    error,
                    nack,
                };
            }
        };
        let t = self.types.entry(ty).or_default();
        // Recorded before validation: the NACK, and any later request for
        // this type, must echo the newest nonce.
        t.nonce = response.nonce.clone();
        if !t.requested {
            return Outcome::Ignore {
                reason: format!("a {} response, but none was requested on this stream", ty.short()),
            };
        }
        let version = response.version_info.clone();
        let nonce = response.nonce.clone();
        match Self::validate(&t.want, ty, response) {
            Ok(resources) => Outcome::Apply {
                update: Update {
                    ty,
                    version: version.clone(),
                    resources,
                    removed: Vec::new(),
                    state_of_the_world: true,
                },
                pending: Pending {
                    ty,
                    version,
                    nonce,
                    held_changes: Vec::new(),
                    held_removed: Vec::new(),
                },
            },
            Err(error) => {
                let nack = self.request(ty, Some(&error));
                Outcome::Reject {
                    ty: Some(ty),
                    error,
                    nack,
                }
            }
        }
    }

    fn ack(&mut self, pending: Pending) -> DiscoveryRequest {
        let t = self.types.entry(pending.ty).or_default();
        t.version = pending.version;
        t.nonce = pending.nonce;
        self.request(pending.ty, None)
    }

    fn nack(&mut self, pending: Pending, error: &str) -> DiscoveryRequest {
        self.types.entry(pending.ty).or_default().nonce = pending.nonce;
        self.request(pending.ty, Some(error))
    }
}

// ---------------------------------------------------------------- delta

#[derive(Clone, Debug, Default)]
struct DeltaType {
    want: Want,
    /// What the server was told on this stream; None before the first request.
    sent: Option<Want>,
    /// Accepted resources: name → version (for `initial_resource_versions`).
    held: BTreeMap<String, String>,
}

/// Incremental (delta) subscriptions of one stream (ADS or per type).
#[derive(Clone, Debug)]
pub struct DeltaState {
    scope: Scope,
    node: NodeSender,
    streaming: bool,
    types: BTreeMap<ResourceType, DeltaType>,
}

impl DeltaState {
    /// `initial_versions`: resources already held (e.g. from a cache), sent
    /// in the first stream's `initial_resource_versions`.
    pub fn new(
        scope: Scope,
        node: Node,
        set_node_on_first_message_only: bool,
        initial_versions: BTreeMap<ResourceType, BTreeMap<String, String>>,
    ) -> DeltaState {
        let types = initial_versions
            .into_iter()
            .filter(|(ty, _)| scope.types().contains(ty))
            .map(|(ty, held)| {
                (
                    ty,
                    DeltaType {
                        held,
                        ..Default::default()
                    },
                )
            })
            .collect();
        DeltaState {
            scope,
            node: NodeSender {
                node,
                first_only: set_node_on_first_message_only,
                sent: false,
            },
            streaming: false,
            types,
        }
    }

    /// What the client holds of `ty`: name → version.
    pub fn held(&self, ty: ResourceType) -> BTreeMap<String, String> {
        self.types.get(&ty).map(|t| t.held.clone()).unwrap_or_default()
    }

    /// The first request for `ty` on this stream: every subscription, and
    /// the versions held, since the server keeps nothing across streams.
    fn first_request(&mut self, ty: ResourceType) -> DeltaDiscoveryRequest {
        let node = self.node.next();
        let t = self.types.entry(ty).or_default();
        // A wildcard is the legacy empty subscription: every server
        // generation reads it as "all", while an explicit `*` is newer.
        let subscribe: Vec<String> = match &t.want {
            Want::Wildcard => Vec::new(),
            Want::Names(n) => n.iter().cloned().collect(),
        };
        let initial: HashMap<String, String> = t
            .held
            .iter()
            .filter(|(name, _)| t.want.wants(name))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        t.sent = Some(t.want.clone());
        DeltaDiscoveryRequest {
            node,
            type_url: ty.type_url().to_string(),
            resource_names_subscribe: subscribe,
            initial_resource_versions: initial,
            ..Default::default()
        }
    }

    /// A subscription change on a stream that already has this type.
    fn diff_request(&mut self, ty: ResourceType) -> Option<DeltaDiscoveryRequest> {
        let t = self.types.entry(ty).or_default();
        let sent = t.sent.clone().unwrap_or_default();
        let (subscribe, unsubscribe): (Vec<String>, Vec<String>) = match (&sent, &t.want) {
            (Want::Names(old), Want::Names(new)) => (
                new.difference(old).cloned().collect(),
                old.difference(new).cloned().collect(),
            ),
            (Want::Wildcard, Want::Names(new)) => (new.iter().cloned().collect(), vec![WILDCARD.to_string()]),
            (Want::Names(old), Want::Wildcard) => (vec![WILDCARD.to_string()], old.iter().cloned().collect()),
            (Want::Wildcard, Want::Wildcard) => (Vec::new(), Vec::new()),
        };
        // Unsubscribed resources are no longer held: claiming them in a
        // later initial_resource_versions would be wrong.
        let want = t.want.clone();
        t.held.retain(|name, _| want.wants(name));
        t.sent = Some(want);
        if subscribe.is_empty() && unsubscribe.is_empty() {
            return None;
        }
        Some(DeltaDiscoveryRequest {
            node: self.node.next(),
            type_url: ty.type_url().to_string(),
            resource_names_subscribe: subscribe,
            resource_names_unsubscribe: unsubscribe,
            ..Default::default()
        })
    }

    fn reply(&mut self, ty: ResourceType, nonce: String, error: Option<&str>) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: self.node.next(),
            type_url: ty.type_url().to_string(),
            response_nonce: nonce,
            error_detail: error.map(error_detail),
            ..Default::default()
        }
    }

    fn validate(t: &DeltaType, ty: ResourceType, response: DeltaDiscoveryResponse) -> Result<Update, String> {
        let mut seen = BTreeSet::new();
        let mut resources = Vec::new();
        for (i, r) in response.resources.into_iter().enumerate() {
            // No body: a TTL heartbeat, which changes nothing here (delta
            // deletes only through removed_resources).
            let Some(body) = r.resource else { continue };
            let wrapper_name = if r.name.is_empty() {
                r.resource_name.map(|n| n.name).unwrap_or_default()
            } else {
                r.name
            };
            let name = checked_name(ty, &body, &wrapper_name).map_err(|e| format!("resource {i}: {e}"))?;
            if !seen.insert(name.clone()) {
                return Err(format!("the response names {} {name:?} twice", ty.message_name()));
            }
            if t.want.wants(&name) {
                resources.push(Resource {
                    name,
                    version: r.version,
                    body,
                });
            }
        }
        let mut removed = Vec::new();
        let names = response
            .removed_resources
            .into_iter()
            .chain(response.removed_resource_names.into_iter().map(|n| n.name));
        for name in names {
            if (t.want.wants(&name) || t.held.contains_key(&name)) && !removed.contains(&name) {
                removed.push(name);
            }
        }
        Ok(Update {
            ty,
            version: response.system_version_info,
            resources,
            removed,
            state_of_the_world: false,
        })
    }
}

impl Protocol for DeltaState {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn set_interest(&mut self, subs: &Subscriptions) -> Vec<DeltaDiscoveryRequest> {
        let mut out = Vec::new();
        for ty in self.scope.types() {
            let want = Want::from_subscriptions(subs, ty);
            let t = self.types.entry(ty).or_default();
            if t.want == want {
                continue;
            }
            t.want = want;
            if !self.streaming {
                continue;
            }
            if t.sent.is_some() {
                out.extend(self.diff_request(ty));
            } else if !t.want.is_empty() {
                out.push(self.first_request(ty));
            }
        }
        out
    }

    fn start_stream(&mut self) -> Vec<DeltaDiscoveryRequest> {
        self.streaming = true;
        self.node.sent = false;
        for t in self.types.values_mut() {
            t.sent = None;
        }
        let wanted: Vec<ResourceType> = self
            .scope
            .types()
            .into_iter()
            .filter(|ty| self.types.get(ty).is_some_and(|t| !t.want.is_empty()))
            .collect();
        wanted.into_iter().map(|ty| self.first_request(ty)).collect()
    }

    fn end_stream(&mut self) {
        self.streaming = false;
    }

    fn on_response(&mut self, response: DeltaDiscoveryResponse) -> Outcome<DeltaDiscoveryRequest> {
        let ty = match response_type(self.scope, &response.type_url, || {
            response
                .resources
                .iter()
                .filter_map(|r| r.resource.as_ref().map(|a| a.type_url.clone()))
                .collect()
        }) {
            Ok(ty) => ty,
            Err(TypeError::Ignore(reason)) => return Outcome::Ignore { reason },
            Err(TypeError::Nack { ty, type_url, error }) => {
                let nack = DeltaDiscoveryRequest {
                    node: self.node.next(),
                    type_url,
                    response_nonce: response.nonce,
                    error_detail: Some(error_detail(&error)),
                    ..Default::default()
                };
                return Outcome::Reject { ty, error, nack };
            }
        };
        let t = self.types.entry(ty).or_default();
        if t.sent.is_none() {
            return Outcome::Ignore {
                reason: format!("a {} response, but none was requested on this stream", ty.short()),
            };
        }
        let nonce = response.nonce.clone();
        match Self::validate(t, ty, response) {
            Ok(update) => {
                let pending = Pending {
                    ty,
                    version: update.version.clone(),
                    nonce,
                    held_changes: update
                        .resources
                        .iter()
                        .map(|r| (r.name.clone(), r.version.clone()))
                        .collect(),
                    held_removed: update.removed.clone(),
                };
                Outcome::Apply { update, pending }
            }
            Err(error) => {
                let nack = self.reply(ty, nonce, Some(&error));
                Outcome::Reject {
                    ty: Some(ty),
                    error,
                    nack,
                }
            }
        }
    }

    fn ack(&mut self, pending: Pending) -> DeltaDiscoveryRequest {
        let t = self.types.entry(pending.ty).or_default();
        for name in &pending.held_removed {
            t.held.remove(name);
        }
        for (name, version) in pending.held_changes {
            t.held.insert(name, version);
        }
        self.reply(pending.ty, pending.nonce, None)
    }

    fn nack(&mut self, pending: Pending, error: &str) -> DeltaDiscoveryRequest {
        self.reply(pending.ty, pending.nonce, Some(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::envoy::config::cluster::v3::Cluster;
    use crate::proto::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use crate::proto::envoy::service::discovery::v3::ResourceName;

    const CDS: ResourceType = ResourceType::Cluster;
    const EDS: ResourceType = ResourceType::ClusterLoadAssignment;
    const RDS: ResourceType = ResourceType::RouteConfiguration;

    fn node() -> Node {
        Node {
            id: "node-1".into(),
            cluster: "test-cluster".into(),
            ..Default::default()
        }
    }

    fn cluster(name: &str) -> prost_types::Any {
        prost_types::Any {
            type_url: CDS.type_url().into(),
            value: Cluster {
                name: name.into(),
                ..Default::default()
            }
            .encode_to_vec(),
        }
    }

    fn cla(name: &str) -> prost_types::Any {
        prost_types::Any {
            type_url: EDS.type_url().into(),
            value: ClusterLoadAssignment {
                cluster_name: name.into(),
                ..Default::default()
            }
            .encode_to_vec(),
        }
    }

    fn wrapped(name: &str, body: Option<prost_types::Any>) -> prost_types::Any {
        prost_types::Any {
            type_url: format!("type.googleapis.com/{WRAPPER_MESSAGE}"),
            value: discovery::Resource {
                name: name.into(),
                version: "w1".into(),
                resource: body,
                ..Default::default()
            }
            .encode_to_vec(),
        }
    }

    /// An Interest entry: `None` names = wildcard.
    fn subs(entries: &[(ResourceType, Option<&[&str]>)]) -> Subscriptions {
        entries
            .iter()
            .map(|(ty, names)| (*ty, names.map(|n| n.iter().map(|s| s.to_string()).collect())))
            .collect()
    }

    fn response(
        type_url: &str,
        version: &str,
        nonce: &str,
        resources: Vec<prost_types::Any>,
    ) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.into(),
            resources,
            type_url: type_url.into(),
            nonce: nonce.into(),
            ..Default::default()
        }
    }

    // ---------------------------------------------------------- SotW

    /// The fields of a DiscoveryRequest that the protocol decides.
    #[derive(Debug, PartialEq)]
    struct Req {
        ty: ResourceType,
        version: &'static str,
        nonce: &'static str,
        names: &'static [&'static str],
        node: bool,
        /// (code, message) of error_detail.
        error: Option<&'static str>,
    }

    fn req(
        ty: ResourceType,
        version: &'static str,
        nonce: &'static str,
        names: &'static [&'static str],
    ) -> Req {
        Req {
            ty,
            version,
            nonce,
            names,
            node: true,
            error: None,
        }
    }

    fn check(step: usize, got: &[DiscoveryRequest], want: &[Req]) {
        assert_eq!(got.len(), want.len(), "step {step}: {got:#?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.type_url, w.ty.type_url(), "step {step}: type_url");
            assert_eq!(
                g.version_info, w.version,
                "step {step}: version_info of {:?}",
                w.ty
            );
            assert_eq!(
                g.response_nonce, w.nonce,
                "step {step}: response_nonce of {:?}",
                w.ty
            );
            assert_eq!(
                g.resource_names, w.names,
                "step {step}: resource_names of {:?}",
                w.ty
            );
            assert_eq!(g.node.is_some(), w.node, "step {step}: node of {:?}", w.ty);
            if let Some(n) = &g.node {
                assert_eq!(n, &node(), "step {step}: the node is sent as is");
            }
            match (&g.error_detail, w.error) {
                (None, None) => {}
                (Some(e), Some(msg)) => {
                    assert_eq!(e.code, NACK_CODE, "step {step}");
                    assert!(
                        e.message.contains(msg),
                        "step {step}: {:?} lacks {msg:?}",
                        e.message
                    );
                }
                (g, w) => panic!("step {step}: error_detail {g:?}, wanted {w:?}"),
            }
        }
    }

    enum Step {
        Interest(Subscriptions),
        Start,
        End,
        /// A response, and the names of the update it must yield (None: rejected, with this error text).
        Respond(DiscoveryResponse, Result<&'static [&'static str], &'static str>),
        Ack,
        Nack(&'static str),
    }

    fn run_sotw(mut state: SotwState, steps: Vec<(Step, Vec<Req>)>) -> SotwState {
        let mut pending = None;
        for (i, (step, want)) in steps.into_iter().enumerate() {
            let got = match step {
                Step::Interest(s) => state.set_interest(&s),
                Step::Start => state.start_stream(),
                Step::End => {
                    state.end_stream();
                    Vec::new()
                }
                Step::Respond(r, expect) => {
                    let version = r.version_info.clone();
                    match (state.on_response(r), expect) {
                        (Outcome::Apply { update, pending: p }, Ok(names)) => {
                            let got: Vec<&str> = update.resources.iter().map(|r| r.name.as_str()).collect();
                            assert_eq!(got, names, "step {i}");
                            assert!(update.state_of_the_world, "step {i}");
                            assert!(update.removed.is_empty(), "step {i}");
                            assert_eq!(update.version, version, "step {i}");
                            assert!(update.resources.iter().all(|r| r.version == version), "step {i}");
                            pending = Some(p);
                            Vec::new()
                        }
                        (Outcome::Reject { error, nack, .. }, Err(text)) => {
                            assert!(error.contains(text), "step {i}: {error:?} lacks {text:?}");
                            vec![nack]
                        }
                        (o, e) => panic!("step {i}: outcome {o:?}, expected {e:?}"),
                    }
                }
                Step::Ack => vec![state.ack(pending.take().expect("an Apply before Ack in the table"))],
                Step::Nack(msg) => {
                    vec![state.nack(pending.take().expect("an Apply before Nack in the table"), msg)]
                }
            };
            check(i, &got, &want);
        }
        state
    }

    #[test]
    fn sotw_ads_conversation() {
        let nack = |ty, version, nonce, names, error| Req {
            error: Some(error),
            ..req(ty, version, nonce, names)
        };
        let cds = CDS.type_url();
        let eds = EDS.type_url();
        let state = run_sotw(
            SotwState::new(Scope::Aggregated, node(), false),
            vec![
                // Before a stream: recorded, nothing sent.
                (Step::Interest(subs(&[(CDS, None), (EDS, Some(&[]))])), vec![]),
                // Legacy wildcard for CDS; EDS wants nothing, so no request
                // (an empty one would read as a wildcard).
                (Step::Start, vec![req(CDS, "", "", &[])]),
                (
                    Step::Respond(
                        response(cds, "1", "n1", vec![cluster("a"), cluster("b")]),
                        Ok(&["a", "b"]),
                    ),
                    vec![],
                ),
                (Step::Ack, vec![req(CDS, "1", "n1", &[])]),
                (
                    Step::Interest(subs(&[(CDS, None), (EDS, Some(&["a", "b"]))])),
                    vec![req(EDS, "", "", &["a", "b"])],
                ),
                // Not subscribed: "c" is dropped.
                (
                    Step::Respond(
                        response(eds, "e5", "m1", vec![cla("a"), cla("c"), cla("b")]),
                        Ok(&["a", "b"]),
                    ),
                    vec![],
                ),
                (Step::Ack, vec![req(EDS, "e5", "m1", &["a", "b"])]),
                (
                    Step::Respond(response(cds, "2", "n2", vec![cluster("a")]), Ok(&["a"])),
                    vec![],
                ),
                // NACK: previous version, this nonce.
                (
                    Step::Nack("cluster a: bad"),
                    vec![nack(CDS, "1", "n2", &[], "cluster a: bad")],
                ),
                // EDS is untouched by the CDS NACK: its own version and nonce.
                (
                    Step::Interest(subs(&[(CDS, None), (EDS, Some(&["a"]))])),
                    vec![req(EDS, "e5", "m1", &["a"])],
                ),
                (
                    Step::Respond(
                        response(cds, "3", "n3", vec![cluster("a"), cluster("a")]),
                        Err("twice"),
                    ),
                    vec![nack(CDS, "1", "n3", &[], "\"a\" twice")],
                ),
                (
                    Step::Respond(response(cds, "4", "n4", vec![cla("a")]), Err("type_url")),
                    vec![nack(CDS, "1", "n4", &[], "ClusterLoadAssignment")],
                ),
                // Unsubscribing everything after names were sent: an empty
                // list, which the server now reads as "none".
                (
                    Step::Interest(subs(&[(CDS, None), (EDS, Some(&[]))])),
                    vec![req(EDS, "e5", "m1", &[])],
                ),
                (
                    Step::Interest(subs(&[(CDS, None), (EDS, Some(&["b"]))])),
                    vec![req(EDS, "e5", "m1", &["b"])],
                ),
                (Step::End, vec![]),
                // Reconnect: versions kept, nonces empty, full names.
                (
                    Step::Start,
                    vec![req(CDS, "1", "", &[]), req(EDS, "e5", "", &["b"])],
                ),
                // The newest nonce of a type is echoed, even one that was NACKed.
                (
                    Step::Respond(
                        response(cds, "5", "n5", vec![cluster("a"), cluster("a")]),
                        Err("twice"),
                    ),
                    vec![nack(CDS, "1", "n5", &[], "twice")],
                ),
                (
                    Step::Respond(response(eds, "e6", "m2", vec![cla("b")]), Ok(&["b"])),
                    vec![],
                ),
                (Step::Ack, vec![req(EDS, "e6", "m2", &["b"])]),
                (Step::Respond(response(eds, "e7", "m3", vec![]), Ok(&[])), vec![]),
                (Step::Ack, vec![req(EDS, "e7", "m3", &["b"])]),
                (
                    Step::Interest(subs(&[(CDS, None), (EDS, Some(&["b", "c"]))])),
                    vec![req(EDS, "e7", "m3", &["b", "c"])],
                ),
            ],
        );
        assert_eq!(state.version(CDS), "1");
        assert_eq!(state.nonce(CDS), "n5");
        assert_eq!(state.version(EDS), "e7");
    }

    #[test]
    fn sotw_node_only_on_first_message() {
        let no_node = |r: Req| Req { node: false, ..r };
        run_sotw(
            SotwState::new(Scope::Aggregated, node(), true),
            vec![
                (Step::Interest(subs(&[(CDS, None), (EDS, Some(&["a"]))])), vec![]),
                (
                    Step::Start,
                    vec![req(CDS, "", "", &[]), no_node(req(EDS, "", "", &["a"]))],
                ),
                (
                    Step::Respond(response(CDS.type_url(), "1", "n1", vec![]), Ok(&[])),
                    vec![],
                ),
                (Step::Ack, vec![no_node(req(CDS, "1", "n1", &[]))]),
                (Step::End, vec![]),
                // Every stream's first message carries it again.
                (
                    Step::Start,
                    vec![req(CDS, "1", "", &[]), no_node(req(EDS, "", "", &["a"]))],
                ),
            ],
        );
    }

    #[test]
    fn sotw_wildcard_spelled_out_once_names_were_sent() {
        run_sotw(
            SotwState::new(Scope::Aggregated, node(), false),
            vec![
                (Step::Interest(subs(&[(CDS, Some(&["a"]))])), vec![]),
                (Step::Start, vec![req(CDS, "", "", &["a"])]),
                // After names, an empty list means "none": the wildcard is `*`.
                (
                    Step::Interest(subs(&[(CDS, None)])),
                    vec![req(CDS, "", "", &["*"])],
                ),
                (
                    Step::Respond(
                        response(CDS.type_url(), "1", "n1", vec![cluster("a"), cluster("z")]),
                        Ok(&["a", "z"]),
                    ),
                    vec![],
                ),
                (Step::Ack, vec![req(CDS, "1", "n1", &["*"])]),
                (Step::End, vec![]),
                // A new stream starts with the legacy form again.
                (Step::Start, vec![req(CDS, "1", "", &[])]),
            ],
        );
    }

    #[test]
    fn sotw_response_checks() {
        type Check = (
            &'static str,
            Scope,
            DiscoveryResponse,
            Result<Vec<(&'static str, prost_types::Any)>, &'static str>,
        );
        let cds = CDS.type_url();
        let garbage = prost_types::Any {
            type_url: cds.into(),
            value: vec![0xff, 0xff, 0xff],
        };
        let table: Vec<Check> = vec![
            (
                "wrapper unwrapped, its name kept",
                Scope::Aggregated,
                response(
                    cds,
                    "1",
                    "n",
                    vec![wrapped("a", Some(cluster("a"))), cluster("b")],
                ),
                Ok(vec![("a", cluster("a")), ("b", cluster("b"))]),
            ),
            (
                "wrapper without a name: the decoded one",
                Scope::Aggregated,
                response(cds, "1", "n", vec![wrapped("", Some(cluster("a")))]),
                Ok(vec![("a", cluster("a"))]),
            ),
            (
                "heartbeat wrapper refused (would delete from a full-state response)",
                Scope::Aggregated,
                response(cds, "1", "n", vec![wrapped("a", None)]),
                Err("heartbeat"),
            ),
            (
                "wrapped body of the wrong type",
                Scope::Aggregated,
                response(cds, "1", "n", vec![wrapped("a", Some(cla("a")))]),
                Err("type_url"),
            ),
            (
                "undecodable",
                Scope::Aggregated,
                response(cds, "1", "n", vec![garbage]),
                Err("cannot decode"),
            ),
            (
                "duplicate through a wrapper",
                Scope::Aggregated,
                response(
                    cds,
                    "1",
                    "n",
                    vec![wrapped("a", Some(cluster("a"))), cluster("a")],
                ),
                Err("twice"),
            ),
            (
                "ADS without a type_url: told by the resources",
                Scope::Aggregated,
                response("", "1", "n", vec![cluster("a")]),
                Ok(vec![("a", cluster("a"))]),
            ),
            (
                "per-type stream without a type_url: the stream's type",
                Scope::Single(CDS),
                response("", "1", "n", vec![cluster("a")]),
                Ok(vec![("a", cluster("a"))]),
            ),
            (
                "per-type stream, another type",
                Scope::Single(CDS),
                response(EDS.type_url(), "1", "n", vec![cla("a")]),
                Err("this stream is for"),
            ),
            (
                "any type URL prefix",
                Scope::Single(CDS),
                response(
                    "example.com/envoy.config.cluster.v3.Cluster",
                    "1",
                    "n",
                    vec![cluster("a")],
                ),
                Ok(vec![("a", cluster("a"))]),
            ),
        ];
        for (what, scope, resp, want) in table {
            let mut s = SotwState::new(scope, node(), false);
            s.set_interest(&subs(&[(CDS, None)]));
            s.start_stream();
            match (s.on_response(resp), want) {
                (Outcome::Apply { update, .. }, Ok(want)) => {
                    let got: Vec<(&str, prost_types::Any)> = update
                        .resources
                        .iter()
                        .map(|r| (r.name.as_str(), r.body.clone()))
                        .collect();
                    assert_eq!(got, want, "{what}");
                    assert_eq!(update.ty, CDS, "{what}");
                }
                (Outcome::Reject { ty, error, nack }, Err(text)) => {
                    assert!(error.contains(text), "{what}: {error:?}");
                    assert_eq!(ty, Some(CDS), "{what}");
                    assert_eq!(nack.type_url, cds, "{what}");
                    assert_eq!(nack.response_nonce, "n", "{what}");
                    assert_eq!(nack.version_info, "", "{what}");
                    assert_eq!(
                        nack.error_detail.map(|e| (e.code, e.message)),
                        Some((NACK_CODE, error)),
                        "{what}"
                    );
                }
                (got, want) => panic!("{what}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn sotw_unknown_and_unrequested_types() {
        let mut s = SotwState::new(Scope::Aggregated, node(), false);
        s.set_interest(&subs(&[(CDS, None)]));
        s.start_stream();
        // An unknown type on ADS: NACKed with its own type URL.
        let secret = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
        match s.on_response(response(secret, "1", "x1", vec![])) {
            Outcome::Reject { ty: None, nack, .. } => {
                assert_eq!(nack.type_url, secret);
                assert_eq!(nack.response_nonce, "x1");
                assert_eq!(nack.version_info, "");
                assert_eq!(nack.error_detail.map(|e| e.code), Some(NACK_CODE));
            }
            o => panic!("{o:?}"),
        }
        // A known type nobody asked for: ignored, but its nonce is kept for
        // the first request of that type.
        let o = s.on_response(response(RDS.type_url(), "r1", "x2", vec![]));
        assert!(matches!(o, Outcome::Ignore { .. }), "{o:?}");
        let got = s.set_interest(&subs(&[(CDS, None), (RDS, Some(&["r"]))]));
        check(0, &got, &[req(RDS, "", "x2", &["r"])]);
        // No type_url and nothing to tell the type by: ignored, never answered
        // with an empty type_url.
        let o = s.on_response(response("", "1", "x3", vec![]));
        assert!(matches!(o, Outcome::Ignore { .. }), "{o:?}");
        let o = s.on_response(response("", "1", "x4", vec![cluster("a"), cla("b")]));
        assert!(matches!(o, Outcome::Ignore { .. }), "{o:?}");
        // Nothing of the CDS state moved.
        assert_eq!(s.nonce(CDS), "");
    }

    // ---------------------------------------------------------- delta

    #[derive(Debug, PartialEq)]
    struct DReq {
        ty: ResourceType,
        subscribe: &'static [&'static str],
        unsubscribe: &'static [&'static str],
        initial: &'static [(&'static str, &'static str)],
        nonce: &'static str,
        node: bool,
        error: Option<&'static str>,
    }

    fn dreq(ty: ResourceType) -> DReq {
        DReq {
            ty,
            subscribe: &[],
            unsubscribe: &[],
            initial: &[],
            nonce: "",
            node: true,
            error: None,
        }
    }

    fn dcheck(step: usize, got: &[DeltaDiscoveryRequest], want: &[DReq]) {
        assert_eq!(got.len(), want.len(), "step {step}: {got:#?}");
        for (g, w) in got.iter().zip(want) {
            let initial: BTreeMap<&str, &str> = w.initial.iter().copied().collect();
            let got_initial: BTreeMap<&str, &str> = g
                .initial_resource_versions
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert_eq!(g.type_url, w.ty.type_url(), "step {step}");
            assert_eq!(
                g.resource_names_subscribe, w.subscribe,
                "step {step}: subscribe of {:?}",
                w.ty
            );
            assert_eq!(
                g.resource_names_unsubscribe, w.unsubscribe,
                "step {step}: unsubscribe of {:?}",
                w.ty
            );
            assert_eq!(
                got_initial, initial,
                "step {step}: initial_resource_versions of {:?}",
                w.ty
            );
            assert_eq!(
                g.response_nonce, w.nonce,
                "step {step}: response_nonce of {:?}",
                w.ty
            );
            assert_eq!(g.node.is_some(), w.node, "step {step}: node of {:?}", w.ty);
            match (&g.error_detail, w.error) {
                (None, None) => {}
                (Some(e), Some(msg)) => {
                    assert_eq!(e.code, NACK_CODE, "step {step}");
                    assert!(e.message.contains(msg), "step {step}: {:?}", e.message);
                }
                (g, w) => panic!("step {step}: error_detail {g:?}, wanted {w:?}"),
            }
        }
    }

    fn dresource(name: &str, version: &str, body: Option<prost_types::Any>) -> discovery::Resource {
        discovery::Resource {
            name: name.into(),
            version: version.into(),
            resource: body,
            ..Default::default()
        }
    }

    fn dresponse(
        ty: ResourceType,
        nonce: &str,
        resources: Vec<discovery::Resource>,
        removed: &[&str],
    ) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: format!("sys-{nonce}"),
            resources,
            type_url: ty.type_url().into(),
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            nonce: nonce.into(),
            ..Default::default()
        }
    }

    /// What a delta response must yield: the (name, version) of its resources
    /// and the removed names, or the text of the error.
    type DeltaExpect =
        Result<(&'static [(&'static str, &'static str)], &'static [&'static str]), &'static str>;

    enum DStep {
        Interest(Subscriptions),
        Start,
        End,
        Respond(DeltaDiscoveryResponse, DeltaExpect),
        Ack,
        Nack(&'static str),
    }

    fn run_delta(mut state: DeltaState, steps: Vec<(DStep, Vec<DReq>)>) -> DeltaState {
        let mut pending = None;
        for (i, (step, want)) in steps.into_iter().enumerate() {
            let got = match step {
                DStep::Interest(s) => state.set_interest(&s),
                DStep::Start => state.start_stream(),
                DStep::End => {
                    state.end_stream();
                    Vec::new()
                }
                DStep::Respond(r, expect) => {
                    let version = r.system_version_info.clone();
                    match (state.on_response(r), expect) {
                        (Outcome::Apply { update, pending: p }, Ok((resources, removed))) => {
                            let got: Vec<(&str, &str)> = update
                                .resources
                                .iter()
                                .map(|r| (r.name.as_str(), r.version.as_str()))
                                .collect();
                            assert_eq!(got, resources, "step {i}");
                            assert_eq!(update.removed, removed, "step {i}");
                            assert!(!update.state_of_the_world, "step {i}");
                            assert_eq!(update.version, version, "step {i}");
                            pending = Some(p);
                            Vec::new()
                        }
                        (Outcome::Reject { error, nack, .. }, Err(text)) => {
                            assert!(error.contains(text), "step {i}: {error:?} lacks {text:?}");
                            vec![nack]
                        }
                        (o, e) => panic!("step {i}: outcome {o:?}, expected {e:?}"),
                    }
                }
                DStep::Ack => vec![state.ack(pending.take().expect("an Apply before Ack in the table"))],
                DStep::Nack(msg) => {
                    vec![state.nack(pending.take().expect("an Apply before Nack in the table"), msg)]
                }
            };
            dcheck(i, &got, &want);
        }
        state
    }

    #[test]
    fn delta_ads_conversation() {
        let cached = BTreeMap::from([(CDS, BTreeMap::from([("old".to_string(), "v0".to_string())]))]);
        let state = run_delta(
            DeltaState::new(Scope::Aggregated, node(), false, cached),
            vec![
                (DStep::Interest(subs(&[(CDS, None), (EDS, Some(&["a"]))])), vec![]),
                // First request per type: every subscription plus what is held.
                (
                    DStep::Start,
                    vec![
                        DReq {
                            initial: &[("old", "v0")],
                            ..dreq(CDS)
                        },
                        DReq {
                            subscribe: &["a"],
                            ..dreq(EDS)
                        },
                    ],
                ),
                (
                    DStep::Respond(
                        dresponse(
                            CDS,
                            "d1",
                            vec![
                                dresource("a", "1", Some(cluster("a"))),
                                dresource("b", "1", Some(cluster("b"))),
                            ],
                            &["old"],
                        ),
                        Ok((&[("a", "1"), ("b", "1")], &["old"])),
                    ),
                    vec![],
                ),
                // ACK: the nonce, no subscription change.
                (
                    DStep::Ack,
                    vec![DReq {
                        nonce: "d1",
                        ..dreq(CDS)
                    }],
                ),
                // Diffs only, never a nonce on a spontaneous request.
                (
                    DStep::Interest(subs(&[(CDS, None), (EDS, Some(&["a", "b"]))])),
                    vec![DReq {
                        subscribe: &["b"],
                        ..dreq(EDS)
                    }],
                ),
                (
                    DStep::Interest(subs(&[(CDS, None), (EDS, Some(&["b"]))])),
                    vec![DReq {
                        unsubscribe: &["a"],
                        ..dreq(EDS)
                    }],
                ),
                (DStep::Interest(subs(&[(CDS, None), (EDS, Some(&["b"]))])), vec![]),
                (
                    DStep::Respond(
                        dresponse(EDS, "d2", vec![dresource("b", "7", Some(cla("b")))], &[]),
                        Ok((&[("b", "7")], &[])),
                    ),
                    vec![],
                ),
                (
                    DStep::Nack("endpoint b: bad"),
                    vec![DReq {
                        nonce: "d2",
                        error: Some("endpoint b: bad"),
                        ..dreq(EDS)
                    }],
                ),
                // A removal: absent resources stay.
                (
                    DStep::Respond(
                        dresponse(CDS, "d3", vec![], &["a", "never-heard-of"]),
                        Ok((&[], &["a", "never-heard-of"])),
                    ),
                    vec![],
                ),
                (
                    DStep::Ack,
                    vec![DReq {
                        nonce: "d3",
                        ..dreq(CDS)
                    }],
                ),
                (
                    DStep::Respond(
                        dresponse(
                            CDS,
                            "d4",
                            vec![
                                dresource("c", "2", Some(cluster("c"))),
                                dresource("c", "2", Some(cluster("c"))),
                            ],
                            &[],
                        ),
                        Err("twice"),
                    ),
                    vec![DReq {
                        nonce: "d4",
                        error: Some("twice"),
                        ..dreq(CDS)
                    }],
                ),
                (DStep::End, vec![]),
                // Reconnect: held versions (b only: a removed, the NACKed EDS b not held).
                (
                    DStep::Start,
                    vec![
                        DReq {
                            initial: &[("b", "1")],
                            ..dreq(CDS)
                        },
                        DReq {
                            subscribe: &["b"],
                            ..dreq(EDS)
                        },
                    ],
                ),
                (
                    DStep::Respond(
                        dresponse(
                            EDS,
                            "d5",
                            vec![
                                dresource("b", "8", Some(cla("b"))),
                                dresource("zz", "1", Some(cla("zz"))),
                            ],
                            &[],
                        ),
                        Ok((&[("b", "8")], &[])),
                    ),
                    vec![],
                ),
                (
                    DStep::Ack,
                    vec![DReq {
                        nonce: "d5",
                        ..dreq(EDS)
                    }],
                ),
                (DStep::End, vec![]),
                (
                    DStep::Start,
                    vec![
                        DReq {
                            initial: &[("b", "1")],
                            ..dreq(CDS)
                        },
                        DReq {
                            subscribe: &["b"],
                            initial: &[("b", "8")],
                            ..dreq(EDS)
                        },
                    ],
                ),
                // Unsubscribing drops what was held of it.
                (
                    DStep::Interest(subs(&[(CDS, None), (EDS, Some(&["c"]))])),
                    vec![DReq {
                        subscribe: &["c"],
                        unsubscribe: &["b"],
                        ..dreq(EDS)
                    }],
                ),
            ],
        );
        assert_eq!(state.held(EDS), BTreeMap::new());
        assert_eq!(
            state.held(CDS),
            BTreeMap::from([("b".to_string(), "1".to_string())])
        );
    }

    #[test]
    fn delta_per_type_and_node_first_only() {
        let no_node = |r: DReq| DReq { node: false, ..r };
        run_delta(
            DeltaState::new(Scope::Single(EDS), node(), true, BTreeMap::new()),
            vec![
                // Nothing wanted: no request (an empty first one is a wildcard).
                (DStep::Interest(subs(&[(CDS, None), (EDS, Some(&[]))])), vec![]),
                (DStep::Start, vec![]),
                // Other types are not this stream's.
                (
                    DStep::Interest(subs(&[(CDS, None), (EDS, Some(&["a"]))])),
                    vec![DReq {
                        subscribe: &["a"],
                        ..dreq(EDS)
                    }],
                ),
                (
                    DStep::Respond(
                        DeltaDiscoveryResponse {
                            type_url: String::new(),
                            // removed_resource_names count as removals too; heartbeats change nothing.
                            removed_resource_names: vec![ResourceName {
                                name: "a".into(),
                                ..Default::default()
                            }],
                            resources: vec![dresource("a", "3", None)],
                            nonce: "p1".into(),
                            ..Default::default()
                        },
                        Ok((&[], &["a"])),
                    ),
                    vec![],
                ),
                (
                    DStep::Ack,
                    vec![no_node(DReq {
                        nonce: "p1",
                        ..dreq(EDS)
                    })],
                ),
                (
                    DStep::Respond(dresponse(CDS, "p2", vec![], &[]), Err("this stream is for")),
                    vec![no_node(DReq {
                        nonce: "p2",
                        error: Some("this stream is for"),
                        ..dreq(EDS)
                    })],
                ),
                (
                    DStep::Respond(
                        dresponse(EDS, "p3", vec![dresource("a", "3", Some(cluster("a")))], &[]),
                        Err("type_url"),
                    ),
                    vec![no_node(DReq {
                        nonce: "p3",
                        error: Some("type_url"),
                        ..dreq(EDS)
                    })],
                ),
                (DStep::End, vec![]),
                (
                    DStep::Start,
                    vec![DReq {
                        subscribe: &["a"],
                        ..dreq(EDS)
                    }],
                ),
            ],
        );
    }

    #[test]
    fn delta_unknown_type_on_ads_is_nacked() {
        let mut s = DeltaState::new(Scope::Aggregated, node(), false, BTreeMap::new());
        s.set_interest(&subs(&[(CDS, None)]));
        s.start_stream();
        let url = "type.googleapis.com/envoy.api.v2.Cluster";
        match s.on_response(DeltaDiscoveryResponse {
            type_url: url.into(),
            nonce: "u1".into(),
            ..Default::default()
        }) {
            Outcome::Reject { ty: None, nack, .. } => {
                assert_eq!(nack.type_url, url);
                assert_eq!(nack.response_nonce, "u1");
                assert!(nack.error_detail.is_some());
            }
            o => panic!("{o:?}"),
        }
        let o = s.on_response(dresponse(RDS, "u2", vec![], &[]));
        assert!(matches!(o, Outcome::Ignore { .. }), "{o:?}");
    }
}
