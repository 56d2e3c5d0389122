//! `lakehouse-bench stream`: put and read rates of the in-process stream, beside a
//! crossbeam channel moving the same records in the same run, and the put rate and
//! commit latency of a durable stream with group commit and fsync per put call.

use std::hint::black_box;
use std::thread;
use std::time::Instant;

use bytes::Bytes;
use lakehouse_core::{Position, PutRecord, ReadLimit};
use lakehouse_stream::{Durability, Stream};

use crate::report::{BenchResult, Report};

const THREADS: usize = 2;

fn records(n: usize, payload: &Bytes) -> Vec<PutRecord> {
    (0..n)
        .map(|i| PutRecord::new(format!("user-{}", i % 100_000), payload.clone()))
        .collect()
}

pub(crate) fn run(report: &mut Report) -> BenchResult {
    let n = report.scale(4_000_000, 1_000_000);
    let payload = Bytes::from(vec![b'x'; 100]);
    let stream = Stream::builder("bench")
        .shards(8)
        .max_shard_bytes(4 << 30)
        .build()?;

    // Batched puts: 500 records per call, 2 producer threads.
    let batches: Vec<Vec<Vec<PutRecord>>> = (0..THREADS)
        .map(|_| {
            records(n / THREADS, &payload)
                .chunks(500)
                .map(<[PutRecord]>::to_vec)
                .collect()
        })
        .collect();
    let start = Instant::now();
    let failed: usize = thread::scope(|s| {
        let handles: Vec<_> = batches
            .into_iter()
            .map(|mine| {
                let stream = &stream;
                s.spawn(move || {
                    mine.into_iter()
                        .map(|b| stream.put_records(b).iter().filter(|r| r.is_err()).count())
                        .sum::<usize>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(usize::MAX))
            .sum()
    });
    let batched = n as f64 / start.elapsed().as_secs_f64();
    if failed > 0 {
        return Err(format!("{failed} batched puts failed").into());
    }
    report.metric("stream.put_batched_rps", batched, "records/s");

    // Single-record puts, 2 producer threads.
    let single_stream = Stream::builder("single")
        .shards(8)
        .max_shard_bytes(4 << 30)
        .build()?;
    let singles: Vec<Vec<PutRecord>> = (0..THREADS)
        .map(|_| records(n / THREADS, &payload))
        .collect();
    let start = Instant::now();
    thread::scope(|s| {
        for mine in singles {
            let stream = &single_stream;
            s.spawn(move || {
                for r in mine {
                    let _ = black_box(stream.put_record(r));
                }
            });
        }
    });
    report.metric(
        "stream.put_single_rps",
        n as f64 / start.elapsed().as_secs_f64(),
        "records/s",
    );

    // Reads: every shard from the horizon, 10,000 records per call, 2 reader threads.
    let shards: Vec<_> = stream.shards().into_iter().map(|s| s.id).collect();
    let start = Instant::now();
    let read: usize = thread::scope(|s| {
        let handles: Vec<_> = shards
            .chunks(shards.len().div_ceil(THREADS))
            .map(|mine| {
                let stream = &stream;
                s.spawn(move || {
                    let mut total = 0;
                    for &shard in mine {
                        let mut pos = Position::TrimHorizon;
                        loop {
                            let Ok(b) = stream.read_at(shard, pos, ReadLimit::records(10_000))
                            else {
                                break;
                            };
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
    let read_rps = read as f64 / start.elapsed().as_secs_f64();
    if read != n {
        return Err(format!("read {read} records, put {n}").into());
    }
    report.metric("stream.read_rps", read_rps, "records/s");

    // The same records through a bounded crossbeam channel: 2 producers, 1 consumer.
    let (tx, rx) = crossbeam_channel::bounded::<PutRecord>(65_536);
    let producers: Vec<Vec<PutRecord>> = (0..THREADS)
        .map(|_| records(n / THREADS, &payload))
        .collect();
    let start = Instant::now();
    thread::scope(|s| {
        for mine in producers {
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
    let channel = n as f64 / start.elapsed().as_secs_f64();
    report.metric("stream.crossbeam_channel_rps", channel, "records/s");
    report.ratio(
        "stream.put_batched_time_vs_crossbeam_channel",
        1.0 / batched,
        1.0 / channel,
    );
    report.note("Kinesis per-shard write limit: 1,000 records/s or 1 MiB/s; read: 2 MiB/s");
    durable(report, &payload)
}

/// Durable puts: 8 writer threads, 500 records per `put_records` call, each call
/// returning once its records are fsynced; concurrent calls share commit rounds.
fn durable(report: &mut Report, payload: &Bytes) -> BenchResult {
    const WRITERS: usize = 8;
    let n = report.scale(1_000_000, 200_000);
    let dir = tempfile::tempdir()?;
    let stream = Stream::builder("durable")
        .shards(8)
        .max_shard_bytes(4 << 30)
        .durable(dir.path())
        .durability(Durability::PerBatch)
        .build()?;
    let batches: Vec<Vec<Vec<PutRecord>>> = (0..WRITERS)
        .map(|_| {
            records(n / WRITERS, payload)
                .chunks(500)
                .map(<[PutRecord]>::to_vec)
                .collect()
        })
        .collect();
    let start = Instant::now();
    let outcome: Vec<(usize, Vec<f64>)> = thread::scope(|s| {
        let handles: Vec<_> = batches
            .into_iter()
            .map(|mine| {
                let stream = &stream;
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
            .map(|h| h.join().unwrap_or((usize::MAX, Vec::new())))
            .collect()
    });
    let rps = n as f64 / start.elapsed().as_secs_f64();
    let failed: usize = outcome.iter().map(|(f, _)| *f).sum();
    if failed > 0 {
        return Err(format!("{failed} durable puts failed").into());
    }
    let mut latencies: Vec<f64> = outcome.into_iter().flat_map(|(_, l)| l).collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    report.metric("stream.durable_put_rps", rps, "records/s");
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
    report.note(&format!(
        "durable: {WRITERS} writers x 500-record put_records calls, fsync per call with group commit, {n} records reopened intact"
    ));
    Ok(())
}
