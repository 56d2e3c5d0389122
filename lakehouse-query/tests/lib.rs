//! Integration tests of lakehouse-query: one binary, one module per concept.

mod common;
#[cfg(feature = "distributed")]
mod distributed;
mod dml;
mod engine;
mod mv;
mod slices;
