//! How a STRICT_DNS / LOGICAL_DNS cluster resolves its names: the resolver
//! (from `typed_dns_resolver_config` or the deprecated fields before it) and
//! the refresh policy. Inert data compiled with the config; the runtime
//! (`runtime::dns`) builds live resolvers from it once per cluster.
//!
//! Which resolver, as Envoy chooses it (`selectDnsResolver`,
//! `createDnsResolverFactoryFromProto`):
//! - a cluster has its own resolver when it sets `typed_dns_resolver_config`
//!   (with a `typed_config`), `dns_resolution_config` with resolvers, or
//!   `dns_resolvers`; otherwise it uses the bootstrap's;
//! - own or bootstrap's, `typed_dns_resolver_config` wins, then
//!   `dns_resolution_config`, then the legacy `dns_resolvers` /
//!   `use_tcp_for_dns_lookups`, all of which mean c-ares;
//! - with none of them, Envoy's default is c-ares on the system's name
//!   servers; legate's default is the system resolver (getaddrinfo), which
//!   also honours /etc/hosts and nsswitch.

use super::duration;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use prost::Message;

use crate::proto::envoy::config::bootstrap::v3::Bootstrap;
use crate::proto::envoy::config::cluster::v3::Cluster as PCluster;
use crate::proto::envoy::config::core::v3::{
    address, socket_address, Address, DnsResolverOptions, TypedExtensionConfig,
};
use crate::proto::envoy::extensions::network::dns_resolver::cares::v3::CaresDnsResolverConfig;
use crate::proto::envoy::extensions::network::dns_resolver::getaddrinfo::v3::GetAddrInfoDnsResolverConfig;

pub const CARES_NAME: &str = "envoy.network.dns_resolver.cares";
pub const CARES_TYPE: &str = "envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig";
pub const GETADDRINFO_NAME: &str = "envoy.network.dns_resolver.getaddrinfo";
pub const GETADDRINFO_TYPE: &str =
    "envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig";

/// The TTL Envoy's getaddrinfo resolver reports (getaddrinfo gives none);
/// what `respect_dns_ttl` refreshes at with the system resolver.
pub const SYSTEM_TTL: Duration = Duration::from_secs(60);

/// A resolver, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolver {
    /// getaddrinfo: the system resolver (/etc/hosts, nsswitch,
    /// /etc/resolv.conf). `retries` further attempts after a failure.
    System { retries: u32 },
    /// c-ares: DNS queries from legate itself (hickory-resolver).
    Dns(DnsServers),
}

impl Default for Resolver {
    fn default() -> Resolver {
        Resolver::System { retries: 0 }
    }
}

/// `CaresDnsResolverConfig`, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsServers {
    /// Name servers to ask; empty: those of /etc/resolv.conf.
    pub servers: Vec<SocketAddr>,
    /// Use `servers` only when /etc/resolv.conf names no server.
    pub servers_as_fallback: bool,
    /// TCP instead of UDP.
    pub tcp: bool,
    /// Do not append /etc/resolv.conf's search domains.
    pub no_search: bool,
    pub query_timeout: Option<Duration>,
    pub query_tries: Option<u32>,
    pub rotate: bool,
    pub edns0_max_payload: Option<u16>,
}

/// Backoff after failed resolutions (`dns_failure_refresh_rate`): full
/// jitter over an interval that doubles from `base` up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

/// A DNS cluster's resolution settings beyond `dns_refresh_rate` and
/// `dns_lookup_family` (which `Cluster` carries). Other cluster types get
/// the default: Envoy only reads these fields for DNS clusters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDns {
    /// The cluster's own resolver; `None`: the bootstrap's.
    pub resolver: Option<Arc<Resolver>>,
    /// Refresh at the records' TTL rather than `dns_refresh_rate`.
    pub respect_ttl: bool,
    /// `None`: retry failures at `dns_refresh_rate`.
    pub failure_backoff: Option<Backoff>,
    /// A random `[0, jitter)` added to each refresh after a success.
    pub jitter: Option<Duration>,
    /// Serve only after the first resolution (`wait_for_warm_on_init`,
    /// default true).
    pub wait_for_warm: bool,
}

impl Default for ClusterDns {
    fn default() -> ClusterDns {
        ClusterDns {
            resolver: None,
            respect_ttl: false,
            failure_backoff: None,
            jitter: None,
            wait_for_warm: true,
        }
    }
}

/// A config problem: the field (relative to the cluster or bootstrap) and
/// what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
    /// A real Envoy choice legate does not implement (vs. a wrong config).
    pub not_supported: bool,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
        not_supported: false,
    }
}

impl ClusterDns {
    pub fn compile(c: &PCluster) -> Result<ClusterDns, FieldError> {
        use crate::proto::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
        let is_dns = matches!(
            c.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(t))
                if t == DiscoveryType::StrictDns as i32 || t == DiscoveryType::LogicalDns as i32
        );
        if !is_dns {
            return Ok(ClusterDns::default());
        }
        let failure_backoff = match &c.dns_failure_refresh_rate {
            None => None,
            Some(r) => {
                let base = r
                    .base_interval
                    .as_ref()
                    .map(duration)
                    .filter(|d| *d >= Duration::from_millis(1))
                    .ok_or_else(|| {
                        invalid(
                            "dns_failure_refresh_rate.base_interval",
                            "`base_interval` is required and must be at least 1ms",
                        )
                    })?;
                let max = r.max_interval.as_ref().map(duration).unwrap_or(base * 10);
                if max < base {
                    return Err(invalid(
                        "dns_failure_refresh_rate.max_interval",
                        "dns_failure_refresh_rate must have max_interval greater than or equal to the base_interval",
                    ));
                }
                Some(Backoff { base, max })
            }
        };
        Ok(ClusterDns {
            resolver: cluster_resolver(c)?.map(Arc::new),
            respect_ttl: c.respect_dns_ttl,
            failure_backoff,
            jitter: c.dns_jitter.as_ref().map(duration).filter(|d| !d.is_zero()),
            wait_for_warm: c.wait_for_warm_on_init.unwrap_or(true),
        })
    }
}

/// The cluster's own resolver, or `None` when it uses the bootstrap's.
pub fn cluster_resolver(c: &PCluster) -> Result<Option<Resolver>, FieldError> {
    let typed = c
        .typed_dns_resolver_config
        .as_ref()
        .filter(|t| t.typed_config.as_ref().is_some_and(|a| !a.type_url.is_empty()));
    let resolution = c.dns_resolution_config.as_ref();
    let own =
        typed.is_some() || resolution.is_some_and(|r| !r.resolvers.is_empty()) || !c.dns_resolvers.is_empty();
    if !own {
        // A typed_dns_resolver_config without a typed_config is still wrong.
        if let Some(t) = &c.typed_dns_resolver_config {
            typed_resolver(t, "typed_dns_resolver_config")?;
        }
        return Ok(None);
    }
    if let Some(t) = typed {
        return typed_resolver(t, "typed_dns_resolver_config").map(Some);
    }
    if let Some(r) = resolution {
        return dns_servers(
            &r.resolvers,
            r.dns_resolver_options.as_ref(),
            "dns_resolution_config.resolvers",
        )
        .map(|d| Some(Resolver::Dns(d)));
    }
    let mut d = dns_servers(&c.dns_resolvers, None, "dns_resolvers")?;
    d.tcp = c.use_tcp_for_dns_lookups;
    Ok(Some(Resolver::Dns(d)))
}

/// The bootstrap's resolver: the default for clusters without their own.
pub fn bootstrap_resolver(b: &Bootstrap) -> Result<Resolver, FieldError> {
    if let Some(t) = &b.typed_dns_resolver_config {
        if t.typed_config.as_ref().is_some_and(|a| !a.type_url.is_empty()) {
            return typed_resolver(t, "typed_dns_resolver_config");
        }
        typed_resolver(t, "typed_dns_resolver_config")?;
    }
    if let Some(r) = &b.dns_resolution_config {
        return dns_servers(
            &r.resolvers,
            r.dns_resolver_options.as_ref(),
            "dns_resolution_config.resolvers",
        )
        .map(Resolver::Dns);
    }
    if b.use_tcp_for_dns_lookups {
        return Ok(Resolver::Dns(DnsServers {
            tcp: true,
            ..DnsServers::default()
        }));
    }
    Ok(Resolver::default())
}

/// A `typed_dns_resolver_config`; the type decides, as in Envoy (the name
/// is informational).
fn typed_resolver(t: &TypedExtensionConfig, field: &str) -> Result<Resolver, FieldError> {
    let Some(any) = t.typed_config.as_ref().filter(|a| !a.type_url.is_empty()) else {
        return Err(invalid(
            field,
            format!(
                "`{field}` needs a `typed_config` (\"@type\": type.googleapis.com/{CARES_TYPE} or {GETADDRINFO_TYPE})"
            ),
        ));
    };
    let ty = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
    let tpath = format!("{field}.typed_config");
    match ty {
        CARES_TYPE => {
            let cares = CaresDnsResolverConfig::decode(any.value.as_slice())
                .map_err(|e| invalid(&tpath, format!("cannot decode {ty}: {e}")))?;
            let mut d = dns_servers(
                &cares.resolvers,
                cares.dns_resolver_options.as_ref(),
                &format!("{tpath}.resolvers"),
            )?;
            d.servers_as_fallback = cares.use_resolvers_as_fallback;
            d.query_timeout = match cares.query_timeout_seconds {
                Some(0) => {
                    return Err(invalid(
                        format!("{tpath}.query_timeout_seconds"),
                        "must be at least 1",
                    ))
                }
                s => s.map(Duration::from_secs),
            };
            d.query_tries = match cares.query_tries {
                Some(0) => return Err(invalid(format!("{tpath}.query_tries"), "must be at least 1")),
                t => t,
            };
            d.rotate = cares.rotate_nameservers;
            d.edns0_max_payload = match cares.edns0_max_payload_size {
                None => None,
                Some(n @ 512..=4096) => Some(n as u16),
                Some(n) => {
                    return Err(invalid(
                        format!("{tpath}.edns0_max_payload_size"),
                        format!("{n} is out of range; expected 512..=4096"),
                    ))
                }
            };
            Ok(Resolver::Dns(d))
        }
        GETADDRINFO_TYPE => {
            let g = GetAddrInfoDnsResolverConfig::decode(any.value.as_slice())
                .map_err(|e| invalid(&tpath, format!("cannot decode {ty}: {e}")))?;
            Ok(Resolver::System {
                retries: g.num_retries.unwrap_or(0),
            })
        }
        other => Err(FieldError {
            field: format!("{tpath}.@type"),
            message: format!(
                "DNS resolver `{other}` is not supported by legate yet ({CARES_NAME} and {GETADDRINFO_NAME} are)"
            ),
            not_supported: true,
        }),
    }
}

/// Resolver addresses (IPs; port 0 means 53, as c-ares reads it) and options.
fn dns_servers(
    addrs: &[Address],
    options: Option<&DnsResolverOptions>,
    field: &str,
) -> Result<DnsServers, FieldError> {
    let mut servers = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let path = format!("{field}[{i}]");
        let Some(address::Address::SocketAddress(sa)) = &a.address else {
            return Err(invalid(&path, "a DNS resolver needs a `socket_address`"));
        };
        let ip: IpAddr = sa.address.parse().map_err(|_| {
            invalid(
                format!("{path}.socket_address.address"),
                format!("DNS resolver '{}' is not an IP address", sa.address),
            )
        })?;
        let port = match sa.port_specifier {
            Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p).map_err(|_| {
                invalid(
                    format!("{path}.socket_address.port_value"),
                    format!("{p} is not a port; expected 0..=65535"),
                )
            })?,
            Some(socket_address::PortSpecifier::NamedPort(_)) => {
                return Err(FieldError {
                    field: format!("{path}.socket_address.named_port"),
                    message: "named ports are not supported by legate yet".into(),
                    not_supported: true,
                })
            }
            None => 0,
        };
        servers.push(SocketAddr::new(ip, if port == 0 { 53 } else { port }));
    }
    let options = options.cloned().unwrap_or_default();
    Ok(DnsServers {
        servers,
        tcp: options.use_tcp_for_dns_lookups,
        no_search: options.no_default_search_domain,
        ..DnsServers::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::envoy::config::cluster::v3::cluster::RefreshRate;
    use crate::proto::envoy::config::core::v3::{DnsResolutionConfig, SocketAddress};

    fn addr(ip: &str, port: u32) -> Address {
        Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ip.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }
    }

    fn typed<M: Message>(name: &str, ty: &str, m: &M) -> TypedExtensionConfig {
        TypedExtensionConfig {
            name: name.into(),
            typed_config: Some(prost_types::Any {
                type_url: format!("type.googleapis.com/{ty}"),
                value: m.encode_to_vec(),
            }),
        }
    }

    fn secs(s: i64) -> prost_types::Duration {
        prost_types::Duration { seconds: s, nanos: 0 }
    }

    #[test]
    fn a_cluster_without_resolver_fields_uses_the_bootstraps() {
        let c = PCluster::default();
        assert_eq!(cluster_resolver(&c), Ok(None));
        // use_tcp_for_dns_lookups alone does not make a cluster resolver (as in Envoy).
        let c = PCluster {
            use_tcp_for_dns_lookups: true,
            ..Default::default()
        };
        assert_eq!(cluster_resolver(&c), Ok(None));
        assert_eq!(
            bootstrap_resolver(&Bootstrap::default()),
            Ok(Resolver::System { retries: 0 })
        );
    }

    #[test]
    fn typed_config_wins_over_the_deprecated_fields() {
        let cares = CaresDnsResolverConfig {
            resolvers: vec![addr("127.0.0.1", 5353), addr("::1", 0)],
            dns_resolver_options: Some(DnsResolverOptions {
                use_tcp_for_dns_lookups: true,
                no_default_search_domain: true,
            }),
            query_tries: Some(2),
            ..Default::default()
        };
        let c = PCluster {
            typed_dns_resolver_config: Some(typed(CARES_NAME, CARES_TYPE, &cares)),
            dns_resolvers: vec![addr("10.0.0.1", 53)],
            ..Default::default()
        };
        let Ok(Some(Resolver::Dns(d))) = cluster_resolver(&c) else {
            panic!("{:?}", cluster_resolver(&c));
        };
        assert_eq!(
            d.servers,
            vec!["127.0.0.1:5353".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
        assert!(d.tcp && d.no_search);
        assert_eq!(d.query_tries, Some(2));

        let g = GetAddrInfoDnsResolverConfig {
            num_retries: Some(3),
            ..Default::default()
        };
        let c = PCluster {
            typed_dns_resolver_config: Some(typed(GETADDRINFO_NAME, GETADDRINFO_TYPE, &g)),
            ..Default::default()
        };
        assert_eq!(cluster_resolver(&c), Ok(Some(Resolver::System { retries: 3 })));
    }

    #[test]
    fn deprecated_fields_mean_cares() {
        let c = PCluster {
            dns_resolvers: vec![addr("10.0.0.1", 0)],
            use_tcp_for_dns_lookups: true,
            ..Default::default()
        };
        let want = DnsServers {
            servers: vec!["10.0.0.1:53".parse().unwrap()],
            tcp: true,
            ..Default::default()
        };
        assert_eq!(cluster_resolver(&c), Ok(Some(Resolver::Dns(want))));
        // dns_resolution_config comes before dns_resolvers.
        let c = PCluster {
            dns_resolution_config: Some(DnsResolutionConfig {
                resolvers: vec![addr("10.0.0.2", 53)],
                dns_resolver_options: None,
            }),
            dns_resolvers: vec![addr("10.0.0.1", 53)],
            ..Default::default()
        };
        let Ok(Some(Resolver::Dns(d))) = cluster_resolver(&c) else {
            panic!()
        };
        assert_eq!(d.servers, vec!["10.0.0.2:53".parse().unwrap()]);
        let b = Bootstrap {
            use_tcp_for_dns_lookups: true,
            ..Default::default()
        };
        assert_eq!(
            bootstrap_resolver(&b),
            Ok(Resolver::Dns(DnsServers {
                tcp: true,
                ..Default::default()
            }))
        );
    }

    #[test]
    fn bad_resolver_configs_name_the_field() {
        let c = PCluster {
            dns_resolvers: vec![addr("dns.example", 53)],
            ..Default::default()
        };
        let e = cluster_resolver(&c).unwrap_err();
        assert_eq!(e.field, "dns_resolvers[0].socket_address.address");
        assert!(e.message.contains("not an IP address"), "{}", e.message);

        let c = PCluster {
            typed_dns_resolver_config: Some(TypedExtensionConfig {
                name: CARES_NAME.into(),
                typed_config: None,
            }),
            ..Default::default()
        };
        assert_eq!(
            cluster_resolver(&c).unwrap_err().field,
            "typed_dns_resolver_config"
        );

        let c = PCluster {
            typed_dns_resolver_config: Some(typed(
                "envoy.network.dns_resolver.apple",
                "envoy.extensions.network.dns_resolver.apple.v3.AppleDnsResolverConfig",
                &CaresDnsResolverConfig::default(),
            )),
            ..Default::default()
        };
        let e = cluster_resolver(&c).unwrap_err();
        assert!(e.not_supported && e.message.contains("apple"), "{e:?}");
    }

    fn strict_dns() -> Option<crate::proto::envoy::config::cluster::v3::cluster::ClusterDiscoveryType> {
        use crate::proto::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
        Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32))
    }

    #[test]
    fn refresh_policy() {
        let c = PCluster {
            cluster_discovery_type: strict_dns(),
            wait_for_warm_on_init: Some(false),
            respect_dns_ttl: true,
            dns_failure_refresh_rate: Some(RefreshRate {
                base_interval: Some(secs(1)),
                max_interval: None,
            }),
            ..Default::default()
        };
        let d = ClusterDns::compile(&c).unwrap();
        assert!(d.respect_ttl && !d.wait_for_warm);
        assert_eq!(
            d.failure_backoff,
            Some(Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(10)
            })
        );
        let mut c = PCluster {
            dns_failure_refresh_rate: Some(RefreshRate {
                base_interval: Some(secs(2)),
                max_interval: Some(secs(1)),
            }),
            ..Default::default()
        };
        // Only DNS clusters read these fields (as in Envoy).
        assert_eq!(ClusterDns::compile(&c), Ok(ClusterDns::default()));
        c.cluster_discovery_type = strict_dns();
        assert_eq!(
            ClusterDns::compile(&c).unwrap_err().field,
            "dns_failure_refresh_rate.max_interval"
        );
        let c = PCluster {
            cluster_discovery_type: strict_dns(),
            dns_failure_refresh_rate: Some(RefreshRate::default()),
            ..Default::default()
        };
        assert_eq!(
            ClusterDns::compile(&c).unwrap_err().field,
            "dns_failure_refresh_rate.base_interval"
        );
    }
}
