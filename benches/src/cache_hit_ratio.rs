//! `lakehouse-bench cache` (and `cache-hit-ratio` alone): hit ratios of this cache,
//! moka (W-TinyLFU), quick_cache (S3-FIFO-like CLOCK-PRO) and LRU on the same traces.
//!
//! Every cache holds 100 K entries of 1 M keys and inserts on every miss; one thread
//! replays the trace, so the figures are deterministic for the seed (moka's and
//! quick_cache's default, sharded `sync` caches, like ours). Traces, 4 M accesses
//! (1 M with `--quick`):
//!
//! * `zipf080`, `zipf099`, `zipf120`: Zipf with exponent 0.8, 0.99 and 1.2;
//! * `scan`: the Zipf 0.99 trace with a never-repeated key after every 4th access;
//! * `shift`: Zipf 0.99 whose popular keys change completely every eighth of the
//!   trace (the ranks map to other keys), as a catalogue's favourites do.
//!
//! `RATIO cache.miss_ratio_vs_best_peer_<trace>` is our miss ratio over the best peer's
//! (below 1: fewer misses); `RATIO cache.miss_ratio_vs_best_peer` is the worst of them.

use std::num::NonZeroUsize;

use lakehouse_cache::Cache;
use lakehouse_examples::zipf::{Zipf, scatter};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::report::{BenchResult, Report};

const KEYS: u64 = 1_000_000;
const CAPACITY: usize = 100_000;
/// Phases of the shifting-popularity trace.
const PHASES: usize = 8;

/// The caches compared, ours first.
const CACHES: [&str; 4] = ["lakehouse", "moka", "quick_cache", "lru"];

/// `len` Zipf(`s`) draws, rank `r` of phase `p` becoming key `scatter(r + p x shift)`.
fn zipf_keys(s: f64, len: usize, seed: u64, phases: usize) -> Vec<u64> {
    let zipf = Zipf::new(KEYS as usize, s);
    let mut rng = StdRng::seed_from_u64(seed);
    let per_phase = len.div_ceil(phases.max(1));
    let shift = KEYS / phases.max(1) as u64;
    (0..len)
        .map(|n| {
            let phase = (n / per_phase) as u64;
            let rank = zipf.rank(rng.random()) as u64;
            scatter((rank + phase * shift) % KEYS, KEYS)
        })
        .collect()
}

/// The traces, by name.
pub(crate) fn traces(len: usize) -> Vec<(&'static str, Vec<u64>)> {
    let base = zipf_keys(0.99, len, 1, 1);
    let mut scan = Vec::with_capacity(len * 5 / 4);
    let mut scan_key = KEYS;
    for (i, &k) in base.iter().enumerate() {
        scan.push(k);
        if i % 4 == 0 {
            scan.push(scan_key);
            scan_key += 1;
        }
    }
    vec![
        ("zipf080", zipf_keys(0.8, len, 3, 1)),
        ("zipf099", base),
        ("zipf120", zipf_keys(1.2, len, 4, 1)),
        ("scan", scan),
        ("shift", zipf_keys(0.99, len, 5, PHASES)),
    ]
}

/// Hits over accesses of a cache that inserts on every miss; `access` says whether
/// the key was a hit.
fn replay(trace: &[u64], mut access: impl FnMut(u64) -> bool) -> f64 {
    let hits = trace.iter().filter(|&&k| access(k)).count();
    hits as f64 / trace.len().max(1) as f64
}

/// The hit ratio of cache `name` on `trace`.
pub(crate) fn hit_ratio(name: &str, trace: &[u64]) -> Result<f64, lakehouse_cache::Error> {
    Ok(match name {
        "lakehouse" => {
            let cache: Cache<u64, u64> = Cache::builder().max_entries(CAPACITY as u64).build()?;
            let mut failed = None;
            let r = replay(trace, |k| {
                if cache.get(&k).is_some() {
                    return true;
                }
                if let Err(e) = cache.insert(k, k) {
                    failed = Some(e);
                }
                false
            });
            return failed.map_or(Ok(r), Err);
        }
        "moka" => {
            let cache: moka::sync::Cache<u64, u64> = moka::sync::Cache::new(CAPACITY as u64);
            replay(trace, |k| {
                if cache.get(&k).is_some() {
                    true
                } else {
                    cache.insert(k, k);
                    false
                }
            })
        }
        "quick_cache" => {
            let cache: quick_cache::sync::Cache<u64, u64> = quick_cache::sync::Cache::new(CAPACITY);
            replay(trace, |k| {
                if cache.get(&k).is_some() {
                    true
                } else {
                    cache.insert(k, k);
                    false
                }
            })
        }
        _ => {
            let mut lru =
                lru::LruCache::new(NonZeroUsize::new(CAPACITY).expect("capacity is positive"));
            replay(trace, |k| {
                if lru.get(&k).is_some() {
                    true
                } else {
                    lru.put(k, k);
                    false
                }
            })
        }
    })
}

pub(crate) fn run(report: &mut Report) -> BenchResult {
    let len = report.scale(4_000_000, 1_000_000);
    let traces = traces(len);
    report.note(&format!(
        "hit ratios: capacity {CAPACITY} of {KEYS} keys, insert on miss, {len} accesses per \
         trace (scan: plus one never-repeated key per 4), one thread"
    ));
    let jobs: Vec<(usize, usize)> = (0..traces.len())
        .flat_map(|t| (0..CACHES.len()).map(move |c| (t, c)))
        .collect();
    let ratios: Vec<f64> = jobs
        .par_iter()
        .map(|&(t, c)| hit_ratio(CACHES[c], &traces[t].1))
        .collect::<Result<_, _>>()?;
    let mut worst = f64::MIN;
    for (t, (trace, _)) in traces.iter().enumerate() {
        let mut hits = [0f64; CACHES.len()];
        hits.copy_from_slice(&ratios[t * CACHES.len()..(t + 1) * CACHES.len()]);
        report.metric(&format!("cache.hit_ratio_{trace}"), hits[0], "ratio");
        for (c, name) in CACHES.iter().enumerate().skip(1) {
            report.metric(&format!("cache.{name}_hit_ratio_{trace}"), hits[c], "ratio");
        }
        let (best, best_hits) = CACHES.iter().zip(hits).skip(1).fold(
            ("", f64::MIN),
            |a, (&n, h)| if h > a.1 { (n, h) } else { a },
        );
        let (ours_miss, peer_miss) = (1.0 - hits[0], 1.0 - best_hits);
        report.note(&format!(
            "{trace}: best peer {best}, {:.2} points {} ours",
            (best_hits - hits[0]).abs() * 100.0,
            if best_hits > hits[0] {
                "above"
            } else {
                "at or below"
            }
        ));
        report.ratio(
            &format!("cache.miss_ratio_vs_best_peer_{trace}"),
            ours_miss,
            peer_miss,
        );
        worst = worst.max(ours_miss / peer_miss.max(f64::MIN_POSITIVE));
        if *trace == "zipf099" {
            report.metric("cache.hit_ratio", hits[0], "ratio");
            report.metric("cache.lru_hit_ratio", hits[3], "ratio");
            report.metric(
                "cache.hit_ratio_gain_vs_lru_points",
                (hits[0] - hits[3]) * 100.0,
                "points",
            );
        }
        if *trace == "scan" {
            report.metric("cache.scan_hit_ratio", hits[0], "ratio");
            report.metric(
                "cache.scan_hit_ratio_gain_vs_lru_points",
                (hits[0] - hits[3]) * 100.0,
                "points",
            );
        }
    }
    report.ratio("cache.miss_ratio_vs_best_peer", worst, 1.0);
    Ok(())
}
