//! Faults between the table and its store (feature `fault-injection`): one scripted
//! fault per defect test, then seeded random schedules against concurrent writers and
//! maintenance.

use std::sync::Arc;
use std::time::Duration;

use lakehouse_core::{AppendOutcome, ErrorKind, ScanRequest, TableSink, TableSource, TxnId};
use lakehouse_storage::faults::{
    Fault, FaultConfig, FaultOp, FaultStore, ScheduleOptions, run_schedule,
};
use lakehouse_storage::{Location, Table, TableOptions, VacuumOptions};
use object_store::memory::InMemory;

use crate::common::{batch, collect, ints, schema};

/// A table on a fault store over memory (no random faults), and the store.
async fn table_with_faults() -> (Table, FaultStore) {
    let faults = FaultStore::new(Arc::new(InMemory::new()), 7, FaultConfig::new());
    let location = Location::from_store(Arc::new(faults.clone()), "t", "faults:///t").unwrap();
    let t = Table::create(location, schema(), TableOptions::new())
        .await
        .unwrap();
    (t, faults)
}

/// The table as a fresh process sees it, without faults.
async fn reopen(faults: &FaultStore) -> Table {
    let location = Location::from_store(faults.inner().clone(), "t", "memory:///t").unwrap();
    Table::open(location).await.unwrap()
}

/// Every row id of the latest version (sorted); panics if a file is missing.
async fn ids(t: &Table) -> Vec<i64> {
    ints(&collect(t, ScanRequest::new()).await, "order_id")
}

#[tokio::test]
async fn an_applied_commit_answered_with_an_error_keeps_its_files() {
    let (t, faults) = table_with_faults().await;
    faults.inject_next(FaultOp::Put, "_delta_log/", Fault::ErrorAfter);
    let txn = TxnId::new("w", 1);
    // The store applied the commit; whatever the answer, the files it names stay.
    let first = TableSink::append(&t, vec![batch(0, 10)], Some(txn.clone())).await;
    assert_eq!(faults.pending_scripted(), 0);
    // The writer retries with the same transaction id: no second copy.
    let again = TableSink::append(&t, vec![batch(0, 10)], Some(txn))
        .await
        .unwrap();
    assert!(
        matches!(
            (&first, &again),
            (
                Ok(AppendOutcome::Committed { version: 1, .. }),
                AppendOutcome::Duplicate { last_sequence: 1 }
            ) | (Err(_), AppendOutcome::Duplicate { last_sequence: 1 })
        ),
        "{first:?} then {again:?}"
    );
    let fresh = reopen(&faults).await;
    assert_eq!(fresh.version().await.unwrap(), 1);
    let scan = fresh.scan(ScanRequest::new()).await.unwrap();
    let batches: Vec<_> = futures::TryStreamExt::try_collect(scan)
        .await
        .unwrap_or_else(|e| panic!("the committed version lost a file: {e}"));
    assert_eq!(ints(&batches, "order_id"), (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_commit_whose_retried_put_finds_itself_is_acknowledged_once() {
    // With a transaction id: the commit is this writer's, not a duplicate.
    let (t, faults) = table_with_faults().await;
    faults.inject_next(FaultOp::Put, "_delta_log/", Fault::RetriedAfterApply);
    let out = TableSink::append(&t, vec![batch(0, 10)], Some(TxnId::new("w", 1)))
        .await
        .unwrap();
    assert!(
        matches!(
            out,
            AppendOutcome::Committed {
                version: 1,
                rows: 10
            }
        ),
        "{out:?}"
    );
    assert_eq!(
        ids(&reopen(&faults).await).await,
        (0..10).collect::<Vec<_>>()
    );

    // Without one: one commit, not the same files committed again as version 2.
    let (t, faults) = table_with_faults().await;
    faults.inject_next(FaultOp::Put, "_delta_log/", Fault::RetriedAfterApply);
    let info = t.append(vec![batch(0, 10)]).await.unwrap();
    assert_eq!(info.version, 1);
    let fresh = reopen(&faults).await;
    assert_eq!(fresh.version().await.unwrap(), 1);
    assert_eq!(ids(&fresh).await, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_optimize_answered_with_an_error_after_its_commit_keeps_its_files() {
    let (t, faults) = table_with_faults().await;
    for i in 0..3 {
        t.append(vec![batch(i * 10, 10)]).await.unwrap();
    }
    faults.inject_next(FaultOp::Put, "_delta_log/", Fault::ErrorAfter);
    let _ = t.optimize(lakehouse_storage::OptimizeOptions::new()).await;
    let fresh = reopen(&faults).await;
    assert_eq!(fresh.version().await.unwrap(), 4);
    assert_eq!(ids(&fresh).await, (0..30).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_sequence_past_i64_max_is_refused_not_taken_for_a_duplicate() {
    let (t, _faults) = table_with_faults().await;
    let max = i64::MAX as u64;
    let out = TableSink::append(&t, vec![batch(0, 5)], Some(TxnId::new("w", max)))
        .await
        .unwrap();
    assert!(matches!(out, AppendOutcome::Committed { .. }), "{out:?}");
    // Delta's `txn.version` is a signed long: 2^63 cannot be recorded. Taking it for a
    // duplicate would drop this append and every later one silently.
    let err = TableSink::append(&t, vec![batch(5, 5)], Some(TxnId::new("w", max + 1)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(ids(&t).await, (0..5).collect::<Vec<_>>());
    assert_eq!(t.last_sequence("w").await.unwrap(), Some(max));
}

#[tokio::test]
async fn vacuum_keeps_a_live_file_named_by_an_absolute_uri() {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::local(dir.path()).unwrap();
    let uri = location.uri().to_owned();
    let t = Table::create(location, schema(), TableOptions::new())
        .await
        .unwrap();
    t.append(vec![batch(0, 10)]).await.unwrap();
    let stats = t.statistics(None).await.unwrap();
    let rel = stats.files[0].path.clone();
    // Another writer commits a copy of the data under an absolute URI (Delta allows
    // absolute paths in `add.path`), replacing the relative file.
    std::fs::copy(dir.path().join(&rel), dir.path().join("copy.parquet")).unwrap();
    let size = std::fs::metadata(dir.path().join("copy.parquet"))
        .unwrap()
        .len();
    let now = chrono_now_ms();
    let commit = format!(
        "{}\n{}\n{}\n",
        serde_json::json!({"commitInfo": {"timestamp": now, "operation": "OPTIMIZE"}}),
        serde_json::json!({"remove": {"path": rel, "deletionTimestamp": now, "dataChange": false}}),
        serde_json::json!({"add": {
            "path": format!("{uri}/copy.parquet"), "partitionValues": {}, "size": size,
            "modificationTime": now, "dataChange": false,
            "stats": stats_json(10),
        }}),
    );
    std::fs::write(
        dir.path().join("_delta_log/00000000000000000002.json"),
        commit,
    )
    .unwrap();
    t.refresh().await.unwrap();
    let m = t
        .vacuum(
            VacuumOptions::new()
                .retention(Duration::ZERO)
                .allow_short_retention(),
        )
        .await;
    // Either vacuum knows the file is live, or it refuses: it never deletes it.
    assert!(
        dir.path().join("copy.parquet").exists(),
        "vacuum deleted a live file: {m:?}"
    );
    if let Ok(m) = m {
        assert_eq!(m.deleted, vec![rel]);
    }
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn stats_json(rows: u64) -> String {
    serde_json::json!({"numRecords": rows}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_fault_schedules_lose_and_duplicate_nothing() {
    let options = ScheduleOptions::new();
    let mut injected = 0;
    let mut acknowledged = 0;
    let mut unacknowledged = 0;
    for seed in 0..24u64 {
        let r = run_schedule(seed, &options).await.unwrap();
        assert!(r.is_clean(), "seed {seed}: {r:#?}");
        assert!(r.versions > 1, "seed {seed}: nothing committed: {r:#?}");
        injected += r.injected.total();
        acknowledged += r.acknowledged_commits;
        unacknowledged += r.unacknowledged_commits;
    }
    // The schedules did inject faults, and most appends got through them.
    assert!(injected > 100, "{injected} faults injected");
    assert!(
        acknowledged > 10 * unacknowledged,
        "{acknowledged} vs {unacknowledged}"
    );
}
