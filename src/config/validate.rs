//! Envoy's constraints on a decoded bootstrap: required fields, ranges,
//! uniqueness, the router filter last, regexes that compile, clusters that
//! exist. The decoder has already rejected unknown fields and wrong types;
//! this is what a well-typed config can still get wrong.

use std::collections::{HashMap, HashSet};

use prost::Message;

use super::error::{child, index, ConfigError};
use crate::model::cluster as model_cluster;
use crate::model::lb;
use crate::proto::envoy::config::bootstrap::v3::Bootstrap;
use crate::proto::envoy::config::cluster::v3::{cluster, Cluster};
use crate::proto::envoy::config::core::v3::{address, socket_address, Address};
use crate::proto::envoy::config::listener::v3::{filter, Listener};
use crate::proto::envoy::config::route::v3::{route, route_action, route_match, RouteConfiguration};
use crate::proto::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager, http_filter, HttpConnectionManager,
};

pub const HCM_TYPE: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
pub const ROUTER_TYPE: &str = "envoy.extensions.filters.http.router.v3.Router";
pub const UPSTREAM_HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const ACCESS_LOG_TYPES: &[&str] = &[
    "envoy.extensions.access_loggers.file.v3.FileAccessLog",
    "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
    "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
];

/// Maps a field path to its line (0: unknown).
pub type LineOf<'a> = &'a dyn Fn(&str) -> u64;

pub fn bootstrap(b: &Bootstrap, line_of: LineOf) -> Result<(), ConfigError> {
    let v = Validator { line_of };
    v.dns_field(crate::model::dns::bootstrap_resolver(b).map(|_| ()), "")?;
    let cluster_names = match &b.static_resources {
        Some(sr) => v.static_resources(sr)?,
        None => HashSet::new(),
    };
    if let Some(sr) = &b.static_resources {
        for (i, l) in sr.listeners.iter().enumerate() {
            v.listener(l, &index("static_resources.listeners", i), Some(&cluster_names))?;
        }
    }
    if let Some(admin) = &b.admin {
        if let Some(a) = &admin.address {
            v.address(a, "admin.address", true)?;
        }
        for (i, log) in admin.access_log.iter().enumerate() {
            v.access_log(log, &index("admin.access_log", i))?;
        }
    }
    if let Some(d) = &b.dynamic_resources {
        if let Some(ads) = &d.ads_config {
            v.grpc_services(
                &ads.grpc_services,
                "dynamic_resources.ads_config.grpc_services",
                &cluster_names,
            )?;
        }
    }
    Ok(())
}

/// One xDS resource (from a file or, later, a control plane), checked as the
/// same resource in a bootstrap would be. Cluster references from routes are
/// not checked: clusters may come from another source.
pub fn resource(any: &prost_types::Any, path: &str, line_of: LineOf) -> Result<(), ConfigError> {
    use crate::proto::envoy::config::endpoint::v3::ClusterLoadAssignment;
    let v = Validator { line_of };
    let ty = type_url_name(&any.type_url);
    let bad =
        |e: prost::DecodeError| ConfigError::schema(path, line_of(path), format!("cannot decode {ty}: {e}"));
    match ty {
        "envoy.config.listener.v3.Listener" => v.listener(&Listener::decode(any.value.as_slice()).map_err(bad)?, path, None),
        "envoy.config.cluster.v3.Cluster" => v.cluster(&Cluster::decode(any.value.as_slice()).map_err(bad)?, path),
        "envoy.config.route.v3.RouteConfiguration" => {
            v.route_config(&RouteConfiguration::decode(any.value.as_slice()).map_err(bad)?, path, None)
        }
        "envoy.config.endpoint.v3.ClusterLoadAssignment" => {
            ClusterLoadAssignment::decode(any.value.as_slice()).map_err(bad)?;
            Ok(())
        }
        other => Err(ConfigError::schema(
            &child(path, "@type"),
            line_of(&child(path, "@type")),
            format!("`{other}` is not an xDS resource type legate serves (Listener, Cluster, RouteConfiguration, ClusterLoadAssignment)"),
        )),
    }
}

struct Validator<'a> {
    line_of: LineOf<'a>,
}

/// Unpacks an `Any` whose type URL names `type_name`.
pub fn unpack<M: Message + Default>(any: &prost_types::Any, type_name: &str) -> Option<M> {
    if type_url_name(&any.type_url) != type_name {
        return None;
    }
    M::decode(any.value.as_slice()).ok()
}

pub fn type_url_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

impl Validator<'_> {
    /// An error at `path`, with the line of the nearest enclosing field the
    /// parser saw (a missing field has no line of its own).
    fn err(&self, path: &str, message: impl Into<String>) -> ConfigError {
        let mut p = path;
        let line = loop {
            let l = (self.line_of)(p);
            if l > 0 || p.is_empty() {
                break l;
            }
            p = match p.rfind(['.', '[']) {
                Some(i) => &p[..i],
                None => "",
            };
        };
        ConfigError::invalid(path, line, message)
    }

    fn static_resources(
        &self,
        sr: &crate::proto::envoy::config::bootstrap::v3::bootstrap::StaticResources,
    ) -> Result<HashSet<String>, ConfigError> {
        let mut names = HashSet::new();
        for (i, c) in sr.clusters.iter().enumerate() {
            let path = index("static_resources.clusters", i);
            self.cluster(c, &path)?;
            if !names.insert(c.name.clone()) {
                return Err(self.err(
                    &child(&path, "name"),
                    format!("duplicate cluster name `{}`", c.name),
                ));
            }
        }
        let mut listener_names = HashSet::new();
        let mut addresses = HashMap::new();
        for (i, l) in sr.listeners.iter().enumerate() {
            let path = index("static_resources.listeners", i);
            if !l.name.is_empty() && !listener_names.insert(l.name.clone()) {
                return Err(self.err(
                    &child(&path, "name"),
                    format!("duplicate listener name `{}`", l.name),
                ));
            }
            if let Some(key) = l.address.as_ref().and_then(socket_key) {
                if let Some(other) = addresses.insert(key.clone(), i) {
                    return Err(self.err(
                        &child(&path, "address"),
                        format!("listener address {key} is also used by static_resources.listeners[{other}]"),
                    ));
                }
            }
        }
        Ok(names)
    }

    fn cluster(&self, c: &Cluster, path: &str) -> Result<(), ConfigError> {
        if c.name.is_empty() {
            return Err(self.err(&child(path, "name"), "a cluster needs a non-empty `name`"));
        }
        if let Some(t) = &c.connect_timeout {
            if t.seconds < 0 || t.nanos < 0 || (t.seconds == 0 && t.nanos == 0) {
                return Err(self.err(&child(path, "connect_timeout"), "must be greater than 0s"));
            }
        }
        let kind = match c.cluster_discovery_type {
            Some(cluster::ClusterDiscoveryType::Type(t)) => {
                cluster::DiscoveryType::try_from(t).unwrap_or(cluster::DiscoveryType::Static)
            }
            _ => cluster::DiscoveryType::Static,
        };
        match kind {
            cluster::DiscoveryType::OriginalDst => {
                return Err(ConfigError::not_supported(
                    &child(path, "type"),
                    (self.line_of)(&child(path, "type")),
                    "ORIGINAL_DST clusters are not supported by legate yet",
                ))
            }
            cluster::DiscoveryType::Eds if c.eds_cluster_config.is_none() => {
                return Err(self.err(
                    &child(path, "eds_cluster_config"),
                    "an EDS cluster needs `eds_cluster_config` (with `eds_config`)",
                ));
            }
            _ => {}
        }
        match cluster::LbPolicy::try_from(c.lb_policy) {
            Ok(
                cluster::LbPolicy::RoundRobin | cluster::LbPolicy::LeastRequest | cluster::LbPolicy::Random,
            ) => {}
            Ok(cluster::LbPolicy::RingHash) => {
                if let Some(cluster::LbConfig::RingHashLbConfig(r)) = &c.lb_config {
                    let min = r.minimum_ring_size.unwrap_or(lb::ring_hash::DEFAULT_MIN_RING_SIZE);
                    let max = r.maximum_ring_size.unwrap_or(lb::ring_hash::DEFAULT_MAX_RING_SIZE);
                    if let Some((field, e)) = model_cluster::ring_hash_config_error(min, max) {
                        return Err(self.err(&child(&child(path, "ring_hash_lb_config"), field), e));
                    }
                }
            }
            Ok(cluster::LbPolicy::Maglev) => {
                if let Some(cluster::LbConfig::MaglevLbConfig(m)) = &c.lb_config {
                    let size = m.table_size.unwrap_or(lb::maglev::DEFAULT_TABLE_SIZE);
                    if let Some((field, e)) = model_cluster::maglev_config_error(size) {
                        return Err(self.err(&child(&child(path, "maglev_lb_config"), field), e));
                    }
                }
            }
            Ok(other) => {
                return Err(ConfigError::not_supported(
                    &child(path, "lb_policy"),
                    (self.line_of)(&child(path, "lb_policy")),
                    format!(
                    "lb_policy {} is not supported by legate yet (ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH and MAGLEV are)",
                    other.as_str_name()
                ),
                ))
            }
            Err(_) => return Err(self.err(&child(path, "lb_policy"), "unknown lb_policy")),
        }
        let mut endpoint_count = 0;
        if let Some(la) = &c.load_assignment {
            let la_path = child(path, "load_assignment");
            for (i, locality) in la.endpoints.iter().enumerate() {
                let lpath = index(&child(&la_path, "endpoints"), i);
                for (j, lb) in locality.lb_endpoints.iter().enumerate() {
                    let epath = index(&child(&lpath, "lb_endpoints"), j);
                    use crate::proto::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
                    match &lb.host_identifier {
                        Some(HostIdentifier::Endpoint(e)) => {
                            let apath = child(&child(&epath, "endpoint"), "address");
                            let Some(a) = &e.address else {
                                return Err(self.err(&apath, "an endpoint needs an `address`"));
                            };
                            // Only STATIC (and EDS) endpoints must be IPs; DNS clusters resolve names.
                            let needs_ip =
                                matches!(kind, cluster::DiscoveryType::Static | cluster::DiscoveryType::Eds);
                            self.address(a, &apath, needs_ip)?;
                            endpoint_count += 1;
                        }
                        _ => {
                            return Err(
                                self.err(&child(&epath, "endpoint"), "an lb_endpoint needs an `endpoint`")
                            )
                        }
                    }
                }
            }
        }
        if kind == cluster::DiscoveryType::LogicalDns && endpoint_count != 1 {
            return Err(self.err(
                &child(path, "load_assignment"),
                format!("a LOGICAL_DNS cluster needs exactly one endpoint, found {endpoint_count}"),
            ));
        }
        self.dns_field(crate::model::dns::ClusterDns::compile(c).map(|_| ()), path)?;
        for (key, any) in &c.typed_extension_protocol_options {
            let kpath = format!("{}[{key:?}]", child(path, "typed_extension_protocol_options"));
            let ty = type_url_name(&any.type_url);
            if key != UPSTREAM_HTTP_OPTIONS && key != "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
            {
                return Err(ConfigError::not_supported(
                    &kpath,
                    (self.line_of)(&kpath),
                    format!("protocol options for `{key}` are not supported by legate yet"),
                ));
            }
            if ty != UPSTREAM_HTTP_OPTIONS {
                return Err(self.err(
                    &kpath,
                    format!("expected \"@type\" {UPSTREAM_HTTP_OPTIONS}, found {ty}"),
                ));
            }
        }
        Ok(())
    }

    /// A socket address: a port in range, and an IP where one is required.
    fn address(&self, a: &Address, path: &str, needs_ip: bool) -> Result<(), ConfigError> {
        match &a.address {
            Some(address::Address::SocketAddress(sa)) => {
                let spath = child(path, "socket_address");
                match &sa.port_specifier {
                    Some(socket_address::PortSpecifier::PortValue(p)) if *p > 65535 => {
                        return Err(self.err(
                            &child(&spath, "port_value"),
                            format!("{p} is not a port; expected 0..=65535"),
                        ));
                    }
                    Some(socket_address::PortSpecifier::NamedPort(_)) => {
                        return Err(ConfigError::not_supported(
                            &child(&spath, "named_port"),
                            (self.line_of)(&child(&spath, "named_port")),
                            "named ports are not supported by legate yet",
                        ));
                    }
                    _ => {}
                }
                if sa.address.is_empty() {
                    return Err(self.err(
                        &child(&spath, "address"),
                        "an address is required (e.g. 0.0.0.0 or ::)",
                    ));
                }
                if needs_ip && sa.address.parse::<std::net::IpAddr>().is_err() {
                    return Err(self.err(
                        &child(&spath, "address"),
                        format!(
                            "`{}` is not an IP address; this address must be an IP",
                            sa.address
                        ),
                    ));
                }
                Ok(())
            }
            Some(_) => Err(ConfigError::not_supported(
                path,
                (self.line_of)(path),
                "only socket_address addresses are supported by legate yet",
            )),
            None => Err(self.err(path, "an address needs `socket_address`")),
        }
    }

    fn listener(
        &self,
        l: &Listener,
        path: &str,
        clusters: Option<&HashSet<String>>,
    ) -> Result<(), ConfigError> {
        // The field is in proto/ only so that snapshots for gRPC's xDS
        // clients decode (control-plane-mock); legate has no API listeners.
        if l.api_listener.is_some() {
            let p = child(path, "api_listener");
            return Err(ConfigError::not_supported(
                &p,
                (self.line_of)(&p),
                "api_listener (a listener for gRPC's or Envoy Mobile's xDS clients) is not supported by legate",
            ));
        }
        let Some(a) = &l.address else {
            return Err(self.err(&child(path, "address"), "a listener needs an `address`"));
        };
        self.address(a, &child(path, "address"), true)?;
        if l.filter_chains.is_empty() && l.default_filter_chain.is_none() {
            return Err(self.err(
                &child(path, "filter_chains"),
                "a listener needs at least one filter chain",
            ));
        }
        let chains = l
            .filter_chains
            .iter()
            .enumerate()
            .map(|(i, fc)| (index(&child(path, "filter_chains"), i), fc))
            .chain(
                l.default_filter_chain
                    .iter()
                    .map(|fc| (child(path, "default_filter_chain"), fc)),
            );
        for (cpath, fc) in chains {
            if fc.filters.is_empty() {
                return Err(self.err(
                    &child(&cpath, "filters"),
                    "a filter chain needs at least one filter",
                ));
            }
            for (i, f) in fc.filters.iter().enumerate() {
                let fpath = index(&child(&cpath, "filters"), i);
                let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                    return Err(self.err(&fpath, format!("filter `{}` needs a `typed_config`", f.name)));
                };
                let tpath = child(&fpath, "typed_config");
                let Some(hcm) = unpack::<HttpConnectionManager>(any, HCM_TYPE) else {
                    return Err(ConfigError::not_supported(
                        &tpath,
                        (self.line_of)(&tpath),
                        format!("network filter `{}` is not supported by legate yet (only the HTTP connection manager is)", type_url_name(&any.type_url)),
                    ));
                };
                if i + 1 != fc.filters.len() {
                    return Err(self.err(
                        &fpath,
                        "the HTTP connection manager must be the last network filter",
                    ));
                }
                self.hcm(&hcm, &tpath, clusters)?;
            }
        }
        for (i, log) in l.access_log.iter().enumerate() {
            self.access_log(log, &index(&child(path, "access_log"), i))?;
        }
        Ok(())
    }

    fn hcm(
        &self,
        h: &HttpConnectionManager,
        path: &str,
        clusters: Option<&HashSet<String>>,
    ) -> Result<(), ConfigError> {
        if h.stat_prefix.is_empty() {
            return Err(self.err(
                &child(path, "stat_prefix"),
                "the HTTP connection manager needs a non-empty `stat_prefix`",
            ));
        }
        match &h.route_specifier {
            Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) => {
                self.route_config(rc, &child(path, "route_config"), clusters)?;
            }
            Some(http_connection_manager::RouteSpecifier::Rds(rds)) => {
                if rds.route_config_name.is_empty() {
                    return Err(self.err(
                        &child(&child(path, "rds"), "route_config_name"),
                        "`rds` needs a `route_config_name`",
                    ));
                }
                if rds.config_source.is_none() {
                    return Err(self.err(
                        &child(&child(path, "rds"), "config_source"),
                        "`rds` needs a `config_source`",
                    ));
                }
            }
            _ => return Err(self.err(path, "the HTTP connection manager needs `route_config` or `rds`")),
        }
        if h.max_request_headers_kb.is_some_and(|kb| kb == 0 || kb > 8192) {
            return Err(self.err(&child(path, "max_request_headers_kb"), "expected 1..=8192"));
        }
        let fpath = child(path, "http_filters");
        let Some(last) = h.http_filters.last() else {
            return Err(self.err(
                &fpath,
                "`http_filters` must end with the router filter (envoy.filters.http.router)",
            ));
        };
        for (i, f) in h.http_filters.iter().enumerate() {
            let p = index(&fpath, i);
            let ty = match &f.config_type {
                Some(http_filter::ConfigType::TypedConfig(any)) => type_url_name(&any.type_url).to_string(),
                _ if f.is_optional => continue, // an optional filter legate does not have (warned while decoding)
                _ => return Err(self.err(&p, format!("HTTP filter `{}` needs a `typed_config`", f.name))),
            };
            if ty != ROUTER_TYPE {
                return Err(ConfigError::not_supported(
                    &p,
                    (self.line_of)(&p),
                    format!("HTTP filter `{ty}` is not supported by legate yet"),
                ));
            }
            if !std::ptr::eq(f, last) {
                return Err(self.err(&p, "the router filter must be the last HTTP filter"));
            }
        }
        if !matches!(&last.config_type, Some(http_filter::ConfigType::TypedConfig(a)) if type_url_name(&a.type_url) == ROUTER_TYPE)
        {
            return Err(self.err(
                &fpath,
                "`http_filters` must end with the router filter (envoy.filters.http.router)",
            ));
        }
        for (i, log) in h.access_log.iter().enumerate() {
            self.access_log(log, &index(&child(path, "access_log"), i))?;
        }
        Ok(())
    }

    /// `clusters`: the static cluster names when the route config is static
    /// (Envoy checks references then, unless `validate_clusters: false`).
    pub(crate) fn route_config(
        &self,
        rc: &RouteConfiguration,
        path: &str,
        clusters: Option<&HashSet<String>>,
    ) -> Result<(), ConfigError> {
        let check_clusters = rc.validate_clusters.as_ref().is_none_or(|v| *v);
        let mut domains: HashMap<String, usize> = HashMap::new();
        for (i, vh) in rc.virtual_hosts.iter().enumerate() {
            let vpath = index(&child(path, "virtual_hosts"), i);
            if vh.name.is_empty() {
                return Err(self.err(&child(&vpath, "name"), "a virtual host needs a `name`"));
            }
            if vh.domains.is_empty() {
                return Err(self.err(
                    &child(&vpath, "domains"),
                    "a virtual host needs at least one domain (\"*\" matches all)",
                ));
            }
            for (j, d) in vh.domains.iter().enumerate() {
                let dpath = index(&child(&vpath, "domains"), j);
                let lower = d.to_ascii_lowercase();
                if d.is_empty() || (d.len() > 1 && d[1..d.len() - 1].contains('*')) {
                    return Err(self.err(&dpath, format!("invalid domain `{d}`: a wildcard may only be `*`, `*.suffix`, `*suffix` or `prefix*`")));
                }
                if let Some(other) = domains.insert(lower, i) {
                    return Err(self.err(
                        &dpath,
                        format!("domain `{d}` is also in virtual_hosts[{other}]; each domain may appear in only one virtual host"),
                    ));
                }
            }
            for (j, r) in vh.routes.iter().enumerate() {
                let rpath = index(&child(&vpath, "routes"), j);
                self.route(r, &rpath, if check_clusters { clusters } else { None })?;
            }
        }
        Ok(())
    }

    fn route(
        &self,
        r: &crate::proto::envoy::config::route::v3::Route,
        path: &str,
        clusters: Option<&HashSet<String>>,
    ) -> Result<(), ConfigError> {
        let mpath = child(path, "match");
        let Some(m) = &r.r#match else {
            return Err(self.err(&mpath, "a route needs a `match`"));
        };
        match &m.path_specifier {
            Some(route_match::PathSpecifier::SafeRegex(re)) => {
                self.regex(&re.regex, &child(&mpath, "safe_regex"))?
            }
            Some(route_match::PathSpecifier::PathSeparatedPrefix(p))
                if p.contains(['?', '#']) || p.ends_with('/') =>
            {
                return Err(self.err(
                    &child(&mpath, "path_separated_prefix"),
                    "must not contain ? or # nor end with /",
                ));
            }
            Some(_) => {}
            None => {
                return Err(self.err(
                    &mpath,
                    "a route match needs one of `prefix`, `path`, `safe_regex`, `path_separated_prefix`",
                ))
            }
        }
        for (i, h) in m.headers.iter().enumerate() {
            let hpath = index(&child(&mpath, "headers"), i);
            if h.name.is_empty() {
                return Err(self.err(&child(&hpath, "name"), "a header matcher needs a `name`"));
            }
            use crate::proto::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
            use crate::proto::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
            if let Some(HeaderMatchSpecifier::StringMatch(sm)) = &h.header_match_specifier {
                if let Some(MatchPattern::SafeRegex(re)) = &sm.match_pattern {
                    self.regex(&re.regex, &child(&child(&hpath, "string_match"), "safe_regex"))?;
                }
            }
            if let Some(HeaderMatchSpecifier::SafeRegexMatch(re)) = &h.header_match_specifier {
                self.regex(&re.regex, &child(&hpath, "safe_regex_match"))?;
            }
        }
        match &r.action {
            Some(route::Action::Route(ra)) => {
                let apath = child(path, "route");
                match &ra.cluster_specifier {
                    Some(route_action::ClusterSpecifier::Cluster(name)) => {
                        if let Some(known) = clusters {
                            if !known.contains(name) {
                                return Err(self.err(
                                    &child(&apath, "cluster"),
                                    format!("unknown cluster `{name}`: no cluster with that name is defined"),
                                ));
                            }
                        }
                    }
                    Some(route_action::ClusterSpecifier::WeightedClusters(wc)) => {
                        let wpath = child(&apath, "weighted_clusters");
                        if wc.clusters.is_empty() {
                            return Err(self.err(&wpath, "`weighted_clusters` needs at least one cluster"));
                        }
                        for (i, c) in wc.clusters.iter().enumerate() {
                            if let Some(known) = clusters {
                                if !c.name.is_empty() && !known.contains(&c.name) {
                                    return Err(self.err(
                                        &child(&index(&child(&wpath, "clusters"), i), "name"),
                                        format!("unknown cluster `{}`", c.name),
                                    ));
                                }
                            }
                        }
                    }
                    Some(route_action::ClusterSpecifier::ClusterHeader(h)) if h.is_empty() => {
                        return Err(self.err(&child(&apath, "cluster_header"), "must not be empty"));
                    }
                    Some(_) => {}
                    None => {
                        return Err(self.err(
                            &apath,
                            "a route action needs `cluster`, `cluster_header` or `weighted_clusters`",
                        ))
                    }
                }
                if let Some(rr) = &ra.regex_rewrite {
                    if let Some(p) = &rr.pattern {
                        self.regex(&p.regex, &child(&child(&apath, "regex_rewrite"), "pattern"))?;
                    }
                }
                for (i, hp) in ra.hash_policy.iter().enumerate() {
                    self.hash_policy(hp, &index(&child(&apath, "hash_policy"), i))?;
                }
            }
            Some(_) => {}
            None => {
                return Err(self.err(
                    path,
                    "a route needs one of `route`, `redirect` or `direct_response`",
                ))
            }
        }
        Ok(())
    }

    /// The proto's rules on a `RouteAction.HashPolicy`: one specifier, and
    /// non-empty names.
    fn hash_policy(
        &self,
        hp: &crate::proto::envoy::config::route::v3::route_action::HashPolicy,
        path: &str,
    ) -> Result<(), ConfigError> {
        use crate::proto::envoy::config::route::v3::route_action::hash_policy::PolicySpecifier as P;
        let empty = |field: &str, name: &str| {
            self.err(
                &child(&child(path, field), name),
                format!("`{name}` must not be empty"),
            )
        };
        match &hp.policy_specifier {
            Some(P::Header(h)) => {
                if h.header_name.is_empty() {
                    return Err(empty("header", "header_name"));
                }
                if let Some(rr) = &h.regex_rewrite {
                    let rpath = child(&child(path, "header"), "regex_rewrite");
                    match &rr.pattern {
                        Some(p) => self.regex(&p.regex, &child(&rpath, "pattern"))?,
                        None => return Err(self.err(&child(&rpath, "pattern"), "regex_rewrite needs a `pattern`")),
                    }
                }
            }
            Some(P::Cookie(c)) if c.name.is_empty() => return Err(empty("cookie", "name")),
            Some(P::QueryParameter(q)) if q.name.is_empty() => return Err(empty("query_parameter", "name")),
            Some(P::FilterState(f)) if f.key.is_empty() => return Err(empty("filter_state", "key")),
            Some(_) => {}
            None => {
                return Err(self.err(
                    path,
                    "a hash policy needs one of `header`, `cookie`, `connection_properties`, `query_parameter` or `filter_state`",
                ))
            }
        }
        Ok(())
    }

    fn regex(&self, re: &str, path: &str) -> Result<(), ConfigError> {
        regex::Regex::new(re).map(|_| ()).map_err(|e| {
            self.err(
                &child(path, "regex"),
                format!(
                    "invalid regex `{re}`: {}",
                    e.to_string().lines().last().unwrap_or("syntax error")
                ),
            )
        })
    }

    fn access_log(
        &self,
        log: &crate::proto::envoy::config::accesslog::v3::AccessLog,
        path: &str,
    ) -> Result<(), ConfigError> {
        use crate::proto::envoy::config::accesslog::v3::access_log::ConfigType;
        match &log.config_type {
            Some(ConfigType::TypedConfig(any))
                if ACCESS_LOG_TYPES.contains(&type_url_name(&any.type_url)) =>
            {
                Ok(())
            }
            Some(ConfigType::TypedConfig(any)) => {
                let p = child(path, "typed_config");
                Err(ConfigError::not_supported(
                    &p,
                    (self.line_of)(&p),
                    format!(
                        "access logger `{}` is not supported by legate yet",
                        type_url_name(&any.type_url)
                    ),
                ))
            }
            None => Err(self.err(path, format!("access log `{}` needs a `typed_config`", log.name))),
        }
    }

    fn grpc_services(
        &self,
        services: &[crate::proto::envoy::config::core::v3::GrpcService],
        path: &str,
        clusters: &HashSet<String>,
    ) -> Result<(), ConfigError> {
        use crate::proto::envoy::config::core::v3::grpc_service::TargetSpecifier;
        for (i, s) in services.iter().enumerate() {
            let p = index(path, i);
            if let Some(TargetSpecifier::EnvoyGrpc(g)) = &s.target_specifier {
                if !clusters.contains(&g.cluster_name) {
                    return Err(self.err(
                        &child(&child(&p, "envoy_grpc"), "cluster_name"),
                        format!(
                            "unknown cluster `{}`: the xDS cluster must be a static cluster",
                            g.cluster_name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `ip:port` of a listener address, for the uniqueness check.
fn socket_key(a: &Address) -> Option<String> {
    match &a.address {
        Some(address::Address::SocketAddress(sa)) => match sa.port_specifier {
            Some(socket_address::PortSpecifier::PortValue(p)) if p != 0 => {
                Some(format!("{}:{p}", sa.address))
            }
            _ => None,
        },
        _ => None,
    }
}

impl Validator<'_> {
    /// A DNS resolver / refresh setting that does not compile
    /// (`model::dns`), reported at its field under `path`.
    fn dns_field(&self, r: Result<(), crate::model::dns::FieldError>, path: &str) -> Result<(), ConfigError> {
        let Err(e) = r else { return Ok(()) };
        let fpath = child(path, &e.field);
        if e.not_supported {
            let line = self.err(&fpath, "").line;
            Err(ConfigError::not_supported(&fpath, line, e.message))
        } else {
            Err(self.err(&fpath, e.message))
        }
    }
}
