//! `lakehouse-bench query`: TPC-H against DuckDB and DataFusion alone, materialized view
//! reads and refreshes, result-cache hits and point-query latency (in-process, and over
//! the Postgres wire protocol in `query_pgwire`), and SQL writes against DuckDB in
//! `query_dml`.
//!
//! TPC-H runs twice on our side: over the tpchgen Parquet files (`register_parquet`)
//! and over the same data written into Delta tables by `lakehouse-storage` (the
//! lakehouse path, `register_table`), the latter against DataFusion's own reader over
//! the very same data files (`query.tpch_*_lake_vs_datafusion_files`) and DuckDB.
//!
//! TPC-H data (SF 1, `--quick` SF 0.1) is made by tpchgen-cli through
//! `benches/peers/tpch.py`, which also times DuckDB on the same Parquet files and writes
//! DuckDB's answers; ours are checked against them. Every engine runs on 2 threads and
//! each query's time is the best of 3 runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use lakehouse_core::{MemoryTable, TableSink};
use lakehouse_examples::tpch;
use lakehouse_query::{QueryEngine, QueryOptions, QueryResult, RefreshKind};

use crate::report::{BenchResult, Latencies, Report, run_peer};

pub(crate) const THREADS: usize = 2;
const RUNS: usize = 3;

pub(crate) fn run(report: &mut Report) -> BenchResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .enable_all()
        .build()?;
    rt.block_on(async {
        point_and_cache(report).await?;
        crate::query_pgwire::point_query(report).await?;
        views(report).await?;
        crate::query_dml::dml(report).await?;
        tpch(report).await
    })
}

fn sales_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("region", DataType::Utf8, false),
        Field::new("item", DataType::Int64, false),
        Field::new("qty", DataType::Int64, false),
        Field::new("price", DataType::Float64, false),
    ]))
}

/// `n` sales rows from `start`: 8 regions, 1000 items.
fn sales(start: u64, n: usize) -> Result<RecordBatch, arrow::error::ArrowError> {
    const REGIONS: [&str; 8] = ["eu", "us", "apac", "latam", "mea", "uk", "jp", "in"];
    let ids: Vec<u64> = (start..start + n as u64).collect();
    let mix = |i: u64| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
    RecordBatch::try_new(
        sales_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| REGIONS[(mix(*i) % 8) as usize]),
            )),
            Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|i| (mix(*i) / 8 % 1000) as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|i| (mix(*i) % 5 + 1) as i64),
            )),
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|i| (mix(*i) % 10_000) as f64 / 100.0),
            )),
        ],
    )
}

pub(crate) async fn table_of(
    rows: usize,
) -> Result<Arc<MemoryTable>, Box<dyn std::error::Error + Send + Sync>> {
    let table = Arc::new(MemoryTable::new("sales", sales_schema()));
    let chunk = 1_000_000;
    let mut batches = Vec::new();
    let mut start = 0;
    while start < rows {
        let n = chunk.min(rows - start);
        batches.push(sales(start as u64, n)?);
        start += n;
    }
    table.append(batches, None).await?;
    Ok(table)
}

async fn point_and_cache(report: &mut Report) -> BenchResult {
    let engine = QueryEngine::builder().target_partitions(THREADS).build();
    engine.register_table("small", table_of(1000).await?)?;
    engine.register_table("sales", table_of(report.scale(1_000_000, 100_000)).await?)?;

    let point = "SELECT qty, price FROM small WHERE item = 7";
    let mut lat = Latencies::with_capacity(2000);
    for i in 0..2100 {
        let start = Instant::now();
        let r = engine
            .query(point, QueryOptions::new().bypass_cache())
            .await?;
        if i >= 100 {
            lat.record(start.elapsed());
        }
        std::hint::black_box(r.num_rows());
    }
    report.metric("query.point_query_p50_ms", ms(lat.percentile(50.0)), "ms");
    report.metric("query.point_query_p99_ms", ms(lat.percentile(99.0)), "ms");

    let dashboard = "SELECT region, SUM(qty) AS q, AVG(price) AS p FROM sales GROUP BY region";
    let (first, miss) = timed_query(&engine, dashboard, QueryOptions::new()).await?;
    if first.from_cache() {
        return Err("the first run of a query came from the result cache".into());
    }
    let mut lat = Latencies::with_capacity(10_000);
    for _ in 0..10_000 {
        let (r, d) = timed_query(&engine, dashboard, QueryOptions::new()).await?;
        if !r.from_cache() {
            return Err("a repeated query missed the result cache".into());
        }
        lat.record(d);
    }
    report.note(&format!(
        "result cache: a miss (aggregating {} rows) took {:.3} ms",
        report.scale(1_000_000, 100_000),
        ms(miss)
    ));
    report.metric(
        "query.result_cache_hit_p50_us",
        us(lat.percentile(50.0)),
        "us",
    );
    report.metric(
        "query.result_cache_hit_p99_us",
        us(lat.percentile(99.0)),
        "us",
    );
    Ok(())
}

async fn timed_query(
    engine: &QueryEngine,
    sql: &str,
    options: QueryOptions,
) -> Result<(QueryResult, Duration), lakehouse_query::Error> {
    let start = Instant::now();
    let r = engine.query(sql, options).await?;
    Ok((r, start.elapsed()))
}

async fn views(report: &mut Report) -> BenchResult {
    let rows = report.scale(10_000_000, 1_000_000);
    let engine = QueryEngine::builder().target_partitions(THREADS).build();
    let table = table_of(rows).await?;
    engine.register_table("sales", table.clone())?;
    let sql = "SELECT region, item, SUM(qty) AS q, COUNT(*) AS n, AVG(price) AS p, \
        MIN(price) AS lo, MAX(price) AS hi FROM sales GROUP BY region, item";

    // Full refresh: defining the view computes it from every row.
    let mut full = Vec::new();
    for i in 0..RUNS {
        let start = Instant::now();
        engine
            .create_materialized_view(&format!("full{i}"), sql)
            .await?;
        full.push(start.elapsed());
        engine.deregister(&format!("full{i}"))?;
    }
    engine.create_materialized_view("by_item", sql).await?;
    let mut incremental = Vec::new();
    let delta = rows / 100;
    for i in 0..RUNS {
        table
            .append(vec![sales((rows + i * delta) as u64, delta)?], None)
            .await?;
        let start = Instant::now();
        let outcome = engine.refresh_materialized_view("by_item").await?;
        incremental.push(start.elapsed());
        if outcome.kind() != RefreshKind::Incremental {
            return Err(format!("expected an incremental refresh, got {outcome:?}").into());
        }
    }
    let full = median(full);
    let incremental = median(incremental);
    report.note(&format!(
        "mv over {rows} rows, 8000 groups: full refresh {:.1} ms, incremental after +1 % {:.1} ms",
        ms(full),
        ms(incremental)
    ));
    report.metric("query.mv_full_refresh_ms", ms(full), "ms");
    report.metric("query.mv_incremental_refresh_ms", ms(incremental), "ms");
    report.metric(
        "query.mv_incremental_refresh_fraction",
        incremental.as_secs_f64() / full.as_secs_f64(),
        "ratio",
    );

    // Reading the view: SQL over its snapshot (result cache bypassed), and the snapshot.
    let read = "SELECT item, q, p FROM by_item WHERE region = 'eu' AND item < 100";
    let mut lat = Latencies::with_capacity(2000);
    for i in 0..2100 {
        let (r, d) = timed_query(&engine, read, QueryOptions::new().bypass_cache()).await?;
        if i >= 100 {
            lat.record(d);
        }
        std::hint::black_box(r.num_rows());
    }
    report.metric("query.mv_read_p50_ms", ms(lat.percentile(50.0)), "ms");
    report.metric("query.mv_read_p99_ms", ms(lat.percentile(99.0)), "ms");
    let mut lat = Latencies::with_capacity(100_000);
    for _ in 0..100_000 {
        let start = Instant::now();
        let snap = engine.read_materialized_view("by_item")?;
        std::hint::black_box(snap.num_rows());
        lat.record(start.elapsed());
    }
    report.metric(
        "query.mv_snapshot_read_p99_us",
        us(lat.percentile(99.0)),
        "us",
    );
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The scale factor of this run (SF 1, `--quick` SF 0.1) and the directory of its
/// TPC-H data under `target/` (as a path and as text for the peer scripts).
pub(crate) fn tpch_data(
    report: &Report,
) -> Result<(&'static str, PathBuf, String), Box<dyn std::error::Error + Send + Sync>> {
    let sf = report.scale("1", "0.1");
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join(format!("tpch-sf{sf}"));
    let dir_text = dir
        .to_str()
        .ok_or("the target directory is not UTF-8")?
        .to_owned();
    Ok((sf, dir, dir_text))
}

async fn tpch(report: &mut Report) -> BenchResult {
    let (sf, dir, dir_text) = tpch_data(report)?;
    let runs = RUNS.to_string();
    let Some(duck) = run_peer(
        report,
        "tpch.py",
        &[
            "--sf",
            sf,
            "--dir",
            &dir_text,
            "--time",
            &runs,
            "--threads",
            "2",
        ],
    ) else {
        report.note("TPC-H skipped: the DuckDB peer did not run");
        return Ok(());
    };
    let queries: Vec<String> = (1..=22).map(tpch::query).collect::<Result<_, _>>()?;

    // Ours.
    let engine = QueryEngine::builder().target_partitions(THREADS).build();
    for t in tpch::TABLES {
        let path = dir.join(format!("{t}.parquet"));
        engine
            .register_parquet(t, path.to_str().ok_or("a non UTF-8 path")?)
            .await?;
    }
    let mut ours = Vec::new();
    let mut mismatches = Vec::new();
    for (i, sql) in queries.iter().enumerate() {
        let mut best = Duration::MAX;
        let mut last = None;
        for _ in 0..RUNS {
            let (r, d) = timed_query(&engine, sql, QueryOptions::new().bypass_cache()).await?;
            best = best.min(d);
            last = Some(r);
        }
        ours.push(best);
        if let Some(r) = last {
            let answer = dir.join("answers").join(format!("q{:02}.csv", i + 1));
            if let Some(problem) = tpch::compare_with_file(r.batches(), &answer)? {
                mismatches.push(format!("q{:02}: {problem}", i + 1));
            }
        }
    }

    // DataFusion alone, same files, same threads.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(THREADS));
    for t in tpch::TABLES {
        let path = dir.join(format!("{t}.parquet"));
        ctx.register_parquet(
            t,
            path.to_str().ok_or("a non UTF-8 path")?,
            ParquetReadOptions::default(),
        )
        .await?;
    }
    let mut alone = Vec::new();
    for sql in &queries {
        let mut best = Duration::MAX;
        for _ in 0..RUNS {
            let start = Instant::now();
            let batches = ctx.sql(sql).await?.collect().await?;
            best = best.min(start.elapsed());
            std::hint::black_box(batches.len());
        }
        alone.push(best);
    }

    // The lakehouse path: the same data written into Delta tables by lakehouse-storage
    // and registered as tables (read as files by DataFusion's Parquet scan), against
    // DataFusion's own reader over the very same data files.
    let delta_dir = tempfile::tempdir()?;
    let write_start = Instant::now();
    let tables = tpch::write_delta_tables(&dir, delta_dir.path()).await?;
    report.note(&format!(
        "tpch: writing the Delta tables took {:.1} s",
        write_start.elapsed().as_secs_f64()
    ));
    let lake_engine = QueryEngine::builder().target_partitions(THREADS).build();
    // The same tables with the filters evaluated in the Parquet decoder (late
    // materialisation) rather than above the scan.
    let lake_decoder = QueryEngine::builder()
        .target_partitions(THREADS)
        .filter_pushdown(true)
        .build();
    // The same tables with string columns in the tables' own types (`Utf8`), not the
    // views (the default) DataFusion's reader gives.
    let lake_plain = QueryEngine::builder()
        .target_partitions(THREADS)
        .string_views(false)
        .build();
    let files_ctx =
        SessionContext::new_with_config(SessionConfig::new().with_target_partitions(THREADS));
    for (name, table) in &tables {
        lake_engine.register_table(name, Arc::new(table.clone()))?;
        lake_decoder.register_table(name, Arc::new(table.clone()))?;
        lake_plain.register_table(name, Arc::new(table.clone()))?;
        let urls = table
            .files(None, None)
            .await?
            .iter()
            .map(|f| {
                let path = delta_dir.path().join(name).join(&f.path);
                ListingTableUrl::parse(path.to_str().ok_or("a non UTF-8 path")?).map_err(Into::into)
            })
            .collect::<Result<Vec<_>, Box<dyn std::error::Error + Send + Sync>>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .infer_schema(&files_ctx.state())
            .await?;
        files_ctx.register_table(*name, Arc::new(ListingTable::try_new(config)?))?;
    }
    let mut lake = Vec::new();
    let mut lake_mismatches = Vec::new();
    for (i, sql) in queries.iter().enumerate() {
        let mut best = Duration::MAX;
        let mut last = None;
        for _ in 0..RUNS {
            let (r, d) = timed_query(&lake_engine, sql, QueryOptions::new().bypass_cache()).await?;
            best = best.min(d);
            last = Some(r);
        }
        lake.push(best);
        if let Some(r) = last {
            let answer = dir.join("answers").join(format!("q{:02}.csv", i + 1));
            if let Some(problem) = tpch::compare_with_file(r.batches(), &answer)? {
                lake_mismatches.push(format!("q{:02}: {problem}", i + 1));
            }
        }
    }
    let (decoder, decoder_mismatches) = best_times(&lake_decoder, &queries, &dir).await?;
    let (plain, plain_mismatches) = best_times(&lake_plain, &queries, &dir).await?;
    let mut files = Vec::new();
    for sql in &queries {
        let mut best = Duration::MAX;
        for _ in 0..RUNS {
            let start = Instant::now();
            let batches = files_ctx.sql(sql).await?.collect().await?;
            best = best.min(start.elapsed());
            std::hint::black_box(batches.len());
        }
        files.push(best);
    }

    for (i, (o, a)) in ours.iter().zip(&alone).enumerate() {
        let d = duck
            .get(&format!("duckdb_q{:02}", i + 1))
            .copied()
            .unwrap_or(f64::NAN);
        report.note(&format!(
            "tpch q{:02}: ours {:.1} ms, datafusion {:.1} ms, duckdb {:.1} ms, \
             lake {:.1} ms, lake with filters in the decoder {:.1} ms, \
             lake with Utf8 strings {:.1} ms, datafusion over the lake's files {:.1} ms",
            i + 1,
            ms(*o),
            ms(*a),
            d * 1e3,
            ms(lake[i]),
            ms(decoder[i]),
            ms(plain[i]),
            ms(files[i])
        ));
    }
    let total_ours: f64 = ours.iter().map(Duration::as_secs_f64).sum();
    let total_alone: f64 = alone.iter().map(Duration::as_secs_f64).sum();
    let total_duck = duck.get("duckdb_total").copied().unwrap_or(f64::NAN);
    let tag = if report.quick() { "sf0_1" } else { "sf1" };
    report.metric(&format!("query.tpch_{tag}_total_s"), total_ours, "s");
    report.metric(
        &format!("query.tpch_{tag}_datafusion_total_s"),
        total_alone,
        "s",
    );
    report.metric(&format!("query.tpch_{tag}_duckdb_total_s"), total_duck, "s");
    report.metric(
        &format!("query.tpch_{tag}_answers_matching_duckdb"),
        (22 - mismatches.len()) as f64,
        "of 22",
    );
    for m in &mismatches {
        report.note(&format!("answer differs from DuckDB: {m}"));
    }
    report.ratio(
        &format!("query.tpch_{tag}_vs_duckdb"),
        total_ours,
        total_duck,
    );
    report.ratio(
        &format!("query.tpch_{tag}_vs_datafusion"),
        total_ours,
        total_alone,
    );
    let total_lake: f64 = lake.iter().map(Duration::as_secs_f64).sum();
    let total_files: f64 = files.iter().map(Duration::as_secs_f64).sum();
    report.metric(&format!("query.tpch_{tag}_lake_total_s"), total_lake, "s");
    report.metric(
        &format!("query.tpch_{tag}_datafusion_files_total_s"),
        total_files,
        "s",
    );
    report.metric(
        &format!("query.tpch_{tag}_lake_answers_matching_duckdb"),
        (22 - lake_mismatches.len()) as f64,
        "of 22",
    );
    for m in &lake_mismatches {
        report.note(&format!("lake answer differs from DuckDB: {m}"));
    }
    report.ratio(
        &format!("query.tpch_{tag}_lake_vs_datafusion_files"),
        total_lake,
        total_files,
    );
    report.ratio(
        &format!("query.tpch_{tag}_lake_vs_duckdb"),
        total_lake,
        total_duck,
    );
    let total_decoder: f64 = decoder.iter().map(Duration::as_secs_f64).sum();
    report.metric(
        &format!("query.tpch_{tag}_lake_filters_in_decoder_total_s"),
        total_decoder,
        "s",
    );
    report.metric(
        &format!("query.tpch_{tag}_lake_filters_in_decoder_answers_matching_duckdb"),
        (22 - decoder_mismatches) as f64,
        "of 22",
    );
    report.ratio(
        &format!("query.tpch_{tag}_lake_filters_in_decoder_vs_datafusion_files"),
        total_decoder,
        total_files,
    );
    let total_plain: f64 = plain.iter().map(Duration::as_secs_f64).sum();
    report.metric(
        &format!("query.tpch_{tag}_lake_utf8_strings_total_s"),
        total_plain,
        "s",
    );
    report.metric(
        &format!("query.tpch_{tag}_lake_utf8_strings_answers_matching_duckdb"),
        (22 - plain_mismatches) as f64,
        "of 22",
    );
    report.ratio(
        &format!("query.tpch_{tag}_lake_utf8_strings_vs_datafusion_files"),
        total_plain,
        total_files,
    );
    Ok(())
}

/// The best of [`RUNS`] times of each query on `engine`, and how many answers differ
/// from DuckDB's (in `dir/answers`).
async fn best_times(
    engine: &QueryEngine,
    queries: &[String],
    dir: &Path,
) -> Result<(Vec<Duration>, usize), Box<dyn std::error::Error + Send + Sync>> {
    let mut times = Vec::new();
    let mut mismatches = 0;
    for (i, sql) in queries.iter().enumerate() {
        let mut best = Duration::MAX;
        let mut last = None;
        for _ in 0..RUNS {
            let (r, d) = timed_query(engine, sql, QueryOptions::new().bypass_cache()).await?;
            best = best.min(d);
            last = Some(r);
        }
        times.push(best);
        if let Some(r) = last {
            let answer = dir.join("answers").join(format!("q{:02}.csv", i + 1));
            if tpch::compare_with_file(r.batches(), &answer)?.is_some() {
                mismatches += 1;
            }
        }
    }
    Ok((times, mismatches))
}
