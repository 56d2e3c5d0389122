use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use futures::TryStreamExt;
use lakehouse_core::{
    AppendOutcome, Error, ErrorKind, EventLog, ManualClock, MemoryLog, MemoryTable, PutRecord,
    Record, Result, ScanRequest, TableSink, TableSource, TxnId, async_trait,
};
use lakehouse_stream::{Decoder, FlushPolicy, Stream, TableDelivery};

use crate::csv::Csv;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user", DataType::Utf8, false),
        Field::new("amount", DataType::Int64, false),
    ]))
}

async fn amounts<T: TableSource>(t: &T) -> Vec<i64> {
    let batches: Vec<RecordBatch> = t
        .scan(ScanRequest::new())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut out: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    out.sort_unstable();
    out
}

fn put(stream: &Stream, from: i64, to: i64) {
    for i in from..to {
        stream
            .put_record(PutRecord::new(
                format!("u{}", i % 7),
                format!("u{},{i}", i % 7),
            ))
            .unwrap();
    }
}

#[tokio::test]
async fn restarts_neither_lose_nor_duplicate_rows() {
    let stream = Stream::builder("orders").shards(3).build().unwrap();
    let table = MemoryTable::new("orders", schema());
    let policy = FlushPolicy {
        max_records: 10,
        ..FlushPolicy::default()
    };
    put(&stream, 0, 100);
    let first = TableDelivery::new(
        "orders-sink",
        stream.clone(),
        table.clone(),
        Arc::new(Csv(schema())),
    )
    .with_policy(policy);
    let r = first.poll(true).await.unwrap();
    assert_eq!((r.records_read, r.rows_committed), (100, 100));
    // A restarted delivery (fresh memory) finds its place in the table.
    put(&stream, 100, 130);
    let second = TableDelivery::new(
        "orders-sink",
        stream.clone(),
        table.clone(),
        Arc::new(Csv(schema())),
    )
    .with_policy(policy);
    let r = second.poll(true).await.unwrap();
    assert_eq!(
        (r.records_read, r.rows_committed, r.duplicates),
        (30, 30, 0)
    );
    assert_eq!(amounts(&table).await, (0..130).collect::<Vec<_>>());
    // The log checkpoints follow the commits.
    for shard in stream.shards() {
        let last = table
            .last_sequence(&format!("orders-sink/{}", shard.id))
            .await
            .unwrap();
        assert_eq!(stream.checkpoint("orders-sink", shard.id).unwrap(), last);
    }
}

/// A table that applies a commit and then fails, as a process killed between the
/// commit and its acknowledgement would.
#[derive(Debug)]
struct CrashAfterCommit {
    table: MemoryTable,
    crash: AtomicBool,
}

#[async_trait]
impl TableSink for CrashAfterCommit {
    fn sink_schema(&self) -> SchemaRef {
        self.table.sink_schema()
    }

    async fn append(&self, batches: Vec<RecordBatch>, txn: Option<TxnId>) -> Result<AppendOutcome> {
        let outcome = self.table.append(batches, txn).await?;
        if self.crash.swap(false, Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Io, "connection lost after commit"));
        }
        Ok(outcome)
    }

    async fn last_sequence(&self, app_id: &str) -> Result<Option<u64>> {
        self.table.last_sequence(app_id).await
    }
}

#[tokio::test]
async fn a_crash_after_commit_is_not_replayed() {
    let stream = Stream::builder("orders").shards(1).build().unwrap();
    let table = MemoryTable::new("orders", schema());
    let flaky = Arc::new(CrashAfterCommit {
        table: table.clone(),
        crash: AtomicBool::new(true),
    });
    put(&stream, 0, 50);
    let delivery = TableDelivery::new("s", stream.clone(), flaky.clone(), Arc::new(Csv(schema())))
        .with_policy(FlushPolicy {
            max_records: 20,
            ..FlushPolicy::default()
        });
    let err = delivery.poll(true).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    // The first 20 rows are in the table although the delivery saw an error.
    assert_eq!(amounts(&table).await.len(), 20);
    let r = delivery.poll(true).await.unwrap();
    assert_eq!(r.rows_committed, 30);
    assert_eq!(
        amounts(&table).await,
        (0..50).collect::<Vec<_>>(),
        "no loss, no duplicate"
    );
}

/// A table that records several writers per commit and fails after the commit of
/// a chosen append (counted from 1), as a process killed before the acknowledgement.
#[derive(Debug)]
struct CrashAfterCommitOf {
    table: MemoryTable,
    crash_at: u64,
    appends: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl TableSink for CrashAfterCommitOf {
    fn sink_schema(&self) -> SchemaRef {
        self.table.sink_schema()
    }

    async fn append(&self, batches: Vec<RecordBatch>, txn: Option<TxnId>) -> Result<AppendOutcome> {
        self.append_writers(batches, txn.into_iter().collect())
            .await
    }

    async fn last_sequence(&self, app_id: &str) -> Result<Option<u64>> {
        self.table.last_sequence(app_id).await
    }

    fn writers_per_commit(&self) -> usize {
        self.table.writers_per_commit()
    }

    async fn append_writers(
        &self,
        batches: Vec<RecordBatch>,
        txns: Vec<TxnId>,
    ) -> Result<AppendOutcome> {
        let outcome = self.table.append_writers(batches, txns).await?;
        if self.appends.fetch_add(1, Ordering::SeqCst) + 1 == self.crash_at {
            return Err(Error::new(ErrorKind::Io, "connection lost after commit"));
        }
        Ok(outcome)
    }
}

/// A table that records several writers per commit gets one commit per poll for all
/// the shards due, each shard's sequence recorded with it.
#[tokio::test]
async fn shards_due_together_share_one_commit() {
    let stream = Stream::builder("orders").shards(4).build().unwrap();
    let table = MemoryTable::new("orders", schema());
    assert!(table.writers_per_commit() > 1);
    put(&stream, 0, 200);
    let delivery = TableDelivery::new(
        "orders-sink",
        stream.clone(),
        table.clone(),
        Arc::new(Csv(schema())),
    );
    let r = delivery.poll(true).await.unwrap();
    assert_eq!((r.records_read, r.rows_committed, r.commits), (200, 200, 1));
    assert_eq!(table.version().await.unwrap(), 1);
    for shard in stream.shards() {
        let app = format!("orders-sink/{}", shard.id);
        let last = table.last_sequence(&app).await.unwrap();
        assert!(
            last.is_some(),
            "shard {} recorded with the commit",
            shard.id
        );
        assert_eq!(stream.checkpoint("orders-sink", shard.id).unwrap(), last);
    }
    // A restarted delivery resumes every shard from the table.
    put(&stream, 200, 260);
    let again = TableDelivery::new(
        "orders-sink",
        stream.clone(),
        table.clone(),
        Arc::new(Csv(schema())),
    );
    let r = again.poll(true).await.unwrap();
    assert_eq!(
        (r.records_read, r.rows_committed, r.duplicates),
        (60, 60, 0)
    );
    assert_eq!(amounts(&table).await, (0..260).collect::<Vec<_>>());
}

/// Buffers that are not due yet go into the commit of the shard that is due, and
/// full buffers commit again within the same poll.
#[tokio::test]
async fn a_due_shard_takes_the_others_along() {
    let clock = ManualClock::at_millis(0);
    let stream = Stream::builder("orders").shards(2).build().unwrap();
    let table = MemoryTable::new("orders", schema());
    let policy = FlushPolicy {
        max_records: 40,
        max_bytes: 1 << 20,
        max_age: std::time::Duration::from_secs(5),
    };
    let delivery = TableDelivery::new("s", stream.clone(), table.clone(), Arc::new(Csv(schema())))
        .with_policy(policy)
        .with_clock(Arc::new(clock.clone()));
    put(&stream, 0, 10);
    let r = delivery.poll(false).await.unwrap();
    assert_eq!((r.records_read, r.commits), (10, 0), "nothing due yet");
    clock.advance_millis(5_000);
    put(&stream, 10, 14);
    let r = delivery.poll(false).await.unwrap();
    assert_eq!(
        (r.rows_committed, r.commits),
        (14, 1),
        "one commit for both shards"
    );
    // 200 records: both shards' buffers fill by count again and again in one poll.
    put(&stream, 14, 214);
    let r = delivery.poll(false).await.unwrap();
    assert!(r.commits >= 2, "{r:?}");
    let r2 = delivery.poll(true).await.unwrap();
    assert_eq!(r.rows_committed + r2.rows_committed, 200);
    assert_eq!(amounts(&table).await, (0..214).collect::<Vec<_>>());
}

/// A crash after any commit of several shards at once loses and duplicates nothing:
/// the delivery resumes each shard from the sequence the table recorded for it.
#[tokio::test]
async fn a_crash_after_a_shared_commit_is_not_replayed() {
    for crash_at in 1..=3 {
        let stream = Stream::builder("orders").shards(3).build().unwrap();
        let table = MemoryTable::new("orders", schema());
        let flaky = Arc::new(CrashAfterCommitOf {
            table: table.clone(),
            crash_at,
            appends: std::sync::atomic::AtomicU64::new(0),
        });
        let delivery =
            TableDelivery::new("s", stream.clone(), flaky.clone(), Arc::new(Csv(schema())))
                .with_policy(FlushPolicy {
                    max_records: 10,
                    ..FlushPolicy::default()
                });
        let mut results = Vec::new();
        for round in 0..4 {
            put(&stream, round * 40, round * 40 + 40);
            results.push(delivery.poll(true).await.map(|r| r.rows_committed));
        }
        while delivery.poll(true).await.unwrap().records_read > 0 {}
        assert!(
            results
                .iter()
                .any(|r| r.as_ref().is_err_and(|e| e.kind() == ErrorKind::Io)),
            "crash {crash_at}: the crash was reported: {results:?}"
        );
        assert_eq!(
            amounts(&table).await,
            (0..160).collect::<Vec<_>>(),
            "crash {crash_at}: no loss, no duplicate"
        );
    }
}

#[tokio::test]
async fn malformed_records_go_to_the_dead_letter_log() {
    let stream = Stream::builder("orders").shards(2).build().unwrap();
    let table = MemoryTable::new("orders", schema());
    let dlq = Arc::new(MemoryLog::new(1));
    put(&stream, 0, 10);
    stream.put_record(PutRecord::new("u1", "garbage")).unwrap();
    put(&stream, 10, 20);
    // Without a dead-letter log, the shard stops at the malformed record.
    let strict = TableDelivery::new(
        "strict",
        stream.clone(),
        MemoryTable::new("t", schema()),
        Arc::new(Csv(schema())),
    );
    let err = strict.poll(true).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let delivery = TableDelivery::new("s", stream.clone(), table.clone(), Arc::new(Csv(schema())))
        .with_dead_letter(dlq.clone());
    let r = delivery.poll(true).await.unwrap();
    assert_eq!((r.rows_committed, r.dead_lettered), (20, 1));
    assert_eq!(amounts(&table).await, (0..20).collect::<Vec<_>>());
    let dead = dlq
        .read(
            lakehouse_core::ShardId(0),
            lakehouse_core::Position::TrimHorizon,
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(dead.records.len(), 1);
    let text = String::from_utf8(dead.records[0].data.to_vec()).unwrap();
    assert!(
        text.contains("malformed record") && text.ends_with("garbage"),
        "{text}"
    );
}

#[tokio::test]
async fn buffers_flush_by_count_and_by_age() {
    let clock = ManualClock::at_millis(0);
    let stream = Stream::builder("orders").shards(1).build().unwrap();
    let table = MemoryTable::new("orders", schema());
    let delivery = TableDelivery::new("s", stream.clone(), table.clone(), Arc::new(Csv(schema())))
        .with_policy(FlushPolicy {
            max_records: 5,
            max_bytes: 1 << 20,
            max_age: std::time::Duration::from_secs(2),
        })
        .with_clock(Arc::new(clock.clone()));
    put(&stream, 0, 12);
    let r = delivery.poll(false).await.unwrap();
    assert_eq!(
        (r.rows_committed, r.commits),
        (10, 2),
        "two full batches; 2 records wait"
    );
    assert_eq!(table.version().await.unwrap(), 2);
    let r = delivery.poll(false).await.unwrap();
    assert_eq!(r.rows_committed, 0, "not yet due");
    clock.advance_millis(2_000);
    let r = delivery.poll(false).await.unwrap();
    assert_eq!(r.rows_committed, 2, "due by age");
    assert_eq!(amounts(&table).await.len(), 12);
    let nulls: usize = table
        .scan(ScanRequest::new())
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(|b| b.column(0).null_count())
        .sum();
    assert_eq!(nulls, 0);
}

#[tokio::test]
async fn resharded_streams_deliver_parents_first() {
    let stream = Stream::builder("orders").shards(1).build().unwrap();
    let table = MemoryTable::new("orders", schema());
    put(&stream, 0, 30);
    let (lo, hi) = stream
        .split_shard(lakehouse_core::ShardId(0), 1u128 << 127)
        .unwrap();
    put(&stream, 30, 60);
    stream.merge_shards(lo, hi).unwrap();
    put(&stream, 60, 90);
    let delivery = TableDelivery::new("s", stream.clone(), table.clone(), Arc::new(Csv(schema())));
    // Each poll finishes one generation of shards.
    let mut total = 0;
    for _ in 0..4 {
        total += delivery.poll(true).await.unwrap().rows_committed;
    }
    assert_eq!(total, 90);
    assert_eq!(amounts(&table).await, (0..90).collect::<Vec<_>>());
}

/// A durable stream that keeps no record in memory once written: the delivery reads
/// every record back from the segment files, exactly once.
#[tokio::test]
async fn delivers_records_read_back_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let stream = Stream::builder("orders")
        .shards(3)
        .durable(dir.path())
        .memory_window_bytes(0)
        .build()
        .unwrap();
    let table = MemoryTable::new("orders", schema());
    put(&stream, 0, 100);
    assert!(stream.memory_bytes().iter().sum::<usize>() < 24 * 3 * 4);
    let delivery = TableDelivery::new(
        "orders-sink",
        stream.clone(),
        table.clone(),
        Arc::new(Csv(schema())),
    )
    .with_policy(FlushPolicy {
        max_records: 10,
        ..FlushPolicy::default()
    });
    let r = delivery.poll(true).await.unwrap();
    assert_eq!((r.records_read, r.rows_committed), (100, 100));
    assert_eq!(amounts(&table).await, (0..100).collect::<Vec<_>>());
}

/// A `max_age` of `Duration::MAX` never makes a buffer due by age.
#[tokio::test]
async fn a_max_age_of_duration_max_never_flushes_by_age() {
    let clock = ManualClock::at_millis(0);
    let stream = Stream::builder("orders").shards(1).build().unwrap();
    let table = MemoryTable::new("orders", schema());
    let delivery = TableDelivery::new("s", stream.clone(), table.clone(), Arc::new(Csv(schema())))
        .with_policy(FlushPolicy {
            max_records: 100,
            max_bytes: 1 << 20,
            max_age: std::time::Duration::MAX,
        })
        .with_clock(Arc::new(clock.clone()));
    put(&stream, 0, 3);
    clock.advance_millis(1_000_000);
    let r = delivery.poll(false).await.unwrap();
    assert_eq!((r.records_read, r.rows_committed), (3, 0));
    let r = delivery.poll(true).await.unwrap();
    assert_eq!(r.rows_committed, 3);
}

/// A table whose appends yield to the executor before they commit (the first once,
/// later ones three times, so the first commits first), and whose first append lets
/// more records arrive in the stream meanwhile.
#[derive(Debug)]
struct SlowTable {
    table: MemoryTable,
    stream: Stream,
    first: AtomicBool,
}

#[async_trait]
impl TableSink for SlowTable {
    fn sink_schema(&self) -> SchemaRef {
        self.table.sink_schema()
    }

    async fn append(&self, batches: Vec<RecordBatch>, txn: Option<TxnId>) -> Result<AppendOutcome> {
        let yields = if self.first.swap(false, Ordering::SeqCst) {
            put(&self.stream, 7, 10);
            1
        } else {
            3
        };
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
        self.table.append(batches, txn).await
    }

    async fn last_sequence(&self, app_id: &str) -> Result<Option<u64>> {
        self.table.last_sequence(app_id).await
    }
}

#[tokio::test]
async fn concurrent_polls_of_one_delivery_commit_each_record_once() {
    let stream = Stream::builder("orders").shards(1).build().unwrap();
    let table = MemoryTable::new("orders", schema());
    let slow = Arc::new(SlowTable {
        table: table.clone(),
        stream: stream.clone(),
        first: AtomicBool::new(true),
    });
    put(&stream, 0, 7);
    let delivery = TableDelivery::new("s", stream.clone(), slow, Arc::new(Csv(schema())))
        .with_policy(FlushPolicy {
            max_records: 10,
            ..FlushPolicy::default()
        });
    let (a, b) = tokio::join!(delivery.poll(true), delivery.poll(true));
    let (a, b) = (a.unwrap(), b.unwrap());
    let r = delivery.poll(true).await.unwrap();
    assert_eq!(
        a.rows_committed + b.rows_committed + r.rows_committed,
        10,
        "{a:?} {b:?} {r:?}"
    );
    assert_eq!(
        amounts(&table).await,
        (0..10).collect::<Vec<_>>(),
        "every record once"
    );
}

/// Decodes as `Csv` and notes the threads it ran on.
struct Noting(Csv, std::sync::Mutex<Vec<std::thread::ThreadId>>);

impl Decoder for Noting {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn decode(&self, records: &[Record]) -> Result<RecordBatch> {
        self.1.lock().unwrap().push(std::thread::current().id());
        self.0.decode(records)
    }
}

/// Decoding is CPU work: it does not run on the executor's worker (here the test's
/// own thread, on a single-threaded runtime), malformed records included.
#[tokio::test]
async fn decoding_runs_off_the_executor() {
    let stream = Stream::builder("orders").shards(1).build().unwrap();
    let table = MemoryTable::new("orders", schema());
    put(&stream, 0, 10);
    stream.put_record(PutRecord::new("u1", "garbage")).unwrap();
    let decoder = Arc::new(Noting(Csv(schema()), Default::default()));
    let delivery = TableDelivery::new("s", stream.clone(), table.clone(), decoder.clone())
        .with_dead_letter(Arc::new(MemoryLog::new(1)));
    let r = delivery.poll(true).await.unwrap();
    assert_eq!((r.rows_committed, r.dead_lettered), (10, 1));
    let threads = decoder.1.lock().unwrap().clone();
    assert!(threads.len() >= 3, "whole batch, one by one, the good ones");
    let me = std::thread::current().id();
    assert!(threads.iter().all(|t| *t != me), "{threads:?}");
}
