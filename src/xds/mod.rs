//! xDS: the client side of Envoy's discovery protocol.
//!
//! The parts, and who talks to whom:
//!
//! ```text
//!  control plane ──gRPC──► client.rs (I/O driver, one per Source)
//!                              │  uses protocol.rs (sans-io SotW / delta state)
//!  files ──notify──► files.rs  │
//!                              ▼
//!                     Sink::apply(Update) ──► manager.rs (validate, compile, warm,
//!                              ▲                publish one Snapshot, bind/drain listeners)
//!                              │                     │
//!                              └── Interest (watch) ◄┘  which names each Source must request
//! ```
//!
//! `Sink::apply` returns only after the new snapshot is published, so the
//! driver's ACK always follows the publish; an `Err` is the NACK message.

pub mod cache;
pub mod client;
pub mod files;
pub mod manager;
pub mod protocol;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::proto::envoy::config::bootstrap::v3::Bootstrap;
use crate::proto::envoy::config::core::v3::{
    api_config_source::ApiType, config_source, grpc_service, node, ConfigSource, Node,
};

/// The resource types legate consumes, in Envoy's subscription order
/// (clusters and their endpoints before listeners and their routes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    Cluster,
    ClusterLoadAssignment,
    Listener,
    RouteConfiguration,
}

pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

impl ResourceType {
    pub const ALL: [ResourceType; 4] = [
        ResourceType::Cluster,
        ResourceType::ClusterLoadAssignment,
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
    ];

    /// The protobuf message's full name.
    pub fn message_name(self) -> &'static str {
        match self {
            ResourceType::Cluster => "envoy.config.cluster.v3.Cluster",
            ResourceType::ClusterLoadAssignment => "envoy.config.endpoint.v3.ClusterLoadAssignment",
            ResourceType::Listener => "envoy.config.listener.v3.Listener",
            ResourceType::RouteConfiguration => "envoy.config.route.v3.RouteConfiguration",
        }
    }

    pub fn type_url(self) -> &'static str {
        match self {
            ResourceType::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            ResourceType::ClusterLoadAssignment => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            ResourceType::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            ResourceType::RouteConfiguration => {
                "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
            }
        }
    }

    /// The v3 type URL's type (any `…/` prefix is accepted, as protobuf does).
    pub fn from_type_url(url: &str) -> Option<ResourceType> {
        let name = crate::config::validate::type_url_name(url);
        ResourceType::ALL.into_iter().find(|t| t.message_name() == name)
    }

    /// LDS and CDS are full-state in SotW: a resource missing from a
    /// response is removed. For RDS and EDS absence means nothing.
    pub fn is_full_state(self) -> bool {
        matches!(self, ResourceType::Listener | ResourceType::Cluster)
    }

    /// "cds", "eds", "lds", "rds" (stats and logs).
    pub fn short(self) -> &'static str {
        match self {
            ResourceType::Cluster => "cds",
            ResourceType::ClusterLoadAssignment => "eds",
            ResourceType::Listener => "lds",
            ResourceType::RouteConfiguration => "rds",
        }
    }
}

/// The name a resource is known by: `name`, or a ClusterLoadAssignment's
/// `cluster_name` — field 1 in all four messages. Read straight from the
/// wire without decoding the rest: a SotW response repeats every resource,
/// and the manager fully decodes only the ones that changed. Err when the
/// bytes are not a well-formed message.
pub fn resource_name(ty: ResourceType, any: &prost_types::Any) -> Result<String, String> {
    use prost::encoding::{decode_key, decode_varint, WireType};
    let bad = |e: &dyn std::fmt::Display| format!("cannot decode {}: {e}", ty.message_name());
    let mut buf = any.value.as_slice();
    let mut name = String::new();
    while !buf.is_empty() {
        let (field, wire) = decode_key(&mut buf).map_err(|e| bad(&e))?;
        let skip = match wire {
            WireType::Varint => {
                decode_varint(&mut buf).map_err(|e| bad(&e))?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf).map_err(|e| bad(&e))?;
                let len = usize::try_from(len).map_err(|e| bad(&e))?;
                if len > buf.len() {
                    return Err(bad(&"a field runs past the end of the message"));
                }
                if field == 1 {
                    name = std::str::from_utf8(&buf[..len]).map_err(|e| bad(&e))?.to_string();
                }
                len
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(bad(&"groups are not used by xDS resources"))
            }
        };
        if skip > buf.len() {
            return Err(bad(&"a field runs past the end of the message"));
        }
        buf = &buf[skip..];
    }
    Ok(name)
}

/// One resource as received, unwrapped from any `Resource` wrapper.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub name: String,
    /// Delta: the resource's own version. SotW: the response's version_info.
    pub version: String,
    pub body: prost_types::Any,
}

/// One response (or one file read), as a subscription hands it to the sink.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    pub ty: ResourceType,
    /// SotW `version_info`, delta `system_version_info`, or a file's `version_info`.
    pub version: String,
    pub resources: Vec<Resource>,
    /// Delta `removed_resources`.
    pub removed: Vec<String>,
    /// A state-of-the-world response: for LDS and CDS every resource of this
    /// source that is not in `resources` is removed.
    pub state_of_the_world: bool,
}

/// Where a config source's resources come from. Two ConfigSources that
/// compare equal share one subscription (one stream, one file watch).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// `dynamic_resources.ads_config`: one stream for every type.
    Ads,
    /// `api_config_source` GRPC / DELTA_GRPC: one stream per type, to this server.
    Grpc { server: GrpcServer, delta: bool },
    /// `path_config_source` (or the deprecated `path`): a watched file.
    Path {
        path: PathBuf,
        /// `watched_directory.path`: changes there trigger a re-read.
        watched_directory: Option<PathBuf>,
    },
}

/// How to reach a gRPC control plane.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrpcServer {
    /// `envoy_grpc.cluster_name`: a static cluster of the bootstrap.
    Cluster(String),
    /// `google_grpc.target_uri` (`host:port`), dialled directly.
    Target(String),
}

impl Source {
    /// The source a ConfigSource names. `parent` is what `self: {}` means
    /// (the source of the resource that holds this ConfigSource).
    pub fn from_config(cs: &ConfigSource, parent: Option<&Source>) -> Result<Source, String> {
        use config_source::ConfigSourceSpecifier as S;
        match &cs.config_source_specifier {
            Some(S::Ads(_)) => Ok(Source::Ads),
            Some(S::Path(p)) => Ok(Source::Path {
                path: PathBuf::from(p),
                watched_directory: None,
            }),
            Some(S::PathConfigSource(p)) => Ok(Source::Path {
                path: PathBuf::from(&p.path),
                watched_directory: p.watched_directory.as_ref().map(|w| PathBuf::from(&w.path)),
            }),
            Some(S::ApiConfigSource(api)) => match ApiType::try_from(api.api_type) {
                Ok(ApiType::AggregatedGrpc) | Ok(ApiType::AggregatedDeltaGrpc) => Ok(Source::Ads),
                Ok(t @ (ApiType::Grpc | ApiType::DeltaGrpc)) => Ok(Source::Grpc {
                    server: grpc_server(&api.grpc_services)?,
                    delta: t == ApiType::DeltaGrpc,
                }),
                _ => Err("api_config_source.api_type: only GRPC, DELTA_GRPC and the aggregated types are supported by legate (REST is not)".into()),
            },
            Some(S::Self_(_)) => parent
                .cloned()
                .ok_or_else(|| "self: {} has no parent config source here".to_string()),
            None => Err("the config source names no transport (ads, api_config_source or path_config_source)".into()),
        }
    }
}

/// The server of an `api_config_source` / `ads_config`: its first gRPC service.
pub fn grpc_server(
    services: &[crate::proto::envoy::config::core::v3::GrpcService],
) -> Result<GrpcServer, String> {
    use grpc_service::TargetSpecifier as T;
    match services.first().and_then(|g| g.target_specifier.as_ref()) {
        Some(T::EnvoyGrpc(e)) if !e.cluster_name.is_empty() => {
            Ok(GrpcServer::Cluster(e.cluster_name.clone()))
        }
        Some(T::GoogleGrpc(g)) if !g.target_uri.is_empty() => Ok(GrpcServer::Target(g.target_uri.clone())),
        _ => Err(
            "grpc_services: needs one entry with envoy_grpc.cluster_name (or google_grpc.target_uri)".into(),
        ),
    }
}

/// What one source must subscribe to, per type: `None` is a wildcard
/// subscription (LDS, CDS), `Some(names)` the complete set of names.
pub type Subscriptions = BTreeMap<ResourceType, Option<BTreeSet<String>>>;

/// What every source must subscribe to. The manager publishes it through a
/// `tokio::sync::watch`; each driver reads its own entry and sends the
/// requests that move its streams to it (complete name sets, as
/// go-control-plane in ADS mode requires).
pub type Interest = BTreeMap<Source, Subscriptions>;

/// The receiving end of every subscription: the config manager.
pub trait Sink: Send + Sync + 'static {
    /// Validates and applies one update from `source`, and publishes the
    /// resulting snapshot before returning. `Ok` means ACK; `Err` is the NACK
    /// message (naming the resource and field) and nothing was applied.
    fn apply(&self, source: &Source, update: Update) -> Result<(), String>;

    /// An update of `ty` from `source` was rejected before it could reach
    /// `apply` (undecodable response, wrong type URL, duplicate names, a
    /// file that does not parse). Counted as `update_rejected` and shown as
    /// the last error; nothing changes.
    fn rejected(&self, source: &Source, ty: ResourceType, error: &str);

    /// The stream (or file) of `source` failed or closed; `connected` is
    /// whether any control-plane stream is up now (`control_plane.connected_state`).
    fn stream_state(&self, source: &Source, connected: bool);
}

/// legate's name and version in `node.user_agent_*`.
pub const USER_AGENT: &str = "legate";

/// The node identity every xDS request carries: the bootstrap's `node`
/// (after `--service-*` overrides) plus the user agent and the client
/// features legate supports.
pub fn node_of(b: &Bootstrap) -> Node {
    let mut node = b.node.clone().unwrap_or_default();
    node.user_agent_name = USER_AGENT.into();
    node.user_agent_version_type = Some(node::UserAgentVersionType::UserAgentVersion(
        env!("CARGO_PKG_VERSION").into(),
    ));
    for f in ["xds.config.resource-in-sotw"] {
        if !node.client_features.iter().any(|c| c == f) {
            node.client_features.push(f.into());
        }
    }
    node
}

/// How gRPC drivers reach their servers, from the bootstrap: the ADS
/// servers and mode, and cluster names resolved against the live snapshot.
pub fn client_context(b: &Bootstrap, shared: crate::model::Shared) -> Result<client::ClientContext, String> {
    let ads = b.dynamic_resources.as_ref().and_then(|d| d.ads_config.as_ref());
    let ads_servers = match ads {
        Some(a) => {
            vec![grpc_server(&a.grpc_services).map_err(|e| format!("dynamic_resources.ads_config.{e}"))?]
        }
        None => Vec::new(),
    };
    let ads_delta = ads.is_some_and(|a| {
        matches!(
            ApiType::try_from(a.api_type),
            Ok(ApiType::DeltaGrpc | ApiType::AggregatedDeltaGrpc)
        )
    });
    let resolve = move |server: &GrpcServer| -> Option<client::Dial> {
        match server {
            GrpcServer::Target(t) => Some(client::Dial {
                uri: format!("http://{t}"),
                connect_timeout: std::time::Duration::from_secs(5),
            }),
            GrpcServer::Cluster(name) => {
                let snap = shared.load();
                let c = snap.clusters.get(name)?;
                let host = c.hosts.hosts.first()?;
                Some(client::Dial {
                    uri: format!("http://{}", host.addr),
                    connect_timeout: c.connect_timeout,
                })
            }
        }
    };
    Ok(client::ClientContext {
        node: node_of(b),
        ads_delta,
        ads_servers,
        set_node_on_first_message_only: ads.is_some_and(|a| a.set_node_on_first_message_only),
        resolve: std::sync::Arc::new(resolve),
        backoff: client::Backoff {
            base: std::time::Duration::from_millis(500),
            max: std::time::Duration::from_secs(30),
        },
        initial_versions: BTreeMap::new(),
    })
}

/// The gRPC context of sidecar mode: ADS to `--xds-server`s in order, and
/// a short backoff cap so a control plane that comes up is found quickly.
pub fn sidecar_context(
    b: &Bootstrap,
    s: &manager::Sidecar,
    initial_versions: BTreeMap<ResourceType, BTreeMap<String, String>>,
) -> client::ClientContext {
    client::ClientContext {
        node: node_of(b),
        ads_delta: s.delta,
        ads_servers: s.servers.iter().map(|t| GrpcServer::Target(t.clone())).collect(),
        set_node_on_first_message_only: false,
        resolve: std::sync::Arc::new(|server: &GrpcServer| match server {
            GrpcServer::Target(t) => Some(client::Dial {
                uri: format!("http://{t}"),
                connect_timeout: std::time::Duration::from_secs(2),
            }),
            GrpcServer::Cluster(_) => None,
        }),
        backoff: client::Backoff {
            base: std::time::Duration::from_millis(250),
            max: std::time::Duration::from_secs(4),
        },
        initial_versions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn resource_names_come_from_field_1_without_a_full_decode() {
        use crate::proto::envoy::config::{cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment};
        let c = Cluster {
            name: "svc".into(),
            connect_timeout: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
            ..Default::default()
        };
        let any = |t: ResourceType, v: Vec<u8>| prost_types::Any {
            type_url: t.type_url().into(),
            value: v,
        };
        assert_eq!(
            resource_name(
                ResourceType::Cluster,
                &any(ResourceType::Cluster, c.encode_to_vec())
            )
            .unwrap(),
            "svc"
        );
        let cla = ClusterLoadAssignment {
            cluster_name: "eds-svc".into(),
            ..Default::default()
        };
        let t = ResourceType::ClusterLoadAssignment;
        assert_eq!(resource_name(t, &any(t, cla.encode_to_vec())).unwrap(), "eds-svc");
        // Truncated: an error, not a wrong name.
        let mut bytes = c.encode_to_vec();
        bytes.truncate(3);
        assert!(resource_name(ResourceType::Cluster, &any(ResourceType::Cluster, bytes)).is_err());
        assert_eq!(
            resource_name(ResourceType::Cluster, &any(ResourceType::Cluster, Vec::new())).unwrap(),
            ""
        );
    }

    #[test]
    fn type_urls_round_trip() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
        }
        assert_eq!(
            ResourceType::from_type_url("type.googleapis.com/envoy.api.v2.Listener"),
            None
        );
        assert_eq!(
            ResourceType::from_type_url("example.com/envoy.config.listener.v3.Listener"),
            Some(ResourceType::Listener)
        );
    }
}
