//! The gRPC services (ADS and the per-type LDS/RDS/CDS/EDS), each method a
//! call into the stream driver, and the HTTP/2 router in front of them.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use hyper::body::Incoming;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use legate::proto::envoy::service::cluster::v3::cluster_discovery_service_server::{
    ClusterDiscoveryService, ClusterDiscoveryServiceServer,
};
use legate::proto::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use legate::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use legate::proto::envoy::service::endpoint::v3::endpoint_discovery_service_server::{
    EndpointDiscoveryService, EndpointDiscoveryServiceServer,
};
use legate::proto::envoy::service::listener::v3::listener_discovery_service_server::{
    ListenerDiscoveryService, ListenerDiscoveryServiceServer,
};
use legate::proto::envoy::service::route::v3::route_discovery_service_server::{
    RouteDiscoveryService, RouteDiscoveryServiceServer,
};

use crate::core::Core;
use crate::resource_type::ResourceType;
use crate::stream::{spawn, Delta, Service, Sotw};

type SotwStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
type DeltaStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

/// The peer address, put in each request's extensions by the router.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer(pub SocketAddr);

#[derive(Clone)]
pub(crate) struct Xds {
    core: Arc<Core>,
}

fn peer<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<Peer>()
        .map(|p| p.0.to_string())
        .unwrap_or_default()
}

impl Xds {
    fn sotw(&self, service: Service, req: Request<Streaming<DiscoveryRequest>>) -> Response<SotwStream> {
        let p = peer(&req);
        Response::new(spawn::<Sotw>(self.core.clone(), service, req.into_inner(), p))
    }

    fn delta(
        &self,
        service: Service,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Response<DeltaStream> {
        let p = peer(&req);
        Response::new(spawn::<Delta>(self.core.clone(), service, req.into_inner(), p))
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Xds {
    type StreamAggregatedResourcesStream = SotwStream;
    type DeltaAggregatedResourcesStream = DeltaStream;

    async fn stream_aggregated_resources(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        Ok(self.sotw(Service::Ads, req))
    }

    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Ok(self.delta(Service::Ads, req))
    }
}

#[tonic::async_trait]
impl ListenerDiscoveryService for Xds {
    type StreamListenersStream = SotwStream;
    type DeltaListenersStream = DeltaStream;

    async fn stream_listeners(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        Ok(self.sotw(Service::Single(ResourceType::Listener), req))
    }

    async fn delta_listeners(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Ok(self.delta(Service::Single(ResourceType::Listener), req))
    }
}

#[tonic::async_trait]
impl RouteDiscoveryService for Xds {
    type StreamRoutesStream = SotwStream;
    type DeltaRoutesStream = DeltaStream;

    async fn stream_routes(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        Ok(self.sotw(Service::Single(ResourceType::Route), req))
    }

    async fn delta_routes(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Ok(self.delta(Service::Single(ResourceType::Route), req))
    }
}

#[tonic::async_trait]
impl ClusterDiscoveryService for Xds {
    type StreamClustersStream = SotwStream;
    type DeltaClustersStream = DeltaStream;

    async fn stream_clusters(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        Ok(self.sotw(Service::Single(ResourceType::Cluster), req))
    }

    async fn delta_clusters(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Ok(self.delta(Service::Single(ResourceType::Cluster), req))
    }
}

#[tonic::async_trait]
impl EndpointDiscoveryService for Xds {
    type StreamEndpointsStream = SotwStream;
    type DeltaEndpointsStream = DeltaStream;

    async fn stream_endpoints(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<SotwStream>, Status> {
        Ok(self.sotw(Service::Single(ResourceType::Endpoint), req))
    }

    async fn delta_endpoints(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaStream>, Status> {
        Ok(self.delta(Service::Single(ResourceType::Endpoint), req))
    }
}

/// Requests (10,000 EDS names, delta initial versions) can pass tonic's
/// 4 MiB default.
const MAX_MESSAGE: usize = 256 << 20;

/// Routes an HTTP/2 request to the service its path names. (tonic's own
/// router needs a feature the workspace does not build.)
#[derive(Clone)]
pub(crate) struct Router {
    ads: AggregatedDiscoveryServiceServer<Xds>,
    lds: ListenerDiscoveryServiceServer<Xds>,
    rds: RouteDiscoveryServiceServer<Xds>,
    cds: ClusterDiscoveryServiceServer<Xds>,
    eds: EndpointDiscoveryServiceServer<Xds>,
    peer: SocketAddr,
}

impl Router {
    pub fn new(core: Arc<Core>, peer: SocketAddr) -> Router {
        let xds = Xds { core };
        Router {
            ads: AggregatedDiscoveryServiceServer::new(xds.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            lds: ListenerDiscoveryServiceServer::new(xds.clone()).max_decoding_message_size(MAX_MESSAGE),
            rds: RouteDiscoveryServiceServer::new(xds.clone()).max_decoding_message_size(MAX_MESSAGE),
            cds: ClusterDiscoveryServiceServer::new(xds.clone()).max_decoding_message_size(MAX_MESSAGE),
            eds: EndpointDiscoveryServiceServer::new(xds).max_decoding_message_size(MAX_MESSAGE),
            peer,
        }
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

impl hyper::service::Service<http::Request<Incoming>> for Router {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn call(&self, mut req: http::Request<Incoming>) -> BoxFuture {
        use tower_service::Service as _;
        req.extensions_mut().insert(Peer(self.peer));
        let path = req.uri().path();
        let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
        match service {
            "envoy.service.discovery.v3.AggregatedDiscoveryService" => Box::pin(self.ads.clone().call(req)),
            "envoy.service.listener.v3.ListenerDiscoveryService" => Box::pin(self.lds.clone().call(req)),
            "envoy.service.route.v3.RouteDiscoveryService" => Box::pin(self.rds.clone().call(req)),
            "envoy.service.cluster.v3.ClusterDiscoveryService" => Box::pin(self.cds.clone().call(req)),
            "envoy.service.endpoint.v3.EndpointDiscoveryService" => Box::pin(self.eds.clone().call(req)),
            other => {
                let status =
                    Status::unimplemented(format!("the control-plane mock does not serve `{other}`"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}
