//! Partitioned columnar tables in the Delta Lake format, on any object store.
//!
//! This crate is the S3 + Redshift-storage layer of the Lakehouse workspace. A
//! [`Table`] is a directory of Parquet files plus a Delta Lake transaction log
//! (`_delta_log/`), so Spark, DuckDB, Polars, Trino and delta-rs read the same tables.
//! It implements [`TableSource`](lakehouse_core::TableSource) and
//! [`TableSink`](lakehouse_core::TableSink) from `lakehouse-core`, and
//! [`TableMutator`](lakehouse_core::TableMutator): deletes and updates by predicate,
//! one commit each ([`Table::stage_delete`], [`StagedMutation`]), copy-on-write or with
//! deletion vectors ([`TableOptions::deletion_vectors`]); `row_changes_since` lists the
//! rows they removed. `MERGE` ([`Table::stage_merge`], [`StagedMerge`]): only the files
//! whose partition values and statistics admit the source's keys are read, files with
//! updated or deleted rows rewritten, inserted rows added, all in one commit; a
//! concurrent append conflicts only when it could hold a matching row.
//!
//! * **Storage**: a local directory ([`Location::local`]), memory
//!   ([`Location::memory`]), any `object_store` ([`Location::from_store`]), or S3 and
//!   S3-compatible servers (`Location::s3`, feature `s3`).
//! * **Partitioning** ([`PartitionField`]): identity (category, region), time buckets
//!   (year / month / day / hour of a timestamp) and hash buckets. Values such as `../x`,
//!   `a/b`, `=`, empty, null or non-ASCII are escaped and never leave the table
//!   directory; the log keeps the exact values.
//! * **Data skipping**: per-file min / max / null counts in the log, partition pruning
//!   (also from predicates on a time or bucket source column), row-group statistics,
//!   pages skipped by the page index (each predicate column's page bounds, as a row
//!   selection), optional bloom filters and an optional sort key within files. A
//!   table handle keeps the footers of the data files it read (32 MiB of decoded
//!   metadata), so a repeated lookup reads only a bloom filter and the pages it needs.
//! * **Writes**: each append is one atomic commit (put-if-absent of the next log
//!   entry); concurrent writers in any number of processes retry with backoff and lose
//!   nothing; appends with a [`TxnId`](lakehouse_core::TxnId) are idempotent, also with
//!   several writers' ids in one commit (one Delta `txn` action each, all or nothing:
//!   [`TableSink::append_writers`](lakehouse_core::TableSink::append_writers)). Files
//!   are encoded in parallel on rayon, zstd by default, and roll at a target size.
//! * **Reads**: streaming scans with projection, predicate and limit; time travel by
//!   version and by timestamp; `changes_since` for incremental consumers.
//! * **Catalog**: [`TableRoot`], a directory or object-store prefix of tables by name,
//!   implements [`TableCatalog`](lakehouse_core::TableCatalog) (a query engine's
//!   `CREATE TABLE` creates there).
//! * **Maintenance**: [`Table::optimize`] (compaction, clustering),
//!   [`Table::vacuum`] with a retention guard, checkpoints, and schema evolution
//!   ([`Table::add_columns`]).
//!
//! # The Delta log: read by `delta_kernel`
//!
//! The log is read by `delta_kernel` (0.30, the Delta project's reference reader),
//! handed the table's own object store and run on Tokio's blocking pool. What the
//! tests (`tests/delta_fixtures.rs` and the storage suite) show:
//!
//! | Delta reader feature | here |
//! |---|---|
//! | checkpoints: classic single-file and multi-part, v2 (JSON or Parquet, with sidecars), tables without `_last_checkpoint` | read |
//! | incremental refresh, time travel by version and by time (`inCommitTimestamp` where enabled), `txn` app ids | read |
//! | `deletionVectors`, inline and in files | applied as Parquet row selections |
//! | `columnMapping` (`name` / `id`): renamed, dropped, added columns, and struct fields at every depth (in structs, lists and maps) | read by physical names (`name`), by Parquet field ids (`id`; a file without them is refused; nested fields by id where the file has them, else by physical name); a table with mapped nested fields is described to engines as a batch stream, not as files ([`TableSource::scan_files`](lakehouse_core::TableSource::scan_files) returns `None`) |
//! | `timestampNtz`, schema-evolved columns (NULL in older files) | read |
//! | nested types: `struct`, `array`, `map`, nested in each other, with nulls at every level; struct fields added by schema evolution (NULL in older files) | read (any list / map field names in the files) |
//! | nested statistics (per struct leaf, as Spark and delta-rs write them) | ignored: nested columns are not pruned by statistics, flat ones still are |
//! | `void` columns and struct fields (not in the data files) | read as all-null Arrow `Null` columns |
//! | column and field metadata (comments, ...) | kept as Arrow field metadata (values that are not strings as their JSON text) |
//! | `typeWidening` (and `-preview`): older files in narrower types | converted exactly to the table type (integers, float, integers to double, decimals, date to `timestamp_ntz`); a recorded change the protocol does not allow, or a file type that does not widen to the table's, is refused with `Unsupported` naming the column |
//! | partition values as Spark, delta-rs and kernel write them | every type: floats (`NaN`, `inf` / `Infinity`, `-0`), binary (text or `\uXXXX` escapes), timestamps (`2026-01-01 00:00:00[.ffffff]`, ISO with `Z` or an offset, a date alone), decimals (plain or exponent), booleans, escaped characters; empty is null but for strings and binary |
//! | tables Python `deltalake` writes: column mapping, change data feed, `timestamp_ntz`, checkpoints, copy-on-write deletes and updates, schema merges | read as `deltalake` reads them (`tests/peer_features.rs`) |
//! | `variantType`, any unknown reader feature | refused with `Unsupported` naming it |
//!
//! | Delta writer feature | here |
//! |---|---|
//! | commits: put-if-absent, `txn` with `lastUpdated`, `commitInfo` | written by this crate |
//! | nested types and `void` columns | written: Parquet's standard `LIST` / `MAP` layout, void columns left out of the files; statistics of top-level columns of primitive types; schema evolution keeps the existing columns exactly as the log has them |
//! | checkpoints | written by kernel: classic single-file (v2 where the table declares it), `_last_checkpoint` |
//! | log retention | after a checkpoint, log entries older than `delta.logRetentionDuration` (30 days) that no version within it needs are deleted; tombstones older than `delta.deletedFileRetentionDuration` leave the checkpoint |
//! | `deletionVectors` | written by deletes and updates of tables with `delta.enableDeletionVectors` (inline up to [`deletion_vector::INLINE_MAX_BYTES`], else in `deletion_vector_<uuid>.bin` files), merged with a file's existing vector; purged by `optimize` on request; their files kept by `vacuum` while a version within the retention uses them |
//! | `appendOnly`, `invariants`, `timestampNtz`, `deletionVectors` (kept on rewritten files' removes), `v2Checkpoint`, `changeDataFeed` (appends and compaction only), `domainMetadata`, `vacuumProtocolCheck` | kept |
//! | `typeWidening` (and `-preview`) | kept: new files in the current types, `delta.typeChanges` (and other field metadata) kept by schema changes; this crate changes no column's type |
//! | partition columns of type float, double and binary (in tables other engines created) | written as Spark and delta-rs read them (`NaN`, `Infinity`, UTF-8 text or `\uXXXX` escapes) |
//! | `columnMapping`, check constraints, generated and identity columns, `rowTracking`, `inCommitTimestamp`, unknown features | writes refused with `Unsupported` naming it |
//!
//! A failed automatic checkpoint never fails its commit: it is kept for
//! [`Table::last_checkpoint_error`].
//!
//! # Quick start
//!
//! ```
//! use std::sync::Arc;
//!
//! use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use futures::TryStreamExt;
//! use lakehouse_core::{col, ScanRequest, TableSource};
//! use lakehouse_storage::{Location, PartitionField, Table, TableOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("order_id", DataType::Int64, false),
//!     Field::new("region", DataType::Utf8, true),
//!     Field::new("price", DataType::Float64, true),
//! ]));
//! let table = Table::create(
//!     Location::local(dir.path())?,
//!     schema.clone(),
//!     TableOptions::new().partition_by([PartitionField::identity("region")]),
//! )
//! .await?;
//!
//! let batch = RecordBatch::try_new(
//!     schema,
//!     vec![
//!         Arc::new(Int64Array::from(vec![1, 2, 3])),
//!         Arc::new(StringArray::from(vec!["eu", "us", "eu"])),
//!         Arc::new(Float64Array::from(vec![9.5, 20.0, 3.25])),
//!     ],
//! )?;
//! let commit = table.append(vec![batch]).await?;
//! assert_eq!(commit.version, 1);
//!
//! // Only the `region=eu` directory is read.
//! let rows: Vec<RecordBatch> = table
//!     .scan(ScanRequest::new().with_predicate(col("region").eq("eu")))
//!     .await?
//!     .try_collect()
//!     .await?;
//! assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! # Arrow types on append
//!
//! A table stores each column in one Arrow type: `Utf8`, `Binary`, `Boolean`, `Int8`
//! to `Int64`, `Float32`, `Float64`, `Date32`, `Decimal128` and `Timestamp` in
//! microseconds (`UTC` or without a time zone), `Null` (void), and `Struct`, `List`
//! and `Map` of them (see *Nested and void columns* below). [`Table::append`] also takes the types
//! Arrow producers use for the same values (DataFusion reads strings as `Utf8View`) and
//! converts them first, exactly or not at all:
//!
//! | batch type | table type | rule |
//! |---|---|---|
//! | `Utf8View`, `LargeUtf8` | `Utf8` | always (a `LargeUtf8` column over 2 GiB of text is an error) |
//! | `BinaryView`, `LargeBinary` | `Binary` | always (as above) |
//! | `Dictionary(_, V)` | any | its values, then the rule for `V` |
//! | `Timestamp` in s, ms, us or ns | `Timestamp` in us | both with a time zone (any zone into `UTC`: the instant is kept) or both without; seconds and milliseconds must not overflow, nanoseconds must be whole microseconds |
//! | any integer, signed or unsigned | `Int8` to `Int64` | every value must fit: `UInt8` always fits `Int16`, `UInt16` `Int32`, `UInt32` `Int64`; `UInt64` fits `Int64` below 2^63 |
//! | `Float16`, `Float32` | `Float64` | always |
//! | `Decimal128(p, s)` | `Decimal128(p2, s)` | the same scale; every value within `p2` digits |
//!
//! A value that does not convert exactly is an [`ErrorKind::TypeMismatch`] error naming
//! the column, row and value: nothing is rounded, truncated or wrapped, and nothing is
//! written. Other types are refused with [`ErrorKind::SchemaMismatch`] naming the column.
//! Tables are not created with unsigned integer columns (Delta has no unsigned types).
//!
//! ## Nested and void columns
//!
//! A table also stores `Struct`, `List` and `Map` columns of these types, nested in
//! each other (Delta `struct`, `array` and `map`), in the shape Parquet and Delta
//! writers use: list items are named `element`, map entries `key_value` with a non-null
//! `key` and a `value`. Appends convert the other shapes of the same values, and every
//! child by the rules above (a `Utf8View` inside a struct becomes `Utf8`):
//!
//! | batch type | table type | rule |
//! |---|---|---|
//! | `Struct` | `Struct` | fields by name (any order, case-insensitive); a missing field is null (an error when it is not nullable); a field the table does not have is an error |
//! | `List`, `LargeList`, `ListView`, `LargeListView`, `FixedSizeList` (any item name) | `List` | always (a `LargeList` over 2^31 items is an error) |
//! | `Map` (any entries, key and value names) | `Map` | keys and values by the rules above |
//! | `Null`, or the column left out | `Null` (Delta `void`) | always; a void column or struct field is never written to the data files and reads as nulls |
//!
//! Nested columns cannot be partition columns, sort keys or bloom filter columns (an
//! [`ErrorKind::InvalidInput`] error naming the column when the table is created), and
//! have no statistics: predicates test them with `IS NULL` / `IS NOT NULL` only, other
//! tests of a nested or void column are [`ErrorKind::Unsupported`] errors naming it.
//! A void type inside a list or a map, and a struct whose fields are all void, are
//! refused (the data files could not hold them).
//!
//! # Crate features
//!
//! * `s3`: S3 and S3-compatible object stores (`Location::s3`).
//! * `fault-injection`: [`faults::FaultStore`], an object store that injects errors
//!   (before and after the operation is applied), latency, failed multipart uploads and
//!   stale listings into another, from a seeded schedule: for tests and fault campaigns;
//!   and, on Unix, [`faults::run_power_loss`], seeded power cuts of a local table on a
//!   simulated page cache (unsynced directory entries undone, unsynced files emptied,
//!   cut or garbled), checked for lost and duplicated commits.
//!
//! # Durability of local tables
//!
//! A write to a local table returns once it would survive a power loss: the file is
//! synced before it is linked or renamed into place, then its directory (and any
//! directory above it this process has not synced yet). A commit is therefore never
//! visible torn; a torn newest commit (left by a writer that did not sync) is set
//! aside under `_torn/` when the table is opened, any other torn commit is a
//! [`ErrorKind::Corrupt`] error naming the file ([`Table::open`]).
//!
//! # Runtime
//!
//! Async on Tokio (the runtime needs the time driver, used for commit backoff). Parquet
//! encoding runs on the rayon pool and never blocks the async workers; local file
//! writes and their syncs, and kernel's log replay, run on Tokio's blocking pool.

mod checkpoint;
mod conform;
pub mod deletion_vector;
mod durable;
#[cfg(feature = "fault-injection")]
pub mod faults;
mod features;
mod fileset;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod kernel;
mod local;
mod location;
mod log;
mod nested;
mod nested_mapping;
mod partition;
mod read;
mod replay;
mod root;
mod table;
mod widening;
mod write;

pub use lakehouse_core::{Error, ErrorKind, Result};

pub use crate::location::Location;
#[cfg(feature = "s3")]
pub use crate::location::S3Config;
pub use crate::partition::{PartitionField, Transform};
pub use crate::root::TableRoot;
pub use crate::table::{
    CommitInfo, DEFAULT_PAGE_ROWS, HistoryEntry, MIN_VACUUM_RETENTION, MUTATION_ATTEMPTS,
    OptimizeMetrics, OptimizeOptions, StagedMerge, StagedMutation, Table, TableOptions,
    VacuumMetrics, VacuumOptions,
};
pub use crate::write::Compression;
