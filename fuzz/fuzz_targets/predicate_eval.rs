//! Fuzzes core predicates built from bytes, evaluated and pruned.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| lakehouse_core::fuzzing::evaluate_predicate(data));
