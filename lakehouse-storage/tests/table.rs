//! Appends, scans, time travel, idempotency, concurrency and bad input.

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use lakehouse_core::{
    AppendOutcome, ErrorKind, ScanRequest, TableSink, TableSource, TxnId, col, conformance,
};
use lakehouse_storage::{Compression, Location, Table, TableOptions};

use crate::common::{batch, collect, ints, rows, schema, sum_f64};

#[tokio::test]
async fn conformance_in_memory_and_on_disk() {
    conformance::table(|s| async move {
        Table::create(Location::memory("t")?, s, TableOptions::new()).await
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    conformance::table(|s| {
        let sub = dir.path().join(format!(
            "t{}",
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        async move { Table::create(Location::local(sub)?, s, TableOptions::new()).await }
    })
    .await;
}

#[tokio::test]
async fn append_scan_project_limit_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new(),
    )
    .await
    .unwrap();
    let c1 = t
        .append(vec![batch(0, 1000), batch(1000, 500)])
        .await
        .unwrap();
    assert_eq!((c1.version, c1.rows), (1, 1500));
    let c2 = t.append(vec![batch(1500, 500)]).await.unwrap();
    assert_eq!(c2.version, 2);

    let all = collect(&t, ScanRequest::new()).await;
    assert_eq!(ints(&all, "order_id"), (0..2000).collect::<Vec<_>>());

    let some = collect(
        &t,
        ScanRequest::new()
            .with_projection(["price", "order_id"])
            .with_predicate(
                col("order_id").lt(10i64).or(col("region")
                    .eq("latam")
                    .and(col("order_id").gt_eq(1990i64))),
            ),
    )
    .await;
    assert_eq!(some[0].schema().field(0).name(), "price");
    let mut want: Vec<i64> = (0..10).collect();
    want.extend((1990..2000).filter(|i| i % 4 == 3));
    assert_eq!(ints(&some, "order_id"), want);

    assert_eq!(
        rows(&collect(&t, ScanRequest::new().with_limit(7)).await),
        7
    );
    assert_eq!(
        rows(&collect(&t, ScanRequest::new().with_limit(0)).await),
        0
    );

    let again = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    assert_eq!(again.version().await.unwrap(), 2);
    let all2 = collect(&again, ScanRequest::new()).await;
    assert_eq!(sum_f64(&all2, "price"), sum_f64(&all, "price"));
}

/// `SELECT COUNT(*)` scans ask for no column: the rows still come, as batches without
/// columns, before and after a predicate and on partitioned tables.
#[tokio::test]
async fn an_empty_projection_counts_rows() {
    let t = Table::create(
        Location::memory("count").unwrap(),
        schema(),
        TableOptions::new().partition_by([lakehouse_storage::PartitionField::identity("region")]),
    )
    .await
    .unwrap();
    t.append(vec![batch(0, 1000)]).await.unwrap();
    let none: [&str; 0] = [];
    let all = collect(&t, ScanRequest::new().with_projection(none)).await;
    assert_eq!(rows(&all), 1000);
    assert!(all.iter().all(|b| b.num_columns() == 0));
    let eu = collect(
        &t,
        ScanRequest::new()
            .with_projection(none)
            .with_predicate(col("region").eq("eu").and(col("order_id").lt(100i64))),
    )
    .await;
    assert_eq!(rows(&eu), 25);
    assert!(eu.iter().all(|b| b.num_columns() == 0));
}

#[tokio::test]
async fn time_travel_by_version_and_timestamp() {
    let t = Table::create(
        Location::memory("tt").unwrap(),
        schema(),
        TableOptions::new(),
    )
    .await
    .unwrap();
    t.append(vec![batch(0, 10)]).await.unwrap();
    let between = chrono_ms();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    t.append(vec![batch(10, 10)]).await.unwrap();
    assert_eq!(
        rows(&collect(&t, ScanRequest::new().at_version(1)).await),
        10
    );
    assert_eq!(
        rows(&collect(&t, ScanRequest::new().at_version(0)).await),
        0
    );
    assert_eq!(rows(&collect(&t, ScanRequest::new()).await), 20);
    assert_eq!(t.version_at(between).await.unwrap(), 1);
    assert_eq!(t.version_at(i64::MAX).await.unwrap(), 2);
    assert_eq!(
        t.version_at(0).await.unwrap_err().kind(),
        ErrorKind::VersionNotFound
    );
    let e = t
        .scan(ScanRequest::new().at_version(9))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::VersionNotFound);
    let h = t.history(10).await.unwrap();
    assert_eq!(
        h.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![2, 1, 0]
    );
    assert_eq!(h[2].operation, "CREATE TABLE");
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn transaction_ids_make_appends_idempotent_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new(),
    )
    .await
    .unwrap();
    let out = TableSink::append(&t, vec![batch(0, 5)], Some(TxnId::new("sink-1", 10)))
        .await
        .unwrap();
    assert!(matches!(
        out,
        AppendOutcome::Committed {
            version: 1,
            rows: 5
        }
    ));
    let again = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    let dup = TableSink::append(&again, vec![batch(0, 5)], Some(TxnId::new("sink-1", 10)))
        .await
        .unwrap();
    assert_eq!(dup, AppendOutcome::Duplicate { last_sequence: 10 });
    let older = TableSink::append(&again, vec![batch(0, 5)], Some(TxnId::new("sink-1", 3)))
        .await
        .unwrap();
    assert_eq!(older, AppendOutcome::Duplicate { last_sequence: 10 });
    assert_eq!(again.last_sequence("sink-1").await.unwrap(), Some(10));
    assert_eq!(again.last_sequence("other").await.unwrap(), None);
    assert_eq!(rows(&collect(&again, ScanRequest::new()).await), 5);
    // No orphan data files were left by the duplicates.
    let parquet = crate::common::files_under(dir.path())
        .into_iter()
        .filter(|f| f.ends_with(".parquet") && !f.starts_with("_delta_log"))
        .count();
    assert_eq!(parquet, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_no_commit() {
    let dir = tempfile::tempdir().unwrap();
    Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new().checkpoint_interval(25),
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for w in 0..4i64 {
        let path = dir.path().to_owned();
        tasks.push(tokio::spawn(async move {
            // Each writer has its own handle, as separate processes would.
            let t = Table::open(Location::local(path).unwrap()).await.unwrap();
            for i in 0..40i64 {
                t.append(vec![batch(w * 1_000_000 + i * 10, 10)])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let t = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    assert_eq!(t.version().await.unwrap(), 160);
    let all = collect(&t, ScanRequest::new()).await;
    let mut want = Vec::new();
    for w in 0..4i64 {
        want.extend((0..400).map(|i| w * 1_000_000 + i));
    }
    want.sort_unstable();
    assert_eq!(ints(&all, "order_id"), want);
}

#[tokio::test]
async fn schema_mismatches_name_the_columns_and_write_nothing() {
    let t = Table::create(
        Location::memory("m").unwrap(),
        schema(),
        TableOptions::new(),
    )
    .await
    .unwrap();
    let wrong = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Utf8, false),
        Field::new("color", DataType::Utf8, true),
    ]));
    let b = RecordBatch::try_new(
        wrong,
        vec![
            Arc::new(StringArray::from(vec!["x"])),
            Arc::new(StringArray::from(vec!["red"])),
        ],
    )
    .unwrap();
    let e = t.append(vec![b]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SchemaMismatch);
    let msg = e.to_string();
    assert!(msg.contains("order_id") && msg.contains("color"), "{msg}");
    assert_eq!(t.version().await.unwrap(), 0);

    // Unknown columns in scans are typed errors too.
    let e = t
        .scan(ScanRequest::new().with_projection(["nope"]))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::ColumnNotFound);
    let e = t
        .scan(ScanRequest::new().with_predicate(col("nope").eq(1i64)))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::ColumnNotFound);

    // Unsupported column types are refused at creation.
    let bad = Arc::new(Schema::new(vec![Field::new("u", DataType::UInt32, true)]));
    let e = Table::create(Location::memory("u").unwrap(), bad, TableOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);

    // A second create at the same place is a conflict.
    let e = Table::create(t.location().clone(), schema(), TableOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    let e = Table::open(Location::memory("none").unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn every_codec_round_trips_with_bloom_filters_and_sort_key() {
    for c in [
        Compression::Zstd(1),
        Compression::Snappy,
        Compression::Lz4,
        Compression::None,
    ] {
        let t = Table::create(
            Location::memory("c").unwrap(),
            schema(),
            TableOptions::new()
                .compression(c)
                .row_group_rows(1000)
                .bloom_filter_columns(["order_id"])
                .sort_by(["user_id"]),
        )
        .await
        .unwrap();
        t.append(vec![batch(0, 10_000)]).await.unwrap();
        let hit = collect(
            &t,
            ScanRequest::new().with_predicate(col("order_id").eq(4321i64)),
        )
        .await;
        assert_eq!(ints(&hit, "order_id"), vec![4321], "{c:?}");
        let miss = collect(
            &t,
            ScanRequest::new().with_predicate(col("order_id").in_list([-1i64, 50_000])),
        )
        .await;
        assert_eq!(rows(&miss), 0);
        let users = collect(&t, ScanRequest::new().with_projection(["user_id"])).await;
        assert_eq!(rows(&users), 10_000);
    }
    assert!(
        Table::create(
            Location::memory("z").unwrap(),
            schema(),
            TableOptions::new().compression(Compression::Zstd(99))
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn changes_since_returns_only_appended_rows() {
    let t = Table::create(
        Location::memory("c").unwrap(),
        schema(),
        TableOptions::new(),
    )
    .await
    .unwrap();
    t.append(vec![batch(0, 10)]).await.unwrap();
    t.append(vec![batch(10, 5)]).await.unwrap();
    t.append(vec![batch(15, 5)]).await.unwrap();
    let ch = t.changes_since(1).await.unwrap();
    assert_eq!((ch.from_version, ch.to_version), (1, 3));
    let got: Vec<RecordBatch> = futures::TryStreamExt::try_collect(ch.batches)
        .await
        .unwrap();
    assert_eq!(ints(&got, "order_id"), (10..20).collect::<Vec<_>>());
    let none = t.changes_since(3).await.unwrap();
    let got: Vec<RecordBatch> = futures::TryStreamExt::try_collect(none.batches)
        .await
        .unwrap();
    assert!(got.is_empty());
    assert_eq!(
        t.changes_since(4).await.unwrap_err().kind(),
        ErrorKind::VersionNotFound
    );
}

#[tokio::test]
async fn statistics_describe_every_file() {
    let t = Table::create(
        Location::memory("s").unwrap(),
        schema(),
        TableOptions::new(),
    )
    .await
    .unwrap();
    t.append(vec![batch(0, 100)]).await.unwrap();
    t.append(vec![batch(100, 50)]).await.unwrap();
    let s = t.statistics(None).await.unwrap();
    assert_eq!(s.files.len(), 2);
    assert_eq!(s.num_rows(), 150);
    let id = s.column("order_id").unwrap();
    assert_eq!(id.min, Some(lakehouse_core::Scalar::Int64(0)));
    assert_eq!(id.max, Some(lakehouse_core::Scalar::Int64(149)));
    let pruned = t
        .files(None, Some(&col("order_id").gt_eq(120i64)))
        .await
        .unwrap();
    assert_eq!(pruned.len(), 1);
}
