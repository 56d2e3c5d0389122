//! The read path: resolving positions, shard iterators and reading windows of records.

use lakehouse_core::{
    Error, ErrorKind, Position, ReadBatch, ReadLimit, Record, Result, SequenceNumber, ShardId,
};

use super::Stream;
use super::shard::{Shard, ShardLog};
use crate::durable::{Cursor, Mark};

/// Attempts a read makes when retention deletes the segment it is reading.
const ATTEMPTS: usize = 8;

/// Where a read starts, as far as the shard's memory tells.
enum Start {
    At(SequenceNumber),
    /// An `AT_TIMESTAMP` position whose record is on disk: the first record from `from`
    /// on that arrived at or after `ts`, searched from `mark`, or `before` if none.
    Search {
        mark: Mark,
        ts: i64,
        from: SequenceNumber,
        before: SequenceNumber,
    },
}

/// What a read from disk returned.
struct DiskRead {
    records: Vec<Record>,
    bytes: usize,
    /// Arrival time of the first record after them, if the read decoded it.
    next_ms: Option<i64>,
}

/// What a read at a trimmed position does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrimmedRead {
    /// Fail with [`ErrorKind::PositionTrimmed`].
    Error,
    /// Start at the oldest retained record instead.
    StartAtOldest,
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

impl Stream {
    /// Resolves `position` against what `log` holds.
    fn resolve(&self, shard: &Shard, log: &ShardLog, position: Position) -> Result<Start> {
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
                let in_memory = log.records.partition_point(|r| r.timestamp_ms < ts);
                if in_memory == 0
                    && log.first < log.mem_first
                    && let Some(mark) = log.mark_for_timestamp(ts)
                {
                    return Ok(Start::Search {
                        mark,
                        ts,
                        from: log.first,
                        before: log.mem_first,
                    });
                }
                log.mem_first + in_memory as u64
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
                TrimmedRead::StartAtOldest => Ok(Start::At(log.first)),
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
        Ok(Start::At(start))
    }

    /// Resolves `position` to the first sequence number to read, searching the
    /// segment files for an `AT_TIMESTAMP` position older than the memory window.
    pub(super) fn resolve_start(&self, s: &Shard, position: Position) -> Result<SequenceNumber> {
        let mut position = position;
        for _ in 0..ATTEMPTS {
            let start = self.resolve(s, &s.log.lock(), position)?;
            match start {
                Start::At(seq) => return Ok(seq),
                Start::Search {
                    mark,
                    ts,
                    from,
                    before,
                } => match self.search_disk(s, mark, ts, from, before) {
                    Ok(seq) => position = Position::AtSequence(seq),
                    Err(e) if e.kind() == ErrorKind::PositionTrimmed => {}
                    Err(e) => return Err(e),
                },
            }
        }
        Err(self.still_trimming(s))
    }

    fn still_trimming(&self, s: &Shard) -> Error {
        Error::new(
            ErrorKind::PositionTrimmed,
            "retention kept deleting the segments this read needed",
        )
        .with_table(&self.inner.name)
        .with_shard(s.id)
    }

    /// An iterator over `shard` starting at `position`.
    ///
    /// # Errors
    ///
    /// `ShardNotFound`, `InvalidPosition`, or `PositionTrimmed` (per the stream's
    /// [`TrimmedRead`] policy); `Io` or `Corrupt` when an `AT_TIMESTAMP` position is
    /// looked up in a segment that cannot be read.
    pub fn shard_iterator(&self, shard: ShardId, position: Position) -> Result<ShardIterator> {
        let s = self.shard(shard)?;
        let sequence = self.resolve_start(&s, position)?;
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
    /// expired iterator, `PositionTrimmed` when its records were trimmed meanwhile;
    /// `Io` or `Corrupt` when a durable stream's segment cannot be read.
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
        if now.saturating_sub(iterator.issued_ms) >= self.inner.iterator_ttl_ms {
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
    /// A durable stream serves records older than its memory window from the segment
    /// files, then continues in memory within the same limit.
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
        let max_records = limit.max_records.max(1);
        let mut position = position;
        for _ in 0..ATTEMPTS {
            let now = self.inner.clock.now_millis();
            let mut log = s.log.lock();
            if self.trim_age(&mut log, now) {
                s.space.notify_all();
            }
            let start = match self.resolve(&s, &log, position)? {
                Start::At(seq) => seq,
                Start::Search { .. } => {
                    drop(log);
                    position = Position::AtSequence(self.resolve_start(&s, position)?);
                    continue;
                }
            };
            if start >= log.mem_first || start >= log.visible {
                let (records, resume, millis_behind) =
                    window(s.id, &log, start, max_records, limit.max_bytes, (false, 0));
                return Ok(ReadBatch {
                    records,
                    next: Position::AtSequence(resume),
                    millis_behind,
                    end_of_shard: log.closed && resume == log.next(),
                });
            }
            let Some(mark) = log.mark_for(start) else {
                return Err(Error::new(
                    ErrorKind::Internal,
                    "a record on disk has no segment index mark",
                )
                .with_table(&self.inner.name)
                .with_shard(s.id)
                .with_version(start));
            };
            let end = log.mem_first.min(log.visible);
            drop(log);
            let disk = match self.read_disk(&s, mark, start, end, max_records, limit.max_bytes) {
                Ok(d) => d,
                Err(e) if e.kind() == ErrorKind::PositionTrimmed => {
                    position = Position::AtSequence(start);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut records = disk.records;
            let resume = start + records.len() as u64;
            let log = s.log.lock();
            let (resume, millis_behind) = if resume >= log.mem_first && resume >= log.first {
                let (more, resume, behind) = window(
                    s.id,
                    &log,
                    resume,
                    max_records - records.len(),
                    limit.max_bytes,
                    (!records.is_empty(), disk.bytes),
                );
                records.extend(more);
                (resume, behind)
            } else {
                let behind = disk
                    .next_ms
                    .map_or(0, |t| log.newest_ms.saturating_sub(t).max(0) as u64);
                (resume, behind)
            };
            return Ok(ReadBatch {
                records,
                next: Position::AtSequence(resume),
                millis_behind,
                end_of_shard: log.closed && resume == log.next(),
            });
        }
        Err(self.still_trimming(&s))
    }

    /// Reads records `start..end` of `s` (all written to its segments) from disk,
    /// starting at index mark `mark`, within `max_records` and `max_bytes`.
    fn read_disk(
        &self,
        s: &Shard,
        mark: Mark,
        start: SequenceNumber,
        end: SequenceNumber,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<DiskRead> {
        let mut cursor = self.cursor(s, mark)?;
        let mut out = DiskRead {
            records: Vec::new(),
            bytes: 0,
            next_ms: None,
        };
        while let Some(r) = cursor
            .read_next()
            .map_err(|e| e.with_table(&self.inner.name))?
        {
            if r.sequence < start {
                continue;
            }
            if r.sequence >= end
                || out.records.len() >= max_records
                || (!out.records.is_empty() && out.bytes + r.data.len() > max_bytes)
            {
                out.next_ms = Some(r.timestamp_ms);
                return Ok(out);
            }
            out.bytes += r.data.len();
            out.records.push(Record {
                shard: s.id,
                sequence: r.sequence,
                partition_key: r.key,
                data: r.data,
                timestamp_ms: r.timestamp_ms,
            });
            if r.sequence + 1 == end {
                return Ok(out);
            }
        }
        Err(Error::new(
            ErrorKind::Corrupt,
            format!(
                "the segment files end before record {}",
                start + out.records.len() as u64
            ),
        )
        .with_table(&self.inner.name)
        .with_shard(s.id)
        .with_version(start + out.records.len() as u64))
    }

    /// The first record from `from` on (before `before`) that arrived at or after
    /// `ts`, searched on disk from `mark`; `before` if there is none.
    fn search_disk(
        &self,
        s: &Shard,
        mark: Mark,
        ts: i64,
        from: SequenceNumber,
        before: SequenceNumber,
    ) -> Result<SequenceNumber> {
        let mut cursor = self.cursor(s, mark)?;
        while let Some(r) = cursor
            .read_next()
            .map_err(|e| e.with_table(&self.inner.name))?
        {
            if r.sequence >= before {
                break;
            }
            if r.sequence >= from && r.timestamp_ms >= ts {
                return Ok(r.sequence);
            }
        }
        Ok(before)
    }

    /// A cursor over `s`'s segments at index mark `mark`.
    fn cursor(&self, s: &Shard, mark: Mark) -> Result<Cursor> {
        let Some(files) = &s.files else {
            return Err(Error::new(
                ErrorKind::Internal,
                "an in-memory shard has no segments",
            ));
        };
        let refs = files.lock().refs_from(mark.pos);
        if refs.is_empty() {
            return Err(self.still_trimming(s).with_version(mark.sequence));
        }
        Ok(Cursor::new(s.id, refs, mark))
    }
}

/// The records a read from `start` returns from memory, at most `max_records` and,
/// counting the `bytes` of records already `taken`, `max_bytes` (one record is always
/// returned when none was taken), the sequence to resume at, and how far the next unread record is behind the
/// newest. `start` must lie in `log.mem_first..=log.next()` or at or past
/// `log.visible`; only visible records are returned.
fn window(
    shard: ShardId,
    log: &ShardLog,
    start: SequenceNumber,
    max_records: usize,
    max_bytes: usize,
    (taken, mut bytes): (bool, usize),
) -> (Vec<Record>, SequenceNumber, u64) {
    // A position below `mem_first` reaches here only at or past `visible` (records
    // written but not yet fsynced may leave memory first): nothing is read then.
    let skip = usize::try_from(start.saturating_sub(log.mem_first)).unwrap_or(usize::MAX);
    let available = usize::try_from(log.visible.saturating_sub(start)).unwrap_or(usize::MAX);
    let max = max_records.min(available);
    let mut out = Vec::with_capacity(max.min(1 << 16));
    if max > 0 {
        for (sequence, r) in (start..).zip(log.records.iter_from(skip).take(max)) {
            if (taken || !out.is_empty()) && bytes + r.data.len() > max_bytes {
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
            log.newest_ms.saturating_sub(unread.timestamp_ms).max(0) as u64
        })
    } else {
        0
    };
    (out, resume, behind)
}
