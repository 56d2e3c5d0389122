//! Entry points for fuzzing the decoders of workflow definitions and persisted
//! histories (feature `fuzzing`, off by default; not a stable API).
//!
//! * [`run_definition`] parses bytes as a definition (JSON) and, when it parses, runs it
//!   on a sample input with handlers for every resource;
//! * [`resume_history`] takes bytes as the persisted records of an execution of
//!   [`SAMPLE_DEFINITION`] (one record per line), loads and resumes it.
//!
//! Runs are bounded by a poll budget and a short wall-clock limit (a definition may
//! loop forever, which is allowed); sleeps of up to a minute complete at once on the
//! timer used here, longer ones (execution and task time limits) never. Outcomes are discarded: errors and failed
//! executions are expected, a panic is a defect.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use lakehouse_core::{EventLog, MemoryLog, Position, PutRecord, ReadLimit};
use serde_json::{Value, json};

use crate::{ExecutionStore, StateMachine, TaskContext, TaskError, TaskRegistry, Timer, Workflow};

/// A definition that uses every state type, paths, retries and catchers.
pub const SAMPLE_DEFINITION: &str = r#"{
  "Comment": "fuzzing sample",
  "StartAt": "Prepare",
  "TimeoutSeconds": 600,
  "States": {
    "Prepare": {"Type": "Pass", "Parameters": {"items.$": "$.items", "n.$": "$.n", "fixed": [1, 2]},
                "ResultPath": "$.prepared", "Next": "Extract"},
    "Extract": {"Type": "Task", "Resource": "echo", "InputPath": "$.prepared", "ResultPath": "$.rows",
                "Retry": [{"ErrorEquals": ["Flaky"], "MaxAttempts": 2, "IntervalSeconds": 1, "BackoffRate": 2.0}],
                "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Failed"}],
                "Next": "Route"},
    "Route": {"Type": "Choice", "Choices": [
        {"Variable": "$.n", "NumericGreaterThan": 10, "Next": "Both"},
        {"And": [{"Variable": "$.name", "StringEquals": "x"}, {"Variable": "$.flag", "BooleanEquals": true}], "Next": "Pause"},
        {"Variable": "$.when", "TimestampLessThan": "2026-01-01T00:00:00Z", "Next": "Each"}
      ], "Default": "Each"},
    "Pause": {"Type": "Wait", "Seconds": 5, "Next": "Each"},
    "Each": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2, "ResultPath": "$.mapped",
             "Iterator": {"StartAt": "Item", "States": {"Item": {"Type": "Task", "Resource": "echo", "End": true}}},
             "Next": "Both"},
    "Both": {"Type": "Parallel", "ResultPath": "$.both", "Next": "Done", "Branches": [
        {"StartAt": "Count", "States": {"Count": {"Type": "Task", "Resource": "echo", "End": true}}},
        {"StartAt": "Later", "States": {
            "Later": {"Type": "Wait", "SecondsPath": "$.n", "Next": "Sum"},
            "Sum": {"Type": "Task", "Resource": "fail", "End": true,
                    "Catch": [{"ErrorEquals": ["Boom"], "Next": "Recovered"}]},
            "Recovered": {"Type": "Pass", "Result": {"ok": true}, "End": true}}}]},
    "Done": {"Type": "Succeed", "OutputPath": "$.both"},
    "Failed": {"Type": "Fail", "Error": "Extract", "Cause": "extract failed"}
  }
}"#;

/// The execution id [`resume_history`] resumes.
pub const SAMPLE_EXECUTION: &str = "run-1";

/// The input executions get.
fn sample_input() -> Value {
    json!({"items": [1, "two", {"three": 3}, [4], null], "n": 3, "name": "x", "flag": true,
           "when": "2025-06-01T12:00:00Z", "nested": {"a": [1, 2, {"b": "c"}]}})
}

/// A timer at a fixed time whose sleeps of up to a minute complete at once and longer
/// ones never.
#[derive(Debug)]
struct InstantTimer;

impl Timer for InstantTimer {
    fn now_millis(&self) -> i64 {
        1_750_000_000_000
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        if duration <= Duration::from_secs(60) {
            Box::pin(futures::future::ready(()))
        } else {
            Box::pin(futures::future::pending())
        }
    }
}

/// A future given up (`None`) after `left` polls.
struct Budget<F> {
    inner: Pin<Box<F>>,
    left: u32,
}

impl<F: Future> Future for Budget<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        self.inner.as_mut().poll(cx).map(Some)
    }
}

fn runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .ok()
    })
    .as_ref()
}

/// Runs `f` on the runtime within the poll budget and the wall-clock limit.
fn bounded<F: Future>(f: F) -> Option<F::Output> {
    let rt = runtime()?;
    rt.block_on(async {
        let budgeted = Budget {
            inner: Box::pin(f),
            left: 20_000,
        };
        tokio::time::timeout(Duration::from_millis(200), budgeted)
            .await
            .ok()
            .flatten()
    })
}

fn registry() -> TaskRegistry {
    TaskRegistry::new()
        .with("echo", |input: Value, _: TaskContext| async move {
            Ok::<_, TaskError>(input)
        })
        .with("fail", |input: Value, _: TaskContext| async move {
            Err::<Value, _>(TaskError::new("Boom", input.to_string()))
        })
}

fn workflow(machine: StateMachine, store: Option<ExecutionStore>) -> Option<Workflow> {
    let mut tasks = registry();
    for (_, resource) in machine.resources() {
        if resource != "fail" {
            tasks.register(resource, |input: Value, _: TaskContext| async move {
                Ok::<_, TaskError>(input)
            });
        }
    }
    let mut b = Workflow::builder(machine)
        .tasks(tasks)
        .timer(Arc::new(InstantTimer));
    if let Some(store) = store {
        b = b.store(store);
    }
    b.build().ok()
}

/// Parses `bytes` (as text, lossily) as a workflow definition and, when it parses, runs
/// it once on a sample input; the outcome is discarded.
pub fn run_definition(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let Ok(machine) = StateMachine::from_json(&text) else {
        return;
    };
    let _ = machine.start_at();
    let _ = machine.timeout();
    let Some(wf) = workflow(machine, None) else {
        return;
    };
    let _ = bounded(wf.run("fuzz", sample_input()));
}

async fn records_of(log: &MemoryLog) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(shards) = log.shards().await else {
        return out;
    };
    for shard in shards {
        let Ok(batch) = log
            .read(shard.id, Position::TrimHorizon, ReadLimit::records(10_000))
            .await
        else {
            continue;
        };
        for r in batch.records {
            out.extend_from_slice(&r.data);
            out.push(b'\n');
        }
    }
    out
}

/// The persisted records (one per line) of an execution of [`SAMPLE_DEFINITION`] that
/// ran to its end.
pub fn sample_history() -> &'static [u8] {
    static SAMPLE: OnceLock<Vec<u8>> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let Ok(machine) = StateMachine::from_json(SAMPLE_DEFINITION) else {
            return Vec::new();
        };
        let log = MemoryLog::new(1);
        let Some(wf) = workflow(machine, Some(ExecutionStore::new(log.clone()))) else {
            return Vec::new();
        };
        bounded(async {
            let _ = wf.run(SAMPLE_EXECUTION, sample_input()).await;
            records_of(&log).await
        })
        .unwrap_or_default()
    })
}

/// Takes each line of `bytes` as one persisted record of execution
/// [`SAMPLE_EXECUTION`], then loads the history and resumes the execution on
/// [`SAMPLE_DEFINITION`]; the outcome is discarded.
pub fn resume_history(bytes: &[u8]) {
    let Ok(machine) = StateMachine::from_json(SAMPLE_DEFINITION) else {
        return;
    };
    let log = MemoryLog::new(1);
    let store = ExecutionStore::new(log.clone());
    let Some(wf) = workflow(machine, Some(store.clone())) else {
        return;
    };
    let _ = bounded(async {
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let _ = log
                .put(PutRecord::new(SAMPLE_EXECUTION, line.to_vec()))
                .await;
        }
        let _ = store.load(SAMPLE_EXECUTION).await;
        let _ = wf.resume(SAMPLE_EXECUTION).await;
    });
}
