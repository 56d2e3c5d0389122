//! Tables laid out by the Delta protocol's rules for what only other engines write:
//! deletion vectors (inline and on disk), multi-part and v2 checkpoints (with
//! sidecars, without `_last_checkpoint`), an unknown reader feature, column mapping.
//! Each is built from a table we wrote, then read back and compared exactly.

use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use lakehouse_core::{ErrorKind, ScanRequest, TableSource, col};
use lakehouse_storage::{Location, Table, TableOptions};
use serde_json::{Value, json};

use crate::common::{batch, collect, ints, rows, schema};

fn log(dir: &Path) -> std::path::PathBuf {
    dir.join("_delta_log")
}

fn commit_path(dir: &Path, v: u64) -> std::path::PathBuf {
    log(dir).join(format!("{v:020}.json"))
}

fn actions(dir: &Path, v: u64) -> Vec<Value> {
    std::fs::read_to_string(commit_path(dir, v))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_commit(dir: &Path, v: u64, actions: &[Value]) {
    let text: String = actions.iter().map(|a| format!("{a}\n")).collect();
    std::fs::write(commit_path(dir, v), text).unwrap();
}

/// The protocol, metadata and live adds at `version`, replayed from the JSON commits.
fn state(dir: &Path, version: u64) -> (Value, Value, Vec<Value>) {
    let (mut protocol, mut metadata) = (Value::Null, Value::Null);
    let mut adds: Vec<Value> = Vec::new();
    for v in 0..=version {
        for a in actions(dir, v) {
            if let Some(p) = a.get("protocol") {
                protocol = p.clone();
            } else if let Some(m) = a.get("metaData") {
                metadata = m.clone();
            } else if let Some(add) = a.get("add") {
                adds.retain(|x| x["path"] != add["path"]);
                adds.push(add.clone());
            } else if let Some(r) = a.get("remove") {
                adds.retain(|x| x["path"] != r["path"]);
            }
        }
    }
    (protocol, metadata, adds)
}

async fn table_with_commits(dir: &Path, commits: i64) -> Table {
    let t = Table::create(
        Location::local(dir).unwrap(),
        schema(),
        TableOptions::new().checkpoint_interval(0),
    )
    .await
    .unwrap();
    for i in 0..commits {
        t.append(vec![batch(i * 100, 100)]).await.unwrap();
    }
    t
}

async fn open(dir: &Path) -> Table {
    Table::open(Location::local(dir).unwrap()).await.unwrap()
}

// ---------------------------------------------------------------------------------
// Checkpoint fixtures: Parquet written from the actions' JSON.

fn map_of_strings(name: &str) -> Field {
    let entries = Field::new(
        "key_value",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ])),
        false,
    );
    Field::new(name, DataType::Map(Arc::new(entries), false), true)
}

fn strings(name: &str) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
        true,
    )
}

fn strukt(name: &str, fields: Vec<Field>) -> Field {
    Field::new(name, DataType::Struct(Fields::from(fields)), true)
}

fn add_field() -> Field {
    strukt(
        "add",
        vec![
            Field::new("path", DataType::Utf8, true),
            map_of_strings("partitionValues"),
            Field::new("size", DataType::Int64, true),
            Field::new("modificationTime", DataType::Int64, true),
            Field::new("dataChange", DataType::Boolean, true),
            Field::new("stats", DataType::Utf8, true),
        ],
    )
}

fn checkpoint_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        strukt(
            "protocol",
            vec![
                Field::new("minReaderVersion", DataType::Int32, true),
                Field::new("minWriterVersion", DataType::Int32, true),
                strings("readerFeatures"),
                strings("writerFeatures"),
            ],
        ),
        strukt(
            "metaData",
            vec![
                Field::new("id", DataType::Utf8, true),
                Field::new("name", DataType::Utf8, true),
                Field::new("description", DataType::Utf8, true),
                strukt(
                    "format",
                    vec![
                        Field::new("provider", DataType::Utf8, true),
                        map_of_strings("options"),
                    ],
                ),
                Field::new("schemaString", DataType::Utf8, true),
                strings("partitionColumns"),
                map_of_strings("configuration"),
                Field::new("createdTime", DataType::Int64, true),
            ],
        ),
        add_field(),
    ]))
}

/// A Parquet file of `lines` (one action each) in `schema`.
fn parquet_of(lines: &[Value], schema: SchemaRef) -> Vec<u8> {
    let text: String = lines.iter().map(|a| format!("{a}\n")).collect();
    let reader = arrow::json::ReaderBuilder::new(schema.clone())
        .build(std::io::Cursor::new(text.into_bytes()))
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    out
}

fn remove_commits(dir: &Path, upto: u64) {
    for v in 0..=upto {
        std::fs::remove_file(commit_path(dir, v)).unwrap();
    }
}

#[tokio::test]
async fn multi_part_checkpoints_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let t = table_with_commits(dir.path(), 4).await;
    let want = ints(&collect(&t, ScanRequest::new()).await, "order_id");
    let (protocol, metadata, adds) = state(dir.path(), 4);
    let mut part1 = vec![json!({"protocol": protocol}), json!({"metaData": metadata})];
    part1.push(json!({"add": adds[0]}));
    let part2: Vec<Value> = adds[1..].iter().map(|a| json!({"add": a})).collect();
    for (i, part) in [part1, part2].iter().enumerate() {
        let name = format!("{:020}.checkpoint.{:010}.{:010}.parquet", 4, i + 1, 2);
        std::fs::write(
            log(dir.path()).join(name),
            parquet_of(part, checkpoint_schema()),
        )
        .unwrap();
    }
    std::fs::write(
        log(dir.path()).join("_last_checkpoint"),
        json!({"version": 4, "size": 2 + adds.len(), "parts": 2}).to_string(),
    )
    .unwrap();
    remove_commits(dir.path(), 4);

    let t = open(dir.path()).await;
    assert_eq!(t.version().await.unwrap(), 4);
    assert_eq!(
        ints(&collect(&t, ScanRequest::new()).await, "order_id"),
        want
    );
    // The table goes on from the checkpoint, and reads back through it.
    t.append(vec![batch(1000, 10)]).await.unwrap();
    let again = open(dir.path()).await;
    assert_eq!(
        rows(&collect(&again, ScanRequest::new()).await),
        want.len() + 10
    );
}

#[tokio::test]
async fn v2_checkpoints_with_sidecars_and_no_last_checkpoint_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let t = table_with_commits(dir.path(), 3).await;
    let want = ints(&collect(&t, ScanRequest::new()).await, "order_id");
    // Version 4 declares v2 checkpoints.
    let protocol = json!({
        "minReaderVersion": 3, "minWriterVersion": 7,
        "readerFeatures": ["timestampNtz", "v2Checkpoint"],
        "writerFeatures": ["timestampNtz", "v2Checkpoint"],
    });
    write_commit(
        dir.path(),
        4,
        &[
            json!({"commitInfo": {"timestamp": 1, "operation": "UPGRADE PROTOCOL"}}),
            json!({"protocol": protocol}),
        ],
    );
    let (protocol, metadata, adds) = state(dir.path(), 4);
    // The adds live in two sidecars; the checkpoint is JSON and names them.
    let sidecars = log(dir.path()).join("_sidecars");
    std::fs::create_dir_all(&sidecars).unwrap();
    let add_schema = Arc::new(Schema::new(vec![add_field()]));
    let mut lines = vec![
        json!({"checkpointMetadata": {"version": 4}}),
        json!({"protocol": protocol}),
        json!({"metaData": metadata}),
    ];
    let half = adds.len() / 2;
    for (i, chunk) in [&adds[..half], &adds[half..]].iter().enumerate() {
        let actions: Vec<Value> = chunk.iter().map(|a| json!({"add": a})).collect();
        let bytes = parquet_of(&actions, add_schema.clone());
        let name = format!("00000000-0000-0000-0000-00000000000{i}.parquet");
        std::fs::write(sidecars.join(&name), &bytes).unwrap();
        lines.push(json!({"sidecar": {
            "path": name, "sizeInBytes": bytes.len(), "modificationTime": 1,
        }}));
    }
    let name = format!(
        "{:020}.checkpoint.80a083e8-7026-4e79-81be-64bd76c43a11.json",
        4
    );
    let text: String = lines.iter().map(|a| format!("{a}\n")).collect();
    std::fs::write(log(dir.path()).join(name), text).unwrap();
    remove_commits(dir.path(), 4);

    let t = open(dir.path()).await;
    assert_eq!(t.version().await.unwrap(), 4);
    assert_eq!(
        ints(&collect(&t, ScanRequest::new()).await, "order_id"),
        want
    );
}

#[tokio::test]
async fn our_checkpoints_read_back_through_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let t = table_with_commits(dir.path(), 5).await;
    assert_eq!(t.checkpoint().await.unwrap(), 5);
    assert!(t.last_checkpoint_error().is_none());
    let hint: Value =
        serde_json::from_slice(&std::fs::read(log(dir.path()).join("_last_checkpoint")).unwrap())
            .unwrap();
    assert_eq!(hint["version"], 5);
    remove_commits(dir.path(), 5);
    let t = open(dir.path()).await;
    assert_eq!(rows(&collect(&t, ScanRequest::new()).await), 500);
}

// ---------------------------------------------------------------------------------
// Deletion vectors

/// The inline deletion vector descriptor (JSON) deleting `deleted`, by this crate's
/// encoder.
pub(crate) fn inline_dv(deleted: &[u64]) -> Value {
    lakehouse_storage::deletion_vector::encode_inline(deleted)
        .unwrap()
        .to_json()
}

/// Rewrites the table's single file with a deletion vector `dv` in commit 2.
fn with_dv(dir: &Path, dv: Value) {
    let (_, _, adds) = state(dir, 1);
    assert_eq!(adds.len(), 1);
    let old = adds[0].clone();
    let mut new = old.clone();
    new["deletionVector"] = dv;
    new["dataChange"] = json!(true);
    write_commit(
        dir,
        2,
        &[
            json!({"commitInfo": {"timestamp": 2, "operation": "DELETE"}}),
            json!({"protocol": {
                "minReaderVersion": 3, "minWriterVersion": 7,
                "readerFeatures": ["timestampNtz", "deletionVectors"],
                "writerFeatures": ["timestampNtz", "deletionVectors"],
            }}),
            json!({"remove": {"path": old["path"], "deletionTimestamp": 2, "dataChange": true}}),
            json!({"add": new}),
        ],
    );
}

async fn one_file_table(dir: &Path) -> Table {
    let t = Table::create(Location::local(dir).unwrap(), schema(), TableOptions::new())
        .await
        .unwrap();
    t.append(vec![batch(0, 50)]).await.unwrap();
    t
}

async fn check_deleted(dir: &Path, deleted: &[u64]) {
    let t = open(dir).await;
    let got = ints(&collect(&t, ScanRequest::new()).await, "order_id");
    let want: Vec<i64> = (0..50)
        .filter(|i| !deleted.contains(&(*i as u64)))
        .collect();
    assert_eq!(got, want);
    // With a predicate (row-group pruning and late filtering) the vector still applies.
    let got = ints(
        &collect(
            &t,
            ScanRequest::new().with_predicate(col("order_id").gt(2i64)),
        )
        .await,
        "order_id",
    );
    let want: Vec<i64> = want.into_iter().filter(|i| *i > 2).collect();
    assert_eq!(got, want);
    let stats = t.statistics(None).await.unwrap();
    assert_eq!(stats.files[0].num_rows, 50 - deleted.len() as u64);
}

#[tokio::test]
async fn inline_deletion_vectors_hide_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    one_file_table(dir.path()).await;
    let deleted = [1u64, 3, 5, 49];
    with_dv(dir.path(), inline_dv(&deleted));
    check_deleted(dir.path(), &deleted).await;
}

#[tokio::test]
async fn deletion_vector_files_hide_their_rows() {
    let dir = tempfile::tempdir().unwrap();
    one_file_table(dir.path()).await;
    let deleted = [0u64, 7, 8, 9, 30];
    // The file: a version byte, then each vector as size, bytes and checksum.
    let (descs, file) = lakehouse_storage::deletion_vector::encode_file(&[&deleted]).unwrap();
    std::fs::write(dir.path().join(&file.path), &file.bytes).unwrap();
    with_dv(dir.path(), descs[0].to_json());
    check_deleted(dir.path(), &deleted).await;
}

// ---------------------------------------------------------------------------------
// Refusals

fn hand_made_table(dir: &Path, protocol: Value, configuration: Value, schema_string: &str) {
    std::fs::create_dir_all(log(dir)).unwrap();
    write_commit(
        dir,
        0,
        &[
            json!({"commitInfo": {"timestamp": 1, "operation": "CREATE TABLE"}}),
            json!({"protocol": protocol}),
            json!({"metaData": {
                "id": "5b4b4f4c-0000-4000-8000-000000000000",
                "format": {"provider": "parquet", "options": {}},
                "schemaString": schema_string,
                "partitionColumns": [],
                "configuration": configuration,
                "createdTime": 1,
            }}),
        ],
    );
}

#[tokio::test]
async fn unknown_reader_features_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    hand_made_table(
        dir.path(),
        json!({"minReaderVersion": 3, "minWriterVersion": 7,
               "readerFeatures": ["fancyNewLayout"], "writerFeatures": ["fancyNewLayout"]}),
        json!({}),
        r#"{"type":"struct","fields":[{"name":"a","type":"long","nullable":true,"metadata":{}}]}"#,
    );
    let e = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("fancyNewLayout"), "{e}");
}

#[tokio::test]
async fn column_mapped_tables_are_read_by_physical_names() {
    use arrow::array::{Int64Array, StringArray};
    let dir = tempfile::tempdir().unwrap();
    let field = |name: &str, ty: &str, id: u32, physical: &str| {
        json!({"name": name, "type": ty, "nullable": true, "metadata": {
            "delta.columnMapping.id": id, "delta.columnMapping.physicalName": physical}})
    };
    // `id`, a column renamed to `label` (its files still say col-b2), one added later
    // (`added`, absent from the file); the file also holds a dropped column.
    let schema_string = json!({"type": "struct", "fields": [
        field("id", "long", 1, "col-a1"),
        field("label", "string", 2, "col-b2"),
        field("added", "long", 4, "col-d4"),
    ]})
    .to_string();
    hand_made_table(
        dir.path(),
        json!({"minReaderVersion": 2, "minWriterVersion": 5}),
        json!({"delta.columnMapping.mode": "name", "delta.columnMapping.maxColumnId": "4"}),
        &schema_string,
    );
    let file_schema = Arc::new(Schema::new(vec![
        Field::new("col-a1", DataType::Int64, true),
        Field::new("col-b2", DataType::Utf8, true),
        // A dropped column whose physical name is a logical name of the table: never
        // read as `id`.
        Field::new("id", DataType::Int64, true),
    ]));
    let data = RecordBatch::try_new(
        file_schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec!["a", "b", "c"])),
            Arc::new(Int64Array::from(vec![100, 200, 300])),
        ],
    )
    .unwrap();
    let mut bytes = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, file_schema, None).unwrap();
    w.write(&data).unwrap();
    w.close().unwrap();
    std::fs::write(dir.path().join("part-0.parquet"), &bytes).unwrap();
    write_commit(
        dir.path(),
        1,
        &[json!({"add": {
            "path": "part-0.parquet", "partitionValues": {}, "size": bytes.len(),
            "modificationTime": 1, "dataChange": true,
            "stats": json!({"numRecords": 3, "minValues": {"col-a1": 1}, "maxValues": {"col-a1": 3},
                            "nullCount": {"col-a1": 0}}).to_string(),
        }})],
    );
    let t = open(dir.path()).await;
    let all = collect(&t, ScanRequest::new()).await;
    assert_eq!(ints(&all, "id"), vec![1, 2, 3]);
    let labels: Vec<String> = all
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name("label").unwrap();
            let c = c.as_any().downcast_ref::<StringArray>().unwrap();
            c.iter().map(|v| v.unwrap().to_owned()).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(labels, vec!["a", "b", "c"]);
    assert!(
        all.iter()
            .all(|b| b.column_by_name("added").unwrap().null_count() == b.num_rows())
    );
    let some = collect(&t, ScanRequest::new().with_predicate(col("id").gt(1i64))).await;
    assert_eq!(ints(&some, "id"), vec![2, 3]);
    // Statistics are keyed by physical names: the file is pruned by them.
    let files = t.files(None, Some(&col("id").gt(5i64))).await.unwrap();
    assert!(files.is_empty());
    // Writing would need physical names in new files: refused by name.
    let e = t
        .add_columns(vec![Field::new("x", DataType::Int64, true)])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("columnMapping"), "{e}");
}

/// A column-mapped table with nested columns, as Spark writes them: struct fields in
/// structs, lists and maps carry physical names (and, in mode `id`, field ids) of
/// their own. `s.b`'s physical name is `a`, the logical name of its sibling, and the
/// file holds a dropped field of `s`: neither is read in place of another field.
async fn nested_mapped_table(dir: &Path, mode: &str, file_names: [&str; 5]) -> Table {
    use arrow::array::{
        Array, ArrayRef, Int64Array, ListArray, MapArray, StringArray, StructArray,
    };
    use arrow::buffer::OffsetBuffer;
    use std::collections::HashMap;
    let mapped = |name: &str, ty: Value, id: u32, physical: &str| {
        json!({"name": name, "type": ty, "nullable": true, "metadata": {
            "delta.columnMapping.id": id, "delta.columnMapping.physicalName": physical}})
    };
    let schema_string = json!({"type": "struct", "fields": [
        mapped("id", json!("long"), 1, "col-id"),
        mapped("s", json!({"type": "struct", "fields": [
            mapped("a", json!("long"), 3, "col-a"),
            mapped("b", json!("string"), 4, "a"),
        ]}), 2, "col-s"),
        mapped("l", json!({"type": "array", "containsNull": true, "elementType":
            {"type": "struct", "fields": [mapped("x", json!("long"), 6, "col-x")]}}), 5, "col-l"),
        mapped("m", json!({"type": "map", "keyType": "string", "valueContainsNull": true,
            "valueType": {"type": "struct", "fields": [mapped("y", json!("long"), 8, "col-y")]}}),
            7, "col-m"),
    ]})
    .to_string();
    hand_made_table(
        dir,
        json!({"minReaderVersion": 2, "minWriterVersion": 5}),
        json!({"delta.columnMapping.mode": mode, "delta.columnMapping.maxColumnId": "9"}),
        &schema_string,
    );
    // The file's fields, named `file_names` (s.a, s.b, the dropped field, l.x, m.y),
    // with the table's field ids (9 for the dropped one).
    let field = |name: &str, t: DataType, id: u32| {
        Field::new(name, t, true).with_metadata(HashMap::from([(
            parquet::arrow::PARQUET_FIELD_ID_META_KEY.to_owned(),
            id.to_string(),
        )]))
    };
    let [a, b, gone, x, y] = file_names;
    let s_fields = Fields::from(vec![
        field(b, DataType::Utf8, 4),
        field(a, DataType::Int64, 3),
        field(gone, DataType::Int64, 9),
    ]);
    let s = StructArray::new(
        s_fields.clone(),
        vec![
            Arc::new(StringArray::from(vec!["p", "q"])) as ArrayRef,
            Arc::new(Int64Array::from(vec![10, 20])),
            Arc::new(Int64Array::from(vec![-1, -2])),
        ],
        None,
    );
    let x_fields = Fields::from(vec![field(x, DataType::Int64, 6)]);
    let items = StructArray::new(
        x_fields.clone(),
        vec![Arc::new(Int64Array::from(vec![5, 6, 7])) as ArrayRef],
        None,
    );
    let item = Arc::new(Field::new("element", DataType::Struct(x_fields), true));
    let l = ListArray::new(
        item,
        OffsetBuffer::from_lengths([1, 2]),
        Arc::new(items),
        None,
    );
    let y_fields = Fields::from(vec![field(y, DataType::Int64, 8)]);
    let values = StructArray::new(
        y_fields.clone(),
        vec![Arc::new(Int64Array::from(vec![100, 200])) as ArrayRef],
        None,
    );
    let entry_fields = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Struct(y_fields), true),
    ]);
    let entries = StructArray::new(
        entry_fields.clone(),
        vec![
            Arc::new(StringArray::from(vec!["k1", "k2"])) as ArrayRef,
            Arc::new(values),
        ],
        None,
    );
    let entries_field = Arc::new(Field::new(
        "key_value",
        DataType::Struct(entry_fields),
        false,
    ));
    let m = MapArray::new(
        entries_field,
        OffsetBuffer::from_lengths([1, 1]),
        entries,
        None,
        false,
    );
    let file_schema = Arc::new(Schema::new(vec![
        field("col-id", DataType::Int64, 1),
        field("col-s", s.data_type().clone(), 2),
        field("col-l", l.data_type().clone(), 5),
        field("col-m", m.data_type().clone(), 7),
    ]));
    let data = RecordBatch::try_new(
        file_schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(s),
            Arc::new(l),
            Arc::new(m),
        ],
    )
    .unwrap();
    let mut bytes = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, file_schema, None).unwrap();
    w.write(&data).unwrap();
    w.close().unwrap();
    std::fs::write(dir.join("part-0.parquet"), &bytes).unwrap();
    write_commit(
        dir,
        1,
        &[json!({"add": {
            "path": "part-0.parquet", "partitionValues": {}, "size": bytes.len(),
            "modificationTime": 1, "dataChange": true,
            "stats": json!({"numRecords": 2}).to_string(),
        }})],
    );
    open(dir).await
}

/// The nested values of [`nested_mapped_table`]: `(s.a, s.b)`, every `l.x`, every `m.y`.
async fn nested_values(t: &Table) -> (Vec<(i64, String)>, Vec<i64>, Vec<i64>) {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;
    let all = collect(t, ScanRequest::new()).await;
    let (mut s, mut l, mut m) = (Vec::new(), Vec::new(), Vec::new());
    for batch in &all {
        let st = batch.column_by_name("s").unwrap().as_struct();
        let names: Vec<&str> = st.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["a", "b"], "the table's fields only, in table order");
        let a = st.column_by_name("a").unwrap().as_primitive::<Int64Type>();
        let b = st.column_by_name("b").unwrap().as_string::<i32>();
        for i in 0..st.len() {
            s.push((a.value(i), b.value(i).to_owned()));
        }
        let list = batch.column_by_name("l").unwrap().as_list::<i32>();
        let x = list.values().as_struct().column_by_name("x").unwrap();
        l.extend(x.as_primitive::<Int64Type>().values().iter().copied());
        let map = batch.column_by_name("m").unwrap().as_map();
        let y = map.values().as_struct().column_by_name("y").unwrap();
        m.extend(y.as_primitive::<Int64Type>().values().iter().copied());
    }
    (s, l, m)
}

#[tokio::test]
async fn nested_fields_of_column_mapped_tables_are_read_by_physical_names() {
    let dir = tempfile::tempdir().unwrap();
    let t = nested_mapped_table(dir.path(), "name", ["col-a", "a", "b", "col-x", "col-y"]).await;
    let (s, l, m) = nested_values(&t).await;
    assert_eq!(s, vec![(10, "p".to_owned()), (20, "q".to_owned())]);
    assert_eq!(l, vec![5, 6, 7]);
    assert_eq!(m, vec![100, 200]);
    // Engines that read Parquet files by the table schema would miss the nested
    // renames: the scan is offered as a batch stream only.
    assert!(t.scan_files(&ScanRequest::new()).await.unwrap().is_none());
    let projected = collect(&t, ScanRequest::new().with_projection(["id"])).await;
    assert_eq!(ints(&projected, "id"), vec![1, 2]);
}

#[tokio::test]
async fn nested_fields_of_id_mode_tables_are_read_by_field_ids() {
    let dir = tempfile::tempdir().unwrap();
    // Names that mislead: `b` is stored under `a`'s logical name and `a` under
    // `b`'s; only the field ids tell which is which.
    let t = nested_mapped_table(dir.path(), "id", ["b", "a", "col-a", "q", "r"]).await;
    let (s, l, m) = nested_values(&t).await;
    assert_eq!(s, vec![(10, "p".to_owned()), (20, "q".to_owned())]);
    assert_eq!(l, vec![5, 6, 7]);
    assert_eq!(m, vec![100, 200]);
}
