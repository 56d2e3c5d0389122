//! The Kinesis layer of the Lakehouse: a sharded, ordered, replayable record log in
//! process memory.
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
//! [`Stream`] implements [`lakehouse_core::EventLog`], so triggers and sinks written
//! against the contract run on it. [`TableDelivery`] is such a sink: it micro-batches
//! any `EventLog` into any [`TableSink`](lakehouse_core::TableSink) through a
//! [`Decoder`], exactly once across crashes (the Firehose role).
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
//! # Errors
//!
//! The crate uses [`lakehouse_core::Error`] (re-exported as [`Error`]), the error of the
//! [`EventLog`](lakehouse_core::EventLog) contract it implements: `InvalidInput`,
//! `RecordTooLarge`, `Full`, `ShardNotFound`, `InvalidPosition`, `PositionTrimmed`, with
//! the stream (as `table`), shard, key and sequence number in the context.
//!
//! # Crate features
//!
//! None yet. Durable segment files are not built yet.
//!
//! # Runtime
//!
//! The inherent methods are synchronous: each takes a shard's mutex for a memory
//! operation only. A put under [`Backpressure::Wait`] blocks its thread while the shard is
//! full; call it from `spawn_blocking` in async code. The `EventLog` implementation
//! calls the same methods and never waits unless that policy is chosen.
//! [`TableDelivery::poll`] is async and runtime-agnostic; call it in a loop or on a
//! timer from your executor.

mod group;
mod sink;
mod stream;

pub use crate::group::{ConsumerGroup, Member};
pub use crate::sink::{Decoder, DeliveryReport, FlushPolicy, TableDelivery};
pub use crate::stream::{
    Backpressure, GetRecords, ShardIterator, Stream, StreamBuilder, Subscription, TrimmedRead,
};
pub use lakehouse_core::{Error, ErrorKind, Result};
