//! Criterion benchmarks of `lakehouse-core`: predicate evaluation and pruning.

use std::hint::black_box;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lakehouse_core::{ColumnStats, FileStats, Scalar, col};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn batch(rows: usize) -> RecordBatch {
    let mut rng = StdRng::seed_from_u64(7);
    let categories = ["toys", "books", "garden", "kitchen", "sports"];
    let ids: Vec<i64> = (0..rows as i64).collect();
    let prices: Vec<f64> = (0..rows).map(|_| rng.random_range(1.0..100.0)).collect();
    let cats: Vec<&str> = (0..rows)
        .map(|_| categories[rng.random_range(0..categories.len())])
        .collect();
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("price", Arc::new(Float64Array::from(prices))),
        ("category", Arc::new(StringArray::from(cats))),
    ])
    .expect("columns have equal length")
}

fn predicate(c: &mut Criterion) {
    let b = batch(1 << 16);
    let p = col("category")
        .in_list(["toys", "books"])
        .and(col("price").between(10.0, 50.0));
    let mut g = c.benchmark_group("predicate");
    g.throughput(Throughput::Elements(b.num_rows() as u64));
    g.bench_function("evaluate_64k_rows", |bench| {
        bench.iter(|| black_box(p.evaluate(black_box(&b)).expect("columns exist")))
    });
    g.finish();

    let files: Vec<FileStats> = (0..1000)
        .map(|i| FileStats {
            path: format!("part-{i}.parquet"),
            num_rows: 10_000,
            columns: [(
                "id".to_owned(),
                ColumnStats {
                    min: Some(Scalar::Int64(i * 10_000)),
                    max: Some(Scalar::Int64(i * 10_000 + 9_999)),
                    null_count: Some(0),
                },
            )]
            .into(),
            ..Default::default()
        })
        .collect();
    let point = col("id").eq(4_242_424i64);
    c.bench_function("prune_1000_files_point", |bench| {
        bench.iter(|| black_box(files.iter().filter(|f| point.can_match(*f)).count()))
    });
}

criterion_group!(benches, predicate);
criterion_main!(benches);
