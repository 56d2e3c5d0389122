//! Integration tests of `lakehouse-core`: the in-memory implementations against the
//! conformance suites, and property tests of the predicate language.

mod conformance_memory;
mod predicate_props;
