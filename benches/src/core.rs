//! `lakehouse-bench core`: the predicate language's evaluation and pruning rates.

use std::hint::black_box;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use lakehouse_core::{ColumnStats, FileStats, Scalar, col};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::report::{BenchResult, Report, timed};

pub(crate) fn run(report: &mut Report) -> BenchResult {
    let rows = report.scale(1usize << 22, 1 << 20);
    let mut rng = StdRng::seed_from_u64(42);
    let categories = [
        "toys", "books", "garden", "kitchen", "sports", "beauty", "tools", "music",
    ];
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(Int64Array::from_iter_values(0..rows as i64)) as ArrayRef,
        ),
        (
            "price",
            Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|_| rng.random_range(1.0..200.0)),
            )),
        ),
        (
            "category",
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|_| categories[rng.random_range(0..categories.len())]),
            )),
        ),
    ])?;
    let p = col("category")
        .in_list(["toys", "books"])
        .and(col("price").between(10.0, 50.0));
    let rounds = 5;
    let (selected, took) = timed(|| {
        let mut n = 0;
        for _ in 0..rounds {
            n = black_box(p.evaluate(&batch)).map(|m| m.true_count())?;
        }
        Ok::<_, lakehouse_core::Error>(n)
    });
    let selected = selected?;
    report.note(&format!("{p}: {selected} of {rows} rows"));
    report.metric(
        "core.predicate_eval_rows_per_s",
        (rows * rounds) as f64 / took.as_secs_f64(),
        "rows/s",
    );

    let files: Vec<FileStats> = (0..10_000i64)
        .map(|i| FileStats {
            path: format!("part-{i}.parquet"),
            num_rows: 100_000,
            columns: [(
                "id".to_owned(),
                ColumnStats {
                    min: Some(Scalar::Int64(i * 100_000)),
                    max: Some(Scalar::Int64(i * 100_000 + 99_999)),
                    null_count: Some(0),
                },
            )]
            .into(),
            ..Default::default()
        })
        .collect();
    let point = col("id").eq(424_242_424i64);
    let rounds = report.scale(50, 10);
    let (kept, took) = timed(|| {
        let mut kept = 0;
        for _ in 0..rounds {
            kept = black_box(files.iter().filter(|f| point.can_match(*f)).count());
        }
        kept
    });
    report.note(&format!("{point}: {kept} of {} files kept", files.len()));
    report.metric(
        "core.prune_files_per_s",
        (files.len() * rounds) as f64 / took.as_secs_f64(),
        "files/s",
    );
    Ok(())
}
