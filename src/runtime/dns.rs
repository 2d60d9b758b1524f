//! DNS for STRICT_DNS and LOGICAL_DNS clusters, on the main runtime: each
//! endpoint name is a resolve target with its own timer, as in Envoy; a
//! changed answer publishes a new host set into the snapshot.
//!
//! Resolvers (chosen at config compile time, `model::dns`):
//! - the system resolver (`getaddrinfo`, legate's default): tokio's
//!   `lookup_host`, so /etc/hosts and nsswitch apply; no TTLs (Envoy's
//!   getaddrinfo resolver reports 60 s);
//! - c-ares configs: legate's own DNS client (hickory-resolver) asking the
//!   configured name servers (or /etc/resolv.conf's), with record TTLs.
//!
//! Outcomes, as Envoy treats them: NXDOMAIN / NODATA is a *completed*
//! resolution with no addresses (a STRICT_DNS target then has no hosts; a
//! LOGICAL_DNS cluster keeps its address and counts a failure); any other
//! error (SERVFAIL, timeout, refused) is a failure that keeps the target's
//! previous hosts and retries after `dns_failure_refresh_rate` backoff (or
//! `dns_refresh_rate`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts, ServerOrderingStrategy,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use tokio::time::Instant;

use crate::model::cluster::{Cluster, Discovery, DnsFamily, EndpointSpec, Host, HostSet};
use crate::model::dns::{Backoff, DnsServers, Resolver, SYSTEM_TTL};
use crate::model::{Shared, Snapshot};
use crate::stats::{store, Counter};

/// Addresses of one name filtered by the cluster's lookup family (Envoy's
/// AUTO prefers IPv6 and falls back to IPv4).
pub fn filter_family(addrs: Vec<SocketAddr>, family: DnsFamily) -> Vec<SocketAddr> {
    let v4: Vec<SocketAddr> = addrs.iter().copied().filter(SocketAddr::is_ipv4).collect();
    let v6: Vec<SocketAddr> = addrs.iter().copied().filter(SocketAddr::is_ipv6).collect();
    match family {
        DnsFamily::V4Only => v4,
        DnsFamily::V6Only => v6,
        DnsFamily::Auto => {
            if v6.is_empty() {
                v4
            } else {
                v6
            }
        }
        DnsFamily::V4Preferred => {
            if v4.is_empty() {
                v6
            } else {
                v4
            }
        }
        DnsFamily::All => addrs,
    }
}

/// A completed resolution: the addresses (possibly none: NXDOMAIN or
/// NODATA) and the smallest record TTL, when the resolver knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub addrs: Vec<IpAddr>,
    pub ttl: Option<Duration>,
}

/// A resolver built from its config once per cluster (shared by clusters
/// with the same config).
#[derive(Clone)]
pub enum Live {
    System {
        retries: u32,
    },
    Dns(Box<TokioResolver>),
    /// The config could not be turned into a resolver; every resolution fails
    /// with this message.
    Broken(String),
}

impl Live {
    pub fn build(spec: &Resolver) -> Live {
        match spec {
            Resolver::System { retries } => Live::System { retries: *retries },
            Resolver::Dns(d) => match build_dns(d) {
                Ok(r) => Live::Dns(Box::new(r)),
                Err(e) => {
                    tracing::error!("cannot set up the DNS resolver: {e}");
                    Live::Broken(e)
                }
            },
        }
    }

    /// Resolves `name` for `family`. `Err` is a failed resolution (keep
    /// what was there); `Ok` with no addresses is a name without records.
    pub async fn resolve(&self, name: &str, family: DnsFamily) -> Result<Resolved, String> {
        match self {
            Live::System { retries } => {
                let mut left = *retries;
                loop {
                    match system_lookup(name, family).await {
                        Err(e) if left > 0 => {
                            tracing::debug!("DNS resolution of {name} failed ({e}); retrying");
                            left -= 1;
                        }
                        other => return other,
                    }
                }
            }
            Live::Dns(r) => dns_lookup(r, name, family).await,
            Live::Broken(e) => Err(e.clone()),
        }
    }
}

async fn system_lookup(name: &str, family: DnsFamily) -> Result<Resolved, String> {
    match tokio::net::lookup_host((name, 0)).await {
        Ok(found) => {
            let mut addrs: Vec<IpAddr> = filter_family(found.collect(), family)
                .into_iter()
                .map(|a| a.ip())
                .collect();
            dedup_in_order(&mut addrs);
            Ok(Resolved {
                addrs,
                ttl: Some(SYSTEM_TTL),
            })
        }
        Err(e) if is_no_such_name(&e) => Ok(Resolved {
            addrs: Vec::new(),
            ttl: None,
        }),
        Err(e) => Err(e.to_string()),
    }
}

/// getaddrinfo's EAI_NONAME / EAI_NODATA, which Envoy treats as an answer
/// with no records. std reports them only as text (gai_strerror), so this
/// knows glibc's and musl's wording; anything else is a failure.
fn is_no_such_name(e: &std::io::Error) -> bool {
    let text = e.to_string();
    [
        "Name or service not known",
        "No address associated with hostname",
        "Name does not resolve",
        "nodename nor servname provided, or not known",
    ]
    .iter()
    .any(|m| text.contains(m))
}

fn dedup_in_order(addrs: &mut Vec<IpAddr>) {
    let mut seen = std::collections::HashSet::new();
    addrs.retain(|a| seen.insert(*a));
}

/// One query type. NXDOMAIN / NODATA → `Ok` with no addresses.
async fn query(r: &TokioResolver, name: &str, ty: RecordType) -> Result<Resolved, String> {
    match r.lookup(name, ty).await {
        Ok(lookup) => {
            let mut addrs = Vec::new();
            let mut ttl: Option<u32> = None;
            for rec in lookup.answers() {
                let ip = match (&rec.data, ty) {
                    (RData::A(a), RecordType::A) => IpAddr::V4(a.0),
                    (RData::AAAA(a), RecordType::AAAA) => IpAddr::V6(a.0),
                    _ => continue,
                };
                addrs.push(ip);
                ttl = Some(ttl.map_or(rec.ttl, |t| t.min(rec.ttl)));
            }
            Ok(Resolved {
                addrs,
                ttl: ttl.map(|t| Duration::from_secs(u64::from(t))),
            })
        }
        Err(e) if e.is_no_records_found() => Ok(Resolved {
            addrs: Vec::new(),
            ttl: None,
        }),
        Err(e) => Err(e.to_string()),
    }
}

/// c-ares' order: AUTO asks AAAA then A when AAAA gave nothing;
/// V4_PREFERRED the reverse; ALL asks both. The resolution succeeds when
/// either query did.
async fn dns_lookup(r: &TokioResolver, name: &str, family: DnsFamily) -> Result<Resolved, String> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(Resolved {
            addrs: vec![ip],
            ttl: None,
        });
    }
    // Every refresh asks the name servers, as Envoy's c-ares does (its query
    // cache is off by default).
    r.clear_cache();
    let (first, second) = match family {
        DnsFamily::V4Only => return query(r, name, RecordType::A).await,
        DnsFamily::V6Only => return query(r, name, RecordType::AAAA).await,
        DnsFamily::Auto => (RecordType::AAAA, RecordType::A),
        DnsFamily::V4Preferred => (RecordType::A, RecordType::AAAA),
        DnsFamily::All => {
            let (a, aaaa) = tokio::join!(query(r, name, RecordType::A), query(r, name, RecordType::AAAA));
            return merge(a, aaaa);
        }
    };
    let a = query(r, name, first).await;
    if matches!(&a, Ok(res) if !res.addrs.is_empty()) {
        return a;
    }
    let b = query(r, name, second).await;
    merge(a, b)
}

fn merge(a: Result<Resolved, String>, b: Result<Resolved, String>) -> Result<Resolved, String> {
    match (a, b) {
        (Ok(mut x), Ok(y)) => {
            x.addrs.extend(y.addrs);
            x.ttl = match (x.ttl, y.ttl) {
                (Some(p), Some(q)) => Some(p.min(q)),
                (p, q) => p.or(q),
            };
            Ok(x)
        }
        (Ok(x), Err(_)) | (Err(_), Ok(x)) => Ok(x),
        (Err(e), Err(_)) => Err(e),
    }
}

/// A hickory resolver for a c-ares config: the configured name servers (or
/// /etc/resolv.conf's), its search domains unless `no_default_search_domain`,
/// c-ares' defaults (5 s per try, 4 tries, servers in order), /etc/hosts
/// first, and no answer cache.
fn build_dns(d: &DnsServers) -> Result<TokioResolver, String> {
    let (system, system_opts) = match hickory_resolver::system_conf::read_system_conf() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("cannot read /etc/resolv.conf: {e}");
            (
                ResolverConfig::from_parts(None, Vec::new(), Vec::new()),
                ResolverOpts::default(),
            )
        }
    };
    let conn = |port: u16| {
        let mut c = if d.tcp {
            ConnectionConfig::tcp()
        } else {
            ConnectionConfig::udp()
        };
        c.port = port;
        c
    };
    let system_servers: Vec<SocketAddr> = system
        .name_servers()
        .iter()
        .map(|ns| SocketAddr::new(ns.ip, ns.connections.first().map_or(53, |c| c.port)))
        .collect();
    // The configured servers, unless they are only a fallback and the
    // system names some.
    let use_configured = !d.servers.is_empty() && (!d.servers_as_fallback || system_servers.is_empty());
    let servers = if use_configured {
        &d.servers
    } else {
        &system_servers
    };
    if servers.is_empty() {
        return Err("no DNS name server: `resolvers` is empty and /etc/resolv.conf names none".into());
    }
    let name_servers = servers
        .iter()
        .map(|s| NameServerConfig::new(s.ip(), true, vec![conn(s.port())]))
        .collect();
    let (domain, search) = if d.no_search {
        (None, Vec::new())
    } else {
        (system.domain().cloned(), system.search().to_vec())
    };
    let mut opts = ResolverOpts::default();
    opts.ndots = system_opts.ndots;
    opts.timeout = d.query_timeout.unwrap_or(Duration::from_secs(5));
    // hickory counts retries after the first try; c-ares counts tries.
    opts.attempts = d.query_tries.unwrap_or(4).saturating_sub(1) as usize;
    opts.cache_size = 0;
    opts.use_hosts_file = ResolveHosts::Always;
    opts.num_concurrent_reqs = 1;
    opts.server_ordering_strategy = if d.rotate {
        ServerOrderingStrategy::RoundRobin
    } else {
        ServerOrderingStrategy::UserProvidedOrder
    };
    if let Some(n) = d.edns0_max_payload {
        opts.edns_payload_len = n;
    }
    TokioResolver::builder_with_config(
        ResolverConfig::from_parts(domain, search, name_servers),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .map_err(|e| e.to_string())
}

/// Publishes `hosts` for the cluster named `name`, if it is still the same
/// cluster (`id`) in the current snapshot.
pub fn publish(shared: &Shared, name: &str, id: u64, hosts: Vec<Arc<Host>>) {
    let Some(lb) = shared.load().clusters.get(name).map(|c| c.lb) else {
        return;
    };
    // Built before the critical section (a hashing policy's table too).
    let hosts = Arc::new(HostSet::with_lb(hosts, lb));
    shared.rcu(|snap: &Arc<Snapshot>| match snap.clusters.get(name) {
        Some(c) if c.id == id => Arc::new(snap.with_cluster(Arc::new(c.with_hosts(hosts.clone())))),
        _ => snap.clone(),
    });
    if let Some(c) = shared.load().clusters.get(name).filter(|c| c.id == id) {
        c.stats.set_membership(hosts.all.len());
    }
}

/// `cluster.<name>.update_*`, as Envoy counts DNS refreshes.
struct UpdateStats {
    attempt: Arc<Counter>,
    success: Arc<Counter>,
    failure: Arc<Counter>,
    no_rebuild: Arc<Counter>,
}

impl UpdateStats {
    fn new(cluster: &str) -> UpdateStats {
        let p = crate::model::stats::cluster_prefix(cluster);
        let c = |n: &'static str| store().counter_in(&p, n);
        UpdateStats {
            attempt: c("update_attempt"),
            success: c("update_success"),
            failure: c("update_failure"),
            no_rebuild: c("update_no_rebuild"),
        }
    }
}

/// One endpoint name of a DNS cluster and the hosts it resolved to.
struct Target {
    spec: EndpointSpec,
    hosts: Vec<Arc<Host>>,
    due: Instant,
    /// Failed resolutions in a row (for the backoff).
    failures: u32,
}

/// When to resolve again: how long to wait after a success or a failure.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub refresh: Duration,
    pub respect_ttl: bool,
    pub failure_backoff: Option<Backoff>,
    pub jitter: Option<Duration>,
}

impl Schedule {
    fn of(c: &Cluster) -> Schedule {
        Schedule {
            refresh: c.dns_refresh,
            respect_ttl: c.dns.respect_ttl,
            failure_backoff: c.dns.failure_backoff,
            jitter: c.dns.jitter,
        }
    }

    /// After a success: the TTL (when respected, known and non-zero) or the
    /// refresh rate, plus jitter.
    pub fn after_success(&self, ttl: Option<Duration>, found_any: bool) -> Duration {
        let base = match ttl {
            Some(t) if self.respect_ttl && found_any && !t.is_zero() => t,
            _ => self.refresh,
        };
        match self.jitter {
            Some(j) => base + random_below(j),
            None => base,
        }
    }

    /// After the `n`th failure in a row (1-based): Envoy's jittered
    /// exponential backoff (random below base·2ⁿ⁻¹, capped at max), or the
    /// refresh rate.
    pub fn after_failure(&self, n: u32) -> Duration {
        match self.failure_backoff {
            None => self.refresh,
            Some(b) => {
                let interval = b
                    .base
                    .checked_mul(1u32 << n.saturating_sub(1).min(30))
                    .unwrap_or(b.max)
                    .min(b.max);
                random_below(interval).max(Duration::from_millis(1))
            }
        }
    }
}

fn random_below(d: Duration) -> Duration {
    let ms = d.as_millis().min(u128::from(u64::MAX)) as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(fastrand::u64(..ms))
}

/// What a resolution means for one target's hosts; `None`: keep them.
/// STRICT_DNS takes every address; LOGICAL_DNS only the first, and an
/// empty answer leaves it as it was.
fn next_hosts(discovery: Discovery, target: &Target, resolved: &Resolved) -> Option<Vec<Arc<Host>>> {
    let mut addrs: Vec<SocketAddr> = resolved
        .addrs
        .iter()
        .map(|ip| SocketAddr::new(*ip, target.spec.port))
        .collect();
    if discovery == Discovery::LogicalDns {
        if addrs.is_empty() {
            return None;
        }
        addrs.truncate(1);
    }
    let mut seen = std::collections::HashSet::new();
    addrs.retain(|a| seen.insert(*a));
    // The same set of addresses is no change (Envoy does not rebuild).
    let old: std::collections::HashSet<SocketAddr> = target.hosts.iter().map(|h| h.addr).collect();
    if old == seen && old.len() == target.hosts.len() {
        return None;
    }
    let e = &target.spec;
    let name = if e.hostname.is_empty() {
        e.address.clone()
    } else {
        e.hostname.clone()
    };
    Some(
        addrs
            .into_iter()
            .map(|addr| match target.hosts.iter().find(|h| h.addr == addr) {
                // A host that is still there keeps its Arc, and so its stats.
                Some(h) => h.clone(),
                None => {
                    Arc::new(Host::new(addr, e.weight, e.priority, name.clone()).with_locality(&e.locality))
                }
            })
            .collect(),
    )
}

/// Resolves the cluster's targets as they come due, forever (until the
/// cluster is replaced or removed). `ready` fires after the first round.
async fn run_cluster(shared: Shared, c: Arc<Cluster>, live: Live, ready: tokio::sync::oneshot::Sender<()>) {
    let schedule = Schedule::of(&c);
    let stats = UpdateStats::new(&c.name);
    let start = Instant::now();
    let mut targets: Vec<Target> = c
        .endpoints
        .iter()
        .map(|e| Target {
            spec: e.clone(),
            hosts: Vec::new(),
            due: start,
            failures: 0,
        })
        .collect();
    let mut ready = Some(ready);
    loop {
        match shared.load().clusters.get(&c.name) {
            Some(now) if now.id == c.id => {}
            _ => return,
        }
        let now = Instant::now();
        let due: Vec<usize> = (0..targets.len()).filter(|i| targets[*i].due <= now).collect();
        let results = futures_util::future::join_all(
            due.iter()
                .map(|i| live.resolve(&targets[*i].spec.address, c.dns_family)),
        )
        .await;
        let done = Instant::now();
        let mut changed = false;
        for (i, result) in due.into_iter().zip(results) {
            stats.attempt.inc();
            let t = &mut targets[i];
            let outcome = match result {
                // LOGICAL_DNS keeps its address through an empty answer,
                // and Envoy counts that as a failure.
                Ok(r) if c.discovery == Discovery::LogicalDns && r.addrs.is_empty() => {
                    Err("the name has no addresses".to_string())
                }
                Ok(r) => {
                    match next_hosts(c.discovery, t, &r) {
                        Some(hosts) => {
                            t.hosts = hosts;
                            changed = true;
                        }
                        None => stats.no_rebuild.inc(),
                    }
                    Ok(r)
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(r) => {
                    stats.success.inc();
                    t.failures = 0;
                    t.due = done + schedule.after_success(r.ttl, !r.addrs.is_empty());
                    if r.addrs.is_empty() {
                        tracing::debug!("cluster {}: {} has no addresses", c.name, t.spec.address);
                    }
                }
                Err(e) => {
                    stats.failure.inc();
                    t.failures = t.failures.saturating_add(1);
                    t.due = done + schedule.after_failure(t.failures);
                    // Once per run of failures; the retries log at debug.
                    if t.failures == 1 {
                        tracing::warn!(
                            "cluster {}: DNS resolution of {} failed: {e}",
                            c.name,
                            t.spec.address
                        );
                    } else {
                        tracing::debug!(
                            "cluster {}: DNS resolution of {} failed again: {e}",
                            c.name,
                            t.spec.address
                        );
                    }
                }
            }
        }
        if changed {
            let hosts: Vec<Arc<Host>> = targets.iter().flat_map(|t| t.hosts.iter().cloned()).collect();
            tracing::info!(
                "cluster {}: hosts {:?}",
                c.name,
                hosts.iter().map(|h| h.addr).collect::<Vec<_>>()
            );
            publish(&shared, &c.name, c.id, hosts);
        }
        if let Some(tx) = ready.take() {
            let _ = tx.send(());
        }
        let Some(next) = targets.iter().map(|t| t.due).min() else {
            return;
        };
        tokio::time::sleep_until(next).await;
    }
}

/// Resolves every DNS cluster once (Envoy warms DNS clusters before
/// serving), then keeps refreshing them in the background.
pub async fn start(shared: Shared) {
    let snap = shared.load_full();
    let mut resolvers: Vec<(Arc<Resolver>, Live)> = Vec::new();
    let mut first = Vec::new();
    for c in snap.clusters.values() {
        if !matches!(c.discovery, Discovery::StrictDns | Discovery::LogicalDns) {
            continue;
        }
        let spec = c
            .dns
            .resolver
            .clone()
            .unwrap_or_else(|| snap.dns_resolver.clone());
        let live = match resolvers.iter().find(|(s, _)| **s == *spec) {
            Some((_, l)) => l.clone(),
            None => {
                let l = Live::build(&spec);
                resolvers.push((spec, l.clone()));
                l
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        if c.dns.wait_for_warm {
            first.push(rx);
        }
        tokio::spawn(run_cluster(shared.clone(), c.clone(), live, tx));
    }
    for rx in first {
        let _ = rx.await;
    }
}

/// Starts resolving one cluster added later (CDS); its task ends when the
/// cluster is replaced or removed.
pub fn start_cluster(shared: &Shared, c: Arc<Cluster>) {
    if !matches!(c.discovery, Discovery::StrictDns | Discovery::LogicalDns) {
        return;
    }
    let spec = c
        .dns
        .resolver
        .clone()
        .unwrap_or_else(|| shared.load().dns_resolver.clone());
    let (tx, _rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(run_cluster(shared.clone(), c, Live::build(&spec), tx));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_families() {
        let a: Vec<SocketAddr> = vec!["[::1]:80".parse().unwrap(), "127.0.0.1:80".parse().unwrap()];
        let v4 = vec!["127.0.0.1:80".parse::<SocketAddr>().unwrap()];
        let v6 = vec!["[::1]:80".parse::<SocketAddr>().unwrap()];
        assert_eq!(filter_family(a.clone(), DnsFamily::V4Only), v4);
        assert_eq!(filter_family(a.clone(), DnsFamily::V6Only), v6);
        assert_eq!(filter_family(a.clone(), DnsFamily::Auto), v6);
        assert_eq!(filter_family(a.clone(), DnsFamily::V4Preferred), v4);
        assert_eq!(filter_family(a.clone(), DnsFamily::All), a);
        assert_eq!(filter_family(v4.clone(), DnsFamily::Auto), v4);
        assert_eq!(filter_family(v6.clone(), DnsFamily::V4Preferred), v6);
    }

    fn target(addrs: &[&str]) -> Target {
        Target {
            spec: EndpointSpec {
                address: "svc".into(),
                port: 80,
                weight: 1,
                priority: 0,
                hostname: String::new(),
                locality: Default::default(),
            },
            hosts: addrs
                .iter()
                .map(|a| {
                    Arc::new(Host::new(
                        SocketAddr::new(a.parse().unwrap(), 80),
                        1,
                        0,
                        "svc".into(),
                    ))
                })
                .collect(),
            due: Instant::now(),
            failures: 0,
        }
    }

    fn resolved(addrs: &[&str]) -> Resolved {
        Resolved {
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            ttl: None,
        }
    }

    #[test]
    fn strict_dns_takes_every_address_and_keeps_hosts_that_stay() {
        let t = target(&["10.0.0.1", "10.0.0.2"]);
        assert!(next_hosts(Discovery::StrictDns, &t, &resolved(&["10.0.0.2", "10.0.0.1"])).is_none());
        let new = next_hosts(
            Discovery::StrictDns,
            &t,
            &resolved(&["10.0.0.2", "10.0.0.3", "10.0.0.3"]),
        )
        .unwrap();
        assert_eq!(new.len(), 2);
        assert!(
            Arc::ptr_eq(&new[0], &t.hosts[1]),
            "10.0.0.2 keeps its host (and stats)"
        );
        assert_eq!(new[1].addr, "10.0.0.3:80".parse().unwrap());
        // No records: the target has no hosts any more.
        assert_eq!(
            next_hosts(Discovery::StrictDns, &t, &resolved(&[])).map(|h| h.len()),
            Some(0)
        );
    }

    #[test]
    fn logical_dns_takes_the_first_address_and_ignores_empty_answers() {
        let t = target(&["10.0.0.1"]);
        assert!(next_hosts(Discovery::LogicalDns, &t, &resolved(&["10.0.0.1", "10.0.0.2"])).is_none());
        assert!(next_hosts(Discovery::LogicalDns, &t, &resolved(&[])).is_none());
        let new = next_hosts(Discovery::LogicalDns, &t, &resolved(&["10.0.0.2", "10.0.0.1"])).unwrap();
        assert_eq!(
            new.iter().map(|h| h.addr).collect::<Vec<_>>(),
            vec!["10.0.0.2:80".parse().unwrap()]
        );
    }

    #[test]
    fn schedule_follows_ttl_and_backs_off() {
        let s = Schedule {
            refresh: Duration::from_secs(5),
            respect_ttl: true,
            failure_backoff: Some(Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(4),
            }),
            jitter: None,
        };
        assert_eq!(
            s.after_success(Some(Duration::from_secs(30)), true),
            Duration::from_secs(30)
        );
        assert_eq!(
            s.after_success(Some(Duration::ZERO), true),
            Duration::from_secs(5)
        );
        assert_eq!(s.after_success(None, true), Duration::from_secs(5));
        assert_eq!(
            s.after_success(Some(Duration::from_secs(30)), false),
            Duration::from_secs(5)
        );
        for n in 1..40 {
            let cap = Duration::from_secs(1 << (n - 1).min(2));
            let d = s.after_failure(n);
            assert!(d >= Duration::from_millis(1) && d <= cap, "{n}: {d:?}");
        }
        let fixed = Schedule {
            failure_backoff: None,
            respect_ttl: false,
            ..s
        };
        assert_eq!(fixed.after_failure(3), Duration::from_secs(5));
        assert_eq!(
            fixed.after_success(Some(Duration::from_secs(30)), true),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn results_merge_when_either_query_succeeds() {
        let ok = |a: &[&str], ttl: u64| {
            Ok(Resolved {
                addrs: a.iter().map(|x| x.parse().unwrap()).collect(),
                ttl: Some(Duration::from_secs(ttl)),
            })
        };
        let m = merge(ok(&["10.0.0.1"], 30), ok(&["::1"], 10)).unwrap();
        assert_eq!(m.addrs.len(), 2);
        assert_eq!(m.ttl, Some(Duration::from_secs(10)));
        assert_eq!(merge(Err("x".into()), ok(&["::1"], 10)).unwrap().addrs.len(), 1);
        assert!(merge(Err("x".into()), Err("y".into())).is_err());
    }
}
