//! Delta features of tables other engines write, on hand-made logs: type widening
//! (older files stored in narrower types) and in-commit timestamps (time travel by
//! the commits' own times, not the log files' modification times).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Decimal128Array, Float32Array, Float64Array, Int8Array,
    Int16Array, Int32Array, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use arrow::datatypes::{
    DataType, Decimal128Type, Field, Float64Type, Int64Type, Schema, TimeUnit,
    TimestampMicrosecondType,
};
use lakehouse_core::{ErrorKind, Predicate, Scalar, ScanRequest, TableSource, col};
use lakehouse_storage::{Location, Table};
use serde_json::{Value, json};

use crate::common::collect;

fn write_commit(dir: &Path, v: u64, actions: &[Value]) {
    let log = dir.join("_delta_log");
    std::fs::create_dir_all(&log).unwrap();
    let text: String = actions.iter().map(|a| format!("{a}\n")).collect();
    std::fs::write(log.join(format!("{v:020}.json")), text).unwrap();
}

fn metadata(schema: &Value, partitions: &[&str], configuration: Value) -> Value {
    json!({"metaData": {
        "id": "0c3f9a52-0000-4000-8000-000000000001",
        "format": {"provider": "parquet", "options": {}},
        "schemaString": schema.to_string(),
        "partitionColumns": partitions,
        "configuration": configuration,
        "createdTime": 1,
    }})
}

/// Writes `batch` as Parquet file `name` of the table and returns its `add` action.
fn add_file(dir: &Path, name: &str, batch: &RecordBatch, pv: Value, stats: Value) -> Value {
    let mut bytes = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
    std::fs::write(dir.join(name), &bytes).unwrap();
    json!({"add": {
        "path": name, "partitionValues": pv, "size": bytes.len(),
        "modificationTime": 1, "dataChange": true, "stats": stats.to_string(),
    }})
}

fn field(name: &str, ty: &str, changes: &[(&str, &str)]) -> Value {
    let changes: Vec<Value> = changes
        .iter()
        .map(|(f, t)| json!({"fromType": f, "toType": t, "tableVersion": 2}))
        .collect();
    let metadata = if changes.is_empty() {
        json!({})
    } else {
        json!({ "delta.typeChanges": changes })
    };
    json!({"name": name, "type": ty, "nullable": true, "metadata": metadata})
}

fn struct_of(fields: Vec<Value>) -> Value {
    json!({"type": "struct", "fields": fields})
}

const WIDENING: &str = "typeWidening";

/// (column, type before, type after) of the widened table.
const CHANGES: [(&str, &str, &str); 9] = [
    ("b_long", "byte", "long"),
    ("i_long", "integer", "long"),
    ("f_double", "float", "double"),
    ("s_double", "short", "double"),
    ("dec_wider", "decimal(10,2)", "decimal(20,5)"),
    ("i_dec", "integer", "decimal(12,2)"),
    ("l_dec", "long", "decimal(22,1)"),
    ("day_ts", "date", "timestamp_ntz"),
    ("p_long", "integer", "long"),
];

/// Micros of 2024-09-09T00:00:00.
const SEP9: i64 = 1_725_840_000_000_000;

/// A table whose version 1 file was written before the widening of version 2, with
/// a partition column `p_long` (also widened) and `q_ts` (a `date` widened to
/// `timestamp_ntz`).
fn widened_table(dir: &Path, feature: &str) {
    let protocol = json!({"protocol": {"minReaderVersion": 3, "minWriterVersion": 7,
        "readerFeatures": ["timestampNtz", feature],
        "writerFeatures": ["timestampNtz", feature, "appendOnly", "invariants"]}});
    let config = json!({"delta.enableTypeWidening": "true"});
    let before: Vec<Value> = CHANGES
        .iter()
        .map(|(c, from, _)| field(c, from, &[]))
        .chain([field("q_ts", "date", &[])])
        .collect();
    write_commit(
        dir,
        0,
        &[
            json!({"commitInfo": {"timestamp": 1, "operation": "CREATE TABLE"}}),
            protocol.clone(),
            metadata(&struct_of(before), &["p_long", "q_ts"], config.clone()),
        ],
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("b_long", DataType::Int8, true),
        Field::new("i_long", DataType::Int32, true),
        Field::new("f_double", DataType::Float32, true),
        Field::new("s_double", DataType::Int16, true),
        Field::new("dec_wider", DataType::Decimal128(10, 2), true),
        Field::new("i_dec", DataType::Int32, true),
        Field::new("l_dec", DataType::Int64, true),
        Field::new("day_ts", DataType::Date32, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int8Array::from(vec![Some(1), Some(-128), None])),
        Arc::new(Int32Array::from(vec![Some(2), Some(i32::MIN), None])),
        Arc::new(Float32Array::from(vec![Some(3.4), Some(f32::NAN), None])),
        Arc::new(Int16Array::from(vec![Some(6), Some(i16::MAX), None])),
        Arc::new(
            Decimal128Array::from(vec![Some(12_345), Some(-9_999_999_999), None])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        ),
        Arc::new(Int32Array::from(vec![Some(7), Some(i32::MAX), None])),
        Arc::new(Int64Array::from(vec![Some(4), Some(i64::MIN), None])),
        Arc::new(Date32Array::from(vec![Some(19_975), Some(-1), None])),
    ];
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    // Statistics as the narrower types wrote them.
    let stats = json!({"numRecords": 3,
        "minValues": {"b_long": -128, "i_long": i32::MIN, "f_double": 3.4, "s_double": 6,
                      "dec_wider": -99999999.99, "i_dec": 7, "l_dec": i64::MIN,
                      "day_ts": "1969-12-31"},
        "maxValues": {"b_long": 1, "i_long": 2, "f_double": 3.4, "s_double": i16::MAX,
                      "dec_wider": 123.45, "i_dec": i32::MAX, "l_dec": 4,
                      "day_ts": "2024-09-09"},
        "nullCount": {"b_long": 1, "i_long": 1, "f_double": 1, "s_double": 1,
                      "dec_wider": 1, "i_dec": 1, "l_dec": 1, "day_ts": 1}});
    let add = add_file(
        dir,
        "old.parquet",
        &batch,
        json!({"p_long": "5", "q_ts": "2024-09-09"}),
        stats,
    );
    write_commit(
        dir,
        1,
        &[
            json!({"commitInfo": {"timestamp": 2, "operation": "WRITE"}}),
            add,
        ],
    );
    let after: Vec<Value> = CHANGES
        .iter()
        .map(|(c, from, to)| field(c, to, &[(from, to)]))
        .chain([field("q_ts", "timestamp_ntz", &[("date", "timestamp_ntz")])])
        .collect();
    write_commit(
        dir,
        2,
        &[
            json!({"commitInfo": {"timestamp": 3, "operation": "CHANGE COLUMN"}}),
            metadata(&struct_of(after), &["p_long", "q_ts"], config),
        ],
    );
}

fn i64s(batches: &[RecordBatch], name: &str) -> Vec<Option<i64>> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(name).unwrap();
            c.as_primitive::<Int64Type>().iter().collect::<Vec<_>>()
        })
        .collect()
}

fn f64s(batches: &[RecordBatch], name: &str) -> Vec<Option<f64>> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(name).unwrap();
            c.as_primitive::<Float64Type>().iter().collect::<Vec<_>>()
        })
        .collect()
}

fn decimals(batches: &[RecordBatch], name: &str) -> (DataType, Vec<Option<i128>>) {
    let t = batches[0].column_by_name(name).unwrap().data_type().clone();
    let v = batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(name).unwrap();
            c.as_primitive::<Decimal128Type>()
                .iter()
                .collect::<Vec<_>>()
        })
        .collect();
    (t, v)
}

fn micros(batches: &[RecordBatch], name: &str) -> Vec<Option<i64>> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(name).unwrap();
            c.as_primitive::<TimestampMicrosecondType>()
                .iter()
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn widened_columns_read_older_files_exactly() {
    for feature in [WIDENING, "typeWidening-preview"] {
        let dir = tempfile::tempdir().unwrap();
        widened_table(dir.path(), feature);
        let t = Table::open(Location::local(dir.path()).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{feature}: {e}"));
        let all = collect(&t, ScanRequest::new()).await;
        assert_eq!(i64s(&all, "b_long"), vec![Some(1), Some(-128), None]);
        assert_eq!(
            i64s(&all, "i_long"),
            vec![Some(2), Some(i64::from(i32::MIN)), None]
        );
        let f = f64s(&all, "f_double");
        assert_eq!(f[0], Some(f64::from(3.4f32)));
        assert!(f[1].unwrap().is_nan() && f[2].is_none());
        assert_eq!(
            f64s(&all, "s_double"),
            vec![Some(6.0), Some(f64::from(i16::MAX)), None]
        );
        assert_eq!(
            decimals(&all, "dec_wider"),
            (
                DataType::Decimal128(20, 5),
                vec![Some(12_345_000), Some(-9_999_999_999_000), None]
            )
        );
        assert_eq!(
            decimals(&all, "i_dec"),
            (
                DataType::Decimal128(12, 2),
                vec![Some(700), Some(i128::from(i32::MAX) * 100), None]
            )
        );
        assert_eq!(
            decimals(&all, "l_dec").1,
            vec![Some(40), Some(i128::from(i64::MIN) * 10), None]
        );
        assert_eq!(
            micros(&all, "day_ts"),
            vec![Some(SEP9), Some(-86_400_000_000), None]
        );
        assert_eq!(i64s(&all, "p_long"), vec![Some(5); 3]);
        assert_eq!(micros(&all, "q_ts"), vec![Some(SEP9); 3]);

        // Predicates compare in the table types: 3.4f32 widened is above 3.4, which
        // the file's `float` statistics must not prune (NaN orders above every number).
        let ts = |v: i64| Scalar::Timestamp {
            value: v,
            unit: TimeUnit::Microsecond,
            tz: None,
        };
        let cases: Vec<(Predicate, usize)> = vec![
            (col("f_double").gt(3.4f64), 2),
            (col("f_double").between(3.4f64, 3.5f64), 1),
            (col("f_double").eq(f64::from(3.4f32)), 1),
            (col("b_long").eq(1i64), 1),
            (col("i_long").lt(-3_000_000_000i64), 0),
            (col("i_long").eq(2i64), 1),
            (col("day_ts").eq(ts(SEP9)), 1),
            (col("day_ts").gt(ts(SEP9)), 0),
            (col("q_ts").eq(ts(SEP9)), 3),
            (col("p_long").eq(5i64), 3),
        ];
        for (p, want) in cases {
            let got = collect(&t, ScanRequest::new().with_predicate(p.clone())).await;
            let n: usize = got.iter().map(|b| b.num_rows()).sum();
            assert_eq!(n, want, "{feature}: {p}");
        }

        // Writes go in the current types, and a schema change keeps the type changes.
        let schema = t.schema();
        let new: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Int64 => Arc::new(Int64Array::from(vec![5_000_000_000])) as ArrayRef,
                DataType::Float64 => Arc::new(Float64Array::from(vec![0.1])),
                DataType::Decimal128(p, s) => Arc::new(
                    Decimal128Array::from(vec![1])
                        .with_precision_and_scale(*p, *s)
                        .unwrap(),
                ),
                DataType::Timestamp(_, None) => {
                    Arc::new(TimestampMicrosecondArray::from(vec![SEP9 + 1]))
                }
                other => panic!("{other}"),
            })
            .collect();
        t.append(vec![RecordBatch::try_new(schema.clone(), new).unwrap()])
            .await
            .unwrap_or_else(|e| panic!("{feature}: {e}"));
        let v = t
            .add_columns(vec![Field::new("extra", DataType::Utf8, true)])
            .await
            .unwrap();
        let text =
            std::fs::read_to_string(dir.path().join("_delta_log").join(format!("{v:020}.json")))
                .unwrap();
        let meta = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find_map(|a| a.get("metaData").cloned())
            .unwrap();
        let s: Value = serde_json::from_str(meta["schemaString"].as_str().unwrap()).unwrap();
        assert_eq!(
            s["fields"][0]["metadata"]["delta.typeChanges"][0]["fromType"],
            "byte"
        );
        let all = collect(&t, ScanRequest::new()).await;
        assert_eq!(
            i64s(&all, "i_long"),
            vec![
                Some(2),
                Some(i64::from(i32::MIN)),
                None,
                Some(5_000_000_000)
            ]
        );
        assert_eq!(
            collect(
                &t,
                ScanRequest::new().with_predicate(col("f_double").between(3.4f64, 3.5f64))
            )
            .await
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
            1
        );
    }
}

#[tokio::test]
async fn type_changes_the_protocol_does_not_allow_are_refused() {
    // A recorded narrowing, and a widening kept only by the preview (byte to a decimal
    // with fewer than 10 integer digits).
    for (from, to) in [("long", "integer"), ("byte", "decimal(4,1)")] {
        let dir = tempfile::tempdir().unwrap();
        write_commit(
            dir.path(),
            0,
            &[
                json!({"commitInfo": {"timestamp": 1}}),
                json!({"protocol": {"minReaderVersion": 3, "minWriterVersion": 7,
                    "readerFeatures": [WIDENING], "writerFeatures": [WIDENING]}}),
                metadata(
                    &struct_of(vec![field("c", to, &[(from, to)])]),
                    &[],
                    json!({}),
                ),
            ],
        );
        let e = Table::open(Location::local(dir.path()).unwrap())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(
            e.to_string().contains(&format!("from {from} to {to}")),
            "{e}"
        );
    }
    // A file storing a column in a type that does not widen to the table's.
    let dir = tempfile::tempdir().unwrap();
    write_commit(
        dir.path(),
        0,
        &[
            json!({"commitInfo": {"timestamp": 1}}),
            json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}),
            metadata(&struct_of(vec![field("c", "integer", &[])]), &[], json!({})),
        ],
    );
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("c", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![1]))],
    )
    .unwrap();
    let add = add_file(dir.path(), "f.parquet", &batch, json!({}), json!({}));
    write_commit(
        dir.path(),
        1,
        &[json!({"commitInfo": {"timestamp": 2}}), add],
    );
    let t = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    let e = match t.scan(ScanRequest::new()).await {
        Err(e) => e,
        Ok(s) => futures::TryStreamExt::try_collect::<Vec<_>>(s)
            .await
            .unwrap_err(),
    };
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("column c"), "{e}");
}

// ---------------------------------------------------------------------------------
// In-commit timestamps

fn set_mtime(dir: &Path, v: u64, ms: u64) {
    let f = std::fs::File::options()
        .write(true)
        .open(dir.join("_delta_log").join(format!("{v:020}.json")))
        .unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .unwrap();
}

/// Versions 0 and 1 before in-commit timestamps (times from the files' mtimes: 1000 s,
/// 2000 s), versions 2 and 3 after (in-commit 5000 s and 6000 s, while their files
/// are written now).
fn ict_table(dir: &Path) {
    let schema = struct_of(vec![field("a", "long", &[])]);
    write_commit(
        dir,
        0,
        &[
            json!({"commitInfo": {"timestamp": 1_000_000, "operation": "CREATE TABLE"}}),
            json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}),
            metadata(&schema, &[], json!({})),
        ],
    );
    write_commit(
        dir,
        1,
        &[json!({"commitInfo": {"timestamp": 2_000_000, "operation": "WRITE"}})],
    );
    let enabled = json!({
        "delta.enableInCommitTimestamps": "true",
        "delta.inCommitTimestampEnablementVersion": "2",
        "delta.inCommitTimestampEnablementTimestamp": "5000000",
    });
    write_commit(
        dir,
        2,
        &[
            json!({"commitInfo": {"timestamp": 9_000_000, "inCommitTimestamp": 5_000_000,
                                  "operation": "SET TBLPROPERTIES"}}),
            json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 7,
                "writerFeatures": ["inCommitTimestamp", "appendOnly", "invariants"]}}),
            metadata(&schema, &[], enabled),
        ],
    );
    write_commit(
        dir,
        3,
        &[
            json!({"commitInfo": {"timestamp": 9_500_000, "inCommitTimestamp": 6_000_000,
                                  "operation": "WRITE"}}),
        ],
    );
    set_mtime(dir, 0, 1_000_000);
    set_mtime(dir, 1, 2_000_000);
}

#[tokio::test]
async fn time_travel_by_time_uses_in_commit_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    ict_table(dir.path());
    let t = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    for (ms, want) in [
        (1_000_000, 0),
        (1_500_000, 0),
        (2_000_000, 1),
        // Before the enablement time: only the versions before it count (by mtime).
        (4_999_999, 1),
        (5_000_000, 2),
        (5_999_999, 2),
        (6_000_000, 3),
        // The files of versions 2 and 3 were written just now: their mtimes are not used.
        (7_000_000, 3),
    ] {
        assert_eq!(t.version_at(ms).await.unwrap(), want, "at {ms}");
    }
    let e = t.version_at(999_999).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::VersionNotFound, "{e}");
    // History reports the in-commit times where the commits have them.
    let h = t.history(10).await.unwrap();
    let times: Vec<(u64, i64)> = h.iter().map(|e| (e.version, e.timestamp_ms)).collect();
    assert_eq!(
        times,
        vec![
            (3, 6_000_000),
            (2, 5_000_000),
            (1, 2_000_000),
            (0, 1_000_000)
        ]
    );
    // Reading works; writing to a table with in-commit timestamps is refused by name.
    assert!(collect(&t, ScanRequest::new()).await.is_empty());
    let e = t
        .add_columns(vec![Field::new("b", DataType::Int64, true)])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("inCommitTimestamp"), "{e}");
}

// ---------------------------------------------------------------------------------
// Column mapping mode `id`

#[tokio::test]
async fn id_mode_column_mapping_reads_by_parquet_field_ids() {
    use arrow::array::StringArray;
    use std::collections::HashMap;
    let dir = tempfile::tempdir().unwrap();
    let cm = |name: &str, ty: &str, id: i64, physical: &str| {
        json!({"name": name, "type": ty, "nullable": true, "metadata": {
            "delta.columnMapping.id": id, "delta.columnMapping.physicalName": physical}})
    };
    write_commit(
        dir.path(),
        0,
        &[
            json!({"commitInfo": {"timestamp": 1}}),
            json!({"protocol": {"minReaderVersion": 2, "minWriterVersion": 5}}),
            metadata(
                &struct_of(vec![
                    cm("id", "long", 1, "col-1"),
                    cm("label", "string", 2, "col-2"),
                    cm("later", "long", 3, "col-3"),
                ]),
                &[],
                json!({"delta.columnMapping.mode": "id", "delta.columnMapping.maxColumnId": "3"}),
            ),
        ],
    );
    // The file's column names match neither the logical nor the physical names; a
    // column named `id` holds field 2's values and one with an unknown id is ignored.
    let with_id = |name: &str, t: DataType, id: &str| {
        Field::new(name, t, true).with_metadata(HashMap::from([(
            parquet::arrow::PARQUET_FIELD_ID_META_KEY.to_owned(),
            id.to_owned(),
        )]))
    };
    let schema = Arc::new(Schema::new(vec![
        with_id("id", DataType::Utf8, "2"),
        with_id("renamed_a", DataType::Int64, "1"),
        with_id("gone", DataType::Int64, "9"),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(Int64Array::from(vec![10, 20])),
            Arc::new(Int64Array::from(vec![-1, -2])),
        ],
    )
    .unwrap();
    let stats = json!({"numRecords": 2, "minValues": {"col-1": 10}, "maxValues": {"col-1": 20},
                       "nullCount": {"col-1": 0}});
    let add = add_file(dir.path(), "f.parquet", &batch, json!({}), stats);
    write_commit(
        dir.path(),
        1,
        &[json!({"commitInfo": {"timestamp": 2}}), add],
    );
    let t = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    let all = collect(&t, ScanRequest::new()).await;
    assert_eq!(i64s(&all, "id"), vec![Some(10), Some(20)]);
    let labels: Vec<&str> = all
        .iter()
        .flat_map(|b| b.column_by_name("label").unwrap().as_string::<i32>().iter())
        .map(Option::unwrap)
        .collect();
    assert_eq!(labels, vec!["a", "b"]);
    assert_eq!(i64s(&all, "later"), vec![None, None]);
    let some = collect(&t, ScanRequest::new().with_predicate(col("id").gt(15i64))).await;
    assert_eq!(i64s(&some, "id"), vec![Some(20)]);

    // A file without field ids is refused.
    let plain = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "col-1",
            DataType::Int64,
            true,
        )])),
        vec![Arc::new(Int64Array::from(vec![1]))],
    )
    .unwrap();
    let add = add_file(dir.path(), "g.parquet", &plain, json!({}), json!({}));
    write_commit(
        dir.path(),
        2,
        &[json!({"commitInfo": {"timestamp": 3}}), add],
    );
    let t = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    let e = match t.scan(ScanRequest::new()).await {
        Err(e) => e,
        Ok(s) => futures::TryStreamExt::try_collect::<Vec<_>>(s)
            .await
            .unwrap_err(),
    };
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(e.to_string().contains("field ids"), "{e}");
}
