//! What a trigger reports: [`TriggerMetrics`] and [`ShardMetrics`], and the counters
//! behind them.

use std::sync::atomic::{AtomicU64, Ordering};

use lakehouse_core::{SequenceNumber, ShardId};

#[cfg(doc)]
use crate::Trigger;

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

/// The counters behind [`TriggerMetrics`], bumped by the shard workers.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) invocations: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) panics: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) bisections: AtomicU64,
    pub(super) records_processed: AtomicU64,
    pub(super) records_dead_lettered: AtomicU64,
    pub(super) records_dropped: AtomicU64,
    pub(super) records_expired: AtomicU64,
    pub(super) dead_letter_errors: AtomicU64,
    pub(super) checkpoint_errors: AtomicU64,
    pub(super) shard_failures: AtomicU64,
}

impl Counters {
    /// The counters now, with the per-shard gauges `shards`.
    pub(super) fn snapshot(&self, shards: Vec<ShardMetrics>) -> TriggerMetrics {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TriggerMetrics {
            invocations: get(&self.invocations),
            errors: get(&self.errors),
            panics: get(&self.panics),
            retries: get(&self.retries),
            bisections: get(&self.bisections),
            records_processed: get(&self.records_processed),
            records_dead_lettered: get(&self.records_dead_lettered),
            records_dropped: get(&self.records_dropped),
            records_expired: get(&self.records_expired),
            dead_letter_errors: get(&self.dead_letter_errors),
            checkpoint_errors: get(&self.checkpoint_errors),
            shard_failures: get(&self.shard_failures),
            shards,
        }
    }
}

/// Adds `n` to counter `c`.
pub(super) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
