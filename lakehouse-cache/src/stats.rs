//! The counters of a [`Cache`](crate::Cache) and their snapshot, [`CacheStats`].

use std::sync::atomic::{AtomicU64, Ordering};

use crate::entry::RemovalCause;

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

/// The cache-wide counters; hits and misses are counted per shard, next to the lock
/// their lookups take, and added up in [`Cache::stats`](crate::Cache::stats).
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

impl Counters {
    /// Counts an insert or a replacement.
    pub(crate) fn inserted(&self) {
        self.inserts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an entry that left the cache for `cause`.
    pub(crate) fn removed(&self, cause: RemovalCause) {
        let counter = match cause {
            RemovalCause::Size => &self.evictions,
            RemovalCause::Expired => &self.expirations,
            RemovalCause::Explicit => &self.invalidations,
            RemovalCause::Replaced => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The cache-wide counters; the per-shard fields (hits, misses, entries, weight)
    /// are left at 0 for the caller to fill in.
    pub(crate) fn snapshot(&self) -> CacheStats {
        CacheStats {
            inserts: self.inserts.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            expirations: self.expirations.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            load_failures: self.load_failures.load(Ordering::Relaxed),
            load_micros: self.load_micros.load(Ordering::Relaxed),
            ..CacheStats::default()
        }
    }
}
