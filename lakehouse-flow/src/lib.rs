//! The orchestration runtime of the Lakehouse crates: event-source triggers (the AWS
//! Lambda role) and workflows (the Step Functions role), generic over
//! [`EventLog`](lakehouse_core::EventLog) so that they run on the in-process stream
//! today and on a distributed log later.
//!
//! The contracts it runs over ([`EventLog`](lakehouse_core::EventLog), the one
//! [`Error`] type, [`Clock`](lakehouse_core::Clock), [`CancelToken`]) are those of
//! `lakehouse-core`, which carries no runtime; this crate brings tokio, serde and
//! serde_json, and only the crates that orchestrate pay for them.
//!
//! # Quick start
//!
//! A trigger that sums order quantities shard by shard, then a workflow from the
//! States Language whose task handler is registered by name:
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use lakehouse_core::{EventLog, MemoryLog, PutRecord};
//! use lakehouse_flow::{
//!     json, StateMachine, TaskContext, TaskError, Trigger, TriggerBatch, Value, Workflow,
//! };
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # rt.block_on(async {
//! // A trigger: sum the quantities of all orders, shard by shard.
//! let log = MemoryLog::new(4);
//! for i in 0..100u64 {
//!     log.put(PutRecord::new(format!("user-{}", i % 7), i.to_string())).await?;
//! }
//! let total = Arc::new(AtomicU64::new(0));
//! let sum = total.clone();
//! let trigger = Trigger::builder(log.clone(), move |batch: TriggerBatch| {
//!     let sum = sum.clone();
//!     async move {
//!         for r in batch.records.iter() {
//!             let qty: u64 = std::str::from_utf8(&r.data).unwrap_or("0").parse().unwrap_or(0);
//!             sum.fetch_add(qty, Ordering::Relaxed);
//!         }
//!         Ok(())
//!     }
//! })
//! .name("order-totals")
//! .batch_size(10)
//! .build()?;
//! let metrics = trigger.drain().await?;
//! assert_eq!(metrics.records_processed, 100);
//! assert_eq!(total.load(Ordering::Relaxed), (0..100).sum::<u64>());
//!
//! // A workflow from the States Language, with a task handler registered by name.
//! let machine = StateMachine::from_json(r#"{
//!     "StartAt": "Score",
//!     "States": {
//!         "Score": {"Type": "Task", "Resource": "score", "ResultPath": "$.score", "Next": "Good?"},
//!         "Good?": {"Type": "Choice",
//!                   "Choices": [{"Variable": "$.score", "NumericGreaterThan": 0.5, "Next": "Publish"}],
//!                   "Default": "Reject"},
//!         "Publish": {"Type": "Succeed"},
//!         "Reject": {"Type": "Fail", "Error": "Model.Rejected", "Cause": "score too low"}
//!     }
//! }"#)?;
//! let workflow = Workflow::builder(machine)
//!     .task("score", |input: Value, _ctx: TaskContext| async move {
//!         let hits = input["hits"].as_f64().ok_or_else(|| TaskError::failed("no hits"))?;
//!         Ok(json!(hits / 10.0))
//!     })
//!     .build()?;
//! let run = workflow.run("eval-1", json!({"hits": 8})).await?;
//! assert_eq!(run.output, Some(json!({"hits": 8, "score": 0.8})));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Triggers
//!
//! A [`Trigger`] runs an async handler on batches of records from every shard of a log:
//! batch size and batching window, per-shard order, a parallelisation factor per shard
//! that keeps per-partition-key order, at-least-once delivery with a checkpoint (per
//! consumer group and shard) committed only after success. Failures are retried with
//! exponential [`Backoff`] and jitter, optionally bisecting the batch to isolate a
//! poison record; a handler can report a partial failure ([`BatchError::partial`]) so
//! the checkpoint stops just before the first failed record. Records that exhaust their
//! retries or pass the maximum record age go to an on-failure log as [`DeadLetter`]s
//! with the error, and processing continues. A handler that errors or panics never stops
//! the other shards. [`TriggerMetrics`] reports lag per shard, invocations, errors,
//! retries and dead-lettered records.
//!
//! # Workflows
//!
//! A [`Workflow`] runs a [`StateMachine`], defined in code ([`State`],
//! [`StateMachine::builder`]) or in a JSON subset of the Amazon States Language
//! ([`StateMachine::from_json`]): Task, Choice, Parallel, Map (with `MaxConcurrency`),
//! Wait, Pass, Succeed and Fail states; `Retry` (interval, max attempts, backoff rate,
//! max delay, jitter) and `Catch` (error match, result path); `InputPath`, `Parameters`,
//! `ResultSelector`, `ResultPath` and `OutputPath`. Task handlers are registered by name
//! ([`TaskRegistry`]); tasks and executions have time limits and executions can be
//! cancelled. Each execution keeps its history ([`HistoryEvent`]); with an
//! [`ExecutionStore`] the history is appended to an `EventLog` as it happens, and
//! [`Workflow::resume`] continues a crashed execution by replay without running its
//! completed tasks again. Invalid definitions are rejected with an error naming the
//! state and field ([`DefinitionError`]). Payloads are [`Value`]s (serde_json's,
//! re-exported with its [`json!`] macro).
//!
//! # Time
//!
//! Everything reads time and sleeps through a [`Timer`]: [`TokioTimer`] (the default) in
//! production, [`ManualTimer`] in tests, where retries, batching windows, waits and time
//! limits run in simulated time, instantly and deterministically.
//!
//! # Crate features
//!
//! None: the crate has no optional parts. It needs tokio's `rt`, `time`, `sync` and
//! `macros` features, and enables them.
//!
//! # Runtime
//!
//! The runtime is tokio: [`Trigger::drain`], [`Trigger::start`] and [`Workflow::start`]
//! spawn tasks on the current runtime (and return [`ErrorKind::Unsupported`] outside
//! one); [`TokioTimer`] sleeps need tokio's time driver. Handlers are async and run on
//! those tasks; CPU-heavy handlers should move their work off the runtime, to
//! `spawn_blocking` or to rayon with [`on_rayon`](lakehouse_core::on_rayon). Lanes of a
//! shard and branches of a Parallel or Map state run concurrently within one task.
//! Nothing blocks a worker thread: locks guard memory operations only.

mod backoff;
mod dead_letter;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod panic;
mod time;
mod trigger;
mod workflow;

/// The payload type of workflows, and the macro to build one (re-exported from
/// serde_json so that callers use the same version).
pub use serde_json::{Value, json};

/// The error type, its kinds and the cancellation signal of the runtime, from
/// `lakehouse-core`.
pub use lakehouse_core::{CancelToken, Error, ErrorKind, Result};

pub use backoff::{Backoff, Jitter, JitterRng};
pub use dead_letter::DeadLetter;
pub use time::{ManualTimer, Timer, TokioTimer};
pub use trigger::{
    BatchError, BatchHandler, RunningTrigger, ShardMetrics, Trigger, TriggerBatch, TriggerBuilder,
    TriggerConfig, TriggerMetrics,
};
pub use workflow::{
    Catcher, ChoiceRule, DefinitionError, EventKind, Execution, ExecutionHandle, ExecutionStatus,
    ExecutionStore, HistoryEvent, Retrier, State, StateMachine, StateMachineBuilder, TaskContext,
    TaskError, TaskHandler, TaskRegistry, Workflow, WorkflowBuilder,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancel_token_wakes_tokio_waiters() {
        let token = CancelToken::new();
        let waiter = token.clone();
        let task = tokio::spawn(async move { waiter.cancelled().await });
        tokio::task::yield_now().await;
        assert!(!token.is_cancelled());
        token.cancel();
        task.await.expect("waiter task does not panic");
        assert!(token.is_cancelled());
        // A late waiter returns at once.
        token.cancelled().await;
    }
}
