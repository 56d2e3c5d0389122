//! What the Lakehouse examples and the `lakehouse-bench` report share.
//!
//! The main example (`retail_lakehouse`) and the end-to-end benchmark (`lakehouse-bench
//! e2e`) run the same synthetic retail pipeline, and the TPC-H test and `lakehouse-bench
//! query` check the same answers; this library holds what they share, so that a
//! benchmark measures exactly what an example or a test does:
//!
//! * [`workload`]: the catalogue, users with a favourite category, Zipf item popularity,
//!   the four event types as fixed 32-byte records, the `events` table schema, the
//!   decoder from stream records into rows, and the materialized views' SQL;
//! * [`hot`]: the cache tier the stream feeds (trending, top sellers, prices, sales);
//! * [`zipf`]: the one Zipf sampler (also used by the cache benchmark's traces);
//! * [`freshness`]: event-to-stage latency samples and their percentiles;
//! * [`tpch`]: the 22 TPC-H queries and the checker of their answers against DuckDB's;
//! * [`sql_server`]: the Postgres wire-protocol endpoint of the `sql_server` example
//!   (in the library so that tests and the benchmark start it in-process);
//! * [`peers`]: the Python peers the tests write tables with;
//! * [`worker`] (feature `distributed`): the command line and store openers of the
//!   `lakehouse_worker` query worker.

pub mod freshness;
pub mod hot;
pub mod peers;
pub mod sql_server;
pub mod tpch;
#[cfg(feature = "distributed")]
pub mod worker;
pub mod workload;
pub mod zipf;
