//! `legate --mode validate` on good and bad bootstraps: the real binary, real
//! files. Every bad config must exit 1 and name the file, the field path and
//! what was expected.

use super::support::{conformance_dir, run, validate, Dir};

/// A small, valid v3 bootstrap; cases below edit it.
const BASE: &str = r#"static_resources:
  listeners:
  - name: ingress
    address:
      socket_address: { address: 127.0.0.1, port_value: 10000 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          route_config:
            name: local_route
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match: { prefix: "/service/1" }
                route: { cluster: service1 }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: service1
    connect_timeout: 0.25s
    type: STRICT_DNS
    lb_policy: ROUND_ROBIN
    load_assignment:
      cluster_name: service1
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: localhost, port_value: 8080 }
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 9901 }
"#;

fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "case edits text that is not in BASE: {from}");
    BASE.replacen(from, to, 1)
}

#[test]
fn base_config_is_valid() {
    let dir = Dir::new();
    let r = validate(&dir.write("base.yaml", BASE));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains("configuration '") && r.stdout.contains("base.yaml' OK"),
        "{}",
        r.stdout
    );
}

#[test]
fn consistent_hash_configs_are_valid() {
    let dir = Dir::new();
    let hash_policy = "route: { cluster: service1, hash_policy: [{ header: { header_name: x-user } }, { cookie: { name: s, ttl: 60s } }, { connection_properties: { source_ip: true } }, { query_parameter: { name: u }, terminal: true }, { filter_state: { key: k } }] }";
    let cases = [
        edit("lb_policy: ROUND_ROBIN", "lb_policy: RING_HASH\n    ring_hash_lb_config: { minimum_ring_size: 64, maximum_ring_size: 4096, hash_function: MURMUR_HASH_2 }"),
        edit("lb_policy: ROUND_ROBIN", "lb_policy: MAGLEV\n    maglev_lb_config: { table_size: 5000011 }"),
        edit("lb_policy: ROUND_ROBIN", "lb_policy: MAGLEV").replacen("route: { cluster: service1 }", hash_policy, 1),
    ];
    for (i, text) in cases.iter().enumerate() {
        let r = validate(&dir.write(&format!("hash{i}.yaml"), text));
        assert_eq!(r.code, Some(0), "case {i}: {}", r.stderr);
    }
}

/// (case, config text, substrings the error must contain)
fn bad_cases() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let second_cluster =
        "  - name: service1\n    connect_timeout: 1s\n    load_assignment: {cluster_name: service1}\nadmin:";
    let second_vhost = "          http_filters:";
    vec![
        (
            "missing stat_prefix",
            edit("          stat_prefix: ingress_http\n", ""),
            vec!["static_resources.listeners[0].filter_chains[0].filters[0].typed_config.stat_prefix", "non-empty `stat_prefix`"],
        ),
        (
            "missing domains",
            edit("              domains: [\"*\"]\n", ""),
            vec!["virtual_hosts[0].domains", "at least one domain"],
        ),
        (
            "port out of range",
            edit("port_value: 10000", "port_value: 70000"),
            vec!["static_resources.listeners[0].address.socket_address.port_value", "70000 is not a port"],
        ),
        (
            "zero connect_timeout",
            edit("connect_timeout: 0.25s", "connect_timeout: 0s"),
            vec!["static_resources.clusters[0].connect_timeout", "greater than 0s", ":26:"],
        ),
        (
            "connect_timeout not a duration",
            edit("connect_timeout: 0.25s", "connect_timeout: 250"),
            vec!["static_resources.clusters[0].connect_timeout", "expected a duration like \"0.25s\", found an integer", ":26:"],
        ),
        (
            "duplicate cluster name",
            BASE.replacen("admin:", second_cluster, 1),
            vec!["static_resources.clusters[1].name", "duplicate cluster name `service1`"],
        ),
        (
            "duplicate listener address",
            BASE.replacen(
                "  clusters:",
                "  - name: other\n    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}\n    filter_chains: [{filters: [{name: x, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager, stat_prefix: b, route_config: {}, http_filters: [{name: envoy.filters.http.router}]}}]}]\n  clusters:",
                1,
            ),
            vec!["static_resources.listeners[1].address", "127.0.0.1:10000 is also used by static_resources.listeners[0]"],
        ),
        (
            "duplicate domain across virtual hosts",
            edit(second_vhost, "            - name: other\n              domains: [\"*\"]\n              routes: []\n          http_filters:"),
            vec!["virtual_hosts[1].domains[0]", "domain `*` is also in virtual_hosts[0]"],
        ),
        (
            "router not last",
            edit(
                "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n",
                "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n          - name: second.router\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n",
            ),
            vec!["http_filters[0]", "the router filter must be the last HTTP filter"],
        ),
        (
            "no http filters",
            edit("          http_filters:\n          - name: envoy.filters.http.router\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n", ""),
            vec!["typed_config.http_filters", "must end with the router filter"],
        ),
        (
            "regex that does not compile",
            edit("match: { prefix: \"/service/1\" }", "match: { safe_regex: { regex: \"/service/(1\" } }"),
            vec!["routes[0].match.safe_regex.regex", "invalid regex `/service/(1`"],
        ),
        (
            "route to an unknown cluster",
            edit("route: { cluster: service1 }", "route: { cluster: service9 }"),
            vec!["routes[0].route.cluster", "unknown cluster `service9`"],
        ),
        (
            "field legate does not implement",
            edit("route: { cluster: service1 }", "route: { cluster: service1, retry_policy: { retry_on: 5xx } }"),
            vec!["routes[0].route.retry_policy", "not supported: `retry_policy` is not supported by legate yet"],
        ),
        (
            "extension legate does not implement",
            edit(
                "          http_filters:\n",
                "          http_filters:\n          - name: envoy.filters.http.cors\n            typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}\n",
            ),
            vec!["http_filters[0].typed_config.@type", "extension type `envoy.extensions.filters.http.cors.v3.Cors` is not supported by legate yet"],
        ),
        (
            "misspelled field",
            edit("connect_timeout: 0.25s", "conect_timeout: 0.25s"),
            vec!["static_resources.clusters[0].conect_timeout", "unknown field `conect_timeout`", "did you mean `connect_timeout`?"],
        ),
        (
            "wrong scalar type",
            edit("port_value: 10000", "port_value: ten"),
            vec!["port_value", "expected an integer, found a string"],
        ),
        (
            "unknown enum value",
            edit("type: STRICT_DNS", "type: STRICTDNS"),
            vec!["static_resources.clusters[0].type", "unknown value `STRICTDNS`", "STRICT_DNS"],
        ),
        (
            "two members of a oneof",
            edit("match: { prefix: \"/service/1\" }", "match: { prefix: \"/a\", path: \"/b\" }"),
            vec!["routes[0].match.path", "only one of the `path_specifier` group"],
        ),
        ("invalid YAML", "static_resources: [1, 2\n".to_string(), vec!["invalid YAML/JSON"]),
        (
            "listener address that is a hostname",
            edit("address: 127.0.0.1, port_value: 10000", "address: example.com, port_value: 10000"),
            vec!["listeners[0].address.socket_address.address", "`example.com` is not an IP address"],
        ),
        (
            "unsupported lb policy",
            edit("lb_policy: ROUND_ROBIN", "lb_policy: CLUSTER_PROVIDED"),
            vec!["clusters[0].lb_policy", "not supported: lb_policy CLUSTER_PROVIDED"],
        ),
        (
            "maglev table size not prime",
            edit("lb_policy: ROUND_ROBIN", "lb_policy: MAGLEV\n    maglev_lb_config: { table_size: 65536 }"),
            vec!["static_resources.clusters[0].maglev_lb_config.table_size", "must be a prime number, found 65536"],
        ),
        (
            "ring hash minimum above maximum",
            edit(
                "lb_policy: ROUND_ROBIN",
                "lb_policy: RING_HASH\n    ring_hash_lb_config: { minimum_ring_size: 2048, maximum_ring_size: 1024 }",
            ),
            vec![
                "static_resources.clusters[0].ring_hash_lb_config.minimum_ring_size",
                "minimum_ring_size (2048) > maximum_ring_size (1024)",
            ],
        ),
        (
            "hash policy without a specifier",
            edit("route: { cluster: service1 }", "route: { cluster: service1, hash_policy: [{ terminal: true }] }"),
            vec!["routes[0].route.hash_policy[0]", "needs one of `header`, `cookie`"],
        ),
        (
            "hash policy header without a name",
            edit("route: { cluster: service1 }", "route: { cluster: service1, hash_policy: [{ header: {} }] }"),
            vec!["routes[0].route.hash_policy[0].header.header_name", "must not be empty"],
        ),
    ]
}

#[test]
fn bad_configs_are_rejected_with_path_and_reason() {
    let dir = Dir::new();
    let mut failures = Vec::new();
    for (i, (case, text, wants)) in bad_cases().into_iter().enumerate() {
        let path = dir.write(&format!("bad{i}.yaml"), &text);
        let r = validate(&path);
        let file = path.display().to_string();
        if r.code != Some(1) {
            failures.push(format!("{case}: exit {:?}, want 1; stderr: {}", r.code, r.stderr));
            continue;
        }
        if r.stderr.contains("panicked") {
            failures.push(format!("{case}: panicked: {}", r.stderr));
        }
        for want in wants.iter().chain([&file.as_str()]) {
            if !r.stderr.contains(want) {
                failures.push(format!("{case}: stderr lacks {want:?}: {}", r.stderr.trim()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn missing_file_and_unknown_extension_are_clear_errors() {
    let r = run(&["--mode", "validate", "-c", "/nonexistent/legate.yaml"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("/nonexistent/legate.yaml") && r.stderr.contains("cannot read"),
        "{}",
        r.stderr
    );
    let dir = Dir::new();
    let r = validate(&dir.write("config.toml", BASE));
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("expected .yaml, .yml or .json"), "{}", r.stderr);
}

#[test]
fn bad_config_in_serve_mode_exits_1_before_binding() {
    let dir = Dir::new();
    let path = dir.write("bad.yaml", &edit("port_value: 10000", "port_value: 70000"));
    let r = run(&["-c", path.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("70000 is not a port"), "{}", r.stderr);
}

#[test]
fn envoy_leniencies_are_accepted() {
    // lowercase enums, a single mapping where a list is expected, null for an
    // unset message, camelCase names, a router given by name only.
    let text = r#"
staticResources:
  listeners:
    name: l
    address: { socket_address: { address: "::1", port_value: 10001 } }
    filter_chains:
      filter_chain_match:
      filters:
        name: envoy.filters.network.http_connection_manager
        typedConfig:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          codec_type: auto
          statPrefix: s
          route_config: { virtual_hosts: { name: v, domains: "*", routes: [] } }
          http_filters: { name: envoy.filters.http.router }
  clusters:
  - name: c
    type: strict_dns
    lb_policy: least_request
    connectTimeout: 1s
"#;
    let dir = Dir::new();
    let r = validate(&dir.write("lenient.yaml", text));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr.contains("has no `typed_config`"),
        "router by name should warn: {}",
        r.stderr
    );
}

#[test]
fn json_configs_load() {
    let json = r#"{
  "static_resources": {
    "clusters": [{"name": "c", "connectTimeout": "0.5s", "type": "STATIC",
      "load_assignment": {"cluster_name": "c", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": "8080"}}}}]}]}}]
  }
}"#;
    let dir = Dir::new();
    let r = validate(&dir.write("c.json", json));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // A STATIC cluster's endpoints must be IPs; the error points into the JSON.
    let r = validate(&dir.write("d.json", &json.replace("127.0.0.1", "localhost")));
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("d.json:4:") && r.stderr.contains("`localhost` is not an IP address"),
        "{}",
        r.stderr
    );
}

#[test]
fn config_yaml_merges_over_the_file() {
    let dir = Dir::new();
    let path = dir.write("base.yaml", BASE);
    let extra = "{static_resources: {clusters: [{name: extra, connect_timeout: 2s}]}, admin: {address: {socket_address: {port_value: 9902}}}}";
    let r = run(&[
        "--mode",
        "validate",
        "--print-config",
        "-c",
        path.to_str().unwrap(),
        "--config-yaml",
        extra,
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // Lists are appended, scalars replaced, messages merged (address kept).
    assert!(
        r.stdout.contains("name: service1") && r.stdout.contains("name: extra"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("port_value: 9902") && !r.stdout.contains("port_value: 9901"),
        "{}",
        r.stdout
    );
    let admin = r.stdout.split("\nadmin:").nth(1).expect("admin section");
    assert!(
        admin.contains("address: \"127.0.0.1\""),
        "admin address lost in the merge: {admin}"
    );
    // --config-yaml alone is a whole config.
    let alone = "{static_resources: {clusters: [{name: extra, connect_timeout: 2s}]}}";
    let r = run(&["--mode", "validate", "--config-yaml", alone]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains("configuration '--config-yaml' OK"),
        "{}",
        r.stdout
    );
    // A bad --config-yaml names itself.
    let r = run(&["--mode", "validate", "--config-yaml", "{admin: {adress: {}}}"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("--config-yaml") && r.stderr.contains("unknown field `adress`"),
        "{}",
        r.stderr
    );
}

#[test]
fn v2_tutorial_files_load_with_one_warning_per_legacy_construct() {
    let dir = conformance_dir();
    let front = dir.join("v2-front-proxy__front-envoy.yaml");
    let r = validate(&front);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let count = |needle: &str| r.stderr.matches(needle).count();
    // 2 filters × (v2 name + `config:`), 2 clusters × (`hosts` + http2_protocol_options), admin access_log_path.
    assert_eq!(count("is a v2 extension name"), 2, "{}", r.stderr);
    assert_eq!(count("`config` is the v2 form"), 2, "{}", r.stderr);
    assert_eq!(count("`hosts` is the v2 form"), 2, "{}", r.stderr);
    assert_eq!(
        count("cluster `http2_protocol_options` is deprecated"),
        2,
        "{}",
        r.stderr
    );
    assert_eq!(count("`access_log_path` is deprecated"), 1, "{}", r.stderr);
    assert_eq!(
        r.stderr.lines().filter(|l| l.contains("WARN")).count(),
        9,
        "{}",
        r.stderr
    );

    let r = validate(&dir.join("v2-front-proxy__service-envoy.yaml"));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
}

#[test]
fn print_config_upgrades_a_v2_file_to_v3_that_loads_cleanly() {
    let front = conformance_dir().join("v2-front-proxy__front-envoy.yaml");
    let r = run(&[
        "--mode",
        "validate",
        "--print-config",
        "-c",
        front.to_str().unwrap(),
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let yaml = r
        .stdout
        .replace(&format!("configuration '{}' OK\n", front.display()), "");
    for want in [
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "load_assignment:",
        "explicit_http_config:",
        "type: STRICT_DNS",
        "connect_timeout: 0.250s",
    ] {
        assert!(yaml.contains(want), "printed config lacks {want}:\n{yaml}");
    }
    let dir = Dir::new();
    let r = validate(&dir.write("v3.yaml", &yaml));
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        !r.stderr.contains("WARN"),
        "the upgraded file still has legacy constructs: {}",
        r.stderr
    );
}

#[test]
fn current_front_proxy_service_configs_load() {
    let dir = conformance_dir();
    for f in [
        "front-proxy__service-envoy.yaml",
        "front-proxy__service-envoy-2.yaml",
    ] {
        let r = validate(&dir.join(f));
        assert_eq!(r.code, Some(0), "{f}: {}", r.stderr);
    }
}

#[test]
fn cli_flags_follow_envoy() {
    let r = run(&["--version"]);
    assert_eq!(r.code, Some(0));
    assert!(r.stdout.contains("legate"), "{}", r.stdout);
    let r = run(&["--help"]);
    for flag in [
        "--config-path",
        "--config-yaml",
        "--mode",
        "--log-level",
        "--component-log-level",
        "--log-path",
        "--concurrency",
        "--service-node",
        "--service-cluster",
        "--service-zone",
        "--drain-time-s",
        "--parent-shutdown-time-s",
        "--base-id",
        "--restart-epoch",
    ] {
        assert!(r.stdout.contains(flag), "--help lacks {flag}");
    }
    let r = run(&["--mode", "validate", "-l", "loud"]);
    assert_eq!(r.code, Some(2), "bad flag values are usage errors");
}
