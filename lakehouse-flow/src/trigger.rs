//! Event-source triggers: a handler run on batches of records from every shard of an
//! [`EventLog`], with checkpoints, retries, bisection and a dead-letter log.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::backoff::{Backoff, JitterRng};
use crate::dead_letter::DeadLetter;
use crate::time::{Timer, TokioTimer};
use lakehouse_core::CancelToken;
use lakehouse_core::{Error, ErrorKind, Result};
use lakehouse_core::{EventLog, Position, ReadLimit, Record, SequenceNumber, ShardId};

/// One invocation's worth of records, all from one shard, in sequence order.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TriggerBatch {
    /// The shard the records come from.
    pub shard: ShardId,
    /// Which of the shard's parallel lanes runs this batch (`0` without a
    /// parallelisation factor). All records of a partition key go to the same lane.
    pub lane: u32,
    /// How many earlier invocations failed on these records (0 on first delivery).
    pub attempt: u32,
    /// The records, in sequence order.
    pub records: Arc<[Record]>,
}

/// A failed invocation: the error and, for a partial failure, the first record that
/// failed. Records before it count as processed; the checkpoint stops just before it and
/// the retry starts at it. When its retries are exhausted, that record alone is given
/// up on and the records after it are delivered again as a new batch.
#[derive(Debug)]
pub struct BatchError {
    error: Error,
    first_failed: Option<SequenceNumber>,
}

impl BatchError {
    /// The whole batch failed.
    pub fn new(error: Error) -> Self {
        BatchError {
            error,
            first_failed: None,
        }
    }

    /// Records before `first_failed` succeeded; it and the records after it failed.
    /// A sequence number that is not in the batch counts as a failure of the whole batch.
    pub fn partial(first_failed: SequenceNumber, error: Error) -> Self {
        BatchError {
            error,
            first_failed: Some(first_failed),
        }
    }

    /// The error.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The first failed record, for a partial failure.
    pub fn first_failed(&self) -> Option<SequenceNumber> {
        self.first_failed
    }
}

impl From<Error> for BatchError {
    fn from(error: Error) -> Self {
        BatchError::new(error)
    }
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.first_failed {
            Some(seq) => write!(f, "{} (first failed record: {seq})", self.error),
            None => self.error.fmt(f),
        }
    }
}

impl std::error::Error for BatchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The user code a trigger runs: an async function of a [`TriggerBatch`].
///
/// Implemented for every `Fn(TriggerBatch) -> impl Future<Output = Result<(), BatchError>>`
/// that is `Send + Sync + 'static`. A handler may be called again with records it has
/// seen (delivery is at least once), so it should be idempotent.
pub trait BatchHandler: Send + Sync + 'static {
    /// Processes one batch.
    fn call(&self, batch: TriggerBatch) -> BoxFuture<'static, Result<(), BatchError>>;
}

impl<F, Fut> BatchHandler for F
where
    F: Fn(TriggerBatch) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BatchError>> + Send + 'static,
{
    fn call(&self, batch: TriggerBatch) -> BoxFuture<'static, Result<(), BatchError>> {
        Box::pin(self(batch))
    }
}

/// How a trigger reads, batches and retries. Build one through [`Trigger::builder`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TriggerConfig {
    /// The consumer group under which checkpoints are kept.
    pub name: String,
    /// Most records per invocation (1 to 10,000; default 100).
    pub batch_size: usize,
    /// How long to gather records before invoking with a batch that is not full
    /// (default zero: invoke with what one read returns).
    pub batching_window: Duration,
    /// Concurrent batches per shard (1 to 100; default 1). Records are spread over
    /// lanes by partition key, so each key keeps its order.
    pub parallelization_factor: u32,
    /// Where to start on a shard without a checkpoint (default
    /// [`Position::TrimHorizon`]).
    pub starting_position: Position,
    /// Retries after the first failed invocation before records go to the on-failure
    /// log; `None` retries until the records expire (default `Some(3)`).
    pub max_retry_attempts: Option<u32>,
    /// Records older than this (by arrival time) are not processed any more and go to
    /// the on-failure log (default `None`: no limit).
    pub max_record_age: Option<Duration>,
    /// Split a failed batch in two and retry the halves, to isolate a poison record
    /// (default `false`). Splitting does not use up a retry.
    pub bisect_on_error: bool,
    /// Delay between retries (default [`Backoff::default`]).
    pub backoff: Backoff,
    /// How often an idle shard is read again (default 100 ms).
    pub poll_interval: Duration,
    /// How often the running trigger lists the log's shards to find new ones (default
    /// 1 s).
    pub shard_discovery_interval: Duration,
    /// Seed of the jitter applied to backoff (default 0).
    pub jitter_seed: u64,
}

impl TriggerConfig {
    fn new(name: String) -> Self {
        TriggerConfig {
            name,
            batch_size: 100,
            batching_window: Duration::ZERO,
            parallelization_factor: 1,
            starting_position: Position::TrimHorizon,
            max_retry_attempts: Some(3),
            max_record_age: None,
            bisect_on_error: false,
            backoff: Backoff::default(),
            poll_interval: Duration::from_millis(100),
            shard_discovery_interval: Duration::from_secs(1),
            jitter_seed: 0,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::new(ErrorKind::InvalidInput, m));
        if self.name.is_empty() {
            return bad("trigger name (the consumer group) is empty".into());
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return bad(format!(
                "batch size {} is outside 1..=10000",
                self.batch_size
            ));
        }
        if !(1..=100).contains(&self.parallelization_factor) {
            return bad(format!(
                "parallelization factor {} is outside 1..=100",
                self.parallelization_factor
            ));
        }
        if !(self.backoff.rate >= 1.0 && self.backoff.rate.is_finite()) {
            return bad(format!(
                "backoff rate {} must be finite and at least 1",
                self.backoff.rate
            ));
        }
        if self.poll_interval.is_zero() {
            return bad("poll interval is zero".into());
        }
        if self.shard_discovery_interval.is_zero() {
            return bad("shard discovery interval is zero".into());
        }
        Ok(())
    }
}

/// Builds a [`Trigger`].
#[must_use]
pub struct TriggerBuilder {
    log: Arc<dyn EventLog>,
    handler: Arc<dyn BatchHandler>,
    on_failure: Option<Arc<dyn EventLog>>,
    timer: Arc<dyn Timer>,
    config: TriggerConfig,
}

impl fmt::Debug for TriggerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TriggerBuilder")
            .field("log", &self.log)
            .field("on_failure", &self.on_failure)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl TriggerBuilder {
    /// The consumer group name under which checkpoints are kept (default `"trigger"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Most records per invocation.
    pub fn batch_size(mut self, records: usize) -> Self {
        self.config.batch_size = records;
        self
    }

    /// How long to gather records before invoking with a partial batch.
    pub fn batching_window(mut self, window: Duration) -> Self {
        self.config.batching_window = window;
        self
    }

    /// Concurrent batches per shard; each partition key keeps its order.
    pub fn parallelization_factor(mut self, lanes: u32) -> Self {
        self.config.parallelization_factor = lanes;
        self
    }

    /// Where to start on shards without a checkpoint.
    pub fn starting_position(mut self, position: Position) -> Self {
        self.config.starting_position = position;
        self
    }

    /// Retries before giving up on records; `None` retries until they expire.
    pub fn max_retry_attempts(mut self, retries: Option<u32>) -> Self {
        self.config.max_retry_attempts = retries;
        self
    }

    /// Records older than this are given up on.
    pub fn max_record_age(mut self, age: Option<Duration>) -> Self {
        self.config.max_record_age = age;
        self
    }

    /// Split failing batches in two to isolate poison records.
    pub fn bisect_on_error(mut self, bisect: bool) -> Self {
        self.config.bisect_on_error = bisect;
        self
    }

    /// The delay between retries.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// How often idle shards are read again.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.config.poll_interval = interval;
        self
    }

    /// How often the running trigger looks for new shards.
    pub fn shard_discovery_interval(mut self, interval: Duration) -> Self {
        self.config.shard_discovery_interval = interval;
        self
    }

    /// Seed of the backoff jitter.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.config.jitter_seed = seed;
        self
    }

    /// The on-failure destination: records given up on are written there as
    /// [`DeadLetter`]s. Without one they are dropped (and counted).
    pub fn on_failure(mut self, log: impl EventLog + 'static) -> Self {
        self.on_failure = Some(Arc::new(log));
        self
    }

    /// The timer for sleeps, batching windows and record ages (default
    /// [`TokioTimer`] on the system clock).
    pub fn timer(mut self, timer: Arc<dyn Timer>) -> Self {
        self.timer = timer;
        self
    }

    /// Checks the configuration and builds the trigger. Nothing runs until
    /// [`Trigger::drain`] or [`Trigger::start`].
    pub fn build(self) -> Result<Trigger> {
        self.config.validate()?;
        Ok(Trigger {
            inner: Arc::new(Inner {
                rng: Mutex::new(JitterRng::new(self.config.jitter_seed)),
                log: self.log,
                handler: self.handler,
                on_failure: self.on_failure,
                timer: self.timer,
                config: self.config,
                counters: Counters::default(),
                shards: Mutex::default(),
            }),
        })
    }
}

/// Counters and gauges of a trigger, as [`Trigger::metrics`] reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TriggerMetrics {
    /// Handler invocations.
    pub invocations: u64,
    /// Invocations that returned an error or panicked.
    pub errors: u64,
    /// Of those, invocations that panicked.
    pub panics: u64,
    /// Retries scheduled after a failure.
    pub retries: u64,
    /// Failed batches split in two.
    pub bisections: u64,
    /// Records the handler processed successfully.
    pub records_processed: u64,
    /// Records written to the on-failure log.
    pub records_dead_lettered: u64,
    /// Records given up on without an on-failure log.
    pub records_dropped: u64,
    /// Records given up on because they exceeded the maximum record age.
    pub records_expired: u64,
    /// Failed writes to the on-failure log (retried).
    pub dead_letter_errors: u64,
    /// Failed checkpoint commits (a later commit covers them).
    pub checkpoint_errors: u64,
    /// Shard workers that stopped on an error (a read failed) or a bug; the other
    /// shards go on, and a running trigger restarts the worker from its checkpoint.
    pub shard_failures: u64,
    /// Per shard, in shard order.
    pub shards: Vec<ShardMetrics>,
}

/// Per-shard gauges of a trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardMetrics {
    /// The shard.
    pub shard: ShardId,
    /// How far the last read was behind the newest record of the shard, in
    /// milliseconds of arrival time (the log's `millis_behind`).
    pub millis_behind: u64,
    /// The last committed checkpoint.
    pub checkpoint: Option<SequenceNumber>,
    /// Records of this shard processed successfully.
    pub records_processed: u64,
    /// The shard is closed and was read to its end.
    pub finished: bool,
}

#[derive(Debug, Default)]
struct Counters {
    invocations: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    retries: AtomicU64,
    bisections: AtomicU64,
    records_processed: AtomicU64,
    records_dead_lettered: AtomicU64,
    records_dropped: AtomicU64,
    records_expired: AtomicU64,
    dead_letter_errors: AtomicU64,
    checkpoint_errors: AtomicU64,
    shard_failures: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

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
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TriggerMetrics {
            invocations: get(&c.invocations),
            errors: get(&c.errors),
            panics: get(&c.panics),
            retries: get(&c.retries),
            bisections: get(&c.bisections),
            records_processed: get(&c.records_processed),
            records_dead_lettered: get(&c.records_dead_lettered),
            records_dropped: get(&c.records_dropped),
            records_expired: get(&c.records_expired),
            dead_letter_errors: get(&c.dead_letter_errors),
            checkpoint_errors: get(&c.checkpoint_errors),
            shard_failures: get(&c.shard_failures),
            shards: self.inner.shards.lock().values().cloned().collect(),
        }
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

/// Cancels its token when dropped, so that the shard workers of an abandoned drain stop.
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

async fn coordinate(inner: Arc<Inner>, mode: Mode, stop: CancelToken) -> Result<()> {
    let _stop_workers = CancelOnDrop(stop.clone());
    let mut running: HashMap<ShardId, tokio::task::JoinHandle<Result<ShardExit>>> = HashMap::new();
    let mut ended: HashSet<ShardId> = HashSet::new();
    let mut caught_up: HashSet<ShardId> = HashSet::new();
    let mut first_error: Option<Error> = None;
    loop {
        if stop.is_cancelled() {
            break;
        }
        let shards = match inner.log.shards().await {
            Ok(s) => s,
            Err(e) if mode == Mode::Drain => return Err(e),
            Err(_) => {
                bump(&inner.counters.shard_failures, 1);
                if !sleep_or_stop(&inner, inner.config.shard_discovery_interval, &stop).await {
                    break;
                }
                continue;
            }
        };
        let known: HashSet<ShardId> = shards.iter().map(|s| s.id).collect();
        for info in &shards {
            if running.contains_key(&info.id)
                || ended.contains(&info.id)
                || caught_up.contains(&info.id)
            {
                continue;
            }
            let parents_done = info
                .parents
                .iter()
                .all(|p| ended.contains(p) || !known.contains(p));
            if parents_done {
                inner.shards.lock().entry(info.id).or_insert(ShardMetrics {
                    shard: info.id,
                    millis_behind: 0,
                    checkpoint: None,
                    records_processed: 0,
                    finished: false,
                });
                let task = tokio::spawn(shard_worker(inner.clone(), info.id, mode, stop.clone()));
                running.insert(info.id, task);
            }
        }
        match mode {
            Mode::Drain => {
                if running.is_empty() {
                    break;
                }
                for (shard, task) in running.drain() {
                    match reap(&inner, shard, task.await) {
                        Ok(ShardExit::Ended) => {
                            ended.insert(shard);
                        }
                        Ok(_) => {
                            caught_up.insert(shard);
                        }
                        Err(e) => {
                            // The failed shard is not retried in a drain, and its
                            // children wait for it.
                            caught_up.insert(shard);
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            Mode::Continuous => {
                sleep_or_stop(&inner, inner.config.shard_discovery_interval, &stop).await;
                let done: Vec<ShardId> = running
                    .iter()
                    .filter(|(_, t)| t.is_finished())
                    .map(|(s, _)| *s)
                    .collect();
                for shard in done {
                    let Some(task) = running.remove(&shard) else {
                        continue;
                    };
                    if let Ok(ShardExit::Ended) = reap(&inner, shard, task.await) {
                        ended.insert(shard);
                    }
                    // Failed workers are started again from their checkpoint in the
                    // next round, one discovery interval later.
                }
            }
        }
    }
    for (shard, task) in running.drain() {
        let _ = reap(&inner, shard, task.await);
    }
    first_error.map_or(Ok(()), Err)
}

fn reap(
    inner: &Inner,
    shard: ShardId,
    joined: std::result::Result<Result<ShardExit>, tokio::task::JoinError>,
) -> Result<ShardExit> {
    let out = match joined {
        Ok(Ok(exit)) => return Ok(exit),
        Ok(Err(e)) => e,
        Err(e) => Error::new(ErrorKind::Internal, "a shard worker panicked")
            .with_shard(shard)
            .with_source(e),
    };
    bump(&inner.counters.shard_failures, 1);
    Err(out)
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

async fn shard_worker(
    inner: Arc<Inner>,
    shard: ShardId,
    mode: Mode,
    stop: CancelToken,
) -> Result<ShardExit> {
    let config = &inner.config;
    let committed = inner
        .log
        .checkpoint(&config.name, shard)
        .await
        .map_err(|e| e.with_shard(shard))?;
    if let Some(m) = inner.shards.lock().get_mut(&shard) {
        m.checkpoint = committed;
    }
    let mut position = committed.map_or(config.starting_position, Position::AfterSequence);
    let per_chunk = config.batch_size * config.parallelization_factor as usize;
    let window_ms = i64::try_from(config.batching_window.as_millis()).unwrap_or(i64::MAX);
    let progress = Progress {
        shard,
        committed: tokio::sync::Mutex::new(committed),
    };
    loop {
        if stop.is_cancelled() {
            return Ok(ShardExit::Stopped);
        }
        let mut chunk: Vec<Record> = Vec::new();
        let mut window_start: Option<i64> = None;
        let mut end_of_shard = false;
        loop {
            let want = per_chunk - chunk.len();
            let batch = match inner
                .log
                .read(shard, position, ReadLimit::records(want))
                .await
            {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::PositionTrimmed && chunk.is_empty() => {
                    // The checkpoint is older than retention: what is left is all we can read.
                    position = Position::TrimHorizon;
                    continue;
                }
                Err(e) => return Err(e.with_shard(shard)),
            };
            if let Some(m) = inner.shards.lock().get_mut(&shard) {
                m.millis_behind = batch.millis_behind;
            }
            let got = batch.records.len();
            position = batch.next;
            chunk.extend(batch.records);
            if batch.end_of_shard {
                end_of_shard = true;
                break;
            }
            if chunk.len() >= per_chunk {
                break;
            }
            if chunk.is_empty() {
                if mode == Mode::Drain {
                    return Ok(ShardExit::CaughtUp);
                }
                if !sleep_or_stop(&inner, config.poll_interval, &stop).await {
                    return Ok(ShardExit::Stopped);
                }
                continue;
            }
            // A partial chunk: wait for more within the batching window.
            if window_ms == 0 || (mode == Mode::Drain && got < want) {
                break;
            }
            let now = inner.timer.now_millis();
            let start = *window_start.get_or_insert(now);
            let elapsed = now.saturating_sub(start);
            if elapsed >= window_ms {
                break;
            }
            let left = Duration::from_millis(u64::try_from(window_ms - elapsed).unwrap_or(0));
            if !sleep_or_stop(&inner, config.poll_interval.min(left), &stop).await {
                return Ok(ShardExit::Stopped);
            }
        }
        if !chunk.is_empty()
            && process_chunk(&inner, &progress, chunk, &stop)
                .await
                .is_err()
        {
            return Ok(ShardExit::Stopped);
        }
        if end_of_shard {
            if let Some(m) = inner.shards.lock().get_mut(&shard) {
                m.finished = true;
            }
            return Ok(ShardExit::Ended);
        }
    }
}

/// Checkpoint bookkeeping of one shard.
struct Progress {
    shard: ShardId,
    /// Held across the commit so that concurrent lanes never move the checkpoint back.
    committed: tokio::sync::Mutex<Option<SequenceNumber>>,
}

/// Where each lane of a chunk stands: the sequence number of its first record not yet
/// done (processed or given up on), `None` once the lane is through.
struct ChunkState {
    /// Every sequence number of the chunk, ascending.
    sequences: Vec<SequenceNumber>,
    lanes: Mutex<Vec<Option<SequenceNumber>>>,
}

impl ChunkState {
    /// Marks lane `lane` as done up to (not including) `next_pending`, and returns the
    /// newest sequence number below which every record of the chunk is done.
    fn advance(&self, lane: usize, next_pending: Option<SequenceNumber>) -> Option<SequenceNumber> {
        let mut lanes = self.lanes.lock();
        if let Some(slot) = lanes.get_mut(lane) {
            *slot = next_pending;
        }
        let horizon = lanes.iter().flatten().min().copied();
        let done = match horizon {
            None => self.sequences.len(),
            Some(h) => self.sequences.partition_point(|&s| s < h),
        };
        done.checked_sub(1).map(|i| self.sequences[i])
    }
}

async fn process_chunk(
    inner: &Arc<Inner>,
    progress: &Progress,
    chunk: Vec<Record>,
    stop: &CancelToken,
) -> std::result::Result<(), Stopped> {
    let lanes_n = inner.config.parallelization_factor as usize;
    let sequences: Vec<SequenceNumber> = chunk.iter().map(|r| r.sequence).collect();
    let lanes: Vec<Vec<Record>> = if lanes_n == 1 {
        vec![chunk]
    } else {
        let mut lanes = vec![Vec::new(); lanes_n];
        for r in chunk {
            lanes[lane_of(&r.partition_key, lanes_n)].push(r);
        }
        lanes
    };
    let state = ChunkState {
        sequences,
        lanes: Mutex::new(
            lanes
                .iter()
                .map(|l| l.first().map(|r| r.sequence))
                .collect(),
        ),
    };
    let runs = lanes
        .into_iter()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, lane)| process_lane(inner, progress, &state, i, lane, stop));
    let results = futures::future::join_all(runs).await;
    if results.iter().any(|r| r.is_err()) {
        return Err(Stopped);
    }
    Ok(())
}

fn lane_of(key: &str, lanes: usize) -> usize {
    let mut h = std::hash::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

async fn process_lane(
    inner: &Arc<Inner>,
    progress: &Progress,
    chunk: &ChunkState,
    lane: usize,
    records: Vec<Record>,
    stop: &CancelToken,
) -> std::result::Result<(), Stopped> {
    let batch_size = inner.config.batch_size;
    let batches: Vec<Arc<[Record]>> = if records.len() <= batch_size {
        vec![records.into()]
    } else {
        records.chunks(batch_size).map(Arc::from).collect()
    };
    for (i, batch) in batches.iter().enumerate() {
        let after = batches
            .get(i + 1)
            .and_then(|b| b.first())
            .map(|r| r.sequence);
        let ctx = LaneCtx {
            inner,
            progress,
            chunk,
            lane,
            after,
            stop,
        };
        ctx.process_batch(batch.clone()).await?;
    }
    Ok(())
}

struct LaneCtx<'a> {
    inner: &'a Arc<Inner>,
    progress: &'a Progress,
    chunk: &'a ChunkState,
    lane: usize,
    /// The first record of the lane's next batch.
    after: Option<SequenceNumber>,
    stop: &'a CancelToken,
}

impl LaneCtx<'_> {
    /// Runs one batch to completion: success, or retries exhausted and records given up.
    async fn process_batch(&self, batch: Arc<[Record]>) -> std::result::Result<(), Stopped> {
        let inner = self.inner;
        let config = &inner.config;
        let counters = &inner.counters;
        let mut work: VecDeque<(Arc<[Record]>, u32)> = VecDeque::from([(batch, 0)]);
        while let Some((mut records, attempt)) = work.pop_front() {
            if let Some(max_age) = config.max_record_age {
                let limit = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
                let now = inner.timer.now_millis();
                let expired = |r: &Record| now.saturating_sub(r.timestamp_ms) > limit;
                if records.iter().any(expired) {
                    let (old, live): (Vec<Record>, Vec<Record>) =
                        records.iter().cloned().partition(expired);
                    bump(&counters.records_expired, old.len() as u64);
                    let error = Error::new(
                        ErrorKind::Timeout,
                        format!("record is older than the maximum record age of {max_age:?}"),
                    );
                    self.give_up(&old, &error, attempt).await?;
                    records = live.into();
                    if records.is_empty() {
                        self.advance(work.front().map(|(r, _)| r)).await;
                        continue;
                    }
                }
            }
            bump(&counters.invocations, 1);
            let outcome = self.invoke(records.clone(), attempt).await;
            let failure = match outcome {
                Ok(()) => {
                    self.processed(records.len());
                    self.advance(work.front().map(|(r, _)| r)).await;
                    continue;
                }
                Err(f) => f,
            };
            bump(&counters.errors, 1);
            let split = failure
                .first_failed
                .and_then(|seq| records.iter().position(|r| r.sequence == seq))
                .unwrap_or(0);
            let failed: Arc<[Record]> = if split > 0 {
                self.processed(split);
                let rest: Arc<[Record]> = records[split..].into();
                self.advance(Some(&rest)).await;
                rest
            } else {
                records
            };
            if failure.first_failed.is_none() && config.bisect_on_error && failed.len() > 1 {
                bump(&counters.bisections, 1);
                let mid = failed.len() / 2;
                work.push_front((failed[mid..].into(), attempt));
                work.push_front((failed[..mid].into(), attempt));
                continue;
            }
            if config.max_retry_attempts.is_some_and(|max| attempt >= max) {
                if failure.first_failed.is_some() && failed.len() > 1 {
                    // The handler named the failed record: give up on it alone and
                    // deliver the records after it as a new batch.
                    self.give_up(&failed[..1], &failure.error, attempt + 1)
                        .await?;
                    work.push_front((failed[1..].into(), 0));
                    self.advance(work.front().map(|(r, _)| r)).await;
                    continue;
                }
                self.give_up(&failed, &failure.error, attempt + 1).await?;
                self.advance(work.front().map(|(r, _)| r)).await;
                continue;
            }
            bump(&counters.retries, 1);
            let delay = config.backoff.delay(attempt, &mut inner.rng.lock());
            if !sleep_or_stop(inner, delay, self.stop).await {
                return Err(Stopped);
            }
            work.push_front((failed, attempt.saturating_add(1)));
        }
        Ok(())
    }

    fn processed(&self, n: usize) {
        bump(&self.inner.counters.records_processed, n as u64);
        if let Some(m) = self.inner.shards.lock().get_mut(&self.progress.shard) {
            m.records_processed += n as u64;
        }
    }

    /// Runs the handler, turning a panic into an error.
    async fn invoke(
        &self,
        records: Arc<[Record]>,
        attempt: u32,
    ) -> std::result::Result<(), BatchError> {
        let batch = TriggerBatch {
            shard: self.progress.shard,
            lane: self.lane as u32,
            attempt,
            records,
        };
        let handler = &self.inner.handler;
        let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(batch))) {
            Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
            Err(panic) => Err(panic),
        };
        outcome.unwrap_or_else(|panic| {
            bump(&self.inner.counters.panics, 1);
            Err(BatchError::new(
                Error::new(
                    ErrorKind::External,
                    format!("handler panicked: {}", panic_message(panic.as_ref())),
                )
                .with_shard(self.progress.shard),
            ))
        })
    }

    /// Everything of this lane before `pending` (or the lane's next batch) is done:
    /// move the checkpoint if the whole chunk allows it.
    async fn advance(&self, pending: Option<&Arc<[Record]>>) {
        let next = pending
            .and_then(|r| r.first())
            .map(|r| r.sequence)
            .or(self.after);
        let Some(safe) = self.chunk.advance(self.lane, next) else {
            return;
        };
        let mut committed = self.progress.committed.lock().await;
        if committed.is_some_and(|c| c >= safe) {
            return;
        }
        let shard = self.progress.shard;
        match self
            .inner
            .log
            .commit_checkpoint(&self.inner.config.name, shard, safe)
            .await
        {
            Ok(()) => {
                *committed = Some(safe);
                if let Some(m) = self.inner.shards.lock().get_mut(&shard) {
                    m.checkpoint = Some(safe);
                }
            }
            Err(_) => bump(&self.inner.counters.checkpoint_errors, 1),
        }
    }

    /// Sends `records` to the on-failure log (retrying until it takes them or the
    /// trigger stops), or drops them when there is none.
    async fn give_up(
        &self,
        records: &[Record],
        error: &Error,
        attempts: u32,
    ) -> std::result::Result<(), Stopped> {
        let inner = self.inner;
        let Some(dlq) = &inner.on_failure else {
            bump(&inner.counters.records_dropped, records.len() as u64);
            return Ok(());
        };
        let mut pending: Vec<_> = records
            .iter()
            .map(|r| DeadLetter::from_record(&inner.config.name, r, attempts, error).to_put())
            .collect();
        let mut retry = 0;
        loop {
            let failed = match dlq.put_batch(pending.clone()).await {
                Ok(results) => pending
                    .into_iter()
                    .zip(results)
                    .filter_map(|(p, r)| r.is_err().then_some(p))
                    .collect(),
                Err(_) => pending,
            };
            bump(
                &inner.counters.records_dead_lettered,
                (records.len() - failed.len()) as u64,
            );
            if failed.is_empty() {
                return Ok(());
            }
            bump(&inner.counters.dead_letter_errors, 1);
            let delay = inner.config.backoff.delay(retry, &mut inner.rng.lock());
            retry = retry.saturating_add(1);
            if !sleep_or_stop(inner, delay, self.stop).await {
                return Err(Stopped);
            }
            pending = failed;
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_state_checkpoints_below_the_slowest_lane() {
        let state = ChunkState {
            sequences: vec![10, 11, 12, 13, 14],
            lanes: Mutex::new(vec![Some(10), Some(11)]),
        };
        // Lane 0 holds 10, 12, 14; lane 1 holds 11, 13.
        assert_eq!(state.advance(0, Some(12)), Some(10));
        assert_eq!(state.advance(0, None), Some(10));
        assert_eq!(state.advance(1, Some(13)), Some(12));
        assert_eq!(state.advance(1, None), Some(14));
    }

    #[test]
    fn config_is_validated() {
        let mut c = TriggerConfig::new("t".into());
        assert!(c.validate().is_ok());
        c.batch_size = 0;
        assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::InvalidInput);
        c.batch_size = 10;
        c.parallelization_factor = 0;
        assert!(
            c.validate()
                .unwrap_err()
                .message()
                .contains("parallelization")
        );
        c.parallelization_factor = 2;
        c.backoff.rate = f64::NAN;
        assert!(c.validate().unwrap_err().message().contains("backoff rate"));
    }

    #[test]
    fn lanes_are_stable_per_key() {
        for key in ["a", "user-1", "user-2", "ü"] {
            assert_eq!(lane_of(key, 4), lane_of(key, 4));
            assert!(lane_of(key, 4) < 4);
        }
    }
}
