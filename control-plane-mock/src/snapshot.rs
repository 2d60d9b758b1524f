//! A snapshot: the resources the mock serves, one default set plus optional
//! per-node overrides, and the per-node views the streams read.
//!
//! A snapshot is inert data. It is built (decoded, validated, hashed) before
//! it is published, so a stream only ever looks things up in it.

use std::collections::BTreeMap;
use std::sync::Arc;

use prost::Message;
use xxhash_rust::xxh64::xxh64;

use legate::config::ConfigError;
use legate::proto::envoy::config::cluster::v3::{cluster, Cluster};
use legate::proto::envoy::config::endpoint::v3::ClusterLoadAssignment;
use legate::proto::envoy::config::listener::v3::Listener;
use legate::proto::envoy::config::route::v3::RouteConfiguration;

use crate::resource_type::ResourceType;
use crate::Error;

/// One resource: its name, a version derived from its bytes, and the
/// encoded message.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub name: String,
    /// Hex digest of the encoded resource: equal bytes, equal version, so a
    /// re-published but unchanged resource is not pushed again.
    pub version: String,
    pub any: prost_types::Any,
    /// For a cluster of type EDS: the ClusterLoadAssignment it needs.
    pub eds_name: Option<String>,
}

impl Resource {
    /// Wraps an encoded resource of type `ty`, reading its name from it.
    pub fn new(ty: ResourceType, any: prost_types::Any) -> Result<Resource, Error> {
        if any.type_url != ty.type_url() {
            return Err(Error::Invalid(format!(
                "a resource of type `{}` cannot be one of the {}",
                any.type_url,
                ty.key()
            )));
        }
        let bad = |e: prost::DecodeError| Error::Invalid(format!("cannot decode {}: {e}", ty.message_name()));
        let bytes = any.value.as_slice();
        let (name, eds_name) = match ty {
            ResourceType::Listener => (Listener::decode(bytes).map_err(bad)?.name, None),
            ResourceType::Route => (RouteConfiguration::decode(bytes).map_err(bad)?.name, None),
            ResourceType::Endpoint => (
                ClusterLoadAssignment::decode(bytes).map_err(bad)?.cluster_name,
                None,
            ),
            ResourceType::Cluster => {
                let c = Cluster::decode(bytes).map_err(bad)?;
                let eds = matches!(
                    c.cluster_discovery_type,
                    Some(cluster::ClusterDiscoveryType::Type(t)) if t == cluster::DiscoveryType::Eds as i32
                );
                let eds_name = eds.then(|| {
                    c.eds_cluster_config
                        .as_ref()
                        .map(|e| e.service_name.clone())
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| c.name.clone())
                });
                (c.name, eds_name)
            }
        };
        if name.is_empty() {
            let field = if ty == ResourceType::Endpoint {
                "cluster_name"
            } else {
                "name"
            };
            return Err(Error::Invalid(format!(
                "one of the {} has no `{field}`",
                ty.key()
            )));
        }
        let version = format!("{:016x}", xxh64(&any.value, 0));
        Ok(Resource {
            name,
            version,
            any,
            eds_name,
        })
    }
}

/// Resources by type and name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    maps: [BTreeMap<String, Arc<Resource>>; 4],
}

impl Resources {
    pub fn get(&self, ty: ResourceType) -> &BTreeMap<String, Arc<Resource>> {
        &self.maps[ty as usize]
    }

    pub fn get_mut(&mut self, ty: ResourceType) -> &mut BTreeMap<String, Arc<Resource>> {
        &mut self.maps[ty as usize]
    }

    pub fn is_empty(&self) -> bool {
        self.maps.iter().all(BTreeMap::is_empty)
    }

    pub fn len(&self) -> usize {
        self.maps.iter().map(BTreeMap::len).sum()
    }
}

/// What the mock serves: a default set of resources, per-node overrides
/// (merged over the default by name) and an optional version label.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// The `version_info` to send for this snapshot; `None`: the mock's
    /// change counter.
    pub version: Option<String>,
    pub default: Resources,
    /// Node id → resources that replace (same name) or add to the default
    /// ones for that node.
    pub nodes: BTreeMap<String, Resources>,
    /// Warnings from decoding (legacy forms translated, …).
    pub decode_warnings: Vec<String>,
}

impl Snapshot {
    /// An empty snapshot.
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// Decodes a snapshot file's text (YAML or JSON; see the README for the
    /// format) with legate's config loader.
    pub fn from_yaml(text: &str) -> Result<Snapshot, Error> {
        crate::snapshot_file::parse(text)
    }

    /// Reads and decodes a snapshot file; errors name the file and line.
    pub fn from_file(path: &std::path::Path) -> Result<Snapshot, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: format!("cannot read {}", path.display()),
            source,
        })?;
        crate::snapshot_file::parse(&text).map_err(|e| e.in_file(&path.display().to_string()))
    }

    /// The resources for `node` (`None`: the default set).
    pub fn resources_mut(&mut self, node: Option<&str>) -> &mut Resources {
        match node {
            None => &mut self.default,
            Some(n) => self.nodes.entry(n.to_string()).or_default(),
        }
    }

    /// Adds or replaces a resource, for every node (`None`) or one node.
    pub fn upsert(&mut self, node: Option<&str>, resource: Resource, ty: ResourceType) {
        self.resources_mut(node)
            .get_mut(ty)
            .insert(resource.name.clone(), Arc::new(resource));
    }

    /// Decodes one resource (YAML/JSON, with or without `@type`) and adds or
    /// replaces it.
    pub fn upsert_yaml(&mut self, node: Option<&str>, ty: ResourceType, text: &str) -> Result<String, Error> {
        let (resource, warnings) = crate::snapshot_file::parse_resource(text, ty)?;
        let name = resource.name.clone();
        for w in warnings {
            if !self.decode_warnings.contains(&w) {
                self.decode_warnings.push(w);
            }
        }
        self.upsert(node, resource, ty);
        Ok(name)
    }

    /// Removes a resource; `false` if it was not there. Removing a default
    /// resource leaves node overrides of the same name in place.
    pub fn remove(&mut self, node: Option<&str>, ty: ResourceType, name: &str) -> bool {
        let removed = match node {
            None => self.default.get_mut(ty).remove(name).is_some(),
            Some(n) => self
                .nodes
                .get_mut(n)
                .is_some_and(|r| r.get_mut(ty).remove(name).is_some()),
        };
        if let Some(n) = node {
            if self.nodes.get(n).is_some_and(Resources::is_empty) {
                self.nodes.remove(n);
            }
        }
        removed
    }

    /// The effective resources for a node: the default set with that node's
    /// overrides merged over it by name.
    pub fn resources_for(&self, node: &str) -> Resources {
        let mut out = self.default.clone();
        if let Some(over) = self.nodes.get(node) {
            for ty in ResourceType::ALL {
                for (name, r) in over.get(ty) {
                    out.get_mut(ty).insert(name.clone(), r.clone());
                }
            }
        }
        out
    }

    /// Every warning: decoding ones, then consistency ones (a route to a
    /// cluster that is not there, an EDS cluster without endpoints, …) for
    /// the default set and for each node.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.decode_warnings.clone();
        out.extend(crate::check::consistency(&self.default));
        for node in self.nodes.keys() {
            for w in crate::check::consistency(&self.resources_for(node)) {
                let w = format!("node `{node}`: {w}");
                if !out.contains(&w) {
                    out.push(w);
                }
            }
        }
        out
    }

    /// The snapshot in its file format (JSON), which `from_yaml` reads back.
    pub fn to_json(&self) -> serde_json::Value {
        crate::snapshot_json::render(self)
    }
}

/// What a stream reads: the resources for one node, with the version each
/// is pushed under.
#[derive(Debug, Default)]
pub struct View {
    maps: [BTreeMap<String, Served>; 4],
}

/// A resource as a stream serves it.
#[derive(Clone, Debug)]
pub struct Served {
    pub resource: Arc<Resource>,
    /// The resource's version, except for a ClusterLoadAssignment, whose
    /// version also covers the clusters that use it: Envoy re-warms an
    /// updated cluster and waits for a fresh EDS response even when the
    /// endpoints did not change, so a cluster change must re-push them.
    pub version: String,
}

impl View {
    pub fn new(resources: &Resources) -> View {
        let mut view = View::default();
        let mut cluster_versions: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for c in resources.get(ResourceType::Cluster).values() {
            if let Some(eds) = &c.eds_name {
                cluster_versions.entry(eds).or_default().push(&c.version);
            }
        }
        for ty in ResourceType::ALL {
            let map = &mut view.maps[ty as usize];
            for (name, r) in resources.get(ty) {
                let version = match (ty, cluster_versions.get(name.as_str())) {
                    (ResourceType::Endpoint, Some(users)) => {
                        let mut joined = r.version.clone();
                        for v in users {
                            joined.push_str(v);
                        }
                        format!("{:016x}", xxh64(joined.as_bytes(), 1))
                    }
                    _ => r.version.clone(),
                };
                map.insert(
                    name.clone(),
                    Served {
                        resource: r.clone(),
                        version,
                    },
                );
            }
        }
        view
    }

    pub fn get(&self, ty: ResourceType) -> &BTreeMap<String, Served> {
        &self.maps[ty as usize]
    }
}

/// A published snapshot: the snapshot, its version and the views streams
/// read, built once per publish (not once per stream).
#[derive(Debug)]
pub struct Published {
    /// Bumped on every change; never repeats within a process.
    pub generation: u64,
    /// The `version_info` responses carry.
    pub version: String,
    pub snapshot: Arc<Snapshot>,
    default_view: Arc<View>,
    node_views: BTreeMap<String, Arc<View>>,
}

impl Published {
    pub fn new(generation: u64, snapshot: Arc<Snapshot>) -> Published {
        let version = snapshot.version.clone().unwrap_or_else(|| generation.to_string());
        let default_view = Arc::new(View::new(&snapshot.default));
        let node_views = snapshot
            .nodes
            .keys()
            .map(|n| (n.clone(), Arc::new(View::new(&snapshot.resources_for(n)))))
            .collect();
        Published {
            generation,
            version,
            snapshot,
            default_view,
            node_views,
        }
    }

    /// The view for a node id.
    pub fn view(&self, node: &str) -> Arc<View> {
        self.node_views
            .get(node)
            .cloned()
            .unwrap_or_else(|| self.default_view.clone())
    }
}

/// Attaches a field-path prefix to a loader error (the loader decodes each
/// resource on its own and does not know where it sits in the file).
pub(crate) fn at(prefix: &str, mut e: ConfigError) -> ConfigError {
    e.path = join_path(prefix, &e.path);
    e
}

/// `prefix` + `path` as one field path (`clusters[0]` + `name`).
pub(crate) fn join_path(prefix: &str, path: &str) -> String {
    if path.is_empty() {
        prefix.to_string()
    } else if prefix.is_empty() || path.starts_with('[') {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}.{path}")
    }
}
