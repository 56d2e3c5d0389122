//! SQL over any [`TableSource`] on Apache DataFusion: the Redshift layer of the Lakehouse
//! workspace.
//!
//! A [`QueryEngine`] registers tables from any [`TableSource`] (the partitioned store, a
//! stream tail, a [`MemoryTable`](lakehouse_core::MemoryTable)), Parquet or CSV files,
//! and answers SQL in DataFusion's full dialect over them:
//!
//! * **Pushdown.** Filters become core [`Predicate`](lakehouse_core::Predicate)s, exact
//!   where the source says it filters exactly and inexact (the engine filters again)
//!   otherwise; projections and limits are pushed down too, and the source's per-file
//!   statistics feed the planner. A source that describes its scan as Parquet files
//!   ([`TableSource::scan_files`], as Delta tables do) is read by DataFusion's own
//!   Parquet scan: files spread over the
//!   partitions, row groups and pages pruned, deletion vectors as row selections, the
//!   filters evaluated above the scan or, if asked, in the decoder
//!   ([`EngineBuilder::filter_pushdown`]). String and binary columns reach the
//!   engine (and results) as views, `Utf8View` and `BinaryView`, as DataFusion's own
//!   reader gives them; [`EngineBuilder::string_views`] keeps the source's types.
//! * **Consistency.** A query reads one version of each table: scans are pinned to the
//!   versions read when the query starts.
//! * **Workload management.** Named [`WorkloadQueue`]s with concurrency slots and bounded
//!   waiting, a per-query memory limit (operators spill or fail with
//!   [`ErrorKind::ResourcesExhausted`]), timeouts and [`CancelToken`]s.
//! * **Plan and result caches.** Planned SQL is reused; results are cached under the
//!   optimized plan and the versions of every table the query read, so an append makes
//!   the next run recompute. Queries calling volatile functions (`now()`, `random()`)
//!   are never cached.
//! * **MPP slices.** [`QueryEngine::register_distributed`] holds a table in slices by a
//!   [`Distribution`] (`KEY`, `EVEN`, `ALL`). The scan declares the hash partitioning of a
//!   `KEY` table, so joins and aggregations on the key run slice-local with no
//!   repartition; slice-local filtering runs on rayon.
//! * **Materialized views.** `CREATE MATERIALIZED VIEW v AS SELECT ...` (or
//!   [`QueryEngine::create_materialized_view`]); refreshed incrementally from
//!   [`TableSource::row_changes_since`] for `SUM` / `COUNT` / `AVG` / `MIN` / `MAX` group-bys and
//!   filter/projection views over one changing table (joined to unchanged dimensions),
//!   also after deletes and updates for `SUM` / `COUNT` / `AVG` (the removed rows are
//!   taken back), fully otherwise, on demand or in the background. Readers never wait
//!   for a refresh.
//! * **MERGE.** `MERGE INTO t [AS a] USING <table or (subquery)> [AS s] ON ...
//!   WHEN MATCHED [AND cond] THEN UPDATE SET ... | DELETE
//!   WHEN NOT MATCHED [AND cond] THEN INSERT [(columns)] VALUES (...)` on a table
//!   registered with [`QueryEngine::register_writable`]: one commit of the table's
//!   [`TableMutator::merge`](lakehouse_core::TableMutator::merge), clauses tried in
//!   order, the result one row `count` (rows updated + deleted + inserted). The ON
//!   clause needs at least one equality `target column = source expression` (the
//!   merge's keys, which prune the files read); other conjuncts on target columns
//!   prune too. A target row matched by two source rows is
//!   [`ErrorKind::InvalidInput`] and commits nothing. Values are cast to the
//!   column's type when the types are of one family (numbers, strings, temporal),
//!   else [`ErrorKind::TypeMismatch`]; `INSERT` values and `WHEN NOT MATCHED`
//!   conditions see the source row only. Refused ([`ErrorKind::Unsupported`]): an ON
//!   clause without such an equality, `WHEN NOT MATCHED BY SOURCE`, `INSERT ROW`,
//!   Oracle's `UPDATE ... WHERE` / `DELETE WHERE`, `OUTPUT`, tuple assignments and
//!   read-only targets. The source is read in full before the merge.
//! * **Streaming tail.** [`QueryEngine::register_with_tail`] unions a committed table with
//!   rows not yet committed.
//! * **Writes.** `INSERT`, `DELETE`, `UPDATE`, `TRUNCATE` on tables registered with
//!   [`QueryEngine::register_writable`], and `CREATE TABLE [AS SELECT]` in a
//!   [`TableCatalog`] ([`EngineBuilder::catalog`]); see [Writing with
//!   SQL](#writing-with-sql).
//!
//! # Quick start
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Int64Array, RecordBatch, StringArray};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use lakehouse_core::{MemoryTable, TableSink};
//! use lakehouse_query::QueryEngine;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("region", DataType::Utf8, false),
//!     Field::new("amount", DataType::Int64, false),
//! ]));
//! let sales = Arc::new(MemoryTable::new("sales", schema.clone()));
//! sales.append(vec![RecordBatch::try_new(schema.clone(), vec![
//!     Arc::new(StringArray::from(vec!["eu", "us", "eu"])),
//!     Arc::new(Int64Array::from(vec![10, 20, 5])),
//! ])?], None).await?;
//!
//! let engine = QueryEngine::new();
//! engine.register_table("sales", sales.clone())?;
//! let result = engine
//!     .sql("SELECT region, SUM(amount) AS total FROM sales GROUP BY region ORDER BY region")
//!     .await?;
//! assert_eq!(result.num_rows(), 2);
//!
//! // A materialized view, refreshed incrementally after an append.
//! engine
//!     .sql("CREATE MATERIALIZED VIEW totals AS SELECT region, SUM(amount) AS total FROM sales GROUP BY region")
//!     .await?;
//! sales.append(vec![RecordBatch::try_new(schema, vec![
//!     Arc::new(StringArray::from(vec!["us"])),
//!     Arc::new(Int64Array::from(vec![7])),
//! ])?], None).await?;
//! let outcome = engine.refresh_materialized_view("totals").await?;
//! assert_eq!(outcome.kind(), lakehouse_query::RefreshKind::Incremental);
//! let us = engine.sql("SELECT total FROM totals WHERE region = 'us'").await?;
//! print!("{}", us.pretty()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Writing with SQL
//!
//! A table registered with [`QueryEngine::register_writable`] (any
//! [`WritableTable`]: a `lakehouse-storage` Delta table, a
//! [`MemoryTable`](lakehouse_core::MemoryTable)) takes these statements through
//! [`QueryEngine::sql`] and [`QueryEngine::query`]. Each is one atomic commit of the
//! table (none when no row is affected) and returns one row, a `count` column of type
//! `UInt64` with the rows inserted, deleted or updated, as DataFusion's DML does.
//!
//! | statement | how |
//! |---|---|
//! | `INSERT INTO t [(columns)] VALUES ...` / `SELECT ...` | the rows, cast to the column types by DataFusion's rules, appended by the table's [`TableSink`](lakehouse_core::TableSink); missing nullable columns are null |
//! | `DELETE FROM t [WHERE ...]`, `TRUNCATE t` | [`TableMutator::delete_where`](lakehouse_core::TableMutator::delete_where) with the `WHERE` as a core [`Predicate`](lakehouse_core::Predicate) |
//! | `UPDATE t SET c = expr, ... [WHERE ...]` | [`TableMutator::update_where`](lakehouse_core::TableMutator::update_where): every `SET` value is a DataFusion expression evaluated on the matched rows as they were (`SET price = price * 1.1`, `SET a = b, b = a` swaps) |
//! | `CREATE TABLE t (columns) [PARTITIONED BY (columns)]` | an empty table in the engine's [`TableCatalog`], registered writable; Hive's `PARTITIONED BY (c TYPE)` adds the column |
//! | `CREATE TABLE t [PARTITIONED BY (columns)] AS SELECT ...` | the query runs first; then the table is created and its rows appended: two commits (version 0 empty, version 1 the rows) |
//! | `CREATE TABLE IF NOT EXISTS ...` | nothing when the table exists (`count` 0) |
//!
//! The `WHERE` of `DELETE` and `UPDATE` goes to the table whole as a core predicate,
//! so that a Delta table prunes files by partition values and statistics (a delete by
//! partition values removes files without reading them): comparisons of a column with
//! a literal, `BETWEEN`, `IN` lists, `IS [NOT] NULL`, combined with `AND`, `OR` and
//! `NOT`, with SQL's three-valued logic (constants are folded first, so `qty > 2 + 3`
//! is `qty > 5`). A condition the predicate cannot express (arithmetic on columns,
//! `LIKE`, functions, subqueries) is refused with [`ErrorKind::Unsupported`] naming
//! it, before anything is written: never approximated.
//!
//! Why not DataFusion's own `TableProvider::delete_from` / `update` hooks (DataFusion
//! 55 has them): they receive the conjuncts of the `WHERE` that DataFusion extracts
//! from the optimized plan, keeping those it finds on the target table, so a
//! condition it cannot place there (a subquery decorrelated into a join) would be
//! dropped and the statement would change more rows than the SQL says. The engine
//! lets DataFusion plan the statement (names, column checks, the casts of values to
//! the column types) and runs the planned
//! [`DmlStatement`](datafusion::logical_expr::DmlStatement) itself, from the
//! unoptimized plan, where the condition is whole.
//!
//! Errors, each before anything is committed: an unknown table
//! ([`ErrorKind::TableNotFound`]) or column ([`ErrorKind::ColumnNotFound`]); a value
//! that does not convert to its column ([`ErrorKind::TypeMismatch`]); a null for a
//! non-nullable column ([`ErrorKind::SchemaMismatch`]); a column count that does not
//! match the table ([`ErrorKind::InvalidSql`]); DML on a table registered read-only
//! ([`register_table`](QueryEngine::register_table), files, views) and `CREATE TABLE`
//! without a catalog ([`ErrorKind::Unsupported`]). A commit that meets a concurrent
//! writer's ([`ErrorKind::Conflict`]) is tried again, reading the table anew, up to
//! [`EngineBuilder::write_attempts`] times in all (3 by default; a Delta table also
//! retries its own mutations, `lakehouse_storage::MUTATION_ATTEMPTS`), then reported
//! as the conflict.
//!
//! `MERGE INTO` is one commit too (see **MERGE** above). Refused with
//! [`ErrorKind::Unsupported`]: `INSERT OVERWRITE` / `REPLACE`,
//! `DELETE ... LIMIT`, `UPDATE ... FROM` and joins, subqueries in `WHERE` or `SET`,
//! `CREATE OR REPLACE`, temporary tables, table constraints (`PRIMARY KEY`,
//! `UNIQUE`) and column defaults; `RETURNING` is not supported by DataFusion's
//! planner. `DROP TABLE` does not remove a catalog table.
//!
//! Cached results never outlive a write: the result cache keys results by the
//! version of every table read, and each write commits a new version. Materialized
//! views over a table that had a delete or update refresh fully on their next refresh
//! (the change is not an append).
//!
//! # Crate features
//!
//! The engine always includes DataFusion's SQL front end, Parquet and CSV readers and
//! its scalar function libraries (string, math, date/time, regex, crypto, nested
//! types).
//!
//! * `distributed` (off by default): queries on worker processes, see below. Adds
//!   `datafusion-distributed`, DataFusion's plan codec and a gRPC stack (tonic).
//!
//! # Distributed execution
//!
//! With feature `distributed`, [`EngineBuilder::distributed`] takes a
//! [`distributed::Cluster`] of worker addresses and the same SQL over the same tables
//! runs on several processes; a worker is [`distributed::serve`] (the `lakehouse_worker`
//! binary of the examples crate). The engine plans as on one process, then the
//! `datafusion-distributed` planner cuts the physical plan into stages at its
//! repartitions (hash shuffles, broadcast join sides, the final merge) and splits each
//! file scan into one task per worker, by files and byte ranges.
//!
//! Supported: every query over tables whose scans are files (Delta tables of
//! `lakehouse-storage` on a local directory the processes share, or on S3 when the
//! workers can open the bucket), with their deletion vectors and column mapping, which
//! this crate's codec ships with the scan; materialized views, the result cache, WLM
//! queues, timeouts and cancellation, which sit above the plan. Kept on the
//! coordinator (their stage gets one task, which runs in the coordinator's own worker,
//! served to the other workers on [`distributed::Cluster::coordinator_listen`]): sources
//! that are not files (batch streams, [`Distribution`] slices, streaming tails),
//! in-memory tables (materialized views' contents) and file scans of a store only this
//! process holds. Such a node is never sent: the codec refuses to encode it (an
//! error naming it, never a plan shipped without its parts). A worker that stops answering fails the running query
//! with [`ErrorKind::Unavailable`]; later queries are planned on the workers that
//! answer, and it is taken back when it answers again. Not carried over: the slices'
//! `KEY` co-location (`KEY` tables stay on the coordinator, where their joins stay
//! slice-local) and the per-query memory limit, which holds on the coordinator only.
//!
//! Why `datafusion-distributed` rather than Ballista: it is a library on the DataFusion
//! version the engine uses, so the coordinator keeps this engine's session, planner,
//! table providers and caches and only the physical plan changes; it splits
//! DataFusion's own Parquet scan (`DataSourceExec`) across workers out of the box, with
//! hooks for nodes of our own (codecs, task-count handlers); workers are a gRPC service
//! embedded in any process, started with one call; and shuffles stream between
//! workers instead of going through files. Ballista is a separate scheduler and
//! executor deployment with its own session and client, which would put the
//! engine's catalog, pinned table versions and result cache on the other side of a
//! client API.
//!
//! # Runtime
//!
//! The engine is `async` and needs a tokio runtime (DataFusion executes on it). CPU-bound
//! slice work (distributing rows to slices, slice-local filtering) runs on the rayon pool
//! and is awaited through a channel, never blocking a tokio worker. Locks guard memory
//! operations only; a materialized view refresh never holds a lock readers take.
//! [`QueryEngine::start_background_refresh`] spawns one task on the current runtime.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations)]

mod background_refresh;
mod builder;
mod ddl;
#[cfg(feature = "distributed")]
pub mod distributed;
mod dml;
mod engine;
mod error;
mod file_scan;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod merge;
mod mv;
mod nan_pruning;
mod null_safe;
mod options;
mod plan;
mod plan_cache;
mod prepared;
mod pushdown;
mod registry;
mod result;
mod result_cache;
mod scan;
mod slices;
mod wlm;

pub use lakehouse_core::{
    CancelToken, Context, Error, ErrorKind, Result, TableCatalog, TableSource, Version,
    WritableTable,
};

pub use crate::background_refresh::BackgroundRefresh;
pub use crate::builder::EngineBuilder;
pub use crate::engine::QueryEngine;
pub use crate::mv::{RefreshKind, RefreshMode, RefreshOutcome, ViewInfo, ViewSnapshot};
pub use crate::options::QueryOptions;
pub use crate::prepared::PreparedQuery;
pub use crate::result::QueryResult;
pub use crate::result_cache::ResultCacheStats;
pub use crate::slices::Distribution;
pub use crate::wlm::{QueueStats, WorkloadQueue};
