//! `lakehouse-bench stream`: put and read rates of the in-process stream, beside a
//! crossbeam channel moving the same records in the same run, the put rate and
//! commit latency of a durable stream with group commit and fsync per put call, and
//! its read rate from the segment files.
//!
//! Each thread builds its own input before the clock starts, as a producer would (its
//! keys and payloads are allocated on the thread that puts them). The payloads of a
//! 500-record batch are slices of one buffer, as those of records decoded from one
//! request are; a single-record put carries a buffer of its own.

use std::hint::black_box;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lakehouse_core::{Position, PutRecord, ReadLimit};
use lakehouse_stream::{Durability, Stream};

use crate::report::{BenchResult, Report};

const THREADS: usize = 2;

/// Records `first..first + n` keyed `user-<i mod 100 000>` with 100-byte payloads; the
/// payloads of each `per_buffer` consecutive records are slices of one buffer.
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

/// Records `first..first + n` in `put_records` calls of 500.
fn batches(first: usize, n: usize) -> Vec<Vec<PutRecord>> {
    records(first, n, 500)
        .chunks(500)
        .map(<[PutRecord]>::to_vec)
        .collect()
}

/// Runs `work` on `threads` threads, each on the input `make(thread)` built on that
/// thread beforehand; returns the results (in thread order) and the time from when
/// every input was ready to when the last thread finished.
fn timed<I, R: Send>(
    threads: usize,
    make: impl Fn(usize) -> I + Sync,
    work: impl Fn(I) -> R + Sync,
) -> Result<(Vec<R>, Duration), String> {
    let ready = Barrier::new(threads + 1);
    thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (make, work, ready) = (&make, &work, &ready);
                s.spawn(move || {
                    // Every thread reaches the barrier, even one whose input failed.
                    let input = panic::catch_unwind(AssertUnwindSafe(|| make(t)));
                    ready.wait();
                    input.map(work).ok()
                })
            })
            .collect();
        ready.wait();
        let start = Instant::now();
        let joined: Vec<Option<R>> = handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect();
        let took = start.elapsed();
        let results = joined
            .into_iter()
            .collect::<Option<Vec<R>>>()
            .ok_or_else(|| "a bench thread panicked".to_owned())?;
        Ok((results, took))
    })
}

/// Puts `batches` one call at a time; returns the failed entries and each call's time.
fn put_batches(stream: &Stream, batches: Vec<Vec<PutRecord>>) -> (usize, Vec<Duration>) {
    let mut failed = 0;
    let mut latencies = Vec::with_capacity(batches.len());
    for b in batches {
        let t = Instant::now();
        failed += stream.put_records(b).iter().filter(|r| r.is_err()).count();
        latencies.push(t.elapsed());
    }
    (failed, latencies)
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Passes of each put phase and of the channel; a figure is the best pass (noise on a
/// shared machine only ever slows a pass down), and every pass is printed as a note.
const PASSES: usize = 3;

/// A fresh in-memory stream of 8 shards for one pass.
fn fresh(name: &str) -> Result<Stream, lakehouse_core::Error> {
    Stream::builder(name)
        .shards(8)
        .max_shard_bytes(4 << 30)
        .build()
}

/// Notes every pass of a figure and returns the best.
fn best_of(report: &mut Report, name: &str, passes: &[f64]) -> f64 {
    let listed: Vec<String> = passes.iter().map(|r| format!("{:.2} M", r / 1e6)).collect();
    report.note(&format!("{name} passes: {}", listed.join(", ")));
    passes.iter().copied().fold(0.0, f64::max)
}

pub(crate) fn run(report: &mut Report) -> BenchResult {
    let per = report.scale(4_000_000, 1_000_000) / THREADS;
    let n = per * THREADS;

    // Batched puts: 500 records per call, 2 producer threads. The last pass's stream is
    // read below.
    let mut passes = Vec::with_capacity(PASSES);
    let mut stream = None;
    for _ in 0..PASSES {
        drop(stream.take());
        let s = fresh("bench")?;
        let (out, took) = timed(THREADS, |t| batches(t * per, per), |b| put_batches(&s, b).0)?;
        let failed: usize = out.iter().sum();
        if failed > 0 {
            return Err(format!("{failed} batched puts failed").into());
        }
        passes.push(rate(n, took));
        stream = Some(s);
    }
    let batched = best_of(report, "stream.put_batched_rps", &passes);
    report.metric("stream.put_batched_rps", batched, "records/s");
    let stream = stream.ok_or("no batched pass ran")?;

    // Single-record puts, 2 producer threads.
    let mut passes = Vec::with_capacity(PASSES);
    for _ in 0..PASSES {
        let single = fresh("single")?;
        let (out, took) = timed(
            THREADS,
            |t| records(t * per, per, 1),
            |mine| {
                mine.into_iter()
                    .map(|r| single.put_record(r))
                    .filter(|r| black_box(r).is_err())
                    .count()
            },
        )?;
        if out.iter().sum::<usize>() > 0 {
            return Err("single-record puts failed".into());
        }
        passes.push(rate(n, took));
    }
    let single = best_of(report, "stream.put_single_rps", &passes);
    report.metric("stream.put_single_rps", single, "records/s");

    // Reads: every shard from the horizon, 10,000 records per call, 2 reader threads.
    let shards: Vec<_> = stream.shards().into_iter().map(|s| s.id).collect();
    let mine = shards.len().div_ceil(THREADS);
    let (out, took) = timed(
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
    )?;
    let read: usize = out.iter().sum();
    if read != n {
        return Err(format!("read {read} records, put {n}").into());
    }
    report.metric("stream.read_rps", rate(n, took), "records/s");
    drop(stream);

    // The same records through a bounded crossbeam channel: 2 producers, 1 consumer.
    let mut passes = Vec::with_capacity(PASSES);
    for _ in 0..PASSES {
        let (tx, rx) = crossbeam_channel::bounded::<PutRecord>(65_536);
        let (out, took) = timed(
            THREADS + 1,
            |t| (t < THREADS).then(|| records(t * per, per, 500)),
            |input| match input {
                Some(mine) => {
                    for r in mine {
                        if tx.send(r).is_err() {
                            break;
                        }
                    }
                    0
                }
                None => rx.iter().take(n).count(),
            },
        )?;
        if out.iter().sum::<usize>() != n {
            return Err("the channel lost records".into());
        }
        passes.push(rate(n, took));
    }
    let channel = best_of(report, "stream.crossbeam_channel_rps", &passes);
    report.metric("stream.crossbeam_channel_rps", channel, "records/s");
    report.ratio(
        "stream.put_batched_time_vs_crossbeam_channel",
        1.0 / batched,
        1.0 / channel,
    );
    report.note("Kinesis per-shard write limit: 1,000 records/s or 1 MiB/s; read: 2 MiB/s");
    durable(report)
}

/// Durable puts: 8 writer threads, 500 records per `put_records` call, each call
/// returning once its records are fsynced; concurrent calls share commit rounds.
fn durable(report: &mut Report) -> BenchResult {
    const WRITERS: usize = 8;
    let per = report.scale(1_000_000, 200_000) / WRITERS;
    let n = per * WRITERS;
    let dir = tempfile::tempdir()?;
    let stream = Stream::builder("durable")
        .shards(8)
        .max_shard_bytes(4 << 30)
        .durable(dir.path())
        .durability(Durability::PerBatch)
        .build()?;
    let (outcome, took) = timed(
        WRITERS,
        |t| batches(t * per, per),
        |b| put_batches(&stream, b),
    )?;
    let failed: usize = outcome.iter().map(|(f, _)| *f).sum();
    if failed > 0 {
        return Err(format!("{failed} durable puts failed").into());
    }
    let mut latencies: Vec<f64> = outcome
        .into_iter()
        .flat_map(|(_, l)| l)
        .map(|d| d.as_secs_f64() * 1e3)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    report.metric("stream.durable_put_rps", rate(n, took), "records/s");
    report.metric("stream.durable_commit_p50_ms", pct(0.50), "ms");
    report.metric("stream.durable_commit_p99_ms", pct(0.99), "ms");
    drop(stream);
    // Every acknowledged record is on disk: reopen and count.
    let reopened = Stream::builder("durable").durable(dir.path()).build()?;
    let on_disk: usize = reopened
        .shards()
        .iter()
        .map(|s| {
            reopened
                .read_at(s.id, Position::TrimHorizon, ReadLimit::records(usize::MAX))
                .map_or(0, |b| b.records.len())
        })
        .sum();
    if on_disk != n {
        return Err(format!("reopened durable stream holds {on_disk} records, put {n}").into());
    }
    drop(reopened);
    // Reopened with no memory window: every read is served from the segment files
    // (which the page cache holds, as they were just written).
    let cold = Stream::builder("durable")
        .durable(dir.path())
        .memory_window_bytes(0)
        .build()?;
    let shards: Vec<_> = cold.shards().into_iter().map(|s| s.id).collect();
    let start = Instant::now();
    let mut from_disk = 0;
    for shard in shards {
        let mut pos = Position::TrimHorizon;
        loop {
            let b = cold.read_at(shard, pos, ReadLimit::records(10_000))?;
            if b.records.is_empty() {
                break;
            }
            from_disk += b.records.len();
            pos = b.next;
        }
    }
    let took = start.elapsed();
    if from_disk != n {
        return Err(format!("read {from_disk} records from disk, put {n}").into());
    }
    report.metric(
        "stream.durable_read_from_disk_records_per_s",
        rate(n, took),
        "records/s",
    );
    report.note(&format!(
        "durable: {WRITERS} writers x 500-record put_records calls, fsync per call with group commit, {n} records reopened intact; disk reads: reopened with memory_window_bytes(0), 10,000-record reads on one thread from the page cache"
    ));
    Ok(())
}
