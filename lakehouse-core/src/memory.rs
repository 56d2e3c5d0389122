//! In-memory implementations of the contracts: [`MemoryTable`] and [`MemoryLog`].
//!
//! Both are complete implementations (they pass the conformance suites), meant for tests,
//! examples and small jobs. Nothing is persisted.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use arrow::array::{RecordBatch, new_null_array};
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, ErrorKind, Result};
use crate::log::{
    EventLog, Position, PutRecord, PutResult, ReadBatch, ReadLimit, Record, SequenceNumber,
    ShardId, ShardInfo, even_hash_ranges, read_window,
};
use crate::merge::{MergeOutcome, MergeRequest, MergeRun};
use crate::mutate::{Assignment, MutationOutcome, TableMutator, check_assignments, mutate_batch};
use crate::predicate::{ColumnStats, Predicate};
use crate::table::{
    AppendOutcome, BatchStream, Changes, FileStats, FilterSupport, RowChanges, ScanRequest,
    TableSink, TableSource, TableStatistics, TxnId, Version,
};

/// Checks `batch` against the table schema and returns it with the table's column order.
///
/// Columns may come in any order; a nullable table column missing from the batch is
/// filled with nulls. Extra columns, missing non-nullable columns, other types and nulls
/// in non-nullable columns are [`ErrorKind::SchemaMismatch`] errors that name the columns.
pub fn conform_batch(table: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    if batch.schema().fields() == table.fields() {
        return check_non_nullable(table, batch).map(|()| batch.clone());
    }
    let batch_schema = batch.schema();
    let extra: Vec<&str> = batch_schema
        .fields()
        .iter()
        .filter(|f| table.field_with_name(f.name()).is_err())
        .map(|f| f.name().as_str())
        .collect();
    let mut problems = Vec::new();
    if !extra.is_empty() {
        problems.push(format!("columns not in the table: {}", extra.join(", ")));
    }
    let mut columns = Vec::with_capacity(table.fields().len());
    for field in table.fields() {
        match batch_schema.index_of(field.name()) {
            Ok(i) => {
                let got = batch_schema.field(i).data_type();
                if got != field.data_type() {
                    problems.push(format!(
                        "column {} has type {got}, the table has {}",
                        field.name(),
                        field.data_type()
                    ));
                }
                columns.push(batch.column(i).clone());
            }
            Err(_) if field.is_nullable() => {
                columns.push(new_null_array(field.data_type(), batch.num_rows()))
            }
            Err(_) => problems.push(format!("non-nullable column {} is missing", field.name())),
        }
    }
    if !problems.is_empty() {
        return Err(Error::new(ErrorKind::SchemaMismatch, problems.join("; ")));
    }
    let out = RecordBatch::try_new(table.clone(), columns)
        .map_err(|e| Error::new(ErrorKind::SchemaMismatch, e.to_string()))?;
    check_non_nullable(table, &out)?;
    Ok(out)
}

fn check_non_nullable(table: &Schema, batch: &RecordBatch) -> Result<()> {
    for (field, column) in table.fields().iter().zip(batch.columns()) {
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(Error::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "column {} is not nullable but has {} nulls",
                    field.name(),
                    column.null_count()
                ),
            )
            .with_column(field.name()));
        }
    }
    Ok(())
}

/// Projects `batch` onto `columns` by name.
fn project(batch: &RecordBatch, columns: &[usize]) -> Result<RecordBatch> {
    Ok(batch.project(columns)?)
}

#[derive(Debug, Clone)]
struct Commit {
    batches: Vec<RecordBatch>,
    stats: Vec<FileStats>,
    /// `false` when the commit replaced the table's rows instead of appending.
    append: bool,
}

#[derive(Debug)]
struct TableState {
    /// `commits[v - 1]` made version `v`.
    commits: Vec<Commit>,
    /// Snapshot of the live batches at the latest version.
    live: Vec<(RecordBatch, FileStats)>,
    txns: HashMap<String, u64>,
}

/// A versioned table held in memory: every append is a commit, every version can be read
/// back, and `changes_since` lists appended batches.
///
/// Filters exactly ([`FilterSupport::Exact`]) and skips batches whose statistics rule the
/// predicate out. Cheap to clone: clones share the table.
#[derive(Clone)]
pub struct MemoryTable {
    name: Arc<str>,
    schema: SchemaRef,
    state: Arc<RwLock<TableState>>,
}

impl fmt::Debug for MemoryTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.read();
        f.debug_struct("MemoryTable")
            .field("name", &self.name)
            .field("version", &state.commits.len())
            .field("batches", &state.live.len())
            .finish()
    }
}

impl MemoryTable {
    /// An empty table at version 0.
    pub fn new(name: impl Into<String>, schema: SchemaRef) -> Self {
        MemoryTable {
            name: Arc::from(name.into()),
            schema,
            state: Arc::new(RwLock::new(TableState {
                commits: Vec::new(),
                live: Vec::new(),
                txns: HashMap::new(),
            })),
        }
    }

    /// The table's name, used in error context.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replaces every row of the table with `batches` as one commit. Incremental readers
    /// that span this version get [`ErrorKind::NonAppendChange`].
    pub fn overwrite(&self, batches: Vec<RecordBatch>) -> Result<Version> {
        let prepared = self.prepare(&batches)?;
        let mut state = self.state.write();
        state.live = prepared.clone();
        let (batches, stats) = prepared.into_iter().unzip();
        state.commits.push(Commit {
            batches,
            stats,
            append: false,
        });
        Ok(state.commits.len() as Version)
    }

    fn prepare(&self, batches: &[RecordBatch]) -> Result<Vec<(RecordBatch, FileStats)>> {
        let version = self.state.read().commits.len() + 1;
        batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .enumerate()
            .map(|(i, b)| {
                let b = conform_batch(&self.schema, b).map_err(|e| e.with_table(&*self.name))?;
                let stats = self.stats_of(&b, format!("v{version}/batch-{i}"))?;
                Ok((b, stats))
            })
            .collect()
    }

    fn stats_of(&self, b: &RecordBatch, path: String) -> Result<FileStats> {
        let mut columns = std::collections::BTreeMap::new();
        for (field, array) in self.schema.fields().iter().zip(b.columns()) {
            columns.insert(
                field.name().clone(),
                ColumnStats::from_array(array.as_ref())?,
            );
        }
        Ok(FileStats {
            path,
            partition_values: Default::default(),
            num_rows: b.num_rows() as u64,
            size_bytes: b.get_array_memory_size() as u64,
            columns,
        })
    }

    /// A delete (`assignments` `None`) or an update of the latest version, as one
    /// non-append commit holding the new live batches. Runs under the table's write
    /// lock, so it never conflicts; update functions run under it too.
    fn mutate(
        &self,
        predicate: &Predicate,
        assignments: Option<&[Assignment]>,
    ) -> Result<MutationOutcome> {
        predicate
            .validate(&self.schema)
            .map_err(|e| e.with_table(&*self.name))?;
        if let Some(a) = assignments {
            check_assignments(&self.schema, a).map_err(|e| e.with_table(&*self.name))?;
        }
        let mut state = self.state.write();
        let version = state.commits.len() as Version + 1;
        let mut live = Vec::with_capacity(state.live.len());
        let mut affected = 0u64;
        for (i, (batch, stats)) in state.live.iter().enumerate() {
            if !predicate.can_match(stats) {
                live.push((batch.clone(), stats.clone()));
                continue;
            }
            let (out, n) = mutate_batch(batch, predicate, assignments)
                .map_err(|e| e.with_table(&*self.name))?;
            if n == 0 {
                live.push((batch.clone(), stats.clone()));
                continue;
            }
            affected += n;
            if out.num_rows() > 0 {
                let out =
                    conform_batch(&self.schema, &out).map_err(|e| e.with_table(&*self.name))?;
                let stats = self.stats_of(&out, format!("v{version}/rewrite-{i}"))?;
                live.push((out, stats));
            }
        }
        if affected == 0 {
            return Ok(MutationOutcome::unchanged());
        }
        state.live = live.clone();
        let (batches, stats) = live.into_iter().unzip();
        state.commits.push(Commit {
            batches,
            stats,
            append: false,
        });
        Ok(MutationOutcome {
            rows_affected: affected,
            version: Some(version),
        })
    }

    /// A merge of the latest version, as one non-append commit (see [`Self::mutate`]).
    fn merge_rows(&self, request: &MergeRequest) -> Result<MergeOutcome> {
        let named = |e: Error| e.with_table(&*self.name);
        let mut run = MergeRun::new(request, &self.schema, &self.schema).map_err(named)?;
        let prune = run.target_predicate().map_err(named)?;
        let mut state = self.state.write();
        let version = state.commits.len() as Version + 1;
        let mut live = Vec::with_capacity(state.live.len() + 1);
        for (i, (batch, stats)) in state.live.iter().enumerate() {
            if !prune.can_match(stats) {
                live.push((batch.clone(), stats.clone()));
                continue;
            }
            match run.merge_batch(batch).map_err(named)? {
                None => live.push((batch.clone(), stats.clone())),
                Some(out) if out.num_rows() == 0 => {}
                Some(out) => {
                    let out = conform_batch(&self.schema, &out).map_err(named)?;
                    let stats = self.stats_of(&out, format!("v{version}/merge-{i}"))?;
                    live.push((out, stats));
                }
            }
        }
        let (inserted, mut outcome) = run.finish().map_err(named)?;
        if let Some(b) = inserted {
            let b = conform_batch(&self.schema, &b).map_err(named)?;
            let stats = self.stats_of(&b, format!("v{version}/merge-insert"))?;
            live.push((b, stats));
        }
        if outcome.rows_affected() == 0 {
            return Ok(outcome);
        }
        state.live = live.clone();
        let (batches, stats) = live.into_iter().unzip();
        state.commits.push(Commit {
            batches,
            stats,
            append: false,
        });
        outcome.version = Some(version);
        Ok(outcome)
    }

    /// The live batches and their statistics at `version` (latest when `None`).
    fn snapshot(
        &self,
        version: Option<Version>,
    ) -> Result<(Version, Vec<(RecordBatch, FileStats)>)> {
        let state = self.state.read();
        let latest = state.commits.len() as Version;
        let version = version.unwrap_or(latest);
        if version > latest {
            return Err(Error::new(
                ErrorKind::VersionNotFound,
                format!("version {version} does not exist; the latest is {latest}"),
            )
            .with_table(&*self.name)
            .with_version(version));
        }
        if version == latest {
            return Ok((version, state.live.clone()));
        }
        let mut live = Vec::new();
        for commit in &state.commits[..version as usize] {
            if !commit.append {
                live.clear();
            }
            live.extend(
                commit
                    .batches
                    .iter()
                    .cloned()
                    .zip(commit.stats.iter().cloned()),
            );
        }
        Ok((version, live))
    }

    fn column_indices(&self, projection: &Option<Vec<String>>) -> Result<Option<Vec<usize>>> {
        projection
            .as_ref()
            .map(|cols| {
                cols.iter()
                    .map(|c| {
                        self.schema.index_of(c).map_err(|_| {
                            Error::new(
                                ErrorKind::ColumnNotFound,
                                format!("projected column {c:?} is not in the table"),
                            )
                            .with_table(&*self.name)
                            .with_column(c)
                        })
                    })
                    .collect()
            })
            .transpose()
    }
}

#[async_trait]
impl TableSource for MemoryTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn version(&self) -> Result<Version> {
        Ok(self.state.read().commits.len() as Version)
    }

    fn filter_support(&self, _predicate: &Predicate) -> FilterSupport {
        FilterSupport::Exact
    }

    async fn scan(&self, request: ScanRequest) -> Result<BatchStream> {
        let indices = self.column_indices(&request.projection)?;
        if let Some(p) = &request.predicate {
            p.validate(&self.schema)
                .map_err(|e| e.with_table(&*self.name))?;
        }
        let (_, live) = self.snapshot(request.version)?;
        let predicate = request.predicate;
        let mut remaining = request.limit.unwrap_or(usize::MAX);
        let batches = live.into_iter().filter_map(move |(batch, stats)| {
            if remaining == 0 {
                return None;
            }
            let out = (|| {
                let mut b = batch;
                if let Some(p) = &predicate {
                    if !p.can_match(&stats) {
                        return Ok(None);
                    }
                    b = p.filter(&b)?;
                }
                if b.num_rows() > remaining {
                    b = b.slice(0, remaining);
                }
                remaining -= b.num_rows();
                if let Some(idx) = &indices {
                    b = project(&b, idx)?;
                }
                Ok(Some(b))
            })();
            out.transpose()
        });
        Ok(Box::pin(futures::stream::iter(batches)))
    }

    async fn statistics(&self, version: Option<Version>) -> Result<TableStatistics> {
        let (version, live) = self.snapshot(version)?;
        Ok(TableStatistics {
            version,
            files: live.into_iter().map(|(_, s)| s).collect(),
        })
    }

    async fn changes_since(&self, version: Version) -> Result<Changes> {
        let state = self.state.read();
        let latest = state.commits.len() as Version;
        if version > latest {
            return Err(Error::new(
                ErrorKind::VersionNotFound,
                format!("version {version} does not exist; the latest is {latest}"),
            )
            .with_table(&*self.name)
            .with_version(version));
        }
        let mut batches = Vec::new();
        for (i, commit) in state.commits[version as usize..].iter().enumerate() {
            if !commit.append {
                return Err(Error::new(
                    ErrorKind::NonAppendChange,
                    "the table was overwritten after this version; read it in full",
                )
                .with_table(&*self.name)
                .with_version(version + i as u64 + 1));
            }
            batches.extend(commit.batches.iter().cloned().map(Ok));
        }
        Ok(Changes {
            from_version: version,
            to_version: latest,
            batches: Box::pin(futures::stream::iter(batches)),
        })
    }

    /// Appends only: the appended batches. Across a delete, update or overwrite: every
    /// row of `version` removed and every row of the latest version added.
    async fn row_changes_since(&self, version: Version) -> Result<RowChanges> {
        match self.changes_since(version).await {
            Err(e) if e.kind() == ErrorKind::NonAppendChange => {
                let (_, before) = self.snapshot(Some(version))?;
                let (latest, now) = self.snapshot(None)?;
                let rows = |live: Vec<(RecordBatch, FileStats)>| -> BatchStream {
                    Box::pin(futures::stream::iter(live.into_iter().map(|(b, _)| Ok(b))))
                };
                Ok(RowChanges {
                    from_version: version,
                    to_version: latest,
                    added: rows(now),
                    removed: rows(before),
                })
            }
            other => Ok(other?.into()),
        }
    }
}

#[async_trait]
impl TableSink for MemoryTable {
    fn sink_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn append(&self, batches: Vec<RecordBatch>, txn: Option<TxnId>) -> Result<AppendOutcome> {
        self.append_writers(batches, txn.into_iter().collect())
            .await
    }

    async fn last_sequence(&self, app_id: &str) -> Result<Option<u64>> {
        Ok(self.state.read().txns.get(app_id).copied())
    }

    fn writers_per_commit(&self) -> usize {
        usize::MAX
    }

    async fn append_writers(
        &self,
        batches: Vec<RecordBatch>,
        txns: Vec<TxnId>,
    ) -> Result<AppendOutcome> {
        crate::check_writers(&txns, usize::MAX)?;
        let prepared = self.prepare(&batches)?;
        let rows = prepared.iter().map(|(b, _)| b.num_rows() as u64).sum();
        let mut state = self.state.write();
        let held: Vec<u64> = txns
            .iter()
            .filter_map(|t| {
                state
                    .txns
                    .get(&t.app_id)
                    .copied()
                    .filter(|&l| t.sequence <= l)
            })
            .collect();
        if !txns.is_empty() && held.len() == txns.len() {
            return Ok(AppendOutcome::Duplicate {
                last_sequence: held[0],
            });
        }
        if !held.is_empty() {
            return Err(Error::new(
                ErrorKind::Conflict,
                "some writers of the commit hold its sequence already, others do not",
            ));
        }
        let version = state.commits.len() as Version + 1;
        let prepared: Vec<(RecordBatch, FileStats)> = prepared
            .into_iter()
            .map(|(b, mut s)| {
                // Paths name the version that wrote them, even if another append won the race.
                if let Some(rest) = s.path.split_once('/').map(|(_, r)| r.to_owned()) {
                    s.path = format!("v{version}/{rest}");
                }
                (b, s)
            })
            .collect();
        state.live.extend(prepared.iter().cloned());
        let (batches, stats) = prepared.into_iter().unzip();
        state.commits.push(Commit {
            batches,
            stats,
            append: true,
        });
        for txn in txns {
            state.txns.insert(txn.app_id, txn.sequence);
        }
        Ok(AppendOutcome::Committed { version, rows })
    }
}

/// Deletes, updates and merges are one non-append commit each (incremental readers
/// spanning it get [`ErrorKind::NonAppendChange`]); they run under the table's lock,
/// so they never conflict (merge functions run under it too).
#[async_trait]
impl TableMutator for MemoryTable {
    async fn delete_where(&self, predicate: &Predicate) -> Result<MutationOutcome> {
        self.mutate(predicate, None)
    }

    async fn update_where(
        &self,
        predicate: &Predicate,
        assignments: &[Assignment],
    ) -> Result<MutationOutcome> {
        self.mutate(predicate, Some(assignments))
    }

    async fn merge(&self, request: &MergeRequest) -> Result<MergeOutcome> {
        self.merge_rows(request)
    }
}

#[derive(Debug, Default)]
struct ShardState {
    /// Sequence number of `records[0]`.
    first: SequenceNumber,
    records: VecDeque<Record>,
    /// Arrival time of the newest record ever written.
    newest_ms: i64,
}

impl ShardState {
    fn next_sequence(&self) -> SequenceNumber {
        self.first + self.records.len() as u64
    }
}

struct LogInner {
    shards: Vec<ShardInfo>,
    state: Vec<Mutex<ShardState>>,
    checkpoints: Mutex<HashMap<(String, ShardId), SequenceNumber>>,
    max_record_bytes: usize,
    clock: Arc<dyn Clock>,
}

/// A sharded [`EventLog`] held in memory, with a fixed set of shards.
///
/// Cheap to clone: clones share the log. Records stay until
/// [`trim_before`](Self::trim_before) removes them.
#[derive(Clone)]
pub struct MemoryLog {
    inner: Arc<LogInner>,
}

impl fmt::Debug for MemoryLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryLog")
            .field("shards", &self.inner.shards.len())
            .field("max_record_bytes", &self.inner.max_record_bytes)
            .finish_non_exhaustive()
    }
}

impl MemoryLog {
    /// The default record size limit: 1 MiB, partition key included.
    pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

    /// A log with `shards` shards (at least one), the system clock and a 1 MiB record
    /// limit.
    pub fn new(shards: u32) -> Self {
        Self::with_options(
            shards,
            Self::DEFAULT_MAX_RECORD_BYTES,
            Arc::new(SystemClock),
        )
    }

    /// A log with `shards` shards, a record size limit and a clock for arrival times.
    pub fn with_options(shards: u32, max_record_bytes: usize, clock: Arc<dyn Clock>) -> Self {
        let infos: Vec<ShardInfo> = even_hash_ranges(shards)
            .into_iter()
            .enumerate()
            .map(|(i, range)| ShardInfo {
                id: ShardId(i as u32),
                parents: Vec::new(),
                hash_range: range,
                closed: false,
            })
            .collect();
        let state = infos.iter().map(|_| Mutex::default()).collect();
        MemoryLog {
            inner: Arc::new(LogInner {
                shards: infos,
                state,
                checkpoints: Mutex::default(),
                max_record_bytes,
                clock,
            }),
        }
    }

    /// Removes every record of `shard` with a sequence number below `sequence`, as
    /// retention would. Returns how many were removed.
    pub fn trim_before(&self, shard: ShardId, sequence: SequenceNumber) -> Result<usize> {
        let mut s = self.shard_state(shard)?.lock();
        let mut removed = 0;
        while s.first < sequence && !s.records.is_empty() {
            s.records.pop_front();
            s.first += 1;
            removed += 1;
        }
        Ok(removed)
    }

    fn shard_state(&self, shard: ShardId) -> Result<&Mutex<ShardState>> {
        self.inner.state.get(shard.0 as usize).ok_or_else(|| {
            Error::new(
                ErrorKind::ShardNotFound,
                format!("the log has {} shards", self.inner.shards.len()),
            )
            .with_shard(shard)
        })
    }

    fn route(&self, hash_key: u128) -> ShardId {
        let idx = self
            .inner
            .shards
            .partition_point(|s| s.hash_range.1 < hash_key)
            .min(self.inner.shards.len() - 1);
        self.inner.shards[idx].id
    }

    fn put_one(&self, record: PutRecord) -> Result<PutResult> {
        record.validate(self.inner.max_record_bytes)?;
        let shard = self.route(record.routing_key());
        let now = self.inner.clock.now_millis();
        let mut s = self.shard_state(shard)?.lock();
        // Arrival times never go backwards within a shard, so AT_TIMESTAMP can search.
        let timestamp_ms = now.max(s.newest_ms);
        s.newest_ms = timestamp_ms;
        let sequence = s.next_sequence();
        s.records.push_back(Record {
            shard,
            sequence,
            partition_key: record.partition_key,
            data: record.data,
            timestamp_ms,
        });
        Ok(PutResult { shard, sequence })
    }
}

#[async_trait]
impl EventLog for MemoryLog {
    async fn shards(&self) -> Result<Vec<ShardInfo>> {
        Ok(self.inner.shards.clone())
    }

    async fn put(&self, record: PutRecord) -> Result<PutResult> {
        self.put_one(record)
    }

    async fn put_batch(&self, records: Vec<PutRecord>) -> Result<Vec<Result<PutResult>>> {
        Ok(records.into_iter().map(|r| self.put_one(r)).collect())
    }

    async fn read(&self, shard: ShardId, from: Position, limit: ReadLimit) -> Result<ReadBatch> {
        let s = self.shard_state(shard)?.lock();
        let next = s.next_sequence();
        let trimmed = |seq: SequenceNumber| {
            Error::new(
                ErrorKind::PositionTrimmed,
                format!(
                    "sequence {seq} was trimmed; the oldest retained is {}",
                    s.first
                ),
            )
            .with_shard(shard)
            .with_version(seq)
        };
        let beyond = |seq: SequenceNumber| {
            Error::new(
                ErrorKind::InvalidPosition,
                format!("sequence {seq} is beyond the next sequence {next}"),
            )
            .with_shard(shard)
            .with_version(seq)
        };
        let start = match from {
            Position::TrimHorizon => s.first,
            Position::Latest => next,
            Position::AtSequence(seq) => seq,
            Position::AfterSequence(seq) => seq.checked_add(1).ok_or_else(|| beyond(seq))?,
            Position::AtTimestamp(ts) => {
                s.first + s.records.partition_point(|r| r.timestamp_ms < ts) as u64
            }
        };
        if start < s.first {
            return Err(trimmed(start));
        }
        if start > next {
            return Err(beyond(start));
        }
        let (records, resume, millis_behind) =
            read_window(&s.records, s.first, start, limit, s.newest_ms);
        Ok(ReadBatch {
            records,
            next: Position::AtSequence(resume),
            millis_behind,
            end_of_shard: false,
        })
    }

    async fn commit_checkpoint(
        &self,
        group: &str,
        shard: ShardId,
        sequence: SequenceNumber,
    ) -> Result<()> {
        self.shard_state(shard)?;
        self.inner
            .checkpoints
            .lock()
            .insert((group.to_owned(), shard), sequence);
        Ok(())
    }

    async fn checkpoint(&self, group: &str, shard: ShardId) -> Result<Option<SequenceNumber>> {
        self.shard_state(shard)?;
        Ok(self
            .inner
            .checkpoints
            .lock()
            .get(&(group.to_owned(), shard))
            .copied())
    }
}
