//! SQL that writes: the engine's writable tables and its table catalog.

mod catalog;
