//! SQL over a lakehouse table with struct, list and map columns: DataFusion reads them
//! through the table's scan (`s.a`, `l[1]`, `m['k']`, `ls[1]['x']`), also in a
//! column-mapped table Python `deltalake` wrote (nested fields under physical names),
//! and a query result with nested columns (string views inside) appends back to a table.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, Int64Builder, ListBuilder, MapBuilder, RecordBatch,
    StringArray, StringBuilder, StructArray, StructBuilder,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Field, Fields, Int64Type, Schema, SchemaRef};
use futures::TryStreamExt;
use lakehouse_core::{ScanRequest, TableSource};
use lakehouse_query::{QueryEngine, QueryOptions};
use lakehouse_storage::{Location, Table, TableOptions};

fn s_fields() -> Fields {
    Fields::from(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Utf8, true),
    ])
}

fn item_fields() -> Fields {
    Fields::from(vec![Field::new("x", DataType::Int64, true)])
}

fn schema() -> SchemaRef {
    let list = |item: DataType| DataType::List(Arc::new(Field::new("element", item, true)));
    let map = DataType::Map(
        Arc::new(Field::new(
            "key_value",
            DataType::Struct(Fields::from(vec![
                Field::new("key", DataType::Utf8, false),
                Field::new("value", DataType::Int64, true),
            ])),
            false,
        )),
        false,
    );
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("s", DataType::Struct(s_fields()), true),
        Field::new("l", list(DataType::Int64), true),
        Field::new("m", map, true),
        Field::new("ls", list(DataType::Struct(item_fields())), true),
    ]))
}

/// Rows 0..n: `s` is null for id 3, `l` is `[id*10, id*10+1]` (empty for 2), `m` has
/// `k -> id` (and no `k` for id 1), `ls` is `[{x: id}]` (null for 0).
fn batch(n: i64) -> RecordBatch {
    let s = StructArray::try_new(
        s_fields(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("b{i}")),
            )),
        ],
        Some(NullBuffer::from((0..n).map(|i| i != 3).collect::<Vec<_>>())),
    )
    .unwrap();
    let mut l = ListBuilder::new(Int64Builder::new()).with_field(Arc::new(Field::new(
        "element",
        DataType::Int64,
        true,
    )));
    let mut m = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
    let mut ls = ListBuilder::new(StructBuilder::from_fields(item_fields(), 1)).with_field(
        Arc::new(Field::new("element", DataType::Struct(item_fields()), true)),
    );
    for i in 0..n {
        if i != 2 {
            l.values().append_value(i * 10);
            l.values().append_value(i * 10 + 1);
        }
        l.append(true);
        let key = if i == 1 { "other" } else { "k" };
        m.keys().append_value(key);
        m.values().append_value(i);
        m.append(true).unwrap();
        if i == 0 {
            ls.append(false);
        } else {
            let item = ls.values();
            item.field_builder::<Int64Builder>(0)
                .unwrap()
                .append_value(i);
            item.append(true);
            ls.append(true);
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..n)),
        Arc::new(s),
        Arc::new(l.finish()),
        Arc::new(m.finish()),
        Arc::new(ls.finish()),
    ];
    let fields: Vec<Field> = schema()
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), f.is_nullable()))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

fn ints(b: &RecordBatch, column: &str) -> Vec<Option<i64>> {
    b.column_by_name(column)
        .unwrap()
        .as_primitive::<Int64Type>()
        .iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_reads_struct_list_and_map_columns_of_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let table = Table::create(
        Location::local(dir.path().join("nested")).unwrap(),
        schema(),
        TableOptions::new(),
    )
    .await
    .unwrap();
    table.append(vec![batch(5)]).await.unwrap();
    let engine = QueryEngine::builder().target_partitions(2).build();
    engine.register_table("t", Arc::new(table.clone())).unwrap();
    let result = engine
        .query(
            "SELECT id, s.a AS a, s['b'] AS b, l[1] AS first, l[2] AS second, \
                    m['k'] AS k, ls[1]['x'] AS lx \
             FROM t WHERE s IS NOT NULL ORDER BY id",
            QueryOptions::new().bypass_cache(),
        )
        .await
        .unwrap();
    let batches = result.batches();
    let b = arrow::compute::concat_batches(result.schema(), batches).unwrap();
    assert_eq!(ints(&b, "id"), vec![Some(0), Some(1), Some(2), Some(4)]);
    assert_eq!(ints(&b, "a"), vec![Some(0), Some(1), Some(2), Some(4)]);
    let names = arrow::compute::cast(b.column_by_name("b").unwrap(), &DataType::Utf8).unwrap();
    let names: Vec<Option<&str>> = names.as_string::<i32>().iter().collect();
    assert_eq!(names, vec![Some("b0"), Some("b1"), Some("b2"), Some("b4")]);
    assert_eq!(ints(&b, "first"), vec![Some(0), Some(10), None, Some(40)]);
    assert_eq!(ints(&b, "second"), vec![Some(1), Some(11), None, Some(41)]);
    assert_eq!(ints(&b, "k"), vec![Some(0), None, Some(2), Some(4)]);
    assert_eq!(ints(&b, "lx"), vec![None, Some(1), Some(2), Some(4)]);

    // A nested query result (DataFusion's own shapes) appends back to the table.
    let again = engine
        .query(
            "SELECT id + 100 AS id, s, l, m, ls FROM t ORDER BY id",
            QueryOptions::new().bypass_cache(),
        )
        .await
        .unwrap();
    table.append(again.batches().to_vec()).await.unwrap();
    let back: Vec<RecordBatch> = table
        .scan(ScanRequest::new())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let all = arrow::compute::concat_batches(&schema(), &back).unwrap();
    assert_eq!(all.num_rows(), 10);
    let ids = ints(&all, "id");
    let first = all.slice(0, 5);
    let copy = all.slice(5, 5);
    assert_eq!(
        ids[5..],
        [Some(100), Some(101), Some(102), Some(103), Some(104)]
    );
    for c in ["s", "l", "m", "ls"] {
        assert_eq!(
            first.column_by_name(c).unwrap().to_data(),
            copy.column_by_name(c).unwrap().to_data(),
            "{c}"
        );
    }
    assert!(copy.column_by_name("s").unwrap().is_null(3));
}

/// A column-mapped table with nested fields, as Python `deltalake` writes it: every
/// struct field under a physical name of its own in the files. SQL reads the logical
/// fields, including in predicates on the top-level columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_reads_nested_fields_of_column_mapped_tables() {
    let Some(python) = lakehouse_examples::peers::python("the nested column-mapping test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import sys, deltalake, pyarrow as pa
ids = list(range(6))
t = pa.table({
    "id": pa.array(ids, pa.int64()),
    "s": pa.array([None if i == 3 else {"a": i * 10, "b": f"b{i}"} for i in ids],
                  pa.struct([("a", pa.int64()), ("b", pa.string())])),
    "ls": pa.array([[{"x": i}] for i in ids], pa.list_(pa.struct([("x", pa.int64())]))),
    "m": pa.array([[("k", {"y": i + 100})] for i in ids],
                  pa.map_(pa.string(), pa.struct([("y", pa.int64())]))),
})
deltalake.write_deltalake(sys.argv[1], t, configuration={"delta.columnMapping.mode": "name"})
"#;
    lakehouse_examples::peers::run_script(&python, script, &[dir.path()]).unwrap();
    let table = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    let engine = QueryEngine::builder().target_partitions(2).build();
    engine.register_table("t", Arc::new(table)).unwrap();
    let result = engine
        .query(
            "SELECT id, s.a AS a, s['b'] AS b, ls[1]['x'] AS x, m['k']['y'] AS y \
             FROM t WHERE id >= 1 ORDER BY id",
            QueryOptions::new(),
        )
        .await
        .unwrap();
    let b = arrow::compute::concat_batches(result.schema(), result.batches()).unwrap();
    assert_eq!(ints(&b, "id"), [1, 2, 3, 4, 5].map(Some));
    assert_eq!(
        ints(&b, "a"),
        [Some(10), Some(20), None, Some(40), Some(50)]
    );
    let names = arrow::compute::cast(b.column_by_name("b").unwrap(), &DataType::Utf8).unwrap();
    let names: Vec<Option<&str>> = names.as_string::<i32>().iter().collect();
    assert_eq!(
        names,
        [Some("b1"), Some("b2"), None, Some("b4"), Some("b5")]
    );
    assert_eq!(ints(&b, "x"), [1, 2, 3, 4, 5].map(Some));
    assert_eq!(ints(&b, "y"), [101, 102, 103, 104, 105].map(Some));
}
