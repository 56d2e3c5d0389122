//! The result cache: query results keyed by the normalized plan and the versions of
//! every table the query read, bounded by bytes, least recently used out first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::RecordBatch;
use lakehouse_core::Version;
use parking_lot::Mutex;

use crate::engine::QueryEngine;

/// What identifies a cached result.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    /// The optimized logical plan, printed.
    pub(crate) plan: Arc<str>,
    /// `(table, registration, version)` of every table the plan reads, sorted by
    /// table. The registration tells apart tables registered under one name one after
    /// the other, whose versions may be equal.
    pub(crate) versions: Vec<(Arc<str>, u64, u64)>,
}

impl CacheKey {
    /// The key of `plan` over the tables at `versions`, registered as `registrations`
    /// (in the same order; a table without versions counts as version `u64::MAX`; such
    /// plans are not cached).
    pub(crate) fn new(
        plan: Arc<str>,
        versions: &[(Arc<str>, Option<Version>)],
        registrations: &[u64],
    ) -> Self {
        CacheKey {
            plan,
            versions: versions
                .iter()
                .zip(registrations)
                .map(|((t, v), r)| (t.clone(), *r, v.unwrap_or(u64::MAX)))
                .collect(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    batches: Arc<Vec<RecordBatch>>,
    bytes: usize,
    tick: u64,
}

#[derive(Debug, Default)]
struct State {
    map: HashMap<CacheKey, Entry>,
    order: BTreeMap<u64, CacheKey>,
    tick: u64,
    bytes: usize,
}

/// Counters of the result cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResultCacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that ran the query.
    pub misses: u64,
    /// Results currently held.
    pub entries: usize,
    /// Bytes currently held.
    pub bytes: usize,
    /// Results dropped to stay under the byte bound.
    pub evictions: u64,
}

#[derive(Debug)]
pub(crate) struct ResultCache {
    max_bytes: usize,
    state: Mutex<State>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

impl ResultCache {
    pub(crate) fn new(max_bytes: usize) -> Self {
        ResultCache {
            max_bytes,
            state: Mutex::new(State::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    pub(crate) fn get(&self, key: &CacheKey) -> Option<Arc<Vec<RecordBatch>>> {
        let mut state = self.state.lock();
        let state = &mut *state;
        state.tick += 1;
        let tick = state.tick;
        match state.map.get_mut(key) {
            Some(entry) => {
                state.order.remove(&entry.tick);
                entry.tick = tick;
                state.order.insert(tick, key.clone());
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(entry.batches.clone())
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Caches `batches`; results larger than an eighth of the bound are not kept.
    pub(crate) fn insert(&self, key: CacheKey, batches: Arc<Vec<RecordBatch>>) {
        let bytes: usize = batches
            .iter()
            .map(|b| b.get_array_memory_size())
            .sum::<usize>()
            + key.plan.len()
            + 64;
        if bytes > self.max_bytes / 8 {
            return;
        }
        let mut state = self.state.lock();
        let state = &mut *state;
        state.tick += 1;
        let tick = state.tick;
        if let Some(old) = state.map.remove(&key) {
            state.order.remove(&old.tick);
            state.bytes -= old.bytes;
        }
        while state.bytes + bytes > self.max_bytes {
            let Some((_, victim)) = state.order.pop_first() else {
                break;
            };
            if let Some(old) = state.map.remove(&victim) {
                state.bytes -= old.bytes;
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        state.order.insert(tick, key.clone());
        state.bytes += bytes;
        state.map.insert(
            key,
            Entry {
                batches,
                bytes,
                tick,
            },
        );
    }

    pub(crate) fn clear(&self) {
        let mut state = self.state.lock();
        state.map.clear();
        state.order.clear();
        state.bytes = 0;
    }

    pub(crate) fn stats(&self) -> ResultCacheStats {
        let state = self.state.lock();
        ResultCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries: state.map.len(),
            bytes: state.bytes,
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

impl QueryEngine {
    /// Counters of the result cache.
    pub fn result_cache_stats(&self) -> ResultCacheStats {
        self.inner.results.stats()
    }

    /// Empties the result cache.
    pub fn clear_result_cache(&self) {
        self.inner.results.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;

    fn batch(n: usize) -> Arc<Vec<RecordBatch>> {
        let a = Int64Array::from_iter_values(0..n as i64);
        Arc::new(vec![
            RecordBatch::try_from_iter([("a", Arc::new(a) as _)]).expect("one valid column"),
        ])
    }

    fn key(plan: &str, v: u64) -> CacheKey {
        CacheKey {
            plan: Arc::from(plan),
            versions: vec![(Arc::from("t"), 1, v)],
        }
    }

    #[test]
    fn evicts_least_recently_used_to_stay_in_bounds() {
        let one = batch(1000)
            .iter()
            .map(|b| b.get_array_memory_size())
            .sum::<usize>()
            + 100;
        let cache = ResultCache::new(one * 8 * 3);
        for i in 0..3 {
            cache.insert(key(&format!("q{i}"), 1), batch(1000));
        }
        assert!(cache.get(&key("q0", 1)).is_some());
        for i in 3..30 {
            cache.insert(key(&format!("q{i}"), 1), batch(1000));
        }
        let stats = cache.stats();
        assert!(stats.bytes <= one * 8 * 3, "{stats:?}");
        assert!(stats.evictions > 0);
        assert!(cache.get(&key("q1", 1)).is_none());
        assert!(cache.get(&key("q29", 1)).is_some());
        // A new version of the table is a different key.
        assert!(cache.get(&key("q29", 2)).is_none());
    }

    #[test]
    fn refuses_results_too_large_for_the_bound() {
        let cache = ResultCache::new(1024);
        cache.insert(key("big", 1), batch(10_000));
        assert_eq!(cache.stats().entries, 0);
    }
}
