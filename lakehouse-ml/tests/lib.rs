//! Integration tests of `lakehouse-ml`: quality on planted preferences, determinism,
//! online fold-in, cold start, serving paths, persistence, bad input and properties.

mod common;

mod bad_input;
mod cold_start;
mod online;
mod persistence;
mod properties;
mod quality;
mod serving;
