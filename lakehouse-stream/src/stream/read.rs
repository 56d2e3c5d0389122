//! The read path: resolving positions, shard iterators and reading windows of records.

use lakehouse_core::{
    Error, ErrorKind, Position, ReadBatch, ReadLimit, Record, Result, SequenceNumber, ShardId,
};

use super::Stream;
use super::shard::{Shard, ShardLog};

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
    /// Resolves `position` to the first sequence number to read.
    pub(super) fn resolve(
        &self,
        shard: &Shard,
        log: &ShardLog,
        position: Position,
    ) -> Result<SequenceNumber> {
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
