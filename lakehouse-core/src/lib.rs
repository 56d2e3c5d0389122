//! The shared vocabulary of the Lakehouse crates.
//!
//! Every lakehouse crate depends on this one and on no other: the traits here are the
//! only way data crosses a crate boundary, and Arrow [`RecordBatch`]es are the currency.
//!
//! * [`TableSource`]: a versioned table that can be scanned with a projection, a
//!   pushdown [`Predicate`] and a limit, that reports per-file [`FileStats`] for pruning
//!   and that lists the rows appended since a version ([`TableSource::changes_since`]).
//!   A source backed by Parquet files can also describe a scan as its files
//!   ([`TableSource::scan_files`], a [`FileScan`]) so that a query engine reads them
//!   with its own Parquet reader.
//! * [`TableSink`]: a table that takes appends as atomic commits, idempotent under a
//!   caller-given [`TxnId`] so that a stream consumer delivers exactly once; a sink
//!   may record several writers' ids in one commit ([`TableSink::append_writers`]).
//! * [`TableMutator`]: deletes and row-level updates by [`Predicate`], each one atomic
//!   commit, with Delta-style conflict rules, and `MERGE INTO ... USING ...`
//!   ([`MergeRequest`]: update, delete and insert by matching source rows, one
//!   commit).
//! * [`WritableTable`] (source + sink + mutator, what a SQL engine runs DML on) and
//!   [`TableCatalog`]: tables by name, created, opened and listed (`CREATE TABLE`);
//!   [`MemoryCatalog`] holds [`MemoryTable`]s.
//! * [`EventLog`]: a sharded, ordered, replayable record log with checkpoints.
//! * [`Predicate`] and [`Scalar`]: the filter language sources use to skip data.
//! * [`Clock`]: injected time.
//!
//! The orchestration runtime over these contracts (event-source triggers and
//! Step Functions-like workflows, on tokio) lives in the `lakehouse-flow` crate.
//!
//! In-memory implementations, [`MemoryTable`] and [`MemoryLog`], serve tests and small
//! jobs; the `conformance` feature adds the suites that every implementation passes.
//!
//! # Quick start
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Int64Array, RecordBatch, StringArray};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use futures::TryStreamExt;
//! use lakehouse_core::{col, AppendOutcome, MemoryTable, ScanRequest, TableSink, TableSource, TxnId};
//!
//! # futures::executor::block_on(async {
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("item", DataType::Utf8, false),
//!     Field::new("qty", DataType::Int64, false),
//! ]));
//! let table = MemoryTable::new("sales", schema.clone());
//! let batch = RecordBatch::try_new(schema, vec![
//!     Arc::new(StringArray::from(vec!["kettle", "toaster", "kettle"])),
//!     Arc::new(Int64Array::from(vec![1, 2, 5])),
//! ])?;
//!
//! // Append once; the same transaction id again is a no-op.
//! let txn = TxnId::new("shard-0000", 42);
//! assert!(matches!(table.append(vec![batch.clone()], Some(txn.clone())).await?,
//!     AppendOutcome::Committed { version: 1, rows: 3 }));
//! assert!(matches!(table.append(vec![batch], Some(txn)).await?,
//!     AppendOutcome::Duplicate { .. }));
//!
//! // Scan with a pushed-down predicate.
//! let rows: Vec<RecordBatch> = table
//!     .scan(ScanRequest::new().with_predicate(col("item").eq("kettle")))
//!     .await?
//!     .try_collect()
//!     .await?;
//! assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Crate features
//!
//! * `conformance` (off by default): the [`conformance`] module, test suites that an
//!   implementation of [`TableSource`] + [`TableSink`] or [`EventLog`] runs in its own
//!   tests.
//!
//! # Runtime
//!
//! The traits are `async` ([`async_trait`](mod@async_trait)) and runtime-agnostic: nothing here spawns
//! tasks or needs tokio. The in-memory implementations never block for long: their
//! locks guard memory operations only, so they can be called from any executor.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod cancel;
mod catalog;
mod clock;
mod cpu;
mod error;
mod file_scan;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod log;
mod memory;
mod merge;
mod mutate;
mod predicate;
mod scalar;
mod table;

#[cfg(any(feature = "conformance", doc))]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

pub use arrow::array::RecordBatch;
pub use async_trait::async_trait;

pub use crate::cancel::{CancelToken, Cancelled};
pub use crate::catalog::{
    MemoryCatalog, TableCatalog, WritableTable, check_partition_columns, validate_table_name,
};
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::cpu::on_rayon;
pub use crate::error::{Context, Error, ErrorKind, Result};
pub use crate::file_scan::{DeletedRows, FileScan, ScanFile, ScanFileStatistics};
pub use crate::log::{
    EventLog, PartitionKey, Position, PutRecord, PutResult, ReadBatch, ReadLimit, Record,
    SequenceNumber, ShardId, ShardInfo, even_hash_ranges, hash_key, read_window,
};
pub use crate::memory::{MemoryLog, MemoryTable, conform_batch};
pub use crate::merge::{
    MatchedAction, MatchedClause, MergeAssignment, MergeFn, MergeKey, MergeOutcome, MergeRequest,
    MergeRows, MergeRun, MergeValue, NotMatchedClause,
};
pub use crate::mutate::{
    Assignment, AssignmentValue, ColumnFn, MutationOutcome, TableMutator, apply_assignments,
    check_assignments, match_mask, mutate_batch,
};
pub use crate::predicate::{CmpOp, ColumnRef, ColumnStats, Predicate, StatsProvider, col};
pub use crate::scalar::Scalar;
pub use crate::table::{
    AppendOutcome, BatchStream, Changes, FileStats, FilterSupport, RowChanges, ScanRequest,
    TableSink, TableSource, TableStatistics, TxnId, Version, check_writers,
};
