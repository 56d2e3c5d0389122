//! [`Stream`]: the in-process sharded log.
//!
//! One concept per module: `builder` configures and opens a stream, `shard` holds
//! the per-shard log and the topology, `put` and `read` are the hot paths,
//! `group_commit` writes and fsyncs a durable stream, `reshard` splits and merges
//! shards, `subscribe` pushes records to a subscriber, `checkpoint` keeps consumer
//! positions and `event_log` implements the `EventLog` contract.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use lakehouse_core::{Clock, Error, ErrorKind, Result, SequenceNumber, ShardId, ShardInfo};
use parking_lot::{Mutex, RwLock};

mod builder;
mod checkpoint;
mod event_log;
mod group_commit;
mod put;
mod read;
mod reshard;
mod shard;
mod subscribe;

pub use self::builder::StreamBuilder;
pub use self::put::Backpressure;
pub use self::read::{GetRecords, ShardIterator, TrimmedRead};
pub use self::subscribe::Subscription;

use self::group_commit::Durable;
use self::shard::{Shard, ShardLog, Topology};

struct Inner {
    id: u64,
    name: String,
    max_record_bytes: usize,
    retention_ms: Option<i64>,
    max_shard_bytes: usize,
    backpressure: Backpressure,
    trimmed_read: TrimmedRead,
    iterator_ttl_ms: i64,
    clock: Arc<dyn Clock>,
    /// Changed only under its write lock, by resharding.
    topology: RwLock<Topology>,
    /// The open shards, ordered by hash range, that puts route by without taking a
    /// lock or touching a shared counter: resharding publishes a new set before it
    /// closes the parents, and a put that finds its shard closed routes again.
    routing: ArcSwap<Vec<Arc<Shard>>>,
    checkpoints: Mutex<HashMap<(String, ShardId), SequenceNumber>>,
    /// Readers see only durable records (durable, fsyncing streams).
    gated: bool,
    durable: Option<Durable>,
}

/// A sharded, ordered, replayable log of records with Kinesis Data Streams semantics,
/// held in process memory. Cheap to clone: clones share the stream.
///
/// Implements [`lakehouse_core::EventLog`]; the inherent methods are synchronous and
/// never block for long (except a put under [`Backpressure::Wait`]).
#[derive(Clone)]
pub struct Stream {
    inner: Arc<Inner>,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("name", &self.inner.name)
            .field("shards", &self.inner.topology.read().all.len())
            .finish_non_exhaustive()
    }
}

impl Stream {
    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn shard(&self, id: ShardId) -> Result<Arc<Shard>> {
        self.inner
            .topology
            .read()
            .all
            .get(id.0 as usize)
            .cloned()
            .ok_or_else(|| {
                Error::new(ErrorKind::ShardNotFound, "no such shard")
                    .with_table(&self.inner.name)
                    .with_shard(id)
            })
    }

    /// All shards, open and closed, in id order (parents before children).
    pub fn shards(&self) -> Vec<ShardInfo> {
        self.inner
            .topology
            .read()
            .all
            .iter()
            .map(|s| s.info())
            .collect()
    }

    /// Trims records past the retention age from `log`; returns whether any were.
    fn trim_age(&self, log: &mut ShardLog, now_ms: i64) -> bool {
        let Some(age) = self.inner.retention_ms else {
            return false;
        };
        let mut trimmed = false;
        while log
            .records
            .front()
            .is_some_and(|r| now_ms - r.timestamp_ms >= age)
        {
            if let Some(r) = log.records.pop_front() {
                log.bytes -= r.data.len();
                log.first += 1;
                trimmed = true;
            }
        }
        trimmed
    }

    /// Where the frame of record `sequence` of `shard` is on disk: its segment file and
    /// byte offset (from the segment index). `None` for an in-memory stream, a record
    /// not yet written or one whose segment retention deleted.
    ///
    /// # Errors
    ///
    /// `ShardNotFound`.
    pub fn locate(
        &self,
        shard: ShardId,
        sequence: SequenceNumber,
    ) -> Result<Option<(PathBuf, u64)>> {
        let s = self.shard(shard)?;
        Ok(s.files.as_ref().and_then(|f| f.lock().locate(sequence)))
    }

    /// The directory of a durable stream.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.durable.as_ref().map(|d| d.dir.as_path())
    }

    /// Payload bytes held by each shard, in id order.
    pub fn shard_bytes(&self) -> Vec<usize> {
        self.inner
            .topology
            .read()
            .all
            .iter()
            .map(|s| s.log.lock().bytes)
            .collect()
    }
}
