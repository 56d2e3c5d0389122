use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use lakehouse_core::{MemoryTable, TableSink};
use lakehouse_query::{QueryEngine, QueryOptions};
use lakehouse_storage::{Location, PartitionField, Table, TableOptions};
use std::sync::Arc;

#[tokio::test]
async fn scratch() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, true),
        Field::new("qty", DataType::Int64, true),
    ]));
    let b = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(arrow::array::StringArray::from(vec![
                Some("eu"),
                Some("eu"),
                Some("eu"),
            ])),
            Arc::new(Int64Array::from(vec![None, None, None])),
        ],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = Table::create(
        Location::local(dir.path()).unwrap(),
        schema.clone(),
        TableOptions::new().partition_by([PartitionField::identity("region")]),
    )
    .await
    .unwrap();
    d.append(vec![b.clone()]).await.unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let d2 = Table::create(
        Location::local(dir2.path()).unwrap(),
        schema.clone(),
        TableOptions::new(),
    )
    .await
    .unwrap();
    d2.append(vec![b.clone()]).await.unwrap();
    let m = MemoryTable::new("m", schema.clone());
    m.append(vec![b.clone()], None).await.unwrap();
    let e = QueryEngine::new();
    e.register_table("d", Arc::new(d)).unwrap();
    e.register_table("d2", Arc::new(d2)).unwrap();
    e.register_table("m", Arc::new(m)).unwrap();
    for w in [
        "qty <> 1 OR qty <> 2",
        "qty NOT IN (1) OR qty NOT IN (2)",
        "qty NOT IN (1, NULL) OR qty = 5",
        "qty IN (1, NULL) OR qty = 5",
        "NOT (qty IN (1, NULL)) OR qty = 5",
        "qty NOT IN (NULL) OR qty = 0",
        "qty NOT IN (NULL) OR qty > 0",
        "qty NOT IN (NULL) OR qty <> 0",
    ] {
        for t in ["d", "d2", "m"] {
            let sql = format!("SELECT count(*) FROM {t} WHERE {w}");
            let r = e.query(&sql, QueryOptions::new().bypass_cache()).await;
            match r {
                Ok(r) => println!(
                    "{t}: {w} -> {}",
                    arrow::util::pretty::pretty_format_batches(r.batches())
                        .unwrap()
                        .to_string()
                        .lines()
                        .nth(3)
                        .unwrap_or("")
                ),
                Err(er) => println!("{t}: {w} -> ERR {er}"),
            }
        }
        if true {
            continue;
        }
        let sql = format!("EXPLAIN SELECT count(*) FROM d WHERE {w}");
        let r = e
            .query(&sql, QueryOptions::new().bypass_cache())
            .await
            .unwrap();
        println!(
            "{}",
            arrow::util::pretty::pretty_format_batches(r.batches()).unwrap()
        );
    }
}
