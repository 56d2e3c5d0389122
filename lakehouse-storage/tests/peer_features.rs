//! Tables Python `deltalake` writes with each Delta feature it can write (partition
//! values of every type, column mapping with nested fields, change data feed,
//! `timestamp_ntz`, checkpoints, copy-on-write deletes and updates, schema merges), read
//! here and compared value by value with what `deltalake` reads. Needs `LAKEHOUSE_PEERS_PYTHON`
//! (see `tests/interop.rs`); skipped without it.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType,
};
use lakehouse_core::{ScanRequest, TableSource, col};
use lakehouse_storage::{Location, Table};
use serde_json::{Map, Value};

use crate::common::{collect, peers_python, run_script};

/// One value in the form `write_delta_features.py` prints (see its `canonical`).
fn canonical(a: &dyn Array, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    let float = |v: f64| {
        if v.is_nan() {
            Value::from("nan")
        } else {
            Value::from(format!("{:016x}", v.to_bits()))
        }
    };
    match a.data_type() {
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).into(),
        DataType::Float32 => float(f64::from(a.as_primitive::<Float32Type>().value(i))),
        DataType::Float64 => float(a.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => a.as_boolean().value(i).into(),
        DataType::Utf8 => a.as_string::<i32>().value(i).into(),
        DataType::Binary => a
            .as_binary::<i32>()
            .value(i)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into(),
        DataType::Date32 => a.as_primitive::<Date32Type>().value(i).into(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            a.as_primitive::<TimestampMicrosecondType>().value(i).into()
        }
        DataType::Decimal128(..) => a
            .as_primitive::<Decimal128Type>()
            .value(i)
            .to_string()
            .into(),
        // Nested values (the peer prints integers and strings inside them as they are).
        DataType::Struct(fields) => {
            let s = a.as_struct();
            Value::Object(
                fields
                    .iter()
                    .zip(s.columns())
                    .map(|(f, c)| (f.name().clone(), canonical(c.as_ref(), i)))
                    .collect(),
            )
        }
        DataType::List(_) => {
            let items = a.as_list::<i32>().value(i);
            Value::Array((0..items.len()).map(|j| canonical(&items, j)).collect())
        }
        DataType::Map(..) => {
            let entries = a.as_map().value(i);
            Value::Array(
                (0..entries.len())
                    .map(|j| {
                        Value::Array(vec![
                            canonical(entries.column(0).as_ref(), j),
                            canonical(entries.column(1).as_ref(), j),
                        ])
                    })
                    .collect(),
            )
        }
        other => panic!("no canonical form for {other}"),
    }
}

/// The rows of `batches` as JSON objects, sorted by `id`.
fn rows(batches: &[RecordBatch]) -> Vec<Value> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let mut row = Map::new();
            for (f, c) in b.schema().fields().iter().zip(b.columns()) {
                row.insert(f.name().clone(), canonical(c.as_ref(), i));
            }
            out.push(Value::Object(row));
        }
    }
    out.sort_by_key(|r| r["id"].as_i64());
    out
}

#[tokio::test]
async fn we_read_every_feature_deltalake_writes_as_it_does() {
    let Some(python) = peers_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let want = run_script(
        &python,
        "write_delta_features.py",
        &[dir.path().to_str().unwrap()],
    );
    let tables = [
        "partition_types",
        "column_mapping",
        "column_mapping_nested",
        "change_data_feed",
        "timestamp_ntz",
        "checkpoint_deletes_updates",
        "schema_merge",
    ];
    for name in tables {
        let t = Table::open(Location::local(dir.path().join(name)).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let w = &want[name];
        assert_eq!(
            Some(t.version().await.unwrap()),
            w["version"].as_u64(),
            "{name}"
        );
        let got = rows(&collect(&t, ScanRequest::new()).await);
        let mut expected: Vec<Value> = w["rows"].as_array().unwrap().clone();
        if name == "partition_types" {
            // deltalake reads its own `\uXXXX` text of binary values back as the text;
            // the bytes it was given are what we read.
            for (row, bytes) in expected
                .iter_mut()
                .zip(w["written_p_bin"].as_array().unwrap())
            {
                row["p_bin"] = bytes.clone();
            }
        }
        assert_eq!(got.len(), expected.len(), "{name}");
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g, e, "{name}");
        }
    }
    assert!(want["change_data_feed"]["cdc_files"].as_u64().unwrap() > 0);

    // Partition pruning on the typed values of other writers.
    let t = Table::open(Location::local(dir.path().join("partition_types")).unwrap())
        .await
        .unwrap();
    // One file per row; a file whose float partition value is NaN is never pruned.
    for (p, ids, files) in [
        (col("p_f64").eq(1.5f64), vec![0], 2),
        (col("p_f64").eq(f64::INFINITY), vec![2], 2),
        (col("p_f64").eq(1e20f64), vec![6], 2),
        (col("p_f32").eq(3.4f32), vec![0], 1),
        (col("p_bin").eq(vec![0u8, 1]), vec![0], 1),
        (col("p_bool").eq(false), vec![1, 4, 6, 8], 4),
        (col("p_str").eq(""), vec![0], 1),
        (col("p_str").eq("x/y=z%"), vec![2], 1),
    ] {
        let got = collect(&t, ScanRequest::new().with_predicate(p.clone())).await;
        let got: Vec<i64> = rows(&got)
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        assert_eq!(got, ids, "{p}");
        assert_eq!(t.files(None, Some(&p)).await.unwrap().len(), files, "{p}");
    }
}
