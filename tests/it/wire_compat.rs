//! Proves that `proto/` (legate's hand-written subset of the Envoy v3 API) is
//! wire- and JSON-compatible with upstream Envoy.
//!
//! Upstream's descriptor set is the one shipped by the `envoy-types` crate
//! (generated from envoyproxy/data-plane-api). For every message, enum and
//! service we declare under `envoy.*` / `google.rpc.*`, the upstream definition
//! must exist under the same full name, and every field / value / method we
//! declare must agree with it exactly. Declaring fewer fields than upstream is
//! fine (that is what "subset" means); declaring a field differently is not.

use std::path::{Path, PathBuf};

use prost_reflect::{
    DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, ServiceDescriptor,
};

/// Packages whose declarations must match upstream. `google.protobuf` is
/// supplied by protox itself and is skipped.
fn is_checked_package(package: &str) -> bool {
    package.starts_with("envoy.") || package == "google.rpc"
}

/// Location of the descriptor set shipped by the `envoy-types`
/// dev-dependency: its version from Cargo.lock, its sources in cargo's
/// registry cache (cargo has unpacked it to build this test). Offline and
/// without `cargo metadata`, which would fetch every platform's crates.
fn upstream_descriptor_path() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).expect("read Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"envoy-types\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .and_then(|v| v.strip_suffix('"'))
        .expect("envoy-types is in Cargo.lock");
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let registry = cargo_home.join("registry/src");
    let dirs = std::fs::read_dir(&registry).unwrap_or_else(|e| panic!("read {}: {e}", registry.display()));
    for d in dirs.flatten() {
        let candidate = d
            .path()
            .join(format!("envoy-types-{version}/src/generated/types.bin"));
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "envoy-types {version} sources not found under {}",
        registry.display()
    );
}

fn upstream_pool() -> DescriptorPool {
    let path = upstream_descriptor_path();
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("cannot read upstream descriptors {}: {e}", path.display()));
    DescriptorPool::decode(bytes.as_slice())
        .unwrap_or_else(|e| panic!("cannot decode upstream descriptors {}: {e}", path.display()))
}

/// Field type, naming message and enum types by their full names.
fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Message(m) => format!("message {}", m.full_name()),
        Kind::Enum(e) => format!("enum {}", e.full_name()),
        scalar => format!("{scalar:?}").to_lowercase(),
    }
}

fn oneof_name(field: &FieldDescriptor) -> String {
    field
        .containing_oneof()
        .map_or_else(|| "(none)".to_owned(), |o| o.name().to_owned())
}

#[derive(Default)]
struct Report {
    mismatches: Vec<String>,
    messages: usize,
    fields: usize,
    enums: usize,
    enum_values: usize,
    methods: usize,
}

impl Report {
    fn mismatch(
        &mut self,
        what: impl std::fmt::Display,
        ours: impl std::fmt::Display,
        upstream: impl std::fmt::Display,
    ) {
        self.mismatches
            .push(format!("{what}: {ours} here, {upstream} upstream"));
    }

    fn check_message(&mut self, ours: &MessageDescriptor, upstream: &DescriptorPool) {
        let name = ours.full_name();
        let Some(theirs) = upstream.get_message_by_name(name) else {
            self.mismatches
                .push(format!("{name}: message does not exist upstream"));
            return;
        };
        self.messages += 1;
        let (our_file, their_file) = (ours.parent_file(), theirs.parent_file());
        if our_file.name() != their_file.name() {
            self.mismatch(format!("{name} (file)"), our_file.name(), their_file.name());
        }
        for field in ours.fields() {
            self.fields += 1;
            let what = format!("{name}.{}", field.name());
            let Some(up) = theirs.get_field_by_name(field.name()) else {
                self.mismatches
                    .push(format!("{what}: field does not exist upstream"));
                continue;
            };
            if field.number() != up.number() {
                self.mismatch(&what, format_args!("number {}", field.number()), up.number());
            }
            let (k_ours, k_up) = (kind_name(&field.kind()), kind_name(&up.kind()));
            if k_ours != k_up {
                self.mismatch(&what, format_args!("type {k_ours}"), k_up);
            }
            if field.cardinality() != up.cardinality() {
                self.mismatch(
                    &what,
                    format_args!("cardinality {:?}", field.cardinality()),
                    format_args!("{:?}", up.cardinality()),
                );
            }
            if field.is_map() != up.is_map() {
                self.mismatch(&what, format_args!("is_map {}", field.is_map()), up.is_map());
            }
            let (o_ours, o_up) = (oneof_name(&field), oneof_name(&up));
            if o_ours != o_up {
                self.mismatch(&what, format_args!("oneof {o_ours}"), o_up);
            }
            if field.json_name() != up.json_name() {
                self.mismatch(
                    &what,
                    format_args!("json_name {}", field.json_name()),
                    up.json_name(),
                );
            }
        }
    }

    fn check_enum(&mut self, ours: &EnumDescriptor, upstream: &DescriptorPool) {
        let name = ours.full_name();
        let Some(theirs) = upstream.get_enum_by_name(name) else {
            self.mismatches
                .push(format!("{name}: enum does not exist upstream"));
            return;
        };
        self.enums += 1;
        for value in ours.values() {
            self.enum_values += 1;
            let what = format!("{name}.{}", value.name());
            match theirs.get_value_by_name(value.name()) {
                None => self
                    .mismatches
                    .push(format!("{what}: enum value does not exist upstream")),
                Some(up) if up.number() != value.number() => {
                    self.mismatch(&what, format_args!("number {}", value.number()), up.number());
                }
                Some(_) => {}
            }
        }
    }

    fn check_service(&mut self, ours: &ServiceDescriptor, upstream: &DescriptorPool) {
        let name = ours.full_name();
        let Some(theirs) = upstream.get_service_by_name(name) else {
            self.mismatches
                .push(format!("{name}: service does not exist upstream"));
            return;
        };
        for method in ours.methods() {
            self.methods += 1;
            let what = format!("{name}/{}", method.name());
            let Some(up) = theirs.methods().find(|m| m.name() == method.name()) else {
                self.mismatches
                    .push(format!("{what}: method does not exist upstream"));
                continue;
            };
            let (i_ours, i_up) = (method.input(), up.input());
            if i_ours.full_name() != i_up.full_name() {
                self.mismatch(
                    &what,
                    format_args!("input {}", i_ours.full_name()),
                    i_up.full_name(),
                );
            }
            let (o_ours, o_up) = (method.output(), up.output());
            if o_ours.full_name() != o_up.full_name() {
                self.mismatch(
                    &what,
                    format_args!("output {}", o_ours.full_name()),
                    o_up.full_name(),
                );
            }
            if method.is_client_streaming() != up.is_client_streaming() {
                self.mismatch(
                    &what,
                    format_args!("client_streaming {}", method.is_client_streaming()),
                    up.is_client_streaming(),
                );
            }
            if method.is_server_streaming() != up.is_server_streaming() {
                self.mismatch(
                    &what,
                    format_args!("server_streaming {}", method.is_server_streaming()),
                    up.is_server_streaming(),
                );
            }
        }
    }
}

#[test]
fn protos_match_upstream_envoy() {
    let ours = DescriptorPool::decode(legate::proto::DESCRIPTOR_SET)
        .expect("legate's own descriptor set must decode");
    let upstream = upstream_pool();

    let mut report = Report::default();
    for message in ours.all_messages() {
        if is_checked_package(message.package_name()) {
            report.check_message(&message, &upstream);
        }
    }
    for enumeration in ours.all_enums() {
        if is_checked_package(enumeration.package_name()) {
            report.check_enum(&enumeration, &upstream);
        }
    }
    for service in ours.services() {
        if is_checked_package(service.package_name()) {
            report.check_service(&service, &upstream);
        }
    }

    assert!(
        report.mismatches.is_empty(),
        "{} difference(s) between proto/ and upstream Envoy:\n{}",
        report.mismatches.len(),
        report.mismatches.join("\n")
    );
    // Guard against a vacuous pass (e.g. an empty or mis-filtered descriptor set).
    assert!(
        report.messages > 100 && report.fields > 300 && report.enums > 10 && report.methods >= 8,
        "suspiciously little was compared: {} messages, {} fields, {} enums, {} methods",
        report.messages,
        report.fields,
        report.enums,
        report.methods
    );
    eprintln!(
        "wire_compat: {} messages / {} fields, {} enums / {} values, {} service methods match upstream",
        report.messages, report.fields, report.enums, report.enum_values, report.methods
    );
}

/// Every "not implemented yet" entry and every well-known extension type
/// names something that exists upstream, so a typo in those tables cannot
/// turn a clear "not supported" message into a silent miss.
#[test]
fn extension_tables_name_real_envoy_fields_and_types() {
    use legate::config::extensions::{BY_NAME, NOT_IMPLEMENTED, V2_TYPES};
    let upstream = upstream_pool();
    let mut missing = Vec::new();
    for (name, _) in NOT_IMPLEMENTED {
        let (message, field) = name.rsplit_once('.').expect("message.field");
        let found = upstream
            .get_message_by_name(message)
            .is_some_and(|m| m.get_field_by_name(field).is_some());
        if !found {
            missing.push(format!("NOT_IMPLEMENTED: {name}"));
        }
    }
    for (_, _, ty) in BY_NAME {
        if upstream.get_message_by_name(ty).is_none() {
            missing.push(format!("BY_NAME: {ty}"));
        }
    }
    for (_, v3) in V2_TYPES {
        if upstream.get_message_by_name(v3).is_none() {
            missing.push(format!("V2_TYPES: {v3}"));
        }
    }
    assert!(
        missing.is_empty(),
        "not in upstream Envoy's API:\n{}",
        missing.join("\n")
    );
}
