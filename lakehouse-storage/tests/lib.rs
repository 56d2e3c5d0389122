//! Integration tests of lakehouse-storage.

mod common;
mod crash;
mod interop;
mod maintenance;
mod partitions;
mod table;
