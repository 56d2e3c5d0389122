//! `NatsLog` against a real `nats-server -js`. The tests run only when
//! `LAKEHOUSE_NATS_URL` is set (CI starts a server on loopback); each test uses its
//! own log and deletes it at the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use bytes::Bytes;
use futures::TryStreamExt;
use lakehouse_core::{
    ErrorKind, EventLog, MemoryTable, Position, PutRecord, ReadLimit, Record, Result, ScanRequest,
    ShardId, TableSource, conformance,
};
use lakehouse_stream::{FlushPolicy, NatsLog, NatsLogBuilder, TableDelivery};

#[path = "csv.rs"]
mod csv;
use csv::Csv;

fn server() -> Option<String> {
    let url = std::env::var("LAKEHOUSE_NATS_URL").ok();
    if url.is_none() {
        eprintln!("LAKEHOUSE_NATS_URL is not set: skipping a test that needs a NATS server");
    }
    url
}

/// A log name no other test run uses.
fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        lakehouse_core::Clock::now_micros(&lakehouse_core::SystemClock) % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn builder(url: &str, name: &str) -> NatsLogBuilder {
    NatsLog::builder(url, name).memory_storage(true)
}

/// Reads `shard` from `from` to its current end, 1,000 records a read.
async fn drain(log: &NatsLog, shard: ShardId, from: Position) -> (Vec<Record>, bool) {
    let mut out = Vec::new();
    let mut pos = from;
    loop {
        let b = log
            .read(shard, pos, ReadLimit::records(1000))
            .await
            .unwrap();
        let empty = b.records.is_empty();
        out.extend(b.records);
        pos = b.next;
        if empty {
            return (out, b.end_of_shard);
        }
    }
}

#[tokio::test]
async fn conforms_to_the_event_log_contract() {
    let Some(url) = server() else { return };
    let names: Arc<parking_lot::Mutex<Vec<String>>> = Arc::default();
    let make = |bytes: usize| {
        let url = url.clone();
        let names = names.clone();
        move || {
            let url = url.clone();
            let names = names.clone();
            async move {
                let name = unique("suite");
                names.lock().push(name.clone());
                builder(&url, &name)
                    .shards(4)
                    .max_record_bytes(bytes)
                    .open()
                    .await
            }
        }
    };
    conformance::event_log(1_000_000, make(1_000_000)).await;
    conformance::event_log(64, make(64)).await;
    let names = names.lock().clone();
    for n in names {
        builder(&url, &n)
            .open()
            .await
            .unwrap()
            .delete()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn batches_many_records_into_few_messages() {
    let Some(url) = server() else { return };
    let log = builder(&url, &unique("batch"))
        .shards(2)
        .open()
        .await
        .unwrap();
    let records: Vec<PutRecord> = (0..5000)
        .map(|i| PutRecord::new(format!("k{}", i % 50), vec![b'x'; 100]))
        .collect();
    let results = log.put_batch(records).await.unwrap();
    let mut per_shard: HashMap<ShardId, Vec<u64>> = HashMap::new();
    for r in &results {
        let r = r.as_ref().unwrap();
        per_shard.entry(r.shard).or_default().push(r.sequence);
    }
    for (shard, seqs) in &per_shard {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "increasing in {shard}"
        );
        let messages: std::collections::BTreeSet<u64> = seqs.iter().map(|s| s >> 16).collect();
        // 100-byte records, about 115 bytes each: some 9,000 to a 1 MiB message.
        assert!(
            messages.len() <= 2,
            "{} records of {shard} took {} messages",
            seqs.len(),
            messages.len()
        );
        let (back, _) = drain(&log, *shard, Position::TrimHorizon).await;
        assert_eq!(back.iter().map(|r| r.sequence).collect::<Vec<_>>(), *seqs);
        // A position inside a message reads from that record on.
        let mid = seqs[seqs.len() / 2];
        let b = log
            .read(*shard, Position::AfterSequence(mid), ReadLimit::records(3))
            .await
            .unwrap();
        assert_eq!(b.records[0].sequence, seqs[seqs.len() / 2 + 1]);
        assert_eq!(b.records.len(), 3);
        assert!(b.millis_behind < 60_000);
        assert_eq!(b.next, Position::AtSequence(seqs[seqs.len() / 2 + 4]));
    }
    log.delete().await.unwrap();
}

#[tokio::test]
async fn a_batch_retried_with_its_id_is_stored_once() {
    let Some(url) = server() else { return };
    let log = builder(&url, &unique("idem"))
        .shards(2)
        .open()
        .await
        .unwrap();
    let batch: Vec<PutRecord> = (0..100)
        .map(|i| PutRecord::new(format!("u{i}"), format!("e{i}")))
        .collect();
    let first: Vec<_> = log
        .put_batch_with_id("writer-1/7", batch.clone())
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    // The same batch again, as after a lost answer or a restart: same sequence numbers.
    let again = builder(&url, log.name()).open().await.unwrap();
    let second: Vec<_> = again
        .put_batch_with_id("writer-1/7", batch.clone())
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(first, second);
    let third = log.put_batch_with_id("writer-1/8", batch).await;
    assert!(third.iter().all(|r| r.is_ok()));
    let mut total = 0;
    for s in log.shards().await.unwrap() {
        total += drain(&log, s.id, Position::TrimHorizon).await.0.len();
    }
    assert_eq!(
        total, 200,
        "the retried batch is stored once, the new one once"
    );
    log.delete().await.unwrap();
}

#[tokio::test]
async fn a_full_shard_rejects_puts_with_full() {
    let Some(url) = server() else { return };
    let log = builder(&url, &unique("full"))
        .shards(1)
        .max_shard_bytes(Some(4096))
        .open()
        .await
        .unwrap();
    let mut stored = 0;
    let err = loop {
        match log.put(PutRecord::new("k", vec![7u8; 500])).await {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(
            stored < 100,
            "a 4 KiB shard took {stored} records of 500 bytes"
        );
    };
    assert_eq!(err.kind(), ErrorKind::Full, "{err}");
    assert_eq!(err.context().shard, Some(ShardId(0)));
    assert!(stored >= 4, "{stored} records fit");
    // Nothing of the rejected put was written.
    let (back, _) = drain(&log, ShardId(0), Position::TrimHorizon).await;
    assert_eq!(back.len(), stored);
    log.delete().await.unwrap();
}

#[tokio::test]
async fn records_past_the_retention_age_are_trimmed() {
    let Some(url) = server() else { return };
    let log = builder(&url, &unique("age"))
        .shards(1)
        .retention(Some(Duration::from_millis(1000)))
        .open()
        .await
        .unwrap();
    let old = log.put(PutRecord::new("k", "old")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let new = log.put(PutRecord::new("k", "new")).await.unwrap();
    let err = log
        .read(
            ShardId(0),
            Position::AtSequence(old.sequence),
            ReadLimit::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PositionTrimmed, "{err}");
    let b = log
        .read(ShardId(0), Position::TrimHorizon, ReadLimit::default())
        .await
        .unwrap();
    assert_eq!(b.records.len(), 1);
    assert_eq!(b.records[0].sequence, new.sequence);
    // AT_TIMESTAMP finds the record by server time.
    let t = b.records[0].timestamp_ms;
    let at = log
        .read(ShardId(0), Position::AtTimestamp(t), ReadLimit::default())
        .await
        .unwrap();
    assert_eq!(at.records, b.records);
    let after = log
        .read(
            ShardId(0),
            Position::AtTimestamp(t + 1),
            ReadLimit::default(),
        )
        .await
        .unwrap();
    assert!(after.records.is_empty());
    log.delete().await.unwrap();
}

#[tokio::test]
async fn splits_and_merges_seal_parents_and_keep_key_order() {
    let Some(url) = server() else { return };
    let name = unique("reshard");
    let log = builder(&url, &name).shards(2).open().await.unwrap();
    // A second client with its own connection and its own copy of the shard map.
    let other = builder(&url, &name).open().await.unwrap();
    let mut sent: HashMap<String, Vec<Bytes>> = HashMap::new();
    let mut round = 0;
    let mut put = async |log: &NatsLog| {
        let batch: Vec<PutRecord> = (0..40)
            .map(|k| PutRecord::new(format!("k{k}"), format!("{round}")))
            .collect();
        for r in &batch {
            sent.entry(r.partition_key.to_string())
                .or_default()
                .push(r.data.clone());
        }
        round += 1;
        for r in log.put_batch(batch).await.unwrap() {
            r.unwrap();
        }
    };
    put(&log).await;
    let (lo, hi) = log.split_shard(ShardId(0), 1u128 << 126).await.unwrap();
    assert_eq!((lo, hi), (ShardId(2), ShardId(3)));
    // The other client still routes by the old map, meets the sealed parent, reloads
    // the map and puts into the children.
    put(&other).await;
    let err = log.split_shard(ShardId(0), 1u128 << 125).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let merged = log.merge_shards(lo, hi).await.unwrap();
    assert_eq!(merged, ShardId(4));
    put(&other).await;
    put(&log).await;
    let shards = other.shards().await.unwrap();
    assert_eq!(shards.len(), 5);
    assert!(shards[0].closed && shards[2].closed && shards[3].closed);
    assert!(!shards[1].closed && !shards[4].closed);
    assert_eq!(shards[2].parents, vec![ShardId(0)]);
    assert_eq!(shards[4].parents, vec![lo, hi]);
    assert_eq!(shards[4].hash_range, shards[0].hash_range);
    // Parents end with end_of_shard; their streams take no more appends.
    let mut back: HashMap<String, Vec<Bytes>> = HashMap::new();
    for s in &shards {
        let (records, end) = drain(&log, s.id, Position::TrimHorizon).await;
        assert_eq!(end, s.closed, "end_of_shard of {}", s.id);
        for r in records {
            back.entry(r.partition_key.to_string())
                .or_default()
                .push(r.data);
        }
    }
    assert_eq!(
        back, sent,
        "parents before children keeps every key's order"
    );
    // A fresh client sees the lineage.
    let fresh = builder(&url, &name).open().await.unwrap();
    assert_eq!(fresh.shards().await.unwrap(), shards);
    log.delete().await.unwrap();
}

#[tokio::test]
async fn checkpoints_advance_by_compare_and_swap_and_survive_reopening() {
    let Some(url) = server() else { return };
    let name = unique("ckpt");
    let log = builder(&url, &name).shards(2).open().await.unwrap();
    let s = ShardId(1);
    assert_eq!(log.advance_checkpoint("g", s, 10).await.unwrap(), 10);
    assert_eq!(
        log.advance_checkpoint("g", s, 4).await.unwrap(),
        10,
        "never back"
    );
    // Concurrent advances: the highest wins.
    let clients: Vec<NatsLog> =
        futures::future::try_join_all((0..4).map(|_| builder(&url, &name).open()))
            .await
            .unwrap();
    let moves = clients
        .iter()
        .enumerate()
        .map(|(i, c)| c.advance_checkpoint("g", s, 100 + i as u64));
    futures::future::try_join_all(moves).await.unwrap();
    assert_eq!(log.checkpoint("g", s).await.unwrap(), Some(103));
    drop(clients);
    drop(log);
    let reopened = builder(&url, &name).open().await.unwrap();
    assert_eq!(reopened.checkpoint("g", s).await.unwrap(), Some(103));
    assert_eq!(reopened.checkpoint("g", ShardId(0)).await.unwrap(), None);
    let err = reopened.checkpoint("g", ShardId(9)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ShardNotFound);
    reopened.delete().await.unwrap();
}

#[tokio::test]
async fn a_dead_server_gives_a_typed_error() {
    // Port 1 on loopback: the connection is refused at once.
    let err = NatsLog::builder("nats://127.0.0.1:1", "x")
        .request_timeout(Duration::from_millis(500))
        .open()
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{err}"
    );
    let err = NatsLog::builder("nats://127.0.0.1:1", "bad.name")
        .open()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
}

#[tokio::test]
async fn table_delivery_is_exactly_once_across_restarts() {
    let Some(url) = server() else { return };
    let name = unique("sink");
    let log = builder(&url, &name).shards(3).open().await.unwrap();
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("user", DataType::Utf8, false),
        Field::new("amount", DataType::Int64, false),
    ]));
    let table = MemoryTable::new("orders", schema.clone());
    let put = async |from: i64, to: i64| {
        let batch = (from..to)
            .map(|i| PutRecord::new(format!("u{}", i % 7), format!("u{},{i}", i % 7)))
            .collect();
        for r in log.put_batch(batch).await.unwrap() {
            r.unwrap();
        }
    };
    let policy = FlushPolicy {
        max_records: 10,
        ..FlushPolicy::default()
    };
    put(0, 100).await;
    let first = TableDelivery::new(
        "s",
        log.clone(),
        table.clone(),
        Arc::new(Csv(schema.clone())),
    )
    .with_policy(policy);
    let r = first.poll(true).await.unwrap();
    assert_eq!((r.records_read, r.rows_committed), (100, 100));
    put(100, 130).await;
    // A restarted delivery on a new connection finds its place in the table.
    let reopened = builder(&url, &name).open().await.unwrap();
    let second =
        TableDelivery::new("s", reopened, table.clone(), Arc::new(Csv(schema))).with_policy(policy);
    let r = second.poll(true).await.unwrap();
    assert_eq!(
        (r.records_read, r.rows_committed, r.duplicates),
        (30, 30, 0)
    );
    let batches: Vec<RecordBatch> = table
        .scan(ScanRequest::new())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut amounts: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    amounts.sort_unstable();
    assert_eq!(amounts, (0..130).collect::<Vec<_>>());
    log.delete().await.unwrap();
}

#[tokio::test]
async fn group_members_share_shards_and_take_over_from_a_silent_one() {
    let Some(url) = server() else { return };
    let name = unique("group");
    let log = builder(&url, &name).shards(4).open().await.unwrap();
    // Two members in two "processes": each with its own connection and observations.
    let lease = Duration::from_millis(300);
    let ga = log.consumer_group("g", lease);
    let gb = builder(&url, &name)
        .open()
        .await
        .unwrap()
        .consumer_group("g", lease);
    let a = ga.join("a").await.unwrap();
    assert_eq!(a.shards().len(), 4);
    let b = gb.join("b").await.unwrap();
    a.heartbeat().await.unwrap();
    assert_eq!((a.shards().len(), b.shards().len()), (2, 2));
    let owners = ga.assignments().await.unwrap();
    assert_eq!(owners.len(), 4);
    for s in a.shards() {
        assert_eq!(owners[&s], "a");
    }
    for s in b.shards() {
        assert_eq!(owners[&s], "b");
    }
    let batch = (0..200)
        .map(|i| PutRecord::new(format!("u{i}"), format!("{i}")))
        .collect();
    for r in log.put_batch(batch).await.unwrap() {
        r.unwrap();
    }
    // b reads its shards and checkpoints half of each.
    let mut seen_by_b = 0;
    let mut unprocessed: usize = 0;
    for (shard, records) in b.poll(ReadLimit::records(1000)).await.unwrap() {
        let half = records.len() / 2;
        b.checkpoint(shard, records[half - 1].sequence)
            .await
            .unwrap();
        seen_by_b += records.len();
        unprocessed += records.len() - half;
    }
    assert!(seen_by_b > 0);
    // b stops renewing: a takes its shards over once the lease has passed.
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.heartbeat().await.unwrap();
    assert_eq!(a.shards().len(), 4);
    let err = b.checkpoint(b.shards()[0], 0).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let err = b.heartbeat().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    // a gets everything: its own shards from the start, b's after b's checkpoints.
    let mut total = 0;
    for (_, records) in a.poll(ReadLimit::records(1000)).await.unwrap() {
        total += records.len();
    }
    assert_eq!(total, 200 - seen_by_b + unprocessed);
    // A member that leaves hands its shards back.
    let c = gb.join("c").await.unwrap();
    a.heartbeat().await.unwrap();
    assert_eq!((a.shards().len(), c.shards().len()), (2, 2));
    c.leave().await.unwrap();
    a.heartbeat().await.unwrap();
    assert_eq!(a.shards().len(), 4);
    log.delete().await.unwrap();
}

/// The `nats-server` binary for tests that run their own server: `LAKEHOUSE_NATS_SERVER`,
/// else the peers venv's, else one on the `PATH`.
fn server_binary() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("LAKEHOUSE_NATS_SERVER") {
        return Some(p.into());
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../benches/peers/.venv/bin/nats-server");
    if venv.exists() {
        return Some(venv);
    }
    std::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "nats-server".into())
}

/// A `nats-server -js` of this test, on its own port and store directory.
struct OwnServer {
    binary: std::path::PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnServer {
    fn start(binary: std::path::PathBuf) -> OwnServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = OwnServer {
            binary,
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        s.restart();
        s
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let child = std::process::Command::new(&self.binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nats-server did not start on port {}", self.port);
    }

    /// SIGKILL: no shutdown, no flush.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn acknowledged_records_survive_a_killed_server() {
    let Some(_) = server() else { return };
    let Some(binary) = server_binary() else {
        eprintln!("no nats-server binary (LAKEHOUSE_NATS_SERVER): skipping the restart test");
        return;
    };
    let mut server = OwnServer::start(binary);
    let log = NatsLog::builder(server.url(), "restart")
        .shards(2)
        .request_timeout(Duration::from_millis(300))
        .publish_timeout(Duration::from_millis(300))
        .open()
        .await
        .unwrap();
    let batch = |from: usize, to: usize| -> Vec<PutRecord> {
        (from..to)
            .map(|i| PutRecord::new(format!("k{}", i % 5), format!("{i}")))
            .collect()
    };
    for r in log.put_batch(batch(0, 100)).await.unwrap() {
        r.unwrap();
    }
    server.kill();
    // While the server is away, puts and reads fail with typed errors.
    let down = log.put_batch_with_id("down", batch(100, 110)).await;
    for r in &down {
        let kind = r.as_ref().unwrap_err().kind();
        assert!(
            matches!(kind, ErrorKind::Unavailable | ErrorKind::Timeout),
            "{kind:?}"
        );
    }
    let err = log
        .read(ShardId(0), Position::TrimHorizon, ReadLimit::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{err}"
    );
    server.restart();
    // The client reconnects by itself; the same log handle works again.
    let mut acked = None;
    for _ in 0..50 {
        let results = log.put_batch(batch(110, 120)).await.unwrap();
        if results.iter().all(|r| r.is_ok()) {
            acked = Some(results);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(acked.is_some(), "puts work again after the restart");
    // The client may have sent the failed batch when it reconnected (its outcome was
    // unknown); retried with its id, it is stored once either way.
    for r in log.put_batch_with_id("down", batch(100, 110)).await {
        r.unwrap();
    }
    // Every acknowledged record is there once, in put order per key.
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    for s in log.shards().await.unwrap() {
        for r in drain(&log, s.id, Position::TrimHorizon).await.0 {
            let i: usize = std::str::from_utf8(&r.data).unwrap().parse().unwrap();
            per_key
                .entry(r.partition_key.to_string())
                .or_default()
                .push(i);
        }
    }
    let mut all: Vec<usize> = per_key.values().flatten().copied().collect();
    all.sort_unstable();
    let expected: Vec<usize> = (0..120).collect();
    assert_eq!(all, expected, "acknowledged records, once each");
    // Per key, the records keep the order their puts were acknowledged in: the first
    // hundred, then the batch put after the restart; the retried batch came after the
    // first hundred, and before or after the other batch (depending on whether the
    // client sent it on reconnecting).
    for (key, seen) in &per_key {
        for part in [
            seen.iter()
                .filter(|&&i| !(100..110).contains(&i))
                .collect::<Vec<_>>(),
            seen.iter().filter(|&&i| i < 110).collect(),
        ] {
            assert!(
                part.windows(2).all(|w| w[0] < w[1]),
                "order of {key}: {seen:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_single_writer_is_fenced_against_a_second_one() {
    let Some(url) = server() else { return };
    let name = unique("fence");
    let writer = builder(&url, &name)
        .shards(2)
        .single_writer(true)
        .open()
        .await
        .unwrap();
    let low = |data: &str| PutRecord::new("k", data.to_owned()).with_explicit_hash_key(0);
    let batch: Vec<PutRecord> = (0..4000)
        .map(|i| PutRecord::new(format!("u{i}"), vec![1u8; 700]))
        .collect();
    // Several messages per shard in one put, each expecting the one before.
    let results = writer.put_batch(batch).await.unwrap();
    let messages: std::collections::BTreeSet<(ShardId, u64)> = results
        .iter()
        .map(|r| {
            let r = r.as_ref().unwrap();
            (r.shard, r.sequence >> 16)
        })
        .collect();
    assert!(messages.len() >= 4, "{messages:?}");
    writer.put(low("a")).await.unwrap();
    // Another client appends to shard 0 behind the writer's back.
    let intruder = builder(&url, &name).open().await.unwrap();
    intruder.put(low("intruder")).await.unwrap();
    let err = writer.put(low("b")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(err.context().shard, Some(ShardId(0)));
    // Shard 1 was not touched: the writer's puts there go on.
    writer
        .put(PutRecord::new("k", "c").with_explicit_hash_key(u128::MAX))
        .await
        .unwrap();
    // The writer learns the shard's state again and can take over deliberately.
    writer.put(low("d")).await.unwrap();
    let (back, _) = drain(&writer, ShardId(0), Position::TrimHorizon).await;
    let tail: Vec<&[u8]> = back[back.len() - 3..].iter().map(|r| &r.data[..]).collect();
    assert_eq!(tail, [&b"a"[..], b"intruder", b"d"]);
    writer.delete().await.unwrap();
}

/// A JetStream cluster of this test on loopback: `n` `nats-server -js` processes, each
/// with its own client port, route port and store directory.
struct Cluster {
    nodes: Vec<Option<std::process::Child>>,
    ports: Vec<u16>,
    _dirs: Vec<tempfile::TempDir>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn start(binary: &std::path::Path, n: usize) -> Cluster {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route_list = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let nodes = (0..n)
            .map(|i| {
                let child = std::process::Command::new(binary)
                    .args(["-js", "-a", "127.0.0.1", "-p", &ports[i].to_string()])
                    .args(["-n", &format!("lh-node-{i}"), "--cluster_name", "lh"])
                    .args(["--cluster", &format!("nats://127.0.0.1:{}", routes[i])])
                    .args(["--routes", &route_list, "-sd"])
                    .arg(dirs[i].path())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                Some(child)
            })
            .collect();
        for &port in &ports {
            let up = (0..200).any(|_| {
                let ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
                if !ok {
                    std::thread::sleep(Duration::from_millis(25));
                }
                ok
            });
            assert!(up, "cluster node on port {port} did not start");
        }
        Cluster {
            nodes,
            ports,
            _dirs: dirs,
        }
    }

    fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL of node `i`.
    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// Puts `records` under the batch id `id` until every record is acknowledged, sending
/// the batch again with the same id after a failure (so it is stored once).
async fn put_until_acknowledged(log: &NatsLog, id: &str, records: Vec<PutRecord>) -> usize {
    for attempt in 0..200 {
        let results = log.put_batch_with_id(id, records.clone()).await;
        if results.iter().all(|r| r.is_ok()) {
            return attempt;
        }
        for r in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
                    "a put during a node failure fails with a transient error: {e}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("batch {id} was not acknowledged after 200 attempts");
}

#[tokio::test]
async fn a_three_node_cluster_keeps_every_acknowledged_record_when_a_node_dies() {
    // Runs where the NATS tests run, on a cluster of its own.
    let Some(_) = server() else { return };
    let Some(binary) = server_binary() else {
        eprintln!("no nats-server binary (LAKEHOUSE_NATS_SERVER): skipping the cluster test");
        return;
    };
    let mut cluster = Cluster::start(&binary, 3);
    // The cluster takes a moment to elect its JetStream meta leader: until then,
    // opening the log (creating R3 streams and buckets) fails.
    let mut opened = None;
    let mut last = None;
    for _ in 0..150 {
        match NatsLog::builder(cluster.urls(), "cluster")
            .shards(2)
            .replicas(3)
            .request_timeout(Duration::from_secs(2))
            .publish_timeout(Duration::from_secs(3))
            .open()
            .await
        {
            Ok(log) => {
                opened = Some(log);
                break;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = opened.unwrap_or_else(|| panic!("the cluster never served JetStream: {last:?}"));
    let batch = |b: usize| -> Vec<PutRecord> {
        (b * 20..(b + 1) * 20)
            .map(|i| PutRecord::new(format!("k{}", i % 7), format!("{i}")))
            .collect()
    };
    for b in 0..10 {
        put_until_acknowledged(&log, &format!("b{b}"), batch(b)).await;
    }
    assert_eq!(log.advance_checkpoint("g", ShardId(0), 5).await.unwrap(), 5);
    cluster.kill(0);
    // Writes go on through the two nodes left (a quorum of the R3 streams), after the
    // streams that lost their leader elect a new one.
    for b in 10..20 {
        put_until_acknowledged(&log, &format!("b{b}"), batch(b)).await;
    }
    // Every acknowledged record is there once, in put order per key. A replica may lag
    // the leader by a moment, and requests fail with `Unavailable` while a stream
    // elects a new leader, so reading repeats until all have arrived.
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    for _ in 0..100 {
        match read_all(&log).await {
            Ok(got) => {
                per_key = got;
                if per_key.values().map(Vec::len).sum::<usize>() >= 400 {
                    break;
                }
            }
            Err(e) => assert!(
                matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
                "{e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut all: Vec<usize> = per_key.values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..400).collect::<Vec<_>>(),
        "acknowledged records, once each"
    );
    for (key, seen) in &per_key {
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "order of {key}: {seen:?}"
        );
    }
    // The checkpoint bucket is replicated too: the checkpoint is kept and advances.
    let mut advanced = None;
    for _ in 0..100 {
        if let Ok(c) = log.advance_checkpoint("g", ShardId(0), 6).await {
            advanced = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(advanced, Some(6));
    assert_eq!(log.checkpoint("g", ShardId(0)).await.unwrap(), Some(6));
    // The cluster and its stores go with the test.
}

/// Every record of every shard of `log`, by key, in shard order.
async fn read_all(log: &NatsLog) -> Result<HashMap<String, Vec<usize>>> {
    let mut per_key: HashMap<String, Vec<usize>> = HashMap::new();
    for s in log.shards().await? {
        let mut pos = Position::TrimHorizon;
        loop {
            let b = log.read(s.id, pos, ReadLimit::records(1000)).await?;
            if b.records.is_empty() {
                break;
            }
            for r in &b.records {
                let i: usize = std::str::from_utf8(&r.data).unwrap().parse().unwrap();
                per_key
                    .entry(r.partition_key.to_string())
                    .or_default()
                    .push(i);
            }
            pos = b.next;
        }
    }
    Ok(per_key)
}

/// The names of the consumers on a shard's stream.
async fn consumers_of(url: &str, log: &NatsLog, shard: ShardId) -> Vec<String> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(log.stream_name(shard)).await.unwrap();
    let mut names: Vec<String> = stream.consumer_names().try_collect().await.unwrap();
    names.sort();
    names
}

#[tokio::test]
async fn a_group_reads_each_shard_through_one_durable_consumer() {
    let Some(url) = server() else { return };
    let name = unique("cursor");
    let log = builder(&url, &name).shards(2).open().await.unwrap();
    let lease = Duration::from_millis(300);
    let put = |from: usize, to: usize| {
        let log = log.clone();
        async move {
            let batch = (from..to)
                .map(|i| PutRecord::new(format!("u{i}"), format!("{i}")))
                .collect();
            for r in log.put_batch(batch).await.unwrap() {
                r.unwrap();
            }
        }
    };
    put(0, 300).await;
    let a = log.consumer_group("g", lease).join("a").await.unwrap();
    assert_eq!(a.shards().len(), 2);
    // Small polls: a cursor continues where the last poll stopped, also inside a
    // message of many records.
    let mut seen_by_a: HashMap<ShardId, Vec<u64>> = HashMap::new();
    loop {
        let polled = a.poll(ReadLimit::records(7)).await.unwrap();
        if polled.is_empty() {
            break;
        }
        for (shard, records) in polled {
            assert!(records.len() <= 7);
            seen_by_a
                .entry(shard)
                .or_default()
                .extend(records.iter().map(|r| r.sequence));
        }
    }
    assert_eq!(seen_by_a.values().map(Vec::len).sum::<usize>(), 300);
    for (shard, seqs) in &seen_by_a {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{shard:?}: {seqs:?}");
        // One durable consumer of the group on the shard's stream.
        let names = consumers_of(&url, &log, *shard).await;
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(
            names[0].starts_with(&format!("lh-g-{}-", shard.0)),
            "{names:?}"
        );
    }
    // a checkpoints the first ten records of each shard, then goes silent.
    for (shard, seqs) in &seen_by_a {
        a.checkpoint(*shard, seqs[9]).await.unwrap();
    }
    let before: HashMap<ShardId, Vec<String>> = {
        let mut m = HashMap::new();
        for s in seen_by_a.keys() {
            m.insert(*s, consumers_of(&url, &log, *s).await);
        }
        m
    };
    let other = builder(&url, &name).open().await.unwrap();
    let b = other.consumer_group("g", lease).join("b").await.unwrap();
    // b measures a's silence on its own clock, from when it first saw a.
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.heartbeat().await.unwrap();
    assert_eq!(b.shards().len(), 2, "b takes the silent member's shards");
    let mut seen_by_b = 0;
    for (_, records) in b.poll(ReadLimit::records(1000)).await.unwrap() {
        seen_by_b += records.len();
    }
    assert_eq!(seen_by_b, 300 - 20, "b starts after a's checkpoints");
    for (shard, old) in &before {
        let names = consumers_of(&url, &log, *shard).await;
        assert_eq!(names.len(), 1, "{names:?}");
        assert_ne!(&names, old, "the new lease has its own consumer");
    }
    // New records go to b alone: a, which has not noticed it lost its leases, gets
    // none of them (its consumers are gone).
    put(300, 400).await;
    match a.poll(ReadLimit::records(1000)).await {
        Ok(polled) => assert!(polled.is_empty(), "{polled:?}"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                ErrorKind::Conflict | ErrorKind::Unavailable | ErrorKind::Timeout
            ),
            "{e}"
        ),
    }
    let mut new_for_b = 0;
    for (_, records) in b.poll(ReadLimit::records(1000)).await.unwrap() {
        new_for_b += records.len();
    }
    assert_eq!(new_for_b, 100);
    // Leaving deletes the member's consumers.
    b.leave().await.unwrap();
    for shard in seen_by_a.keys() {
        assert!(consumers_of(&url, &log, *shard).await.is_empty());
    }
    log.delete().await.unwrap();
}
