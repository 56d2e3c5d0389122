//! TPC-H answers against DuckDB's, on data made by `benches/peers/tpch.py`: over the
//! Parquet files (`register_parquet`) and over the same data written into Delta tables
//! by `lakehouse-storage` (`register_table`, read as files by DataFusion's own scan).
//!
//! Runs when `LAKEHOUSE_TPCH_DIR` names a directory holding the eight tables as
//! `<table>.parquet` and DuckDB's answers as `answers/qNN.csv`:
//!
//! ```text
//! benches/peers/.venv/bin/python benches/peers/tpch.py --sf 0.01 --dir /tmp/tpch-sf0.01
//! LAKEHOUSE_TPCH_DIR=/tmp/tpch-sf0.01 cargo test --workspace --all-features tpch
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lakehouse_examples::tpch;
use lakehouse_query::QueryEngine;

fn tpch_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("LAKEHOUSE_TPCH_DIR").map(PathBuf::from);
    if dir.is_none() {
        eprintln!("LAKEHOUSE_TPCH_DIR is not set: TPC-H answers not checked");
    }
    dir
}

/// Runs the 22 queries and compares each answer with DuckDB's.
async fn check_answers(engine: &QueryEngine, dir: &Path) {
    let problems = tpch::answer_problems(engine, dir).await;
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_answers_match_duckdb() {
    let Some(dir) = tpch_dir() else {
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
    check_answers(&engine, &dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_answers_over_delta_tables_match_duckdb() {
    let Some(dir) = tpch_dir() else {
        return;
    };
    let out = tempfile::tempdir().expect("a temporary directory");
    let tables = tpch::write_delta_tables(&dir, out.path())
        .await
        .expect("the TPC-H data written as Delta tables");
    let engine = QueryEngine::builder().target_partitions(2).build();
    for (name, table) in tables {
        engine
            .register_table(name, Arc::new(table))
            .unwrap_or_else(|e| panic!("registering {name}: {e}"));
    }
    let plan = engine
        .explain("SELECT COUNT(*) FROM lineitem WHERE l_quantity > 10", false)
        .await
        .expect("explain");
    assert!(plan.contains("DataSourceExec"), "{plan}");
    check_answers(&engine, &dir).await;
}
