//! Shared helpers: a retail event schema and batches of it.

use std::process::Command;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit};
use futures::TryStreamExt;
use lakehouse_core::{ScanRequest, TableSource};

/// Microseconds of 2026-11-25T00:00:00Z.
pub(crate) const DAY0: i64 = 1_795_564_800_000_000;
pub(crate) const DAY: i64 = 86_400_000_000;

pub(crate) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("user_id", DataType::Int64, true),
        Field::new("region", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]))
}

/// `n` rows with ids from `first`, spread over 4 regions and 3 days.
pub(crate) fn batch(first: i64, n: usize) -> RecordBatch {
    let ids: Vec<i64> = (first..first + n as i64).collect();
    let regions = ["eu", "us", "apac", "latam"];
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Int64Array::from(
                ids.iter().map(|i| i % 97).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| regions[(*i % 4) as usize])
                    .collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                ids.iter()
                    .map(|i| (*i % 50) as f64 + 0.5)
                    .collect::<Vec<_>>(),
            )),
            Arc::new(TimestampMicrosecondArray::from(
                ids.iter()
                    .map(|i| DAY0 + (i % 3) * DAY + i)
                    .collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

pub(crate) async fn collect<T: TableSource + ?Sized>(t: &T, req: ScanRequest) -> Vec<RecordBatch> {
    t.scan(req).await.unwrap().try_collect().await.unwrap()
}

pub(crate) fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// Sorted values of an Int64 column.
pub(crate) fn ints(batches: &[RecordBatch], column: &str) -> Vec<i64> {
    let mut v: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name(column)
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            (0..c.len())
                .filter(|i| c.is_valid(*i))
                .map(|i| c.value(i))
                .collect::<Vec<_>>()
        })
        .collect();
    v.sort_unstable();
    v
}

pub(crate) fn sum_f64(batches: &[RecordBatch], column: &str) -> f64 {
    batches
        .iter()
        .map(|b| {
            let c = b
                .column_by_name(column)
                .unwrap()
                .as_primitive::<Float64Type>();
            c.iter().flatten().sum::<f64>()
        })
        .sum()
}

/// All files under `dir`, relative.
pub(crate) fn files_under(dir: &std::path::Path) -> Vec<String> {
    fn walk(base: &std::path::Path, d: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The Python of the peers venv (`LAKEHOUSE_PEERS_PYTHON`); `None`, with a message
/// that the test is skipped, when it is not set.
pub(crate) fn peers_python() -> Option<String> {
    let p = std::env::var("LAKEHOUSE_PEERS_PYTHON").ok();
    if p.is_none() {
        eprintln!("LAKEHOUSE_PEERS_PYTHON is not set: skipping a test that needs the Python peers");
    }
    p
}

/// Runs `benches/peers/<script>` with `args` and returns the JSON it prints.
pub(crate) fn run_script(python: &str, script: &str, args: &[&str]) -> serde_json::Value {
    let path = format!("{}/../benches/peers/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python).arg(path).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `id` column of `batches`, sorted.
pub(crate) fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    let mut out: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    out.sort_unstable();
    out
}
