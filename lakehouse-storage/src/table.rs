//! [`Table`]: create, open, append, scan, time travel and maintenance.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use lakehouse_core::{
    AppendOutcome, BatchStream, Changes, Error, ErrorKind, FileStats, FilterSupport, Predicate,
    Result, ScanRequest, TableSink, TableSource, TableStatistics, TxnId, Version, conform_batch,
};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parking_lot::RwLock;
use serde_json::Value;

use crate::checkpoint;
use crate::location::Location;
use crate::log::{
    Action, Add, FileEntry, Format, LOG_DIR, MetaData, Protocol, Remove, Replay, Snapshot, Txn,
    commit_name, decode_commit, encode_commit, parse_commit_name, schema_to_string, stats_to_json,
};
use crate::partition::{PartitionField, PartitionSpec};
use crate::read::{ScanContext, file_view, object_path, partition_scalars, scan_files};
use crate::write::{Compression, EncodedFile, WriteConfig, encode};

/// Options of a new table; stored in the table so that every writer uses them.
#[derive(Debug, Clone)]
#[must_use]
pub struct TableOptions {
    name: Option<String>,
    partition_by: Vec<PartitionField>,
    compression: Compression,
    target_file_bytes: u64,
    row_group_rows: usize,
    bloom_filter_columns: Vec<String>,
    sort_by: Vec<String>,
    checkpoint_interval: u64,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            name: None,
            partition_by: Vec::new(),
            compression: Compression::default(),
            target_file_bytes: 128 << 20,
            row_group_rows: 128 * 1024,
            bloom_filter_columns: Vec::new(),
            sort_by: Vec::new(),
            checkpoint_interval: 10,
        }
    }
}

impl TableOptions {
    /// Defaults: unpartitioned, zstd level 3, 128 MiB files, 128 Ki-row row groups,
    /// a checkpoint every 10 commits.
    pub fn new() -> Self {
        Self::default()
    }

    /// A human-readable table name (kept in the metadata).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Partition columns, outermost directory first.
    pub fn partition_by(mut self, fields: impl IntoIterator<Item = PartitionField>) -> Self {
        self.partition_by = fields.into_iter().collect();
        self
    }

    /// Compression codec of data files.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Size at which a writer starts a new file.
    pub fn target_file_size(mut self, bytes: u64) -> Self {
        self.target_file_bytes = bytes.max(1);
        self
    }

    /// Rows per Parquet row group (smaller groups make point lookups cheaper).
    pub fn row_group_rows(mut self, rows: usize) -> Self {
        self.row_group_rows = rows.max(1);
        self
    }

    /// Columns that get a bloom filter per row group, for point lookups.
    pub fn bloom_filter_columns<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.bloom_filter_columns = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Sort key within each file (zone maps, as Redshift sort keys).
    pub fn sort_by<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.sort_by = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Commits between checkpoints (0 disables automatic checkpoints).
    pub fn checkpoint_interval(mut self, commits: u64) -> Self {
        self.checkpoint_interval = commits;
        self
    }

    fn to_config(&self, spec: &PartitionSpec) -> BTreeMap<String, String> {
        let mut c = spec.to_config();
        let comp = match self.compression {
            Compression::Zstd(l) => format!("zstd({l})"),
            Compression::Snappy => "snappy".into(),
            Compression::Lz4 => "lz4".into(),
            Compression::None => "none".into(),
        };
        c.insert("lakehouse.compression".into(), comp);
        c.insert(
            "lakehouse.targetFileSize".into(),
            self.target_file_bytes.to_string(),
        );
        c.insert(
            "lakehouse.rowGroupRows".into(),
            self.row_group_rows.to_string(),
        );
        c.insert(
            "lakehouse.bloomFilterColumns".into(),
            self.bloom_filter_columns.join(","),
        );
        c.insert("lakehouse.sortBy".into(), self.sort_by.join(","));
        c.insert(
            "lakehouse.checkpointInterval".into(),
            self.checkpoint_interval.to_string(),
        );
        c.insert(
            "delta.checkpointInterval".into(),
            self.checkpoint_interval.max(1).to_string(),
        );
        c
    }

    fn from_config(c: &BTreeMap<String, String>) -> TableOptions {
        let d = TableOptions::default();
        let list = |k: &str| -> Vec<String> {
            c.get(k)
                .map(|v| {
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let compression = match c.get("lakehouse.compression").map(String::as_str) {
            Some("snappy") => Compression::Snappy,
            Some("lz4") => Compression::Lz4,
            Some("none") => Compression::None,
            Some(z) => z
                .strip_prefix("zstd(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|l| l.parse().ok())
                .map_or(d.compression, Compression::Zstd),
            None => d.compression,
        };
        TableOptions {
            name: None,
            partition_by: Vec::new(),
            compression,
            target_file_bytes: c
                .get("lakehouse.targetFileSize")
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.target_file_bytes),
            row_group_rows: c
                .get("lakehouse.rowGroupRows")
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.row_group_rows),
            bloom_filter_columns: list("lakehouse.bloomFilterColumns"),
            sort_by: list("lakehouse.sortBy"),
            checkpoint_interval: c
                .get("lakehouse.checkpointInterval")
                .or_else(|| c.get("delta.checkpointInterval"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.checkpoint_interval),
        }
    }
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitInfo {
    /// The new version.
    pub version: Version,
    /// Rows added.
    pub rows: u64,
    /// Files added.
    pub files: usize,
    /// Bytes added.
    pub bytes: u64,
    /// Times the commit lost a race to another writer and was retried.
    pub retries: u32,
}

/// One entry of [`Table::history`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// The version.
    pub version: Version,
    /// Commit time, milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The operation (`WRITE`, `OPTIMIZE`, `CREATE TABLE`, ...).
    pub operation: String,
}

/// Options of [`Table::optimize`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct OptimizeOptions {
    target_file_bytes: Option<u64>,
    min_file_bytes: Option<u64>,
    sort_by: Vec<String>,
    predicate: Option<Predicate>,
}

impl OptimizeOptions {
    /// Compact with the table's target file size.
    pub fn new() -> Self {
        Self::default()
    }

    /// Size of the files written.
    pub fn target_file_size(mut self, bytes: u64) -> Self {
        self.target_file_bytes = Some(bytes.max(1));
        self
    }

    /// Files at least this big are left alone (default: half the target).
    pub fn min_file_size(mut self, bytes: u64) -> Self {
        self.min_file_bytes = Some(bytes);
        self
    }

    /// Cluster rows by these columns while rewriting (every small file of a partition
    /// is rewritten sorted, so that zone maps become selective).
    pub fn sort_by<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.sort_by = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Only partitions whose files may match `predicate` (on partition columns).
    pub fn only(mut self, predicate: Predicate) -> Self {
        self.predicate = Some(predicate);
        self
    }
}

/// What [`Table::optimize`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OptimizeMetrics {
    /// The commit, if anything was rewritten.
    pub version: Option<Version>,
    /// Files removed.
    pub files_removed: usize,
    /// Files written.
    pub files_added: usize,
    /// Rows rewritten.
    pub rows: u64,
}

/// Options of [`Table::vacuum`].
#[derive(Debug, Clone)]
#[must_use]
pub struct VacuumOptions {
    retention: Duration,
    enforce_retention: bool,
    dry_run: bool,
}

/// The shortest retention [`Table::vacuum`] accepts unless told otherwise: readers and
/// time travel within this window keep working.
pub const MIN_VACUUM_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for VacuumOptions {
    fn default() -> Self {
        VacuumOptions {
            retention: MIN_VACUUM_RETENTION,
            enforce_retention: true,
            dry_run: false,
        }
    }
}

impl VacuumOptions {
    /// Retain removed and orphan files for 7 days.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long unreferenced files are kept.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Allow a retention shorter than [`MIN_VACUUM_RETENTION`] (a reader or a writer
    /// still using an old version may then fail).
    pub fn allow_short_retention(mut self) -> Self {
        self.enforce_retention = false;
        self
    }

    /// List what would be deleted without deleting it.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }
}

/// What [`Table::vacuum`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VacuumMetrics {
    /// Files deleted (or that would be, in a dry run), relative to the table root.
    pub deleted: Vec<String>,
}

struct Inner {
    location: Location,
    log_dir: Path,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Commits of one handle (and its clones) go one at a time; other handles and
    /// processes race through put-if-absent.
    commit_lock: tokio::sync::Mutex<()>,
    max_retries: u32,
}

/// A partitioned columnar table in the Delta Lake format: Parquet files plus a
/// transaction log, on a local directory, in memory or on S3.
///
/// Cheap to clone; every clone shares the cached snapshot. Several handles, threads
/// and processes may append at once: commits are put-if-absent, and a writer that
/// loses a race re-reads the log, checks for conflicts and retries with backoff.
///
/// Requires a Tokio runtime with the time driver (for commit backoff). Encoding runs
/// on the rayon pool, never on the async workers.
#[derive(Clone)]
pub struct Table {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.inner.snapshot.read();
        f.debug_struct("Table")
            .field("uri", &self.inner.location.uri())
            .field("version", &s.version)
            .field("files", &s.files.len())
            .finish()
    }
}

fn io(e: object_store::Error, path: &Path) -> Error {
    let kind = match e {
        object_store::Error::NotFound { .. } => ErrorKind::Corrupt,
        _ => ErrorKind::Io,
    };
    Error::new(kind, e.to_string()).with_path(path.to_string())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs CPU-bound work on the rayon pool and waits for it without blocking the caller's
/// async worker.
async fn on_rayon<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::Internal, "encoding panicked")));
        let _ = tx.send(out);
    });
    rx.await
        .map_err(|_| Error::new(ErrorKind::Internal, "the encoder stopped"))?
}

impl Table {
    /// Creates a table at `location` with the user columns `schema`.
    ///
    /// Derived partition columns (day of a timestamp, hash buckets) are appended to the
    /// schema. Errors with [`ErrorKind::Conflict`] if a table already exists there,
    /// [`ErrorKind::Unsupported`] for column types the format cannot hold and
    /// [`ErrorKind::InvalidInput`] for a partitioning that does not fit the columns.
    pub async fn create(
        location: Location,
        schema: SchemaRef,
        options: TableOptions,
    ) -> Result<Table> {
        let spec = PartitionSpec {
            fields: options.partition_by.clone(),
        };
        let table_schema = spec.table_schema(&schema)?;
        for c in options.bloom_filter_columns.iter().chain(&options.sort_by) {
            if table_schema.field_with_name(c).is_err() {
                return Err(Error::new(
                    ErrorKind::ColumnNotFound,
                    format!("column {c} is not in the schema"),
                )
                .with_column(c));
            }
        }
        Compression::to_parquet(options.compression)?;
        let protocol = Protocol::for_schema(&table_schema);
        let metadata = MetaData {
            id: uuid::Uuid::new_v4().to_string(),
            name: options.name.clone(),
            description: None,
            format: Format {
                provider: "parquet".into(),
                options: BTreeMap::new(),
            },
            schema_string: schema_to_string(&table_schema)?,
            partition_columns: spec.names(),
            configuration: options.to_config(&spec),
            created_time: Some(now_ms()),
        };
        let actions = vec![
            commit_info("CREATE TABLE", serde_json::json!({"mode": "ErrorIfExists"})),
            Action::Protocol(protocol),
            Action::MetaData(metadata),
        ];
        let log_dir = location.child(LOG_DIR)?;
        let path = log_dir.clone().join(commit_name(0));
        let bytes = encode_commit(&actions)?;
        match location
            .store
            .put_opts(
                &path,
                PutPayload::from(bytes),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("a table already exists at {}", location.uri()),
                )
                .with_table(location.uri()));
            }
            Err(e) => return Err(io(e, &path)),
        }
        let mut replay = Replay::default();
        replay.apply(0, actions)?;
        Ok(Table::from_snapshot(location, log_dir, replay.finish()?))
    }

    /// Opens the table at `location`, replaying its log from the latest checkpoint.
    ///
    /// Errors with [`ErrorKind::InvalidInput`] when there is no table there and
    /// [`ErrorKind::Corrupt`] (naming the file) when the log cannot be read.
    pub async fn open(location: Location) -> Result<Table> {
        let log_dir = location.child(LOG_DIR)?;
        let snapshot = load_snapshot(&location, &log_dir, None).await?;
        Ok(Table::from_snapshot(location, log_dir, snapshot))
    }

    /// Opens the table, or creates it when there is none.
    pub async fn open_or_create(
        location: Location,
        schema: SchemaRef,
        options: TableOptions,
    ) -> Result<Table> {
        match Table::create(location.clone(), schema, options).await {
            Err(e) if e.kind() == ErrorKind::Conflict => Table::open(location).await,
            other => other,
        }
    }

    fn from_snapshot(location: Location, log_dir: Path, snapshot: Snapshot) -> Table {
        Table {
            inner: Arc::new(Inner {
                location,
                log_dir,
                snapshot: RwLock::new(Arc::new(snapshot)),
                commit_lock: tokio::sync::Mutex::new(()),
                max_retries: 10_000,
            }),
        }
    }

    /// Where the table lives.
    pub fn location(&self) -> &Location {
        &self.inner.location
    }

    fn uri(&self) -> &str {
        self.inner.location.uri()
    }

    fn cached(&self) -> Arc<Snapshot> {
        self.inner.snapshot.read().clone()
    }

    fn spec_of(s: &Snapshot) -> Result<PartitionSpec> {
        PartitionSpec::from_config(&s.metadata.partition_columns, &s.metadata.configuration)
    }

    /// The columns appends carry: the table schema without derived partition columns.
    pub fn user_schema(&self) -> SchemaRef {
        let s = self.cached();
        user_schema_of(&s)
    }

    /// The partition columns and how they are derived.
    pub fn partitioning(&self) -> Vec<PartitionField> {
        Self::spec_of(&self.cached())
            .map(|s| s.fields)
            .unwrap_or_default()
    }

    /// Reads commits made since the cached snapshot (by other handles or processes)
    /// and returns the latest version.
    pub async fn refresh(&self) -> Result<Version> {
        Ok(self.refreshed().await?.version)
    }

    async fn refreshed(&self) -> Result<Arc<Snapshot>> {
        let cur = self.cached();
        let mut replay: Option<Replay> = None;
        let mut v = cur.version + 1;
        loop {
            let path = self.inner.log_dir.clone().join(commit_name(v));
            match self.inner.location.store.get(&path).await {
                Ok(r) => {
                    let bytes = r.bytes().await.map_err(|e| io(e, &path))?;
                    let actions = decode_commit(&bytes, path.as_ref())?;
                    replay
                        .get_or_insert_with(|| Replay::from_snapshot(&cur))
                        .apply(v, actions)?;
                    v += 1;
                }
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(io(e, &path)),
            }
        }
        let Some(replay) = replay else { return Ok(cur) };
        let next = Arc::new(replay.finish()?);
        let mut w = self.inner.snapshot.write();
        if w.version < next.version {
            *w = next.clone();
        }
        Ok(w.clone())
    }

    /// The snapshot at `version` (the latest when `None`).
    async fn snapshot(&self, version: Option<Version>) -> Result<Arc<Snapshot>> {
        let latest = self.refreshed().await?;
        match version {
            None => Ok(latest),
            Some(v) if v == latest.version => Ok(latest),
            Some(v) if v > latest.version => Err(Error::new(
                ErrorKind::VersionNotFound,
                format!(
                    "version {v} does not exist; the latest is {}",
                    latest.version
                ),
            )
            .with_version(v)
            .with_table(self.uri())),
            Some(v) => Ok(Arc::new(
                load_snapshot(&self.inner.location, &self.inner.log_dir, Some(v)).await?,
            )),
        }
    }

    /// The latest version committed at or before `timestamp_ms` (time travel by time).
    ///
    /// Errors with [`ErrorKind::VersionNotFound`] when the table did not exist yet.
    pub async fn version_at(&self, timestamp_ms: i64) -> Result<Version> {
        let latest = self.refresh().await?;
        let (mut lo, mut hi) = (0u64, latest);
        if self.commit_time(0).await? > timestamp_ms {
            return Err(Error::new(
                ErrorKind::VersionNotFound,
                format!("the table was created after {timestamp_ms}"),
            )
            .with_table(self.uri()));
        }
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.commit_time(mid).await? <= timestamp_ms {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(lo)
    }

    async fn commit_actions(&self, version: Version) -> Result<Vec<Action>> {
        let path = self.inner.log_dir.clone().join(commit_name(version));
        let r = self
            .inner
            .location
            .store
            .get(&path)
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => Error::new(
                    ErrorKind::VersionNotFound,
                    format!("the log no longer holds version {version}"),
                )
                .with_version(version),
                e => io(e, &path),
            })?;
        let meta_time = r.meta.last_modified.timestamp_millis();
        let bytes = r.bytes().await.map_err(|e| io(e, &path))?;
        let mut actions = decode_commit(&bytes, path.as_ref())?;
        // Make sure a commit time is known even for commits without commitInfo.
        if !actions.iter().any(|a| matches!(a, Action::CommitInfo(_))) {
            actions.push(Action::CommitInfo(
                serde_json::json!({"timestamp": meta_time}),
            ));
        }
        Ok(actions)
    }

    async fn commit_time(&self, version: Version) -> Result<i64> {
        let actions = self.commit_actions(version).await?;
        Ok(actions
            .iter()
            .find_map(|a| match a {
                Action::CommitInfo(v) => v.get("timestamp").and_then(Value::as_i64),
                _ => None,
            })
            .unwrap_or_default())
    }

    /// The most recent commits, newest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>> {
        let latest = self.refresh().await?;
        let mut out = Vec::new();
        let mut v = latest;
        while out.len() < limit {
            let actions = match self.commit_actions(v).await {
                Ok(a) => a,
                Err(e) if e.kind() == ErrorKind::VersionNotFound => break,
                Err(e) => return Err(e),
            };
            let info = actions.iter().find_map(|a| match a {
                Action::CommitInfo(v) => Some(v.clone()),
                _ => None,
            });
            let info = info.unwrap_or_default();
            out.push(HistoryEntry {
                version: v,
                timestamp_ms: info
                    .get("timestamp")
                    .and_then(Value::as_i64)
                    .unwrap_or_default(),
                operation: info
                    .get("operation")
                    .and_then(Value::as_str)
                    .unwrap_or("UNKNOWN")
                    .to_owned(),
            });
            if v == 0 {
                break;
            }
            v -= 1;
        }
        Ok(out)
    }

    /// Appends `batches` as one commit.
    ///
    /// Errors with [`ErrorKind::SchemaMismatch`] (naming the columns) before anything
    /// is written when a batch does not fit the table.
    pub async fn append(&self, batches: Vec<RecordBatch>) -> Result<CommitInfo> {
        match self.append_inner(batches, None).await? {
            (Some(info), _) => Ok(info),
            (None, _) => Err(Error::new(
                ErrorKind::Internal,
                "an append without a transaction id was a duplicate",
            )),
        }
    }

    async fn append_inner(
        &self,
        batches: Vec<RecordBatch>,
        txn: Option<TxnId>,
    ) -> Result<(Option<CommitInfo>, Option<u64>)> {
        let snap = self.refreshed().await?;
        if let Some(t) = &txn
            && let Some(last) = snap.txns.get(&t.app_id)
            && *last >= t.sequence as i64
        {
            return Ok((None, Some(*last as u64)));
        }
        let user = user_schema_of(&snap);
        let conformed = batches
            .iter()
            .map(|b| conform_batch(&user, b).map_err(|e| e.with_table(self.uri())))
            .collect::<Result<Vec<_>>>()?;
        let rows: u64 = conformed.iter().map(|b| b.num_rows() as u64).sum();
        let spec = Self::spec_of(&snap)?;
        let opts = TableOptions::from_config(&snap.metadata.configuration);
        let cfg = WriteConfig {
            compression: opts.compression,
            target_file_bytes: opts.target_file_bytes,
            row_group_rows: opts.row_group_rows,
            bloom_filter_columns: opts.bloom_filter_columns.clone(),
            sort_by: opts.sort_by.clone(),
        };
        let table_schema = snap.schema.clone();
        let user2 = user.clone();
        let files =
            on_rayon(move || encode(&conformed, &user2, &table_schema, &spec, &cfg)).await?;
        let adds = self.upload(files, true).await?;
        let nfiles = adds.len();
        let bytes: u64 = adds.iter().map(|a| a.size as u64).sum();
        let written: Vec<String> = adds.iter().map(|a| a.path.clone()).collect();
        let schema_at_write = snap.schema.clone();
        let txn2 = txn.clone();
        let result = self
            .commit(
                "WRITE",
                serde_json::json!({"mode": "Append"}),
                move |latest: &Snapshot| {
                    if let Some(t) = &txn2
                        && let Some(last) = latest.txns.get(&t.app_id)
                        && *last >= t.sequence as i64
                    {
                        return Ok(None);
                    }
                    if !extends(&latest.schema, &schema_at_write) {
                        return Err(Error::new(
                            ErrorKind::Conflict,
                            "the table schema changed incompatibly while appending",
                        ));
                    }
                    let mut actions: Vec<Action> = adds.iter().cloned().map(Action::Add).collect();
                    if let Some(t) = &txn2 {
                        actions.push(Action::Txn(Txn {
                            app_id: t.app_id.clone(),
                            version: t.sequence as i64,
                            last_updated: Some(now_ms()),
                        }));
                    }
                    Ok(Some(actions))
                },
            )
            .await;
        match result {
            Ok(Some((version, retries))) => Ok((
                Some(CommitInfo {
                    version,
                    rows,
                    files: nfiles,
                    bytes,
                    retries,
                }),
                None,
            )),
            Ok(None) => {
                self.delete_quietly(&written).await;
                let last = txn
                    .and_then(|t| self.cached().txns.get(&t.app_id).copied())
                    .unwrap_or_default();
                Ok((None, Some(last as u64)))
            }
            Err(e) => {
                self.delete_quietly(&written).await;
                Err(e)
            }
        }
    }

    async fn delete_quietly(&self, rel_uris: &[String]) {
        for uri in rel_uris {
            if let Ok(p) = object_path(&self.inner.location.root, uri) {
                let _ = self.inner.location.store.delete(&p).await;
            }
        }
    }

    /// Uploads encoded files (several at a time) and returns their `add` actions.
    async fn upload(&self, files: Vec<EncodedFile>, data_change: bool) -> Result<Vec<Add>> {
        let store = self.inner.location.store.clone();
        let location = self.inner.location.clone();
        stream::iter(files)
            .map(|f| {
                let store = store.clone();
                let location = location.clone();
                async move {
                    let path = location.child(&f.path)?;
                    let size = f.bytes.len() as i64;
                    store
                        .put(&path, PutPayload::from(f.bytes))
                        .await
                        .map_err(|e| io(e, &path))?;
                    Ok(Add {
                        path: crate::partition::uri_encode(&f.path),
                        partition_values: f.partition_values,
                        size,
                        modification_time: now_ms(),
                        data_change,
                        stats: Some(stats_to_json(f.rows, &f.stats)),
                    })
                }
            })
            .buffer_unordered(8)
            .try_collect()
            .await
    }

    /// The optimistic commit loop: `build` sees the latest snapshot and returns the
    /// actions (or `None` to skip); the commit is a put-if-absent of the next version.
    async fn commit<F>(
        &self,
        operation: &str,
        params: Value,
        build: F,
    ) -> Result<Option<(Version, u32)>>
    where
        F: Fn(&Snapshot) -> Result<Option<Vec<Action>>>,
    {
        let _turn = self.inner.commit_lock.lock().await;
        let mut retries = 0u32;
        let mut snap = self.cached();
        loop {
            let Some(mut actions) = build(&snap)? else {
                return Ok(None);
            };
            actions.insert(0, commit_info(operation, params.clone()));
            let version = snap.version + 1;
            let path = self.inner.log_dir.clone().join(commit_name(version));
            let bytes = encode_commit(&actions)?;
            match self
                .inner
                .location
                .store
                .put_opts(
                    &path,
                    PutPayload::from(bytes),
                    PutOptions::from(PutMode::Create),
                )
                .await
            {
                Ok(_) => {
                    let mut replay = Replay::from_snapshot(&snap);
                    replay.apply(version, actions)?;
                    let next = Arc::new(replay.finish()?);
                    {
                        let mut w = self.inner.snapshot.write();
                        if w.version < next.version {
                            *w = next.clone();
                        }
                    }
                    self.maybe_checkpoint(&next).await;
                    return Ok(Some((version, retries)));
                }
                Err(object_store::Error::AlreadyExists { .. }) => {
                    retries += 1;
                    if retries > self.inner.max_retries {
                        return Err(Error::new(
                            ErrorKind::Conflict,
                            format!("gave up after {retries} lost commit races"),
                        )
                        .with_table(self.uri()));
                    }
                    let exp = retries.min(8);
                    let base = 1u64 << exp; // 2..256 us units of 50us
                    let jitter: u64 = rand::random_range(0..=base);
                    tokio::time::sleep(Duration::from_micros(50 * (base + jitter))).await;
                    snap = self.refreshed().await?;
                }
                Err(e) => return Err(io(e, &path)),
            }
        }
    }

    async fn maybe_checkpoint(&self, snap: &Snapshot) {
        let interval = TableOptions::from_config(&snap.metadata.configuration).checkpoint_interval;
        if interval > 0 && snap.version > 0 && snap.version.is_multiple_of(interval) {
            // Best effort: a failed checkpoint only makes the next open slower.
            let _ = checkpoint::write(&self.inner.location, &self.inner.log_dir, snap).await;
        }
    }

    /// Writes a checkpoint of the latest version now.
    pub async fn checkpoint(&self) -> Result<Version> {
        let snap = self.refreshed().await?;
        checkpoint::write(&self.inner.location, &self.inner.log_dir, &snap).await?;
        Ok(snap.version)
    }

    /// Adds nullable columns at the end of the schema (older files read them as nulls).
    ///
    /// Errors with [`ErrorKind::SchemaMismatch`] for a non-nullable column or a name
    /// already in use, and [`ErrorKind::Unsupported`] for a type the format cannot hold.
    pub async fn add_columns(&self, fields: Vec<Field>) -> Result<Version> {
        let snap = self.refreshed().await?;
        let mut all: Vec<Field> = snap
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        all.extend(fields);
        self.evolve_schema(Arc::new(Schema::new(all))).await
    }

    /// Replaces the schema with `schema`, which must keep every column (same name,
    /// type and order) and may only add nullable columns at the end.
    pub async fn evolve_schema(&self, schema: SchemaRef) -> Result<Version> {
        let snap = self.refreshed().await?;
        check_evolution(&snap.schema, &schema)?;
        let schema_string = schema_to_string(&schema)?;
        let protocol = Protocol::for_schema(&schema);
        let r = self
            .commit("ADD COLUMNS", Value::Null, move |latest| {
                check_evolution(&latest.schema, &schema)?;
                let mut meta = latest.metadata.clone();
                meta.schema_string = schema_string.clone();
                let mut actions = vec![Action::MetaData(meta)];
                if protocol.min_reader_version > latest.protocol.min_reader_version {
                    actions.push(Action::Protocol(protocol.clone()));
                }
                Ok(Some(actions))
            })
            .await?;
        Ok(r.map(|(v, _)| v).unwrap_or(snap.version))
    }

    /// Compacts small files: per partition, files below the minimum size are rewritten
    /// into files of the target size (optionally clustered by a sort key). The rewrite
    /// keeps every row, so incremental readers skip it. Errors with
    /// [`ErrorKind::Conflict`] if another writer removed one of the files meanwhile.
    pub async fn optimize(&self, options: OptimizeOptions) -> Result<OptimizeMetrics> {
        let snap = self.refreshed().await?;
        let spec = Self::spec_of(&snap)?;
        let opts = TableOptions::from_config(&snap.metadata.configuration);
        let target = options.target_file_bytes.unwrap_or(opts.target_file_bytes);
        let min = options.min_file_bytes.unwrap_or(target / 2);
        let mut groups: BTreeMap<PartitionKey, Vec<Arc<FileEntry>>> = BTreeMap::new();
        for path in snap.order.iter() {
            let Some(f) = snap.files.get(path) else {
                continue;
            };
            if (f.add.size as u64) >= min && options.sort_by.is_empty() {
                continue;
            }
            if let Some(p) = &options.predicate
                && !p.can_match(&file_view(f, &snap.schema, &spec)?)
            {
                continue;
            }
            let key = f.add.partition_values.clone().into_iter().collect();
            groups.entry(key).or_default().push(f.clone());
        }
        groups.retain(|_, files| files.len() > 1 || !options.sort_by.is_empty());
        if groups.is_empty() {
            return Ok(OptimizeMetrics::default());
        }
        let mut removed: Vec<Arc<FileEntry>> = Vec::new();
        let mut added: Vec<Add> = Vec::new();
        let mut rows = 0u64;
        let cfg = WriteConfig {
            compression: opts.compression,
            target_file_bytes: target,
            row_group_rows: opts.row_group_rows,
            bloom_filter_columns: opts.bloom_filter_columns.clone(),
            sort_by: if options.sort_by.is_empty() {
                opts.sort_by.clone()
            } else {
                options.sort_by.clone()
            },
        };
        let user = user_schema_of(&snap);
        for files in groups.into_values() {
            // Read the group back with all user columns (partition columns included).
            let ctx = Arc::new(ScanContext {
                store: self.inner.location.store.clone(),
                root: self.inner.location.root.clone(),
                table_schema: snap.schema.clone(),
                spec: spec.clone(),
                output: user.clone(),
                predicate: None,
                batch_size: 64 * 1024,
            });
            let batches: Vec<RecordBatch> =
                scan_files(ctx, files.clone(), None).try_collect().await?;
            rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            let (user2, schema2, spec2, cfg2) =
                (user.clone(), snap.schema.clone(), spec.clone(), cfg.clone());
            let encoded =
                on_rayon(move || encode(&batches, &user2, &schema2, &spec2, &cfg2)).await?;
            added.extend(self.upload(encoded, false).await?);
            removed.extend(files);
        }
        let written: Vec<String> = added.iter().map(|a| a.path.clone()).collect();
        let (nr, na) = (removed.len(), added.len());
        let ts = now_ms();
        let r = self
            .commit(
                "OPTIMIZE",
                serde_json::json!({"targetSize": target}),
                move |latest| {
                    if let Some(gone) = removed
                        .iter()
                        .find(|f| !latest.files.contains_key(&f.add.path))
                    {
                        return Err(Error::new(
                            ErrorKind::Conflict,
                            format!("file {} was removed by a concurrent commit", gone.add.path),
                        )
                        .with_path(gone.add.path.clone()));
                    }
                    let mut actions: Vec<Action> = removed
                        .iter()
                        .map(|f| {
                            Action::Remove(Remove {
                                path: f.add.path.clone(),
                                deletion_timestamp: Some(ts),
                                data_change: false,
                                extended_file_metadata: Some(true),
                                partition_values: Some(f.add.partition_values.clone()),
                                size: Some(f.add.size),
                            })
                        })
                        .collect();
                    actions.extend(added.iter().cloned().map(Action::Add));
                    Ok(Some(actions))
                },
            )
            .await;
        match r {
            Ok(r) => Ok(OptimizeMetrics {
                version: r.map(|(v, _)| v),
                files_removed: nr,
                files_added: na,
                rows,
            }),
            Err(e) => {
                self.delete_quietly(&written).await;
                Err(e)
            }
        }
    }

    /// Deletes files no version within the retention needs: files removed from the
    /// table longer ago than the retention, and orphans (left by writers that failed
    /// before committing) older than the retention.
    ///
    /// Errors with [`ErrorKind::InvalidInput`] for a retention under
    /// [`MIN_VACUUM_RETENTION`] unless [`VacuumOptions::allow_short_retention`] is set.
    pub async fn vacuum(&self, options: VacuumOptions) -> Result<VacuumMetrics> {
        if options.enforce_retention && options.retention < MIN_VACUUM_RETENTION {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "retention {:?} is below the {:?} guard; readers of older versions could \
                     fail (allow_short_retention() overrides)",
                    options.retention, MIN_VACUUM_RETENTION
                ),
            )
            .with_table(self.uri()));
        }
        let snap = self.refreshed().await?;
        let cutoff = now_ms() - i64::try_from(options.retention.as_millis()).unwrap_or(i64::MAX);
        let live: HashSet<String> = snap
            .files
            .keys()
            .filter_map(|u| crate::partition::uri_decode(u).ok())
            .collect();
        let tomb: std::collections::HashMap<String, i64> = snap
            .tombstones
            .iter()
            .filter_map(|(u, t)| crate::partition::uri_decode(u).ok().map(|p| (p, *t)))
            .collect();
        let root = self.inner.location.root.clone();
        let prefix_len = if root.as_ref().is_empty() {
            0
        } else {
            root.as_ref().len() + 1
        };
        let mut listing = self.inner.location.store.list(Some(&root));
        let mut deleted = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| io(e, &root))?;
            let full = meta.location.as_ref();
            let rel = full.get(prefix_len..).unwrap_or_default();
            if rel.starts_with(LOG_DIR) || rel.starts_with('_') || live.contains(rel) {
                continue;
            }
            let when = tomb
                .get(rel)
                .copied()
                .unwrap_or(meta.last_modified.timestamp_millis());
            if when > cutoff {
                continue;
            }
            if !options.dry_run {
                match self.inner.location.store.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(io(e, &meta.location)),
                }
            }
            deleted.push(rel.to_owned());
        }
        deleted.sort();
        Ok(VacuumMetrics { deleted })
    }

    async fn scan_inner(&self, request: ScanRequest) -> Result<BatchStream> {
        let snap = self.snapshot(request.version).await?;
        let schema = snap.schema.clone();
        let output = match &request.projection {
            None => schema.clone(),
            Some(cols) => {
                let fields = cols
                    .iter()
                    .map(|c| {
                        schema.field_with_name(c).cloned().map_err(|_| {
                            Error::new(
                                ErrorKind::ColumnNotFound,
                                format!("column {c} is not in the table"),
                            )
                            .with_column(c)
                            .with_table(self.uri())
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Arc::new(Schema::new(fields))
            }
        };
        if let Some(p) = &request.predicate {
            p.validate(&schema).map_err(|e| e.with_table(self.uri()))?;
        }
        let spec = Self::spec_of(&snap)?;
        let prune = request.predicate.as_ref().map(|p| match spec.implied(p) {
            Some(extra) => p.clone().and(extra),
            None => p.clone(),
        });
        let mut files = Vec::with_capacity(snap.files.len());
        for path in snap.order.iter() {
            let Some(f) = snap.files.get(path) else {
                continue;
            };
            if let Some(p) = &prune
                && !p.can_match(&file_view(f, &schema, &spec)?)
            {
                continue;
            }
            files.push(f.clone());
        }
        if request.limit == Some(0) {
            files.clear();
        }
        let ctx = Arc::new(ScanContext {
            store: self.inner.location.store.clone(),
            root: self.inner.location.root.clone(),
            table_schema: schema,
            spec,
            output,
            predicate: request.predicate,
            batch_size: 8192,
        });
        Ok(scan_files(ctx, files, request.limit))
    }

    /// The files of a version after pruning by `predicate` (what a scan would read).
    pub async fn files(
        &self,
        version: Option<Version>,
        predicate: Option<&Predicate>,
    ) -> Result<Vec<FileStats>> {
        let stats = self.statistics(version).await?;
        let Some(p) = predicate else {
            return Ok(stats.files);
        };
        let snap = self.snapshot(version).await?;
        let spec = Self::spec_of(&snap)?;
        let p = match spec.implied(p) {
            Some(extra) => p.clone().and(extra),
            None => p.clone(),
        };
        Ok(stats.files.into_iter().filter(|f| p.can_match(f)).collect())
    }
}

/// The partition values of a file, as a grouping key.
type PartitionKey = Vec<(String, Option<String>)>;

/// Whether `new` keeps every column of `old` (name, type, position) and only adds
/// nullable columns.
fn extends(new: &Schema, old: &Schema) -> bool {
    check_evolution(old, new).is_ok()
}

fn check_evolution(old: &Schema, new: &Schema) -> Result<()> {
    let mut problems = Vec::new();
    for (i, f) in old.fields().iter().enumerate() {
        match new.fields().get(i) {
            Some(n) if n.name() == f.name() && n.data_type() == f.data_type() => {
                if n.is_nullable() != f.is_nullable() {
                    problems.push(format!("column {} changes nullability", f.name()));
                }
            }
            Some(n) if n.name() == f.name() => problems.push(format!(
                "column {} changes type from {} to {}",
                f.name(),
                f.data_type(),
                n.data_type()
            )),
            _ => problems.push(format!("column {} is dropped, renamed or moved", f.name())),
        }
    }
    for f in new.fields().iter().skip(old.fields().len()) {
        if !f.is_nullable() {
            problems.push(format!("new column {} must be nullable", f.name()));
        }
        if old.field_with_name(f.name()).is_ok() {
            problems.push(format!("column {} already exists", f.name()));
        }
    }
    if problems.is_empty() {
        crate::log::check_schema(new)
    } else {
        Err(Error::new(ErrorKind::SchemaMismatch, problems.join("; ")))
    }
}

fn user_schema_of(s: &Snapshot) -> SchemaRef {
    let Ok(spec) = Table::spec_of(s) else {
        return s.schema.clone();
    };
    Arc::new(Schema::new(
        s.schema
            .fields()
            .iter()
            .filter(|f| !spec.is_derived(f.name()))
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>(),
    ))
}

fn commit_info(operation: &str, params: Value) -> Action {
    Action::CommitInfo(serde_json::json!({
        "timestamp": now_ms(),
        "operation": operation,
        "operationParameters": params,
        "engineInfo": concat!("lakehouse-storage/", env!("CARGO_PKG_VERSION")),
    }))
}

/// Loads the snapshot at `version` (the latest when `None`): from the newest usable
/// checkpoint, then the commits after it.
async fn load_snapshot(
    location: &Location,
    log_dir: &Path,
    version: Option<Version>,
) -> Result<Snapshot> {
    let store: &Arc<dyn ObjectStore> = &location.store;
    let mut start: Option<Snapshot> = None;
    let checkpoint_hint = checkpoint::last(location, log_dir).await?;
    match (checkpoint_hint, version) {
        (Some(cp), None) => start = Some(checkpoint::read(location, log_dir, cp).await?),
        (Some(cp), Some(v)) if cp <= v => {
            start = Some(checkpoint::read(location, log_dir, cp).await?)
        }
        _ => {}
    }
    if start.is_none() && version.is_some() {
        // Time travel to before the last checkpoint: find an older one.
        if let Some(cp) =
            checkpoint::find_at_or_before(location, log_dir, version.unwrap_or(0)).await?
        {
            start = Some(checkpoint::read(location, log_dir, cp).await?);
        }
    }
    let from = start.as_ref().map_or(0, |s| s.version + 1);
    let mut replay = match &start {
        Some(s) => Replay::from_snapshot(s),
        None => Replay::default(),
    };
    // List the commits after the starting point.
    let mut versions: Vec<Version> = Vec::new();
    let offset = log_dir.clone().join(commit_name(from).replace(".json", ""));
    let mut listing = store.list_with_offset(Some(log_dir), &offset);
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| io(e, log_dir))?;
        if let Some(v) = meta.location.filename().and_then(parse_commit_name)
            && v >= from
            && version.is_none_or(|max| v <= max)
        {
            versions.push(v);
        }
    }
    // An offset listing may include the offset itself on some stores; keep order.
    versions.sort_unstable();
    versions.dedup();
    if start.is_none() && versions.first() != Some(&0) {
        return Err(match versions.first() {
            None if version.is_none() => Error::new(
                ErrorKind::InvalidInput,
                format!("no table at {}", location.uri()),
            )
            .with_table(location.uri()),
            _ => Error::new(
                ErrorKind::VersionNotFound,
                "the log no longer holds the versions needed (no checkpoint covers them)",
            )
            .with_table(location.uri()),
        });
    }
    for (i, v) in versions.iter().enumerate() {
        if *v != from + i as u64 {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("the log skips from version {} to {v}", from + i as u64 - 1),
            )
            .with_table(location.uri()));
        }
    }
    let fetched: Vec<(Version, Bytes, Path)> = stream::iter(versions.clone())
        .map(|v| {
            let store = store.clone();
            let path = log_dir.clone().join(commit_name(v));
            async move {
                let r = store.get(&path).await.map_err(|e| io(e, &path))?;
                let b = r.bytes().await.map_err(|e| io(e, &path))?;
                Ok::<_, Error>((v, b, path))
            }
        })
        .buffered(16)
        .try_collect()
        .await?;
    for (v, bytes, path) in fetched {
        replay.apply(v, decode_commit(&bytes, path.as_ref())?)?;
    }
    if let Some(v) = version
        && versions
            .last()
            .copied()
            .or(start.as_ref().map(|s| s.version))
            != Some(v)
    {
        return Err(Error::new(
            ErrorKind::VersionNotFound,
            format!("version {v} does not exist"),
        )
        .with_version(v)
        .with_table(location.uri()));
    }
    replay.finish().map_err(|e| e.with_table(location.uri()))
}

#[async_trait]
impl TableSource for Table {
    fn schema(&self) -> SchemaRef {
        self.cached().schema.clone()
    }

    async fn version(&self) -> Result<Version> {
        self.refresh().await
    }

    fn partition_columns(&self) -> Vec<String> {
        self.cached().metadata.partition_columns.clone()
    }

    fn filter_support(&self, _predicate: &Predicate) -> FilterSupport {
        FilterSupport::Exact
    }

    async fn scan(&self, request: ScanRequest) -> Result<BatchStream> {
        self.scan_inner(request).await
    }

    async fn statistics(&self, version: Option<Version>) -> Result<TableStatistics> {
        let snap = self.snapshot(version).await?;
        let spec = Self::spec_of(&snap)?;
        let mut files = Vec::with_capacity(snap.files.len());
        for path in snap.order.iter() {
            let Some(f) = snap.files.get(path) else {
                continue;
            };
            let partition_values = partition_scalars(f, &snap.schema, &spec)?;
            let rows = f.stats.num_rows.unwrap_or(0);
            let mut columns = f.stats.columns.clone();
            for (k, v) in &partition_values {
                columns.insert(
                    k.clone(),
                    lakehouse_core::ColumnStats::constant(v.clone(), rows),
                );
            }
            files.push(FileStats {
                path: f.add.path.clone(),
                partition_values,
                num_rows: rows,
                size_bytes: f.add.size as u64,
                columns,
            });
        }
        Ok(TableStatistics {
            version: snap.version,
            files,
        })
    }

    async fn changes_since(&self, version: Version) -> Result<Changes> {
        let latest = self.refreshed().await?;
        if version > latest.version {
            return Err(Error::new(
                ErrorKind::VersionNotFound,
                format!(
                    "version {version} does not exist; the latest is {}",
                    latest.version
                ),
            )
            .with_version(version)
            .with_table(self.uri()));
        }
        let mut added: Vec<Arc<FileEntry>> = Vec::new();
        for v in version + 1..=latest.version {
            for a in self.commit_actions(v).await? {
                match a {
                    Action::Add(add) if add.data_change => {
                        let stats = crate::log::parse_stats(add.stats.as_deref(), &latest.schema);
                        added.push(Arc::new(FileEntry { add, stats }));
                    }
                    Action::Remove(r) if r.data_change => {
                        return Err(Error::new(
                            ErrorKind::NonAppendChange,
                            format!("version {v} removed rows (file {})", r.path),
                        )
                        .with_version(v)
                        .with_table(self.uri()));
                    }
                    _ => {}
                }
            }
        }
        let ctx = Arc::new(ScanContext {
            store: self.inner.location.store.clone(),
            root: self.inner.location.root.clone(),
            table_schema: latest.schema.clone(),
            spec: Self::spec_of(&latest)?,
            output: latest.schema.clone(),
            predicate: None,
            batch_size: 8192,
        });
        Ok(Changes {
            from_version: version,
            to_version: latest.version,
            batches: scan_files(ctx, added, None),
        })
    }
}

#[async_trait]
impl TableSink for Table {
    fn sink_schema(&self) -> SchemaRef {
        self.user_schema()
    }

    async fn append(&self, batches: Vec<RecordBatch>, txn: Option<TxnId>) -> Result<AppendOutcome> {
        match self.append_inner(batches, txn).await? {
            (Some(info), _) => Ok(AppendOutcome::Committed {
                version: info.version,
                rows: info.rows,
            }),
            (None, last) => Ok(AppendOutcome::Duplicate {
                last_sequence: last.unwrap_or_default(),
            }),
        }
    }

    async fn last_sequence(&self, app_id: &str) -> Result<Option<u64>> {
        let snap = self.refreshed().await?;
        Ok(snap.txns.get(app_id).map(|v| *v as u64))
    }
}
