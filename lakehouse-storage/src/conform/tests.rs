use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BinaryViewArray, Decimal128Array, DictionaryArray, Float32Array, Int16Array,
    Int32Array, Int64Array, LargeBinaryArray, LargeStringArray, RecordBatch, StringArray,
    StringViewArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray, UInt8Array, UInt16Array, UInt32Array,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, TimeUnit};
use lakehouse_core::ErrorKind;
use proptest::prelude::*;

use super::to_table_types;

fn micros(tz: Option<&str>) -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, tz.map(Into::into))
}

/// Converts a one-column batch named `c` to a table column of type `to`.
fn one(column: ArrayRef, to: DataType) -> lakehouse_core::Result<ArrayRef> {
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "c",
            column.data_type().clone(),
            true,
        )])),
        vec![column],
    )
    .expect("one column");
    let table = Schema::new(vec![Field::new("c", to.clone(), true)]);
    let out = to_table_types(&table, &batch)?;
    assert_eq!(out.schema().field(0).data_type(), &to);
    Ok(out.column(0).clone())
}

#[test]
fn views_and_large_strings_become_utf8() {
    let want: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None, Some("ünï")]));
    let view: ArrayRef = Arc::new(StringViewArray::from(vec![Some("a"), None, Some("ünï")]));
    let large: ArrayRef = Arc::new(LargeStringArray::from(vec![Some("a"), None, Some("ünï")]));
    assert_eq!(&one(view, DataType::Utf8).unwrap(), &want);
    assert_eq!(&one(large, DataType::Utf8).unwrap(), &want);
}

#[test]
fn views_and_large_binaries_become_binary() {
    let values: Vec<Option<&[u8]>> = vec![Some(b"\x00\x01"), None, Some(b"")];
    let want: ArrayRef = Arc::new(arrow::array::BinaryArray::from(values.clone()));
    let view: ArrayRef = Arc::new(BinaryViewArray::from(values.clone()));
    let large: ArrayRef = Arc::new(LargeBinaryArray::from(values));
    assert_eq!(&one(view, DataType::Binary).unwrap(), &want);
    assert_eq!(&one(large, DataType::Binary).unwrap(), &want);
}

#[test]
fn dictionaries_become_their_values() {
    let dict: DictionaryArray<Int32Type> = vec![Some("x"), None, Some("y"), Some("x")]
        .into_iter()
        .collect();
    let want: ArrayRef = Arc::new(StringArray::from(vec![
        Some("x"),
        None,
        Some("y"),
        Some("x"),
    ]));
    assert_eq!(&one(Arc::new(dict), DataType::Utf8).unwrap(), &want);
    // A dictionary of string views: unpacked, then converted.
    let keys = Int32Array::from(vec![1, 0, 1]);
    let values = Arc::new(StringViewArray::from(vec!["p", "q"]));
    let dict = DictionaryArray::try_new(keys, values).unwrap();
    let want: ArrayRef = Arc::new(StringArray::from(vec!["q", "p", "q"]));
    assert_eq!(&one(Arc::new(dict), DataType::Utf8).unwrap(), &want);
}

#[test]
fn timestamps_of_every_unit_become_microseconds() {
    let want: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![
        Some(3_000_000),
        None,
        Some(-1_000_000),
    ]));
    let s: ArrayRef = Arc::new(TimestampSecondArray::from(vec![Some(3), None, Some(-1)]));
    let ms: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![
        Some(3_000),
        None,
        Some(-1_000),
    ]));
    let ns: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![
        Some(3_000_000_000),
        None,
        Some(-1_000_000_000),
    ]));
    for a in [s, ms, ns] {
        assert_eq!(&one(a, micros(None)).unwrap(), &want);
    }
}

#[test]
fn any_time_zone_converts_to_a_utc_column() {
    let ny: ArrayRef =
        Arc::new(TimestampNanosecondArray::from(vec![5_000i64]).with_timezone("America/New_York"));
    let out = one(ny, micros(Some("UTC"))).unwrap();
    let want: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![5i64]).with_timezone("UTC"));
    assert_eq!(&out, &want);
    let plus: ArrayRef =
        Arc::new(TimestampMicrosecondArray::from(vec![7i64]).with_timezone("+00:00"));
    let want: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![7i64]).with_timezone("UTC"));
    assert_eq!(&one(plus, micros(Some("UTC"))).unwrap(), &want);
}

#[test]
fn time_zone_and_no_time_zone_do_not_mix() {
    let aware: ArrayRef =
        Arc::new(TimestampMicrosecondArray::from(vec![1i64]).with_timezone("UTC"));
    let naive: ArrayRef = Arc::new(TimestampMillisecondArray::from(vec![1i64]));
    // No rule: passed through for conform_batch to refuse.
    assert_eq!(one_raw(aware, micros(None)), micros(Some("UTC")));
    assert_eq!(
        one_raw(naive, micros(Some("UTC"))),
        DataType::Timestamp(TimeUnit::Millisecond, None)
    );
}

/// The type `to_table_types` leaves in the batch for a table column of type `to`.
fn one_raw(column: ArrayRef, to: DataType) -> DataType {
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "c",
            column.data_type().clone(),
            true,
        )])),
        vec![column],
    )
    .expect("one column");
    let table = Schema::new(vec![Field::new("c", to, true)]);
    to_table_types(&table, &batch)
        .unwrap()
        .schema()
        .field(0)
        .data_type()
        .clone()
}

#[test]
fn nanoseconds_that_are_not_whole_microseconds_are_refused() {
    let ns: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![
        Some(1_000),
        None,
        Some(1_001),
    ]));
    let e = one(ns, micros(None)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TypeMismatch);
    assert!(e.message().contains("column c"), "{e}");
    assert!(e.message().contains("1001 ns at row 2"), "{e}");
}

#[test]
fn seconds_that_overflow_microseconds_are_refused() {
    let s: ArrayRef = Arc::new(TimestampSecondArray::from(vec![i64::MAX / 10]));
    let e = one(s, micros(None)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TypeMismatch);
    assert!(e.message().contains("overflows"), "{e}");
}

#[test]
fn unsigned_integers_widen_losslessly() {
    let u8s: ArrayRef = Arc::new(UInt8Array::from(vec![Some(0), None, Some(255)]));
    let want: ArrayRef = Arc::new(Int16Array::from(vec![Some(0), None, Some(255)]));
    assert_eq!(&one(u8s, DataType::Int16).unwrap(), &want);
    let u16s: ArrayRef = Arc::new(UInt16Array::from(vec![u16::MAX]));
    let want: ArrayRef = Arc::new(Int32Array::from(vec![i32::from(u16::MAX)]));
    assert_eq!(&one(u16s, DataType::Int32).unwrap(), &want);
    let u32s: ArrayRef = Arc::new(UInt32Array::from(vec![u32::MAX]));
    let want: ArrayRef = Arc::new(Int64Array::from(vec![i64::from(u32::MAX)]));
    assert_eq!(&one(u32s, DataType::Int64).unwrap(), &want);
}

#[test]
fn integers_that_do_not_fit_are_refused_with_the_value() {
    let u64s: ArrayRef = Arc::new(UInt64Array::from(vec![Some(1), None, Some(u64::MAX)]));
    let e = one(u64s, DataType::Int64).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TypeMismatch);
    assert!(
        e.message()
            .contains("value 18446744073709551615 at row 2 does not fit the table's type Int64"),
        "{e}"
    );
    let u8s: ArrayRef = Arc::new(UInt8Array::from(vec![200]));
    let e = one(u8s, DataType::Int8).unwrap_err();
    assert!(e.message().contains("column c: value 200 at row 0"), "{e}");
}

#[test]
fn floats_widen_and_decimals_keep_their_scale() {
    let f: ArrayRef = Arc::new(Float32Array::from(vec![Some(1.5), None]));
    let want: ArrayRef = Arc::new(arrow::array::Float64Array::from(vec![Some(1.5), None]));
    assert_eq!(&one(f, DataType::Float64).unwrap(), &want);
    let wide: ArrayRef = Arc::new(
        Decimal128Array::from(vec![Some(12_345), None])
            .with_precision_and_scale(20, 2)
            .unwrap(),
    );
    let want: ArrayRef = Arc::new(
        Decimal128Array::from(vec![Some(12_345), None])
            .with_precision_and_scale(10, 2)
            .unwrap(),
    );
    assert_eq!(&one(wide, DataType::Decimal128(10, 2)).unwrap(), &want);
    let big: ArrayRef = Arc::new(
        Decimal128Array::from(vec![10i128.pow(12)])
            .with_precision_and_scale(20, 2)
            .unwrap(),
    );
    let e = one(big, DataType::Decimal128(10, 2)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TypeMismatch);
    assert!(e.message().contains("at row 0"), "{e}");
    // Another scale has no rule.
    let other: ArrayRef = Arc::new(
        Decimal128Array::from(vec![1])
            .with_precision_and_scale(10, 3)
            .unwrap(),
    );
    assert_eq!(
        one_raw(other, DataType::Decimal128(10, 2)),
        DataType::Decimal128(10, 3)
    );
}

#[test]
fn columns_without_a_rule_or_not_in_the_table_pass_through() {
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("s", DataType::Int64, true),
            Field::new("extra", DataType::Utf8View, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(StringViewArray::from(vec!["e"])),
        ],
    )
    .unwrap();
    let table = Schema::new(vec![Field::new("s", DataType::Utf8, true)]);
    let out = to_table_types(&table, &batch).unwrap();
    assert_eq!(out.schema(), batch.schema());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn strings_survive_every_string_encoding(values in prop::collection::vec(
        prop::option::of(".{0,20}"), 0..40)) {
        let want: ArrayRef = Arc::new(StringArray::from(values.clone()));
        let view: ArrayRef = Arc::new(StringViewArray::from(values.clone()));
        let large: ArrayRef = Arc::new(LargeStringArray::from(values.clone()));
        let dict: DictionaryArray<Int32Type> =
            values.iter().map(|v| v.as_deref()).collect();
        for a in [view, large, Arc::new(dict) as ArrayRef] {
            prop_assert_eq!(&one(a, DataType::Utf8).unwrap(), &want);
        }
    }

    #[test]
    fn timestamps_survive_or_are_refused(values in prop::collection::vec(
        prop::option::of(any::<i64>()), 0..40)) {
        for unit in [TimeUnit::Second, TimeUnit::Millisecond, TimeUnit::Nanosecond] {
            let (array, factor): (ArrayRef, i64) = match unit {
                TimeUnit::Second => (Arc::new(TimestampSecondArray::from(values.clone())), 1_000_000),
                TimeUnit::Millisecond => (Arc::new(TimestampMillisecondArray::from(values.clone())), 1_000),
                _ => (Arc::new(TimestampNanosecondArray::from(values.clone())), -1_000),
            };
            let exact: Option<Vec<Option<i64>>> = values
                .iter()
                .map(|v| match v {
                    None => Some(None),
                    Some(v) if factor > 0 => v.checked_mul(factor).map(Some),
                    Some(v) => (v % 1_000 == 0).then_some(Some(v / 1_000)),
                })
                .collect();
            match (one(array, micros(None)), exact) {
                (Ok(got), Some(want)) => {
                    let want: ArrayRef = Arc::new(TimestampMicrosecondArray::from(want));
                    prop_assert_eq!(&got, &want);
                }
                (Err(e), None) => prop_assert_eq!(e.kind(), ErrorKind::TypeMismatch),
                (got, want) => prop_assert!(false, "got {:?}, exact {:?}", got.map(|a| a.len()), want),
            }
        }
    }

    #[test]
    fn unsigned_values_survive_or_are_refused(values in prop::collection::vec(
        prop::option::of(prop_oneof![any::<u64>(), 0..1_000u64]), 0..40)) {
        let array: ArrayRef = Arc::new(UInt64Array::from(values.clone()));
        let exact: Option<Vec<Option<i64>>> = values
            .iter()
            .map(|v| match v {
                None => Some(None),
                Some(v) => i64::try_from(*v).ok().map(Some),
            })
            .collect();
        match (one(array, DataType::Int64), exact) {
            (Ok(got), Some(want)) => {
                let want: ArrayRef = Arc::new(Int64Array::from(want));
                prop_assert_eq!(&got, &want);
            }
            (Err(e), None) => prop_assert_eq!(e.kind(), ErrorKind::TypeMismatch),
            (got, want) => prop_assert!(false, "got {:?}, exact {:?}", got.map(|a| a.len()), want),
        }
    }
}

/// The table's nested type for these tests: `struct<name: string, tags: list<string>,
/// counts: map<string, long>, ts: timestamp>`.
fn nested_table_type() -> DataType {
    DataType::Struct(
        vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("tags", crate::nested::list_type(DataType::Utf8, true), true),
            Field::new(
                "counts",
                crate::nested::map_type(DataType::Utf8, DataType::Int64, true),
                true,
            ),
            Field::new("ts", micros(Some("UTC")), true),
        ]
        .into(),
    )
}

#[test]
fn nested_children_convert_by_the_top_level_rules() {
    use arrow::array::{
        LargeListArray, ListArray, MapBuilder, StringViewBuilder, StructArray, UInt32Builder,
    };
    use arrow::buffer::NullBuffer;
    // What DataFusion hands: string views everywhere, `item` list fields, `entries` map
    // fields, unsigned counts, milliseconds.
    let name: ArrayRef = Arc::new(StringViewArray::from(vec![Some("a"), None, Some("c")]));
    let mut tag_values = StringViewBuilder::new();
    tag_values.append_value("x");
    tag_values.append_null();
    tag_values.append_value("y");
    let tag_values = tag_values.finish();
    let tags: ArrayRef = Arc::new(LargeListArray::new(
        Arc::new(Field::new("item", DataType::Utf8View, true)),
        arrow::buffer::OffsetBuffer::new(vec![0i64, 2, 2, 3].into()),
        Arc::new(tag_values),
        Some(NullBuffer::from(vec![true, false, true])),
    ));
    let mut counts = MapBuilder::new(None, StringViewBuilder::new(), UInt32Builder::new());
    counts.keys().append_value("k");
    counts.values().append_value(7);
    counts.append(true).unwrap();
    counts.append(false).unwrap();
    counts.keys().append_value("z");
    counts.values().append_null();
    counts.append(true).unwrap();
    let counts: ArrayRef = Arc::new(counts.finish());
    let ts: ArrayRef = Arc::new(
        TimestampMillisecondArray::from(vec![Some(1), None, Some(3)]).with_timezone("UTC"),
    );
    let fields: Vec<Field> = [&name, &tags, &counts, &ts]
        .iter()
        .zip(["name", "tags", "counts", "ts"])
        .map(|(a, n)| Field::new(n, a.data_type().clone(), true))
        .collect();
    let s: ArrayRef = Arc::new(
        StructArray::try_new(
            fields.into(),
            vec![name, tags, counts, ts],
            Some(NullBuffer::from(vec![true, true, false])),
        )
        .unwrap(),
    );
    let out = one(s, nested_table_type()).unwrap();
    let out = out.as_any().downcast_ref::<StructArray>().unwrap();
    assert_eq!(out.data_type(), &nested_table_type());
    assert!(out.is_null(2) && out.is_valid(1));
    let name = out
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(name.value(0), "a");
    assert!(name.is_null(1));
    let tags = out.column(1).as_any().downcast_ref::<ListArray>().unwrap();
    let first = tags.value(0);
    let first = first.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(first.iter().collect::<Vec<_>>(), vec![Some("x"), None]);
    assert!(tags.is_null(1));
    let counts = out
        .column(2)
        .as_any()
        .downcast_ref::<arrow::array::MapArray>()
        .unwrap();
    let entry = counts.value(0);
    let values = entry
        .column(1)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!(values.value(0), 7);
    assert!(counts.is_null(1));
    let ts = out
        .column(3)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    assert_eq!(ts.value(0), 1_000);
}

#[test]
fn nested_values_that_do_not_fit_are_refused_by_path() {
    use arrow::array::{ListArray, StructArray};
    // A list of u64 into a list of longs: the value over 2^63 names the column.
    let items = UInt64Array::from(vec![1, u64::MAX]);
    let list: ArrayRef = Arc::new(ListArray::new(
        Arc::new(Field::new("item", DataType::UInt64, true)),
        arrow::buffer::OffsetBuffer::new(vec![0i32, 2].into()),
        Arc::new(items),
        None,
    ));
    let e = one(list, crate::nested::list_type(DataType::Int64, true)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TypeMismatch, "{e}");
    assert!(e.to_string().contains("c[]"), "{e}");
    // A struct with a field the table does not have.
    let s: ArrayRef = Arc::new(
        StructArray::try_new(
            vec![Field::new("extra", DataType::Int64, true)].into(),
            vec![Arc::new(Int64Array::from(vec![1]))],
            None,
        )
        .unwrap(),
    );
    let e = one(s, nested_table_type()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SchemaMismatch, "{e}");
    assert!(e.to_string().contains("c.extra"), "{e}");
    assert_eq!(e.context().column.as_deref(), Some("c"));
    // A string where the table has a struct.
    let e = one(Arc::new(StringArray::from(vec!["x"])), nested_table_type()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SchemaMismatch, "{e}");
}
