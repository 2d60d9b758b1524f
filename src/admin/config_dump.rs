//! `/config_dump`: `envoy.admin.v3.ConfigDump` in proto3 JSON, with the
//! dumps in Envoy's order (its config tracker's keys, sorted: bootstrap,
//! clusters, endpoint (with `?include_eds`), listeners, route_scopes,
//! routes, secrets) and `?resource=`, `?mask=`, `?name_regex=`.
//!
//! Dynamic sections (and `version_info`) come from the xDS manager when
//! there is one; empty sections are absent (proto3 JSON omits empty
//! fields). Secrets are not redacted because legate has none yet.

use regex::Regex;
use serde_json::{json, Map, Value};

use super::{pretty_json, AdminState, Query, Reply};

const ADMIN: &str = "type.googleapis.com/envoy.admin.v3.";

/// A repeated resource field of a dump: its element type and the field of
/// the element that holds the resource as an `Any`.
struct ResourceField {
    name: &'static str,
    element: &'static str,
    any_field: Option<&'static str>,
    element_fields: &'static [&'static str],
}

/// One dump message: its type, its fields (`repeated` flag) and resource fields.
struct DumpType {
    type_name: &'static str,
    fields: &'static [(&'static str, bool)],
}

const STATIC_EL: &[&str] = &["last_updated"];

static RESOURCE_FIELDS: &[ResourceField] = &[
    ResourceField {
        name: "static_clusters",
        element: "ClustersConfigDump.StaticCluster",
        any_field: Some("cluster"),
        element_fields: STATIC_EL,
    },
    ResourceField {
        name: "dynamic_active_clusters",
        element: "ClustersConfigDump.DynamicCluster",
        any_field: Some("cluster"),
        element_fields: &["version_info", "last_updated", "error_state", "client_status"],
    },
    ResourceField {
        name: "dynamic_warming_clusters",
        element: "ClustersConfigDump.DynamicCluster",
        any_field: Some("cluster"),
        element_fields: &["version_info", "last_updated", "error_state", "client_status"],
    },
    ResourceField {
        name: "static_endpoint_configs",
        element: "EndpointsConfigDump.StaticEndpointConfig",
        any_field: Some("endpoint_config"),
        element_fields: STATIC_EL,
    },
    ResourceField {
        name: "dynamic_endpoint_configs",
        element: "EndpointsConfigDump.DynamicEndpointConfig",
        any_field: Some("endpoint_config"),
        element_fields: &["version_info", "last_updated", "error_state", "client_status"],
    },
    ResourceField {
        name: "static_listeners",
        element: "ListenersConfigDump.StaticListener",
        any_field: Some("listener"),
        element_fields: STATIC_EL,
    },
    ResourceField {
        name: "dynamic_listeners",
        element: "ListenersConfigDump.DynamicListener",
        any_field: None,
        element_fields: &[
            "name",
            "active_state",
            "warming_state",
            "draining_state",
            "error_state",
            "client_status",
        ],
    },
    ResourceField {
        name: "inline_scoped_route_configs",
        element: "ScopedRoutesConfigDump.InlineScopedRouteConfigs",
        any_field: None,
        element_fields: &["name", "scoped_route_configs", "last_updated"],
    },
    ResourceField {
        name: "dynamic_scoped_route_configs",
        element: "ScopedRoutesConfigDump.DynamicScopedRouteConfigs",
        any_field: None,
        element_fields: &[
            "name",
            "version_info",
            "scoped_route_configs",
            "last_updated",
            "error_state",
            "client_status",
        ],
    },
    ResourceField {
        name: "static_route_configs",
        element: "RoutesConfigDump.StaticRouteConfig",
        any_field: Some("route_config"),
        element_fields: STATIC_EL,
    },
    ResourceField {
        name: "dynamic_route_configs",
        element: "RoutesConfigDump.DynamicRouteConfig",
        any_field: Some("route_config"),
        element_fields: &["version_info", "last_updated", "error_state", "client_status"],
    },
    ResourceField {
        name: "static_secrets",
        element: "SecretsConfigDump.StaticSecret",
        any_field: Some("secret"),
        element_fields: &["name", "last_updated"],
    },
    ResourceField {
        name: "dynamic_active_secrets",
        element: "SecretsConfigDump.DynamicSecret",
        any_field: Some("secret"),
        element_fields: &[
            "name",
            "version_info",
            "last_updated",
            "error_state",
            "client_status",
        ],
    },
    ResourceField {
        name: "dynamic_warming_secrets",
        element: "SecretsConfigDump.DynamicSecret",
        any_field: Some("secret"),
        element_fields: &[
            "name",
            "version_info",
            "last_updated",
            "error_state",
            "client_status",
        ],
    },
];

static BOOTSTRAP_DUMP: DumpType = DumpType {
    type_name: "BootstrapConfigDump",
    fields: &[("bootstrap", false), ("last_updated", false)],
};
static CLUSTERS_DUMP: DumpType = DumpType {
    type_name: "ClustersConfigDump",
    fields: &[
        ("version_info", false),
        ("static_clusters", true),
        ("dynamic_active_clusters", true),
        ("dynamic_warming_clusters", true),
    ],
};
static ENDPOINTS_DUMP: DumpType = DumpType {
    type_name: "EndpointsConfigDump",
    fields: &[
        ("static_endpoint_configs", true),
        ("dynamic_endpoint_configs", true),
    ],
};
static LISTENERS_DUMP: DumpType = DumpType {
    type_name: "ListenersConfigDump",
    fields: &[
        ("version_info", false),
        ("static_listeners", true),
        ("dynamic_listeners", true),
    ],
};
static SCOPED_ROUTES_DUMP: DumpType = DumpType {
    type_name: "ScopedRoutesConfigDump",
    fields: &[
        ("inline_scoped_route_configs", true),
        ("dynamic_scoped_route_configs", true),
    ],
};
static ROUTES_DUMP: DumpType = DumpType {
    type_name: "RoutesConfigDump",
    fields: &[("static_route_configs", true), ("dynamic_route_configs", true)],
};
static SECRETS_DUMP: DumpType = DumpType {
    type_name: "SecretsConfigDump",
    fields: &[
        ("static_secrets", true),
        ("dynamic_active_secrets", true),
        ("dynamic_warming_secrets", true),
    ],
};

struct Dump {
    ty: &'static DumpType,
    body: Map<String, Value>,
}

/// RFC 3339 UTC with milliseconds, as protobuf prints a `Timestamp`.
pub fn timestamp(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    chrono::DateTime::from_timestamp(d.as_secs() as i64, d.subsec_nanos())
        .map(|dt| dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// `{"@type": type, ...fields}` with `@type` first.
fn with_type(type_url: &str, v: &Value) -> Value {
    let mut m = Map::new();
    m.insert("@type".into(), Value::from(type_url));
    if let Some(o) = v.as_object() {
        for (k, v) in o {
            m.insert(k.clone(), v.clone());
        }
    }
    Value::Object(m)
}

fn name_ok(re: Option<&Regex>, v: &Value, key: &str) -> bool {
    re.is_none_or(|re| re.is_match(v.get(key).and_then(|n| n.as_str()).unwrap_or("")))
}

fn arr(v: &Value, pointer: &str) -> Vec<Value> {
    v.pointer(pointer)
        .and_then(|a| a.as_array())
        .cloned()
        .unwrap_or_default()
}

fn put(m: &mut Map<String, Value>, key: &str, items: Vec<Value>) {
    if !items.is_empty() {
        m.insert(key.into(), Value::Array(items));
    }
}

/// Inline `route_config`s of the HTTP connection managers of `listeners`.
fn inline_routes(listeners: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for l in listeners {
        let mut chains = arr(l, "/filter_chains");
        if let Some(d) = l.get("default_filter_chain") {
            chains.push(d.clone());
        }
        for chain in chains {
            for f in arr(&chain, "/filters") {
                let Some(tc) = f.get("typed_config") else { continue };
                let is_hcm = tc
                    .get("@type")
                    .and_then(|t| t.as_str())
                    .is_some_and(|t| t.ends_with(".HttpConnectionManager"));
                if let (true, Some(rc)) = (is_hcm, tc.get("route_config")) {
                    out.push(rc.clone());
                }
            }
        }
    }
    out
}

/// `ClusterLoadAssignment`s of the live clusters (`?include_eds`), as
/// Envoy's `dumpEndpointConfigs` builds them from the hosts.
fn endpoint_configs(state: &AdminState, re: Option<&Regex>) -> Vec<Value> {
    let snap = state.shared.load();
    let mut clusters: Vec<_> = snap.clusters.values().cloned().collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = Vec::new();
    for c in clusters {
        let name = if c.eds_service_name.is_empty() {
            c.name.clone()
        } else {
            c.eds_service_name.clone()
        };
        if re.is_some_and(|re| !re.is_match(&name)) {
            continue;
        }
        let endpoints: Vec<Value> = c
            .hosts
            .all
            .iter()
            .map(|h| {
                let mut endpoint = Map::new();
                endpoint.insert(
                    "address".into(),
                    json!({"socket_address": {"address": h.addr.ip().to_string(), "port_value": h.addr.port()}}),
                );
                endpoint.insert("health_check_config".into(), json!({}));
                let name = super::clusters::hostname(h);
                if !name.is_empty() {
                    endpoint.insert("hostname".into(), Value::from(name));
                }
                let mut lle = Map::new();
                lle.insert("locality".into(), json!({}));
                lle.insert(
                    "lb_endpoints".into(),
                    json!([{
                        "endpoint": endpoint,
                        "health_status": "HEALTHY",
                        "load_balancing_weight": h.weight,
                    }]),
                );
                if h.priority != 0 {
                    lle.insert("priority".into(), Value::from(h.priority));
                }
                Value::Object(lle)
            })
            .collect();
        let mut cla = Map::new();
        cla.insert(
            "@type".into(),
            Value::from("type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"),
        );
        cla.insert("cluster_name".into(), Value::from(name));
        if !endpoints.is_empty() {
            cla.insert("endpoints".into(), Value::Array(endpoints));
        }
        cla.insert("policy".into(), json!({"overprovisioning_factor": 140}));
        out.push(json!({ "endpoint_config": cla }));
    }
    out
}

const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// A dump's static section (`static_clusters`, …): each resource whose name
/// passes `?name_regex`, with its `@type` under `field`, and `last_updated`.
fn static_dump(
    ty: &'static DumpType,
    section: &str,
    field: &str,
    type_url: &str,
    items: &[Value],
    re: Option<&Regex>,
    updated: &str,
) -> Dump {
    let entries: Vec<Value> = items
        .iter()
        .filter(|v| name_ok(re, v, "name"))
        .map(|v| {
            let mut e = Map::new();
            e.insert(field.into(), with_type(type_url, v));
            e.insert("last_updated".into(), Value::from(updated));
            Value::Object(e)
        })
        .collect();
    let mut body = Map::new();
    put(&mut body, section, entries);
    Dump { ty, body }
}

fn build(state: &AdminState, re: Option<&Regex>, include_eds: bool) -> Vec<Dump> {
    let b = &state.bootstrap_json;
    let updated = timestamp(state.started_wall);
    let mut dumps = Vec::new();

    let mut m = Map::new();
    m.insert("bootstrap".into(), b.clone());
    m.insert("last_updated".into(), Value::from(updated.clone()));
    dumps.push(Dump {
        ty: &BOOTSTRAP_DUMP,
        body: m,
    });

    let clusters = arr(b, "/static_resources/clusters");
    dumps.push(static_dump(
        &CLUSTERS_DUMP,
        "static_clusters",
        "cluster",
        CLUSTER_TYPE,
        &clusters,
        re,
        &updated,
    ));

    if include_eds && !state.shared.load().clusters.is_empty() {
        let mut m = Map::new();
        put(&mut m, "static_endpoint_configs", endpoint_configs(state, re));
        dumps.push(Dump {
            ty: &ENDPOINTS_DUMP,
            body: m,
        });
    }

    let all_listeners = arr(b, "/static_resources/listeners");
    dumps.push(static_dump(
        &LISTENERS_DUMP,
        "static_listeners",
        "listener",
        LISTENER_TYPE,
        &all_listeners,
        re,
        &updated,
    ));

    dumps.push(Dump {
        ty: &SCOPED_ROUTES_DUMP,
        body: Map::new(),
    });

    let routes = inline_routes(&all_listeners);
    dumps.push(static_dump(
        &ROUTES_DUMP,
        "static_route_configs",
        "route_config",
        ROUTE_TYPE,
        &routes,
        re,
        &updated,
    ));

    dumps.push(Dump {
        ty: &SECRETS_DUMP,
        body: Map::new(),
    });
    if let Some(xds) = &state.xds {
        add_dynamic(state, xds, &mut dumps, re, include_eds);
    }
    dumps
}

/// An accepted xDS resource in proto3 JSON with its `@type` first.
fn resource_json(state: &AdminState, body: &prost_types::Any) -> Value {
    let name = crate::config::validate::type_url_name(&body.type_url);
    let pool = state.bootstrap_desc.parent_pool();
    let decoded = pool
        .get_message_by_name(name)
        .and_then(|d| prost_reflect::DynamicMessage::decode(d, body.value.as_slice()).ok())
        .and_then(|m| super::to_json(&m).ok())
        .unwrap_or(Value::Null);
    with_type(&body.type_url, &decoded)
}

/// The resource a NACK message names (`Listener foo: …` → `foo`).
fn failed_name(message: &str, ty: crate::xds::ResourceType) -> Option<String> {
    let kind = ty.message_name().rsplit('.').next()?;
    let rest = message.strip_prefix(kind)?.strip_prefix(' ')?;
    rest.split_once(": ").map(|(n, _)| n.to_string())
}

fn error_state(message: &str, when: std::time::SystemTime) -> Value {
    json!({"last_update_attempt": timestamp(when), "details": message})
}

/// The dynamic sections: accepted (active and warming) resources with their
/// versions, and the last rejected update as `error_state`.
fn add_dynamic(
    state: &AdminState,
    xds: &crate::xds::manager::Manager,
    dumps: &mut [Dump],
    re: Option<&Regex>,
    include_eds: bool,
) {
    use crate::xds::ResourceType as T;
    let entry = |state: &AdminState, field: &str, meta: &crate::xds::manager::Meta| {
        let mut e = Map::new();
        e.insert("version_info".into(), Value::from(meta.version.clone()));
        e.insert(field.into(), resource_json(state, &meta.body));
        e.insert("last_updated".into(), Value::from(timestamp(meta.last_updated)));
        e
    };
    let keep = |name: &str| re.is_none_or(|re| re.is_match(name));
    for dump in dumps.iter_mut() {
        match dump.ty.type_name {
            "ClustersConfigDump" => {
                if let Some(v) = xds.version(T::Cluster) {
                    dump.body.insert("version_info".into(), Value::from(v));
                }
                let error = xds.last_error(T::Cluster);
                let (mut active, mut warming) = (Vec::new(), Vec::new());
                for (name, meta, is_warming) in xds.dump(T::Cluster) {
                    if !keep(&name) {
                        continue;
                    }
                    let mut e = entry(state, "cluster", &meta);
                    if let Some((msg, when)) = &error {
                        if failed_name(msg, T::Cluster).as_deref() == Some(name.as_str()) {
                            e.insert("error_state".into(), error_state(msg, *when));
                        }
                    }
                    if is_warming {
                        warming.push(Value::Object(e));
                    } else {
                        active.push(Value::Object(e));
                    }
                }
                put(&mut dump.body, "dynamic_active_clusters", active);
                put(&mut dump.body, "dynamic_warming_clusters", warming);
            }
            "EndpointsConfigDump" if include_eds => {
                let items: Vec<Value> = xds
                    .dump(T::ClusterLoadAssignment)
                    .into_iter()
                    .filter(|(n, _, _)| keep(n))
                    .map(|(_, meta, _)| Value::Object(entry(state, "endpoint_config", &meta)))
                    .collect();
                put(&mut dump.body, "dynamic_endpoint_configs", items);
            }
            "ListenersConfigDump" => {
                if let Some(v) = xds.version(T::Listener) {
                    dump.body.insert("version_info".into(), Value::from(v));
                }
                let error = xds.last_error(T::Listener);
                let failed = error.as_ref().and_then(|(m, _)| failed_name(m, T::Listener));
                let mut items: Vec<Value> = Vec::new();
                let mut listed = std::collections::BTreeSet::new();
                for (name, meta, is_warming) in xds.dump(T::Listener) {
                    if !keep(&name) {
                        continue;
                    }
                    let mut e = Map::new();
                    e.insert("name".into(), Value::from(name.clone()));
                    let st = if is_warming {
                        "warming_state"
                    } else {
                        "active_state"
                    };
                    e.insert(st.into(), Value::Object(entry(state, "listener", &meta)));
                    if let (Some((msg, when)), Some(f)) = (&error, &failed) {
                        if *f == name {
                            e.insert("error_state".into(), error_state(msg, *when));
                        }
                    }
                    listed.insert(name);
                    items.push(Value::Object(e));
                }
                if let (Some((msg, when)), Some(f)) = (&error, &failed) {
                    if !listed.contains(f) && keep(f) {
                        items.push(json!({"name": f, "error_state": error_state(msg, *when)}));
                    }
                }
                put(&mut dump.body, "dynamic_listeners", items);
            }
            "RoutesConfigDump" => {
                let items: Vec<Value> = xds
                    .dump(T::RouteConfiguration)
                    .into_iter()
                    .filter(|(n, _, _)| keep(n))
                    .map(|(_, meta, _)| Value::Object(entry(state, "route_config", &meta)))
                    .collect();
                put(&mut dump.body, "dynamic_route_configs", items);
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// Field masks (on the JSON form)

fn parse_mask(mask: &str) -> Vec<Vec<String>> {
    mask.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.split('.').map(str::to_string).collect())
        .collect()
}

/// Keeps only the masked fields of `obj` (and `@type`).
fn trim(obj: &mut Map<String, Value>, paths: &[Vec<String>]) {
    obj.retain(|k, _| k == "@type" || paths.iter().any(|p| p.first() == Some(k)));
    for (k, v) in obj.iter_mut() {
        // A path ending at this field keeps all of it.
        if paths.iter().any(|p| p.len() == 1 && &p[0] == k) {
            continue;
        }
        let sub: Vec<Vec<String>> = paths
            .iter()
            .filter(|p| p.len() > 1 && &p[0] == k)
            .map(|p| p[1..].to_vec())
            .collect();
        match v {
            Value::Object(o) => trim(o, &sub),
            Value::Array(a) => {
                for e in a.iter_mut() {
                    if let Value::Object(o) = e {
                        trim(o, &sub);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Whether `path` names fields of message `type_name` (in our descriptors).
fn valid_in_message(state: &AdminState, type_name: &str, path: &[String]) -> bool {
    let pool = state.bootstrap_desc.parent_pool();
    let Some(mut msg) = pool.get_message_by_name(type_name) else {
        return false;
    };
    for (i, seg) in path.iter().enumerate() {
        let Some(f) = msg.get_field_by_name(seg) else {
            return false;
        };
        if i + 1 == path.len() {
            return true;
        }
        if f.is_list() || f.is_map() {
            return false;
        }
        match f.kind() {
            prost_reflect::Kind::Message(m) => msg = m,
            _ => return false,
        }
    }
    true
}

/// Whether `path` is valid for a whole dump message.
fn valid_in_dump(state: &AdminState, ty: &DumpType, path: &[String]) -> bool {
    let Some((_, repeated)) = ty
        .fields
        .iter()
        .find(|(f, _)| Some(&f.to_string()) == path.first())
    else {
        return false;
    };
    if path.len() == 1 {
        return true;
    }
    match path[0].as_str() {
        "bootstrap" => valid_in_message(state, state.bootstrap_desc.full_name(), &path[1..]),
        _ => !repeated && path.len() == 1,
    }
}

fn mask_text(paths: &[Vec<String>]) -> String {
    paths
        .iter()
        .map(|p| format!("paths: \"{}\"", p.join(".")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `GET /config_dump`.
pub fn config_dump(state: &AdminState, q: &Query) -> Reply {
    let re = match q.get("name_regex").filter(|r| !r.is_empty()) {
        Some(r) => match Regex::new(&format!("^(?:{r})$")) {
            Ok(re) => Some(re),
            Err(e) => {
                return Reply::text(
                    400,
                    format!("INVALID_ARGUMENT: Error while parsing name_regex from {r}: {e}"),
                )
            }
        },
        None => None,
    };
    let mask = q.get("mask").map(parse_mask);
    let dumps = build(state, re.as_ref(), q.has("include_eds"));
    let configs = match q.get("resource") {
        Some(resource) => match resource_configs(state, dumps, resource, mask.as_deref()) {
            Ok(c) => c,
            Err((code, msg)) => return Reply::text(code, msg),
        },
        None => {
            let mut configs = Vec::new();
            for mut d in dumps {
                if let Some(paths) = &mask {
                    if !paths.iter().all(|p| valid_in_dump(state, d.ty, p)) {
                        continue;
                    }
                    trim(&mut d.body, paths);
                }
                configs.push(with_type(
                    &format!("{ADMIN}{}", d.ty.type_name),
                    &Value::Object(d.body),
                ));
            }
            if configs.is_empty() {
                if let Some(m) = q.get("mask") {
                    return Reply::text(
                        400,
                        format!("FieldMask {m} could not be successfully applied to any configs."),
                    );
                }
            }
            configs
        }
    };
    let mut root = Map::new();
    if !configs.is_empty() {
        root.insert("configs".into(), Value::Array(configs));
    }
    Reply::json(200, pretty_json(&Value::Object(root)))
}

/// `?resource=<repeated field>`: each element of the first dump that has
/// that field, as its own config (masked per element).
fn resource_configs(
    state: &AdminState,
    dumps: Vec<Dump>,
    resource: &str,
    mask: Option<&[Vec<String>]>,
) -> Result<Vec<Value>, (u16, String)> {
    for d in dumps {
        let Some((_, repeated)) = d.ty.fields.iter().find(|(f, _)| *f == resource) else {
            continue;
        };
        if !repeated {
            return Err((
                400,
                format!("{resource} is not a repeated field. Use ?mask={resource} to get only this field"),
            ));
        }
        let Some(rf) = RESOURCE_FIELDS.iter().find(|r| r.name == resource) else {
            return Err((404, format!("{resource} not found in config dump")));
        };
        let items = d
            .body
            .get(resource)
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        let mut out = Vec::new();
        for item in items {
            let mut item = item;
            if let (Some(paths), Some(obj)) = (mask, item.as_object_mut()) {
                mask_resource(state, rf, obj, paths).map_err(|_| {
                    (
                        400,
                        format!("FieldMask {} could not be successfully used.", mask_text(paths)),
                    )
                })?;
            }
            out.push(with_type(&format!("{ADMIN}{}", rf.element), &item));
        }
        return Ok(out);
    }
    Err((404, format!("{resource} not found in config dump")))
}

/// Envoy's `trimResourceMessage`: paths into the `Any` field apply to the
/// resource inside it; the others to the element.
fn mask_resource(
    state: &AdminState,
    rf: &ResourceField,
    obj: &mut Map<String, Value>,
    paths: &[Vec<String>],
) -> Result<(), ()> {
    let mut outer: Vec<Vec<String>> = Vec::new();
    let mut inner: Vec<Vec<String>> = Vec::new();
    for p in paths {
        if rf.any_field.is_some_and(|a| p[0] == a) {
            outer.push(vec![p[0].clone()]);
            if p.len() > 1 {
                inner.push(p[1..].to_vec());
            }
        } else {
            if p.len() != 1 || !rf.element_fields.contains(&p[0].as_str()) {
                return Err(());
            }
            outer.push(p.clone());
        }
    }
    if let (Some(any_field), false) = (rf.any_field, inner.is_empty()) {
        if let Some(Value::Object(res)) = obj.get_mut(any_field) {
            let type_name = res
                .get("@type")
                .and_then(|t| t.as_str())
                .and_then(|t| t.rsplit('/').next())
                .unwrap_or("")
                .to_string();
            if !inner.iter().all(|p| valid_in_message(state, &type_name, p)) {
                return Err(());
            }
            trim(res, &inner);
        }
    }
    trim(obj, &outer);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_keeps_masked_fields() {
        let mut v = json!({
            "@type": "t",
            "a": {"x": 1, "y": 2},
            "b": [{"x": 1, "y": 2}],
            "c": 3,
        });
        let o = v.as_object_mut().expect("object");
        trim(o, &parse_mask("a.x,b.y"));
        assert_eq!(v, json!({"@type": "t", "a": {"x": 1}, "b": [{"y": 2}]}));
    }

    #[test]
    fn routes_found_in_hcm() {
        let l = json!({"filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "route_config": {"name": "local_route"}}}]}]});
        assert_eq!(inline_routes(&[l]), vec![json!({"name": "local_route"})]);
    }

    #[test]
    fn timestamp_format() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(timestamp(t), "2023-11-14T22:13:20.123Z");
    }
}
