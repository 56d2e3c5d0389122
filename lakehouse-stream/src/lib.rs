//! The Kinesis layer of the Lakehouse: a sharded, ordered, replayable record log in
//! process memory, optionally durable on local disk.
//!
//! A [`Stream`] has shards that own contiguous ranges of the 128-bit hash-key space; a
//! record's partition key is hashed with MD5 into that space (or an explicit hash key is
//! used), so all records of a key land in one shard, in put order, with strictly
//! increasing sequence numbers. Readers take [shard iterators](ShardIterator)
//! (`TRIM_HORIZON`, `LATEST`, `AT/AFTER_SEQUENCE_NUMBER`, `AT_TIMESTAMP`) and read with
//! record and byte limits, learning how far behind the newest record they are. Records
//! are retained by age and bounded by bytes per shard, with back-pressure on full
//! shards. Shards split and merge with parent/child lineage: a reader finishes a parent
//! before its children, which keeps per-key order. A [`ConsumerGroup`] leases shards to
//! its members, rebalances when members join, leave or stop renewing, and keeps
//! per-shard checkpoints (at-least-once delivery). A [`Subscription`] is woken when
//! records arrive instead of polling (enhanced fan-out), each with its own position
//! and bounded delivery size.
//!
//! A durable stream ([`StreamBuilder::durable`]) also writes each shard to segment
//! files of CRC32C-framed records, with group commit (concurrent writers share one
//! fsync) and a [`Durability`] setting: no fsync, fsync per put call, or every N
//! milliseconds. A durable shard keeps only a recent window of records in memory
//! ([`StreamBuilder::memory_window_bytes`], 64 MiB by default) and reads older ones
//! back from its segments through a sparse index, so its retention and
//! `max_shard_bytes` bound the disk, not memory ([`Stream::memory_bytes`] reports what
//! each shard holds). Reopening the directory checks every frame, rebuilds the segment
//! index, loads each shard's window, truncates a torn tail left by a crash or power
//! loss (an incomplete frame, zero fill or garbage after the last valid frame),
//! restores the shard lineage and the consumer checkpoints, and refuses (with
//! `Corrupt`, naming the shard, file and byte offset) a damaged frame that valid
//! frames follow. Committing a checkpoint never waits for the disk: the commit rounds
//! append the checkpoints that changed to a log, many commits to one write (see
//! [`Stream::commit_checkpoint`]), so consumers that checkpoint every batch are not
//! slowed by fsyncs.
//!
//! [`Stream`] implements [`lakehouse_core::EventLog`], so triggers and sinks written
//! against the contract run on it. [`TableDelivery`] is such a sink: it micro-batches
//! any `EventLog` into any [`TableSink`](lakehouse_core::TableSink) through a
//! [`Decoder`], exactly once across crashes (the Firehose role). Into a table that
//! records several writers per commit (Delta tables do), the shards due in one poll
//! share one commit, so each flush interval adds one file per partition, not one per
//! shard and partition.
//!
//! # Quick start
//!
//! ```
//! use lakehouse_core::{Position, PutRecord, ReadLimit};
//! use lakehouse_stream::Stream;
//!
//! let stream = Stream::builder("clicks").shards(4).build()?;
//! let put = stream.put_record(PutRecord::new("user-42", "viewed kettle"))?;
//! let results = stream.put_records(vec![
//!     PutRecord::new("user-42", "bought kettle"),
//!     PutRecord::new("", "no key"), // fails alone
//! ]);
//! assert!(results[0].is_ok() && results[1].is_err());
//!
//! let it = stream.shard_iterator(put.shard, Position::TrimHorizon)?;
//! let out = stream.get_records(&it, ReadLimit::records(100))?;
//! assert_eq!(out.records.len(), 2);
//! assert_eq!(out.millis_behind_latest, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A durable stream, reopened:
//!
//! ```
//! use lakehouse_core::{Position, PutRecord, ReadLimit};
//! use lakehouse_stream::{Durability, Stream};
//!
//! let dir = std::env::temp_dir().join(format!("lakehouse-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let stream = Stream::builder("orders")
//!     .shards(2)
//!     .durable(&dir)
//!     .durability(Durability::PerBatch) // a put returns once its records are fsynced
//!     .build()?;
//! let put = stream.put_record(PutRecord::new("user-7", "order 1"))?;
//! drop(stream);
//!
//! let stream = Stream::builder("orders").durable(&dir).build()?;
//! let batch = stream.read_at(put.shard, Position::TrimHorizon, ReadLimit::records(10))?;
//! assert_eq!(&batch.records[0].data[..], b"order 1");
//! # drop(stream);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Errors
//!
//! The crate uses [`lakehouse_core::Error`] (re-exported as [`Error`]), the error of the
//! [`EventLog`](lakehouse_core::EventLog) contract it implements: `InvalidInput`,
//! `RecordTooLarge`, `Full`, `ShardNotFound`, `InvalidPosition`, `PositionTrimmed`, with
//! the stream (as `table`), shard, key and sequence number in the context. Durable
//! streams add `Io` (with the file in the context), `Corrupt` (shard, file, offset) and
//! `Conflict` (the directory is open elsewhere).
//!
//! # Crate features
//!
//! * `nats` (off by default): [`NatsLog`], the same `EventLog` contract on NATS
//!   JetStream (one JetStream stream per shard, records batched into messages, shard
//!   map, lineage and checkpoints in KV buckets), on `async-nats` with only its
//!   `jetstream`, `kv` and `ring` features. The [`nats`] module describes the mapping.
//!
//! * `fault-injection` (off by default, for tests and benchmarks): [`faults`], a
//!   seeded power-loss simulation of a durable stream (un-fsynced bytes dropped, cut
//!   or replaced by garbage, un-fsynced directory entries lost) that checks what
//!   survives.
//!
//! Durable mode needs no feature: it uses `std::fs` and the `crc32c` crate.
//!
//! # Runtime
//!
//! The inherent methods are synchronous: each takes a shard's mutex for a memory
//! operation only. On a durable stream, a read of records older than the memory
//! window reads their segment file (outside the shard's mutex), and a put under
//! [`Durability::PerBatch`] also
//! blocks until its commit round's fsync returns (about a millisecond on an SSD), and
//! [`Durability::Interval`] runs one background thread per stream; call durable puts
//! from `spawn_blocking` in async code. A put under [`Backpressure::Wait`] blocks its thread while the shard is
//! full; call it from `spawn_blocking` in async code. The `EventLog` implementation
//! appends in memory on the caller's task and leaves a durable stream's writes and
//! fsyncs to a committer thread of the stream (started by the first such put), which
//! it awaits: it never blocks an executor's worker on the disk (unless
//! `Backpressure::Wait` is chosen). [`TableDelivery::poll`] is async and
//! runtime-agnostic (it decodes on a thread of its own); call it in a loop or on a
//! timer from your executor.

mod blocks;
mod durable;
#[cfg(feature = "fault-injection")]
pub mod faults;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod group;
#[cfg(feature = "nats")]
pub mod nats;
mod offload;
mod route;
mod sink;
mod stream;

pub use crate::durable::Durability;
pub use crate::group::{ConsumerGroup, Member};
#[cfg(feature = "nats")]
pub use crate::nats::{NatsConsumerGroup, NatsLog, NatsLogBuilder, NatsMember};
pub use crate::sink::{Decoder, DeliveryReport, FlushPolicy, TableDelivery};
pub use crate::stream::{
    Backpressure, GetRecords, ShardIterator, Stream, StreamBuilder, Subscription, TrimmedRead,
};
pub use lakehouse_core::{Error, ErrorKind, Result};

/// `d` in whole milliseconds, saturating: `Duration::MAX` (or any duration past
/// `i64::MAX` ms) means "never", not a negative age.
pub(crate) fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
