//! Float columns holding NaN: Parquet's statistics leave NaN out of min / max, and so
//! do the log statistics of writers that take them from Parquet (Python `deltalake`),
//! while comparisons order NaN above every number (`NaN > 1` holds; a NaN with the sign
//! bit set is below every number). Pruning by files, row groups and partitions must
//! never skip a NaN row a predicate matches: every scan here returns what filtering
//! all rows without pruning returns.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use lakehouse_core::{Predicate, ScanRequest, col};
use lakehouse_storage::{Location, Table, TableOptions};
use serde_json::Value;

use crate::common::{collect, ids, peers_python};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
    ]))
}

fn batch(first: i64, xs: &[Option<f64>]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(
                (first..first + xs.len() as i64).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(xs.to_vec())),
        ],
    )
    .unwrap()
}

/// Predicates a NaN satisfies, and some it does not.
fn predicates() -> Vec<Predicate> {
    vec![
        col("x").gt(1.0),
        col("x").gt(10.0),
        col("x").gt_eq(3.5),
        col("x").lt(0.5),
        col("x").lt_eq(-10.0),
        col("x").not_eq(1.0),
        col("x").not_eq(2.0),
        col("x").eq(1.0),
        col("x").eq(f64::NAN),
        col("x").between(0.0, 2.0),
        col("x").between(0.0, 2.0).negate(),
        col("x").in_list([1.0f64, 2.0]),
        col("x").in_list([1.0f64]).negate(),
        col("x").gt(10.0).or(col("x").lt(-10.0)),
        col("x").is_null(),
    ]
}

/// Every predicate's scan against all rows filtered without pruning.
async fn assert_never_pruned_wrong(t: &Table) -> usize {
    let all = collect(t, ScanRequest::new()).await;
    let all = concat_batches(&all[0].schema(), &all).unwrap();
    let mut nan_rows = 0;
    for p in predicates() {
        let want = ids(&[p.filter(&all).unwrap()]);
        let got = ids(&collect(t, ScanRequest::new().with_predicate(p.clone())).await);
        assert_eq!(got, want, "{p:?}");
        nan_rows += usize::from(p == col("x").gt(10.0) && !want.is_empty());
    }
    let x = all
        .column_by_name("x")
        .unwrap()
        .as_primitive::<arrow::datatypes::Float64Type>();
    assert!(
        (0..x.len()).any(|i| x.is_valid(i) && x.value(i).is_nan()),
        "the table holds NaN"
    );
    nan_rows
}

fn commit_path(dir: &Path, v: u64) -> std::path::PathBuf {
    dir.join("_delta_log").join(format!("{v:020}.json"))
}

/// Our own files: the log has no float bounds for a column with NaN, but each row
/// group's Parquet statistics leave NaN out. Then the log statistics of one file as
/// writers that take them from Parquet write them: bounds without the NaN.
#[tokio::test]
async fn nan_rows_are_never_pruned_from_our_files_or_nan_blind_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new().row_group_rows(2),
    )
    .await
    .unwrap();
    let neg_nan = -f64::NAN;
    t.append(vec![batch(
        0,
        &[
            Some(1.0),
            Some(f64::NAN),
            Some(0.5),
            None,
            Some(neg_nan),
            Some(1.0),
        ],
    )])
    .await
    .unwrap();
    t.append(vec![batch(10, &[Some(2.0), Some(f64::NAN), Some(3.0)])])
        .await
        .unwrap();
    assert_eq!(assert_never_pruned_wrong(&t).await, 1);

    // Version 2's file as a NaN-blind writer describes it.
    let text = std::fs::read_to_string(commit_path(dir.path(), 2)).unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            let mut a: Value = serde_json::from_str(l).unwrap();
            if let Some(add) = a.get_mut("add") {
                add["stats"] = Value::from(
                    r#"{"numRecords":3,"minValues":{"id":10,"x":2.0},"maxValues":{"id":12,"x":3.0},"nullCount":{"id":0,"x":0}}"#,
                );
            }
            a.to_string()
        })
        .collect();
    std::fs::write(commit_path(dir.path(), 2), lines.join("\n") + "\n").unwrap();
    let reopened = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    let stats = reopened.files(None, None).await.unwrap();
    assert!(
        stats
            .iter()
            .any(|f| f.columns.get("x").is_some_and(|c| c.max.is_some())),
        "the edited statistics are read: {stats:?}"
    );
    assert_eq!(assert_never_pruned_wrong(&reopened).await, 1);
}

/// A table Python `deltalake` writes, whose statistics leave NaN out.
#[tokio::test]
async fn nan_rows_are_never_pruned_from_deltalake_tables() {
    let Some(python) = peers_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import sys, deltalake, pyarrow as pa
nan = float("nan")
for first, xs in [(0, [1.0, nan, 0.5, None, 1.0]), (10, [2.0, nan, 3.0]), (20, [nan, nan])]:
    t = pa.table({"id": pa.array(range(first, first + len(xs)), pa.int64()),
                  "x": pa.array(xs, pa.float64())})
    deltalake.write_deltalake(sys.argv[1], t, mode="append")
"#;
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    let stats = t.files(None, None).await.unwrap();
    assert!(
        stats.iter().any(|f| f
            .columns
            .get("x")
            .is_some_and(|c| c.max == Some(lakehouse_core::Scalar::Float64(1.0)))),
        "deltalake's bounds leave the NaN out: {stats:?}"
    );
    assert_eq!(assert_never_pruned_wrong(&t).await, 1);
}
