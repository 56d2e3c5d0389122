//! [`TableSource`] and [`TableSink`]: how tables are read and written across crates.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use futures::Stream;

use crate::error::Result;
use crate::file_scan::FileScan;
use crate::predicate::{ColumnStats, Predicate, StatsProvider};
use crate::scalar::Scalar;

/// A table version: `0` for a newly created table, one more for every commit.
pub type Version = u64;

/// An asynchronous stream of record batches, as scans return them.
pub type BatchStream = Pin<Box<dyn Stream<Item = Result<RecordBatch>> + Send>>;

/// What a scan asks of a [`TableSource`].
///
/// ```
/// use lakehouse_core::{col, ScanRequest};
///
/// let request = ScanRequest::new()
///     .with_projection(["user_id", "price"])
///     .with_predicate(col("category").eq("toys"))
///     .with_limit(100);
/// assert_eq!(request.limit, Some(100));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ScanRequest {
    /// Columns to return, in this order; `None` returns every column of the schema.
    pub projection: Option<Vec<String>>,
    /// Rows the caller wants. How strictly the source applies it is what
    /// [`TableSource::filter_support`] says; the caller filters again unless it is
    /// [`FilterSupport::Exact`].
    pub predicate: Option<Predicate>,
    /// The caller needs no more than this many rows (after the predicate, when the
    /// source filters exactly). A source may return more; callers truncate.
    pub limit: Option<usize>,
    /// Read the table as of this version instead of the latest (time travel).
    pub version: Option<Version>,
}

impl ScanRequest {
    /// Every column and every row of the latest version.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns only these columns.
    #[must_use]
    pub fn with_projection<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.projection = Some(columns.into_iter().map(Into::into).collect());
        self
    }

    /// Pushes a predicate down.
    #[must_use]
    pub fn with_predicate(mut self, predicate: Predicate) -> Self {
        self.predicate = Some(predicate);
        self
    }

    /// Stops after about `limit` rows.
    #[must_use]
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Reads as of `version`.
    #[must_use]
    pub fn at_version(mut self, version: Version) -> Self {
        self.version = Some(version);
        self
    }
}

/// How a source applies a predicate in [`TableSource::scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterSupport {
    /// Every returned row satisfies the predicate; the caller need not filter again.
    Exact,
    /// The source skips data it can prove does not match (partitions, files, row
    /// groups) but may return rows that do not match; the caller filters again.
    Inexact,
    /// The source ignores the predicate.
    Unsupported,
}

/// Statistics of one unit of storage (a file, a partition or an in-memory batch).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileStats {
    /// Identifier of the unit, unique within the table (a relative file path).
    pub path: String,
    /// Partition column values shared by every row of the unit.
    pub partition_values: BTreeMap<String, Scalar>,
    /// Number of rows.
    pub num_rows: u64,
    /// Size in bytes as stored.
    pub size_bytes: u64,
    /// Statistics of data columns (partition columns are derived from `partition_values`).
    pub columns: BTreeMap<String, ColumnStats>,
}

impl StatsProvider for FileStats {
    fn row_count(&self) -> Option<u64> {
        Some(self.num_rows)
    }

    fn column_stats(&self, column: &str) -> Option<ColumnStats> {
        if let Some(v) = self.partition_values.get(column) {
            return Some(ColumnStats::constant(v.clone(), self.num_rows));
        }
        self.columns.get(column).cloned()
    }
}

/// Statistics of a whole table version, one entry per unit of storage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableStatistics {
    /// The version these statistics describe.
    pub version: Version,
    /// One entry per file or partition.
    pub files: Vec<FileStats>,
}

impl TableStatistics {
    /// Total rows over all files.
    pub fn num_rows(&self) -> u64 {
        self.files.iter().map(|f| f.num_rows).sum()
    }

    /// Total stored bytes over all files.
    pub fn size_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size_bytes).sum()
    }

    /// Statistics of `column` merged over all files.
    pub fn column(&self, column: &str) -> Option<ColumnStats> {
        let mut files = self.files.iter();
        let mut acc = files.next()?.column_stats(column)?;
        for f in files {
            acc.merge(&f.column_stats(column)?);
        }
        Some(acc)
    }
}

/// Rows appended to a table between two versions; see [`TableSource::changes_since`].
pub struct Changes {
    /// The version the changes start after (exclusive).
    pub from_version: Version,
    /// The version the changes end at (inclusive); the next call passes this.
    pub to_version: Version,
    /// The appended rows, in commit order.
    pub batches: BatchStream,
}

impl Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes")
            .field("from_version", &self.from_version)
            .field("to_version", &self.to_version)
            .finish_non_exhaustive()
    }
}

/// Rows added to and removed from a table between two versions; see
/// [`TableSource::row_changes_since`].
///
/// Applying them to the rows of `from_version` (remove each row of `removed` once, add
/// every row of `added`) gives the rows of `to_version`, as multisets: a row updated in
/// place shows as removed with its old values and added with its new ones, and a source
/// may report a row removed and added again unchanged (a rewritten file), which cancels
/// out.
pub struct RowChanges {
    /// The version the changes start after (exclusive).
    pub from_version: Version,
    /// The version the changes end at (inclusive); the next call passes this.
    pub to_version: Version,
    /// Rows added (appended, or the new values of updated rows).
    pub added: BatchStream,
    /// Rows removed (deleted, or the old values of updated rows), with the columns of
    /// the latest schema.
    pub removed: BatchStream,
}

impl Debug for RowChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowChanges")
            .field("from_version", &self.from_version)
            .field("to_version", &self.to_version)
            .finish_non_exhaustive()
    }
}

impl From<Changes> for RowChanges {
    /// Appends only: nothing removed.
    fn from(c: Changes) -> Self {
        RowChanges {
            from_version: c.from_version,
            to_version: c.to_version,
            added: c.batches,
            removed: Box::pin(futures::stream::empty()),
        }
    }
}

/// A readable, versioned table of Arrow record batches.
///
/// Implemented by the partitioned store (`lakehouse-storage`), by live stream tails and
/// by [`MemoryTable`](crate::MemoryTable); consumed by the query engine
/// (`lakehouse-query`) and by anything that wants incremental reads.
///
/// # For implementers
///
/// * [`schema`](Self::schema) is the schema of the latest version; a scan at an older
///   version may return an older schema (a column added later is absent).
/// * [`scan`](Self::scan) validates the request: unknown projected or predicate columns
///   give [`ErrorKind::ColumnNotFound`](crate::ErrorKind::ColumnNotFound), an unknown
///   version gives [`ErrorKind::VersionNotFound`](crate::ErrorKind::VersionNotFound).
///   It must not load the whole table into memory: stream batch by batch.
/// * [`filter_support`](Self::filter_support) defaults to
///   [`FilterSupport::Inexact`]: the source may prune but callers re-filter.
/// * [`statistics`](Self::statistics) must be conservative: a file whose statistics
///   make [`Predicate::can_match`] false must hold no matching row.
/// * [`changes_since`](Self::changes_since) returns only appended rows. If a commit in
///   the range removed or rewrote rows (delete, overwrite), it fails with
///   [`ErrorKind::NonAppendChange`](crate::ErrorKind::NonAppendChange) so that the
///   consumer falls back to a full read; rewrites that keep the same rows (compaction)
///   are skipped.
/// * [`row_changes_since`](Self::row_changes_since) also reports removed rows. Its
///   default is [`changes_since`](Self::changes_since) with nothing removed (so it fails
///   with `NonAppendChange` where that does); a source that can list the rows its
///   deletes and rewrites removed overrides it.
///
/// Run [`conformance::table`](crate::conformance::table) (feature `conformance`) against
/// an implementation to check these rules.
#[async_trait]
pub trait TableSource: Send + Sync + Debug {
    /// The schema of the latest version.
    fn schema(&self) -> SchemaRef;

    /// The latest committed version.
    async fn version(&self) -> Result<Version>;

    /// Names of the columns the table is partitioned by, if any.
    fn partition_columns(&self) -> Vec<String> {
        Vec::new()
    }

    /// How [`scan`](Self::scan) applies `predicate`.
    fn filter_support(&self, predicate: &Predicate) -> FilterSupport {
        let _ = predicate;
        FilterSupport::Inexact
    }

    /// Streams the rows the request asks for.
    async fn scan(&self, request: ScanRequest) -> Result<BatchStream>;

    /// Describes the scan as the Parquet files it reads, for an engine that reads them
    /// itself; `Ok(None)` (the default) when the source is not backed by Parquet files
    /// or cannot describe this scan, and the engine uses [`scan`](Self::scan).
    ///
    /// The request is validated as for `scan` (unknown columns, unknown version). The
    /// files listed are those of `request.version` (the latest when `None`) that
    /// `request.predicate` may match; rows are not filtered, the projection and the
    /// limit are the engine's to apply. See [`FileScan`] for what the rows are.
    async fn scan_files(&self, request: &ScanRequest) -> Result<Option<FileScan>> {
        let _ = request;
        Ok(None)
    }

    /// Per-file statistics of a version (the latest when `None`), for pruning and
    /// planning.
    async fn statistics(&self, version: Option<Version>) -> Result<TableStatistics>;

    /// Rows appended after `version`, up to the latest version.
    async fn changes_since(&self, version: Version) -> Result<Changes>;

    /// Rows added and removed after `version`, up to the latest version (see
    /// [`RowChanges`]). The default reports appends only, through
    /// [`changes_since`](Self::changes_since).
    async fn row_changes_since(&self, version: Version) -> Result<RowChanges> {
        Ok(self.changes_since(version).await?.into())
    }
}

/// Identifies a writer's commit so that a retried commit is applied once.
///
/// `app_id` names the writer (for a stream sink: its name and shard); `sequence`
/// increases with every commit of that writer (for a stream sink: the sequence number of
/// the last record in the batch). A sink applies a commit only if `sequence` is greater
/// than the last one it committed for `app_id`, as Delta Lake's `txn` action does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxnId {
    /// The writer.
    pub app_id: String,
    /// Monotonic sequence of the writer's commits.
    pub sequence: u64,
}

impl TxnId {
    /// A transaction id.
    pub fn new(app_id: impl Into<String>, sequence: u64) -> Self {
        TxnId {
            app_id: app_id.into(),
            sequence,
        }
    }
}

/// The result of [`TableSink::append`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppendOutcome {
    /// The batches were committed as `version`.
    Committed {
        /// The new table version.
        version: Version,
        /// Rows written.
        rows: u64,
    },
    /// A commit with this or a later sequence was already applied for the writer;
    /// nothing was written.
    Duplicate {
        /// The last sequence the table holds for the writer.
        last_sequence: u64,
    },
}

/// A table that takes appends as atomic commits.
///
/// # For implementers
///
/// * An append is atomic: after it returns `Committed`, every row is visible at the new
///   version; if it fails, none is. Readers never see part of a commit.
/// * Batches whose schema differs from the table's fail with
///   [`ErrorKind::SchemaMismatch`](crate::ErrorKind::SchemaMismatch) naming the
///   columns, before anything is written. Columns may arrive in another order, and a
///   nullable column of the table may be missing from the batches (it reads as nulls).
/// * With a [`TxnId`], the commit and the writer's new sequence are recorded together,
///   so that replaying the same or an older sequence returns
///   [`AppendOutcome::Duplicate`] and writes nothing — also across process restarts
///   for durable sinks.
/// * An append of zero rows still commits (useful to advance a transaction id).
#[async_trait]
pub trait TableSink: Send + Sync + Debug {
    /// The schema appended batches must match.
    fn sink_schema(&self) -> SchemaRef;

    /// Appends `batches` as one commit, idempotently when `txn` is given.
    async fn append(&self, batches: Vec<RecordBatch>, txn: Option<TxnId>) -> Result<AppendOutcome>;

    /// The last sequence committed for `app_id`, or `None` if it never committed.
    async fn last_sequence(&self, app_id: &str) -> Result<Option<u64>>;

    /// How many writers one [`append_writers`](Self::append_writers) commit may
    /// record: 1 unless the sink records several transaction ids in one commit.
    fn writers_per_commit(&self) -> usize {
        1
    }

    /// Appends `batches` as one commit that records the new sequence of every writer
    /// in `txns` (distinct app ids, at most
    /// [`writers_per_commit`](Self::writers_per_commit)), so that the rows of several
    /// writers (the shards of a stream) land in one commit and one file per partition.
    ///
    /// All or nothing, like [`append`](Self::append) for one writer: when every writer
    /// already holds its sequence or a later one, nothing is written and the outcome is
    /// [`AppendOutcome::Duplicate`] with the first writer's last sequence; when none
    /// does, the batches and every sequence are committed together; when only some do
    /// (the batches mix rows a commit already holds with new ones), nothing is written
    /// and the error is [`ErrorKind::Conflict`](crate::ErrorKind::Conflict): the caller
    /// resumes each writer from its [`last_sequence`](Self::last_sequence).
    ///
    /// The default takes one writer or none to [`append`](Self::append) and refuses
    /// more with [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported).
    async fn append_writers(
        &self,
        batches: Vec<RecordBatch>,
        mut txns: Vec<TxnId>,
    ) -> Result<AppendOutcome> {
        check_writers(&txns, self.writers_per_commit())?;
        self.append(batches, txns.pop()).await
    }
}

/// Checks the writers of one [`TableSink::append_writers`] commit: distinct app ids,
/// at most `max` of them.
///
/// # Errors
///
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) for an app id given
/// twice, [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) for more than
/// `max` writers.
pub fn check_writers(txns: &[TxnId], max: usize) -> Result<()> {
    if txns.len() > max.max(1) {
        return Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            format!(
                "{} writers in one commit; this sink records at most {}",
                txns.len(),
                max.max(1)
            ),
        ));
    }
    for (i, t) in txns.iter().enumerate() {
        if txns[..i].iter().any(|u| u.app_id == t.app_id) {
            return Err(crate::Error::new(
                crate::ErrorKind::InvalidInput,
                format!("writer {:?} appears twice in one commit", t.app_id),
            ));
        }
    }
    Ok(())
}

#[async_trait]
impl<T: TableSink + ?Sized> TableSink for Arc<T> {
    fn sink_schema(&self) -> SchemaRef {
        (**self).sink_schema()
    }

    async fn append(&self, batches: Vec<RecordBatch>, txn: Option<TxnId>) -> Result<AppendOutcome> {
        (**self).append(batches, txn).await
    }

    async fn last_sequence(&self, app_id: &str) -> Result<Option<u64>> {
        (**self).last_sequence(app_id).await
    }

    fn writers_per_commit(&self) -> usize {
        (**self).writers_per_commit()
    }

    async fn append_writers(
        &self,
        batches: Vec<RecordBatch>,
        txns: Vec<TxnId>,
    ) -> Result<AppendOutcome> {
        (**self).append_writers(batches, txns).await
    }
}
