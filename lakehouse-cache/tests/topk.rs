use std::collections::HashMap;
use std::sync::Arc;
use std::thread;

use lakehouse_cache::{GroupedTopK, SpaceSaving, TopK};
use lakehouse_core::SystemClock;
use proptest::prelude::*;

#[test]
fn concurrent_updates_lose_no_weight() {
    let t = TopK::new(10_000, 8, Arc::new(SystemClock));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let t = t.clone();
            thread::spawn(move || {
                for i in 0..50_000u64 {
                    t.record(i % 100, 1.0);
                }
            })
        })
        .collect();
    for h in threads {
        h.join().unwrap();
    }
    let top = t.top(100);
    assert_eq!(top.len(), 100);
    for h in top {
        assert_eq!(h.estimate, 2_000.0, "key {} lost updates", h.key);
        assert_eq!(h.error, 0.0);
    }
}

#[test]
fn top_sellers_per_group() {
    let g = GroupedTopK::new(64, None, Arc::new(SystemClock));
    for i in 0..100u64 {
        g.record(&("toys", "eu"), i % 5, (i % 5 + 1) as f64);
        g.record(&("books", "us"), 100 + i % 3, 1.0);
    }
    assert_eq!(g.top(&("toys", "eu"), 1)[0].key, 4);
    assert_eq!(g.top(&("books", "us"), 3).len(), 3);
    assert!(g.top(&("garden", "eu"), 3).is_empty());
    assert_eq!(g.groups().len(), 2);
}

proptest! {
    /// The Space-Saving guarantees: estimates bound the truth from above within
    /// `error`, errors stay within total / capacity, every item heavier than that is
    /// held, and merging keeps the same guarantees over the union.
    #[test]
    fn space_saving_bounds_hold(
        a in prop::collection::vec(0u32..60, 0..600),
        b in prop::collection::vec(0u32..60, 0..600),
        capacity in 1usize..24,
    ) {
        let mut sa = SpaceSaving::new(capacity);
        let mut sb = SpaceSaving::new(capacity);
        let mut truth: HashMap<u32, f64> = HashMap::new();
        for &k in &a { sa.update(k, 1.0); *truth.entry(k).or_default() += 1.0; }
        for &k in &b { sb.update(k, 1.0); *truth.entry(k).or_default() += 1.0; }
        sa.merge(&sb);
        let total = (a.len() + b.len()) as f64;
        let bound = total / capacity as f64 + 1e-9;
        let held = sa.top_k(capacity);
        for h in &held {
            let t = truth[&h.key];
            prop_assert!(h.estimate + 1e-9 >= t, "estimate {} below truth {}", h.estimate, t);
            prop_assert!(h.guaranteed() <= t + 1e-9);
            prop_assert!(h.error <= 2.0 * bound, "error {} over bound {}", h.error, bound);
        }
        for (k, t) in &truth {
            if *t > 2.0 * bound {
                prop_assert!(held.iter().any(|h| h.key == *k), "heavy key {} ({}) missing", k, t);
            }
        }
    }
}
