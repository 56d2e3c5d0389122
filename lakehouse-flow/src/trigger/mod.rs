//! Event-source triggers: a handler run on batches of records from every shard of an
//! [`EventLog`], with checkpoints, retries, bisection and a dead-letter log.
//!
//! [`Trigger`] and [`RunningTrigger`] are here; the `coordinator` runs a worker per
//! shard (`shard`: the read loop and the batching window), which spreads each chunk
//! over lanes (`lanes`: per-key order and checkpoints) and delivers batches
//! (`delivery`: retries, bisection, expiry, dead letters).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lakehouse_core::{CancelToken, Error, ErrorKind, EventLog, Result, ShardId};
use parking_lot::Mutex;

use crate::backoff::JitterRng;
use crate::time::{Timer, TokioTimer};

mod batch;
mod config;
mod coordinator;
mod delivery;
mod lanes;
mod metrics;
mod shard;

pub use batch::{BatchError, BatchHandler, TriggerBatch};
pub use config::{TriggerBuilder, TriggerConfig};
pub use metrics::{ShardMetrics, TriggerMetrics};

use coordinator::coordinate;
use metrics::Counters;

#[cfg(doc)]
use crate::DeadLetter;

/// What the coordinator, the shard workers and the handles of a trigger share.
struct Inner {
    log: Arc<dyn EventLog>,
    handler: Arc<dyn BatchHandler>,
    on_failure: Option<Arc<dyn EventLog>>,
    timer: Arc<dyn Timer>,
    config: TriggerConfig,
    counters: Counters,
    shards: Mutex<BTreeMap<ShardId, ShardMetrics>>,
    rng: Mutex<JitterRng>,
}

/// Runs a handler on batches of records from every shard of an [`EventLog`]: the
/// Lambda event-source mapping.
///
/// * Each shard is read in order from its checkpoint (or the starting position), in
///   batches of up to `batch_size` records gathered for up to `batching_window`.
/// * With a parallelisation factor `p`, a shard's records are spread over `p` lanes by
///   partition key and the lanes run concurrently: each key keeps its order.
/// * Delivery is at least once: the checkpoint (consumer group = the trigger's name)
///   moves past a record only after the handler succeeded on it or it was given up on.
/// * A failed invocation is retried with exponential backoff and jitter, optionally
///   after bisecting the batch; a partial failure retries from the first failed record.
///   Records that exhaust their retries or exceed the maximum age go to the on-failure
///   log as [`DeadLetter`]s with the error, and processing continues.
/// * A handler that errors or panics affects only its own shard's batch; every shard
///   runs in its own task.
///
/// Cheap to clone: clones share the configuration and the metrics.
#[derive(Clone)]
pub struct Trigger {
    inner: Arc<Inner>,
}

impl fmt::Debug for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trigger")
            .field("log", &self.inner.log)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Stop each shard when it is caught up.
    Drain,
    /// Keep polling until stopped.
    Continuous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ShardExit {
    /// The shard is closed and was read to its end.
    Ended,
    /// Drain mode: nothing left to read.
    CaughtUp,
    /// The trigger was stopped.
    Stopped,
}

/// The trigger was stopped while a batch was in flight: its records were not
/// checkpointed and will be delivered again.
struct Stopped;

impl Trigger {
    /// A trigger that runs `handler` on the records of `log`.
    pub fn builder(log: impl EventLog + 'static, handler: impl BatchHandler) -> TriggerBuilder {
        TriggerBuilder {
            log: Arc::new(log),
            handler: Arc::new(handler),
            on_failure: None,
            timer: Arc::new(TokioTimer::new()),
            config: TriggerConfig::new("trigger".into()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TriggerConfig {
        &self.inner.config
    }

    /// A snapshot of the metrics.
    pub fn metrics(&self) -> TriggerMetrics {
        let shards = self.inner.shards.lock().values().cloned().collect();
        self.inner.counters.snapshot(shards)
    }

    /// Processes every shard until it is caught up (a read returns nothing), then
    /// returns the metrics. Children of closed shards are processed after their
    /// parents. Batching windows are not waited out once a shard is caught up.
    ///
    /// Shards run as tasks on the current tokio runtime. If a shard worker fails (a read
    /// error), the other shards still finish, and the first such error is returned.
    pub async fn drain(&self) -> Result<TriggerMetrics> {
        runtime_handle()?;
        coordinate(self.inner.clone(), Mode::Drain, CancelToken::new()).await?;
        Ok(self.metrics())
    }

    /// Starts processing on the current tokio runtime and keeps polling every shard
    /// until [`RunningTrigger::stop`]. Fails with [`ErrorKind::Unsupported`] outside a
    /// tokio runtime.
    pub fn start(&self) -> Result<RunningTrigger> {
        let handle = runtime_handle()?;
        let stop = CancelToken::new();
        let task = handle.spawn(coordinate(
            self.inner.clone(),
            Mode::Continuous,
            stop.clone(),
        ));
        Ok(RunningTrigger {
            trigger: self.clone(),
            stop,
            task: Some(task),
        })
    }
}

fn runtime_handle() -> Result<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current().map_err(|e| {
        Error::new(
            ErrorKind::Unsupported,
            "a trigger runs on a tokio runtime; none is current",
        )
        .with_source(e)
    })
}

/// A trigger running in the background, from [`Trigger::start`]. Dropping it stops the
/// trigger without waiting; [`stop`](Self::stop) waits.
#[derive(Debug)]
pub struct RunningTrigger {
    trigger: Trigger,
    stop: CancelToken,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Drop for RunningTrigger {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RunningTrigger {
    /// The trigger.
    pub fn trigger(&self) -> &Trigger {
        &self.trigger
    }

    /// A snapshot of the metrics.
    pub fn metrics(&self) -> TriggerMetrics {
        self.trigger.metrics()
    }

    /// Stops polling, waits for the shard workers to finish or abandon their current
    /// batch (an abandoned batch is not checkpointed and will be delivered again), and
    /// returns the final metrics.
    pub async fn stop(mut self) -> Result<TriggerMetrics> {
        self.stop.cancel();
        let Some(task) = self.task.take() else {
            return Ok(self.trigger.metrics());
        };
        match task.await {
            Ok(r) => r?,
            Err(e) => {
                return Err(Error::new(
                    ErrorKind::Internal,
                    "the trigger's coordinator task failed",
                )
                .with_source(e));
            }
        }
        Ok(self.trigger.metrics())
    }
}

/// Sleeps unless stopped first; `false` when stopped.
async fn sleep_or_stop(inner: &Inner, duration: Duration, stop: &CancelToken) -> bool {
    if stop.is_cancelled() {
        return false;
    }
    if duration.is_zero() {
        return true;
    }
    tokio::select! {
        () = inner.timer.sleep(duration) => true,
        () = stop.cancelled() => false,
    }
}
