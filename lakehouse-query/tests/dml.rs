//! SQL that writes: INSERT, DELETE, UPDATE, TRUNCATE and CREATE TABLE on writable
//! memory tables and in a memory catalog; typed errors that change nothing; conflict
//! retries; the result cache and materialized views after a write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{SchemaRef, UInt64Type};
use async_trait::async_trait;
use lakehouse_core::{
    AppendOutcome, Assignment, BatchStream, Changes, Error, ErrorKind, FilterSupport,
    MemoryCatalog, MemoryTable, MutationOutcome, Predicate, ScanRequest, TableCatalog,
    TableMutator, TableSink, TableSource, TableStatistics, TxnId, Version, WritableTable,
};
use lakehouse_query::{QueryEngine, QueryResult};

use crate::common::{column_i64, column_strings, sales_table};

fn count(r: &QueryResult) -> u64 {
    assert_eq!(r.schema().field(0).name(), "count");
    assert_eq!(r.num_rows(), 1);
    r.batches()[0]
        .column(0)
        .as_primitive::<UInt64Type>()
        .value(0)
}

async fn writable_sales(rows: i64) -> (QueryEngine, Arc<MemoryTable>) {
    let engine = QueryEngine::new();
    let table = sales_table(rows).await;
    engine
        .register_writable("sales", table.clone())
        .expect("register");
    (engine, table)
}

async fn total(engine: &QueryEngine, sql: &str) -> i64 {
    let r = engine.sql(sql).await.expect(sql);
    column_i64(&r, 0)[0]
}

#[tokio::test]
async fn insert_delete_update_on_a_memory_table() {
    let (engine, table) = writable_sales(30).await;
    let r = engine
        .sql("INSERT INTO sales VALUES ('eu', 100, 1, 2.5), ('us', 101, 2, NULL)")
        .await
        .expect("insert values");
    assert_eq!(count(&r), 2);
    assert_eq!(table.version().await.unwrap(), 2);
    // Columns by name, in another order; the missing nullable price is null; Int32
    // literals cast to the Int64 columns.
    let r = engine
        .sql("INSERT INTO sales (qty, item, region) SELECT qty, item + 1000, region FROM sales WHERE item = 3")
        .await
        .expect("insert select");
    assert_eq!(count(&r), 3);
    assert_eq!(
        total(
            &engine,
            "SELECT COUNT(*) FROM sales WHERE item > 1000 AND price IS NULL"
        )
        .await,
        3
    );
    assert_eq!(total(&engine, "SELECT COUNT(*) FROM sales").await, 35);

    let r = engine
        .sql("DELETE FROM sales WHERE region = 'eu' AND item < 5")
        .await
        .expect("delete");
    // Rows 0..30 with i % 3 == 0 and i % 10 < 5: 0, 3, 12, 21, 24.
    assert_eq!(count(&r), 5);
    assert_eq!(
        total(
            &engine,
            "SELECT COUNT(*) FROM sales WHERE region = 'eu' AND item < 5"
        )
        .await,
        0
    );
    assert_eq!(total(&engine, "SELECT COUNT(*) FROM sales").await, 30);

    let before = engine
        .sql("SELECT price FROM sales WHERE region = 'us' AND price IS NOT NULL ORDER BY price")
        .await
        .expect("prices");
    let r = engine
        .sql("UPDATE sales SET price = price * 2, qty = qty + 100 WHERE region = 'us'")
        .await
        .expect("update");
    // 10 rows of the 30 are us, plus the inserted ('us', 101) and the copy of row 13.
    assert_eq!(count(&r), 12);
    let after = engine
        .sql("SELECT price FROM sales WHERE region = 'us' AND price IS NOT NULL ORDER BY price")
        .await
        .expect("prices");
    let floats = |r: &QueryResult| -> Vec<f64> {
        column_strings(r, 0)
            .iter()
            .map(|p| p.parse::<f64>().expect("a price"))
            .collect()
    };
    let doubled: Vec<f64> = floats(&before).iter().map(|p| p * 2.0).collect();
    assert_eq!(floats(&after), doubled);
    assert_eq!(
        total(&engine, "SELECT MIN(qty) FROM sales WHERE region = 'us'").await,
        101
    );
    // The other rows are untouched.
    assert_eq!(
        total(&engine, "SELECT MAX(qty) FROM sales WHERE region <> 'us'").await,
        7
    );
    // SET a = b, b = a reads the old values.
    engine
        .sql("UPDATE sales SET item = qty, qty = item WHERE item = 101")
        .await
        .expect("swap");
    let r = engine
        .sql("SELECT item, qty FROM sales WHERE item = 102")
        .await
        .expect("swapped");
    assert_eq!(column_i64(&r, 1), [101]);

    let r = engine
        .sql("DELETE FROM sales WHERE item = -1")
        .await
        .expect("none");
    assert_eq!(count(&r), 0);
    let version = table.version().await.unwrap();
    let r = engine.sql("TRUNCATE sales").await.expect("truncate");
    assert_eq!(count(&r), 30);
    assert_eq!(table.version().await.unwrap(), version + 1);
    assert_eq!(total(&engine, "SELECT COUNT(*) FROM sales").await, 0);
}

#[tokio::test]
async fn bad_statements_are_typed_errors_that_change_nothing() {
    let (engine, table) = writable_sales(30).await;
    let read_only = sales_table(3).await;
    engine
        .register_table("archive", read_only.clone())
        .expect("register read-only");
    let version = table.version().await.unwrap();
    let cases = [
        ("INSERT INTO nope VALUES (1)", ErrorKind::TableNotFound),
        ("DELETE FROM nope WHERE a = 1", ErrorKind::TableNotFound),
        ("UPDATE nope SET a = 1", ErrorKind::TableNotFound),
        (
            "DELETE FROM sales WHERE colour = 'red'",
            ErrorKind::ColumnNotFound,
        ),
        ("UPDATE sales SET colour = 'red'", ErrorKind::ColumnNotFound),
        (
            "INSERT INTO sales VALUES ('eu', 'not a number', 1, 1.0)",
            ErrorKind::TypeMismatch,
        ),
        (
            "UPDATE sales SET qty = 'many' WHERE item = 1",
            ErrorKind::TypeMismatch,
        ),
        (
            "INSERT INTO sales VALUES (NULL, 1, 1, 1.0)",
            ErrorKind::SchemaMismatch,
        ),
        ("UPDATE sales SET qty = NULL", ErrorKind::SchemaMismatch),
        ("INSERT INTO sales VALUES ('eu', 1)", ErrorKind::InvalidSql),
        // Conditions the core predicate cannot express are refused, never approximated.
        (
            "DELETE FROM sales WHERE qty * 2 > 3",
            ErrorKind::Unsupported,
        ),
        (
            "DELETE FROM sales WHERE region LIKE 'e%'",
            ErrorKind::Unsupported,
        ),
        (
            "DELETE FROM sales WHERE item IN (SELECT item FROM archive)",
            ErrorKind::Unsupported,
        ),
        (
            "INSERT INTO archive VALUES ('eu', 1, 1, 1.0)",
            ErrorKind::Unsupported,
        ),
        ("DELETE FROM archive", ErrorKind::Unsupported),
        ("UPDATE archive SET qty = 1", ErrorKind::Unsupported),
        ("CREATE TABLE t (a BIGINT)", ErrorKind::Unsupported),
    ];
    for (sql, kind) in cases {
        let e = engine.sql(sql).await.expect_err(sql);
        assert_eq!(e.kind(), kind, "{sql}: {e}");
    }
    let e = engine
        .sql("DELETE FROM sales WHERE region LIKE 'e%'")
        .await
        .unwrap_err();
    assert!(e.message().contains("LIKE"), "the condition is named: {e}");
    assert_eq!(e.context().table.as_deref(), Some("sales"));
    assert_eq!(table.version().await.unwrap(), version);
    assert_eq!(read_only.version().await.unwrap(), 1);
    assert_eq!(total(&engine, "SELECT COUNT(*) FROM sales").await, 30);
}

#[tokio::test]
async fn create_table_in_a_catalog_and_open_it_again() {
    let catalog = MemoryCatalog::new();
    let engine = QueryEngine::builder()
        .catalog(Arc::new(catalog.clone()))
        .build();
    let r = engine
        .sql("CREATE TABLE orders (id BIGINT NOT NULL, region VARCHAR, amount DOUBLE) PARTITIONED BY (region)")
        .await
        .expect("create");
    assert_eq!(count(&r), 0);
    assert_eq!(
        catalog.partition_columns("orders"),
        Some(vec!["region".into()])
    );
    let schema = catalog.get("orders").expect("in the catalog").schema();
    assert!(!schema.field(0).is_nullable());
    assert_eq!(
        schema.field(1).data_type(),
        &arrow::datatypes::DataType::Utf8
    );
    engine
        .sql("INSERT INTO orders VALUES (1, 'eu', 10.0), (2, 'us', 20.0), (3, 'eu', 5.0)")
        .await
        .expect("insert");
    let r = engine
        .sql("CREATE TABLE eu_orders AS SELECT id, amount FROM orders WHERE region = 'eu'")
        .await
        .expect("ctas");
    assert_eq!(count(&r), 2);
    assert_eq!(total(&engine, "SELECT SUM(id) FROM eu_orders").await, 4);
    let e = engine
        .sql("CREATE TABLE orders (id BIGINT)")
        .await
        .expect_err("exists");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    let r = engine
        .sql("CREATE TABLE IF NOT EXISTS orders (id BIGINT)")
        .await
        .expect("if not exists");
    assert_eq!(count(&r), 0);
    let e = engine
        .sql("CREATE TABLE t2 (id BIGINT) PARTITIONED BY (nope)")
        .await
        .expect_err("unknown partition column");
    assert_eq!(e.kind(), ErrorKind::ColumnNotFound);
    let e = engine
        .sql("CREATE TABLE t3 AS SELECT * FROM missing")
        .await
        .expect_err("query over a missing table");
    assert_eq!(e.kind(), ErrorKind::TableNotFound);
    assert_eq!(
        catalog.list_tables().await.unwrap(),
        ["eu_orders", "orders"]
    );

    // A new engine over the same catalog finds both tables, writable.
    let again = QueryEngine::builder()
        .catalog(Arc::new(catalog.clone()))
        .open()
        .await
        .expect("open");
    assert_eq!(again.tables(), ["eu_orders", "orders"]);
    let r = again
        .sql("DELETE FROM orders WHERE region = 'eu'")
        .await
        .expect("delete");
    assert_eq!(count(&r), 2);
    assert_eq!(total(&engine, "SELECT COUNT(*) FROM orders").await, 1);
}

#[tokio::test]
async fn results_and_views_follow_writes() {
    let (engine, _table) = writable_sales(30).await;
    let sql = "SELECT SUM(qty) FROM sales WHERE region = 'eu'";
    let first = total(&engine, sql).await;
    let cached = engine.sql(sql).await.expect("again");
    assert!(cached.from_cache());
    engine
        .sql("CREATE MATERIALIZED VIEW totals AS SELECT region, SUM(qty) AS q FROM sales GROUP BY region")
        .await
        .expect("view");
    engine
        .sql("UPDATE sales SET qty = qty + 1 WHERE region = 'eu'")
        .await
        .expect("update");
    let r = engine.sql(sql).await.expect("after the update");
    assert!(!r.from_cache());
    assert_eq!(column_i64(&r, 0)[0], first + 10);
    engine
        .sql("DELETE FROM sales WHERE region = 'us'")
        .await
        .expect("delete");
    engine
        .refresh_materialized_view("totals")
        .await
        .expect("refresh");
    let r = engine
        .sql("SELECT region, q FROM totals ORDER BY region")
        .await
        .expect("view");
    assert_eq!(column_strings(&r, 0), ["apac", "eu"]);
    assert_eq!(column_i64(&r, 1)[1], first + 10);
}

/// A memory table whose writes fail with a conflict the first `conflicts` times.
#[derive(Debug)]
struct Contended {
    inner: MemoryTable,
    conflicts: AtomicU32,
}

impl Contended {
    fn conflict(&self) -> lakehouse_core::Result<()> {
        let left = self.conflicts.load(Ordering::SeqCst);
        if left > 0 {
            self.conflicts.store(left - 1, Ordering::SeqCst);
            return Err(Error::new(ErrorKind::Conflict, "a concurrent commit"));
        }
        Ok(())
    }
}

#[async_trait]
impl TableSource for Contended {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
    async fn version(&self) -> lakehouse_core::Result<Version> {
        self.inner.version().await
    }
    fn filter_support(&self, p: &Predicate) -> FilterSupport {
        self.inner.filter_support(p)
    }
    async fn scan(&self, request: ScanRequest) -> lakehouse_core::Result<BatchStream> {
        self.inner.scan(request).await
    }
    async fn statistics(&self, v: Option<Version>) -> lakehouse_core::Result<TableStatistics> {
        self.inner.statistics(v).await
    }
    async fn changes_since(&self, v: Version) -> lakehouse_core::Result<Changes> {
        self.inner.changes_since(v).await
    }
}

#[async_trait]
impl TableSink for Contended {
    fn sink_schema(&self) -> SchemaRef {
        self.inner.sink_schema()
    }
    async fn append(
        &self,
        batches: Vec<RecordBatch>,
        txn: Option<TxnId>,
    ) -> lakehouse_core::Result<AppendOutcome> {
        self.conflict()?;
        self.inner.append(batches, txn).await
    }
    async fn last_sequence(&self, app_id: &str) -> lakehouse_core::Result<Option<u64>> {
        self.inner.last_sequence(app_id).await
    }
}

#[async_trait]
impl TableMutator for Contended {
    async fn delete_where(&self, p: &Predicate) -> lakehouse_core::Result<MutationOutcome> {
        self.conflict()?;
        self.inner.delete_where(p).await
    }
    async fn update_where(
        &self,
        p: &Predicate,
        a: &[Assignment],
    ) -> lakehouse_core::Result<MutationOutcome> {
        self.conflict()?;
        self.inner.update_where(p, a).await
    }
}

#[tokio::test]
async fn conflicts_are_retried_then_reported() {
    let inner = (*sales_table(30).await).clone();
    let table = Arc::new(Contended {
        inner: inner.clone(),
        conflicts: AtomicU32::new(0),
    });
    let engine = QueryEngine::builder().write_attempts(3).build();
    let writable: Arc<dyn WritableTable> = table.clone();
    engine
        .register_writable("sales", writable)
        .expect("register");
    for (sql, rows) in [
        ("INSERT INTO sales VALUES ('eu', 1, 1, 1.0)", 1),
        ("DELETE FROM sales WHERE item = 1", 4),
        ("UPDATE sales SET qty = 0 WHERE item = 2", 3),
    ] {
        table.conflicts.store(2, Ordering::SeqCst);
        let r = engine.sql(sql).await.expect(sql);
        assert_eq!(count(&r), rows, "{sql}");
        assert_eq!(table.conflicts.load(Ordering::SeqCst), 0);
    }
    let version = inner.version().await.unwrap();
    table.conflicts.store(3, Ordering::SeqCst);
    let e = engine
        .sql("DELETE FROM sales WHERE item = 3")
        .await
        .expect_err("three conflicts");
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(e.context().table.as_deref(), Some("sales"));
    assert_eq!(inner.version().await.unwrap(), version);
}

/// Regression: `SET` values are simplified before they run, as DataFusion's optimizer
/// would. DataFusion only evaluates `coalesce` rewritten into a `CASE`, so
/// `SET price = coalesce(price, 100.0) + 1` failed with an internal error
/// ("coalesce should have been simplified to case"); found by comparing DML with
/// DuckDB (`examples/tests/dml_duckdb.rs`).
#[tokio::test]
async fn set_values_with_coalesce_run() {
    let (engine, _table) = writable_sales(6).await;
    engine
        .sql("UPDATE sales SET price = NULL WHERE item = 1")
        .await
        .expect("null a price");
    let r = engine
        .sql("UPDATE sales SET price = coalesce(price, 100.0) + 1 WHERE item < 3")
        .await
        .expect("coalesce in SET");
    assert_eq!(count(&r), 3);
    let r = engine
        .sql("SELECT price FROM sales WHERE item < 3 ORDER BY item")
        .await
        .expect("prices");
    assert_eq!(column_i64(&r, 0), [1, 101, 3]);
}

/// Regression: a `WHERE` that needs constant folding (`item > 2 + 3`) was simplified
/// whole by DataFusion's simplifier, which turns `price NOT IN (1) OR price NOT IN (2)`
/// into `true` also where `price` is null (apache/datafusion#24258): the delete took
/// rows SQL keeps. Only the comparisons are simplified now, each on its own.
#[tokio::test]
async fn folding_a_where_keeps_the_null_semantics_of_the_rest() {
    let (engine, _table) = writable_sales(10).await;
    engine
        .sql("UPDATE sales SET price = NULL WHERE item < 4")
        .await
        .expect("null some prices");
    let r = engine
        .sql("DELETE FROM sales WHERE price NOT IN (1.0) OR price NOT IN (2.0) OR item > 2 + 5")
        .await
        .expect("delete");
    // Items 4..=9 have a price (4.0 ..= 9.0): both NOT IN hold. Items 0..=3 have none:
    // every disjunct is null or false (item > 7 is false), so they stay.
    assert_eq!(count(&r), 6);
    assert_eq!(total(&engine, "SELECT COUNT(*) FROM sales").await, 4);
}

/// Regression: a `MERGE` condition that is null does not hold, also when DataFusion's
/// simplifier would fold it to `true` (`x NOT IN (1) OR x NOT IN (2)` with `x` null).
#[tokio::test]
async fn a_null_merge_condition_does_not_hold() {
    let (engine, _table) = writable_sales(3).await;
    let r = engine
        .sql(
            "MERGE INTO sales t USING (SELECT 1 AS item, CAST(NULL AS DOUBLE) AS p) s \
             ON t.item = s.item \
             WHEN MATCHED AND (s.p NOT IN (1.0) OR s.p NOT IN (2.0)) THEN DELETE",
        )
        .await
        .expect("merge");
    assert_eq!(count(&r), 0);
    assert_eq!(total(&engine, "SELECT COUNT(*) FROM sales").await, 3);
}

/// Regression: DataFusion 55's simplifier intersects `IN` lists without SQL's null
/// semantics (`x NOT IN (1) OR x NOT IN (2)` became `true` also where `x` is null, a
/// `NULL` item was dropped, list items that are columns were compared by their text).
/// The engine combines the lists itself before DataFusion simplifies.
#[tokio::test]
async fn select_combines_in_lists_null_safely() {
    let (engine, _table) = writable_sales(10).await;
    engine
        .sql("UPDATE sales SET price = NULL WHERE item < 4")
        .await
        .expect("null some prices");
    // Items 4..=9 have prices 4.0..=9.0, items 0..=3 none.
    let cases = [
        // Both NOT IN hold for every price; for a null price both are null.
        ("price NOT IN (1.0) OR price NOT IN (2.0)", 6),
        ("(price NOT IN (1.0) OR price NOT IN (2.0)) IS NULL", 4),
        ("(price NOT IN (1.0) OR price NOT IN (2.0)) IS TRUE", 6),
        // The inner conjunction is false for a price, null for none.
        (
            "NOT ((price = 4.0 OR price = 5.0) AND (price = 6.0 OR price = 7.0))",
            6,
        ),
        ("NOT (price IN (4.0, 5.0) AND price NOT IN (4.0, 5.0))", 6),
        // Non-empty intersection: true unless the price is 3.0 (none is) or null.
        ("price NOT IN (1.0, 2.0, 3.0) OR price NOT IN (3.0, 4.0)", 6),
        ("price IN (4.0, 5.0, 6.0) AND price IN (5.0, 6.0, 7.0)", 2),
        // With a NULL in the list: 4.0 -> false OR true; 5.0 -> null OR false; others
        // null OR true.
        ("price NOT IN (4.0, NULL) OR price NOT IN (5.0)", 5),
        ("(price IN (4.0, NULL) AND price IN (4.0, 5.0)) IS NULL", 5),
        // Items that are not constants.
        ("price IN (CAST(item AS DOUBLE)) AND price IN (price)", 6),
        (
            "NOT (price IN (CAST(item AS DOUBLE)) AND price IN (price))",
            0,
        ),
    ];
    for (condition, expected) in cases {
        let sql = format!("SELECT COUNT(*) FROM sales WHERE {condition}");
        assert_eq!(total(&engine, &sql).await, expected, "{sql}");
        // The same condition computed as a value, not a filter.
        let sql = format!("SELECT SUM(CASE WHEN {condition} THEN 1 ELSE 0 END) FROM sales");
        assert_eq!(total(&engine, &sql).await, expected, "{sql}");
    }
}
