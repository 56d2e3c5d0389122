//! `MERGE INTO` through SQL on a writable `MemoryTable`: clauses in order, computed
//! keys and values, subquery sources, and statements refused before any commit.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use lakehouse_core::{MemoryTable, TableSink, TableSource};
use lakehouse_query::{ErrorKind, QueryEngine};

use crate::common::{column_i64, column_strings};

fn stock_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("item", DataType::Utf8, true),
        Field::new("qty", DataType::Int64, false),
    ]))
}

/// An engine with `stock` (writable: ids 1..=4, qty 10 * id) and `changes`
/// (read-only: id, qty, op).
async fn engine(changes: &[(i64, i64, &str)]) -> (QueryEngine, MemoryTable) {
    let stock = MemoryTable::new("stock", stock_schema());
    stock
        .append(
            vec![
                RecordBatch::try_new(
                    stock_schema(),
                    vec![
                        Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                        Arc::new(StringArray::from(vec!["a", "b", "c", "d"])),
                        Arc::new(Int64Array::from(vec![10, 20, 30, 40])),
                    ],
                )
                .expect("stock"),
            ],
            None,
        )
        .await
        .expect("append");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("qty", DataType::Int64, false),
        Field::new("op", DataType::Utf8, false),
    ]));
    let src = MemoryTable::new("changes", schema.clone());
    src.append(
        vec![
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(Int64Array::from_iter_values(changes.iter().map(|c| c.0))),
                    Arc::new(Int64Array::from_iter_values(changes.iter().map(|c| c.1))),
                    Arc::new(StringArray::from_iter_values(changes.iter().map(|c| c.2))),
                ],
            )
            .expect("changes"),
        ],
        None,
    )
    .await
    .expect("append");
    let engine = QueryEngine::new();
    engine
        .register_writable("stock", Arc::new(stock.clone()))
        .expect("register stock");
    engine
        .register_table("changes", Arc::new(src))
        .expect("register changes");
    (engine, stock)
}

async fn rows(engine: &QueryEngine) -> (Vec<i64>, Vec<String>, Vec<i64>) {
    let r = engine
        .sql("SELECT id, item, qty FROM stock ORDER BY id")
        .await
        .expect("select");
    (column_i64(&r, 0), column_strings(&r, 1), column_i64(&r, 2))
}

#[tokio::test]
async fn merge_updates_deletes_and_inserts_by_the_first_clause_that_holds() {
    let (engine, stock) = engine(&[
        (1, 5, "u"),
        (2, 0, "d"),
        (3, 7, "skip"),
        (9, 90, "i"),
        (10, 100, "i"),
    ])
    .await;
    let r = engine
        .sql(
            "MERGE INTO stock AS t USING changes AS s ON t.id = s.id \
             WHEN MATCHED AND s.op = 'd' THEN DELETE \
             WHEN MATCHED AND s.op = 'u' THEN UPDATE SET qty = t.qty + s.qty, item = 'upd' \
             WHEN MATCHED THEN DELETE \
             WHEN NOT MATCHED AND s.qty > 95 THEN INSERT (id, item, qty) VALUES (s.id, 'new', s.qty)",
        )
        .await
        .expect("merge");
    // 1 updated, 2 and 3 deleted (3 by the unconditional clause), 10 inserted.
    assert_eq!(column_i64(&r, 0), [4]);
    assert_eq!(stock.version().await.expect("version"), 2, "one commit");
    let (ids, items, qty) = rows(&engine).await;
    assert_eq!(ids, [1, 4, 10]);
    assert_eq!(items, ["upd", "d", "new"]);
    assert_eq!(qty, [15, 40, 100]);

    // A subquery source with a computed key (Int32 cast to the Int64 column) and an
    // INSERT without a column list.
    let r = engine
        .sql(
            "MERGE INTO stock t \
             USING (SELECT CAST(id AS INT) - 1 AS k, qty FROM (VALUES (5, 1), (12, 2)) AS v(id, qty)) s \
             ON t.id = s.k + 0 AND t.qty > 0 \
             WHEN MATCHED THEN UPDATE SET qty = s.qty \
             WHEN NOT MATCHED THEN INSERT VALUES (s.k, NULL, s.qty * 10)",
        )
        .await
        .expect("merge from a subquery");
    assert_eq!(column_i64(&r, 0), [2]);
    let (ids, items, qty) = rows(&engine).await;
    assert_eq!(ids, [1, 4, 10, 11]);
    assert_eq!(items, ["upd", "d", "new", ""]);
    assert_eq!(qty, [15, 1, 100, 20]);
}

#[tokio::test]
async fn bad_merges_commit_nothing() {
    let (engine, stock) = engine(&[(1, 5, "u"), (1, 6, "u"), (7, 1, "i")]).await;
    let cases = [
        // Row 1 of the target is matched twice.
        (
            "MERGE INTO stock t USING changes s ON t.id = s.id \
             WHEN MATCHED THEN UPDATE SET qty = s.qty",
            ErrorKind::InvalidInput,
        ),
        (
            "MERGE INTO stock t USING changes s ON t.id = s.nope \
             WHEN MATCHED THEN DELETE",
            ErrorKind::ColumnNotFound,
        ),
        (
            "MERGE INTO stock t USING changes s ON t.id = s.id \
             WHEN MATCHED AND s.op = 'x' THEN UPDATE SET nope = 1",
            ErrorKind::ColumnNotFound,
        ),
        (
            "MERGE INTO stock t USING changes s ON t.id = s.id \
             WHEN MATCHED THEN UPDATE SET qty = s.op",
            ErrorKind::TypeMismatch,
        ),
        (
            "MERGE INTO stock t USING changes s ON t.id = s.id \
             WHEN MATCHED AND s.qty THEN DELETE",
            ErrorKind::TypeMismatch,
        ),
        // INSERT values see the source row only.
        (
            "MERGE INTO stock t USING changes s ON t.id = s.id \
             WHEN NOT MATCHED THEN INSERT (id, qty) VALUES (s.id, t.qty)",
            ErrorKind::ColumnNotFound,
        ),
        // id is not nullable and not inserted.
        (
            "MERGE INTO stock t USING changes s ON t.id = s.id \
             WHEN NOT MATCHED THEN INSERT (qty) VALUES (s.qty)",
            ErrorKind::SchemaMismatch,
        ),
        (
            "MERGE INTO stock t USING changes s ON t.id > s.id \
             WHEN MATCHED THEN DELETE",
            ErrorKind::Unsupported,
        ),
        (
            "MERGE INTO stock t USING changes s ON t.id = s.id \
             WHEN NOT MATCHED BY SOURCE THEN DELETE",
            ErrorKind::Unsupported,
        ),
        // The source is read-only, and so a target it cannot be.
        (
            "MERGE INTO changes t USING stock s ON t.id = s.id \
             WHEN MATCHED THEN DELETE",
            ErrorKind::Unsupported,
        ),
        (
            "MERGE INTO nope t USING stock s ON t.id = s.id WHEN MATCHED THEN DELETE",
            ErrorKind::TableNotFound,
        ),
    ];
    for (sql, kind) in cases {
        let err = engine.sql(sql).await.expect_err(sql);
        assert_eq!(err.kind(), kind, "{sql}: {err}");
    }
    assert_eq!(stock.version().await.expect("version"), 1);
    let (ids, _, qty) = rows(&engine).await;
    assert_eq!((ids, qty), (vec![1, 2, 3, 4], vec![10, 20, 30, 40]));
}

/// Regression: `MERGE` values and conditions are simplified before they run (DataFusion
/// only evaluates `coalesce` rewritten into a `CASE`; it failed with an internal error).
#[tokio::test]
async fn merge_values_with_coalesce_run() {
    let (engine, _stock) = engine(&[(1, 5, "u"), (7, 70, "i")]).await;
    let r = engine
        .sql(
            "MERGE INTO stock t USING changes s ON t.id = s.id \
             WHEN MATCHED AND coalesce(s.op, 'x') = 'u' \
               THEN UPDATE SET item = coalesce(NULL, s.op), qty = coalesce(s.qty, t.qty) + 1 \
             WHEN NOT MATCHED THEN INSERT VALUES (s.id, coalesce(s.op, 'x'), s.qty)",
        )
        .await
        .expect("coalesce in MERGE");
    assert_eq!(column_i64(&r, 0), [2]);
    let (ids, items, qty) = rows(&engine).await;
    assert_eq!(ids, [1, 2, 3, 4, 7]);
    assert_eq!(items, ["u", "b", "c", "d", "i"]);
    assert_eq!(qty, [6, 20, 30, 40, 70]);
}
