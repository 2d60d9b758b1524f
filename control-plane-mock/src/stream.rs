//! The thin I/O driver of one xDS stream: reads requests, watches for new
//! snapshots and shutdown, runs the per-type state machines (`sotw`,
//! `delta`) and writes their responses. The same loop serves SotW and delta
//! through the `Protocol` trait.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use legate::proto::envoy::config::core::v3::Node;
use legate::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};

use crate::core::Core;
use crate::delta::DeltaState;
use crate::registry::{now_ms, ClientInfo, Event, EventKind, Nack, TypeStatus};
use crate::resource_type::ResourceType;
use crate::snapshot::{Published, Served, View};
use crate::sotw::{Received, SotwState};

/// Which gRPC service a stream came in on: ADS (any type) or one type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Service {
    Ads,
    Single(ResourceType),
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Ads => "ADS",
            Service::Single(t) => t.short(),
        }
    }
}

/// (version, nonce, names sent, names removed) of a response, for the log.
type Parts = (String, String, Vec<String>, Vec<String>);

/// One flavour of the protocol.
pub(crate) trait Protocol: Send + 'static {
    type Req: Send + Sync + 'static;
    type Resp: Send + Sync + 'static;
    type State: Send + Sync + 'static;
    const MODE: &'static str;

    fn node(req: &Self::Req) -> Option<&Node>;
    fn type_url(req: &Self::Req) -> &str;
    fn new_state(type_url: &str, ty: Option<ResourceType>) -> Self::State;
    fn on_request(
        state: &mut Self::State,
        req: &Self::Req,
        resources: &BTreeMap<String, Served>,
        version: &str,
        nonce: &mut dyn FnMut() -> String,
    ) -> (Received, Option<Self::Resp>);
    fn on_snapshot(
        state: &mut Self::State,
        resources: &BTreeMap<String, Served>,
        version: &str,
        nonce: &mut dyn FnMut() -> String,
    ) -> Option<Self::Resp>;
    /// Names a request subscribes to, nonce and error, for the event log.
    fn request_names(req: &Self::Req) -> Vec<String>;
    fn response_parts(state: &Self::State, resp: &Self::Resp) -> Parts;
    fn status(state: &Self::State) -> TypeStatus;
}

pub(crate) struct Sotw;
pub(crate) struct Delta;

impl Protocol for Sotw {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    type State = SotwState;
    const MODE: &'static str = "sotw";

    fn node(req: &DiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn type_url(req: &DiscoveryRequest) -> &str {
        &req.type_url
    }
    fn new_state(type_url: &str, ty: Option<ResourceType>) -> SotwState {
        SotwState::new(type_url, ty.is_some_and(ResourceType::is_full_state))
    }
    fn on_request(
        state: &mut SotwState,
        req: &DiscoveryRequest,
        resources: &BTreeMap<String, Served>,
        version: &str,
        nonce: &mut dyn FnMut() -> String,
    ) -> (Received, Option<DiscoveryResponse>) {
        state.on_request(req, resources, version, nonce)
    }
    fn on_snapshot(
        state: &mut SotwState,
        resources: &BTreeMap<String, Served>,
        version: &str,
        nonce: &mut dyn FnMut() -> String,
    ) -> Option<DiscoveryResponse> {
        state.on_snapshot(resources, version, nonce)
    }
    fn request_names(req: &DiscoveryRequest) -> Vec<String> {
        req.resource_names.clone()
    }
    fn response_parts(state: &SotwState, resp: &DiscoveryResponse) -> Parts {
        let names = state
            .sent
            .as_ref()
            .map(|s| s.resources.keys().cloned().collect())
            .unwrap_or_default();
        (resp.version_info.clone(), resp.nonce.clone(), names, Vec::new())
    }
    fn status(s: &SotwState) -> TypeStatus {
        TypeStatus {
            subscribed: s.subscribed(),
            last_sent_version: s.sent.as_ref().map(|x| x.version.clone()),
            last_sent_nonce: s.sent.as_ref().map(|x| x.nonce.clone()),
            acked_version: s.acked_version.clone(),
            last_nack: s.last_nack.as_ref().map(|(v, c, m)| Nack {
                version: v.clone(),
                code: *c,
                message: m.clone(),
            }),
        }
    }
}

impl Protocol for Delta {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    type State = DeltaState;
    const MODE: &'static str = "delta";

    fn node(req: &DeltaDiscoveryRequest) -> Option<&Node> {
        req.node.as_ref()
    }
    fn type_url(req: &DeltaDiscoveryRequest) -> &str {
        &req.type_url
    }
    fn new_state(type_url: &str, _ty: Option<ResourceType>) -> DeltaState {
        DeltaState::new(type_url)
    }
    fn on_request(
        state: &mut DeltaState,
        req: &DeltaDiscoveryRequest,
        resources: &BTreeMap<String, Served>,
        version: &str,
        nonce: &mut dyn FnMut() -> String,
    ) -> (Received, Option<DeltaDiscoveryResponse>) {
        state.on_request(req, resources, version, nonce)
    }
    fn on_snapshot(
        state: &mut DeltaState,
        resources: &BTreeMap<String, Served>,
        version: &str,
        nonce: &mut dyn FnMut() -> String,
    ) -> Option<DeltaDiscoveryResponse> {
        state.on_snapshot(resources, version, nonce)
    }
    fn request_names(req: &DeltaDiscoveryRequest) -> Vec<String> {
        let mut out = req.resource_names_subscribe.clone();
        out.extend(req.resource_names_unsubscribe.iter().map(|n| format!("-{n}")));
        out
    }
    fn response_parts(_state: &DeltaState, resp: &DeltaDiscoveryResponse) -> Parts {
        (
            resp.system_version_info.clone(),
            resp.nonce.clone(),
            resp.resources.iter().map(|r| r.name.clone()).collect(),
            resp.removed_resources.clone(),
        )
    }
    fn status(s: &DeltaState) -> TypeStatus {
        TypeStatus {
            subscribed: s.subscribed(),
            last_sent_version: s.last_sent.as_ref().map(|x| x.1.clone()),
            last_sent_nonce: s.last_sent.as_ref().map(|x| x.0.clone()),
            acked_version: s.acked_version.clone(),
            last_nack: s.last_nack.as_ref().map(|(v, c, m)| Nack {
                version: v.clone(),
                code: *c,
                message: m.clone(),
            }),
        }
    }
}

/// Starts driving a stream; returns the response stream for tonic.
pub(crate) fn spawn<P: Protocol>(
    core: Arc<Core>,
    service: Service,
    inbound: Streaming<P::Req>,
    peer: String,
) -> ReceiverStream<Result<P::Resp, Status>> {
    // Small: a slow reader holds back this stream only, and every push is
    // computed from the latest snapshot, so nothing queues up stale.
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut driver = Driver::<P> {
            id: core.next_stream_id(),
            core,
            service,
            tx,
            states: BTreeMap::new(),
            node: None,
            nonce: 0,
            info: ClientInfo::default(),
        };
        driver.info = ClientInfo {
            stream: driver.id,
            service: service.name().into(),
            mode: P::MODE.into(),
            peer,
            connected_at_ms: now_ms(),
            ..Default::default()
        };
        driver.run(inbound).await;
    });
    ReceiverStream::new(rx)
}

struct Driver<P: Protocol> {
    id: u64,
    core: Arc<Core>,
    service: Service,
    tx: mpsc::Sender<Result<P::Resp, Status>>,
    states: BTreeMap<String, P::State>,
    node: Option<String>,
    nonce: u64,
    info: ClientInfo,
}

const LOGGED_NAMES: usize = 50;

static EMPTY: BTreeMap<String, Served> = BTreeMap::new();

fn resources_of<'a>(view: &'a View, type_url: &str) -> &'a BTreeMap<String, Served> {
    match ResourceType::from_type_url(type_url) {
        Some(t) => view.get(t),
        // A type the mock has no resources of (secrets, runtime…): an empty
        // set, so the client learns there is nothing rather than waiting.
        None => &EMPTY,
    }
}

impl<P: Protocol> Driver<P> {
    async fn run(&mut self, mut inbound: Streaming<P::Req>) {
        let mut snapshots = self.core.subscribe();
        let mut shutdown = self.core.shutdown.subscribe();
        let mut published = snapshots.borrow_and_update().clone();
        let mut view: Option<Arc<View>> = None;
        loop {
            tokio::select! {
                msg = inbound.message() => {
                    let req = match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!("stream {}: {status}", self.id);
                            break;
                        }
                    };
                    let v = view.get_or_insert_with(|| {
                        self.connected(P::node(&req));
                        published.view(self.node.as_deref().unwrap_or_default())
                    }).clone();
                    if !self.request(&req, &v, &published).await {
                        break;
                    }
                }
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    published = snapshots.borrow_and_update().clone();
                    if let Some(node) = &self.node {
                        let v = published.view(node);
                        view = Some(v.clone());
                        if !self.push(&v, &published).await {
                            break;
                        }
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        if self.node.is_some() {
            self.core.registry.remove_client(self.id);
            self.event(EventKind::Disconnect, "", |_| {});
        }
    }

    fn connected(&mut self, node: Option<&Node>) {
        let (id, cluster) = node
            .map(|n| (n.id.clone(), n.cluster.clone()))
            .unwrap_or_default();
        self.info.node_id = id.clone();
        self.info.node_cluster = cluster;
        self.node = Some(id);
        self.core.registry.set_client(self.info.clone());
        self.event(EventKind::Connect, "", |e| {
            e.detail = format!("{} {} from {}", self.info.service, P::MODE, self.info.peer);
        });
    }

    /// Handles one request; `false` ends the stream.
    async fn request(&mut self, req: &P::Req, view: &View, published: &Published) -> bool {
        let type_url = match (self.service, P::type_url(req)) {
            (Service::Ads, "") => {
                return self
                    .fail(Status::invalid_argument("type URL is required for ADS"))
                    .await
            }
            (Service::Ads, t) => t.to_string(),
            (Service::Single(ty), "") => ty.type_url().to_string(),
            (Service::Single(ty), t) if t == ty.type_url() => t.to_string(),
            (Service::Single(ty), t) => {
                let msg = format!(
                    "type URL `{t}` on the {} service, which serves {}",
                    ty.short(),
                    ty.type_url()
                );
                return self.fail(Status::invalid_argument(msg)).await;
            }
        };
        let resources = resources_of(view, &type_url);
        let state = self
            .states
            .entry(type_url.clone())
            .or_insert_with(|| P::new_state(&type_url, ResourceType::from_type_url(&type_url)));
        let counter = &mut self.nonce;
        let mut next_nonce = || {
            *counter += 1;
            counter.to_string()
        };
        let (received, resp) = P::on_request(state, req, resources, &published.version, &mut next_nonce);
        let status = P::status(state);
        let parts = resp.as_ref().map(|r| P::response_parts(state, r));
        let names = P::request_names(req);
        let (kind, version, nonce, detail) = match received {
            Received::Initial => (EventKind::Request, String::new(), String::new(), String::new()),
            Received::Ack { version } => (EventKind::Ack, version, String::new(), String::new()),
            Received::Nack {
                version,
                code,
                message,
            } => (
                EventKind::Nack,
                version,
                String::new(),
                format!("code {code}: {message}"),
            ),
            Received::Stale { nonce } => (
                EventKind::Stale,
                String::new(),
                nonce,
                "nonce is not the latest sent; ignored".into(),
            ),
        };
        if kind == EventKind::Nack {
            tracing::warn!(
                "node `{}` rejected {type_url} version {version}: {detail}",
                self.info.node_id
            );
        }
        self.event(kind, &type_url, |e| {
            e.version = version;
            e.nonce = nonce;
            e.resources = names;
            e.detail = detail;
        });
        self.info.types.insert(type_url.clone(), status);
        let ok = match (resp, parts) {
            (Some(resp), Some(parts)) => self.send(&type_url, resp, parts).await,
            _ => true,
        };
        self.core.registry.set_client(self.info.clone());
        ok
    }

    /// Pushes a new snapshot, type by type in make-before-break order
    /// (clusters, endpoints, listeners, routes), then any other type.
    async fn push(&mut self, view: &View, published: &Published) -> bool {
        let mut order: Vec<String> = ResourceType::ALL
            .iter()
            .map(|t| t.type_url().to_string())
            .filter(|u| self.states.contains_key(u))
            .collect();
        order.extend(
            self.states
                .keys()
                .filter(|u| ResourceType::from_type_url(u).is_none())
                .cloned(),
        );
        let mut sent_any = false;
        for type_url in order {
            let Some(state) = self.states.get_mut(&type_url) else {
                continue;
            };
            let counter = &mut self.nonce;
            let mut next_nonce = || {
                *counter += 1;
                counter.to_string()
            };
            let resp = P::on_snapshot(
                state,
                resources_of(view, &type_url),
                &published.version,
                &mut next_nonce,
            );
            let status = P::status(state);
            if let Some(resp) = resp {
                let parts = P::response_parts(state, &resp);
                self.info.types.insert(type_url.clone(), status);
                sent_any = true;
                if !self.send(&type_url, resp, parts).await {
                    return false;
                }
            }
        }
        if sent_any {
            self.core.registry.set_client(self.info.clone());
        }
        true
    }

    async fn send(&mut self, type_url: &str, resp: P::Resp, parts: Parts) -> bool {
        let (version, nonce, mut names, removed) = parts;
        self.event(EventKind::Response, type_url, |e| {
            e.version = version;
            e.nonce = nonce;
            e.detail = format!("{} resources", names.len());
            if !removed.is_empty() {
                e.detail.push_str(&format!(", removed: {}", removed.join(", ")));
            }
            // The log is for reading: a 10,000-cluster push names a few.
            if names.len() > LOGGED_NAMES {
                names.truncate(LOGGED_NAMES);
                e.detail.push_str(&format!(" (first {LOGGED_NAMES} named)"));
            }
            e.resources = names;
        });
        self.tx.send(Ok(resp)).await.is_ok()
    }

    async fn fail(&mut self, status: Status) -> bool {
        self.event(EventKind::Error, "", |e| e.detail = status.message().to_string());
        let _ = self.tx.send(Err(status)).await;
        false
    }

    fn event(&self, kind: EventKind, type_url: &str, fill: impl FnOnce(&mut Event)) {
        let mut e = Event::new(kind);
        e.stream = self.id;
        e.node_id = self.info.node_id.clone();
        e.type_url = type_url.to_string();
        fill(&mut e);
        self.core.registry.record(e);
    }
}
