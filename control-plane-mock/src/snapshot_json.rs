//! A snapshot printed back in its file format (proto3 JSON with the proto
//! field names), so `GET /snapshot` output can be edited and `PUT` back.

use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::{Map, Value};

use crate::resource_type::ResourceType;
use crate::snapshot::{Resource, Resources, Snapshot};

pub(crate) fn render(s: &Snapshot) -> Value {
    let mut out = Map::new();
    if let Some(v) = &s.version {
        out.insert("version".into(), Value::String(v.clone()));
    }
    sections(&s.default, &mut out);
    if !s.nodes.is_empty() {
        let mut nodes = Map::new();
        for (id, r) in &s.nodes {
            let mut m = Map::new();
            sections(r, &mut m);
            nodes.insert(id.clone(), Value::Object(m));
        }
        out.insert("nodes".into(), Value::Object(nodes));
    }
    Value::Object(out)
}

fn sections(r: &Resources, out: &mut Map<String, Value>) {
    // File order: listeners, routes, clusters, endpoints (as people read them).
    for ty in [
        ResourceType::Listener,
        ResourceType::Route,
        ResourceType::Cluster,
        ResourceType::Endpoint,
    ] {
        let map = r.get(ty);
        if map.is_empty() {
            continue;
        }
        out.insert(
            ty.key().into(),
            Value::Array(map.values().map(|r| resource(ty, r)).collect()),
        );
    }
}

/// One resource as JSON; a resource that cannot be printed (it decoded
/// once, so only a descriptor bug would do it) says why instead.
pub(crate) fn resource(ty: ResourceType, r: &Resource) -> Value {
    let pool = legate::proto::pool();
    let Some(desc) = pool.get_message_by_name(ty.message_name()) else {
        return Value::String(format!("internal: no descriptor for {}", ty.message_name()));
    };
    let msg = match DynamicMessage::decode(desc, r.any.value.as_slice()) {
        Ok(m) => m,
        Err(e) => return Value::String(format!("cannot decode `{}`: {e}", r.name)),
    };
    let opts = SerializeOptions::new().use_proto_field_name(true);
    match msg.serialize_with_options(serde_json::value::Serializer, &opts) {
        Ok(v) => v,
        Err(e) => Value::String(format!("cannot print `{}`: {e}", r.name)),
    }
}

#[cfg(test)]
mod tests {
    use crate::Snapshot;

    #[test]
    fn round_trips_through_json() {
        let s = Snapshot::from_yaml(
            "version: v3\nclusters: [{name: a, connect_timeout: 0.5s}]\nnodes: {n1: {clusters: [{name: b}]}}\n",
        )
        .unwrap();
        let json = s.to_json();
        assert_eq!(json["clusters"][0]["connect_timeout"], "0.500s");
        let back = Snapshot::from_yaml(&json.to_string()).unwrap();
        assert_eq!(back, s);
    }
}
