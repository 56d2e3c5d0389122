//! Fuzzes Delta commit files (JSON lines) and what their actions carry.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lakehouse_storage::fuzzing::decode_commit(data));
