//! Integration tests of `lakehouse-stream`.

mod stream;
