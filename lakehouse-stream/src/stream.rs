//! [`Stream`]: the in-process sharded log.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lakehouse_core::{
    Clock, Error, ErrorKind, Position, PutRecord, PutResult, ReadBatch, ReadLimit, Record, Result,
    SequenceNumber, ShardId, ShardInfo, SystemClock, even_hash_ranges, read_window,
};
use parking_lot::{Condvar, Mutex, RwLock};

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
}

impl StreamBuilder {
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

    /// Builds the stream.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for zero shards, a zero record limit, or a shard
    /// bound smaller than one record.
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
        let shards: Vec<Arc<Shard>> = even_hash_ranges(self.shards)
            .into_iter()
            .enumerate()
            .map(|(i, range)| Shard::new(ShardId(i as u32), Vec::new(), range))
            .collect();
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed)
            ^ (self.clock.now_micros() as u64).rotate_left(20);
        Ok(Stream {
            inner: Arc::new(Inner {
                id,
                name: self.name,
                max_record_bytes: self.max_record_bytes,
                retention_ms: self.retention.map(|d| d.as_millis() as i64),
                max_shard_bytes: self.max_shard_bytes,
                backpressure: self.backpressure,
                trimmed_read: self.trimmed_read,
                iterator_ttl_ms: self.iterator_ttl.as_millis() as i64,
                clock: self.clock,
                topology: RwLock::new(Topology {
                    open: shards.clone(),
                    all: shards,
                }),
                checkpoints: Mutex::new(HashMap::new()),
            }),
        })
    }
}

#[derive(Debug)]
struct ShardLog {
    first: SequenceNumber,
    records: VecDeque<Record>,
    bytes: usize,
    newest_ms: i64,
    closed: bool,
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
}

impl Shard {
    fn new(id: ShardId, parents: Vec<ShardId>, range: (u128, u128)) -> Arc<Shard> {
        Arc::new(Shard {
            id,
            parents,
            range,
            log: Mutex::new(ShardLog {
                first: 0,
                records: VecDeque::new(),
                bytes: 0,
                newest_ms: i64::MIN,
                closed: false,
            }),
            space: Condvar::new(),
            data: Condvar::new(),
        })
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
    /// The open shards, ordered by hash range.
    open: Vec<Arc<Shard>>,
}

impl Topology {
    fn replace_open(&mut self, closed: &[ShardId], added: &[Arc<Shard>]) {
        self.open.retain(|s| !closed.contains(&s.id));
        self.open.extend(added.iter().cloned());
        self.open.sort_by_key(|s| s.range.0);
        self.all.extend(added.iter().cloned());
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
    topology: RwLock<Topology>,
    checkpoints: Mutex<HashMap<(String, ShardId), SequenceNumber>>,
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

    fn route(&self, hash: u128) -> Result<Arc<Shard>> {
        let topology = self.inner.topology.read();
        let i = topology.open.partition_point(|s| s.range.1 < hash);
        topology
            .open
            .get(i)
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::Internal, "no open shard owns a hash key"))
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
        let deadline = match self.inner.backpressure {
            Backpressure::Reject => None,
            Backpressure::Wait(d) => Some(Instant::now() + d),
        };
        loop {
            let shard = self.route(hash)?;
            let mut log = shard.log.lock();
            if log.closed {
                // Split or merged since routing: route again.
                continue;
            }
            let now = self.inner.clock.now_millis();
            self.trim_age(&mut log, now);
            let size = record.data.len();
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
                    .with_key(record.partition_key.clone())
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
            log.newest_ms = timestamp_ms;
            let sequence = log.next();
            log.bytes += size;
            log.records.push_back(Record {
                shard: shard.id,
                sequence,
                partition_key: record.partition_key,
                data: record.data,
                timestamp_ms,
            });
            drop(log);
            shard.data.notify_all();
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
        let mut hashes = Vec::with_capacity(records.len());
        for r in records {
            match r.validate(self.inner.max_record_bytes) {
                Ok(()) => {
                    hashes.push(r.routing_key());
                    results.push(None);
                    pending.push(Some(r));
                }
                Err(e) => {
                    hashes.push(0);
                    results.push(Some(Err(e.with_table(&self.inner.name))));
                    pending.push(None);
                }
            }
        }
        let groups: Vec<(Arc<Shard>, Vec<usize>)> = {
            let topology = self.inner.topology.read();
            let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); topology.open.len()];
            for (i, &h) in hashes.iter().enumerate() {
                if pending[i].is_some() {
                    let s = topology.open.partition_point(|s| s.range.1 < h);
                    if let Some(group) = by_shard.get_mut(s) {
                        group.push(i);
                    }
                }
            }
            topology
                .open
                .iter()
                .cloned()
                .zip(by_shard)
                .filter(|(_, g)| !g.is_empty())
                .collect()
        };
        for (shard, group) in groups {
            let mut log = shard.log.lock();
            let now = self.inner.clock.now_millis();
            self.trim_age(&mut log, now);
            for i in group {
                let Some(record) = pending[i].take() else {
                    continue;
                };
                let size = record.data.len();
                if log.closed || log.bytes + size > self.inner.max_shard_bytes {
                    // Resharded meanwhile, or full: the single-record path reroutes or
                    // applies the back-pressure policy.
                    pending[i] = Some(record);
                    continue;
                }
                let timestamp_ms = now.max(log.newest_ms);
                log.newest_ms = timestamp_ms;
                let sequence = log.next();
                log.bytes += size;
                log.records.push_back(Record {
                    shard: shard.id,
                    sequence,
                    partition_key: record.partition_key,
                    data: record.data,
                    timestamp_ms,
                });
                results[i] = Some(Ok(PutResult {
                    shard: shard.id,
                    sequence,
                }));
            }
            drop(log);
            shard.data.notify_all();
        }
        results
            .into_iter()
            .zip(pending)
            .map(|(done, left)| match (done, left) {
                (Some(r), _) => r,
                (None, Some(record)) => self.put_record(record),
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
            Position::Latest => next,
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
        let mut log = s.log.lock();
        let now = self.inner.clock.now_millis();
        if self.trim_age(&mut log, now) {
            s.space.notify_all();
        }
        let start = self.resolve(&s, &log, position)?;
        let (records, resume, millis_behind) =
            read_window(&log.records, log.first, start, limit, log.newest_ms);
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
        let mut log = parent.log.lock();
        if log.closed {
            return Err(
                Error::new(ErrorKind::InvalidInput, "the shard is already closed")
                    .with_shard(shard),
            );
        }
        log.closed = true;
        drop(log);
        parent.data.notify_all();
        let lo = ShardId(topology.all.len() as u32);
        let hi = ShardId(lo.0 + 1);
        topology.replace_open(
            &[shard],
            &[
                Shard::new(lo, vec![shard], (start, new_starting_hash_key - 1)),
                Shard::new(hi, vec![shard], (new_starting_hash_key, end)),
            ],
        );
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
        let (mut la, mut lb) = (sa.log.lock(), sb.log.lock());
        if la.closed || lb.closed {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "both shards must be open",
            ));
        }
        la.closed = true;
        lb.closed = true;
        drop((la, lb));
        sa.data.notify_all();
        sb.data.notify_all();
        let child = ShardId(topology.all.len() as u32);
        topology.replace_open(
            &[a, b],
            &[Shard::new(child, vec![a, b], (sa.range.0, sb.range.1))],
        );
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
        self.inner
            .checkpoints
            .lock()
            .insert((group.to_owned(), shard), sequence);
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
            while log.next() <= self.next && !log.closed {
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
