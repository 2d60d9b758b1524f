//! Extension names legate knows, and the Envoy fields it decodes but does not
//! implement. Both are data: adding an extension or implementing a field is a
//! one-line change here.

/// Well-known extension names (current and legacy v2 spellings) and the type
/// they stand for when a config gives the name without a `typed_config`.
/// Envoy ≥ 1.22 requires `typed_config`; older configs (and the tutorial's v2
/// files) rely on the name, so legate resolves it and says so.
pub const BY_NAME: &[(&str, &str, &str)] = &[
    // (name, legacy name, message type)
    (
        "envoy.filters.network.http_connection_manager",
        "envoy.http_connection_manager",
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    ),
    (
        "envoy.filters.http.router",
        "envoy.router",
        "envoy.extensions.filters.http.router.v3.Router",
    ),
    (
        "envoy.access_loggers.file",
        "envoy.file_access_log",
        "envoy.extensions.access_loggers.file.v3.FileAccessLog",
    ),
    (
        "envoy.access_loggers.stdout",
        "",
        "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
    ),
    (
        "envoy.access_loggers.stderr",
        "",
        "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
    ),
];

/// The v3 name and type for a well-known extension name (either spelling).
pub fn by_name(name: &str) -> Option<(&'static str, &'static str)> {
    BY_NAME
        .iter()
        .find(|(v3, legacy, _)| *v3 == name || (!legacy.is_empty() && *legacy == name))
        .map(|(v3, _, ty)| (*v3, *ty))
}

/// v2 type URLs some configs still carry, mapped to their v3 message.
pub const V2_TYPES: &[(&str, &str)] = &[
    (
        "envoy.config.filter.network.http_connection_manager.v2.HttpConnectionManager",
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    ),
    (
        "envoy.config.filter.http.router.v2.Router",
        "envoy.extensions.filters.http.router.v3.Router",
    ),
    (
        "envoy.config.accesslog.v2.FileAccessLog",
        "envoy.extensions.access_loggers.file.v3.FileAccessLog",
    ),
    ("envoy.api.v2.Cluster", "envoy.config.cluster.v3.Cluster"),
    ("envoy.api.v2.Listener", "envoy.config.listener.v3.Listener"),
    (
        "envoy.api.v2.RouteConfiguration",
        "envoy.config.route.v3.RouteConfiguration",
    ),
    (
        "envoy.api.v2.ClusterLoadAssignment",
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
    ),
];

/// Envoy fields that legate parses (so a config using them gets this message
/// rather than "unknown field") but does not implement. Keyed by
/// `<message full name>.<field name>`; the value says what the field is.
pub const NOT_IMPLEMENTED: &[(&str, &str)] = &[
    // c-ares tuning legate's DNS client (hickory-resolver) has no counterpart for.
    (
        "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig.filter_unroutable_families",
        "`filter_unroutable_families`",
    ),
    (
        "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig.udp_max_queries",
        "`udp_max_queries`",
    ),
    (
        "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig.max_udp_channel_duration",
        "`max_udp_channel_duration`",
    ),
    (
        "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig.reinit_channel_on_timeout",
        "`reinit_channel_on_timeout`",
    ),
    (
        "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig.qcache_max_ttl",
        "the c-ares query cache (`qcache_max_ttl`)",
    ),
    (
        "envoy.config.listener.v3.FilterChain.transport_socket",
        "TLS (`transport_socket`)",
    ),
    (
        "envoy.config.listener.v3.FilterChain.filter_chain_match",
        "filter chain matching (`filter_chain_match`)",
    ),
    (
        "envoy.config.listener.v3.Listener.listener_filters",
        "listener filters (`listener_filters`)",
    ),
    (
        "envoy.config.cluster.v3.Cluster.transport_socket",
        "upstream TLS (`transport_socket`)",
    ),
    (
        "envoy.config.cluster.v3.Cluster.health_checks",
        "active health checking (`health_checks`)",
    ),
    (
        "envoy.config.cluster.v3.Cluster.outlier_detection",
        "outlier detection (`outlier_detection`)",
    ),
    (
        "envoy.config.cluster.v3.Cluster.common_lb_config",
        "`common_lb_config`",
    ),
    (
        "envoy.config.cluster.v3.Cluster.cluster_type",
        "custom cluster types (`cluster_type`)",
    ),
    (
        "envoy.config.bootstrap.v3.ClusterManager.load_stats_config",
        "load reporting (`load_stats_config`)",
    ),
    (
        "envoy.config.bootstrap.v3.RuntimeLayer.disk_layer",
        "disk runtime layers (`disk_layer`)",
    ),
    (
        "envoy.config.bootstrap.v3.RuntimeLayer.rtds_layer",
        "RTDS runtime layers (`rtds_layer`)",
    ),
    (
        "envoy.config.bootstrap.v3.Bootstrap.overload_manager",
        "the overload manager (`overload_manager`)",
    ),
    (
        "envoy.config.bootstrap.v3.Bootstrap.stats_sinks",
        "stats sinks (`stats_sinks`)",
    ),
    (
        "envoy.config.bootstrap.v3.Bootstrap.tracing",
        "tracing (`tracing`)",
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.tracing",
        "tracing (`tracing`)",
    ),
    (
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.scoped_routes",
        "scoped routes (`scoped_routes`)",
    ),
    ("envoy.config.route.v3.VirtualHost.retry_policy", "`retry_policy`"),
    ("envoy.config.route.v3.VirtualHost.rate_limits", "`rate_limits`"),
    (
        "envoy.config.route.v3.VirtualHost.typed_per_filter_config",
        "per-filter config (`typed_per_filter_config`)",
    ),
    (
        "envoy.config.route.v3.VirtualHost.virtual_clusters",
        "`virtual_clusters`",
    ),
    (
        "envoy.config.route.v3.Route.typed_per_filter_config",
        "per-filter config (`typed_per_filter_config`)",
    ),
    (
        "envoy.config.route.v3.Route.decorator",
        "tracing decorators (`decorator`)",
    ),
    ("envoy.config.route.v3.RouteAction.retry_policy", "`retry_policy`"),
    ("envoy.config.route.v3.RouteAction.rate_limits", "`rate_limits`"),
    (
        "envoy.config.route.v3.RouteAction.request_mirror_policies",
        "request mirroring (`request_mirror_policies`)",
    ),
    (
        "envoy.config.route.v3.RouteMatch.runtime_fraction",
        "`runtime_fraction`",
    ),
    (
        "envoy.config.route.v3.RouteMatch.tls_context",
        "TLS context matching (`tls_context`)",
    ),
];

/// The description of a field legate decodes but does not implement.
pub fn not_implemented(message: &str, field: &str) -> Option<&'static str> {
    NOT_IMPLEMENTED.iter().find_map(|(name, what)| {
        let (m, f) = name.rsplit_once('.')?;
        (m == message && f == field).then_some(*what)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_in_both_spellings() {
        let cases = [
            ("envoy.router", Some("envoy.filters.http.router")),
            ("envoy.filters.http.router", Some("envoy.filters.http.router")),
            (
                "envoy.http_connection_manager",
                Some("envoy.filters.network.http_connection_manager"),
            ),
            ("envoy.file_access_log", Some("envoy.access_loggers.file")),
            ("router", None),
            ("", None),
        ];
        for (name, want) in cases {
            assert_eq!(by_name(name).map(|(v3, _)| v3), want, "{name}");
        }
    }

    #[test]
    fn every_type_named_here_is_in_the_descriptor_pool() {
        let pool = crate::proto::pool();
        for (_, _, ty) in BY_NAME {
            assert!(pool.get_message_by_name(ty).is_some(), "{ty}");
        }
        for (_, ty) in V2_TYPES {
            assert!(pool.get_message_by_name(ty).is_some(), "{ty}");
        }
        // Entries may name fields proto/ leaves out (the decoder reports them
        // as not supported either way); the integration test checks them
        // against upstream's API.
        for (name, _) in NOT_IMPLEMENTED {
            assert!(name.rsplit_once('.').is_some(), "{name}");
        }
    }
}
