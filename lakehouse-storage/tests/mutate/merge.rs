//! `MERGE INTO` ([`TableMutator::merge`]): update, delete and insert in one commit, the
//! cardinality rule, partition pruning, conflicts with concurrent writers, delta-rs
//! reading the result, and a model-based property test against a `Vec` and
//! `MemoryTable`.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use lakehouse_core::{
    ErrorKind, MemoryTable, MergeAssignment, MergeFn, MergeOutcome, MergeRequest, MergeRows,
    ScanRequest, TableMutator, TableSink, TableSource, col,
};
use lakehouse_storage::{Location, PartitionField, Table, TableOptions};
use proptest::prelude::*;

use super::{REGIONS, Row, by_region, log_entry, model_rows, paths, row_set};
use crate::common::{batch, collect, files_under, ints, peers_python, rows, run_script, schema};

/// The source of the tests: `order_id`, `region`, `price` and `del` (delete the match).
fn source_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("price", DataType::Float64, false),
        Field::new("del", DataType::Boolean, false),
    ]))
}

fn source(rows: &[(i64, &str, f64, bool)]) -> RecordBatch {
    RecordBatch::try_new(
        source_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(BooleanArray::from(
                rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

/// `s.del`.
fn source_del() -> MergeFn {
    Arc::new(|rows: &MergeRows| Ok(rows.source.column_by_name("del").unwrap().clone()))
}

/// `t.price > x`.
fn target_price_gt(x: f64) -> MergeFn {
    Arc::new(move |rows: &MergeRows| {
        let p = rows
            .target
            .column_by_name("price")
            .unwrap()
            .as_primitive::<Float64Type>();
        Ok(Arc::new(BooleanArray::from_unary(p, |v| v > x)) as ArrayRef)
    })
}

/// `s.price < x`.
fn source_price_lt(x: f64) -> MergeFn {
    Arc::new(move |rows: &MergeRows| {
        let p = rows
            .source
            .column_by_name("price")
            .unwrap()
            .as_primitive::<Float64Type>();
        Ok(Arc::new(BooleanArray::from_unary(p, |v| v < x)) as ArrayRef)
    })
}

fn insert_values() -> Vec<MergeAssignment> {
    vec![
        MergeAssignment::source("order_id", "order_id"),
        MergeAssignment::source("region", "region"),
        MergeAssignment::source("price", "price"),
    ]
}

/// `MERGE ... ON t.order_id = s.order_id WHEN MATCHED AND s.del THEN DELETE WHEN
/// MATCHED [AND t.price > update_above] THEN UPDATE SET price = s.price WHEN NOT
/// MATCHED [AND s.price < insert_below] THEN INSERT (order_id, region, price)`.
fn upsert(
    src: Vec<RecordBatch>,
    update_above: Option<f64>,
    insert_below: Option<f64>,
) -> MergeRequest {
    MergeRequest::new(source_schema(), src)
        .on_key("order_id", "order_id")
        .when_matched_delete(Some(source_del()))
        .when_matched_update(
            update_above.map(target_price_gt),
            vec![MergeAssignment::source("price", "price")],
        )
        .when_not_matched_insert(insert_below.map(source_price_lt), insert_values())
}

/// What [`upsert`] does to `model`, or `None` when a target row matches twice.
/// `on_not_latam` adds `AND t.region <> 'latam'` to the ON clause.
fn model_upsert(
    model: &[Row],
    src: &[(i64, String, f64, bool)],
    update_above: Option<f64>,
    insert_below: Option<f64>,
    on_not_latam: bool,
) -> Option<(Vec<Row>, MergeOutcome)> {
    let matches =
        |t: &Row, s: &(i64, String, f64, bool)| t.0 == s.0 && (!on_not_latam || t.1 != "latam");
    let mut out = Vec::new();
    let mut outcome = MergeOutcome::default();
    for t in model {
        let hits: Vec<_> = src.iter().filter(|s| matches(t, s)).collect();
        match hits.as_slice() {
            [] => out.push(t.clone()),
            [s] if s.3 => outcome.rows_deleted += 1,
            [s] if update_above.is_none_or(|x| f64::from_bits(t.2) > x) => {
                outcome.rows_updated += 1;
                out.push((t.0, t.1.clone(), s.2.to_bits()));
            }
            [_] => out.push(t.clone()),
            _ => return None,
        }
    }
    for s in src {
        if !model.iter().any(|t| matches(t, s)) && insert_below.is_none_or(|x| s.2 < x) {
            outcome.rows_inserted += 1;
            out.push((s.0, s.1.clone(), s.2.to_bits()));
        }
    }
    out.sort();
    Some((out, outcome))
}

#[tokio::test]
async fn merge_updates_deletes_and_inserts_in_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let t = by_region(dir.path()).await;
    t.append(vec![batch(0, 200)]).await.unwrap();
    let v = t.version().await.unwrap();
    let before = paths(&t).await;
    // 5 (us) and 7 (latam) update, 6 (apac) is deleted, 1000 and 1001 are new; no
    // source row touches an `eu` order (ids divisible by 4).
    let src = [
        (5, "us", 900.0, false),
        (6, "apac", 0.0, true),
        (7, "latam", 700.0, false),
        (1000, "eu", 1.0, false),
        (1001, "us", 2.0, false),
    ];
    let owned: Vec<_> = src
        .iter()
        .map(|r| (r.0, r.1.to_owned(), r.2, r.3))
        .collect();
    let (want, want_outcome) =
        model_upsert(&model_rows(0, 200), &owned, None, None, false).unwrap();
    let out = t
        .merge(&upsert(vec![source(&src)], None, None))
        .await
        .unwrap();
    assert_eq!(out.rows_updated, 2);
    assert_eq!(out.rows_deleted, 1);
    assert_eq!(out.rows_inserted, 2);
    assert_eq!(out.rows_affected(), 5);
    assert_eq!(out.version, Some(v + 1));
    assert_eq!(
        MergeOutcome {
            version: None,
            ..out
        },
        want_outcome
    );
    assert_eq!(row_set(&collect(&t, ScanRequest::new()).await), want);

    // One commit: the us, apac and latam files replaced, the eu file kept, the
    // inserted rows in new files of their partitions.
    let actions = log_entry(dir.path(), v + 1);
    let op = actions.iter().find_map(|a| a.get("commitInfo")).unwrap();
    assert_eq!(op["operation"], "MERGE");
    let removed = actions.iter().filter(|a| a.get("remove").is_some()).count();
    let added = actions.iter().filter(|a| a.get("add").is_some()).count();
    assert_eq!((removed, added), (3, 5));
    let after = paths(&t).await;
    assert_eq!(
        before.iter().filter(|p| after.contains(p)).count(),
        1,
        "only the eu file is untouched"
    );
    // Time travel shows the rows before the merge.
    let old = collect(&t, ScanRequest::new().at_version(v)).await;
    assert_eq!(row_set(&old), model_rows(0, 200));
}

#[tokio::test]
async fn a_target_row_matched_twice_is_an_error_and_nothing_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let t = by_region(dir.path()).await;
    t.append(vec![batch(0, 100)]).await.unwrap();
    let v = t.version().await.unwrap();
    let on_disk = files_under(dir.path());
    let twice = source(&[
        (3, "latam", 1.0, false),
        (3, "latam", 2.0, false),
        (500, "eu", 1.0, false),
    ]);
    let err = t
        .merge(&upsert(vec![twice.clone()], None, None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.message().contains("more than one source row"), "{err}");
    assert_eq!(t.version().await.unwrap(), v);
    assert_eq!(files_under(dir.path()), on_disk, "staged files are deleted");

    // Without a WHEN MATCHED clause the duplicates only decide what is not inserted.
    let insert_only = MergeRequest::new(source_schema(), vec![twice])
        .on_key("order_id", "order_id")
        .when_not_matched_insert(None, insert_values());
    let out = t.merge(&insert_only).await.unwrap();
    assert_eq!((out.rows_inserted, out.rows_affected()), (1, 1));
    assert_eq!(
        ints(&collect(&t, ScanRequest::new()).await, "order_id").len(),
        101
    );

    // A merge that changes nothing commits nothing.
    let v = t.version().await.unwrap();
    let none = upsert(vec![source(&[(3, "latam", 1.0, false)])], Some(1e9), None);
    let out = t.merge(&none).await.unwrap();
    assert_eq!(out, MergeOutcome::default());
    assert_eq!(t.version().await.unwrap(), v);
}

#[tokio::test]
async fn a_merge_reads_only_the_partitions_and_files_of_the_source_keys() {
    let dir = tempfile::tempdir().unwrap();
    let t = by_region(dir.path()).await;
    t.append(vec![batch(0, 400)]).await.unwrap();
    t.append(vec![batch(400, 400)]).await.unwrap();
    // ON order_id and region: only the eu partition's two files can match; the
    // merge also moves order 8 to the us partition.
    let req = MergeRequest::new(
        source_schema(),
        vec![source(&[(8, "eu", 1.0, false), (12, "eu", 0.0, true)])],
    )
    .on_key("order_id", "order_id")
    .on_key("region", "region")
    .when_matched_delete(Some(source_del()))
    .when_matched_update(
        None,
        vec![
            MergeAssignment::scalar("region", "us"),
            MergeAssignment::source("price", "price"),
        ],
    );
    let staged = t.stage_merge(&req).await.unwrap();
    // Orders 8 and 12 are in the first eu file; the second (ids 400..800) is pruned
    // by its statistics, the other regions by their partition values.
    assert_eq!(staged.files_removed(), 1);
    assert_eq!(
        staged.files_added(),
        2,
        "the rewritten eu file and a us file"
    );
    let out = staged.commit().await.unwrap();
    assert_eq!((out.rows_updated, out.rows_deleted), (1, 1));
    let us = collect(
        &t,
        ScanRequest::new().with_predicate(col("region").eq("us")),
    )
    .await;
    assert!(ints(&us, "order_id").contains(&8));
    assert!(!ints(&collect(&t, ScanRequest::new()).await, "order_id").contains(&12));
    assert_eq!(rows(&collect(&t, ScanRequest::new()).await), 799);

    // A day-partitioned table refuses to assign its derived column.
    let dir = tempfile::tempdir().unwrap();
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new().partition_by([PartitionField::day("ts")]),
    )
    .await
    .unwrap();
    t.append(vec![batch(0, 10)]).await.unwrap();
    let derived = t.partitioning().into_iter().next().map(|f| f.name).unwrap();
    let bad = MergeRequest::new(source_schema(), vec![source(&[(1, "eu", 1.0, false)])])
        .on_key("order_id", "order_id")
        .when_matched_update(None, vec![MergeAssignment::scalar(derived, 1i32)]);
    let err = t.merge(&bad).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
}

#[tokio::test]
async fn bad_merges_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let t = by_region(dir.path()).await;
    t.append(vec![batch(0, 20)]).await.unwrap();
    let v = t.version().await.unwrap();
    let on_disk = files_under(dir.path());
    let src = || vec![source(&[(1, "us", 1.0, false), (99, "eu", 1.0, false)])];
    let base = || MergeRequest::new(source_schema(), src()).on_key("order_id", "order_id");
    let cases = [
        (base().on_key("nope", "order_id"), ErrorKind::ColumnNotFound),
        (base().on_key("order_id", "price"), ErrorKind::TypeMismatch),
        (
            base().when_matched_update(None, vec![MergeAssignment::source("price", "region")]),
            ErrorKind::TypeMismatch,
        ),
        (
            base().when_matched_update(
                None,
                vec![
                    MergeAssignment::scalar("price", 1.0),
                    MergeAssignment::scalar("price", 2.0),
                ],
            ),
            ErrorKind::InvalidInput,
        ),
        (
            // order_id is not nullable and not given.
            base().when_not_matched_insert(None, vec![MergeAssignment::source("price", "price")]),
            ErrorKind::SchemaMismatch,
        ),
        (
            // A computed value of the wrong type fails while matching.
            base().when_matched_update(
                None,
                vec![MergeAssignment::computed(
                    "price",
                    Arc::new(|r: &MergeRows| {
                        Ok(r.source.column_by_name("region").unwrap().clone())
                    }),
                )],
            ),
            ErrorKind::TypeMismatch,
        ),
        (
            MergeRequest::new(source_schema(), src())
                .when_not_matched_insert(None, insert_values()),
            ErrorKind::Unsupported,
        ),
    ];
    for (req, kind) in cases {
        let err = t.merge(&req).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{req:?}: {err}");
        let m = MemoryTable::new("m", schema());
        m.append(vec![batch(0, 20)], None).await.unwrap();
        assert_eq!(m.merge(&req).await.unwrap_err().kind(), kind, "{req:?}");
        assert_eq!(m.version().await.unwrap(), 1);
    }
    assert_eq!(t.version().await.unwrap(), v);
    assert_eq!(files_under(dir.path()), on_disk);
}

#[tokio::test]
async fn concurrent_appends_conflict_only_when_they_could_have_matched() {
    let dir = tempfile::tempdir().unwrap();
    let t1 = by_region(dir.path()).await;
    t1.append(vec![batch(0, 200)]).await.unwrap();
    let t2 = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    let req = upsert(
        vec![source(&[(5, "us", 1.0, false), (300, "us", 1.0, false)])],
        None,
        None,
    );

    // Orders 1000.. cannot be 5 or 300: the append survives and the merge commits.
    let staged = t1.stage_merge(&req).await.unwrap();
    let read = staged.read_version();
    t2.append(vec![batch(1000, 100)]).await.unwrap();
    let out = staged.commit().await.unwrap();
    assert_eq!(out.version, Some(read + 2));
    assert_eq!((out.rows_updated, out.rows_inserted), (1, 1));
    assert_eq!(rows(&collect(&t2, ScanRequest::new()).await), 301);

    // An append holding order 300 could have matched: a conflict, nothing committed,
    // the staged files deleted.
    let req = upsert(
        vec![source(&[(7, "latam", 2.0, false), (301, "us", 1.0, false)])],
        None,
        None,
    );
    let staged = t1.stage_merge(&req).await.unwrap();
    t2.append(vec![batch(301, 1)]).await.unwrap();
    let files = files_under(dir.path()).len();
    let v = t2.version().await.unwrap();
    let err = staged.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(t1.version().await.unwrap(), v);
    assert!(files_under(dir.path()).len() < files);
    // Through the trait the merge runs again on the new version: 301 now matches.
    let out = t1.merge(&req).await.unwrap();
    assert_eq!((out.rows_updated, out.rows_inserted), (2, 0));

    // A concurrent delete of a file the merge read is a conflict.
    let req = upsert(vec![source(&[(9, "us", 3.0, false)])], None, None);
    let staged = t1.stage_merge(&req).await.unwrap();
    t2.delete_where(&col("order_id").eq(13i64)).await.unwrap();
    let err = staged.commit().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
}

#[tokio::test]
async fn delta_rs_reads_the_rows_after_a_merge() {
    let Some(python) = peers_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let t = by_region(dir.path()).await;
    t.append(vec![batch(0, 300)]).await.unwrap();
    let src: Vec<(i64, &str, f64, bool)> = (0..40)
        .map(|i| (i * 9, REGIONS[(i % 4) as usize], i as f64, i % 5 == 0))
        .collect();
    t.merge(&upsert(vec![source(&src)], None, Some(30.0)))
        .await
        .unwrap();
    let ours = collect(&t, ScanRequest::new());
    let ours = ours.await;
    let ids: f64 = ints(&ours, "order_id").iter().map(|i| *i as f64).sum();
    let v = run_script(
        &python,
        "read_delta.py",
        &[dir.path().to_str().unwrap(), "order_id"],
    );
    assert_eq!(v["version"].as_u64(), Some(t.version().await.unwrap()));
    assert_eq!(v["deltars_rows"].as_u64(), Some(rows(&ours) as u64), "{v}");
    assert!(
        (v["deltars_sum"].as_f64().unwrap() - ids).abs() < 1e-6,
        "{v}"
    );
    let prices = crate::common::sum_f64(&ours, "price");
    let v = run_script(
        &python,
        "read_delta.py",
        &[dir.path().to_str().unwrap(), "price"],
    );
    assert!(
        (v["deltars_sum"].as_f64().unwrap() - prices).abs() < 1e-6,
        "{v}"
    );
}

#[derive(Debug, Clone)]
struct MergeOp {
    /// (order_id, region index, price, delete).
    src: Vec<(i64, usize, u8, bool)>,
    update_above: Option<u8>,
    insert_below: Option<u8>,
    on_not_latam: bool,
}

fn merge_op() -> impl Strategy<Value = MergeOp> {
    (
        proptest::collection::vec(
            (0..70i64, 0..4usize, 0..60u8, proptest::bool::weighted(0.2)),
            0..12,
        ),
        proptest::option::of(0..60u8),
        proptest::option::of(0..60u8),
        any::<bool>(),
    )
        .prop_map(|(src, update_above, insert_below, on_not_latam)| MergeOp {
            src,
            update_above,
            insert_below,
            on_not_latam,
        })
}

async fn run_merges(appends: Vec<usize>, ops: Vec<MergeOp>) {
    let dir = tempfile::tempdir().unwrap();
    let t = by_region(dir.path()).await;
    let m = MemoryTable::new("model", schema());
    let mut model: Vec<Row> = Vec::new();
    let mut next_id = 0i64;
    for (n, op) in appends.into_iter().zip(ops) {
        if n > 0 {
            t.append(vec![batch(next_id, n)]).await.unwrap();
            m.append(vec![batch(next_id, n)], None).await.unwrap();
            model.extend(model_rows(next_id, n));
            model.sort();
            next_id += n as i64;
        }
        let src: Vec<(i64, String, f64, bool)> = op
            .src
            .iter()
            .map(|s| (s.0, REGIONS[s.1].to_owned(), f64::from(s.2) + 0.25, s.3))
            .collect();
        let batch_rows: Vec<(i64, &str, f64, bool)> =
            src.iter().map(|s| (s.0, s.1.as_str(), s.2, s.3)).collect();
        let mut req = upsert(
            vec![source(&batch_rows)],
            op.update_above.map(f64::from),
            op.insert_below.map(f64::from),
        );
        if op.on_not_latam {
            req = req.on_target(col("region").not_eq("latam"));
        }
        let want = model_upsert(
            &model,
            &src,
            op.update_above.map(f64::from),
            op.insert_below.map(f64::from),
            op.on_not_latam,
        );
        let (ours, mem) = (t.merge(&req).await, m.merge(&req).await);
        match want {
            None => {
                assert_eq!(ours.unwrap_err().kind(), ErrorKind::InvalidInput, "{op:?}");
                assert_eq!(mem.unwrap_err().kind(), ErrorKind::InvalidInput, "{op:?}");
            }
            Some((rows, outcome)) => {
                let (ours, mem) = (ours.unwrap(), mem.unwrap());
                for got in [ours, mem] {
                    assert_eq!(
                        MergeOutcome {
                            version: None,
                            ..got
                        },
                        outcome,
                        "{op:?}"
                    );
                    assert_eq!(got.version.is_some(), outcome.rows_affected() > 0, "{op:?}");
                }
                model = rows;
            }
        }
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
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]
    #[test]
    fn random_merges_match_a_vec_model_and_memory_table(
        appends in proptest::collection::vec(0..40usize, 1..5),
        ops in proptest::collection::vec(merge_op(), 1..5),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run_merges(appends, ops));
    }
}
