//! Fuzzes a table's newest commit, replayed through delta_kernel.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lakehouse_storage::fuzzing::open_commit(data));
