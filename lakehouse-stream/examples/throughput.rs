//! Put and read rates of an in-memory stream, a crossbeam channel moving the same
//! records, and a durable stream's put rate and commit latency: a quick check of the
//! hot paths that builds only this crate's dependencies (the full figures come from
//! `lakehouse-bench stream`).
//!
//! `cargo run --release -p lakehouse-stream --example throughput [records]`

use std::hint::black_box;
use std::sync::Barrier;
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

/// Records `first..first + n` keyed `user-<i mod 100 000>` with 100-byte payloads; the
/// payloads of each `per_buffer` consecutive records are slices of one buffer, as those
/// of records decoded from one request are (`per_buffer` 1: a buffer per record).
fn records(first: usize, n: usize, per_buffer: usize) -> Vec<PutRecord> {
    let mut buffer = Bytes::new();
    (first..first + n)
        .map(|i| {
            let at = (i - first) % per_buffer;
            if at == 0 {
                buffer = Bytes::from(vec![b'x'; 100 * per_buffer]);
            }
            PutRecord::new(
                format!("user-{}", i % 100_000),
                buffer.slice(at * 100..(at + 1) * 100),
            )
        })
        .collect()
}

/// Runs `work` on `threads` threads, each on the input `make(thread)` built on that
/// thread beforehand; returns the results and the time from when all inputs were
/// ready to when the last thread finished.
fn timed<I, R: Send>(
    threads: usize,
    make: impl Fn(usize) -> I + Sync,
    work: impl Fn(I) -> R + Sync,
) -> (Vec<R>, f64, f64) {
    let ready = Barrier::new(threads + 1);
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (make, work, ready) = (&make, &work, &ready);
                s.spawn(move || {
                    let input = make(t);
                    ready.wait();
                    work(input)
                })
            })
            .collect();
        ready.wait();
        let (start, cpu) = (Instant::now(), cpu_seconds());
        let results: Vec<R> = handles.into_iter().filter_map(|h| h.join().ok()).collect();
        (results, start.elapsed().as_secs_f64(), cpu_seconds() - cpu)
    })
}

/// Prints a phase's rate per wall-clock second and per CPU second.
fn report(name: &str, n: usize, wall: f64, cpu: f64) {
    println!(
        "{name}: {:.2} M/s wall, {:.2} M per CPU-second ({n} records)",
        n as f64 / wall / 1e6,
        n as f64 / cpu.max(0.01) / 1e6
    );
}

fn put_batches(stream: &Stream, batches: Vec<Vec<PutRecord>>) -> (usize, Vec<f64>) {
    let mut failed = 0;
    let mut latencies = Vec::with_capacity(batches.len());
    for b in batches {
        let t = Instant::now();
        failed += stream.put_records(b).iter().filter(|r| r.is_err()).count();
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (failed, latencies)
}

fn batches(first: usize, n: usize) -> Vec<Vec<PutRecord>> {
    records(first, n, 500)
        .chunks(500)
        .map(<[PutRecord]>::to_vec)
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(4_000_000);
    let only = std::env::args().nth(2).unwrap_or_default();
    let want = |phase: &str| only.is_empty() || only.split(',').any(|p| p == phase);
    let per = n / THREADS;
    let stream = Stream::builder("bench")
        .shards(8)
        .max_shard_bytes(4 << 30)
        .build()?;

    if want("batched") || want("read") {
        let (out, wall, cpu) = timed(
            THREADS,
            |t| batches(t * per, per),
            |b| put_batches(&stream, b).0,
        );
        report("put_batched", n, wall, cpu);
        assert_eq!(out.iter().sum::<usize>(), 0, "batched puts failed");
    }

    if want("single") {
        let single = Stream::builder("single")
            .shards(8)
            .max_shard_bytes(4 << 30)
            .build()?;
        let (_, wall, cpu) = timed(
            THREADS,
            |t| records(t * per, per, 1),
            |mine| {
                for r in mine {
                    let _ = black_box(single.put_record(r));
                }
            },
        );
        report("put_single", n, wall, cpu);
    }

    if want("read") {
        let shards: Vec<_> = stream.shards().into_iter().map(|s| s.id).collect();
        let mine = shards.len().div_ceil(THREADS);
        let (out, wall, cpu) = timed(
            THREADS,
            |t| {
                shards
                    .iter()
                    .skip(t * mine)
                    .take(mine)
                    .copied()
                    .collect::<Vec<_>>()
            },
            |mine| {
                let mut total = 0;
                for shard in mine {
                    let mut pos = Position::TrimHorizon;
                    while let Ok(b) = stream.read_at(shard, pos, ReadLimit::records(10_000)) {
                        if b.records.is_empty() {
                            break;
                        }
                        total += b.records.len();
                        pos = b.next;
                    }
                }
                total
            },
        );
        let read: usize = out.iter().sum();
        report("read", read, wall, cpu);
        assert_eq!(read, per * THREADS, "read fewer records than were put");
    }

    if want("channel") {
        let (tx, rx) = crossbeam_channel::bounded::<PutRecord>(65_536);
        let (_, wall, cpu) = timed(
            THREADS + 1,
            |t| (t < THREADS).then(|| records(t * per, per, 500)),
            |input| match input {
                Some(mine) => {
                    for r in mine {
                        if tx.send(r).is_err() {
                            break;
                        }
                    }
                }
                None => {
                    let got = rx.iter().take(per * THREADS).count();
                    assert_eq!(got, per * THREADS);
                }
            },
        );
        report("crossbeam_channel", n, wall, cpu);
    }

    if want("durable") {
        const WRITERS: usize = 8;
        let per = n / 4 / WRITERS;
        let dir = tempfile::tempdir()?;
        let durable = Stream::builder("durable")
            .shards(8)
            .max_shard_bytes(4 << 30)
            .durable(dir.path())
            .durability(Durability::PerBatch)
            .build()?;
        let (out, wall, cpu) = timed(
            WRITERS,
            |t| batches(t * per, per),
            |b| put_batches(&durable, b),
        );
        report("durable_put", per * WRITERS, wall, cpu);
        let failed: usize = out.iter().map(|(f, _)| f).sum();
        let mut latencies: Vec<f64> = out.into_iter().flat_map(|(_, l)| l).collect();
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
