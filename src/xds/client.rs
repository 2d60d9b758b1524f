//! (placeholder until the gRPC driver lands)
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{GrpcServer, Interest, ResourceType, Sink, Source};
use crate::proto::envoy::config::core::v3::Node;

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

pub struct Dial {
    pub uri: String,
    pub connect_timeout: Duration,
}

pub type Resolve = Arc<dyn Fn(&GrpcServer) -> Option<Dial> + Send + Sync>;

#[derive(Clone)]
pub struct ClientContext {
    pub node: Node,
    pub ads_delta: bool,
    pub ads_servers: Vec<GrpcServer>,
    pub set_node_on_first_message_only: bool,
    pub resolve: Resolve,
    pub backoff: Backoff,
    pub initial_versions: BTreeMap<ResourceType, BTreeMap<String, String>>,
}

pub async fn run(
    _source: Source,
    _ctx: ClientContext,
    _sink: Arc<dyn Sink>,
    _interest: watch::Receiver<Interest>,
) {
}
