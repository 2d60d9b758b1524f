//! The gRPC driver of the xDS client: one task per `Source` that dials the
//! control plane, keeps a stream open, feeds every response through the
//! sans-io state of `protocol.rs` to the `Sink`, and sends what the state
//! says (first requests, ACK/NACK, subscription changes).
//!
//! Ordering, which the protocol needs and the loop gives by construction:
//! one response is handled at a time; its ACK or NACK goes out only after
//! `Sink::apply` returned (so after the publish); an Interest change is read
//! only between responses, so its requests follow any pending ACK.
//!
//! The protocol state outlives streams: a reconnect starts with the versions
//! (SotW) and held resources (delta) accepted before.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tonic::codec::Streaming;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info, warn};

use super::protocol::{DeltaState, Outcome, Protocol, Scope, SotwState};
use super::{GrpcServer, Interest, ResourceType, Sink, Source, Subscriptions};
use crate::proto::envoy::config::core::v3::Node;
use crate::proto::envoy::service::cluster::v3::cluster_discovery_service_client::ClusterDiscoveryServiceClient;
use crate::proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use crate::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use crate::proto::envoy::service::endpoint::v3::endpoint_discovery_service_client::EndpointDiscoveryServiceClient;
use crate::proto::envoy::service::listener::v3::listener_discovery_service_client::ListenerDiscoveryServiceClient;
use crate::proto::envoy::service::route::v3::route_discovery_service_client::RouteDiscoveryServiceClient;

/// Everything a driver needs besides its Source, Sink and Interest.
#[derive(Clone)]
pub struct ClientContext {
    /// `envoy.config.core.v3.Node`, sent as is.
    pub node: Node,
    /// `ads_config.api_type` DELTA_GRPC / AGGREGATED_DELTA_GRPC.
    pub ads_delta: bool,
    /// The ADS servers, tried in order: on a connect failure, the next one.
    pub ads_servers: Vec<GrpcServer>,
    pub set_node_on_first_message_only: bool,
    /// Where a server is: the manager resolves cluster names to an address.
    /// None: not resolvable now (retried with backoff).
    pub resolve: Resolve,
    pub backoff: Backoff,
    /// Delta: resources already held (e.g. from a cache), announced in the
    /// first stream's `initial_resource_versions`.
    pub initial_versions: BTreeMap<ResourceType, BTreeMap<String, String>>,
}

/// The manager's resolver of control-plane servers.
pub type Resolve = Arc<dyn Fn(&GrpcServer) -> Option<Dial> + Send + Sync>;

/// How to dial one control-plane server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dial {
    /// e.g. `http://127.0.0.1:18000` (h2c, prior knowledge).
    pub uri: String,
    /// TCP connect plus HTTP/2 handshake; zero means the 5 s default.
    pub connect_timeout: Duration,
}

/// Reconnect backoff: exponential with full jitter, as Envoy's
/// `JitteredExponentialBackOffStrategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// Envoy's xDS defaults (`EnvoyGrpc.retry_policy`): 500 ms base, 30 s cap.
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The wait before retry `attempt` (0 = the first retry since the last
    /// good stream): `unit` ∈ [0, 1) times min(max, base · 2^attempt).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(31)))
            .min(self.max);
        // `as` saturates (and maps NaN to 0), so no input can panic here.
        let nanos = (ceiling.as_nanos() as f64 * unit.clamp(0.0, 1.0)) as u64;
        Duration::from_nanos(nanos)
    }
}

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const TCP_KEEPALIVE_RETRIES: u32 = 6;

/// `host:port` (a google_grpc target) dialled as h2c; a URI with a scheme as is.
fn with_scheme(uri: &str) -> String {
    if uri.contains("://") {
        uri.to_string()
    } else {
        format!("http://{uri}")
    }
}

/// Runs the subscription of `source` until the Interest sender is dropped.
///
/// `Source::Ads`: one stream (SotW or delta per `ctx.ads_delta`) to the
/// first reachable of `ctx.ads_servers`. `Source::Grpc`: one stream per
/// type, on the per-type services, opened as the Interest names the type.
/// `Source::Path` is not a gRPC source (see `files.rs`): returns at once.
pub async fn run(
    source: Source,
    ctx: ClientContext,
    sink: Arc<dyn Sink>,
    interest: watch::Receiver<Interest>,
) {
    let up = Arc::new(AtomicUsize::new(0));
    match source.clone() {
        Source::Ads => {
            if ctx.ads_servers.is_empty() {
                warn!("xDS: ads_config names no gRPC server; no ADS stream");
                return;
            }
            let driver = Driver {
                source,
                scope: Scope::Aggregated,
                servers: ctx.ads_servers.clone(),
                sink,
                resolve: ctx.resolve.clone(),
                backoff: ctx.backoff,
                up,
            };
            if ctx.ads_delta {
                let state = DeltaState::new(
                    Scope::Aggregated,
                    ctx.node,
                    ctx.set_node_on_first_message_only,
                    ctx.initial_versions,
                );
                driver.drive(state, interest).await;
            } else {
                let state = SotwState::new(Scope::Aggregated, ctx.node, ctx.set_node_on_first_message_only);
                driver.drive(state, interest).await;
            }
        }
        Source::Grpc { server, delta } => run_per_type(source, server, delta, ctx, sink, interest, up).await,
        Source::Path { path, .. } => {
            warn!(path = %path.display(), "xDS: a file source has no gRPC stream; files.rs watches it");
        }
    }
}

/// The per-type streams of one `api_config_source` server: a stream for each
/// type the Interest names for this source, started when it first does.
async fn run_per_type(
    source: Source,
    server: GrpcServer,
    delta: bool,
    ctx: ClientContext,
    sink: Arc<dyn Sink>,
    mut interest: watch::Receiver<Interest>,
    up: Arc<AtomicUsize>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    let mut started = BTreeSet::new();
    loop {
        // A type that wants nothing yet gets no stream (it would sit idle).
        let types: Vec<ResourceType> = interest
            .borrow_and_update()
            .get(&source)
            .map(|s| {
                s.iter()
                    .filter(|(_, names)| names.as_ref().is_none_or(|n| !n.is_empty()))
                    .map(|(ty, _)| *ty)
                    .collect()
            })
            .unwrap_or_default();
        for ty in types {
            if !started.insert(ty) {
                continue;
            }
            let driver = Driver {
                source: source.clone(),
                scope: Scope::Single(ty),
                servers: vec![server.clone()],
                sink: sink.clone(),
                resolve: ctx.resolve.clone(),
                backoff: ctx.backoff,
                up: up.clone(),
            };
            let node = ctx.node.clone();
            let first_only = ctx.set_node_on_first_message_only;
            if delta {
                let state =
                    DeltaState::new(Scope::Single(ty), node, first_only, ctx.initial_versions.clone());
                tasks.spawn(driver.drive(state, interest.clone()));
            } else {
                tasks.spawn(driver.drive(
                    SotwState::new(Scope::Single(ty), node, first_only),
                    interest.clone(),
                ));
            }
        }
        tokio::select! {
            changed = interest.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = joined {
                    warn!(?source, error = %e, "xDS: a per-type stream task ended abnormally");
                }
            }
        }
    }
    tasks.shutdown().await;
}

/// The requests of one stream, fed by the driver through a channel.
fn request_stream<R: Send + 'static>(
    rx: mpsc::UnboundedReceiver<R>,
) -> impl Stream<Item = R> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
}

/// Opens the gRPC stream a protocol state speaks: which method depends on
/// SotW/delta and the scope.
trait Wire: Protocol<Request: Send + 'static, Response: Send + 'static> + Send + 'static {
    fn open(
        channel: Channel,
        scope: Scope,
        requests: mpsc::UnboundedReceiver<Self::Request>,
    ) -> impl Future<Output = Result<Streaming<Self::Response>, tonic::Status>> + Send;
}

/// Calls `method` on a fresh `client` over `channel`, without tonic's 4 MiB
/// decode limit (large CDS/EDS responses exceed it; Envoy has no limit).
macro_rules! call {
    ($client:ident, $channel:expr, $method:ident, $requests:expr) => {
        $client::new($channel)
            .max_decoding_message_size(usize::MAX)
            .$method($requests)
            .await
            .map(|r| r.into_inner())
    };
}

impl Wire for SotwState {
    async fn open(
        channel: Channel,
        scope: Scope,
        requests: mpsc::UnboundedReceiver<DiscoveryRequest>,
    ) -> Result<Streaming<DiscoveryResponse>, tonic::Status> {
        let reqs = request_stream(requests);
        match scope {
            Scope::Aggregated => {
                call!(
                    AggregatedDiscoveryServiceClient,
                    channel,
                    stream_aggregated_resources,
                    reqs
                )
            }
            Scope::Single(ResourceType::Cluster) => {
                call!(ClusterDiscoveryServiceClient, channel, stream_clusters, reqs)
            }
            Scope::Single(ResourceType::ClusterLoadAssignment) => {
                call!(EndpointDiscoveryServiceClient, channel, stream_endpoints, reqs)
            }
            Scope::Single(ResourceType::Listener) => {
                call!(ListenerDiscoveryServiceClient, channel, stream_listeners, reqs)
            }
            Scope::Single(ResourceType::RouteConfiguration) => {
                call!(RouteDiscoveryServiceClient, channel, stream_routes, reqs)
            }
        }
    }
}

impl Wire for DeltaState {
    async fn open(
        channel: Channel,
        scope: Scope,
        requests: mpsc::UnboundedReceiver<DeltaDiscoveryRequest>,
    ) -> Result<Streaming<DeltaDiscoveryResponse>, tonic::Status> {
        let reqs = request_stream(requests);
        match scope {
            Scope::Aggregated => {
                call!(
                    AggregatedDiscoveryServiceClient,
                    channel,
                    delta_aggregated_resources,
                    reqs
                )
            }
            Scope::Single(ResourceType::Cluster) => {
                call!(ClusterDiscoveryServiceClient, channel, delta_clusters, reqs)
            }
            Scope::Single(ResourceType::ClusterLoadAssignment) => {
                call!(EndpointDiscoveryServiceClient, channel, delta_endpoints, reqs)
            }
            Scope::Single(ResourceType::Listener) => {
                call!(ListenerDiscoveryServiceClient, channel, delta_listeners, reqs)
            }
            Scope::Single(ResourceType::RouteConfiguration) => {
                call!(RouteDiscoveryServiceClient, channel, delta_routes, reqs)
            }
        }
    }
}

/// How a stream attempt ended.
#[derive(Default)]
struct Ended {
    /// The stream delivered at least one response: the backoff restarts.
    responded: bool,
    /// The Interest sender is gone: the manager shut down.
    shutdown: bool,
}

/// One stream's connection loop (one per ADS source, one per per-type stream).
struct Driver {
    source: Source,
    scope: Scope,
    servers: Vec<GrpcServer>,
    sink: Arc<dyn Sink>,
    resolve: Resolve,
    backoff: Backoff,
    /// Streams of this source that are up (per-type sources have several).
    up: Arc<AtomicUsize>,
}

fn subscriptions(interest: &mut watch::Receiver<Interest>, source: &Source) -> Subscriptions {
    interest
        .borrow_and_update()
        .get(source)
        .cloned()
        .unwrap_or_default()
}

/// An error with its causes ("transport error" alone says little).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

impl Driver {
    fn label(&self) -> String {
        match self.scope {
            Scope::Aggregated => "ADS".to_string(),
            Scope::Single(ty) => format!("{} stream", ty.short()),
        }
    }

    async fn drive<P: Wire>(self, mut proto: P, mut interest: watch::Receiver<Interest>) {
        let mut attempt: u32 = 0;
        loop {
            let ended = match self.connect().await {
                Some(channel) => self.stream(&mut proto, channel, &mut interest).await,
                None => Ended::default(),
            };
            proto.end_stream();
            if ended.shutdown {
                return;
            }
            if ended.responded {
                attempt = 0;
            }
            let delay = self.backoff.delay(attempt, fastrand::f64());
            attempt = attempt.saturating_add(1);
            debug!(source = ?self.source, stream = %self.label(), ?delay, "xDS: reconnecting after a pause");
            // Interest changes while waiting are read at the next stream start.
            let pause = tokio::time::sleep(delay);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    changed = interest.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The first server, in order, that resolves and accepts a connection.
    async fn connect(&self) -> Option<Channel> {
        for server in &self.servers {
            let Some(dial) = (self.resolve)(server) else {
                warn!(source = ?self.source, ?server, "xDS: the control plane's address is unknown (cluster not resolved)");
                continue;
            };
            let endpoint = match Endpoint::from_shared(with_scheme(&dial.uri)) {
                Ok(e) => e,
                Err(e) => {
                    warn!(uri = %dial.uri, error = %chain(&e), "xDS: not a usable control-plane URI");
                    continue;
                }
            };
            let limit = if dial.connect_timeout.is_zero() {
                DEFAULT_CONNECT_TIMEOUT
            } else {
                dial.connect_timeout
            };
            // TCP keepalive notices a control plane that vanished without a
            // FIN. HTTP/2 pings would too, but grpc-go servers (go-control-plane)
            // answer frequent pings with GOAWAY too_many_pings.
            let endpoint = endpoint
                .connect_timeout(limit)
                .tcp_keepalive(Some(TCP_KEEPALIVE))
                .tcp_keepalive_interval(Some(TCP_KEEPALIVE_INTERVAL))
                .tcp_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES));
            // connect_timeout bounds the TCP connect; the outer timeout also
            // bounds the HTTP/2 handshake with a server that accepts and stalls.
            match tokio::time::timeout(limit, endpoint.connect()).await {
                Ok(Ok(channel)) => {
                    info!(source = ?self.source, stream = %self.label(), uri = %dial.uri, "xDS: connected to the control plane");
                    return Some(channel);
                }
                Ok(Err(e)) => {
                    warn!(source = ?self.source, uri = %dial.uri, error = %chain(&e), "xDS: cannot connect to the control plane")
                }
                Err(_) => {
                    warn!(source = ?self.source, uri = %dial.uri, timeout = ?limit, "xDS: connecting to the control plane timed out")
                }
            }
        }
        None
    }

    fn set_up(&self, up: bool) {
        let now = if up {
            self.up.fetch_add(1, Ordering::SeqCst).saturating_add(1)
        } else {
            self.up.fetch_sub(1, Ordering::SeqCst).saturating_sub(1)
        };
        self.sink.stream_state(&self.source, now > 0);
    }

    /// One stream, from the first requests to its end.
    async fn stream<P: Wire>(
        &self,
        proto: &mut P,
        channel: Channel,
        interest: &mut watch::Receiver<Interest>,
    ) -> Ended {
        let (tx, rx) = mpsc::unbounded_channel();
        proto.set_interest(&subscriptions(interest, &self.source));
        for request in proto.start_stream() {
            let _ = tx.send(request);
        }
        // Some servers send the response headers only with the first
        // response, so Interest changes are served while waiting for them.
        let call = P::open(channel, self.scope, rx);
        tokio::pin!(call);
        let mut responses = loop {
            tokio::select! {
                opened = &mut call => match opened {
                    Ok(s) => break s,
                    Err(status) => {
                        warn!(source = ?self.source, stream = %self.label(), code = ?status.code(), message = status.message(), "xDS: the control plane refused the stream");
                        return Ended::default();
                    }
                },
                changed = interest.changed() => {
                    if changed.is_err() {
                        return Ended { responded: false, shutdown: true };
                    }
                    for request in proto.set_interest(&subscriptions(interest, &self.source)) {
                        let _ = tx.send(request);
                    }
                }
            }
        };
        info!(source = ?self.source, stream = %self.label(), "xDS: stream open");
        self.set_up(true);
        let mut ended = Ended::default();
        loop {
            tokio::select! {
                next = responses.next() => match next {
                    Some(Ok(response)) => {
                        ended.responded = true;
                        self.handle(proto, response, &tx).await;
                    }
                    Some(Err(status)) => {
                        warn!(source = ?self.source, stream = %self.label(), code = ?status.code(), message = status.message(), "xDS: stream failed");
                        break;
                    }
                    None => {
                        info!(source = ?self.source, stream = %self.label(), "xDS: stream closed by the control plane");
                        break;
                    }
                },
                changed = interest.changed() => {
                    if changed.is_err() {
                        ended.shutdown = true;
                        break;
                    }
                    for request in proto.set_interest(&subscriptions(interest, &self.source)) {
                        let _ = tx.send(request);
                    }
                }
            }
        }
        self.set_up(false);
        ended
    }

    /// One response: to the sink, then the ACK or NACK.
    async fn handle<P: Wire>(
        &self,
        proto: &mut P,
        response: P::Response,
        tx: &mpsc::UnboundedSender<P::Request>,
    ) {
        let reply = match proto.on_response(response) {
            Outcome::Apply { update, pending } => {
                let ty = update.ty;
                let version = update.version.clone();
                let (sink, source) = (self.sink.clone(), self.source.clone());
                // apply validates, compiles and publishes: CPU work that must
                // not stall the other tasks of this runtime.
                let verdict = tokio::task::spawn_blocking(move || sink.apply(&source, update))
                    .await
                    .unwrap_or_else(|e| Err(format!("the update could not be applied: {e}")));
                match verdict {
                    Ok(()) => {
                        debug!(source = ?self.source, r#type = ty.short(), %version, "xDS: ACK");
                        proto.ack(pending)
                    }
                    Err(error) => {
                        warn!(source = ?self.source, r#type = ty.short(), %version, %error, "xDS: NACK");
                        proto.nack(pending, &error)
                    }
                }
            }
            Outcome::Reject { ty, error, nack } => {
                warn!(source = ?self.source, r#type = ty.map(|t| t.short()), %error, "xDS: NACK (response refused before applying)");
                if let Some(ty) = ty {
                    self.sink.rejected(&self.source, ty, &error);
                }
                nack
            }
            Outcome::Ignore { reason } => {
                warn!(source = ?self.source, stream = %self.label(), %reason, "xDS: response ignored");
                return;
            }
        };
        // Fails only when the stream is already gone; the next stream
        // starts from the state, so nothing is lost.
        let _ = tx.send(reply);
    }
}

#[cfg(test)]
mod tests {
    //! The driver against a scripted control plane on a loopback socket:
    //! each test plays the server's side of one conversation, request by
    //! request, and checks what the client sends and what the sink sees.

    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::sync::Mutex;

    use prost::Message;
    use tokio::time::timeout;
    use tonic::{Request, Response, Status};

    use super::*;
    use crate::proto::envoy::config::cluster::v3::Cluster;
    use crate::proto::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use crate::proto::envoy::service::cluster::v3::cluster_discovery_service_server::{
        ClusterDiscoveryService, ClusterDiscoveryServiceServer,
    };
    use crate::proto::envoy::service::discovery::v3::aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    };
    use crate::proto::envoy::service::discovery::v3::Resource as DeltaResource;
    use crate::xds::protocol::NACK_CODE;
    use crate::xds::Update;

    /// The bound on every wait: generous for a loaded 2-core machine, short
    /// enough that a hang fails the test instead of the suite.
    const WAIT: Duration = Duration::from_secs(10);
    const CDS: ResourceType = ResourceType::Cluster;
    const EDS: ResourceType = ResourceType::ClusterLoadAssignment;

    type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

    /// One stream as the server sees it. Dropping it ends the stream (the
    /// server closes it with status OK).
    struct ServerStream<Req, Resp> {
        method: &'static str,
        requests: mpsc::UnboundedReceiver<Req>,
        responses: mpsc::UnboundedSender<Result<Resp, Status>>,
    }

    impl<Req: std::fmt::Debug, Resp> ServerStream<Req, Resp> {
        async fn request(&mut self) -> Req {
            timeout(WAIT, self.requests.recv())
                .await
                .expect("the client sent no request in time")
                .expect("the client closed the stream")
        }

        fn respond(&self, response: Resp) {
            assert!(
                self.responses.send(Ok(response)).is_ok(),
                "the server stream is gone"
            );
        }

        /// Nothing more arrives for a while (requests are answered at once,
        /// so a short quiet period is enough to see an extra one).
        async fn quiet(&mut self) {
            if let Ok(r) = timeout(Duration::from_millis(200), self.requests.recv()).await {
                panic!("unexpected request: {r:?}");
            }
        }
    }

    type SotwStream = ServerStream<DiscoveryRequest, DiscoveryResponse>;
    type DeltaStream = ServerStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

    /// Hands every new stream to the test and forwards its requests.
    fn accept<Req: Send + 'static, Resp: Send + 'static>(
        method: &'static str,
        inbound: tonic::Streaming<Req>,
        streams: &mpsc::UnboundedSender<ServerStream<Req, Resp>>,
    ) -> ResponseStream<Resp> {
        let (req_tx, requests) = mpsc::unbounded_channel();
        let (responses, resp_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut inbound = inbound;
            while let Some(Ok(m)) = inbound.next().await {
                if req_tx.send(m).is_err() {
                    break;
                }
            }
        });
        let _ = streams.send(ServerStream {
            method,
            requests,
            responses,
        });
        Box::pin(request_stream(resp_rx))
    }

    #[derive(Clone)]
    struct Scripted {
        sotw: mpsc::UnboundedSender<SotwStream>,
        delta: mpsc::UnboundedSender<DeltaStream>,
    }

    #[tonic::async_trait]
    impl AggregatedDiscoveryService for Scripted {
        type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
        type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

        async fn stream_aggregated_resources(
            &self,
            request: Request<tonic::Streaming<DiscoveryRequest>>,
        ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
            Ok(Response::new(accept(
                "StreamAggregatedResources",
                request.into_inner(),
                &self.sotw,
            )))
        }

        async fn delta_aggregated_resources(
            &self,
            request: Request<tonic::Streaming<DeltaDiscoveryRequest>>,
        ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
            Ok(Response::new(accept(
                "DeltaAggregatedResources",
                request.into_inner(),
                &self.delta,
            )))
        }
    }

    #[tonic::async_trait]
    impl ClusterDiscoveryService for Scripted {
        type StreamClustersStream = ResponseStream<DiscoveryResponse>;
        type DeltaClustersStream = ResponseStream<DeltaDiscoveryResponse>;

        async fn stream_clusters(
            &self,
            request: Request<tonic::Streaming<DiscoveryRequest>>,
        ) -> Result<Response<Self::StreamClustersStream>, Status> {
            Ok(Response::new(accept(
                "StreamClusters",
                request.into_inner(),
                &self.sotw,
            )))
        }

        async fn delta_clusters(
            &self,
            request: Request<tonic::Streaming<DeltaDiscoveryRequest>>,
        ) -> Result<Response<Self::DeltaClustersStream>, Status> {
            Ok(Response::new(accept(
                "DeltaClusters",
                request.into_inner(),
                &self.delta,
            )))
        }
    }

    /// Aborts a task when the test ends, pass or fail.
    struct Task(tokio::task::JoinHandle<()>);

    impl Drop for Task {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    struct TestServer {
        uri: String,
        sotw: mpsc::UnboundedReceiver<SotwStream>,
        delta: mpsc::UnboundedReceiver<DeltaStream>,
        _task: Task,
    }

    enum Service {
        Ads,
        Cds,
    }

    impl TestServer {
        async fn start(service: Service) -> TestServer {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("local_addr");
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let (sotw_tx, sotw) = mpsc::unbounded_channel();
            let (delta_tx, delta) = mpsc::unbounded_channel();
            let scripted = Scripted {
                sotw: sotw_tx,
                delta: delta_tx,
            };
            let server = tonic::transport::Server::builder();
            let task = tokio::spawn(async move {
                let served = match service {
                    Service::Ads => {
                        server
                            .serve_with_incoming(AggregatedDiscoveryServiceServer::new(scripted), incoming)
                            .await
                    }
                    Service::Cds => {
                        server
                            .serve_with_incoming(ClusterDiscoveryServiceServer::new(scripted), incoming)
                            .await
                    }
                };
                if let Err(e) = served {
                    panic!("test server: {e}");
                }
            });
            TestServer {
                uri: format!("http://{addr}"),
                sotw,
                delta,
                _task: Task(task),
            }
        }

        async fn sotw_stream(&mut self) -> SotwStream {
            timeout(WAIT, self.sotw.recv())
                .await
                .expect("the client opened no stream in time")
                .expect("server gone")
        }

        async fn delta_stream(&mut self) -> DeltaStream {
            timeout(WAIT, self.delta.recv())
                .await
                .expect("the client opened no stream in time")
                .expect("server gone")
        }
    }

    #[derive(Clone, Debug, PartialEq)]
    enum Event {
        /// (source, type, version, resource names with versions, removed, sotw)
        Apply(
            Source,
            ResourceType,
            String,
            Vec<(String, String)>,
            Vec<String>,
            bool,
        ),
        Rejected(Source, ResourceType, String),
        State(Source, bool),
    }

    /// Records what the driver tells it; `apply` answers from a queue of
    /// verdicts (Ok when empty).
    struct RecordingSink {
        events: mpsc::UnboundedSender<Event>,
        verdicts: Mutex<VecDeque<Result<(), String>>>,
        /// Run inside the next `apply`, as the manager publishes a new
        /// Interest before it returns.
        during_apply: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl RecordingSink {
        fn new() -> (Arc<RecordingSink>, mpsc::UnboundedReceiver<Event>) {
            let (events, rx) = mpsc::unbounded_channel();
            let sink = RecordingSink {
                events,
                verdicts: Mutex::new(VecDeque::new()),
                during_apply: Mutex::new(None),
            };
            (Arc::new(sink), rx)
        }

        fn fail_next(&self, error: &str) {
            self.verdicts
                .lock()
                .expect("lock")
                .push_back(Err(error.to_string()));
        }
    }

    impl Sink for RecordingSink {
        fn apply(&self, source: &Source, update: Update) -> Result<(), String> {
            let resources = update
                .resources
                .iter()
                .map(|r| (r.name.clone(), r.version.clone()))
                .collect();
            let _ = self.events.send(Event::Apply(
                source.clone(),
                update.ty,
                update.version,
                resources,
                update.removed,
                update.state_of_the_world,
            ));
            if let Some(hook) = self.during_apply.lock().expect("lock").take() {
                hook();
            }
            self.verdicts.lock().expect("lock").pop_front().unwrap_or(Ok(()))
        }

        fn rejected(&self, source: &Source, ty: ResourceType, error: &str) {
            let _ = self
                .events
                .send(Event::Rejected(source.clone(), ty, error.to_string()));
        }

        fn stream_state(&self, source: &Source, connected: bool) {
            let _ = self.events.send(Event::State(source.clone(), connected));
        }
    }

    async fn event(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
        timeout(WAIT, events.recv())
            .await
            .expect("the sink heard nothing in time")
            .expect("sink gone")
    }

    fn node() -> Node {
        Node {
            id: "test-id".into(),
            cluster: "test-cluster".into(),
            ..Default::default()
        }
    }

    /// A context whose resolver maps cluster names to URIs.
    fn context(servers: &[(&str, &str)], delta: bool) -> ClientContext {
        let map: BTreeMap<GrpcServer, String> = servers
            .iter()
            .map(|(name, uri)| (GrpcServer::Cluster(name.to_string()), uri.to_string()))
            .collect();
        ClientContext {
            node: node(),
            ads_delta: delta,
            ads_servers: servers
                .iter()
                .map(|(name, _)| GrpcServer::Cluster(name.to_string()))
                .collect(),
            set_node_on_first_message_only: false,
            resolve: Arc::new(move |s: &GrpcServer| {
                map.get(s).map(|uri| Dial {
                    uri: uri.clone(),
                    connect_timeout: Duration::from_secs(2),
                })
            }),
            backoff: Backoff {
                base: Duration::from_millis(10),
                max: Duration::from_millis(50),
            },
            initial_versions: BTreeMap::new(),
        }
    }

    fn interest(source: &Source, entries: &[(ResourceType, Option<&[&str]>)]) -> Interest {
        let subs: Subscriptions = entries
            .iter()
            .map(|(ty, names)| (*ty, names.map(|n| n.iter().map(|s| s.to_string()).collect())))
            .collect();
        Interest::from([(source.clone(), subs)])
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

    fn sotw(
        ty: ResourceType,
        version: &str,
        nonce: &str,
        resources: Vec<prost_types::Any>,
    ) -> DiscoveryResponse {
        DiscoveryResponse {
            version_info: version.into(),
            resources,
            type_url: ty.type_url().into(),
            nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn delta(
        ty: ResourceType,
        nonce: &str,
        resources: &[(&str, &str, prost_types::Any)],
        removed: &[&str],
    ) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            system_version_info: format!("sys-{nonce}"),
            resources: resources
                .iter()
                .map(|(name, version, body)| DeltaResource {
                    name: name.to_string(),
                    version: version.to_string(),
                    resource: Some(body.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: ty.type_url().into(),
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            nonce: nonce.into(),
            ..Default::default()
        }
    }

    /// Checks a SotW request field by field; `error` is the NACK text.
    #[track_caller]
    fn check(
        r: &DiscoveryRequest,
        ty: ResourceType,
        version: &str,
        nonce: &str,
        names: &[&str],
        error: Option<&str>,
    ) {
        assert_eq!(r.type_url, ty.type_url(), "{r:#?}");
        assert_eq!(r.version_info, version, "version_info: {r:#?}");
        assert_eq!(r.response_nonce, nonce, "response_nonce: {r:#?}");
        assert_eq!(r.resource_names, names, "resource_names: {r:#?}");
        assert_eq!(r.node, Some(node()), "node on every request: {r:#?}");
        let detail = r.error_detail.as_ref().map(|e| (e.code, e.message.as_str()));
        assert_eq!(detail, error.map(|e| (NACK_CODE, e)), "error_detail: {r:#?}");
    }

    #[track_caller]
    fn check_delta(
        r: &DeltaDiscoveryRequest,
        ty: ResourceType,
        subscribe: &[&str],
        unsubscribe: &[&str],
        initial: &[(&str, &str)],
        nonce: &str,
    ) {
        let got: BTreeMap<&str, &str> = r
            .initial_resource_versions
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(r.type_url, ty.type_url(), "{r:#?}");
        assert_eq!(r.resource_names_subscribe, subscribe, "subscribe: {r:#?}");
        assert_eq!(r.resource_names_unsubscribe, unsubscribe, "unsubscribe: {r:#?}");
        assert_eq!(
            got,
            initial.iter().copied().collect(),
            "initial_resource_versions: {r:#?}"
        );
        assert_eq!(r.response_nonce, nonce, "response_nonce: {r:#?}");
        assert!(r.error_detail.is_none(), "{r:#?}");
        assert_eq!(r.node, Some(node()), "{r:#?}");
    }

    fn applied(
        source: &Source,
        ty: ResourceType,
        version: &str,
        names: &[(&str, &str)],
        removed: &[&str],
        sotw: bool,
    ) -> Event {
        Event::Apply(
            source.clone(),
            ty,
            version.to_string(),
            names
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            removed.iter().map(|s| s.to_string()).collect(),
            sotw,
        )
    }

    #[tokio::test]
    async fn sotw_ads_conversation_and_reconnect() {
        let mut server = TestServer::start(Service::Ads).await;
        let (sink, mut events) = RecordingSink::new();
        let ads = Source::Ads;
        let (interest_tx, interest_rx) = watch::channel(interest(&ads, &[(CDS, None)]));
        let _client = Task(tokio::spawn(run(
            ads.clone(),
            context(&[("xds", &server.uri)], false),
            sink.clone(),
            interest_rx,
        )));

        let mut s = server.sotw_stream().await;
        assert_eq!(s.method, "StreamAggregatedResources");
        assert_eq!(event(&mut events).await, Event::State(ads.clone(), true));
        check(&s.request().await, CDS, "", "", &[], None);

        s.respond(sotw(CDS, "1", "n1", vec![cluster("c1")]));
        assert_eq!(
            event(&mut events).await,
            applied(&ads, CDS, "1", &[("c1", "1")], &[], true)
        );
        check(&s.request().await, CDS, "1", "n1", &[], None);

        // The manager asks for endpoints: the full name set, EDS's own state.
        interest_tx.send_replace(interest(&ads, &[(CDS, None), (EDS, Some(&["c1"]))]));
        check(&s.request().await, EDS, "", "", &["c1"], None);
        s.respond(sotw(EDS, "e1", "n2", vec![cla("c1"), cla("not-asked")]));
        assert_eq!(
            event(&mut events).await,
            applied(&ads, EDS, "e1", &[("c1", "e1")], &[], true)
        );
        check(&s.request().await, EDS, "e1", "n2", &["c1"], None);

        interest_tx.send_replace(interest(&ads, &[(CDS, None), (EDS, Some(&["c1", "c2"]))]));
        check(&s.request().await, EDS, "e1", "n2", &["c1", "c2"], None);

        // The sink refuses: NACK with the previous version and this nonce.
        sink.fail_next("cluster c9: unknown lb_policy");
        s.respond(sotw(CDS, "2", "n3", vec![cluster("c1"), cluster("c9")]));
        assert_eq!(
            event(&mut events).await,
            applied(&ads, CDS, "2", &[("c1", "2"), ("c9", "2")], &[], true)
        );
        check(
            &s.request().await,
            CDS,
            "1",
            "n3",
            &[],
            Some("cluster c9: unknown lb_policy"),
        );

        // Refused before the sink: reported as rejected, NACKed.
        s.respond(sotw(CDS, "3", "n4", vec![cla("c1")]));
        match event(&mut events).await {
            Event::Rejected(source, CDS, error) if source == ads => {
                assert!(error.contains("type_url"), "{error}")
            }
            e => panic!("{e:?}"),
        }
        let nack = s.request().await;
        assert_eq!(
            (nack.version_info.as_str(), nack.response_nonce.as_str()),
            ("1", "n4")
        );
        assert_eq!(nack.error_detail.map(|e| e.code), Some(NACK_CODE));
        s.quiet().await;

        // The server drops the stream: the client comes back with what it
        // accepted, empty nonces and the full names.
        drop(s);
        assert_eq!(event(&mut events).await, Event::State(ads.clone(), false));
        let mut s = server.sotw_stream().await;
        assert_eq!(event(&mut events).await, Event::State(ads.clone(), true));
        check(&s.request().await, CDS, "1", "", &[], None);
        check(&s.request().await, EDS, "e1", "", &["c1", "c2"], None);
        s.quiet().await;
    }

    #[tokio::test]
    async fn interest_published_during_apply_follows_the_ack() {
        let mut server = TestServer::start(Service::Ads).await;
        let (sink, mut events) = RecordingSink::new();
        let ads = Source::Ads;
        let (interest_tx, interest_rx) = watch::channel(interest(&ads, &[(CDS, None)]));
        let _client = Task(tokio::spawn(run(
            ads.clone(),
            context(&[("xds", &server.uri)], false),
            sink.clone(),
            interest_rx,
        )));
        let mut s = server.sotw_stream().await;
        check(&s.request().await, CDS, "", "", &[], None);
        // The CDS update makes the manager want the clusters' endpoints;
        // it publishes that before apply returns.
        // (The sender stays alive outside the hook: dropping it stops the client.)
        let interest_tx = Arc::new(interest_tx);
        let publisher = interest_tx.clone();
        let next = interest(&ads, &[(CDS, None), (EDS, Some(&["a", "b"]))]);
        *sink.during_apply.lock().expect("lock") = Some(Box::new(move || {
            publisher.send_replace(next);
        }));
        s.respond(sotw(CDS, "1", "n1", vec![cluster("a"), cluster("b")]));
        check(&s.request().await, CDS, "1", "n1", &[], None);
        check(&s.request().await, EDS, "", "", &["a", "b"], None);
        s.quiet().await;
        assert_eq!(event(&mut events).await, Event::State(ads.clone(), true));
        assert_eq!(
            event(&mut events).await,
            applied(&ads, CDS, "1", &[("a", "1"), ("b", "1")], &[], true)
        );
    }

    #[tokio::test]
    async fn stops_when_the_interest_sender_is_dropped() {
        let mut server = TestServer::start(Service::Ads).await;
        let (sink, mut events) = RecordingSink::new();
        let ads = Source::Ads;
        let (interest_tx, interest_rx) = watch::channel(interest(&ads, &[(CDS, None)]));
        let client = tokio::spawn(run(
            ads.clone(),
            context(&[("xds", &server.uri)], false),
            sink,
            interest_rx,
        ));
        let mut s = server.sotw_stream().await;
        s.request().await;
        assert_eq!(event(&mut events).await, Event::State(ads.clone(), true));
        drop(interest_tx);
        let ended = timeout(WAIT, client).await;
        assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
        assert_eq!(event(&mut events).await, Event::State(ads, false));
    }

    #[tokio::test]
    async fn delta_ads_conversation_and_reconnect() {
        let mut server = TestServer::start(Service::Ads).await;
        let (sink, mut events) = RecordingSink::new();
        let ads = Source::Ads;
        let mut ctx = context(&[("xds", &server.uri)], true);
        ctx.initial_versions =
            BTreeMap::from([(CDS, BTreeMap::from([("cached".to_string(), "v0".to_string())]))]);
        let (interest_tx, interest_rx) = watch::channel(interest(&ads, &[(CDS, None), (EDS, Some(&["e1"]))]));
        let _client = Task(tokio::spawn(run(ads.clone(), ctx, sink.clone(), interest_rx)));

        let mut s = server.delta_stream().await;
        assert_eq!(s.method, "DeltaAggregatedResources");
        check_delta(&s.request().await, CDS, &[], &[], &[("cached", "v0")], "");
        check_delta(&s.request().await, EDS, &["e1"], &[], &[], "");

        s.respond(delta(
            CDS,
            "d1",
            &[("c1", "1", cluster("c1")), ("c2", "1", cluster("c2"))],
            &["cached"],
        ));
        assert_eq!(event(&mut events).await, Event::State(ads.clone(), true));
        assert_eq!(
            event(&mut events).await,
            applied(
                &ads,
                CDS,
                "sys-d1",
                &[("c1", "1"), ("c2", "1")],
                &["cached"],
                false
            )
        );
        check_delta(&s.request().await, CDS, &[], &[], &[], "d1");

        interest_tx.send_replace(interest(&ads, &[(CDS, None), (EDS, Some(&["e1", "e2"]))]));
        check_delta(&s.request().await, EDS, &["e2"], &[], &[], "");

        s.respond(delta(CDS, "d2", &[], &["c1"]));
        assert_eq!(
            event(&mut events).await,
            applied(&ads, CDS, "sys-d2", &[], &["c1"], false)
        );
        check_delta(&s.request().await, CDS, &[], &[], &[], "d2");

        sink.fail_next("endpoint e1: port 0");
        s.respond(delta(EDS, "d3", &[("e1", "5", cla("e1"))], &[]));
        assert_eq!(
            event(&mut events).await,
            applied(&ads, EDS, "sys-d3", &[("e1", "5")], &[], false)
        );
        let nack = s.request().await;
        assert_eq!(nack.response_nonce, "d3");
        assert_eq!(
            nack.error_detail.map(|e| (e.code, e.message)),
            Some((NACK_CODE, "endpoint e1: port 0".to_string()))
        );
        s.quiet().await;

        drop(s);
        assert_eq!(event(&mut events).await, Event::State(ads.clone(), false));
        let mut s = server.delta_stream().await;
        // Held: c2 (c1 removed); the NACKed e1 is not held.
        check_delta(&s.request().await, CDS, &[], &[], &[("c2", "1")], "");
        check_delta(&s.request().await, EDS, &["e1", "e2"], &[], &[], "");
        s.quiet().await;
    }

    #[tokio::test]
    async fn per_type_streams() {
        for delta_mode in [false, true] {
            let mut server = TestServer::start(Service::Cds).await;
            let (sink, mut events) = RecordingSink::new();
            let source = Source::Grpc {
                server: GrpcServer::Cluster("xds".into()),
                delta: delta_mode,
            };
            // No type wanted yet: no stream. It opens when the Interest wants CDS.
            let (interest_tx, interest_rx) = watch::channel(interest(&source, &[(CDS, Some(&[]))]));
            let _client = Task(tokio::spawn(run(
                source.clone(),
                context(&[("xds", &server.uri)], false),
                sink.clone(),
                interest_rx,
            )));
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(server.sotw.try_recv().is_err() && server.delta.try_recv().is_err());
            interest_tx.send_replace(interest(&source, &[(CDS, None)]));
            if delta_mode {
                let mut s = server.delta_stream().await;
                assert_eq!(s.method, "DeltaClusters");
                check_delta(&s.request().await, CDS, &[], &[], &[], "");
                s.respond(delta(CDS, "p1", &[("c1", "7", cluster("c1"))], &[]));
                assert_eq!(event(&mut events).await, Event::State(source.clone(), true));
                assert_eq!(
                    event(&mut events).await,
                    applied(&source, CDS, "sys-p1", &[("c1", "7")], &[], false)
                );
                check_delta(&s.request().await, CDS, &[], &[], &[], "p1");
            } else {
                let mut s = server.sotw_stream().await;
                assert_eq!(s.method, "StreamClusters");
                check(&s.request().await, CDS, "", "", &[], None);
                // A response without a type_url on a per-type stream is the stream's type.
                let mut response = sotw(CDS, "v1", "p1", vec![cluster("c1")]);
                response.type_url.clear();
                s.respond(response);
                assert_eq!(event(&mut events).await, Event::State(source.clone(), true));
                assert_eq!(
                    event(&mut events).await,
                    applied(&source, CDS, "v1", &[("c1", "v1")], &[], true)
                );
                check(&s.request().await, CDS, "v1", "p1", &[], None);
            }
        }
    }

    #[tokio::test]
    async fn fails_over_to_the_next_ads_server() {
        let mut server = TestServer::start(Service::Ads).await;
        // A port that refuses connections: bound, then closed.
        let dead: SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("local_addr")
        };
        let (sink, mut events) = RecordingSink::new();
        let ads = Source::Ads;
        let ctx = context(
            &[("primary", &format!("http://{dead}")), ("failover", &server.uri)],
            false,
        );
        let (_interest_tx, interest_rx) = watch::channel(interest(&ads, &[(CDS, None)]));
        let _client = Task(tokio::spawn(run(ads.clone(), ctx, sink, interest_rx)));
        let mut s = server.sotw_stream().await;
        check(&s.request().await, CDS, "", "", &[], None);
        assert_eq!(event(&mut events).await, Event::State(ads, true));
    }

    #[tokio::test]
    async fn no_message_size_limit() {
        let mut server = TestServer::start(Service::Ads).await;
        let (sink, mut events) = RecordingSink::new();
        let ads = Source::Ads;
        let (_interest_tx, interest_rx) = watch::channel(interest(&ads, &[(CDS, None)]));
        let _client = Task(tokio::spawn(run(
            ads.clone(),
            context(&[("xds", &server.uri)], false),
            sink,
            interest_rx,
        )));
        let mut s = server.sotw_stream().await;
        s.request().await;
        // Over tonic's default 4 MiB decode limit.
        let big = "x".repeat(5 << 20);
        s.respond(sotw(CDS, "1", "n1", vec![cluster(&big)]));
        assert_eq!(event(&mut events).await, Event::State(ads.clone(), true));
        match event(&mut events).await {
            Event::Apply(_, CDS, version, names, _, _) => {
                assert_eq!(version, "1");
                assert_eq!(names.len(), 1);
                assert_eq!(names[0].0.len(), 5 << 20);
            }
            e => panic!("{e:?}"),
        }
        check(&s.request().await, CDS, "1", "n1", &[], None);
    }

    #[test]
    fn dial_uri_scheme() {
        assert_eq!(with_scheme("127.0.0.1:18000"), "http://127.0.0.1:18000");
        assert_eq!(with_scheme("http://xds:18000"), "http://xds:18000");
        assert_eq!(with_scheme("https://xds:443"), "https://xds:443");
    }

    #[test]
    fn backoff_is_capped_exponential_with_full_jitter() {
        let b = Backoff::default();
        let ms = Duration::from_millis;
        for (attempt, unit, want) in [
            (0, 0.0, ms(0)),
            (0, 0.5, ms(250)),
            (1, 0.5, ms(500)),
            (3, 0.5, ms(2000)),
            (6, 0.5, ms(15_000)),
            (7, 0.5, ms(15_000)),
            (40, 0.999, ms(29_970)),
            (u32::MAX, 1.0, ms(30_000)),
            (2, f64::NAN, ms(0)),
            (2, -3.0, ms(0)),
        ] {
            assert_eq!(b.delay(attempt, unit), want, "attempt {attempt}, unit {unit}");
        }
    }
}
