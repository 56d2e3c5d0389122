//! A product-page cache with read-through loading, trending items with a half-life and
//! top sellers per category, on a skewed click stream.
//!
//! ```text
//! cargo run --release -p lakehouse-examples --example cache_trending
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lakehouse_cache::{Cache, GroupedTopK, TopK};
use lakehouse_core::SystemClock;

const CATEGORIES: [&str; 4] = ["toys", "books", "garden", "kitchen"];

/// A deterministic skewed item picker: item `i` is roughly twice as likely as `2 i`.
fn pick(state: &mut u64, items: u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let u = (*state >> 11) as f64 / (1u64 << 53) as f64;
    ((items as f64).powf(u) as u64).min(items - 1)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let items = 100_000u64;
    let clicks = 2_000_000u64;
    let loads = Arc::new(AtomicU64::new(0));
    let pages: Cache<u64, Arc<str>> = Cache::builder()
        .max_weight(8 << 20, |_, page: &Arc<str>| page.len() as u64 + 16)
        .time_to_live(Duration::from_secs(60))
        .build()?;
    let trending = TopK::trending(4096, 8, Duration::from_secs(600), Arc::new(SystemClock));
    let sellers = GroupedTopK::new(1024, None, Arc::new(SystemClock));

    let started = Instant::now();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for n in 0..clicks {
        let item = pick(&mut rng, items);
        let counter = loads.clone();
        // Render the page from the "database" only on a miss.
        let page = pages.get_or_load(item, move |id| {
            counter.fetch_add(1, Ordering::Relaxed);
            Ok::<_, std::io::Error>(Arc::from(format!(
                "<h1>item {id}</h1><p>{}</p>",
                "x".repeat(200)
            )))
        })?;
        std::hint::black_box(page);
        trending.record(item, 1.0);
        if n % 10 == 0 {
            sellers.record(&CATEGORIES[(item % 4) as usize], item, 1.0);
        }
    }
    let took = started.elapsed();
    let stats = pages.stats();
    println!(
        "clicks              {clicks} in {took:.2?} ({:.1} M/s)",
        clicks as f64 / took.as_secs_f64() / 1e6
    );
    println!(
        "page cache          hit ratio {:.3}, {} entries, {} KiB, {} loads, {} evictions",
        stats.hit_ratio(),
        stats.entries,
        stats.weight / 1024,
        loads.load(Ordering::Relaxed),
        stats.evictions
    );
    let top: Vec<String> = trending
        .top(5)
        .iter()
        .map(|h| format!("{} (~{:.0})", h.key, h.estimate))
        .collect();
    println!("trending now        {}", top.join(", "));
    for category in CATEGORIES {
        let best: Vec<String> = sellers
            .top(&category, 3)
            .iter()
            .map(|h| h.key.to_string())
            .collect();
        println!("top sellers {category:<8}{}", best.join(", "));
    }
    if stats.hits + stats.misses != clicks || trending.top(1).is_empty() {
        return Err("the cache did not see every click".into());
    }
    Ok(())
}
