use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use lakehouse_core::{ErrorKind, ManualClock, PutRecord, ReadLimit, ShardId};
use lakehouse_stream::{ConsumerGroup, Member, Stream};
use proptest::prelude::*;

fn counts(group: &ConsumerGroup) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for (_, m) in group.assignments() {
        *c.entry(m).or_default() += 1;
    }
    c
}

#[test]
fn leases_spread_and_move_on_join_leave_and_expiry() {
    let clock = ManualClock::at_millis(0);
    let stream = Stream::builder("s").shards(4).build().unwrap();
    let group = ConsumerGroup::new(
        stream.clone(),
        "g",
        Duration::from_secs(10),
        Arc::new(clock.clone()),
    );
    let a = group.join("a").unwrap();
    assert_eq!(a.shards().len(), 4);
    let b = group.join("b").unwrap();
    assert_eq!(
        counts(&group).values().copied().collect::<Vec<_>>(),
        vec![2, 2]
    );
    let c = group.join("c").unwrap();
    let mut spread: Vec<usize> = counts(&group).values().copied().collect();
    spread.sort_unstable();
    assert_eq!(spread, vec![1, 1, 2]);
    c.leave().unwrap();
    assert_eq!(counts(&group).values().sum::<usize>(), 4);
    assert!(!counts(&group).contains_key("c"));
    // b stops renewing: after the lease, a holds everything.
    clock.advance_millis(6_000);
    a.heartbeat().unwrap();
    clock.advance_millis(6_000);
    a.heartbeat().unwrap();
    assert_eq!(a.shards().len(), 4);
    assert_eq!(b.heartbeat().unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(
        b.checkpoint(ShardId(0), 0).unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(group.join("").unwrap_err().kind(), ErrorKind::InvalidInput);
}

#[test]
fn a_new_owner_resumes_after_the_checkpoint() {
    let clock = ManualClock::at_millis(0);
    let stream = Stream::builder("s").shards(1).build().unwrap();
    for i in 0..10 {
        stream
            .put_record(PutRecord::new("k", format!("{i}")))
            .unwrap();
    }
    let group = ConsumerGroup::new(
        stream.clone(),
        "g",
        Duration::from_secs(5),
        Arc::new(clock.clone()),
    );
    let a = group.join("a").unwrap();
    let polled = a.poll(ReadLimit::records(6)).unwrap();
    assert_eq!(polled[0].1.len(), 6);
    a.checkpoint(ShardId(0), 3).unwrap();
    // a dies after processing 0..=3; b takes over at 4: records 4 and 5 come again.
    clock.advance_millis(5_000);
    let b = group.join("b").unwrap();
    assert_eq!(b.shards(), vec![ShardId(0)]);
    let polled = b.poll(ReadLimit::records(100)).unwrap();
    let seqs: Vec<u64> = polled[0].1.iter().map(|r| r.sequence).collect();
    assert_eq!(seqs, (4..10).collect::<Vec<_>>());
    assert_eq!(
        a.poll(ReadLimit::records(100)).unwrap().len(),
        0,
        "a holds nothing now"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8),
    Split(u8),
    Merge(u8),
    Consume,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..10).prop_map(Op::Put),
        1 => any::<u8>().prop_map(Op::Split),
        1 => any::<u8>().prop_map(Op::Merge),
        2 => Just(Op::Consume),
    ]
}

fn consume(members: &[Member], got: &mut HashMap<String, Vec<u32>>) -> usize {
    let mut n = 0;
    for m in members {
        m.heartbeat().unwrap();
        for (shard, records) in m.poll(ReadLimit::records(4)).unwrap() {
            for r in &records {
                let v: u32 = std::str::from_utf8(&r.data).unwrap().parse().unwrap();
                got.entry(r.partition_key.to_string()).or_default().push(v);
            }
            n += records.len();
            m.checkpoint(shard, records.last().unwrap().sequence)
                .unwrap();
        }
    }
    n
}

proptest! {
    /// For any interleaving of puts, splits, merges and consumption by a checkpointing
    /// group of two members, each key's records arrive in put order, exactly once.
    #[test]
    fn group_reads_every_key_in_order_once(ops in prop::collection::vec(op(), 1..150)) {
        let clock = ManualClock::at_millis(0);
        let stream = Stream::builder("p").shards(2).build().unwrap();
        let group = ConsumerGroup::new(stream.clone(), "g", Duration::from_secs(60), Arc::new(clock));
        let members = vec![group.join("a").unwrap(), group.join("b").unwrap()];
        let mut sent: HashMap<String, Vec<u32>> = HashMap::new();
        let mut got: HashMap<String, Vec<u32>> = HashMap::new();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Op::Put(k) => {
                    let key = format!("key-{k}");
                    stream.put_record(PutRecord::new(key.clone(), format!("{n}"))).unwrap();
                    sent.entry(key).or_default().push(n as u32);
                }
                Op::Split(s) => {
                    let open: Vec<_> = stream.shards().into_iter().filter(|s| !s.closed).collect();
                    let shard = &open[s as usize % open.len()];
                    let (lo, hi) = shard.hash_range;
                    if hi - lo >= 2 {
                        stream.split_shard(shard.id, lo + (hi - lo) / 2 + 1).unwrap();
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
                Op::Consume => {
                    consume(&members, &mut got);
                }
            }
        }
        // Drain: keep consuming until several rounds bring nothing.
        let mut idle = 0;
        while idle < 3 {
            if consume(&members, &mut got) == 0 { idle += 1 } else { idle = 0 }
        }
        prop_assert_eq!(got, sent);
    }
}
