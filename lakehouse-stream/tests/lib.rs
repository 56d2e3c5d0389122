//! Integration tests of `lakehouse-stream`.

mod sink;
mod stream;
