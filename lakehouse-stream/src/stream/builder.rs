//! [`StreamBuilder`]: a stream's configuration, and creating or reopening it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use lakehouse_core::{Clock, Error, ErrorKind, Result, ShardId, SystemClock, even_hash_ranges};
use parking_lot::{Mutex, RwLock};

use super::group_commit::{Durable, interval_sync};
use super::shard::{Entry, Shard, Topology};
use super::window::memory_cost;
use super::{Backpressure, Inner, Stream, TrimmedRead};
use crate::durable::{self, CheckpointLog, Checkpoints, Durability, ShardFiles, ShardMeta};

/// Configures a [`Stream`]; made by [`Stream::builder`].
#[derive(Debug)]
#[must_use]
pub struct StreamBuilder {
    name: String,
    shards: u32,
    max_record_bytes: usize,
    retention: Option<Duration>,
    max_shard_bytes: usize,
    memory_window_bytes: usize,
    backpressure: Backpressure,
    trimmed_read: TrimmedRead,
    iterator_ttl: Duration,
    clock: Arc<dyn Clock>,
    dir: Option<PathBuf>,
    durability: Durability,
    segment_bytes: u64,
}

impl StreamBuilder {
    /// Makes the stream durable in directory `dir`: records go to per-shard segment
    /// files of CRC32C-framed records, and the shard topology (with its lineage) and
    /// consumer-group checkpoints are kept beside them. If `dir` holds a stream already,
    /// [`build`](Self::build) reopens it: the shard count given to
    /// [`shards`](Self::shards) is then ignored, every segment is checked, a torn tail
    /// (a frame cut short, zero fill or garbage after the last valid frame, as a crash
    /// or power loss leaves it) is truncated and each shard's newest records are
    /// loaded into its memory window.
    ///
    /// A durable shard keeps in memory only its newest records, at most
    /// [`memory_window_bytes`](Self::memory_window_bytes) of them once they are
    /// written to disk; older records are read back from the segment files (the same
    /// records, in order, with the same sequence numbers, times and keys).
    /// [`max_shard_bytes`](Self::max_shard_bytes) and retention then bound the
    /// segment files, not memory: `max_shard_bytes` counts the frames' bytes, and
    /// retention deletes whole segments once all their records are trimmed.
    pub fn durable(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// When writes of a durable stream are fsynced (default [`Durability::PerBatch`]).
    /// Ignored for an in-memory stream.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// A segment file is closed and a new one started once it holds this many bytes
    /// (default 64 MiB). Retention deletes whole segments.
    pub fn segment_bytes(mut self, n: u64) -> Self {
        self.segment_bytes = n.max(1);
        self
    }

    /// Bytes of records a durable shard keeps in memory (default 64 MiB per shard),
    /// counted as [`Stream::memory_bytes`] counts them (64 bytes per record plus its
    /// payload, plus its key when over 24 bytes). Records beyond it are read from the
    /// segment files. Records not yet written to their segment stay in memory as well:
    /// under [`Durability::None`] and [`Durability::Interval`] up to about 1 MiB of
    /// frames per shard (plus one put call's records), under [`Durability::PerBatch`]
    /// until their put returns. Ignored for an in-memory stream, which holds every
    /// retained record within [`max_shard_bytes`](Self::max_shard_bytes).
    pub fn memory_window_bytes(mut self, n: usize) -> Self {
        self.memory_window_bytes = n;
        self
    }

    /// Number of shards at creation (default 4).
    pub fn shards(mut self, n: u32) -> Self {
        self.shards = n;
        self
    }

    /// Largest record, partition key included (default 1 MiB).
    pub fn max_record_bytes(mut self, n: usize) -> Self {
        self.max_record_bytes = n;
        self
    }

    /// Records older than this are trimmed (default 24 hours; `None` keeps them until
    /// the byte bound trims them).
    pub fn retention(mut self, age: Option<Duration>) -> Self {
        self.retention = age;
        self
    }

    /// Bytes a shard's retained records take at most (default 256 MiB), counted as
    /// [`Stream::shard_bytes`] counts them: in an in-memory stream their memory (64
    /// bytes per record plus its payload, plus its key when over 24 bytes), in a
    /// durable stream their frames on disk (32 bytes per record plus key and payload).
    /// A put that does not fit applies the back-pressure policy until retention frees
    /// space; a shard holding no record takes any record within
    /// [`max_record_bytes`](Self::max_record_bytes).
    pub fn max_shard_bytes(mut self, n: usize) -> Self {
        self.max_shard_bytes = n;
        self
    }

    /// What a put into a full shard does (default [`Backpressure::Reject`]).
    pub fn backpressure(mut self, policy: Backpressure) -> Self {
        self.backpressure = policy;
        self
    }

    /// What a read of a trimmed position does (default [`TrimmedRead::Error`]).
    pub fn trimmed_read(mut self, policy: TrimmedRead) -> Self {
        self.trimmed_read = policy;
        self
    }

    /// How long a [`ShardIterator`](crate::ShardIterator) stays valid (default 5 minutes).
    pub fn iterator_ttl(mut self, ttl: Duration) -> Self {
        self.iterator_ttl = ttl;
        self
    }

    /// The clock for arrival times, retention and iterator expiry.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the stream (creating or reopening its directory when durable).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for zero shards, a zero record limit, or a shard
    /// bound smaller than one record. For a durable stream: `Io` when the directory
    /// cannot be read or written, `Conflict` when another handle (in this or another
    /// process) has it open, and `Corrupt` when a damaged frame is followed by valid
    /// ones (or a valid frame is out of sequence, or `TOPOLOGY` or a whole block of
    /// `CHECKPOINTS` fails its checksum); the error names the shard, the file and the
    /// byte offset of the bad frame, and the stream is not opened, so no record at or
    /// after it is served.
    pub fn build(self) -> Result<Stream> {
        if self.shards == 0
            || self.max_record_bytes == 0
            || self.max_shard_bytes < self.max_record_bytes
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a stream needs shards >= 1, max_record_bytes >= 1 and max_shard_bytes >= max_record_bytes",
            )
            .with_table(self.name));
        }
        let mut checkpoints = HashMap::new();
        let (all, durable) = match &self.dir {
            None => {
                let shards: Vec<Arc<Shard>> = even_hash_ranges(self.shards)
                    .into_iter()
                    .enumerate()
                    .map(|(i, range)| Shard::new(ShardId(i as u32), Vec::new(), range, None))
                    .collect();
                (shards, None)
            }
            Some(dir) => {
                let (shards, d, found) = self.open_dir(dir)?;
                checkpoints = found;
                (shards, Some(d))
            }
        };
        let mut open: Vec<Arc<Shard>> = all
            .iter()
            .filter(|s| !s.log.lock().closed)
            .cloned()
            .collect();
        open.sort_by_key(|s| s.range.0);
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed)
            ^ (self.clock.now_micros() as u64).rotate_left(20);
        let interval = match &durable {
            Some(Durable {
                durability: Durability::Interval(every),
                ..
            }) => Some(*every),
            _ => None,
        };
        let inner = Arc::new(Inner {
            id,
            name: self.name,
            max_record_bytes: self.max_record_bytes,
            retention_ms: self.retention.map(crate::millis),
            max_shard_bytes: self.max_shard_bytes,
            memory_window_bytes: self.memory_window_bytes,
            backpressure: self.backpressure,
            trimmed_read: self.trimmed_read,
            iterator_ttl_ms: crate::millis(self.iterator_ttl),
            clock: self.clock,
            routing: ArcSwap::from_pointee(open),
            topology: RwLock::new(Topology { all }),
            checkpoints: Mutex::new(checkpoints),
            gated: durable
                .as_ref()
                .is_some_and(|d| d.durability != Durability::None),
            durable,
            committer: Arc::default(),
        });
        if let Some(every) = interval {
            let weak = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name("lakehouse-stream-sync".into())
                .spawn(move || interval_sync(&weak, every))
                .map_err(|e| {
                    Error::new(ErrorKind::Io, "cannot start the sync thread")
                        .with_table(&inner.name)
                        .with_source(e)
                })?;
        }
        Ok(Stream { inner })
    }

    /// Creates or reopens the durable directory: topology, then each shard's segments.
    fn open_dir(&self, dir: &Path) -> Result<(Vec<Arc<Shard>>, Durable, Checkpoints)> {
        let lock = durable::lock_dir(dir).map_err(|e| e.with_table(&self.name))?;
        let sync = self.durability != Durability::None;
        let metas = match durable::read_topology(dir).map_err(|e| e.with_table(&self.name))? {
            Some(metas) => metas,
            None => {
                let metas: Vec<ShardMeta> = even_hash_ranges(self.shards)
                    .into_iter()
                    .enumerate()
                    .map(|(i, range)| ShardMeta {
                        id: ShardId(i as u32),
                        parents: Vec::new(),
                        range,
                        closed: false,
                    })
                    .collect();
                durable::write_topology(dir, &metas).map_err(|e| e.with_table(&self.name))?;
                metas
            }
        };
        let mut shards = Vec::with_capacity(metas.len());
        for meta in metas {
            let rec = ShardFiles::recover(dir, meta.id, self.memory_window_bytes, memory_cost)
                .map_err(|e| e.with_table(&self.name))?;
            let shard = Shard::new(meta.id, meta.parents, meta.range, Some(rec.files));
            {
                let mut log = shard.log.lock();
                log.restore(
                    rec.first,
                    rec.next,
                    rec.bytes,
                    rec.window.into_iter().map(Entry::from),
                    rec.marks,
                    rec.newest_ms,
                );
                log.closed = meta.closed;
            }
            shards.push(shard);
        }
        let (checkpoint_log, checkpoints) =
            CheckpointLog::open(dir, sync).map_err(|e| e.with_table(&self.name))?;
        Ok((
            shards,
            Durable::new(
                dir.to_owned(),
                self.durability,
                self.segment_bytes,
                lock,
                checkpoint_log,
            ),
            checkpoints,
        ))
    }
}

impl Stream {
    /// The default record size limit: 1 MiB.
    pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

    /// Starts configuring a stream called `name`.
    pub fn builder(name: impl Into<String>) -> StreamBuilder {
        StreamBuilder {
            name: name.into(),
            shards: 4,
            max_record_bytes: Self::DEFAULT_MAX_RECORD_BYTES,
            retention: Some(Duration::from_secs(24 * 3600)),
            max_shard_bytes: 256 << 20,
            memory_window_bytes: 64 << 20,
            backpressure: Backpressure::Reject,
            trimmed_read: TrimmedRead::Error,
            iterator_ttl: Duration::from_secs(300),
            clock: Arc::new(SystemClock),
            dir: None,
            durability: Durability::PerBatch,
            segment_bytes: 64 << 20,
        }
    }
}
