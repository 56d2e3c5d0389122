//! `lakehouse-bench flow`: the overhead of the orchestration runtime — records per second
//! through a trigger with a no-op handler, and microseconds per workflow state transition.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use lakehouse_core::{EventLog, MemoryLog, PutRecord};
use lakehouse_flow::{StateMachine, TaskContext, Trigger, TriggerBatch, Value, Workflow, json};

use crate::report::{BenchResult, Report};

pub(crate) fn run(report: &mut Report) -> BenchResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(report))
}

async fn run_async(report: &mut Report) -> BenchResult {
    let records = report.scale(2_000_000usize, 200_000);
    let log = MemoryLog::new(4);
    for chunk in (0..records).collect::<Vec<_>>().chunks(10_000) {
        let batch: Vec<PutRecord> = chunk
            .iter()
            .map(|i| PutRecord::new(format!("user-{}", i % 10_000), "x"))
            .collect();
        for r in log.put_batch(batch).await? {
            r?;
        }
    }
    let seen = Arc::new(AtomicU64::new(0));
    let counted = seen.clone();
    let trigger = Trigger::builder(log, move |b: TriggerBatch| {
        counted.fetch_add(b.records.len() as u64, Ordering::Relaxed);
        futures::future::ready(Ok(()))
    })
    .batch_size(1_000)
    .build()?;
    let start = Instant::now();
    trigger.drain().await?;
    let secs = start.elapsed().as_secs_f64();
    if seen.load(Ordering::Relaxed) as usize != records {
        return Err("the trigger lost records".into());
    }
    report.metric(
        "flow.trigger_records_per_s",
        records as f64 / secs,
        "records/s",
    );
    report.note(&format!(
        "trigger: {records} records on 4 shards, batches of 1,000, no-op handler"
    ));

    let looping = StateMachine::from_json(
        r#"{"StartAt": "Step", "States": {
            "Step": {"Type": "Pass", "Next": "More?"},
            "More?": {"Type": "Choice", "Choices": [
                {"Variable": "$.left", "NumericGreaterThan": 0, "Next": "Count down"}], "Default": "Done"},
            "Count down": {"Type": "Task", "Resource": "dec", "Next": "Step"},
            "Done": {"Type": "Succeed"}}}"#,
    )?;
    let workflow = Workflow::builder(looping)
        .task("dec", |v: Value, _: TaskContext| async move {
            Ok(json!({"left": v["left"].as_u64().unwrap_or(0).saturating_sub(1)}))
        })
        .build()?;
    let rounds = report.scale(30_000u64, 3_000);
    let start = Instant::now();
    let e = workflow.run("loop", json!({ "left": rounds })).await?;
    let secs = start.elapsed().as_secs_f64();
    let transitions = e
        .history
        .iter()
        .filter(|h| h.kind.name() == "StateEntered")
        .count();
    report.metric("flow.step_us", secs * 1e6 / transitions.max(1) as f64, "us");
    report.note(&format!(
        "workflow: {transitions} state transitions (Pass, Choice, Task), history in memory"
    ));
    Ok(())
}
