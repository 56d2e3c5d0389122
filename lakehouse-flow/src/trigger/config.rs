//! How a trigger reads, batches and retries: [`TriggerConfig`], and the
//! [`TriggerBuilder`] that sets it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lakehouse_core::{Error, ErrorKind, EventLog, Position, Result};
use parking_lot::Mutex;

use crate::backoff::{Backoff, JitterRng};
use crate::time::Timer;
use crate::trigger::batch::BatchHandler;
use crate::trigger::metrics::Counters;
use crate::trigger::{Inner, Trigger};

#[cfg(doc)]
use crate::{DeadLetter, TokioTimer};

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
    pub(super) fn new(name: String) -> Self {
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

    pub(super) fn validate(&self) -> Result<()> {
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
    pub(super) log: Arc<dyn EventLog>,
    pub(super) handler: Arc<dyn BatchHandler>,
    pub(super) on_failure: Option<Arc<dyn EventLog>>,
    pub(super) timer: Arc<dyn Timer>,
    pub(super) config: TriggerConfig,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
