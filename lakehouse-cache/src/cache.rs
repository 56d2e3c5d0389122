//! [`Cache`]: a sharded in-process cache with S3-FIFO eviction.
//!
//! The parts live next to it: the builder in `builder`, the per-entry settings in
//! `entry`, expiry in `expiry`, a shard and its S3-FIFO eviction in `shard`, the
//! counters in `stats` and read-through loading in `load`.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use lakehouse_core::{Clock, Error, ErrorKind, Result};
use parking_lot::RwLock;

use crate::builder::CacheBuilder;
use crate::entry::{EntryOptions, RemovalCause};
use crate::expiry::{Expiry, NEVER, micros};
use crate::load::Loads;
use crate::shard::{Shard, Slot};
use crate::stats::{CacheStats, Counters};

pub(crate) type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u64 + Send + Sync>;
pub(crate) type Listener<K, V> = Arc<dyn Fn(&K, &V, RemovalCause) + Send + Sync>;

/// What [`CacheBuilder::build`] settled on.
pub(crate) struct Settings<K, V> {
    /// Entries, or total weight with a weigher; positive.
    pub(crate) capacity: u64,
    /// A power of two.
    pub(crate) shards: usize,
    pub(crate) weigher: Option<Weigher<K, V>>,
    pub(crate) expiry: Expiry,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) listener: Option<Listener<K, V>>,
    pub(crate) negative_ttl: Option<Duration>,
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
    expiry: Expiry,
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
/// evicted keys), which keeps one-hit wonders and scans from flushing popular entries;
/// the small queue's share adapts by the keys that come back after eviction from either
/// queue, so that new favourites get in when popularity shifts.
/// A read takes a shard's read lock, so readers of different keys do not block each
/// other. Cheap to clone: clones share the cache. Values are cloned out on reads: wrap
/// large values in an `Arc`.
///
/// Each shard holds `capacity / shards` (rounded up); an entry heavier than that is
/// rejected with [`ErrorKind::RecordTooLarge`].
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

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Starts configuring a cache.
    pub fn builder() -> CacheBuilder<K, V> {
        CacheBuilder::new()
    }

    /// A cache of at most `max_entries` entries with default settings.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] when `max_entries` is 0.
    pub fn new(max_entries: u64) -> Result<Self> {
        Self::builder().max_entries(max_entries).build()
    }

    pub(crate) fn with_settings(settings: Settings<K, V>) -> Self {
        let shards = settings.shards;
        let per_shard = settings.capacity.div_ceil(shards as u64);
        let cells = (0..shards)
            .map(|_| {
                CachePadded::new(ShardCell {
                    shard: RwLock::new(Shard::new(per_shard)),
                    hits: AtomicU64::new(0),
                    misses: AtomicU64::new(0),
                })
            })
            .collect();
        Cache {
            inner: Arc::new(Inner {
                shards: cells,
                shard_bits: shards.trailing_zeros(),
                hasher: hashbrown::DefaultHashBuilder::default(),
                per_shard,
                capacity: settings.capacity,
                weigher: settings.weigher,
                expiry: settings.expiry,
                clock: settings.clock,
                listener: settings.listener,
                counters: Counters::default(),
                loads: Loads::new(settings.negative_ttl.map(micros), settings.capacity),
            }),
        }
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
        for (key, value, cause) in removed {
            self.inner.counters.removed(cause);
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
        let expiry = &self.inner.expiry;
        let expired = {
            let shard = cell.shard.read();
            match shard.find(hash, key) {
                None => None,
                Some(idx) => {
                    let slot = shard.slot(idx);
                    let now = if expiry.needs_clock(slot.expires_at) {
                        self.inner.clock.now_micros()
                    } else {
                        i64::MIN
                    };
                    let last_access = slot.last_access.load(Ordering::Relaxed);
                    if expiry.is_expired(slot.expires_at, last_access, now) {
                        Some((idx, shard.generation(idx)))
                    } else {
                        slot.mark_read();
                        if expiry.tracks_idle() {
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
            if let Some(slot) = shard.take_current(idx, generation) {
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
        let expiry = &self.inner.expiry;
        shard.find(hash, key).is_some_and(|idx| {
            let slot = shard.slot(idx);
            let now = if expiry.needs_clock(slot.expires_at) {
                self.inner.clock.now_micros()
            } else {
                i64::MIN
            };
            let last_access = slot.last_access.load(Ordering::Relaxed);
            !expiry.is_expired(slot.expires_at, last_access, now)
        })
    }

    /// Inserts or replaces `key` with the cache's default expiry.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::RecordTooLarge`] when the entry weighs more than a shard holds; the
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
            // Keys need not be `Debug`: the context names their type.
            return Err(Error::new(
                ErrorKind::RecordTooLarge,
                format!(
                    "entry weighs {weight}; a shard holds at most {}",
                    self.inner.per_shard
                ),
            )
            .with_key(format!("<{}>", std::any::type_name::<K>())));
        }
        let expiry = &self.inner.expiry;
        let ttl = expiry.ttl_for(options.ttl);
        let now = if ttl.is_some() || expiry.tracks_idle() {
            self.inner.clock.now_micros()
        } else {
            0
        };
        let expires_at = ttl.map_or(NEVER, |t| now.saturating_add(t));
        let hash = self.hash(&key);
        let slot = Slot::new(
            key,
            value,
            hash,
            weight,
            expires_at,
            now,
            options.tags.into_boxed_slice(),
        );
        let mut removed = Vec::new();
        self.cell(hash).shard.write().insert(slot, &mut removed);
        self.inner.counters.inserted();
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
            let removed: Vec<_> = cell
                .shard
                .write()
                .take_where(&doomed)
                .into_iter()
                .map(|s| (s.key, s.value, cause))
                .collect();
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
        let expiry = self.inner.expiry;
        self.remove_where(RemovalCause::Expired, |s| {
            expiry.is_expired(s.expires_at, s.last_access.load(Ordering::Relaxed), now)
        })
    }

    /// Number of entries held (expired entries count until removed).
    pub fn entry_count(&self) -> u64 {
        self.inner
            .shards
            .iter()
            .map(|c| c.shard.read().len() as u64)
            .sum()
    }

    /// Total weight held.
    pub fn weight(&self) -> u64 {
        self.inner
            .shards
            .iter()
            .map(|c| c.shard.read().weight())
            .sum()
    }

    /// The configured capacity (entries, or total weight with a weigher).
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        let mut s = self.inner.counters.snapshot();
        for cell in self.inner.shards.iter() {
            s.hits += cell.hits.load(Ordering::Relaxed);
            s.misses += cell.misses.load(Ordering::Relaxed);
            let shard = cell.shard.read();
            s.entries += shard.len() as u64;
            s.weight += shard.weight();
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
    use std::sync::Arc;
    use std::time::Duration;

    use lakehouse_core::ManualClock;

    use super::*;

    impl<K, V> Cache<K, V> {
        /// Queue, ghost and slot entries of every shard, and remembered failures.
        fn bookkeeping(&self) -> (usize, usize) {
            let shards = self
                .inner
                .shards
                .iter()
                .map(|c| c.shard.read().bookkeeping())
                .sum();
            (shards, self.inner.loads.negative_len())
        }
    }

    /// Overwrites, invalidations and failed lookups of ever new keys, in a cache that
    /// never fills: what the cache keeps for them stays bounded.
    #[test]
    fn churn_keeps_the_bookkeeping_bounded() {
        let clock = ManualClock::at_millis(0);
        let cache: Cache<u64, u64> = Cache::builder()
            .max_entries(64)
            .shards(2)
            .negative_ttl(Duration::from_secs(3600))
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        let bound = 64 * 8;
        let mut worst = (0, 0);
        for round in 0..20_000u64 {
            // The same few keys overwritten and invalidated.
            cache.insert(round % 8, round).unwrap();
            cache.insert(round % 8, round + 1).unwrap();
            if round % 3 == 0 {
                cache.invalidate(&(round % 8));
            }
            // Fresh keys, inserted and invalidated at once.
            cache.insert(1_000_000 + round, round).unwrap();
            cache.invalidate(&(1_000_000 + round));
            // Failed loads of ever new keys, remembered for an hour.
            let failed = cache.get_or_load(2_000_000 + round, |_| {
                Err::<u64, _>(std::io::Error::other("not found"))
            });
            assert!(failed.is_err());
            if round % 1000 == 0 {
                clock.advance_millis(1);
            }
            let now = cache.bookkeeping();
            worst = (worst.0.max(now.0), worst.1.max(now.1));
        }
        assert!(cache.entry_count() <= 64);
        assert!(worst.0 <= bound, "queues and slots grew to {}", worst.0);
        assert!(worst.1 <= bound, "remembered failures grew to {}", worst.1);
        // The most recent failure is still remembered.
        let calls = std::sync::atomic::AtomicU32::new(0);
        let again = cache.get_or_load(2_000_000 + 19_999, |_| {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<u64, std::io::Error>(1)
        });
        assert!(again.is_err());
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
