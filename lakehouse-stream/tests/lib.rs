//! Integration tests of `lakehouse-stream`.

mod durable;
mod group;
mod sink;
mod stream;
mod window;
