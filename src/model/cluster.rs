//! A cluster as the data plane uses it: how to reach its hosts, which
//! protocol to speak, and the load balancer that picks a host.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::validate::{type_url_name, unpack, UPSTREAM_HTTP_OPTIONS};
use crate::proto::envoy::config::cluster::v3::{cluster, Cluster as PCluster};
use crate::proto::envoy::config::core::v3::{address, socket_address};
use crate::proto::envoy::extensions::upstreams::http::v3::{http_protocol_options, HttpProtocolOptions};

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(5);
/// Envoy's default upstream connection idle timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discovery {
    Static,
    StrictDns,
    LogicalDns,
    Eds,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    /// Speak to the upstream in the protocol the client used.
    Downstream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsFamily {
    Auto,
    V4Only,
    V6Only,
    V4Preferred,
    All,
}

/// An endpoint as configured: an IP or a name to resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    pub address: String,
    pub port: u16,
    pub weight: u32,
    pub priority: u32,
    pub hostname: String,
}

/// One upstream host.
#[derive(Debug)]
pub struct Host {
    pub addr: SocketAddr,
    pub weight: u32,
    pub priority: u32,
    /// The name it was resolved from (for `auto_host_rewrite`), or the endpoint's `hostname`.
    pub hostname: String,
    pub stats: HostStats,
}

/// Per-host counters, as `/clusters` shows them (`cx_active`, `rq_total`…).
/// They live with the host, so they survive a DNS/EDS update that keeps it.
#[derive(Debug, Default)]
pub struct HostStats {
    pub cx_total: AtomicU64,
    pub cx_active: AtomicU64,
    pub cx_connect_fail: AtomicU64,
    pub rq_total: AtomicU64,
    /// Requests in flight; also what LEAST_REQUEST balances on.
    pub rq_active: AtomicU64,
    pub rq_success: AtomicU64,
    pub rq_error: AtomicU64,
    pub rq_timeout: AtomicU64,
}

impl Host {
    pub fn new(addr: SocketAddr, weight: u32, priority: u32, hostname: String) -> Host {
        Host {
            addr,
            weight,
            priority,
            hostname,
            stats: HostStats::default(),
        }
    }
}

/// The hosts of a cluster at one moment; replaced as a whole when DNS or
/// EDS changes, never mutated.
#[derive(Debug, Default)]
pub struct HostSet {
    /// Every host, all priorities (what `/clusters` lists).
    pub all: Vec<Arc<Host>>,
    /// Hosts of the lowest priority level that has any (no health checks
    /// yet, so every host is healthy and lower levels never spill over).
    pub hosts: Vec<Arc<Host>>,
    /// Smooth weighted round-robin order over `hosts` (indices).
    schedule: Vec<usize>,
    next: AtomicUsize,
}

impl HostSet {
    pub fn new(all: Vec<Arc<Host>>) -> HostSet {
        let lowest = all.iter().map(|h| h.priority).min();
        let hosts: Vec<Arc<Host>> = all
            .iter()
            .filter(|h| Some(h.priority) == lowest)
            .cloned()
            .collect();
        let schedule = weighted_schedule(&hosts.iter().map(|h| h.weight.max(1)).collect::<Vec<_>>());
        HostSet {
            all,
            hosts,
            schedule,
            next: AtomicUsize::new(0),
        }
    }

    /// The existing host for `addr` (to keep its stats across updates).
    pub fn find(&self, addr: SocketAddr) -> Option<&Arc<Host>> {
        self.all.iter().find(|h| h.addr == addr)
    }

    pub fn all_addrs(&self) -> Vec<SocketAddr> {
        self.all.iter().map(|h| h.addr).collect()
    }

    pub fn pick(&self, policy: LbPolicy) -> Option<Arc<Host>> {
        if self.hosts.is_empty() {
            return None;
        }
        let n = self.hosts.len();
        let i = match policy {
            LbPolicy::RoundRobin => {
                let k = self.next.fetch_add(1, Ordering::Relaxed);
                self.schedule[k % self.schedule.len()]
            }
            LbPolicy::Random => fastrand::usize(..n),
            LbPolicy::LeastRequest => {
                // Power of two choices, weighted by dividing load by weight.
                let a = fastrand::usize(..n);
                let b = fastrand::usize(..n);
                let load = |i: usize| {
                    let h = &self.hosts[i];
                    (h.stats.rq_active.load(Ordering::Relaxed) + 1) as f64 / f64::from(h.weight.max(1))
                };
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
        };
        self.hosts.get(i).cloned()
    }
}

/// Smooth weighted round robin (as nginx does it): for weights 5,1,1 the
/// order is a a b a c a a, spreading the heavy host out. The schedule is
/// one full cycle, reduced by the gcd and capped so huge weights stay cheap.
pub fn weighted_schedule(weights: &[u32]) -> Vec<usize> {
    if weights.is_empty() {
        return Vec::new();
    }
    if weights.iter().all(|w| *w == weights[0]) {
        return (0..weights.len()).collect();
    }
    let g = weights.iter().fold(0u64, |g, w| gcd(g, u64::from(*w)));
    let mut w: Vec<u64> = weights.iter().map(|x| u64::from(*x) / g.max(1)).collect();
    let total: u64 = w.iter().sum();
    const CAP: u64 = 4096;
    if total > CAP {
        w = w.iter().map(|x| (x * CAP / total).max(1)).collect();
    }
    let total: i64 = w.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += *wi as i64;
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
            .unwrap_or((0, &0));
        current[best] -= total;
        out.push(best);
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
pub struct Cluster {
    /// Unique per compiled cluster: worker connection pools are keyed by it,
    /// so a changed cluster gets fresh pools.
    pub id: u64,
    pub name: String,
    pub discovery: Discovery,
    pub lb: LbPolicy,
    pub connect_timeout: Duration,
    pub protocol: Protocol,
    pub idle_timeout: Option<Duration>,
    pub max_requests_per_connection: Option<u32>,
    pub dns_refresh: Duration,
    pub dns_family: DnsFamily,
    pub endpoints: Vec<EndpointSpec>,
    /// For EDS: the name of the ClusterLoadAssignment to subscribe to.
    pub eds_service_name: String,
    pub hosts: Arc<HostSet>,
    pub stats: Arc<super::stats::ClusterStats>,
}

fn duration(d: &prost_types::Duration) -> Duration {
    Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
}

impl Cluster {
    /// A copy with a new host set (DNS/EDS updates); shares nothing mutable.
    pub fn with_hosts(&self, hosts: Arc<HostSet>) -> Cluster {
        Cluster {
            id: self.id,
            name: self.name.clone(),
            discovery: self.discovery,
            lb: self.lb,
            connect_timeout: self.connect_timeout,
            protocol: self.protocol,
            idle_timeout: self.idle_timeout,
            max_requests_per_connection: self.max_requests_per_connection,
            dns_refresh: self.dns_refresh,
            dns_family: self.dns_family,
            endpoints: self.endpoints.clone(),
            eds_service_name: self.eds_service_name.clone(),
            hosts,
            stats: self.stats.clone(),
        }
    }

    pub fn compile(c: &PCluster) -> Result<Cluster, String> {
        let discovery = match c.cluster_discovery_type {
            Some(cluster::ClusterDiscoveryType::Type(t)) => match cluster::DiscoveryType::try_from(t) {
                Ok(cluster::DiscoveryType::StrictDns) => Discovery::StrictDns,
                Ok(cluster::DiscoveryType::LogicalDns) => Discovery::LogicalDns,
                Ok(cluster::DiscoveryType::Eds) => Discovery::Eds,
                Ok(cluster::DiscoveryType::Static) => Discovery::Static,
                _ => return Err("this cluster type is not supported by legate yet".into()),
            },
            _ => Discovery::Static,
        };
        let lb = match cluster::LbPolicy::try_from(c.lb_policy) {
            Ok(cluster::LbPolicy::LeastRequest) => LbPolicy::LeastRequest,
            Ok(cluster::LbPolicy::Random) => LbPolicy::Random,
            _ => LbPolicy::RoundRobin,
        };
        let dns_family = match cluster::DnsLookupFamily::try_from(c.dns_lookup_family) {
            Ok(cluster::DnsLookupFamily::V4Only) => DnsFamily::V4Only,
            Ok(cluster::DnsLookupFamily::V6Only) => DnsFamily::V6Only,
            Ok(cluster::DnsLookupFamily::V4Preferred) => DnsFamily::V4Preferred,
            Ok(cluster::DnsLookupFamily::All) => DnsFamily::All,
            _ => DnsFamily::Auto,
        };
        let (protocol, idle_timeout, max_requests) = protocol_options(c)?;
        let mut endpoints = Vec::new();
        if let Some(la) = &c.load_assignment {
            for locality in &la.endpoints {
                for lb_ep in &locality.lb_endpoints {
                    use crate::proto::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
                    let Some(HostIdentifier::Endpoint(e)) = &lb_ep.host_identifier else {
                        continue;
                    };
                    let Some(address::Address::SocketAddress(sa)) =
                        e.address.as_ref().and_then(|a| a.address.as_ref())
                    else {
                        continue;
                    };
                    let port = match sa.port_specifier {
                        Some(socket_address::PortSpecifier::PortValue(p)) => {
                            u16::try_from(p).map_err(|_| "port out of range")?
                        }
                        _ => 0,
                    };
                    endpoints.push(EndpointSpec {
                        address: sa.address.clone(),
                        port,
                        weight: lb_ep.load_balancing_weight.unwrap_or(1).max(1),
                        priority: locality.priority,
                        hostname: e.hostname.clone(),
                    });
                }
            }
        }
        // STATIC (and EDS from a bootstrap) hosts are known now; DNS ones
        // arrive from the resolver.
        let hosts = if discovery == Discovery::Static {
            static_hosts(&endpoints)?
        } else {
            HostSet::default()
        };
        Ok(Cluster {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: c.name.clone(),
            discovery,
            lb,
            connect_timeout: c
                .connect_timeout
                .as_ref()
                .map(duration)
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            protocol,
            idle_timeout,
            max_requests_per_connection: max_requests,
            dns_refresh: c
                .dns_refresh_rate
                .as_ref()
                .map(duration)
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_DNS_REFRESH),
            dns_family,
            eds_service_name: c
                .eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| c.name.clone()),
            endpoints,
            stats: {
                let stats = super::stats::ClusterStats::new(&c.name);
                stats.set_membership(hosts.all.len());
                Arc::new(stats)
            },
            hosts: Arc::new(hosts),
        })
    }
}

pub fn static_hosts(endpoints: &[EndpointSpec]) -> Result<HostSet, String> {
    let mut hosts = Vec::new();
    for e in endpoints {
        let ip: std::net::IpAddr = e
            .address
            .parse()
            .map_err(|_| format!("`{}` is not an IP address", e.address))?;
        let hostname = if e.hostname.is_empty() {
            e.address.clone()
        } else {
            e.hostname.clone()
        };
        hosts.push(Arc::new(Host::new(
            SocketAddr::new(ip, e.port),
            e.weight,
            e.priority,
            hostname,
        )));
    }
    Ok(HostSet::new(hosts))
}

/// Upstream protocol, idle timeout and requests per connection, from
/// `typed_extension_protocol_options` (the v2 cluster fields were folded
/// into it by the loader).
fn protocol_options(c: &PCluster) -> Result<(Protocol, Option<Duration>, Option<u32>), String> {
    let mut protocol = Protocol::Http1;
    let mut idle = Some(DEFAULT_IDLE_TIMEOUT);
    let mut max_requests = c.max_requests_per_connection;
    if let Some(any) = c.typed_extension_protocol_options.get(UPSTREAM_HTTP_OPTIONS) {
        let opts: HttpProtocolOptions = unpack(any, UPSTREAM_HTTP_OPTIONS)
            .ok_or_else(|| format!("cannot decode {}", type_url_name(&any.type_url)))?;
        use http_protocol_options::explicit_http_config::ProtocolConfig;
        use http_protocol_options::UpstreamProtocolOptions as U;
        protocol = match &opts.upstream_protocol_options {
            Some(U::ExplicitHttpConfig(e)) => match &e.protocol_config {
                Some(ProtocolConfig::Http2ProtocolOptions(_)) => Protocol::Http2,
                Some(ProtocolConfig::HttpProtocolOptions(_)) => Protocol::Http1,
                Some(_) => return Err("HTTP/3 upstreams are not supported by legate yet".into()),
                None => {
                    return Err(
                        "explicit_http_config needs http_protocol_options or http2_protocol_options".into(),
                    )
                }
            },
            Some(U::UseDownstreamProtocolConfig(_)) => Protocol::Downstream,
            Some(U::AutoConfig(_)) => {
                return Err("auto_config (ALPN) needs TLS, which legate does not support yet".into())
            }
            None => Protocol::Http1,
        };
        if let Some(common) = &opts.common_http_protocol_options {
            if let Some(t) = &common.idle_timeout {
                idle = Some(duration(t)).filter(|d| !d.is_zero());
            }
            if common.max_requests_per_connection.is_some() {
                max_requests = common.max_requests_per_connection;
            }
        }
    }
    Ok((protocol, idle, max_requests))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_weighted_schedule() {
        assert_eq!(weighted_schedule(&[1, 1, 1]), vec![0, 1, 2]);
        assert_eq!(weighted_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(weighted_schedule(&[2, 4]), vec![1, 0, 1]);
        let big = weighted_schedule(&[1_000_000, 1]);
        assert!(big.len() <= 4097 && big.contains(&1));
        assert!(weighted_schedule(&[]).is_empty());
    }

    fn host(port: u16, weight: u32, priority: u32) -> Arc<Host> {
        Arc::new(Host::new(
            SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
            priority,
            String::new(),
        ))
    }

    #[test]
    fn round_robin_uses_the_lowest_priority_and_weights() {
        let set = HostSet::new(vec![host(1, 1, 1), host(2, 3, 0), host(3, 1, 0)]);
        let picks: Vec<u16> = (0..8)
            .map(|_| set.pick(LbPolicy::RoundRobin).unwrap().addr.port())
            .collect();
        assert_eq!(picks.iter().filter(|p| **p == 2).count(), 6);
        assert_eq!(picks.iter().filter(|p| **p == 3).count(), 2);
        assert!(!picks.contains(&1));
        assert!(HostSet::default().pick(LbPolicy::Random).is_none());
    }

    #[test]
    fn least_request_prefers_idle_hosts() {
        let set = HostSet::new(vec![host(1, 1, 0), host(2, 1, 0)]);
        set.hosts[0].stats.rq_active.store(100, Ordering::Relaxed);
        let picks: Vec<u16> = (0..200)
            .map(|_| set.pick(LbPolicy::LeastRequest).unwrap().addr.port())
            .collect();
        // host 1 is only picked when both choices land on it (1/4 of the time).
        let busy = picks.iter().filter(|p| **p == 1).count();
        assert!(busy < 100, "{busy}");
    }
}
