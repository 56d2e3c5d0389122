//! Fuzzing of the decoders that read bytes from disk or from users: Delta commit lines
//! and checkpoints, partition values and paths, stream segments and metadata files,
//! workflow definitions and histories, SQL predicates and core predicates.
//!
//! Each [`TARGET`](TARGETS) pairs a crate's `fuzzing` entry point with a generator:
//! arbitrary bytes, and structure-aware mutations of valid inputs taken from real
//! tables, streams and workflows (bytes flipped, ranges cut or repeated, tokens and
//! extreme numbers spliced in; segment frames and metadata files re-checksummed after
//! the change, so that the decoders behind the checksums are reached). Input `i` of a
//! run with seed `s` depends on `(s, i)` alone.
//!
//! [`run`] feeds inputs round-robin (by weight) and catches panics; the crate tests
//! (`tests/fuzz_decoders.rs`) include this file and run a bounded number of inputs of
//! every target, and keep every crash input found as a named test. The cargo-fuzz
//! targets in `fuzz/` call the same entry points.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once, PoisonError};
use std::time::{Duration, Instant};

use lakehouse_core::fuzzing as core_fuzz;
use lakehouse_flow::fuzzing as flow_fuzz;
use lakehouse_query::fuzzing as query_fuzz;
use lakehouse_storage::fuzzing as storage_fuzz;
use lakehouse_stream::fuzzing as stream_fuzz;

/// What a fuzzing run did.
#[derive(Debug, Clone, Default)]
pub(crate) struct FuzzReport {
    /// Inputs run, over all targets.
    pub(crate) inputs: u64,
    /// Inputs that panicked.
    pub(crate) panics: u64,
    /// Inputs run per target.
    pub(crate) by_target: Vec<(&'static str, u64)>,
    /// The first panic: target, message and input.
    pub(crate) first_panic: Option<String>,
}

/// One decoder under fuzzing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    /// Its name (the cargo-fuzz target of the same name calls the same entry).
    pub(crate) name: &'static str,
    /// The entry point: runs the decoder, discards the outcome, must not panic.
    pub(crate) entry: fn(&[u8]),
    /// Makes an input.
    pub(crate) generate: fn(&mut Rng) -> Vec<u8>,
    /// Inputs per round of [`run`], against the others (slow targets get fewer).
    pub(crate) weight: u32,
}

/// The decoders, with their generators.
pub(crate) const TARGETS: &[Target] = &[
    Target {
        name: "commit_lines",
        entry: storage_fuzz::decode_commit,
        generate: gen_commit,
        weight: 8,
    },
    Target {
        name: "log_commit",
        entry: storage_fuzz::open_commit,
        generate: gen_commit,
        weight: 1,
    },
    Target {
        name: "log_checkpoint",
        entry: storage_fuzz::open_checkpoint,
        generate: gen_checkpoint,
        weight: 1,
    },
    Target {
        name: "partition_value",
        entry: storage_fuzz::decode_partition_value,
        generate: gen_partition_value,
        weight: 8,
    },
    Target {
        name: "partition_path",
        entry: storage_fuzz::decode_partition_path,
        generate: gen_partition_path,
        weight: 8,
    },
    Target {
        name: "stream_segment",
        entry: stream_fuzz::open_segment,
        generate: gen_segment,
        weight: 1,
    },
    Target {
        name: "stream_metadata",
        entry: stream_fuzz::open_metadata,
        generate: gen_stream_metadata,
        weight: 1,
    },
    Target {
        name: "workflow_definition",
        entry: flow_fuzz::run_definition,
        generate: gen_definition,
        weight: 4,
    },
    Target {
        name: "workflow_history",
        entry: flow_fuzz::resume_history,
        generate: gen_history,
        weight: 2,
    },
    Target {
        name: "predicate_sql",
        entry: query_fuzz::decode_predicate,
        generate: gen_predicate_sql,
        weight: 4,
    },
    Target {
        name: "predicate_eval",
        entry: core_fuzz::evaluate_predicate,
        generate: gen_predicate_bytes,
        weight: 8,
    },
];

/// The target named `name`.
// Used by benches/tests/fuzz_decoders.rs, which includes this module.
#[allow(dead_code)]
pub(crate) fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

// ---------------------------------------------------------------------------------
// Running

/// Runs `target` on `input`; the panic message if it panicked, or if code of the
/// workspace panicked on any other thread meanwhile (a runtime's worker that turns a
/// panic into an error still counts). A panic in a dependency's code that did not
/// reach the entry point (kernel's Parquet reader on its own runtime, which the
/// library reports as an error) does not count. Call it while a [`Fuzzing`] guard is
/// alive.
pub(crate) fn check(target: &Target, input: &[u8]) -> Result<(), String> {
    PANIC_MESSAGES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    let caught = panic::catch_unwind(AssertUnwindSafe(|| (target.entry)(input)));
    let messages = std::mem::take(
        &mut *PANIC_MESSAGES
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    let in_dependency = |m: &String| {
        m.lines()
            .next()
            .is_some_and(|l| l.contains("/.cargo/registry/"))
    };
    if caught.is_err() {
        return Err(messages
            .into_iter()
            .next()
            .unwrap_or_else(|| "a panic".to_owned()));
    }
    match messages.into_iter().find(|m| !in_dependency(m)) {
        Some(m) => Err(m),
        None => Ok(()),
    }
}

/// Input `index` of target `target` in a run with `seed`.
pub(crate) fn input(target: &Target, seed: u64, index: u64) -> Vec<u8> {
    let name_hash = target.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = Rng::new(seed ^ name_hash ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    (target.generate)(&mut rng)
}

/// `input` as a Rust byte string literal, for a regression test.
pub(crate) fn escaped(input: &[u8]) -> String {
    let mut out = String::from("b\"");
    for &b in input {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    out
}

/// Whether a [`Fuzzing`] guard is alive: panics are then counted, not printed.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The panics of the current input, on any thread, with their locations (the first
/// few).
static PANIC_MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// While alive, panics (on any thread) are counted for [`check`] instead of printed;
/// other panics go to the previous hook. One guard at a time.
pub(crate) struct Fuzzing(());

impl Fuzzing {
    pub(crate) fn start() -> Self {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = panic::take_hook();
            panic::set_hook(Box::new(move |info| {
                if ACTIVE.load(Ordering::SeqCst) {
                    let mut messages = PANIC_MESSAGES
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if messages.len() < 8 {
                        messages.push(info.to_string());
                    }
                } else {
                    previous(info);
                }
            }));
        });
        ACTIVE.store(true, Ordering::SeqCst);
        Fuzzing(())
    }
}

impl Drop for Fuzzing {
    fn drop(&mut self) {
        ACTIVE.store(false, Ordering::SeqCst);
    }
}

/// Fuzzes every target with inputs derived from `seed`, round-robin by weight, until
/// at least `min_inputs` inputs ran and `budget` is spent (whichever comes later),
/// catching panics (silenced while it runs).
///
/// It runs on a thread of its own, so that it may be called from anywhere (the entry
/// points run their own runtimes, which cannot start inside another's context).
/// `inputs` and `panics` are the figures `faults.fuzz_inputs` and `faults.fuzz_panics`.
pub(crate) fn run(seed: u64, min_inputs: u64, budget: Duration) -> FuzzReport {
    std::thread::spawn(move || run_here(seed, min_inputs, budget))
        .join()
        .unwrap_or_else(|_| FuzzReport {
            panics: 1,
            first_panic: Some("the fuzzing thread panicked".to_owned()),
            ..FuzzReport::default()
        })
}

/// [`run`] on the calling thread.
fn run_here(seed: u64, min_inputs: u64, budget: Duration) -> FuzzReport {
    // The seed corpora are built before the hook is silenced (they write real tables
    // and streams).
    let _ = (
        storage_fuzz::sample_log(),
        stream_fuzz::sample_files(),
        flow_fuzz::sample_history(),
    );
    let schedule: Vec<usize> = TARGETS
        .iter()
        .enumerate()
        .flat_map(|(i, t)| std::iter::repeat_n(i, t.weight as usize))
        .collect();
    let mut counts = vec![0u64; TARGETS.len()];
    let mut report = FuzzReport::default();
    let started = Instant::now();
    let fuzzing = Fuzzing::start();
    let mut slot = 0usize;
    while report.inputs < min_inputs || started.elapsed() < budget {
        let t = schedule[slot % schedule.len()];
        slot += 1;
        let target = &TARGETS[t];
        let bytes = input(target, seed, counts[t]);
        counts[t] += 1;
        report.inputs += 1;
        if let Err(message) = check(target, &bytes) {
            report.panics += 1;
            report.first_panic.get_or_insert_with(|| {
                let mut shown = escaped(&bytes);
                if shown.len() > 4096 {
                    shown.truncate(shown.floor_char_boundary(4096));
                    shown.push_str(&format!("… ({} bytes)", bytes.len()));
                }
                format!(
                    "{}: {message}; input {} of seed {seed}: {shown}",
                    target.name,
                    counts[t] - 1,
                )
            });
        }
    }
    drop(fuzzing);
    report.by_target = TARGETS.iter().map(|t| t.name).zip(counts).collect();
    report
}

// ---------------------------------------------------------------------------------
// Randomness and mutation

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`0` when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `1 / n`.
    pub(crate) fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub(crate) fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Tokens spliced into text inputs: JSON structure, extreme numbers, odd strings.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "false",
    "-0",
    "0",
    "-1",
    "1e309",
    "-1e309",
    "1e-400",
    "NaN",
    "Infinity",
    "-Infinity",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "0.000000000000000000000000000000000000001",
    "1.5",
    "2147483648",
    "-2147483649",
    "4294967296",
    "\"\"",
    "\"é\"",
    "\"\u{10ffff}\"",
    "é",
    "\u{0}",
    "\n",
    "\r\n",
    " ",
    "%",
    "%2",
    "%zz",
    "%C3",
    "%2F",
    "..",
    "/",
    "=",
    "__HIVE_DEFAULT_PARTITION__",
    "__EMPTY__",
];

/// Numbers that replace a run of digits.
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "4294967295",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "99999999999999999999999999999999999999999",
    "-9223372036854775808",
    "1e308",
    "1e309",
    "0.1",
    "1.0E10",
    "-0.0",
];

/// Applies one to four random edits to `input`.
pub(crate) fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = out.len();
        match rng.below(10) {
            0 if len > 0 => {
                let at = rng.below(len);
                out[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                out[at] = *rng.pick(&[
                    0u8, 0xff, 0x7f, 0x80, b'"', b'{', b'}', b',', b':', b'\n', b'9', b'-', b'.',
                    b'%', b' ',
                ]);
            }
            2 => out.truncate(rng.below(len + 1)),
            3 if len > 0 => {
                let at = rng.below(len);
                let n = rng.below((len - at).min(64) + 1);
                out.drain(at..at + n);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let n = rng.below((len - at).min(64) + 1);
                let copy = out[at..at + n].to_vec();
                let to = rng.below(out.len() + 1);
                out.splice(to..to, copy);
            }
            5 | 6 => {
                let at = rng.below(len + 1);
                let token = rng.pick(TOKENS).as_bytes().to_vec();
                out.splice(at..at, token);
            }
            7 => {
                // A run of digits becomes an extreme number.
                let starts: Vec<usize> = (0..len)
                    .filter(|&i| {
                        out[i].is_ascii_digit() && (i == 0 || !out[i - 1].is_ascii_digit())
                    })
                    .collect();
                if !starts.is_empty() {
                    let s = *rng.pick(&starts);
                    let e = (s..len).find(|&i| !out[i].is_ascii_digit()).unwrap_or(len);
                    out.splice(s..e, rng.pick(NUMBERS).bytes());
                }
            }
            8 => {
                let at = rng.below(len + 1);
                let junk = rng.bytes(8);
                out.splice(at..at, junk);
            }
            _ if len > 0 => {
                // Overwrite a string's contents (between two quotes) with a token.
                let quotes: Vec<usize> = (0..len).filter(|&i| out[i] == b'"').collect();
                if quotes.len() >= 2 {
                    let i = rng.below(quotes.len() - 1);
                    let (s, e) = (quotes[i] + 1, quotes[i + 1]);
                    out.splice(s..e, rng.pick(TOKENS).bytes());
                }
            }
            _ => {}
        }
    }
    out
}

/// Arbitrary bytes one time in `n`, else a mutation of one of `seeds`.
fn bytes_or_mutation(rng: &mut Rng, n: usize, seeds: &[&[u8]]) -> Vec<u8> {
    if seeds.is_empty() || rng.one_in(n) {
        return rng.bytes(256);
    }
    let seed = *rng.pick(seeds);
    if rng.one_in(6) {
        // Unchanged now and then: the valid input must also pass.
        return seed.to_vec();
    }
    mutate(rng, seed)
}

/// CRC32C (Castagnoli), bitwise: the checksum of segment frames and metadata files.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

// ---------------------------------------------------------------------------------
// Generators

fn log_files(suffix: &str) -> Vec<&'static [u8]> {
    storage_fuzz::sample_log()
        .iter()
        .filter(|(p, _)| p.ends_with(suffix))
        .map(|(_, b)| b.as_slice())
        .collect()
}

/// Partition value texts in every writer's form, and near misses.
const PARTITION_TEXTS: &[&str] = &[
    "",
    "eu",
    "2026-01-01",
    "2026-02-30",
    "+2026-01-01",
    "-0001-01-01",
    "262143-12-31",
    "2026-01-01 00:00:00",
    "2026-01-01T00:00:00.123456Z",
    "2026-01-01T00:00:00.1234567Z",
    "2026-01-01 00:00:00+01:00",
    "2026-01-01 00:00:00-1",
    "2026-01-01 00:00:00+99:99",
    "2026-01-01T00:00:00+0530",
    "2026-01-01 00:00",
    "1.25",
    "-0.005",
    "1E5",
    "1e-40",
    "1e2147483647",
    "1e-2147483648",
    "+.5",
    "-",
    ".",
    "e",
    "1.2.3",
    "\\u0041\\u00FF",
    "\\u+0FF\\u0041",
    "\\u00é",
    "true",
    "TRUE",
    "nan",
    "inf",
    "-Infinity",
    "9223372036854775808",
    "-128",
    "é\u{301}",
    "%2F",
];

fn gen_commit(rng: &mut Rng) -> Vec<u8> {
    let files = log_files(".json");
    let seeds: Vec<&[u8]> = files
        .iter()
        .copied()
        .filter(|b| b.first() == Some(&b'{'))
        .collect();
    match rng.below(4) {
        0 => {
            // Lines of different commits, spliced, then mutated.
            let mut lines: Vec<&[u8]> = seeds
                .iter()
                .flat_map(|b| b.split(|&c| c == b'\n'))
                .filter(|l| !l.is_empty())
                .collect();
            if lines.is_empty() {
                return rng.bytes(256);
            }
            let mut out = Vec::new();
            for _ in 0..=rng.below(4) {
                let line = *rng.pick(&lines);
                out.extend_from_slice(&mutate(rng, line));
                out.push(b'\n');
            }
            lines.clear();
            out
        }
        1 => {
            // An `add` whose partition values and statistics are odd.
            let v = |rng: &mut Rng| {
                if rng.one_in(5) {
                    "null".to_owned()
                } else {
                    format!("{:?}", rng.pick(PARTITION_TEXTS))
                }
            };
            let stats = format!(
                "{{\"numRecords\":{},\"minValues\":{{\"id\":{},\"s\":{:?},\"ts\":{:?}}},\"maxValues\":{{\"id\":{},\"s\":{:?},\"ts\":{:?}}},\"nullCount\":{{\"id\":{}}}}}",
                rng.pick(NUMBERS),
                rng.pick(NUMBERS),
                rng.pick(PARTITION_TEXTS),
                rng.pick(PARTITION_TEXTS),
                rng.pick(NUMBERS),
                rng.pick(PARTITION_TEXTS),
                rng.pick(PARTITION_TEXTS),
                rng.pick(NUMBERS),
            );
            let line = format!(
                "{{\"add\":{{\"path\":{:?},\"partitionValues\":{{\"region\":{},\"d\":{},\"amount\":{},\"flag\":{},\"ts_day\":{}}},\"size\":{},\"modificationTime\":{},\"dataChange\":true,\"stats\":{:?}}}}}\n",
                rng.pick(PATH_PIECES),
                v(rng),
                v(rng),
                v(rng),
                v(rng),
                v(rng),
                rng.pick(NUMBERS),
                rng.pick(NUMBERS),
                stats
            );
            let line = line.into_bytes();
            if rng.one_in(2) {
                line
            } else {
                mutate(rng, &line)
            }
        }
        _ => bytes_or_mutation(rng, 10, &seeds),
    }
}

fn gen_checkpoint(rng: &mut Rng) -> Vec<u8> {
    let seeds = log_files(".checkpoint.parquet");
    let Some(&seed) = seeds.first() else {
        return rng.bytes(512);
    };
    if rng.one_in(10) {
        return rng.bytes(512);
    }
    let mut out = seed.to_vec();
    // Most edits go to the footer (the Thrift metadata, read first), the rest
    // anywhere.
    for _ in 0..=rng.below(3) {
        let len = out.len();
        if len == 0 {
            break;
        }
        let at = if rng.one_in(3) {
            rng.below(len)
        } else {
            len - 1 - rng.below(len.min(600))
        };
        match rng.below(4) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out[at] = *rng.pick(&[0u8, 0xff, 0x7f, 0x80, 0x01]),
            2 => {
                let n = rng.below(16).min(len - at);
                out.drain(at..at + n);
            }
            _ => {
                let junk = rng.bytes(8);
                out.splice(at..at, junk);
            }
        }
    }
    out
}

fn gen_partition_value(rng: &mut Rng) -> Vec<u8> {
    let mut out = vec![rng.next_u64() as u8];
    if rng.one_in(6) {
        out.extend(rng.bytes(40));
    } else {
        let text = rng.pick(PARTITION_TEXTS).as_bytes();
        out.extend(if rng.one_in(2) {
            text.to_vec()
        } else {
            mutate(rng, text)
        });
    }
    out
}

/// Pieces of `add.path` URIs.
const PATH_PIECES: &[&str] = &[
    "region=eu/part-0001.parquet",
    "a%2Fb=c%3Dd/f.parquet",
    "%",
    "%4",
    "%+f",
    "%-1",
    "%C3%A9",
    "%C3",
    "%FF%FE",
    "..",
    ".",
    "/abs/x.parquet",
    "a//b",
    "s3://bucket/t/x.parquet",
    "file:///etc/passwd",
    "%2E%2E/x",
    "x%00y",
    "é/ü",
    "d=__HIVE_DEFAULT_PARTITION__/f",
    "#",
    "?q",
    "a\\b",
];

fn gen_partition_path(rng: &mut Rng) -> Vec<u8> {
    if rng.one_in(6) {
        return rng.bytes(64);
    }
    let mut out = Vec::new();
    for i in 0..=rng.below(3) {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(rng.pick(PATH_PIECES).as_bytes());
    }
    if rng.one_in(2) {
        mutate(rng, &out)
    } else {
        out
    }
}

/// Frame offsets of a segment: (start, body length).
fn frames(segment: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 12 <= segment.len() {
        let len = u32::from_le_bytes([
            segment[at],
            segment[at + 1],
            segment[at + 2],
            segment[at + 3],
        ]) as usize;
        if at + 12 + len > segment.len() {
            break;
        }
        out.push((at, len));
        at += 12 + len;
    }
    out
}

/// Recomputes the checksums of the frame at `at` with body length `len` (clamped to
/// the bytes present).
fn reseal(seg: &mut [u8], at: usize, len: usize) {
    let end = (at + 12 + len).min(seg.len());
    if at + 12 > seg.len() {
        return;
    }
    let body = crc32c(&seg[at + 12..end]);
    seg[at + 4..at + 8].copy_from_slice(&body.to_le_bytes());
    let header = crc32c(&seg[at..at + 8]);
    seg[at + 8..at + 12].copy_from_slice(&header.to_le_bytes());
}

fn gen_segment(rng: &mut Rng) -> Vec<u8> {
    let segments: Vec<&[u8]> = stream_fuzz::sample_files()
        .iter()
        .filter(|(p, _)| p.ends_with(".seg"))
        .map(|(_, b)| b.as_slice())
        .collect();
    let pick = rng.next_u64() as u8;
    let mut out = vec![pick];
    if segments.is_empty() || rng.one_in(10) {
        out.extend(rng.bytes(256));
        return out;
    }
    let mut seg = segments[usize::from(pick) % segments.len()].to_vec();
    let fr = frames(&seg);
    match rng.below(6) {
        // Raw damage: caught by the checksums (or a torn tail).
        0 => seg = mutate(rng, &seg),
        1 => seg.truncate(rng.below(seg.len() + 1)),
        // A field of a frame changed, checksums recomputed.
        2..=4 if !fr.is_empty() => {
            let (at, len) = *rng.pick(&fr);
            let field = rng.below(5);
            let any = rng.next_u64();
            let value: u64 = *rng.pick(&[0, 1, u64::MAX, u64::from(u32::MAX), 1 << 63, any]);
            match field {
                // Body length: the frame then claims other bytes.
                0 => {
                    let v = value as u32;
                    seg[at..at + 4].copy_from_slice(&v.to_le_bytes());
                    reseal(&mut seg, at, v as usize);
                }
                // Sequence number.
                1 => {
                    seg[at + 12..at + 20].copy_from_slice(&value.to_le_bytes());
                    reseal(&mut seg, at, len);
                }
                // Arrival time.
                2 => {
                    seg[at + 20..at + 28].copy_from_slice(&value.to_le_bytes());
                    reseal(&mut seg, at, len);
                }
                // Key length.
                3 => {
                    seg[at + 28..at + 32].copy_from_slice(&(value as u32).to_le_bytes());
                    reseal(&mut seg, at, len);
                }
                // Key bytes that are not UTF-8.
                _ => {
                    if len > 20 {
                        seg[at + 32] = 0xff;
                    }
                    reseal(&mut seg, at, len);
                }
            }
        }
        // A valid frame repeated, or frames reordered.
        _ if fr.len() >= 2 => {
            let (a, la) = fr[0];
            let (b, lb) = fr[fr.len() - 1];
            let first = seg[a..a + 12 + la].to_vec();
            let last = seg[b..b + 12 + lb].to_vec();
            seg = [last, first].concat();
        }
        _ => seg = mutate(rng, &seg),
    }
    out.extend(seg);
    out
}

fn gen_stream_metadata(rng: &mut Rng) -> Vec<u8> {
    let pick = rng.next_u64() as u8;
    let name = if pick.is_multiple_of(2) {
        "TOPOLOGY"
    } else {
        "CHECKPOINTS"
    };
    let Some((_, text)) = stream_fuzz::sample_files().iter().find(|(p, _)| p == name) else {
        let mut out = vec![pick];
        out.extend(rng.bytes(128));
        return out;
    };
    let body_end = text
        .iter()
        .rposition(|&b| b == b'c')
        .filter(|&i| text[i..].starts_with(b"crc "))
        .unwrap_or(text.len());
    let body = if rng.one_in(2) {
        invented_metadata(rng, pick.is_multiple_of(2))
    } else {
        mutate(rng, &text[..body_end])
    };
    let mut out = vec![pick];
    out.extend_from_slice(&body);
    if !rng.one_in(5) {
        // Checksummed again: the parser behind the checksum sees the edit.
        out.extend_from_slice(format!("crc {:08x}\n", crc32c(&body)).as_bytes());
    }
    out
}

/// A well-formed `TOPOLOGY` (or `CHECKPOINTS`) body whose contents are odd: parents
/// that are the shard itself, later shards or missing ones, empty, inverted and
/// overlapping hash ranges, checkpoints of missing shards and far sequence numbers.
fn invented_metadata(rng: &mut Rng, topology: bool) -> Vec<u8> {
    let shards = 1 + rng.below(5);
    let mut text = String::new();
    if topology {
        text.push_str("lakehouse-stream topology 1\n");
        let bound = |rng: &mut Rng| -> u128 {
            match rng.below(4) {
                0 => 0,
                1 => u128::MAX,
                2 => u128::MAX / 2,
                _ => u128::from(rng.next_u64()) << 64,
            }
        };
        for id in 0..shards {
            let parents: Vec<String> = (0..rng.below(3))
                .map(|_| rng.below(shards + 2).to_string())
                .collect();
            let parents = if parents.is_empty() {
                "-".to_owned()
            } else {
                parents.join(",")
            };
            let (start, end) = (bound(rng), bound(rng));
            let state = if rng.one_in(2) { "open" } else { "closed" };
            text.push_str(&format!("shard {id} {parents} {start} {end} {state}\n"));
        }
    } else {
        text.push_str("lakehouse-stream checkpoints 1\n");
        for _ in 0..rng.below(4) {
            let shard = rng.below(8);
            let seq = *rng.pick(&[0, 1, 7, 64, u64::MAX, 1 << 63]);
            let group: String = ["67", "", "ff", "c3a9", "00"][rng.below(5)].to_owned();
            text.push_str(&format!("{shard} {seq} {group}\n"));
        }
    }
    text.into_bytes()
}

/// Paths and values spliced into workflow definitions.
const WORKFLOW_TOKENS: &[&str] = &[
    "\"$\"",
    "\"$.\"",
    "\"$..a\"",
    "\"$[0]\"",
    "\"$.items[-1]\"",
    "\"$.items[99999999999999999999]\"",
    "\"$.a.b.c\"",
    "\"$['x']\"",
    "\"$.items[*]\"",
    "\"States.Format('{}', $.n)\"",
    "\"$$.Execution.Id\"",
    "-1",
    "0",
    "1e308",
    "18446744073709551616",
    "9223372036854775807",
    "0.5",
    "\"2026-13-01T00:00:00Z\"",
    "\"\"",
    "[]",
    "{}",
    "null",
    "true",
];

fn gen_definition(rng: &mut Rng) -> Vec<u8> {
    let seed = flow_fuzz::SAMPLE_DEFINITION.as_bytes();
    if rng.one_in(12) {
        return rng.bytes(256);
    }
    let mut out = seed.to_vec();
    if rng.one_in(2) {
        // A value replaced with a path, a number or an empty structure.
        for _ in 0..=rng.below(2) {
            let colons: Vec<usize> = (0..out.len()).filter(|&i| out[i] == b':').collect();
            if colons.is_empty() {
                break;
            }
            let c = *rng.pick(&colons) + 1;
            let end = (c..out.len())
                .find(|&i| matches!(out[i], b',' | b'}' | b']'))
                .unwrap_or(out.len());
            out.splice(c..end, rng.pick(WORKFLOW_TOKENS).bytes());
        }
        out
    } else {
        mutate(rng, &out)
    }
}

fn gen_history(rng: &mut Rng) -> Vec<u8> {
    let history = flow_fuzz::sample_history();
    if history.is_empty() || rng.one_in(12) {
        return rng.bytes(256);
    }
    let mut lines: Vec<Vec<u8>> = history
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    for _ in 0..=rng.below(3) {
        if lines.is_empty() {
            break;
        }
        let i = rng.below(lines.len());
        match rng.below(4) {
            // The execution crashed after a prefix of its history.
            0 => lines.truncate(i),
            1 => {
                let l = lines[i].clone();
                lines.insert(rng.below(lines.len() + 1), l);
            }
            2 => {
                lines.remove(i);
            }
            _ => lines[i] = mutate(rng, &lines[i]),
        }
    }
    lines.join(&b'\n')
}

/// SQL pieces for predicates over the sample columns.
const SQL_COLUMNS: &[&str] = &[
    "i8", "i32", "i64", "u64", "f32", "f64", "s", "bin", "b", "d", "ts_ms", "ts", "dec", "missing",
];
const SQL_LITERALS: &[&str] = &[
    "0",
    "-1",
    "127",
    "128",
    "-129",
    "32768",
    "2147483648",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1.5",
    "-0.0",
    "1e308",
    "1e309",
    "'a'",
    "''",
    "'é'",
    "NULL",
    "TRUE",
    "X'00ff'",
    "DATE '2026-01-01'",
    "DATE '-1000-01-01'",
    "TIMESTAMP '2026-01-01 00:00:00'",
    "TIMESTAMP '1677-09-21 00:00:00'",
    "CAST(1 AS DECIMAL(38, 0))",
    "CAST(1.25 AS DECIMAL(10, 2))",
    "CAST(1 AS DECIMAL(38, 38))",
    "99999999999999999999999999999999999999",
    "CAST('NaN' AS DOUBLE)",
    "CAST(1 AS TINYINT)",
    "CAST(300 AS SMALLINT)",
    "CAST(-1 AS INT UNSIGNED)",
    "interval '1 day'",
];
const SQL_OPS: &[&str] = &["=", "<>", "<", "<=", ">", ">="];

fn sql_atom(rng: &mut Rng, depth: usize) -> String {
    let c = rng.pick(SQL_COLUMNS);
    match rng.below(if depth > 3 { 5 } else { 8 }) {
        0 => format!("{c} {} {}", rng.pick(SQL_OPS), rng.pick(SQL_LITERALS)),
        1 => format!("{} {} {c}", rng.pick(SQL_LITERALS), rng.pick(SQL_OPS)),
        2 => format!(
            "{c} {}BETWEEN {} AND {}",
            if rng.one_in(2) { "NOT " } else { "" },
            rng.pick(SQL_LITERALS),
            rng.pick(SQL_LITERALS)
        ),
        3 => {
            let n = rng.below(4);
            let items: Vec<&str> = (0..n).map(|_| *rng.pick(SQL_LITERALS)).collect();
            format!(
                "{c} {}IN ({})",
                if rng.one_in(2) { "NOT " } else { "" },
                items.join(", ")
            )
        }
        4 => format!("{c} IS {}NULL", if rng.one_in(2) { "NOT " } else { "" }),
        5 => format!(
            "({} AND {})",
            sql_atom(rng, depth + 1),
            sql_atom(rng, depth + 1)
        ),
        6 => format!(
            "({} OR {})",
            sql_atom(rng, depth + 1),
            sql_atom(rng, depth + 1)
        ),
        _ => format!("NOT ({})", sql_atom(rng, depth + 1)),
    }
}

fn gen_predicate_sql(rng: &mut Rng) -> Vec<u8> {
    if rng.one_in(12) {
        return rng.bytes(64);
    }
    let text = sql_atom(rng, 0).into_bytes();
    if rng.one_in(4) {
        mutate(rng, &text)
    } else {
        text
    }
}

fn gen_predicate_bytes(rng: &mut Rng) -> Vec<u8> {
    rng.bytes(96)
}
