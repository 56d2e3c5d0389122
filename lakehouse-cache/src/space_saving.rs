//! [`SpaceSaving`]: the heavy-hitter summary behind [`TopK`](crate::TopK).
//!
//! It is the Space-Saving summary (Metwally, Agrawal, El Abbadi 2005) with optional
//! exponential time decay. With `capacity` counters over a stream of total weight `N`:
//!
//! * every item whose weight exceeds `N / capacity` is held;
//! * a held item's estimate overestimates its true weight by at most its `error`, and
//!   `error <= N / capacity`.
//!
//! Summaries merge (the combined summary keeps the same bounds over the union of the
//! streams), so threads can count locally and merge when asked.

use std::fmt;
use std::hash::Hash;
use std::time::Duration;

use hashbrown::HashMap;

/// One entry of a top-k answer.
#[derive(Debug, Clone, PartialEq)]
pub struct HeavyHitter<K> {
    /// The item.
    pub key: K,
    /// Estimated (decayed) weight: at least the true weight, at most `error` more.
    pub estimate: f64,
    /// Upper bound on the overestimate.
    pub error: f64,
}

impl<K> HeavyHitter<K> {
    /// A lower bound on the true weight.
    pub fn guaranteed(&self) -> f64 {
        self.estimate - self.error
    }
}

#[derive(Debug, Clone)]
struct Counter<K> {
    key: K,
    count: f64,
    error: f64,
}

/// A Space-Saving summary of a weighted stream, optionally with exponential decay.
///
/// Not synchronised: use one per thread and [`merge`](Self::merge), or use [`TopK`](crate::TopK).
#[derive(Clone)]
pub struct SpaceSaving<K> {
    capacity: usize,
    /// The counters; a counter keeps its slot until a merge rebuilds the summary.
    counters: Vec<Counter<K>>,
    /// Key -> slot.
    index: HashMap<K, usize>,
    /// Slots in a min-heap on their count: moving a counter in the heap touches only
    /// `heap` and `pos`, never the keys.
    heap: Vec<usize>,
    /// Slot -> its place in `heap`.
    pos: Vec<usize>,
    total: f64,
    /// Decay rate per microsecond (`ln 2 / half-life`), 0 without decay.
    lambda: f64,
    /// Counts are stored scaled by `exp(lambda * (t - landmark))`.
    landmark: i64,
}

impl<K> fmt::Debug for SpaceSaving<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpaceSaving")
            .field("capacity", &self.capacity)
            .field("held", &self.counters.len())
            .field("total", &self.total)
            .finish()
    }
}

impl<K: Hash + Eq + Clone> SpaceSaving<K> {
    /// A summary with `capacity` counters (at least 1) and no decay.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        SpaceSaving {
            capacity,
            counters: Vec::with_capacity(capacity),
            index: HashMap::with_capacity(capacity),
            heap: Vec::with_capacity(capacity),
            pos: Vec::with_capacity(capacity),
            total: 0.0,
            lambda: 0.0,
            landmark: 0,
        }
    }

    /// A summary whose weights halve every `half_life`; timestamps are microseconds
    /// (see [`update_at`](Self::update_at)).
    pub fn with_half_life(capacity: usize, half_life: Duration) -> Self {
        let mut s = Self::new(capacity);
        let micros = half_life.as_micros().max(1) as f64;
        s.lambda = std::f64::consts::LN_2 / micros;
        s
    }

    /// Number of counters.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Total (scaled) weight seen.
    pub fn total(&self) -> f64 {
        self.total
    }

    /// Adds `weight` to `key` (no decay, or at the landmark time).
    pub fn update(&mut self, key: K, weight: f64) {
        self.add(key, weight);
    }

    /// Adds `weight` to `key` at time `now` (microseconds); weights decay from then.
    pub fn update_at(&mut self, key: K, weight: f64, now: i64) {
        if self.lambda == 0.0 {
            return self.add(key, weight);
        }
        let mut exponent = self.lambda * (now - self.landmark) as f64;
        if exponent > 40.0 {
            self.rescale(now);
            exponent = 0.0;
        }
        self.add(key, weight * exponent.exp());
    }

    /// Moves the landmark to `now`, shrinking every stored count.
    fn rescale(&mut self, now: i64) {
        let factor = (-self.lambda * (now - self.landmark) as f64).exp();
        for c in &mut self.counters {
            c.count *= factor;
            c.error *= factor;
        }
        self.total *= factor;
        self.landmark = now;
    }

    fn add(&mut self, key: K, weight: f64) {
        if !(weight.is_finite() && weight > 0.0) {
            return;
        }
        self.total += weight;
        if let Some(&slot) = self.index.get(&key) {
            self.counters[slot].count += weight;
            self.sift_down(self.pos[slot]);
            return;
        }
        if self.counters.len() < self.capacity {
            self.push(key, weight, 0.0);
            return;
        }
        // Replace the smallest counter: the newcomer inherits its count as error.
        let slot = self.heap[0];
        let min = self.counters[slot].count;
        let old = std::mem::replace(
            &mut self.counters[slot],
            Counter {
                key: key.clone(),
                count: min + weight,
                error: min,
            },
        );
        self.index.remove(&old.key);
        self.index.insert(key, slot);
        self.sift_down(0);
    }

    /// Adds a counter in a new slot (the summary must have room).
    fn push(&mut self, key: K, count: f64, error: f64) {
        let slot = self.counters.len();
        self.counters.push(Counter {
            key: key.clone(),
            count,
            error,
        });
        self.index.insert(key, slot);
        self.heap.push(slot);
        self.pos.push(self.heap.len() - 1);
        self.sift_up(self.heap.len() - 1);
    }

    /// The count at heap place `i`.
    fn count_at(&self, i: usize) -> f64 {
        self.counters[self.heap[i]].count
    }

    /// The smallest count when every counter is taken, else 0 (what an item not held
    /// may have had).
    fn min_count(&self) -> f64 {
        if self.counters.len() < self.capacity {
            0.0
        } else {
            self.heap
                .first()
                .map_or(0.0, |&slot| self.counters[slot].count)
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.pos[self.heap[a]] = a;
        self.pos[self.heap[b]] = b;
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.count_at(i) < self.count_at(parent) {
                self.swap(i, parent);
                i = parent;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut smallest = i;
            if l < n && self.count_at(l) < self.count_at(smallest) {
                smallest = l;
            }
            if r < n && self.count_at(r) < self.count_at(smallest) {
                smallest = r;
            }
            if smallest == i {
                break;
            }
            self.swap(i, smallest);
            i = smallest;
        }
    }

    /// Scale factor from stored counts to values at time `now`.
    fn scale_at(&self, now: Option<i64>) -> f64 {
        match now {
            Some(t) if self.lambda != 0.0 => (-self.lambda * (t - self.landmark) as f64).exp(),
            _ => 1.0,
        }
    }

    /// The estimate of `key` (0 if not held).
    pub fn estimate(&self, key: &K) -> f64 {
        self.index
            .get(key)
            .map_or(0.0, |&slot| self.counters[slot].count)
    }

    /// The `k` heaviest items, heaviest first (ties by insertion position).
    pub fn top_k(&self, k: usize) -> Vec<HeavyHitter<K>> {
        self.top_k_scaled(k, 1.0)
    }

    /// The `k` heaviest items with weights decayed to time `now` (microseconds).
    pub fn top_k_at(&self, k: usize, now: i64) -> Vec<HeavyHitter<K>> {
        self.top_k_scaled(k, self.scale_at(Some(now)))
    }

    fn top_k_scaled(&self, k: usize, scale: f64) -> Vec<HeavyHitter<K>> {
        let mut all: Vec<&Counter<K>> = self.counters.iter().collect();
        let k = k.min(all.len());
        if k == 0 {
            return Vec::new();
        }
        all.select_nth_unstable_by(k - 1, |a, b| b.count.total_cmp(&a.count));
        all.truncate(k);
        all.sort_by(|a, b| b.count.total_cmp(&a.count));
        all.into_iter()
            .map(|c| HeavyHitter {
                key: c.key.clone(),
                estimate: c.count * scale,
                error: c.error * scale,
            })
            .collect()
    }

    /// Folds `other` into this summary. The result bounds the combined stream as if it
    /// had been counted by one summary of this capacity.
    pub fn merge(&mut self, other: &SpaceSaving<K>) {
        let mut other_scale = 1.0;
        if self.lambda != 0.0 || other.lambda != 0.0 {
            // Bring both to the later landmark.
            let landmark = self.landmark.max(other.landmark);
            if self.landmark != landmark {
                self.rescale(landmark);
            }
            other_scale = (-other.lambda * (landmark - other.landmark) as f64).exp();
        }
        let self_min = self.min_count();
        let other_min = other.min_count() * other_scale;
        let mut combined: HashMap<K, (f64, f64)> =
            HashMap::with_capacity(self.counters.len() + other.counters.len());
        for c in self.counters.drain(..) {
            combined.insert(c.key, (c.count + other_min, c.error + other_min));
        }
        for c in &other.counters {
            let (count, error) = (c.count * other_scale, c.error * other_scale);
            match combined.get_mut(&c.key) {
                Some(e) => {
                    // Undo the assumption that `other` did not hold it.
                    e.0 += count - other_min;
                    e.1 += error - other_min;
                }
                None => {
                    combined.insert(c.key.clone(), (count + self_min, error + self_min));
                }
            }
        }
        let mut entries: Vec<(K, (f64, f64))> = combined.into_iter().collect();
        if entries.len() > self.capacity {
            let cap = self.capacity;
            entries.select_nth_unstable_by(cap - 1, |a, b| b.1.0.total_cmp(&a.1.0));
            entries.truncate(cap);
        }
        self.index.clear();
        self.heap.clear();
        self.pos.clear();
        self.total += other.total * other_scale;
        for (key, (count, error)) in entries {
            self.push(key, count, error);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The summary's own structure: the heap orders its slots by count, `pos` and
    /// `index` point back at them, and (with `sums`, before any merge, which adds the
    /// other side's minimum to counts) the counts add up to the weight seen: every
    /// update adds its weight to exactly one counter.
    fn check_structure(s: &SpaceSaving<u32>, sums: bool) -> Result<(), TestCaseError> {
        prop_assert_eq!(s.heap.len(), s.counters.len());
        prop_assert_eq!(s.pos.len(), s.counters.len());
        prop_assert_eq!(s.index.len(), s.counters.len());
        for (i, &slot) in s.heap.iter().enumerate() {
            prop_assert_eq!(s.pos[slot], i);
            if i > 0 {
                prop_assert!(s.count_at((i - 1) / 2) <= s.count_at(i));
            }
        }
        for (slot, c) in s.counters.iter().enumerate() {
            prop_assert_eq!(s.index.get(&c.key), Some(&slot));
        }
        let sum: f64 = s.counters.iter().map(|c| c.count).sum();
        prop_assert!(!sums || (sum - s.total).abs() <= 1e-6 * s.total.max(1.0));
        Ok(())
    }

    proptest! {
        #[test]
        fn updates_and_merges_keep_the_heap_and_its_indexes_consistent(
            a in prop::collection::vec((0u32..40, 1u32..20), 0..400),
            b in prop::collection::vec((0u32..40, 1u32..20), 0..400),
            capacity in 1usize..16,
        ) {
            let mut sa = SpaceSaving::new(capacity);
            let mut sb = SpaceSaving::new(capacity);
            for &(k, w) in &a {
                sa.update(k, f64::from(w));
                check_structure(&sa, true)?;
            }
            for &(k, w) in &b {
                sb.update(k, f64::from(w));
            }
            sa.merge(&sb);
            check_structure(&sa, false)?;
            let min = sa.min_count();
            if sa.counters.len() == capacity {
                prop_assert!(sa.counters.iter().all(|c| c.count >= min));
            }
        }
    }

    #[test]
    fn holds_every_item_above_the_bound() {
        // 5 heavy items of weight 100 among 1000 singletons: N = 1500, and with 20
        // counters every item above 1500 / 20 = 75 is held.
        let mut s = SpaceSaving::new(20);
        for round in 0..100 {
            for h in 0..5u64 {
                s.update(h, 1.0);
            }
            for i in 0..10u64 {
                s.update(1000 + round * 10 + i, 1.0);
            }
        }
        let top = s.top_k(5);
        let mut keys: Vec<u64> = top.iter().map(|h| h.key).collect();
        keys.sort_unstable();
        assert_eq!(keys, vec![0, 1, 2, 3, 4]);
        for h in &top {
            assert!(h.estimate >= 100.0 && h.guaranteed() <= 100.0);
            assert!(h.error <= s.total() / 20.0 + 1e-9);
        }
    }

    #[test]
    fn merge_keeps_the_heavy_items() {
        let mut a = SpaceSaving::new(8);
        let mut b = SpaceSaving::new(8);
        for i in 0..1000u64 {
            a.update(i % 50, 1.0);
            if i % 2 == 0 {
                a.update(7, 3.0);
            }
            b.update(100 + i % 40, 1.0);
            b.update(7, 1.0);
        }
        a.merge(&b);
        let top = a.top_k(1);
        assert_eq!(top[0].key, 7);
        assert!(top[0].estimate >= 1500.0 + 1000.0 + 20.0);
        assert!((a.total() - (1000.0 + 1500.0 + 2000.0)).abs() < 1e-6);
    }
}
