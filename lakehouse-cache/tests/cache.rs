use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use lakehouse_cache::{Cache, ErrorKind, RemovalCause};
use parking_lot::Mutex;
use proptest::prelude::*;

#[test]
fn memory_stays_bounded_at_ten_times_capacity() {
    let evicted = Arc::new(AtomicU64::new(0));
    let e = evicted.clone();
    let cache: Cache<u64, Vec<u8>> = Cache::builder()
        .max_weight(100_000, |_, v: &Vec<u8>| v.len() as u64)
        .eviction_listener(move |_, _, cause| {
            if cause == RemovalCause::Size {
                e.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build()
        .unwrap();
    for k in 0..10_000u64 {
        cache.insert(k, vec![0u8; 100]).unwrap();
    }
    assert!(
        cache.weight() <= 100_000,
        "weight {} over capacity",
        cache.weight()
    );
    let stats = cache.stats();
    assert_eq!(stats.entries, cache.entry_count());
    assert!(stats.entries <= 1_000);
    assert_eq!(evicted.load(Ordering::Relaxed), 10_000 - stats.entries);
    assert_eq!(stats.evictions, 10_000 - stats.entries);
}

#[test]
fn overweight_entries_are_rejected_and_change_nothing() {
    let cache: Cache<u64, Vec<u8>> = Cache::builder()
        .max_weight(1_000, |_, v: &Vec<u8>| v.len() as u64)
        .shards(1)
        .build()
        .unwrap();
    cache.insert(1, vec![0; 10]).unwrap();
    let err = cache.insert(2, vec![0; 1_001]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RecordTooLarge);
    assert!(err.to_string().contains("1001"), "{err}");
    assert_eq!(cache.get(&1), Some(vec![0; 10]));
    assert_eq!(cache.get(&2), None);
    let cache: Cache<u64, u64> = Cache::builder()
        .max_weight(u64::MAX, |_, v: &u64| *v)
        .shards(1)
        .build()
        .unwrap();
    cache.insert(1, u64::MAX).unwrap();
    cache.insert(2, u64::MAX).unwrap();
    assert_eq!(cache.weight(), u64::MAX);
    assert_eq!(
        cache.entry_count(),
        1,
        "two maximal weights do not both fit"
    );
}

#[test]
fn bad_configuration_is_a_typed_error() {
    assert_eq!(
        Cache::<u64, u64>::new(0).unwrap_err().kind(),
        ErrorKind::InvalidConfig
    );
    assert_eq!(
        Cache::<u64, u64>::builder().build().unwrap_err().kind(),
        ErrorKind::InvalidConfig
    );
    assert_eq!(
        Cache::<u64, u64>::builder()
            .max_entries(10)
            .shards(0)
            .build()
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidConfig
    );
}

#[test]
fn invalidation_by_key_prefix_tag_and_predicate() {
    let removed = Arc::new(Mutex::new(Vec::new()));
    let r = removed.clone();
    let cache: Cache<String, u32> = Cache::builder()
        .max_entries(1_000)
        .eviction_listener(move |k: &String, _, cause| r.lock().push((k.clone(), cause)))
        .build()
        .unwrap();
    for i in 0..10 {
        cache.insert(format!("user:{i}"), i).unwrap();
        cache
            .insert_with(
                format!("item:{i}"),
                i,
                lakehouse_cache::EntryOptions::new().tag(if i % 2 == 0 { "even" } else { "odd" }),
            )
            .unwrap();
    }
    assert_eq!(cache.invalidate(&"user:3".to_string()), Some(3));
    assert_eq!(cache.invalidate(&"user:3".to_string()), None);
    assert_eq!(cache.invalidate_prefix("user:"), 9);
    assert_eq!(cache.invalidate_tag("even"), 5);
    assert_eq!(cache.invalidate_if(|_, v| *v == 9), 1);
    let mut left: Vec<u32> = (0..10)
        .filter_map(|i| cache.get(&format!("item:{i}")))
        .collect();
    left.sort_unstable();
    assert_eq!(left, vec![1, 3, 5, 7]);
    cache.insert("item:1".into(), 100).unwrap();
    let removed = removed.lock();
    assert_eq!(
        removed
            .iter()
            .filter(|(_, c)| *c == RemovalCause::Explicit)
            .count(),
        16
    );
    assert_eq!(
        removed.last(),
        Some(&("item:1".to_string(), RemovalCause::Replaced))
    );
    assert_eq!(cache.stats().invalidations, 16);
}

#[test]
fn concurrent_inserts_and_reads_lose_nothing() {
    let cache: Cache<u64, u64> = Cache::builder().max_entries(1 << 20).build().unwrap();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let c = cache.clone();
            thread::spawn(move || {
                for i in 0..20_000u64 {
                    let k = t * 1_000_000 + i;
                    c.insert(k, k * 2).unwrap();
                    assert_eq!(c.get(&k), Some(k * 2));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = cache.stats();
    assert_eq!(s.entries, 80_000);
    assert_eq!(s.hits, 80_000, "every read of a fresh insert hits");
    assert_eq!(s.inserts, 80_000);
    for t in 0..4u64 {
        for i in (0..20_000u64).step_by(997) {
            let k = t * 1_000_000 + i;
            assert_eq!(cache.get(&k), Some(k * 2));
        }
    }
}

proptest! {
    /// Against a model map with unbounded capacity: whatever is read is what was last
    /// written, and the cache never exceeds its capacity.
    #[test]
    fn reads_return_the_last_write(ops in prop::collection::vec((0u8..3, 0u16..64, any::<u32>()), 1..400)) {
        let cache: Cache<u16, u32> = Cache::builder().max_entries(32).shards(2).build().unwrap();
        let mut model = std::collections::HashMap::new();
        for (op, k, v) in ops {
            match op {
                0 => { cache.insert(k, v).unwrap(); model.insert(k, v); }
                1 => { if let Some(got) = cache.get(&k) { prop_assert_eq!(Some(&got), model.get(&k)); } }
                _ => { cache.invalidate(&k); model.remove(&k); }
            }
            prop_assert!(cache.entry_count() <= 32);
        }
    }
}
