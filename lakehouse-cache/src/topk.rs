//! Heavy hitters: trending items and top sellers with a bounded error.
//!
//! [`TopK`] is the thread-safe form of [`SpaceSaving`]: keys are spread over locked
//! shards by hash, so a key lives in one shard and the shards' answers combine without
//! extra error. [`GroupedTopK`] keeps one `TopK` per group (top sellers per category or
//! region).

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use lakehouse_core::Clock;
use parking_lot::{Mutex, RwLock};

use crate::space_saving::{HeavyHitter, SpaceSaving};

/// A thread-safe heavy-hitter tracker: trending items (with a half-life) or all-time
/// top sellers (without). Cheap to clone: clones share the counters.
///
/// Keys are spread over `shards` locked [`SpaceSaving`] summaries by hash, each with
/// `capacity / shards` counters, so a key is counted in exactly one shard and the
/// Space-Saving bound holds per shard: with `N_s` the weight routed to a shard, every
/// estimate is at most `N_s / (capacity / shards)` too high.
pub struct TopK<K> {
    shards: Arc<[Mutex<SpaceSaving<K>>]>,
    hasher: hashbrown::DefaultHashBuilder,
    clock: Arc<dyn Clock>,
    decaying: bool,
}

impl<K> Clone for TopK<K> {
    fn clone(&self) -> Self {
        TopK {
            shards: self.shards.clone(),
            hasher: self.hasher.clone(),
            clock: self.clock.clone(),
            decaying: self.decaying,
        }
    }
}

impl<K> fmt::Debug for TopK<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopK")
            .field("shards", &self.shards.len())
            .field("decaying", &self.decaying)
            .finish()
    }
}

impl<K: Hash + Eq + Clone + Send> TopK<K> {
    /// All-time heavy hitters with `capacity` counters in total over `shards` shards.
    pub fn new(capacity: usize, shards: usize, clock: Arc<dyn Clock>) -> Self {
        Self::build(capacity, shards, None, clock)
    }

    /// Trending: weights halve every `half_life`, as read from `clock`.
    pub fn trending(
        capacity: usize,
        shards: usize,
        half_life: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::build(capacity, shards, Some(half_life), clock)
    }

    fn build(
        capacity: usize,
        shards: usize,
        half_life: Option<Duration>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let shards = shards.max(1);
        let per = capacity.div_ceil(shards).max(1);
        let make = || match half_life {
            Some(h) => Mutex::new(SpaceSaving::with_half_life(per, h)),
            None => Mutex::new(SpaceSaving::new(per)),
        };
        TopK {
            shards: (0..shards).map(|_| make()).collect(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            clock,
            decaying: half_life.is_some(),
        }
    }

    fn shard(&self, key: &K) -> &Mutex<SpaceSaving<K>> {
        let h = self.hasher.hash_one(key);
        &self.shards[(h % self.shards.len() as u64) as usize]
    }

    /// Adds `weight` to `key` now. Non-positive or non-finite weights are ignored.
    pub fn record(&self, key: K, weight: f64) {
        if self.decaying {
            let now = self.clock.now_micros();
            self.shard(&key).lock().update_at(key, weight, now);
        } else {
            self.shard(&key).lock().update(key, weight);
        }
    }

    /// Adds a locally counted summary (same decay settings) into the shared tracker.
    pub fn record_summary(&self, summary: &SpaceSaving<K>) {
        let now = self.clock.now_micros();
        for hitter in summary.top_k_at(summary.capacity(), now) {
            self.record(hitter.key, hitter.estimate);
        }
    }

    /// The `k` heaviest items now, heaviest first.
    pub fn top(&self, k: usize) -> Vec<HeavyHitter<K>> {
        let now = self.clock.now_micros();
        let mut all: Vec<HeavyHitter<K>> = self
            .shards
            .iter()
            .flat_map(|s| s.lock().top_k_at(k, now))
            .collect();
        all.sort_by(|a, b| b.estimate.total_cmp(&a.estimate));
        all.truncate(k);
        all
    }
}

/// One [`TopK`] per group: top sellers per category, per region, or per both.
pub struct GroupedTopK<G, K> {
    groups: Arc<RwLock<HashMap<G, TopK<K>>>>,
    capacity: usize,
    half_life: Option<Duration>,
    clock: Arc<dyn Clock>,
}

impl<G, K> Clone for GroupedTopK<G, K> {
    fn clone(&self) -> Self {
        GroupedTopK {
            groups: self.groups.clone(),
            capacity: self.capacity,
            half_life: self.half_life,
            clock: self.clock.clone(),
        }
    }
}

impl<G, K> fmt::Debug for GroupedTopK<G, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupedTopK")
            .field("groups", &self.groups.read().len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<G: Hash + Eq + Clone + Send + Sync, K: Hash + Eq + Clone + Send> GroupedTopK<G, K> {
    /// Groups of `capacity` counters each; with `half_life`, weights decay.
    pub fn new(capacity: usize, half_life: Option<Duration>, clock: Arc<dyn Clock>) -> Self {
        GroupedTopK {
            groups: Arc::new(RwLock::new(HashMap::new())),
            capacity,
            half_life,
            clock,
        }
    }

    /// Adds `weight` to `key` within `group`.
    pub fn record(&self, group: &G, key: K, weight: f64) {
        if let Some(t) = self.groups.read().get(group) {
            return t.record(key, weight);
        }
        let tracker = {
            let mut groups = self.groups.write();
            groups
                .entry(group.clone())
                .or_insert_with(|| match self.half_life {
                    Some(h) => TopK::trending(self.capacity, 4, h, self.clock.clone()),
                    None => TopK::new(self.capacity, 4, self.clock.clone()),
                })
                .clone()
        };
        tracker.record(key, weight);
    }

    /// The `k` heaviest items of `group` (empty for an unknown group).
    pub fn top(&self, group: &G, k: usize) -> Vec<HeavyHitter<K>> {
        self.groups
            .read()
            .get(group)
            .map(|t| t.top(k))
            .unwrap_or_default()
    }

    /// The groups seen so far.
    pub fn groups(&self) -> Vec<G> {
        self.groups.read().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use lakehouse_core::ManualClock;

    use super::*;

    #[test]
    fn decay_prefers_recent_items() {
        let clock = ManualClock::at_millis(0);
        let t = TopK::trending(64, 2, Duration::from_secs(60), Arc::new(clock.clone()));
        for _ in 0..100 {
            t.record("old", 1.0);
        }
        clock.advance_millis(10 * 60_000);
        for _ in 0..10 {
            t.record("new", 1.0);
        }
        let top = t.top(2);
        assert_eq!(top[0].key, "new");
        // 100 halved ten times is about 0.098.
        assert!(
            (top[1].estimate - 100.0 / 1024.0).abs() < 1e-6,
            "{}",
            top[1].estimate
        );
    }
}
