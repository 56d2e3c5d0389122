//! Integration tests of `lakehouse-stream`.

mod group;
mod sink;
mod stream;
