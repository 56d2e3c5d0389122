//! Optimize, vacuum, checkpoints, schema evolution and corrupt files.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Field};
use lakehouse_core::{ErrorKind, ScanRequest, TableSource};
use lakehouse_storage::{
    Location, OptimizeOptions, PartitionField, Table, TableOptions, VacuumOptions,
};

use crate::common::{batch, collect, files_under, ints, rows, schema, sum_f64};

#[tokio::test]
async fn optimize_compacts_small_files_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new().partition_by([PartitionField::identity("region")]),
    )
    .await
    .unwrap();
    for i in 0..10 {
        t.append(vec![batch(i * 100, 100)]).await.unwrap();
    }
    let before = collect(&t, ScanRequest::new()).await;
    assert_eq!(t.files(None, None).await.unwrap().len(), 40);
    let v_before = t.version().await.unwrap();
    let m = t
        .optimize(OptimizeOptions::new().sort_by(["order_id"]))
        .await
        .unwrap();
    assert_eq!((m.files_removed, m.files_added, m.rows), (40, 4, 1000));
    assert_eq!(t.files(None, None).await.unwrap().len(), 4);
    let after = collect(&t, ScanRequest::new()).await;
    assert_eq!(ints(&after, "order_id"), ints(&before, "order_id"));
    assert_eq!(sum_f64(&after, "price"), sum_f64(&before, "price"));
    // Compaction changes no data: incremental readers see nothing new.
    let ch = t.changes_since(v_before).await.unwrap();
    let got: Vec<RecordBatch> = futures::TryStreamExt::try_collect(ch.batches)
        .await
        .unwrap();
    assert_eq!(rows(&got), 0);
    // Time travel still reads the old files until they are vacuumed.
    assert_eq!(
        rows(&collect(&t, ScanRequest::new().at_version(v_before)).await),
        1000
    );

    // The retention guard refuses a short retention by default.
    let e = t
        .vacuum(VacuumOptions::new().retention(Duration::from_secs(60)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let dry = t
        .vacuum(
            VacuumOptions::new()
                .retention(Duration::ZERO)
                .allow_short_retention()
                .dry_run(),
        )
        .await
        .unwrap();
    assert_eq!(dry.deleted.len(), 40);
    let parquet = |d: &std::path::Path| {
        files_under(d)
            .into_iter()
            .filter(|f| f.ends_with(".parquet") && !f.starts_with("_delta_log"))
            .count()
    };
    assert_eq!(parquet(dir.path()), 44);
    let done = t
        .vacuum(
            VacuumOptions::new()
                .retention(Duration::ZERO)
                .allow_short_retention(),
        )
        .await
        .unwrap();
    assert_eq!(done.deleted, dry.deleted);
    assert_eq!(parquet(dir.path()), 4);
    assert_eq!(
        ints(&collect(&t, ScanRequest::new()).await, "order_id"),
        (0..1000).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn checkpoints_make_old_commits_unnecessary() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new().checkpoint_interval(10),
    )
    .await
    .unwrap();
    for i in 0..25 {
        t.append(vec![batch(i * 10, 10)]).await.unwrap();
    }
    let log = dir.path().join("_delta_log");
    assert!(log.join("_last_checkpoint").exists());
    assert!(log.join("00000000000000000020.checkpoint.parquet").exists());
    // Drop the commits the checkpoint covers: the table still opens, complete.
    for v in 0..=20u64 {
        std::fs::remove_file(log.join(format!("{v:020}.json"))).unwrap();
    }
    let again = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    assert_eq!(again.version().await.unwrap(), 25);
    assert_eq!(
        ints(&collect(&again, ScanRequest::new()).await, "order_id"),
        (0..250).collect::<Vec<_>>()
    );
    // Versions before the checkpoint are gone, with a typed error.
    let e = again
        .scan(ScanRequest::new().at_version(5))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::VersionNotFound);
    assert_eq!(
        rows(&collect(&again, ScanRequest::new().at_version(22)).await),
        220
    );

    // A damaged checkpoint (torn, its bytes scrambled, a bare magic) is a typed
    // `Corrupt` error from the Parquet reader, never a panic or an `Internal` error.
    let checkpoint = log.join("00000000000000000020.checkpoint.parquet");
    let bytes = std::fs::read(&checkpoint).unwrap();
    for damaged in [
        bytes[..bytes.len() / 2].to_vec(),
        bytes.iter().map(|b| b ^ 0x5a).collect::<Vec<u8>>(),
        b"PAR1 not a footer".to_vec(),
    ] {
        std::fs::write(&checkpoint, &damaged).unwrap();
        let e = Table::open(Location::local(dir.path()).unwrap())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("Parquet"), "{e}");
    }
}

#[tokio::test]
async fn nullable_columns_can_be_added_and_incompatible_changes_are_refused() {
    let t = Table::create(
        Location::memory("e").unwrap(),
        schema(),
        TableOptions::new(),
    )
    .await
    .unwrap();
    t.append(vec![batch(0, 10)]).await.unwrap();
    t.add_columns(vec![Field::new("coupon", DataType::Utf8, true)])
        .await
        .unwrap();
    assert_eq!(t.user_schema().fields().len(), 6);
    // Old batches (without the column) still append; the column reads as null.
    t.append(vec![batch(10, 10)]).await.unwrap();
    let got = collect(
        &t,
        ScanRequest::new().with_projection(["order_id", "coupon"]),
    )
    .await;
    assert_eq!(rows(&got), 20);
    assert!(got.iter().all(|b| b.column(1).null_count() == b.num_rows()));

    let e = t
        .add_columns(vec![Field::new("must", DataType::Int64, false)])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SchemaMismatch);
    assert!(e.to_string().contains("must"));
    let mut changed: Vec<Field> = t
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    changed[3] = Field::new("price", DataType::Utf8, true);
    let e = t
        .evolve_schema(Arc::new(arrow::datatypes::Schema::new(changed)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SchemaMismatch);
    assert!(e.to_string().contains("price"), "{e}");
}

#[tokio::test]
async fn corrupt_files_give_typed_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new(),
    )
    .await
    .unwrap();
    t.append(vec![batch(0, 100)]).await.unwrap();
    t.append(vec![batch(100, 100)]).await.unwrap();
    let data: Vec<String> = files_under(dir.path())
        .into_iter()
        .filter(|f| f.ends_with(".parquet") && !f.starts_with("_delta_log"))
        .collect();
    // Truncate one data file.
    let victim = dir.path().join(&data[0]);
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    let err = async {
        let s = t.scan(ScanRequest::new()).await?;
        futures::TryStreamExt::try_collect::<Vec<_>>(s).await
    }
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(
        err.context()
            .path
            .as_deref()
            .unwrap_or_default()
            .contains(&data[0]),
        "{err}"
    );

    // A damaged commit file below the newest (a torn newest one is set aside:
    // tests/power_loss.rs).
    std::fs::write(
        dir.path().join("_delta_log/00000000000000000001.json"),
        b"{\"add\": {oops",
    )
    .unwrap();
    let e = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(e.to_string().contains("00000000000000000001.json"), "{e}");
}

#[tokio::test]
async fn tiered_optimize_bounds_files_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new(),
    )
    .await
    .unwrap();
    let mut most = 0;
    let mut rewritten = 0;
    for i in 0..64 {
        t.append(vec![batch(i * 50, 50)]).await.unwrap();
        let m = t.optimize(OptimizeOptions::new().tiered(4)).await.unwrap();
        assert!(m.files_removed == 0 || m.files_removed >= 4, "{m:?}");
        rewritten += m.rows;
        most = most.max(t.files(None, None).await.unwrap().len());
    }
    // 64 commits would be 64 files; tiers of four keep a handful, and each row is
    // rewritten a few times, not at every run.
    assert!(most <= 12, "{most} files");
    assert!(rewritten < 64 * 50 * 6, "{rewritten} rows rewritten");
    let all = collect(&t, ScanRequest::new()).await;
    assert_eq!(ints(&all, "order_id"), (0..64 * 50).collect::<Vec<i64>>());
}
