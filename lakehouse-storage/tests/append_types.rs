//! `append` takes the Arrow types producers use (views, large types, dictionaries,
//! timestamps of any unit, unsigned integers) and stores the table's types exactly.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryArray, Decimal128Array, DictionaryArray, Int16Array, Int64Array,
    LargeBinaryArray, RecordBatch, StringArray, StringViewArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray, UInt8Array, UInt32Array, UInt64Array,
};
use arrow::compute::{concat_batches, sort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Int8Type, Schema, SchemaRef, TimeUnit};
use lakehouse_core::{ErrorKind, ScanRequest, TableSink, TableSource, TxnId};
use lakehouse_storage::{Location, PartitionField, Table, TableOptions};
use proptest::prelude::*;

use crate::common::collect;

fn table_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("blob", DataType::Binary, true),
        Field::new(
            "at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new(
            "local",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new("small", DataType::Int16, true),
        Field::new("amount", DataType::Decimal128(10, 2), true),
        Field::new("region", DataType::Utf8, true),
    ]))
}

async fn create() -> Table {
    Table::create(
        Location::memory("types").unwrap(),
        table_schema(),
        TableOptions::new().partition_by([PartitionField::identity("region")]),
    )
    .await
    .unwrap()
}

/// A batch of `ns.len()` rows in producer types, `at` in nanoseconds from `ns`.
fn producer_batch(ns: Vec<Option<i64>>) -> RecordBatch {
    let n = ns.len();
    let region: DictionaryArray<Int8Type> = (0..n).map(|i| Some(["eu", "us"][i % 2])).collect();
    let columns: Vec<(&str, ArrayRef)> = vec![
        // Out of the table's order, and in the types DataFusion and Polars hand out.
        ("region", Arc::new(region)),
        ("id", Arc::new(UInt32Array::from_iter_values(0..n as u32))),
        (
            "name",
            Arc::new(StringViewArray::from_iter((0..n).map(|i| {
                (i % 3 != 0).then(|| format!("name number {i} (long enough not to be inlined)"))
            }))),
        ),
        (
            "blob",
            Arc::new(LargeBinaryArray::from_iter(
                (0..n).map(|i| Some(vec![i as u8; i % 4])),
            )),
        ),
        (
            "at",
            Arc::new(TimestampNanosecondArray::from(ns).with_timezone("+00:00")),
        ),
        (
            "local",
            Arc::new(TimestampMillisecondArray::from_iter_values(
                (0..n as i64).map(|i| 1_795_564_800_000 + i),
            )),
        ),
        (
            "small",
            Arc::new(UInt8Array::from_iter_values(
                (0..n).map(|i| (i * 37 % 256) as u8),
            )),
        ),
        (
            "amount",
            Arc::new(
                Decimal128Array::from_iter_values((0..n as i128).map(|i| i * 101))
                    .with_precision_and_scale(38, 2)
                    .unwrap(),
            ),
        ),
    ];
    RecordBatch::try_from_iter(columns).unwrap()
}

/// What the table must hold for `producer_batch(ns)`, in its types.
fn stored_batch(ns: &[Option<i64>]) -> RecordBatch {
    let n = ns.len();
    RecordBatch::try_new(
        table_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..n as i64)),
            Arc::new(StringArray::from_iter((0..n).map(|i| {
                (i % 3 != 0).then(|| format!("name number {i} (long enough not to be inlined)"))
            }))),
            Arc::new(BinaryArray::from_iter(
                (0..n).map(|i| Some(vec![i as u8; i % 4])),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(
                    ns.iter().map(|v| v.map(|v| v / 1000)).collect::<Vec<_>>(),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                (0..n as i64).map(|i| (1_795_564_800_000 + i) * 1000),
            )),
            Arc::new(Int16Array::from_iter_values(
                (0..n).map(|i| (i * 37 % 256) as i16),
            )),
            Arc::new(
                Decimal128Array::from_iter_values((0..n as i128).map(|i| i * 101))
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| ["eu", "us"][i % 2]),
            )),
        ],
    )
    .unwrap()
}

/// Every row of `t`, ordered by `id`.
async fn read_sorted(t: &Table) -> RecordBatch {
    let batches = collect(t, ScanRequest::new()).await;
    let all = concat_batches(&table_schema(), &batches).unwrap();
    let order = sort_to_indices(all.column(0), None, None).unwrap();
    take_record_batch(&all, &order).unwrap()
}

#[tokio::test]
async fn producer_types_are_stored_as_the_table_types() {
    let t = create().await;
    let ns: Vec<Option<i64>> = (0..50)
        .map(|i| (i % 7 != 0).then_some(1_795_564_800_000_000_000 + i * 1_000))
        .collect();
    let info = t.append(vec![producer_batch(ns.clone())]).await.unwrap();
    assert_eq!(info.rows, 50);
    assert_eq!(info.files, 2, "one file per region");
    assert_eq!(read_sorted(&t).await, stored_batch(&ns));
}

#[tokio::test]
async fn table_sink_appends_convert_too() {
    let t = create().await;
    let ns = vec![Some(2_000), None];
    TableSink::append(
        &t,
        vec![producer_batch(ns.clone())],
        Some(TxnId::new("app", 1)),
    )
    .await
    .unwrap();
    assert_eq!(read_sorted(&t).await, stored_batch(&ns));
}

#[tokio::test]
async fn lost_precision_is_refused_naming_the_column_and_nothing_is_written() {
    let t = create().await;
    let e = t
        .append(vec![producer_batch(vec![Some(1_000), Some(1_500)])])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TypeMismatch);
    assert!(e.message().contains("column at"), "{e}");
    assert!(e.message().contains("1500 ns at row 1"), "{e}");
    assert_eq!(t.version().await.unwrap(), 0);
    assert_eq!(t.files(None, None).await.unwrap().len(), 0);
}

#[tokio::test]
async fn unsigned_values_that_do_not_fit_are_refused_naming_the_column() {
    let t = create().await;
    let batch = RecordBatch::try_from_iter([(
        "id",
        Arc::new(UInt64Array::from(vec![1, u64::MAX])) as ArrayRef,
    )])
    .unwrap();
    let e = t.append(vec![batch]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TypeMismatch);
    assert!(
        e.message()
            .contains("column id: value 18446744073709551615 at row 1 does not fit"),
        "{e}"
    );
    assert_eq!(t.version().await.unwrap(), 0);
}

#[tokio::test]
async fn types_without_a_rule_are_still_a_schema_mismatch() {
    let t = create().await;
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("name", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
    ])
    .unwrap();
    let e = t.append(vec![batch]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::SchemaMismatch);
    assert!(e.message().contains("column name has type Int64"), "{e}");
}

proptest! {
    // Each case writes and reads a table (Parquet encode and decode in a debug build).
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn timestamps_in_nanoseconds_survive_the_table(
        micros in prop::collection::vec(
            prop::option::of(-9_000_000_000_000_000i64..9_000_000_000_000_000), 1..30)
    ) {
        let ns: Vec<Option<i64>> = micros.iter().map(|m| m.map(|m| m * 1000)).collect();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (got, want) = rt.block_on(async {
            let t = create().await;
            t.append(vec![producer_batch(ns.clone())]).await.unwrap();
            (read_sorted(&t).await, stored_batch(&ns))
        });
        prop_assert_eq!(got, want);
    }
}
