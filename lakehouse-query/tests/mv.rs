//! Materialized views: definitions, incremental and full refresh, background refresh.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use lakehouse_core::{MemoryTable, TableSink};
use lakehouse_query::{
    ErrorKind, QueryEngine, QueryOptions, QueryResult, RefreshKind, RefreshMode,
};
use proptest::prelude::*;

use crate::common::{column_strings, sales_batch, sales_schema, sales_table};

/// The result as sorted text rows, floats rounded, for order-free comparison.
fn rows(result: &QueryResult) -> Vec<String> {
    let n = result.schema().fields().len();
    let cols: Vec<Vec<String>> = (0..n).map(|c| column_strings(result, c)).collect();
    let mut out: Vec<String> = (0..result.num_rows())
        .map(|r| {
            cols.iter()
                .map(|c| match c[r].parse::<f64>() {
                    Ok(v) if c[r].contains('.') => format!("{v:.6}"),
                    _ => c[r].clone(),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    out.sort();
    out
}

async fn direct(engine: &QueryEngine, sql: &str) -> Vec<String> {
    rows(
        &engine
            .query(sql, QueryOptions::new().bypass_cache())
            .await
            .expect("direct query"),
    )
}

async fn view(engine: &QueryEngine, name: &str) -> Vec<String> {
    rows(
        &engine
            .query(
                &format!("SELECT * FROM {name}"),
                QueryOptions::new().bypass_cache(),
            )
            .await
            .expect("read the view"),
    )
}

/// Grouped by a string column and filtered on one: the rows of an incremental refresh
/// stand in for the table with the types SQL sees (string views).
const BY_REGION: &str = "SELECT region, SUM(qty) AS q, COUNT(*) AS n, AVG(price) AS p, \
    MIN(item) AS lo, MAX(price) AS hi FROM sales WHERE qty > 1 AND region <> 'nowhere' \
    GROUP BY region";

#[tokio::test]
async fn aggregate_view_refreshes_incrementally() {
    let engine = QueryEngine::new();
    let sales = sales_table(1000).await;
    engine
        .register_table("sales", sales.clone())
        .expect("register");
    let created = engine
        .sql(&format!(
            "CREATE MATERIALIZED VIEW by_region AS {BY_REGION}"
        ))
        .await
        .expect("create");
    assert_eq!(column_strings(&created, 1), ["full"]);
    assert_eq!(
        view(&engine, "by_region").await,
        direct(&engine, BY_REGION).await
    );
    let info = engine.materialized_view_info("by_region").expect("info");
    assert_eq!(info.mode, RefreshMode::Incremental);

    sales
        .append(vec![sales_batch(1000, 10)], None)
        .await
        .expect("append");
    let before = engine
        .read_materialized_view("by_region")
        .expect("snapshot");
    let outcome = engine
        .refresh_materialized_view("by_region")
        .await
        .expect("refresh");
    assert_eq!(outcome.kind(), RefreshKind::Incremental);
    assert_eq!(outcome.delta_rows(), 10);
    assert_eq!(outcome.rows(), 3);
    // The old snapshot is untouched; the new one has the next generation.
    let after = engine
        .read_materialized_view("by_region")
        .expect("snapshot");
    assert_eq!(after.generation(), before.generation() + 1);
    assert_eq!(after.versions()["sales"], 2);
    assert_eq!(
        view(&engine, "by_region").await,
        direct(&engine, BY_REGION).await
    );

    let again = engine
        .refresh_materialized_view("by_region")
        .await
        .expect("refresh");
    assert_eq!(again.kind(), RefreshKind::UpToDate);

    // An overwrite is not an append: the engine says it refreshed fully, and why.
    sales
        .overwrite(vec![sales_batch(0, 30)])
        .expect("overwrite");
    let outcome = engine
        .refresh_materialized_view("by_region")
        .await
        .expect("refresh");
    assert_eq!(outcome.kind(), RefreshKind::Full);
    assert!(
        outcome
            .reason()
            .expect("a reason")
            .contains("more than appends")
    );
    assert_eq!(
        view(&engine, "by_region").await,
        direct(&engine, BY_REGION).await
    );
}

#[tokio::test]
async fn view_over_a_fact_joined_to_a_dimension() {
    let engine = QueryEngine::new();
    let sales = sales_table(200).await;
    let dim_schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("item", DataType::Int64, false),
        Field::new("category", DataType::Utf8, false),
    ]));
    let items = Arc::new(MemoryTable::new("items", dim_schema.clone()));
    items
        .append(
            vec![
                RecordBatch::try_new(
                    dim_schema.clone(),
                    vec![
                        Arc::new(Int64Array::from_iter_values(0..10)),
                        Arc::new(StringArray::from_iter_values(
                            (0..10).map(|i| if i < 5 { "home" } else { "garden" }),
                        )),
                    ],
                )
                .expect("dimension batch"),
            ],
            None,
        )
        .await
        .expect("append items");
    engine
        .register_table("sales", sales.clone())
        .expect("sales");
    engine
        .register_table("items", items.clone())
        .expect("items");
    let sql = "SELECT i.category, s.region, SUM(s.qty * 2) AS q, AVG(s.qty) AS a \
        FROM sales s JOIN items i ON s.item = i.item GROUP BY i.category, s.region \
        HAVING SUM(s.qty) > 0 ORDER BY q DESC";
    engine
        .create_materialized_view("cat", sql)
        .await
        .expect("create");
    sales
        .append(vec![sales_batch(200, 37)], None)
        .await
        .expect("append");
    let o = engine
        .refresh_materialized_view("cat")
        .await
        .expect("refresh");
    assert_eq!(o.kind(), RefreshKind::Incremental);
    assert_eq!(view(&engine, "cat").await, direct(&engine, sql).await);

    // A changed dimension forces a full refresh.
    items
        .append(
            vec![
                RecordBatch::try_new(
                    dim_schema,
                    vec![
                        Arc::new(Int64Array::from(vec![3])),
                        Arc::new(StringArray::from(vec!["toys"])),
                    ],
                )
                .expect("batch"),
            ],
            None,
        )
        .await
        .expect("append");
    sales
        .append(vec![sales_batch(300, 5)], None)
        .await
        .expect("append");
    let o = engine
        .refresh_materialized_view("cat")
        .await
        .expect("refresh");
    assert_eq!(o.kind(), RefreshKind::Full);
    assert!(
        o.reason().expect("reason").contains("2 tables changed"),
        "{o:?}"
    );
    assert_eq!(view(&engine, "cat").await, direct(&engine, sql).await);
}

#[tokio::test]
async fn filter_view_appends_rows_and_others_refresh_fully() {
    let engine = QueryEngine::new();
    let sales = sales_table(50).await;
    engine
        .register_table("sales", sales.clone())
        .expect("register");
    let rows_sql = "SELECT region, qty * 10 AS q10 FROM sales WHERE item < 3";
    engine
        .create_materialized_view("small_items", rows_sql)
        .await
        .expect("create");
    let distinct_sql = "SELECT DISTINCT region FROM sales WHERE item = 9";
    engine
        .create_materialized_view("regions", distinct_sql)
        .await
        .expect("create");
    let info = engine.materialized_view_info("regions").expect("info");
    assert_eq!(info.mode, RefreshMode::Full);
    assert!(info.full_reason.is_some());

    sales
        .append(vec![sales_batch(50, 25)], None)
        .await
        .expect("append");
    let all = engine.refresh_all().await;
    let kinds: Vec<_> = all
        .iter()
        .map(|(n, r)| (n.as_str(), r.as_ref().expect("refresh").kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("regions", RefreshKind::Full),
            ("small_items", RefreshKind::Incremental)
        ]
    );
    assert_eq!(
        view(&engine, "small_items").await,
        direct(&engine, rows_sql).await
    );
    assert_eq!(
        view(&engine, "regions").await,
        direct(&engine, distinct_sql).await
    );

    // Views drop like tables; errors name the view.
    engine
        .sql("DROP MATERIALIZED VIEW regions")
        .await
        .expect("drop");
    let e = engine
        .sql("REFRESH MATERIALIZED VIEW regions")
        .await
        .expect_err("gone");
    assert_eq!(e.kind(), ErrorKind::TableNotFound);
    assert_eq!(e.context().table.as_deref(), Some("regions"));
    engine
        .sql("DROP MATERIALIZED VIEW IF EXISTS regions")
        .await
        .expect("if exists");
    let e = engine
        .create_materialized_view("broken", "SELECT nope FROM sales")
        .await
        .expect_err("unknown column");
    assert_eq!(e.kind(), ErrorKind::ColumnNotFound);
}

#[tokio::test]
async fn background_refresh_keeps_views_fresh_and_reads_never_wait() {
    let engine = QueryEngine::new();
    let sales = sales_table(100).await;
    engine
        .register_table("sales", sales.clone())
        .expect("register");
    let sql = "SELECT region, COUNT(*) AS n FROM sales GROUP BY region";
    engine
        .create_materialized_view("counts", sql)
        .await
        .expect("create");
    let refresher = engine
        .start_background_refresh(Duration::from_millis(10))
        .expect("background");
    for i in 0..5 {
        sales
            .append(vec![sales_batch(100 + i * 10, 10)], None)
            .await
            .expect("append");
        // Reads return at once, with whatever generation is current.
        let snap = engine.read_materialized_view("counts").expect("read");
        assert!(snap.num_rows() == 3);
    }
    let mut fresh = false;
    for _ in 0..300 {
        let snap = engine.read_materialized_view("counts").expect("read");
        if snap.versions().get("sales") == Some(&6) {
            fresh = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(fresh, "the background refresh caught up");
    assert_eq!(view(&engine, "counts").await, direct(&engine, sql).await);
    refresher.stop();
    let info = engine.materialized_view_info("counts").expect("info");
    assert!(info.refreshes >= 2, "{info:?}");
    assert!(info.last_error.is_none());
}

#[tokio::test]
async fn view_reads_use_the_result_cache_by_generation() {
    let engine = QueryEngine::new();
    let sales = sales_table(100).await;
    engine
        .register_table("sales", sales.clone())
        .expect("register");
    engine
        .create_materialized_view("t", "SELECT item, SUM(qty) AS q FROM sales GROUP BY item")
        .await
        .expect("create");
    let q = "SELECT SUM(q) FROM t";
    assert!(!engine.sql(q).await.expect("first").from_cache());
    assert!(engine.sql(q).await.expect("second").from_cache());
    sales
        .append(vec![sales_batch(100, 1)], None)
        .await
        .expect("append");
    engine
        .refresh_materialized_view("t")
        .await
        .expect("refresh");
    let r = engine.sql(q).await.expect("after refresh");
    assert!(!r.from_cache());
    let expect: i64 = (0..101).map(|i| i % 7 + 1).sum();
    assert_eq!(column_strings(&r, 0), [expect.to_string()]);
}

fn batch_of(rows: &[(u8, i8, i8)]) -> RecordBatch {
    let regions = ["a", "b", "c", "d"];
    RecordBatch::try_new(
        sales_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| regions[(r.0 % 4) as usize]),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.1 as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.2 as i64),
            )),
            Arc::new(arrow::array::Float64Array::from_iter(
                rows.iter()
                    .map(|r| (r.2 % 3 != 0).then_some(r.1 as f64 * 0.5)),
            )),
        ],
    )
    .expect("generated batch")
}

const PROP_VIEWS: [&str; 3] = [
    "SELECT region, SUM(qty) AS s, COUNT(*) AS n, COUNT(price) AS np, AVG(qty) AS a, \
     MIN(item) AS lo, MAX(item) AS hi, SUM(price) AS sp FROM sales GROUP BY region",
    "SELECT COUNT(*) AS n, SUM(qty) AS s, MAX(price) AS m FROM sales WHERE item > 0",
    "SELECT region, item FROM sales WHERE qty < 0",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// After any sequence of appends, every view equals a full recompute.
    #[test]
    fn views_equal_a_full_recompute(
        appends in prop::collection::vec(
            prop::collection::vec((0u8..6, -5i8..6, -20i8..20), 0..12),
            1..6,
        ),
        refresh_every in 1usize..3,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let engine = QueryEngine::new();
            let sales = Arc::new(MemoryTable::new("sales", sales_schema()));
            engine.register_table("sales", sales.clone()).expect("register");
            for (i, sql) in PROP_VIEWS.iter().enumerate() {
                engine
                    .create_materialized_view(&format!("v{i}"), sql)
                    .await
                    .expect("create");
            }
            for (step, rows) in appends.iter().enumerate() {
                sales.append(vec![batch_of(rows)], None).await.expect("append");
                if step % refresh_every == 0 {
                    for (i, _) in PROP_VIEWS.iter().enumerate() {
                        let o = engine
                            .refresh_materialized_view(&format!("v{i}"))
                            .await
                            .expect("refresh");
                        prop_assert_ne!(o.kind(), RefreshKind::Full);
                    }
                }
            }
            for (i, sql) in PROP_VIEWS.iter().enumerate() {
                let name = format!("v{i}");
                engine.refresh_materialized_view(&name).await.expect("refresh");
                prop_assert_eq!(view(&engine, &name).await, direct(&engine, sql).await);
            }
            Ok(())
        })?;
    }
}
