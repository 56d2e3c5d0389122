//! Power-loss schedules against a local table: concurrent appenders, checkpoints and
//! compaction on a simulated page cache, the power cut at a random step, then a check
//! of what the disk kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use futures::TryStreamExt;
use lakehouse_core::{
    AppendOutcome, Error, ErrorKind, Result, ScanRequest, TableSink, TableSource, TxnId,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::power::PageCache;
use crate::{Location, OptimizeOptions, PartitionField, Table, TableOptions};

/// The shape of one schedule of [`run_power_loss`].
#[derive(Debug, Clone)]
#[must_use]
pub struct PowerLossOptions {
    writers: usize,
    appends: usize,
    rows: usize,
    checkpoint_interval: u64,
    optimize_rounds: usize,
    fsync: bool,
}

impl Default for PowerLossOptions {
    fn default() -> Self {
        PowerLossOptions {
            writers: 3,
            appends: 5,
            rows: 10,
            checkpoint_interval: 3,
            optimize_rounds: 1,
            fsync: true,
        }
    }
}

impl PowerLossOptions {
    /// Three appenders with a transaction id, 5 appends each of 10 rows, a checkpoint
    /// every 3 versions, one compaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appenders (each with its own transaction id and table handle).
    pub fn writers(mut self, n: usize) -> Self {
        self.writers = n.max(1);
        self
    }

    /// Appends per appender.
    pub fn appends(mut self, n: usize) -> Self {
        self.appends = n.max(1);
        self
    }

    /// Rows per append.
    pub fn rows_per_append(mut self, n: usize) -> Self {
        self.rows = n.max(1);
        self
    }

    /// A checkpoint every `n` versions (`0`: none).
    pub fn checkpoint_interval(mut self, n: u64) -> Self {
        self.checkpoint_interval = n;
        self
    }

    /// Compactions (`optimize`) run alongside the appenders.
    pub fn optimize_rounds(mut self, n: usize) -> Self {
        self.optimize_rounds = n;
        self
    }

    /// The store skips its syncs, as a local store that does not `fsync`: the check
    /// must then find losses (a test of the simulation itself).
    pub fn without_fsync(mut self) -> Self {
        self.fsync = false;
        self
    }
}

/// What one power-loss schedule did and what the check found
/// ([`PowerLossReport::is_clean`]).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PowerLossReport {
    /// The seed of the schedule.
    pub seed: u64,
    /// Appends acknowledged before the power failed.
    pub acknowledged_commits: u64,
    /// Acknowledged appends with rows missing after the power loss.
    pub lost_commits: u64,
    /// Rows present more than once (each extra copy counted).
    pub duplicate_rows: u64,
    /// The table did not open after the power loss.
    pub unopenable: bool,
    /// Versions that did not read back after the power loss.
    pub unreadable_versions: u64,
    /// File system steps done before the power failed.
    pub steps: u64,
    /// The power failed during the workload (else right after it).
    pub cut: bool,
    /// Directory entry changes the power loss undid.
    pub entries_undone: u64,
    /// Files the power loss left empty, cut or garbled.
    pub files_damaged: u64,
    /// What went wrong, for the first problems found.
    pub problems: Vec<String>,
}

impl PowerLossReport {
    /// Nothing acknowledged lost, nothing twice, the table opens, every version reads.
    pub fn is_clean(&self) -> bool {
        self.lost_commits == 0
            && self.duplicate_rows == 0
            && !self.unopenable
            && self.unreadable_versions == 0
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 8 {
            self.problems.push(p);
        }
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("writer", DataType::Utf8, false),
    ]))
}

fn rows_of(writer: usize, seq: u64, n: usize) -> Vec<i64> {
    let base = writer as i64 * 1_000_000_000 + seq as i64 * 100_000;
    (0..n as i64).map(|i| base + i).collect()
}

fn batch(writer: usize, seq: u64, n: usize) -> Result<RecordBatch> {
    let name = format!("w{writer}");
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(rows_of(writer, seq, n))),
            Arc::new(StringArray::from(vec![name.as_str(); n])),
        ],
    )
    .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))
}

/// The acknowledged sequences of appender `w`: each append is retried (same id) once.
/// An answer that comes after the power failed is no acknowledgement (the process
/// that would have received it is gone).
async fn writer(t: Table, w: usize, options: PowerLossOptions, cache: Arc<PageCache>) -> Vec<u64> {
    let mut acked = Vec::new();
    for seq in 1..=options.appends as u64 {
        for _ in 0..2 {
            let Ok(b) = batch(w, seq, options.rows) else {
                break;
            };
            let ok = match TableSink::append(&t, vec![b], Some(TxnId::new(format!("w{w}"), seq)))
                .await
            {
                Ok(AppendOutcome::Committed { .. }) => true,
                Ok(AppendOutcome::Duplicate { last_sequence }) => last_sequence >= seq,
                _ => false,
            };
            if cache.is_off() {
                return acked;
            }
            if ok {
                acked.push(seq);
                break;
            }
        }
    }
    acked
}

async fn maintenance(t: Table, rounds: usize) {
    for _ in 0..rounds {
        tokio::task::yield_now().await;
        let _ = t.optimize(OptimizeOptions::new()).await;
        let _ = t.checkpoint().await;
    }
}

async fn ids_of(t: &Table, req: ScanRequest) -> Result<Vec<i64>> {
    let batches: Vec<RecordBatch> = t.scan(req).await?.try_collect().await?;
    let mut ids = Vec::new();
    for b in &batches {
        if let Some(c) = b.column_by_name("id") {
            let c = c.as_primitive::<Int64Type>();
            ids.extend((0..c.len()).filter(|i| c.is_valid(*i)).map(|i| c.value(i)));
        }
    }
    Ok(ids)
}

/// A fresh scratch directory under the system's temporary directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("lakehouse-power-{}", uuid::Uuid::new_v4()));
        for sub in ["table", "aside"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| {
                Error::new(
                    ErrorKind::Io,
                    format!("cannot create a scratch directory: {e}"),
                )
                .with_path(dir.display().to_string())
                .with_source(e)
            })?;
        }
        Ok(Scratch(dir))
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.0.join(sub)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one seeded power-loss schedule on a fresh local table in a temporary
/// directory, all its writes through a simulated page cache (see
/// [`faults`](crate::faults)): appenders with transaction ids (each on its own handle),
/// automatic checkpoints and compaction at once, the power cut at a random file system
/// step (or at the end); then the loss is applied (unsynced directory entries undone,
/// unsynced files emptied, cut or garbled) and a fresh handle checks that the table
/// opens, every version reads, and every acknowledged append is there exactly once.
///
/// Needs a Tokio runtime with the time driver (Unix only). Errors only when the
/// scratch directory or the table cannot be set up.
pub async fn run_power_loss(seed: u64, options: &PowerLossOptions) -> Result<PowerLossReport> {
    let mut rng = StdRng::seed_from_u64(seed);
    let scratch = Scratch::new()?;
    let dir = scratch.path("table");
    // Steps of the workload: about a dozen per append (data file, then commit); some
    // cuts fall after its end.
    let budget = (options.writers * options.appends) as u64 * 16 + 20;
    let cut_after = rng.random_range(1..=budget);
    let cache = Arc::new(PageCache::new(
        u64::MAX,
        options.fsync,
        scratch.path("aside"),
    ));
    let location = Location::local_simulated(&dir, cache.clone())?;
    let mut table_options = TableOptions::new().checkpoint_interval(options.checkpoint_interval);
    if rng.random_bool(0.5) {
        table_options = table_options.partition_by([PartitionField::identity("writer")]);
    }
    let main = Table::create(location.clone(), schema(), table_options).await?;
    let mut handles = Vec::new();
    for _ in 0..options.writers {
        handles.push(Table::open(location.clone()).await?);
    }
    cache.cut_after(cut_after);

    let work = handles
        .into_iter()
        .enumerate()
        .map(|(i, t)| writer(t, i + 1, options.clone(), cache.clone()));
    let (acked, ()) = futures::future::join(
        futures::future::join_all(work),
        maintenance(main, options.optimize_rounds),
    )
    .await;
    let mut report = PowerLossReport {
        seed,
        steps: cache.steps(),
        cut: cache.is_off(),
        ..PowerLossReport::default()
    };
    report.acknowledged_commits = acked.iter().map(|a| a.len() as u64).sum();

    let loss = cache.power_loss(&dir, &mut rng).map_err(|e| {
        Error::new(ErrorKind::Io, format!("cannot apply the power loss: {e}"))
            .with_path(dir.display().to_string())
            .with_source(e)
    })?;
    report.entries_undone = loss.entries_undone;
    report.files_damaged = loss.files_damaged;
    check(&mut report, &dir, &acked, options).await;
    Ok(report)
}

/// The table after the power loss, as a new process sees it.
async fn check(
    report: &mut PowerLossReport,
    dir: &Path,
    acked: &[Vec<u64>],
    options: &PowerLossOptions,
) {
    let opened = match Location::local(dir) {
        Ok(l) => Table::open(l).await,
        Err(e) => Err(e),
    };
    let t = match opened {
        Ok(t) => t,
        Err(e) => {
            report.unopenable = true;
            report.lost_commits = report.acknowledged_commits;
            report.problem(format!("the table does not open: {e}"));
            return;
        }
    };
    let latest = match t.version().await {
        Ok(v) => v,
        Err(e) => {
            report.unopenable = true;
            report.problem(format!("the table has no version: {e}"));
            return;
        }
    };
    for v in 0..=latest {
        if let Err(e) = ids_of(&t, ScanRequest::new().at_version(v)).await {
            report.unreadable_versions += 1;
            report.problem(format!("version {v} does not read: {e}"));
        }
    }
    let ids = match ids_of(&t, ScanRequest::new()).await {
        Ok(ids) => ids,
        Err(e) => {
            report.lost_commits = report.acknowledged_commits;
            report.problem(format!("the latest version does not read: {e}"));
            return;
        }
    };
    let mut count: BTreeMap<i64, u64> = BTreeMap::new();
    for id in ids {
        *count.entry(id).or_default() += 1;
    }
    let dups: u64 = count.values().map(|c| c - 1).sum();
    if dups > 0 {
        report.duplicate_rows += dups;
        report.problem(format!("{dups} rows are there more than once"));
    }
    for (i, seqs) in acked.iter().enumerate() {
        let w = i + 1;
        for seq in seqs {
            let present = rows_of(w, *seq, options.rows)
                .iter()
                .filter(|id| count.contains_key(id))
                .count();
            if present < options.rows {
                report.lost_commits += 1;
                report.problem(format!(
                    "acknowledged append {seq} of writer {w} has {present} of {} rows \
                     (version {latest})",
                    options.rows
                ));
            }
        }
    }
}
