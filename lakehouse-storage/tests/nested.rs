//! Nested columns (struct, list, map, nested in each other) and void columns: round
//! trips, the shapes producers hand to `append`, predicates, statistics other writers
//! keep for nested columns, and tables Python `deltalake`, Polars and DuckDB write and
//! read (when `LAKEHOUSE_PEERS_PYTHON` is set, as in `interop.rs`).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, Int32Array, Int64Array, Int64Builder, LargeListArray, ListArray,
    MapBuilder, NullArray, RecordBatch, StringArray, StringBuilder, StringViewArray, StructArray,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use lakehouse_core::{ErrorKind, ScanRequest, TableSource, col};
use lakehouse_storage::{Location, OptimizeOptions, PartitionField, Table, TableOptions};
use serde_json::{Value, json};

use crate::common::{collect, peers_python, rows, run_script};

fn list_of(item: DataType, nullable: bool) -> DataType {
    DataType::List(Arc::new(Field::new("element", item, nullable)))
}

fn map_of(key: DataType, value: DataType) -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "key_value",
            DataType::Struct(Fields::from(vec![
                Field::new("key", key, false),
                Field::new("value", value, true),
            ])),
            false,
        )),
        false,
    )
}

fn s_fields() -> Fields {
    Fields::from(vec![
        Field::new("a", DataType::Int32, true),
        Field::new("b", DataType::Utf8, true),
        Field::new(
            "inner",
            DataType::Struct(Fields::from(vec![Field::new("x", DataType::Float64, true)])),
            true,
        ),
    ])
}

fn ls_fields() -> Fields {
    Fields::from(vec![
        Field::new("x", DataType::Int64, true),
        Field::new("y", DataType::Utf8, true),
    ])
}

fn sl_fields() -> Fields {
    Fields::from(vec![Field::new(
        "tags",
        list_of(DataType::Utf8, true),
        true,
    )])
}

/// `id`, a struct (with a struct inside), a list, a map, a list of structs, a struct of
/// a list.
fn nested_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("s", DataType::Struct(s_fields()), true),
        Field::new("l", list_of(DataType::Int64, true), true),
        Field::new("m", map_of(DataType::Utf8, DataType::Int64), true),
        Field::new("ls", list_of(DataType::Struct(ls_fields()), true), true),
        Field::new("sl", DataType::Struct(sl_fields()), true),
    ]))
}

/// Row `i` of the test data as the JSON the checks compare (nulls at each level).
fn row_json(i: i64) -> Value {
    let s = match i % 5 {
        0 => Value::Null,
        1 => json!({"a": null, "b": format!("b{i}"), "inner": {"x": i as f64 + 0.25}}),
        2 => json!({"a": i, "b": null, "inner": null}),
        3 => json!({"a": i, "b": "ü", "inner": {"x": null}}),
        _ => json!({"a": -i, "b": "", "inner": {"x": 1.5}}),
    };
    let l = match i % 4 {
        0 => Value::Null,
        1 => json!([]),
        2 => json!([null]),
        _ => json!([i, i + 1, null, i + 2]),
    };
    let m = match i % 3 {
        0 => Value::Null,
        1 => json!({}),
        _ => json!({"k": i, "n": null}),
    };
    let ls = match i % 4 {
        0 => json!([{"x": i, "y": "y"}, null, {"x": null, "y": null}]),
        1 => Value::Null,
        2 => json!([]),
        _ => json!([{"x": i, "y": null}]),
    };
    let sl = match i % 3 {
        0 => json!({"tags": ["t", null]}),
        1 => json!({"tags": null}),
        _ => Value::Null,
    };
    json!({"id": i, "s": s, "l": l, "m": m, "ls": ls, "sl": sl})
}

/// The rows `ids` in the shapes producers use: the list with `item` fields as a
/// `LargeList`, strings as `Utf8View` inside the struct, the map with `entries`.
fn producer_batch(ids: &[i64]) -> RecordBatch {
    let rows: Vec<Value> = ids.iter().map(|&i| row_json(i)).collect();
    let get = |r: &Value, k: &str| r[k].clone();
    // s: struct<a: int32, b: utf8view, inner: struct<x: double>>
    let sv: Vec<Value> = rows.iter().map(|r| get(r, "s")).collect();
    let a = Int32Array::from(
        sv.iter()
            .map(|v| v["a"].as_i64().map(|x| x as i32))
            .collect::<Vec<_>>(),
    );
    let b = StringViewArray::from(sv.iter().map(|v| v["b"].as_str()).collect::<Vec<_>>());
    let x = Float64Array::from(
        sv.iter()
            .map(|v| v["inner"]["x"].as_f64())
            .collect::<Vec<_>>(),
    );
    let inner = StructArray::try_new(
        Fields::from(vec![Field::new("x", DataType::Float64, true)]),
        vec![Arc::new(x)],
        Some(NullBuffer::from(
            sv.iter()
                .map(|v| v["inner"].is_object())
                .collect::<Vec<_>>(),
        )),
    )
    .unwrap();
    let s = StructArray::try_new(
        Fields::from(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Utf8View, true),
            Field::new("inner", inner.data_type().clone(), true),
        ]),
        vec![Arc::new(a), Arc::new(b), Arc::new(inner)],
        Some(NullBuffer::from(
            sv.iter().map(Value::is_object).collect::<Vec<_>>(),
        )),
    )
    .unwrap();
    // l: large_list<item: int64>
    let lv: Vec<Value> = rows.iter().map(|r| get(r, "l")).collect();
    let mut offsets = vec![0i64];
    let mut values = Vec::new();
    for v in &lv {
        for x in v.as_array().into_iter().flatten() {
            values.push(x.as_i64());
        }
        offsets.push(values.len() as i64);
    }
    let l = LargeListArray::new(
        Arc::new(Field::new("item", DataType::Int64, true)),
        OffsetBuffer::new(offsets.into()),
        Arc::new(Int64Array::from(values)),
        Some(NullBuffer::from(
            lv.iter().map(Value::is_array).collect::<Vec<_>>(),
        )),
    );
    // m: map<utf8, int64> with arrow's default names (`entries`, `keys`, `values`).
    let mut mb = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
    for r in &rows {
        match r["m"].as_object() {
            None => mb.append(false).unwrap(),
            Some(o) => {
                for (k, v) in o {
                    mb.keys().append_value(k);
                    mb.values().append_option(v.as_i64());
                }
                mb.append(true).unwrap();
            }
        }
    }
    let m = mb.finish();
    // ls: list<item: struct<x, y>>
    let lsv: Vec<Value> = rows.iter().map(|r| get(r, "ls")).collect();
    let mut offsets = vec![0i32];
    let items: Vec<&Value> = lsv
        .iter()
        .flat_map(|v| v.as_array().into_iter().flatten())
        .collect();
    for v in &lsv {
        let n = v.as_array().map_or(0, Vec::len) as i32;
        offsets.push(offsets.last().unwrap() + n);
    }
    let item_struct = StructArray::try_new(
        ls_fields(),
        vec![
            Arc::new(Int64Array::from(
                items.iter().map(|v| v["x"].as_i64()).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                items.iter().map(|v| v["y"].as_str()).collect::<Vec<_>>(),
            )),
        ],
        Some(NullBuffer::from(
            items.iter().map(|v| v.is_object()).collect::<Vec<_>>(),
        )),
    )
    .unwrap();
    let ls = ListArray::new(
        Arc::new(Field::new("item", item_struct.data_type().clone(), true)),
        OffsetBuffer::new(offsets.into()),
        Arc::new(item_struct),
        Some(NullBuffer::from(
            lsv.iter().map(Value::is_array).collect::<Vec<_>>(),
        )),
    );
    // sl: struct<tags: list<element: utf8>>
    let slv: Vec<Value> = rows.iter().map(|r| get(r, "sl")).collect();
    let mut offsets = vec![0i32];
    let mut tags = Vec::new();
    for v in &slv {
        for t in v["tags"].as_array().into_iter().flatten() {
            tags.push(t.as_str().map(str::to_owned));
        }
        offsets.push(tags.len() as i32);
    }
    let tags = ListArray::new(
        Arc::new(Field::new("element", DataType::Utf8, true)),
        OffsetBuffer::new(offsets.into()),
        Arc::new(StringArray::from(tags)),
        Some(NullBuffer::from(
            slv.iter().map(|v| v["tags"].is_array()).collect::<Vec<_>>(),
        )),
    );
    let sl = StructArray::try_new(
        sl_fields(),
        vec![Arc::new(tags)],
        Some(NullBuffer::from(
            slv.iter().map(Value::is_object).collect::<Vec<_>>(),
        )),
    )
    .unwrap();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.to_vec())),
        Arc::new(s),
        Arc::new(l),
        Arc::new(m),
        Arc::new(ls),
        Arc::new(sl),
    ];
    let fields: Vec<Field> = ["id", "s", "l", "m", "ls", "sl"]
        .iter()
        .zip(&columns)
        .map(|(n, c)| Field::new(*n, c.data_type().clone(), *n != "id"))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

/// The rows of `batches` as JSON objects (explicit nulls, maps as objects), by `id`.
pub(crate) fn json_rows(batches: &[RecordBatch]) -> Vec<Value> {
    let mut out = Vec::new();
    for b in batches {
        let mut buf = Vec::new();
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(&mut buf);
        w.write(b).unwrap();
        w.finish().unwrap();
        drop(w);
        if buf.is_empty() {
            continue;
        }
        let v: Vec<Value> = serde_json::from_slice(&buf).unwrap();
        out.extend(v);
    }
    out.sort_by_key(|r| r["id"].as_i64());
    out
}

async fn nested_table(dir: &std::path::Path, options: TableOptions) -> Table {
    Table::create(Location::local(dir).unwrap(), nested_schema(), options)
        .await
        .unwrap()
}

#[tokio::test]
async fn nested_columns_round_trip_in_the_shapes_producers_use() {
    let dir = tempfile::tempdir().unwrap();
    let t = nested_table(dir.path(), TableOptions::new().checkpoint_interval(2)).await;
    let ids: Vec<i64> = (0..40).collect();
    t.append(vec![producer_batch(&ids[..20])]).await.unwrap();
    t.append(vec![producer_batch(&ids[20..])]).await.unwrap();
    let want: Vec<Value> = ids.iter().map(|&i| row_json(i)).collect();

    let got = collect(&t, ScanRequest::new()).await;
    assert!(got.iter().all(|b| b.schema() == nested_schema()));
    assert_eq!(json_rows(&got), want);

    // Reopened (kernel replays from the checkpoint), compacted (read and rewritten).
    let t = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    assert_eq!(t.user_schema(), nested_schema());
    t.optimize(OptimizeOptions::new()).await.unwrap();
    assert_eq!(json_rows(&collect(&t, ScanRequest::new()).await), want);

    // Projection of nested columns.
    let got = collect(&t, ScanRequest::new().with_projection(["m", "id"])).await;
    assert_eq!(got[0].schema().field(0).name(), "m");
    let want_m: Vec<Value> = want
        .iter()
        .map(|r| json!({"m": r["m"], "id": r["id"]}))
        .collect();
    assert_eq!(json_rows(&got), want_m);
}

#[tokio::test]
async fn predicates_on_nested_columns_test_nulls_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let t = nested_table(dir.path(), TableOptions::new()).await;
    let ids: Vec<i64> = (0..30).collect();
    t.append(vec![producer_batch(&ids)]).await.unwrap();
    let ids_of = |batches: &[RecordBatch]| -> Vec<i64> {
        json_rows(batches)
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    let got = collect(&t, ScanRequest::new().with_predicate(col("s").is_null())).await;
    assert_eq!(
        ids_of(&got),
        (0..30).filter(|i| i % 5 == 0).collect::<Vec<_>>()
    );
    let p = col("l").is_not_null().and(col("id").lt(10i64));
    let got = collect(&t, ScanRequest::new().with_predicate(p)).await;
    assert_eq!(
        ids_of(&got),
        (0..10).filter(|i| i % 4 != 0).collect::<Vec<_>>()
    );
    let got = collect(&t, ScanRequest::new().with_predicate(col("m").is_null())).await;
    assert_eq!(
        ids_of(&got),
        (0..30).filter(|i| i % 3 == 0).collect::<Vec<_>>()
    );
    // A file whose `s` has no nulls is not skipped for `s IS NULL` by mistake (no
    // statistics are kept for nested columns).
    let stats = t.statistics(None).await.unwrap();
    assert!(!stats.files[0].columns.contains_key("s"));
    for p in [
        col("s").eq(1i64),
        col("l").gt(1i64),
        col("m").in_list([1i64]),
    ] {
        let e = t
            .scan(ScanRequest::new().with_predicate(p.clone()))
            .await
            .err()
            .unwrap_or_else(|| panic!("{p:?} was accepted"));
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(e.context().column.is_some(), "{e}");
    }
}

#[tokio::test]
async fn nested_columns_cannot_partition_sort_or_bloom() {
    let dir = tempfile::tempdir().unwrap();
    let create = |opts: TableOptions| {
        let loc = Location::local(dir.path().join(rand_name())).unwrap();
        async move { Table::create(loc, nested_schema(), opts).await }
    };
    let e = create(TableOptions::new().partition_by([PartitionField::identity("s")]))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert_eq!(e.context().column.as_deref(), Some("s"), "{e}");
    let e = create(TableOptions::new().sort_by(["l"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert_eq!(e.context().column.as_deref(), Some("l"), "{e}");
    let e = create(TableOptions::new().bloom_filter_columns(["m"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert_eq!(e.context().column.as_deref(), Some("m"), "{e}");
    // Types a table cannot hold inside a struct are refused by name.
    let bad = Arc::new(Schema::new(vec![Field::new(
        "s",
        DataType::Struct(Fields::from(vec![Field::new("u", DataType::UInt64, true)])),
        true,
    )]));
    let e = Table::create(
        Location::local(dir.path().join("bad")).unwrap(),
        bad,
        TableOptions::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert_eq!(e.context().column.as_deref(), Some("s"), "{e}");
}

fn rand_name() -> String {
    format!("t{}", rand::random::<u64>())
}

#[tokio::test]
async fn nested_statistics_of_other_writers_do_not_break_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let t = nested_table(dir.path(), TableOptions::new()).await;
    t.append(vec![producer_batch(&(0..10).collect::<Vec<_>>())])
        .await
        .unwrap();
    // Rewrite the add's stats as Spark and deltalake write them: nested objects per
    // struct leaf, a number for a list (which must not read as the list's nulls).
    let commit = dir.path().join("_delta_log/00000000000000000001.json");
    let text = std::fs::read_to_string(&commit).unwrap();
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for a in &mut lines {
        if let Some(add) = a.get_mut("add") {
            add["stats"] = Value::from(
                json!({
                    "numRecords": 10,
                    "minValues": {"id": 0, "s": {"a": 1, "b": "", "inner": {"x": 0.5}}},
                    "maxValues": {"id": 9, "s": {"a": 8, "b": "ü", "inner": {"x": 4.5}}},
                    "nullCount": {"id": 0, "s": {"a": 3, "b": 4, "inner": {"x": 5}}, "l": 0},
                })
                .to_string(),
            );
        }
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&commit, text).unwrap();
    let t = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    assert!(
        t.files(None, Some(&col("id").gt(9i64)))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        t.files(None, Some(&col("id").gt(5i64)))
            .await
            .unwrap()
            .len(),
        1
    );
    let got = collect(&t, ScanRequest::new().with_predicate(col("l").is_null())).await;
    assert_eq!(rows(&got), 3, "ids 0, 4, 8 have a null list");
    let got = collect(&t, ScanRequest::new().with_predicate(col("s").is_null())).await;
    assert_eq!(rows(&got), 2);
}

#[tokio::test]
async fn deletion_vectors_apply_to_nested_tables() {
    let dir = tempfile::tempdir().unwrap();
    let t = nested_table(dir.path(), TableOptions::new()).await;
    t.append(vec![producer_batch(&(0..20).collect::<Vec<_>>())])
        .await
        .unwrap();
    let commit = |v: u64| dir.path().join(format!("_delta_log/{v:020}.json"));
    let add: Value = std::fs::read_to_string(commit(1))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find_map(|a| a.get("add").cloned())
        .unwrap();
    let deleted = [0u64, 3, 7, 19];
    let mut new = add.clone();
    new["deletionVector"] = crate::delta_fixtures::inline_dv(&deleted);
    let actions = [
        json!({"commitInfo": {"timestamp": 2, "operation": "DELETE"}}),
        json!({"protocol": {
            "minReaderVersion": 3, "minWriterVersion": 7,
            "readerFeatures": ["deletionVectors"], "writerFeatures": ["deletionVectors"],
        }}),
        json!({"remove": {"path": add["path"], "deletionTimestamp": 2, "dataChange": true}}),
        json!({"add": new}),
    ];
    let text: String = actions.iter().map(|a| format!("{a}\n")).collect();
    std::fs::write(commit(2), text).unwrap();
    let t = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    let live = (0..20i64).filter(|i| !deleted.contains(&(*i as u64)));
    let want: Vec<Value> = live.clone().map(row_json).collect();
    assert_eq!(json_rows(&collect(&t, ScanRequest::new()).await), want);
    let got = collect(&t, ScanRequest::new().with_predicate(col("s").is_null())).await;
    let want: Vec<Value> = live.filter(|i| i % 5 == 0).map(row_json).collect();
    assert_eq!(json_rows(&got), want);
}

#[tokio::test]
async fn void_columns_read_as_nulls_and_are_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::Null, true),
        Field::new(
            "s",
            DataType::Struct(Fields::from(vec![
                Field::new("a", DataType::Int64, true),
                Field::new("nothing", DataType::Null, true),
            ])),
            true,
        ),
    ]));
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema.clone(),
        TableOptions::new(),
    )
    .await
    .unwrap();
    let s = |n: usize| -> ArrayRef {
        Arc::new(
            StructArray::try_new(
                Fields::from(vec![Field::new("a", DataType::Int64, true)]),
                vec![Arc::new(Int64Array::from_iter_values(0..n as i64))],
                None,
            )
            .unwrap(),
        )
    };
    let s_field = |a: &ArrayRef| Field::new("s", a.data_type().clone(), true);
    // Without the void column, and with a Null-typed one (the struct without its void
    // field both times).
    let s3 = s(3);
    let without = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            s_field(&s3),
        ])),
        vec![Arc::new(Int64Array::from(vec![1, 2, 3])), s3],
    )
    .unwrap();
    t.append(vec![without]).await.unwrap();
    let s2 = s(2);
    let with = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Null, true),
            s_field(&s2),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![4, 5])),
            Arc::new(NullArray::new(2)),
            s2,
        ],
    )
    .unwrap();
    t.append(vec![with]).await.unwrap();
    let got = collect(&t, ScanRequest::new()).await;
    assert_eq!(rows(&got), 5);
    for b in &got {
        assert_eq!(b.schema(), schema);
        assert_eq!(b.column(1).data_type(), &DataType::Null);
        assert_eq!(b.column(1).len(), b.num_rows());
    }
    let rows_json = json_rows(&got);
    assert_eq!(
        rows_json[0],
        json!({"id": 1, "v": null, "s": {"a": 0, "nothing": null}})
    );
    // The log says `void`; the files hold neither the column nor the field.
    let log =
        std::fs::read_to_string(dir.path().join("_delta_log/00000000000000000000.json")).unwrap();
    assert!(log.contains(r#"\"type\":\"void\""#), "{log}");
    for f in crate::common::files_under(dir.path()) {
        if f.ends_with(".parquet") {
            let file = std::fs::File::open(dir.path().join(&f)).unwrap();
            let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap();
            let names: Vec<String> = r
                .parquet_schema()
                .columns()
                .iter()
                .map(|c| c.path().string())
                .collect();
            assert_eq!(names, vec!["id", "s.a"], "{f}");
        }
    }
    // Values in a void column are refused.
    let bad = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("v", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![9])),
            Arc::new(Int64Array::from(vec![9])),
        ],
    )
    .unwrap();
    let e = t.append(vec![bad]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SchemaMismatch, "{e}");
    // IS NULL on a void column is true everywhere; comparisons are refused.
    let got = collect(&t, ScanRequest::new().with_predicate(col("v").is_null())).await;
    assert_eq!(rows(&got), 5);
    let e = t
        .scan(ScanRequest::new().with_predicate(col("v").eq(1i64)))
        .await
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
}

// ---------------------------------------------------------------------------------
// Other engines (Python `deltalake`, Polars, DuckDB)

#[tokio::test]
async fn deltalake_polars_and_duckdb_read_our_nested_tables() {
    let Some(python) = peers_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let t = nested_table(dir.path(), TableOptions::new()).await;
    let ids: Vec<i64> = (0..24).collect();
    t.append(vec![producer_batch(&ids[..12])]).await.unwrap();
    t.append(vec![producer_batch(&ids[12..])]).await.unwrap();
    let want: Vec<Value> = json_rows(&collect(&t, ScanRequest::new()).await);
    let v = run_script(
        &python,
        "read_delta_nested.py",
        &[dir.path().to_str().unwrap()],
    );
    for engine in ["deltalake", "polars", "duckdb"] {
        let got = v[engine]
            .as_array()
            .unwrap_or_else(|| panic!("{engine}: {v}"));
        assert_eq!(got.len(), want.len(), "{engine}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{engine}");
        }
    }
}

#[tokio::test]
async fn we_read_nested_tables_deltalake_writes() {
    let Some(python) = peers_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let want = run_script(
        &python,
        "write_delta_nested.py",
        &[dir.path().to_str().unwrap()],
    );
    for name in ["nested", "evolved"] {
        let t = Table::open(Location::local(dir.path().join(name)).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = json_rows(&collect(&t, ScanRequest::new()).await);
        let w = want[name].as_array().unwrap();
        assert_eq!(got.len(), w.len(), "{name}");
        for (g, w) in got.iter().zip(w) {
            assert_eq!(g, w, "{name}");
        }
        // Their nested statistics do not get in the way of pruning by `id`.
        let max = w.iter().filter_map(|r| r["id"].as_i64()).max().unwrap();
        let p = col("id").gt(max);
        assert!(t.files(None, Some(&p)).await.unwrap().is_empty(), "{name}");
        let some = collect(&t, ScanRequest::new().with_predicate(col("s").is_null())).await;
        let nulls = w.iter().filter(|r| r["s"].is_null()).count();
        assert_eq!(rows(&some), nulls, "{name}");
    }
    // We append to their table in our shapes; they read both writers' rows back.
    let t = Table::open(Location::local(dir.path().join("nested")).unwrap())
        .await
        .unwrap();
    assert_eq!(t.user_schema(), nested_schema());
    t.append(vec![producer_batch(&(100..110).collect::<Vec<_>>())])
        .await
        .unwrap();
    let ours = json_rows(&collect(&t, ScanRequest::new()).await);
    assert_eq!(ours.len(), want["nested"].as_array().unwrap().len() + 10);
    let path = dir.path().join("nested");
    let v = run_script(&python, "read_delta_nested.py", &[path.to_str().unwrap()]);
    for engine in ["deltalake", "polars", "duckdb"] {
        assert_eq!(v[engine].as_array(), Some(&ours), "{engine}");
    }
}
