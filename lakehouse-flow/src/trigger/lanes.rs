//! Lanes: a shard's chunk spread over `parallelization_factor` lanes by partition key,
//! so that each key keeps its order, and the checkpoint kept below the slowest lane.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use lakehouse_core::{CancelToken, Record, SequenceNumber};
use parking_lot::Mutex;

use crate::trigger::delivery::LaneCtx;
use crate::trigger::shard::Progress;
use crate::trigger::{Inner, Stopped};

/// Where each lane of a chunk stands: the sequence number of its first record not yet
/// done (processed or given up on), `None` once the lane is through.
pub(super) struct ChunkState {
    /// Every sequence number of the chunk, ascending.
    sequences: Vec<SequenceNumber>,
    lanes: Mutex<Vec<Option<SequenceNumber>>>,
}

impl ChunkState {
    /// Marks lane `lane` as done up to (not including) `next_pending`, and returns the
    /// newest sequence number below which every record of the chunk is done.
    pub(super) fn advance(
        &self,
        lane: usize,
        next_pending: Option<SequenceNumber>,
    ) -> Option<SequenceNumber> {
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

/// Spreads `chunk` over the shard's lanes by partition key and runs the lanes
/// concurrently, each batch after batch.
pub(super) async fn process_chunk(
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

/// The lane of partition key `key`.
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
    fn lanes_are_stable_per_key() {
        for key in ["a", "user-1", "user-2", "ü"] {
            assert_eq!(lane_of(key, 4), lane_of(key, 4));
            assert!(lane_of(key, 4) < 4);
        }
    }
}
