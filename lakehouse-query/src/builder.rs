//! The engine's configuration: [`EngineBuilder`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use lakehouse_core::{Clock, Result, SystemClock, TableCatalog};
use parking_lot::RwLock;

use crate::engine::{Inner, QueryEngine};
use crate::plan_cache::PlanCache;
use crate::result_cache::ResultCache;
use crate::wlm::{Wlm, WorkloadQueue};

/// Configures a [`QueryEngine`]; made by [`QueryEngine::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct EngineBuilder {
    pub(crate) target_partitions: usize,
    batch_size: usize,
    pub(crate) query_memory_limit: Option<usize>,
    result_cache_bytes: usize,
    plan_cache_entries: usize,
    queues: Vec<WorkloadQueue>,
    pub(crate) query_timeout: Option<Duration>,
    slices: Option<usize>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) catalog: Option<Arc<dyn TableCatalog>>,
    pub(crate) write_attempts: u32,
    filter_pushdown: bool,
    pub(crate) string_views: bool,
    #[cfg(feature = "distributed")]
    cluster: Option<crate::distributed::Cluster>,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        EngineBuilder {
            target_partitions: cores,
            batch_size: 8192,
            query_memory_limit: None,
            result_cache_bytes: 64 << 20,
            plan_cache_entries: 1024,
            queues: Vec::new(),
            query_timeout: None,
            slices: None,
            clock: Arc::new(SystemClock),
            catalog: None,
            write_attempts: 3,
            filter_pushdown: false,
            string_views: true,
            #[cfg(feature = "distributed")]
            cluster: None,
        }
    }
}

impl EngineBuilder {
    /// Partitions a query runs on in parallel (default: the number of cores).
    pub fn target_partitions(mut self, n: usize) -> Self {
        self.target_partitions = n.max(1);
        self
    }

    /// Whether scans of tables read as Parquet files evaluate the query's filters in the
    /// Parquet decoder (`true`: late materialisation, the filter columns are decoded
    /// first and the other columns only for the rows that pass) or in a filter above
    /// the scan (`false`, the default, as DataFusion's own Parquet reader does). Either
    /// way the rows are the same, and files, row groups and pages are pruned by the
    /// filters.
    ///
    /// Measured on TPC-H SF 1 over Delta tables (BENCHMARKS.md), filtering above the
    /// scan took 0.82x the time of filtering in the decoder over all 22 queries; the
    /// decoder won only where a selective filter spares most of a wide scan (Q18).
    pub fn filter_pushdown(mut self, in_decoder: bool) -> Self {
        self.filter_pushdown = in_decoder;
        self
    }

    /// Whether the string and binary columns of registered table sources reach the
    /// engine as views (`Utf8View`, `BinaryView`; the default, `true`) or keep their
    /// own types (`Utf8`, `Binary`).
    ///
    /// Views are what DataFusion's own Parquet reader gives (and what
    /// [`register_parquet`](crate::QueryEngine::register_parquet) tables have here):
    /// comparisons and grouping work on their inline prefixes, and a source read as
    /// files decodes into them directly. Query results then hold views where the table
    /// has strings: a reader of result columns should accept both
    /// (`arrow::array::AsArray::as_string_view`, or a cast). Only top-level columns
    /// change; strings inside lists, maps and structs keep their types.
    pub fn string_views(mut self, views: bool) -> Self {
        self.string_views = views;
        self
    }

    /// Rows per batch inside operators (default 8192).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Memory each query may hold in operators that track it (sorts, joins,
    /// aggregations). Operators that can spill to temporary files do; the others fail
    /// with [`ErrorKind::ResourcesExhausted`](crate::ErrorKind::ResourcesExhausted). Default: unlimited.
    pub fn query_memory_limit(mut self, bytes: usize) -> Self {
        self.query_memory_limit = Some(bytes);
        self
    }

    /// Bytes of query results kept by the result cache (default 64 MiB; 0 disables it).
    pub fn result_cache_bytes(mut self, bytes: usize) -> Self {
        self.result_cache_bytes = bytes;
        self
    }

    /// Planned SQL texts kept by the plan cache (default 1024; 0 disables it).
    pub fn plan_cache_entries(mut self, n: usize) -> Self {
        self.plan_cache_entries = n;
        self
    }

    /// Adds a workload queue. Without any, the engine has one queue,
    /// [`WorkloadQueue::DEFAULT`], with as many slots as target partitions. A queue named
    /// `default` replaces that one.
    pub fn queue(mut self, queue: WorkloadQueue) -> Self {
        self.queues.push(queue);
        self
    }

    /// Queries running longer fail with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) (default: no limit).
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = Some(timeout);
        self
    }

    /// Slices of distributed tables (default: target partitions).
    pub fn slices(mut self, n: usize) -> Self {
        self.slices = Some(n.max(1));
        self
    }

    /// The clock materialized views stamp their refreshes with.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The table catalog (a [`TableRoot`] of `lakehouse-storage`, a
    /// [`MemoryCatalog`](lakehouse_core::MemoryCatalog)) that `CREATE TABLE` creates
    /// tables in; they are registered writable. [`open`](Self::open) also registers
    /// every table the catalog holds. Without a catalog, `CREATE TABLE` is
    /// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported).
    ///
    /// [`TableRoot`]: https://docs.rs/lakehouse-storage
    pub fn catalog(mut self, catalog: Arc<dyn TableCatalog>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Times a DML statement's commit is tried when the table reports
    /// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) (default 3, at least 1); after
    /// the last, the conflict is the statement's error. Each try reads the table anew.
    pub fn write_attempts(mut self, attempts: u32) -> Self {
        self.write_attempts = attempts.max(1);
        self
    }

    /// Runs queries distributed over `cluster`'s workers (feature `distributed`; see
    /// [`distributed`](crate::distributed) for what runs where). Materialized views,
    /// the result cache and workload management work as on one process: they sit above
    /// the plan.
    #[cfg(feature = "distributed")]
    pub fn distributed(mut self, cluster: crate::distributed::Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Builds the engine and registers, writable, every table of the
    /// [`catalog`](Self::catalog) (see
    /// [`QueryEngine::register_catalog_tables`]).
    pub async fn open(self) -> Result<QueryEngine> {
        let engine = self.build();
        engine.register_catalog_tables().await?;
        Ok(engine)
    }

    /// Builds the engine. Tables of the [`catalog`](Self::catalog) are not registered
    /// (see [`open`](Self::open)).
    pub fn build(self) -> QueryEngine {
        let mut config = SessionConfig::new()
            .with_target_partitions(self.target_partitions)
            .with_batch_size(self.batch_size)
            .with_information_schema(true);
        config.options_mut().execution.parquet.pushdown_filters = self.filter_pushdown;
        config.options_mut().execution.parquet.reorder_filters = self.filter_pushdown;
        #[cfg(feature = "distributed")]
        let (state, coordinator) = match &self.cluster {
            Some(cluster) => {
                let (state, coordinator) = crate::distributed::coordinator_session(config, cluster);
                (state, Some(coordinator))
            }
            None => (
                SessionStateBuilder::new()
                    .with_config(config)
                    .with_default_features(),
                None,
            ),
        };
        #[cfg(not(feature = "distributed"))]
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        let state = state
            .with_optimizer_rules(crate::null_safe::optimizer_rules())
            .with_physical_optimizer_rule(Arc::new(crate::nan_pruning::NanSafePruning))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let mut queues = self.queues.clone();
        if !queues.iter().any(|q| q.name() == WorkloadQueue::DEFAULT) {
            queues.push(WorkloadQueue::new(
                WorkloadQueue::DEFAULT,
                self.target_partitions.max(2),
            ));
        }
        QueryEngine {
            inner: Arc::new(Inner {
                ctx,
                slices: self.slices.unwrap_or(self.target_partitions),
                tables: RwLock::new(HashMap::new()),
                plans: PlanCache::new(self.plan_cache_entries),
                results: ResultCache::new(self.result_cache_bytes),
                wlm: Wlm::new(queues),
                #[cfg(feature = "distributed")]
                coordinator,
                config: self,
            }),
        }
    }
}
