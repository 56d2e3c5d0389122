//! A consumer group sharing a sharded stream: three members lease the shards, process
//! records and checkpoint; one member crashes after processing a batch but before
//! checkpointing and stops renewing its leases, so its shards move to the others, who
//! resume after its last checkpoint (at-least-once: the unacknowledged batch comes
//! again and is recognised as a duplicate); another member leaves cleanly. Every
//! record of every key arrives, in put order. A push subscription per shard (enhanced
//! fan-out) receives records as they are put, independently of the group.
//!
//! ```text
//! cargo run -p lakehouse-examples --example stream_consumer_groups
//! ```
//!
//! The last line is `ok: stream_consumer_groups ...` when no record was lost and every
//! key kept its order; otherwise the example exits non-zero naming the key.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lakehouse_core::{ManualClock, Position, PutRecord, ReadLimit, Record};
use lakehouse_stream::{ConsumerGroup, Member, Stream};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

const SHARDS: u32 = 6;
const KEYS: u32 = 300;
const LEASE: Duration = Duration::from_secs(10);
/// Rounds of records put after the push subscriptions start.
const PUSHED_ROUNDS: u32 = 10;

/// What the group's members have consumed, with per-key de-duplication: a record is
/// new when it is the key's next value, a duplicate when it is an earlier one, and an
/// error (a lost or reordered record) when it skips ahead.
#[derive(Default)]
struct Consumed {
    next: HashMap<String, u32>,
    new: u64,
    duplicates: u64,
    by_member: BTreeMap<String, u64>,
}

impl Consumed {
    fn take(&mut self, member: &str, r: &Record) -> BoxResult<()> {
        let value: u32 = std::str::from_utf8(&r.data)?.parse()?;
        let next = self.next.entry(r.partition_key.to_string()).or_insert(0);
        if value < *next {
            self.duplicates += 1;
        } else if value == *next {
            *next += 1;
            self.new += 1;
        } else {
            return Err(format!(
                "{}: got value {value} while expecting {} (a record was lost or reordered)",
                r.partition_key, *next
            )
            .into());
        }
        *self.by_member.entry(member.to_owned()).or_insert(0) += 1;
        Ok(())
    }
}

/// Puts `rounds` records for every key; returns how many were put.
fn produce(stream: &Stream, sent: &mut HashMap<String, u32>, rounds: u32) -> BoxResult<u64> {
    let mut n = 0;
    for _ in 0..rounds {
        let batch: Vec<PutRecord> = (0..KEYS)
            .map(|k| {
                let key = format!("user-{k}");
                let count = sent.entry(key.clone()).or_insert(0);
                let record = PutRecord::new(key, count.to_string());
                *count += 1;
                record
            })
            .collect();
        for r in stream.put_records(batch) {
            r?;
            n += 1;
        }
    }
    Ok(n)
}

/// One poll of `member`: processes every record, then checkpoints each shard unless
/// `checkpoint` is false (the member crashes before acknowledging). Returns records read.
fn poll_once(member: &Member, consumed: &mut Consumed, checkpoint: bool) -> BoxResult<usize> {
    let mut n = 0;
    for (shard, records) in member.poll(ReadLimit::records(500))? {
        for r in &records {
            consumed.take(member.id(), r)?;
        }
        n += records.len();
        if checkpoint && let Some(last) = records.last() {
            member.checkpoint(shard, last.sequence)?;
        }
    }
    Ok(n)
}

/// Polls with every member until none gets a record.
fn drain(members: &[&Member], consumed: &mut Consumed) -> BoxResult<()> {
    loop {
        let mut n = 0;
        for m in members {
            m.heartbeat()?;
            n += poll_once(m, consumed, true)?;
        }
        if n == 0 {
            return Ok(());
        }
    }
}

fn show_assignments(group: &ConsumerGroup) -> String {
    let mut by_member: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (shard, member) in group.assignments() {
        by_member.entry(member).or_default().push(shard.0);
    }
    by_member
        .iter()
        .map(|(m, s)| format!("{m}: shards {s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() -> BoxResult<()> {
    let started = Instant::now();
    let stream = Stream::builder("orders").shards(SHARDS).build()?;
    // Leases run on an injected clock, so that "stops renewing" is exact and instant.
    let clock = ManualClock::at_millis(0);
    let group = ConsumerGroup::new(stream.clone(), "billing", LEASE, Arc::new(clock.clone()));
    let mut sent: HashMap<String, u32> = HashMap::new();
    let mut consumed = Consumed::default();

    // 1. Three members share six shards.
    let a = group.join("member-a")?;
    let b = group.join("member-b")?;
    let c = group.join("member-c")?;
    println!("{SHARDS} shards, {KEYS} keys; group 'billing' with three members");
    println!("  leases: {}", show_assignments(&group));
    let mut put = produce(&stream, &mut sent, 20)?;
    drain(&[&a, &b, &c], &mut consumed)?;
    println!(
        "phase 1: put {put}, consumed {} (per member {:?})",
        consumed.new, consumed.by_member
    );

    // 2. member-c processes a batch, crashes before checkpointing and stops renewing.
    put += produce(&stream, &mut sent, 20)?;
    let c_shards = c.shards();
    let lost_ack = poll_once(&c, &mut consumed, false)?;
    println!(
        "phase 2: member-c processed {lost_ack} records of shards {:?} and crashed before checkpointing",
        c_shards.iter().map(|s| s.0).collect::<Vec<_>>()
    );
    for _ in 0..2 {
        clock.advance_millis(6_000);
        a.heartbeat()?;
        b.heartbeat()?;
    }
    println!(
        "  12 s later (lease {}s) member-c has expired; leases: {}",
        LEASE.as_secs(),
        show_assignments(&group)
    );
    if group.assignments().values().any(|m| m == "member-c") {
        return Err("member-c still holds a lease after it expired".into());
    }
    match c.heartbeat() {
        Err(e) => println!("  member-c's late heartbeat: {:?}: {e}", e.kind()),
        Ok(()) => return Err("an expired member renewed its lease".into()),
    }
    let dup_before = consumed.duplicates;
    drain(&[&a, &b], &mut consumed)?;
    let redelivered = consumed.duplicates - dup_before;
    println!(
        "  members a and b resumed member-c's shards after its last checkpoint: {redelivered} records delivered again (at least once)"
    );
    if redelivered != lost_ack as u64 {
        return Err(format!(
            "expected the {lost_ack} unacknowledged records again, got {redelivered}"
        )
        .into());
    }

    // 3. Push subscriptions (enhanced fan-out) on every shard, from now on.
    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicU64::new(0));
    let mut subscribers = Vec::new();
    for shard in stream.shards() {
        let mut sub = stream.subscribe(shard.id, Position::Latest, 256)?;
        let (stop, pushed) = (stop.clone(), pushed.clone());
        subscribers.push(std::thread::spawn(
            move || -> Result<Vec<Record>, String> {
                let mut got = Vec::new();
                loop {
                    match sub.recv(Duration::from_millis(20)) {
                        Ok(Some(batch)) if batch.is_empty() && stop.load(Ordering::Acquire) => {
                            return Ok(got);
                        }
                        Ok(Some(batch)) => {
                            pushed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                            got.extend(batch);
                        }
                        Ok(None) => return Ok(got),
                        Err(e) => return Err(format!("shard {}: {e}", shard.id)),
                    }
                }
            },
        ));
    }

    // 4. member-b leaves cleanly; member-a takes every shard and reads the rest.
    b.leave()?;
    println!(
        "phase 3: member-b left; leases: {}",
        show_assignments(&group)
    );
    if a.shards().len() != SHARDS as usize {
        return Err(format!("member-a holds {:?}, expected every shard", a.shards()).into());
    }
    let phase3 = produce(&stream, &mut sent, PUSHED_ROUNDS)?;
    put += phase3;
    drain(&[&a], &mut consumed)?;

    let deadline = Instant::now() + Duration::from_secs(10);
    while pushed.load(Ordering::Relaxed) < phase3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Release);
    let mut push_next: HashMap<String, u32> = HashMap::new();
    let mut push_total = 0u64;
    for s in subscribers {
        let records = s.join().map_err(|_| "a subscriber thread panicked")??;
        for r in records {
            let value: u32 = std::str::from_utf8(&r.data)?.parse()?;
            // Each key's last PUSHED_ROUNDS values were put after subscribing.
            let first = sent
                .get(r.partition_key.as_str())
                .and_then(|n| n.checked_sub(PUSHED_ROUNDS))
                .ok_or_else(|| format!("subscription: unexpected key {}", r.partition_key))?;
            let next = push_next
                .entry(r.partition_key.to_string())
                .or_insert(first);
            if value != *next {
                return Err(format!(
                    "subscription: {} got {value}, expected {}",
                    r.partition_key, *next
                )
                .into());
            }
            *next += 1;
            push_total += 1;
        }
    }
    println!(
        "push subscriptions on {SHARDS} shards received {push_total} of the {phase3} records put after subscribing, each key in order"
    );
    if push_total != phase3 {
        return Err(format!("subscriptions received {push_total}, expected {phase3}").into());
    }

    // 5. Nothing lost, nothing out of order.
    let mut mismatched = 0;
    for (key, n) in &sent {
        if consumed.next.get(key) != Some(n) {
            mismatched += 1;
            eprintln!(
                "{key}: put {n}, consumed {:?}",
                consumed.next.get(key).copied()
            );
        }
    }
    let checkpoints: Vec<String> = stream
        .shards()
        .iter()
        .map(|s| {
            let cp = stream.checkpoint(group.name(), s.id).ok().flatten();
            format!("{}={}", s.id.0, cp.map_or("-".into(), |c| c.to_string()))
        })
        .collect();
    println!(
        "\nput {put}, consumed {} new + {} duplicates; per member {:?}; checkpoints {}",
        consumed.new,
        consumed.duplicates,
        consumed.by_member,
        checkpoints.join(" ")
    );
    if mismatched > 0 || consumed.new != put {
        return Err(format!(
            "{mismatched} keys lost records ({} of {put} consumed)",
            consumed.new
        )
        .into());
    }
    println!(
        "ok: stream_consumer_groups {put} records over {} keys delivered at least once, none lost, per-key order kept, {} redelivered after a crash, {push_total} pushed ({:.1?})",
        sent.len(),
        redelivered,
        started.elapsed()
    );
    Ok(())
}
