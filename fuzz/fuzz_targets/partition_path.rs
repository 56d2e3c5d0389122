//! Fuzzes `add.path` URIs to object paths.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lakehouse_storage::fuzzing::decode_partition_path(data));
