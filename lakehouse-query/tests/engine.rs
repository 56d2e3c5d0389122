//! SQL, pushdown, errors, limits, cancellation and the result cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use lakehouse_core::{FilterSupport, MemoryTable, Scalar, TableSink, col as pcol};
use lakehouse_query::{CancelToken, ErrorKind, QueryEngine, QueryOptions, WorkloadQueue};

use crate::common::{
    Endless, Sloppy, column_i64, column_strings, sales_batch, sales_schema, sales_table,
};

mod merge;

#[tokio::test]
async fn sql_over_a_memory_table() {
    let engine = QueryEngine::new();
    engine
        .register_table("sales", sales_table(300).await)
        .expect("register");
    let r = engine
        .sql("SELECT region, COUNT(*) AS n, SUM(qty) AS q FROM sales GROUP BY region ORDER BY region")
        .await
        .expect("group by");
    assert_eq!(column_strings(&r, 0), ["apac", "eu", "us"]);
    assert_eq!(column_i64(&r, 1), [100, 100, 100]);
    // qty = i % 7 + 1 summed over i = region, region + 3, ...
    let expect: Vec<i64> = (0..3)
        .map(|reg| (0..300).filter(|i| i % 3 == reg).map(|i| i % 7 + 1).sum())
        .collect();
    // Sorted by name: apac (2), eu (0), us (1).
    assert_eq!(column_i64(&r, 2), [expect[2], expect[0], expect[1]]);
    assert_eq!(engine.tables(), ["sales"]);
}

#[tokio::test]
async fn exact_pushdown_removes_the_filter() {
    let engine = QueryEngine::new();
    let source = Arc::new(Sloppy::new(sales_table(1000).await, FilterSupport::Exact));
    engine
        .register_table("sales", source.clone())
        .expect("register");
    let sql = "SELECT item, qty FROM sales WHERE item = 3 AND qty > 2";
    let r = engine.sql(sql).await.expect("query");
    let expect = (0..1000).filter(|i| i % 10 == 3 && i % 7 + 1 > 2).count();
    assert_eq!(r.num_rows(), expect);
    assert!(column_i64(&r, 0).iter().all(|v| *v == 3));
    let pushed = source
        .last_predicate
        .lock()
        .clone()
        .expect("a predicate was pushed");
    assert_eq!(pushed, pcol("item").eq(3i64).and(pcol("qty").gt(2i64)));
    let plan = engine.explain(sql, false).await.expect("explain");
    assert!(
        !plan.contains("FilterExec"),
        "exact filters are not re-applied:\n{plan}"
    );
    assert!(plan.contains("LakehouseScanExec"), "{plan}");
}

#[tokio::test]
async fn inexact_pushdown_filters_again() {
    for support in [FilterSupport::Inexact, FilterSupport::Unsupported] {
        let engine = QueryEngine::new();
        let source = Arc::new(Sloppy::new(sales_table(1000).await, support));
        engine
            .register_table("sales", source.clone())
            .expect("register");
        let sql = "SELECT item FROM sales WHERE item = 3";
        let r = engine.sql(sql).await.expect("query");
        assert_eq!(r.num_rows(), 100, "{support:?}");
        assert!(column_i64(&r, 0).iter().all(|v| *v == 3), "{support:?}");
        let plan = engine.explain(sql, false).await.expect("explain");
        assert!(plan.contains("FilterExec"), "{support:?}:\n{plan}");
        let pushed = source.last_predicate.lock().clone();
        match support {
            FilterSupport::Inexact => assert_eq!(pushed, Some(pcol("item").eq(3i64))),
            _ => assert_eq!(pushed, None),
        }
    }
}

#[tokio::test]
async fn untranslatable_filters_are_applied_by_the_engine() {
    let engine = QueryEngine::new();
    engine
        .register_table("sales", sales_table(100).await)
        .expect("register");
    let r = engine
        .sql("SELECT item FROM sales WHERE item + 1 = 4 AND qty > 0")
        .await
        .expect("query");
    assert_eq!(r.num_rows(), 10);
    assert!(column_i64(&r, 0).iter().all(|v| *v == 3));
}

#[tokio::test]
async fn errors_name_the_problem() {
    let engine = QueryEngine::new();
    engine
        .register_table("sales", sales_table(10).await)
        .expect("register");
    let e = engine
        .sql("SELEC region FROM sales")
        .await
        .expect_err("typo");
    assert_eq!(e.kind(), ErrorKind::InvalidSql, "{e}");
    assert!(e.to_string().contains("SELEC"), "{e}");

    let e = engine
        .sql("SELECT * FROM nope")
        .await
        .expect_err("no table");
    assert_eq!(e.kind(), ErrorKind::TableNotFound, "{e}");
    assert!(e.to_string().contains("nope"), "{e}");
    assert_eq!(e.context().table.as_deref(), Some("nope"));

    let e = engine
        .sql("SELECT colour FROM sales")
        .await
        .expect_err("no column");
    assert_eq!(e.kind(), ErrorKind::ColumnNotFound, "{e}");
    assert!(e.to_string().contains("colour"), "{e}");

    let e = engine
        .register_table("sales", sales_table(1).await)
        .expect_err("duplicate");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    let e = engine
        .register_table("bad name", sales_table(1).await)
        .expect_err("bad name");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn missing_tables_are_named_but_views_and_ctes_are_found() {
    let engine = QueryEngine::new();
    engine
        .register_table("sales", sales_table(30).await)
        .expect("register");
    engine
        .sql("CREATE VIEW eu AS SELECT qty FROM sales WHERE region = 'eu'")
        .await
        .expect("a view");
    engine
        .sql("CREATE MATERIALIZED VIEW counts AS SELECT region, COUNT(*) AS n FROM sales GROUP BY region")
        .await
        .expect("a materialized view");
    let r = engine
        .sql("WITH big AS (SELECT qty FROM eu WHERE qty > 3) SELECT COUNT(*) FROM big")
        .await
        .expect("a CTE over a view");
    let expect = (0..30).filter(|i| i % 3 == 0 && i % 7 + 1 > 3).count() as i64;
    assert_eq!(column_i64(&r, 0), [expect]);
    let r = engine
        .sql("SELECT SUM(n) FROM counts")
        .await
        .expect("a materialized view is a table");
    assert_eq!(column_i64(&r, 0), [30]);

    let e = engine
        .sql("SELECT * FROM sales JOIN (SELECT * FROM gone) g ON true")
        .await
        .expect_err("a subquery reads a missing table");
    assert_eq!(e.kind(), ErrorKind::TableNotFound, "{e}");
    assert_eq!(e.context().table.as_deref(), Some("gone"));
    let e = engine
        .sql("CREATE VIEW w AS SELECT * FROM gone")
        .await
        .expect_err("a view over a missing table");
    assert_eq!(e.context().table.as_deref(), Some("gone"));
    let e = engine
        .create_materialized_view("broken", "SELECT * FROM gone")
        .await
        .expect_err("a materialized view over a missing table");
    assert_eq!(e.kind(), ErrorKind::TableNotFound, "{e}");
    assert_eq!(e.context().table.as_deref(), Some("gone"));
    let e = engine
        .prepare("SELECT * FROM gone WHERE qty = $1")
        .await
        .expect_err("preparing over a missing table");
    assert_eq!(e.kind(), ErrorKind::TableNotFound, "{e}");
}

#[tokio::test]
async fn memory_limit_fails_cleanly_and_the_engine_goes_on() {
    let engine = QueryEngine::builder()
        .target_partitions(2)
        .query_memory_limit(64 << 10)
        .build();
    engine
        .register_table("sales", sales_table(200_000).await)
        .expect("register");
    // A hash join's build side cannot spill: 200k rows do not fit in 64 KiB.
    let e = engine
        .sql("SELECT COUNT(*) FROM sales a JOIN sales b ON a.price = b.price")
        .await
        .expect_err("over the limit");
    assert_eq!(e.kind(), ErrorKind::ResourcesExhausted, "{e}");
    // Without the limit (per query override) the same query runs.
    let r = engine
        .query(
            "SELECT COUNT(*) FROM sales a JOIN sales b ON a.price = b.price",
            QueryOptions::new().memory_limit(1 << 30),
        )
        .await
        .expect("within a larger limit");
    assert_eq!(column_i64(&r, 0), [200_000]);
}

#[tokio::test]
async fn cancellation_stops_the_query_and_drops_its_scans() {
    let engine = QueryEngine::new();
    let open = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicBool::new(false));
    engine
        .register_table(
            "endless",
            Arc::new(Endless {
                delay: Duration::from_millis(5),
                open_streams: open.clone(),
                started: started.clone(),
            }),
        )
        .expect("register");
    let token = CancelToken::new();
    let e2 = engine.clone();
    let t2 = token.clone();
    let query = tokio::spawn(async move {
        e2.query(
            "SELECT region, SUM(qty) FROM endless GROUP BY region",
            QueryOptions::new().cancel(t2),
        )
        .await
    });
    while !started.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    token.cancel();
    let e = query
        .await
        .expect("the query task joins")
        .expect_err("cancelled");
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    // The scan stream is dropped with the query (DataFusion tasks stop when aborted).
    for _ in 0..200 {
        if open.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        open.load(Ordering::SeqCst),
        0,
        "scans still open after cancel"
    );
    // Timeouts end queries the same way.
    let e = engine
        .query(
            "SELECT COUNT(*) FROM endless",
            QueryOptions::new().timeout(Duration::from_millis(50)),
        )
        .await
        .expect_err("times out");
    assert_eq!(e.kind(), ErrorKind::Timeout);
}

#[tokio::test]
async fn result_cache_hits_until_the_table_changes() {
    let engine = QueryEngine::new();
    let table = sales_table(100).await;
    engine
        .register_table("sales", table.clone())
        .expect("register");
    let sql = "SELECT SUM(qty) FROM sales";
    let first = engine.sql(sql).await.expect("first");
    assert!(!first.from_cache());
    let second = engine.sql(sql).await.expect("second");
    assert!(second.from_cache());
    assert_eq!(column_i64(&first, 0), column_i64(&second, 0));
    assert_eq!(engine.result_cache_stats().hits, 1);

    table
        .append(vec![sales_batch(100, 50)], None)
        .await
        .expect("append");
    let third = engine.sql(sql).await.expect("after append");
    assert!(!third.from_cache(), "a new table version is a new key");
    let expect: i64 = (0..150).map(|i| i % 7 + 1).sum();
    assert_eq!(column_i64(&third, 0), [expect]);
    assert!(engine.sql(sql).await.expect("again").from_cache());

    // Bypassed on request and for volatile functions.
    let r = engine
        .query(sql, QueryOptions::new().bypass_cache())
        .await
        .expect("bypass");
    assert!(!r.from_cache());
    for volatile in [
        "SELECT SUM(qty), now() FROM sales",
        "SELECT SUM(qty) FROM sales WHERE random() < 2.0",
    ] {
        for _ in 0..2 {
            let r = engine.sql(volatile).await.expect("volatile");
            assert!(!r.from_cache(), "{volatile}");
        }
    }
}

#[tokio::test]
async fn queries_read_one_consistent_version() {
    let engine = QueryEngine::new();
    let table = sales_table(10).await;
    engine
        .register_table("sales", table.clone())
        .expect("register");
    // A self-join reads the same version on both sides even with appends between runs.
    let sql = "SELECT (SELECT COUNT(*) FROM sales) - (SELECT COUNT(*) FROM sales)";
    for i in 0..5 {
        table
            .append(vec![sales_batch(10 + i, 1)], None)
            .await
            .expect("append");
        let r = engine.sql(sql).await.expect("query");
        assert_eq!(column_i64(&r, 0), [0]);
    }
}

#[tokio::test]
async fn prepared_statements_bind_parameters() {
    let engine = QueryEngine::new();
    engine
        .register_table("sales", sales_table(100).await)
        .expect("register");
    let q = engine
        .prepare("SELECT COUNT(*) FROM sales WHERE item = $1")
        .await
        .expect("prepare");
    for item in [0i64, 3, 9] {
        let r = q.execute(&[Scalar::Int64(item)]).await.expect("execute");
        assert_eq!(column_i64(&r, 0), [10]);
    }
    let r = q.execute(&[Scalar::Int64(42)]).await.expect("no match");
    assert_eq!(column_i64(&r, 0), [0]);
}

#[tokio::test]
async fn explain_analyze_reports_metrics() {
    let engine = QueryEngine::new();
    engine
        .register_table("sales", sales_table(100).await)
        .expect("register");
    let text = engine
        .explain("SELECT region, COUNT(*) FROM sales GROUP BY region", true)
        .await
        .expect("explain analyze");
    assert!(text.contains("output_rows"), "{text}");
    let scan = text
        .lines()
        .find(|l| l.contains("LakehouseScanExec"))
        .unwrap_or_else(|| panic!("no scan in the plan:\n{text}"));
    // The scan reports the rows it produced and the files it reads.
    assert!(scan.contains("output_rows=100"), "{scan}");
    assert!(scan.contains("files=1/1"), "{scan}");

    // A second batch with higher prices: a filter on price rules the first one out.
    let engine = QueryEngine::new();
    let sales = sales_table(100).await;
    sales
        .append(vec![sales_batch(100, 100)], None)
        .await
        .expect("append");
    engine.register_table("sales", sales).expect("register");
    // Two-sided: a NaN price (which `price >= 150` alone would match, and which float
    // bounds leave out) fails one side.
    let text = engine
        .explain(
            "SELECT COUNT(*) FROM sales WHERE price >= 150 AND price <= 1e9",
            true,
        )
        .await
        .expect("explain analyze");
    let scan = text
        .lines()
        .find(|l| l.contains("LakehouseScanExec"))
        .unwrap_or_else(|| panic!("no scan in the plan:\n{text}"));
    assert!(scan.contains("files=1/2"), "{scan}");
}

#[tokio::test]
async fn workload_queue_refuses_when_full() {
    let engine = QueryEngine::builder()
        .queue(WorkloadQueue::new("small", 1).max_queued(0))
        .build();
    let open = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicBool::new(false));
    engine
        .register_table(
            "endless",
            Arc::new(Endless {
                delay: Duration::from_millis(5),
                open_streams: open,
                started: started.clone(),
            }),
        )
        .expect("register");
    let token = CancelToken::new();
    let (e2, t2) = (engine.clone(), token.clone());
    let running = tokio::spawn(async move {
        e2.query(
            "SELECT COUNT(*) FROM endless",
            QueryOptions::new().queue("small").cancel(t2),
        )
        .await
    });
    while !started.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let e = engine
        .query("SELECT 1", QueryOptions::new().queue("small"))
        .await
        .expect_err("no slot and no room to wait");
    assert_eq!(e.kind(), ErrorKind::Full);
    assert_eq!(e.context().key.as_deref(), Some("small"));
    // Other queues are unaffected.
    engine.sql("SELECT 1").await.expect("default queue");
    token.cancel();
    let _ = running.await;
}

#[tokio::test]
async fn streaming_tail_unions_uncommitted_rows() {
    let engine = QueryEngine::new();
    let committed = sales_table(100).await;
    let live = Arc::new(MemoryTable::new("live", sales_schema()));
    engine
        .register_with_tail("sales", committed.clone(), live.clone())
        .expect("register");
    let sql = "SELECT COUNT(*) FROM sales WHERE region = 'eu'";
    let r = engine.sql(sql).await.expect("query");
    assert_eq!(column_i64(&r, 0), [34]);
    live.append(vec![sales_batch(100, 30)], None)
        .await
        .expect("append");
    let r = engine.sql(sql).await.expect("with the tail");
    assert!(!r.from_cache());
    assert_eq!(column_i64(&r, 0), [34 + 10]);
    let other = Arc::new(MemoryTable::new(
        "other",
        Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("x", arrow::datatypes::DataType::Int64, false),
        ])),
    ));
    let e = engine
        .register_with_tail("bad", committed, other)
        .expect_err("schemas differ");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn parquet_and_csv_files_register_directly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("t.csv");
    std::fs::write(&csv, "a,b\n1,x\n2,y\n3,x\n").expect("write csv");
    let engine = QueryEngine::new();
    engine
        .register_csv("t", csv.to_str().expect("utf-8 path"))
        .await
        .expect("csv");
    let r = engine
        .sql("SELECT SUM(a) FROM t WHERE b = 'x'")
        .await
        .expect("query csv");
    assert_eq!(column_i64(&r, 0), [4]);
    let out = dir.path().join("p");
    engine
        .sql(&format!(
            "COPY (SELECT * FROM t) TO '{}' STORED AS PARQUET",
            out.to_str().expect("utf-8 path")
        ))
        .await
        .expect("copy to parquet");
    engine
        .register_parquet("p", out.to_str().expect("utf-8 path"))
        .await
        .expect("parquet");
    let r = engine
        .sql("SELECT COUNT(*) FROM p")
        .await
        .expect("query parquet");
    assert_eq!(column_i64(&r, 0), [3]);
}

#[tokio::test]
async fn result_cache_tells_apart_tables_registered_under_one_name() {
    let engine = QueryEngine::new();
    let sql = "SELECT SUM(qty), COUNT(*) FROM sales";
    engine
        .register_table("sales", sales_table(10).await)
        .expect("register");
    let first = engine.sql(sql).await.expect("first");
    assert_eq!(column_i64(&first, 1), [10]);
    assert!(engine.sql(sql).await.expect("cached").from_cache());
    // Another table, at the same version and with the same schema, under the same name.
    engine.deregister("sales").expect("deregister");
    engine
        .register_table("sales", sales_table(20).await)
        .expect("register again");
    let second = engine.sql(sql).await.expect("second");
    assert!(!second.from_cache(), "the new table is not the old one");
    let expect: i64 = (0..20).map(|i| i % 7 + 1).sum();
    assert_eq!(column_i64(&second, 0), [expect]);
    assert_eq!(column_i64(&second, 1), [20]);
    // And the same holds for materialized views dropped and defined again.
    let view = "SELECT COUNT(*) FROM v";
    engine
        .sql("CREATE MATERIALIZED VIEW v AS SELECT region FROM sales WHERE qty > 3")
        .await
        .expect("a view");
    let before = column_i64(&engine.sql(view).await.expect("view"), 0);
    assert!(engine.sql(view).await.expect("cached").from_cache());
    engine
        .sql("DROP MATERIALIZED VIEW v")
        .await
        .expect("drop the view");
    engine
        .sql("CREATE MATERIALIZED VIEW v AS SELECT region FROM sales WHERE qty > 5")
        .await
        .expect("another view");
    let after = engine.sql(view).await.expect("view again");
    assert!(!after.from_cache());
    assert_eq!(
        column_i64(&after, 0),
        [(0..20).filter(|i| i % 7 + 1 > 5).count() as i64]
    );
    assert_ne!(before, column_i64(&after, 0));
}

/// A source whose scans fail the way a store does: at the start or in the middle.
#[derive(Debug)]
struct Broken {
    inner: Arc<MemoryTable>,
    fail_at_start: bool,
}

#[async_trait::async_trait]
impl lakehouse_core::TableSource for Broken {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        sales_schema()
    }
    async fn version(&self) -> lakehouse_core::Result<lakehouse_core::Version> {
        self.inner.version().await
    }
    async fn scan(
        &self,
        _request: lakehouse_core::ScanRequest,
    ) -> lakehouse_core::Result<lakehouse_core::BatchStream> {
        let failure = lakehouse_core::Error::new(ErrorKind::Unavailable, "the store is down")
            .with_path("sales/part-0.parquet")
            .with_source(std::io::Error::other("connection reset"));
        if self.fail_at_start {
            return Err(failure);
        }
        let items = vec![Ok(sales_batch(0, 10)), Err(failure)];
        Ok(Box::pin(futures::stream::iter(items)))
    }
    async fn statistics(
        &self,
        version: Option<lakehouse_core::Version>,
    ) -> lakehouse_core::Result<lakehouse_core::TableStatistics> {
        self.inner.statistics(version).await
    }
    async fn changes_since(
        &self,
        version: lakehouse_core::Version,
    ) -> lakehouse_core::Result<lakehouse_core::Changes> {
        self.inner.changes_since(version).await
    }
}

#[tokio::test]
async fn errors_are_classified_by_their_variant_and_keep_their_source() {
    use datafusion::error::DataFusionError;
    use std::error::Error as _;

    let engine = QueryEngine::builder().target_partitions(2).build();
    engine
        .register_table("sales", sales_table(10).await)
        .expect("register");
    let datafusion_source = |e: &lakehouse_query::Error| {
        e.source()
            .is_some_and(|s| s.downcast_ref::<DataFusionError>().is_some())
    };

    let e = engine
        .sql("SELECT (region FROM sales")
        .await
        .expect_err("bad SQL");
    assert_eq!(e.kind(), ErrorKind::InvalidSql, "{e}");
    assert!(datafusion_source(&e), "{e:?}");

    let e = engine
        .sql("SELECT * FROM sales JOIN nowhere USING (item)")
        .await
        .expect_err("unknown table");
    assert_eq!(e.kind(), ErrorKind::TableNotFound, "{e}");
    assert_eq!(e.context().table.as_deref(), Some("nowhere"));

    let e = engine
        .sql("SELECT region FROM sales WHERE colour = 'red'")
        .await
        .expect_err("unknown column");
    assert_eq!(e.kind(), ErrorKind::ColumnNotFound, "{e}");
    assert_eq!(e.context().column.as_deref(), Some("colour"));
    assert!(datafusion_source(&e), "{e:?}");

    let e = engine
        .sql("SELECT CAST(region AS BIGINT) FROM sales")
        .await
        .expect_err("a string that is not a number");
    assert_eq!(e.kind(), ErrorKind::TypeMismatch, "{e}");
    assert!(datafusion_source(&e), "{e:?}");

    // A function called with the wrong types does not plan: the SQL is at fault.
    let e = engine
        .sql("SELECT abs(region) FROM sales")
        .await
        .expect_err("abs of a string");
    assert_eq!(e.kind(), ErrorKind::InvalidSql, "{e}");

    for fail_at_start in [true, false] {
        let name = format!("broken_{fail_at_start}");
        engine
            .register_table(
                &name,
                Arc::new(Broken {
                    inner: sales_table(10).await,
                    fail_at_start,
                }),
            )
            .expect("register");
        let e = engine
            .sql(&format!("SELECT SUM(qty) FROM {name}"))
            .await
            .expect_err("the store fails");
        // The source's own error comes back whole: kind, context and source.
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert_eq!(e.message(), "the store is down", "{e}");
        assert_eq!(e.context().path.as_deref(), Some("sales/part-0.parquet"));
        assert!(
            e.source()
                .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()),
            "{e:?}"
        );
    }

    let limited = QueryEngine::builder()
        .target_partitions(2)
        .query_memory_limit(64 << 10)
        .build();
    limited
        .register_table("sales", sales_table(100_000).await)
        .expect("register");
    let e = limited
        .sql("SELECT COUNT(*) FROM sales a JOIN sales b ON a.price = b.price")
        .await
        .expect_err("over the memory limit");
    assert_eq!(e.kind(), ErrorKind::ResourcesExhausted, "{e}");
    assert!(datafusion_source(&e), "{e:?}");
}
