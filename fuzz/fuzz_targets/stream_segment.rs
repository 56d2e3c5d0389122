//! Fuzzes durable stream segment frames.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lakehouse_stream::fuzzing::open_segment(data));
