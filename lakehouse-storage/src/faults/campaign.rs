//! Random fault schedules against a table: concurrent appenders (idempotent under a
//! transaction id, and plain), `optimize`, `vacuum` and checkpoints on a
//! [`FaultStore`], then a check of what survived with the faults off.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use futures::TryStreamExt;
use lakehouse_core::{AppendOutcome, Result, ScanRequest, TableSink, TableSource, TxnId};
use object_store::memory::InMemory;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{FaultConfig, FaultStats, FaultStore};
use crate::{Location, OptimizeOptions, PartitionField, Table, TableOptions, VacuumOptions};

/// The shape of one schedule of [`run_schedule`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ScheduleOptions {
    writers: usize,
    appends_per_writer: usize,
    rows_per_append: usize,
    maintenance_rounds: usize,
    retries: usize,
}

impl Default for ScheduleOptions {
    fn default() -> Self {
        ScheduleOptions {
            writers: 3,
            appends_per_writer: 5,
            rows_per_append: 20,
            maintenance_rounds: 4,
            retries: 6,
        }
    }
}

impl ScheduleOptions {
    /// Three appenders with a transaction id and one without, 5 appends each of 20
    /// rows, 4 maintenance operations, up to 6 retries of a failed idempotent append.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appenders with a transaction id (one more appends without).
    pub fn writers(mut self, n: usize) -> Self {
        self.writers = n.max(1);
        self
    }

    /// Appends per appender.
    pub fn appends_per_writer(mut self, n: usize) -> Self {
        self.appends_per_writer = n.max(1);
        self
    }

    /// Rows per append.
    pub fn rows_per_append(mut self, n: usize) -> Self {
        self.rows_per_append = n.max(1);
        self
    }

    /// Optimize, checkpoint and vacuum operations run alongside the appenders.
    pub fn maintenance_rounds(mut self, n: usize) -> Self {
        self.maintenance_rounds = n;
        self
    }

    /// Retries of a failed append with a transaction id (the same id each time).
    pub fn retries(mut self, n: usize) -> Self {
        self.retries = n;
        self
    }
}

/// What one schedule did and what the check found. A schedule is clean when nothing
/// acknowledged was lost, no row is there twice, the table opens and every version
/// reads ([`ScheduleReport::is_clean`]).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ScheduleReport {
    /// The seed of the schedule.
    pub seed: u64,
    /// The faults injected.
    pub injected: FaultStats,
    /// Appends acknowledged (committed, or a duplicate of a committed sequence).
    pub acknowledged_commits: u64,
    /// Appends whose outcome the writer never learned (every attempt failed).
    pub unacknowledged_commits: u64,
    /// Acknowledged appends with rows missing from the latest version.
    pub lost_commits: u64,
    /// Rows present more than once (each extra copy counted).
    pub duplicate_rows: u64,
    /// Appends with only some of their rows present.
    pub torn_commits: u64,
    /// The table did not open without faults.
    pub unopenable: bool,
    /// Versions that could not be read back (time travel) before the final vacuum.
    pub unreadable_versions: u64,
    /// Versions of the table at the end.
    pub versions: u64,
    /// Operations (appends, maintenance) that returned an error.
    pub failed_operations: u64,
    /// What went wrong, for the first problems found.
    pub problems: Vec<String>,
}

impl ScheduleReport {
    /// Nothing lost, duplicated, torn or unreadable.
    pub fn is_clean(&self) -> bool {
        self.lost_commits == 0
            && self.duplicate_rows == 0
            && self.torn_commits == 0
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

/// The rows of append `seq` of `writer`: ids `writer * 10^9 + seq * 10^5 + i`.
fn rows_of(writer: usize, seq: u64, n: usize) -> Vec<i64> {
    let base = writer as i64 * 1_000_000_000 + seq as i64 * 100_000;
    (0..n as i64).map(|i| base + i).collect()
}

fn batch(writer: usize, seq: u64, n: usize) -> Result<RecordBatch> {
    let ids = rows_of(writer, seq, n);
    let name = format!("w{writer}");
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(vec![name.as_str(); n])),
        ],
    )
    .map_err(|e| lakehouse_core::Error::new(lakehouse_core::ErrorKind::Internal, e.to_string()))
}

/// A fault configuration drawn from `rng`: each kind of fault at a rate up to a few
/// percent per operation, latency, and stale listings in half the schedules.
fn draw_config(rng: &mut StdRng) -> FaultConfig {
    let mut c = FaultConfig::new()
        .error_before(rng.random_range(0.0..0.08))
        .error_after(rng.random_range(0.0..0.08))
        .retried_after_apply(rng.random_range(0.0..0.08))
        .read_errors(rng.random_bool(0.5))
        .latency(rng.random_range(0.0..0.3), Duration::from_micros(500))
        .multipart(rng.random_range(0.0..0.1), rng.random_range(0.0..0.1));
    if rng.random_bool(0.5) {
        c = c.stale_listings(rng.random_range(0.0..0.2), rng.random_range(1..4));
    }
    c
}

/// Outcomes of one appender: sequence -> acknowledged.
type Outcomes = BTreeMap<u64, bool>;

async fn txn_writer(t: Table, w: usize, opts: ScheduleOptions) -> (Outcomes, u64) {
    let mut out = Outcomes::new();
    let mut failed = 0;
    for seq in 1..=opts.appends_per_writer as u64 {
        let mut acked = false;
        for _ in 0..=opts.retries {
            let Ok(b) = batch(w, seq, opts.rows_per_append) else {
                break;
            };
            match TableSink::append(&t, vec![b], Some(TxnId::new(format!("w{w}"), seq))).await {
                Ok(AppendOutcome::Committed { .. }) => acked = true,
                Ok(AppendOutcome::Duplicate { last_sequence }) => acked = last_sequence >= seq,
                // A kind of outcome this check does not know: not acknowledged.
                Ok(_) => {}
                Err(_) => failed += 1,
            }
            if acked {
                break;
            }
        }
        out.insert(seq, acked);
    }
    (out, failed)
}

async fn plain_writer(t: Table, w: usize, opts: ScheduleOptions) -> (Outcomes, u64) {
    let mut out = Outcomes::new();
    let mut failed = 0;
    for seq in 1..=opts.appends_per_writer as u64 {
        let acked = match batch(w, seq, opts.rows_per_append) {
            Ok(b) => t.append(vec![b]).await.is_ok(),
            Err(_) => false,
        };
        failed += u64::from(!acked);
        out.insert(seq, acked);
    }
    (out, failed)
}

async fn maintenance(t: Table, rounds: usize, seed: u64) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut failed = 0;
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_micros(rng.random_range(0..2_000))).await;
        let ok = match rng.random_range(0..3) {
            0 => t.optimize(OptimizeOptions::new()).await.is_ok(),
            1 => t.checkpoint().await.is_ok(),
            // Files written within the last minute stay: in-flight appends keep theirs.
            _ => t
                .vacuum(
                    VacuumOptions::new()
                        .retention(Duration::from_secs(60))
                        .allow_short_retention(),
                )
                .await
                .is_ok(),
        };
        failed += u64::from(!ok);
    }
    failed
}

async fn open_with_retries(location: &Location) -> Result<Table> {
    let mut last = None;
    for _ in 0..20 {
        match Table::open(location.clone()).await {
            Ok(t) => return Ok(t),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        lakehouse_core::Error::new(lakehouse_core::ErrorKind::Internal, "no attempt")
    }))
}

async fn all_ids(t: &Table, req: ScanRequest) -> Result<Vec<i64>> {
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

/// Checks the latest version against the writers' outcomes.
fn check_rows(
    report: &mut ScheduleReport,
    ids: &[i64],
    outcomes: &[(usize, Outcomes)],
    rows: usize,
    when: &str,
) {
    let mut count: BTreeMap<i64, u64> = BTreeMap::new();
    for id in ids {
        *count.entry(*id).or_default() += 1;
    }
    let dups: u64 = count.values().map(|c| c - 1).sum();
    if dups > 0 {
        report.problem(format!("{when}: {dups} rows are there more than once"));
    }
    report.duplicate_rows += dups;
    for (w, out) in outcomes {
        for (seq, acked) in out {
            let present = rows_of(*w, *seq, rows)
                .iter()
                .filter(|id| count.contains_key(id))
                .count();
            if *acked && present < rows {
                report.lost_commits += 1;
                report.problem(format!(
                    "{when}: acknowledged append {seq} of writer {w} has {present} of {rows} rows"
                ));
            } else if !*acked && present != 0 && present != rows {
                report.torn_commits += 1;
                report.problem(format!(
                    "{when}: append {seq} of writer {w} has {present} of {rows} rows"
                ));
            }
        }
    }
}

/// Runs one seeded schedule on a fresh in-memory table behind a [`FaultStore`]:
/// appenders with transaction ids (retrying a failed append with the same id), one
/// appender without, and maintenance (optimize, checkpoints, vacuum with a one-minute
/// retention) at once under random faults; then, faults off, checks that the table
/// opens, every version reads, every acknowledged append is there once and no append
/// is there in part; then vacuums with zero retention under the faults (no stale
/// listings) and checks the latest version again.
///
/// Needs a Tokio runtime with the time driver. Errors only when the table cannot even
/// be created without faults.
pub async fn run_schedule(seed: u64, options: &ScheduleOptions) -> Result<ScheduleReport> {
    let mut rng = StdRng::seed_from_u64(seed);
    let config = draw_config(&mut rng);
    let memory: Arc<InMemory> = Arc::new(InMemory::new());
    let faults = FaultStore::new(memory.clone(), rng.random(), config);
    faults.set_enabled(false);
    let location = Location::from_store(Arc::new(faults.clone()), "t", "faults:///t")?;
    let mut table_options = TableOptions::new().checkpoint_interval(rng.random_range(2..6));
    if rng.random_bool(0.5) {
        table_options = table_options.partition_by([PartitionField::identity("writer")]);
    }
    let main = Table::create(location.clone(), schema(), table_options).await?;
    let mut handles = Vec::new();
    for _ in 0..=options.writers {
        handles.push(open_with_retries(&location).await?);
    }
    let mut report = ScheduleReport {
        seed,
        ..ScheduleReport::default()
    };

    faults.set_enabled(true);
    let plain = options.writers + 1;
    let mut work = Vec::new();
    for (w, t) in handles.into_iter().enumerate() {
        let opts = options.clone();
        work.push(if w == options.writers {
            futures::future::Either::Left(plain_writer(t, plain, opts))
        } else {
            futures::future::Either::Right(txn_writer(t, w + 1, opts))
        });
    }
    let (results, maintenance_failed) = futures::future::join(
        futures::future::join_all(work),
        maintenance(main.clone(), options.maintenance_rounds, rng.random()),
    )
    .await;
    faults.set_enabled(false);
    report.failed_operations += maintenance_failed;
    let mut outcomes: Vec<(usize, Outcomes)> = Vec::new();
    for (i, (out, failed)) in results.into_iter().enumerate() {
        let w = if i == options.writers { plain } else { i + 1 };
        report.failed_operations += failed;
        report.acknowledged_commits += out.values().filter(|a| **a).count() as u64;
        report.unacknowledged_commits += out.values().filter(|a| !**a).count() as u64;
        outcomes.push((w, out));
    }

    // The table as a new process sees it, without faults.
    let plain_location = Location::from_store(memory.clone(), "t", "memory:///t")?;
    let fresh = match Table::open(plain_location.clone()).await {
        Ok(t) => t,
        Err(e) => {
            report.unopenable = true;
            report.problem(format!("the table does not open: {e}"));
            report.injected = faults.stats();
            return Ok(report);
        }
    };
    let latest = fresh.version().await?;
    report.versions = latest + 1;
    for v in 0..=latest {
        if let Err(e) = all_ids(&fresh, ScanRequest::new().at_version(v)).await {
            report.unreadable_versions += 1;
            report.problem(format!("version {v} does not read: {e}"));
        }
    }
    match all_ids(&fresh, ScanRequest::new()).await {
        Ok(ids) => check_rows(
            &mut report,
            &ids,
            &outcomes,
            options.rows_per_append,
            "latest",
        ),
        Err(_) => report.lost_commits += report.acknowledged_commits,
    }

    // Vacuum with no retention (nothing in flight), under faults but for stale
    // listings: files of versions the latest replaced go, live ones stay.
    faults.set_stale_listings(false);
    faults.set_enabled(true);
    let vacuum = main
        .vacuum(
            VacuumOptions::new()
                .retention(Duration::ZERO)
                .allow_short_retention(),
        )
        .await;
    faults.set_enabled(false);
    report.failed_operations += u64::from(vacuum.is_err());
    let after = match Table::open(plain_location).await {
        Ok(t) => all_ids(&t, ScanRequest::new()).await,
        Err(e) => Err(e),
    };
    match after {
        Ok(ids) => {
            let mut after_report = ScheduleReport::default();
            check_rows(
                &mut after_report,
                &ids,
                &outcomes,
                options.rows_per_append,
                "after vacuum",
            );
            report.lost_commits = report.lost_commits.max(after_report.lost_commits);
            report.duplicate_rows = report.duplicate_rows.max(after_report.duplicate_rows);
            report.torn_commits = report.torn_commits.max(after_report.torn_commits);
            for p in after_report.problems {
                report.problem(p);
            }
        }
        Err(e) => {
            report.lost_commits = report.acknowledged_commits;
            report.problem(format!(
                "after vacuum the latest version does not read: {e}"
            ));
        }
    }
    report.injected = faults.stats();
    Ok(report)
}
