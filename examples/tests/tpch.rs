//! TPC-H answers against DuckDB's, on data made by `benches/peers/tpch.py`.
//!
//! Runs when `LAKEHOUSE_TPCH_DIR` names a directory holding the eight tables as
//! `<table>.parquet` and DuckDB's answers as `answers/qNN.csv`:
//!
//! ```text
//! benches/peers/.venv/bin/python benches/peers/tpch.py --sf 0.01 --dir /tmp/tpch-sf0.01
//! LAKEHOUSE_TPCH_DIR=/tmp/tpch-sf0.01 cargo test --workspace --all-features tpch
//! ```

use std::path::PathBuf;

use lakehouse_examples::tpch;
use lakehouse_query::{QueryEngine, QueryOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_answers_match_duckdb() {
    let Some(dir) = std::env::var_os("LAKEHOUSE_TPCH_DIR").map(PathBuf::from) else {
        eprintln!("LAKEHOUSE_TPCH_DIR is not set: TPC-H answers not checked");
        return;
    };
    let engine = QueryEngine::builder().target_partitions(2).build();
    for t in tpch::TABLES {
        let path = dir.join(format!("{t}.parquet"));
        engine
            .register_parquet(t, path.to_str().expect("a UTF-8 path"))
            .await
            .unwrap_or_else(|e| panic!("registering {t}: {e}"));
    }
    let mut problems = Vec::new();
    for n in 1..=22 {
        let sql = tpch::query(n).expect("the query text exists");
        let result = match engine.query(&sql, QueryOptions::new().bypass_cache()).await {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("q{n:02}: {e}"));
                continue;
            }
        };
        let answer = dir.join("answers").join(format!("q{n:02}.csv"));
        match tpch::compare_with_file(result.batches(), &answer) {
            Ok(None) => {}
            Ok(Some(problem)) => problems.push(format!("q{n:02}: {problem}")),
            Err(e) => problems.push(format!("q{n:02}: {e}")),
        }
    }
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
