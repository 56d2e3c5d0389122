//! What a trigger hands its handler and what it gets back: [`TriggerBatch`],
//! [`BatchError`] (whole or partial failure) and the [`BatchHandler`] trait.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use lakehouse_core::{Error, Record, SequenceNumber, ShardId};

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
    pub(super) error: Error,
    pub(super) first_failed: Option<SequenceNumber>,
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
