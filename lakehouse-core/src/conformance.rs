//! Conformance suites: the behaviour every implementation of the core traits must show.
//!
//! An implementation runs the suite for its trait from its own tests:
//!
//! ```
//! use lakehouse_core::{conformance, MemoryLog, MemoryTable};
//!
//! # futures::executor::block_on(async {
//! conformance::table(|schema| async move { Ok(MemoryTable::new("t", schema)) }).await;
//! conformance::event_log(MemoryLog::DEFAULT_MAX_RECORD_BYTES, || async { Ok(MemoryLog::new(4)) }).await;
//! # });
//! ```
//!
//! The suites are test code: they panic with a message naming the broken rule.
//! They are executor-agnostic and spawn nothing.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::ops::Not;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use futures::TryStreamExt;

use crate::error::{ErrorKind, Result};
use crate::log::{EventLog, Position, PutRecord, ReadLimit, ShardId, hash_key};
use crate::predicate::{Predicate, col};
use crate::scalar::Scalar;
use crate::table::{AppendOutcome, FilterSupport, ScanRequest, TableSink, TableSource, TxnId};

/// The schema the table suite creates its tables with: `id Int64 NOT NULL`,
/// `category Utf8`, `price Float64`, `ts Timestamp(us)`.
pub fn table_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("category", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]))
}

/// One row of the suite's table.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: i64,
    category: Option<String>,
    price: Option<f64>,
    ts: Option<i64>,
}

fn row(id: i64, category: Option<&str>, price: Option<f64>) -> Row {
    Row {
        id,
        category: category.map(str::to_owned),
        price,
        ts: Some(1_700_000_000_000_000 + id * 1_000_000),
    }
}

fn to_batch(schema: &SchemaRef, rows: &[Row]) -> RecordBatch {
    RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))) as ArrayRef,
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.category.clone()),
            )),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.price))),
            Arc::new(TimestampMicrosecondArray::from_iter(
                rows.iter().map(|r| r.ts),
            )),
        ],
    )
    .expect("suite batches match the suite schema")
}

/// Reads rows back by column name; absent columns read as null.
fn from_batches(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        let id = b
            .column_by_name("id")
            .map(|c| c.as_primitive::<Int64Type>().clone());
        let category = b
            .column_by_name("category")
            .map(|c| arrow::compute::cast(c, &DataType::Utf8).expect("category reads as Utf8"));
        let price = b
            .column_by_name("price")
            .map(|c| c.as_primitive::<Float64Type>().clone());
        let ts = b
            .column_by_name("ts")
            .map(|c| arrow::compute::cast(c, &DataType::Int64).expect("ts reads as Int64"));
        for i in 0..b.num_rows() {
            out.push(Row {
                id: id.as_ref().map_or(-1, |a| a.value(i)),
                category: category
                    .as_ref()
                    .filter(|a| a.is_valid(i))
                    .map(|a| a.as_string::<i32>().value(i).to_owned()),
                price: price.as_ref().filter(|a| a.is_valid(i)).map(|a| a.value(i)),
                ts: ts
                    .as_ref()
                    .filter(|a| a.is_valid(i))
                    .map(|a| a.as_primitive::<Int64Type>().value(i)),
            });
        }
    }
    out.sort_by_key(|r| r.id);
    out
}

async fn scan_rows<T: TableSource + ?Sized>(t: &T, request: ScanRequest) -> Vec<Row> {
    let predicate = request.predicate.clone();
    let batches: Vec<RecordBatch> = t
        .scan(request)
        .await
        .expect("scan succeeds")
        .try_collect()
        .await
        .expect("scan stream succeeds");
    let batches = match predicate {
        Some(p) if t.filter_support(&p) != FilterSupport::Exact => batches
            .iter()
            .map(|b| p.filter(b).expect("predicate evaluates on scanned batches"))
            .collect(),
        Some(p) => {
            for b in &batches {
                let mask = p.evaluate(b).expect("predicate evaluates");
                assert_eq!(
                    mask.true_count(),
                    b.num_rows(),
                    "a source with exact filter support returned rows that fail {p}"
                );
            }
            batches
        }
        None => batches,
    };
    from_batches(&batches)
}

fn expected(rows: &[Row], p: &Predicate, schema: &SchemaRef) -> Vec<Row> {
    let batch = to_batch(schema, rows);
    from_batches(&[p.filter(&batch).expect("predicate evaluates on suite rows")])
}

/// Runs the suite for a table that is both a [`TableSource`] and a [`TableSink`].
///
/// `make` creates a new, empty table with the given schema (see [`table_schema`]).
///
/// # Panics
///
/// When the implementation breaks a rule of the contract; the message names it.
pub async fn table<T, F, Fut>(make: F)
where
    T: TableSource + TableSink,
    F: Fn(SchemaRef) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let schema = table_schema();
    let t = make(schema.clone())
        .await
        .expect("creating a table succeeds");
    let v0 = t.version().await.expect("version of a new table");
    assert!(
        scan_rows(&t, ScanRequest::new()).await.is_empty(),
        "a new table is empty"
    );

    // Appends commit atomically and bump the version.
    let first = vec![
        row(1, Some("toys"), Some(9.5)),
        row(2, Some("books"), None),
        row(3, None, Some(30.0)),
    ];
    let v1 = match t
        .append(vec![to_batch(&schema, &first)], None)
        .await
        .expect("append")
    {
        AppendOutcome::Committed { version, rows } => {
            assert_eq!(rows, 3, "append reports the rows written");
            version
        }
        other => panic!("a plain append commits, got {other:?}"),
    };
    assert!(v1 > v0, "an append makes a newer version");
    assert_eq!(t.version().await.unwrap(), v1);
    assert_eq!(scan_rows(&t, ScanRequest::new()).await, first);

    let second = vec![
        row(4, Some("toys"), Some(12.0)),
        row(5, Some("garden"), Some(1.0)),
        row(6, Some("toys"), None),
        row(7, Some("ünïcode/../x"), Some(7.0)),
    ];
    // Idempotent commits under a transaction id.
    let txn = TxnId::new("suite-writer", 5);
    let v2 = match t
        .append(
            vec![
                to_batch(&schema, &second[..2]),
                to_batch(&schema, &second[2..]),
            ],
            Some(txn.clone()),
        )
        .await
        .expect("append with txn")
    {
        AppendOutcome::Committed { version, rows } => {
            assert_eq!(rows, 4);
            version
        }
        other => panic!("a new transaction commits, got {other:?}"),
    };
    assert!(v2 > v1);
    for seq in [5, 4] {
        assert_eq!(
            t.append(
                vec![to_batch(&schema, &second)],
                Some(TxnId::new("suite-writer", seq))
            )
            .await
            .expect("a replayed append is not an error"),
            AppendOutcome::Duplicate { last_sequence: 5 },
            "replaying sequence {seq} after 5 writes nothing"
        );
    }
    assert_eq!(t.version().await.unwrap(), v2, "duplicates make no version");
    assert_eq!(t.last_sequence("suite-writer").await.unwrap(), Some(5));
    assert_eq!(t.last_sequence("nobody").await.unwrap(), None);

    let all: Vec<Row> = first.iter().chain(&second).cloned().collect();
    assert_eq!(
        scan_rows(&t, ScanRequest::new()).await,
        all,
        "every committed row reads back once"
    );

    // Projection returns the asked columns in the asked order.
    let batches: Vec<RecordBatch> = t
        .scan(ScanRequest::new().with_projection(["price", "id"]))
        .await
        .expect("projected scan")
        .try_collect()
        .await
        .expect("projected stream");
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, all.len());
    for b in &batches {
        let names: Vec<String> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(names, ["price", "id"], "projection order is kept");
    }

    // Predicates: whatever the source prunes, the matching rows all come back.
    let predicates = [
        col("id").eq(2),
        col("id").gt(4),
        col("price").is_null(),
        col("category").in_list(["toys", "garden"]),
        col("category").eq("toys").not(),
        col("price").between(5.0, 10.0).or(col("id").lt_eq(1)),
        col("ts").gt_eq(Scalar::timestamp_micros(1_700_000_000_000_000 + 5_000_000)),
        col("category").eq("ünïcode/../x"),
        col("id").eq(100),
    ];
    for p in predicates {
        assert_eq!(
            scan_rows(&t, ScanRequest::new().with_predicate(p.clone())).await,
            expected(&all, &p, &schema),
            "scan with predicate {p}"
        );
    }

    // A limit returns at least that many rows when the table has them.
    let limited: usize = t
        .scan(ScanRequest::new().with_limit(2))
        .await
        .expect("limited scan")
        .try_collect::<Vec<_>>()
        .await
        .expect("limited stream")
        .iter()
        .map(RecordBatch::num_rows)
        .sum();
    assert!(limited >= 2, "a limit of 2 returned {limited} rows");

    // Unknown columns are typed errors.
    let err = t
        .scan(ScanRequest::new().with_projection(["nope"]))
        .await
        .err()
        .expect("projecting an unknown column fails");
    assert_eq!(err.kind(), ErrorKind::ColumnNotFound, "{err}");
    let err = t
        .scan(ScanRequest::new().with_predicate(col("nope").eq(1)))
        .await
        .err()
        .expect("filtering on an unknown column fails");
    assert_eq!(err.kind(), ErrorKind::ColumnNotFound, "{err}");

    // Time travel.
    assert_eq!(
        scan_rows(&t, ScanRequest::new().at_version(v1)).await,
        first,
        "reading version {v1} shows only its rows"
    );
    let latest = t.version().await.unwrap();
    let err = t
        .scan(ScanRequest::new().at_version(latest + 10))
        .await
        .err()
        .expect("a future version fails");
    assert_eq!(err.kind(), ErrorKind::VersionNotFound, "{err}");

    // Changes since a version hold exactly the later appends.
    let changes = t.changes_since(v1).await.expect("changes since v1");
    assert_eq!(changes.from_version, v1);
    assert_eq!(changes.to_version, v2);
    let changed: Vec<RecordBatch> = changes.batches.try_collect().await.expect("changes stream");
    assert_eq!(from_batches(&changed), second);
    let none: Vec<RecordBatch> = t
        .changes_since(latest)
        .await
        .expect("changes since latest")
        .batches
        .try_collect()
        .await
        .unwrap();
    assert_eq!(none.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    let err = t
        .changes_since(latest + 10)
        .await
        .expect_err("changes since a future version fail");
    assert_eq!(err.kind(), ErrorKind::VersionNotFound, "{err}");

    // Statistics are conservative and add up.
    let stats = t.statistics(None).await.expect("statistics");
    assert_eq!(stats.version, latest);
    assert_eq!(stats.num_rows(), all.len() as u64, "file row counts add up");
    if let Some(id) = stats.column("id")
        && let (Some(min), Some(max)) = (id.min, id.max)
    {
        assert!(
            min.partial_cmp_value(&Scalar::Int64(1))
                .is_some_and(|o| o.is_le()),
            "the id minimum bounds the data"
        );
        assert!(
            max.partial_cmp_value(&Scalar::Int64(7))
                .is_some_and(|o| o.is_ge()),
            "the id maximum bounds the data"
        );
    }
    for r in &all {
        // Some file's statistics must admit every stored row.
        let p = col("id").eq(r.id);
        assert!(
            stats.files.iter().any(|f| p.can_match(f)),
            "statistics rule out every file for {p}, but the row exists"
        );
    }

    // Schema mismatches fail before writing, and name the columns.
    let before = t.version().await.unwrap();
    let bogus = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("bogus", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        bogus,
        vec![
            Arc::new(Int64Array::from(vec![99])) as ArrayRef,
            Arc::new(Int64Array::from(vec![1])),
        ],
    )
    .unwrap();
    let err = t
        .append(vec![batch], None)
        .await
        .expect_err("an unknown column fails");
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch, "{err}");
    assert!(
        err.to_string().contains("bogus"),
        "the error names the column: {err}"
    );
    let wrong_type = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("price", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        wrong_type,
        vec![
            Arc::new(Int64Array::from(vec![99])) as ArrayRef,
            Arc::new(StringArray::from(vec!["cheap"])),
        ],
    )
    .unwrap();
    let err = t
        .append(vec![batch], None)
        .await
        .expect_err("a wrong type fails");
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch, "{err}");
    assert!(
        err.to_string().contains("price"),
        "the error names the column: {err}"
    );
    assert_eq!(
        t.version().await.unwrap(),
        before,
        "failed appends make no version"
    );

    // Columns in another order, and a missing nullable column, are accepted.
    let reordered = Arc::new(Schema::new(vec![
        Field::new("category", DataType::Utf8, true),
        Field::new("id", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        reordered,
        vec![
            Arc::new(StringArray::from(vec![Some("books")])) as ArrayRef,
            Arc::new(Int64Array::from(vec![8])),
        ],
    )
    .unwrap();
    assert!(matches!(
        t.append(vec![batch], None).await.expect("reordered append"),
        AppendOutcome::Committed { rows: 1, .. }
    ));
    let got = scan_rows(&t, ScanRequest::new().with_predicate(col("id").eq(8))).await;
    assert_eq!(
        got,
        vec![Row {
            id: 8,
            category: Some("books".into()),
            price: None,
            ts: None
        }]
    );

    // An empty append still records the transaction.
    let v_empty = t
        .append(Vec::new(), Some(TxnId::new("suite-writer", 6)))
        .await
        .expect("empty append");
    assert!(matches!(v_empty, AppendOutcome::Committed { rows: 0, .. }));
    assert_eq!(t.last_sequence("suite-writer").await.unwrap(), Some(6));

    // Concurrent appends all land, once each.
    let before_rows = scan_rows(&t, ScanRequest::new()).await.len();
    let writers = (0..8).map(|w| {
        let batch = to_batch(
            &schema,
            &[row(1000 + w, Some("concurrent"), Some(w as f64))],
        );
        t.append(vec![batch], Some(TxnId::new(format!("writer-{w}"), 1)))
    });
    let outcomes = futures::future::join_all(writers).await;
    let mut versions: Vec<u64> = outcomes
        .into_iter()
        .map(|o| match o.expect("concurrent append") {
            AppendOutcome::Committed { version, .. } => version,
            other => panic!("each writer commits once, got {other:?}"),
        })
        .collect();
    versions.sort_unstable();
    versions.dedup();
    assert_eq!(
        versions.len(),
        8,
        "concurrent commits get distinct versions"
    );
    assert_eq!(
        scan_rows(&t, ScanRequest::new()).await.len(),
        before_rows + 8
    );

    // Several writers in one commit: all or nothing.
    let max = t.writers_per_commit();
    assert!(max >= 1, "a sink records at least one writer per commit");
    let pair = |a: u64, b: u64| vec![TxnId::new("pair-a", a), TxnId::new("pair-b", b)];
    let rows_before = scan_rows(&t, ScanRequest::new()).await.len();
    let two = to_batch(
        &schema,
        &[row(2000, Some("pair"), None), row(2001, Some("pair"), None)],
    );
    if max < 2 {
        let refused = t
            .append_writers(vec![two], pair(1, 1))
            .await
            .expect_err("more writers than the sink records are refused");
        assert_eq!(refused.kind(), crate::ErrorKind::Unsupported);
        assert_eq!(t.last_sequence("pair-a").await.unwrap(), None);
        return;
    }
    let v_pair = match t
        .append_writers(vec![two.clone()], pair(3, 7))
        .await
        .expect("a commit of two writers")
    {
        AppendOutcome::Committed { version, rows: 2 } => version,
        other => panic!("two new writers commit, got {other:?}"),
    };
    assert_eq!(t.last_sequence("pair-a").await.unwrap(), Some(3));
    assert_eq!(t.last_sequence("pair-b").await.unwrap(), Some(7));
    assert_eq!(
        t.append_writers(vec![two.clone()], pair(3, 6))
            .await
            .expect("a replayed commit of two writers is not an error"),
        AppendOutcome::Duplicate { last_sequence: 3 },
        "replaying both writers' sequences writes nothing"
    );
    let mixed = t
        .append_writers(vec![two.clone()], pair(3, 8))
        .await
        .expect_err("a commit that one writer holds already and the other does not");
    assert_eq!(mixed.kind(), crate::ErrorKind::Conflict);
    let twice = t
        .append_writers(
            vec![two],
            vec![TxnId::new("pair-c", 1), TxnId::new("pair-c", 2)],
        )
        .await
        .expect_err("a writer named twice in one commit");
    assert_eq!(twice.kind(), crate::ErrorKind::InvalidInput);
    assert_eq!(
        t.version().await.unwrap(),
        v_pair,
        "refused commits make no version"
    );
    assert_eq!(t.last_sequence("pair-b").await.unwrap(), Some(7));
    assert_eq!(t.last_sequence("pair-c").await.unwrap(), None);
    assert_eq!(
        scan_rows(&t, ScanRequest::new()).await.len(),
        rows_before + 2,
        "the rows of a two-writer commit read back once"
    );
}

/// Runs the suite for an [`EventLog`].
///
/// `make` creates a new, empty log with at least two open shards whose record size
/// limit (partition key plus payload) is `max_record_bytes`.
///
/// # Panics
///
/// When the implementation breaks a rule of the contract; the message names it.
pub async fn event_log<L, F, Fut>(max_record_bytes: usize, make: F)
where
    L: EventLog,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<L>>,
{
    let log = make().await.expect("creating a log succeeds");
    let shards = log.shards().await.expect("shards");
    let mut open: Vec<_> = shards.iter().filter(|s| !s.closed).cloned().collect();
    assert!(open.len() >= 2, "the suite needs at least two open shards");
    open.sort_by_key(|s| s.hash_range.0);
    assert_eq!(open[0].hash_range.0, 0, "open shards cover hash key 0");
    assert_eq!(
        open.last().unwrap().hash_range.1,
        u128::MAX,
        "open shards cover the top hash key"
    );
    for w in open.windows(2) {
        assert_eq!(
            w[0].hash_range.1 + 1,
            w[1].hash_range.0,
            "open shard ranges are contiguous"
        );
    }
    let shard_of = |key: u128| {
        open.iter()
            .find(|s| s.hash_range.0 <= key && key <= s.hash_range.1)
            .map(|s| s.id)
            .expect("some open shard owns every hash key")
    };

    // Routing and per-shard ordering.
    let mut put_order: HashMap<String, Vec<Bytes>> = HashMap::new();
    let mut last_seq: HashMap<ShardId, u64> = HashMap::new();
    for i in 0..20 {
        let batch: Vec<PutRecord> = (0..25)
            .map(|k| {
                PutRecord::new(
                    format!("user-{k}"),
                    Bytes::from(format!("event {i} of user-{k}")),
                )
            })
            .collect();
        for r in &batch {
            put_order
                .entry(r.partition_key.to_string())
                .or_default()
                .push(r.data.clone());
        }
        let keys: Vec<String> = batch.iter().map(|r| r.partition_key.to_string()).collect();
        let results = log.put_batch(batch).await.expect("put_batch");
        assert_eq!(results.len(), keys.len(), "one result per entry");
        for (key, res) in keys.iter().zip(results) {
            let res = res.expect("valid records are accepted");
            assert_eq!(
                res.shard,
                shard_of(hash_key(key)),
                "record for {key} routed by MD5 hash key"
            );
            if let Some(prev) = last_seq.insert(res.shard, res.sequence) {
                assert!(
                    res.sequence > prev,
                    "sequence numbers increase within {}",
                    res.shard
                );
            }
        }
    }
    let single = log
        .put(PutRecord::new("user-0", "last of user-0"))
        .await
        .expect("put");
    put_order
        .get_mut("user-0")
        .unwrap()
        .push(Bytes::from("last of user-0"));
    assert_eq!(single.shard, shard_of(hash_key("user-0")));

    // Reading every shard from the horizon returns every record once, in put order per key.
    let mut read_back: HashMap<String, Vec<Bytes>> = HashMap::new();
    for s in &shards {
        let mut pos = Position::TrimHorizon;
        let mut prev: Option<u64> = None;
        loop {
            let batch = log
                .read(s.id, pos, ReadLimit::records(7))
                .await
                .expect("read");
            assert!(batch.records.len() <= 7, "read honours max_records");
            assert!(
                matches!(
                    batch.next,
                    Position::AtSequence(_) | Position::AfterSequence(_)
                ),
                "next position is absolute"
            );
            for r in &batch.records {
                assert_eq!(r.shard, s.id);
                if let Some(p) = prev {
                    assert!(r.sequence > p, "reads return records in sequence order");
                }
                prev = Some(r.sequence);
                read_back
                    .entry(r.partition_key.to_string())
                    .or_default()
                    .push(r.data.clone());
            }
            pos = batch.next;
            if batch.records.is_empty() {
                assert_eq!(batch.millis_behind, 0, "a reader at the tip is 0 ms behind");
                break;
            }
        }
    }
    assert_eq!(
        read_back, put_order,
        "every record is read once, in put order per key"
    );

    // Explicit hash keys override the partition key.
    let low = log
        .put(PutRecord::new("any", "low").with_explicit_hash_key(0))
        .await
        .expect("explicit hash key 0");
    assert_eq!(low.shard, open[0].id);
    let high = log
        .put(PutRecord::new("any", "high").with_explicit_hash_key(u128::MAX))
        .await
        .expect("explicit hash key max");
    assert_eq!(high.shard, open.last().unwrap().id);

    // Positions.
    let s = high.shard;
    let at = log
        .read(
            s,
            Position::AtSequence(high.sequence),
            ReadLimit::records(10),
        )
        .await
        .expect("AT_SEQUENCE_NUMBER");
    assert_eq!(
        at.records.first().map(|r| r.data.clone()),
        Some(Bytes::from("high"))
    );
    let after = log
        .read(
            s,
            Position::AfterSequence(high.sequence),
            ReadLimit::records(10),
        )
        .await
        .expect("AFTER_SEQUENCE_NUMBER");
    assert!(after.records.is_empty(), "nothing after the newest record");
    let latest = log
        .read(s, Position::Latest, ReadLimit::records(10))
        .await
        .expect("LATEST");
    assert!(
        latest.records.is_empty(),
        "LATEST starts after the newest record"
    );
    let fresh = log
        .put(PutRecord::new("any", "fresh").with_explicit_hash_key(u128::MAX))
        .await
        .unwrap();
    let next = log
        .read(s, latest.next, ReadLimit::records(10))
        .await
        .expect("read from LATEST's next");
    assert_eq!(
        next.records.len(),
        1,
        "a reader at LATEST sees the new record"
    );
    assert_eq!(next.records[0].sequence, fresh.sequence);
    let from_epoch = log
        .read(s, Position::AtTimestamp(0), ReadLimit::records(1))
        .await
        .expect("AT_TIMESTAMP");
    let horizon = log
        .read(s, Position::TrimHorizon, ReadLimit::records(1))
        .await
        .expect("TRIM_HORIZON");
    assert_eq!(
        from_epoch.records, horizon.records,
        "AT_TIMESTAMP(0) is the horizon"
    );
    let future = log
        .read(s, Position::AtTimestamp(i64::MAX), ReadLimit::records(10))
        .await
        .expect("AT_TIMESTAMP in the future");
    assert!(future.records.is_empty());
    let one = log
        .read(
            s,
            Position::TrimHorizon,
            ReadLimit {
                max_records: 100,
                max_bytes: 1,
            },
        )
        .await
        .expect("byte-limited read");
    assert_eq!(
        one.records.len(),
        1,
        "a byte limit below one record still returns one record"
    );

    // Errors.
    let err = log
        .read(
            ShardId(u32::MAX),
            Position::TrimHorizon,
            ReadLimit::default(),
        )
        .await
        .expect_err("an unknown shard fails");
    assert_eq!(err.kind(), ErrorKind::ShardNotFound, "{err}");
    let err = log
        .read(
            s,
            Position::AtSequence(fresh.sequence + 1_000_000),
            ReadLimit::default(),
        )
        .await
        .expect_err("a sequence beyond the tip fails");
    assert_eq!(err.kind(), ErrorKind::InvalidPosition, "{err}");
    let err = log
        .put(PutRecord::new("", "x"))
        .await
        .expect_err("an empty key fails");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let oversized = PutRecord::new("big", vec![0u8; max_record_bytes + 1]);
    let err = log
        .put(oversized.clone())
        .await
        .expect_err("an oversized record fails");
    assert_eq!(err.kind(), ErrorKind::RecordTooLarge, "{err}");
    let mixed = log
        .put_batch(vec![
            PutRecord::new("a", "ok-1"),
            PutRecord::new("", "no key"),
            oversized,
            PutRecord::new("b", "ok-2"),
        ])
        .await
        .expect("a batch with bad entries is not a failed call");
    assert_eq!(mixed.len(), 4);
    assert!(
        mixed[0].is_ok() && mixed[3].is_ok(),
        "good entries succeed beside bad ones"
    );
    assert_eq!(
        mixed[1].as_ref().unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        mixed[2].as_ref().unwrap_err().kind(),
        ErrorKind::RecordTooLarge
    );
    let ok = mixed[3].as_ref().unwrap();
    let back = log
        .read(
            ok.shard,
            Position::AtSequence(ok.sequence),
            ReadLimit::records(1),
        )
        .await
        .unwrap();
    assert_eq!(
        back.records[0].data,
        Bytes::from("ok-2"),
        "good entries of a mixed batch are stored"
    );

    // Checkpoints per group and shard; the latest call wins.
    let (a, b) = (open[0].id, open[1].id);
    assert_eq!(log.checkpoint("g1", a).await.unwrap(), None);
    log.commit_checkpoint("g1", a, 3).await.unwrap();
    log.commit_checkpoint("g1", b, 9).await.unwrap();
    log.commit_checkpoint("g2", a, 1).await.unwrap();
    assert_eq!(log.checkpoint("g1", a).await.unwrap(), Some(3));
    assert_eq!(log.checkpoint("g1", b).await.unwrap(), Some(9));
    assert_eq!(log.checkpoint("g2", a).await.unwrap(), Some(1));
    log.commit_checkpoint("g1", a, 5).await.unwrap();
    assert_eq!(log.checkpoint("g1", a).await.unwrap(), Some(5));
}
