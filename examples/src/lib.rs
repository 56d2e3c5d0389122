//! Shared helpers of the Lakehouse examples.
