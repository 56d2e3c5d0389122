//! Fuzzes workflow definitions (JSON), parsed and run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lakehouse_flow::fuzzing::run_definition(data));
