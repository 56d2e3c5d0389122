//! One shard of a [`Cache`](crate::Cache): a hash table of slots and S3-FIFO eviction
//! (a small probationary queue, a main queue and a ghost list of recently evicted
//! keys), which keeps one-hit wonders and scans from flushing popular entries.
//!
//! The small queue's share adapts to the workload the way ARC's split does: a second
//! ghost list remembers keys evicted from the main queue. A key that comes back after
//! leaving the small queue says that the small queue was too short to see its second
//! read, and grows the small queue's target; one that comes back after leaving the main
//! queue says the main queue was too short, and shrinks it. When the popular keys
//! change, new favourites then get more time on probation and the old ones leave the
//! shrunken main queue sooner; on a stable skewed workload the main queue keeps most of
//! the room. Both kinds of returning keys go straight to the main queue.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::entry::RemovalCause;

/// One entry.
pub(crate) struct Slot<K, V> {
    pub(crate) key: K,
    pub(crate) value: V,
    hash: u64,
    weight: u64,
    /// S3-FIFO access frequency, saturating at 3.
    freq: AtomicU8,
    in_main: bool,
    /// Absolute expiry in clock microseconds (`i64::MAX`: never).
    pub(crate) expires_at: i64,
    /// Last read, for time to idle (only maintained when the cache has one).
    pub(crate) last_access: AtomicI64,
    pub(crate) tags: Box<[Arc<str>]>,
}

impl<K, V> Slot<K, V> {
    /// A new entry, not yet read, inserted at `now`.
    pub(crate) fn new(
        key: K,
        value: V,
        hash: u64,
        weight: u64,
        expires_at: i64,
        now: i64,
        tags: Box<[Arc<str>]>,
    ) -> Self {
        Slot {
            key,
            value,
            hash,
            weight,
            freq: AtomicU8::new(0),
            in_main: false,
            expires_at,
            last_access: AtomicI64::new(now),
            tags,
        }
    }

    /// Counts a read for S3-FIFO. Reads hold only the shard's read lock, hence the
    /// atomic; a lost increment between racing readers is harmless.
    pub(crate) fn mark_read(&self) {
        let f = self.freq.load(Ordering::Relaxed);
        if f < 3 {
            self.freq.store(f + 1, Ordering::Relaxed);
        }
    }
}

/// The entries of one shard, at most `capacity` in total weight.
pub(crate) struct Shard<K, V> {
    table: HashTable<u32>,
    slots: Vec<Option<Slot<K, V>>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    small: VecDeque<(u32, u32)>,
    main: VecDeque<(u32, u32)>,
    ghost: VecDeque<u64>,
    ghost_set: hashbrown::HashSet<u64>,
    /// Hashes of keys recently evicted from the main queue.
    main_ghost: VecDeque<u64>,
    main_ghost_set: hashbrown::HashSet<u64>,
    /// The weight the small queue may hold before it is evicted from: between
    /// [`SMALL_MIN`] and [`SMALL_MAX`] of the capacity, adapted by ghost hits.
    small_target: f64,
    small_weight: u64,
    weight: u64,
    capacity: u64,
}

/// The small queue's initial share of a shard's capacity (S3-FIFO's 10 %).
const SMALL_START: f64 = 0.10;
/// The least share the small queue adapts down to.
const SMALL_MIN: f64 = 0.01;
/// The largest share the small queue adapts up to. When the popular keys keep
/// changing, the target sits at this ceiling: three quarters gave fewer misses on the
/// bench's shifting trace than a half or nine tenths, and no more on the stable ones.
const SMALL_MAX: f64 = 0.75;
/// How far one ghost hit moves the small queue's target, in weights of the entry
/// inserted (times the ratio of the two ghost lists, when that is above 1, as in ARC).
const ADAPT_STEP: f64 = 2.0;

/// Pushes `hash` to a ghost list that remembers about as many keys as the shard holds.
fn remember(ghost: &mut VecDeque<u64>, set: &mut hashbrown::HashSet<u64>, hash: u64, held: usize) {
    if set.insert(hash) {
        ghost.push_back(hash);
    }
    let limit = held.max(16);
    while ghost.len() > limit {
        if let Some(old) = ghost.pop_front() {
            set.remove(&old);
        }
    }
}

impl<K, V> Shard<K, V> {
    pub(crate) fn new(capacity: u64) -> Self {
        Shard {
            table: HashTable::new(),
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            small: VecDeque::new(),
            main: VecDeque::new(),
            ghost: VecDeque::new(),
            ghost_set: hashbrown::HashSet::new(),
            main_ghost: VecDeque::new(),
            main_ghost_set: hashbrown::HashSet::new(),
            small_target: capacity as f64 * SMALL_START,
            small_weight: 0,
            weight: 0,
            capacity,
        }
    }

    /// Number of entries held.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Total weight held.
    pub(crate) fn weight(&self) -> u64 {
        self.weight
    }

    /// Entries of the eviction queues and the ghost list, live or dead: what the shard
    /// keeps besides its entries.
    #[cfg(test)]
    pub(crate) fn bookkeeping(&self) -> usize {
        self.small.len()
            + self.main.len()
            + self.ghost.len()
            + self.main_ghost.len()
            + self.slots.len()
    }

    /// The slot index of `key`, if held.
    pub(crate) fn find(&self, hash: u64, key: &K) -> Option<u32>
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

    /// The generation of slot `idx`: it changes whenever the slot is emptied, so that
    /// an index remembered under a read lock can be checked under the write lock.
    pub(crate) fn generation(&self, idx: u32) -> u32 {
        self.generations[idx as usize]
    }

    pub(crate) fn slot(&self, idx: u32) -> &Slot<K, V> {
        self.slots[idx as usize]
            .as_ref()
            .expect("the table only holds indices of occupied slots")
    }

    /// Removes the slot at `idx` from the table and returns it.
    pub(crate) fn take(&mut self, idx: u32) -> Slot<K, V> {
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
        self.compact_queues();
        slot
    }

    /// Drops the queue entries of removed slots once they outnumber the live ones.
    /// Eviction skips such entries, but a shard that never fills does not evict: without
    /// this, overwrites and invalidations would grow the queues without bound. Each
    /// compaction halves the queues at least, so its cost is spread over the removals
    /// that made it necessary.
    fn compact_queues(&mut self) {
        let queued = self.small.len() + self.main.len();
        if queued <= 2 * self.table.len() + 32 {
            return;
        }
        let (slots, generations) = (&self.slots, &self.generations);
        let live = |&(idx, generation): &(u32, u32)| {
            generations[idx as usize] == generation && slots[idx as usize].is_some()
        };
        self.small.retain(live);
        self.main.retain(live);
        self.small.shrink_to(self.small.len() * 2);
        self.main.shrink_to(self.main.len() * 2);
    }

    /// Moves the small queue's target after a returning key of `weight`: up when it had
    /// left the small queue, down when it had left the main queue.
    fn adapt(&mut self, small_ghost_hit: bool, main_ghost_hit: bool, weight: u64) {
        let (small, main) = (
            self.ghost.len().max(1) as f64,
            self.main_ghost.len().max(1) as f64,
        );
        let capacity = self.capacity as f64;
        let step = ADAPT_STEP * weight as f64;
        if small_ghost_hit {
            self.small_target =
                (self.small_target + step * (main / small).max(1.0)).min(SMALL_MAX * capacity);
        }
        if main_ghost_hit {
            self.small_target =
                (self.small_target - step * (small / main).max(1.0)).max(SMALL_MIN * capacity);
        }
    }

    /// Evicts one entry by S3-FIFO; `None` when the shard is empty.
    fn evict_one(&mut self) -> Option<Slot<K, V>> {
        loop {
            let from_small = !self.small.is_empty()
                && (self.small_weight as f64 > self.small_target.max(1.0) || self.main.is_empty());
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
                remember(
                    &mut self.ghost,
                    &mut self.ghost_set,
                    slot.hash,
                    self.table.len(),
                );
                return Some(slot);
            }
            if freq > 0 {
                self.slot(idx).freq.store(freq - 1, Ordering::Relaxed);
                self.main.push_back((idx, generation));
                continue;
            }
            let slot = self.take(idx);
            remember(
                &mut self.main_ghost,
                &mut self.main_ghost_set,
                slot.hash,
                self.table.len(),
            );
            return Some(slot);
        }
    }

    /// Removes slot `idx` if it still holds the entry of `generation`.
    pub(crate) fn take_current(&mut self, idx: u32, generation: u32) -> Option<Slot<K, V>> {
        if self.generations[idx as usize] == generation && self.slots[idx as usize].is_some() {
            Some(self.take(idx))
        } else {
            None
        }
    }

    /// Removes every entry `doomed` selects.
    pub(crate) fn take_where(&mut self, doomed: impl Fn(&Slot<K, V>) -> bool) -> Vec<Slot<K, V>> {
        let picked: Vec<u32> = (0..self.slots.len() as u32)
            .filter(|&i| self.slots[i as usize].as_ref().is_some_and(&doomed))
            .collect();
        picked.into_iter().map(|i| self.take(i)).collect()
    }

    /// Inserts `slot`, replacing the entry of the same key and evicting by S3-FIFO
    /// until it fits; every entry that leaves is pushed to `removed`. The caller checked
    /// that `slot` weighs no more than the shard's capacity.
    pub(crate) fn insert(&mut self, mut slot: Slot<K, V>, removed: &mut Vec<(K, V, RemovalCause)>)
    where
        K: Eq,
    {
        let (hash, weight) = (slot.hash, slot.weight);
        // A replaced entry keeps its place in the eviction order.
        let mut replaced_in_main = false;
        if let Some(idx) = self.find(hash, &slot.key) {
            let old = self.take(idx);
            replaced_in_main = old.in_main;
            *slot.freq.get_mut() = old.freq.load(Ordering::Relaxed);
            removed.push((old.key, old.value, RemovalCause::Replaced));
        }
        // Make room first, so that the weight sum never exceeds the capacity
        // (`weight <= capacity` was checked by the caller).
        while self.weight > self.capacity - weight {
            match self.evict_one() {
                Some(evicted) => removed.push((evicted.key, evicted.value, RemovalCause::Size)),
                None => break,
            }
        }
        let small_ghost_hit = self.ghost_set.remove(&hash);
        let main_ghost_hit = self.main_ghost_set.remove(&hash);
        self.adapt(small_ghost_hit, main_ghost_hit, weight);
        let in_main = small_ghost_hit || main_ghost_hit || replaced_in_main;
        slot.in_main = in_main;
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.generations.push(0);
                u32::try_from(self.slots.len() - 1).expect("a shard holds fewer than 2^32 entries")
            }
        };
        let generation = self.generations[idx as usize];
        self.slots[idx as usize] = Some(slot);
        let slots = &self.slots;
        match self.table.entry(
            hash,
            |&i| i == idx,
            |&i| slots[i as usize].as_ref().map_or(0, |s| s.hash),
        ) {
            Entry::Occupied(_) => {}
            Entry::Vacant(v) => {
                v.insert(idx);
            }
        }
        self.weight += weight;
        if in_main {
            self.main.push_back((idx, generation));
        } else {
            self.small_weight += weight;
            self.small.push_back((idx, generation));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Cache;

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
}
