//! [`EventLog`]: the sharded, ordered record log that streams and triggers share.

use std::fmt;
use std::fmt::Debug;

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};

/// Identifies a shard of an [`EventLog`]. Displays as `shard-0007`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{:04}", self.0)
    }
}

/// Position of a record within its shard. Strictly increasing within a shard; says
/// nothing about order across shards.
pub type SequenceNumber = u64;

/// The 128-bit hash key of a partition key: the MD5 digest read as a big-endian number,
/// as Kinesis computes it. A record goes to the shard whose hash range holds this key.
pub fn hash_key(partition_key: &str) -> u128 {
    use md5::{Digest, Md5};
    let digest: [u8; 16] = Md5::digest(partition_key.as_bytes()).into();
    u128::from_be_bytes(digest)
}

/// Splits the 128-bit hash-key space into `shards` contiguous, equal ranges
/// `(start, end)` (both inclusive), in order. `shards` of 0 is treated as 1.
pub fn even_hash_ranges(shards: u32) -> Vec<(u128, u128)> {
    let n = u128::from(shards.max(1));
    let width = u128::MAX / n;
    (0..n)
        .map(|i| {
            let start = i * width;
            let end = if i + 1 == n {
                u128::MAX
            } else {
                (i + 1) * width - 1
            };
            (start, end)
        })
        .collect()
}

/// A partition key. Keys of up to 24 bytes on 64-bit targets (12 on 32-bit) — user,
/// session or order ids — are held inline, in the space a `String` takes, so putting
/// and reading records with such keys allocates nothing for the key; longer keys go
/// to the heap. Derefs to `str` and compares with `&str` and `String`; made from
/// either with `into()`.
pub type PartitionKey = compact_str::CompactString;

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRecord {
    /// Decides the shard (through [`hash_key`]) and, within a shard, the order that
    /// readers see. Must not be empty.
    pub partition_key: PartitionKey,
    /// The payload.
    pub data: Bytes,
    /// Routes by this hash key instead of the partition key's hash.
    pub explicit_hash_key: Option<u128>,
}

impl PutRecord {
    /// A record routed by `partition_key`.
    pub fn new(partition_key: impl Into<PartitionKey>, data: impl Into<Bytes>) -> Self {
        PutRecord {
            partition_key: partition_key.into(),
            data: data.into(),
            explicit_hash_key: None,
        }
    }

    /// Routes by `hash_key` instead of the partition key's hash.
    #[must_use]
    pub fn with_explicit_hash_key(mut self, hash_key: u128) -> Self {
        self.explicit_hash_key = Some(hash_key);
        self
    }

    /// The hash key that routes this record.
    pub fn routing_key(&self) -> u128 {
        self.explicit_hash_key
            .unwrap_or_else(|| hash_key(&self.partition_key))
    }

    /// Checks the partition key and the payload size against `max_record_bytes`.
    pub fn validate(&self, max_record_bytes: usize) -> Result<()> {
        if self.partition_key.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "partition key is empty",
            ));
        }
        let size = self.data.len() + self.partition_key.len();
        if size > max_record_bytes {
            return Err(Error::new(
                ErrorKind::RecordTooLarge,
                format!("record of {size} bytes exceeds the limit of {max_record_bytes} bytes"),
            )
            .with_key(self.partition_key.as_str()));
        }
        Ok(())
    }
}

/// Where a successful put landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutResult {
    /// The shard.
    pub shard: ShardId,
    /// The record's sequence number in that shard.
    pub sequence: SequenceNumber,
}

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The shard it is in.
    pub shard: ShardId,
    /// Its sequence number in the shard.
    pub sequence: SequenceNumber,
    /// The partition key it was put with.
    pub partition_key: PartitionKey,
    /// The payload.
    pub data: Bytes,
    /// Arrival time, milliseconds since the Unix epoch, from the log's clock.
    pub timestamp_ms: i64,
}

/// Where a read starts (Kinesis' shard iterator types).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// The oldest record still retained.
    TrimHorizon,
    /// Just after the newest record: only records put from now on.
    Latest,
    /// At this sequence number (inclusive). The sequence number the next put will get
    /// is valid and reads nothing until it is written.
    AtSequence(SequenceNumber),
    /// Just after this sequence number.
    AfterSequence(SequenceNumber),
    /// The first record whose arrival time is at or after this many milliseconds since
    /// the Unix epoch.
    AtTimestamp(i64),
}

/// How much one read may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit {
    /// At most this many records (at least one is returned if any is available).
    pub max_records: usize,
    /// At most this many payload bytes, except that one record is always returned if
    /// available, whatever its size.
    pub max_bytes: usize,
}

impl ReadLimit {
    /// Up to `max_records` records, with no byte limit.
    pub fn records(max_records: usize) -> Self {
        ReadLimit {
            max_records,
            max_bytes: usize::MAX,
        }
    }
}

impl Default for ReadLimit {
    /// 10,000 records or 10 MiB, as a Kinesis `GetRecords` call.
    fn default() -> Self {
        ReadLimit {
            max_records: 10_000,
            max_bytes: 10 << 20,
        }
    }
}

/// The result of [`EventLog::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBatch {
    /// Records in sequence order.
    pub records: Vec<Record>,
    /// Where the next read continues. Always an [`Position::AtSequence`] or
    /// [`Position::AfterSequence`], never a relative position, so it survives restarts.
    pub next: Position,
    /// How far the reader is behind the newest record of the shard, in milliseconds of
    /// arrival time (0 at the tip).
    pub millis_behind: u64,
    /// The shard is closed (split or merged) and this read reached its end: continue
    /// with its children.
    pub end_of_shard: bool,
}

/// A shard's place in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard.
    pub id: ShardId,
    /// Shards this one was split or merged from; readers finish those first.
    pub parents: Vec<ShardId>,
    /// The inclusive range of hash keys routed here.
    pub hash_range: (u128, u128),
    /// Closed shards take no more puts (they were split or merged) but can be read.
    pub closed: bool,
}

/// A sharded, ordered, replayable log of records: the Kinesis data-stream contract.
///
/// Implemented by `lakehouse-stream` (in process, optionally durable), by a NATS
/// JetStream adapter, and by [`MemoryLog`](crate::MemoryLog) for tests; consumed by the
/// stream-to-table sink and by the `flow` triggers.
///
/// # For implementers
///
/// * A record goes to the open shard whose hash range contains
///   [`PutRecord::routing_key`]; all records of one partition key therefore keep their
///   put order within a shard.
/// * Sequence numbers strictly increase within a shard.
/// * [`put_batch`](Self::put_batch) returns one result per entry, in request order; an
///   entry that fails (empty key: `InvalidInput`, too big: `RecordTooLarge`, full shard:
///   `Full`) fails alone and the others are still written. The outer `Err` is for a
///   failure of the whole call (the log is closed).
/// * [`read`](Self::read) of an unknown shard gives `ShardNotFound`; a position older
///   than the retained records gives `PositionTrimmed`; a sequence number beyond the
///   next one to be assigned gives `InvalidPosition`.
/// * Checkpoints are per consumer group and shard; the latest call wins.
///
/// Run [`conformance::event_log`](crate::conformance::event_log) (feature `conformance`)
/// against an implementation to check these rules.
#[async_trait]
pub trait EventLog: Send + Sync + Debug {
    /// All shards, open and closed, ordered by id.
    async fn shards(&self) -> Result<Vec<ShardInfo>>;

    /// Appends one record.
    async fn put(&self, record: PutRecord) -> Result<PutResult>;

    /// Appends several records, each succeeding or failing on its own.
    async fn put_batch(&self, records: Vec<PutRecord>) -> Result<Vec<Result<PutResult>>>;

    /// Reads records of one shard from a position.
    async fn read(&self, shard: ShardId, from: Position, limit: ReadLimit) -> Result<ReadBatch>;

    /// Records that consumer `group` has processed `shard` up to and including
    /// `sequence`.
    async fn commit_checkpoint(
        &self,
        group: &str,
        shard: ShardId,
        sequence: SequenceNumber,
    ) -> Result<()>;

    /// The last checkpoint of `group` on `shard`, if any.
    async fn checkpoint(&self, group: &str, shard: ShardId) -> Result<Option<SequenceNumber>>;
}

/// The records one read returns, for implementers that keep a shard as a `VecDeque`
/// whose front has sequence number `first`.
///
/// Reads from `start` (which must lie in `first..=first + records.len()`) within
/// `limit` (at least one record when any is available), and returns them with the
/// sequence to resume at and how far the next unread record is behind `newest_ms`.
pub fn read_window(
    records: &VecDeque<Record>,
    first: SequenceNumber,
    start: SequenceNumber,
    limit: ReadLimit,
    newest_ms: i64,
) -> (Vec<Record>, SequenceNumber, u64) {
    let skip = usize::try_from(start.saturating_sub(first)).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for r in records.range(skip.min(records.len())..) {
        if out.len() >= limit.max_records.max(1)
            || (!out.is_empty() && bytes + r.data.len() > limit.max_bytes)
        {
            break;
        }
        bytes += r.data.len();
        out.push(r.clone());
    }
    let resume = start + out.len() as u64;
    let behind = records
        .get(skip + out.len())
        .map_or(0, |unread| (newest_ms - unread.timestamp_ms).max(0) as u64);
    (out, resume, behind)
}

#[async_trait]
impl<T: EventLog + ?Sized> EventLog for Arc<T> {
    async fn shards(&self) -> Result<Vec<ShardInfo>> {
        (**self).shards().await
    }

    async fn put(&self, record: PutRecord) -> Result<PutResult> {
        (**self).put(record).await
    }

    async fn put_batch(&self, records: Vec<PutRecord>) -> Result<Vec<Result<PutResult>>> {
        (**self).put_batch(records).await
    }

    async fn read(&self, shard: ShardId, from: Position, limit: ReadLimit) -> Result<ReadBatch> {
        (**self).read(shard, from, limit).await
    }

    async fn commit_checkpoint(
        &self,
        group: &str,
        shard: ShardId,
        sequence: SequenceNumber,
    ) -> Result<()> {
        (**self).commit_checkpoint(group, shard, sequence).await
    }

    async fn checkpoint(&self, group: &str, shard: ShardId) -> Result<Option<SequenceNumber>> {
        (**self).checkpoint(group, shard).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_key_is_md5_big_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(hash_key(""), 0xd41d8cd98f00b204e9800998ecf8427e);
    }

    #[test]
    fn ranges_cover_the_space_contiguously() {
        for n in [1, 2, 3, 4, 7, 64] {
            let r = even_hash_ranges(n);
            assert_eq!(r.len(), n as usize);
            assert_eq!(r[0].0, 0);
            assert_eq!(r.last().unwrap().1, u128::MAX);
            for w in r.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0, "ranges of {n} shards are contiguous");
                assert!(w[0].0 <= w[0].1);
            }
        }
    }

    #[test]
    fn validates_records() {
        assert_eq!(
            PutRecord::new("", "x").validate(100).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        let e = PutRecord::new("k", vec![0u8; 200])
            .validate(100)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::RecordTooLarge);
        assert_eq!(e.context().key.as_deref(), Some("k"));
        assert!(PutRecord::new("k", vec![0u8; 99]).validate(100).is_ok());
    }
}
