//! Distributed mode (feature `distributed`) on an in-process cluster: two workers
//! served on loopback ports of this process. Sources that are not files stay on the
//! coordinator; materialized views, the result cache and workload queues work on top.

use std::net::SocketAddr;

use lakehouse_query::distributed::{Cluster, WorkerOptions, WorkerServer, serve};
use lakehouse_query::{ErrorKind, QueryEngine, WorkloadQueue};

use crate::common::{column_i64, column_strings, sales_batch, sales_table};
use lakehouse_core::TableSink;

async fn workers(n: usize) -> Vec<WorkerServer> {
    let mut out = Vec::new();
    for _ in 0..n {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        out.push(serve(any, WorkerOptions::new()).await.expect("a worker"));
    }
    out
}

fn engine_on(workers: &[WorkerServer]) -> QueryEngine {
    let cluster = Cluster::new(workers.iter().map(|w| w.local_addr().to_string()))
        .expect("a cluster")
        .file_scan_bytes_per_partition(1);
    QueryEngine::builder()
        .target_partitions(2)
        .queue(WorkloadQueue::new("etl", 1))
        .distributed(cluster)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_tables_views_and_caches_on_a_cluster() {
    let workers = workers(2).await;
    let engine = engine_on(&workers);
    let sales = sales_table(3000).await;
    engine
        .register_table("sales", sales.clone())
        .expect("register");

    let sql =
        "SELECT region, SUM(qty) AS q, COUNT(*) AS n FROM sales GROUP BY region ORDER BY region";
    let result = engine.sql(sql).await.expect("an aggregation");
    assert_eq!(column_strings(&result, 0), ["apac", "eu", "us"]);
    assert_eq!(column_i64(&result, 2), [1000, 1000, 1000]);
    let single = QueryEngine::builder().target_partitions(2).build();
    single
        .register_table("sales", sales.clone())
        .expect("register");
    let local = single.sql(sql).await.expect("on one process");
    assert_eq!(column_i64(&result, 1), column_i64(&local, 1));

    // A self-join repartitions on the key: a shuffle in a distributed plan.
    let join =
        "SELECT COUNT(*) FROM sales a JOIN sales b ON a.item = b.item AND a.region = b.region";
    let d = engine.sql(join).await.expect("a join");
    let l = single.sql(join).await.expect("a join on one process");
    assert_eq!(column_i64(&d, 0), column_i64(&l, 0));

    // The result cache answers the second run; an append makes the next one recompute.
    assert!(engine.sql(sql).await.expect("again").from_cache());
    sales
        .append(vec![sales_batch(3000, 3)], None)
        .await
        .expect("append");
    let after = engine.sql(sql).await.expect("after the append");
    assert!(!after.from_cache());
    assert_eq!(column_i64(&after, 2), [1001, 1001, 1001]);

    // A materialized view refreshes incrementally on top.
    engine
        .sql("CREATE MATERIALIZED VIEW totals AS SELECT region, SUM(qty) AS q FROM sales GROUP BY region")
        .await
        .expect("a view");
    sales
        .append(vec![sales_batch(3003, 3)], None)
        .await
        .expect("append");
    engine
        .refresh_materialized_view("totals")
        .await
        .expect("refresh");
    let view = engine
        .sql("SELECT q FROM totals ORDER BY region")
        .await
        .expect("the view");
    let fresh = single
        .sql("SELECT SUM(qty) FROM sales GROUP BY region ORDER BY region")
        .await
        .expect("the sums");
    assert_eq!(column_i64(&view, 0), column_i64(&fresh, 0));

    // A workload queue admits the query as on one process.
    let queued = engine
        .query(
            "SELECT COUNT(*) FROM sales",
            lakehouse_query::QueryOptions::new().queue("etl"),
        )
        .await
        .expect("in the etl queue");
    assert_eq!(column_i64(&queued, 0), [3006]);

    for w in workers {
        w.shutdown().await.expect("the worker stops");
    }
}

#[tokio::test]
async fn bad_addresses_are_typed_errors() {
    let e = Cluster::new(Vec::<String>::new()).expect_err("no worker");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    let e = Cluster::new(["ftp://host:1"]).expect_err("not http");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    let e = Cluster::new(["not an address"]).expect_err("not an address");
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_tables_need_no_live_worker() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("its address")
        .port();
    let cluster = Cluster::new([format!("127.0.0.1:{port}")]).expect("a cluster");
    let engine = QueryEngine::builder()
        .target_partitions(2)
        .distributed(cluster)
        .build();
    engine
        .register_table("sales", sales_table(3000).await)
        .expect("register");
    let join = "SELECT COUNT(*) FROM sales a JOIN sales b ON a.item = b.item";
    // Memory tables stay on the coordinator: the query needs no worker.
    let result = engine.sql(join).await.expect("a query on the coordinator");
    assert_eq!(column_i64(&result, 0).len(), 1);
}
