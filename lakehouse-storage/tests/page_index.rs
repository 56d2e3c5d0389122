//! Scans that skip pages by the page index: row groups of 50,000 rows hold seven pages
//! of each column (the writer closes a page at 8,192 rows by default), so a predicate
//! on a sorted column reads one page of a row group. Every scan returns what filtering all
//! rows returns, with NaN and NULL in the float column and with deletion vectors.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use lakehouse_core::{Predicate, ScanRequest, TableSource, col};
use lakehouse_storage::{Location, Table, TableOptions};

use crate::common::{collect, ids};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
    ]))
}

/// `id` 0..50,000 in order; `x` = id, but NaN at 7 and 45,001 and NULL at 30,000.
fn rows() -> RecordBatch {
    let x: Float64Array = (0..50_000i64)
        .map(|i| match i {
            7 | 45_001 => Some(f64::NAN),
            30_000 => None,
            i => Some(i as f64),
        })
        .collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..50_000)),
            Arc::new(x),
        ],
    )
    .unwrap()
}

fn predicates() -> Vec<Predicate> {
    vec![
        col("id").eq(25_000i64),
        col("id").eq(45_001i64),
        col("id").between(39_990i64, 40_010i64),
        col("id").lt(100i64),
        col("id").gt(49_990i64),
        col("id").in_list([5i64, 20_005, 49_999]),
        col("id").gt_eq(19_999i64).and(col("id").lt_eq(20_001i64)),
        col("x").between(44_000.0, 46_000.0),
        col("x").gt(49_000.0),
        col("x").gt_eq(100.0).and(col("x").lt(200.0)),
        col("x").is_null(),
        col("id").gt(10_000i64).and(col("x").lt(10_010.0)),
        col("id").eq(3i64).or(col("x").gt(49_998.0)),
    ]
}

async fn assert_scans_match_filtering(t: &Table) {
    let all = collect(t, ScanRequest::new()).await;
    let all = concat_batches(&schema(), &all).unwrap();
    for p in predicates() {
        let want = ids(&[p.filter(&all).unwrap()]);
        let got = ids(&collect(t, ScanRequest::new().with_predicate(p.clone())).await);
        assert_eq!(got, want, "{p:?}");
    }
}

#[tokio::test]
async fn page_skipping_scans_return_what_filtering_returns() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new()
            .row_group_rows(50_000)
            .deletion_vectors(true),
    )
    .await
    .unwrap();
    t.append(vec![rows()]).await.unwrap();
    assert_scans_match_filtering(&t).await;
    // The answers themselves, for a few.
    let got = |p: Predicate| {
        let t = &t;
        async move { ids(&collect(t, ScanRequest::new().with_predicate(p)).await) }
    };
    assert_eq!(got(col("id").eq(25_000i64)).await, [25_000]);
    assert_eq!(
        got(col("x").gt(49_997.0)).await,
        [7, 45_001, 49_998, 49_999]
    );

    // Deleted rows (a deletion vector) and skipped pages together.
    let staged = t
        .stage_delete(&col("id").between(39_995i64, 40_005i64))
        .await
        .unwrap();
    assert!(
        staged.deletion_vectors() > 0,
        "the delete writes a deletion vector"
    );
    assert_eq!(staged.commit().await.unwrap().rows_affected, 11);
    assert_scans_match_filtering(&t).await;
    assert_eq!(
        got(col("id").between(39_990i64, 40_010i64)).await,
        [
            39_990, 39_991, 39_992, 39_993, 39_994, 40_006, 40_007, 40_008, 40_009, 40_010
        ]
    );
    assert_eq!(t.version().await.unwrap(), 2);
}

/// Pages per column chunk of each row group of every data file of `t`.
async fn pages_per_chunk(t: &Table, dir: &std::path::Path) -> Vec<usize> {
    let mut out = Vec::new();
    for f in t.files(None, None).await.unwrap() {
        let bytes = bytes::Bytes::from(std::fs::read(dir.join(&f.path)).unwrap());
        let md = parquet::file::metadata::ParquetMetaDataReader::new()
            .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required)
            .parse_and_finish(&bytes)
            .unwrap();
        for rg in md.offset_index().unwrap() {
            out.extend(rg.iter().map(|c| c.page_locations().len()));
        }
    }
    out
}

/// `page_rows` bounds the rows of every page, and the table keeps it for later writers.
#[tokio::test]
async fn page_rows_bound_pages_and_are_kept_by_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new().row_group_rows(50_000).page_rows(10_000),
    )
    .await
    .unwrap();
    t.append(vec![rows()]).await.unwrap();
    // 50,000 rows, two columns: five pages each.
    assert_eq!(pages_per_chunk(&t, dir.path()).await, [5, 5]);
    // Another handle writes with the table's setting.
    let again = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    again.append(vec![rows()]).await.unwrap();
    assert_eq!(pages_per_chunk(&again, dir.path()).await, [5, 5, 5, 5]);
    // The default.
    let d = tempfile::tempdir().unwrap();
    let t = Table::create(
        Location::local(d.path()).unwrap(),
        schema(),
        TableOptions::new().row_group_rows(50_000),
    )
    .await
    .unwrap();
    t.append(vec![rows()]).await.unwrap();
    assert_eq!(
        pages_per_chunk(&t, d.path()).await,
        [50_000usize.div_ceil(lakehouse_storage::DEFAULT_PAGE_ROWS); 2]
    );
}
