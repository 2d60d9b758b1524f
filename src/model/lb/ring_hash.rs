//! RING_HASH (ketama), as Envoy's `RingHashLoadBalancer::Ring` builds it.
//!
//! Every host gets points on a ring of 64-bit hashes in proportion to its
//! normalised weight. The ring has `ceil(scale)` points, where
//! `scale = min(ceil(min_w * minimum_ring_size) / min_w, maximum_ring_size)`
//! and `min_w` is the smallest normalised weight, so that the lightest host
//! gets a whole number of points. Walking the hosts in order, a running
//! target (`scale * weight` added per host) decides how many points each one
//! gets; point `i` of a host is the hash of `"<ip:port>_<i>"` (xxHash64 with
//! seed 0, or libstdc++'s MurmurHash2 for `MURMUR_HASH_2`). A request hash
//! goes to the first point whose hash is `>=` it, wrapping to the first point.

use super::{murmur_hash2_64, normalize_weights, xxhash64, STD_HASH_SEED};

/// Envoy's defaults and upper bound (the proto allows at most 8M for both).
pub const DEFAULT_MIN_RING_SIZE: u64 = 1024;
pub const DEFAULT_MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
pub const MAX_RING_SIZE: u64 = 8_388_608;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashFunction {
    XxHash,
    MurmurHash2,
}

/// `Cluster.ring_hash_lb_config`, with Envoy's defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingHashConfig {
    pub minimum_ring_size: u64,
    pub maximum_ring_size: u64,
    pub hash_function: HashFunction,
}

impl Default for RingHashConfig {
    fn default() -> Self {
        RingHashConfig {
            minimum_ring_size: DEFAULT_MIN_RING_SIZE,
            maximum_ring_size: DEFAULT_MAX_RING_SIZE,
            hash_function: HashFunction::XxHash,
        }
    }
}

/// The ring: point hashes in ascending order, and the host index of each.
#[derive(Debug, Default)]
pub struct RingHash {
    hashes: Vec<u64>,
    hosts: Vec<u32>,
}

impl RingHash {
    /// Builds the ring for `hosts` given as `(hash key, weight)`, in the
    /// host set's order (the order decides how fractional shares round).
    pub fn build(hosts: &[(String, u32)], config: &RingHashConfig) -> RingHash {
        if hosts.is_empty() {
            return RingHash::default();
        }
        let (weights, min_weight, _) = normalize_weights(hosts.iter().map(|(_, w)| *w));
        // The bounds are validated (min <= max <= 8M); clamp anyway so a bad
        // config cannot ask for an absurd allocation.
        let max_size = config.maximum_ring_size.clamp(1, MAX_RING_SIZE) as f64;
        let min_size = (config.minimum_ring_size.min(MAX_RING_SIZE)) as f64;
        let scale = ((min_weight * min_size).ceil() / min_weight).min(max_size);
        let ring_size = scale.ceil() as usize;

        let mut points: Vec<(u64, u32)> = Vec::with_capacity(ring_size);
        let mut current = 0.0f64;
        let mut target = 0.0f64;
        let mut key = String::new();
        for (index, ((host_key, _), weight)) in hosts.iter().zip(&weights).enumerate() {
            target += scale * weight;
            let mut i = 0u64;
            while current < target {
                key.clear();
                key.push_str(host_key);
                key.push('_');
                key.push_str(&i.to_string());
                let hash = match config.hash_function {
                    HashFunction::XxHash => xxhash64(key.as_bytes(), 0),
                    HashFunction::MurmurHash2 => murmur_hash2_64(key.as_bytes(), STD_HASH_SEED),
                };
                points.push((hash, index as u32));
                i += 1;
                current += 1.0;
            }
        }
        // Equal hashes keep host order, so the ring does not depend on the sort.
        points.sort_by_key(|(h, _)| *h);
        RingHash {
            hashes: points.iter().map(|(h, _)| *h).collect(),
            hosts: points.iter().map(|(_, i)| *i).collect(),
        }
    }

    /// Number of points on the ring.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The host index of the first point at or after `hash`, wrapping around
    /// (Envoy's ketama search gives the same point).
    pub fn pick(&self, hash: u64) -> Option<usize> {
        if self.hashes.is_empty() {
            return None;
        }
        let i = self.hashes.partition_point(|p| *p < hash);
        let i = if i == self.hashes.len() { 0 } else { i };
        Some(self.hosts[i] as usize)
    }

    /// How many points each of `n` hosts has (for tests and stats).
    pub fn points_per_host(&self, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for h in &self.hosts {
            if let Some(c) = counts.get_mut(*h as usize) {
                *c += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{hosts, moved, shares};
    use super::*;

    #[test]
    fn ring_size_follows_envoy_scale() {
        // (weights, min, max, ring size, points per host)
        type Case<'a> = (&'a [u32], u64, u64, usize, &'a [usize]);
        let cases: &[Case] = &[
            (&[1, 1, 1], 1024, DEFAULT_MAX_RING_SIZE, 1026, &[342, 342, 342]),
            (&[1, 1], 1024, DEFAULT_MAX_RING_SIZE, 1024, &[512, 512]),
            (&[1, 3], 1024, DEFAULT_MAX_RING_SIZE, 1024, &[256, 768]),
            (&[1, 1, 1, 1], 8, 6, 6, &[2, 1, 2, 1]),
            (&[1], 1024, DEFAULT_MAX_RING_SIZE, 1024, &[1024]),
            // The running target ends at 1500.0000000000002 in f64, so one
            // point more than `ceil(scale)`: Envoy's doubles do the same.
            (&[1, 1000], 1024, 1500, 1501, &[2, 1499]),
        ];
        for (weights, min, max, size, per_host) in cases {
            let config = RingHashConfig {
                minimum_ring_size: *min,
                maximum_ring_size: *max,
                hash_function: HashFunction::XxHash,
            };
            let ring = RingHash::build(&hosts(weights.len(), weights), &config);
            assert_eq!(ring.len(), *size, "{weights:?} {min} {max}");
            assert_eq!(ring.points_per_host(weights.len()), *per_host, "{weights:?}");
            assert!(ring.hashes.windows(2).all(|w| w[0] <= w[1]));
        }
    }

    #[test]
    fn points_are_xxhash_of_address_underscore_index() {
        let config = RingHashConfig {
            minimum_ring_size: 2,
            maximum_ring_size: 2,
            hash_function: HashFunction::XxHash,
        };
        let ring = RingHash::build(&[("10.0.0.1:80".to_string(), 1)], &config);
        let mut want = vec![xxhash64(b"10.0.0.1:80_0", 0), xxhash64(b"10.0.0.1:80_1", 0)];
        want.sort();
        assert_eq!(ring.hashes, want);
        let murmur = RingHash::build(
            &[("10.0.0.1:80".to_string(), 1)],
            &RingHashConfig {
                hash_function: HashFunction::MurmurHash2,
                ..config
            },
        );
        let mut want = vec![
            murmur_hash2_64(b"10.0.0.1:80_0", STD_HASH_SEED),
            murmur_hash2_64(b"10.0.0.1:80_1", STD_HASH_SEED),
        ];
        want.sort();
        assert_eq!(murmur.hashes, want);
    }

    #[test]
    fn lookup_takes_the_first_point_at_or_after_the_hash() {
        let ring = RingHash {
            hashes: vec![10, 20, 30],
            hosts: vec![0, 1, 2],
        };
        let cases = [
            (0, 0),
            (10, 0),
            (11, 1),
            (20, 1),
            (25, 2),
            (30, 2),
            (31, 0),
            (u64::MAX, 0),
        ];
        for (hash, want) in cases {
            assert_eq!(ring.pick(hash), Some(want), "{hash}");
        }
        assert_eq!(RingHash::default().pick(5), None);
        assert_eq!(RingHash::build(&[], &RingHashConfig::default()).pick(5), None);
    }

    #[test]
    fn distribution_follows_weights() {
        let h = hosts(3, &[1, 2, 5]);
        let ring = RingHash::build(&h, &RingHashConfig::default());
        let got = shares(|x| ring.pick(x), 3, 40_000);
        for (share, want) in got.iter().zip([1.0 / 8.0, 2.0 / 8.0, 5.0 / 8.0]) {
            assert!((share - want).abs() < 0.05, "{got:?}");
        }
    }

    #[test]
    fn same_key_same_host_and_few_keys_move_when_a_host_is_added() {
        let four = hosts(4, &[]);
        let five = hosts(5, &[]);
        let a = RingHash::build(&four, &RingHashConfig::default());
        let again = RingHash::build(&four, &RingHashConfig::default());
        assert_eq!(moved(|x| a.pick(x), &four, |x| again.pick(x), &four, 10_000), 0.0);
        let b = RingHash::build(&five, &RingHashConfig::default());
        let m = moved(|x| a.pick(x), &four, |x| b.pick(x), &five, 10_000);
        // Ideal: 1/5 of the keys move (to the new host), none between old ones.
        assert!(m > 0.1 && m < 0.3, "{m}");
    }
}
