//! Integration tests of lakehouse-query: one binary, one module per concept.

mod common;
mod dml;
mod engine;
mod mv;
mod slices;
