//! Integration tests of `lakehouse-stream`.

mod csv;
mod durable;
mod group;
mod sink;
mod stream;
mod window;
