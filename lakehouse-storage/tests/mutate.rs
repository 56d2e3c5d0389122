//! Deletes and updates by predicate ([`TableMutator`]): copy-on-write commits, time
//! travel, conflicts with concurrent writers, delta-rs reading the result, and a
//! model-based property test against a `Vec` and `MemoryTable`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch};
use arrow::datatypes::Float64Type;
use futures::TryStreamExt;
use lakehouse_core::{
    Assignment, ErrorKind, MemoryTable, Predicate, ScanRequest, TableMutator, TableSink,
    TableSource, col,
};
use lakehouse_storage::{Location, PartitionField, Table, TableOptions};
use proptest::prelude::*;

use crate::common::{batch, collect, ints, peers_python, rows, run_script, schema, sum_f64};

mod merge;

/// One row as (order_id, region, price bits), for comparing row sets.
type Row = (i64, String, u64);

fn row_set(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        let ids = b
            .column_by_name("order_id")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        let regions = b.column_by_name("region").unwrap().as_string::<i32>();
        let prices = b
            .column_by_name("price")
            .unwrap()
            .as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            out.push((
                ids.value(i),
                regions.value(i).to_owned(),
                prices.value(i).to_bits(),
            ));
        }
    }
    out.sort();
    out
}

/// The rows `batch(first, n)` holds, as [`Row`]s.
fn model_rows(first: i64, n: usize) -> Vec<Row> {
    row_set(&[batch(first, n)])
}

async fn by_region(dir: &std::path::Path) -> Table {
    Table::create(
        Location::local(dir).unwrap(),
        schema(),
        TableOptions::new().partition_by([PartitionField::identity("region")]),
    )
    .await
    .unwrap()
}

async fn paths(t: &Table) -> Vec<String> {
    let mut p: Vec<String> = t
        .files(None, None)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    p.sort();
    p
}

#[tokio::test]
async fn delete_by_predicate_rewrites_only_matching_files_and_keeps_history() {
    let dir = tempfile::tempdir().unwrap();
    let t = by_region(dir.path()).await;
    t.append(vec![batch(0, 400)]).await.unwrap();
    t.append(vec![batch(400, 400)]).await.unwrap();
    let before = paths(&t).await;
    let v_before = t.version().await.unwrap();
    let eu_files: Vec<String> = t
        .files(None, Some(&col("region").eq("eu")))
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(eu_files.len(), 2);

    let p = col("region").eq("eu").and(col("price").lt(10.0));
    let out = t.delete_where(&p).await.unwrap();
    let all = model_rows(0, 800);
    let matches = |r: &Row| r.1 == "eu" && f64::from_bits(r.2) < 10.0;
    let want: Vec<Row> = all.iter().filter(|r| !matches(r)).cloned().collect();
    assert_eq!(out.rows_affected, (all.len() - want.len()) as u64);
    assert!(out.rows_affected > 0);
    assert_eq!(out.version, Some(v_before + 1));
    assert_eq!(row_set(&collect(&t, ScanRequest::new()).await), want);

    // Files of the other regions keep their paths; the two eu files were replaced.
    let after = paths(&t).await;
    let kept: Vec<&String> = before.iter().filter(|p| !eu_files.contains(p)).collect();
    assert_eq!(kept.len(), before.len() - 2);
    assert!(kept.iter().all(|p| after.contains(p)));
    assert!(eu_files.iter().all(|p| !after.contains(p)));
    assert_eq!(after.len(), before.len());

    // Time travel still shows the deleted rows.
    let old = collect(&t, ScanRequest::new().at_version(v_before)).await;
    assert_eq!(row_set(&old), all);
}

#[tokio::test]
async fn a_delete_on_partition_columns_removes_whole_files_without_rewriting() {
    let dir = tempfile::tempdir().unwrap();
    let t = by_region(dir.path()).await;
    t.append(vec![batch(0, 400)]).await.unwrap();
    t.append(vec![batch(400, 400)]).await.unwrap();
    let staged = t.stage_delete(&col("region").eq("us")).await.unwrap();
    assert_eq!(staged.files_removed(), 2);
    assert_eq!(staged.files_added(), 0);
    assert_eq!(staged.rows_affected(), 200);
    let out = staged.commit().await.unwrap();
    assert_eq!(out.rows_affected, 200);
    let got = collect(&t, ScanRequest::new()).await;
    let want: Vec<Row> = model_rows(0, 800)
        .into_iter()
        .filter(|r| r.1 != "us")
        .collect();
    assert_eq!(row_set(&got), want);
}

#[tokio::test]
async fn update_changes_only_matched_rows_and_keeps_the_row_count() {
    let dir = tempfile::tempdir().unwrap();
    let t = by_region(dir.path()).await;
    t.append(vec![batch(0, 300)]).await.unwrap();
    let p = col("region").eq("apac").and(col("order_id").lt(100i64));
    let plus_one = Assignment::computed(
        "price",
        Arc::new(|rows: &RecordBatch| {
            let c = rows
                .column_by_name("price")
                .unwrap()
                .as_primitive::<Float64Type>();
            Ok(Arc::new(c.unary::<_, Float64Type>(|v| v + 1000.0)) as ArrayRef)
        }),
    );
    let out = t.update_where(&p, &[plus_one]).await.unwrap();
    let want: Vec<Row> = model_rows(0, 300)
        .into_iter()
        .map(|(id, region, price)| {
            if region == "apac" && id < 100 {
                (id, region, (f64::from_bits(price) + 1000.0).to_bits())
            } else {
                (id, region, price)
            }
        })
        .collect();
    assert_eq!(out.rows_affected, 25);
    let got = collect(&t, ScanRequest::new()).await;
    assert_eq!(rows(&got), 300);
    assert_eq!(row_set(&got), want);

    // Assigning the identity partition column moves the rows to the new partition.
    let out = t
        .update_where(
            &col("order_id").eq(7i64),
            &[Assignment::scalar("region", "eu")],
        )
        .await
        .unwrap();
    assert_eq!(out.rows_affected, 1);
    let eu = collect(
        &t,
        ScanRequest::new().with_predicate(col("region").eq("eu")),
    )
    .await;
    assert!(ints(&eu, "order_id").contains(&7));
    assert_eq!(rows(&collect(&t, ScanRequest::new()).await), 300);
}

#[tokio::test]
async fn bad_mutations_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new().partition_by([PartitionField::day("ts")]),
    )
    .await
    .unwrap();
    t.append(vec![batch(0, 30)]).await.unwrap();
    let v = t.version().await.unwrap();
    let kind = |r: lakehouse_core::Result<lakehouse_core::MutationOutcome>| r.unwrap_err().kind();
    assert_eq!(
        kind(t.delete_where(&col("nope").eq(1i64)).await),
        ErrorKind::ColumnNotFound
    );
    let derived = t.partitioning().into_iter().next().map(|f| f.name).unwrap();
    assert_eq!(
        kind(
            t.update_where(
                &Predicate::Literal(true),
                &[Assignment::scalar(derived, 1i32)]
            )
            .await
        ),
        ErrorKind::Unsupported
    );
    assert_eq!(
        kind(
            t.update_where(
                &Predicate::Literal(true),
                &[Assignment::scalar("order_id", lakehouse_core::Scalar::Null)]
            )
            .await
        ),
        ErrorKind::SchemaMismatch
    );
    assert_eq!(t.version().await.unwrap(), v);
}

#[tokio::test]
async fn a_delete_matching_nothing_makes_no_commit() {
    let dir = tempfile::tempdir().unwrap();
    let t = by_region(dir.path()).await;
    t.append(vec![batch(0, 100)]).await.unwrap();
    let v = t.version().await.unwrap();
    let files = paths(&t).await;
    let on_disk = crate::common::files_under(dir.path());
    let out = t.delete_where(&col("order_id").lt(0i64)).await.unwrap();
    assert_eq!(out.rows_affected, 0);
    assert_eq!(out.version, None);
    let out = t
        .update_where(
            &col("region").eq("mars"),
            &[Assignment::scalar("price", 1.0)],
        )
        .await
        .unwrap();
    assert_eq!(out.version, None);
    assert_eq!(t.version().await.unwrap(), v);
    assert_eq!(paths(&t).await, files);
    assert_eq!(crate::common::files_under(dir.path()), on_disk);
}

#[tokio::test]
async fn a_delete_of_every_row_removes_every_file_partitioned_or_not() {
    for partitioned in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let t = if partitioned {
            by_region(dir.path()).await
        } else {
            Table::create(
                Location::local(dir.path()).unwrap(),
                schema(),
                TableOptions::new(),
            )
            .await
            .unwrap()
        };
        t.append(vec![batch(0, 100)]).await.unwrap();
        t.append(vec![batch(100, 50)]).await.unwrap();
        // `DELETE FROM t` and `TRUNCATE t`: a predicate on no column.
        let out = t.delete_where(&Predicate::Literal(true)).await.unwrap();
        assert_eq!(out.rows_affected, 150, "partitioned: {partitioned}");
        assert_eq!(out.version, Some(3));
        assert!(paths(&t).await.is_empty());
        assert_eq!(rows(&collect(&t, ScanRequest::new()).await), 0);
        let out = t.delete_where(&Predicate::Literal(false)).await.unwrap();
        assert_eq!((out.rows_affected, out.version), (0, None));
    }
}

#[tokio::test]
async fn a_concurrent_append_survives_a_delete_and_nothing_is_resurrected() {
    let dir = tempfile::tempdir().unwrap();
    let t1 = by_region(dir.path()).await;
    t1.append(vec![batch(0, 200)]).await.unwrap();
    let t2 = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    let staged = t1.stage_delete(&col("region").eq("eu")).await.unwrap();
    let read = staged.read_version();
    // Another handle appends between the delete's read and its commit.
    t2.append(vec![batch(1000, 200)]).await.unwrap();
    let out = staged.commit().await.unwrap();
    assert_eq!(out.rows_affected, 50);
    assert_eq!(out.version, Some(read + 2));
    let want: Vec<Row> = model_rows(0, 200)
        .into_iter()
        .filter(|r| r.1 != "eu")
        .chain(model_rows(1000, 200))
        .collect::<Vec<_>>();
    let mut want = want;
    want.sort();
    let reopened = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    assert_eq!(row_set(&collect(&reopened, ScanRequest::new()).await), want);
    assert_eq!(row_set(&collect(&t2, ScanRequest::new()).await), want);
}

#[tokio::test]
async fn two_deletes_of_the_same_file_conflict_and_a_rerun_rebases() {
    let dir = tempfile::tempdir().unwrap();
    let t1 = by_region(dir.path()).await;
    t1.append(vec![batch(0, 200)]).await.unwrap();
    let t2 = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    // Orders 5 and 9 are both in the `us` file.
    let s1 = t1.stage_delete(&col("order_id").eq(5i64)).await.unwrap();
    let s2 = t2.stage_delete(&col("order_id").eq(9i64)).await.unwrap();
    let v = s1.commit().await.unwrap().version.unwrap();
    let files_before = crate::common::files_under(dir.path()).len();
    let err = s2.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    // The loser wrote nothing to the log and deleted its staged file.
    assert_eq!(t2.version().await.unwrap(), v);
    assert_eq!(
        crate::common::files_under(dir.path()).len(),
        files_before - 1
    );
    // Run again, the delete reads the new version and commits.
    let out = t2.delete_where(&col("order_id").eq(9i64)).await.unwrap();
    assert_eq!(out.rows_affected, 1);
    let ids = ints(&collect(&t1, ScanRequest::new()).await, "order_id");
    let want: Vec<i64> = (0..200).filter(|i| *i != 5 && *i != 9).collect();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn delta_rs_reads_the_rows_after_deletes_and_updates() {
    let Some(python) = peers_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let t = by_region(dir.path()).await;
    t.append(vec![batch(0, 500)]).await.unwrap();
    t.delete_where(&col("region").eq("us")).await.unwrap();
    t.delete_where(&col("price").lt(5.0)).await.unwrap();
    t.update_where(
        &col("region").eq("eu"),
        &[Assignment::scalar("price", 1.25)],
    )
    .await
    .unwrap();
    let ours = collect(&t, ScanRequest::new()).await;
    let ids: Vec<f64> = ints(&ours, "order_id").iter().map(|i| *i as f64).collect();
    for (column, want) in [
        ("price", sum_f64(&ours, "price")),
        ("order_id", ids.iter().sum::<f64>()),
    ] {
        let v = run_script(
            &python,
            "read_delta.py",
            &[dir.path().to_str().unwrap(), column],
        );
        assert_eq!(v["version"].as_u64(), Some(t.version().await.unwrap()));
        assert_eq!(v["deltars_rows"].as_u64(), Some(rows(&ours) as u64), "{v}");
        let sum = v["deltars_sum"].as_f64().unwrap();
        assert!((sum - want).abs() < 1e-6, "{column}: {sum} vs {want}");
    }
}

/// A predicate of the property test, with its evaluation on a model row.
#[derive(Debug, Clone)]
enum P {
    Region(usize),
    IdLt(i64),
    PriceGt(f64),
    RegionAndIdLt(usize, i64),
}

const REGIONS: [&str; 4] = ["eu", "us", "apac", "latam"];

impl P {
    fn predicate(&self) -> Predicate {
        match self {
            P::Region(r) => col("region").eq(REGIONS[*r]),
            P::IdLt(k) => col("order_id").lt(*k),
            P::PriceGt(x) => col("price").gt(*x),
            P::RegionAndIdLt(r, k) => col("region").eq(REGIONS[*r]).and(col("order_id").lt(*k)),
        }
    }

    fn eval(&self, r: &Row) -> bool {
        match self {
            P::Region(x) => r.1 == REGIONS[*x],
            P::IdLt(k) => r.0 < *k,
            P::PriceGt(x) => f64::from_bits(r.2) > *x,
            P::RegionAndIdLt(x, k) => r.1 == REGIONS[*x] && r.0 < *k,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Delete(P),
    /// price = price * 2 + 1.
    UpdatePrice(P),
    /// region = REGIONS[i] (moves rows between partitions).
    UpdateRegion(P, usize),
}

fn p_strategy() -> impl Strategy<Value = P> {
    prop_oneof![
        (0..4usize).prop_map(P::Region),
        (0..120i64).prop_map(P::IdLt),
        (0..60u32).prop_map(|x| P::PriceGt(f64::from(x))),
        ((0..4usize), (0..120i64)).prop_map(|(r, k)| P::RegionAndIdLt(r, k)),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1..30usize).prop_map(Op::Append),
        p_strategy().prop_map(Op::Delete),
        p_strategy().prop_map(Op::UpdatePrice),
        (p_strategy(), 0..4usize).prop_map(|(p, r)| Op::UpdateRegion(p, r)),
    ]
}

fn price_fn() -> Assignment {
    Assignment::computed(
        "price",
        Arc::new(|rows: &RecordBatch| {
            let c = rows
                .column_by_name("price")
                .unwrap()
                .as_primitive::<Float64Type>();
            Ok(Arc::new(Float64Array::from_iter(
                c.iter().map(|v| v.map(|v| v * 2.0 + 1.0)),
            )) as ArrayRef)
        }),
    )
}

async fn run_ops(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let t = by_region(dir.path()).await;
    let m = MemoryTable::new("model", schema());
    let mut model: Vec<Row> = Vec::new();
    let mut next_id = 0i64;
    for op in ops {
        let (want_affected, ours, mem) = match &op {
            Op::Append(n) => {
                let b = batch(next_id, *n);
                model.extend(model_rows(next_id, *n));
                next_id += *n as i64;
                t.append(vec![b.clone()]).await.unwrap();
                m.append(vec![b], None).await.unwrap();
                continue;
            }
            Op::Delete(p) => {
                let before = model.len();
                model.retain(|r| !p.eval(r));
                let pred = p.predicate();
                (
                    (before - model.len()) as u64,
                    t.delete_where(&pred).await.unwrap(),
                    m.delete_where(&pred).await.unwrap(),
                )
            }
            Op::UpdatePrice(p) => {
                let mut n = 0;
                for r in model.iter_mut().filter(|r| p.eval(r)) {
                    r.2 = (f64::from_bits(r.2) * 2.0 + 1.0).to_bits();
                    n += 1;
                }
                let pred = p.predicate();
                (
                    n,
                    t.update_where(&pred, &[price_fn()]).await.unwrap(),
                    m.update_where(&pred, &[price_fn()]).await.unwrap(),
                )
            }
            Op::UpdateRegion(p, region) => {
                let mut n = 0;
                for r in model.iter_mut().filter(|r| p.eval(r)) {
                    r.1 = REGIONS[*region].to_owned();
                    n += 1;
                }
                let pred = p.predicate();
                let a = [Assignment::scalar("region", REGIONS[*region])];
                (
                    n,
                    t.update_where(&pred, &a).await.unwrap(),
                    m.update_where(&pred, &a).await.unwrap(),
                )
            }
        };
        assert_eq!(ours.rows_affected, want_affected, "{op:?}");
        assert_eq!(mem.rows_affected, want_affected, "{op:?}");
        assert_eq!(ours.version.is_some(), want_affected > 0, "{op:?}");
        assert_eq!(mem.version.is_some(), want_affected > 0, "{op:?}");
        model.sort();
        assert_eq!(
            row_set(&collect(&t, ScanRequest::new()).await),
            model,
            "{op:?}"
        );
        assert_eq!(
            row_set(&collect(&m, ScanRequest::new()).await),
            model,
            "{op:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn random_mutations_match_a_vec_model_and_memory_table(
        ops in proptest::collection::vec(op_strategy(), 1..8)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_ops(ops));
    }
}

#[test]
fn nulls_in_predicates_do_not_match() {
    let b = batch(0, 4);
    let with_null = RecordBatch::try_new(
        b.schema(),
        b.columns()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 3 {
                    Arc::new(Float64Array::from(vec![None, Some(1.0), None, Some(9.0)])) as ArrayRef
                } else {
                    c.clone()
                }
            })
            .collect(),
    )
    .unwrap();
    let (out, n) =
        lakehouse_core::mutate_batch(&with_null, &col("price").lt(5.0).negate(), None).unwrap();
    assert_eq!(n, 1);
    assert_eq!(out.num_rows(), 3);
    assert_eq!(out.column(3).null_count(), 2);
}

/// The actions of log entry `v` of the table in `dir`.
fn log_entry(dir: &std::path::Path, v: u64) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join(format!("_delta_log/{v:020}.json"))).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_entry(dir: &std::path::Path, v: u64, actions: &[serde_json::Value]) {
    let text: Vec<String> = actions.iter().map(|a| a.to_string()).collect();
    std::fs::write(
        dir.join(format!("_delta_log/{v:020}.json")),
        text.join("\n") + "\n",
    )
    .unwrap();
}

/// A table by region of orders 0..40 whose `eu` file has an inline deletion vector
/// hiding its first two rows (commit 2).
async fn table_with_dv(dir: &std::path::Path) -> Table {
    use serde_json::json;
    let t = by_region(dir).await;
    t.append(vec![batch(0, 40)]).await.unwrap();
    let adds: Vec<serde_json::Value> = log_entry(dir, 1)
        .into_iter()
        .filter_map(|a| a.get("add").cloned())
        .collect();
    let eu = adds
        .iter()
        .find(|a| a["partitionValues"]["region"] == "eu")
        .unwrap()
        .clone();
    let mut new = eu.clone();
    new["deletionVector"] = crate::delta_fixtures::inline_dv(&[0, 1]);
    write_entry(
        dir,
        2,
        &[
            json!({"commitInfo": {"timestamp": 2, "operation": "DELETE"}}),
            json!({"protocol": {
                "minReaderVersion": 3, "minWriterVersion": 7,
                "readerFeatures": ["timestampNtz", "deletionVectors"],
                "writerFeatures": ["timestampNtz", "deletionVectors"],
            }}),
            json!({"remove": {"path": eu["path"], "deletionTimestamp": 2, "dataChange": true}}),
            json!({"add": new}),
        ],
    );
    Table::open(Location::local(dir).unwrap()).await.unwrap()
}

#[tokio::test]
async fn mutations_of_files_with_deletion_vectors_do_not_resurrect_rows() {
    // A row-level delete rewrites the file with the vector applied.
    let dir = tempfile::tempdir().unwrap();
    let t = table_with_dv(dir.path()).await;
    let visible = ints(&collect(&t, ScanRequest::new()).await, "order_id");
    assert_eq!(visible.len(), 38);
    let out = t.delete_where(&col("order_id").lt(20i64)).await.unwrap();
    let want: Vec<i64> = visible.iter().copied().filter(|i| *i >= 20).collect();
    assert_eq!(out.rows_affected as usize, visible.len() - want.len());
    let reopened = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        ints(&collect(&reopened, ScanRequest::new()).await, "order_id"),
        want
    );

    // A partition-only delete removes the file whole and counts only its live rows.
    let dir = tempfile::tempdir().unwrap();
    let t = table_with_dv(dir.path()).await;
    let out = t.delete_where(&col("region").eq("eu")).await.unwrap();
    assert_eq!(out.rows_affected, 8);
    assert_eq!(rows(&collect(&t, ScanRequest::new()).await), 30);
    // An update of the rewritten rows keeps the hidden ones hidden.
    let dir = tempfile::tempdir().unwrap();
    let t = table_with_dv(dir.path()).await;
    let out = t
        .update_where(&col("region").eq("eu"), &[Assignment::scalar("price", 0.0)])
        .await
        .unwrap();
    assert_eq!(out.rows_affected, 8);
    assert_eq!(rows(&collect(&t, ScanRequest::new()).await), 38);
}

#[tokio::test]
async fn append_only_and_change_data_feed_tables_refuse_mutations() {
    for key in ["delta.appendOnly", "delta.enableChangeDataFeed"] {
        let dir = tempfile::tempdir().unwrap();
        let t = by_region(dir.path()).await;
        t.append(vec![batch(0, 20)]).await.unwrap();
        let mut meta = log_entry(dir.path(), 0)
            .into_iter()
            .find_map(|a| a.get("metaData").cloned())
            .unwrap();
        meta["configuration"][key] = serde_json::json!("true");
        write_entry(
            dir.path(),
            2,
            &[
                serde_json::json!({"commitInfo": {"timestamp": 2, "operation": "SET TBLPROPERTIES"}}),
                serde_json::json!({ "metaData": meta }),
            ],
        );
        let t = Table::open(Location::local(dir.path()).unwrap())
            .await
            .unwrap();
        let err = t.delete_where(&col("order_id").lt(5i64)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{key}: {err}");
        assert_eq!(t.version().await.unwrap(), 2);
        assert_eq!(rows(&collect(&t, ScanRequest::new()).await), 20);
    }
}

/// Two handles deleting different rows of the same file at once: whichever loses the
/// race re-reads and commits again (the trait methods re-run on a conflict), so both
/// deletes land and no row comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_deletes_through_the_trait_both_land() {
    let dir = tempfile::tempdir().unwrap();
    let t1 = by_region(dir.path()).await;
    t1.append(vec![batch(0, 200)]).await.unwrap();
    let t2 = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    let mut gone = Vec::new();
    // Pairs of `us` orders (i % 4 == 1), all in one file.
    for round in 0..4i64 {
        let (a, b) = (1 + 8 * round, 5 + 8 * round);
        let (pa, pb) = (col("order_id").eq(a), col("order_id").eq(b));
        let (ra, rb) = tokio::join!(t1.delete_where(&pa), t2.delete_where(&pb));
        assert_eq!(ra.unwrap().rows_affected, 1);
        assert_eq!(rb.unwrap().rows_affected, 1);
        gone.extend([a, b]);
    }
    let reopened = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    let ids = ints(&collect(&reopened, ScanRequest::new()).await, "order_id");
    let want: Vec<i64> = (0..200).filter(|i| !gone.contains(i)).collect();
    assert_eq!(ids, want);
}

// ---------------------------------------------------------------------------------
// Deletion vectors written by this crate

async fn dv_table(dir: &std::path::Path) -> Table {
    Table::create(
        Location::local(dir).unwrap(),
        schema(),
        TableOptions::new()
            .partition_by([PartitionField::identity("region")])
            .deletion_vectors(true),
    )
    .await
    .unwrap()
}

/// The `add` actions of log entry `v`, by path.
fn adds_of(dir: &std::path::Path, v: u64) -> Vec<serde_json::Value> {
    log_entry(dir, v)
        .into_iter()
        .filter_map(|a| a.get("add").cloned())
        .collect()
}

fn removes_of(dir: &std::path::Path, v: u64) -> Vec<serde_json::Value> {
    log_entry(dir, v)
        .into_iter()
        .filter_map(|a| a.get("remove").cloned())
        .collect()
}

#[tokio::test]
async fn deletes_and_updates_write_deletion_vectors_that_merge() {
    let dir = tempfile::tempdir().unwrap();
    let t = dv_table(dir.path()).await;
    let create = log_entry(dir.path(), 0);
    let protocol = create.iter().find_map(|a| a.get("protocol")).unwrap();
    assert_eq!(protocol["minReaderVersion"], 3);
    assert!(
        protocol["readerFeatures"]
            .as_array()
            .unwrap()
            .contains(&"deletionVectors".into())
    );
    let meta = create.iter().find_map(|a| a.get("metaData")).unwrap();
    assert_eq!(meta["configuration"]["delta.enableDeletionVectors"], "true");
    t.append(vec![batch(0, 400)]).await.unwrap();
    let before = paths(&t).await;
    let mut model = model_rows(0, 400);

    // A delete in one file: that file gets a vector, no file is written.
    let p = col("region").eq("eu").and(col("price").lt(10.0));
    let staged = t.stage_delete(&p).await.unwrap();
    assert_eq!(
        (
            staged.files_removed(),
            staged.files_added(),
            staged.deletion_vectors()
        ),
        (1, 0, 1)
    );
    let out = staged.commit().await.unwrap();
    model.retain(|r| !(r.1 == "eu" && f64::from_bits(r.2) < 10.0));
    assert_eq!(out.rows_affected, 400 - model.len() as u64);
    assert_eq!(paths(&t).await, before);
    let (add, remove) = (&adds_of(dir.path(), 2)[0], &removes_of(dir.path(), 2)[0]);
    assert_eq!(add["path"], remove["path"]);
    assert!(remove.get("deletionVector").is_none());
    let dv1 = add["deletionVector"].clone();
    assert_eq!(dv1["storageType"], "i");
    assert_eq!(dv1["cardinality"], out.rows_affected);
    let stats: serde_json::Value = serde_json::from_str(add["stats"].as_str().unwrap()).unwrap();
    assert_eq!(stats["numRecords"], 100, "the physical count");
    assert_eq!(stats["tightBounds"], false);
    assert_eq!(row_set(&collect(&t, ScanRequest::new()).await), model);

    // A second delete of the same file merges with its vector; the remove carries the
    // old one.
    let out = t
        .delete_where(&col("region").eq("eu").and(col("order_id").lt(200i64)))
        .await
        .unwrap();
    let n = model.len();
    model.retain(|r| !(r.1 == "eu" && r.0 < 200));
    assert_eq!(out.rows_affected, (n - model.len()) as u64);
    let (add, remove) = (&adds_of(dir.path(), 3)[0], &removes_of(dir.path(), 3)[0]);
    assert_eq!(remove["deletionVector"], dv1);
    assert_eq!(
        add["deletionVector"]["cardinality"],
        100 - model.iter().filter(|r| r.1 == "eu").count()
    );

    // An update: a vector for the old rows of the us file, a new file for the new ones.
    let staged = t
        .stage_update(
            &col("region").eq("us").and(col("order_id").lt(100i64)),
            &[Assignment::scalar("price", 1.25)],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            staged.files_removed(),
            staged.files_added(),
            staged.deletion_vectors()
        ),
        (1, 1, 1)
    );
    let out = staged.commit().await.unwrap();
    assert_eq!(out.rows_affected, 25);
    for r in model.iter_mut().filter(|r| r.1 == "us" && r.0 < 100) {
        r.2 = 1.25f64.to_bits();
    }
    model.sort();
    assert_eq!(row_set(&collect(&t, ScanRequest::new()).await), model);
    assert_eq!(rows(&collect(&t, ScanRequest::new()).await), model.len());
    let live: u64 = t
        .statistics(None)
        .await
        .unwrap()
        .files
        .iter()
        .map(|f| f.num_rows)
        .sum();
    assert_eq!(live, model.len() as u64, "statistics count live rows");

    // Reopened (kernel's replay) and with a predicate, the same rows; time travel to
    // before the deletes shows them all.
    let reopened = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        row_set(&collect(&reopened, ScanRequest::new()).await),
        model
    );
    let cheap: Vec<Row> = model.iter().filter(|r| r.0 < 50).cloned().collect();
    assert_eq!(
        row_set(
            &collect(
                &reopened,
                ScanRequest::new().with_predicate(col("order_id").lt(50i64))
            )
            .await
        ),
        cheap
    );
    assert_eq!(
        row_set(&collect(&reopened, ScanRequest::new().at_version(1)).await),
        model_rows(0, 400)
    );
    // A delete of every remaining row of a file removes it without a vector.
    let out = t.delete_where(&col("region").eq("eu")).await.unwrap();
    assert_eq!(
        out.rows_affected,
        model.iter().filter(|r| r.1 == "eu").count() as u64
    );
    assert!(adds_of(dir.path(), out.version.unwrap()).is_empty());
}

#[tokio::test]
async fn row_changes_report_the_rows_deletes_and_updates_removed() {
    for dv in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let t = if dv {
            dv_table(dir.path()).await
        } else {
            by_region(dir.path()).await
        };
        t.append(vec![batch(0, 200)]).await.unwrap();
        let from = t.version().await.unwrap();
        t.append(vec![batch(200, 8)]).await.unwrap();
        t.delete_where(&col("order_id").lt(10i64)).await.unwrap();
        t.update_where(
            &col("order_id").eq(50i64),
            &[Assignment::scalar("price", 0.0)],
        )
        .await
        .unwrap();
        // One appended row deleted again: neither added nor removed.
        t.delete_where(&col("order_id").eq(201i64)).await.unwrap();
        let c = t.row_changes_since(from).await.unwrap();
        assert_eq!(c.to_version, t.version().await.unwrap());
        let added: Vec<RecordBatch> = c.added.try_collect().await.unwrap();
        let removed: Vec<RecordBatch> = c.removed.try_collect().await.unwrap();
        // Net: the table's rows at `from`, minus removed, plus added, are its rows now.
        let mut net = model_rows(0, 200);
        for r in row_set(&removed) {
            let i = net
                .iter()
                .position(|x| *x == r)
                .expect("a removed row existed");
            net.remove(i);
        }
        net.extend(row_set(&added));
        net.sort();
        assert_eq!(
            net,
            row_set(&collect(&t, ScanRequest::new()).await),
            "dv {dv}"
        );
        if dv {
            // Deletion vectors say exactly which rows went.
            let mut gone: Vec<i64> = (0..10).collect();
            gone.push(50);
            assert_eq!(ints(&removed, "order_id"), gone);
            let mut new: Vec<i64> = (200..208).filter(|i| *i != 201).collect();
            new.insert(0, 50);
            assert_eq!(ints(&added, "order_id"), new);
        }
        // The old contract still reports the removal.
        let err = t.changes_since(from).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NonAppendChange);
    }
}

#[tokio::test]
async fn optimize_purges_deletion_vectors_and_vacuum_keeps_the_files_versions_use() {
    use lakehouse_storage::{OptimizeOptions, VacuumOptions};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let t = dv_table(dir.path()).await;
    t.append(vec![batch(0, 2000)]).await.unwrap();
    // 300 rows of eu: too many to keep inline, so a deletion vector file.
    t.delete_where(&col("region").eq("eu").and(col("order_id").lt(1200i64)))
        .await
        .unwrap();
    let dv = adds_of(dir.path(), 2)[0]["deletionVector"].clone();
    assert_eq!(dv["storageType"], "u");
    let dv_files = || -> Vec<String> {
        crate::common::files_under(dir.path())
            .into_iter()
            .filter(|f| f.starts_with("deletion_vector_"))
            .collect()
    };
    assert_eq!(dv_files().len(), 1);
    let mut model = model_rows(0, 2000);
    model.retain(|r| !(r.1 == "eu" && r.0 < 1200));
    let short = VacuumOptions::new()
        .retention(Duration::ZERO)
        .allow_short_retention();
    let vacuumed = t.vacuum(short.clone()).await.unwrap();
    assert!(vacuumed.deleted.is_empty(), "{:?}", vacuumed.deleted);
    assert_eq!(dv_files().len(), 1, "a live file uses the vector");
    assert_eq!(row_set(&collect(&t, ScanRequest::new()).await), model);

    // Purging rewrites only the file with a vector (min size 0 leaves the others).
    let m = t
        .optimize(
            OptimizeOptions::new()
                .min_file_size(0)
                .purge_deletion_vectors(),
        )
        .await
        .unwrap();
    assert_eq!((m.files_removed, m.files_added, m.rows), (1, 1, 200));
    let v = m.version.unwrap();
    assert!(
        adds_of(dir.path(), v)
            .iter()
            .all(|a| a.get("deletionVector").is_none())
    );
    assert_eq!(removes_of(dir.path(), v)[0]["deletionVector"], dv);
    assert_eq!(row_set(&collect(&t, ScanRequest::new()).await), model);
    // Time travel before the purge still reads the vector.
    assert_eq!(
        row_set(&collect(&t, ScanRequest::new().at_version(v - 1)).await),
        model
    );
    // A purge is not a data change.
    let c = t.row_changes_since(v - 1).await.unwrap();
    let removed: Vec<RecordBatch> = c.removed.try_collect().await.unwrap();
    assert_eq!(rows(&removed), 0);
    // Now nothing live uses the vector file: a vacuum past the retention deletes it.
    let vacuumed = t.vacuum(short).await.unwrap();
    assert!(
        vacuumed
            .deleted
            .iter()
            .any(|f| f.starts_with("deletion_vector_"))
    );
    assert!(dv_files().is_empty());
    assert_eq!(row_set(&collect(&t, ScanRequest::new()).await), model);
}

#[tokio::test]
async fn delta_rs_reads_the_deletion_vectors_this_crate_writes() {
    let Some(python) = peers_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let t = dv_table(dir.path()).await;
    t.append(vec![batch(0, 2000)]).await.unwrap();
    // Inline (a few rows), in a file (hundreds), merged, and an update.
    t.delete_where(&col("order_id").lt(6i64)).await.unwrap();
    t.delete_where(&col("region").eq("us").and(col("order_id").lt(1500i64)))
        .await
        .unwrap();
    t.delete_where(&col("order_id").gt(1990i64)).await.unwrap();
    t.update_where(
        &col("region").eq("eu").and(col("order_id").lt(400i64)),
        &[Assignment::scalar("price", 1.25)],
    )
    .await
    .unwrap();
    let kinds: Vec<String> = (2..=4)
        .flat_map(|v| adds_of(dir.path(), v))
        .filter_map(|a| {
            a["deletionVector"]["storageType"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(
        kinds.iter().any(|k| k == "i") && kinds.iter().any(|k| k == "u"),
        "{kinds:?}"
    );
    let ours = collect(&t, ScanRequest::new()).await;
    let ids: Vec<f64> = ints(&ours, "order_id").iter().map(|i| *i as f64).collect();
    for (column, want) in [
        ("price", sum_f64(&ours, "price")),
        ("order_id", ids.iter().sum::<f64>()),
    ] {
        let v = run_script(
            &python,
            "read_delta_sql.py",
            &[dir.path().to_str().unwrap(), column],
        );
        assert_eq!(v["version"].as_u64(), Some(t.version().await.unwrap()));
        assert_eq!(v["deltars_rows"].as_u64(), Some(rows(&ours) as u64), "{v}");
        let sum = v["deltars_sum"].as_f64().unwrap();
        assert!((sum - want).abs() < 1e-6, "{column}: {sum} vs {want}");
    }
}

/// A delete without a condition (`Predicate::Literal(true)`, SQL's `DELETE FROM t`)
/// on tables with deletion vectors, partitioned or not: every file goes whole (the
/// copy-on-write cases are above). Found failing by the DuckDB comparison
/// (`examples/tests/dml_duckdb.rs`) before the fix of the batch without columns.
#[tokio::test]
async fn a_delete_of_every_row_with_deletion_vectors() {
    for partitioned in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut options = TableOptions::new().deletion_vectors(true);
        if partitioned {
            options = options.partition_by([PartitionField::identity("region")]);
        }
        let t = Table::create(Location::local(dir.path()).unwrap(), schema(), options)
            .await
            .unwrap();
        t.append(vec![batch(0, 5)]).await.unwrap();
        t.append(vec![batch(5, 5)]).await.unwrap();
        let out = t.delete_where(&Predicate::Literal(true)).await.unwrap();
        assert_eq!(out.rows_affected, 10, "partitioned {partitioned}");
        assert_eq!(out.version, Some(3));
        assert_eq!(rows(&collect(&t, ScanRequest::new()).await), 0);
        // Nothing left: a second delete commits nothing.
        let out = t.delete_where(&Predicate::Literal(true)).await.unwrap();
        assert_eq!(out.rows_affected, 0);
        assert_eq!(out.version, None);
    }
}
