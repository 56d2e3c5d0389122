//! TPC-H answers against DuckDB's, on data made by `benches/peers/tpch.py`.
//!
//! Runs when `LAKEHOUSE_TPCH_DIR` names a directory holding the eight tables as
//! `<table>.parquet` and DuckDB's answers as `answers/qNN.csv`:
//!
//! ```text
//! benches/peers/.venv/bin/python benches/peers/tpch.py --sf 0.01 --dir /tmp/tpch-sf0.01
//! LAKEHOUSE_TPCH_DIR=/tmp/tpch-sf0.01 cargo test -p lakehouse-query --test lib tpch
//! ```

use std::path::{Path, PathBuf};

use lakehouse_query::{QueryEngine, QueryOptions};

use crate::common::column_strings;

const TABLES: [&str; 8] = [
    "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
];

/// The text of TPC-H query `n` (1..=22).
fn query(n: usize) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/tpch/q{n:02}.sql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Splits CSV text as DuckDB writes it: `,` separated, `"` quoted with `""` escapes.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                any = false;
            }
            '\r' => {}
            c => field.push(c),
        }
    }
    if any {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// Whether two printed values agree: equal text, or numbers within a cent or 1e-6
/// relative (DuckDB and DataFusion differ in decimal scales and float summation order).
fn same_value(ours: &str, theirs: &str) -> bool {
    let (a, b) = (ours.trim(), theirs.trim());
    if a == b || (a.is_empty() && b == "null") || (a == "null" && b.is_empty()) {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => {
            let diff = (x - y).abs();
            diff <= 0.01 || diff <= 1e-6 * x.abs().max(y.abs())
        }
        _ => false,
    }
}

/// Runs the 22 queries on `engine` and compares them with `answers`; returns the
/// mismatches found.
pub(crate) async fn check_answers(engine: &QueryEngine, answers: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for n in 1..=22 {
        let sql = query(n);
        let result = match engine.query(&sql, QueryOptions::new().bypass_cache()).await {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("q{n:02}: {e}"));
                continue;
            }
        };
        let cols = result.schema().fields().len();
        let ours: Vec<Vec<String>> = {
            let columns: Vec<Vec<String>> = (0..cols).map(|c| column_strings(&result, c)).collect();
            (0..result.num_rows())
                .map(|r| columns.iter().map(|c| c[r].clone()).collect())
                .collect()
        };
        let path = answers.join(format!("q{n:02}.csv"));
        let theirs = parse_csv(
            &std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
        );
        if ours.len() != theirs.len() {
            problems.push(format!(
                "q{n:02}: {} rows, DuckDB has {}",
                ours.len(),
                theirs.len()
            ));
            continue;
        }
        'rows: for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            if a.len() != b.len() {
                problems.push(format!(
                    "q{n:02} row {i}: {} columns, DuckDB has {}",
                    a.len(),
                    b.len()
                ));
                break;
            }
            for (x, y) in a.iter().zip(b) {
                if !same_value(x, y) {
                    problems.push(format!("q{n:02} row {i}: {a:?} vs DuckDB {b:?}"));
                    break 'rows;
                }
            }
        }
    }
    problems
}

/// Registers the eight tables of `dir` as Parquet tables.
pub(crate) async fn register(engine: &QueryEngine, dir: &Path) {
    for t in TABLES {
        let path = dir.join(format!("{t}.parquet"));
        engine
            .register_parquet(t, path.to_str().expect("a UTF-8 path"))
            .await
            .unwrap_or_else(|e| panic!("registering {t}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_answers_match_duckdb() {
    let Some(dir) = std::env::var_os("LAKEHOUSE_TPCH_DIR").map(PathBuf::from) else {
        eprintln!("LAKEHOUSE_TPCH_DIR is not set: TPC-H answers not checked");
        return;
    };
    let engine = QueryEngine::builder().target_partitions(2).build();
    register(&engine, &dir).await;
    let problems = check_answers(&engine, &dir.join("answers")).await;
    assert!(
        problems.is_empty(),
        "{} mismatches:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn csv_parsing_and_value_comparison() {
    let rows = parse_csv("1,\"a,b\",\"say \"\"hi\"\"\"\n2,,x\n");
    assert_eq!(
        rows,
        vec![vec!["1", "a,b", "say \"hi\""], vec!["2", "", "x"]]
    );
    assert!(same_value("25.575154", "25.575154611454693"));
    assert!(same_value("505822441.486100", "505822441.4861"));
    assert!(!same_value("1.5", "2.5"));
    assert!(!same_value("BRAZIL", "FRANCE"));
}
