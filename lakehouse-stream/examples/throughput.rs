//! Put and read rates of an in-memory stream, a crossbeam channel moving the same
//! records, and a durable stream's put rate and commit latency: a quick check of the
//! hot paths that builds only this crate's dependencies (the full figures come from
//! `lakehouse-bench stream`).
//!
//! `cargo run --release -p lakehouse-stream --example throughput [records]`

use std::hint::black_box;
use std::thread;
use std::time::Instant;

use bytes::Bytes;
use lakehouse_core::{Position, PutRecord, ReadLimit};
use lakehouse_stream::{Durability, Stream};

const THREADS: usize = 2;

/// CPU seconds (user and system) this process used so far, from `/proc/self/stat`
/// (Linux; 0 elsewhere): on a busy machine, records per CPU second is steadier than
/// records per wall-clock second.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Prints a phase's rate per wall-clock second and per CPU second.
fn report(name: &str, n: usize, wall: Instant, cpu: f64) {
    let wall = wall.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    println!(
        "{name}: {:.2} M/s wall, {:.2} M per CPU-second ({n} records)",
        n as f64 / wall / 1e6,
        n as f64 / cpu.max(0.01) / 1e6
    );
}

fn records(n: usize, payload: &Bytes) -> Vec<PutRecord> {
    let mode = std::env::var("PAYLOAD").unwrap_or_default();
    let mut buf = Bytes::new();
    (0..n)
        .map(|i| {
            let data = match mode.as_str() {
                "batch" => {
                    if i % 500 == 0 {
                        buf = Bytes::from(payload.repeat(500));
                    }
                    let at = (i % 500) * payload.len();
                    buf.slice(at..at + payload.len())
                }
                "record" => Bytes::from_owner(payload.to_vec()),
                _ => payload.clone(),
            };
            PutRecord::new(format!("user-{}", i % 100_000), data)
        })
        .collect()
}

fn batches(n: usize, payload: &Bytes, threads: usize) -> Vec<Vec<Vec<PutRecord>>> {
    (0..threads)
        .map(|_| {
            records(n / threads, payload)
                .chunks(500)
                .map(<[PutRecord]>::to_vec)
                .collect()
        })
        .collect()
}

fn put_batches(stream: &Stream, batches: Vec<Vec<Vec<PutRecord>>>) -> (usize, Vec<f64>) {
    thread::scope(|s| {
        let handles: Vec<_> = batches
            .into_iter()
            .map(|mine| {
                s.spawn(move || {
                    let mut failed = 0;
                    let mut latencies = Vec::with_capacity(mine.len());
                    for b in mine {
                        let t = Instant::now();
                        failed += stream.put_records(b).iter().filter(|r| r.is_err()).count();
                        latencies.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    (failed, latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .fold((0usize, Vec::new()), |(f, mut l), h| {
                let (hf, hl) = h.join().unwrap_or((usize::MAX, Vec::new()));
                l.extend(hl);
                (f.saturating_add(hf), l)
            })
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(4_000_000);
    let only = std::env::args().nth(2).unwrap_or_default();
    let want = |phase: &str| only.is_empty() || only.split(',').any(|p| p == phase);
    let payload = Bytes::from(vec![b'x'; 100]);
    let stream = Stream::builder("bench")
        .shards(8)
        .max_shard_bytes(4 << 30)
        .build()?;

    if want("batched") || want("read") {
        let input = batches(n, &payload, THREADS);
        let (start, cpu) = (Instant::now(), cpu_seconds());
        let (failed, _) = put_batches(&stream, input);
        report("put_batched", n, start, cpu);
        assert_eq!(failed, 0, "batched puts failed");
    }

    if want("single") {
        let single = Stream::builder("single")
            .shards(8)
            .max_shard_bytes(4 << 30)
            .build()?;
        let input: Vec<Vec<PutRecord>> = (0..THREADS)
            .map(|_| records(n / THREADS, &payload))
            .collect();
        let (start, cpu) = (Instant::now(), cpu_seconds());
        thread::scope(|s| {
            for mine in input {
                let single = &single;
                s.spawn(move || {
                    for r in mine {
                        let _ = black_box(single.put_record(r));
                    }
                });
            }
        });
        report("put_single", n, start, cpu);
    }

    if want("read") {
        let shards: Vec<_> = stream.shards().into_iter().map(|s| s.id).collect();
        let (start, cpu) = (Instant::now(), cpu_seconds());
        let read: usize = thread::scope(|s| {
            let handles: Vec<_> = shards
                .chunks(shards.len().div_ceil(THREADS))
                .map(|mine| {
                    let stream = &stream;
                    s.spawn(move || {
                        let mut total = 0;
                        for &shard in mine {
                            let mut pos = Position::TrimHorizon;
                            while let Ok(b) = stream.read_at(shard, pos, ReadLimit::records(10_000))
                            {
                                if b.records.is_empty() {
                                    break;
                                }
                                total += b.records.len();
                                pos = b.next;
                            }
                        }
                        total
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        report("read", read, start, cpu);
    }

    if want("channel") {
        let (tx, rx) = crossbeam_channel::bounded::<PutRecord>(65_536);
        let input: Vec<Vec<PutRecord>> = (0..THREADS)
            .map(|_| records(n / THREADS, &payload))
            .collect();
        let (start, cpu) = (Instant::now(), cpu_seconds());
        thread::scope(|s| {
            for mine in input {
                let tx = tx.clone();
                s.spawn(move || {
                    for r in mine {
                        if tx.send(r).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            s.spawn(move || rx.iter().count());
        });
        report("crossbeam_channel", n, start, cpu);
    }

    if want("durable") {
        let n = n / 4;
        let dir = tempfile::tempdir()?;
        let durable = Stream::builder("durable")
            .shards(8)
            .max_shard_bytes(4 << 30)
            .durable(dir.path())
            .durability(Durability::PerBatch)
            .build()?;
        let input = batches(n, &payload, 8);
        let (start, cpu) = (Instant::now(), cpu_seconds());
        let (failed, mut latencies) = put_batches(&durable, input);
        report("durable_put", n, start, cpu);
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
        println!(
            "durable commit p50 {:.2} ms p99 {:.2} ms (failed {failed})",
            pct(0.5),
            pct(0.99)
        );
    }
    Ok(())
}
