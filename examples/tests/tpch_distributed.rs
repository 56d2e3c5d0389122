//! Distributed SQL on worker processes (feature `distributed`): the TPC-H answers over
//! Delta tables on a loopback cluster of three `lakehouse_worker` processes equal
//! DuckDB's, and a worker killed during a query fails that query with a typed error
//! while the coordinator and the other workers answer the next one.
//!
//! Runs when `LAKEHOUSE_TPCH_DIR` names the data of `benches/peers/tpch.py` (see
//! `tests/tpch.rs`).
#![cfg(feature = "distributed")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lakehouse_examples::tpch;
use lakehouse_query::distributed::Cluster;
use lakehouse_query::{ErrorKind, QueryEngine, QueryOptions};

fn tpch_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("LAKEHOUSE_TPCH_DIR").map(PathBuf::from);
    if dir.is_none() {
        eprintln!("LAKEHOUSE_TPCH_DIR is not set: distributed TPC-H answers not checked");
    }
    dir
}

/// A `lakehouse_worker` process, killed when dropped.
struct WorkerProcess {
    child: Child,
    addr: String,
}

impl WorkerProcess {
    fn start() -> WorkerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lakehouse_worker"))
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the worker binary starts");
        let stdout = child.stdout.take().expect("the worker's stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the worker prints its address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the worker: {line:?}"))
            .to_owned();
        WorkerProcess { child, addr }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three worker processes and a coordinating engine over the TPC-H Delta tables
/// written under `out`. Scans are split finely (64 KiB per partition) so that every
/// table of SF 0.01 spreads over the workers.
async fn cluster(dir: &Path, out: &Path) -> (Vec<WorkerProcess>, QueryEngine) {
    let workers: Vec<WorkerProcess> = (0..3).map(|_| WorkerProcess::start()).collect();
    let cluster = Cluster::new(workers.iter().map(|w| w.addr.as_str()))
        .expect("a cluster")
        .file_scan_bytes_per_partition(64 << 10);
    let engine = QueryEngine::builder()
        .target_partitions(2)
        .distributed(cluster)
        .build();
    let tables = tpch::write_delta_tables(dir, out)
        .await
        .expect("the TPC-H data written as Delta tables");
    for (name, table) in tables {
        engine
            .register_table(name, Arc::new(table))
            .unwrap_or_else(|e| panic!("registering {name}: {e}"));
    }
    (workers, engine)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_answers_on_three_worker_processes_match_duckdb() {
    let Some(dir) = tpch_dir() else {
        return;
    };
    let out = tempfile::tempdir().expect("a temporary directory");
    let (_workers, engine) = cluster(&dir, out.path()).await;

    let plan = engine
        .explain(
            "SELECT l_returnflag, COUNT(*) FROM lineitem GROUP BY l_returnflag",
            false,
        )
        .await
        .expect("explain");
    assert!(plan.contains("DistributedExec"), "{plan}");
    assert!(plan.contains("LakehouseFileScan"), "{plan}");

    let problems = tpch::answer_problems(&engine, &dir).await;
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );

    // The result cache sits above the distributed plan.
    let sql = tpch::query(1).expect("q01");
    engine.sql(&sql).await.expect("q01");
    assert!(engine.sql(&sql).await.expect("q01 again").from_cache());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_query_fails_it_and_the_rest_keep_serving() {
    let Some(dir) = tpch_dir() else {
        return;
    };
    let out = tempfile::tempdir().expect("a temporary directory");
    let (mut workers, engine) = cluster(&dir, out.path()).await;
    let count = "SELECT COUNT(*) AS n FROM lineitem";
    let before = engine
        .query(count, QueryOptions::new().bypass_cache())
        .await
        .expect("a query on three workers");

    // About 36 million candidate pairs, each compared on a string: seconds of work on
    // every worker.
    let slow = "SELECT COUNT(*) FROM lineitem a JOIN lineitem b \
                ON a.l_suppkey = b.l_suppkey AND a.l_comment < b.l_comment";
    let running = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.query(slow, QueryOptions::new().bypass_cache()).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !running.is_finished(),
        "the query ended before the worker was killed"
    );
    workers[0].kill();
    let outcome = tokio::time::timeout(Duration::from_secs(120), running)
        .await
        .expect("the query ends after the worker dies")
        .expect("the query task");
    let e = outcome.expect_err("a query that lost a worker fails");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");

    // The coordinator plans the next queries on the two workers left.
    let after = engine
        .query(count, QueryOptions::new().bypass_cache())
        .await
        .expect("the next query runs on the workers left");
    assert_eq!(
        tpch::rows(before.batches()).expect("rows"),
        tpch::rows(after.batches()).expect("rows")
    );
    let sql = tpch::query(3).expect("q03");
    let result = engine
        .query(&sql, QueryOptions::new().bypass_cache())
        .await
        .expect("q03 on the workers left");
    let answer = dir.join("answers").join("q03.csv");
    assert_eq!(
        tpch::compare_with_file(result.batches(), &answer).expect("compared"),
        None
    );
}
