//! Integration tests of lakehouse-storage.

mod append_types;
mod common;
mod crash;
mod delta_features;
mod delta_fixtures;
mod errors;
#[cfg(feature = "fault-injection")]
mod faults;
mod interop;
mod maintenance;
mod mutate;
mod nan_pruning;
mod nested;
mod page_index;
mod partitions;
mod peer_features;
mod power_loss;
mod processes;
#[cfg(feature = "s3")]
mod s3;
mod table;
