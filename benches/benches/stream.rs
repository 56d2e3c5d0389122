//! Criterion benchmarks of `lakehouse-stream`, one per hot path: routing (MD5 hash
//! keys), batched and single puts, reads, and durable puts with and without fsync.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use lakehouse_core::{Position, PutRecord, ReadLimit, hash_key};
use lakehouse_stream::{Durability, Stream};

fn records(n: usize, seed: usize) -> Vec<PutRecord> {
    let payload = Bytes::from(vec![b'x'; 100]);
    (0..n)
        .map(|i| {
            PutRecord::new(
                format!("user-{}", (i * 7919 + seed) % 100_000),
                payload.clone(),
            )
        })
        .collect()
}

/// A stream whose retention trims puts after 200 ms, so long runs stay in memory.
fn stream() -> Stream {
    Stream::builder("bench")
        .shards(8)
        .max_shard_bytes(1 << 30)
        .retention(Some(Duration::from_millis(200)))
        .build()
        .expect("a valid configuration")
}

fn routing(c: &mut Criterion) {
    let keys: Vec<String> = (0..500).map(|i| format!("user-{i}")).collect();
    let mut g = c.benchmark_group("stream/route");
    g.throughput(Throughput::Elements(keys.len() as u64));
    g.bench_function("md5_hash_key_x500", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| hash_key(black_box(k)))
                .fold(0u128, |a, h| a ^ h)
        })
    });
    g.finish();
}

fn puts(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream/put");
    g.throughput(Throughput::Elements(500));
    let s = stream();
    g.bench_function("put_records_500", |b| {
        b.iter_batched(
            || records(500, 1),
            |batch| black_box(s.put_records(batch)),
            BatchSize::SmallInput,
        )
    });
    let s = stream();
    g.bench_function("put_record_x500", |b| {
        b.iter_batched(
            || records(500, 2),
            |batch| {
                for r in batch {
                    black_box(s.put_record(r).expect("room in the shard"));
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn reads(c: &mut Criterion) {
    let s = Stream::builder("bench")
        .shards(8)
        .retention(None)
        .build()
        .expect("a valid configuration");
    for chunk in records(80_000, 3).chunks(500) {
        s.put_records(chunk.to_vec());
    }
    let shard = s.shards()[0].id;
    let mut g = c.benchmark_group("stream/read");
    let n = s
        .read_at(shard, Position::TrimHorizon, ReadLimit::records(10_000))
        .expect("shard 0 exists")
        .records
        .len();
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("read_at_10000", |b| {
        b.iter(|| {
            black_box(
                s.read_at(shard, Position::TrimHorizon, ReadLimit::records(10_000))
                    .expect("shard 0 exists"),
            )
        })
    });
    g.finish();
}

fn durable(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream/durable");
    g.throughput(Throughput::Elements(500));
    g.sample_size(20);
    for (name, durability) in [
        ("put_records_500_no_fsync", Durability::None),
        ("put_records_500_fsync", Durability::PerBatch),
    ] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let s = Stream::builder("bench")
            .shards(8)
            .max_shard_bytes(1 << 30)
            .retention(Some(Duration::from_millis(200)))
            .segment_bytes(8 << 20)
            .durable(dir.path())
            .durability(durability)
            .build()
            .expect("a new durable stream");
        g.bench_function(name, |b| {
            b.iter_batched(
                || records(500, 4),
                |batch| black_box(s.put_records(batch)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, routing, puts, reads, durable);
criterion_main!(benches);
