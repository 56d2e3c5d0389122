//! Fuzzes durable stream TOPOLOGY and CHECKPOINTS files.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lakehouse_stream::fuzzing::open_metadata(data));
