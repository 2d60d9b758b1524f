//! The runtime model: what the data plane needs, compiled from validated
//! Envoy protos, and published as one immutable [`Snapshot`].

pub mod cluster;
pub mod dns;
pub mod header_ops;
pub mod lb;
pub mod listener;
pub mod route_table;
pub mod stats;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::proto::envoy::config::bootstrap::v3::Bootstrap;
use cluster::Cluster;
use listener::Listener;
use route_table::RouteTable;

/// A proto Duration as a std one. Negative values (which the validator
/// rejects where Envoy does) clamp to zero rather than wrap.
pub fn duration(d: &prost_types::Duration) -> std::time::Duration {
    std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
}

/// A map by resource name, read on every request (clusters, RDS tables):
/// foldhash rather than SipHash, a third of the cost for short names. The
/// keys are the configuration's names, not a client's.
pub type ByName<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Everything the workers read, replaced as a whole. Parts that did not
/// change are shared with the previous snapshot by `Arc`.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub listeners: Vec<Arc<Listener>>,
    pub clusters: ByName<Arc<Cluster>>,
    /// RDS route configurations by name.
    pub routes: ByName<Arc<RouteTable>>,
    /// The bootstrap's DNS resolver: DNS clusters without their own use it.
    pub dns_resolver: Arc<dns::Resolver>,
}

/// The one published snapshot. Workers `load()` it per request; the main
/// runtime is the only writer.
pub type Shared = Arc<ArcSwap<Snapshot>>;

impl Snapshot {
    /// The static part of a bootstrap.
    pub fn from_bootstrap(b: &Bootstrap) -> Result<Snapshot, String> {
        let resolver = dns::bootstrap_resolver(b).map_err(|e| format!("{}: {}", e.field, e.message))?;
        let mut snap = Snapshot {
            dns_resolver: Arc::new(resolver),
            ..Snapshot::default()
        };
        if let Some(sr) = &b.static_resources {
            for (i, c) in sr.clusters.iter().enumerate() {
                let compiled =
                    Cluster::compile(c).map_err(|e| format!("static_resources.clusters[{i}]: {e}"))?;
                snap.clusters.insert(compiled.name.clone(), Arc::new(compiled));
            }
            for (i, l) in sr.listeners.iter().enumerate() {
                let compiled =
                    Listener::compile(l).map_err(|e| format!("static_resources.listeners[{i}]: {e}"))?;
                snap.listeners.push(Arc::new(compiled));
            }
        }
        Ok(snap)
    }

    /// A copy with one cluster replaced (DNS/EDS host updates).
    pub fn with_cluster(&self, cluster: Arc<Cluster>) -> Snapshot {
        let mut clusters = self.clusters.clone();
        clusters.insert(cluster.name.clone(), cluster);
        Snapshot {
            listeners: self.listeners.clone(),
            clusters,
            routes: self.routes.clone(),
            dns_resolver: self.dns_resolver.clone(),
        }
    }
}
