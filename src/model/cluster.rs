//! A cluster as the data plane uses it: how to reach its hosts, which
//! protocol to speak, and the load balancer that picks a host.

use super::duration;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::lb::{self, HashLb, MaglevConfig, RingHashConfig};
use crate::config::validate::{type_url_name, unpack, UPSTREAM_HTTP_OPTIONS};
use crate::proto::envoy::config::cluster::v3::{cluster, Cluster as PCluster};
use crate::proto::envoy::config::core::v3::{address, socket_address};
use crate::proto::envoy::extensions::upstreams::http::v3::{http_protocol_options, HttpProtocolOptions};
use crate::stats::{Counter, Gauge};

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

/// The cluster's load balancer. Copy, so it is read without a clone per
/// request; the consistent-hash lookup structures live in the [`HostSet`]
/// (they depend on the hosts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
    RingHash(RingHashConfig),
    Maglev(MaglevConfig),
}

impl LbPolicy {
    /// Does this policy pick by a request hash (route `hash_policy`)?
    pub fn is_hashed(&self) -> bool {
        matches!(self, LbPolicy::RingHash(_) | LbPolicy::Maglev(_))
    }
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
    pub locality: Arc<Locality>,
}

/// Where an endpoint runs (`/clusters` prints it; locality-aware load
/// balancing will use it). Held by `Arc`: the endpoints and hosts of one
/// locality share one, and those without a locality (most) share
/// [`Locality::none`], where a copy each was 72 bytes per host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
}

impl Locality {
    /// The empty locality, allocated once per process.
    pub fn none() -> Arc<Locality> {
        static NONE: OnceLock<Arc<Locality>> = OnceLock::new();
        NONE.get_or_init(Arc::default).clone()
    }
}

/// One upstream host.
#[derive(Debug)]
pub struct Host {
    pub addr: SocketAddr,
    pub weight: u32,
    pub priority: u32,
    /// The name it was resolved from (for `auto_host_rewrite`), or the endpoint's `hostname`.
    pub hostname: String,
    pub locality: Arc<Locality>,
    pub stats: HostStats,
}

/// Per-host counters, as `/clusters` shows them (`cx_active`, `rq_total`…).
/// They live with the host, so they survive a DNS/EDS update that keeps it.
/// Sharded like every stat (src/stats.rs): every worker updates them on
/// every request, so a plain shared atomic would bounce one cache line.
#[derive(Default)]
pub struct HostStats {
    pub cx_total: Counter,
    pub cx_active: Gauge,
    pub cx_connect_fail: Counter,
    pub rq_total: Counter,
    /// Requests in flight; also what LEAST_REQUEST balances on.
    pub rq_active: Gauge,
    pub rq_success: Counter,
    pub rq_error: Counter,
    pub rq_timeout: Counter,
}

impl std::fmt::Debug for HostStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostStats")
            .field("rq_total", &self.rq_total.value())
            .field("rq_active", &self.rq_active.value())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// The endpoint's locality, for hosts built from an [`EndpointSpec`].
    pub fn with_locality(mut self, locality: &Arc<Locality>) -> Host {
        self.locality = locality.clone();
        self
    }

    pub fn new(addr: SocketAddr, weight: u32, priority: u32, hostname: String) -> Host {
        Host {
            addr,
            locality: Locality::none(),
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
    /// The ring or Maglev table over `hosts` for a consistent-hash policy.
    /// Built once per host set: by [`HostSet::with_lb`] (off the request
    /// path), or else on the first hashed pick. It records the config it was
    /// built for, so a host set picked under another policy still answers
    /// correctly (by building a throwaway one).
    hashed: OnceLock<HashLb>,
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
            hashed: OnceLock::new(),
        }
    }

    /// A host set with the lookup structure of `policy` built now (a ring
    /// or table for RING_HASH / MAGLEV; nothing for the others), so the
    /// first request does not pay for it.
    pub fn with_lb(all: Vec<Arc<Host>>, policy: LbPolicy) -> HostSet {
        let set = HostSet::new(all);
        if let Some(built) = set.build_hashed(policy) {
            let _ = set.hashed.set(built);
        }
        set
    }

    fn build_hashed(&self, policy: LbPolicy) -> Option<HashLb> {
        let keys = || -> Vec<(String, u32)> {
            self.hosts
                .iter()
                .map(|h| (lb::host_key(h.addr), h.weight))
                .collect()
        };
        match policy {
            LbPolicy::RingHash(c) => Some(HashLb::Ring(c, lb::RingHash::build(&keys(), &c))),
            LbPolicy::Maglev(c) => Some(HashLb::Maglev(c, lb::Maglev::build(&keys(), &c))),
            _ => None,
        }
    }

    /// Picks a host with `policy`, using `hash` (from the route's
    /// `hash_policy`) for RING_HASH and MAGLEV. Without a hash those pick
    /// with a random one, as Envoy does; other policies ignore the hash.
    pub fn pick_hashed(&self, policy: LbPolicy, hash: Option<u64>) -> Option<Arc<Host>> {
        if !policy.is_hashed() {
            return self.pick(policy);
        }
        if self.hosts.is_empty() {
            return None;
        }
        let h = hash.unwrap_or_else(|| fastrand::u64(..));
        let built = match self.hashed.get() {
            Some(b) => b,
            None => {
                let b = self.build_hashed(policy)?;
                self.hashed.get_or_init(|| b)
            }
        };
        let same = match (built, policy) {
            (HashLb::Ring(c, _), LbPolicy::RingHash(p)) => *c == p,
            (HashLb::Maglev(c, _), LbPolicy::Maglev(p)) => *c == p,
            _ => false,
        };
        let i = if same {
            built.pick(h)
        } else {
            self.build_hashed(policy)?.pick(h)
        };
        self.hosts.get(i?).cloned()
    }

    /// The existing host for `addr` (to keep its stats across updates).
    pub fn find(&self, addr: SocketAddr) -> Option<&Arc<Host>> {
        self.all.iter().find(|h| h.addr == addr)
    }

    pub fn all_addrs(&self) -> Vec<SocketAddr> {
        self.all.iter().map(|h| h.addr).collect()
    }

    /// Picks a host with `policy`; RING_HASH and MAGLEV pick as with no
    /// request hash (see [`HostSet::pick_hashed`]).
    pub fn pick(&self, policy: LbPolicy) -> Option<Arc<Host>> {
        if policy.is_hashed() {
            return self.pick_hashed(policy, None);
        }
        if self.hosts.is_empty() {
            return None;
        }
        let n = self.hosts.len();
        let i = match policy {
            LbPolicy::RoundRobin => {
                let k = self.next.fetch_add(1, Ordering::Relaxed);
                self.schedule[k % self.schedule.len()]
            }
            LbPolicy::Random | LbPolicy::RingHash(_) | LbPolicy::Maglev(_) => fastrand::usize(..n),
            LbPolicy::LeastRequest => {
                // Power of two choices, weighted by dividing load by weight.
                let a = fastrand::usize(..n);
                let b = fastrand::usize(..n);
                let load = |i: usize| {
                    let h = &self.hosts[i];
                    (h.stats.rq_active.value().max(0) as u64 + 1) as f64 / f64::from(h.weight.max(1))
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
    /// Streams per upstream HTTP/2 connection before another is opened
    /// (`http2_protocol_options.max_concurrent_streams`, Envoy's default 2^31-1).
    pub h2_max_streams: u32,
    pub idle_timeout: Option<Duration>,
    pub max_requests_per_connection: Option<u32>,
    pub dns_refresh: Duration,
    pub dns_family: DnsFamily,
    /// Resolver and refresh policy (DNS clusters).
    pub dns: super::dns::ClusterDns,
    pub endpoints: Vec<EndpointSpec>,
    /// For EDS: the name of the ClusterLoadAssignment to subscribe to.
    pub eds_service_name: String,
    pub hosts: Arc<HostSet>,
    pub stats: Arc<super::stats::ClusterStats>,
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
            h2_max_streams: self.h2_max_streams,
            idle_timeout: self.idle_timeout,
            max_requests_per_connection: self.max_requests_per_connection,
            dns_refresh: self.dns_refresh,
            dns_family: self.dns_family,
            dns: self.dns.clone(),
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
        let lb = lb_policy(c)?;
        let dns_family = match cluster::DnsLookupFamily::try_from(c.dns_lookup_family) {
            Ok(cluster::DnsLookupFamily::V4Only) => DnsFamily::V4Only,
            Ok(cluster::DnsLookupFamily::V6Only) => DnsFamily::V6Only,
            Ok(cluster::DnsLookupFamily::V4Preferred) => DnsFamily::V4Preferred,
            Ok(cluster::DnsLookupFamily::All) => DnsFamily::All,
            _ => DnsFamily::Auto,
        };
        let (protocol, idle_timeout, max_requests, h2_max_streams) = protocol_options(c)?;
        let endpoints = match &c.load_assignment {
            Some(la) => endpoints_of(la)?,
            None => Vec::new(),
        };
        // STATIC (and EDS from a bootstrap) hosts are known now; DNS ones
        // arrive from the resolver.
        let hosts = if discovery == Discovery::Static {
            static_hosts(&endpoints, lb)?
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
            h2_max_streams,
            idle_timeout,
            max_requests_per_connection: max_requests,
            dns_refresh: c
                .dns_refresh_rate
                .as_ref()
                .map(duration)
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_DNS_REFRESH),
            dns_family,
            dns: super::dns::ClusterDns::compile(c).map_err(|e| format!("{}: {}", e.field, e.message))?,
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

/// The hosts of a STATIC cluster, with the lookup structure of `lb` built.
/// The endpoints of a ClusterLoadAssignment (a cluster's `load_assignment`
/// or an EDS resource), in order.
pub fn endpoints_of(
    la: &crate::proto::envoy::config::endpoint::v3::ClusterLoadAssignment,
) -> Result<Vec<EndpointSpec>, String> {
    let mut endpoints = Vec::new();
    for locality in &la.endpoints {
        let shared = match &locality.locality {
            Some(l) if !(l.region.is_empty() && l.zone.is_empty() && l.sub_zone.is_empty()) => {
                Arc::new(Locality {
                    region: l.region.clone(),
                    zone: l.zone.clone(),
                    sub_zone: l.sub_zone.clone(),
                })
            }
            _ => Locality::none(),
        };
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
                locality: shared.clone(),
            });
        }
    }
    // Kept for the cluster's lifetime: no spare capacity.
    endpoints.shrink_to_fit();
    Ok(endpoints)
}

/// The host set for EDS endpoints, keeping the `Host` (and so its stats
/// and pooled connections) of every endpoint that did not change.
pub fn eds_hosts(prev: &HostSet, endpoints: &[EndpointSpec], lb: LbPolicy) -> Result<HostSet, String> {
    let by_addr: std::collections::HashMap<SocketAddr, &Arc<Host>> =
        prev.all.iter().map(|h| (h.addr, h)).collect();
    let mut all = Vec::with_capacity(endpoints.len());
    for e in endpoints {
        let fresh = endpoint_host(e)?;
        let kept = by_addr.get(&fresh.addr).filter(|p| {
            p.weight == fresh.weight
                && p.priority == fresh.priority
                && p.hostname == fresh.hostname
                && p.locality == fresh.locality
        });
        all.push(match kept {
            Some(p) => Arc::clone(p),
            None => Arc::new(fresh),
        });
    }
    Ok(HostSet::with_lb(all, lb))
}

fn endpoint_host(e: &EndpointSpec) -> Result<Host, String> {
    let ip: std::net::IpAddr = e
        .address
        .parse()
        .map_err(|_| format!("`{}` is not an IP address", e.address))?;
    let hostname = if e.hostname.is_empty() {
        e.address.clone()
    } else {
        e.hostname.clone()
    };
    Ok(Host::new(SocketAddr::new(ip, e.port), e.weight, e.priority, hostname).with_locality(&e.locality))
}

pub fn static_hosts(endpoints: &[EndpointSpec], lb: LbPolicy) -> Result<HostSet, String> {
    let hosts = endpoints
        .iter()
        .map(|e| endpoint_host(e).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HostSet::with_lb(hosts, lb))
}
/// `lb_policy` with its `lb_config` (Envoy reads `ring_hash_lb_config` only
/// for RING_HASH and `maglev_lb_config` only for MAGLEV). The validator has
/// rejected bad sizes with field paths; this re-checks so a compiled cluster
/// is always buildable.
fn lb_policy(c: &PCluster) -> Result<LbPolicy, String> {
    use cluster::LbConfig;
    Ok(match cluster::LbPolicy::try_from(c.lb_policy) {
        Ok(cluster::LbPolicy::LeastRequest) => LbPolicy::LeastRequest,
        Ok(cluster::LbPolicy::Random) => LbPolicy::Random,
        Ok(cluster::LbPolicy::RingHash) => {
            let mut config = RingHashConfig::default();
            if let Some(LbConfig::RingHashLbConfig(r)) = &c.lb_config {
                if let Some(min) = r.minimum_ring_size {
                    config.minimum_ring_size = min;
                }
                if let Some(max) = r.maximum_ring_size {
                    config.maximum_ring_size = max;
                }
                if r.hash_function == cluster::ring_hash_lb_config::HashFunction::MurmurHash2 as i32 {
                    config.hash_function = lb::HashFunction::MurmurHash2;
                }
            }
            if let Some((field, e)) =
                ring_hash_config_error(config.minimum_ring_size, config.maximum_ring_size)
            {
                return Err(format!("ring_hash_lb_config.{field}: {e}"));
            }
            LbPolicy::RingHash(config)
        }
        Ok(cluster::LbPolicy::Maglev) => {
            let mut config = MaglevConfig::default();
            if let Some(LbConfig::MaglevLbConfig(m)) = &c.lb_config {
                if let Some(size) = m.table_size {
                    config.table_size = size;
                }
            }
            if let Some((field, e)) = maglev_config_error(config.table_size) {
                return Err(format!("maglev_lb_config.{field}: {e}"));
            }
            LbPolicy::Maglev(config)
        }
        _ => LbPolicy::RoundRobin,
    })
}

/// Envoy's checks on `ring_hash_lb_config` (the proto's `lte: 8388608` on
/// both sizes, and min <= max), as a message naming the field at fault.
pub fn ring_hash_config_error(min: u64, max: u64) -> Option<(&'static str, String)> {
    if min > lb::ring_hash::MAX_RING_SIZE {
        return Some((
            "minimum_ring_size",
            format!(
                "{min} is greater than the maximum allowed, {}",
                lb::ring_hash::MAX_RING_SIZE
            ),
        ));
    }
    if max > lb::ring_hash::MAX_RING_SIZE {
        return Some((
            "maximum_ring_size",
            format!(
                "{max} is greater than the maximum allowed, {}",
                lb::ring_hash::MAX_RING_SIZE
            ),
        ));
    }
    if min > max {
        return Some((
            "minimum_ring_size",
            format!("ring hash: minimum_ring_size ({min}) > maximum_ring_size ({max})"),
        ));
    }
    None
}

/// Envoy's checks on `maglev_lb_config.table_size` (`lte: 5000011`, prime).
pub fn maglev_config_error(size: u64) -> Option<(&'static str, String)> {
    if size > lb::maglev::MAX_TABLE_SIZE {
        return Some((
            "table_size",
            format!(
                "{size} is greater than the maximum allowed, {}",
                lb::maglev::MAX_TABLE_SIZE
            ),
        ));
    }
    if !lb::is_prime(size) {
        return Some((
            "table_size",
            format!("the table size of maglev must be a prime number, found {size} (the default is 65537)"),
        ));
    }
    None
}

/// Upstream protocol, idle timeout and requests per connection, from
/// `typed_extension_protocol_options` (the v2 cluster fields were folded
/// into it by the loader).
/// Envoy's default `max_concurrent_streams` for HTTP/2.
pub const DEFAULT_H2_MAX_STREAMS: u32 = 2_147_483_647;

type ProtocolOptions = (Protocol, Option<Duration>, Option<u32>, u32);

fn protocol_options(c: &PCluster) -> Result<ProtocolOptions, String> {
    let mut h2_max_streams = DEFAULT_H2_MAX_STREAMS;
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
                Some(ProtocolConfig::Http2ProtocolOptions(h2)) => {
                    h2_max_streams = h2.max_concurrent_streams.unwrap_or(DEFAULT_H2_MAX_STREAMS).max(1);
                    Protocol::Http2
                }
                Some(ProtocolConfig::HttpProtocolOptions(_)) => Protocol::Http1,
                Some(_) => return Err("HTTP/3 upstreams are not supported by legate yet".into()),
                None => {
                    return Err(
                        "explicit_http_config needs http_protocol_options or http2_protocol_options".into(),
                    )
                }
            },
            Some(U::UseDownstreamProtocolConfig(d)) => {
                if let Some(h2) = &d.http2_protocol_options {
                    h2_max_streams = h2.max_concurrent_streams.unwrap_or(DEFAULT_H2_MAX_STREAMS).max(1);
                }
                Protocol::Downstream
            }
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
    Ok((protocol, idle, max_requests, h2_max_streams))
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
        set.hosts[0].stats.rq_active.set(100);
        let picks: Vec<u16> = (0..200)
            .map(|_| set.pick(LbPolicy::LeastRequest).unwrap().addr.port())
            .collect();
        // host 1 is only picked when both choices land on it (1/4 of the time).
        let busy = picks.iter().filter(|p| **p == 1).count();
        assert!(busy < 100, "{busy}");
    }

    fn ring() -> LbPolicy {
        LbPolicy::RingHash(RingHashConfig::default())
    }

    fn maglev() -> LbPolicy {
        LbPolicy::Maglev(MaglevConfig::default())
    }

    #[test]
    fn hashed_picks_are_stable_and_spread() {
        for policy in [ring(), maglev()] {
            let set = HostSet::with_lb(
                vec![host(1, 1, 0), host(2, 1, 0), host(3, 1, 0), host(9, 1, 1)],
                policy,
            );
            assert!(set.hashed.get().is_some(), "with_lb builds up front");
            let mut seen = std::collections::HashSet::new();
            for k in 0..200u64 {
                let h = lb::xxhash64(&k.to_le_bytes(), 0);
                let a = set.pick_hashed(policy, Some(h)).unwrap().addr.port();
                let b = set.pick_hashed(policy, Some(h)).unwrap().addr.port();
                assert_eq!(a, b, "{policy:?}");
                assert_ne!(a, 9, "only the lowest priority serves");
                seen.insert(a);
            }
            assert_eq!(seen.len(), 3, "{policy:?}");
            // No hash: random over the ring/table, so every host shows up.
            let random: std::collections::HashSet<u16> =
                (0..200).map(|_| set.pick(policy).unwrap().addr.port()).collect();
            assert_eq!(random.len(), 3, "{policy:?}");
            assert!(HostSet::with_lb(Vec::new(), policy)
                .pick_hashed(policy, Some(1))
                .is_none());
        }
    }

    #[test]
    fn hashed_lookup_is_built_lazily_and_per_policy() {
        let set = HostSet::new(vec![host(1, 1, 0), host(2, 1, 0), host(3, 1, 0)]);
        assert!(set.hashed.get().is_none());
        let ring_pick = set.pick_hashed(ring(), Some(42)).unwrap().addr;
        assert!(set.hashed.get().is_some());
        // Picked under another policy than it was built for: answers as a
        // host set built for that policy would.
        let fresh = HostSet::with_lb(vec![host(1, 1, 0), host(2, 1, 0), host(3, 1, 0)], maglev());
        for k in 0..50u64 {
            let h = lb::xxhash64(&k.to_le_bytes(), 0);
            assert_eq!(
                set.pick_hashed(maglev(), Some(h)).unwrap().addr,
                fresh.pick_hashed(maglev(), Some(h)).unwrap().addr
            );
        }
        assert_eq!(set.pick_hashed(ring(), Some(42)).unwrap().addr, ring_pick);
        // Non-hash policies ignore the hash.
        assert!(set.pick_hashed(LbPolicy::RoundRobin, Some(42)).is_some());
    }

    fn compile_yaml(text: &str) -> Result<Cluster, String> {
        let node = crate::config::yaml::parse(text).unwrap();
        let msg = crate::config::decode::decode(
            "envoy.config.cluster.v3.Cluster",
            &node,
            &mut Vec::new(),
            &mut std::collections::HashMap::new(),
        )
        .unwrap();
        Cluster::compile(&msg.transcode_to().unwrap())
    }

    #[test]
    fn lb_configs_compile_with_envoy_defaults() {
        let base = "name: c\nload_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}\n";
        let cases: Vec<(&str, Result<LbPolicy, &str>)> = vec![
            ("lb_policy: RING_HASH", Ok(ring())),
            (
                "lb_policy: RING_HASH\nring_hash_lb_config: {minimum_ring_size: 16, maximum_ring_size: 64, hash_function: MURMUR_HASH_2}",
                Ok(LbPolicy::RingHash(RingHashConfig {
                    minimum_ring_size: 16,
                    maximum_ring_size: 64,
                    hash_function: lb::HashFunction::MurmurHash2,
                })),
            ),
            ("lb_policy: MAGLEV", Ok(maglev())),
            ("lb_policy: MAGLEV\nmaglev_lb_config: {table_size: 7}", Ok(LbPolicy::Maglev(MaglevConfig { table_size: 7 }))),
            // A config for the other policy is ignored, as in Envoy.
            ("lb_policy: MAGLEV\nring_hash_lb_config: {minimum_ring_size: 16}", Ok(maglev())),
            ("lb_policy: MAGLEV\nmaglev_lb_config: {table_size: 8}", Err("maglev_lb_config.table_size")),
            (
                "lb_policy: RING_HASH\nring_hash_lb_config: {minimum_ring_size: 100, maximum_ring_size: 10}",
                Err("minimum_ring_size (100) > maximum_ring_size (10)"),
            ),
        ];
        for (extra, want) in cases {
            let got = compile_yaml(&format!("{base}{extra}\n"));
            match (got, want) {
                (Ok(c), Ok(p)) => {
                    assert_eq!(c.lb, p, "{extra}");
                    assert!(
                        c.hosts.hashed.get().is_some(),
                        "static hosts are built with the lb: {extra}"
                    );
                }
                (Err(e), Err(w)) => assert!(e.contains(w), "{extra}: {e}"),
                (got, want) => panic!("{extra}: got {got:?}, want {want:?}"),
            }
        }
    }
}
