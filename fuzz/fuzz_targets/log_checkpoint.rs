//! Fuzzes a table's checkpoint (Parquet), replayed through delta_kernel.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lakehouse_storage::fuzzing::open_checkpoint(data));
