//! Partitioning: hostile values, derived partitions, pruning, and a property test.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use lakehouse_core::{Predicate, ScanRequest, TableSource, col};
use lakehouse_storage::{Location, PartitionField, Table, TableOptions};
use proptest::prelude::*;

use crate::common::{DAY, DAY0, batch, collect, files_under, ints, rows, schema};

fn kv_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, true),
    ]))
}

fn kv(ids: Vec<i64>, regions: Vec<Option<&str>>) -> RecordBatch {
    RecordBatch::try_new(
        kv_schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(regions)),
        ],
    )
    .unwrap()
}

fn region_of(batches: &[RecordBatch]) -> BTreeMap<i64, Option<String>> {
    let mut out = BTreeMap::new();
    for b in batches {
        let ids = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
        let r = b.column_by_name("region").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            out.insert(ids.value(i), r.is_valid(i).then(|| r.value(i).to_owned()));
        }
    }
    out
}

#[tokio::test]
async fn path_like_values_stay_inside_the_table_and_read_back_exactly() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("table");
    let t = Table::create(
        Location::local(&dir).unwrap(),
        kv_schema(),
        TableOptions::new().partition_by([PartitionField::identity("region")]),
    )
    .await
    .unwrap();
    let values = [
        Some("../x"),
        Some("a/b"),
        Some("="),
        Some(""),
        None,
        Some("naïve 日本"),
        Some(".."),
        Some("%2F"),
        Some("__HIVE_DEFAULT_PARTITION__"),
        Some("x\\..\\y"),
    ];
    let ids: Vec<i64> = (0..values.len() as i64).collect();
    t.append(vec![kv(ids.clone(), values.to_vec())])
        .await
        .unwrap();

    // Nothing was written outside the table directory.
    let outside: Vec<_> = files_under(root.path())
        .into_iter()
        .filter(|f| !f.starts_with("table/"))
        .collect();
    assert!(outside.is_empty(), "{outside:?}");
    // One data file per distinct value (null, "" and the literal default name differ).
    let data = files_under(&dir)
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .count();
    assert_eq!(data, values.len());

    let again = Table::open(Location::local(&dir).unwrap()).await.unwrap();
    let back = region_of(&collect(&again, ScanRequest::new()).await);
    let want: BTreeMap<i64, Option<String>> = ids
        .iter()
        .map(|i| (*i, values[*i as usize].map(str::to_owned)))
        .collect();
    assert_eq!(back, want);

    for (i, v) in values.iter().enumerate() {
        let p = match v {
            Some(v) => col("region").eq(*v),
            None => col("region").is_null(),
        };
        let got = collect(&again, ScanRequest::new().with_predicate(p.clone())).await;
        assert_eq!(ints(&got, "id"), vec![i as i64], "{v:?}");
        assert_eq!(again.files(None, Some(&p)).await.unwrap().len(), 1, "{v:?}");
    }
}

#[tokio::test]
async fn day_and_bucket_partitions_prune_from_source_predicates() {
    let t = Table::create(
        Location::memory("d").unwrap(),
        schema(),
        TableOptions::new().partition_by([
            PartitionField::day("ts"),
            PartitionField::identity("region"),
            PartitionField::bucket("user_id", 8),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(t.user_schema().fields().len(), 5);
    assert_eq!(t.schema().fields().len(), 7);
    t.append(vec![batch(0, 6000)]).await.unwrap();
    let all = t.files(None, None).await.unwrap();
    assert_eq!(all.len(), 3 * 4 * 8);

    // A time range on the source column reads one day.
    let day1 = col("ts")
        .gt_eq(lakehouse_core::Scalar::timestamp_micros(DAY0 + DAY))
        .and(col("ts").lt(lakehouse_core::Scalar::timestamp_micros(DAY0 + 2 * DAY)));
    assert_eq!(t.files(None, Some(&day1)).await.unwrap().len(), 4 * 8);
    let got = collect(&t, ScanRequest::new().with_predicate(day1)).await;
    assert_eq!(
        ints(&got, "order_id"),
        (0..6000).filter(|i| i % 3 == 1).collect::<Vec<_>>()
    );

    // A point lookup on the bucketed key reads one bucket per other partition.
    let user = col("user_id").eq(42i64);
    assert_eq!(t.files(None, Some(&user)).await.unwrap().len(), 3 * 4);
    let got = collect(&t, ScanRequest::new().with_predicate(user)).await;
    assert_eq!(
        ints(&got, "order_id"),
        (0..6000).filter(|i| i % 97 == 42).collect::<Vec<_>>()
    );

    // The derived columns read back.
    let days = collect(
        &t,
        ScanRequest::new()
            .with_projection(["ts_day", "user_id_bucket"])
            .with_limit(3),
    )
    .await;
    assert_eq!(rows(&days), 3);
}

#[tokio::test]
async fn bad_partitionings_are_refused() {
    for p in [
        PartitionField::identity("nope"),
        PartitionField::hour("region"),
        PartitionField::bucket("price", 4),
        PartitionField::bucket("user_id", 0),
        PartitionField::identity("price"),
    ] {
        let e = Table::create(
            Location::memory("b").unwrap(),
            schema(),
            TableOptions::new().partition_by([p.clone()]),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                e.kind(),
                lakehouse_core::ErrorKind::InvalidInput | lakehouse_core::ErrorKind::ColumnNotFound
            ),
            "{p:?}: {e}"
        );
    }
}

fn arb_region() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(String::new())),
        "[a-c/.=%]{1,4}".prop_map(Some),
    ]
}

fn arb_predicate() -> impl Strategy<Value = Predicate> {
    let leaf = prop_oneof![
        (0i64..60).prop_map(|v| col("id").lt(v)),
        (0i64..60).prop_map(|v| col("id").eq(v)),
        arb_region().prop_map(|r| match r {
            Some(r) => col("region").eq(r),
            None => col("region").is_null(),
        }),
        Just(col("region").is_not_null()),
    ];
    leaf.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| a.and(b)),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| a.or(b)),
            inner.prop_map(|a| Predicate::Not(Box::new(a))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any sequence of appends, scanned with any predicate, returns exactly the rows
    /// the predicate selects from everything appended.
    #[test]
    fn scans_equal_a_filter_over_all_appended_rows(
        appends in proptest::collection::vec(proptest::collection::vec(arb_region(), 0..12), 1..5),
        pred in arb_predicate(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let t = Table::create(
                Location::memory("p").unwrap(),
                kv_schema(),
                TableOptions::new().partition_by([PartitionField::identity("region")]),
            )
            .await
            .unwrap();
            let mut all: Vec<RecordBatch> = Vec::new();
            let mut next = 0i64;
            for regions in appends {
                let ids: Vec<i64> = (next..next + regions.len() as i64).collect();
                next += regions.len() as i64;
                let b = kv(ids, regions.iter().map(|r| r.as_deref()).collect());
                t.append(vec![b.clone()]).await.unwrap();
                all.push(b);
            }
            let want: Vec<RecordBatch> = all.iter().map(|b| pred.filter(b).unwrap()).collect();
            let got = collect(&t, ScanRequest::new().with_predicate(pred.clone())).await;
            prop_assert_eq!(region_of(&got), region_of(&want));
            Ok(())
        })?;
    }
}
