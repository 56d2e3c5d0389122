//! Integration tests of `lakehouse-flow`: the runtime against the in-memory log, in
//! simulated time.

mod trigger;
mod workflow;
mod workflow_definition;
mod workflow_history;
