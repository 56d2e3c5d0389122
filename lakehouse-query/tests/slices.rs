//! MPP slices: KEY / EVEN / ALL distribution.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use lakehouse_core::{MemoryTable, TableSink};
use lakehouse_query::{Distribution, ErrorKind, QueryEngine};

use crate::common::{column_i64, column_strings};

fn orders_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer", DataType::Utf8, false),
    ]))
}

fn lines_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("qty", DataType::Int64, false),
    ]))
}

async fn tables(orders: i64) -> (Arc<MemoryTable>, Arc<MemoryTable>) {
    let o = Arc::new(MemoryTable::new("orders", orders_schema()));
    let l = Arc::new(MemoryTable::new("lines", lines_schema()));
    let ids: Vec<i64> = (0..orders).collect();
    o.append(
        vec![
            RecordBatch::try_new(
                orders_schema(),
                vec![
                    Arc::new(Int64Array::from(ids.clone())),
                    Arc::new(StringArray::from_iter_values(
                        ids.iter().map(|i| format!("c{}", i % 5)),
                    )),
                ],
            )
            .expect("orders batch"),
        ],
        None,
    )
    .await
    .expect("append orders");
    // Three lines per order.
    let line_ids: Vec<i64> = (0..orders * 3).map(|i| i / 3).collect();
    let qty: Vec<i64> = (0..orders * 3).map(|i| i % 4 + 1).collect();
    l.append(
        vec![
            RecordBatch::try_new(
                lines_schema(),
                vec![
                    Arc::new(Int64Array::from(line_ids)),
                    Arc::new(Int64Array::from(qty)),
                ],
            )
            .expect("lines batch"),
        ],
        None,
    )
    .await
    .expect("append lines");
    (o, l)
}

const JOIN: &str = "SELECT o.customer, SUM(l.qty) AS q, COUNT(*) AS n \
    FROM orders o JOIN lines l ON o.order_id = l.order_id \
    GROUP BY o.customer ORDER BY o.customer";

async fn partitioned_engine() -> QueryEngine {
    let engine = QueryEngine::builder()
        .target_partitions(4)
        .slices(4)
        .build();
    // Force partitioned (not broadcast) joins so that the co-location shows.
    for opt in [
        "SET datafusion.optimizer.hash_join_single_partition_threshold = 0",
        "SET datafusion.optimizer.hash_join_single_partition_threshold_rows = 0",
    ] {
        engine.sql(opt).await.expect("set an option");
    }
    engine
}

#[tokio::test]
async fn key_distributed_join_needs_no_repartition() {
    let (o, l) = tables(2000).await;
    let engine = partitioned_engine().await;
    engine
        .register_distributed("orders", o.clone(), Distribution::key("order_id"))
        .expect("orders by key");
    engine
        .register_distributed("lines", l.clone(), Distribution::key("order_id"))
        .expect("lines by key");
    let join_only = "SELECT COUNT(*) FROM orders o JOIN lines l ON o.order_id = l.order_id";
    let plan = engine.explain(join_only, false).await.expect("explain");
    assert!(plan.contains("HashJoinExec: mode=Partitioned"), "{plan}");
    assert!(
        !plan.contains("RepartitionExec"),
        "a KEY-distributed join is slice-local:\n{plan}"
    );
    assert!(plan.contains("distribution=Key(\"order_id\")"), "{plan}");
    let plan = engine
        .explain(
            "SELECT order_id, SUM(qty) FROM lines GROUP BY order_id",
            false,
        )
        .await
        .expect("explain");
    assert!(!plan.contains("RepartitionExec"), "{plan}");

    // Same answers as plain tables.
    let plain = QueryEngine::new();
    plain.register_table("orders", o).expect("plain orders");
    plain.register_table("lines", l).expect("plain lines");
    let a = engine.sql(JOIN).await.expect("sliced");
    let b = plain.sql(JOIN).await.expect("plain");
    assert_eq!(column_strings(&a, 0), column_strings(&b, 0));
    assert_eq!(column_i64(&a, 1), column_i64(&b, 1));
    assert_eq!(column_i64(&a, 2), [1200; 5]);
    let c = engine.sql(join_only).await.expect("count");
    assert_eq!(column_i64(&c, 0), [6000]);
}

#[tokio::test]
async fn even_distribution_repartitions_for_joins() {
    let (o, l) = tables(500).await;
    let engine = partitioned_engine().await;
    engine
        .register_distributed("orders", o, Distribution::Even)
        .expect("orders even");
    engine
        .register_distributed("lines", l, Distribution::Even)
        .expect("lines even");
    let plan = engine
        .explain(
            "SELECT COUNT(*) FROM orders o JOIN lines l ON o.order_id = l.order_id",
            false,
        )
        .await
        .expect("explain");
    assert!(plan.contains("RepartitionExec"), "{plan}");
    let r = engine.sql(JOIN).await.expect("query");
    assert_eq!(column_i64(&r, 2), [300; 5]);
}

#[tokio::test]
async fn all_distribution_and_appends_reach_the_slices() {
    let (o, l) = tables(100).await;
    let engine = QueryEngine::builder().slices(3).build();
    engine
        .register_distributed("orders", o.clone(), Distribution::All)
        .expect("orders replicated");
    engine
        .register_distributed("lines", l.clone(), Distribution::key("order_id"))
        .expect("lines by key");
    let sql = "SELECT COUNT(*), SUM(qty) FROM lines WHERE qty >= 2";
    let r = engine.sql(sql).await.expect("query");
    let expect_rows = (0..300).filter(|i| i % 4 + 1 >= 2).count() as i64;
    assert_eq!(column_i64(&r, 0), [expect_rows]);
    l.append(
        vec![
            RecordBatch::try_new(
                lines_schema(),
                vec![
                    Arc::new(Int64Array::from(vec![1, 2, 3])),
                    Arc::new(Int64Array::from(vec![10, 10, 1])),
                ],
            )
            .expect("batch"),
        ],
        None,
    )
    .await
    .expect("append");
    let r = engine.sql(sql).await.expect("after append");
    assert!(!r.from_cache());
    assert_eq!(column_i64(&r, 0), [expect_rows + 2]);
    let r = engine.sql(JOIN).await.expect("join a replicated table");
    assert_eq!(column_i64(&r, 2).iter().sum::<i64>(), 303);
    // Overwrites (not appends) are re-read in full.
    o.overwrite(vec![]).expect("overwrite");
    let r = engine
        .sql("SELECT COUNT(*) FROM orders")
        .await
        .expect("after overwrite");
    assert_eq!(column_i64(&r, 0), [0]);

    let e = engine
        .register_distributed("bad", l, Distribution::key("nope"))
        .expect_err("no such key column");
    assert_eq!(e.kind(), ErrorKind::ColumnNotFound);
    assert_eq!(e.context().column.as_deref(), Some("nope"));
}
