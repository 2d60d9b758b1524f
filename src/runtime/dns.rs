//! DNS for STRICT_DNS and LOGICAL_DNS clusters, on the main runtime:
//! resolve, publish the new host set, repeat every `dns_refresh_rate`.
//! Names go through the system resolver, so `/etc/hosts` is honoured.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::model::cluster::{Cluster, Discovery, DnsFamily, Host, HostSet};
use crate::model::{Shared, Snapshot};

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

/// Resolves every endpoint of `cluster`. `None` if any name failed, so a
/// failed refresh keeps the previous hosts (as Envoy does).
pub async fn resolve(cluster: &Cluster) -> Option<HostSet> {
    let mut hosts = Vec::new();
    for e in &cluster.endpoints {
        let found = match tokio::net::lookup_host((e.address.as_str(), e.port)).await {
            Ok(a) => filter_family(a.collect(), cluster.dns_family),
            Err(err) => {
                tracing::warn!(
                    "cluster {}: DNS resolution of {} failed: {err}",
                    cluster.name,
                    e.address
                );
                return None;
            }
        };
        let mut found = found;
        found.dedup();
        if cluster.discovery == Discovery::LogicalDns {
            found.truncate(1);
        }
        for addr in found {
            // A host that is still there keeps its Arc, and so its stats.
            match cluster.hosts.find(addr) {
                Some(h) if h.weight == e.weight && h.priority == e.priority => hosts.push(h.clone()),
                _ => {
                    let name = if e.hostname.is_empty() {
                        e.address.clone()
                    } else {
                        e.hostname.clone()
                    };
                    hosts.push(Arc::new(Host::new(addr, e.weight, e.priority, name)));
                }
            }
        }
    }
    Some(HostSet::new(hosts))
}

/// Publishes `hosts` for the cluster named `name`, if it is still the same
/// cluster (`id`) in the current snapshot.
pub fn publish(shared: &Shared, name: &str, id: u64, hosts: HostSet) {
    let hosts = Arc::new(hosts);
    shared.rcu(|snap: &Arc<Snapshot>| match snap.clusters.get(name) {
        Some(c) if c.id == id => {
            c.stats.set_membership(hosts.all.len());
            Arc::new(snap.with_cluster(Arc::new(c.with_hosts(hosts.clone()))))
        }
        _ => snap.clone(),
    });
}

/// Resolves every DNS cluster once (Envoy warms DNS clusters before
/// serving), then keeps refreshing them in the background.
pub async fn start(shared: Shared) {
    let clusters: Vec<Arc<Cluster>> = shared
        .load()
        .clusters
        .values()
        .filter(|c| matches!(c.discovery, Discovery::StrictDns | Discovery::LogicalDns))
        .cloned()
        .collect();
    let mut first = Vec::new();
    for c in clusters {
        let shared = shared.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        first.push(rx);
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut last: Option<Vec<SocketAddr>> = None;
            loop {
                // Resolve against the cluster as published now, so hosts
                // that stay keep their stats.
                let current = match shared.load().clusters.get(&c.name) {
                    Some(now) if now.id == c.id => now.clone(),
                    _ => return,
                };
                if let Some(set) = resolve(&current).await {
                    let addrs = set.all_addrs();
                    if last.as_ref() != Some(&addrs) {
                        tracing::info!("cluster {}: hosts {:?}", c.name, addrs);
                        publish(&shared, &c.name, c.id, set);
                        last = Some(addrs);
                    }
                }
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
                tokio::time::sleep(c.dns_refresh).await;
                // Stop when the cluster was replaced or removed.
                match shared.load().clusters.get(&c.name) {
                    Some(now) if now.id == c.id => {}
                    _ => return,
                }
            }
        });
    }
    for rx in first {
        let _ = rx.await;
    }
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
}
