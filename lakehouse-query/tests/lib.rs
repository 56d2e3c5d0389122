//! Integration tests of lakehouse-query: one binary, one module per concept.

mod common;
mod engine;
mod mv;
mod slices;
