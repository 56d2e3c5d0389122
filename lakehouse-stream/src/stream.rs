//! [`Stream`]: the in-process sharded log.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use lakehouse_core::{
    Clock, Error, ErrorKind, PartitionKey, Position, PutRecord, PutResult, ReadBatch, ReadLimit,
    Record, Result, SequenceNumber, ShardId, ShardInfo, SystemClock, even_hash_ranges,
};
use parking_lot::{Condvar, Mutex, MutexGuard, RwLock};

use crate::blocks::Blocks;
use crate::durable::{self, Durability, ShardFiles, ShardMeta};
use crate::route;

/// Pending frames of a shard are written to its segment once they reach this size
/// (durable streams without per-batch fsync).
const FLUSH_BYTES: usize = 1 << 20;

/// What a put does when its shard holds `max_shard_bytes` already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// Fail the record with [`ErrorKind::Full`]; nothing is written.
    Reject,
    /// Wait up to this long for retention to free space, then fail with `Full`.
    Wait(Duration),
}

/// What a read at a trimmed position does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrimmedRead {
    /// Fail with [`ErrorKind::PositionTrimmed`].
    Error,
    /// Start at the oldest retained record instead.
    StartAtOldest,
}

/// Configures a [`Stream`]; made by [`Stream::builder`].
#[derive(Debug)]
#[must_use]
pub struct StreamBuilder {
    name: String,
    shards: u32,
    max_record_bytes: usize,
    retention: Option<Duration>,
    max_shard_bytes: usize,
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
    /// (a frame cut short by a crash) is truncated and the records are loaded.
    ///
    /// Records stay held in memory as well, bounded by
    /// [`max_shard_bytes`](Self::max_shard_bytes) and retention like an in-memory
    /// stream; reads are served from memory. Retention deletes whole segments once all
    /// their records are trimmed.
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

    /// Payload bytes a shard holds at most (default 256 MiB). Beyond it, the oldest
    /// records are trimmed if retention allows, else puts apply the back-pressure policy.
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

    /// How long a [`ShardIterator`] stays valid (default 5 minutes).
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
    /// process) has it open, and `Corrupt` when a segment fails its checksum or a
    /// segment is missing; the error names the shard, the file and the byte offset of
    /// the bad frame, and the stream is not opened, so no record at or after it is
    /// served.
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
                let (shards, d) = self.open_dir(dir)?;
                for (group, shard, seq) in durable::read_checkpoints(dir)? {
                    checkpoints.insert((group, shard), seq);
                }
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
            retention_ms: self.retention.map(|d| d.as_millis() as i64),
            max_shard_bytes: self.max_shard_bytes,
            backpressure: self.backpressure,
            trimmed_read: self.trimmed_read,
            iterator_ttl_ms: self.iterator_ttl.as_millis() as i64,
            clock: self.clock,
            routing: ArcSwap::from_pointee(open),
            topology: RwLock::new(Topology { all }),
            checkpoints: Mutex::new(checkpoints),
            gated: durable
                .as_ref()
                .is_some_and(|d| d.durability != Durability::None),
            durable,
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
    fn open_dir(&self, dir: &Path) -> Result<(Vec<Arc<Shard>>, Durable)> {
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
                durable::write_topology(dir, &metas, sync).map_err(|e| e.with_table(&self.name))?;
                metas
            }
        };
        let mut shards = Vec::with_capacity(metas.len());
        for meta in metas {
            let rec = ShardFiles::recover(dir, meta.id).map_err(|e| e.with_table(&self.name))?;
            let shard = Shard::new(meta.id, meta.parents, meta.range, Some(rec.files));
            {
                let mut log = shard.log.lock();
                log.first = rec.first;
                log.bytes = rec.records.iter().map(|r| r.data.len()).sum();
                log.newest_ms = rec
                    .records
                    .iter()
                    .map(|r| r.timestamp_ms)
                    .max()
                    .unwrap_or(i64::MIN);
                log.records = rec.records.into_iter().map(Entry::from).collect();
                log.closed = meta.closed;
                log.visible = log.next();
                log.pending_first = log.next();
            }
            shards.push(shard);
        }
        Ok((
            shards,
            Durable {
                dir: dir.to_owned(),
                durability: self.durability,
                segment_bytes: self.segment_bytes,
                appended: AtomicU64::new(0),
                commit: Mutex::new(CommitState {
                    synced: 0,
                    leading: false,
                    failed: None,
                }),
                committed: Condvar::new(),
                _lock: lock,
            },
        ))
    }
}

/// The body of the thread that fsyncs a [`Durability::Interval`] stream.
fn interval_sync(weak: &Weak<Inner>, every: Duration) {
    loop {
        std::thread::sleep(every);
        let Some(inner) = weak.upgrade() else {
            return;
        };
        if let Some(d) = &inner.durable {
            let target = d.appended.fetch_add(1, Ordering::SeqCst) + 1;
            // A failure is kept in the commit state and reported to `sync` callers.
            let _ = inner.commit(target);
        }
    }
}

/// The durable side of a stream: its directory and the group-commit state.
#[derive(Debug)]
struct Durable {
    dir: PathBuf,
    durability: Durability,
    segment_bytes: u64,
    /// Tickets handed to appenders; a commit round covers every ticket issued before it
    /// starts.
    appended: AtomicU64,
    commit: Mutex<CommitState>,
    committed: Condvar,
    _lock: File,
}

#[derive(Debug)]
struct CommitState {
    /// Every ticket up to this one is durable.
    synced: u64,
    /// A writer is running a commit round.
    leading: bool,
    /// A write or fsync failed: what is durable is unknown, so the stream refuses to
    /// acknowledge anything more.
    failed: Option<String>,
}

/// A record as a shard holds it (64 bytes; a key of up to 24 bytes is inline, so a
/// read copies it from the entry it reads anyway): its sequence number is its place in
/// the shard and its shard is the holder, so neither is stored.
#[derive(Debug)]
struct Entry {
    key: PartitionKey,
    data: Bytes,
    timestamp_ms: i64,
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

#[derive(Debug)]
struct ShardLog {
    first: SequenceNumber,
    records: Blocks<Entry>,
    bytes: usize,
    newest_ms: i64,
    closed: bool,
    /// Readers see records below this sequence number: all of them in memory, the
    /// durable ones when writes are fsynced.
    visible: SequenceNumber,
    /// Frames not yet written to the shard's segment (durable streams).
    pending: Vec<u8>,
    /// Sequence number of the first frame in `pending`.
    pending_first: SequenceNumber,
}

impl ShardLog {
    fn next(&self) -> SequenceNumber {
        self.first + self.records.len() as u64
    }
}

#[derive(Debug)]
struct Shard {
    id: ShardId,
    parents: Vec<ShardId>,
    range: (u128, u128),
    log: Mutex<ShardLog>,
    space: Condvar,
    /// Notified on every append and when the shard closes.
    data: Condvar,
    /// Its segment files (durable streams). Lock order: `files` before `log`.
    files: Option<Mutex<ShardFiles>>,
}

impl Shard {
    fn new(
        id: ShardId,
        parents: Vec<ShardId>,
        range: (u128, u128),
        files: Option<ShardFiles>,
    ) -> Arc<Shard> {
        Arc::new(Shard {
            id,
            parents,
            range,
            log: Mutex::new(ShardLog {
                first: 0,
                records: Blocks::default(),
                bytes: 0,
                newest_ms: i64::MIN,
                closed: false,
                visible: 0,
                pending: Vec::new(),
                pending_first: 0,
            }),
            space: Condvar::new(),
            data: Condvar::new(),
            files: files.map(Mutex::new),
        })
    }

    fn meta(&self, closed: bool) -> ShardMeta {
        ShardMeta {
            id: self.id,
            parents: self.parents.clone(),
            range: self.range,
            closed: closed || self.log.lock().closed,
        }
    }

    fn info(&self) -> ShardInfo {
        ShardInfo {
            id: self.id,
            parents: self.parents.clone(),
            hash_range: self.range,
            closed: self.log.lock().closed,
        }
    }
}

struct Topology {
    /// Every shard ever created, indexed by id; children always have larger ids than
    /// their parents.
    all: Vec<Arc<Shard>>,
}

impl Topology {
    /// Adds `added` to every shard and publishes to `routing` the open shards with
    /// `closed` replaced by `added`. Called under the topology's write lock, the only
    /// place `routing` changes.
    fn replace_open(
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

impl Inner {
    /// Appends a record (validated, routed to this open shard, with room) to `log`,
    /// framing it for the segment file when durable.
    fn append(
        &self,
        shard: &Shard,
        log: &mut ShardLog,
        key: PartitionKey,
        data: Bytes,
        timestamp_ms: i64,
    ) -> SequenceNumber {
        let sequence = log.next();
        if shard.files.is_some() {
            if log.pending.is_empty() {
                log.pending_first = sequence;
            }
            durable::encode(
                &mut log.pending,
                sequence,
                timestamp_ms,
                key.as_str(),
                &data,
            );
        }
        log.newest_ms = timestamp_ms;
        log.bytes += data.len();
        log.records.push_back(Entry {
            key,
            data,
            timestamp_ms,
        });
        if !self.gated {
            log.visible = sequence + 1;
        }
        sequence
    }

    /// After records were appended to `shards` (whose pending frames had reached
    /// `FLUSH_BYTES` where `full` says so): writes or commits them per the durability
    /// setting.
    fn after_append(&self, full: &[&Shard]) -> Result<()> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        match d.durability {
            Durability::PerBatch => {
                let ticket = d.appended.fetch_add(1, Ordering::SeqCst) + 1;
                self.commit(ticket)
            }
            Durability::None | Durability::Interval(_) => {
                for shard in full {
                    if let Some(files) = &shard.files {
                        let mut files = files.lock();
                        self.write_pending(shard, &mut files)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Writes `shard`'s pending frames to its newest segment and deletes segments that
    /// retention emptied.
    fn write_pending(&self, shard: &Shard, files: &mut ShardFiles) -> Result<()> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        let (buf, first, oldest) = {
            let mut log = shard.log.lock();
            (
                std::mem::take(&mut log.pending),
                log.pending_first,
                log.first,
            )
        };
        let sync = d.durability != Durability::None;
        let written = files
            .append(&buf, first, d.segment_bytes, sync)
            .and_then(|()| files.retain(oldest))
            .map_err(|e| e.with_table(&self.name));
        if let Err(e) = &written {
            d.commit.lock().failed = Some(e.to_string());
        }
        written
    }

    /// One commit round: writes every shard's pending frames and, with `sync`, fsyncs
    /// every segment written since its last fsync (in parallel), then lets readers see
    /// what became durable.
    fn flush(&self, sync: bool) -> Result<()> {
        let shards = self.topology.read().all.clone();
        let mut to_sync = Vec::new();
        for shard in &shards {
            let Some(files) = &shard.files else {
                continue;
            };
            let mut files = files.lock();
            self.write_pending(shard, &mut files)?;
            if sync && files.unsynced() {
                to_sync.push(shard);
            }
        }
        let sync_one = |shard: &Shard| -> Result<()> {
            let Some(files) = &shard.files else {
                return Ok(());
            };
            let mut files = files.lock();
            files.sync().map_err(|e| e.with_table(&self.name))?;
            let end = files.written_end();
            drop(files);
            let mut log = shard.log.lock();
            if self.gated && end > log.visible {
                log.visible = end;
                drop(log);
                shard.data.notify_all();
            }
            Ok(())
        };
        match to_sync.len() {
            0 => Ok(()),
            1 => sync_one(to_sync[0]),
            _ => std::thread::scope(|s| {
                let handles: Vec<_> = to_sync[1..]
                    .iter()
                    .map(|shard| s.spawn(|| sync_one(shard)))
                    .collect();
                let mut result = sync_one(to_sync[0]);
                for h in handles {
                    let r = h.join().unwrap_or_else(|_| {
                        Err(Error::new(ErrorKind::Internal, "an fsync thread panicked"))
                    });
                    if result.is_ok() {
                        result = r;
                    }
                }
                result
            }),
        }
    }

    /// Waits until ticket `ticket` is durable, running commit rounds while no other
    /// writer does: writers that arrive during a round's fsync are all covered by the
    /// next round (group commit).
    fn commit(&self, ticket: u64) -> Result<()> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        let mut st = d.commit.lock();
        loop {
            if let Some(failed) = &st.failed {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "an earlier write or fsync failed, nothing more is acknowledged: {failed}"
                    ),
                )
                .with_table(&self.name));
            }
            if st.synced >= ticket {
                return Ok(());
            }
            if st.leading {
                d.committed.wait(&mut st);
                continue;
            }
            st.leading = true;
            let (target, result) = MutexGuard::unlocked(&mut st, || {
                let target = d.appended.load(Ordering::SeqCst);
                (target, self.flush(true))
            });
            st.leading = false;
            match result {
                Ok(()) => st.synced = st.synced.max(target),
                Err(e) => {
                    st.failed.get_or_insert_with(|| e.to_string());
                }
            }
            d.committed.notify_all();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(d) = &self.durable {
            // Best effort: `Stream::sync` reports errors; a drop cannot.
            let _ = self.flush(d.durability != Durability::None);
        }
    }
}

/// A position in one shard of one stream, valid for a limited time: the Kinesis shard
/// iterator. Obtain one with [`Stream::shard_iterator`], pass it to
/// [`Stream::get_records`], continue with the iterator that returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardIterator {
    stream: u64,
    shard: ShardId,
    sequence: SequenceNumber,
    issued_ms: i64,
}

impl ShardIterator {
    /// The shard it reads.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The sequence number the next read starts at.
    pub fn sequence(&self) -> SequenceNumber {
        self.sequence
    }
}

/// The result of [`Stream::get_records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetRecords {
    /// Records in sequence order.
    pub records: Vec<Record>,
    /// Where to continue; `None` when the shard is closed and fully read (continue with
    /// its children).
    pub next_iterator: Option<ShardIterator>,
    /// How far the next unread record is behind the newest, in milliseconds.
    pub millis_behind_latest: u64,
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
            backpressure: Backpressure::Reject,
            trimmed_read: TrimmedRead::Error,
            iterator_ttl: Duration::from_secs(300),
            clock: Arc::new(SystemClock),
            dir: None,
            durability: Durability::PerBatch,
            segment_bytes: 64 << 20,
        }
    }

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

    /// Appends one record.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty partition key, `RecordTooLarge` above the record
    /// limit, `Full` when the shard is full and the back-pressure policy gives up.
    pub fn put_record(&self, record: PutRecord) -> Result<PutResult> {
        record
            .validate(self.inner.max_record_bytes)
            .map_err(|e| e.with_table(&self.inner.name))?;
        let hash = record.routing_key();
        self.put_routed(hash, record.partition_key, record.data)
    }

    /// Appends a validated record whose hash key is `hash`, applying the back-pressure
    /// policy and routing again if its shard closes meanwhile.
    fn put_routed(&self, hash: u128, key: PartitionKey, data: Bytes) -> Result<PutResult> {
        let deadline = match self.inner.backpressure {
            Backpressure::Reject => None,
            Backpressure::Wait(d) => Some(Instant::now() + d),
        };
        loop {
            let open = self.inner.routing.load();
            let i = open.partition_point(|s| s.range.1 < hash);
            let Some(shard) = open.get(i) else {
                return Err(Error::new(
                    ErrorKind::Internal,
                    "no open shard owns a hash key",
                ));
            };
            let now = self.inner.clock.now_millis();
            let mut log = shard.log.lock();
            if log.closed {
                // Split or merged since routing: route again.
                continue;
            }
            self.trim_age(&mut log, now);
            let size = data.len();
            if log.bytes + size > self.inner.max_shard_bytes {
                let full = || {
                    Error::new(
                        ErrorKind::Full,
                        format!(
                            "shard holds {} bytes, the bound is {}",
                            log.bytes, self.inner.max_shard_bytes
                        ),
                    )
                    .with_table(&self.inner.name)
                    .with_shard(shard.id)
                    .with_key(key.as_str())
                };
                match deadline {
                    Some(d) if Instant::now() < d => {
                        let wait = (d - Instant::now()).min(Duration::from_millis(10));
                        shard.space.wait_for(&mut log, wait);
                        continue;
                    }
                    _ => return Err(full()),
                }
            }
            let timestamp_ms = now.max(log.newest_ms);
            let sequence = self.inner.append(shard, &mut log, key, data, timestamp_ms);
            let full = log.pending.len() >= FLUSH_BYTES;
            drop(log);
            shard.data.notify_all();
            if self.inner.durable.is_some() {
                let shards: &[&Shard] = if full { &[shard] } else { &[] };
                self.inner
                    .after_append(shards)
                    .map_err(|e| e.with_shard(shard.id).with_version(sequence))?;
            }
            return Ok(PutResult {
                shard: shard.id,
                sequence,
            });
        }
    }

    /// Appends several records; one result per entry, in request order. A failed entry
    /// fails alone.
    ///
    /// Records are routed first, then each shard is locked once for all of its records,
    /// with one clock reading per shard.
    pub fn put_records(&self, records: Vec<PutRecord>) -> Vec<Result<PutResult>> {
        let mut results: Vec<Option<Result<PutResult>>> = Vec::with_capacity(records.len());
        let mut pending: Vec<Option<PutRecord>> = Vec::with_capacity(records.len());
        let mut hashes = vec![0u128; records.len()];
        // Short keys without an explicit hash key are hashed LANES at a time.
        let mut lanes = [0usize; route::LANES];
        let mut filled = 0;
        let hash_lanes = |lanes: &[usize], pending: &[Option<PutRecord>], hashes: &mut [u128]| {
            let mut keys: [&[u8]; route::LANES] = [&[]; route::LANES];
            for (k, &i) in keys.iter_mut().zip(lanes) {
                *k = pending[i]
                    .as_ref()
                    .map_or(&[][..], |r| r.partition_key.as_bytes());
            }
            let digests = route::md5_keys(&keys[..lanes.len()]);
            for (&i, h) in lanes.iter().zip(digests) {
                hashes[i] = h;
            }
        };
        for (i, r) in records.into_iter().enumerate() {
            match r.validate(self.inner.max_record_bytes) {
                Ok(()) => {
                    let batched =
                        r.explicit_hash_key.is_none() && r.partition_key.len() <= route::MAX_KEY;
                    if !batched {
                        hashes[i] = r.routing_key();
                    }
                    results.push(None);
                    pending.push(Some(r));
                    if batched {
                        lanes[filled] = i;
                        filled += 1;
                        if filled == route::LANES {
                            hash_lanes(&lanes, &pending, &mut hashes);
                            filled = 0;
                        }
                    }
                }
                Err(e) => {
                    results.push(Some(Err(e.with_table(&self.inner.name))));
                    pending.push(None);
                }
            }
        }
        if filled > 0 {
            hash_lanes(&lanes[..filled], &pending, &mut hashes);
        }
        let mut pending: Vec<Option<(PartitionKey, Bytes)>> = pending
            .into_iter()
            .map(|r| r.map(|r| (r.partition_key, r.data)))
            .collect();
        let groups: Vec<(Arc<Shard>, Vec<usize>)> = {
            let open = self.inner.routing.load();
            let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); open.len()];
            for (i, &h) in hashes.iter().enumerate() {
                if pending[i].is_some() {
                    let s = open.partition_point(|s| s.range.1 < h);
                    if let Some(group) = by_shard.get_mut(s) {
                        group.push(i);
                    }
                }
            }
            open.iter()
                .cloned()
                .zip(by_shard)
                .filter(|(_, g)| !g.is_empty())
                .collect()
        };
        let mut full: Vec<Arc<Shard>> = Vec::new();
        for (shard, group) in &groups {
            let now = self.inner.clock.now_millis();
            let mut log = shard.log.lock();
            self.trim_age(&mut log, now);
            // Once one record of this shard is left to the single-record path, so are
            // all after it: they are put in request order, which keeps each key's order
            // (a smaller record must not overtake one waiting for space).
            let mut deferred = false;
            for &i in group {
                let Some((key, data)) = pending[i].take() else {
                    continue;
                };
                if deferred || log.closed || log.bytes + data.len() > self.inner.max_shard_bytes {
                    // Resharded meanwhile, or full: the single-record path reroutes or
                    // applies the back-pressure policy.
                    pending[i] = Some((key, data));
                    deferred = true;
                    continue;
                }
                let timestamp_ms = now.max(log.newest_ms);
                let sequence = self.inner.append(shard, &mut log, key, data, timestamp_ms);
                results[i] = Some(Ok(PutResult {
                    shard: shard.id,
                    sequence,
                }));
            }
            if log.pending.len() >= FLUSH_BYTES {
                full.push(shard.clone());
            }
            drop(log);
            shard.data.notify_all();
        }
        if self.inner.durable.is_some() {
            let full: Vec<&Shard> = full.iter().map(|s| &**s).collect();
            if let Err(e) = self.inner.after_append(&full) {
                // Not acknowledged: whether these records are durable is unknown.
                for r in results.iter_mut() {
                    if let Some(Ok(put)) = r {
                        *r = Some(Err(Error::new(e.kind(), e.message().to_owned())
                            .with_context(e.context().clone())
                            .with_shard(put.shard)
                            .with_version(put.sequence)));
                    }
                }
            }
        }
        results
            .into_iter()
            .zip(pending)
            .zip(hashes)
            .map(|((done, left), hash)| match (done, left) {
                (Some(r), _) => r,
                (None, Some((key, data))) => self.put_routed(hash, key, data),
                (None, None) => Err(Error::new(
                    ErrorKind::Internal,
                    "a record was neither put nor failed",
                )),
            })
            .collect()
    }

    /// Resolves `position` to the first sequence number to read.
    fn resolve(&self, shard: &Shard, log: &ShardLog, position: Position) -> Result<SequenceNumber> {
        let next = log.next();
        let err = |kind, msg: String, seq| {
            Error::new(kind, msg)
                .with_table(&self.inner.name)
                .with_shard(shard.id)
                .with_version(seq)
        };
        let start = match position {
            Position::TrimHorizon => log.first,
            Position::Latest => log.visible,
            Position::AtSequence(s) => s,
            Position::AfterSequence(s) => s.checked_add(1).ok_or_else(|| {
                err(
                    ErrorKind::InvalidPosition,
                    format!("sequence {s} is out of range"),
                    s,
                )
            })?,
            Position::AtTimestamp(ts) => {
                log.first + log.records.partition_point(|r| r.timestamp_ms < ts) as u64
            }
        };
        if start > next {
            return Err(err(
                ErrorKind::InvalidPosition,
                format!("sequence {start} is beyond the next sequence {next}"),
                start,
            ));
        }
        if start < log.first {
            return match self.inner.trimmed_read {
                TrimmedRead::StartAtOldest => Ok(log.first),
                TrimmedRead::Error => Err(err(
                    ErrorKind::PositionTrimmed,
                    format!(
                        "sequence {start} was trimmed; the oldest retained is {}",
                        log.first
                    ),
                    start,
                )),
            };
        }
        Ok(start)
    }

    /// An iterator over `shard` starting at `position`.
    ///
    /// # Errors
    ///
    /// `ShardNotFound`, `InvalidPosition`, or `PositionTrimmed` (per the stream's
    /// [`TrimmedRead`] policy).
    pub fn shard_iterator(&self, shard: ShardId, position: Position) -> Result<ShardIterator> {
        let s = self.shard(shard)?;
        let log = s.log.lock();
        let sequence = self.resolve(&s, &log, position)?;
        Ok(ShardIterator {
            stream: self.inner.id,
            shard,
            sequence,
            issued_ms: self.inner.clock.now_millis(),
        })
    }

    /// Reads from `iterator` within `limit`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an iterator of another stream, `InvalidPosition` for an
    /// expired iterator, `PositionTrimmed` when its records were trimmed meanwhile.
    pub fn get_records(&self, iterator: &ShardIterator, limit: ReadLimit) -> Result<GetRecords> {
        if iterator.stream != self.inner.id {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "the iterator belongs to another stream",
            )
            .with_table(&self.inner.name)
            .with_shard(iterator.shard));
        }
        let now = self.inner.clock.now_millis();
        if now - iterator.issued_ms >= self.inner.iterator_ttl_ms {
            return Err(
                Error::new(ErrorKind::InvalidPosition, "the shard iterator expired")
                    .with_table(&self.inner.name)
                    .with_shard(iterator.shard),
            );
        }
        let batch = self.read_at(
            iterator.shard,
            Position::AtSequence(iterator.sequence),
            limit,
        )?;
        let next_iterator = (!batch.end_of_shard).then(|| ShardIterator {
            stream: self.inner.id,
            shard: iterator.shard,
            sequence: match batch.next {
                Position::AtSequence(s) => s,
                _ => iterator.sequence,
            },
            issued_ms: now,
        });
        Ok(GetRecords {
            records: batch.records,
            next_iterator,
            millis_behind_latest: batch.millis_behind,
        })
    }

    /// Reads `shard` from `position` within `limit` (the [`EventLog::read`] contract).
    ///
    /// # Errors
    ///
    /// As [`shard_iterator`](Self::shard_iterator).
    ///
    /// [`EventLog::read`]: lakehouse_core::EventLog::read
    pub fn read_at(
        &self,
        shard: ShardId,
        position: Position,
        limit: ReadLimit,
    ) -> Result<ReadBatch> {
        let s = self.shard(shard)?;
        let now = self.inner.clock.now_millis();
        let mut log = s.log.lock();
        if self.trim_age(&mut log, now) {
            s.space.notify_all();
        }
        let start = self.resolve(&s, &log, position)?;
        let (records, resume, millis_behind) = window(s.id, &log, start, limit);
        Ok(ReadBatch {
            records,
            next: Position::AtSequence(resume),
            millis_behind,
            end_of_shard: log.closed && resume == log.next(),
        })
    }

    /// Splits an open shard at `new_starting_hash_key`: the lower child owns
    /// `[start, key - 1]`, the upper `[key, end]`. The parent is closed for puts and
    /// stays readable. Returns the children's ids.
    ///
    /// # Errors
    ///
    /// `ShardNotFound`; `InvalidInput` for a closed shard or a key outside
    /// `(start, end]`.
    pub fn split_shard(
        &self,
        shard: ShardId,
        new_starting_hash_key: u128,
    ) -> Result<(ShardId, ShardId)> {
        let mut topology = self.inner.topology.write();
        let parent = topology.all.get(shard.0 as usize).cloned().ok_or_else(|| {
            Error::new(ErrorKind::ShardNotFound, "no such shard").with_shard(shard)
        })?;
        let (start, end) = parent.range;
        if !(start < new_starting_hash_key && new_starting_hash_key <= end) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("hash key {new_starting_hash_key} is not inside ({start}, {end}]"),
            )
            .with_shard(shard));
        }
        let log = parent.log.lock();
        if log.closed {
            return Err(
                Error::new(ErrorKind::InvalidInput, "the shard is already closed")
                    .with_shard(shard),
            );
        }
        drop(log);
        let lo = ShardId(topology.all.len() as u32);
        let hi = ShardId(lo.0 + 1);
        let children = [
            self.new_shard(lo, vec![shard], (start, new_starting_hash_key - 1)),
            self.new_shard(hi, vec![shard], (new_starting_hash_key, end)),
        ];
        self.persist_topology(&topology, &[shard], &children)?;
        topology.replace_open(&self.inner.routing, &[shard], &children);
        parent.log.lock().closed = true;
        parent.data.notify_all();
        Ok((lo, hi))
    }

    /// Merges two open, adjacent shards (`a` directly below `b` in hash-key order)
    /// into a new shard; both parents are closed and stay readable.
    ///
    /// # Errors
    ///
    /// `ShardNotFound`; `InvalidInput` when either is closed or they are not adjacent.
    pub fn merge_shards(&self, a: ShardId, b: ShardId) -> Result<ShardId> {
        let mut topology = self.inner.topology.write();
        let get =
            |id: ShardId| {
                topology.all.get(id.0 as usize).cloned().ok_or_else(|| {
                    Error::new(ErrorKind::ShardNotFound, "no such shard").with_shard(id)
                })
            };
        let (sa, sb) = (get(a)?, get(b)?);
        if sa.range.1.checked_add(1) != Some(sb.range.0) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{a} and {b} are not adjacent (the first must be directly below the second)"
                ),
            ));
        }
        if sa.log.lock().closed || sb.log.lock().closed {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "both shards must be open",
            ));
        }
        let child = ShardId(topology.all.len() as u32);
        let added = [self.new_shard(child, vec![a, b], (sa.range.0, sb.range.1))];
        self.persist_topology(&topology, &[a, b], &added)?;
        topology.replace_open(&self.inner.routing, &[a, b], &added);
        sa.log.lock().closed = true;
        sb.log.lock().closed = true;
        sa.data.notify_all();
        sb.data.notify_all();
        Ok(child)
    }

    /// Subscribes to `shard` from `position`: the subscriber is woken when records
    /// arrive instead of polling (enhanced fan-out). Each subscription reads from the
    /// log with its own position and takes at most `buffer` records per delivery, so a
    /// slow subscriber holds no memory and misses nothing.
    ///
    /// # Errors
    ///
    /// As [`shard_iterator`](Self::shard_iterator).
    pub fn subscribe(
        &self,
        shard: ShardId,
        position: Position,
        buffer: usize,
    ) -> Result<Subscription> {
        let s = self.shard(shard)?;
        let start = {
            let log = s.log.lock();
            self.resolve(&s, &log, position)?
        };
        Ok(Subscription {
            stream: self.clone(),
            shard: s,
            next: start,
            buffer: buffer.max(1),
        })
    }

    /// Records that `group` processed `shard` up to and including `sequence`.
    ///
    /// # Errors
    ///
    /// `ShardNotFound`.
    pub fn commit_checkpoint(
        &self,
        group: &str,
        shard: ShardId,
        sequence: SequenceNumber,
    ) -> Result<()> {
        self.shard(shard)?;
        let mut checkpoints = self.inner.checkpoints.lock();
        checkpoints.insert((group.to_owned(), shard), sequence);
        if let Some(d) = &self.inner.durable {
            durable::write_checkpoints(
                &d.dir,
                checkpoints.iter().map(|((g, s), q)| (g.as_str(), *s, *q)),
                d.durability != Durability::None,
            )
            .map_err(|e| e.with_table(&self.inner.name))?;
        }
        Ok(())
    }

    /// The last checkpoint of `group` on `shard`.
    ///
    /// # Errors
    ///
    /// `ShardNotFound`.
    pub fn checkpoint(&self, group: &str, shard: ShardId) -> Result<Option<SequenceNumber>> {
        self.shard(shard)?;
        Ok(self
            .inner
            .checkpoints
            .lock()
            .get(&(group.to_owned(), shard))
            .copied())
    }

    fn new_shard(&self, id: ShardId, parents: Vec<ShardId>, range: (u128, u128)) -> Arc<Shard> {
        let files = self
            .inner
            .durable
            .as_ref()
            .map(|d| ShardFiles::new(&d.dir, id));
        Shard::new(id, parents, range, files)
    }

    /// Writes the topology that closing `closing` and adding `added` gives (durable
    /// streams), before the change is made in memory.
    fn persist_topology(
        &self,
        topology: &Topology,
        closing: &[ShardId],
        added: &[Arc<Shard>],
    ) -> Result<()> {
        let Some(d) = &self.inner.durable else {
            return Ok(());
        };
        let metas: Vec<ShardMeta> = topology
            .all
            .iter()
            .chain(added)
            .map(|s| s.meta(closing.contains(&s.id)))
            .collect();
        durable::write_topology(&d.dir, &metas, d.durability != Durability::None)
            .map_err(|e| e.with_table(&self.inner.name))
    }

    /// Writes every pending record of a durable stream to its segment and fsyncs it,
    /// whatever the [`Durability`] setting; returns when all records put before the
    /// call are durable. Does nothing for an in-memory stream.
    ///
    /// # Errors
    ///
    /// `Io` when a write or fsync fails (now or earlier: after a failed fsync the
    /// stream acknowledges nothing more).
    pub fn sync(&self) -> Result<()> {
        let Some(d) = &self.inner.durable else {
            return Ok(());
        };
        let ticket = d.appended.fetch_add(1, Ordering::SeqCst) + 1;
        self.inner.commit(ticket)
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

/// The records a read from `start` returns within `limit`, the sequence to resume at,
/// and how far the next unread record is behind the newest. `start` must lie in
/// `log.first..=log.next()`; only visible records are returned.
fn window(
    shard: ShardId,
    log: &ShardLog,
    start: SequenceNumber,
    limit: ReadLimit,
) -> (Vec<Record>, SequenceNumber, u64) {
    let skip = usize::try_from(start - log.first).unwrap_or(usize::MAX);
    let available = usize::try_from(log.visible.saturating_sub(start)).unwrap_or(usize::MAX);
    let max = limit.max_records.max(1).min(available);
    let mut out = Vec::with_capacity(max.min(1 << 16));
    let mut bytes = 0usize;
    if max > 0 {
        for (sequence, r) in (start..).zip(log.records.iter_from(skip).take(max)) {
            if !out.is_empty() && bytes + r.data.len() > limit.max_bytes {
                break;
            }
            bytes += r.data.len();
            out.push(Record {
                shard,
                sequence,
                partition_key: r.key.clone(),
                data: r.data.clone(),
                timestamp_ms: r.timestamp_ms,
            });
        }
    }
    let resume = start + out.len() as u64;
    let behind = if resume < log.visible {
        log.records.get(skip + out.len()).map_or(0, |unread| {
            (log.newest_ms - unread.timestamp_ms).max(0) as u64
        })
    } else {
        0
    };
    (out, resume, behind)
}

#[lakehouse_core::async_trait]
impl lakehouse_core::EventLog for Stream {
    async fn shards(&self) -> Result<Vec<ShardInfo>> {
        Ok(Stream::shards(self))
    }

    async fn put(&self, record: PutRecord) -> Result<PutResult> {
        self.put_record(record)
    }

    async fn put_batch(&self, records: Vec<PutRecord>) -> Result<Vec<Result<PutResult>>> {
        Ok(self.put_records(records))
    }

    async fn read(&self, shard: ShardId, from: Position, limit: ReadLimit) -> Result<ReadBatch> {
        self.read_at(shard, from, limit)
    }

    async fn commit_checkpoint(
        &self,
        group: &str,
        shard: ShardId,
        sequence: SequenceNumber,
    ) -> Result<()> {
        Stream::commit_checkpoint(self, group, shard, sequence)
    }

    async fn checkpoint(&self, group: &str, shard: ShardId) -> Result<Option<SequenceNumber>> {
        Stream::checkpoint(self, group, shard)
    }
}

/// A push subscription to one shard; made by [`Stream::subscribe`].
pub struct Subscription {
    stream: Stream,
    shard: Arc<Shard>,
    next: SequenceNumber,
    buffer: usize,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("shard", &self.shard.id)
            .field("next", &self.next)
            .finish()
    }
}

impl Subscription {
    /// The next records, waiting up to `timeout` for some to arrive. An empty result
    /// means the timeout passed; `Ok(None)` means the shard is closed and fully
    /// delivered (subscribe to its children).
    ///
    /// # Errors
    ///
    /// `PositionTrimmed` when retention removed records before they were delivered
    /// (under [`TrimmedRead::Error`]).
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Vec<Record>>> {
        let deadline = Instant::now() + timeout;
        {
            let mut log = self.shard.log.lock();
            while log.visible <= self.next && !log.closed {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(Some(Vec::new()));
                }
                self.shard.data.wait_for(&mut log, deadline - now);
            }
        }
        let batch = self.stream.read_at(
            self.shard.id,
            Position::AtSequence(self.next),
            ReadLimit::records(self.buffer),
        )?;
        if let Position::AtSequence(s) = batch.next {
            self.next = s;
        }
        if batch.records.is_empty() && batch.end_of_shard {
            return Ok(None);
        }
        Ok(Some(batch.records))
    }

    /// The sequence number the next delivery starts at.
    pub fn position(&self) -> SequenceNumber {
        self.next
    }
}
