//! Fuzzes persisted workflow histories, loaded and resumed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lakehouse_flow::fuzzing::resume_history(data));
