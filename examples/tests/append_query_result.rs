//! A DataFusion query result appended to a table and read back: DataFusion reads Parquet
//! strings as `Utf8View` and SQL `TIMESTAMP` is nanoseconds, which `Table::append`
//! converts to the table's `Utf8` and microseconds.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use futures::TryStreamExt;
use lakehouse_core::{ScanRequest, TableSource};
use lakehouse_query::{QueryEngine, QueryOptions};
use lakehouse_storage::{Location, PartitionField, Table, TableOptions};

const T0: i64 = 1_795_564_800_000_000;

fn orders_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("price", DataType::Float64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
    ]))
}

fn summary_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("region", DataType::Utf8, false),
        Field::new("orders", DataType::Int64, false),
        Field::new("revenue", DataType::Float64, true),
        Field::new(
            "last_ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("label", DataType::Utf8, true),
    ]))
}

/// The Parquet data files under `dir`, outside the log.
fn data_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.ends_with("_delta_log") {
            data_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_result_appends_to_a_table_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let regions = ["eu", "us", "apac"];
    let n = 300i64;
    let orders = Table::create(
        Location::local(dir.path().join("orders")).unwrap(),
        orders_schema(),
        TableOptions::new(),
    )
    .await
    .unwrap();
    let batch = RecordBatch::try_new(
        orders_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| regions[(i % 3) as usize]),
            )),
            Arc::new(Float64Array::from_iter_values(
                (0..n).map(|i| i as f64 * 0.5),
            )),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                (0..n).map(|i| T0 + i * 1_000_000),
            )),
        ],
    )
    .unwrap();
    orders.append(vec![batch]).await.unwrap();

    // DataFusion reads the table's data file itself, as it reads any Parquet.
    let mut files = Vec::new();
    data_files(&dir.path().join("orders"), &mut files);
    assert_eq!(files.len(), 1);
    let engine = QueryEngine::builder().target_partitions(2).build();
    engine
        .register_parquet("orders", files[0].to_str().unwrap())
        .await
        .unwrap();
    let result = engine
        .query(
            "SELECT region, count(*) AS orders, sum(price) AS revenue, \
                    CAST(max(ts) AS TIMESTAMP) AS last_ts, \
                    arrow_cast(concat('region ', region), 'Dictionary(Int32, Utf8)') AS label \
             FROM orders GROUP BY region",
            QueryOptions::new().bypass_cache(),
        )
        .await
        .unwrap();
    let types: BTreeMap<&str, &DataType> = result
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    assert_eq!(types["region"], &DataType::Utf8View, "{types:?}");
    assert_eq!(
        types["last_ts"],
        &DataType::Timestamp(TimeUnit::Nanosecond, None),
        "{types:?}"
    );

    let summary = Table::create(
        Location::local(dir.path().join("summary")).unwrap(),
        summary_schema(),
        TableOptions::new().partition_by([PartitionField::identity("region")]),
    )
    .await
    .unwrap();
    let info = summary.append(result.batches().to_vec()).await.unwrap();
    assert_eq!(info.rows, 3);

    let back: Vec<RecordBatch> = summary
        .scan(ScanRequest::new())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut got = BTreeMap::new();
    for b in &back {
        assert_eq!(b.schema(), summary_schema());
        let region = b.column(0).as_string::<i32>();
        let count = b.column(1).as_primitive::<Int64Type>();
        let revenue = b.column(2).as_primitive::<Float64Type>();
        let last = b.column(3).as_primitive::<TimestampMicrosecondType>();
        let label = b.column(4).as_string::<i32>();
        for i in 0..b.num_rows() {
            assert!(last.is_valid(i));
            got.insert(
                region.value(i).to_owned(),
                (
                    count.value(i),
                    revenue.value(i),
                    last.value(i),
                    label.value(i).to_owned(),
                ),
            );
        }
    }
    let mut want = BTreeMap::new();
    for (r, name) in regions.iter().enumerate() {
        let ids: Vec<i64> = (0..n).filter(|i| i % 3 == r as i64).collect();
        let revenue: f64 = ids.iter().map(|&i| i as f64 * 0.5).sum();
        let last = T0 + ids.iter().max().unwrap() * 1_000_000;
        want.insert(
            (*name).to_owned(),
            (ids.len() as i64, revenue, last, format!("region {name}")),
        );
    }
    assert_eq!(got, want);
}

/// `n` orders from `first`: 4 regions, prices `k + 0.5` (sums of them are exact).
fn orders(first: i64, n: usize) -> RecordBatch {
    let ids: Vec<i64> = (first..first + n as i64).collect();
    let regions = ["eu", "us", "apac", "latam"];
    RecordBatch::try_new(
        orders_schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| regions[(*i % 4) as usize]),
            )),
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|i| (*i % 50) as f64 + 0.5),
            )),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                ids.iter().map(|i| T0 + i),
            )),
        ],
    )
    .unwrap()
}

/// The rows of `sql` as text, sorted.
async fn text_rows(engine: &QueryEngine, sql: &str) -> Vec<String> {
    let r = engine
        .query(sql, QueryOptions::new().bypass_cache())
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in r.batches() {
        for i in 0..b.num_rows() {
            let row: Vec<String> = b
                .columns()
                .iter()
                .map(|c| arrow::util::display::array_value_to_string(c, i).unwrap())
                .collect();
            out.push(row.join("|"));
        }
    }
    out.sort();
    out
}

/// Views over a Delta table, copy-on-write and with deletion vectors, after deletes
/// (one of which empties a group), an update and an append: the `SUM` / `COUNT` /
/// `AVG` views refresh incrementally, taking the removed rows back, and equal the
/// query run from scratch; the `MIN` view refreshes fully and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_over_a_table_take_back_deleted_and_updated_rows() {
    use lakehouse_core::{Assignment, TableMutator, col};
    use lakehouse_query::RefreshKind;
    const BY_REGION: &str = "SELECT region, SUM(price) AS revenue, COUNT(*) AS n, \
        AVG(price) AS avg_price FROM orders WHERE order_id % 3 <> 0 GROUP BY region";
    const TOTAL: &str = "SELECT SUM(price) AS revenue, COUNT(*) AS n FROM orders";
    const LOWEST: &str = "SELECT region, MIN(price) AS lo FROM orders GROUP BY region";
    for dv in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let t = Arc::new(
            Table::create(
                Location::local(dir.path()).unwrap(),
                orders_schema(),
                TableOptions::new()
                    .partition_by([PartitionField::identity("region")])
                    .deletion_vectors(dv),
            )
            .await
            .unwrap(),
        );
        t.append(vec![orders(0, 400)]).await.unwrap();
        let engine = QueryEngine::new();
        engine.register_table("orders", t.clone()).unwrap();
        let views = [
            ("by_region", BY_REGION),
            ("total", TOTAL),
            ("lowest", LOWEST),
        ];
        for (name, sql) in views {
            engine.create_materialized_view(name, sql).await.unwrap();
        }
        let check = |step: &'static str| {
            let engine = &engine;
            async move {
                for (name, sql) in views {
                    let outcome = engine.refresh_materialized_view(name).await.unwrap();
                    let ctx = format!("dv {dv}, {step}, {name}: {outcome:?}");
                    if name == "lowest" && step != "append" {
                        assert_eq!(outcome.kind(), RefreshKind::Full, "{ctx}");
                        assert!(outcome.reason().unwrap().contains("MIN"), "{ctx}");
                    } else {
                        assert_eq!(outcome.kind(), RefreshKind::Incremental, "{ctx}");
                    }
                    assert_eq!(
                        text_rows(engine, &format!("SELECT * FROM {name}")).await,
                        text_rows(engine, sql).await,
                        "{ctx}"
                    );
                }
            }
        };
        t.delete_where(&col("order_id").lt(40i64)).await.unwrap();
        check("delete").await;
        let total = engine.refresh_materialized_view("total").await.unwrap();
        assert_eq!(total.kind(), RefreshKind::UpToDate);
        // Every eu row: the group is gone from the view.
        t.delete_where(&col("region").eq("eu")).await.unwrap();
        check("delete a group").await;
        assert_eq!(text_rows(&engine, "SELECT * FROM by_region").await.len(), 3);
        t.update_where(
            &col("order_id").lt(200i64).and(col("region").eq("us")),
            &[Assignment::scalar("price", 7.5)],
        )
        .await
        .unwrap();
        check("update").await;
        let by_region = engine
            .materialized_view_info("by_region")
            .unwrap()
            .last_outcome
            .unwrap();
        assert!(by_region.removed_rows() > 0 && by_region.delta_rows() > 0);
        t.append(vec![orders(400, 40)]).await.unwrap();
        check("append").await;
        // Every row: the global aggregate is one row of a null sum and a zero count.
        t.delete_where(&col("order_id").gt_eq(0i64)).await.unwrap();
        check("delete all").await;
        assert_eq!(text_rows(&engine, "SELECT * FROM total").await, ["|0"]);
    }
}

/// `MERGE INTO` a partitioned Delta table through SQL: one commit, the partitions of
/// the source's keys rewritten, the others untouched; a bad statement commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_merge_into_a_partitioned_table_is_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let regions = ["eu", "us", "apac"];
    let n = 60i64;
    let orders = Table::create(
        Location::local(dir.path()).unwrap(),
        orders_schema(),
        TableOptions::new().partition_by([PartitionField::identity("region")]),
    )
    .await
    .unwrap();
    let batch = RecordBatch::try_new(
        orders_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| regions[(i % 3) as usize]),
            )),
            Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                (0..n).map(|i| T0 + i),
            )),
        ],
    )
    .unwrap();
    orders.append(vec![batch]).await.unwrap();
    let v = orders.version().await.unwrap();
    let us_files = |t: Table| async move {
        let mut p: Vec<String> = t
            .files(None, Some(&lakehouse_core::col("region").eq("us")))
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        p.sort();
        p
    };
    let us_before = us_files(orders.clone()).await;
    let engine = QueryEngine::new();
    engine
        .register_writable("orders", Arc::new(orders.clone()))
        .unwrap();

    // Orders 0 and 3 (eu) change price, 6 (eu) goes, 1000 is new; the us partition is
    // never read.
    let r = engine
        .sql(
            "MERGE INTO orders t \
             USING (SELECT * FROM (VALUES (0, 'eu', 100.0), (3, 'eu', 300.0), (6, 'eu', -1.0), \
                    (1000, 'apac', 5.0)) AS v(order_id, region, price)) s \
             ON t.order_id = s.order_id AND t.region = s.region AND t.region <> 'us' \
             WHEN MATCHED AND s.price < 0 THEN DELETE \
             WHEN MATCHED THEN UPDATE SET price = s.price \
             WHEN NOT MATCHED THEN INSERT (order_id, region, price, ts) \
                  VALUES (s.order_id, s.region, s.price, CAST(0 AS TIMESTAMP))",
        )
        .await
        .unwrap();
    let count = r.batches()[0]
        .column(0)
        .as_primitive::<arrow::datatypes::UInt64Type>();
    assert_eq!(count.value(0), 4);
    assert_eq!(orders.version().await.unwrap(), v + 1);
    assert_eq!(us_files(orders.clone()).await, us_before);
    let r = engine
        .query(
            "SELECT order_id, price FROM orders WHERE order_id IN (0, 3, 6, 9, 1000) \
             ORDER BY order_id",
            QueryOptions::new().bypass_cache(),
        )
        .await
        .unwrap();
    let b = arrow::compute::concat_batches(r.schema(), r.batches()).unwrap();
    let ids: Vec<i64> = b.column(0).as_primitive::<Int64Type>().values().to_vec();
    let prices: Vec<f64> = b.column(1).as_primitive::<Float64Type>().values().to_vec();
    assert_eq!(ids, [0, 3, 9, 1000]);
    assert_eq!(prices, [100.0, 300.0, 9.0, 5.0]);

    // A value of the wrong type is refused before anything is written.
    let err = engine
        .sql(
            "MERGE INTO orders t USING (SELECT 1 AS order_id) s ON t.order_id = s.order_id \
             WHEN MATCHED THEN UPDATE SET price = 'free'",
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), lakehouse_core::ErrorKind::TypeMismatch, "{err}");
    assert_eq!(orders.version().await.unwrap(), v + 1);
    let all: Vec<RecordBatch> = orders
        .scan(ScanRequest::new())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.iter().map(|b| b.num_rows()).sum::<usize>(), 60);
}

/// Column `c` of a result as i64 values.
fn ints(result: &lakehouse_query::QueryResult, c: usize) -> Vec<i64> {
    result
        .batches()
        .iter()
        .flat_map(|b| {
            let col = arrow::compute::cast(b.column(c), &DataType::Int64).unwrap();
            col.as_primitive::<Int64Type>().values().to_vec()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_writes_to_delta_tables_under_a_root() {
    use lakehouse_core::{ErrorKind, TableCatalog};
    use lakehouse_storage::TableRoot;

    let dir = tempfile::tempdir().unwrap();
    let root = TableRoot::local(dir.path()).unwrap();
    let engine = QueryEngine::builder()
        .target_partitions(2)
        .catalog(Arc::new(root.clone()))
        .build();
    let run = |sql: &'static str| {
        let engine = engine.clone();
        async move {
            let r = engine
                .sql(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            ints(&r, 0)[0]
        }
    };
    assert_eq!(
        run(
            "CREATE TABLE orders (id BIGINT NOT NULL, region VARCHAR NOT NULL, price DOUBLE) \
             PARTITIONED BY (region)"
        )
        .await,
        0
    );
    assert_eq!(
        run(
            "INSERT INTO orders SELECT value, CASE value % 3 WHEN 0 THEN 'eu' WHEN 1 THEN 'us' \
             ELSE 'apac' END, value * 0.5 FROM generate_series(0, 299)"
        )
        .await,
        300
    );
    assert_eq!(
        run("INSERT INTO orders VALUES (1000, 'eu', NULL), (1001, 'latam', 1.5)").await,
        2
    );
    let table = root.open("orders").await.unwrap();
    assert_eq!(table.version().await.unwrap(), 2);
    assert_eq!(
        table
            .partitioning()
            .iter()
            .map(|p| p.name.clone())
            .collect::<Vec<_>>(),
        ["region"]
    );
    // A partition directory per region.
    assert!(dir.path().join("orders").join("region=latam").is_dir());

    // A delete by partition value removes files whole.
    assert_eq!(run("DELETE FROM orders WHERE region = 'eu'").await, 101);
    assert_eq!(run("SELECT COUNT(*) FROM orders").await, 201);
    assert_eq!(
        run("UPDATE orders SET price = price * 2 WHERE region = 'us' AND id < 30").await,
        10
    );
    assert_eq!(
        run("SELECT CAST(SUM(price) AS BIGINT) FROM orders WHERE region = 'us' AND id < 30").await,
        // 2 * 0.5 * (1 + 4 + ... + 28)
        (0..30).filter(|i| i % 3 == 1).sum::<i64>()
    );
    // Moving rows to another partition.
    assert_eq!(
        run("UPDATE orders SET region = 'latam' WHERE id = 1").await,
        1
    );
    assert_eq!(
        run("SELECT COUNT(*) FROM orders WHERE region = 'latam'").await,
        2
    );
    assert_eq!(
        run("CREATE TABLE us_orders AS SELECT id, price FROM orders WHERE region = 'us'").await,
        99
    );

    // Bad statements change nothing.
    let version = table.version().await.unwrap();
    for (sql, kind) in [
        (
            "DELETE FROM orders WHERE nope = 1",
            ErrorKind::ColumnNotFound,
        ),
        (
            "INSERT INTO orders VALUES ('x', 'eu', 1.0)",
            ErrorKind::TypeMismatch,
        ),
        (
            "INSERT INTO orders VALUES (1, NULL, 1.0)",
            ErrorKind::SchemaMismatch,
        ),
        (
            "UPDATE orders SET price = 1 WHERE price + 1 > 2",
            ErrorKind::Unsupported,
        ),
        ("DELETE FROM missing", ErrorKind::TableNotFound),
    ] {
        let e = engine.sql(sql).await.expect_err(sql);
        assert_eq!(e.kind(), kind, "{sql}: {e}");
    }
    let table = root.open("orders").await.unwrap();
    assert_eq!(table.version().await.unwrap(), version);

    // Names that would leave the root are refused by the catalog itself.
    let e = root
        .create_table("../escape", orders_schema(), &[])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    // Another engine over the root sees both tables and their rows.
    let again = QueryEngine::builder()
        .catalog(Arc::new(root.clone()))
        .open()
        .await
        .unwrap();
    assert_eq!(again.tables(), ["orders", "us_orders"]);
    let r = again
        .sql("SELECT COUNT(*), SUM(id) FROM us_orders")
        .await
        .unwrap();
    assert_eq!(ints(&r, 0), [99]);
    assert_eq!(
        ints(&r, 1),
        [(0..300).filter(|i| i % 3 == 1 && *i != 1).sum::<i64>()]
    );
}
