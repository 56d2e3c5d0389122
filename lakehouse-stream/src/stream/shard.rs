//! A shard as a stream holds it: its records in memory, its files, and the topology of
//! every shard with the open ones published for routing.

use std::collections::VecDeque;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use lakehouse_core::{PartitionKey, Record, SequenceNumber, ShardId, ShardInfo};
use parking_lot::{Condvar, Mutex};

use crate::blocks::Blocks;
use crate::durable::{Mark, ShardFiles, ShardMeta};

/// A record as a shard holds it in memory (64 bytes; a key of up to 24 bytes is inline, so a
/// read copies it from the entry it reads anyway): its sequence number is its place in
/// the shard and its shard is the holder, so neither is stored.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) key: PartitionKey,
    pub(super) data: Bytes,
    pub(super) timestamp_ms: i64,
}

impl From<Record> for Entry {
    fn from(r: Record) -> Entry {
        Entry {
            key: r.partition_key,
            data: r.data,
            timestamp_ms: r.timestamp_ms,
        }
    }
}

/// A shard's records and their accounting (methods in `window`).
#[derive(Debug)]
pub(super) struct ShardLog {
    /// The oldest retained record.
    pub(super) first: SequenceNumber,
    /// The oldest record held in memory: `records` holds `mem_first..next()`. Always
    /// `first` in an in-memory shard; a durable one reads older records from disk.
    pub(super) mem_first: SequenceNumber,
    pub(super) records: Blocks<Entry>,
    /// Bytes counted against `max_shard_bytes`: the memory cost of the retained
    /// records in an in-memory shard, their frames' bytes in a durable one.
    pub(super) bytes: usize,
    /// Memory cost of `records`.
    pub(super) mem_bytes: usize,
    pub(super) durable: bool,
    /// Shard byte positions of the frames of `first` and `mem_first` (durable).
    pub(super) first_pos: u64,
    pub(super) mem_pos: u64,
    /// Records below this are in the segment files (durable).
    pub(super) written: SequenceNumber,
    /// The sparse segment index: the last mark at or before `first`, then every later
    /// one (durable).
    pub(super) marks: VecDeque<Mark>,
    pub(super) newest_ms: i64,
    pub(super) closed: bool,
    /// Readers see records below this sequence number: all of them in memory, the
    /// durable ones when writes are fsynced.
    pub(super) visible: SequenceNumber,
    /// Frames not yet written to the shard's segment (durable streams).
    pub(super) pending: Vec<u8>,
    /// Sequence number of the first frame in `pending`.
    pub(super) pending_first: SequenceNumber,
}

#[derive(Debug)]
pub(super) struct Shard {
    pub(super) id: ShardId,
    pub(super) parents: Vec<ShardId>,
    pub(super) range: (u128, u128),
    pub(super) log: Mutex<ShardLog>,
    pub(super) space: Condvar,
    /// Notified on every append and when the shard closes.
    pub(super) data: Condvar,
    /// Its segment files (durable streams). Lock order: `files` before `log`.
    pub(super) files: Option<Mutex<ShardFiles>>,
}

impl Shard {
    pub(super) fn new(
        id: ShardId,
        parents: Vec<ShardId>,
        range: (u128, u128),
        files: Option<ShardFiles>,
    ) -> Arc<Shard> {
        Arc::new(Shard {
            id,
            parents,
            range,
            log: Mutex::new(ShardLog::new(files.is_some())),
            space: Condvar::new(),
            data: Condvar::new(),
            files: files.map(Mutex::new),
        })
    }

    pub(super) fn meta(&self, closed: bool) -> ShardMeta {
        ShardMeta {
            id: self.id,
            parents: self.parents.clone(),
            range: self.range,
            closed: closed || self.log.lock().closed,
        }
    }

    pub(super) fn info(&self) -> ShardInfo {
        ShardInfo {
            id: self.id,
            parents: self.parents.clone(),
            hash_range: self.range,
            closed: self.log.lock().closed,
        }
    }
}

pub(super) struct Topology {
    /// Every shard ever created, indexed by id; children always have larger ids than
    /// their parents.
    pub(super) all: Vec<Arc<Shard>>,
}

impl Topology {
    /// Adds `added` to every shard and publishes to `routing` the open shards with
    /// `closed` replaced by `added`. Called under the topology's write lock, the only
    /// place `routing` changes.
    pub(super) fn replace_open(
        &mut self,
        routing: &ArcSwap<Vec<Arc<Shard>>>,
        closed: &[ShardId],
        added: &[Arc<Shard>],
    ) {
        let mut open: Vec<Arc<Shard>> = routing
            .load()
            .iter()
            .filter(|s| !closed.contains(&s.id))
            .chain(added)
            .cloned()
            .collect();
        open.sort_by_key(|s| s.range.0);
        self.all.extend(added.iter().cloned());
        routing.store(Arc::new(open));
    }
}
