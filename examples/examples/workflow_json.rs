//! The nightly model pipeline as a Step Functions-like workflow defined in JSON, started
//! by an event trigger, crashed half-way and resumed from its persisted history.
//!
//! ```text
//! cargo run --release -p lakehouse-examples --example workflow_json
//! ```
//!
//! 1. "retrain requested" events arrive on a sharded log; a trigger reads them in
//!    batches and runs one workflow execution per request. One request is malformed:
//!    it ends in the dead-letter log with its error, and every other one runs. One model
//!    is too weak and its execution fails in the Choice.
//! 2. Each execution retrains (a flaky task, retried with backoff), evaluates two
//!    metrics in parallel, decides with a Choice, waits for a publication window, and
//!    warms the cache per customer segment with a Map (at most two at a time).
//! 3. Another execution "crashes" while publishing; a second workflow object resumes
//!    it from the history log without retraining.
//!
//! The overhead of the runtime (records per second through a trigger with a no-op
//! handler, microseconds per state transition) is measured by `lakehouse-bench flow`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lakehouse_core::{
    Error, ErrorKind, EventLog, ManualClock, MemoryLog, Position, PutRecord, ReadLimit, ShardId,
};
use lakehouse_flow::{
    Backoff, BatchError, DeadLetter, Execution, ExecutionStatus, ExecutionStore, Jitter,
    ManualTimer, StateMachine, TaskContext, TaskError, TaskRegistry, Trigger, TriggerBatch, Value,
    Workflow, json,
};

const PIPELINE: &str = r#"{
  "Comment": "Nightly recommendation model: retrain, evaluate, publish, warm the cache",
  "StartAt": "Retrain",
  "TimeoutSeconds": 7200,
  "States": {
    "Retrain": {
      "Type": "Task", "Resource": "retrain",
      "Parameters": {"model.$": "$.model", "factors.$": "$.factors"},
      "ResultPath": "$.trained",
      "TimeoutSeconds": 1800,
      "Retry": [{"ErrorEquals": ["Train.SpotReclaimed"], "IntervalSeconds": 30,
                 "MaxAttempts": 4, "BackoffRate": 2.0, "MaxDelaySeconds": 120}],
      "Next": "Evaluate"
    },
    "Evaluate": {
      "Type": "Parallel",
      "Branches": [
        {"StartAt": "Recall", "States": {"Recall": {"Type": "Task", "Resource": "recall", "End": true}}},
        {"StartAt": "Coverage", "States": {"Coverage": {"Type": "Task", "Resource": "coverage", "End": true}}}
      ],
      "ResultSelector": {"recall.$": "$[0]", "coverage.$": "$[1]"},
      "ResultPath": "$.scores",
      "Next": "Good enough?"
    },
    "Good enough?": {
      "Type": "Choice",
      "Choices": [{"And": [
        {"Variable": "$.scores.recall", "NumericGreaterThanEquals": 0.2},
        {"Variable": "$.scores.coverage", "NumericGreaterThanEquals": 0.3}],
        "Next": "Publication window"}],
      "Default": "Rejected"
    },
    "Publication window": {"Type": "Wait", "Seconds": 600, "Next": "Publish"},
    "Publish": {"Type": "Task", "Resource": "publish", "ResultPath": "$.published", "Next": "Warm cache"},
    "Warm cache": {
      "Type": "Map", "ItemsPath": "$.segments", "MaxConcurrency": 2,
      "ItemSelector": {"segment.$": "$$.Map.Item.Value", "model.$": "$.published.version"},
      "ItemProcessor": {"StartAt": "Warm", "States": {"Warm": {
        "Type": "Task", "Resource": "warm",
        "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Skip"}],
        "End": true},
        "Skip": {"Type": "Pass", "Result": "skipped", "End": true}}},
      "ResultPath": "$.warmed",
      "Next": "Report"
    },
    "Report": {"Type": "Pass",
      "Parameters": {"model.$": "$.published.version", "scores.$": "$.scores", "warmed.$": "$.warmed"},
      "End": true},
    "Rejected": {"Type": "Fail", "Error": "Model.Rejected", "Cause": "evaluation below the bar"}
  }
}"#;

/// Counts of handler calls, to show what a resume does not re-run.
#[derive(Default)]
struct Calls {
    retrain: AtomicU64,
    publish: AtomicU64,
}

fn tasks(
    calls: Arc<Calls>,
    crash_on_publish: Option<&'static str>,
    publishing: Arc<tokio::sync::Notify>,
) -> TaskRegistry {
    let retrain_calls = calls.clone();
    TaskRegistry::new()
        .with("retrain", move |input: Value, ctx: TaskContext| {
            retrain_calls.retrain.fetch_add(1, Ordering::SeqCst);
            async move {
                // The first attempt of every execution loses its spot instance.
                if ctx.attempt == 0 {
                    return Err(TaskError::new(
                        "Train.SpotReclaimed",
                        "spot instance reclaimed",
                    ));
                }
                let factors = input["factors"].as_u64().unwrap_or(32);
                Ok(json!({"model": input["model"], "factors": factors, "loss": 0.0123}))
            }
        })
        .with("recall", |input: Value, _: TaskContext| async move {
            let factors = input["trained"]["factors"].as_f64().unwrap_or(0.0);
            Ok(json!((0.1 + factors / 200.0).min(0.9)))
        })
        .with("coverage", |_: Value, _: TaskContext| async {
            Ok(json!(0.42))
        })
        .with("publish", move |input: Value, ctx: TaskContext| {
            calls.publish.fetch_add(1, Ordering::SeqCst);
            let crash = crash_on_publish.is_some_and(|id| id == ctx.execution_id);
            let started = publishing.clone();
            async move {
                if crash {
                    started.notify_one();
                    // The process dies here: this future never completes.
                    futures::future::pending::<()>().await;
                }
                Ok(json!({"version": format!("{}-v{}", input["model"].as_str().unwrap_or("?"), 7)}))
            }
        })
        .with("warm", |input: Value, _: TaskContext| async move {
            match input["segment"].as_str() {
                Some("bots") => Err(TaskError::new("Cache.Refused", "segment is not cached")),
                Some(s) => Ok(json!(format!("{s}: 500 keys from {}", input["model"]))),
                None => Err(TaskError::failed("no segment")),
            }
        })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Simulated time: the backoff, the 600 s wait and the time limits pass instantly.
    let clock = ManualClock::at_millis(1_764_000_000_000);
    let timer = ManualTimer::new(clock.clone());
    let requests = MemoryLog::with_options(2, MemoryLog::DEFAULT_MAX_RECORD_BYTES, Arc::new(clock));
    let dead_letters = MemoryLog::new(1);
    let history_log = MemoryLog::new(2);

    let machine = StateMachine::from_json(PIPELINE)?;
    let calls = Arc::new(Calls::default());
    let publishing = Arc::new(tokio::sync::Notify::new());
    let workflow = Workflow::builder(machine.clone())
        .tasks(tasks(
            calls.clone(),
            Some("retrain-emea"),
            publishing.clone(),
        ))
        .store(ExecutionStore::new(history_log.clone()))
        .timer(Arc::new(timer.clone()))
        .build()?;

    // 1. Requests arrive; the trigger runs one execution per request.
    for (region, body) in [
        (
            "us",
            r#"{"model": "als-us", "factors": 64, "segments": ["new", "loyal", "bots"]}"#,
        ),
        (
            "eu",
            r#"{"model": "als-eu", "factors": 48, "segments": ["new", "lapsed"]}"#,
        ),
        ("apac", "{not json"),
        (
            "latam",
            r#"{"model": "als-latam", "factors": 4, "segments": ["new"]}"#,
        ),
    ] {
        requests
            .put(PutRecord::new(format!("retrain-{region}"), body))
            .await?;
    }
    let finished: Arc<Mutex<Vec<Execution>>> = Arc::default();
    let (wf, done) = (workflow.clone(), finished.clone());
    let trigger = Trigger::builder(requests.clone(), move |batch: TriggerBatch| {
        let (wf, done) = (wf.clone(), done.clone());
        async move {
            for r in batch.records.iter() {
                // A malformed request fails the batch from that record on; it is retried
                // once, then dead-lettered, and the records after it still run.
                let input = parse_request(&r.data).map_err(|e| {
                    BatchError::partial(r.sequence, e.with_key(r.partition_key.clone()))
                })?;
                // Redelivered records find their execution already recorded.
                let execution = match wf.run(&r.partition_key, input).await {
                    Err(e) if e.kind() == ErrorKind::Conflict => wf.resume(&r.partition_key).await,
                    other => other,
                }
                .map_err(BatchError::new)?;
                done.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(execution);
            }
            Ok(())
        }
    })
    .name("retrain-requests")
    .batch_size(10)
    .max_retry_attempts(Some(1))
    .backoff(Backoff {
        initial: Duration::from_secs(1),
        rate: 2.0,
        max_delay: None,
        jitter: Jitter::None,
    })
    .on_failure(dead_letters.clone())
    .timer(Arc::new(timer.clone()))
    .build()?;
    let metrics = timer.run(trigger.drain()).await?;
    println!(
        "trigger: {} invocations, {} errors, {} retries, {} records processed, {} dead-lettered",
        metrics.invocations,
        metrics.errors,
        metrics.retries,
        metrics.records_processed,
        metrics.records_dead_lettered
    );
    let letters = dead_letters
        .read(ShardId(0), Position::TrimHorizon, ReadLimit::default())
        .await?;
    for r in letters.records {
        let dl = DeadLetter::decode(&r)?;
        println!(
            "  dead letter {} (after {} attempts): {}",
            dl.partition_key, dl.attempts, dl.error
        );
    }

    // 2. The executions the trigger ran.
    let mut seen = std::collections::HashSet::new();
    for e in finished.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        if !seen.insert(e.id.clone()) {
            continue;
        }
        println!(
            "execution {}: {:?} after {} events, {} retrain attempts; {}",
            e.id,
            e.status,
            e.history.len(),
            e.task_invocations("Retrain"),
            match (&e.output, &e.error) {
                (Some(out), _) => format!("output {out}"),
                (None, Some(err)) => format!("error {err}"),
                (None, None) => "-".to_owned(),
            }
        );
    }

    // 3. An execution that "crashes" while publishing: its future is dropped, as a dead
    //    process would drop it. Its history is in the log.
    let crash = timer
        .run(async {
            tokio::select! {
                r = workflow.run("retrain-emea", json!({"model": "als-emea", "factors": 32, "segments": ["loyal"]})) => Some(r),
                () = publishing.notified() => None,
            }
        })
        .await;
    assert!(crash.is_none(), "the execution was meant to crash");
    let persisted = ExecutionStore::new(history_log.clone())
        .load("retrain-emea")
        .await?;
    println!(
        "execution retrain-emea crashed in Publish after {} persisted events",
        persisted.len()
    );
    let retrains_before = calls.retrain.load(Ordering::SeqCst);
    let publishes_before = calls.publish.load(Ordering::SeqCst);
    let recovered = Workflow::builder(machine)
        .tasks(tasks(calls.clone(), None, Arc::default()))
        .store(ExecutionStore::new(history_log.clone()))
        .timer(Arc::new(timer.clone()))
        .build()?;
    let e = timer.run(recovered.resume("retrain-emea")).await?;
    if e.status != ExecutionStatus::Succeeded {
        return Err(Error::new(
            ErrorKind::Internal,
            format!("resume ended as {:?}", e.status),
        )
        .into());
    }
    println!(
        "resumed retrain-emea: {:?}; during the resume retrain ran {} times, publish {} times; output {}",
        e.status,
        calls.retrain.load(Ordering::SeqCst) - retrains_before,
        calls.publish.load(Ordering::SeqCst) - publishes_before,
        e.output.as_ref().map_or("-".to_owned(), Value::to_string)
    );
    Ok(())
}

fn parse_request(data: &[u8]) -> Result<Value, Error> {
    let text = std::str::from_utf8(data)
        .map_err(|e| Error::new(ErrorKind::InvalidInput, "request is not UTF-8").with_source(e))?;
    text.parse::<Value>()
        .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("request is not JSON: {e}")))
}
