//! Persisted histories: resuming a crashed execution by replay, and store failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lakehouse_core::{Clock, ErrorKind, MemoryLog};
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
