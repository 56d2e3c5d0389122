//! SQL over Delta tables whose float columns hold NaN: Parquet's statistics, and the
//! log statistics of writers that take them from Parquet (Python `deltalake`), leave
//! NaN out of min / max, while SQL orders NaN above every number. No pruning (of files
//! by the table, of row groups and pages by DataFusion's Parquet scan) and no answer
//! from statistics may lose a NaN row: every query returns what it returns over the
//! same rows in memory.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use lakehouse_core::{MemoryTable, ScanRequest, TableSink, TableSource};
use lakehouse_query::{QueryEngine, QueryOptions};
use lakehouse_storage::{Location, Table, TableOptions};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float64, true),
    ]))
}

fn batch(first: i64, xs: &[Option<f64>]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(
                (first..first + xs.len() as i64).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(xs.to_vec())),
        ],
    )
    .unwrap()
}

fn rows(batches: &[RecordBatch]) -> Vec<String> {
    lakehouse_examples::tpch::row_lines(batches).unwrap()
}

const QUERIES: [&str; 18] = [
    "SELECT id FROM {t} WHERE x > 1.0 ORDER BY id",
    "SELECT id FROM {t} WHERE x > 10 ORDER BY id",
    "SELECT id FROM {t} WHERE x >= 3.5 ORDER BY id",
    "SELECT id FROM {t} WHERE x < 0.5 ORDER BY id",
    "SELECT id FROM {t} WHERE x <> 1.0 ORDER BY id",
    "SELECT id FROM {t} WHERE x = 1.0 ORDER BY id",
    "SELECT id FROM {t} WHERE x BETWEEN 0 AND 2 ORDER BY id",
    "SELECT id FROM {t} WHERE x NOT BETWEEN 0 AND 2 ORDER BY id",
    "SELECT id FROM {t} WHERE x NOT IN (1.0, 2.0) ORDER BY id",
    "SELECT id FROM {t} WHERE isnan(x) ORDER BY id",
    "SELECT id FROM {t} WHERE x != x ORDER BY id",
    "SELECT id FROM {t} WHERE x = 'NaN'::double ORDER BY id",
    "SELECT id FROM {t} WHERE x > 10 OR x < -10 ORDER BY id",
    "SELECT count(*) FROM {t} WHERE x > 10",
    "SELECT max(x), min(x) FROM {t}",
    "SELECT max(x) FROM {t} WHERE id < 100",
    "SELECT id FROM {t} ORDER BY x DESC NULLS LAST, id LIMIT 2",
    "SELECT id FROM {t} WHERE id >= 0 ORDER BY x DESC NULLS LAST, id LIMIT 1",
];

/// Every query over `table` against the same over its rows in memory, on `partitions`
/// target partitions; returns how many rows `x > 10` matched (the NaN rows).
async fn assert_same_as_memory(table: Table, partitions: usize) -> usize {
    let all: Vec<RecordBatch> = table
        .scan(ScanRequest::new())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let all = concat_batches(&table.schema(), &all).unwrap();
    let memory = MemoryTable::new("memory", table.schema());
    memory.append(vec![all], None).await.unwrap();
    let engine = QueryEngine::builder().target_partitions(partitions).build();
    engine.register_table("lake", Arc::new(table)).unwrap();
    engine.register_table("memory", Arc::new(memory)).unwrap();
    let mut nan_rows = 0;
    for q in QUERIES {
        let mut answers = Vec::new();
        for t in ["lake", "memory"] {
            let sql = q.replace("{t}", t);
            let r = engine
                .query(&sql, QueryOptions::new().bypass_cache())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            answers.push(rows(r.batches()));
        }
        assert_eq!(answers[0], answers[1], "{q}");
        if q.contains("x > 10 ORDER") {
            nan_rows = answers[0].len();
        }
    }
    nan_rows
}

/// Our own table in `dir`, with row groups of two rows: ids 0-5 (one NaN at id 1) in
/// one file, 10-11 (2.0 and 3.0) in another. The log has no bounds for a float column
/// with NaN, but each row group's Parquet statistics leave NaN out.
async fn our_nan_table(dir: &Path) -> Table {
    let t = Table::create(
        Location::local(dir).unwrap(),
        schema(),
        TableOptions::new().row_group_rows(2),
    )
    .await
    .unwrap();
    let first = [
        Some(1.0),
        Some(f64::NAN),
        Some(0.5),
        None,
        Some(1.0),
        Some(2.0),
    ];
    t.append(vec![batch(0, &first)]).await.unwrap();
    t.append(vec![batch(10, &[Some(2.0), Some(3.0)])])
        .await
        .unwrap();
    t
}

/// SQL over [`our_nan_table`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_our_tables_never_loses_nan_rows() {
    let dir = tempfile::tempdir().unwrap();
    let t = our_nan_table(dir.path()).await;
    assert_eq!(assert_same_as_memory(t, 2).await, 1);
}

/// One partition reads the files in order: the first sets the running `max(x)` (and
/// the top-k bound) that DataFusion pushes into the scan as a dynamic filter before
/// the second file is opened, whose Parquet statistics leave its NaN out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_filters_never_prune_nan_rows() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new().row_group_rows(2),
    )
    .await
    .unwrap();
    t.append(vec![batch(0, &[Some(3.0), Some(2.0)])])
        .await
        .unwrap();
    t.append(vec![batch(10, &[Some(1.0), Some(f64::NAN)])])
        .await
        .unwrap();
    assert_eq!(assert_same_as_memory(t, 1).await, 1);
}

fn commit_path(dir: &Path, v: u64) -> std::path::PathBuf {
    dir.join("_delta_log").join(format!("{v:020}.json"))
}

/// A table Python `deltalake` writes: its log's bounds leave NaN out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_deltalake_tables_never_loses_nan_rows() {
    let Some(python) = lakehouse_examples::peers::python("the deltalake NaN test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import sys, deltalake, pyarrow as pa
nan = float("nan")
for first, xs in [(0, [1.0, nan, 0.5, None, 1.0]), (10, [2.0, nan, 3.0]), (20, [nan, nan])]:
    t = pa.table({"id": pa.array(range(first, first + len(xs)), pa.int64()),
                  "x": pa.array(xs, pa.float64())})
    deltalake.write_deltalake(sys.argv[1], t, mode="append")
"#;
    lakehouse_examples::peers::run_script(&python, script, &[dir.path()]).unwrap();
    // The first file holds a NaN, and its bounds leave it out.
    let text = std::fs::read_to_string(commit_path(dir.path(), 0)).unwrap();
    let max: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|a| a["add"]["stats"].as_str().map(str::to_owned))
        .map(|s| serde_json::from_str::<serde_json::Value>(&s).unwrap()["maxValues"]["x"].clone())
        .collect();
    assert_eq!(max, [serde_json::json!(1.0)]);
    let t = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    assert_eq!(assert_same_as_memory(t, 2).await, 4);
}

/// DataFusion's Parquet opener prunes row groups by a dynamic filter at run time
/// whatever the scan's pruning options say, and only when the filter has been
/// tightened before the row group is reached, so losses came and went from run to
/// run: dynamic filters over float columns never reach the scan, those over other
/// columns do, and the answers hold over many runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_filters_over_floats_stay_out_of_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let t = our_nan_table(dir.path()).await;
    let engine = QueryEngine::builder().target_partitions(2).build();
    engine.register_table("lake", Arc::new(t)).unwrap();
    let scan_line = |plan: String| {
        plan.lines()
            .find(|l| l.contains("DataSourceExec"))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no scan in {plan}"))
    };
    for q in [
        "SELECT max(x), min(x) FROM lake",
        "SELECT id FROM lake ORDER BY x DESC NULLS LAST, id LIMIT 1",
    ] {
        let scan = scan_line(engine.explain(q, false).await.unwrap());
        assert!(!scan.contains("DynamicFilter"), "{q}: {scan}");
    }
    let scan = scan_line(
        engine
            .explain("SELECT max(id) FROM lake", false)
            .await
            .unwrap(),
    );
    assert!(
        scan.contains("DynamicFilter"),
        "integer columns keep theirs: {scan}"
    );
    for _ in 0..100 {
        let r = engine
            .query(
                "SELECT max(x), min(x) FROM lake",
                QueryOptions::new().bypass_cache(),
            )
            .await
            .unwrap();
        assert_eq!(rows(r.batches()), ["NaN|0.5"]);
        let r = engine
            .query(
                "SELECT id FROM lake ORDER BY x DESC NULLS LAST, id LIMIT 1",
                QueryOptions::new().bypass_cache(),
            )
            .await
            .unwrap();
        assert_eq!(rows(r.batches()), ["1"]);
    }
}
