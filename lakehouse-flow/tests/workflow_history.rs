//! Persisted histories: resuming a crashed execution by replay, and store failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lakehouse_core::{Clock, ErrorKind, EventLog, MemoryLog};
use lakehouse_flow::{
    ExecutionStatus, ExecutionStore, State, StateMachine, TaskContext, TaskRegistry, Workflow,
};
use serde_json::{Value, json};

use crate::workflow::{counted, counter, timer};

/// A simulated crash mid-execution: the execution future is dropped while a task is in
/// flight; resuming replays the persisted history and runs only what had not finished.
#[tokio::test]
async fn resume_after_a_crash_does_not_rerun_completed_tasks() {
    let timer = timer();
    let log = MemoryLog::new(2);
    let definition = StateMachine::from_json(
        r#"{"StartAt": "Extract", "States": {
            "Extract": {"Type": "Task", "Resource": "extract", "ResultPath": "$.rows", "Next": "Both"},
            "Both": {"Type": "Parallel", "ResultPath": "$.stats", "Next": "Load", "Branches": [
                {"StartAt": "Count", "States": {"Count": {"Type": "Task", "Resource": "count", "End": true}}},
                {"StartAt": "Pause", "States": {
                    "Pause": {"Type": "Wait", "Seconds": 60, "Next": "Sum"},
                    "Sum": {"Type": "Task", "Resource": "sum", "End": true}}}]},
            "Load": {"Type": "Task", "Resource": "load", "ResultPath": "$.loaded", "Next": "Report"},
            "Report": {"Type": "Task", "Resource": "report", "End": true}}}"#,
    )
    .unwrap();
    let (extract, count, sum, load, report) =
        (counter(), counter(), counter(), counter(), counter());
    let registry = |crash: bool, started: Arc<tokio::sync::Notify>| {
        TaskRegistry::new()
            .with(
                "extract",
                counted(extract.clone(), |_| Ok(json!([3, 4, 5]))),
            )
            .with(
                "count",
                counted(count.clone(), |v| {
                    Ok(json!(v["rows"].as_array().unwrap().len()))
                }),
            )
            .with(
                "sum",
                counted(sum.clone(), |v| {
                    Ok(json!(
                        v["rows"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|x| x.as_u64().unwrap())
                            .sum::<u64>()
                    ))
                }),
            )
            .with("load", {
                let load = load.clone();
                move |_: Value, _: TaskContext| {
                    load.fetch_add(1, Ordering::SeqCst);
                    let started = started.clone();
                    async move {
                        if crash {
                            started.notify_one();
                            futures::future::pending::<()>().await;
                        }
                        Ok(json!("loaded"))
                    }
                }
            })
            .with(
                "report",
                counted(report.clone(), |v| {
                    Ok(json!({"rows": v["stats"][0], "sum": v["stats"][1], "load": v["loaded"]}))
                }),
            )
    };
    let crashed = Arc::new(tokio::sync::Notify::new());
    let wf = Workflow::builder(definition.clone())
        .tasks(registry(true, crashed.clone()))
        .store(ExecutionStore::new(log.clone()))
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let clock_before = timer.clock().now_millis();
    timer
        .run(async {
            tokio::select! {
                _ = wf.run("etl-42", json!({"day": "2026-11-25"})) => panic!("the run should not finish"),
                () = crashed.notified() => {}
            }
        })
        .await;
    assert_eq!(timer.clock().now_millis() - clock_before, 60_000);
    let counts = |c: &[&Arc<AtomicUsize>]| {
        c.iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        counts(&[&extract, &count, &sum, &load, &report]),
        vec![1, 1, 1, 1, 0]
    );

    // A new process: the same definition, fresh handlers, the same log.
    let wf2 = Workflow::builder(definition)
        .tasks(registry(false, Arc::new(tokio::sync::Notify::new())))
        .store(ExecutionStore::new(log.clone()))
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    // Starting it again under the same id is refused.
    let err = wf2.run("etl-42", json!({})).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let e = timer.run(wf2.resume("etl-42")).await.unwrap();
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{:?}", e.error);
    assert_eq!(
        e.output,
        Some(json!({"rows": 3, "sum": 12, "load": "loaded"}))
    );
    // Completed tasks were not run again; the one in flight was; no second 60 s wait.
    assert_eq!(
        counts(&[&extract, &count, &sum, &load, &report]),
        vec![1, 1, 1, 2, 1]
    );
    assert_eq!(timer.clock().now_millis() - clock_before, 60_000);
    let names: Vec<&str> = e.history.iter().map(|h| h.kind.name()).collect();
    assert_eq!(
        names.iter().filter(|n| **n == "ExecutionStarted").count(),
        1
    );
    assert_eq!(
        names.iter().filter(|n| **n == "ExecutionResumed").count(),
        1
    );
    assert_eq!(names.iter().filter(|n| **n == "WaitStarted").count(), 1);
    assert_eq!(e.task_invocations("Extract"), 1);
    assert_eq!(e.task_invocations("Load"), 2);

    // The persisted history is the execution's history; resuming an ended execution
    // returns it as recorded without running anything.
    let stored = ExecutionStore::new(log.clone())
        .load("etl-42")
        .await
        .unwrap();
    assert_eq!(stored, e.history);
    let again = wf2.resume("etl-42").await.unwrap();
    assert_eq!(again, e);
    assert_eq!(report.load(Ordering::SeqCst), 1);
    let err = wf2.resume("nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn store_failures_are_reported() {
    // A log whose records are limited to 10 bytes cannot hold any history event.
    let log = MemoryLog::with_options(1, 10, Arc::new(lakehouse_core::SystemClock));
    let machine = StateMachine::builder("A")
        .state("A", State::succeed())
        .build()
        .unwrap();
    let wf = Workflow::builder(machine)
        .store(ExecutionStore::new(log))
        .build()
        .unwrap();
    let err = wf.run("e", json!({})).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RecordTooLarge);
}

/// A log that counts the records its reads return.
#[derive(Debug, Clone)]
struct Counting {
    inner: MemoryLog,
    read: Arc<AtomicUsize>,
}

#[lakehouse_core::async_trait]
impl EventLog for Counting {
    async fn shards(&self) -> lakehouse_core::Result<Vec<lakehouse_core::ShardInfo>> {
        self.inner.shards().await
    }
    async fn put(
        &self,
        record: lakehouse_core::PutRecord,
    ) -> lakehouse_core::Result<lakehouse_core::PutResult> {
        self.inner.put(record).await
    }
    async fn put_batch(
        &self,
        records: Vec<lakehouse_core::PutRecord>,
    ) -> lakehouse_core::Result<Vec<lakehouse_core::Result<lakehouse_core::PutResult>>> {
        self.inner.put_batch(records).await
    }
    async fn read(
        &self,
        shard: lakehouse_core::ShardId,
        from: lakehouse_core::Position,
        limit: lakehouse_core::ReadLimit,
    ) -> lakehouse_core::Result<lakehouse_core::ReadBatch> {
        let batch = self.inner.read(shard, from, limit).await?;
        self.read.fetch_add(batch.records.len(), Ordering::SeqCst);
        Ok(batch)
    }
    async fn commit_checkpoint(
        &self,
        group: &str,
        shard: lakehouse_core::ShardId,
        sequence: lakehouse_core::SequenceNumber,
    ) -> lakehouse_core::Result<()> {
        self.inner.commit_checkpoint(group, shard, sequence).await
    }
    async fn checkpoint(
        &self,
        group: &str,
        shard: lakehouse_core::ShardId,
    ) -> lakehouse_core::Result<Option<lakehouse_core::SequenceNumber>> {
        self.inner.checkpoint(group, shard).await
    }
}

fn one_task_machine() -> StateMachine {
    StateMachine::from_json(
        r#"{"StartAt": "Work", "States": {
            "Work": {"Type": "Task", "Resource": "work", "End": true}}}"#,
    )
    .unwrap()
}

#[tokio::test]
async fn two_starts_of_one_id_run_it_once() {
    let calls = counter();
    let wf = Workflow::builder(one_task_machine())
        .task("work", counted(calls.clone(), Ok))
        .store(ExecutionStore::new(MemoryLog::new(2)))
        .build()
        .unwrap();
    let (a, b) = tokio::join!(
        wf.start("nightly", json!({"n": 1})),
        wf.start("nightly", json!({"n": 2}))
    );
    let (winner, loser) = match (a, b) {
        (Ok(h), Err(e)) | (Err(e), Ok(h)) => (h, e),
        (Ok(_), Ok(_)) => panic!("both starts of one id were accepted"),
        (Err(a), Err(b)) => panic!("both starts failed: {a}, {b}"),
    };
    assert_eq!(loser.kind(), ErrorKind::Conflict, "{loser}");
    assert_eq!(loser.context().key.as_deref(), Some("nightly"));
    let done = winner.wait().await.unwrap();
    assert_eq!(done.status, ExecutionStatus::Succeeded);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the execution ran once");
    // Once it has ended, the id is still taken: its history is there.
    let e = wf.run("nightly", json!({})).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    // `run` and `start` race the same way.
    let (a, b) = tokio::join!(wf.run("other", json!({})), wf.start("other", json!({})));
    assert!(
        a.is_ok() != b.is_ok(),
        "exactly one of run and start is accepted: {:?} {:?}",
        a.as_ref().map(|e| e.status),
        b.as_ref().map(|h| h.id().to_owned())
    );
    if let Ok(h) = b {
        h.wait().await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn starting_does_not_read_other_executions_histories() {
    let log = MemoryLog::new(2);
    let read = counter();
    let store = ExecutionStore::new(Counting {
        inner: log.clone(),
        read: read.clone(),
    });
    let calls = counter();
    let wf = Workflow::builder(one_task_machine())
        .task("work", counted(calls.clone(), Ok))
        .store(store.clone())
        .build()
        .unwrap();
    let mut per_run = 0;
    for i in 0..200 {
        let e = wf.run(&format!("run-{i}"), json!({"i": i})).await.unwrap();
        per_run = e.history.len();
    }
    assert!(per_run >= 5, "{per_run} events per execution");
    let records: usize = {
        let mut n = 0;
        for shard in log.shards().await.unwrap() {
            let batch = log
                .read(
                    shard.id,
                    lakehouse_core::Position::TrimHorizon,
                    lakehouse_core::ReadLimit::records(1_000_000),
                )
                .await
                .unwrap();
            n += batch.records.len();
        }
        n
    };
    assert_eq!(records, 200 * per_run);

    // A new execution reads nothing of the 200 before it.
    let before = read.load(Ordering::SeqCst);
    let h = wf.start("fresh", json!({})).await.unwrap();
    assert_eq!(read.load(Ordering::SeqCst) - before, 0);
    h.wait().await.unwrap();
    // A start under a taken id, and loading one history, read only that history.
    let before = read.load(Ordering::SeqCst);
    let e = wf.start("run-7", json!({})).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    let history = store.load("run-7").await.unwrap();
    assert_eq!(history.len(), per_run, "{history:?}");
    assert!(
        read.load(Ordering::SeqCst) - before <= 2 * history.len(),
        "read {} records",
        read.load(Ordering::SeqCst) - before
    );

    // Another store over the same log (a restart) reads the log once to index it,
    // then no more; what others append since is found.
    let read2 = counter();
    let store2 = ExecutionStore::new(Counting {
        inner: log.clone(),
        read: read2.clone(),
    });
    let wf2 = Workflow::builder(one_task_machine())
        .task("work", counted(calls.clone(), Ok))
        .store(store2.clone())
        .build()
        .unwrap();
    let e = wf2.run("run-3", json!({})).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(read2.load(Ordering::SeqCst) <= records + 10);
    wf.run("late", json!({})).await.unwrap();
    let before = read2.load(Ordering::SeqCst);
    let e = wf2.run("late", json!({})).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "another store's execution");
    wf2.run("fresh-2", json!({})).await.unwrap();
    assert!(
        read2.load(Ordering::SeqCst) - before <= per_run,
        "read {} records",
        read2.load(Ordering::SeqCst) - before
    );
    assert_eq!(store2.load("late").await.unwrap().len(), per_run);
}
