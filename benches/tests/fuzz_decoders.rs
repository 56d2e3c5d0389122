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
    fuzz_target("log_commit", 60);
}

#[test]
fn fuzz_log_checkpoint() {
    fuzz_target("log_checkpoint", 60);
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
    fuzz_target("stream_segment", 300);
}

#[test]
fn fuzz_stream_metadata() {
    fuzz_target("stream_metadata", 300);
}

#[test]
fn fuzz_workflow_definition() {
    fuzz_target("workflow_definition", 600);
}

#[test]
fn fuzz_workflow_history() {
    fuzz_target("workflow_history", 300);
}

#[test]
fn fuzz_predicate_sql() {
    fuzz_target("predicate_sql", 600);
}

#[test]
fn fuzz_predicate_eval() {
    fuzz_target("predicate_eval", 3000);
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
