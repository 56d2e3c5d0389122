//! `lakehouse-bench storage`: partitioned ingest against DuckDB, pyarrow and delta-rs
//! writing the same rows, partition pruning, point lookups, and the log figures of
//! `storage_log` (opening a long log, refreshing, planning over many files).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::TryStreamExt;
use lakehouse_core::{ScanRequest, TableSource, col};
use lakehouse_storage::{Location, PartitionField, Table, TableOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::report::{BenchResult, Latencies, Report, run_peer};

/// The 10-column retail event table.
fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("user_id", DataType::Int64, false),
        Field::new("item_id", DataType::Int64, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("region", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("price", DataType::Float64, false),
        Field::new("quantity", DataType::Int32, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("session", DataType::Utf8, false),
    ]))
}

const CATEGORIES: [&str; 10] = [
    "toys", "books", "garden", "kitchen", "sports", "beauty", "music", "games", "tools", "pets",
];
const REGIONS: [&str; 5] = ["eu", "us", "apac", "latam", "mea"];
const CHANNELS: [&str; 3] = ["web", "app", "store"];

fn batch(first: i64, n: usize, rng: &mut StdRng) -> RecordBatch {
    let ids: Vec<i64> = (first..first + n as i64).collect();
    let t0 = 1_795_564_800_000_000i64;
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Int64Array::from_iter_values(
                (0..n).map(|_| rng.random_range(0..1_000_000)),
            )),
            Arc::new(Int64Array::from_iter_values(
                (0..n).map(|_| rng.random_range(0..100_000)),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|_| CATEGORIES[rng.random_range(0..CATEGORIES.len())]),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|_| REGIONS[rng.random_range(0..REGIONS.len())]),
            )),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                ids.iter().map(|i| t0 + i * 1000),
            )),
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|_| f64::from(rng.random_range(100..50_000)) / 100.0),
            )),
            Arc::new(Int32Array::from_iter_values(
                (0..n).map(|_| rng.random_range(1..5)),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|_| CHANNELS[rng.random_range(0..CHANNELS.len())]),
            )),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|_| format!("s{:08x}", rng.random::<u32>())),
            )),
        ],
    )
    .expect("columns match the schema")
}

fn bytes_of(files: &[lakehouse_core::FileStats]) -> u64 {
    files.iter().map(|f| f.size_bytes).sum()
}

pub(crate) fn run(report: &mut Report) -> BenchResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(report))
}

async fn run_async(report: &mut Report) -> BenchResult {
    report.machine();
    let rows = report.scale(4_000_000usize, 400_000);
    let per_batch = 250_000usize.min(rows);
    let mut rng = StdRng::seed_from_u64(7);
    let batches: Vec<RecordBatch> = (0..rows / per_batch)
        .map(|b| batch((b * per_batch) as i64, per_batch, &mut rng))
        .collect();
    let work = tempfile::tempdir()?;

    // --- Partitioned ingest: 50 partitions (category x region), zstd.
    let dir = work.path().join("events");
    let table = Table::create(
        Location::local(&dir)?,
        schema(),
        TableOptions::new().partition_by([
            PartitionField::identity("category"),
            PartitionField::identity("region"),
        ]),
    )
    .await?;
    let start = Instant::now();
    for chunk in batches.chunks(4) {
        table.append(chunk.to_vec()).await?;
    }
    let ours = start.elapsed();
    let rps = rows as f64 / ours.as_secs_f64();
    report.metric("storage.ingest_rows_per_s", rps, "rows/s");
    report.note(&format!(
        "ingest: {rows} rows, 10 columns, 50 partitions, zstd(3), commits of 1 M rows: {:.2} s",
        ours.as_secs_f64()
    ));

    // The same rows for the peers, as Arrow IPC.
    let ipc = work.path().join("events.arrow");
    {
        let file = std::fs::File::create(&ipc)?;
        let mut w = arrow::ipc::writer::FileWriter::try_new(file, &schema())?;
        for b in &batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    let peer_dir = work.path().join("peers");
    if let Some(peer) = run_peer(
        report,
        "storage_peers.py",
        &[
            ipc.to_str().unwrap_or_default(),
            peer_dir.to_str().unwrap_or_default(),
        ],
    ) {
        for (name, key) in [
            ("duckdb", "duckdb_ingest_s"),
            ("pyarrow", "pyarrow_ingest_s"),
            ("deltars", "deltars_ingest_s"),
        ] {
            if let Some(s) = peer.get(key) {
                report.metric(
                    &format!("storage.peer_{name}_ingest_rows_per_s"),
                    rows as f64 / s,
                    "rows/s",
                );
                report.ratio(&format!("storage.ingest_vs_{name}"), ours.as_secs_f64(), *s);
            }
        }
    }

    // --- Pruning: a query on one of the 50 partitions.
    let all = table.files(None, None).await?;
    let pred = col("category").eq("garden").and(col("region").eq("apac"));
    let one = table.files(None, Some(&pred)).await?;
    let fraction = bytes_of(&one) as f64 / bytes_of(&all) as f64;
    report.metric("storage.pruned_bytes_fraction", fraction, "fraction");
    report.note(&format!(
        "pruning: 1 of 50 partitions reads {} of {} files; bound 1.2/50 = 0.024",
        one.len(),
        all.len()
    ));
    let got: Vec<RecordBatch> = table
        .scan(ScanRequest::new().with_predicate(pred))
        .await?
        .try_collect()
        .await?;
    let n: usize = got.iter().map(RecordBatch::num_rows).sum();
    report.note(&format!("pruned scan returned {n} rows"));

    // --- Point lookups on a 10 M-row table (bloom filter + zone maps on order_id).
    let lookup_rows = report.scale(10_000_000usize, 1_000_000);
    let ldir = work.path().join("lookup");
    let lookup = Table::create(
        Location::local(&ldir)?,
        schema(),
        TableOptions::new()
            .row_group_rows(64 * 1024)
            .bloom_filter_columns(["order_id"])
            .target_file_size(64 << 20),
    )
    .await?;
    let mut loaded = 0usize;
    while loaded < lookup_rows {
        let group: Vec<RecordBatch> = (0..4)
            .map(|i| batch((loaded + i * per_batch) as i64, per_batch, &mut rng))
            .collect();
        loaded += 4 * per_batch;
        lookup.append(group).await?;
    }
    let mut lat = Latencies::with_capacity(200);
    for _ in 0..200 {
        let key = rng.random_range(0..lookup_rows as i64);
        let t = Instant::now();
        let got: Vec<RecordBatch> = lookup
            .scan(ScanRequest::new().with_predicate(col("order_id").eq(key)))
            .await?
            .try_collect()
            .await?;
        lat.record(t.elapsed());
        let n: usize = got.iter().map(RecordBatch::num_rows).sum();
        if n != 1 {
            return Err(format!("point lookup of {key} returned {n} rows").into());
        }
    }
    report.metric(
        "storage.point_lookup_p50_ms",
        ms(lat.percentile(50.0)),
        "ms",
    );
    report.metric(
        "storage.point_lookup_p99_ms",
        ms(lat.percentile(99.0)),
        "ms",
    );
    report.note(&format!(
        "point lookups: {lookup_rows} rows, {} files",
        lookup.files(None, None).await?.len()
    ));

    // --- The log: opening a long log, refreshing by one commit, planning over many files.
    crate::storage_log::run(report, work.path()).await
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
