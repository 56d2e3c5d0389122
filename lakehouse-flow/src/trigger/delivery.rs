//! Delivering one batch of a lane: the handler invoked (a panic is an error), failures
//! retried with backoff or bisected, expired and exhausted records given up to the
//! on-failure log, and the checkpoint moved as records are done.

use std::collections::VecDeque;
use std::sync::Arc;

use lakehouse_core::{CancelToken, Error, ErrorKind, Record, SequenceNumber};

use crate::dead_letter::DeadLetter;
use crate::panic::catch_panic;
use crate::trigger::lanes::ChunkState;
use crate::trigger::metrics::bump;
use crate::trigger::shard::Progress;
use crate::trigger::{BatchError, Inner, Stopped, TriggerBatch, sleep_or_stop};

/// One lane of a chunk, delivering its batches.
pub(super) struct LaneCtx<'a> {
    pub(super) inner: &'a Arc<Inner>,
    pub(super) progress: &'a Progress,
    pub(super) chunk: &'a ChunkState,
    pub(super) lane: usize,
    /// The first record of the lane's next batch.
    pub(super) after: Option<SequenceNumber>,
    pub(super) stop: &'a CancelToken,
}

impl LaneCtx<'_> {
    /// Runs one batch to completion: success, or retries exhausted and records given up.
    pub(super) async fn process_batch(
        &self,
        batch: Arc<[Record]>,
    ) -> std::result::Result<(), Stopped> {
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
        catch_panic(|| handler.call(batch))
            .await
            .unwrap_or_else(|msg| {
                bump(&self.inner.counters.panics, 1);
                Err(BatchError::new(
                    Error::new(ErrorKind::External, format!("handler panicked: {msg}"))
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
