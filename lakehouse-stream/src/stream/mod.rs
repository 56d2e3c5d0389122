//! [`Stream`]: the in-process sharded log.
//!
//! One concept per module: `builder` configures and opens a stream, `shard` holds
//! the per-shard log and the topology, `window` what a shard holds in memory (its
//! accounting and a durable shard's memory window), `put` and `read` are the hot paths,
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
mod committer;
mod event_log;
mod group_commit;
mod put;
mod read;
mod reshard;
mod shard;
mod subscribe;
mod window;

pub use self::builder::StreamBuilder;
pub use self::put::Backpressure;
pub use self::read::{GetRecords, ShardIterator, TrimmedRead};
pub use self::subscribe::Subscription;

use self::group_commit::Durable;
use self::shard::{Shard, ShardLog, Topology};
use crate::durable::Cursor;

struct Inner {
    id: u64,
    name: String,
    max_record_bytes: usize,
    retention_ms: Option<i64>,
    max_shard_bytes: usize,
    /// Bytes of records a durable shard keeps in memory.
    memory_window_bytes: usize,
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
    /// Runs the disk work of async puts (durable streams).
    committer: Arc<committer::Committer>,
}

/// A sharded, ordered, replayable log of records with Kinesis Data Streams semantics,
/// held in process memory, or on disk with a recent window in memory when durable.
/// Cheap to clone: clones share the stream.
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
        match self.inner.retention_ms {
            Some(age) => log.trim_age(age, now_ms),
            None => false,
        }
    }

    /// Where the frame of record `sequence` of `shard` is on disk: its segment file and
    /// byte offset (found from the segment index, reading at most 4 KiB of frames).
    /// `None` for an in-memory stream, a record not yet written or one retention
    /// trimmed.
    ///
    /// # Errors
    ///
    /// `ShardNotFound`; `Io` or `Corrupt` when the segment cannot be read.
    pub fn locate(
        &self,
        shard: ShardId,
        sequence: SequenceNumber,
    ) -> Result<Option<(PathBuf, u64)>> {
        let s = self.shard(shard)?;
        let Some(files) = &s.files else {
            return Ok(None);
        };
        let mark = {
            let log = s.log.lock();
            if sequence < log.first || sequence >= log.written {
                return Ok(None);
            }
            log.mark_for(sequence)
        };
        let Some(mark) = mark else {
            return Ok(None);
        };
        let refs = files.lock().refs_from(mark.pos);
        let mut cursor = Cursor::new(s.id, refs, mark);
        while let Some(r) = cursor
            .read_next()
            .map_err(|e| e.with_table(&self.inner.name))?
        {
            if r.sequence == sequence {
                return Ok(cursor.path().map(|p| (p.to_owned(), r.offset)));
            }
        }
        Ok(None)
    }

    /// The directory of a durable stream.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.durable.as_ref().map(|d| d.dir.as_path())
    }

    /// The bytes each shard's retained records count against
    /// [`max_shard_bytes`](StreamBuilder::max_shard_bytes), in id order: in an
    /// in-memory stream what they cost in memory ([`memory_bytes`](Self::memory_bytes)
    /// gives the formula), in a durable stream the bytes of their frames in the segment
    /// files (12-byte header, 20 bytes of sequence, time and key length, then key and
    /// payload).
    pub fn shard_bytes(&self) -> Vec<usize> {
        self.inner
            .topology
            .read()
            .all
            .iter()
            .map(|s| s.log.lock().bytes)
            .collect()
    }

    /// The memory each shard's records take, in id order: for every record held in
    /// memory 64 bytes (its entry) plus its payload's length plus its partition key's
    /// heap capacity when the key is over 24 bytes (shorter keys are inline); for a
    /// durable shard also the frames not yet written to its segment and the segment
    /// index (24 bytes per mark, one per 4 KiB of frames). Allocator rounding and
    /// headers are not counted.
    ///
    /// An in-memory shard holds every retained record, so this is its
    /// [`shard_bytes`](Self::shard_bytes). A durable shard holds only the newest
    /// records that fit in [`memory_window_bytes`](StreamBuilder::memory_window_bytes),
    /// plus those not yet written to disk.
    pub fn memory_bytes(&self) -> Vec<usize> {
        self.inner
            .topology
            .read()
            .all
            .iter()
            .map(|s| s.log.lock().memory_bytes())
            .collect()
    }
}
