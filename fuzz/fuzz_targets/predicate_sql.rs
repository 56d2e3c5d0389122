//! Fuzzes SQL predicates translated into core predicates.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lakehouse_query::fuzzing::decode_predicate(data));
