//! Simulated power loss for durable streams (feature `fault-injection`).
//!
//! [`run_power_loss`] writes a seeded workload to a durable [`Stream`] in a fresh
//! directory while a journal records every file operation on it (which bytes of each
//! file were fsynced, which directory entries were made durable). At a seeded
//! operation the power goes off: that operation and every later one fail. Then, as a
//! power loss may, the bytes of each file after its last fsync are kept, dropped, cut
//! at a random byte, zeroed or replaced by garbage, and files and directories whose
//! entry was never fsynced vanish (or a rename reverts). The stream is reopened and
//! checked: it opens, every acknowledged record is there once, each key's records are
//! in put order, the consumer checkpoints did not move back, and the reopened stream
//! takes writes and opens again.
//!
//! A record counts as acknowledged when it must survive: under
//! [`Durability::PerBatch`] once its put returned `Ok`, under the other settings once
//! a [`Stream::sync`] that started after its put returned `Ok`. A checkpoint must
//! survive once a `sync` after its commit returned `Ok`.
//!
//! ```
//! use lakehouse_stream::Durability;
//! use lakehouse_stream::faults::{StreamPowerLossOptions, run_power_loss};
//!
//! let options = StreamPowerLossOptions::new()
//!     .shards(2)
//!     .records(50)
//!     .durability(Durability::PerBatch);
//! let report = run_power_loss(7, &options)?;
//! assert!(report.is_clean(), "{report:?}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod journal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use lakehouse_core::{Position, PutRecord, ReadLimit, Record, Result, SequenceNumber, ShardId};

use crate::{Durability, Error, ErrorKind, Stream};

/// A small seeded generator (SplitMix64): the simulation's only randomness.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// What [`run_power_loss`] writes and with which durability.
#[derive(Debug, Clone)]
#[must_use]
pub struct StreamPowerLossOptions {
    shards: u32,
    records: u64,
    durability: Durability,
    segment_bytes: u64,
}

impl Default for StreamPowerLossOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamPowerLossOptions {
    /// 3 shards, 200 records, [`Durability::PerBatch`], 512-byte segments.
    pub fn new() -> Self {
        StreamPowerLossOptions {
            shards: 3,
            records: 200,
            durability: Durability::PerBatch,
            segment_bytes: 512,
        }
    }

    /// Shards of the stream (at least 1).
    pub fn shards(mut self, n: u32) -> Self {
        self.shards = n.max(1);
        self
    }

    /// Records the workload puts at most (the power may go off before).
    pub fn records(mut self, n: u64) -> Self {
        self.records = n;
        self
    }

    /// The stream's durability setting.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Segment size, small so that segments roll during the workload.
    pub fn segment_bytes(mut self, n: u64) -> Self {
        self.segment_bytes = n.max(1);
        self
    }
}

/// What one simulated power loss found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamPowerLossReport {
    /// The seed of the run: the same seed replays the same workload, cut and damage.
    pub seed: u64,
    /// Records that had to survive (see the [module docs](self)).
    pub acknowledged_records: u64,
    /// Of those, records missing or changed after the reopen.
    pub lost_acknowledged: u64,
    /// Records read more than once after the reopen.
    pub duplicate_records: u64,
    /// The stream did not open after the power loss.
    pub unopenable: bool,
    /// Every violation found, described (including the ones counted above).
    pub problems: Vec<String>,
}

impl StreamPowerLossReport {
    /// No acknowledged record lost, none twice, the stream opened, nothing else wrong.
    pub fn is_clean(&self) -> bool {
        self.lost_acknowledged == 0
            && self.duplicate_records == 0
            && !self.unopenable
            && self.problems.is_empty()
    }
}

/// A record the workload put: where it went and what it holds.
#[derive(Debug, Clone)]
struct Put {
    shard: ShardId,
    sequence: SequenceNumber,
    key: String,
    data: String,
}

const GROUP: &str = "power-loss";

fn build(dir: &Path, options: &StreamPowerLossOptions) -> Result<Stream> {
    Stream::builder("power-loss")
        .shards(options.shards)
        .durable(dir)
        .durability(options.durability)
        .segment_bytes(options.segment_bytes)
        .retention(None)
        .build()
}

fn scratch_dir(seed: u64) -> PathBuf {
    static RUN: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "lakehouse-stream-power-loss-{}-{seed}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Runs one seeded workload on a durable stream, cuts the power at a seeded point,
/// damages what was not fsynced, reopens and checks the stream (see the
/// [module docs](self)). The directory is a fresh one under the system's temporary
/// directory and is removed afterwards.
///
/// # Errors
///
/// `Io` when the scratch directory cannot be made or damaged. Whatever the stream
/// itself does wrong is in the report, not an error.
pub fn run_power_loss(
    seed: u64,
    options: &StreamPowerLossOptions,
) -> Result<StreamPowerLossReport> {
    let dir = scratch_dir(seed);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::new(ErrorKind::Io, "cannot create the scratch directory")
            .with_path(dir.display().to_string())
            .with_source(e)
    })?;
    let result = run_in(&dir, seed, options);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// What the workload did before the power went off.
#[derive(Debug, Default)]
struct Workload {
    puts: Vec<Put>,
    /// Every record of `puts[..durable_puts]` must survive.
    durable_puts: usize,
    /// Every checkpoint committed, per shard, in order.
    committed: HashMap<ShardId, Vec<SequenceNumber>>,
    /// The newest checkpoint per shard that a `sync` made durable.
    durable_checkpoints: HashMap<ShardId, SequenceNumber>,
}

/// Runs the workload of `seed` on `dir` (watched by `journal`) until it is done or
/// the power goes off; returns what it did and the stream (`None` when the power
/// went off while it was being made).
fn workload(
    dir: &Path,
    seed: u64,
    options: &StreamPowerLossOptions,
    journal: &Arc<Mutex<journal::Journal>>,
) -> Result<(Workload, Option<Stream>)> {
    let mut rng = Rng::new(seed);
    let mut w = Workload::default();
    let syncing = options.durability == Durability::PerBatch;
    let mut next_value: HashMap<String, u64> = HashMap::new();
    let mut put_count = 0u64;
    let stream = match build(dir, options) {
        Ok(s) => s,
        Err(_) if journal.lock().is_off() => return Ok((w, None)),
        Err(e) => return Err(e),
    };
    while put_count < options.records && !journal.lock().is_off() {
        match rng.below(20) {
            0..=13 => {
                let n = 1 + rng.below(8);
                let batch: Vec<(String, String)> = (0..n)
                    .map(|_| {
                        let key = format!("key-{}", rng.below(12));
                        let v = next_value.entry(key.clone()).or_insert(0);
                        *v += 1;
                        let data = format!("{key}:{v}");
                        (key, data)
                    })
                    .collect();
                put_count += n;
                let results = stream.put_records(
                    batch
                        .iter()
                        .map(|(k, d)| PutRecord::new(k.clone(), d.clone()))
                        .collect(),
                );
                for ((key, data), r) in batch.into_iter().zip(results) {
                    if let Ok(p) = r {
                        w.puts.push(Put {
                            shard: p.shard,
                            sequence: p.sequence,
                            key,
                            data,
                        });
                    }
                }
                if syncing {
                    w.durable_puts = w.puts.len();
                }
            }
            14..=17 => {
                // Checkpoint the last record put on a shard.
                if let Some(p) = w.puts.last() {
                    let (shard, seq) = (p.shard, p.sequence);
                    if stream.commit_checkpoint(GROUP, shard, seq).is_ok() {
                        w.committed.entry(shard).or_default().push(seq);
                    }
                }
            }
            _ => {
                let covered = w.puts.len();
                let snapshot: Vec<(ShardId, SequenceNumber)> = w
                    .committed
                    .iter()
                    .filter_map(|(s, v)| v.last().map(|q| (*s, *q)))
                    .collect();
                if stream.sync().is_ok() {
                    w.durable_puts = covered;
                    w.durable_checkpoints.extend(snapshot);
                }
            }
        }
    }
    Ok((w, Some(stream)))
}

fn run_in(
    root: &Path,
    seed: u64,
    options: &StreamPowerLossOptions,
) -> Result<StreamPowerLossReport> {
    let mut report = StreamPowerLossReport {
        seed,
        ..StreamPowerLossReport::default()
    };
    // A run with the power on counts the file operations of the workload, so that
    // the cut falls anywhere in it (or just after it).
    let dry = root.join("dry");
    let counter = journal::watch(&dry, u64::MAX, 0);
    let counted = workload(&dry, seed, options, &counter);
    drop(counted);
    let ops = counter.lock().ops();
    journal::unwatch(&counter);
    let _ = std::fs::remove_dir_all(&dry);

    let dir = root.join("run");
    let dir = dir.as_path();
    let mut rng = Rng::new(seed ^ 0xC0FF_EE00_D15C_0BAD);
    let cut_at = 1 + rng.below(ops + 2);
    let journal = journal::watch(dir, cut_at, rng.next());
    let (w, stream) = match workload(dir, seed, options, &journal) {
        Ok(r) => r,
        Err(e) => {
            journal::unwatch(&journal);
            return Err(e);
        }
    };
    let Workload {
        puts,
        durable_puts,
        committed,
        durable_checkpoints,
    } = w;
    journal.lock().power_off();
    drop(stream);
    // Every handle on the directory must be closed before the damage is done.
    match crate::durable::lock_dir(dir) {
        Ok(lock) => drop(lock),
        Err(e) => report.problems.push(format!(
            "the old handle did not let go of the directory: {e}"
        )),
    }
    let damage = journal.lock().apply_power_loss();
    journal::unwatch(&journal);
    let damage = damage.map_err(|e| {
        Error::new(ErrorKind::Io, "cannot damage the scratch directory")
            .with_path(dir.display().to_string())
            .with_source(e)
    })?;

    report.acknowledged_records = durable_puts as u64;
    let stream = match build(dir, options) {
        Ok(s) => s,
        Err(e) => {
            report.unopenable = true;
            report.problems.push(format!(
                "the stream does not open: {e} (damage: {damage:?})"
            ));
            return Ok(report);
        }
    };
    let got = match read_all(&stream) {
        Ok(g) => g,
        Err(e) => {
            report.problems.push(format!("reading back failed: {e}"));
            return Ok(report);
        }
    };
    check_records(&puts[..durable_puts], &got, &mut report);
    for (shard, values) in &committed {
        let now = stream.checkpoint(GROUP, *shard).ok().flatten();
        let floor = durable_checkpoints.get(shard).copied();
        match (now, floor) {
            (None, Some(f)) => report
                .problems
                .push(format!("checkpoint of {shard} at {f} is lost")),
            (Some(n), Some(f)) if n < f => report
                .problems
                .push(format!("checkpoint of {shard} moved back from {f} to {n}")),
            (Some(n), _) if !values.contains(&n) => report
                .problems
                .push(format!("checkpoint of {shard} is {n}, never committed")),
            _ => {}
        }
    }
    // The reopened stream takes writes, and opens again with them.
    let after = stream
        .put_record(PutRecord::new("after", "after"))
        .and_then(|p| stream.sync().map(|()| p));
    drop(stream);
    match after {
        Err(e) => report
            .problems
            .push(format!("the reopened stream refuses a put: {e}")),
        Ok(p) => match build(dir, options).and_then(|s| {
            s.read_at(
                p.shard,
                Position::AtSequence(p.sequence),
                ReadLimit::records(1),
            )
        }) {
            Ok(b) if b.records.first().is_some_and(|r| r.data == "after") => {}
            Ok(_) => report
                .problems
                .push("the record put after the reopen is missing".to_owned()),
            Err(e) => report
                .problems
                .push(format!("the stream does not open a second time: {e}")),
        },
    }
    Ok(report)
}

fn read_all(stream: &Stream) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for shard in stream.shards() {
        let mut pos = Position::TrimHorizon;
        loop {
            let b = stream.read_at(shard.id, pos, ReadLimit::records(1000))?;
            if b.records.is_empty() {
                break;
            }
            out.extend(b.records);
            pos = b.next;
        }
    }
    Ok(out)
}

/// Every record of `must` in `got` once, with its key and data; each key's values in
/// order.
fn check_records(must: &[Put], got: &[Record], report: &mut StreamPowerLossReport) {
    let mut seen: HashMap<&[u8], u32> = HashMap::new();
    for r in got {
        *seen.entry(&r.data[..]).or_default() += 1;
    }
    for (data, n) in &seen {
        if *n > 1 {
            report.duplicate_records += u64::from(n - 1);
            report.problems.push(format!(
                "record {:?} read {n} times",
                String::from_utf8_lossy(data)
            ));
        }
    }
    let at: HashMap<(ShardId, SequenceNumber), &Record> =
        got.iter().map(|r| ((r.shard, r.sequence), r)).collect();
    for p in must {
        let ok = at
            .get(&(p.shard, p.sequence))
            .is_some_and(|r| r.data == p.data.as_bytes() && r.partition_key.as_str() == p.key);
        if !ok {
            report.lost_acknowledged += 1;
            report.problems.push(format!(
                "acknowledged record {} at {}/{} is lost",
                p.data, p.shard, p.sequence
            ));
        }
    }
    let mut last: HashMap<&str, u64> = HashMap::new();
    for r in got {
        let text = std::str::from_utf8(&r.data).unwrap_or("");
        let Some((key, v)) = text.rsplit_once(':') else {
            report
                .problems
                .push(format!("record {text:?} was never put"));
            continue;
        };
        let Ok(v) = v.parse::<u64>() else {
            report
                .problems
                .push(format!("record {text:?} was never put"));
            continue;
        };
        if let Some(prev) = last.insert(key, v)
            && prev >= v
        {
            report
                .problems
                .push(format!("key {key}: value {v} read after {prev}"));
        }
    }
}
