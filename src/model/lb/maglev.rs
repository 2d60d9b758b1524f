//! MAGLEV, as Envoy's `OriginalMaglevTable` builds it (Maglev paper,
//! pseudocode listing 1, with Envoy's weighting).
//!
//! The hosts are sorted by their hash key (`ip:port`). Each host's
//! permutation of the `M` slots (`M` = `table_size`, prime) is
//! `(offset + skip * j) % M` with `offset = xxHash64(key, seed 0) % M` and
//! `skip = xxHash64(key, seed 1) % (M - 1) + 1`. Rounds go over the hosts in
//! that order; in round `r` a host with normalised weight `w` takes its next
//! free preferred slot when `r * w >= target` (its target grows by the
//! largest normalised weight each time it takes one), so heavier hosts fill
//! proportionally more of the table. A request hash goes to `table[hash % M]`.

use super::{normalize_weights, xxhash64};

/// Envoy's default (the paper's recommended size) and the proto's bound.
pub const DEFAULT_TABLE_SIZE: u64 = 65537;
pub const MAX_TABLE_SIZE: u64 = 5_000_011;

/// `Cluster.maglev_lb_config`, with Envoy's default filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevConfig {
    pub table_size: u64,
}

impl Default for MaglevConfig {
    fn default() -> Self {
        MaglevConfig {
            table_size: DEFAULT_TABLE_SIZE,
        }
    }
}

/// The lookup table: a host index per slot.
#[derive(Debug, Default)]
pub struct Maglev {
    table: Vec<u32>,
}

const EMPTY: u32 = u32::MAX;

struct Entry {
    host: u32,
    offset: u64,
    skip: u64,
    weight: f64,
    target: f64,
    next: u64,
}

impl Maglev {
    /// Builds the table for `hosts` given as `(hash key, weight)`.
    /// `table_size` must be a prime (validated); anything below 2 gives an
    /// empty table rather than a panic.
    pub fn build(hosts: &[(String, u32)], config: &MaglevConfig) -> Maglev {
        let m = config.table_size.min(MAX_TABLE_SIZE);
        if hosts.is_empty() || m < 2 || hosts.len() >= EMPTY as usize {
            return Maglev::default();
        }
        let (weights, _, max_weight) = normalize_weights(hosts.iter().map(|(_, w)| *w));
        // Fill order must not depend on the host set's order: sort by key.
        let mut order: Vec<usize> = (0..hosts.len()).collect();
        order.sort_by(|a, b| hosts[*a].0.cmp(&hosts[*b].0).then(a.cmp(b)));
        let mut entries: Vec<Entry> = order
            .into_iter()
            .map(|i| {
                let key = hosts[i].0.as_bytes();
                Entry {
                    host: i as u32,
                    offset: xxhash64(key, 0) % m,
                    skip: xxhash64(key, 1) % (m - 1) + 1,
                    weight: weights[i],
                    target: 0.0,
                    next: 0,
                }
            })
            .collect();
        let permutation = |e: &Entry| (e.offset.wrapping_add(e.skip.wrapping_mul(e.next)) % m) as usize;

        let mut table = vec![EMPTY; m as usize];
        let mut filled = 0u64;
        let mut round = 1u32;
        while filled < m {
            for e in entries.iter_mut() {
                if filled >= m {
                    break;
                }
                if f64::from(round) * e.weight < e.target {
                    continue;
                }
                e.target += max_weight;
                let mut c = permutation(e);
                // M is prime and 1 <= skip < M, so the permutation visits
                // every slot: a free one is always found.
                while table[c] != EMPTY {
                    e.next += 1;
                    c = permutation(e);
                }
                table[c] = e.host;
                e.next += 1;
                filled += 1;
            }
            round += 1;
        }
        Maglev { table }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The host index for `hash`: `table[hash % M]`.
    pub fn pick(&self, hash: u64) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        Some(self.table[(hash % self.table.len() as u64) as usize] as usize)
    }

    /// How many slots each of `n` hosts has.
    pub fn entries_per_host(&self, n: usize) -> Vec<usize> {
        let mut counts = vec![0; n];
        for h in &self.table {
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

    fn table(h: &[(String, u32)], size: u64) -> Maglev {
        Maglev::build(h, &MaglevConfig { table_size: size })
    }

    #[test]
    fn small_table_by_hand() {
        // One host owns every slot; with equal weights slots split evenly.
        let one = table(&hosts(1, &[]), 7);
        assert_eq!(one.table, vec![0; 7]);
        let three = table(&hosts(3, &[]), 7);
        let counts = three.entries_per_host(3);
        assert_eq!(counts.iter().sum::<usize>(), 7);
        assert!(counts.iter().all(|c| *c == 2 || *c == 3), "{counts:?}");
        assert!(!three.table.contains(&EMPTY));
    }

    #[test]
    fn first_slot_of_each_host_is_its_offset() {
        let h = hosts(2, &[]);
        let t = table(&h, 65537);
        for (i, (key, _)) in h.iter().enumerate() {
            let offset = xxhash64(key.as_bytes(), 0) % 65537;
            assert_eq!(t.table[offset as usize] as usize, i, "{key}");
        }
    }

    #[test]
    fn entries_follow_weights() {
        // (weights, table size, entries per host)
        let cases: &[(&[u32], u64, &[usize])] = &[
            (&[1, 1], 65537, &[32769, 32768]),
            (&[1, 3], 65537, &[16385, 49152]),
            (&[1, 1, 2], 11, &[3, 3, 5]),
        ];
        for (weights, size, want) in cases {
            let t = table(&hosts(weights.len(), weights), *size);
            assert_eq!(t.len(), *size as usize);
            assert_eq!(t.entries_per_host(weights.len()), *want, "{weights:?}");
        }
    }

    #[test]
    fn distribution_follows_weights() {
        let h = hosts(3, &[1, 2, 5]);
        let t = table(&h, DEFAULT_TABLE_SIZE);
        let got = shares(|x| t.pick(x), 3, 40_000);
        for (share, want) in got.iter().zip([1.0 / 8.0, 2.0 / 8.0, 5.0 / 8.0]) {
            assert!((share - want).abs() < 0.03, "{got:?}");
        }
    }

    #[test]
    fn host_order_does_not_matter_and_few_keys_move_when_a_host_is_added() {
        let four = hosts(4, &[]);
        let mut reversed = four.clone();
        reversed.reverse();
        let a = table(&four, DEFAULT_TABLE_SIZE);
        let r = table(&reversed, DEFAULT_TABLE_SIZE);
        assert_eq!(moved(|x| a.pick(x), &four, |x| r.pick(x), &reversed, 10_000), 0.0);
        let five = hosts(5, &[]);
        let b = table(&five, DEFAULT_TABLE_SIZE);
        let m = moved(|x| a.pick(x), &four, |x| b.pick(x), &five, 10_000);
        // Ideal 1/5; Maglev trades a little extra movement for balance.
        assert!(m > 0.1 && m < 0.3, "{m}");
    }

    #[test]
    fn empty_and_degenerate_tables() {
        assert_eq!(table(&[], 7).pick(3), None);
        assert_eq!(table(&hosts(2, &[]), 1).pick(3), None);
        assert_eq!(table(&hosts(2, &[]), 2).len(), 2);
    }
}
