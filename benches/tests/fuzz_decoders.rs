//! Bounded fuzzing of every decoder that reads bytes from disk or users: arbitrary
//! bytes (proptest) and structure-aware mutations of valid inputs (the generators of
//! `lakehouse-bench`'s fuzzing, `src/fuzz.rs`), asserting that no input panics; and
//! every crash input found so far, kept as a named test.

use std::sync::{Mutex, PoisonError};

use proptest::collection::vec;
use proptest::prelude::*;

#[path = "../src/fuzz.rs"]
#[allow(dead_code)]
mod fuzz;

/// The seed of the structure-aware inputs.
const SEED: u64 = 22;

/// Panics are attributed to the input that runs while they happen: one target at a
/// time.
static SERIAL: Mutex<()> = Mutex::new(());

/// The panic messages of `inputs` on target `name`.
fn panics_of(name: &str, inputs: impl Iterator<Item = Vec<u8>>) -> Vec<String> {
    let target = fuzz::target(name).expect("a target of that name");
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let mut found = Vec::new();
    let _fuzzing = fuzz::Fuzzing::start();
    for bytes in inputs {
        if let Err(message) = fuzz::check(target, &bytes) {
            found.push(format!("{message}\n  input: {}", fuzz::escaped(&bytes)));
            if found.len() == 3 {
                break;
            }
        }
    }
    found
}

/// Runs `count` generated inputs of target `name` and fails with the first panics.
fn fuzz_target(name: &str, count: u64) {
    let target = fuzz::target(name).expect("a target of that name");
    let found = panics_of(name, (0..count).map(|i| fuzz::input(target, SEED, i)));
    assert!(
        found.is_empty(),
        "{name} panicked on generated inputs:\n{}",
        found.join("\n")
    );
}

/// Fails if `bytes` makes target `name` panic.
fn no_panic(name: &str, bytes: &[u8]) {
    let found = panics_of(name, std::iter::once(bytes.to_vec()));
    assert!(found.is_empty(), "{name}: {}", found.join("\n"));
}

// ---------------------------------------------------------------------------------
// The seed corpora are real: fuzzing mutations of nothing would prove nothing.

#[test]
fn the_seed_corpora_hold_real_files() {
    let log = lakehouse_storage::fuzzing::sample_log();
    let commits = log.iter().filter(|(p, _)| p.ends_with(".json")).count();
    assert!(commits >= 5, "commits in the sample log: {log:?}");
    assert!(
        log.iter()
            .any(|(p, b)| p.ends_with(".checkpoint.parquet") && b.starts_with(b"PAR1")),
        "the sample log has a checkpoint"
    );
    let stream = lakehouse_stream::fuzzing::sample_files();
    let segments = stream.iter().filter(|(p, _)| p.ends_with(".seg")).count();
    assert!(segments >= 4, "segments: {segments}");
    assert!(stream.iter().any(|(p, _)| p == "TOPOLOGY"));
    assert!(stream.iter().any(|(p, _)| p == "CHECKPOINTS"));
    let history = lakehouse_flow::fuzzing::sample_history();
    let events = history
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert!(events >= 10, "history events: {events}");
    assert!(
        String::from_utf8_lossy(history).contains("ExecutionSucceeded"),
        "the sample execution succeeded"
    );
}

// ---------------------------------------------------------------------------------
// Structure-aware mutations of valid inputs, a bounded number per target.

#[test]
fn fuzz_commit_lines() {
    fuzz_target("commit_lines", 3000);
}

#[test]
fn fuzz_log_commit() {
    fuzz_target("log_commit", 200);
}

#[test]
fn fuzz_log_checkpoint() {
    fuzz_target("log_checkpoint", 200);
}

#[test]
fn fuzz_partition_value() {
    fuzz_target("partition_value", 5000);
}

#[test]
fn fuzz_partition_path() {
    fuzz_target("partition_path", 5000);
}

#[test]
fn fuzz_stream_segment() {
    fuzz_target("stream_segment", 1000);
}

#[test]
fn fuzz_stream_metadata() {
    fuzz_target("stream_metadata", 1000);
}

#[test]
fn fuzz_workflow_definition() {
    fuzz_target("workflow_definition", 600);
}

#[test]
fn fuzz_workflow_history() {
    fuzz_target("workflow_history", 600);
}

#[test]
fn fuzz_predicate_sql() {
    fuzz_target("predicate_sql", 600);
}

#[test]
fn fuzz_predicate_eval() {
    fuzz_target("predicate_eval", 3000);
}

/// A longer run for exploring: `FUZZ_SEED` (default 1) and `FUZZ_INPUTS` per unit of
/// weight (default 1000); prints each target's inputs per second.
///
/// `FUZZ_SEED=7 cargo test --workspace --all-features --test fuzz_decoders -- --ignored --nocapture`
#[test]
#[ignore = "minutes long; run by hand with a seed"]
fn explore_every_target() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (seed, per) = (env("FUZZ_SEED", 1), env("FUZZ_INPUTS", 1000));
    let mut failures = Vec::new();
    for t in fuzz::TARGETS {
        let n = per * u64::from(t.weight);
        let started = std::time::Instant::now();
        let found = panics_of(t.name, (0..n).map(|i| fuzz::input(t, seed, i)));
        let rate = n as f64 / started.elapsed().as_secs_f64();
        println!("{}: {n} inputs, {rate:.0} per second", t.name);
        failures.extend(found.into_iter().map(|f| format!("{}: {f}", t.name)));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `run` (the benchmark's fuzzing) stops after its inputs when the budget is spent,
/// shares them out by weight, and derives each input from the seed and its index.
#[test]
fn run_shares_inputs_by_weight_and_is_deterministic() {
    let weights: u64 = fuzz::TARGETS.iter().map(|t| u64::from(t.weight)).sum();
    let report = {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        fuzz::run(3, 2 * weights, std::time::Duration::ZERO)
    };
    assert_eq!(report.inputs, 2 * weights);
    assert_eq!(report.panics, 0, "{:?}", report.first_panic);
    for (t, (name, n)) in fuzz::TARGETS.iter().zip(&report.by_target) {
        assert_eq!((*name, *n), (t.name, 2 * u64::from(t.weight)));
    }
    for t in fuzz::TARGETS {
        assert_eq!(fuzz::input(t, 3, 5), fuzz::input(t, 3, 5), "{}", t.name);
    }
    let t = fuzz::target("predicate_eval").unwrap();
    assert_ne!(fuzz::input(t, 3, 5), fuzz::input(t, 4, 5));
}

/// The harness itself: a panic in the entry or on a thread it starts is reported, with
/// its message.
#[test]
fn the_harness_sees_panics_on_every_thread() {
    fn direct(_: &[u8]) {
        panic!("direct panic");
    }
    fn on_a_thread(_: &[u8]) {
        let _ = std::thread::spawn(|| panic!("panic on a thread")).join();
    }
    fn quiet(_: &[u8]) {}
    let target = |entry: fn(&[u8])| fuzz::Target {
        name: "harness",
        entry,
        generate: |_| Vec::new(),
        weight: 1,
    };
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let _fuzzing = fuzz::Fuzzing::start();
    let e = fuzz::check(&target(direct), b"").unwrap_err();
    assert!(e.contains("direct panic"), "{e}");
    let e = fuzz::check(&target(on_a_thread), b"").unwrap_err();
    assert!(e.contains("panic on a thread"), "{e}");
    assert_eq!(fuzz::check(&target(quiet), b""), Ok(()));
}

// ---------------------------------------------------------------------------------
// Arbitrary bytes.

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_commit_lines(bytes in vec(any::<u8>(), 0..512)) {
        no_panic("commit_lines", &bytes);
    }

    #[test]
    fn arbitrary_partition_values(bytes in vec(any::<u8>(), 0..64)) {
        no_panic("partition_value", &bytes);
    }

    #[test]
    fn arbitrary_partition_paths(bytes in vec(any::<u8>(), 0..64)) {
        no_panic("partition_path", &bytes);
    }

    #[test]
    fn arbitrary_predicates(bytes in vec(any::<u8>(), 0..128)) {
        no_panic("predicate_eval", &bytes);
    }

    #[test]
    fn arbitrary_sql_predicates(text in "[a-z0-9_ ()<>=!'.,+*/-]{0,40}") {
        no_panic("predicate_sql", text.as_bytes());
    }

    #[test]
    fn arbitrary_workflow_definitions(bytes in vec(any::<u8>(), 0..256)) {
        no_panic("workflow_definition", &bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_checkpoints(bytes in vec(any::<u8>(), 0..512)) {
        no_panic("log_checkpoint", &bytes);
    }

    #[test]
    fn arbitrary_segments(bytes in vec(any::<u8>(), 0..256)) {
        no_panic("stream_segment", &bytes);
    }

    #[test]
    fn arbitrary_stream_metadata(bytes in vec(any::<u8>(), 0..128)) {
        no_panic("stream_metadata", &bytes);
    }

    #[test]
    fn arbitrary_histories(bytes in vec(any::<u8>(), 0..256)) {
        no_panic("workflow_history", &bytes);
    }
}

// ---------------------------------------------------------------------------------
// Crash inputs found by fuzzing, kept.

/// `Scalar::Decimal128` displayed `10^scale` as an `i128`: a scale over 38 (a
/// predicate literal any caller can build) overflowed.
/// A persisted workflow history of an unfinished execution whose last event has id
/// `u64::MAX`: the next event id (`last + 1`) overflowed when the execution was
/// resumed. Found by `lakehouse-bench faults --quick --seed 1`.
#[test]
fn crash_history_event_id_u64_max() {
    let sample = std::str::from_utf8(lakehouse_flow::fuzzing::sample_history()).unwrap();
    let first_seven: Vec<&str> = sample.lines().take(7).collect();
    assert!(first_seven[6].contains("\"id\":7,"), "{}", first_seven[6]);
    let bytes = first_seven
        .join("\n")
        .replacen("\"id\":7,", "\"id\":18446744073709551615,", 1);
    no_panic("workflow_history", bytes.as_bytes());
}

#[test]
fn crash_decimal_literal_with_scale_39_displays() {
    no_panic("predicate_eval", b"\xd2\x00W'");
    let d = lakehouse_core::Scalar::Decimal128 {
        value: -39,
        precision: 39,
        scale: 39,
    };
    assert_eq!(d.to_string(), format!("-0.{}39", "0".repeat(37)));
    let d = lakehouse_core::Scalar::Decimal128 {
        value: i128::MIN,
        precision: 38,
        scale: 2,
    };
    assert_eq!(d.to_string(), "-1701411834604692317316873037158841057.28");
}

/// A frame whose arrival time is `i64::MIN` (checksums valid): the age of the oldest
/// record in memory, `now - timestamp`, overflowed on open (retention trim).
#[test]
fn crash_segment_frame_arrived_at_i64_min() {
    no_panic(
        "stream_segment",
        b"\x1d \x00\x00\x00<z\xa4]\x18\xa4}7\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x05\x00\x00\x00key-3after 3",
    );
}

/// The same in a sealed segment read from disk: `millis_behind` (`newest - timestamp`)
/// overflowed.
#[test]
fn crash_sealed_segment_frame_arrived_at_i64_min() {
    no_panic(
        "stream_segment",
        b"\xa3\"\x00\x00\x00\xaf\xa6Q\xd2+o\xdb#\x00\x00\x00\x00\x00\x00\x00\x00\x93q\xdd6\xa2\x01\x00\x00\x05\x00\x00\x00key-0record 0 $\x00\x00\x00k\xcf\xfe!\xd2\xe8\xa4*\x01\x00\x00\x00\x00\x00\x00\x00\x93q\xdd6\xa2\x01\x00\x00\x05\x00\x00\x00key-2record 2 xx&\x00\x00\x00\xa7\xe7\x8a\xcc\x12Bb\xb8\x02\x00\x00\x00\x00\x00\x00\x00\x93q\xdd6\xa2\x01\x00\x00\x05\x00\x00\x00key-4record 4 xxxx'\x00\x00\x00\xae\x98I\xb3\xcdV\xc5\xdf\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80\x05\x00\x00\x00key-0record 5 xxxxx",
    );
}
