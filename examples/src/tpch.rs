//! The 22 TPC-H queries and the one checker of their answers against DuckDB's, used by
//! the TPC-H test of this crate and by `lakehouse-bench query`.
//!
//! The data and DuckDB's answers come from `benches/peers/tpch.py` (tpchgen-cli, then
//! DuckDB writes `answers/qNN.csv`).

use std::path::{Path, PathBuf};

use arrow::array::{Array, RecordBatch};

/// The eight TPC-H tables, each stored as `<name>.parquet` by `benches/peers/tpch.py`.
pub const TABLES: [&str; 8] = [
    "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
];

/// Where the query texts live: `examples/tpch/qNN.sql`.
pub fn queries_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tpch")
}

/// The text of TPC-H query `n` (1..=22).
pub fn query(n: usize) -> std::io::Result<String> {
    std::fs::read_to_string(queries_dir().join(format!("q{n:02}.sql")))
}

/// Every value of `batches` printed as Arrow prints it, row by row.
pub fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, arrow::error::ArrowError> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let row = b
                .columns()
                .iter()
                .map(|c| arrow::util::display::array_value_to_string(c, r))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(row);
        }
    }
    Ok(out)
}

/// Every row of `batches` as one line: values as Arrow prints them, joined by `|`,
/// nulls as `NULL` (how the tests compare results as text).
pub fn row_lines(batches: &[RecordBatch]) -> Result<Vec<String>, arrow::error::ArrowError> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let cells = b
                .columns()
                .iter()
                .map(|c| {
                    if c.is_null(r) {
                        Ok("NULL".to_owned())
                    } else {
                        arrow::util::display::array_value_to_string(c, r)
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push(cells.join("|"));
        }
    }
    Ok(out)
}

/// Compares a result with DuckDB's answer in CSV; `Some(reason)` naming the first row
/// that differs, `None` when every row agrees (see [`same_value`]).
pub fn compare(ours: &[Vec<String>], answer_csv: &str) -> Option<String> {
    let theirs = parse_csv(answer_csv);
    if ours.len() != theirs.len() {
        return Some(format!("{} rows, DuckDB has {}", ours.len(), theirs.len()));
    }
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        if a.len() != b.len() {
            return Some(format!(
                "row {i}: {} columns, DuckDB has {}",
                a.len(),
                b.len()
            ));
        }
        if a.iter().zip(b).any(|(x, y)| !same_value(x, y)) {
            return Some(format!("row {i}: {a:?} vs DuckDB {b:?}"));
        }
    }
    None
}

/// Compares a result with the answer file `answers/qNN.csv` of `dir`.
pub fn compare_with_file(
    batches: &[RecordBatch],
    answer: &Path,
) -> Result<Option<String>, Box<dyn std::error::Error + Send + Sync>> {
    let text = std::fs::read_to_string(answer)
        .map_err(|e| format!("reading {}: {e}", answer.display()))?;
    Ok(compare(&rows(batches)?, &text))
}

/// Runs the 22 queries on `engine` (result cache bypassed) and compares each answer with
/// DuckDB's in `dir/answers`: one line per query that failed or answered differently.
pub async fn answer_problems(engine: &lakehouse_query::QueryEngine, dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for n in 1..=22 {
        let sql = match query(n) {
            Ok(sql) => sql,
            Err(e) => {
                problems.push(format!("q{n:02}: reading the query: {e}"));
                continue;
            }
        };
        let options = lakehouse_query::QueryOptions::new().bypass_cache();
        let result = match engine.query(&sql, options).await {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("q{n:02}: {e}"));
                continue;
            }
        };
        let answer = dir.join("answers").join(format!("q{n:02}.csv"));
        match compare_with_file(result.batches(), &answer) {
            Ok(None) => {}
            Ok(Some(problem)) => problems.push(format!("q{n:02}: {problem}")),
            Err(e) => problems.push(format!("q{n:02}: {e}")),
        }
    }
    problems
}

/// Whether two printed values agree: equal text, NULL printed either way, or numbers
/// within a cent or 1e-6 relative (DuckDB and DataFusion differ in decimal scales and in
/// float summation order).
pub fn same_value(ours: &str, theirs: &str) -> bool {
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

/// Splits CSV text as DuckDB writes it: `,` separated, `"` quoted with `""` escapes.
pub fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut pending = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        pending = true;
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
                pending = false;
            }
            '\r' => {}
            c => field.push(c),
        }
    }
    if pending {
        row.push(field);
        rows.push(row);
    }
    rows
}

/// Writes the eight TPC-H tables of `data` (`<name>.parquet`) into Delta tables under
/// `out` (`out/<name>`) with `lakehouse-storage`, one commit per million rows, and
/// returns them by name: the lakehouse path of the TPC-H test and of
/// `lakehouse-bench query`.
///
/// String columns (`Utf8View` in the tpchgen files) become `Utf8`; field metadata is
/// dropped. The Parquet files are decoded on a blocking thread.
pub async fn write_delta_tables(
    data: &Path,
    out: &Path,
) -> Result<Vec<(&'static str, lakehouse_storage::Table)>, Box<dyn std::error::Error + Send + Sync>>
{
    use std::sync::Arc;

    use arrow::array::RecordBatchReader;
    use arrow::datatypes::{DataType, Field, Schema};
    use lakehouse_storage::{Location, Table, TableOptions};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    const ROWS_PER_COMMIT: usize = 1 << 20;
    let mut tables = Vec::with_capacity(TABLES.len());
    for name in TABLES {
        let path = data.join(format!("{name}.parquet"));
        let file = std::fs::File::open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)?
            .with_batch_size(64 * 1024)
            .build()?;
        let schema = Arc::new(Schema::new(
            reader
                .schema()
                .fields()
                .iter()
                .map(|f| {
                    let ty = match f.data_type() {
                        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
                        other => other.clone(),
                    };
                    Field::new(f.name(), ty, f.is_nullable())
                })
                .collect::<Vec<_>>(),
        ));
        let table = Table::create(
            Location::local(out.join(name))?,
            schema.clone(),
            TableOptions::new(),
        )
        .await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<
            Result<RecordBatch, Box<dyn std::error::Error + Send + Sync>>,
        >(16);
        let target = schema.clone();
        let decode = tokio::task::spawn_blocking(move || {
            for batch in reader {
                let converted: Result<RecordBatch, Box<dyn std::error::Error + Send + Sync>> =
                    batch.map_err(Into::into).and_then(|b| {
                        let columns = b
                            .columns()
                            .iter()
                            .zip(target.fields())
                            .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
                            .collect::<Result<Vec<_>, _>>()?;
                        Ok(RecordBatch::try_new(target.clone(), columns)?)
                    });
                if tx.blocking_send(converted).is_err() {
                    return;
                }
            }
        });
        let mut pending: Vec<RecordBatch> = Vec::new();
        let mut rows = 0usize;
        while let Some(batch) = rx.recv().await {
            let batch = batch?;
            rows += batch.num_rows();
            pending.push(batch);
            if rows >= ROWS_PER_COMMIT {
                table.append(std::mem::take(&mut pending)).await?;
                rows = 0;
            }
        }
        if !pending.is_empty() {
            table.append(pending).await?;
        }
        decode.await?;
        tables.push((name, table));
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_parsing_and_value_comparison() {
        let rows = parse_csv("1,\"a,b\",\"say \"\"hi\"\"\"\n2,,x\n");
        assert_eq!(
            rows,
            vec![vec!["1", "a,b", "say \"hi\""], vec!["2", "", "x"]]
        );
        assert!(same_value("25.575154", "25.575154611454693"));
        assert!(same_value("505822441.486100", "505822441.4861"));
        assert!(same_value("", "null"));
        assert!(!same_value("1.5", "2.5"));
        assert!(!same_value("BRAZIL", "FRANCE"));
    }

    #[test]
    fn compare_names_the_first_difference() {
        let ours = vec![vec!["a".to_owned(), "1.00".to_owned()]];
        assert_eq!(compare(&ours, "a,1\n"), None);
        assert_eq!(
            compare(&ours, "a,2\n").as_deref(),
            Some("row 0: [\"a\", \"1.00\"] vs DuckDB [\"a\", \"2\"]")
        );
        assert_eq!(
            compare(&ours, "a,1\nb,2\n").as_deref(),
            Some("1 rows, DuckDB has 2")
        );
    }

    #[test]
    fn every_query_text_is_there() {
        for n in 1..=22 {
            let sql = query(n).expect("the query file exists");
            assert!(sql.to_ascii_lowercase().contains("select"), "q{n:02}");
        }
    }
}
