//! The stats store: Envoy's counters, gauges, histograms and text readouts,
//! by Envoy's names (`cluster.<name>.upstream_rq_total`, …).
//!
//! Cost on the request path: a metric is looked up once (at config compile
//! time) and kept as an `Arc`; updating it is a relaxed load and store on
//! the worker's *own shard* of the metric. Each shard sits on its own
//! 128-byte block. The lower half of the shards are owned: a worker thread
//! takes one when it starts ([`own_a_shard`]) and is the only thread that
//! ever writes it, so its updates need no atomic read-modify-write (a
//! `lock`-prefixed add waits some 20 cycles for the store buffer; legate
//! ran about 23 of them per request in its stats, `bench/instructions`
//! LOCKS=1). Every other thread writes the upper half, shared round-robin,
//! with atomic adds. Either way workers do not bounce a shared cache line on
//! every request. Readers (the admin) sum the shards. The name map behind a
//! `RwLock` is only touched on registration and by the admin.
//!
//! Measured (release, this 2-core VM, a throwaway loop of one
//! `Counter::inc` and one `Histogram::record`, five updates, on one thread):
//! 22 ns through a shared shard, 6.4 ns through an owned one. Earlier, with
//! atomic adds only: `Counter::inc` 8 ns with one or two threads writing,
//! where one shared `AtomicU64` costs 5 ns alone and 37-41 ns with two
//! threads bouncing its line; `Histogram::record` 13-14 ns.
//!
//! Memory: a counter or gauge is 16 bytes until written, then `shards × 128`
//! bytes more (shards = twice the cores, rounded up to a power of two,
//! 4…64), a histogram `shards × 256`. Names under a shared [`Prefix`] cost
//! no allocation of their own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use once_cell::race::OnceBox;

mod name;
pub use name::Prefix;
use name::{Key, Name, Parts};

// ---------------------------------------------------------------------------
// Shards

/// One cache-line-isolated slot. 128 bytes: adjacent-line prefetch on x86
/// pairs 64-byte lines.
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

fn shard_count() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores * 2).next_power_of_two().clamp(4, 64)
    })
}

/// A thread's shard (the same index in every metric), and whether the
/// thread owns it: is the only thread that ever writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    index: usize,
    owned: bool,
}

thread_local! {
    static SLOT: std::cell::Cell<Option<Slot>> = const { std::cell::Cell::new(None) };
}

/// Owned shards are `0..owned_shards()`; the rest are shared.
fn owned_shards() -> usize {
    shard_count() / 2
}

/// This thread's shard: its own, or else one of the shared ones (assigned
/// round-robin on the thread's first write).
fn my_slot() -> Slot {
    SLOT.with(|slot| {
        slot.get().unwrap_or_else(|| {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let shared = shard_count() - owned_shards();
            let s = Slot {
                index: owned_shards() + NEXT.fetch_add(1, Ordering::Relaxed) % shared,
                owned: false,
            };
            slot.set(Some(s));
            s
        })
    })
}

/// Gives the calling thread a shard of its own while any is left (false
/// when none is: it then shares one, which stays correct but costs atomic
/// adds). For the threads that update stats on every request, the workers;
/// called before their first write. What the thread wrote before, through
/// a shared shard, stays counted there.
pub fn own_a_shard() -> bool {
    static NEXT_OWNED: AtomicUsize = AtomicUsize::new(0);
    SLOT.with(|slot| {
        if slot.get().is_some_and(|s| s.owned) {
            return true;
        }
        let index = NEXT_OWNED.fetch_add(1, Ordering::Relaxed);
        let owned = index < owned_shards();
        if owned {
            slot.set(Some(Slot { index, owned }));
        }
        owned
    })
}

/// `n` added to a shard slot: by a load and a store when this thread owns
/// it (nobody else writes it), else atomically.
#[inline]
fn add_u64(slot: &AtomicU64, n: u64, owned: bool) {
    if owned {
        slot.store(slot.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    } else {
        slot.fetch_add(n, Ordering::Relaxed);
    }
}

#[inline]
fn add_i64(slot: &AtomicI64, n: i64, owned: bool) {
    if owned {
        slot.store(slot.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    } else {
        slot.fetch_add(n, Ordering::Relaxed);
    }
}

fn shards<T: Default>() -> Box<[Padded<T>]> {
    (0..shard_count()).map(|_| Padded::default()).collect()
}

/// What a metric holds once written: a padded slot per shard, or one
/// unpadded slot for a metric only one thread writes.
enum Block<T> {
    Sharded(Box<[Padded<T>]>),
    Single(T),
}

/// A metric's storage, allocated on its first write, and its flags. Most
/// metrics of a large config (10,000 clusters, each with ~30 stats and
/// per-host stats) are never written; unwritten they cost one pointer
/// (`OnceBox`, 8 bytes, where a `OnceLock` of a slice takes 24) instead
/// of `shard_count() × 128` bytes. The hot path pays one atomic load and
/// one read of the (never rewritten) block.
///
/// A metric only one thread writes (the main runtime's xDS and DNS
/// bookkeeping: `update_*`, `membership_*`) needs no shards: `single` ones
/// get one unpadded slot, which every thread would share.
///
/// `single` and `used` sit here, beside the pointer, so that a counter or
/// gauge is 16 bytes (an `Arc` of one is 32), not 24 or 40.
struct Shards<T> {
    block: OnceBox<Block<T>>,
    single: bool,
    /// Written at least once (counters and gauges: `?usedonly`).
    used: AtomicBool,
}

impl<T: Default> Shards<T> {
    fn new(single: bool) -> Self {
        Shards {
            block: OnceBox::new(),
            single,
            used: AtomicBool::new(false),
        }
    }

    /// This thread's shard (allocating them all on first use), and whether
    /// the thread owns it (a `single` metric's one slot is shared).
    #[inline]
    fn mine(&self) -> (&T, bool) {
        let block = self.block.get_or_init(|| {
            Box::new(if self.single {
                Block::Single(T::default())
            } else {
                Block::Sharded(shards())
            })
        });
        match block {
            Block::Single(t) => (t, false),
            Block::Sharded(s) => {
                let slot = my_slot();
                (&s[slot.index].0, slot.owned)
            }
        }
    }

    /// Every allocated shard (none before the first write).
    fn iter(&self) -> impl Iterator<Item = &T> {
        let (one, many): (Option<&T>, &[Padded<T>]) = match self.block.get() {
            None => (None, &[]),
            Some(Block::Single(t)) => (Some(t), &[]),
            Some(Block::Sharded(s)) => (None, s),
        };
        one.into_iter().chain(many.iter().map(|p| &p.0))
    }

    /// Records a write (see [`mark_used`]).
    #[inline]
    fn mark_used(&self) {
        mark_used(&self.used);
    }

    fn used(&self) -> bool {
        self.used.load(Ordering::Relaxed)
    }
}

/// Sets a "has been written" flag without writing the line when it is
/// already set (a load of a line nobody writes is free to share).
#[inline]
fn mark_used(flag: &AtomicBool) {
    if !flag.load(Ordering::Relaxed) {
        flag.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------
// Counter

/// A monotonically increasing count (Envoy `Counter`).
pub struct Counter {
    shards: Shards<AtomicU64>,
}

impl Default for Counter {
    fn default() -> Self {
        Counter {
            shards: Shards::new(false),
        }
    }
}

impl Counter {
    /// A counter one thread writes (no shards).
    pub fn single() -> Self {
        Counter {
            shards: Shards::new(true),
        }
    }
}

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        let (slot, owned) = self.shards.mine();
        add_u64(slot, n, owned);
        self.shards.mark_used();
    }

    pub fn value(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |a, s| a.wrapping_add(s.load(Ordering::Relaxed)))
    }

    /// `/reset_counters`: back to 0 (`used` stays set, as in Envoy).
    /// An owned shard is never written here (its owner's load and store
    /// would undo the write): what it holds is subtracted through a shared
    /// shard instead, which every writer updates atomically, so the sum
    /// reads 0 and no increment made after the reset is lost.
    pub fn reset(&self) {
        match self.shards.block.get() {
            None => {}
            Some(Block::Single(t)) => t.store(0, Ordering::Relaxed),
            Some(Block::Sharded(s)) => {
                let (owned, shared) = s.split_at(owned_shards());
                let held = owned
                    .iter()
                    .fold(0u64, |a, p| a.wrapping_add(p.0.load(Ordering::Relaxed)));
                for p in shared {
                    p.0.swap(0, Ordering::Relaxed);
                }
                shared[0].0.fetch_sub(held, Ordering::Relaxed);
            }
        }
    }

    /// Written at least once (`?usedonly`).
    pub fn used(&self) -> bool {
        self.shards.used()
    }
}

// ---------------------------------------------------------------------------
// Gauge

/// A value that goes up and down (Envoy `Gauge`).
pub struct Gauge {
    shards: Shards<AtomicI64>,
}

impl Default for Gauge {
    fn default() -> Self {
        Gauge {
            shards: Shards::new(false),
        }
    }
}

impl Gauge {
    /// A gauge one thread writes (no shards).
    pub fn single() -> Self {
        Gauge {
            shards: Shards::new(true),
        }
    }
}

impl Gauge {
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn dec(&self) {
        self.sub(1);
    }

    #[inline]
    pub fn add(&self, n: i64) {
        let (slot, owned) = self.shards.mine();
        add_i64(slot, n, owned);
        self.shards.mark_used();
    }

    #[inline]
    pub fn sub(&self, n: i64) {
        let (slot, owned) = self.shards.mine();
        add_i64(slot, n.wrapping_neg(), owned);
        self.shards.mark_used();
    }

    /// Sets the value. Not atomic with respect to a concurrent `add`/`sub`
    /// on another thread: use either `set` or `add`/`sub` on one gauge
    /// (Envoy's set-gauges such as `server.uptime` are never added to).
    pub fn set(&self, v: i64) {
        // This thread's slot as `mine` resolves it: a `single` gauge's one
        // slot is everyone's (comparing shard indices, a thread whose index
        // was not 0 wrote 0 into it).
        let (mine, _) = self.shards.mine();
        for s in self.shards.iter() {
            s.store(if std::ptr::eq(s, mine) { v } else { 0 }, Ordering::Relaxed);
        }
        self.shards.mark_used();
    }

    pub fn value(&self) -> i64 {
        self.shards
            .iter()
            .fold(0i64, |a, s| a.wrapping_add(s.load(Ordering::Relaxed)))
    }

    pub fn used(&self) -> bool {
        self.shards.used()
    }
}

// ---------------------------------------------------------------------------
// Histogram

/// Envoy's default histogram bucket upper bounds (`stats_config.histogram_bucket_settings`
/// unset), used for `/stats/prometheus`. A last, implicit bucket is `+Inf`.
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0,
    300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The quantiles Envoy prints, as fractions.
pub const QUANTILES: [f64; 10] = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0];

const NBUCKETS: usize = BUCKETS.len() + 1;

struct HistShard {
    /// Disjoint counts: `buckets[i]` holds values in `(BUCKETS[i-1], BUCKETS[i]]`;
    /// the last one holds values above the last bound.
    buckets: [AtomicU64; NBUCKETS],
    count: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Default for HistShard {
    fn default() -> Self {
        HistShard {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }
}

/// A distribution of values (milliseconds or the stat's unit), lock-free:
/// fixed buckets (Envoy's default bounds) plus count, sum, min and max.
///
/// Quantiles are *estimates*: Envoy keeps a log-linear histogram with two
/// significant digits; legate keeps only the 20 Prometheus buckets and
/// interpolates linearly inside the bucket that holds the wanted rank,
/// narrowing the bucket to the observed min and max. P0 and P100 are exact
/// (min and max); the others are within their bucket's bounds.
pub struct Histogram {
    shards: Shards<HistShard>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            shards: Shards::new(false),
        }
    }
}

impl Histogram {
    /// A histogram one thread records into (no shards).
    pub fn single() -> Self {
        Histogram {
            shards: Shards::new(true),
        }
    }
}

/// Which bucket a value falls in (`le` semantics: `v <= bound`).
fn bucket_of(v: u64) -> usize {
    let v = v as f64;
    BUCKETS.iter().position(|b| v <= *b).unwrap_or(BUCKETS.len())
}

impl Histogram {
    #[inline]
    pub fn record(&self, v: u64) {
        let (s, owned) = self.shards.mine();
        add_u64(&s.buckets[bucket_of(v)], 1, owned);
        add_u64(&s.sum, v, owned);
        // Loads first: after warm-up min/max rarely change, and a load is
        // much cheaper than the compare-exchange loop of fetch_min/max.
        if v < s.min.load(Ordering::Relaxed) {
            if owned {
                s.min.store(v, Ordering::Relaxed);
            } else {
                s.min.fetch_min(v, Ordering::Relaxed);
            }
        }
        if v > s.max.load(Ordering::Relaxed) {
            if owned {
                s.max.store(v, Ordering::Relaxed);
            } else {
                s.max.fetch_max(v, Ordering::Relaxed);
            }
        }
        // Count last: a reader that sees the count sees (almost always) the bucket.
        add_u64(&s.count, 1, owned);
    }

    /// Has a value been recorded (Envoy prints `No recorded values` if not).
    pub fn used(&self) -> bool {
        self.shards.iter().any(|s| s.count.load(Ordering::Relaxed) > 0)
    }

    /// A consistent-enough copy of the shards, summed.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut snap = HistogramSnapshot {
            buckets: [0; NBUCKETS],
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        };
        for s in self.shards.iter() {
            for (acc, b) in snap.buckets.iter_mut().zip(s.buckets.iter()) {
                *acc += b.load(Ordering::Relaxed);
            }
            snap.sum = snap.sum.wrapping_add(s.sum.load(Ordering::Relaxed));
            snap.min = snap.min.min(s.min.load(Ordering::Relaxed));
            snap.max = snap.max.max(s.max.load(Ordering::Relaxed));
        }
        // The count is the buckets' total, so quantiles and `_count` agree
        // even while writers race with this read.
        snap.count = snap.buckets.iter().sum();
        snap
    }
}

/// Summed histogram values at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Disjoint bucket counts, `BUCKETS.len() + 1` of them (last: `+Inf`).
    pub buckets: [u64; NBUCKETS],
    pub count: u64,
    pub sum: u64,
    /// `u64::MAX` when empty.
    pub min: u64,
    pub max: u64,
}

impl HistogramSnapshot {
    /// Builds a snapshot from values (tests, and interval arithmetic).
    pub fn from_values(values: &[u64]) -> HistogramSnapshot {
        let h = Histogram::default();
        for v in values {
            h.record(*v);
        }
        h.snapshot()
    }

    /// Cumulative counts per upper bound (`_bucket{le=…}`), `+Inf` last.
    pub fn cumulative(&self) -> [u64; NBUCKETS] {
        let mut out = [0; NBUCKETS];
        let mut acc = 0;
        for (o, b) in out.iter_mut().zip(self.buckets.iter()) {
            acc += b;
            *o = acc;
        }
        out
    }

    /// The estimated value at quantile `q` (0.0..=1.0); `None` when empty.
    /// See [`Histogram`] for the approximation.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let (min, max) = (self.min as f64, self.max as f64);
        if q <= 0.0 {
            return Some(min);
        }
        if q >= 1.0 {
            return Some(max);
        }
        let rank = q * self.count as f64;
        let mut before = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            if (before + n) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { BUCKETS[i - 1] };
                let upper = BUCKETS.get(i).copied().unwrap_or(max);
                let (lo, hi) = (lower.max(min), upper.min(max));
                let frac = ((rank - before as f64) / n as f64).clamp(0.0, 1.0);
                return Some(lo + (hi - lo).max(0.0) * frac);
            }
            before += n;
        }
        Some(max)
    }

    /// All of [`QUANTILES`]; `None` when empty.
    pub fn quantiles(&self) -> Option<[f64; 10]> {
        let mut out = [0.0; 10];
        for (o, q) in out.iter_mut().zip(QUANTILES) {
            *o = self.quantile(q)?;
        }
        Some(out)
    }

    /// `self - earlier` (the values recorded in between); min/max are
    /// kept from `self` (an over-wide but safe narrowing).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        let mut buckets = [0; NBUCKETS];
        for (i, b) in buckets.iter_mut().enumerate() {
            *b = self.buckets[i].saturating_sub(earlier.buckets[i]);
        }
        let count = buckets.iter().sum();
        HistogramSnapshot {
            buckets,
            count,
            sum: self.sum.saturating_sub(earlier.sum),
            min: self.min,
            max: self.max,
        }
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counter({})", self.value())
    }
}

impl std::fmt::Debug for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gauge({})", self.value())
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.snapshot();
        write!(f, "Histogram(count {}, sum {})", s.count, s.sum)
    }
}

// ---------------------------------------------------------------------------
// Store

/// Name → metric, one map per kind. Locked only to register a name and by
/// the admin; the request path holds `Arc`s.
#[derive(Default)]
pub struct Store {
    counters: RwLock<BTreeMap<Name, Arc<Counter>>>,
    gauges: RwLock<BTreeMap<Name, Arc<Gauge>>>,
    histograms: RwLock<BTreeMap<Name, Arc<Histogram>>>,
    text_readouts: RwLock<BTreeMap<String, String>>,
}

/// The process-wide store.
pub fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(Store::default)
}

/// The metric named `key`, or a new one from `make` under `name()`.
fn get_or_insert_with<T>(
    map: &RwLock<BTreeMap<Name, Arc<T>>>,
    key: Parts<'_>,
    name: impl FnOnce() -> Name,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    // A poisoned lock only means a panic elsewhere mid-insert; the map is
    // still a valid map.
    if let Some(m) = map
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key as &dyn Key)
    {
        return m.clone();
    }
    let mut map = map.write().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = map.get(&key as &dyn Key) {
        return m.clone();
    }
    let m = Arc::new(make());
    map.insert(name(), m.clone());
    m
}

fn list<T>(map: &RwLock<BTreeMap<Name, Arc<T>>>) -> Vec<(String, Arc<T>)> {
    map.read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.to_string_full(), v.clone()))
        .collect()
}

/// A whole name.
fn whole<T>(map: &RwLock<BTreeMap<Name, Arc<T>>>, name: &str, make: impl FnOnce() -> T) -> Arc<T> {
    get_or_insert_with(map, Parts(name, ""), || Name::whole(name), make)
}

/// `<prefix><suffix>`, the prefix shared.
fn split<T>(
    map: &RwLock<BTreeMap<Name, Arc<T>>>,
    prefix: &Prefix,
    suffix: &'static str,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    get_or_insert_with(map, Parts(prefix.as_str(), suffix), || prefix.name(suffix), make)
}

impl Store {
    /// The counter named `name`, created on first use. The same name gives
    /// the same counter (HCMs sharing a `stat_prefix` share counters, as in Envoy).
    pub fn counter(&self, name: &str) -> Arc<Counter> {
        whole(&self.counters, name, Counter::default)
    }

    pub fn gauge(&self, name: &str) -> Arc<Gauge> {
        whole(&self.gauges, name, Gauge::default)
    }

    pub fn histogram(&self, name: &str) -> Arc<Histogram> {
        whole(&self.histograms, name, Histogram::default)
    }

    /// The counter `<prefix><suffix>`; the same metric as
    /// `counter("<prefix><suffix>")`, but its name shares `prefix`'s string.
    pub fn counter_in(&self, prefix: &Prefix, suffix: &'static str) -> Arc<Counter> {
        split(&self.counters, prefix, suffix, Counter::default)
    }

    pub fn gauge_in(&self, prefix: &Prefix, suffix: &'static str) -> Arc<Gauge> {
        split(&self.gauges, prefix, suffix, Gauge::default)
    }

    pub fn histogram_in(&self, prefix: &Prefix, suffix: &'static str) -> Arc<Histogram> {
        split(&self.histograms, prefix, suffix, Histogram::default)
    }

    /// A counter only one thread writes (main-runtime bookkeeping): one
    /// slot instead of a shard per thread. If the name exists, that one.
    pub fn counter_single_in(&self, prefix: &Prefix, suffix: &'static str) -> Arc<Counter> {
        split(&self.counters, prefix, suffix, Counter::single)
    }

    /// A gauge only one thread writes; see [`Store::counter_single_in`].
    pub fn gauge_single_in(&self, prefix: &Prefix, suffix: &'static str) -> Arc<Gauge> {
        split(&self.gauges, prefix, suffix, Gauge::single)
    }

    /// A histogram only one thread records into; see [`Store::counter_single_in`].
    pub fn histogram_single_in(&self, prefix: &Prefix, suffix: &'static str) -> Arc<Histogram> {
        split(&self.histograms, prefix, suffix, Histogram::single)
    }

    /// Sets a text readout (`name: "value"` in `/stats`).
    pub fn text_readout(&self, name: &str, value: &str) {
        self.text_readouts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), value.to_string());
    }

    /// All counters, sorted by name.
    pub fn counters(&self) -> Vec<(String, Arc<Counter>)> {
        list(&self.counters)
    }

    /// All gauges, sorted by name.
    pub fn gauges(&self) -> Vec<(String, Arc<Gauge>)> {
        list(&self.gauges)
    }

    /// All histograms, sorted by name.
    pub fn histograms(&self) -> Vec<(String, Arc<Histogram>)> {
        list(&self.histograms)
    }

    /// All text readouts, sorted by name.
    pub fn text_readouts(&self) -> Vec<(String, String)> {
        self.text_readouts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The value of a counter if it exists (does not create it).
    pub fn counter_value(&self, name: &str) -> Option<u64> {
        self.counters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&Parts(name, "") as &dyn Key)
            .map(|c| c.value())
    }

    /// The value of a gauge if it exists (does not create it).
    pub fn gauge_value(&self, name: &str) -> Option<i64> {
        self.gauges
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&Parts(name, "") as &dyn Key)
            .map(|g| g.value())
    }

    /// `/reset_counters`: every counter back to 0 (gauges and histograms
    /// are untouched, as in Envoy).
    pub fn reset_counters(&self) {
        for (_, c) in self.counters() {
            c.reset();
        }
    }
}

/// Envoy's `Stats::Utility::sanitizeStatsName`: a name part (cluster name,
/// listener address) with `:` (and `://`, `:/`, NUL) turned into `_` and a
/// leading/trailing `.` dropped, so it cannot break the dotted name.
pub fn sanitize(name_part: &str) -> String {
    let s = name_part.strip_suffix('.').unwrap_or(name_part);
    let s = s.strip_prefix('.').unwrap_or(s);
    s.replace("://", "_").replace(":/", "_").replace([':', '\0'], "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_add_value_reset_used() {
        let c = Counter::default();
        assert!(!c.used());
        assert_eq!(c.value(), 0);
        c.inc();
        c.add(41);
        assert_eq!(c.value(), 42);
        assert!(c.used());
        c.reset();
        assert_eq!(c.value(), 0);
        assert!(c.used(), "reset keeps `used`, as Envoy does");
    }

    #[test]
    fn counter_sums_across_threads() {
        let c = Arc::new(Counter::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.inc();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(c.value(), 8000);
    }

    #[test]
    fn owned_and_shared_shards_sum_and_reset() {
        // Threads with a shard of their own (plain stores) beside threads
        // that share shards (atomic adds), more of them than there are
        // shards of either kind; the reset in the middle loses nothing
        // written after it.
        let c = Arc::new(Counter::default());
        let h = Arc::new(Histogram::default());
        let g = Arc::new(Gauge::default());
        let run = |own: bool, n: u64| {
            let (c, h, g) = (c.clone(), h.clone(), g.clone());
            std::thread::spawn(move || {
                if own {
                    own_a_shard();
                }
                for i in 0..n {
                    c.inc();
                    h.record(i % 7);
                    g.inc();
                    g.dec();
                }
                g.add(1);
                my_slot()
            })
        };
        let threads: Vec<_> = (0..12).map(|i| run(i % 2 == 0, 1000)).collect();
        let slots: Vec<Slot> = threads.into_iter().map(|t| t.join().expect("thread")).collect();
        let owned = slots.iter().filter(|s| s.owned).count();
        assert_eq!(owned, owned_shards().min(6), "{slots:?}");
        assert!(slots.iter().all(|s| s.owned == (s.index < owned_shards())));
        let mut mine: Vec<usize> = slots.iter().filter(|s| s.owned).map(|s| s.index).collect();
        mine.sort_unstable();
        mine.dedup();
        assert_eq!(mine.len(), owned, "an owned shard has one writer: {slots:?}");
        assert_eq!(c.value(), 12_000);
        let snap = h.snapshot();
        assert_eq!((snap.count, snap.min, snap.max), (12_000, 0, 6));
        assert_eq!(snap.sum, 12 * (0..1000u64).map(|i| i % 7).sum::<u64>());
        assert_eq!(g.value(), 12);
        c.reset();
        assert_eq!(c.value(), 0);
        for t in [run(true, 5), run(false, 3)] {
            t.join().expect("thread");
        }
        assert_eq!(c.value(), 8);
        c.reset();
        assert_eq!(c.value(), 0);
    }

    #[test]
    fn a_single_gauge_set_from_any_thread_reads_back() {
        let g = Arc::new(Gauge::single());
        let g2 = g.clone();
        // This thread's shard index is not 0 (shared shards come after the
        // owned ones), nor is the spawned one's.
        assert!(my_slot().index >= owned_shards());
        std::thread::spawn(move || g2.set(3)).join().expect("thread");
        assert_eq!(g.value(), 3);
        g.set(5);
        assert_eq!(g.value(), 5);
    }

    #[test]
    fn gauge_ops() {
        let g = Arc::new(Gauge::default());
        assert!(!g.used());
        g.inc();
        g.inc();
        g.dec();
        g.add(10);
        g.sub(3);
        assert_eq!(g.value(), 8);
        assert!(g.used());
        // dec on another thread than inc still sums right.
        let g2 = g.clone();
        std::thread::spawn(move || g2.sub(8)).join().expect("thread");
        assert_eq!(g.value(), 0);
        g.set(-5);
        assert_eq!(g.value(), -5);
        g.set(7);
        assert_eq!(g.value(), 7);
    }

    #[test]
    fn store_same_name_same_metric() {
        let s = Store::default();
        s.counter("a.b").inc();
        s.counter("a.b").inc();
        assert_eq!(s.counter_value("a.b"), Some(2));
        assert_eq!(s.counter_value("nope"), None);
        s.gauge("g").set(3);
        assert_eq!(s.gauge_value("g"), Some(3));
        s.counter("0.first").inc();
        let names: Vec<String> = s.counters().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["0.first", "a.b"]);
        s.reset_counters();
        assert_eq!(s.counter_value("a.b"), Some(0));
        assert_eq!(s.gauge_value("g"), Some(3));
        s.text_readout("t", "v1");
        s.text_readout("t", "v2");
        assert_eq!(s.text_readouts(), [("t".to_string(), "v2".to_string())]);
    }

    #[test]
    fn sanitize_table() {
        for (input, want) in [
            ("service1", "service1"),
            ("outbound|80||svc.ns:8080", "outbound|80||svc.ns_8080"),
            ("0.0.0.0:10000", "0.0.0.0_10000"),
            ("[::]:10000", "[__]_10000"),
            ("http://x", "http_x"),
            ("a:/b", "a_b"),
            (".lead.", "lead"),
        ] {
            assert_eq!(sanitize(input), want, "{input}");
        }
    }

    #[test]
    fn bucket_of_uses_le_bounds() {
        for (v, want) in [
            (0, 0),
            (1, 1),
            (2, 2),
            (5, 2),
            (6, 3),
            (1000, 9),
            (3_600_000, 18),
            (3_600_001, 19),
            (u64::MAX, 19),
        ] {
            assert_eq!(bucket_of(v), want, "value {v}");
        }
    }

    #[test]
    fn histogram_snapshot_counts() {
        let s = HistogramSnapshot::from_values(&[0, 1, 3, 7, 7, 4000]);
        assert_eq!(s.count, 6);
        assert_eq!(s.sum, 4018);
        assert_eq!((s.min, s.max), (0, 4000));
        let cum = s.cumulative();
        assert_eq!(cum[0], 1); // le 0.5
        assert_eq!(cum[1], 2); // le 1
        assert_eq!(cum[2], 3); // le 5
        assert_eq!(cum[3], 5); // le 10
        assert_eq!(cum[10], 5); // le 2500
        assert_eq!(cum[11], 6); // le 5000 holds 4000
        assert_eq!(cum[NBUCKETS - 1], 6);
    }

    #[test]
    fn quantile_table() {
        struct Case {
            values: Vec<u64>,
            q: f64,
            want: f64,
        }
        let cases = [
            // Single value: every quantile is that value (min/max narrowing).
            Case {
                values: vec![7],
                q: 0.5,
                want: 7.0,
            },
            Case {
                values: vec![7],
                q: 0.99,
                want: 7.0,
            },
            // P0 and P100 are exact.
            Case {
                values: vec![3, 8, 40],
                q: 0.0,
                want: 3.0,
            },
            Case {
                values: vec![3, 8, 40],
                q: 1.0,
                want: 40.0,
            },
            // 100 values 1..=100: bucket (50,100] holds 51..=100.
            // P75: rank 75, 50 before, 50 in bucket -> 50 + 50*25/50 = 75.
            Case {
                values: (1..=100).collect(),
                q: 0.75,
                want: 75.0,
            },
            // P50: rank 50 lands at the top of (25,50] -> 50.
            Case {
                values: (1..=100).collect(),
                q: 0.5,
                want: 50.0,
            },
            // P90: 50 + 50*40/50 = 90.
            Case {
                values: (1..=100).collect(),
                q: 0.9,
                want: 90.0,
            },
            // Values above the last bound: interpolated up to the max.
            Case {
                values: vec![4_000_000, 5_000_000],
                q: 0.5,
                want: 4_500_000.0,
            },
        ];
        for c in cases {
            let s = HistogramSnapshot::from_values(&c.values);
            let got = s.quantile(c.q).expect("non-empty");
            assert!(
                (got - c.want).abs() < 1e-9,
                "values {:?} q {}: got {got}, want {}",
                &c.values[..c.values.len().min(5)],
                c.q,
                c.want
            );
        }
    }

    #[test]
    fn quantiles_empty_and_monotonic() {
        let empty = HistogramSnapshot::from_values(&[]);
        assert_eq!(empty.quantile(0.5), None);
        assert_eq!(empty.quantiles(), None);
        let s = HistogramSnapshot::from_values(&[1, 2, 2, 9, 30, 31, 200, 700, 12000]);
        let q = s.quantiles().expect("non-empty");
        assert!(q.windows(2).all(|w| w[0] <= w[1]), "{q:?}");
        assert_eq!(q[0], 1.0);
        assert_eq!(q[9], 12000.0);
    }

    #[test]
    fn since_subtracts() {
        let h = Histogram::default();
        h.record(3);
        let a = h.snapshot();
        h.record(30);
        h.record(40);
        let d = h.snapshot().since(&a);
        assert_eq!(d.count, 2);
        assert_eq!(d.sum, 70);
        assert!(h.used());
        assert!(!Histogram::default().used());
    }
}
