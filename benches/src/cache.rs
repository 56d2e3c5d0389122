//! `lakehouse-bench cache`: hit ratios against moka, quick_cache and LRU
//! (`cache_hit_ratio.rs`), get rate, trending rate and recall.
//!
//! Workload of the rates: Zipf(0.99) over 1 M keys, cache capacity 100 K, 2 threads.

use std::collections::HashMap;
use std::hash::Hash;
use std::hint::black_box;
use std::thread;
use std::time::Instant;

use lakehouse_cache::{Cache, CacheTier, RedisCache, SpaceSaving};
use lakehouse_examples::zipf::{Zipf, scatter};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::report::{BenchResult, Report};

const KEYS: usize = 1_000_000;
const CAPACITY: usize = 100_000;
const THREADS: usize = 2;

/// `len` keys drawn from `zipf`, scattered over the key space so that hot keys are not
/// adjacent.
fn zipf_trace(zipf: &Zipf, len: usize, seed: u64) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len)
        .map(|_| scatter(zipf.rank(rng.random()) as u64, KEYS as u64))
        .collect()
}

/// Gets per second over `trace`, split across `THREADS` threads.
fn get_rate<C: Send + Sync>(
    cache: &C,
    trace: &[u64],
    get: impl Fn(&C, u64) -> bool + Sync,
) -> (f64, f64) {
    let chunk = trace.len().div_ceil(THREADS);
    let start = Instant::now();
    let hits: usize = thread::scope(|s| {
        let handles: Vec<_> = trace
            .chunks(chunk)
            .map(|part| {
                let get = &get;
                s.spawn(move || part.iter().filter(|&&k| get(cache, black_box(k))).count())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    let secs = start.elapsed().as_secs_f64();
    (trace.len() as f64 / secs, hits as f64 / trace.len() as f64)
}

fn exact_top<K: Hash + Eq + Copy + Ord>(trace: &[K], k: usize) -> Vec<K> {
    let mut counts: HashMap<K, u64> = HashMap::new();
    for &x in trace {
        *counts.entry(x).or_default() += 1;
    }
    let mut all: Vec<(K, u64)> = counts.into_iter().collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    all.into_iter().take(k).map(|(key, _)| key).collect()
}

pub(crate) fn run(report: &mut Report) -> BenchResult {
    let zipf = Zipf::new(KEYS, 0.99);
    let gets = report.scale(20_000_000, 4_000_000);
    let trace = zipf_trace(&zipf, gets, 1);

    // Hit ratios against moka, quick_cache and LRU on five traces.
    crate::cache_hit_ratio::run(report)?;

    // Get rate on the hot path: a warmed cache, gets only, 2 threads.
    let ours: Cache<u64, u64> = Cache::builder().max_entries(CAPACITY as u64).build()?;
    for &k in &trace[..2_000_000.min(trace.len())] {
        if ours.get(&k).is_none() {
            ours.insert(k, k)?;
        }
    }
    let (rate, hits) = get_rate(&ours, &trace, |c, k| c.get(&k).is_some());
    report.note(&format!(
        "lakehouse-cache get: hit ratio {hits:.3} on the timed trace"
    ));
    report.metric("cache.get_ops_per_s", rate, "ops/s");

    let moka: moka::sync::Cache<u64, u64> = moka::sync::Cache::new(CAPACITY as u64);
    for &k in &trace[..2_000_000.min(trace.len())] {
        if moka.get(&k).is_none() {
            moka.insert(k, k);
        }
    }
    moka.run_pending_tasks();
    let moka_trace = &trace[..trace.len() / 4];
    let (moka_rate, _) = get_rate(&moka, moka_trace, |c, k| c.get(&k).is_some());
    report.metric("cache.moka_get_ops_per_s", moka_rate, "ops/s");
    report.ratio("cache.get_time_vs_moka", 1.0 / rate, 1.0 / moka_rate);

    let quick: quick_cache::sync::Cache<u64, u64> = quick_cache::sync::Cache::new(CAPACITY);
    for &k in &trace[..2_000_000.min(trace.len())] {
        if quick.get(&k).is_none() {
            quick.insert(k, k);
        }
    }
    let (quick_rate, _) = get_rate(&quick, &trace, |c, k| c.get(&k).is_some());
    report.metric("cache.quick_cache_get_ops_per_s", quick_rate, "ops/s");
    report.ratio(
        "cache.get_time_vs_quick_cache",
        1.0 / rate,
        1.0 / quick_rate,
    );

    // Trending: per-thread Space-Saving summaries merged at the end.
    let updates = report.scale(20_000_000, 4_000_000);
    let stream = zipf_trace(&zipf, updates, 2);
    let chunk = stream.len().div_ceil(THREADS);
    let start = Instant::now();
    let summaries: Vec<SpaceSaving<u64>> = thread::scope(|s| {
        let handles: Vec<_> = stream
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut ss = SpaceSaving::new(4096);
                    for &k in part {
                        ss.update(k, 1.0);
                    }
                    ss
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut merged = SpaceSaving::new(4096);
    for s in &summaries {
        merged.merge(s);
    }
    let secs = start.elapsed().as_secs_f64();
    report.metric(
        "cache.trending_updates_per_s",
        stream.len() as f64 / secs,
        "updates/s",
    );
    let truth = exact_top(&stream, 100);
    let found: Vec<u64> = merged.top_k(100).into_iter().map(|h| h.key).collect();
    let recall = truth.iter().filter(|k| found.contains(k)).count() as f64 / truth.len() as f64;
    report.metric("cache.trending_recall_at_100", recall, "ratio");
    redis_tier(report)?;
    Ok(())
}

/// `redis-benchmark`'s requests per second for `GET` with `pipeline` requests in flight.
fn redis_benchmark(port: u16, n: usize, pipeline: usize) -> Option<f64> {
    let out = std::process::Command::new("redis-benchmark")
        .args(["-p", &port.to_string(), "-t", "get", "-c", "1", "--csv"])
        .args(["-n", &n.to_string(), "-P", &pipeline.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("\"GET\""))?;
    line.split(',').nth(1)?.trim_matches('"').parse().ok()
}

/// The Redis tier against `redis-benchmark` on the same server, one client each.
fn redis_tier(report: &mut Report) -> BenchResult {
    let port = 6391u16;
    let server = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(mut server) = server else {
        report.note("redis-server not found: Redis tier not measured");
        return Ok(());
    };
    let url = format!("redis://127.0.0.1:{port}/");
    // The near cache is bypassed (zero ttl) so that every read is a Redis round trip.
    let cache = RedisCache::builder(&url)
        .near_ttl(std::time::Duration::ZERO)
        .pool_size(1)
        .retry_after(std::time::Duration::from_millis(10))
        .build()?;
    let mut ready = false;
    for _ in 0..100 {
        if cache
            .insert("warm", bytes::Bytes::from_static(b"x"), None)
            .is_ok()
        {
            ready = true;
            break;
        }
        thread::sleep(std::time::Duration::from_millis(20));
    }
    if !ready {
        let _ = server.kill();
        report.note("redis-server did not start: Redis tier not measured");
        return Ok(());
    }
    let n = report.scale(50_000, 10_000);
    let keys: Vec<String> = (0..1000).map(|i| format!("key:{i}")).collect();
    for k in &keys {
        cache.insert(k, bytes::Bytes::from(vec![b'v'; 3]), None)?;
    }
    let start = Instant::now();
    for i in 0..n {
        black_box(cache.get(&keys[i % keys.len()])?);
    }
    let ours = n as f64 / start.elapsed().as_secs_f64();
    let batch: Vec<&str> = keys[..16].iter().map(String::as_str).collect();
    let start = Instant::now();
    for _ in 0..n / 16 {
        black_box(cache.get_many(&batch)?);
    }
    let ours_pipelined = (n / 16 * 16) as f64 / start.elapsed().as_secs_f64();
    report.metric("cache.redis_get_ops_per_s", ours, "ops/s");
    report.metric("cache.redis_mget16_keys_per_s", ours_pipelined, "keys/s");
    match (redis_benchmark(port, n, 1), redis_benchmark(port, n, 16)) {
        (Some(single), Some(pipelined)) => {
            report.metric("cache.redis_benchmark_get_ops_per_s", single, "ops/s");
            report.metric(
                "cache.redis_benchmark_get_p16_ops_per_s",
                pipelined,
                "ops/s",
            );
            report.ratio(
                "cache.redis_get_time_vs_redis_benchmark",
                1.0 / ours,
                1.0 / single,
            );
            report.ratio(
                "cache.redis_mget16_time_vs_redis_benchmark_p16",
                1.0 / ours_pipelined,
                1.0 / pipelined,
            );
        }
        _ => report.note("redis-benchmark not found or failed: no comparison"),
    }
    let errors = cache.stats().backend_errors;
    report.note(&format!(
        "redis tier backend errors during the run: {errors}"
    ));
    let _ = server.kill();
    let _ = server.wait();
    Ok(())
}
