//! The worker of one shard: the read loop, the batching window and the end of the
//! shard.

use std::sync::Arc;
use std::time::Duration;

use lakehouse_core::{
    CancelToken, ErrorKind, Position, ReadLimit, Record, Result, SequenceNumber, ShardId,
};

use crate::trigger::lanes::process_chunk;
use crate::trigger::{Inner, Mode, ShardExit, sleep_or_stop};

/// Reads shard `shard` in order from its checkpoint, gathers chunks of up to
/// `batch_size * parallelization_factor` records within the batching window, and has
/// each processed before reading on.
pub(super) async fn shard_worker(
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
pub(super) struct Progress {
    pub(super) shard: ShardId,
    /// Held across the commit so that concurrent lanes never move the checkpoint back.
    pub(super) committed: tokio::sync::Mutex<Option<SequenceNumber>>,
}
