//! Loading an Envoy bootstrap: read → parse (YAML/JSON, with lines) → decode
//! against our descriptors (with Envoy's leniencies and v2 translation) →
//! merge `--config-yaml` → typed message → Envoy's constraints.

pub mod decode;
pub mod error;
pub mod extensions;
pub mod legacy;
pub mod validate;
pub mod yaml;

use std::collections::HashMap;
use std::path::Path;

use prost::Message;
use prost_reflect::DynamicMessage;

pub use error::{ConfigError, ErrorKind, Warning};

use crate::proto::envoy::config::bootstrap::v3::Bootstrap;

pub const BOOTSTRAP: &str = "envoy.config.bootstrap.v3.Bootstrap";

/// A bootstrap that decoded and passed validation.
#[derive(Debug)]
pub struct Loaded {
    pub bootstrap: Bootstrap,
    /// The same config as a reflective message, for printing it back as YAML.
    pub dynamic: DynamicMessage,
    pub warnings: Vec<Warning>,
}

/// One source of config text and the name errors should carry.
struct Source<'a> {
    name: &'a str,
    text: &'a str,
}

/// Loads the bootstrap from `-c` (if any) with `--config-yaml` merged over it
/// as Envoy does (protobuf merge: scalars replaced, messages merged, lists
/// appended).
pub fn load_bootstrap(path: Option<&Path>, config_yaml: Option<&str>) -> Result<Loaded, ConfigError> {
    let file_text;
    let mut sources = Vec::new();
    let path_name = path.map(|p| p.display().to_string()).unwrap_or_default();
    if let Some(p) = path {
        check_extension(p, &path_name)?;
        file_text = std::fs::read_to_string(p).map_err(|e| {
            ConfigError::new(ErrorKind::Io, "", 0, format!("cannot read the config file: {e}"))
                .in_file(&path_name)
        })?;
        sources.push(Source {
            name: &path_name,
            text: &file_text,
        });
    }
    if let Some(text) = config_yaml {
        sources.push(Source {
            name: "--config-yaml",
            text,
        });
    }
    if sources.is_empty() {
        return Err(ConfigError::new(
            ErrorKind::Io,
            "",
            0,
            "no configuration given: use -c <file> and/or --config-yaml <yaml>",
        ));
    }

    let mut warnings = Vec::new();
    let mut merged: Option<DynamicMessage> = None;
    let mut lines = HashMap::new();
    let mut last_name = "";
    for src in &sources {
        let node = yaml::parse(src.text).map_err(|e| {
            ConfigError::new(ErrorKind::Syntax, "", 0, format!("invalid YAML/JSON: {}", e.0))
                .in_file(src.name)
        })?;
        if is_xds_file(&node) {
            return Err(ConfigError::schema(
                "resources",
                node.get("resources").map_or(0, |n| n.line),
                "this looks like an xDS response file (for path_config_source), not a bootstrap",
            )
            .in_file(src.name));
        }
        let mut file_warnings = Vec::new();
        let mut file_lines = HashMap::new();
        let msg = decode::decode(BOOTSTRAP, &node, &mut file_warnings, &mut file_lines)
            .map_err(|e| e.in_file(src.name))?;
        warnings.extend(file_warnings.into_iter().map(|mut w| {
            w.file = src.name.to_string();
            w
        }));
        lines = file_lines;
        last_name = src.name;
        merged = Some(match merged {
            None => msg,
            Some(mut base) => {
                base.merge(msg.encode_to_vec().as_slice()).map_err(|e| {
                    ConfigError::schema("", 0, format!("cannot merge --config-yaml over the file: {e}"))
                })?;
                base
            }
        });
    }
    let dynamic = merged.ok_or_else(|| ConfigError::schema("", 0, "no configuration"))?;
    let bootstrap: Bootstrap = dynamic
        .transcode_to()
        .map_err(|e| ConfigError::schema("", 0, format!("internal: typed decode failed: {e}")))?;
    // Lines are known for the last source only once sources are merged;
    // errors from validation name the first file when there is one.
    let blame = if sources.len() == 1 {
        last_name
    } else {
        sources[0].name
    };
    let line_of = |p: &str| {
        if sources.len() == 1 {
            lines.get(p).copied().unwrap_or(0)
        } else {
            0
        }
    };
    validate::bootstrap(&bootstrap, &line_of).map_err(|e| e.in_file(blame))?;
    Ok(Loaded {
        bootstrap,
        dynamic,
        warnings,
    })
}

fn check_extension(path: &Path, name: &str) -> Result<(), ConfigError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml" | "json") => Ok(()),
        Some(ext @ ("pb" | "pb_text")) => Err(ConfigError::not_supported(
            "",
            0,
            format!("binary/text protobuf configs (.{ext}) are not supported by legate yet; use .yaml, .yml or .json"),
        )
        .in_file(name)),
        _ => Err(ConfigError::schema("", 0, "unknown config file extension; expected .yaml, .yml or .json").in_file(name)),
    }
}

pub const DISCOVERY_RESPONSE: &str = "envoy.service.discovery.v3.DiscoveryResponse";

/// Is this parsed document an xDS response file (`resources:` at the top, as
/// `path_config_source` files are) rather than a bootstrap?
pub fn is_xds_file(node: &yaml::Node) -> bool {
    node.get("resources").is_some() && node.get("static_resources").is_none()
}

/// An xDS response file: its version and resources, each decoded and checked.
#[derive(Debug)]
pub struct XdsFile {
    pub version_info: String,
    pub resources: Vec<prost_types::Any>,
    pub warnings: Vec<Warning>,
}

/// Reads and checks an xDS response file (`resources:` with `@type`d
/// Listener, Cluster, RouteConfiguration or ClusterLoadAssignment entries).
pub fn load_xds_file(path: &Path) -> Result<XdsFile, ConfigError> {
    let name = path.display().to_string();
    check_extension(path, &name)?;
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(ErrorKind::Io, "", 0, format!("cannot read the file: {e}")).in_file(&name)
    })?;
    parse_xds_text(&text).map_err(|e| e.in_file(&name)).map(|mut f| {
        for w in &mut f.warnings {
            w.file = name.clone();
        }
        f
    })
}

/// [`load_xds_file`] on text already read.
pub fn parse_xds_text(text: &str) -> Result<XdsFile, ConfigError> {
    let node = yaml::parse(text)
        .map_err(|e| ConfigError::new(ErrorKind::Syntax, "", 0, format!("invalid YAML/JSON: {}", e.0)))?;
    let mut warnings = Vec::new();
    let mut lines = HashMap::new();
    let msg = decode::decode(DISCOVERY_RESPONSE, &node, &mut warnings, &mut lines)?;
    let response: crate::proto::envoy::service::discovery::v3::DiscoveryResponse = msg
        .transcode_to()
        .map_err(|e| ConfigError::schema("", 0, format!("internal: typed decode failed: {e}")))?;
    let line_of = |p: &str| lines.get(p).copied().unwrap_or(0);
    for (i, any) in response.resources.iter().enumerate() {
        validate::resource(any, &error::index("resources", i), &line_of)?;
    }
    Ok(XdsFile {
        version_info: response.version_info,
        resources: response.resources,
        warnings,
    })
}

/// Applies `--service-node`, `--service-cluster` and `--service-zone` over
/// the bootstrap's `node`, as Envoy does.
pub fn apply_node_overrides(b: &mut Bootstrap, id: Option<&str>, cluster: Option<&str>, zone: Option<&str>) {
    if id.is_none() && cluster.is_none() && zone.is_none() {
        return;
    }
    let node = b.node.get_or_insert_with(Default::default);
    if let Some(id) = id {
        node.id = id.to_string();
    }
    if let Some(c) = cluster {
        node.cluster = c.to_string();
    }
    if let Some(z) = zone {
        node.locality.get_or_insert_with(Default::default).zone = z.to_string();
    }
}

/// Prints a decoded config as YAML in its v3 form (proto3 JSON names).
pub fn to_yaml(msg: &DynamicMessage) -> Result<String, String> {
    let opts = prost_reflect::SerializeOptions::new().use_proto_field_name(true);
    // Through serde_json (with preserve_order) so fields keep proto order.
    let mut ser = serde_json::Serializer::new(Vec::new());
    msg.serialize_with_options(&mut ser, &opts)
        .map_err(|e| e.to_string())?;
    let json: serde_json::Value = serde_json::from_slice(&ser.into_inner()).map_err(|e| e.to_string())?;
    let mut yaml_opts = serde_saphyr::SerializerOptions::default();
    // Long type URLs stay on one line, as people write them.
    yaml_opts.prefer_block_scalars = false;
    serde_saphyr::to_string_with_options(&json, yaml_opts).map_err(|e| e.to_string())
}
