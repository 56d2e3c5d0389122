//! `lakehouse-ml`: under construction. This release has no public API yet.
