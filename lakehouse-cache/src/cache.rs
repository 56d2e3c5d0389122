//! [`Cache`]: a sharded in-process cache with S3-FIFO eviction.

use std::collections::VecDeque;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use lakehouse_core::{Clock, SystemClock};
use parking_lot::RwLock;

use crate::error::{Error, ErrorKind, Result};
use crate::load::Loads;

/// Why an entry left the cache, as the eviction listener is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalCause {
    /// Evicted to stay within capacity.
    Size,
    /// Its time to live or time to idle ran out.
    Expired,
    /// Removed by an `invalidate*` call.
    Explicit,
    /// Overwritten by an insert of the same key.
    Replaced,
}

type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u64 + Send + Sync>;
type Listener<K, V> = Arc<dyn Fn(&K, &V, RemovalCause) + Send + Sync>;

/// Per-entry settings for [`Cache::insert_with`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct EntryOptions {
    ttl: Option<Duration>,
    tags: Vec<Arc<str>>,
}

impl EntryOptions {
    /// Default settings: the cache's time to live, no tags.
    pub fn new() -> Self {
        Self::default()
    }

    /// This entry expires `ttl` after insertion, whatever the cache's default.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Tags the entry so that [`Cache::invalidate_tag`] can remove it.
    pub fn tag(mut self, tag: impl Into<Arc<str>>) -> Self {
        self.tags.push(tag.into());
        self
    }
}

/// A point-in-time view of the cache's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Lookups that found nothing (or an expired entry).
    pub misses: u64,
    /// Entries inserted or replaced.
    pub inserts: u64,
    /// Entries evicted for capacity.
    pub evictions: u64,
    /// Entries removed because they expired.
    pub expirations: u64,
    /// Entries removed by invalidation.
    pub invalidations: u64,
    /// Read-through loads that succeeded.
    pub loads: u64,
    /// Read-through loads that failed.
    pub load_failures: u64,
    /// Total time spent in loaders, in microseconds.
    pub load_micros: u64,
    /// Entries currently held.
    pub entries: u64,
    /// Total weight currently held.
    pub weight: u64,
}

impl CacheStats {
    /// `hits / (hits + misses)`, or 0 with no lookups.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

/// Configures a [`Cache`]; made by [`Cache::builder`].
#[must_use]
pub struct CacheBuilder<K, V> {
    max_entries: Option<u64>,
    max_weight: Option<u64>,
    weigher: Option<Weigher<K, V>>,
    ttl: Option<Duration>,
    tti: Option<Duration>,
    shards: Option<usize>,
    clock: Arc<dyn Clock>,
    listener: Option<Listener<K, V>>,
    negative_ttl: Option<Duration>,
}

impl<K, V> fmt::Debug for CacheBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("max_entries", &self.max_entries)
            .field("max_weight", &self.max_weight)
            .field("ttl", &self.ttl)
            .field("tti", &self.tti)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl<K, V> CacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Holds at most this many entries.
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = Some(n);
        self
    }

    /// Holds at most this total weight, as measured by `weigher` (bytes, say).
    pub fn max_weight(
        mut self,
        total: u64,
        weigher: impl Fn(&K, &V) -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.max_weight = Some(total);
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// Entries expire this long after they were inserted.
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Entries expire when not read for this long.
    pub fn time_to_idle(mut self, tti: Duration) -> Self {
        self.tti = Some(tti);
        self
    }

    /// Number of independently locked shards (rounded up to a power of two). The
    /// default scales with the capacity, up to 64.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// The clock that expiry reads.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Called, outside any lock, for every entry that leaves the cache.
    pub fn eviction_listener(
        mut self,
        f: impl Fn(&K, &V, RemovalCause) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Arc::new(f));
        self
    }

    /// Remembers a failed read-through load for this long, so that a failing back end
    /// is not asked again by every caller.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// Builds the cache.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] without a capacity, with a zero capacity or zero
    /// shards.
    pub fn build(self) -> Result<Cache<K, V>> {
        let capacity = match (self.max_weight, self.max_entries) {
            (Some(w), _) => w,
            (None, Some(n)) => n,
            (None, None) => {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    "set max_entries or max_weight",
                ));
            }
        };
        if capacity == 0 {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "capacity must be positive",
            ));
        }
        if self.shards == Some(0) {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "shards must be positive",
            ));
        }
        // Enough entries per shard that the eviction order stays meaningful.
        let default_shards = (capacity / 256).clamp(1, 64) as usize;
        let shards = self.shards.unwrap_or(default_shards).next_power_of_two();
        let per_shard = capacity.div_ceil(shards as u64);
        let shard_bits = shards.trailing_zeros();
        let cells = (0..shards)
            .map(|_| {
                CachePadded::new(ShardCell {
                    shard: RwLock::new(Shard::new(per_shard)),
                    hits: AtomicU64::new(0),
                    misses: AtomicU64::new(0),
                })
            })
            .collect();
        Ok(Cache {
            inner: Arc::new(Inner {
                shards: cells,
                shard_bits,
                hasher: foldhash_state(),
                per_shard,
                capacity,
                weigher: self.weigher,
                ttl: self.ttl.map(micros),
                tti: self.tti.map(micros),
                clock: self.clock,
                listener: self.listener,
                counters: Counters::default(),
                loads: Loads::new(self.negative_ttl.map(micros)),
            }),
        })
    }
}

fn foldhash_state() -> hashbrown::DefaultHashBuilder {
    hashbrown::DefaultHashBuilder::default()
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    inserts: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
    invalidations: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) load_failures: AtomicU64,
    pub(crate) load_micros: AtomicU64,
}

struct Slot<K, V> {
    key: K,
    value: V,
    hash: u64,
    weight: u64,
    /// S3-FIFO access frequency, saturating at 3.
    freq: AtomicU8,
    in_main: bool,
    /// Absolute expiry in clock microseconds (`i64::MAX`: never).
    expires_at: i64,
    /// Last read, for time to idle (only maintained when the cache has one).
    last_access: AtomicI64,
    tags: Box<[Arc<str>]>,
}

struct Shard<K, V> {
    table: HashTable<u32>,
    slots: Vec<Option<Slot<K, V>>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    small: VecDeque<(u32, u32)>,
    main: VecDeque<(u32, u32)>,
    ghost: VecDeque<u64>,
    ghost_set: hashbrown::HashSet<u64>,
    small_weight: u64,
    weight: u64,
    capacity: u64,
}

struct ShardCell<K, V> {
    shard: RwLock<Shard<K, V>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

struct Inner<K, V> {
    shards: Box<[CachePadded<ShardCell<K, V>>]>,
    shard_bits: u32,
    hasher: hashbrown::DefaultHashBuilder,
    per_shard: u64,
    capacity: u64,
    weigher: Option<Weigher<K, V>>,
    ttl: Option<i64>,
    tti: Option<i64>,
    clock: Arc<dyn Clock>,
    listener: Option<Listener<K, V>>,
    counters: Counters,
    loads: Loads<K, V>,
}

/// A concurrent, bounded cache: capacity by entries or by weight, time to live and to
/// idle, per-entry expiry and tags, invalidation by key, predicate, prefix or tag, an
/// eviction listener, statistics and read-through loading with request coalescing.
///
/// Entries live in independently locked shards; within a shard, eviction follows
/// S3-FIFO (a small probationary queue, a main queue and a ghost list of recently
/// evicted keys), which keeps one-hit wonders and scans from flushing popular entries.
/// A read takes a shard's read lock, so readers of different keys do not block each
/// other. Cheap to clone: clones share the cache. Values are cloned out on reads: wrap
/// large values in an `Arc`.
///
/// Each shard holds `capacity / shards` (rounded up); an entry heavier than that is
/// rejected with [`ErrorKind::WeightTooLarge`].
pub struct Cache<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for Cache<K, V> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
        }
    }
}

impl<K, V> fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("capacity", &self.inner.capacity)
            .field("shards", &self.inner.shards.len())
            .finish_non_exhaustive()
    }
}

impl<K, V> Shard<K, V> {
    fn new(capacity: u64) -> Self {
        Shard {
            table: HashTable::new(),
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            small: VecDeque::new(),
            main: VecDeque::new(),
            ghost: VecDeque::new(),
            ghost_set: hashbrown::HashSet::new(),
            small_weight: 0,
            weight: 0,
            capacity,
        }
    }

    fn find(&self, hash: u64, key: &K) -> Option<u32>
    where
        K: Eq,
    {
        self.table
            .find(hash, |&i| {
                self.slots[i as usize]
                    .as_ref()
                    .is_some_and(|s| s.key == *key)
            })
            .copied()
    }

    fn slot(&self, idx: u32) -> &Slot<K, V> {
        self.slots[idx as usize]
            .as_ref()
            .expect("the table only holds indices of occupied slots")
    }

    /// Removes the slot at `idx` from the table and returns it.
    fn take(&mut self, idx: u32) -> Slot<K, V> {
        let slot = self.slots[idx as usize]
            .take()
            .expect("the table only holds indices of occupied slots");
        if let Ok(entry) = self.table.find_entry(slot.hash, |&i| i == idx) {
            entry.remove();
        }
        self.weight -= slot.weight;
        if !slot.in_main {
            self.small_weight -= slot.weight;
        }
        self.generations[idx as usize] = self.generations[idx as usize].wrapping_add(1);
        self.free.push(idx);
        slot
    }

    fn remember_ghost(&mut self, hash: u64) {
        if self.ghost_set.insert(hash) {
            self.ghost.push_back(hash);
        }
        // The ghost list remembers about as many keys as the shard holds.
        let limit = (self.table.len().max(16)) * 2;
        while self.ghost.len() > limit {
            if let Some(old) = self.ghost.pop_front() {
                self.ghost_set.remove(&old);
            }
        }
    }

    /// Evicts one entry by S3-FIFO; `None` when the shard is empty.
    fn evict_one(&mut self) -> Option<Slot<K, V>> {
        loop {
            let from_small = !self.small.is_empty()
                && (self.small_weight > self.capacity / 10 || self.main.is_empty());
            let queue = if from_small {
                &mut self.small
            } else {
                &mut self.main
            };
            let (idx, generation) = queue.pop_front()?;
            if self.generations[idx as usize] != generation || self.slots[idx as usize].is_none() {
                continue;
            }
            let freq = self.slot(idx).freq.load(Ordering::Relaxed);
            if from_small {
                if freq > 0 {
                    // Re-read while on probation: promote to the main queue.
                    let slot = self.slots[idx as usize].as_mut().expect("checked above");
                    slot.in_main = true;
                    slot.freq.store(0, Ordering::Relaxed);
                    self.small_weight -= slot.weight;
                    self.main.push_back((idx, generation));
                    continue;
                }
                let slot = self.take(idx);
                self.remember_ghost(slot.hash);
                return Some(slot);
            }
            if freq > 0 {
                self.slot(idx).freq.store(freq - 1, Ordering::Relaxed);
                self.main.push_back((idx, generation));
                continue;
            }
            return Some(self.take(idx));
        }
    }
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Starts configuring a cache.
    pub fn builder() -> CacheBuilder<K, V> {
        CacheBuilder {
            max_entries: None,
            max_weight: None,
            weigher: None,
            ttl: None,
            tti: None,
            shards: None,
            clock: Arc::new(SystemClock),
            listener: None,
            negative_ttl: None,
        }
    }

    /// A cache of at most `max_entries` entries with default settings.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] when `max_entries` is 0.
    pub fn new(max_entries: u64) -> Result<Self> {
        Self::builder().max_entries(max_entries).build()
    }

    fn hash(&self, key: &K) -> u64 {
        self.inner.hasher.hash_one(key)
    }

    fn cell(&self, hash: u64) -> &ShardCell<K, V> {
        let idx = if self.inner.shard_bits == 0 {
            0
        } else {
            (hash >> (64 - self.inner.shard_bits)) as usize
        };
        &self.inner.shards[idx]
    }

    fn notify(&self, removed: Vec<(K, V, RemovalCause)>) {
        let c = &self.inner.counters;
        for (key, value, cause) in removed {
            match cause {
                RemovalCause::Size => c.evictions.fetch_add(1, Ordering::Relaxed),
                RemovalCause::Expired => c.expirations.fetch_add(1, Ordering::Relaxed),
                RemovalCause::Explicit => c.invalidations.fetch_add(1, Ordering::Relaxed),
                RemovalCause::Replaced => 0,
            };
            if let Some(listener) = &self.inner.listener {
                listener(&key, &value, cause);
            }
        }
    }

    /// The value of `key`, if present and not expired. Counts a hit or a miss.
    pub fn get(&self, key: &K) -> Option<V> {
        self.lookup(key, true)
    }

    /// [`get`](Self::get) that counts a hit but no miss: for the second look of a
    /// read-through load, whose miss was already counted.
    pub(crate) fn get_recheck(&self, key: &K) -> Option<V> {
        self.lookup(key, false)
    }

    fn lookup(&self, key: &K, count_miss: bool) -> Option<V> {
        let hash = self.hash(key);
        let cell = self.cell(hash);
        let expired = {
            let shard = cell.shard.read();
            match shard.find(hash, key) {
                None => None,
                Some(idx) => {
                    let slot = shard.slot(idx);
                    let now = if slot.expires_at != i64::MAX || self.inner.tti.is_some() {
                        self.inner.clock.now_micros()
                    } else {
                        i64::MIN
                    };
                    let idle_out = self.inner.tti.is_some_and(|tti| {
                        now.saturating_sub(slot.last_access.load(Ordering::Relaxed)) >= tti
                    });
                    if now >= slot.expires_at || idle_out {
                        Some((idx, shard.generations[idx as usize]))
                    } else {
                        let f = slot.freq.load(Ordering::Relaxed);
                        if f < 3 {
                            slot.freq.store(f + 1, Ordering::Relaxed);
                        }
                        if self.inner.tti.is_some() {
                            slot.last_access.store(now, Ordering::Relaxed);
                        }
                        cell.hits.fetch_add(1, Ordering::Relaxed);
                        return Some(slot.value.clone());
                    }
                }
            }
        };
        if count_miss {
            cell.misses.fetch_add(1, Ordering::Relaxed);
        }
        if let Some((idx, generation)) = expired {
            let mut shard = cell.shard.write();
            if shard.generations[idx as usize] == generation && shard.slots[idx as usize].is_some()
            {
                let slot = shard.take(idx);
                drop(shard);
                self.notify(vec![(slot.key, slot.value, RemovalCause::Expired)]);
            }
        }
        None
    }

    /// `true` if `key` is present and not expired; counts nothing and does not mark the
    /// entry as used.
    pub fn contains_key(&self, key: &K) -> bool {
        let hash = self.hash(key);
        let shard = self.cell(hash).shard.read();
        shard.find(hash, key).is_some_and(|idx| {
            let slot = shard.slot(idx);
            slot.expires_at == i64::MAX || self.inner.clock.now_micros() < slot.expires_at
        })
    }

    /// Inserts or replaces `key` with the cache's default expiry.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::WeightTooLarge`] when the entry weighs more than a shard holds; the
    /// cache is unchanged.
    pub fn insert(&self, key: K, value: V) -> Result<()> {
        self.insert_with(key, value, EntryOptions::default())
    }

    /// Inserts or replaces `key` with per-entry settings.
    ///
    /// # Errors
    ///
    /// As [`insert`](Self::insert).
    pub fn insert_with(&self, key: K, value: V, options: EntryOptions) -> Result<()> {
        let weight = match &self.inner.weigher {
            Some(w) => w(&key, &value),
            None => 1,
        };
        if weight > self.inner.per_shard {
            return Err(Error::new(
                ErrorKind::WeightTooLarge,
                format!(
                    "entry weighs {weight}; a shard holds at most {}",
                    self.inner.per_shard
                ),
            )
            .with_key(DebugKey::<K>(std::marker::PhantomData)));
        }
        let ttl = options.ttl.map(micros).or(self.inner.ttl);
        let needs_clock = ttl.is_some() || self.inner.tti.is_some();
        let now = if needs_clock {
            self.inner.clock.now_micros()
        } else {
            0
        };
        let expires_at = ttl.map_or(i64::MAX, |t| now.saturating_add(t));
        let hash = self.hash(&key);
        let cell = self.cell(hash);
        let mut removed = Vec::new();
        {
            let mut guard = cell.shard.write();
            let shard = &mut *guard;
            // A replaced entry keeps its place in the eviction order.
            let mut previous = None;
            if let Some(idx) = shard.find(hash, &key) {
                let old = shard.take(idx);
                previous = Some((old.in_main, old.freq.load(Ordering::Relaxed)));
                removed.push((old.key, old.value, RemovalCause::Replaced));
            }
            // Make room first, so that the weight sum never exceeds the capacity
            // (`weight <= capacity` was checked above).
            while shard.weight > shard.capacity - weight {
                match shard.evict_one() {
                    Some(slot) => removed.push((slot.key, slot.value, RemovalCause::Size)),
                    None => break,
                }
            }
            {
                let in_main = shard.ghost_set.remove(&hash) || previous.is_some_and(|p| p.0);
                let idx = match shard.free.pop() {
                    Some(i) => i,
                    None => {
                        shard.slots.push(None);
                        shard.generations.push(0);
                        u32::try_from(shard.slots.len() - 1)
                            .expect("a shard holds fewer than 2^32 entries")
                    }
                };
                let generation = shard.generations[idx as usize];
                shard.slots[idx as usize] = Some(Slot {
                    key,
                    value,
                    hash,
                    weight,
                    freq: AtomicU8::new(previous.map_or(0, |p| p.1)),
                    in_main,
                    expires_at,
                    last_access: AtomicI64::new(now),
                    tags: options.tags.into_boxed_slice(),
                });
                let slots = &shard.slots;
                match shard.table.entry(
                    hash,
                    |&i| i == idx,
                    |&i| slots[i as usize].as_ref().map_or(0, |s| s.hash),
                ) {
                    Entry::Occupied(_) => {}
                    Entry::Vacant(v) => {
                        v.insert(idx);
                    }
                }
                shard.weight += weight;
                if in_main {
                    shard.main.push_back((idx, generation));
                } else {
                    shard.small_weight += weight;
                    shard.small.push_back((idx, generation));
                }
            }
        }
        self.inner.counters.inserts.fetch_add(1, Ordering::Relaxed);
        self.notify(removed);
        Ok(())
    }

    /// Removes `key`; returns its value if it was present.
    pub fn invalidate(&self, key: &K) -> Option<V> {
        let hash = self.hash(key);
        let cell = self.cell(hash);
        let slot = {
            let mut shard = cell.shard.write();
            let idx = shard.find(hash, key)?;
            shard.take(idx)
        };
        let value = slot.value.clone();
        self.notify(vec![(slot.key, slot.value, RemovalCause::Explicit)]);
        Some(value)
    }

    /// Removes, shard by shard, every entry `doomed` selects; listeners hear `cause`.
    fn remove_where(&self, cause: RemovalCause, doomed: impl Fn(&Slot<K, V>) -> bool) -> usize {
        let mut total = 0;
        for cell in self.inner.shards.iter() {
            let removed: Vec<_> = {
                let mut shard = cell.shard.write();
                let picked: Vec<u32> = (0..shard.slots.len() as u32)
                    .filter(|&i| shard.slots[i as usize].as_ref().is_some_and(&doomed))
                    .collect();
                picked
                    .into_iter()
                    .map(|i| {
                        let s = shard.take(i);
                        (s.key, s.value, cause)
                    })
                    .collect()
            };
            total += removed.len();
            self.notify(removed);
        }
        total
    }

    /// Removes every entry for which `f` is true; returns how many. Visits every
    /// shard, one at a time.
    pub fn invalidate_if(&self, f: impl Fn(&K, &V) -> bool) -> usize {
        self.remove_where(RemovalCause::Explicit, |s| f(&s.key, &s.value))
    }

    /// Removes every entry tagged `tag` (see [`EntryOptions::tag`]); returns how many.
    pub fn invalidate_tag(&self, tag: &str) -> usize {
        self.remove_where(RemovalCause::Explicit, |s| {
            s.tags.iter().any(|t| &**t == tag)
        })
    }

    /// Removes every entry; returns how many.
    pub fn invalidate_all(&self) -> usize {
        self.invalidate_if(|_, _| true)
    }

    /// Removes expired entries now instead of on their next read; returns how many.
    pub fn purge_expired(&self) -> usize {
        let now = self.inner.clock.now_micros();
        let tti = self.inner.tti;
        self.remove_where(RemovalCause::Expired, |s| {
            now >= s.expires_at
                || tti
                    .is_some_and(|t| now.saturating_sub(s.last_access.load(Ordering::Relaxed)) >= t)
        })
    }

    /// Number of entries held (expired entries count until removed).
    pub fn entry_count(&self) -> u64 {
        self.inner
            .shards
            .iter()
            .map(|c| c.shard.read().table.len() as u64)
            .sum()
    }

    /// Total weight held.
    pub fn weight(&self) -> u64 {
        self.inner
            .shards
            .iter()
            .map(|c| c.shard.read().weight)
            .sum()
    }

    /// The configured capacity (entries, or total weight with a weigher).
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.inner.counters;
        let mut s = CacheStats {
            inserts: c.inserts.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            expirations: c.expirations.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            loads: c.loads.load(Ordering::Relaxed),
            load_failures: c.load_failures.load(Ordering::Relaxed),
            load_micros: c.load_micros.load(Ordering::Relaxed),
            ..CacheStats::default()
        };
        for cell in self.inner.shards.iter() {
            s.hits += cell.hits.load(Ordering::Relaxed);
            s.misses += cell.misses.load(Ordering::Relaxed);
            let shard = cell.shard.read();
            s.entries += shard.table.len() as u64;
            s.weight += shard.weight;
        }
        s
    }

    pub(crate) fn loads(&self) -> &Loads<K, V> {
        &self.inner.loads
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        &*self.inner.clock
    }
}

/// Renders a key of any type in error context (by type name: keys need not be `Debug`).
struct DebugKey<'a, K>(std::marker::PhantomData<&'a K>);

impl<K> fmt::Debug for DebugKey<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", std::any::type_name::<K>())
    }
}

impl<V> Cache<String, V>
where
    V: Clone + Send + Sync + 'static,
{
    /// Removes every entry whose key starts with `prefix`; returns how many.
    pub fn invalidate_prefix(&self, prefix: &str) -> usize {
        self.invalidate_if(|k, _| k.starts_with(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakehouse_core::ManualClock;

    #[test]
    fn evicts_to_capacity_and_keeps_popular_entries() {
        let cache: Cache<u64, u64> = Cache::builder().max_entries(100).shards(1).build().unwrap();
        for k in 0..50 {
            cache.insert(k, k).unwrap();
        }
        // Make 0..50 popular, then scan 10,000 one-hit keys through the cache.
        for _ in 0..3 {
            for k in 0..50 {
                assert_eq!(cache.get(&k), Some(k));
            }
        }
        for k in 1000..11_000 {
            cache.insert(k, k).unwrap();
        }
        assert!(cache.entry_count() <= 100);
        let kept = (0..50).filter(|k| cache.contains_key(k)).count();
        assert_eq!(kept, 50, "a scan does not flush popular entries");
    }

    #[test]
    fn expiry_follows_the_injected_clock() {
        let clock = ManualClock::at_millis(0);
        let cache: Cache<&str, i32> = Cache::builder()
            .max_entries(10)
            .time_to_live(Duration::from_secs(10))
            .time_to_idle(Duration::from_secs(3))
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        cache.insert("a", 1).unwrap();
        cache
            .insert_with("b", 2, EntryOptions::new().ttl(Duration::from_secs(1)))
            .unwrap();
        clock.advance_millis(1_500);
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.get(&"b"), None, "b's own ttl ran out");
        clock.advance_millis(2_000);
        assert_eq!(cache.get(&"a"), Some(1), "read 2 s ago, idle limit 3 s");
        clock.advance_millis(3_000);
        assert_eq!(cache.get(&"a"), None, "idle for 3 s");
        cache.insert("c", 3).unwrap();
        clock.advance_millis(2_000);
        assert_eq!(cache.get(&"c"), Some(3));
        clock.advance_millis(2_000);
        assert_eq!(cache.get(&"c"), Some(3));
        clock.advance_millis(2_000);
        assert_eq!(cache.get(&"c"), Some(3));
        clock.advance_millis(5_000);
        assert_eq!(cache.get(&"c"), None, "ttl of 10 s ran out despite reads");
        assert_eq!(cache.stats().expirations, 3);
        // Purging removes expired entries that nobody reads.
        cache.insert("d", 4).unwrap();
        cache.insert("e", 5).unwrap();
        clock.advance_millis(3_000);
        assert_eq!(cache.purge_expired(), 2);
        assert_eq!(cache.entry_count(), 0);
        assert_eq!(cache.invalidate_all(), 0);
    }
}
