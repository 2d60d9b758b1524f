//! `/clusters` and `/listeners`, text and JSON, in Envoy's formats
//! (`source/server/admin/clusters_handler.cc`, `listeners_handler.cc`).

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use super::{pretty_json, AdminState, Query, Reply};
use crate::model::cluster::{Cluster, Host};
use crate::proto::envoy::config::cluster::v3::Cluster as PCluster;

/// Envoy's circuit-breaker defaults when a cluster sets none.
const DEFAULT_LIMITS: Limits = Limits {
    max_connections: 1024,
    max_pending_requests: 1024,
    max_requests: 1024,
    max_retries: 3,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

/// What `/clusters` shows that the runtime model does not keep.
struct Meta {
    observability_name: String,
    /// DEFAULT, HIGH.
    limits: [Limits; 2],
    added_via_api: bool,
    /// `eds_cluster_config.service_name`, when set.
    eds_service_name: String,
}

fn proto_cluster<'a>(state: &'a AdminState, name: &str) -> Option<&'a PCluster> {
    state
        .bootstrap
        .static_resources
        .as_ref()?
        .clusters
        .iter()
        .find(|c| c.name == name)
}

fn meta(state: &AdminState, c: &Cluster) -> Meta {
    let p = proto_cluster(state, &c.name);
    let mut limits = [DEFAULT_LIMITS; 2];
    if let Some(cb) = p.and_then(|p| p.circuit_breakers.as_ref()) {
        for t in &cb.thresholds {
            let Some(slot) = limits.get_mut(usize::try_from(t.priority).unwrap_or(0)) else {
                continue;
            };
            let pick = |v: &Option<u32>, d: u32| v.unwrap_or(d);
            *slot = Limits {
                max_connections: pick(&t.max_connections, DEFAULT_LIMITS.max_connections),
                max_pending_requests: pick(&t.max_pending_requests, DEFAULT_LIMITS.max_pending_requests),
                max_requests: pick(&t.max_requests, DEFAULT_LIMITS.max_requests),
                max_retries: pick(&t.max_retries, DEFAULT_LIMITS.max_retries),
            };
        }
    }
    Meta {
        observability_name: p
            .map(|p| p.alt_stat_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| c.name.clone()),
        limits,
        // Only static clusters exist until CDS lands.
        added_via_api: p.is_none(),
        eds_service_name: match p {
            Some(p) => p
                .eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.clone())
                .unwrap_or_default(),
            // The model defaults it to the cluster name.
            None if c.eds_service_name != c.name => c.eds_service_name.clone(),
            None => String::new(),
        },
    }
}

/// Per-host stats as Envoy lists them: `(name, value, is_gauge)`, sorted by name.
fn host_stats(h: &Host) -> [(&'static str, u64, bool); 8] {
    let s = &h.stats;
    let v = |c: &crate::stats::Counter| c.value();
    let g = |g: &crate::stats::Gauge| g.value().max(0) as u64;
    [
        ("cx_active", g(&s.cx_active), true),
        ("cx_connect_fail", v(&s.cx_connect_fail), false),
        ("cx_total", v(&s.cx_total), false),
        ("rq_active", g(&s.rq_active), true),
        ("rq_error", v(&s.rq_error), false),
        ("rq_success", v(&s.rq_success), false),
        ("rq_timeout", v(&s.rq_timeout), false),
        ("rq_total", v(&s.rq_total), false),
    ]
}

/// The host's `hostname` as Envoy reports it: the endpoint's hostname or
/// the DNS name it was resolved from, empty for a plain IP endpoint (the
/// model keeps the IP text there for `auto_host_rewrite`).
pub fn hostname(h: &Host) -> &str {
    match h.hostname.parse::<std::net::IpAddr>() {
        Ok(ip) if ip == h.addr.ip() => "",
        _ => &h.hostname,
    }
}

fn sorted_clusters(state: &AdminState) -> Vec<std::sync::Arc<Cluster>> {
    let snap = state.shared.load();
    let mut v: Vec<_> = snap.clusters.values().cloned().collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// `GET /clusters[?format=json]`.
pub fn clusters(state: &AdminState, q: &Query) -> Reply {
    if q.get("format") == Some("json") {
        Reply::json(200, pretty_json(&clusters_json(state)))
    } else {
        Reply::text(200, clusters_text(state))
    }
}

pub fn clusters_text(state: &AdminState) -> String {
    let mut out = String::new();
    for c in sorted_clusters(state) {
        let m = meta(state, &c);
        let n = &c.name;
        let _ = writeln!(out, "{n}::observability_name::{}", m.observability_name);
        for (prio, l) in ["default", "high"].iter().zip(m.limits.iter()) {
            let _ = writeln!(
                out,
                "{n}::{prio}_priority::max_connections::{}",
                l.max_connections
            );
            let _ = writeln!(
                out,
                "{n}::{prio}_priority::max_pending_requests::{}",
                l.max_pending_requests
            );
            let _ = writeln!(out, "{n}::{prio}_priority::max_requests::{}", l.max_requests);
            let _ = writeln!(out, "{n}::{prio}_priority::max_retries::{}", l.max_retries);
        }
        let _ = writeln!(out, "{n}::added_via_api::{}", m.added_via_api);
        if !m.eds_service_name.is_empty() {
            let _ = writeln!(out, "{n}::eds_service_name::{}", m.eds_service_name);
        }
        for h in &c.hosts.all {
            let a = h.addr;
            for (stat, v, _) in host_stats(h) {
                let _ = writeln!(out, "{n}::{a}::{stat}::{v}");
            }
            let _ = writeln!(out, "{n}::{a}::hostname::{}", hostname(h));
            // No active health checking or outlier detection yet.
            let _ = writeln!(out, "{n}::{a}::health_flags::healthy");
            let _ = writeln!(out, "{n}::{a}::weight::{}", h.weight);
            let l = &h.locality;
            let _ = writeln!(out, "{n}::{a}::region::{}", l.region);
            let _ = writeln!(out, "{n}::{a}::zone::{}", l.zone);
            let _ = writeln!(out, "{n}::{a}::sub_zone::{}", l.sub_zone);
            let _ = writeln!(out, "{n}::{a}::canary::false");
            let _ = writeln!(out, "{n}::{a}::priority::{}", h.priority);
            let _ = writeln!(out, "{n}::{a}::success_rate::-1");
            let _ = writeln!(out, "{n}::{a}::local_origin_success_rate::-1");
        }
    }
    out
}

fn socket_address(addr: std::net::SocketAddr) -> Value {
    let mut sa = Map::new();
    sa.insert("address".into(), Value::from(addr.ip().to_string()));
    if addr.port() != 0 {
        sa.insert("port_value".into(), Value::from(addr.port()));
    }
    json!({ "socket_address": sa })
}

/// `envoy.admin.v3.Clusters` in proto3 JSON (default values omitted,
/// uint64 as strings, fields in proto order).
pub fn clusters_json(state: &AdminState) -> Value {
    let mut statuses = Vec::new();
    for c in sorted_clusters(state) {
        let m = meta(state, &c);
        let mut cs = Map::new();
        cs.insert("name".into(), Value::from(c.name.clone()));
        if m.added_via_api {
            cs.insert("added_via_api".into(), Value::Bool(true));
        }
        let hosts: Vec<Value> = c
            .hosts
            .all
            .iter()
            .map(|h| {
                let mut hs = Map::new();
                hs.insert("address".into(), socket_address(h.addr));
                let mut counters = Vec::new();
                let mut gauges = Vec::new();
                for (name, v, gauge) in host_stats(h) {
                    let mut s = Map::new();
                    if gauge {
                        s.insert("type".into(), Value::from("GAUGE"));
                    }
                    if v != 0 {
                        s.insert("value".into(), Value::from(v.to_string()));
                    }
                    s.insert("name".into(), Value::from(name));
                    if gauge {
                        gauges.push(Value::Object(s));
                    } else {
                        counters.push(Value::Object(s));
                    }
                }
                counters.extend(gauges);
                hs.insert("stats".into(), Value::Array(counters));
                hs.insert("health_status".into(), json!({"eds_health_status": "HEALTHY"}));
                if h.weight != 0 {
                    hs.insert("weight".into(), Value::from(h.weight));
                }
                if !hostname(h).is_empty() {
                    hs.insert("hostname".into(), Value::from(hostname(h)));
                }
                if h.priority != 0 {
                    hs.insert("priority".into(), Value::from(h.priority));
                }
                // Envoy's JSON leaves default (empty) fields out.
                let mut locality = serde_json::Map::new();
                for (k, v) in [
                    ("region", &h.locality.region),
                    ("zone", &h.locality.zone),
                    ("sub_zone", &h.locality.sub_zone),
                ] {
                    if !v.is_empty() {
                        locality.insert(k.into(), Value::from(v.as_str()));
                    }
                }
                hs.insert("locality".into(), Value::Object(locality));
                Value::Object(hs)
            })
            .collect();
        if !hosts.is_empty() {
            cs.insert("host_statuses".into(), Value::Array(hosts));
        }
        let thresholds: Vec<Value> = m
            .limits
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut t = Map::new();
                if i == 1 {
                    t.insert("priority".into(), Value::from("HIGH"));
                }
                t.insert("max_connections".into(), Value::from(l.max_connections));
                t.insert("max_pending_requests".into(), Value::from(l.max_pending_requests));
                t.insert("max_requests".into(), Value::from(l.max_requests));
                t.insert("max_retries".into(), Value::from(l.max_retries));
                Value::Object(t)
            })
            .collect();
        cs.insert("circuit_breakers".into(), json!({ "thresholds": thresholds }));
        cs.insert("observability_name".into(), Value::from(m.observability_name));
        if !m.eds_service_name.is_empty() {
            cs.insert("eds_service_name".into(), Value::from(m.eds_service_name));
        }
        statuses.push(Value::Object(cs));
    }
    let mut root = Map::new();
    if !statuses.is_empty() {
        root.insert("cluster_statuses".into(), Value::Array(statuses));
    }
    Value::Object(root)
}

/// `GET /listeners[?format=json]`: each listener with its bound address.
pub fn listeners(state: &AdminState, q: &Query) -> Reply {
    if q.get("format") == Some("json") {
        let statuses: Vec<Value> = state
            .listeners
            .bound()
            .iter()
            .map(|(name, addr)| json!({"name": name, "local_address": socket_address(*addr)}))
            .collect();
        let mut root = Map::new();
        if !statuses.is_empty() {
            root.insert("listener_statuses".into(), Value::Array(statuses));
        }
        return Reply::json(200, pretty_json(&Value::Object(root)));
    }
    let mut out = String::new();
    for (name, addr) in &state.listeners.bound() {
        let _ = writeln!(out, "{name}::{addr}");
    }
    Reply::text(200, out)
}
