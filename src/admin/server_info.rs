//! `/server_info`, `/ready`, `/memory`, `/certs`, `/hot_restart_version`,
//! `/runtime` and `/runtime_modify`.

use clap::Parser;
use serde_json::{json, Map, Value};

use super::{pretty_json, AdminState, Query, Reply, ServerState};

/// Envoy's version string shape, `<sha>/<version>/<Clean|Modified>/<RELEASE|DEBUG>/<ssl>`:
/// the git sha given at build time in `LEGATE_GIT_SHA` (else `0`), the
/// crate version, `Clean`, the build profile, and `no-ssl` (legate has no
/// TLS yet).
pub fn version_string() -> String {
    let sha = option_env!("LEGATE_GIT_SHA").unwrap_or("0");
    let profile = if cfg!(debug_assertions) {
        "DEBUG"
    } else {
        "RELEASE"
    };
    format!("{sha}/{}/Clean/{profile}/no-ssl", env!("CARGO_PKG_VERSION"))
}

/// `GET /ready`: `LIVE` and 200, else the state name and 503.
pub fn ready(state: &AdminState, _: &Query) -> Reply {
    let s = state.state();
    let code = if s == ServerState::Live { 200 } else { 503 };
    Reply::text(code, format!("{}\n", s.name()))
}

fn duration_json(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs())
}

/// Envoy's `CommandLineOptions` from our parsed command line: every field,
/// in field-number order, as Envoy prints this message (protobuf's JSON
/// printer with default values included). Options legate does not have show
/// Envoy's defaults, except the hot-restart ones (legate has no hot restart).
fn command_line_options(state: &AdminState) -> Value {
    let args = crate::cli::Args::try_parse_from(&state.args)
        .or_else(|_| crate::cli::Args::try_parse_from(["legate"]))
        .ok();
    let Some(a) = args else {
        return json!({});
    };
    let path =
        |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let mode = match a.mode {
        crate::cli::Mode::Serve => "Serve",
        crate::cli::Mode::Validate => "Validate",
        crate::cli::Mode::InitOnly => "InitOnly",
    };
    let level = match a.log_level {
        crate::cli::LogLevel::Trace => "trace",
        crate::cli::LogLevel::Debug => "debug",
        crate::cli::LogLevel::Info => "info",
        crate::cli::LogLevel::Warning => "warning",
        crate::cli::LogLevel::Error => "error",
        crate::cli::LogLevel::Critical => "critical",
        crate::cli::LogLevel::Off => "off",
    };
    json!({
        "base_id": a.base_id.to_string(),
        "concurrency": state.concurrency,
        "config_path": path(&a.config_path),
        "config_yaml": a.config_yaml.clone().unwrap_or_default(),
        "allow_unknown_static_fields": false,
        "admin_address_path": "",
        "local_address_ip_version": "v4",
        "log_level": level,
        "component_log_level": a.component_log_level.clone().unwrap_or_default(),
        "log_format": "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v",
        "log_path": path(&a.log_path),
        "service_cluster": a.service_cluster.clone().unwrap_or_default(),
        "service_node": a.service_node.clone().unwrap_or_default(),
        "service_zone": a.service_zone.clone().unwrap_or_default(),
        "file_flush_interval": "10s",
        "drain_time": format!("{}s", a.drain_time_s),
        "parent_shutdown_time": format!("{}s", a.parent_shutdown_time_s),
        "mode": mode,
        "disable_hot_restart": true,
        "enable_mutex_tracing": false,
        "restart_epoch": a.restart_epoch,
        "cpuset_threads": false,
        "reject_unknown_dynamic_fields": false,
        "log_format_escaped": false,
        "disabled_extensions": [],
        "ignore_unknown_dynamic_fields": false,
        "use_dynamic_base_id": false,
        "base_id_path": "",
        "drain_strategy": "Gradual",
        "enable_fine_grain_logging": false,
        "socket_path": "",
        "socket_mode": 0,
        "enable_core_dump": false,
        "stats_tag": [],
        "skip_hot_restart_on_no_parent": false,
        "skip_hot_restart_parent_stats": false,
        "skip_deprecated_logs": false,
        "file_flush_min_size": 0,
        "log_stacktrace_single_entry": false,
    })
}

/// `GET /server_info`: `envoy.admin.v3.ServerInfo`.
pub fn server_info(state: &AdminState, _: &Query) -> Reply {
    let uptime = duration_json(state.started.elapsed());
    let node = state
        .bootstrap_json
        .get("node")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let v = json!({
        "version": version_string(),
        "state": state.state().name(),
        "uptime_current_epoch": uptime,
        "uptime_all_epochs": uptime,
        "hot_restart_version": "disabled",
        "command_line_options": command_line_options(state),
        "node": node,
        "hot_restart_initializing": false,
    });
    Reply::json(200, pretty_json(&v))
}

/// `GET /hot_restart_version`: legate has no hot restart.
pub fn hot_restart_version(_: &AdminState, _: &Query) -> Reply {
    Reply::text(200, "disabled")
}

/// `GET /certs`: no TLS yet, so no certificates.
pub fn certs(_: &AdminState, _: &Query) -> Reply {
    Reply::json(200, pretty_json(&json!({ "certificates": [] })))
}

/// Resident set size from `/proc/self/status` (Linux), in bytes.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `GET /memory`: Envoy's `envoy.admin.v3.Memory` (uint64 as strings).
/// legate uses mimalloc, whose counters are not read here: `allocated`,
/// `heap_size` and `total_physical_bytes` are the process RSS.
pub fn memory(_: &AdminState, _: &Query) -> Reply {
    let rss = rss_bytes().unwrap_or(0).to_string();
    let v = json!({
        "allocated": rss,
        "heap_size": rss,
        "pageheap_unmapped": "0",
        "pageheap_free": "0",
        "total_thread_cache": "0",
        "total_physical_bytes": rss,
    });
    Reply::json(200, pretty_json(&v))
}

/// Flattens a static layer `Struct` into `a.b.c` keys with string values,
/// as Envoy's runtime loader does.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Bool(b) => out.push((prefix.to_string(), b.to_string())),
        // Struct numbers are doubles; Envoy prints 5, not 5.0.
        Value::Number(n) => {
            let s = match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
                _ => n.to_string(),
            };
            out.push((prefix.to_string(), s));
        }
        Value::Null => out.push((prefix.to_string(), String::new())),
        Value::Array(_) => out.push((prefix.to_string(), v.to_string())),
    }
}

/// `GET /runtime`: the layers of `layered_runtime` and every key with its
/// value per layer (static layers and `/runtime_modify` overrides; disk and
/// RTDS layers are listed without values).
pub fn runtime(state: &AdminState, _: &Query) -> Reply {
    let layers_json = state
        .bootstrap_json
        .pointer("/layered_runtime/layers")
        .and_then(|l| l.as_array())
        .cloned()
        .unwrap_or_default();
    let overrides = state
        .runtime_overrides
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut names = Vec::new();
    // Per layer: key -> value.
    let mut values: Vec<std::collections::BTreeMap<String, String>> = Vec::new();
    for l in &layers_json {
        names.push(Value::from(l.get("name").and_then(|n| n.as_str()).unwrap_or("")));
        let mut kv = std::collections::BTreeMap::new();
        if let Some(s) = l.get("static_layer") {
            let mut flat = Vec::new();
            flatten("", s, &mut flat);
            kv.extend(flat);
        }
        if l.get("admin_layer").is_some() {
            kv.extend(overrides.clone());
        }
        values.push(kv);
    }
    let mut keys: std::collections::BTreeSet<String> =
        values.iter().flat_map(|m| m.keys().cloned()).collect();
    let has_admin_layer = layers_json.iter().any(|l| l.get("admin_layer").is_some());
    if !has_admin_layer && !overrides.is_empty() {
        names.push(Value::from("admin"));
        values.push(overrides.clone());
        keys.extend(overrides.keys().cloned());
    }
    let mut entries = Map::new();
    for k in keys {
        let layer_values: Vec<Value> = values
            .iter()
            .map(|m| Value::from(m.get(&k).cloned().unwrap_or_default()))
            .collect();
        let final_value = values
            .iter()
            .rev()
            .find_map(|m| m.get(&k).cloned())
            .unwrap_or_default();
        entries.insert(
            k,
            json!({"final_value": final_value, "layer_values": layer_values}),
        );
    }
    Reply::json(200, pretty_json(&json!({"layers": names, "entries": entries})))
}

/// `POST /runtime_modify?k=v`: sets admin-layer overrides (empty value
/// removes the key).
pub fn runtime_modify(state: &AdminState, q: &Query) -> Reply {
    if q.0.is_empty() {
        return Reply::text(
            400,
            "usage: /runtime_modify?key1=value1&key2=value2&keyN=valueN\n",
        );
    }
    let mut o = state.runtime_overrides.lock().unwrap_or_else(|e| e.into_inner());
    for (k, v) in &q.0 {
        if v.is_empty() {
            o.remove(k);
        } else {
            o.insert(k.clone(), v.clone());
        }
    }
    Reply::text(200, "OK\n")
}
