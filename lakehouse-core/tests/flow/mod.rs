//! The flow runtime against the in-memory log, in simulated time.
#![cfg(feature = "flow")]

mod trigger;
mod workflow;
