//! `lakehouse-bench query`, over the wire: the point query of `query.point_query_p99_ms`
//! sent by a Postgres client (`tokio-postgres`, the extended protocol with a prepared
//! statement and a parameter) to the `sql_server` endpoint on loopback, the server in
//! this process. The result cache is off, so every query plans its scan and runs.

use std::time::Instant;

use lakehouse_examples::sql_server::{Auth, SqlServer};
use lakehouse_query::QueryEngine;
use tokio_postgres::NoTls;

use crate::query::{THREADS, ms, table_of};
use crate::report::{BenchResult, Latencies, Report};

const WARMUP: usize = 100;
const SAMPLES: usize = 2000;

pub(crate) async fn point_query(report: &mut Report) -> BenchResult {
    let engine = QueryEngine::builder()
        .target_partitions(THREADS)
        .result_cache_bytes(0)
        .build();
    engine.register_table("small", table_of(1000).await?)?;
    let server = SqlServer::new(engine, Auth::None)
        .bind("127.0.0.1:0".parse()?)
        .await?;
    let stream = tokio::net::TcpStream::connect(server.local_addr()).await?;
    stream.set_nodelay(true)?;
    let mut config = tokio_postgres::Config::new();
    config.user("bench").dbname("lakehouse");
    let (client, connection) = config.connect_raw(stream, NoTls).await?;
    let driver = tokio::spawn(connection);

    let statement = client
        .prepare("SELECT qty, price FROM small WHERE item = $1")
        .await?;
    let mut lat = Latencies::with_capacity(SAMPLES);
    let mut rows = 0;
    for i in 0..WARMUP + SAMPLES {
        let item = (i % 1000) as i64;
        let start = Instant::now();
        let r = client.query(&statement, &[&item]).await?;
        if i >= WARMUP {
            lat.record(start.elapsed());
        }
        rows += r.len();
    }
    if rows == 0 {
        return Err("the point queries over the wire found no rows".into());
    }
    report.metric(
        "query.pgwire_point_query_p50_ms",
        ms(lat.percentile(50.0)),
        "ms",
    );
    report.metric(
        "query.pgwire_point_query_p99_ms",
        ms(lat.percentile(99.0)),
        "ms",
    );
    drop(client);
    let _ = driver.await;
    server.shutdown().await;
    Ok(())
}
