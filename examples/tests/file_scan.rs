//! SQL over a Delta table read as files (DataFusion's own Parquet scan over
//! `TableSource::scan_files`) returns what the batch-stream path returns: a proptest
//! over predicates, projections, limits and aggregates, on a partitioned table with
//! deletion vectors, several row groups per file and a column added after some files;
//! and a column-mapped table read by physical names.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use lakehouse_core::{
    BatchStream, Changes, FilterSupport, Predicate, Result, ScanRequest, TableSource,
    TableStatistics, Version,
};
use lakehouse_query::{QueryEngine, QueryOptions};
use lakehouse_storage::{Location, PartitionField, Table, TableOptions};
use proptest::prelude::*;
use serde_json::{Value, json};

/// A table read only through its batch stream: the oracle.
#[derive(Debug)]
struct StreamOnly(Table);

#[lakehouse_core::async_trait]
impl TableSource for StreamOnly {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }
    async fn version(&self) -> Result<Version> {
        self.0.version().await
    }
    fn partition_columns(&self) -> Vec<String> {
        self.0.partition_columns()
    }
    fn filter_support(&self, predicate: &Predicate) -> FilterSupport {
        self.0.filter_support(predicate)
    }
    async fn scan(&self, request: ScanRequest) -> Result<BatchStream> {
        self.0.scan(request).await
    }
    async fn statistics(&self, version: Option<Version>) -> Result<TableStatistics> {
        self.0.statistics(version).await
    }
    async fn changes_since(&self, version: Version) -> Result<Changes> {
        self.0.changes_since(version).await
    }
}

fn log_dir(dir: &Path) -> std::path::PathBuf {
    dir.join("_delta_log")
}

fn commit_path(dir: &Path, v: u64) -> std::path::PathBuf {
    log_dir(dir).join(format!("{v:020}.json"))
}

fn write_commit(dir: &Path, v: u64, actions: &[Value]) {
    let text: String = actions.iter().map(|a| format!("{a}\n")).collect();
    std::fs::write(commit_path(dir, v), text).unwrap();
}

/// The live `add` actions at `version`, replayed from the JSON commits.
fn live_adds(dir: &Path, version: u64) -> Vec<Value> {
    let mut adds: Vec<Value> = Vec::new();
    for v in 0..=version {
        let text = std::fs::read_to_string(commit_path(dir, v)).unwrap();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let a: Value = serde_json::from_str(line).unwrap();
            if let Some(add) = a.get("add") {
                adds.retain(|x| x["path"] != add["path"]);
                adds.push(add.clone());
            } else if let Some(r) = a.get("remove") {
                adds.retain(|x| x["path"] != r["path"]);
            }
        }
    }
    adds
}

/// An inline deletion vector deleting `rows`, by the storage crate's encoder.
fn inline_dv(rows: &[u64]) -> Value {
    lakehouse_storage::deletion_vector::encode_inline(rows)
        .unwrap()
        .to_json()
}

fn sales_schema(extra: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("qty", DataType::Int64, true),
        Field::new("price", DataType::Float64, false),
        Field::new("name", DataType::Utf8, true),
    ];
    if extra {
        fields.push(Field::new("extra", DataType::Int64, true));
    }
    Arc::new(Schema::new(fields))
}

fn sales_batch(from: i64, n: i64, extra: bool) -> RecordBatch {
    let ids: Vec<i64> = (from..from + n).collect();
    let regions = ["eu", "us", "apac"];
    let mut columns: Vec<Arc<dyn Array>> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|i| regions[(i % 3) as usize]),
        )),
        Arc::new(Int64Array::from_iter(
            ids.iter().map(|i| (i % 5 != 0).then_some(i % 50)),
        )),
        Arc::new(Float64Array::from_iter_values(
            ids.iter().map(|i| ((i * 37) % 1000) as f64 / 10.0),
        )),
        Arc::new(StringArray::from_iter(
            ids.iter()
                .map(|i| (i % 11 != 0).then(|| format!("n{:02}", i % 20))),
        )),
    ];
    if extra {
        columns.push(Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|i| i * 2),
        )));
    }
    RecordBatch::try_new(sales_schema(extra), columns).unwrap()
}

/// The table of the proptest: 12 files over 3 partitions, 40-row row groups, a column
/// added before the last append, and deletion vectors on half of the files.
async fn sales_table(dir: &Path) -> Table {
    let t = Table::create(
        Location::local(dir).unwrap(),
        sales_schema(false),
        TableOptions::new()
            .partition_by([PartitionField::identity("region")])
            .row_group_rows(40),
    )
    .await
    .unwrap();
    for k in 0..3 {
        t.append(vec![sales_batch(k * 300, 300, false)])
            .await
            .unwrap();
    }
    t.add_columns(vec![Field::new("extra", DataType::Int64, true)])
        .await
        .unwrap();
    let version = t
        .append(vec![sales_batch(900, 300, true)])
        .await
        .unwrap()
        .version;

    // Deletion vectors on every other file: its first row and every seventh.
    let mut actions = vec![
        json!({"commitInfo": {"timestamp": 2, "operation": "DELETE"}}),
        json!({"protocol": {
            "minReaderVersion": 3, "minWriterVersion": 7,
            "readerFeatures": ["deletionVectors"],
            "writerFeatures": ["deletionVectors"],
        }}),
    ];
    let mut adds = live_adds(dir, version);
    adds.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    assert!(adds.len() >= 12, "{} files", adds.len());
    for add in adds.iter().step_by(2) {
        let stats: Value = serde_json::from_str(add["stats"].as_str().unwrap()).unwrap();
        let rows = stats["numRecords"].as_u64().unwrap();
        let deleted: Vec<u64> = (0..rows).filter(|r| r % 7 == 3 || *r == 0).collect();
        let mut new = add.clone();
        new["deletionVector"] = inline_dv(&deleted);
        actions.push(
            json!({"remove": {"path": add["path"], "deletionTimestamp": 2, "dataChange": true}}),
        );
        actions.push(json!({"add": new}));
    }
    write_commit(dir, version + 1, &actions);
    Table::open(Location::local(dir).unwrap()).await.unwrap()
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    engine: QueryEngine,
    /// `files` again, on an engine that filters in the Parquet decoder.
    decoder: QueryEngine,
    /// `files` and `stream` again, on an engine that reads strings as views.
    views: QueryEngine,
    _dir: tempfile::TempDir,
}

/// One table registered twice: `files` (read as files) and `stream` (the oracle); and
/// as `files` on a second engine whose filters run in the Parquet decoder.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let engine = QueryEngine::builder().target_partitions(3).build();
        let decoder = QueryEngine::builder()
            .target_partitions(3)
            .filter_pushdown(true)
            .build();
        let views = QueryEngine::builder()
            .target_partitions(3)
            .string_views(true)
            .build();
        rt.block_on(async {
            let table = sales_table(dir.path()).await;
            let scan = table
                .scan_files(&ScanRequest::new())
                .await
                .unwrap()
                .expect("a Delta table describes its scan as files");
            assert_eq!(scan.files.len(), scan.total_files);
            assert_eq!(
                scan.files.iter().filter(|f| f.deleted.is_some()).count(),
                scan.files.len().div_ceil(2)
            );
            engine
                .register_table("stream", Arc::new(StreamOnly(table.clone())))
                .unwrap();
            decoder
                .register_table("files", Arc::new(table.clone()))
                .unwrap();
            views
                .register_table("files", Arc::new(table.clone()))
                .unwrap();
            views
                .register_table("stream", Arc::new(StreamOnly(table.clone())))
                .unwrap();
            engine.register_table("files", Arc::new(table)).unwrap();
        });
        Fixture {
            rt,
            engine,
            decoder,
            views,
            _dir: dir,
        }
    })
}

/// The rows of `batches` as text, one string per row.
fn rows(batches: &[RecordBatch]) -> Vec<String> {
    lakehouse_examples::tpch::row_lines(batches).unwrap()
}

fn run(f: &Fixture, sql: &str) -> Vec<String> {
    run_on(f, &f.engine, sql)
}

fn run_on(f: &Fixture, engine: &QueryEngine, sql: &str) -> Vec<String> {
    f.rt.block_on(async {
        let r = engine
            .query(sql, QueryOptions::new().bypass_cache())
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows(r.batches())
    })
}

const COLUMNS: [&str; 6] = ["id", "region", "qty", "price", "name", "extra"];

fn cmp_op() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["=", "<>", "<", "<=", ">", ">="])
}

fn leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        (cmp_op(), 0..1300i64).prop_map(|(op, v)| format!("id {op} {v}")),
        (cmp_op(), 0..50i64).prop_map(|(op, v)| format!("qty {op} {v}")),
        Just("qty IS NULL".to_owned()),
        Just("name IS NOT NULL".to_owned()),
        (
            cmp_op(),
            prop::sample::select(vec!["eu", "us", "apac", "zz"])
        )
            .prop_map(|(op, v)| format!("region {op} '{v}'")),
        Just("region IN ('eu', 'apac')".to_owned()),
        (cmp_op(), 0..1000i64).prop_map(|(op, v)| format!("price {op} {}", v as f64 / 10.0)),
        (cmp_op(), 0..20i64).prop_map(|(op, v)| format!("name {op} 'n{v:02}'")),
        (0..10i64).prop_map(|v| format!("name LIKE 'n{v}%'")),
        (cmp_op(), 0..2600i64).prop_map(|(op, v)| format!("extra {op} {v}")),
        Just("extra IS NULL".to_owned()),
    ]
}

fn predicate() -> impl Strategy<Value = String> {
    leaf().prop_recursive(2, 8, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} AND {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
            inner.prop_map(|a| format!("NOT ({a})")),
        ]
    })
}

/// A query over table `{t}` and whether its rows are compared in order.
#[derive(Debug, Clone)]
enum Shape {
    /// Rows of a projection (compared as a multiset).
    Select(Vec<&'static str>),
    /// The first `k` rows ordered by every projected column (a deterministic multiset).
    TopK(Vec<&'static str>, usize),
    /// Any `k` rows: only how many.
    Limit(Vec<&'static str>, usize),
    /// Aggregates over the whole table.
    Aggregate,
    /// Per-partition aggregates.
    GroupBy,
}

fn shape() -> impl Strategy<Value = Shape> {
    let projection = prop::sample::subsequence(COLUMNS.to_vec(), 1..=COLUMNS.len());
    prop_oneof![
        projection.clone().prop_map(Shape::Select),
        (projection.clone(), 0..40usize).prop_map(|(p, k)| Shape::TopK(p, k)),
        (projection, 0..400usize).prop_map(|(p, k)| Shape::Limit(p, k)),
        Just(Shape::Aggregate),
        Just(Shape::GroupBy),
    ]
}

fn sql(shape: &Shape, predicate: &Option<String>, t: &str) -> String {
    let filter = predicate
        .as_ref()
        .map(|p| format!(" WHERE {p}"))
        .unwrap_or_default();
    match shape {
        Shape::Select(cols) => format!("SELECT {} FROM {t}{filter}", cols.join(", ")),
        Shape::TopK(cols, k) => format!(
            "SELECT {c} FROM {t}{filter} ORDER BY {c} LIMIT {k}",
            c = cols.join(", ")
        ),
        Shape::Limit(cols, k) => format!("SELECT {} FROM {t}{filter} LIMIT {k}", cols.join(", ")),
        Shape::Aggregate => format!(
            "SELECT COUNT(*), COUNT(qty), SUM(qty), MIN(id), MAX(price), MIN(name), MAX(extra) \
             FROM {t}{filter}"
        ),
        Shape::GroupBy => format!(
            "SELECT region, COUNT(*), SUM(id), MAX(name) FROM {t}{filter} \
             GROUP BY region ORDER BY region"
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn file_scans_return_the_rows_of_the_stream_path(
        shape in shape(),
        predicate in prop::option::weighted(0.8, predicate()),
    ) {
        let f = fixture();
        let mut got = run(f, &sql(&shape, &predicate, "files"));
        let mut in_decoder = run_on(f, &f.decoder, &sql(&shape, &predicate, "files"));
        let mut as_views = run_on(f, &f.views, &sql(&shape, &predicate, "files"));
        let mut stream_views = run_on(f, &f.views, &sql(&shape, &predicate, "stream"));
        let mut want = run(f, &sql(&shape, &predicate, "stream"));
        if let Shape::Limit(_, k) = &shape {
            let all = run(f, &sql(&Shape::Select(vec!["id"]), &predicate, "stream"));
            prop_assert_eq!(got.len(), (*k).min(all.len()));
            prop_assert_eq!(in_decoder.len(), (*k).min(all.len()));
            prop_assert_eq!(as_views.len(), (*k).min(all.len()));
            prop_assert_eq!(stream_views.len(), (*k).min(all.len()));
            prop_assert_eq!(want.len(), (*k).min(all.len()));
        } else {
            got.sort();
            in_decoder.sort();
            as_views.sort();
            stream_views.sort();
            want.sort();
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(&in_decoder, &want);
            prop_assert_eq!(&as_views, &want);
            prop_assert_eq!(stream_views, want);
        }
    }
}

#[test]
fn the_file_path_is_planned_as_datafusion_parquet_scan() {
    let f = fixture();
    let plan = f.rt.block_on(async {
        f.engine
            .explain("SELECT id FROM files WHERE region = 'eu' AND qty > 3", true)
            .await
            .unwrap()
    });
    let scan = plan
        .lines()
        .find(|l| l.contains("DataSourceExec"))
        .unwrap_or_else(|| panic!("no DataSourceExec in\n{plan}"));
    // Partition pruning by the source: a third of the files are in `eu`.
    let files = scan.split("files=").nth(1).expect("the files metric");
    let (read, total) = files.split_once('/').expect("read/total");
    let read: usize = read.parse().expect("a count");
    let total: usize = total
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|t| t.parse().ok())
        .expect("a total");
    assert_eq!(read * 3, total, "{scan}");
    assert!(scan.contains("file_type=parquet"), "{scan}");
    // The filter runs above the scan, which also has it for pruning row groups.
    assert!(plan.contains("FilterExec"), "{plan}");
    assert!(scan.contains("pruning_predicate="), "{scan}");
    // Filtering in the decoder leaves no FilterExec, and prunes the same files.
    let in_decoder = f.rt.block_on(async {
        f.decoder
            .explain("SELECT id FROM files WHERE region = 'eu' AND qty > 3", true)
            .await
            .unwrap()
    });
    assert!(!in_decoder.contains("FilterExec"), "{in_decoder}");
    assert!(
        in_decoder.contains(&format!("files={read}/{total}")),
        "{in_decoder}"
    );
    // Exact row counts reach the optimizer: COUNT(*) without a filter is answered from
    // statistics, deletion vectors included.
    // Half of the files lose row 0 and every row r % 7 == 3.
    let count = run(f, "SELECT COUNT(*) FROM files");
    assert_eq!(count, run(f, "SELECT COUNT(*) FROM stream"));
    let count: usize = count[0].parse().expect("a count");
    assert!(count < 1200 && count > 1000, "{count}");
    let plan = f.rt.block_on(async {
        f.engine
            .explain("SELECT COUNT(*) FROM files", false)
            .await
            .unwrap()
    });
    assert!(!plan.contains("DataSourceExec"), "{plan}");
}

/// With `string_views`, string columns reach the engine (and results) as `Utf8View`,
/// from the file scan and from the batch-stream path alike, and the Parquet scan
/// decodes into views itself: no cast between the scan and the filter.
#[test]
fn string_views_reach_results_from_both_paths() {
    let f = fixture();
    for t in ["files", "stream"] {
        let r = f.rt.block_on(async {
            f.views
                .query(
                    &format!("SELECT region, name, id FROM {t} WHERE region = 'eu' LIMIT 5"),
                    QueryOptions::new().bypass_cache(),
                )
                .await
                .unwrap()
        });
        let schema = r.batches()[0].schema();
        assert_eq!(schema.field(0).data_type(), &DataType::Utf8View, "{t}");
        assert_eq!(schema.field(1).data_type(), &DataType::Utf8View, "{t}");
        assert_eq!(schema.field(2).data_type(), &DataType::Int64, "{t}");
        assert!(
            r.batches().iter().all(|b| b
                .column(0)
                .as_string_view()
                .iter()
                .all(|v| v == Some("eu"))),
            "{t}"
        );
    }
    let plan = f.rt.block_on(async {
        f.views
            .explain("SELECT id FROM files WHERE name = 'n03'", true)
            .await
            .unwrap()
    });
    assert!(plan.contains("DataSourceExec"), "{plan}");
    assert!(!plan.to_lowercase().contains("cast("), "{plan}");
}

/// A hand-made column-mapped table (as other engines write them): `id` and `label` are
/// stored as `col-a1` and `col-b2`, `added` is absent from the file, and the file holds
/// a dropped column physically named `id`.
async fn column_mapped_table(dir: &Path) -> Table {
    std::fs::create_dir_all(log_dir(dir)).unwrap();
    let field = |name: &str, ty: &str, id: u32, physical: &str| {
        json!({"name": name, "type": ty, "nullable": true, "metadata": {
            "delta.columnMapping.id": id, "delta.columnMapping.physicalName": physical}})
    };
    let schema_string = json!({"type": "struct", "fields": [
        field("id", "long", 1, "col-a1"),
        field("label", "string", 2, "col-b2"),
        field("added", "long", 4, "col-d4"),
    ]})
    .to_string();
    write_commit(
        dir,
        0,
        &[
            json!({"commitInfo": {"timestamp": 1, "operation": "CREATE TABLE"}}),
            json!({"protocol": {"minReaderVersion": 2, "minWriterVersion": 5}}),
            json!({"metaData": {
                "id": "5b4b4f4c-0000-4000-8000-000000000001",
                "format": {"provider": "parquet", "options": {}},
                "schemaString": schema_string,
                "partitionColumns": [],
                "configuration": {"delta.columnMapping.mode": "name",
                                  "delta.columnMapping.maxColumnId": "4"},
                "createdTime": 1,
            }}),
        ],
    );
    let file_schema = Arc::new(Schema::new(vec![
        Field::new("col-a1", DataType::Int64, true),
        Field::new("col-b2", DataType::Utf8, true),
        Field::new("id", DataType::Int64, true),
    ]));
    let data = RecordBatch::try_new(
        file_schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec!["a", "b", "c"])),
            Arc::new(Int64Array::from(vec![100, 200, 300])),
        ],
    )
    .unwrap();
    let mut bytes = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, file_schema, None).unwrap();
    w.write(&data).unwrap();
    w.close().unwrap();
    std::fs::write(dir.join("part-0.parquet"), &bytes).unwrap();
    write_commit(
        dir,
        1,
        &[json!({"add": {
            "path": "part-0.parquet", "partitionValues": {}, "size": bytes.len(),
            "modificationTime": 1, "dataChange": true,
            "stats": json!({"numRecords": 3, "minValues": {"col-a1": 1},
                            "maxValues": {"col-a1": 3}, "nullCount": {"col-a1": 0}})
                .to_string(),
        }})],
    );
    Table::open(Location::local(dir).unwrap()).await.unwrap()
}

/// The column-mapped table's test, read as files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_mapped_tables_read_as_files_by_physical_names() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let table = column_mapped_table(dir).await;
    let scan = table
        .scan_files(&ScanRequest::new())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        scan.column_mapping,
        BTreeMap::from([
            ("added".to_owned(), "col-d4".to_owned()),
            ("id".to_owned(), "col-a1".to_owned()),
            ("label".to_owned(), "col-b2".to_owned()),
        ])
    );
    let engine = QueryEngine::builder().target_partitions(2).build();
    engine
        .register_table("stream", Arc::new(StreamOnly(table.clone())))
        .unwrap();
    engine.register_table("files", Arc::new(table)).unwrap();
    for (sql, want) in [
        (
            "SELECT id, label, added FROM {t} ORDER BY id",
            vec!["1|a|NULL", "2|b|NULL", "3|c|NULL"],
        ),
        (
            "SELECT label FROM {t} WHERE id > 1 ORDER BY label",
            vec!["b", "c"],
        ),
        ("SELECT id FROM {t} WHERE label = 'a'", vec!["1"]),
        ("SELECT COUNT(*) FROM {t} WHERE added IS NULL", vec!["3"]),
        ("SELECT id FROM {t} WHERE id > 5", vec![]),
    ] {
        for t in ["files", "stream"] {
            let q = sql.replace("{t}", t);
            let r = engine
                .query(&q, QueryOptions::new().bypass_cache())
                .await
                .unwrap_or_else(|e| panic!("{q}: {e}"));
            assert_eq!(rows(r.batches()), want, "{q}");
        }
    }
    let plan = engine
        .explain("SELECT label FROM files WHERE id > 1", false)
        .await
        .unwrap();
    assert!(plan.contains("DataSourceExec"), "{plan}");
}

/// Deletion vectors, partition values, a column added later and column mapping cross
/// the wire: the tables read as files on two workers (in-process, over gRPC; scans
/// split to the byte) answer as their batch streams do on the coordinator.
#[cfg(feature = "distributed")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_vectors_and_column_mapping_on_workers() {
    use lakehouse_query::distributed::{Cluster, WorkerOptions, serve};

    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    let a = serve(any, WorkerOptions::new()).await.unwrap();
    let b = serve(any, WorkerOptions::new()).await.unwrap();
    let cluster = Cluster::new([a.local_addr().to_string(), b.local_addr().to_string()])
        .unwrap()
        .file_scan_bytes_per_partition(1);
    let engine = QueryEngine::builder()
        .target_partitions(2)
        .distributed(cluster)
        .build();
    let dv_dir = tempfile::tempdir().unwrap();
    let sales = sales_table(dv_dir.path()).await;
    engine
        .register_table("stream", Arc::new(StreamOnly(sales.clone())))
        .unwrap();
    engine.register_table("files", Arc::new(sales)).unwrap();
    let cm_dir = tempfile::tempdir().unwrap();
    let mapped = column_mapped_table(cm_dir.path()).await;
    engine
        .register_table("mapped_stream", Arc::new(StreamOnly(mapped.clone())))
        .unwrap();
    engine.register_table("mapped", Arc::new(mapped)).unwrap();

    let plan = engine
        .explain("SELECT region, COUNT(*) FROM files GROUP BY region", false)
        .await
        .unwrap();
    assert!(plan.contains("DistributedExec"), "{plan}");
    for sql in [
        "SELECT region, COUNT(*), SUM(qty), SUM(extra) FROM {t} GROUP BY region ORDER BY region",
        "SELECT id, qty FROM {t} WHERE qty > 3 AND region <> 'eu' ORDER BY id",
        "SELECT COUNT(*) FROM {t} a JOIN {t} b ON a.id = b.id",
    ] {
        let mut answers = Vec::new();
        for t in ["files", "stream"] {
            let q = sql.replace("{t}", t);
            let r = engine
                .query(&q, QueryOptions::new().bypass_cache())
                .await
                .unwrap_or_else(|e| panic!("{q}: {e}"));
            answers.push(rows(r.batches()));
        }
        assert!(!answers[0].is_empty(), "{sql}");
        assert_eq!(answers[0], answers[1], "{sql}");
    }
    for t in ["mapped", "mapped_stream"] {
        let q = format!("SELECT id, label, added FROM {t} WHERE id > 1 ORDER BY id");
        let r = engine
            .query(&q, QueryOptions::new().bypass_cache())
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        assert_eq!(rows(r.batches()), ["2|b|NULL", "3|c|NULL"], "{q}");
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
