use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lakehouse_core::{
    ErrorKind, ManualClock, Position, PutRecord, ReadLimit, ShardId, conformance,
};
use lakehouse_stream::{Backpressure, Stream, TrimmedRead};
use proptest::prelude::*;

#[tokio::test]
async fn conforms_to_the_event_log_contract() {
    conformance::event_log(Stream::DEFAULT_MAX_RECORD_BYTES, || async {
        Stream::builder("suite").shards(4).build()
    })
    .await;
    conformance::event_log(64, || async {
        Stream::builder("small")
            .shards(2)
            .max_record_bytes(64)
            .build()
    })
    .await;
}

fn clocked(clock: &ManualClock) -> lakehouse_stream::StreamBuilder {
    Stream::builder("t").clock(Arc::new(clock.clone()))
}

/// Reads every shard in id order (parents before children) to its current end.
fn drain(stream: &Stream) -> Vec<lakehouse_core::Record> {
    let mut out = Vec::new();
    for shard in stream.shards() {
        let mut it = stream
            .shard_iterator(shard.id, Position::TrimHorizon)
            .unwrap();
        loop {
            let got = stream.get_records(&it, ReadLimit::records(3)).unwrap();
            let empty = got.records.is_empty();
            out.extend(got.records);
            match got.next_iterator {
                Some(next) if !empty => it = next,
                _ => break,
            }
        }
    }
    out
}

#[test]
fn split_and_merge_keep_per_key_order_and_lineage() {
    let stream = Stream::builder("s").shards(2).build().unwrap();
    let mut sent: HashMap<String, Vec<Bytes>> = HashMap::new();
    let mut put = |stream: &Stream, round: u32| {
        for k in 0..20 {
            let key = format!("k{k}");
            let data = Bytes::from(format!("{round}"));
            stream
                .put_record(PutRecord::new(key.clone(), data.clone()))
                .unwrap();
            sent.entry(key).or_default().push(data);
        }
    };
    put(&stream, 0);
    let (lo, hi) = stream.split_shard(ShardId(0), 1u128 << 100).unwrap();
    assert_eq!((lo, hi), (ShardId(2), ShardId(3)));
    put(&stream, 1);
    let merged = stream.merge_shards(lo, hi).unwrap();
    put(&stream, 2);
    let shards = stream.shards();
    assert!(shards[0].closed && shards[2].closed && shards[3].closed);
    assert!(!shards[1].closed && !shards[merged.0 as usize].closed);
    assert_eq!(shards[2].parents, vec![ShardId(0)]);
    assert_eq!(shards[merged.0 as usize].parents, vec![lo, hi]);
    assert_eq!(shards[merged.0 as usize].hash_range, shards[0].hash_range);
    // Closed parents end with end_of_shard once read to the end.
    let end = stream
        .read_at(
            ShardId(0),
            Position::TrimHorizon,
            ReadLimit::records(10_000),
        )
        .unwrap();
    assert!(end.end_of_shard);
    let mut got: HashMap<String, Vec<Bytes>> = HashMap::new();
    for r in drain(&stream) {
        got.entry(r.partition_key.to_string())
            .or_default()
            .push(r.data);
    }
    assert_eq!(got, sent);
    // Invalid reshards.
    assert_eq!(
        stream.split_shard(ShardId(0), 5).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        stream.split_shard(ShardId(1), 0).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        stream.merge_shards(ShardId(1), merged).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        stream.split_shard(ShardId(99), 5).unwrap_err().kind(),
        ErrorKind::ShardNotFound
    );
}

#[test]
fn retention_by_age_and_trimmed_reads() {
    let clock = ManualClock::at_millis(0);
    let stream = clocked(&clock)
        .shards(1)
        .retention(Some(Duration::from_secs(60)))
        .build()
        .unwrap();
    for i in 0..10 {
        stream
            .put_record(PutRecord::new("k", format!("{i}")))
            .unwrap();
        clock.advance_millis(10_000);
    }
    // At 100 s, records put before 40 s are past the 60 s retention.
    let err = stream
        .read_at(ShardId(0), Position::AtSequence(0), ReadLimit::default())
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PositionTrimmed);
    assert_eq!(err.context().shard, Some(ShardId(0)));
    let oldest = stream
        .read_at(ShardId(0), Position::TrimHorizon, ReadLimit::records(1))
        .unwrap();
    assert_eq!(oldest.records[0].sequence, 5);
    assert_eq!(
        oldest.millis_behind, 30_000,
        "next unread (50 s) vs newest (90 s)"
    );
    let lenient = clocked(&clock)
        .shards(1)
        .retention(Some(Duration::from_secs(1)))
        .trimmed_read(TrimmedRead::StartAtOldest)
        .build()
        .unwrap();
    lenient.put_record(PutRecord::new("k", "old")).unwrap();
    clock.advance_millis(5_000);
    lenient.put_record(PutRecord::new("k", "new")).unwrap();
    let r = lenient
        .read_at(ShardId(0), Position::AtSequence(0), ReadLimit::default())
        .unwrap();
    assert_eq!(r.records.len(), 1);
    assert_eq!(r.records[0].data, Bytes::from("new"));
}

#[test]
fn full_shards_reject_or_wait_and_lose_nothing() {
    let clock = ManualClock::at_millis(0);
    let stream = clocked(&clock)
        .shards(1)
        .max_record_bytes(100)
        .max_shard_bytes(400)
        .retention(Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    // Each record costs its 64-byte entry plus its payload (its key is inline).
    let rec = || PutRecord::new("k", vec![7u8; 99]);
    stream.put_record(rec()).unwrap();
    stream.put_record(rec()).unwrap();
    let err = stream.put_record(rec()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Full);
    assert_eq!(stream.shard_bytes(), vec![2 * 163]);
    // Once retention frees space, puts succeed again.
    clock.advance_millis(10_000);
    stream.put_record(rec()).unwrap();
    assert_eq!(stream.shard_bytes(), vec![163]);
    let waiting = clocked(&clock)
        .shards(1)
        .max_record_bytes(100)
        .max_shard_bytes(200)
        .backpressure(Backpressure::Wait(Duration::from_millis(30)))
        .build()
        .unwrap();
    waiting.put_record(rec()).unwrap();
    assert_eq!(
        waiting.put_record(rec()).unwrap_err().kind(),
        ErrorKind::Full
    );
    let all = waiting
        .read_at(ShardId(0), Position::TrimHorizon, ReadLimit::default())
        .unwrap();
    assert_eq!(
        all.records.len(),
        1,
        "the rejected record was not half-written"
    );
}

/// A batch whose record waits for space under `Backpressure::Wait` keeps the order of
/// the records after it in the same shard: a smaller record of the same key that fits
/// at once does not overtake it.
#[test]
fn a_waiting_record_is_not_overtaken_by_a_smaller_one_of_its_batch() {
    let clock = ManualClock::at_millis(0);
    let stream = clocked(&clock)
        .shards(1)
        .max_record_bytes(100)
        .max_shard_bytes(250)
        .retention(Some(Duration::from_secs(10)))
        .backpressure(Backpressure::Wait(Duration::from_secs(30)))
        .build()
        .unwrap();
    stream
        .put_record(PutRecord::new("k", vec![0u8; 90]))
        .unwrap();
    let results = std::thread::scope(|s| {
        s.spawn(|| {
            // Retention frees the shard while the batch waits.
            std::thread::sleep(Duration::from_millis(50));
            clock.advance_millis(10_000);
        });
        stream.put_records(vec![
            PutRecord::new("k", vec![1u8; 50]), // waits: 154 + 114 > 250
            PutRecord::new("k", vec![2u8; 5]),  // would fit at once: 154 + 69 <= 250
        ])
    });
    let seqs: Vec<u64> = results.into_iter().map(|r| r.unwrap().sequence).collect();
    assert!(seqs[0] < seqs[1], "sequences {seqs:?}");
    let all = stream
        .read_at(ShardId(0), Position::TrimHorizon, ReadLimit::default())
        .unwrap();
    let firsts: Vec<u8> = all.records.iter().map(|r| r.data[0]).collect();
    assert_eq!(firsts, vec![1, 2]);
}

#[test]
fn iterators_expire_and_belong_to_their_stream() {
    let clock = ManualClock::at_millis(0);
    let a = clocked(&clock)
        .shards(1)
        .iterator_ttl(Duration::from_secs(300))
        .build()
        .unwrap();
    let b = clocked(&clock).shards(1).build().unwrap();
    a.put_record(PutRecord::new("k", "x")).unwrap();
    let it = a.shard_iterator(ShardId(0), Position::TrimHorizon).unwrap();
    assert_eq!(
        b.get_records(&it, ReadLimit::default()).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let got = a.get_records(&it, ReadLimit::default()).unwrap();
    assert_eq!(got.records.len(), 1);
    clock.advance_millis(300_000);
    assert_eq!(
        a.get_records(&it, ReadLimit::default()).unwrap_err().kind(),
        ErrorKind::InvalidPosition
    );
    // The iterator returned by a read is fresh.
    let next = got.next_iterator.unwrap();
    assert_eq!(next.sequence(), 1);
    assert_eq!(
        a.shard_iterator(ShardId(7), Position::Latest)
            .unwrap_err()
            .kind(),
        ErrorKind::ShardNotFound
    );
    assert_eq!(
        Stream::builder("bad").shards(0).build().unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8),
    Split(u8, u8),
    Merge(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..12).prop_map(Op::Put),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(s, k)| Op::Split(s, k)),
        1 => any::<u8>().prop_map(Op::Merge),
    ]
}

proptest! {
    /// For any interleaving of puts, splits and merges, reading shards parents-first
    /// returns each key's records in put order, exactly once.
    #[test]
    fn resharding_keeps_per_key_order(ops in prop::collection::vec(op(), 1..200)) {
        let stream = Stream::builder("p").shards(2).build().unwrap();
        let mut sent: HashMap<String, Vec<u32>> = HashMap::new();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Put(k) => {
                    let key = format!("key-{k}");
                    stream.put_record(PutRecord::new(key.clone(), format!("{n}"))).unwrap();
                    sent.entry(key).or_default().push(n as u32);
                }
                Op::Split(s, k) => {
                    let open: Vec<_> = stream.shards().into_iter().filter(|s| !s.closed).collect();
                    let shard = &open[s as usize % open.len()];
                    let (lo, hi) = shard.hash_range;
                    if hi - lo >= 2 {
                        let at = lo + 1 + (hi - lo - 1) / 256 * u128::from(k);
                        stream.split_shard(shard.id, at).unwrap();
                    }
                }
                Op::Merge(s) => {
                    let mut open: Vec<_> = stream.shards().into_iter().filter(|s| !s.closed).collect();
                    open.sort_by_key(|s| s.hash_range.0);
                    if open.len() >= 2 {
                        let i = s as usize % (open.len() - 1);
                        stream.merge_shards(open[i].id, open[i + 1].id).unwrap();
                    }
                }
            }
        }
        let mut got: HashMap<String, Vec<u32>> = HashMap::new();
        for r in drain(&stream) {
            let n: u32 = std::str::from_utf8(&r.data).unwrap().parse().unwrap();
            got.entry(r.partition_key.to_string()).or_default().push(n);
        }
        prop_assert_eq!(got, sent);
    }
}

/// Producers put (one record and several per call) while another thread splits and
/// merges shards: puts route by a copy of the open shards that resharding replaces,
/// so a put that raced a reshard must land in a shard that a parents-first reader
/// still reads in order. Every record comes back once, each key's in put order.
#[test]
fn resharding_while_producers_put_loses_and_reorders_nothing() {
    const PRODUCERS: usize = 3;
    const STEPS: u32 = 3000;
    let stream = Stream::builder("c").shards(2).build().unwrap();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let sent: Vec<HashMap<String, Vec<u32>>> = std::thread::scope(|s| {
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let (stream, done) = (&stream, &done);
                s.spawn(move || {
                    let key = |k: u32| format!("p{p}-k{}", k % 16);
                    let mut sent: HashMap<String, Vec<u32>> = HashMap::new();
                    for n in 0..STEPS {
                        let keys = if n % 2 == 0 {
                            stream
                                .put_record(PutRecord::new(key(n), n.to_string()))
                                .unwrap();
                            vec![key(n)]
                        } else {
                            let keys = vec![key(n), key(n + 5)];
                            let puts: Vec<_> = keys
                                .iter()
                                .map(|k| PutRecord::new(k.as_str(), n.to_string()))
                                .collect();
                            for r in stream.put_records(puts) {
                                r.unwrap();
                            }
                            keys
                        };
                        for k in keys {
                            sent.entry(k).or_default().push(n);
                        }
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    sent
                })
            })
            .collect();
        let mut reshards = 0;
        while done.load(std::sync::atomic::Ordering::SeqCst) < PRODUCERS {
            if reshards == 200 {
                std::thread::yield_now();
                continue;
            }
            let mut open: Vec<_> = stream.shards().into_iter().filter(|s| !s.closed).collect();
            open.sort_by_key(|s| s.hash_range.0);
            if reshards % 3 == 2 && open.len() >= 2 {
                stream.merge_shards(open[0].id, open[1].id).unwrap();
            } else if let Some(wide) = open.iter().max_by_key(|s| s.hash_range.1 - s.hash_range.0) {
                let (lo, hi) = wide.hash_range;
                stream.split_shard(wide.id, lo + (hi - lo) / 2 + 1).unwrap();
            }
            reshards += 1;
            std::thread::yield_now();
        }
        assert!(reshards > 0);
        producers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let sent: HashMap<String, Vec<u32>> = sent.into_iter().flatten().collect();
    let mut got: HashMap<String, Vec<u32>> = HashMap::new();
    for r in drain(&stream) {
        let n: u32 = std::str::from_utf8(&r.data).unwrap().parse().unwrap();
        got.entry(r.partition_key.to_string()).or_default().push(n);
    }
    assert!(
        stream.shards().len() > 2,
        "no reshard happened during the puts"
    );
    assert_eq!(got, sent);
}

#[test]
fn subscriptions_are_woken_by_puts_and_end_with_their_shard() {
    let stream = Stream::builder("push").shards(1).build().unwrap();
    stream.put_record(PutRecord::new("k", "before")).unwrap();
    let mut from_start = stream
        .subscribe(ShardId(0), Position::TrimHorizon, 2)
        .unwrap();
    let mut from_now = stream.subscribe(ShardId(0), Position::Latest, 2).unwrap();
    let producer = {
        let stream = stream.clone();
        std::thread::spawn(move || {
            for i in 0..5 {
                std::thread::sleep(Duration::from_millis(5));
                stream
                    .put_record(PutRecord::new("k", format!("{i}")))
                    .unwrap();
            }
        })
    };
    let mut got = Vec::new();
    while got.len() < 5 {
        let batch = from_now.recv(Duration::from_secs(10)).unwrap().unwrap();
        assert!(batch.len() <= 2, "deliveries respect the buffer size");
        got.extend(batch.into_iter().map(|r| r.data));
    }
    producer.join().unwrap();
    let expected: Vec<Bytes> = (0..5).map(|i| Bytes::from(format!("{i}"))).collect();
    assert_eq!(got, expected);
    let first = from_start.recv(Duration::from_secs(1)).unwrap().unwrap();
    assert_eq!(first[0].data, Bytes::from("before"));
    // Nothing new: the timeout gives an empty delivery.
    assert!(
        from_now
            .recv(Duration::from_millis(10))
            .unwrap()
            .unwrap()
            .is_empty()
    );
    // A split closes the shard: the subscriber learns it has everything.
    stream.split_shard(ShardId(0), 1u128 << 127).unwrap();
    assert_eq!(from_now.recv(Duration::from_secs(1)).unwrap(), None);
}

/// An entry of a `put_records` batch in the model test: a key, a payload size and
/// maybe an explicit hash key.
fn batch_entry() -> impl Strategy<Value = (String, usize, Option<u128>)> {
    let key = prop_oneof![
        3 => (0u32..40).prop_map(|k| format!("user-{k}")),
        1 => Just(String::new()),
        // Around the inline limit of stored keys, in multi-byte characters too.
        1 => (20usize..26).prop_map(|n| "k".repeat(n)),
        1 => (9usize..13).prop_map(|n| "é".repeat(n)),
        // Beyond one MD5 block: hashed one at a time.
        1 => (56usize..70).prop_map(|n| "long".repeat(n / 4 + 1)),
    ];
    let explicit = prop_oneof![4 => Just(None), 1 => any::<u128>().prop_map(Some)];
    (key, 0usize..90, explicit)
}

proptest! {
    /// Any `put_records` batch, whatever its mix of good records, empty keys,
    /// oversized records and records that meet a full shard, returns one result per
    /// entry in request order, as putting the entries one by one in that order would:
    /// per-shard sequence numbers increase in request order, and reading the shards
    /// back gives exactly the acknowledged records with their keys and payloads.
    #[test]
    fn put_records_matches_one_by_one_puts(
        batches in prop::collection::vec(prop::collection::vec(batch_entry(), 0..60), 1..4),
    ) {
        const MAX_RECORD: usize = 100;
        const MAX_SHARD: usize = 1200;
        let stream = Stream::builder("b")
            .shards(3)
            .max_record_bytes(MAX_RECORD)
            .max_shard_bytes(MAX_SHARD)
            .build()
            .unwrap();
        let shards = stream.shards();
        let mut held = vec![0usize; shards.len()];
        let mut next_seq = vec![0u64; shards.len()];
        let mut expected: Vec<Vec<(String, Vec<u8>, u64)>> = vec![Vec::new(); shards.len()];
        let mut n = 0u32;
        for batch in batches {
            let records: Vec<PutRecord> = batch
                .iter()
                .map(|(key, size, explicit)| {
                    n += 1;
                    let mut data = format!("{n}-").into_bytes();
                    data.resize(data.len().max(*size), b'.');
                    let r = PutRecord::new(key.clone(), data);
                    match explicit {
                        Some(h) => r.with_explicit_hash_key(*h),
                        None => r,
                    }
                })
                .collect();
            let results = stream.put_records(records.clone());
            prop_assert_eq!(results.len(), records.len());
            for (r, got) in records.iter().zip(&results) {
                let want = if r.partition_key.is_empty() {
                    Err(ErrorKind::InvalidInput)
                } else if r.partition_key.len() + r.data.len() > MAX_RECORD {
                    Err(ErrorKind::RecordTooLarge)
                } else {
                    let hash = r.routing_key();
                    let s = shards
                        .iter()
                        .position(|s| s.hash_range.0 <= hash && hash <= s.hash_range.1)
                        .unwrap();
                    // An entry of 64 bytes, the payload, and a key over 24 bytes.
                    // (The stream holds a clone of the key, whose capacity may differ.)
                    let stored = r.partition_key.clone();
                    let long_key = if stored.len() > 24 { stored.capacity() } else { 0 };
                    let cost = 64 + r.data.len() + long_key;
                    if held[s] > 0 && held[s] + cost > MAX_SHARD {
                        Err(ErrorKind::Full)
                    } else {
                        held[s] += cost;
                        let seq = next_seq[s];
                        next_seq[s] += 1;
                        expected[s].push((r.partition_key.to_string(), r.data.to_vec(), seq));
                        Ok((shards[s].id, seq))
                    }
                };
                let got = got.as_ref().map(|p| (p.shard, p.sequence)).map_err(|e| e.kind());
                prop_assert_eq!(got, want);
            }
        }
        for (s, want) in shards.iter().zip(expected) {
            let read = stream
                .read_at(s.id, Position::TrimHorizon, ReadLimit::records(1000))
                .unwrap();
            let got: Vec<(String, Vec<u8>, u64)> = read
                .records
                .into_iter()
                .map(|r| {
                    assert_eq!(r.shard, s.id);
                    (r.partition_key.to_string(), r.data.to_vec(), r.sequence)
                })
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}

/// `Duration::MAX` means "forever", not a negative number of milliseconds: a record
/// is kept and an iterator stays valid however long ago they were made.
#[test]
fn duration_max_retention_and_iterator_ttl_keep_records_and_iterators() {
    let clock = ManualClock::at_millis(1_000);
    let stream = clocked(&clock)
        .shards(1)
        .retention(Some(Duration::MAX))
        .iterator_ttl(Duration::MAX)
        .backpressure(Backpressure::Wait(Duration::MAX))
        .build()
        .unwrap();
    let put = stream.put_record(PutRecord::new("k", "kept")).unwrap();
    let it = stream
        .shard_iterator(put.shard, Position::TrimHorizon)
        .unwrap();
    clock.advance_millis(10_000);
    stream.put_record(PutRecord::new("k", "second")).unwrap();
    let out = stream.get_records(&it, ReadLimit::records(10)).unwrap();
    let data: Vec<_> = out.records.iter().map(|r| r.data.clone()).collect();
    assert_eq!(data, vec![Bytes::from("kept"), Bytes::from("second")]);
    let mut sub = stream
        .subscribe(put.shard, Position::TrimHorizon, 10)
        .unwrap();
    assert_eq!(sub.recv(Duration::MAX).unwrap().unwrap().len(), 2);
}
