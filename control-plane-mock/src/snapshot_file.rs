//! The snapshot file format, read with legate's config loader:
//!
//! ```yaml
//! version: "v1"            # optional: the version_info to send
//! listeners: [...]         # envoy.config.listener.v3.Listener
//! routes: [...]            # envoy.config.route.v3.RouteConfiguration
//! clusters: [...]          # envoy.config.cluster.v3.Cluster
//! endpoints: [...]         # envoy.config.endpoint.v3.ClusterLoadAssignment
//! resources: [...]         # any of the above, each with its "@type"
//! nodes:                   # per-node overrides, merged by name over the above
//!   <node-id>: {listeners: [...], routes: [...], clusters: [...], endpoints: [...]}
//! ```
//!
//! Each resource is in Envoy's v3 YAML/JSON form, with or without `@type`.

use std::collections::HashMap;

use legate::config::yaml::{self, Node, Value};
use legate::config::{decode, validate, ConfigError, ErrorKind};
use legate::proto::envoy::config::listener::v3::Listener;
use legate::proto::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, HttpConnectionManager,
};
use prost::Message;

use crate::resource_type::ResourceType;
use crate::snapshot::{at, join_path, Resource, Resources, Snapshot};
use crate::Error;

const TOP_KEYS: &str = "version, listeners, routes, clusters, endpoints, resources, nodes";

/// legate's bootstrap parser stops at 250,000 YAML nodes; a snapshot of
/// 10,000 clusters has millions. Without aliases a document cannot have
/// more nodes than bytes, so its length is a bound that never gets in the way.
fn max_nodes(text: &str) -> usize {
    text.len().max(250_000)
}

pub(crate) fn parse(text: &str) -> Result<Snapshot, Error> {
    let root = yaml::parse_with_max_nodes(text, max_nodes(text))
        .map_err(|e| ConfigError::new(ErrorKind::Syntax, "", 0, format!("invalid YAML/JSON: {}", e.0)))?;
    let mut snapshot = Snapshot::new();
    // An empty file is an empty snapshot.
    if matches!(root.value, Value::Null) {
        return Ok(snapshot);
    }
    let Some(entries) = root.as_map() else {
        return Err(ConfigError::schema("", root.line, format!("expected a mapping with {TOP_KEYS}")).into());
    };
    let mut warnings = Vec::new();
    for (key, value) in entries {
        match key.name.as_str() {
            "version" => {
                snapshot.version = match &value.value {
                    Value::Str(s) => Some(s.clone()),
                    Value::Int(i) => Some(i.to_string()),
                    Value::Null => None,
                    _ => {
                        return Err(ConfigError::schema(
                            "version",
                            value.line,
                            format!("expected a string, found {}", value.kind()),
                        )
                        .into())
                    }
                }
            }
            "nodes" => {
                let Some(nodes) = value.as_map() else {
                    if matches!(value.value, Value::Null) {
                        continue;
                    }
                    return Err(ConfigError::schema(
                        "nodes",
                        value.line,
                        format!(
                            "expected a mapping of node id to resources, found {}",
                            value.kind()
                        ),
                    )
                    .into());
                };
                for (node_key, body) in nodes {
                    let path = format!("nodes[{:?}]", node_key.name);
                    let resources = snapshot.nodes.entry(node_key.name.clone()).or_default();
                    let Some(fields) = body.as_map() else {
                        if matches!(body.value, Value::Null) {
                            continue;
                        }
                        return Err(ConfigError::schema(
                            &path,
                            body.line,
                            format!("expected a mapping with listeners, routes, clusters, endpoints, resources, found {}", body.kind()),
                        )
                        .into());
                    };
                    for (k, v) in fields {
                        let kpath = format!("{path}.{}", k.name);
                        let ty = section_type(&k.name)
                            .ok_or_else(|| unknown_key(&kpath, k.line, &k.name, TOP_KEYS_NODE))?;
                        section(v, ty, &kpath, resources, &mut warnings)?;
                    }
                }
            }
            name => {
                let ty = section_type(name).ok_or_else(|| unknown_key(name, key.line, name, TOP_KEYS))?;
                section(value, ty, name, &mut snapshot.default, &mut warnings)?;
            }
        }
    }
    snapshot.decode_warnings = warnings;
    Ok(snapshot)
}

const TOP_KEYS_NODE: &str = "listeners, routes, clusters, endpoints, resources";

/// `Some(None)`: the `resources` section (types from `@type`).
fn section_type(key: &str) -> Option<Option<ResourceType>> {
    if key == "resources" {
        return Some(None);
    }
    ResourceType::from_key(key).map(Some)
}

fn unknown_key(path: &str, line: u64, name: &str, expected: &str) -> ConfigError {
    ConfigError::schema(
        path,
        line,
        format!("unknown key `{name}`; expected one of {expected}"),
    )
}

/// Decodes one list of resources into `into`; names must be unique per type.
fn section(
    value: &Node,
    ty: Option<ResourceType>,
    path: &str,
    into: &mut Resources,
    warnings: &mut Vec<String>,
) -> Result<(), Error> {
    let items: Vec<&Node> = match &value.value {
        Value::Seq(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        // A single mapping where a list is expected, as Envoy's loader allows.
        Value::Map(_) => vec![value],
        _ => {
            return Err(ConfigError::schema(
                path,
                value.line,
                format!("expected a list, found {}", value.kind()),
            )
            .into())
        }
    };
    for (i, item) in items.into_iter().enumerate() {
        let ipath = format!("{path}[{i}]");
        let (ty, resource) = decode_resource(item, ty, &ipath, warnings)?;
        if into.get(ty).contains_key(&resource.name) {
            return Err(ConfigError::invalid(
                &ipath,
                item.line,
                format!("duplicate name `{}` among the {}", resource.name, ty.key()),
            )
            .into());
        }
        into.get_mut(ty).insert(resource.name.clone(), resource.into());
    }
    Ok(())
}

/// Decodes one resource (text) of type `ty`, for the admin API and tests.
pub(crate) fn parse_resource(text: &str, ty: ResourceType) -> Result<(Resource, Vec<String>), Error> {
    let node = yaml::parse(text)
        .map_err(|e| ConfigError::new(ErrorKind::Syntax, "", 0, format!("invalid YAML/JSON: {}", e.0)))?;
    let mut warnings = Vec::new();
    let (_, r) = decode_resource(&node, Some(ty), "", &mut warnings)?;
    Ok((r, warnings))
}

fn decode_resource(
    node: &Node,
    ty: Option<ResourceType>,
    path: &str,
    warnings: &mut Vec<String>,
) -> Result<(ResourceType, Resource), Error> {
    if node.as_map().is_none() {
        return Err(ConfigError::schema(
            path,
            node.line,
            format!("expected a mapping, found {}", node.kind()),
        )
        .into());
    }
    let mut node = node.clone();
    match (node.get("@type").and_then(Node::as_str), ty) {
        (Some(_), _) => {}
        (None, Some(ty)) => {
            // Entries of a typed list may leave out "@type"; the loader
            // decodes them as an Any of the list's type.
            let key = yaml::Key {
                name: "@type".into(),
                line: node.line,
            };
            if let Some(map) = node.as_map_mut() {
                map.insert(0, (key, Node::str(ty.type_url())));
            }
        }
        (None, None) => {
            return Err(ConfigError::schema(
                path,
                node.line,
                "an entry of `resources` needs an \"@type\" (e.g. type.googleapis.com/envoy.config.cluster.v3.Cluster)",
            )
            .into())
        }
    }
    let mut file_warnings = Vec::new();
    let mut lines = HashMap::new();
    let dynamic = decode::decode("google.protobuf.Any", &node, &mut file_warnings, &mut lines)
        .map_err(|e| at(path, e))?;
    warnings.extend(file_warnings.into_iter().map(|mut w| {
        w.path = join_path(path, &w.path);
        w.to_string()
    }));
    let any: prost_types::Any = dynamic
        .transcode_to()
        .map_err(|e| ConfigError::schema(path, node.line, format!("internal: typed decode failed: {e}")))?;
    let type_line = node.get("@type").map_or(node.line, |n| n.line);
    let Some(actual) = ResourceType::from_type_url(&any.type_url) else {
        return Err(ConfigError::schema(
            &join_path(path, "@type"),
            type_line,
            format!(
                "`{}` is not a type the mock serves (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment)",
                validate::type_url_name(&any.type_url)
            ),
        )
        .into());
    };
    if let Some(ty) = ty.filter(|t| *t != actual) {
        return Err(ConfigError::schema(
            &join_path(path, "@type"),
            type_line,
            format!("a {} among the {}", actual.message_name(), ty.key()),
        )
        .into());
    }
    let line_of = |p: &str| lines.get(p).copied().unwrap_or(0);
    check_resource(&any, actual, &line_of).map_err(|e| at(path, e))?;
    let resource = Resource::new(actual, any).map_err(|e| match e {
        Error::Invalid(m) => Error::Config(ConfigError::invalid(path, node.line, m)),
        other => other,
    })?;
    Ok((actual, resource))
}

/// legate's checks for a resource, except for API listeners (the form gRPC's
/// xDS clients use), which legate does not serve and only need a usable
/// HTTP connection manager.
fn check_resource(
    any: &prost_types::Any,
    ty: ResourceType,
    line_of: &dyn Fn(&str) -> u64,
) -> Result<(), ConfigError> {
    if ty == ResourceType::Listener {
        let listener = Listener::decode(any.value.as_slice())
            .map_err(|e| ConfigError::schema("", 0, format!("cannot decode Listener: {e}")))?;
        if let Some(api) = &listener.api_listener {
            let path = "api_listener.api_listener";
            let hcm = api
                .api_listener
                .as_ref()
                .and_then(|a| validate::unpack::<HttpConnectionManager>(a, validate::HCM_TYPE))
                .ok_or_else(|| {
                    ConfigError::invalid(
                        path,
                        line_of(path),
                        "an API listener needs an HttpConnectionManager",
                    )
                })?;
            return match hcm.route_specifier {
                Some(http_connection_manager::RouteSpecifier::Rds(_))
                | Some(http_connection_manager::RouteSpecifier::RouteConfig(_)) => Ok(()),
                _ => Err(ConfigError::invalid(
                    path,
                    line_of(path),
                    "the HttpConnectionManager needs `rds` or `route_config`",
                )),
            };
        }
    }
    validate::resource(any, "", line_of)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_sections_with_and_without_type() {
        let s = Snapshot::from_yaml(&format!(
            "version: v1\nclusters:\n- {{{}}}\nendpoints:\n- \"@type\": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment\n  cluster_name: c1\n",
            "name: c1, type: EDS, eds_cluster_config: {eds_config: {ads: {}}}"
        ))
        .unwrap();
        assert_eq!(s.version.as_deref(), Some("v1"));
        let c = &s.default.get(ResourceType::Cluster)["c1"];
        assert_eq!(c.eds_name.as_deref(), Some("c1"));
        assert!(s.default.get(ResourceType::Endpoint).contains_key("c1"));
        assert!(s.warnings().is_empty(), "{:?}", s.warnings());
    }

    #[test]
    fn errors_name_the_path_and_line() {
        let text = "clusters:\n- name: c1\n  connect_timeout: 5\n";
        let e = Snapshot::from_yaml(text).unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("clusters[0].connect_timeout"), "{e}");
        let e = Snapshot::from_yaml("listener: []\n").unwrap_err().to_string();
        assert!(e.contains("unknown key `listener`"), "{e}");
        let e = Snapshot::from_yaml("clusters:\n- {name: a}\n- {name: a}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("duplicate name `a`"), "{e}");
        let e = Snapshot::from_yaml(
            "routes:\n- \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n  name: a\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("among the routes"), "{e}");
    }

    #[test]
    fn node_overrides_merge_by_name() {
        let s = Snapshot::from_yaml(
            "clusters: [{name: a, connect_timeout: 1s}, {name: b}]\nnodes:\n  n1:\n    clusters: [{name: a, connect_timeout: 2s}, {name: c}]\n",
        )
        .unwrap();
        let n1 = s.resources_for("n1");
        let names: Vec<_> = n1.get(ResourceType::Cluster).keys().cloned().collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_ne!(
            n1.get(ResourceType::Cluster)["a"].version,
            s.default.get(ResourceType::Cluster)["a"].version
        );
        assert_eq!(s.resources_for("other"), s.default);
    }
}
