//! A durable stream's memory window: records older than it are read back from the
//! segment files, exactly as they were put, and memory stays within the window.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lakehouse_core::{
    Clock, ErrorKind, ManualClock, PartitionKey, Position, PutRecord, ReadLimit, Record, ShardId,
    conformance,
};
use lakehouse_stream::{Durability, Stream, TrimmedRead};
use proptest::prelude::*;

#[tokio::test]
async fn a_durable_stream_with_a_tiny_window_conforms_to_the_event_log_contract() {
    let dirs = Arc::new(Mutex::new(Vec::new()));
    for max_record in [Stream::DEFAULT_MAX_RECORD_BYTES, 64] {
        let dirs = dirs.clone();
        conformance::event_log(max_record, move || {
            let dir = tempfile::tempdir().unwrap();
            let stream = Stream::builder("suite")
                .shards(4)
                .max_record_bytes(max_record)
                .durable(dir.path())
                .durability(Durability::PerBatch)
                .segment_bytes(2048)
                .memory_window_bytes(200)
                .build();
            dirs.lock().unwrap().push(dir);
            async move { stream }
        })
        .await;
    }
}

/// The bytes of a record's frame in a segment file.
fn frame_bytes(key: &str, data: &[u8]) -> usize {
    32 + key.len() + data.len()
}

fn seg_bytes_on_disk(dir: &Path, shard: ShardId) -> usize {
    std::fs::read_dir(dir.join(format!("shard-{:04}", shard.0)))
        .map(|d| {
            d.map(|e| e.unwrap().metadata().unwrap().len() as usize)
                .sum()
        })
        .unwrap_or(0)
}

#[derive(Debug, Clone)]
enum Op {
    /// A record: key length, payload length.
    Put(usize, usize),
    /// A `put_records` call of this many records.
    Batch(usize),
    Sync,
    Reopen,
    /// The clock moves on this many milliseconds.
    Tick(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..40, 0usize..300).prop_map(|(k, d)| Op::Put(k, d)),
        2 => (1usize..30).prop_map(Op::Batch),
        2 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        2 => any::<u16>().prop_map(Op::Tick),
    ]
}

/// What the model expects of one record.
type Want = (u64, String, Vec<u8>, i64);

fn as_want(r: &Record) -> Want {
    (
        r.sequence,
        r.partition_key.to_string(),
        r.data.to_vec(),
        r.timestamp_ms,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Random puts (key and payload sizes varied) into a durable stream with a random
    /// memory window and segment size, with syncs and reopenings: a read at any
    /// position, with any limit, returns exactly the records put there (sequence,
    /// key, payload, arrival time); `AT_TIMESTAMP` finds the first record that arrived
    /// then; the frames' bytes are what the segment files hold; and once written, the
    /// records held in memory stay within the window.
    #[test]
    fn reads_at_any_position_return_what_was_put(
        ops in prop::collection::vec(op(), 1..80),
        window in prop_oneof![Just(0usize), 1usize..4000, Just(1usize << 20)],
        segment in 300u64..6000,
        probes in prop::collection::vec((any::<u64>(), 1usize..40, 1usize..2000), 12),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::at_millis(1_000);
        let build = || {
            Stream::builder("w")
                .shards(1)
                .durable(dir.path())
                .durability(Durability::None)
                .segment_bytes(segment)
                .memory_window_bytes(window)
                .clock(Arc::new(clock.clone()))
                .build()
                .unwrap()
        };
        let mut stream = build();
        let mut want: Vec<Want> = Vec::new();
        let mut n = 0usize;
        let mut record = |key_len: usize, data_len: usize| {
            n += 1;
            let key: String = format!("{n}-").chars().chain(std::iter::repeat('k')).take(key_len.max(3)).collect();
            let data: Vec<u8> = (0..data_len).map(|i| (i + n) as u8).collect();
            PutRecord::new(key, data)
        };
        for op in ops {
            match op {
                Op::Put(k, d) => {
                    let r = record(k, d);
                    let (key, data) = (r.partition_key.to_string(), r.data.to_vec());
                    let put = stream.put_record(r).unwrap();
                    want.push((put.sequence, key, data, clock.now_millis()));
                }
                Op::Batch(count) => {
                    let rs: Vec<PutRecord> = (0..count).map(|i| record(1 + i * 7 % 37, i * 13 % 200)).collect();
                    let kept: Vec<(String, Vec<u8>)> = rs.iter().map(|r| (r.partition_key.to_string(), r.data.to_vec())).collect();
                    for (res, (key, data)) in stream.put_records(rs).into_iter().zip(kept) {
                        want.push((res.unwrap().sequence, key, data, clock.now_millis()));
                    }
                }
                Op::Sync => {
                    stream.sync().unwrap();
                    let frames: usize = want.iter().map(|w| frame_bytes(&w.1, &w.2)).sum();
                    prop_assert_eq!(stream.shard_bytes(), vec![frames]);
                    prop_assert_eq!(seg_bytes_on_disk(dir.path(), ShardId(0)), frames);
                    // Written records leave memory beyond the window; what stays is the
                    // window plus the segment index (24 bytes per 4 KiB and per segment).
                    let index = 24 * (frames / 4096 + frames / segment as usize + 2);
                    let memory = stream.memory_bytes()[0];
                    prop_assert!(memory <= window + index, "memory {} > window {} + index {}", memory, window, index);
                }
                Op::Reopen => {
                    drop(stream);
                    stream = build();
                    let memory = stream.memory_bytes()[0];
                    let frames: usize = want.iter().map(|w| frame_bytes(&w.1, &w.2)).sum();
                    let index = 24 * (frames / 4096 + frames / segment as usize + 2);
                    prop_assert!(memory <= window + index, "reopened: memory {} > window {} + index {}", memory, window, index);
                }
                Op::Tick(ms) => clock.advance_millis(i64::from(ms)),
            }
        }
        // Everything, from the horizon, in reads of a few records.
        let mut all = Vec::new();
        let mut pos = Position::TrimHorizon;
        loop {
            let b = stream.read_at(ShardId(0), pos, ReadLimit::records(7)).unwrap();
            if b.records.is_empty() {
                prop_assert_eq!(b.millis_behind, 0);
                break;
            }
            all.extend(b.records.iter().map(as_want));
            pos = b.next;
        }
        prop_assert_eq!(&all, &want);
        for (at, records, bytes) in probes {
            if want.is_empty() {
                break;
            }
            let start = (at % want.len() as u64) as usize;
            let limit = ReadLimit { max_records: records, max_bytes: bytes };
            let b = stream.read_at(ShardId(0), Position::AtSequence(start as u64), limit).unwrap();
            let got: Vec<Want> = b.records.iter().map(as_want).collect();
            // As many records as the limit allows, at least one.
            let mut end = start;
            let mut used = 0;
            while end < want.len() && end - start < records {
                if end > start && used + want[end].2.len() > bytes {
                    break;
                }
                used += want[end].2.len();
                end += 1;
            }
            prop_assert_eq!(&got[..], &want[start..end], "read at {} limit {:?}", start, limit);
            prop_assert_eq!(b.next, Position::AtSequence(end as u64));
            // Millis behind: from the next unread record to the newest.
            let behind = want.get(end).map_or(0, |w| (want.last().unwrap().3 - w.3) as u64);
            prop_assert_eq!(b.millis_behind, behind);
            // AT_TIMESTAMP of a record's arrival finds the first that arrived then.
            let ts = want[start].3;
            let first = want.iter().position(|w| w.3 >= ts).unwrap();
            let it = stream.shard_iterator(ShardId(0), Position::AtTimestamp(ts)).unwrap();
            prop_assert_eq!(it.sequence(), first as u64);
            let got = stream.get_records(&it, ReadLimit::records(1)).unwrap();
            prop_assert_eq!(as_want(&got.records[0]), want[first].clone());
        }
        drop(stream);
        // Reopened once more: everything retained comes back.
        let stream = build();
        let b = stream.read_at(ShardId(0), Position::TrimHorizon, ReadLimit::records(usize::MAX)).unwrap();
        let got: Vec<Want> = b.records.iter().map(as_want).collect();
        prop_assert_eq!(got, want);
    }
}

/// An in-memory stream counts what its records cost in memory against its bound: 64
/// bytes per record plus its payload, plus its key when the key is over 24 bytes.
#[test]
fn in_memory_accounting_counts_entries_payloads_and_long_keys() {
    let stream = Stream::builder("m").shards(1).build().unwrap();
    stream
        .put_record(PutRecord::new("short", vec![0u8; 32]))
        .unwrap();
    assert_eq!(stream.shard_bytes(), vec![64 + 32]);
    let long = PartitionKey::from("a-partition-key-of-forty-bytes-in-total!");
    assert_eq!(long.len(), 40);
    let key_heap = long.capacity();
    assert!(key_heap >= 40);
    stream
        .put_record(PutRecord::new(long, vec![0u8; 10]))
        .unwrap();
    assert_eq!(stream.shard_bytes(), vec![96 + 64 + 10 + key_heap]);
    assert_eq!(stream.memory_bytes(), stream.shard_bytes());
}

fn tiny(dir: &Path, clock: &ManualClock) -> Stream {
    Stream::builder("t")
        .shards(1)
        .durable(dir)
        .durability(Durability::PerBatch)
        .segment_bytes(1024)
        .memory_window_bytes(0)
        .retention(Some(Duration::from_secs(10)))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

/// Retention trims records on disk too, a block at a time, deletes their segments and
/// frees their bytes against `max_shard_bytes`; a read of a trimmed position fails or
/// starts at the oldest per the policy.
#[test]
fn retention_trims_records_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at_millis(1_000);
    let stream = tiny(dir.path(), &clock);
    for i in 0..200 {
        stream
            .put_record(PutRecord::new("k", format!("old-{i:04}")))
            .unwrap();
    }
    assert!(
        stream.memory_bytes()[0] <= 24 * 20,
        "{:?}",
        stream.memory_bytes()
    );
    let before = stream.shard_bytes()[0];
    clock.advance_millis(11_000);
    for i in 0..200 {
        stream
            .put_record(PutRecord::new("k", format!("new-{i:04}")))
            .unwrap();
    }
    let all = stream
        .read_at(
            ShardId(0),
            Position::TrimHorizon,
            ReadLimit::records(10_000),
        )
        .unwrap()
        .records;
    // A contiguous suffix, every new record, and at most one block of old ones.
    assert_eq!(all.last().unwrap().sequence, 399);
    assert!(all.windows(2).all(|w| w[0].sequence + 1 == w[1].sequence));
    let old = all.iter().filter(|r| r.data.starts_with(b"old-")).count();
    // Frames of 41 bytes; a block here is a segment of at most 1,024 bytes.
    assert!(
        all.len() - old == 200 && old <= 1024 / 41 + 1,
        "{old} old records kept"
    );
    assert!(stream.shard_bytes()[0] <= before + 1024);
    let err = stream
        .read_at(ShardId(0), Position::AtSequence(0), ReadLimit::records(1))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PositionTrimmed);
    drop(stream);
    let lenient = Stream::builder("t")
        .durable(dir.path())
        .memory_window_bytes(0)
        .trimmed_read(TrimmedRead::StartAtOldest)
        .retention(Some(Duration::from_secs(10)))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let b = lenient
        .read_at(ShardId(0), Position::AtSequence(0), ReadLimit::records(1))
        .unwrap();
    assert_eq!(b.records[0].sequence, all[0].sequence);
}

/// A subscriber and a reader across a split both read records that left memory.
#[test]
fn subscriptions_and_lineage_read_across_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::at_millis(1_000);
    let stream = tiny(dir.path(), &clock);
    for i in 0..120 {
        stream
            .put_record(PutRecord::new(format!("u{}", i % 5), format!("{i}")))
            .unwrap();
    }
    let mut sub = stream
        .subscribe(ShardId(0), Position::TrimHorizon, 7)
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 120 {
        let batch = sub.recv(Duration::from_secs(5)).unwrap().unwrap();
        assert!(!batch.is_empty() && batch.len() <= 7);
        got.extend(batch.into_iter().map(|r| r.data));
    }
    let want: Vec<String> = (0..120).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
    let (lo, hi) = stream.split_shard(ShardId(0), 1u128 << 127).unwrap();
    for i in 120..200 {
        stream
            .put_record(PutRecord::new(format!("u{}", i % 5), format!("{i}")))
            .unwrap();
    }
    assert_eq!(sub.recv(Duration::from_secs(1)).unwrap(), None);
    let mut per_key: std::collections::HashMap<String, Vec<u32>> = Default::default();
    for shard in [ShardId(0), lo, hi] {
        let mut it = Some(stream.shard_iterator(shard, Position::TrimHorizon).unwrap());
        while let Some(i) = it {
            let out = stream.get_records(&i, ReadLimit::records(9)).unwrap();
            for r in &out.records {
                per_key
                    .entry(r.partition_key.to_string())
                    .or_default()
                    .push(std::str::from_utf8(&r.data).unwrap().parse().unwrap());
            }
            it = out.next_iterator.filter(|_| !out.records.is_empty());
        }
    }
    for (key, values) in per_key {
        let k: u32 = key[1..].parse().unwrap();
        let want: Vec<u32> = (0..200).filter(|i| i % 5 == k).collect();
        assert_eq!(values, want, "key {key}");
    }
    assert!(
        stream.memory_bytes().iter().sum::<usize>() < 24 * 40,
        "{:?}",
        stream.memory_bytes()
    );
}
