//! Rewrites v2-era and name-only constructs into their v3 form before a
//! message is decoded, with one warning per construct saying what to write
//! instead. Runs per message type, so it knows where it is in the config.

use super::error::{child, Warning};
use super::extensions;
use super::yaml::{Key, Node, Value};

const TYPE_PREFIX: &str = "type.googleapis.com/";
const UPSTREAM_HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Rewrites `node` (a mapping about to be decoded as `message`) in place.
pub fn rewrite(message: &str, node: &mut Node, path: &str, warnings: &mut Vec<Warning>) {
    if node.as_map().is_none() {
        return;
    }
    match message {
        "envoy.config.listener.v3.Filter"
        | "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter"
        | "envoy.config.accesslog.v3.AccessLog" => extension(node, path, warnings),
        "envoy.config.cluster.v3.Cluster" => {
            deprecated_dns(
                node,
                path,
                warnings,
                &[
                    "dns_resolvers",
                    "use_tcp_for_dns_lookups",
                    "dns_resolution_config",
                ],
            );
            cluster(node, path, warnings)
        }
        "envoy.config.bootstrap.v3.Bootstrap" => deprecated_dns(
            node,
            path,
            warnings,
            &["use_tcp_for_dns_lookups", "dns_resolution_config"],
        ),
        "envoy.config.bootstrap.v3.Admin" => admin(node, path, warnings),
        _ => {}
    }
}

fn warn(warnings: &mut Vec<Warning>, path: &str, line: u64, message: String) {
    warnings.push(Warning {
        file: String::new(),
        path: path.to_string(),
        line,
        message,
    });
}

fn typed(ty: &str, mut body: Node) -> Node {
    let at_type = (
        Key {
            name: "@type".into(),
            line: 0,
        },
        Node::str(format!("{TYPE_PREFIX}{ty}")),
    );
    match body.as_map_mut() {
        Some(map) => map.insert(0, at_type),
        None => body = Node::new(Value::Map(vec![at_type])),
    }
    body
}

/// A filter or access logger: legacy name, v2 `config:`, or a name without
/// `typed_config`.
fn extension(node: &mut Node, path: &str, warnings: &mut Vec<Warning>) {
    let name = node.get("name").and_then(Node::as_str).unwrap_or("").to_string();
    let known = extensions::by_name(&name);
    if let Some((v3, _)) = known {
        if v3 != name {
            let line = node.get("name").map_or(node.line, |n| n.line);
            warn(
                warnings,
                &child(path, "name"),
                line,
                format!("`{name}` is a v2 extension name; the v3 name is `{v3}`"),
            );
            node.insert(
                Key {
                    name: "name".into(),
                    line,
                },
                Node {
                    line,
                    ..Node::str(v3)
                },
            );
        }
    }
    if let Some((key, mut config)) = node.remove("config") {
        let Some((_, ty)) = known else {
            // Unknown extension with a v2 Struct config: put it back and let
            // the decoder report `config` as the v2 field it is.
            node.insert(key, config);
            return;
        };
        warn(
            warnings,
            &child(path, "config"),
            key.line,
            format!("`config` is the v2 form; in v3 write `typed_config` with \"@type\": {TYPE_PREFIX}{ty}"),
        );
        if matches!(config.value, Value::Null) {
            config = Node::new(Value::Map(Vec::new()));
        }
        let line = config.line;
        node.insert(
            Key {
                name: "typed_config".into(),
                line: key.line,
            },
            Node {
                line,
                ..typed(ty, config)
            },
        );
        return;
    }
    if node.get("typed_config").is_none() && node.get("typedConfig").is_none() {
        if let Some((v3, ty)) = known {
            warn(
                warnings,
                path,
                node.line,
                format!(
                    "`{v3}` has no `typed_config`; Envoy 1.22+ requires one: add typed_config with \"@type\": {TYPE_PREFIX}{ty}"
                ),
            );
            node.insert(
                Key {
                    name: "typed_config".into(),
                    line: node.line,
                },
                typed(ty, Node::new(Value::Map(Vec::new()))),
            );
        }
    }
}

/// The DNS resolver fields deprecated in favour of
/// `typed_dns_resolver_config`: still honoured (`model::dns`), with a
/// warning saying what to write instead.
fn deprecated_dns(node: &Node, path: &str, warnings: &mut Vec<Warning>, fields: &[&str]) {
    for field in fields {
        let camel = field
            .split('_')
            .enumerate()
            .map(|(i, w)| {
                let mut c = w.chars();
                match c.next() {
                    Some(f) if i > 0 => f.to_uppercase().chain(c).collect(),
                    _ => w.to_string(),
                }
            })
            .collect::<String>();
        let Some(line) = node
            .as_map()
            .and_then(|m| m.iter().find(|(k, _)| k.name == *field || k.name == camel))
            .map(|(k, _)| k.line)
        else {
            continue;
        };
        let what = match *field {
            "dns_resolvers" => "resolvers: […]",
            "use_tcp_for_dns_lookups" => "dns_resolver_options: {use_tcp_for_dns_lookups: true}",
            _ => "resolvers: […], dns_resolver_options: {…}",
        };
        warn(
            warnings,
            &child(path, field),
            line,
            format!(
                "`{field}` is deprecated; write `typed_dns_resolver_config: {{name: envoy.network.dns_resolver.cares, typed_config: {{\"@type\": {TYPE_PREFIX}envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig, {what}}}}}`"
            ),
        );
    }
}

/// v2 `hosts:` and the deprecated per-cluster protocol options.
fn cluster(node: &mut Node, path: &str, warnings: &mut Vec<Warning>) {
    if let Some((key, hosts)) = node.remove("hosts") {
        warn(
            warnings,
            &child(path, "hosts"),
            key.line,
            "`hosts` is the v2 form; in v3 write `load_assignment: {cluster_name, endpoints: [{lb_endpoints: [{endpoint: {address}}]}]}`".into(),
        );
        let addresses = match hosts.value {
            Value::Seq(items) => items,
            Value::Null => Vec::new(),
            _ => vec![hosts],
        };
        let lb_endpoints: Vec<Node> = addresses
            .into_iter()
            .map(|a| {
                let line = a.line;
                Node {
                    line,
                    ..Node::map(vec![(
                        "endpoint",
                        Node {
                            line,
                            ..Node::map(vec![("address", a)])
                        },
                    )])
                }
            })
            .collect();
        let cluster_name = node.get("name").cloned().unwrap_or_else(|| Node::str(""));
        let assignment = Node::map(vec![
            ("cluster_name", cluster_name),
            (
                "endpoints",
                Node::new(Value::Seq(vec![Node::map(vec![(
                    "lb_endpoints",
                    Node::new(Value::Seq(lb_endpoints)),
                )])])),
            ),
        ]);
        node.insert(
            Key {
                name: "load_assignment".into(),
                line: key.line,
            },
            Node {
                line: key.line,
                ..assignment
            },
        );
    }

    // Cluster.{http,http2,common_http}_protocol_options are deprecated in v3
    // in favour of typed_extension_protocol_options; fold them into one.
    let mut explicit = Vec::new();
    let mut common = None;
    let mut first_line = 0;
    for (field, target) in [
        ("http2_protocol_options", "http2_protocol_options"),
        ("http_protocol_options", "http_protocol_options"),
        ("common_http_protocol_options", "common_http_protocol_options"),
    ] {
        if let Some((key, value)) = node.remove(field) {
            warn(
                warnings,
                &child(path, field),
                key.line,
                format!(
                    "cluster `{field}` is deprecated; in v3 write it under typed_extension_protocol_options: {{{UPSTREAM_HTTP_OPTIONS}: {{\"@type\": {TYPE_PREFIX}{UPSTREAM_HTTP_OPTIONS}, {}}}}}",
                    if target == "common_http_protocol_options" {
                        "common_http_protocol_options: …".to_string()
                    } else {
                        format!("explicit_http_config: {{{target}: …}}")
                    }
                ),
            );
            if first_line == 0 {
                first_line = key.line;
            }
            let value = if matches!(value.value, Value::Null) {
                Node::new(Value::Map(Vec::new()))
            } else {
                value
            };
            if target == "common_http_protocol_options" {
                common = Some(value);
            } else {
                explicit.push((target, value));
            }
        }
    }
    if explicit.is_empty() && common.is_none() {
        return;
    }
    let mut options = Vec::new();
    if let Some(c) = common {
        options.push(("common_http_protocol_options", c));
    }
    if !explicit.is_empty() {
        options.push(("explicit_http_config", Node::map(explicit)));
    }
    let options = typed(UPSTREAM_HTTP_OPTIONS, Node::map(options));
    let key = Key {
        name: "typed_extension_protocol_options".into(),
        line: first_line,
    };
    match node.get_mut("typed_extension_protocol_options") {
        Some(existing) if existing.get(UPSTREAM_HTTP_OPTIONS).is_some() => {
            // Both forms given: the v3 one wins, as in Envoy.
        }
        Some(existing) => existing.insert(
            Key {
                name: UPSTREAM_HTTP_OPTIONS.into(),
                line: first_line,
            },
            options,
        ),
        None => node.insert(
            key,
            Node {
                line: first_line,
                ..Node::map(vec![(UPSTREAM_HTTP_OPTIONS, options)])
            },
        ),
    }
}

/// Admin `access_log_path` (deprecated in v3) becomes a file access logger.
fn admin(node: &mut Node, path: &str, warnings: &mut Vec<Warning>) {
    let Some((key, value)) = node.remove("access_log_path") else {
        return;
    };
    warn(
        warnings,
        &child(path, "access_log_path"),
        key.line,
        "`access_log_path` is deprecated; in v3 write `access_log: [{name: envoy.access_loggers.file, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: …}}]`".into(),
    );
    let line = key.line;
    let logger = Node::map(vec![
        ("name", Node::str("envoy.access_loggers.file")),
        (
            "typed_config",
            typed(
                "envoy.extensions.access_loggers.file.v3.FileAccessLog",
                Node::map(vec![("path", value)]),
            ),
        ),
    ]);
    let logger = Node { line, ..logger };
    match node.get_mut("access_log") {
        Some(Node {
            value: Value::Seq(items),
            ..
        }) => items.push(logger),
        _ => node.insert(
            Key {
                name: "access_log".into(),
                line,
            },
            Node {
                line,
                ..Node::new(Value::Seq(vec![logger]))
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml::parse;
    use super::*;

    fn run(message: &str, yaml: &str) -> (Node, Vec<Warning>) {
        let mut node = parse(yaml).unwrap();
        let mut w = Vec::new();
        rewrite(message, &mut node, "x", &mut w);
        (node, w)
    }

    #[test]
    fn v2_filter_config_becomes_typed_config() {
        let (n, w) = run(
            "envoy.config.listener.v3.Filter",
            "name: envoy.http_connection_manager\nconfig:\n  stat_prefix: a\n",
        );
        assert_eq!(
            n.get("name").unwrap().as_str(),
            Some("envoy.filters.network.http_connection_manager")
        );
        let tc = n.get("typed_config").unwrap();
        assert_eq!(
            tc.get("@type").unwrap().as_str(),
            Some("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager")
        );
        assert_eq!(tc.get("stat_prefix").unwrap().as_str(), Some("a"));
        assert!(n.get("config").is_none());
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[1].line, 2);
    }

    #[test]
    fn name_without_typed_config_resolves_by_name() {
        let (n, w) = run(
            "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
            "name: envoy.filters.http.router\n",
        );
        assert!(n.get("typed_config").is_some());
        assert_eq!(w.len(), 1);
        // Unknown names are left for the decoder to judge.
        let (n, w) = run("envoy.config.listener.v3.Filter", "name: my.filter\n");
        assert!(n.get("typed_config").is_none());
        assert!(w.is_empty());
    }

    #[test]
    fn v2_hosts_become_load_assignment() {
        let (n, w) = run(
            "envoy.config.cluster.v3.Cluster",
            "name: s1\nhttp2_protocol_options: {}\nhosts:\n- socket_address: {address: a, port_value: 80}\n",
        );
        let la = n.get("load_assignment").unwrap();
        assert_eq!(la.get("cluster_name").unwrap().as_str(), Some("s1"));
        let opts = n
            .get("typed_extension_protocol_options")
            .unwrap()
            .get(UPSTREAM_HTTP_OPTIONS)
            .unwrap();
        assert!(opts
            .get("explicit_http_config")
            .unwrap()
            .get("http2_protocol_options")
            .is_some());
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn admin_access_log_path_becomes_a_file_logger() {
        let (n, w) = run("envoy.config.bootstrap.v3.Admin", "access_log_path: /dev/null\n");
        let Value::Seq(logs) = &n.get("access_log").unwrap().value else {
            panic!()
        };
        assert_eq!(
            logs[0].get("typed_config").unwrap().get("path").unwrap().as_str(),
            Some("/dev/null")
        );
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn v3_configs_are_left_alone() {
        let yaml = "name: s1\nload_assignment: {cluster_name: s1}\n";
        let (n, w) = run("envoy.config.cluster.v3.Cluster", yaml);
        assert_eq!(n, parse(yaml).unwrap());
        assert!(w.is_empty());
    }
}
