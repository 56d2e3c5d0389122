//! `lakehouse-bench storage`, the log figures: opening a table with a long log,
//! refreshing a snapshot by one commit, and planning a pruned scan over many files.
//! Everything goes through the public `Table` API, on a local directory.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use lakehouse_core::{TableSource, col};
use lakehouse_storage::{Compression, Location, PartitionField, Table, TableOptions};

use crate::report::{BenchResult, Latencies, Report};

/// Commits between checkpoints of the long-log table.
const CHECKPOINT_INTERVAL: u64 = 100;

fn small_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Int64, false),
    ]))
}

fn one_row(id: i64) -> Result<RecordBatch, arrow::error::ArrowError> {
    RecordBatch::try_new(
        small_schema(),
        vec![
            Arc::new(Int64Array::from(vec![id])),
            Arc::new(Int64Array::from(vec![id * 7])),
        ],
    )
}

/// `lakehouse-bench storage-log`: the log figures alone, without the ingest and peers.
pub(crate) fn run_alone(report: &mut Report) -> BenchResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let work = tempfile::tempdir()?;
    rt.block_on(run(report, work.path()))
}

pub(crate) async fn run(report: &mut Report, work: &Path) -> BenchResult {
    open_and_refresh(report, work).await?;
    plan(report, work).await
}

/// `storage.open_<n>_commits_ms` and `storage.refresh_one_commit_ms`.
async fn open_and_refresh(report: &mut Report, work: &Path) -> BenchResult {
    let commits = report.scale(10_000u64, 1_000);
    let dir = work.join("long_log");
    let writer = Table::create(
        Location::local(&dir)?,
        small_schema(),
        TableOptions::new()
            .compression(Compression::None)
            .checkpoint_interval(CHECKPOINT_INTERVAL),
    )
    .await?;
    let build = Instant::now();
    for i in 0..commits {
        writer.append(vec![one_row(i as i64)?]).await?;
    }
    report.note(&format!(
        "long log: {commits} one-row commits, checkpoint every {CHECKPOINT_INTERVAL}, \
         written in {:.1} s (not a figure)",
        build.elapsed().as_secs_f64()
    ));

    let mut opens = Latencies::with_capacity(5);
    let mut reader = None;
    for _ in 0..5 {
        let start = Instant::now();
        let t = Table::open(Location::local(&dir)?).await?;
        opens.record(start.elapsed());
        if t.version().await? != commits {
            return Err("the reopened table has the wrong version".into());
        }
        reader = Some(t);
    }
    report.metric(
        &format!("storage.open_{commits}_commits_ms"),
        ms(opens.percentile(50.0)),
        "ms",
    );
    let reader = reader.ok_or("no table was opened")?;

    // Another handle commits; the reader's refresh reads that one commit.
    let samples = report.scale(100u64, 20);
    let mut refreshes = Latencies::with_capacity(samples as usize);
    for i in 0..samples {
        writer.append(vec![one_row((commits + i) as i64)?]).await?;
        let start = Instant::now();
        let version = reader.refresh().await?;
        refreshes.record(start.elapsed());
        if version != commits + i + 1 {
            return Err(format!("refresh saw version {version}, not {}", commits + i + 1).into());
        }
    }
    report.metric(
        "storage.refresh_one_commit_ms",
        ms(refreshes.percentile(50.0)),
        "ms",
    );
    report.note(&format!(
        "refresh: median of {samples}, each seeing one new commit of a table with {} files",
        commits + samples
    ));
    Ok(())
}

/// `storage.plan_<n>k_files_ms`: `Table::files` with a partition predicate that keeps 1%.
async fn plan(report: &mut Report, work: &Path) -> BenchResult {
    let files = report.scale(100_000usize, 10_000);
    let per_commit = 1_000usize;
    let parts = 100i64;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("part", DataType::Int64, false),
        Field::new("sub", DataType::Int64, false),
    ]));
    let table = Table::create(
        Location::local(work.join("many_files"))?,
        schema.clone(),
        TableOptions::new()
            .compression(Compression::None)
            .checkpoint_interval(CHECKPOINT_INTERVAL)
            .partition_by([
                PartitionField::identity("part"),
                PartitionField::identity("sub"),
            ]),
    )
    .await?;
    // Each commit adds `per_commit` one-row files, one per (part, sub) pair.
    let build = Instant::now();
    for c in 0..files / per_commit {
        let first = (c * per_commit) as i64;
        let ids: Vec<i64> = (first..first + per_commit as i64).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i % parts))),
                Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i / parts))),
            ],
        )?;
        table.append(vec![batch]).await?;
    }
    report.note(&format!(
        "many files: {files} one-row files in {} commits, partitioned by part ({parts} values) \
         x sub, written in {:.1} s (not a figure)",
        files / per_commit,
        build.elapsed().as_secs_f64()
    ));

    let table = Table::open(Location::local(work.join("many_files"))?).await?;
    let pred = col("part").eq(7i64);
    let rounds = report.scale(10, 5);
    let mut plans = Latencies::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let kept = table.files(None, Some(&pred)).await?;
        plans.record(start.elapsed());
        if kept.len() != files / parts as usize {
            return Err(format!(
                "the plan kept {} files, not {}",
                kept.len(),
                files / parts as usize
            )
            .into());
        }
    }
    report.metric(
        &format!("storage.plan_{}k_files_ms", files / 1000),
        ms(plans.percentile(50.0)),
        "ms",
    );
    report.note(&format!(
        "plan: median of {rounds} Table::files(part = 7) keeping {} of {files} files",
        files / parts as usize
    ));
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
