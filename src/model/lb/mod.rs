//! Consistent-hash load balancers: RING_HASH ([`ring_hash`]) and MAGLEV
//! ([`maglev`]), built as Envoy builds them so that a key reaches the host it
//! would reach behind Envoy with the same hosts.
//!
//! Both are pure: they take the hosts as `(key, weight)` pairs, where the key
//! is what Envoy hashes for a host (its address as `ip:port`, `[ip]:port` for
//! IPv6, see [`host_key`]), and answer with an index into that slice. The
//! cluster's `HostSet` maps the index back to the host.

pub mod maglev;
pub mod ring_hash;

use std::net::SocketAddr;

pub use maglev::{Maglev, MaglevConfig};
pub use ring_hash::{HashFunction, RingHash, RingHashConfig};

/// xxHash64, as Envoy's `HashUtil::xxHash64` (seed 0 unless said otherwise).
pub fn xxhash64(input: &[u8], seed: u64) -> u64 {
    xxhash_rust::xxh64::xxh64(input, seed)
}

/// Envoy's `MurmurHash::murmurHash2` seed (libstdc++'s `std::hash` seed).
pub const STD_HASH_SEED: u64 = 0xc70f_6907;

/// 64-bit MurmurHash2 as libstdc++'s `_Hash_bytes` computes it, which is
/// what Envoy's `MURMUR_HASH_2` ring hash function is (with [`STD_HASH_SEED`]).
pub fn murmur_hash2_64(input: &[u8], seed: u64) -> u64 {
    const MUL: u64 = 0xc6a4_a793_5bd1_e995;
    let shift_mix = |v: u64| v ^ (v >> 47);
    let mut hash = seed ^ (input.len() as u64).wrapping_mul(MUL);
    let chunks = input.chunks_exact(8);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let data = shift_mix(u64::from_le_bytes(word).wrapping_mul(MUL)).wrapping_mul(MUL);
        hash ^= data;
        hash = hash.wrapping_mul(MUL);
    }
    if !tail.is_empty() {
        let data = tail.iter().rev().fold(0u64, |acc, b| (acc << 8) + u64::from(*b));
        hash ^= data;
        hash = hash.wrapping_mul(MUL);
    }
    hash = shift_mix(hash).wrapping_mul(MUL);
    shift_mix(hash)
}

/// What Envoy hashes to place a host: `host->address()->asString()`
/// (`use_hostname_for_hashing` lives in `common_lb_config`, which legate
/// does not implement).
pub fn host_key(addr: SocketAddr) -> String {
    addr.to_string()
}

/// Host weights normalised so they add up to 1, with the smallest and the
/// largest (Envoy's `normalizeHostWeights` for one locality-less host set).
/// A weight of 0 counts as 1 (Envoy's endpoints cannot have weight 0).
pub(crate) fn normalize_weights(weights: impl Iterator<Item = u32> + Clone) -> (Vec<f64>, f64, f64) {
    let sum: u64 = weights.clone().map(|w| u64::from(w.max(1))).sum();
    let mut min = 1.0f64;
    let mut max = 0.0f64;
    let normalized: Vec<f64> = weights
        .map(|w| {
            let n = f64::from(w.max(1)) / sum as f64;
            min = min.min(n);
            max = max.max(n);
            n
        })
        .collect();
    (normalized, min, max)
}

/// Trial division; table sizes are at most 5000011, so this is cheap.
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The prebuilt lookup structure of a consistent-hash policy.
pub enum HashLb {
    Ring(RingHashConfig, RingHash),
    Maglev(MaglevConfig, Maglev),
}

impl std::fmt::Debug for HashLb {
    // The table itself is too large to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashLb::Ring(c, r) => write!(f, "RingHash({c:?}, {} points)", r.len()),
            HashLb::Maglev(c, m) => write!(f, "Maglev({c:?}, {} entries)", m.len()),
        }
    }
}

impl HashLb {
    /// The index (into `hosts`) of the host for `hash`; None without hosts.
    pub fn pick(&self, hash: u64) -> Option<usize> {
        match self {
            HashLb::Ring(_, r) => r.pick(hash),
            HashLb::Maglev(_, m) => m.pick(hash),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    /// `n` hosts `10.0.0.<i>:80` with the given weights (1 when `weights` is short).
    pub fn hosts(n: usize, weights: &[u32]) -> Vec<(String, u32)> {
        (0..n)
            .map(|i| {
                (
                    format!("10.0.0.{}:80", i + 1),
                    weights.get(i).copied().unwrap_or(1),
                )
            })
            .collect()
    }

    /// The share of `keys` hashed keys that land on each host.
    pub fn shares(pick: impl Fn(u64) -> Option<usize>, n: usize, keys: u64) -> Vec<f64> {
        let mut counts = vec![0u64; n];
        for k in 0..keys {
            let h = super::xxhash64(format!("key-{k}").as_bytes(), 0);
            counts[pick(h).unwrap()] += 1;
        }
        counts.iter().map(|c| *c as f64 / keys as f64).collect()
    }

    /// The fraction of keys whose host (by key string) differs between two pickers.
    pub fn moved(
        a: impl Fn(u64) -> Option<usize>,
        a_hosts: &[(String, u32)],
        b: impl Fn(u64) -> Option<usize>,
        b_hosts: &[(String, u32)],
        keys: u64,
    ) -> f64 {
        let mut moved = 0u64;
        for k in 0..keys {
            let h = super::xxhash64(format!("key-{k}").as_bytes(), 0);
            if a_hosts[a(h).unwrap()].0 != b_hosts[b(h).unwrap()].0 {
                moved += 1;
            }
        }
        moved as f64 / keys as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxhash64_matches_the_reference_vectors() {
        // From the xxHash specification / reference implementation.
        assert_eq!(xxhash64(b"", 0), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxhash64(b"a", 0), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(xxhash64(b"abc", 0), 0x44BC_2CF5_AD77_0999);
    }

    #[test]
    fn murmur_hash2_is_libstdcxx_std_hash() {
        // std::hash<std::string>{}("") with libstdc++ on x86-64.
        assert_eq!(murmur_hash2_64(b"", STD_HASH_SEED), 6142509188972423790);
        // Different lengths exercise the 8-byte loop and the tail.
        let a = murmur_hash2_64(b"10.0.0.1:80_0", STD_HASH_SEED);
        let b = murmur_hash2_64(b"10.0.0.1:80_1", STD_HASH_SEED);
        assert_ne!(a, b);
    }

    #[test]
    fn primes() {
        let cases = [
            (0, false),
            (1, false),
            (2, true),
            (3, true),
            (4, false),
            (9, false),
            (25, false),
            (65537, true),
            (65536, false),
            (5000011, true),
            (5000013, false),
        ];
        for (n, want) in cases {
            assert_eq!(is_prime(n), want, "{n}");
        }
    }

    #[test]
    fn host_keys_are_envoy_address_strings() {
        assert_eq!(host_key("10.0.0.1:80".parse().unwrap()), "10.0.0.1:80");
        assert_eq!(host_key("[::1]:8080".parse().unwrap()), "[::1]:8080");
    }

    #[test]
    fn weights_normalise_to_one() {
        let (n, min, max) = normalize_weights([1u32, 3].into_iter());
        assert_eq!(n, vec![0.25, 0.75]);
        assert_eq!((min, max), (0.25, 0.75));
        let (n, _, _) = normalize_weights([0u32, 0].into_iter());
        assert_eq!(n, vec![0.5, 0.5]);
    }
}
