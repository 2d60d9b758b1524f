//! The config manager: turns accepted xDS resources into the one published
//! [`Snapshot`], warming what is not ready, and tells each subscription what
//! to ask for.
//!
//! Envoy's rules, which this follows:
//! - Initialization: static resources, then CDS (its first response or its
//!   `initial_fetch_timeout`), then the EDS of those clusters, then LDS,
//!   then the RDS of those listeners; PRE_INITIALIZING → INITIALIZING →
//!   LIVE. Listeners accept only once the server is LIVE.
//! - A new EDS cluster is not used before its endpoints arrive (or its
//!   initial fetch times out); an updated one keeps serving its old version
//!   meanwhile. A new listener does not accept before its routes arrive.
//! - An update is validated and compiled as a whole before anything is
//!   published; an error rejects all of it (NACK) and changes nothing.
//! - One `ArcSwap` publish per update; unchanged clusters, routes and
//!   listeners keep their `Arc`s (and so their connection pools).
//!
//! Locking: one `Mutex` around the manager's state, taken by subscription
//! drivers and the warming timer on the main runtime, never by the data
//! plane (which only loads the snapshot).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use prost::Message;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Interest, ResourceType, Sink, Source, Update};
use crate::config::Loaded;
use crate::model::cluster::{eds_hosts, endpoints_of, Cluster, Discovery, EndpointSpec, HostSet};
use crate::model::listener::{Listener, Routes};
use crate::model::route_table::RouteTable;
use crate::model::{Shared, Snapshot};
use crate::proto::envoy::config::cluster::v3::Cluster as PCluster;
use crate::proto::envoy::config::core::v3::ConfigSource;
use crate::proto::envoy::config::endpoint::v3::ClusterLoadAssignment;
use crate::proto::envoy::config::listener::v3::Listener as PListener;
use crate::proto::envoy::config::route::v3::RouteConfiguration;
use crate::runtime::listeners::{Bound, ListenerManager};
use crate::stats::{sanitize, store};

/// Envoy's `initial_fetch_timeout` default.
const DEFAULT_INITIAL_FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// How often warming deadlines are checked.
const TICK: Duration = Duration::from_millis(50);

/// A subscription's source and how long initialization waits for it
/// (`None`: forever, `initial_fetch_timeout: 0s`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sub {
    source: Source,
    timeout: Option<Duration>,
}

impl Sub {
    fn of(cs: &ConfigSource, parent: Option<&Source>) -> Result<Sub, String> {
        Ok(Sub {
            source: Source::from_config(cs, parent)?,
            timeout: match &cs.initial_fetch_timeout {
                None => Some(DEFAULT_INITIAL_FETCH_TIMEOUT),
                Some(d) => Some(crate::model::duration(d)).filter(|d| !d.is_zero()),
            },
        })
    }

    fn deadline(&self) -> Option<Instant> {
        self.timeout.map(|t| Instant::now() + t)
    }
}

/// What `/config_dump` shows of an accepted resource.
#[derive(Clone, Debug)]
pub struct Meta {
    pub version: String,
    pub last_updated: SystemTime,
    pub body: prost_types::Any,
}

struct ClusterEntry {
    meta: Meta,
    compiled: Arc<Cluster>,
    /// EDS clusters: where their ClusterLoadAssignment comes from.
    eds: Option<Sub>,
    /// Warming clusters: when they go active without endpoints.
    deadline: Option<Instant>,
}

struct ListenerEntry {
    meta: Meta,
    compiled: Arc<Listener>,
    /// RDS listeners: where their RouteConfiguration comes from.
    rds: Option<(Sub, String)>,
    /// Sockets bound for a new address, until the listener starts.
    bound: Option<Bound>,
    /// Warming listeners: when they start without their routes.
    deadline: Option<Instant>,
}

struct RouteEntry {
    meta: Meta,
    table: Arc<RouteTable>,
}

struct EndpointEntry {
    meta: Meta,
    endpoints: Vec<EndpointSpec>,
}

/// A bootstrap listener: bound at startup, started when the server is LIVE.
struct StaticListener {
    listener: Arc<Listener>,
    bound: Option<Bound>,
    rds: Option<(Sub, String)>,
}

#[derive(Default)]
struct Init {
    live: bool,
    cds_done: bool,
    cds_deadline: Option<Instant>,
    lds_started: bool,
    lds_done: bool,
    lds_deadline: Option<Instant>,
    /// Static EDS clusters' service names still waiting for their CLA.
    static_eds: BTreeMap<String, Option<Instant>>,
    /// When static listeners stop waiting for their routes.
    static_rds_deadline: Option<Instant>,
}

#[derive(Default)]
struct State {
    clusters: BTreeMap<String, ClusterEntry>,
    warming_clusters: BTreeMap<String, ClusterEntry>,
    listeners: BTreeMap<String, ListenerEntry>,
    warming_listeners: BTreeMap<String, ListenerEntry>,
    routes: BTreeMap<String, RouteEntry>,
    endpoints: BTreeMap<String, EndpointEntry>,
    statics: Vec<StaticListener>,
    /// Static EDS clusters: (cluster name, source, service name).
    static_eds: Vec<(String, Sub, String)>,
    versions: BTreeMap<ResourceType, String>,
    errors: BTreeMap<ResourceType, (String, SystemTime)>,
    init: Init,
    /// Whether the dynamic config is published. Always, except in sidecar
    /// mode before the control plane's (or the cache's) config is complete:
    /// the fallback serves meanwhile and updates only accumulate.
    switched: bool,
    /// What serves now (sidecar mode), and since when.
    serving: Serving,
    serving_since: Option<SystemTime>,
    /// Names of bootstrap clusters, which CDS cannot replace (until a
    /// sidecar switch retires the fallback).
    static_clusters: BTreeSet<String>,
    /// EDS service name → the dynamic clusters (active or warming) it
    /// feeds. Rebuilt when clusters change, so an EDS update costs what it
    /// names, not the number of clusters.
    eds_index: std::collections::HashMap<String, Vec<String>>,
    /// Whether what the subscriptions ask for may have changed since the
    /// interest was last computed.
    interest_stale: bool,
    /// Sidecar mode: an empty control-plane config was reported once.
    warned_empty: bool,
    /// `update_*` stats by prefix, resolved once.
    update_stats: std::collections::HashMap<String, Arc<UpdateStats>>,
    /// The `cluster.<name>.update_*` stats an EDS resource (service name)
    /// counts under, resolved once per cluster set: a SotW EDS response
    /// names every cluster, and formatting, sorting and looking up 10,000
    /// prefixes per response was most of its cost (measured: ~8 ms of
    /// ~10 ms at 10,000 CLAs). Cleared when the clusters change.
    eds_update_stats: std::collections::HashMap<String, Vec<Arc<UpdateStats>>>,
}

/// Where the config in force comes from (`/config_source`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Serving {
    /// The bootstrap's static resources (sidecar fallback, or no xDS).
    #[default]
    Fallback,
    /// The last control-plane config, read from `--xds-cache`.
    Cache,
    /// Updates from the control plane.
    ControlPlane,
}

impl Serving {
    pub fn name(self) -> &'static str {
        match self {
            Serving::Fallback => "fallback",
            Serving::Cache => "cache",
            Serving::ControlPlane => "control_plane",
        }
    }
}

/// legate's sidecar mode (`--xds-server`): ADS to these servers, the
/// bootstrap's static resources as the fallback.
#[derive(Clone, Debug, Default)]
pub struct Sidecar {
    pub servers: Vec<String>,
    pub delta: bool,
    pub cache: Option<std::path::PathBuf>,
}

/// Changes to publish, computed before the publish.
#[derive(Default)]
struct Changes {
    clusters: Vec<Arc<Cluster>>,
    removed_clusters: Vec<String>,
    routes: Vec<(String, Arc<RouteTable>)>,
    removed_routes: Vec<String>,
    /// The active listener list changed.
    listeners: bool,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.clusters.is_empty()
            && self.removed_clusters.is_empty()
            && self.routes.is_empty()
            && self.removed_routes.is_empty()
            && !self.listeners
    }
}

pub struct Manager {
    shared: Shared,
    listeners: Arc<ListenerManager>,
    interest: watch::Sender<Interest>,
    lds: Option<Sub>,
    cds: Option<Sub>,
    static_listeners: BTreeSet<String>,
    sidecar: Option<Sidecar>,
    node_id: String,
    state: Mutex<State>,
    connected: Mutex<BTreeMap<Source, bool>>,
}

/// Something that failed in an update, as the NACK says it.
type Nack = String;

fn meta(version: &str, body: &prost_types::Any) -> Meta {
    Meta {
        version: version.to_string(),
        last_updated: SystemTime::now(),
        body: body.clone(),
    }
}

/// A resource's own version (delta), else the response's.
fn pick<'a>(own: &'a str, update: &'a str) -> &'a str {
    if own.is_empty() {
        update
    } else {
        own
    }
}

/// A changed resource, validated and decoded as `M`, with how errors name
/// it (`Cluster svc`).
fn checked<M: Message + Default>(r: &super::Resource, kind: &str) -> Result<(M, String), Nack> {
    let what = format!("{kind} {}", r.name);
    validate(&r.body, &what)?;
    let m = decode(&r.body, &what)?;
    Ok((m, what))
}

/// The names an update removes: for a SotW response every `known` name it
/// does not carry, for a delta one its `removed_resources`.
fn removed_by<'a>(u: &Update, known: impl Iterator<Item = &'a String>) -> Vec<String> {
    if !u.state_of_the_world {
        return u.removed.clone();
    }
    let present: BTreeSet<&str> = u.resources.iter().map(|r| r.name.as_str()).collect();
    known.filter(|n| !present.contains(n.as_str())).cloned().collect()
}

fn validate(body: &prost_types::Any, what: &str) -> Result<(), Nack> {
    crate::config::validate::resource(body, what, &|_| 0).map_err(|e| e.to_string())
}

fn decode<M: Message + Default>(body: &prost_types::Any, what: &str) -> Result<M, Nack> {
    let m = M::decode(body.value.as_slice()).map_err(|e| format!("{what}: cannot decode: {e}"))?;
    // Fields legate's API subset does not know are dropped by the decoder.
    // A canonical re-encoding that comes out shorter means some were there:
    // Envoy counts those in `server.dynamic_unknown_fields` and warns.
    if m.encoded_len() < body.value.len() {
        store().counter("server.dynamic_unknown_fields").inc();
        tracing::warn!("{what}: has fields legate does not know; they are ignored");
    }
    Ok(m)
}

/// The RDS name and source of a listener's HTTP connection manager.
fn rds_of(l: &Listener, parent: Option<&Source>) -> Result<Option<(Sub, String)>, Nack> {
    let Routes::Rds(name) = &l.hcm.routes else {
        return Ok(None);
    };
    let cs = l
        .hcm
        .rds_config_source
        .as_ref()
        .ok_or_else(|| format!("listener {}: rds.config_source is required", l.name))?;
    let sub = Sub::of(cs, parent).map_err(|e| format!("listener {}: rds.config_source: {e}", l.name))?;
    Ok(Some((sub, name.clone())))
}

/// The EDS source of a cluster, when it is an EDS cluster.
fn eds_of(proto: &PCluster, compiled: &Cluster, parent: Option<&Source>) -> Result<Option<Sub>, Nack> {
    if compiled.discovery != Discovery::Eds {
        return Ok(None);
    }
    let cs = proto
        .eds_cluster_config
        .as_ref()
        .and_then(|e| e.eds_config.as_ref())
        .ok_or_else(|| {
            format!(
                "cluster {}: eds_cluster_config.eds_config is required",
                proto.name
            )
        })?;
    Sub::of(cs, parent)
        .map(Some)
        .map_err(|e| format!("cluster {}: eds_cluster_config.eds_config: {e}", proto.name))
}

/// Settings that shape upstream connections: when equal, a cluster update
/// keeps the cluster's id and so its pooled connections.
fn same_pools(a: &Cluster, b: &Cluster) -> bool {
    a.discovery == b.discovery
        && !matches!(a.discovery, Discovery::StrictDns | Discovery::LogicalDns)
        && a.protocol == b.protocol
        && a.h2_max_streams == b.h2_max_streams
        && a.idle_timeout == b.idle_timeout
        && a.max_requests_per_connection == b.max_requests_per_connection
        && a.connect_timeout == b.connect_timeout
}

/// One subscription's `update_*` stats under a prefix.
struct UpdateStats {
    attempt: Arc<crate::stats::Counter>,
    success: Arc<crate::stats::Counter>,
    rejected: Arc<crate::stats::Counter>,
    duration: Arc<crate::stats::Histogram>,
}

impl UpdateStats {
    fn new(prefix: &str) -> UpdateStats {
        let p = crate::stats::Prefix::new(prefix.to_string());
        UpdateStats {
            // Written by the main runtime only: no shards.
            attempt: store().counter_single_in(&p, "update_attempt"),
            success: store().counter_single_in(&p, "update_success"),
            rejected: store().counter_single_in(&p, "update_rejected"),
            duration: store().histogram_single_in(&p, "update_duration"),
        }
    }
}

/// The `update_*` stats an update of `ty` naming `names` counts under
/// (each prefix resolved once and kept in [`State::update_stats`]).
fn update_stats_for(st: &mut State, ty: ResourceType, names: &[&str]) -> Vec<Arc<UpdateStats>> {
    stat_prefixes(st, ty, names)
        .into_iter()
        .map(|p| {
            st.update_stats
                .entry(p)
                .or_insert_with_key(|p| Arc::new(UpdateStats::new(p)))
                .clone()
        })
        .collect()
}

/// Rebuilds [`State::eds_index`].
fn reindex(st: &mut State) {
    let mut index: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for (name, e) in st.clusters.iter().chain(st.warming_clusters.iter()) {
        if e.eds.is_some() {
            let v = index.entry(e.compiled.eds_service_name.clone()).or_default();
            if !v.contains(name) {
                v.push(name.clone());
            }
        }
    }
    st.eds_index = index;
    st.eds_update_stats.clear();
    st.interest_stale = true;
}

/// The stats prefixes an update of `ty` counts under, as Envoy names them:
/// `cluster_manager.cds.`, `listener_manager.lds.`, per RDS route config
/// `http.<stat_prefix>.rds.<name>.` (each HTTP connection manager that uses
/// it), per EDS cluster `cluster.<name>.`. `names` are the update's resources
/// (empty when unknown: every RDS/EDS subscription of the type counts).
fn stat_prefixes(st: &State, ty: ResourceType, names: &[&str]) -> Vec<String> {
    let set: std::collections::HashSet<&str> = names.iter().copied().collect();
    let wanted = |n: &str| names.is_empty() || set.contains(n);
    match ty {
        ResourceType::Cluster => vec!["cluster_manager.cds.".into()],
        ResourceType::Listener => vec!["listener_manager.lds.".into()],
        ResourceType::RouteConfiguration => {
            let hcms = st.statics.iter().map(|s| &s.listener).chain(
                st.listeners
                    .values()
                    .chain(st.warming_listeners.values())
                    .map(|e| &e.compiled),
            );
            let mut out: Vec<String> = hcms
                .filter_map(|l| match &l.hcm.routes {
                    Routes::Rds(n) if wanted(n) => Some(rds_stat_prefix(&l.hcm.stat_prefix, n)),
                    _ => None,
                })
                .collect();
            out.sort();
            out.dedup();
            out
        }
        ResourceType::ClusterLoadAssignment if !names.is_empty() => {
            let mut out: Vec<String> = names
                .iter()
                .filter_map(|n| st.eds_index.get(*n))
                .flatten()
                .chain(
                    st.static_eds
                        .iter()
                        .filter(|(_, _, s)| set.contains(s.as_str()))
                        .map(|(n, _, _)| n),
                )
                .map(|n| format!("cluster.{}.", sanitize(n)))
                .collect();
            out.sort();
            out.dedup();
            out
        }
        ResourceType::ClusterLoadAssignment => {
            let mut out: Vec<String> = st
                .clusters
                .values()
                .chain(st.warming_clusters.values())
                .map(|e| (&e.compiled.name, &e.compiled.eds_service_name))
                .chain(st.static_eds.iter().map(|(n, _, s)| (n, s)))
                .filter(|(_, service)| wanted(service))
                .map(|(n, _)| format!("cluster.{}.", sanitize(n)))
                .collect();
            out.sort();
            out.dedup();
            out
        }
    }
}

impl Manager {
    /// Starts xDS when the bootstrap needs it (dynamic resources, RDS
    /// listeners or EDS clusters); otherwise starts the static listeners and
    /// declares the server LIVE. `statics` are the bootstrap's listeners,
    /// bound but not accepting.
    pub fn start(
        loaded: &Loaded,
        rt: &tokio::runtime::Runtime,
        shared: Shared,
        listeners: Arc<ListenerManager>,
        statics: Vec<(Arc<Listener>, Bound)>,
        sidecar: Option<Sidecar>,
    ) -> Result<Option<Arc<Manager>>, String> {
        let b = &loaded.bootstrap;
        if sidecar.is_some() && b.dynamic_resources.is_some() {
            return Err(
                "the config has dynamic_resources and --xds-server was given: drop one \
                 (remove dynamic_resources to run as a sidecar with static_resources as the fallback, \
                 or drop --xds-server to use the file's own xDS config)"
                    .into(),
            );
        }
        let dynamic = b.dynamic_resources.clone().unwrap_or_default();
        let sub = |cs: &Option<ConfigSource>, what: &str| -> Result<Option<Sub>, String> {
            cs.as_ref()
                .map(|cs| Sub::of(cs, None).map_err(|e| format!("dynamic_resources.{what}: {e}")))
                .transpose()
        };
        let (lds, cds) = if sidecar.is_some() {
            // Wait for the control plane for ever: the fallback serves meanwhile.
            let ads = Sub {
                source: Source::Ads,
                timeout: None,
            };
            (Some(ads.clone()), Some(ads))
        } else {
            (
                sub(&dynamic.lds_config, "lds_config")?,
                sub(&dynamic.cds_config, "cds_config")?,
            )
        };
        let mut state = State {
            interest_stale: true,
            switched: sidecar.is_none(),
            serving_since: Some(SystemTime::now()),
            ..State::default()
        };
        for (l, bound) in statics {
            let rds = rds_of(&l, None).map_err(|e| format!("static_resources: {e}"))?;
            state.statics.push(StaticListener {
                listener: l,
                bound: Some(bound),
                rds,
            });
        }
        if let Some(sr) = b.static_resources.as_ref().filter(|_| sidecar.is_none()) {
            for c in &sr.clusters {
                state.static_clusters.insert(c.name.clone());
                if let Some(compiled) = shared.load().clusters.get(&c.name) {
                    if let Some(s) =
                        eds_of(c, compiled, None).map_err(|e| format!("static_resources: {e}"))?
                    {
                        state
                            .init
                            .static_eds
                            .insert(compiled.eds_service_name.clone(), s.deadline());
                        state
                            .static_eds
                            .push((c.name.clone(), s, compiled.eds_service_name.clone()));
                    }
                }
            }
        }
        let needs_xds = lds.is_some()
            || cds.is_some()
            || !state.static_eds.is_empty()
            || state.statics.iter().any(|s| s.rds.is_some());
        if !needs_xds {
            for s in state.statics {
                if let Some(bound) = s.bound {
                    listeners.start(s.listener, bound);
                }
            }
            crate::admin::set_server_state(crate::admin::ServerState::Live);
            return Ok(None);
        }
        if sidecar.is_some() {
            // The fallback serves at once; legate never waits for the control plane.
            for s in &mut state.statics {
                if let Some(bound) = s.bound.take() {
                    listeners.start(s.listener.clone(), bound);
                }
            }
            state.init.live = true;
            state.init.lds_started = true;
            crate::admin::set_server_state(crate::admin::ServerState::Live);
        } else {
            crate::admin::set_server_state(crate::admin::ServerState::Initializing);
        }
        state.init.static_rds_deadline = state
            .statics
            .iter()
            .filter_map(|s| s.rds.as_ref())
            .map(|(sub, _)| sub.deadline())
            .try_fold(Instant::now(), |acc, d| d.map(|d| acc.max(d)));
        if let Some(c) = &cds {
            state.init.cds_deadline = c.deadline();
        } else {
            state.init.cds_done = true;
        }
        // In sidecar mode the control plane may reuse the fallback's names.
        let static_listeners = if sidecar.is_some() {
            BTreeSet::new()
        } else {
            state.statics.iter().map(|s| s.listener.name.clone()).collect()
        };
        let (interest, _) = watch::channel(Interest::new());
        let manager = Arc::new(Manager {
            shared,
            listeners,
            interest,
            lds,
            cds,
            static_listeners,
            sidecar: sidecar.clone(),
            node_id: b.node.as_ref().map(|n| n.id.clone()).unwrap_or_default(),
            state: Mutex::new(state),
            connected: Mutex::new(BTreeMap::new()),
        });
        for prefix in ["cluster_manager.cds.", "listener_manager.lds."] {
            for n in [
                "update_attempt",
                "update_success",
                "update_rejected",
                "update_failure",
                "init_fetch_timeout",
            ] {
                store().counter(&format!("{prefix}{n}"));
            }
        }
        store().gauge("control_plane.connected_state");
        store().counter("server.dynamic_unknown_fields");
        let mut initial_versions = BTreeMap::new();
        {
            let mut st = manager.lock();
            if manager.sidecar.is_some() {
                manager.publish_serving(&st);
            }
            if let Some(cached) = manager.load_cache(&loaded.bootstrap) {
                initial_versions = manager.serve_cache(&mut st, cached);
            }
            manager.advance(&mut st);
        }
        let ctx = match &sidecar {
            Some(s) => Ok(super::sidecar_context(&loaded.bootstrap, s, initial_versions)),
            None => super::client_context(&loaded.bootstrap, manager.shared.clone()),
        };
        let _guard = rt.enter();
        tokio::spawn(supervise(manager.clone(), ctx));
        tokio::spawn(tick(Arc::downgrade(&manager)));
        Ok(Some(manager))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every subscription's wanted names, as of now.
    pub fn interest(&self) -> watch::Receiver<Interest> {
        self.interest.subscribe()
    }

    // ---- applying updates ----

    fn apply_clusters(
        &self,
        st: &mut State,
        source: &Source,
        u: &Update,
        ch: &mut Changes,
    ) -> Result<(), Nack> {
        // Compiled clusters only: the decoded protos (~3 KB each) are
        // dropped one by one. Kept for a 10,000-cluster response they were
        // 30 MB, which the allocator then held on to.
        let mut incoming: BTreeMap<String, (Cluster, Option<Sub>, Meta)> = BTreeMap::new();
        for r in &u.resources {
            // Unchanged bytes need no decoding: a SotW response repeats
            // every resource, and at 10,000 clusters that is most of the work.
            let unchanged = st
                .clusters
                .get(&r.name)
                .or_else(|| st.warming_clusters.get(&r.name))
                .is_some_and(|e| e.meta.body.value == r.body.value);
            if unchanged {
                continue;
            }
            let (proto, what) = checked::<PCluster>(r, "Cluster")?;
            if st.static_clusters.contains(&proto.name) {
                tracing::warn!(
                    "cds: cluster {} is a static cluster; CDS cannot change it",
                    proto.name
                );
                continue;
            }
            let compiled = Cluster::compile(&proto).map_err(|e| format!("{what}: {e}"))?;
            let eds = eds_of(&proto, &compiled, Some(source))?;
            let m = meta(pick(&r.version, &u.version), &r.body);
            incoming.insert(proto.name, (compiled, eds, m));
        }
        let removed = removed_by(u, st.clusters.keys().chain(st.warming_clusters.keys()));
        // Everything compiled: now change state.
        let mut entries = Vec::new();
        for (name, (mut compiled, eds, m)) in incoming {
            let old = st.clusters.get(&name).map(|e| e.compiled.clone());
            if let Some(old) = &old {
                if same_pools(old, &compiled) {
                    compiled.id = old.id;
                }
            }
            entries.push((name, compiled, eds, m, old));
        }
        for (name, mut compiled, eds, meta, old) in entries {
            let known = eds.as_ref().and(st.endpoints.get(&compiled.eds_service_name));
            if eds.is_some() && known.is_none() {
                // Warms until its endpoints arrive; an old version keeps serving.
                let deadline = eds.as_ref().and_then(Sub::deadline);
                st.warming_clusters.insert(
                    name,
                    ClusterEntry {
                        meta,
                        compiled: Arc::new(compiled),
                        eds,
                        deadline,
                    },
                );
                continue;
            }
            if let Some(e) = known {
                let prev = old.as_ref().map(|c| c.hosts.clone()).unwrap_or_default();
                compiled.hosts = Arc::new(
                    eds_hosts(&prev, &e.endpoints, compiled.lb)
                        .map_err(|err| format!("Cluster {name}: {err}"))?,
                );
            }
            let compiled = Arc::new(compiled);
            store()
                .counter(if old.is_some() {
                    "cluster_manager.cluster_modified"
                } else {
                    "cluster_manager.cluster_added"
                })
                .inc();
            st.warming_clusters.remove(&name);
            ch.clusters.push(compiled.clone());
            st.clusters.insert(
                name,
                ClusterEntry {
                    meta,
                    compiled,
                    eds,
                    deadline: None,
                },
            );
        }
        for name in removed {
            let was_active = st.clusters.remove(&name).is_some();
            st.warming_clusters.remove(&name);
            if was_active {
                store().counter("cluster_manager.cluster_removed").inc();
                ch.removed_clusters.push(name);
            }
        }
        st.init.cds_done = true;
        reindex(st);
        // Endpoint assignments no cluster uses any more are dropped (a
        // cluster that comes back subscribes again and gets them resent).
        let services: BTreeSet<String> = st
            .eds_index
            .keys()
            .cloned()
            .chain(st.static_eds.iter().map(|(_, _, s)| s.clone()))
            .collect();
        st.endpoints.retain(|name, _| services.contains(name));
        Ok(())
    }

    fn apply_endpoints(&self, st: &mut State, u: &Update, ch: &mut Changes) -> Result<(), Nack> {
        let mut incoming = Vec::new();
        for r in &u.resources {
            if st
                .endpoints
                .get(&r.name)
                .is_some_and(|e| e.meta.body.value == r.body.value)
            {
                continue;
            }
            // No cluster wants it (any more): a response sent before our
            // unsubscription arrived. Keeping it would keep it for ever.
            let wanted =
                st.eds_index.contains_key(&r.name) || st.static_eds.iter().any(|(_, _, s)| *s == r.name);
            if !wanted {
                continue;
            }
            let (cla, what) = checked::<ClusterLoadAssignment>(r, "ClusterLoadAssignment")?;
            let endpoints = endpoints_of(&cla).map_err(|e| format!("{what}: {e}"))?;
            // Envoy's EDS takes IP addresses only.
            if let Some(bad) = endpoints
                .iter()
                .find(|e| e.address.parse::<std::net::IpAddr>().is_err())
            {
                return Err(format!(
                    "{what}: endpoint address `{}` is not an IP address (EDS endpoints must be IPs)",
                    bad.address
                ));
            }
            incoming.push((
                cla.cluster_name.clone(),
                meta(pick(&r.version, &u.version), &r.body),
                endpoints,
            ));
        }
        let mut changed: BTreeSet<String> = BTreeSet::new();
        for (name, meta, endpoints) in incoming {
            st.endpoints
                .insert(name.clone(), EndpointEntry { meta, endpoints });
            changed.insert(name);
        }
        for name in &u.removed {
            if st.endpoints.remove(name).is_some() {
                changed.insert(name.clone());
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        // Active clusters (dynamic ones from the state, static EDS ones from
        // the snapshot) fed by a changed assignment.
        let snap = self.shared.load();
        let empty = Vec::new();
        let statics = st
            .static_eds
            .iter()
            .filter_map(|(name, _, _)| snap.clusters.get(name).cloned());
        let dynamic = changed
            .iter()
            .filter_map(|service| st.eds_index.get(service))
            .flatten()
            .filter_map(|name| st.clusters.get(name))
            .map(|e| e.compiled.clone());
        let fed: Vec<Arc<Cluster>> = dynamic
            .chain(statics)
            .filter(|c| c.discovery == Discovery::Eds && changed.contains(&c.eds_service_name))
            .collect();
        for c in fed {
            let endpoints = st
                .endpoints
                .get(&c.eds_service_name)
                .map(|e| &e.endpoints)
                .unwrap_or(&empty);
            let hosts =
                eds_hosts(&c.hosts, endpoints, c.lb).map_err(|e| format!("cluster {}: {e}", c.name))?;
            let updated = Arc::new(c.with_hosts(Arc::new(hosts)));
            if let Some(e) = st.clusters.get_mut(&c.name) {
                e.compiled = updated.clone();
            }
            ch.clusters.push(updated);
            st.init.static_eds.remove(&c.eds_service_name);
        }
        // Warming clusters waiting for one of them go active.
        let ready: Vec<String> = changed
            .iter()
            .filter_map(|service| st.eds_index.get(service))
            .flatten()
            .filter(|name| st.warming_clusters.contains_key(*name))
            .cloned()
            .collect();
        for name in ready {
            self.promote_cluster(st, &name, ch)?;
        }
        Ok(())
    }

    /// A warming cluster goes active, with the endpoints known for it (none
    /// when its initial fetch timed out).
    fn promote_cluster(&self, st: &mut State, name: &str, ch: &mut Changes) -> Result<(), Nack> {
        let Some(mut entry) = st.warming_clusters.remove(name) else {
            return Ok(());
        };
        let c = &entry.compiled;
        let prev: Arc<HostSet> = st
            .clusters
            .get(name)
            .map(|e| e.compiled.hosts.clone())
            .unwrap_or_default();
        let endpoints = st
            .endpoints
            .get(&c.eds_service_name)
            .map(|e| e.endpoints.clone())
            .unwrap_or_default();
        let hosts = eds_hosts(&prev, &endpoints, c.lb).map_err(|e| format!("cluster {name}: {e}"))?;
        let mut fresh = c.with_hosts(Arc::new(hosts));
        if let Some(old) = st.clusters.get(name) {
            if same_pools(&old.compiled, &fresh) {
                fresh.id = old.compiled.id;
            }
        }
        let existed = st.clusters.contains_key(name);
        store()
            .counter(if existed {
                "cluster_manager.cluster_modified"
            } else {
                "cluster_manager.cluster_added"
            })
            .inc();
        entry.compiled = Arc::new(fresh);
        entry.deadline = None;
        ch.clusters.push(entry.compiled.clone());
        st.clusters.insert(name.to_string(), entry);
        Ok(())
    }

    fn apply_listeners(
        &self,
        st: &mut State,
        source: &Source,
        u: &Update,
        ch: &mut Changes,
    ) -> Result<(), Nack> {
        let mut incoming = Vec::new();
        for r in &u.resources {
            let unchanged = st
                .listeners
                .get(&r.name)
                .or_else(|| st.warming_listeners.get(&r.name))
                .is_some_and(|e| e.meta.body.value == r.body.value);
            if unchanged {
                continue;
            }
            let (proto, what) = checked::<PListener>(r, "Listener")?;
            if self.static_listeners.contains(&proto.name) {
                return Err(format!(
                    "{what}: a static listener of that name exists; LDS cannot add or update it"
                ));
            }
            let compiled = Listener::compile(&proto).map_err(|e| format!("{what}: {e}"))?;
            let rds = rds_of(&compiled, Some(source))?;
            incoming.push((compiled, rds, meta(pick(&r.version, &u.version), &r.body)));
        }
        // Bind every new address before changing anything, so a port in use
        // rejects the whole update.
        let mut prepared = Vec::new();
        for (compiled, rds, meta) in incoming {
            // The address counts as the same when it is the running one's
            // bound address too (a port-0 listener named with the port it
            // got): binding a second socket set on that port and closing the
            // first would reset the connections waiting in its accept queue.
            let same_address = st.listeners.get(&compiled.name).is_some_and(|e| {
                e.compiled.address == compiled.address
                    || self.listeners.local_addr(&compiled.name) == Some(compiled.address)
            }) || (!st.switched && self.fallback_on(st, compiled.address).is_some());
            let bound = if same_address {
                None
            } else {
                match self.listeners.bind(&compiled) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        store().counter("listener_manager.listener_create_failure").inc();
                        return Err(format!("Listener {}: {e}", compiled.name));
                    }
                }
            };
            prepared.push((compiled, rds, meta, bound));
        }
        let removed = removed_by(u, st.listeners.keys().chain(st.warming_listeners.keys()));
        for (compiled, rds, meta, bound) in prepared {
            let deadline = rds.as_ref().and_then(|(s, _)| s.deadline());
            let entry = ListenerEntry {
                meta,
                compiled: Arc::new(compiled),
                rds,
                bound,
                deadline,
            };
            let name = entry.compiled.name.clone();
            st.warming_listeners.insert(name, entry);
        }
        for name in removed {
            st.warming_listeners.remove(&name);
            if st.listeners.remove(&name).is_some() {
                self.listeners.remove(&name);
                store().counter("listener_manager.listener_removed").inc();
                ch.listeners = true;
            }
        }
        self.promote_listeners(st, ch, false);
        st.init.lds_done = true;
        st.interest_stale = true;
        // Route configurations no listener uses any more are dropped.
        let used: BTreeSet<String> = st
            .statics
            .iter()
            .filter_map(|s| s.rds.as_ref())
            .chain(
                st.listeners
                    .values()
                    .chain(st.warming_listeners.values())
                    .filter_map(|e| e.rds.as_ref()),
            )
            .map(|(_, name)| name.clone())
            .collect();
        let unused: Vec<String> = st.routes.keys().filter(|n| !used.contains(*n)).cloned().collect();
        for name in unused {
            st.routes.remove(&name);
            ch.removed_routes.push(name);
        }
        Ok(())
    }

    /// Warming listeners whose routes are known (or whose wait is over, with
    /// `expired`) become active; they start accepting once the server is LIVE.
    fn promote_listeners(&self, st: &mut State, ch: &mut Changes, expired_only: bool) {
        let now = Instant::now();
        let ready: Vec<String> = st
            .warming_listeners
            .iter()
            .filter(|(_, e)| {
                let routes_known = e.rds.as_ref().is_none_or(|(_, n)| st.routes.contains_key(n));
                let expired = e.deadline.is_some_and(|d| d <= now);
                if expired_only {
                    expired && !routes_known
                } else {
                    routes_known || expired
                }
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in ready {
            let Some(mut entry) = st.warming_listeners.remove(&name) else {
                continue;
            };
            entry.deadline = None;
            let existed = st.listeners.contains_key(&name);
            store()
                .counter(if existed {
                    "listener_manager.listener_modified"
                } else {
                    "listener_manager.listener_added"
                })
                .inc();
            if st.init.live && st.switched {
                self.activate(&mut entry);
            }
            st.listeners.insert(name, entry);
            ch.listeners = true;
        }
    }

    /// Starts an active listener accepting (or hands its new config to the
    /// running one on the same address).
    fn activate(&self, entry: &mut ListenerEntry) {
        match entry.bound.take() {
            Some(bound) => {
                self.listeners.start(entry.compiled.clone(), bound);
                store().counter("listener_manager.listener_create_success").inc();
            }
            None => {
                if !self.listeners.update(entry.compiled.clone()) {
                    tracing::warn!("listener {}: no running listener to update", entry.compiled.name);
                }
            }
        }
    }

    fn apply_routes(&self, st: &mut State, u: &Update, ch: &mut Changes) -> Result<(), Nack> {
        let mut incoming = Vec::new();
        for r in &u.resources {
            if st
                .routes
                .get(&r.name)
                .is_some_and(|e| e.meta.body.value == r.body.value)
            {
                continue;
            }
            let (rc, what) = checked::<RouteConfiguration>(r, "RouteConfiguration")?;
            let table = RouteTable::compile(&rc).map_err(|e| format!("{what}: {e}"))?;
            incoming.push((
                rc.name.clone(),
                meta(pick(&r.version, &u.version), &r.body),
                Arc::new(table),
            ));
        }
        for (name, meta, table) in incoming {
            ch.routes.push((name.clone(), table.clone()));
            st.routes.insert(name, RouteEntry { meta, table });
        }
        for name in &u.removed {
            if st.routes.remove(name).is_some() {
                ch.removed_routes.push(name.clone());
            }
        }
        self.promote_listeners(st, ch, false);
        Ok(())
    }

    fn apply_one(&self, st: &mut State, source: &Source, u: &Update, ch: &mut Changes) -> Result<(), Nack> {
        match u.ty {
            ResourceType::Cluster => self.apply_clusters(st, source, u, ch),
            ResourceType::ClusterLoadAssignment => self.apply_endpoints(st, u, ch),
            ResourceType::Listener => self.apply_listeners(st, source, u, ch),
            ResourceType::RouteConfiguration => self.apply_routes(st, u, ch),
        }
    }

    // ---- the sidecar cache ----

    /// The cache for this node and server set, if there is a usable one.
    fn load_cache(
        &self,
        b: &crate::proto::envoy::config::bootstrap::v3::Bootstrap,
    ) -> Option<super::cache::Cached> {
        let sidecar = self.sidecar.as_ref()?;
        let dir = sidecar.cache.as_ref()?;
        let cached = match super::cache::load(dir) {
            Ok(Some(c)) => c,
            Ok(None) => {
                tracing::info!("xds cache: none in {} yet; serving the fallback", dir.display());
                return None;
            }
            Err(e) => {
                tracing::warn!("xds cache ignored: {e}; serving the fallback");
                return None;
            }
        };
        let node = b.node.as_ref().map(|n| n.id.clone()).unwrap_or_default();
        if cached.node_id != node || cached.servers != sidecar.servers {
            tracing::warn!(
                "xds cache ignored: it is for node `{}` and servers {:?}, this is node `{node}` with {:?}",
                cached.node_id,
                cached.servers,
                sidecar.servers
            );
            return None;
        }
        Some(cached)
    }

    /// Applies a cached config and serves it when it is complete; returns
    /// the versions held (for delta's `initial_resource_versions`).
    fn serve_cache(
        &self,
        st: &mut State,
        cached: super::cache::Cached,
    ) -> BTreeMap<ResourceType, BTreeMap<String, String>> {
        let mut versions = BTreeMap::new();
        let mut ch = Changes::default();
        for (ty, version, resources) in &cached.types {
            let u = Update {
                ty: *ty,
                version: version.clone(),
                resources: resources.clone(),
                removed: Vec::new(),
                state_of_the_world: true,
            };
            if let Err(e) = self.apply_one(st, &Source::Ads, &u, &mut ch) {
                tracing::warn!("xds cache ignored: {e}; serving the fallback");
                self.forget_dynamic(st);
                return BTreeMap::new();
            }
            st.versions.insert(*ty, version.clone());
            versions.insert(
                *ty,
                resources
                    .iter()
                    .map(|r| (r.name.clone(), r.version.clone()))
                    .collect(),
            );
        }
        if !Self::complete(st) {
            tracing::warn!("xds cache ignored: its config is incomplete; serving the fallback");
            self.forget_dynamic(st);
            return BTreeMap::new();
        }
        self.switch(st, Serving::Cache);
        versions
    }

    /// Drops every dynamic resource not yet published (a rejected cache).
    fn forget_dynamic(&self, st: &mut State) {
        st.clusters.clear();
        st.warming_clusters.clear();
        st.listeners.clear();
        st.warming_listeners.clear();
        st.routes.clear();
        st.endpoints.clear();
        st.versions.clear();
        st.init.cds_done = false;
        st.init.lds_done = false;
        reindex(st);
    }

    /// Writes the config in force to `--xds-cache` (sidecar mode).
    fn save_cache(&self, st: &State) {
        let Some(sidecar) = &self.sidecar else { return };
        let Some(dir) = &sidecar.cache else { return };
        let take = |ty: ResourceType, items: Vec<(&String, &Meta)>| {
            let resources = items
                .into_iter()
                .map(|(n, m)| super::Resource {
                    name: n.clone(),
                    version: m.version.clone(),
                    body: m.body.clone(),
                })
                .collect();
            (ty, st.versions.get(&ty).cloned().unwrap_or_default(), resources)
        };
        let cached = super::cache::Cached {
            node_id: self.node_id.clone(),
            servers: sidecar.servers.clone(),
            types: vec![
                take(
                    ResourceType::Cluster,
                    st.clusters.iter().map(|(n, e)| (n, &e.meta)).collect(),
                ),
                take(
                    ResourceType::ClusterLoadAssignment,
                    st.endpoints.iter().map(|(n, e)| (n, &e.meta)).collect(),
                ),
                take(
                    ResourceType::Listener,
                    st.listeners.iter().map(|(n, e)| (n, &e.meta)).collect(),
                ),
                take(
                    ResourceType::RouteConfiguration,
                    st.routes.iter().map(|(n, e)| (n, &e.meta)).collect(),
                ),
            ],
        };
        if let Err(e) = super::cache::save(dir, &cached) {
            tracing::warn!("xds cache: cannot write {}: {e}", dir.display());
        }
    }

    // ---- publishing, init and interest ----

    /// One publish: the current snapshot with `ch` applied. `rcu`, because
    /// DNS refreshes publish host sets concurrently.
    fn publish(&self, st: &State, ch: &Changes) {
        if ch.is_empty() || !st.switched {
            return;
        }
        let listeners: Option<Vec<Arc<Listener>>> = ch.listeners.then(|| {
            st.statics
                .iter()
                .map(|s| s.listener.clone())
                .chain(st.listeners.values().map(|e| e.compiled.clone()))
                .collect()
        });
        self.shared.rcu(|cur: &Arc<Snapshot>| {
            let mut clusters = cur.clusters.clone();
            for c in &ch.clusters {
                clusters.insert(c.name.clone(), c.clone());
            }
            for n in &ch.removed_clusters {
                clusters.remove(n);
            }
            let mut routes = cur.routes.clone();
            for (n, t) in &ch.routes {
                routes.insert(n.clone(), t.clone());
            }
            for n in &ch.removed_routes {
                routes.remove(n);
            }
            Arc::new(Snapshot {
                listeners: listeners.clone().unwrap_or_else(|| cur.listeners.clone()),
                clusters,
                routes,
                dns_resolver: cur.dns_resolver.clone(),
            })
        });
        for c in &ch.clusters {
            crate::runtime::dns::start_cluster(&self.shared, c.clone());
        }
        let st_gauges = store();
        st_gauges
            .gauge("cluster_manager.active_clusters")
            .set(self.shared.load().clusters.len() as i64);
        st_gauges
            .gauge("cluster_manager.warming_clusters")
            .set(st.warming_clusters.len() as i64);
        st_gauges
            .gauge("listener_manager.total_listeners_warming")
            .set(st.warming_listeners.len() as i64);
        st_gauges
            .gauge("listener_manager.total_listeners_active")
            .set((st.statics.len() + st.listeners.len()) as i64);
    }

    /// Moves initialization forward as far as it can go, and recomputes
    /// what every source must request.
    fn advance(&self, st: &mut State) {
        if !st.switched {
            if Self::complete(st) {
                if st.listeners.is_empty() && st.clusters.is_empty() {
                    // Nothing for this node (an unknown node id, an empty
                    // snapshot): replacing the fallback would leave nothing.
                    if !st.warned_empty {
                        st.warned_empty = true;
                        tracing::warn!(
                            "config source: the control plane has no listeners or clusters for node `{}`; the fallback keeps serving",
                            self.node_id
                        );
                    }
                } else {
                    self.switch(st, Serving::ControlPlane);
                }
            }
            self.update_interest(st);
            return;
        }
        let now = Instant::now();
        let init = &mut st.init;
        if !init.live {
            if !init.cds_done && init.cds_deadline.is_some_and(|d| d <= now) {
                tracing::warn!("cds: initial fetch timed out; going on without clusters");
                store().counter("cluster_manager.cds.init_fetch_timeout").inc();
                init.cds_done = true;
            }
            init.static_eds.retain(|_, d| d.is_none_or(|d| d > now));
            let clusters_ready =
                init.cds_done && init.static_eds.is_empty() && st.warming_clusters.is_empty();
            if clusters_ready && !init.lds_started {
                init.lds_started = true;
                st.interest_stale = true;
                match &self.lds {
                    Some(l) => init.lds_deadline = l.deadline(),
                    None => init.lds_done = true,
                }
            }
            if init.lds_started && !init.lds_done && init.lds_deadline.is_some_and(|d| d <= now) {
                tracing::warn!("lds: initial fetch timed out; going on without listeners");
                store().counter("listener_manager.lds.init_fetch_timeout").inc();
                init.lds_done = true;
            }
            let statics_ready = init.static_rds_deadline.is_none_or(|d| d <= now)
                || st
                    .statics
                    .iter()
                    .all(|s| s.rds.as_ref().is_none_or(|(_, n)| st.routes.contains_key(n)));
            let init = &st.init;
            if clusters_ready && init.lds_done && st.warming_listeners.is_empty() && statics_ready {
                self.go_live(st);
            }
        }
        self.update_interest(st);
    }

    /// The control plane's config is complete and warm: clusters with their
    /// endpoints, listeners with their routes.
    fn complete(st: &State) -> bool {
        st.init.cds_done
            && st.init.lds_done
            && st.warming_clusters.is_empty()
            && st.warming_listeners.is_empty()
    }

    /// The fallback listener bound on `addr` (sidecar mode).
    fn fallback_on(&self, st: &State, addr: std::net::SocketAddr) -> Option<String> {
        st.statics
            .iter()
            .find(|s| s.listener.address == addr || self.listeners.local_addr(&s.listener.name) == Some(addr))
            .map(|s| s.listener.name.clone())
    }

    /// Sidecar mode: replaces the fallback with the accumulated dynamic
    /// config in one publish. Listeners on a fallback address take over its
    /// sockets (its connections drain); other fallback listeners drain.
    fn switch(&self, st: &mut State, to: Serving) {
        st.switched = true;
        let listeners: Vec<Arc<Listener>> = st.listeners.values().map(|e| e.compiled.clone()).collect();
        let clusters: crate::model::ByName<Arc<Cluster>> = st
            .clusters
            .iter()
            .map(|(n, e)| (n.clone(), e.compiled.clone()))
            .collect();
        let routes: crate::model::ByName<Arc<RouteTable>> = st
            .routes
            .iter()
            .map(|(n, e)| (n.clone(), e.table.clone()))
            .collect();
        self.shared.rcu(|cur: &Arc<Snapshot>| {
            Arc::new(Snapshot {
                listeners: listeners.clone(),
                clusters: clusters.clone(),
                routes: routes.clone(),
                dns_resolver: cur.dns_resolver.clone(),
            })
        });
        let takeovers: Vec<(String, String)> = st
            .listeners
            .values()
            .filter(|e| e.bound.is_none())
            .filter_map(|e| {
                self.fallback_on(st, e.compiled.address)
                    .map(|f| (f, e.compiled.name.clone()))
            })
            .collect();
        let statics = std::mem::take(&mut st.statics);
        for s in &statics {
            if !takeovers.iter().any(|(f, _)| *f == s.listener.name) {
                self.listeners.remove(&s.listener.name);
            }
        }
        for (fallback, name) in &takeovers {
            if let Some(e) = st.listeners.get(name) {
                self.listeners.take_over(fallback, e.compiled.clone());
            }
        }
        let names: Vec<String> = st.listeners.keys().cloned().collect();
        for name in names {
            if takeovers.iter().any(|(_, n)| *n == name) {
                continue;
            }
            if let Some(mut e) = st.listeners.remove(&name) {
                self.activate(&mut e);
                st.listeners.insert(name, e);
            }
        }
        for c in clusters.values() {
            crate::runtime::dns::start_cluster(&self.shared, c.clone());
        }
        st.static_clusters.clear();
        st.static_eds.clear();
        st.interest_stale = true;
        st.serving = to;
        st.serving_since = Some(SystemTime::now());
        tracing::info!(
            "config source: now serving the {} config ({} listeners, {} clusters, {} route configs)",
            to.name(),
            st.listeners.len(),
            st.clusters.len(),
            st.routes.len()
        );
        self.publish_serving(st);
        store()
            .gauge("cluster_manager.active_clusters")
            .set(clusters.len() as i64);
        store()
            .gauge("listener_manager.total_listeners_active")
            .set(st.listeners.len() as i64);
    }

    /// `config_source.*` gauges: 1 for the source in force.
    fn publish_serving(&self, st: &State) {
        for s in [Serving::Fallback, Serving::Cache, Serving::ControlPlane] {
            store()
                .gauge(&format!("config_source.{}", s.name()))
                .set(i64::from(st.serving == s));
        }
    }

    /// `/config_source`: what serves, from which servers, the versions per
    /// type, and since when.
    pub fn config_source(&self) -> serde_json::Value {
        let st = self.lock();
        let connected = self
            .connected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|v| *v);
        let versions: serde_json::Map<String, serde_json::Value> = st
            .versions
            .iter()
            .map(|(t, v)| (t.short().to_string(), serde_json::Value::from(v.clone())))
            .collect();
        serde_json::json!({
            "source": st.serving.name(),
            "servers": self.sidecar.as_ref().map(|s| s.servers.clone()).unwrap_or_default(),
            "connected": connected,
            "versions": versions,
            "since": crate::admin::config_dump::timestamp(st.serving_since.unwrap_or(SystemTime::UNIX_EPOCH)),
        })
    }

    fn go_live(&self, st: &mut State) {
        st.init.live = true;
        for s in &mut st.statics {
            if let Some(bound) = s.bound.take() {
                self.listeners.start(s.listener.clone(), bound);
            }
        }
        let names: Vec<String> = st.listeners.keys().cloned().collect();
        for name in names {
            if let Some(mut e) = st.listeners.remove(&name) {
                self.activate(&mut e);
                st.listeners.insert(name, e);
            }
        }
        tracing::info!("all dependencies initialized: the server is LIVE");
        crate::admin::set_server_state(crate::admin::ServerState::Live);
    }

    fn update_interest(&self, st: &mut State) {
        // Only cluster and listener changes (and the start of LDS) change
        // what is subscribed; EDS and RDS updates skip this O(config) pass.
        if !std::mem::take(&mut st.interest_stale) {
            return;
        }
        let mut interest = Interest::new();
        let mut want = |source: &Source, ty: ResourceType, name: Option<&str>| {
            let subs = interest.entry(source.clone()).or_default();
            match name {
                None => {
                    subs.insert(ty, None);
                }
                Some(n) => {
                    if let Some(set) = subs.entry(ty).or_insert_with(|| Some(BTreeSet::new())) {
                        set.insert(n.to_string());
                    }
                }
            }
        };
        if let Some(c) = &self.cds {
            want(&c.source, ResourceType::Cluster, None);
        }
        if let (Some(l), true) = (&self.lds, st.init.lds_started) {
            want(&l.source, ResourceType::Listener, None);
        }
        for e in st.clusters.values().chain(st.warming_clusters.values()) {
            if let Some(eds) = &e.eds {
                want(
                    &eds.source,
                    ResourceType::ClusterLoadAssignment,
                    Some(&e.compiled.eds_service_name),
                );
            }
        }
        for (_, sub, service) in &st.static_eds {
            want(&sub.source, ResourceType::ClusterLoadAssignment, Some(service));
        }
        for (sub, name) in st.statics.iter().filter_map(|s| s.rds.as_ref()).chain(
            st.listeners
                .values()
                .chain(st.warming_listeners.values())
                .filter_map(|e| e.rds.as_ref()),
        ) {
            want(&sub.source, ResourceType::RouteConfiguration, Some(name));
        }
        self.interest.send_if_modified(|cur| {
            if *cur == interest {
                false
            } else {
                *cur = interest;
                true
            }
        });
    }

    /// Warming deadlines that passed: clusters go active without endpoints,
    /// listeners start without their routes, initialization moves on.
    fn on_tick(&self) {
        let mut st = self.lock();
        let now = Instant::now();
        let mut ch = Changes::default();
        let expired: Vec<String> = st
            .warming_clusters
            .iter()
            .filter(|(_, e)| e.deadline.is_some_and(|d| d <= now))
            .map(|(n, _)| n.clone())
            .collect();
        for name in expired {
            tracing::warn!("cluster {name}: no endpoints arrived in time; using it without hosts");
            if let Err(e) = self.promote_cluster(&mut st, &name, &mut ch) {
                tracing::warn!("{e}");
            }
        }
        self.promote_listeners(&mut st, &mut ch, true);
        self.publish(&st, &ch);
        if !st.init.live || !ch.is_empty() {
            self.advance(&mut st);
        }
    }

    // ---- what the admin shows ----

    /// Accepted resources of one type, for `/config_dump`: (name, meta,
    /// warming).
    pub fn dump(&self, ty: ResourceType) -> Vec<(String, Meta, bool)> {
        let st = self.lock();
        let mut out = Vec::new();
        match ty {
            ResourceType::Cluster => {
                out.extend(
                    st.clusters
                        .iter()
                        .map(|(n, e)| (n.clone(), e.meta.clone(), false)),
                );
                out.extend(
                    st.warming_clusters
                        .iter()
                        .map(|(n, e)| (n.clone(), e.meta.clone(), true)),
                );
            }
            ResourceType::Listener => {
                out.extend(
                    st.listeners
                        .iter()
                        .map(|(n, e)| (n.clone(), e.meta.clone(), false)),
                );
                out.extend(
                    st.warming_listeners
                        .iter()
                        .map(|(n, e)| (n.clone(), e.meta.clone(), true)),
                );
            }
            ResourceType::RouteConfiguration => {
                out.extend(st.routes.iter().map(|(n, e)| (n.clone(), e.meta.clone(), false)));
            }
            ResourceType::ClusterLoadAssignment => {
                out.extend(
                    st.endpoints
                        .iter()
                        .map(|(n, e)| (n.clone(), e.meta.clone(), false)),
                );
            }
        }
        out
    }

    /// The last accepted `version_info` of a type.
    pub fn version(&self, ty: ResourceType) -> Option<String> {
        self.lock().versions.get(&ty).cloned()
    }

    /// The last rejected update of a type: (message, when).
    pub fn last_error(&self, ty: ResourceType) -> Option<(String, SystemTime)> {
        self.lock().errors.get(&ty).cloned()
    }

    fn record(
        &self,
        st: &mut State,
        ty: ResourceType,
        result: &Result<(), Nack>,
        version: &str,
        took: Option<Duration>,
        names: &[&str],
    ) {
        let stats: Vec<Arc<UpdateStats>> = if ty == ResourceType::ClusterLoadAssignment && !names.is_empty() {
            let mut stats = Vec::with_capacity(names.len());
            for name in names {
                if !st.eds_update_stats.contains_key(*name) {
                    let resolved = update_stats_for(st, ty, &[name]);
                    st.eds_update_stats.insert(name.to_string(), resolved);
                }
                stats.extend(st.eds_update_stats[*name].iter().cloned());
            }
            stats
        } else {
            update_stats_for(st, ty, names)
        };
        for s in &stats {
            s.attempt.inc();
        }
        match result {
            Ok(()) => {
                for s in &stats {
                    s.success.inc();
                    if let Some(took) = took {
                        // Envoy's `update_duration` (ms): validate, compile, publish.
                        s.duration.record(took.as_millis() as u64);
                    }
                }
                st.versions.insert(ty, version.to_string());
            }
            Err(e) => {
                for s in &stats {
                    s.rejected.inc();
                }
                st.errors.insert(ty, (e.clone(), SystemTime::now()));
            }
        }
    }
}

impl Sink for Manager {
    fn apply(&self, source: &Source, update: Update) -> Result<(), String> {
        let started = std::time::Instant::now();
        let mut st = self.lock();
        let mut ch = Changes::default();
        let result = self.apply_one(&mut st, source, &update, &mut ch);
        let was_switched = st.switched;
        if result.is_ok() {
            // The version first: the cache written below must carry it.
            st.versions.insert(update.ty, update.version.clone());
            self.publish(&st, &ch);
            self.advance(&mut st);
            if was_switched && self.sidecar.is_some() && st.serving != Serving::ControlPlane {
                // The cache was serving; the control plane now speaks.
                st.serving = Serving::ControlPlane;
                st.serving_since = Some(SystemTime::now());
                tracing::info!("config source: now serving the control_plane config");
                self.publish_serving(&st);
            }
            if st.switched && self.sidecar.is_some() {
                self.save_cache(&st);
            }
        }
        self.record(
            &mut st,
            update.ty,
            &result,
            &update.version,
            Some(started.elapsed()),
            &update
                .resources
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
        );
        match &result {
            Ok(()) => {
                tracing::info!(
                    "{}: applied version {} ({} resources, {} removed) in {:?}",
                    update.ty.short(),
                    update.version,
                    update.resources.len(),
                    update.removed.len(),
                    started.elapsed()
                );
            }
            Err(e) => tracing::warn!("{}: rejected version {}: {e}", update.ty.short(), update.version),
        }
        drop(st);
        let bytes: usize = update.resources.iter().map(|r| r.body.value.len()).sum();
        if bytes >= crate::allocator::LARGE_UPDATE_BYTES {
            crate::allocator::release_soon();
        }
        result
    }

    fn rejected(&self, _source: &Source, ty: ResourceType, error: &str) {
        let mut st = self.lock();
        let result = Err(error.to_string());
        self.record(&mut st, ty, &result, "", None, &[]);
        tracing::warn!("{}: rejected: {error}", ty.short());
    }

    fn stream_state(&self, source: &Source, connected: bool) {
        let mut c = self.connected.lock().unwrap_or_else(|e| e.into_inner());
        c.insert(source.clone(), connected);
        let any = c.values().any(|v| *v);
        store().gauge("control_plane.connected_state").set(i64::from(any));
        if !connected {
            // Envoy's `update_failure`: the subscription's stream failed.
            for (sub, prefix) in [
                (&self.cds, "cluster_manager.cds."),
                (&self.lds, "listener_manager.lds."),
            ] {
                if sub.as_ref().is_some_and(|s| s.source == *source) {
                    store().counter(&format!("{prefix}update_failure")).inc();
                }
            }
        }
    }
}

/// Starts one driver per source as sources appear in the interest.
async fn supervise(manager: Arc<Manager>, ctx: Result<super::client::ClientContext, String>) {
    let mut interest = manager.interest();
    let mut started: BTreeSet<Source> = BTreeSet::new();
    loop {
        let sources: Vec<Source> = interest.borrow_and_update().keys().cloned().collect();
        for source in sources {
            if !started.insert(source.clone()) {
                continue;
            }
            let sink: Arc<dyn Sink> = manager.clone();
            let rx = manager.interest();
            match &source {
                Source::Path { .. } => {
                    tokio::spawn(super::files::run(source.clone(), sink, rx));
                }
                Source::Ads | Source::Grpc { .. } => match &ctx {
                    Ok(ctx) => {
                        tokio::spawn(super::client::run(source.clone(), ctx.clone(), sink, rx));
                    }
                    Err(e) => tracing::error!("xDS: {e}"),
                },
            }
        }
        if interest.changed().await.is_err() {
            return;
        }
    }
}

/// Checks warming deadlines until the manager is gone.
async fn tick(manager: std::sync::Weak<Manager>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(m) = manager.upgrade() else { return };
        m.on_tick();
    }
}

/// Stats names per RDS route config, used by the HCM's `rds` stats.
pub fn rds_stat_prefix(stat_prefix: &str, route: &str) -> String {
    format!("http.{}.rds.{}.", sanitize(stat_prefix), sanitize(route))
}
