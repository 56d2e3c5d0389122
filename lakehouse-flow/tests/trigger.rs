//! Triggers: batching, order per shard and per key, checkpoints, retries, bisection,
//! partial failures, dead letters and shard failures, in simulated time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use lakehouse_core::{
    Error, ErrorKind, EventLog, ManualClock, MemoryLog, Position, PutRecord, ReadLimit, Record,
    ShardId,
};
use lakehouse_flow::{Backoff, BatchError, DeadLetter, Jitter, ManualTimer, Trigger, TriggerBatch};
use proptest::prelude::*;

/// A log and a simulated timer sharing one manual clock.
fn setup(shards: u32) -> (MemoryLog, ManualTimer) {
    let clock = ManualClock::at_millis(1_000_000);
    let log = MemoryLog::with_options(
        shards,
        MemoryLog::DEFAULT_MAX_RECORD_BYTES,
        Arc::new(clock.clone()),
    );
    (log, ManualTimer::new(clock))
}

/// Puts `n` records over `keys` partition keys; payload `key:i` where `i` counts per key.
async fn put_keyed(log: &MemoryLog, n: usize, keys: usize) {
    let mut per_key = vec![0usize; keys];
    let records: Vec<PutRecord> = (0..n)
        .map(|i| {
            let k = i % keys;
            per_key[k] += 1;
            PutRecord::new(format!("user-{k}"), format!("user-{k}:{}", per_key[k] - 1))
        })
        .collect();
    for r in log.put_batch(records).await.unwrap() {
        r.unwrap();
    }
}

async fn read_all(log: &MemoryLog) -> Vec<Record> {
    let mut out = Vec::new();
    for s in log.shards().await.unwrap() {
        out.extend(
            log.read(s.id, Position::TrimHorizon, ReadLimit::records(1_000_000))
                .await
                .unwrap()
                .records,
        );
    }
    out
}

fn text(r: &Record) -> String {
    String::from_utf8(r.data.to_vec()).unwrap()
}

type Seen = Arc<Mutex<Vec<TriggerBatch>>>;

fn recorder(seen: Seen) -> impl Fn(TriggerBatch) -> futures::future::Ready<Result<(), BatchError>> {
    move |b: TriggerBatch| {
        seen.lock().unwrap().push(b);
        futures::future::ready(Ok(()))
    }
}

fn no_jitter(ms: u64) -> Backoff {
    Backoff {
        initial: Duration::from_millis(ms),
        rate: 2.0,
        max_delay: Some(Duration::from_secs(5)),
        jitter: Jitter::None,
    }
}

#[tokio::test]
async fn every_record_once_in_shard_order_and_checkpointed() {
    let (log, timer) = setup(4);
    put_keyed(&log, 1_000, 50).await;
    let seen: Seen = Arc::default();
    let trigger = Trigger::builder(log.clone(), recorder(seen.clone()))
        .name("orders")
        .batch_size(25)
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let m = timer.run(trigger.drain()).await.unwrap();

    let batches = seen.lock().unwrap().clone();
    assert!(
        batches
            .iter()
            .all(|b| b.records.len() <= 25 && b.attempt == 0)
    );
    let mut per_shard: BTreeMap<ShardId, Vec<u64>> = BTreeMap::new();
    for b in &batches {
        for r in b.records.iter() {
            assert_eq!(r.shard, b.shard);
            per_shard.entry(r.shard).or_default().push(r.sequence);
        }
    }
    let all = read_all(&log).await;
    assert_eq!(per_shard.values().map(Vec::len).sum::<usize>(), 1_000);
    for s in log.shards().await.unwrap() {
        let seqs = per_shard.get(&s.id).cloned().unwrap_or_default();
        let expected: Vec<u64> = all
            .iter()
            .filter(|r| r.shard == s.id)
            .map(|r| r.sequence)
            .collect();
        assert_eq!(seqs, expected, "{} delivered in order, once", s.id);
        assert_eq!(
            log.checkpoint("orders", s.id).await.unwrap(),
            expected.last().copied(),
            "checkpoint of {}",
            s.id
        );
    }
    assert_eq!(m.records_processed, 1_000);
    assert_eq!(m.invocations, batches.len() as u64);
    assert_eq!((m.errors, m.retries, m.records_dead_lettered), (0, 0, 0));
    assert_eq!(m.shards.len(), 4);
    assert!(m.shards.iter().all(|s| s.millis_behind == 0));
    assert_eq!(
        m.shards.iter().map(|s| s.records_processed).sum::<u64>(),
        1_000
    );

    // A second drain finds nothing new: delivery resumes after the checkpoint.
    let before = seen.lock().unwrap().len();
    timer.run(trigger.drain()).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), before);
}

#[tokio::test]
async fn parallel_lanes_keep_per_key_order() {
    let (log, timer) = setup(1);
    put_keyed(&log, 400, 13).await;
    let order: Arc<Mutex<HashMap<String, Vec<usize>>>> = Arc::default();
    let lanes_seen: Arc<Mutex<BTreeSet<u32>>> = Arc::default();
    let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let handler = {
        let (order, lanes_seen, running, peak) = (
            order.clone(),
            lanes_seen.clone(),
            running.clone(),
            peak.clone(),
        );
        move |b: TriggerBatch| {
            let (order, lanes_seen, running, peak) = (
                order.clone(),
                lanes_seen.clone(),
                running.clone(),
                peak.clone(),
            );
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                lanes_seen.lock().unwrap().insert(b.lane);
                tokio::task::yield_now().await;
                for r in b.records.iter() {
                    let t = text(r);
                    let (key, i) = t.split_once(':').unwrap();
                    order
                        .lock()
                        .unwrap()
                        .entry(key.to_owned())
                        .or_default()
                        .push(i.parse().unwrap());
                }
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        }
    };
    let trigger = Trigger::builder(log.clone(), handler)
        .name("par")
        .batch_size(10)
        .parallelization_factor(4)
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let m = timer.run(trigger.drain()).await.unwrap();
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 13);
    for (key, values) in order.iter() {
        let expected: Vec<usize> = (0..values.len()).collect();
        assert_eq!(values, &expected, "{key} in order, each once");
    }
    assert_eq!(order.values().map(Vec::len).sum::<usize>(), 400);
    assert!(peak.load(Ordering::SeqCst) > 1, "lanes ran concurrently");
    assert!(lanes_seen.lock().unwrap().len() > 1);
    assert_eq!(m.records_processed, 400);
    assert_eq!(log.checkpoint("par", ShardId(0)).await.unwrap(), Some(399));
}

#[tokio::test]
async fn poison_record_is_isolated_by_bisection_and_dead_lettered() {
    let (log, timer) = setup(4);
    let dlq = MemoryLog::new(1);
    put_keyed(&log, 200, 20).await;
    log.put(PutRecord::new("user-3", "poison")).await.unwrap();
    put_keyed(&log, 100, 20).await;
    let ok: Arc<Mutex<Vec<String>>> = Arc::default();
    let alone = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (ok, alone) = (ok.clone(), alone.clone());
        move |b: TriggerBatch| {
            let (ok, alone) = (ok.clone(), alone.clone());
            async move {
                if b.records.len() == 1 && b.records[0].data.as_ref() == b"poison" {
                    alone.fetch_add(1, Ordering::SeqCst);
                }
                if b.records.iter().any(|r| r.data.as_ref() == b"poison") {
                    return Err(BatchError::new(Error::new(
                        ErrorKind::InvalidInput,
                        "cannot parse the order",
                    )));
                }
                ok.lock().unwrap().extend(b.records.iter().map(text));
                Ok(())
            }
        }
    };
    let trigger = Trigger::builder(log.clone(), handler)
        .name("bisect")
        .batch_size(50)
        .bisect_on_error(true)
        .max_retry_attempts(Some(2))
        .backoff(no_jitter(100))
        .on_failure(dlq.clone())
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let m = timer.run(trigger.drain()).await.unwrap();

    // Every other record was processed, exactly once.
    let ok = ok.lock().unwrap().clone();
    let expected: BTreeSet<String> = read_all(&log)
        .await
        .iter()
        .map(text)
        .filter(|t| t != "poison")
        .collect();
    assert_eq!(ok.len(), 300);
    assert_eq!(ok.iter().cloned().collect::<BTreeSet<_>>(), expected);

    // The poison record alone is in the DLQ, with its error.
    let letters = read_all(&dlq).await;
    assert_eq!(letters.len(), 1);
    let dl = DeadLetter::decode(&letters[0]).unwrap();
    assert_eq!(dl.data.as_ref(), b"poison");
    assert_eq!(dl.partition_key, "user-3");
    assert_eq!(dl.trigger, "bisect");
    assert_eq!(dl.attempts, 3);
    assert_eq!(dl.error_kind, "invalid input");
    assert!(dl.error.contains("cannot parse the order"), "{}", dl.error);
    let source = read_all(&log)
        .await
        .into_iter()
        .find(|r| r.data.as_ref() == b"poison")
        .unwrap();
    assert_eq!((dl.shard, dl.sequence), (source.shard, source.sequence));

    assert_eq!(m.records_dead_lettered, 1);
    assert_eq!(m.retries, 2);
    // Bisection isolated the poison record, which then had its first try and two retries.
    assert!(
        (1..=6).contains(&m.bisections),
        "{} splits for at most 50 records",
        m.bisections
    );
    assert_eq!(alone.load(Ordering::SeqCst), 3);
    assert_eq!(m.records_processed, 300);
    // Backoff without jitter: 100 ms, then 200 ms.
    let backoffs: Vec<Duration> = timer.requested_sleeps();
    assert_eq!(
        backoffs,
        vec![Duration::from_millis(100), Duration::from_millis(200)]
    );
    // Every shard is checkpointed to its end, the poison record included.
    for s in log.shards().await.unwrap() {
        let last = read_all(&log)
            .await
            .iter()
            .filter(|r| r.shard == s.id)
            .map(|r| r.sequence)
            .max();
        assert_eq!(log.checkpoint("bisect", s.id).await.unwrap(), last);
    }
}

#[tokio::test]
async fn a_panicking_handler_never_stops_other_shards() {
    let (log, timer) = setup(4);
    put_keyed(&log, 400, 40).await;
    let dlq = MemoryLog::new(2);
    let ok: Arc<Mutex<Vec<Record>>> = Arc::default();
    let handler = {
        let ok = ok.clone();
        move |b: TriggerBatch| {
            assert!(b.shard != ShardId(2), "shard 2 handler bug");
            ok.lock().unwrap().extend(b.records.iter().cloned());
            futures::future::ready(Ok(()))
        }
    };
    let trigger = Trigger::builder(log.clone(), handler)
        .name("panics")
        .batch_size(40)
        .max_retry_attempts(Some(1))
        .on_failure(dlq.clone())
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let m = timer.run(trigger.drain()).await.unwrap();
    let all = read_all(&log).await;
    let on_2 = all.iter().filter(|r| r.shard == ShardId(2)).count();
    assert!(on_2 > 0, "the test needs records on shard 2");
    let ok = ok.lock().unwrap().clone();
    assert_eq!(ok.len(), all.len() - on_2);
    assert!(ok.iter().all(|r| r.shard != ShardId(2)));
    let letters = read_all(&dlq).await;
    assert_eq!(letters.len(), on_2);
    for l in &letters {
        let dl = DeadLetter::decode(l).unwrap();
        assert_eq!(dl.shard, ShardId(2));
        assert_eq!(dl.attempts, 2);
        assert!(
            dl.error.contains("handler panicked: shard 2 handler bug"),
            "{}",
            dl.error
        );
    }
    assert!(m.panics >= 2);
    assert_eq!(m.panics, m.errors);
    assert_eq!(m.shard_failures, 0);
    for s in log.shards().await.unwrap() {
        let last = all
            .iter()
            .filter(|r| r.shard == s.id)
            .map(|r| r.sequence)
            .max();
        assert_eq!(log.checkpoint("panics", s.id).await.unwrap(), last);
    }
}

#[tokio::test]
async fn partial_failure_checkpoints_before_the_first_failed_record() {
    let (log, timer) = setup(1);
    put_keyed(&log, 10, 1).await;
    // (attempt, sequences, checkpoint seen by the handler) per call.
    type Calls = Arc<Mutex<Vec<(u32, Vec<u64>, Option<u64>)>>>;
    let calls: Calls = Arc::default();
    let slot: Arc<OnceLock<MemoryLog>> = Arc::default();
    slot.set(log.clone()).unwrap();
    let handler = {
        let (calls, slot) = (calls.clone(), slot.clone());
        move |b: TriggerBatch| {
            let (calls, slot) = (calls.clone(), slot.clone());
            async move {
                let cp = slot
                    .get()
                    .unwrap()
                    .checkpoint("partial", b.shard)
                    .await
                    .unwrap();
                let seqs: Vec<u64> = b.records.iter().map(|r| r.sequence).collect();
                calls.lock().unwrap().push((b.attempt, seqs, cp));
                if b.attempt == 0 {
                    return Err(BatchError::partial(
                        4,
                        Error::new(ErrorKind::External, "record 4 failed"),
                    ));
                }
                Ok(())
            }
        }
    };
    let trigger = Trigger::builder(log.clone(), handler)
        .name("partial")
        .batch_size(10)
        .backoff(no_jitter(50))
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let m = timer.run(trigger.drain()).await.unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0], (0, (0..10).collect(), None));
    // The retry starts at the failed record, and the checkpoint stopped just before it.
    assert_eq!(calls[1], (1, (4..10).collect(), Some(3)));
    assert_eq!(m.records_processed, 10);
    assert_eq!((m.errors, m.retries), (1, 1));
    assert_eq!(
        log.checkpoint("partial", ShardId(0)).await.unwrap(),
        Some(9)
    );
}

#[tokio::test]
async fn a_named_poison_record_is_dead_lettered_alone() {
    let (log, timer) = setup(1);
    let dlq = MemoryLog::new(1);
    put_keyed(&log, 20, 2).await;
    let ok: Arc<Mutex<Vec<u64>>> = Arc::default();
    let handler = {
        let ok = ok.clone();
        move |b: TriggerBatch| {
            let mut ok = ok.lock().unwrap();
            for r in b.records.iter() {
                if r.sequence == 7 {
                    return futures::future::ready(Err(BatchError::partial(
                        7,
                        Error::new(ErrorKind::InvalidInput, "bad price"),
                    )));
                }
                ok.push(r.sequence);
            }
            futures::future::ready(Ok(()))
        }
    };
    let trigger = Trigger::builder(log.clone(), handler)
        .name("named")
        .batch_size(20)
        .max_retry_attempts(Some(2))
        .backoff(no_jitter(10))
        .on_failure(dlq.clone())
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let m = timer.run(trigger.drain()).await.unwrap();
    let ok = ok.lock().unwrap().clone();
    let expected: Vec<u64> = (0..20).filter(|s| *s != 7).collect();
    assert_eq!(ok, expected, "every other record once, in order");
    let letters = read_all(&dlq).await;
    assert_eq!(letters.len(), 1);
    let dl = DeadLetter::decode(&letters[0]).unwrap();
    assert_eq!((dl.sequence, dl.attempts), (7, 3));
    assert_eq!((m.records_processed, m.records_dead_lettered), (19, 1));
    assert_eq!(log.checkpoint("named", ShardId(0)).await.unwrap(), Some(19));
}

#[tokio::test]
async fn records_past_the_maximum_age_stop_being_retried() {
    let (log, timer) = setup(1);
    let dlq = MemoryLog::new(1);
    put_keyed(&log, 5, 1).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = {
        let calls = calls.clone();
        move |_b: TriggerBatch| {
            calls.fetch_add(1, Ordering::SeqCst);
            futures::future::ready(Err(BatchError::new(Error::new(
                ErrorKind::Io,
                "warehouse is down",
            ))))
        }
    };
    let trigger = Trigger::builder(log.clone(), handler)
        .name("aged")
        .max_retry_attempts(None)
        .max_record_age(Some(Duration::from_millis(1_000)))
        .backoff(Backoff {
            rate: 1.0,
            ..no_jitter(300)
        })
        .on_failure(dlq.clone())
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let m = timer.run(trigger.drain()).await.unwrap();
    // Invoked at ages 0, 300, 600 and 900 ms; at 1200 ms the records expired.
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(m.retries, 4);
    assert_eq!(m.records_expired, 5);
    assert_eq!(m.records_dead_lettered, 5);
    let letters: Vec<DeadLetter> = read_all(&dlq)
        .await
        .iter()
        .map(|r| DeadLetter::decode(r).unwrap())
        .collect();
    assert_eq!(letters.len(), 5);
    assert!(
        letters
            .iter()
            .all(|d| d.error_kind == "timeout" && d.attempts == 4)
    );
    assert_eq!(log.checkpoint("aged", ShardId(0)).await.unwrap(), Some(4));
}

#[tokio::test]
async fn expired_records_skip_the_handler_and_without_a_dlq_are_dropped() {
    let (log, timer) = setup(2);
    put_keyed(&log, 30, 3).await;
    timer.advance(Duration::from_secs(600));
    put_keyed(&log, 10, 3).await;
    let seen: Seen = Arc::default();
    let trigger = Trigger::builder(log.clone(), recorder(seen.clone()))
        .name("old")
        .max_record_age(Some(Duration::from_secs(60)))
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let m = timer.run(trigger.drain()).await.unwrap();
    let delivered: usize = seen.lock().unwrap().iter().map(|b| b.records.len()).sum();
    assert_eq!(delivered, 10);
    assert_eq!(
        (
            m.records_expired,
            m.records_dropped,
            m.records_dead_lettered
        ),
        (30, 30, 0)
    );
}

#[tokio::test]
async fn lag_per_shard_is_reported() {
    let (log, timer) = setup(1);
    for (key, after_ms) in [("a", 0), ("b", 1_000), ("c", 2_000)] {
        timer.advance(Duration::from_millis(after_ms));
        log.put(PutRecord::new(key, key)).await.unwrap();
    }
    let slot: Arc<OnceLock<Trigger>> = Arc::default();
    let lags: Arc<Mutex<Vec<u64>>> = Arc::default();
    let handler = {
        let (slot, lags) = (slot.clone(), lags.clone());
        move |_b: TriggerBatch| {
            let lag = slot.get().unwrap().metrics().shards[0].millis_behind;
            lags.lock().unwrap().push(lag);
            futures::future::ready(Ok(()))
        }
    };
    let trigger = Trigger::builder(log.clone(), handler)
        .batch_size(1)
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    slot.set(trigger.clone()).unwrap();
    timer.run(trigger.drain()).await.unwrap();
    // After reading "a" the next unread record ("b") is 2000 ms older than the newest.
    assert_eq!(*lags.lock().unwrap(), vec![2_000, 0, 0]);
}

#[tokio::test]
async fn stopped_trigger_redelivers_from_its_checkpoint() {
    let (log, timer) = setup(1);
    put_keyed(&log, 30, 1).await;
    let first: Seen = Arc::default();
    let failing = {
        let first = first.clone();
        move |b: TriggerBatch| {
            let fail = b.records[0].sequence >= 20;
            first.lock().unwrap().push(b);
            futures::future::ready(if fail {
                Err(BatchError::new(Error::new(
                    ErrorKind::Io,
                    "sink unavailable",
                )))
            } else {
                Ok(())
            })
        }
    };
    let trigger = Trigger::builder(log.clone(), failing)
        .name("restart")
        .batch_size(10)
        .max_retry_attempts(None)
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let running = trigger.start().unwrap();
    timer
        .run(async {
            while trigger.metrics().retries < 3 {
                tokio::task::yield_now().await;
            }
        })
        .await;
    let m = running.stop().await.unwrap();
    assert_eq!(m.records_processed, 20);
    assert_eq!(
        log.checkpoint("restart", ShardId(0)).await.unwrap(),
        Some(19)
    );

    // A new trigger of the same name starts after the checkpoint: the failed batch is
    // delivered again, the processed ones are not.
    let second: Seen = Arc::default();
    let trigger = Trigger::builder(log.clone(), recorder(second.clone()))
        .name("restart")
        .batch_size(10)
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    timer.run(trigger.drain()).await.unwrap();
    let seqs: Vec<u64> = second
        .lock()
        .unwrap()
        .iter()
        .flat_map(|b| b.records.iter().map(|r| r.sequence))
        .collect();
    assert_eq!(seqs, (20..30).collect::<Vec<_>>());
}

#[tokio::test]
async fn batching_window_gathers_records_arriving_later() {
    let (log, timer) = setup(1);
    put_keyed(&log, 3, 1).await;
    let seen: Seen = Arc::default();
    let trigger = Trigger::builder(log.clone(), recorder(seen.clone()))
        .batch_size(100)
        .batching_window(Duration::from_secs(1))
        .poll_interval(Duration::from_millis(100))
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let running = trigger.start().unwrap();
    let settle = || async {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    };
    settle().await;
    assert_eq!(trigger.metrics().invocations, 0, "waits for the window");
    put_keyed(&log, 2, 1).await;
    for _ in 0..9 {
        timer.advance(Duration::from_millis(100));
        settle().await;
        assert_eq!(trigger.metrics().invocations, 0, "still inside the window");
    }
    timer.advance(Duration::from_millis(100));
    settle().await;
    let m = running.stop().await.unwrap();
    assert_eq!(m.invocations, 1);
    let batches = seen.lock().unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].records.len(), 5);
}

#[tokio::test]
async fn start_outside_a_runtime_is_an_error_not_a_panic() {
    let log = MemoryLog::new(1);
    let trigger = Trigger::builder(log, |_b: TriggerBatch| async { Ok(()) })
        .build()
        .unwrap();
    let err = std::thread::spawn(move || trigger.start().map(|_| ()).unwrap_err())
        .join()
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever fails and however the trigger is configured, no record is lost: each
    /// one is processed or dead-lettered, and every shard is checkpointed to its end.
    #[test]
    fn no_record_is_lost(
        n in 1usize..300,
        keys in 1usize..20,
        shards in 1u32..4,
        batch in 1usize..40,
        lanes in 1u32..4,
        bisect: bool,
        retries in 0u32..3,
        poison in proptest::collection::btree_set(0usize..300, 0..5),
        flaky in proptest::collection::btree_set(0usize..300, 0..10),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let (log, timer) = setup(shards);
            put_keyed(&log, n, keys).await;
            let index: HashMap<String, usize> = {
                let mut per_key = vec![0usize; keys];
                (0..n).map(|i| { let k = i % keys; per_key[k] += 1; (format!("user-{k}:{}", per_key[k] - 1), i) }).collect()
            };
            let index = Arc::new(index);
            let dlq = MemoryLog::new(1);
            let done: Arc<Mutex<BTreeSet<usize>>> = Arc::default();
            let failed_once: Arc<Mutex<BTreeSet<usize>>> = Arc::default();
            let handler = {
                let (done, failed_once, index, poison, flaky) =
                    (done.clone(), failed_once.clone(), index.clone(), poison.clone(), flaky.clone());
                move |b: TriggerBatch| {
                    let ids: Vec<usize> = b.records.iter().map(|r| index[&text(r)]).collect();
                    let bad = ids.iter().position(|i| poison.contains(i)
                        || (flaky.contains(i) && failed_once.lock().unwrap().insert(*i)));
                    let result = match bad {
                        None => { done.lock().unwrap().extend(ids); Ok(()) }
                        Some(p) => {
                            done.lock().unwrap().extend(ids[..p].iter().copied());
                            let e = Error::new(ErrorKind::External, "bad record");
                            if p % 2 == 0 { Err(BatchError::partial(b.records[p].sequence, e)) } else { Err(BatchError::new(e)) }
                        }
                    };
                    futures::future::ready(result)
                }
            };
            let trigger = Trigger::builder(log.clone(), handler)
                .name("prop")
                .batch_size(batch)
                .parallelization_factor(lanes)
                .bisect_on_error(bisect)
                .max_retry_attempts(Some(retries))
                .on_failure(dlq.clone())
                .timer(Arc::new(timer.clone()))
                .build()
                .unwrap();
            let m = timer.run(trigger.drain()).await.unwrap();
            let done = done.lock().unwrap().clone();
            let dead: BTreeSet<usize> = read_all(&dlq).await.iter()
                .map(|r| index[&String::from_utf8(DeadLetter::decode(r).unwrap().data.to_vec()).unwrap()])
                .collect();
            let all: BTreeSet<usize> = (0..n).collect();
            let covered: BTreeSet<usize> = done.union(&dead).copied().collect();
            assert_eq!(covered, all, "every record processed or dead-lettered");
            for p in poison.iter().filter(|p| **p < n) {
                assert!(dead.contains(p) && !done.contains(p), "poison {p} dead-lettered");
            }
            assert_eq!(m.records_dead_lettered as usize, read_all(&dlq).await.len());
            for s in log.shards().await.unwrap() {
                let last = read_all(&log).await.iter().filter(|r| r.shard == s.id).map(|r| r.sequence).max();
                assert_eq!(log.checkpoint("prop", s.id).await.unwrap(), last);
            }
        });
    }
}
