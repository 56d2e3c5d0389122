//! `lakehouse-bench query` (alone: `query-dml`): SQL writes to a Delta table of 10 M rows
//! (`--quick`: 1 M) through the [`QueryEngine`], against DuckDB's same statements on the
//! same rows in the same run (`benches/peers/dml_duckdb.py`).
//!
//! * `query.delete_1pct_of_10m_rows_ms`: `DELETE FROM t WHERE customer < 1000`, 1 % of the
//!   rows spread over every file (the customers are a permutation of the ids), so no
//!   file is pruned: every file is read, and with copy-on-write rewritten. Measured on a
//!   copy-on-write table and (`..._dv_ms`) on one with deletion vectors.
//! * `query.merge_100k_into_10m_ms`: a `MERGE INTO` of 100 K source rows, 50 K existing
//!   ids spread over the table updated and 50 K new ids inserted.
//!
//! Each statement runs once on a freshly written table (files of 1 M rows in local
//! directories); the time is the statement's, commit included. DuckDB runs the same
//! statements on its own database file with 2 threads.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, UInt64Type};
use lakehouse_core::{MemoryTable, TableSink};
use lakehouse_query::{QueryEngine, QueryOptions};
use lakehouse_storage::{Location, Table, TableOptions};

use crate::query::{THREADS, ms};
use crate::report::{BenchResult, Report, run_peer};

type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Rows per appended batch (one data file each).
const CHUNK: usize = 1_000_000;
const REGIONS: [&str; 4] = ["eu", "us", "apac", "latam"];

/// `lakehouse-bench query-dml`.
pub(crate) fn run(report: &mut Report) -> BenchResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .enable_all()
        .build()?;
    rt.block_on(dml(report))
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("customer", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("price", DataType::Float64, false),
    ]))
}

/// Rows with ids `ids`, priced `price` (or by the id when `None`), as the DuckDB script
/// builds them.
fn rows(ids: &[i64], price: Option<f64>) -> Result<RecordBatch, arrow::error::ArrowError> {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|i| (i * 7919) % 100_000),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| REGIONS[(i % 4) as usize]),
            )),
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|i| price.unwrap_or((i % 1000) as f64 + 0.5)),
            )),
        ],
    )
}

/// A Delta table of `n` rows under `dir`.
async fn write_table(dir: &Path, n: usize, deletion_vectors: bool) -> Fallible<Table> {
    let table = Table::create(
        Location::local(dir)?,
        schema(),
        TableOptions::new().deletion_vectors(deletion_vectors),
    )
    .await?;
    let mut start = 0;
    while start < n {
        let len = CHUNK.min(n - start);
        let ids: Vec<i64> = (start as i64..(start + len) as i64).collect();
        table.append(vec![rows(&ids, None)?]).await?;
        start += len;
    }
    Ok(table)
}

/// The `count` a DML statement answers with, and its time in ms.
async fn timed(engine: &QueryEngine, sql: &str) -> Fallible<(u64, f64)> {
    let start = Instant::now();
    let r = engine
        .query(sql, QueryOptions::new().bypass_cache())
        .await?;
    let elapsed = start.elapsed();
    let count = r
        .batches()
        .first()
        .and_then(|b| b.column(0).as_primitive_opt::<UInt64Type>())
        .map(|c| c.value(0))
        .ok_or("a DML statement answered without a count")?;
    Ok((count, ms(elapsed)))
}

fn engine_for(table: Table) -> Fallible<QueryEngine> {
    let engine = QueryEngine::builder().target_partitions(THREADS).build();
    engine.register_writable("t", Arc::new(table))?;
    Ok(engine)
}

const DELETE: &str = "DELETE FROM t WHERE customer < 1000";
const MERGE: &str = "MERGE INTO t USING src s ON t.id = s.id \
     WHEN MATCHED THEN UPDATE SET price = s.price \
     WHEN NOT MATCHED THEN INSERT (id, customer, region, price) \
     VALUES (s.id, s.customer, s.region, s.price)";

/// The DELETE and MERGE figures (part of `lakehouse-bench query`).
pub(crate) async fn dml(report: &mut Report) -> BenchResult {
    let n = report.scale(10_000_000, 1_000_000);
    let work = tempfile::tempdir()?;

    let mut delete_ms = [0.0; 2];
    for (k, dv) in [false, true].into_iter().enumerate() {
        let dir = work.path().join(format!("delete-{k}"));
        let engine = engine_for(write_table(&dir, n, dv).await?)?;
        let (deleted, t) = timed(&engine, DELETE).await?;
        if deleted != n as u64 / 100 {
            return Err(format!("the delete removed {deleted} rows, not {}", n / 100).into());
        }
        delete_ms[k] = t;
        std::fs::remove_dir_all(&dir)?;
    }
    report.metric("query.delete_1pct_of_10m_rows_ms", delete_ms[0], "ms");
    report.metric("query.delete_1pct_of_10m_rows_dv_ms", delete_ms[1], "ms");

    let dir = work.path().join("merge");
    let engine = engine_for(write_table(&dir, n, false).await?)?;
    let step = (n / 50_000) as i64;
    let existing: Vec<i64> = (0..50_000).map(|j| j * step).collect();
    let new: Vec<i64> = (0..50_000).map(|j| n as i64 + j).collect();
    let src = MemoryTable::new("src", schema());
    src.append(
        vec![rows(&existing, Some(1.25))?, rows(&new, Some(2.5))?],
        None,
    )
    .await?;
    engine.register_table("src", Arc::new(src))?;
    let (merged, merge_ms) = timed(&engine, MERGE).await?;
    if merged != 100_000 {
        return Err(format!("the merge changed {merged} rows, not 100000").into());
    }
    let r = engine
        .query("SELECT count(*) FROM t", QueryOptions::new().bypass_cache())
        .await?;
    let after = r
        .batches()
        .first()
        .and_then(|b| b.column(0).as_primitive_opt::<Int64Type>())
        .map(|c| c.value(0))
        .ok_or("count(*) answered nothing")?;
    if after != n as i64 + 50_000 {
        return Err(format!("after the merge the table has {after} rows").into());
    }
    report.metric("query.merge_100k_into_10m_ms", merge_ms, "ms");
    drop(engine);
    std::fs::remove_dir_all(&dir)?;

    let rows_arg = n.to_string();
    let threads = THREADS.to_string();
    let dir_text = work
        .path()
        .to_str()
        .ok_or("the temporary directory is not UTF-8")?
        .to_owned();
    let Some(duck) = run_peer(
        report,
        "dml_duckdb.py",
        &[
            "--rows",
            &rows_arg,
            "--threads",
            &threads,
            "--dir",
            &dir_text,
        ],
    ) else {
        return Ok(());
    };
    let deleted = duck.get("duckdb_deleted").copied().unwrap_or(f64::NAN);
    let merged = duck.get("duckdb_merged").copied().unwrap_or(f64::NAN);
    if deleted != (n / 100) as f64 || merged != 100_000.0 {
        return Err(format!("DuckDB deleted {deleted} and merged {merged} rows").into());
    }
    let duck_ms = |k: &str| duck.get(k).map_or(f64::NAN, |s| s * 1000.0);
    report.metric(
        "query.duckdb_delete_1pct_of_10m_rows_ms",
        duck_ms("duckdb_delete_s"),
        "ms",
    );
    report.metric(
        "query.duckdb_merge_100k_into_10m_ms",
        duck_ms("duckdb_merge_s"),
        "ms",
    );
    report.ratio(
        "query.delete_1pct_vs_duckdb",
        delete_ms[0],
        duck_ms("duckdb_delete_s"),
    );
    report.ratio(
        "query.delete_1pct_dv_vs_duckdb",
        delete_ms[1],
        duck_ms("duckdb_delete_s"),
    );
    report.ratio(
        "query.merge_100k_vs_duckdb",
        merge_ms,
        duck_ms("duckdb_merge_s"),
    );
    Ok(())
}
