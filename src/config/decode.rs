//! Decodes a YAML/JSON node tree into a protobuf message against our
//! descriptor set, with the proto3 JSON mapping and Envoy's leniencies, and
//! with errors that carry the field path and line.
//!
//! We walk the descriptors ourselves rather than hand the tree to serde: a
//! serde error says "invalid type at line 12", this says
//! `static_resources.clusters[1].connect_timeout: expected a duration like "0.25s", found an integer`.

use std::collections::HashMap;

use prost::Message;
use prost_reflect::{DynamicMessage, Kind, MapKey, MessageDescriptor, Value as PValue};

use super::error::{child, index, ConfigError, Warning};
use super::extensions;
use super::legacy;
use super::yaml::{Node, Value};
use crate::proto;

const HTTP_FILTER: &str = "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter";

/// Decodes `node` as the message named `type_name` (e.g.
/// `envoy.config.bootstrap.v3.Bootstrap`), collecting warnings.
/// `lines` receives the line of every field path decoded, so that checks
/// made later on the typed message can still point at a line.
pub fn decode(
    type_name: &str,
    node: &Node,
    warnings: &mut Vec<Warning>,
    lines: &mut HashMap<String, u64>,
) -> Result<DynamicMessage, ConfigError> {
    let desc = proto::pool()
        .get_message_by_name(type_name)
        .ok_or_else(|| ConfigError::schema("", 0, format!("unknown message type {type_name}")))?;
    Decoder { warnings, lines }.message(&desc, node, "")
}

struct Decoder<'w> {
    warnings: &'w mut Vec<Warning>,
    lines: &'w mut HashMap<String, u64>,
}

fn expected(path: &str, node: &Node, what: &str) -> ConfigError {
    ConfigError::schema(path, node.line, format!("expected {what}, found {}", node.kind()))
}

impl Decoder<'_> {
    fn message(
        &mut self,
        desc: &MessageDescriptor,
        node: &Node,
        path: &str,
    ) -> Result<DynamicMessage, ConfigError> {
        if let Some(m) = self.well_known(desc, node, path)? {
            return Ok(m);
        }
        let mut node = node.clone();
        legacy::rewrite(desc.full_name(), &mut node, path, self.warnings);
        let Some(entries) = node.as_map() else {
            return Err(expected(path, &node, &format!("a mapping ({})", desc.name())));
        };
        let mut msg = DynamicMessage::new(desc.clone());
        let mut oneofs_set: HashMap<String, String> = HashMap::new();
        for (key, value) in entries {
            let Some(field) = desc
                .get_field_by_name(&key.name)
                .or_else(|| desc.get_field_by_json_name(&key.name))
            else {
                let fpath = child(path, &key.name);
                if let Some(what) = extensions::not_implemented(desc.full_name(), &key.name) {
                    return Err(ConfigError::not_supported(
                        &fpath,
                        key.line,
                        format!("{what} is not supported by legate yet"),
                    ));
                }
                return Err(unknown_field(desc, &key.name, &fpath, key.line));
            };
            // Paths use the proto field name even when the config used the JSON one.
            let fpath = child(path, field.name());
            self.lines.insert(fpath.clone(), key.line);
            // `null` means "not set", as in Envoy's YAML loader.
            if matches!(value.value, Value::Null) {
                continue;
            }
            if let Some(what) = extensions::not_implemented(desc.full_name(), field.name()) {
                return Err(ConfigError::not_supported(
                    &fpath,
                    key.line,
                    format!("{what} is not supported by legate yet"),
                ));
            }
            if let Some(oneof) = field.containing_oneof() {
                if let Some(other) = oneofs_set.insert(oneof.name().to_string(), field.name().to_string()) {
                    return Err(ConfigError::schema(
                        &fpath,
                        key.line,
                        format!(
                            "`{}` and `{other}` are both set, but only one of the `{}` group may be",
                            field.name(),
                            oneof.name()
                        ),
                    ));
                }
            }
            let decoded = if field.is_map() {
                self.map(&field, value, &fpath)?
            } else if field.is_list() {
                // Envoy accepts a single mapping (or scalar) where a list is expected.
                let items: Vec<&Node> = match &value.value {
                    Value::Seq(items) => items.iter().collect(),
                    _ => vec![value],
                };
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    self.lines.insert(index(&fpath, i), item.line);
                    out.push(self.value(&field.kind(), item, &index(&fpath, i))?);
                }
                PValue::List(out)
            } else {
                match self.value(&field.kind(), value, &fpath) {
                    Ok(v) => v,
                    Err(e)
                        if e.kind == super::error::ErrorKind::NotSupported
                            && desc.full_name() == HTTP_FILTER
                            && field.name() == "typed_config"
                            && is_optional(&node) =>
                    {
                        // An optional HTTP filter legate does not have is
                        // skipped, as Envoy skips optional unknown filters.
                        self.warnings.push(Warning {
                            file: String::new(),
                            path: path.to_string(),
                            line: node.line,
                            message: format!("{}; skipped because `is_optional: true`", e.message),
                        });
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            };
            msg.set_field(&field, decoded);
        }
        Ok(msg)
    }

    fn map(
        &mut self,
        field: &prost_reflect::FieldDescriptor,
        node: &Node,
        path: &str,
    ) -> Result<PValue, ConfigError> {
        let Some(entries) = node.as_map() else {
            return Err(expected(path, node, "a mapping"));
        };
        let Kind::Message(entry) = field.kind() else {
            return Err(ConfigError::schema(
                path,
                node.line,
                "internal: map field without entry type",
            ));
        };
        let key_kind = entry.map_entry_key_field().kind();
        let value_kind = entry.map_entry_value_field().kind();
        let mut out = HashMap::new();
        for (k, v) in entries {
            let kpath = format!("{path}[{:?}]", k.name);
            let key =
                match key_kind {
                    Kind::String => MapKey::String(k.name.clone()),
                    Kind::Bool => MapKey::Bool(
                        k.name
                            .parse()
                            .map_err(|_| ConfigError::schema(&kpath, k.line, "expected a boolean key"))?,
                    ),
                    Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(
                        k.name
                            .parse()
                            .map_err(|_| ConfigError::schema(&kpath, k.line, "expected an integer key"))?,
                    ),
                    Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(
                        k.name
                            .parse()
                            .map_err(|_| ConfigError::schema(&kpath, k.line, "expected an integer key"))?,
                    ),
                    Kind::Uint32 | Kind::Fixed32 => MapKey::U32(k.name.parse().map_err(|_| {
                        ConfigError::schema(&kpath, k.line, "expected an unsigned integer key")
                    })?),
                    _ => MapKey::U64(k.name.parse().map_err(|_| {
                        ConfigError::schema(&kpath, k.line, "expected an unsigned integer key")
                    })?),
                };
            out.insert(key, self.value(&value_kind, v, &kpath)?);
        }
        Ok(PValue::Map(out))
    }

    fn value(&mut self, kind: &Kind, node: &Node, path: &str) -> Result<PValue, ConfigError> {
        Ok(match kind {
            Kind::Message(m) => PValue::Message(self.message(m, node, path)?),
            Kind::Enum(e) => {
                let number = match &node.value {
                    Value::Str(s) => e
                        .values()
                        .find(|v| v.name().eq_ignore_ascii_case(s))
                        .map(|v| v.number())
                        .ok_or_else(|| {
                            let names: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
                            ConfigError::schema(
                                path,
                                node.line,
                                format!("unknown value `{s}`; expected one of {}", names.join(", ")),
                            )
                        })?,
                    Value::Int(i) => {
                        let n = i32::try_from(*i)
                            .map_err(|_| ConfigError::schema(path, node.line, "enum number out of range"))?;
                        e.get_value(n).map(|v| v.number()).ok_or_else(|| {
                            ConfigError::schema(
                                path,
                                node.line,
                                format!("{n} is not a value of {}", e.name()),
                            )
                        })?
                    }
                    _ => return Err(expected(path, node, &format!("one of the {} names", e.name()))),
                };
                PValue::EnumNumber(number)
            }
            Kind::Bool => PValue::Bool(match &node.value {
                Value::Bool(b) => *b,
                Value::Str(s) if s == "true" => true,
                Value::Str(s) if s == "false" => false,
                _ => return Err(expected(path, node, "true or false")),
            }),
            Kind::String => PValue::String(match &node.value {
                Value::Str(s) => s.clone(),
                // YAML reads `version_info: 1` as a number; it is meant as text.
                Value::Int(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Bool(_) => return Err(expected(
                    path,
                    node,
                    "a string (YAML reads unquoted yes/no/on/off/true/false as booleans: quote the value)",
                )),
                _ => return Err(expected(path, node, "a string")),
            }),
            Kind::Bytes => match &node.value {
                Value::Str(s) => PValue::Bytes(
                    base64_decode(s)
                        .ok_or_else(|| expected(path, node, "base64 text"))?
                        .into(),
                ),
                _ => return Err(expected(path, node, "base64 text")),
            },
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                PValue::I32(int_in_range(node, path, i32::MIN.into(), i32::MAX.into())? as i32)
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                PValue::I64(int_in_range(node, path, i64::MIN.into(), i64::MAX.into())? as i64)
            }
            Kind::Uint32 | Kind::Fixed32 => PValue::U32(int_in_range(node, path, 0, u32::MAX.into())? as u32),
            Kind::Uint64 | Kind::Fixed64 => PValue::U64(int_in_range(node, path, 0, u64::MAX.into())? as u64),
            Kind::Double => PValue::F64(float(node, path)?),
            Kind::Float => PValue::F32(float(node, path)? as f32),
        })
    }

    /// google.protobuf types with a special JSON form. `None`: not one of them.
    fn well_known(
        &mut self,
        desc: &MessageDescriptor,
        node: &Node,
        path: &str,
    ) -> Result<Option<DynamicMessage>, ConfigError> {
        let name = desc.full_name();
        if !name.starts_with("google.protobuf.") {
            return Ok(None);
        }
        let mut msg = DynamicMessage::new(desc.clone());
        match name {
            "google.protobuf.Duration" => {
                let (seconds, nanos) = match &node.value {
                    Value::Str(s) => parse_duration(s),
                    _ => None,
                }
                .ok_or_else(|| expected(path, node, "a duration like \"0.25s\""))?;
                msg.set_field_by_name("seconds", PValue::I64(seconds));
                msg.set_field_by_name("nanos", PValue::I32(nanos));
            }
            "google.protobuf.Timestamp" => {
                let (seconds, nanos) = match &node.value {
                    Value::Str(s) => parse_timestamp(s),
                    _ => None,
                }
                .ok_or_else(|| expected(path, node, "an RFC 3339 time like \"2024-01-31T12:00:00.250Z\""))?;
                msg.set_field_by_name("seconds", PValue::I64(seconds));
                msg.set_field_by_name("nanos", PValue::I32(nanos));
            }
            "google.protobuf.BoolValue"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int64Value"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue" => {
                let field = desc
                    .get_field_by_name("value")
                    .ok_or_else(|| ConfigError::schema(path, node.line, "internal: wrapper without value"))?;
                let v = self.value(&field.kind(), node, path)?;
                msg.set_field(&field, v);
            }
            "google.protobuf.Struct" => {
                let Some(entries) = node.as_map() else {
                    return Err(expected(path, node, "a mapping"));
                };
                let mut fields = HashMap::new();
                let value_desc = struct_value_desc(desc)?;
                for (k, v) in entries {
                    fields.insert(
                        MapKey::String(k.name.clone()),
                        PValue::Message(json_value(&value_desc, v)?),
                    );
                }
                msg.set_field_by_name("fields", PValue::Map(fields));
            }
            "google.protobuf.Value" => return Ok(Some(json_value(desc, node)?)),
            "google.protobuf.ListValue" => {
                let Value::Seq(items) = &node.value else {
                    return Err(expected(path, node, "a list"));
                };
                let value_desc = list_value_desc(desc)?;
                let values = items
                    .iter()
                    .map(|i| json_value(&value_desc, i).map(PValue::Message))
                    .collect::<Result<_, _>>()?;
                msg.set_field_by_name("values", PValue::List(values));
            }
            "google.protobuf.Empty" => match &node.value {
                Value::Map(m) if m.is_empty() => {}
                _ => return Err(expected(path, node, "an empty mapping {}")),
            },
            "google.protobuf.Any" => return self.any(node, path).map(Some),
            _ => return Ok(None),
        }
        Ok(Some(msg))
    }

    /// An `Any`: the message type comes from `@type`, the rest of the mapping
    /// is that message.
    fn any(&mut self, node: &Node, path: &str) -> Result<DynamicMessage, ConfigError> {
        let Some(_) = node.as_map() else {
            return Err(expected(path, node, "a mapping with \"@type\""));
        };
        let Some(type_node) = node.get("@type") else {
            return Err(ConfigError::schema(path, node.line, "missing \"@type\" (e.g. \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router)"));
        };
        let Some(type_url) = type_node.as_str() else {
            return Err(expected(&child(path, "@type"), type_node, "a type URL string"));
        };
        let name = type_url.rsplit('/').next().unwrap_or(type_url);
        if matches!(name, "xds.type.v3.TypedStruct" | "udpa.type.v1.TypedStruct") {
            return self.typed_struct(node, path);
        }
        let (name, type_url) = match extensions::V2_TYPES.iter().find(|(v2, _)| *v2 == name) {
            Some((v2, v3)) => {
                self.warnings.push(Warning {
                    file: String::new(),
                    path: child(path, "@type"),
                    line: type_node.line,
                    message: format!("`{v2}` is a v2 type; the v3 type is `{v3}`"),
                });
                (*v3, format!("type.googleapis.com/{v3}"))
            }
            None => (name, type_url.to_string()),
        };
        let Some(desc) = proto::pool().get_message_by_name(name) else {
            return Err(ConfigError::not_supported(
                &child(path, "@type"),
                type_node.line,
                format!("extension type `{name}` is not supported by legate yet"),
            ));
        };
        let mut rest = node.clone();
        rest.remove("@type");
        let inner = if name.starts_with("google.protobuf.")
            && !matches!(name, "google.protobuf.Struct" | "google.protobuf.Empty")
        {
            // Well-known types in an Any carry their JSON form under "value".
            let v = rest
                .get("value")
                .cloned()
                .unwrap_or_else(|| Node::new(Value::Null));
            self.message(&desc, &v, &child(path, "value"))?
        } else {
            self.message(&desc, &rest, path)?
        };
        let any_desc = proto::pool()
            .get_message_by_name("google.protobuf.Any")
            .ok_or_else(|| ConfigError::schema(path, node.line, "internal: no google.protobuf.Any"))?;
        let mut any = DynamicMessage::new(any_desc);
        any.set_field_by_name("type_url", PValue::String(type_url));
        any.set_field_by_name("value", PValue::Bytes(inner.encode_to_vec().into()));
        Ok(any)
    }
}

impl Decoder<'_> {
    /// `TypedStruct` carries an extension's config as a Struct with its type
    /// in `type_url`; it means the same as an Any of that type.
    fn typed_struct(&mut self, node: &Node, path: &str) -> Result<DynamicMessage, ConfigError> {
        let Some(inner_type) = node.get("type_url").and_then(Node::as_str) else {
            return Err(ConfigError::schema(
                &child(path, "type_url"),
                node.line,
                "a TypedStruct needs a `type_url`",
            ));
        };
        let mut inner = node
            .get("value")
            .cloned()
            .unwrap_or_else(|| Node::new(Value::Map(Vec::new())));
        if matches!(inner.value, Value::Null) {
            inner = Node::new(Value::Map(Vec::new()));
        }
        let Some(map) = inner.as_map_mut() else {
            return Err(expected(&child(path, "value"), &inner, "a mapping"));
        };
        map.insert(
            0,
            (
                super::yaml::Key {
                    name: "@type".into(),
                    line: node.line,
                },
                Node::str(inner_type),
            ),
        );
        self.any(&inner, &child(path, "value"))
    }
}

fn is_optional(node: &Node) -> bool {
    matches!(
        node.get("is_optional")
            .or_else(|| node.get("isOptional"))
            .map(|n| &n.value),
        Some(Value::Bool(true))
    )
}

fn unknown_field(desc: &MessageDescriptor, name: &str, path: &str, line: u64) -> ConfigError {
    let known: Vec<String> = desc.fields().map(|f| f.name().to_string()).collect();
    let suggestion = known
        .iter()
        .map(|k| (edit_distance(k, name), k))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, k)| format!("; did you mean `{k}`?"))
        .unwrap_or_default();
    ConfigError::schema(
        path,
        line,
        format!(
            "unknown field `{name}` in {}{suggestion} (if it is an Envoy field, legate does not support it yet)",
            desc.full_name()
        ),
    )
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn int_in_range(node: &Node, path: &str, min: i128, max: i128) -> Result<i128, ConfigError> {
    let v = match &node.value {
        Value::Int(i) => Some(*i),
        // proto3 JSON allows integers as strings ("80"), and 64-bit ones usually are.
        Value::Str(s) => s.trim().parse::<i128>().ok(),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e38 => Some(*f as i128),
        _ => None,
    };
    let v = v.ok_or_else(|| expected(path, node, "an integer"))?;
    if v < min || v > max {
        return Err(ConfigError::schema(
            path,
            node.line,
            format!("{v} is out of range; expected {min}..={max}"),
        ));
    }
    Ok(v)
}

fn float(node: &Node, path: &str) -> Result<f64, ConfigError> {
    match &node.value {
        Value::Int(i) => Ok(*i as f64),
        Value::Float(f) => Ok(*f),
        Value::Str(s) => match s.as_str() {
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            s => s.parse().map_err(|_| expected(path, node, "a number")),
        },
        _ => Err(expected(path, node, "a number")),
    }
}

/// proto3 JSON duration: decimal seconds with an `s` suffix, e.g. `0.25s`, `-1.5s`, `30s`.
pub fn parse_duration(s: &str) -> Option<(i64, i32)> {
    let body = s.strip_suffix('s')?;
    let (negative, body) = match body.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, body),
    };
    let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
    {
        return None;
    }
    let seconds: i64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    // Envoy (and protobuf) cap durations at 10,000 years.
    if seconds > 315_576_000_000 {
        return None;
    }
    let nanos: i32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(if negative {
        (-seconds, -nanos)
    } else {
        (seconds, nanos)
    })
}

/// proto3 JSON timestamp: RFC 3339 with an upper-case `T`, up to nine
/// fractional digits and `Z` or a `±HH:MM` offset, between years 1 and 9999
/// (protobuf's range), e.g. `2024-01-31T12:00:00.250Z`. Returns seconds and
/// nanos since the Unix epoch, nanos never negative.
pub fn parse_timestamp(s: &str) -> Option<(i64, i32)> {
    // chrono also takes a space or a lower-case `t` between date and time,
    // and more than nine fractional digits; protobuf takes neither.
    let (_date, rest) = s.split_at_checked(10)?;
    let time = rest.strip_prefix('T')?;
    let frac_len = time
        .get(8..)
        .and_then(|t| t.strip_prefix('.'))
        .map_or(0, |f| f.bytes().take_while(u8::is_ascii_digit).count());
    if frac_len > 9 {
        return None;
    }
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    let seconds = t.timestamp();
    // 0001-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z
    if !(-62_135_596_800..=253_402_300_799).contains(&seconds) {
        return None;
    }
    Some((seconds, t.timestamp_subsec_nanos() as i32))
}

fn struct_value_desc(struct_desc: &MessageDescriptor) -> Result<MessageDescriptor, ConfigError> {
    struct_desc
        .parent_pool()
        .get_message_by_name("google.protobuf.Value")
        .ok_or_else(|| ConfigError::schema("", 0, "internal: no google.protobuf.Value"))
}

fn list_value_desc(desc: &MessageDescriptor) -> Result<MessageDescriptor, ConfigError> {
    struct_value_desc(desc)
}

/// Any YAML value as a google.protobuf.Value.
fn json_value(value_desc: &MessageDescriptor, node: &Node) -> Result<DynamicMessage, ConfigError> {
    let pool = value_desc.parent_pool();
    let mut v = DynamicMessage::new(value_desc.clone());
    match &node.value {
        Value::Null => v.set_field_by_name("null_value", PValue::EnumNumber(0)),
        Value::Bool(b) => v.set_field_by_name("bool_value", PValue::Bool(*b)),
        Value::Int(i) => v.set_field_by_name("number_value", PValue::F64(*i as f64)),
        Value::Float(f) => v.set_field_by_name("number_value", PValue::F64(*f)),
        Value::Str(s) => v.set_field_by_name("string_value", PValue::String(s.clone())),
        Value::Seq(items) => {
            let list_desc = pool
                .get_message_by_name("google.protobuf.ListValue")
                .ok_or_else(|| ConfigError::schema("", 0, "internal: no ListValue"))?;
            let mut list = DynamicMessage::new(list_desc);
            let values = items
                .iter()
                .map(|i| json_value(value_desc, i).map(PValue::Message))
                .collect::<Result<_, _>>()?;
            list.set_field_by_name("values", PValue::List(values));
            v.set_field_by_name("list_value", PValue::Message(list));
        }
        Value::Map(entries) => {
            let struct_desc = pool
                .get_message_by_name("google.protobuf.Struct")
                .ok_or_else(|| ConfigError::schema("", 0, "internal: no Struct"))?;
            let mut s = DynamicMessage::new(struct_desc);
            let mut fields = HashMap::new();
            for (k, val) in entries {
                fields.insert(
                    MapKey::String(k.name.clone()),
                    PValue::Message(json_value(value_desc, val)?),
                );
            }
            s.set_field_by_name("fields", PValue::Map(fields));
            v.set_field_by_name("struct_value", PValue::Message(s));
        }
    }
    Ok(v)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    }
    let clean: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("0.25s", Some((0, 250_000_000))),
            ("1s", Some((1, 0))),
            ("30s", Some((30, 0))),
            ("-1.5s", Some((-1, -500_000_000))),
            (".5s", Some((0, 500_000_000))),
            ("0.000000001s", Some((0, 1))),
            ("1", None),
            ("1m", None),
            ("s", None),
            ("1.0000000001s", None),
            ("abc", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), want, "{text}");
        }
    }

    #[test]
    fn timestamps() {
        let cases = [
            ("1970-01-01T00:00:00Z", Some((0, 0))),
            ("2023-11-14T22:13:20.123Z", Some((1_700_000_000, 123_000_000))),
            ("2023-11-14T22:13:20.000000001Z", Some((1_700_000_000, 1))),
            // Offsets are accepted and normalised to UTC.
            ("2023-11-14T23:13:20+01:00", Some((1_700_000_000, 0))),
            ("1969-12-31T23:59:59.5Z", Some((-1, 500_000_000))),
            ("0001-01-01T00:00:00Z", Some((-62_135_596_800, 0))),
            (
                "9999-12-31T23:59:59.999999999Z",
                Some((253_402_300_799, 999_999_999)),
            ),
            ("2023-11-14T22:13:20", None),
            ("2023-11-14 22:13:20Z", None),
            ("2023-11-14t22:13:20Z", None),
            ("2023-11-14T22:13:20.1234567891Z", None),
            ("2023-13-14T22:13:20Z", None),
            ("1700000000", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_timestamp(text), want, "{text}");
        }
    }

    #[test]
    fn timestamp_field_decodes_and_bad_text_names_the_field() {
        let node = crate::config::yaml::parse(
            "bootstrap: {node: {id: node-1}}\nlast_updated: \"2023-11-14T22:13:20.123Z\"\n",
        )
        .unwrap();
        let (mut w, mut l) = (Vec::new(), HashMap::new());
        let m = decode("envoy.admin.v3.BootstrapConfigDump", &node, &mut w, &mut l).unwrap();
        let dump: crate::proto::envoy::admin::v3::BootstrapConfigDump = m.transcode_to().unwrap();
        let ts = dump.last_updated.unwrap();
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_000_000));
        let node = crate::config::yaml::parse("last_updated: 1700000000\n").unwrap();
        let err = decode("envoy.admin.v3.BootstrapConfigDump", &node, &mut w, &mut l).unwrap_err();
        assert!(err.to_string().contains("last_updated"), "{err}");
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGk").unwrap(), b"hi");
        assert!(base64_decode("a$").is_none());
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("connect_timeout", "conect_timeout"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("", "ab"), 2);
    }
}
