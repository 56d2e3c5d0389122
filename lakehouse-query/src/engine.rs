//! The query engine handle: registration, planning with a plan cache, the result cache,
//! workload queues, memory limits and cancellation.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::TableProvider;
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::execution::SessionState;
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionConfig, SessionContext};
use lakehouse_core::{Clock, Scalar, SystemClock, TableSource, Version};
use parking_lot::{Mutex, RwLock};

use crate::cache::{CacheKey, CacheStats, ResultCache};
use crate::error::{Error, ErrorKind, Result};
use crate::mv::{self, MaterializedView, RefreshOutcome, ViewSnapshot};
use crate::pushdown::scalar_to_df;
use crate::scan::{SourceTable, TailTable};
use crate::slices::{Distribution, SlicedTable};
use crate::wlm::{CancelToken, QueueStats, Wlm, WorkloadQueue};

/// Configures a [`QueryEngine`]; made by [`QueryEngine::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct EngineBuilder {
    target_partitions: usize,
    batch_size: usize,
    query_memory_limit: Option<usize>,
    result_cache_bytes: usize,
    plan_cache_entries: usize,
    queues: Vec<WorkloadQueue>,
    query_timeout: Option<Duration>,
    slices: Option<usize>,
    clock: Arc<dyn Clock>,
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
        }
    }
}

impl EngineBuilder {
    /// Partitions a query runs on in parallel (default: the number of cores).
    pub fn target_partitions(mut self, n: usize) -> Self {
        self.target_partitions = n.max(1);
        self
    }

    /// Rows per batch inside operators (default 8192).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Memory each query may hold in operators that track it (sorts, joins,
    /// aggregations). Operators that can spill to temporary files do; the others fail
    /// with [`ErrorKind::ResourcesExhausted`]. Default: unlimited.
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

    /// Queries running longer fail with [`ErrorKind::Timeout`] (default: no limit).
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

    /// Builds the engine.
    pub fn build(self) -> QueryEngine {
        let config = SessionConfig::new()
            .with_target_partitions(self.target_partitions)
            .with_batch_size(self.batch_size)
            .with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
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
                plans: Mutex::new(HashMap::new()),
                epoch: AtomicU64::new(0),
                results: ResultCache::new(self.result_cache_bytes),
                wlm: Wlm::new(queues),
                config: self,
            }),
        }
    }
}

/// How a query runs: its workload queue, cancellation, timeout, memory and caching.
///
/// ```
/// use std::time::Duration;
/// use lakehouse_query::{CancelToken, QueryOptions};
///
/// let cancel = CancelToken::new();
/// let options = QueryOptions::new()
///     .queue("dashboards")
///     .timeout(Duration::from_secs(5))
///     .cancel(cancel.clone())
///     .memory_limit(256 << 20);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct QueryOptions {
    queue: Option<String>,
    cancel: Option<CancelToken>,
    timeout: Option<Duration>,
    memory_limit: Option<usize>,
    no_cache: bool,
}

impl QueryOptions {
    /// The engine's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs in this workload queue instead of [`WorkloadQueue::DEFAULT`].
    pub fn queue(mut self, name: impl Into<String>) -> Self {
        self.queue = Some(name.into());
        self
    }

    /// Cancels the query when the token is cancelled.
    pub fn cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Fails the query with [`ErrorKind::Timeout`] after this long (queueing included).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Overrides the engine's per-query memory limit.
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Neither reads nor fills the result cache.
    pub fn bypass_cache(mut self) -> Self {
        self.no_cache = true;
        self
    }
}

/// The rows of a query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    schema: SchemaRef,
    batches: Arc<Vec<RecordBatch>>,
    from_cache: bool,
}

impl QueryResult {
    /// The schema of the rows.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The rows, as record batches.
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// Total number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// Whether the result came from the result cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// The rows as one batch.
    pub fn concat(&self) -> Result<RecordBatch> {
        arrow::compute::concat_batches(&self.schema, self.batches.iter())
            .map_err(|e| Error::internal(format!("concatenating results: {e}")).with_source(e))
    }

    /// The rows as a text table.
    pub fn pretty(&self) -> Result<String> {
        datafusion::arrow::util::pretty::pretty_format_batches(&self.batches)
            .map(|t| t.to_string())
            .map_err(|e| Error::internal(format!("formatting results: {e}")).with_source(e))
    }
}

/// A registered table, as the engine knows it.
#[derive(Debug, Clone)]
enum Registered {
    Source(SourceTable),
    Sliced(Arc<SlicedTable>),
    Tail,
    View(Arc<MaterializedView>),
    External,
}

/// A planned SQL text, kept by the plan cache.
#[derive(Debug)]
pub(crate) struct Planned {
    pub(crate) plan: LogicalPlan,
    key: Arc<str>,
    tables: Vec<Arc<str>>,
    cacheable: bool,
    /// Calls a volatile function: the optimizer folds `now()` into a constant, so such
    /// plans are planned again for every run.
    volatile: bool,
    command: bool,
}

struct Inner {
    ctx: SessionContext,
    config: EngineBuilder,
    slices: usize,
    tables: RwLock<HashMap<String, Registered>>,
    plans: Mutex<HashMap<String, (u64, Arc<Planned>)>>,
    epoch: AtomicU64,
    results: ResultCache,
    wlm: Wlm,
}

/// A SQL query engine over any [`TableSource`], on Apache DataFusion.
///
/// Cheap to clone: clones share tables, caches and queues. See the [crate
/// documentation](crate) for an example.
#[derive(Clone)]
pub struct QueryEngine {
    inner: Arc<Inner>,
}

impl fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryEngine")
            .field("tables", &self.inner.tables.read().len())
            .field("target_partitions", &self.inner.config.target_partitions)
            .finish_non_exhaustive()
    }
}

impl Default for QueryEngine {
    fn default() -> Self {
        Self::new()
    }
}

fn normalize_name(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{name:?} is not a valid table name (letters, digits and _)"),
        )
        .with_table(name));
    }
    Ok(name.to_ascii_lowercase())
}

impl QueryEngine {
    /// An engine with the default configuration.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Configures an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The DataFusion session, for what this API does not cover (user-defined
    /// functions, other table formats).
    pub fn session(&self) -> &SessionContext {
        &self.inner.ctx
    }

    fn bump_epoch(&self) {
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        self.inner.plans.lock().clear();
    }

    fn register(
        &self,
        name: &str,
        entry: Registered,
        provider: Arc<dyn TableProvider>,
    ) -> Result<()> {
        let name = normalize_name(name)?;
        let mut tables = self.inner.tables.write();
        if tables.contains_key(&name) || self.inner.ctx.table_exist(name.as_str())? {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("a table named {name:?} is already registered"),
            )
            .with_table(name));
        }
        self.inner.ctx.register_table(name.as_str(), provider)?;
        tables.insert(name, entry);
        drop(tables);
        self.bump_epoch();
        Ok(())
    }

    /// Registers `source` as table `name`. Filters are pushed down as [`Predicate`]s
    /// (exact where the source says so), and the source's statistics feed planning.
    ///
    /// [`Predicate`]: lakehouse_core::Predicate
    pub fn register_table(&self, name: &str, source: Arc<dyn TableSource>) -> Result<()> {
        let table = SourceTable::new(name, source);
        self.register(name, Registered::Source(table.clone()), Arc::new(table))
    }

    /// Registers `source` as a distributed table `name`: its rows are assigned to the
    /// engine's slices by `distribution`, kept in memory, brought up to date with
    /// `changes_since` before each query, and scanned slice by slice on rayon. A
    /// [`Distribution::Key`] table declares hash partitioning on its key, so joins and
    /// aggregations on the key need no repartition.
    pub fn register_distributed(
        &self,
        name: &str,
        source: Arc<dyn TableSource>,
        distribution: Distribution,
    ) -> Result<()> {
        let table = Arc::new(SlicedTable::new(
            name,
            source,
            distribution,
            self.inner.slices,
        )?);
        self.register(name, Registered::Sliced(table.clone()), table)
    }

    /// Registers table `name` as the union of the committed `table` and the rows of
    /// `live` not yet committed (a stream tail), for real-time queries. Both must have
    /// the same schema. Results over such a table are never cached.
    pub fn register_with_tail(
        &self,
        name: &str,
        table: Arc<dyn TableSource>,
        live: Arc<dyn TableSource>,
    ) -> Result<()> {
        let (a, b) = (table.schema(), live.schema());
        let same = a.fields().len() == b.fields().len()
            && a.fields()
                .iter()
                .zip(b.fields())
                .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type());
        if !same {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("the live source's schema {b} differs from the table's {a}"),
            )
            .with_table(name));
        }
        self.register(
            name,
            Registered::Tail,
            Arc::new(TailTable::new(name, table, live)),
        )
    }

    /// Registers a directory (or file) of Parquet files as table `name`.
    pub async fn register_parquet(&self, name: &str, path: &str) -> Result<()> {
        let lower = normalize_name(name)?;
        self.check_free(&lower)?;
        self.inner
            .ctx
            .register_parquet(lower.as_str(), path, ParquetReadOptions::default())
            .await
            .map_err(|e| Error::from(e).with_table(&lower).with_path(path))?;
        self.inner
            .tables
            .write()
            .insert(lower, Registered::External);
        self.bump_epoch();
        Ok(())
    }

    /// Registers a CSV file or directory with a header row as table `name`; the schema
    /// is inferred.
    pub async fn register_csv(&self, name: &str, path: &str) -> Result<()> {
        let lower = normalize_name(name)?;
        self.check_free(&lower)?;
        self.inner
            .ctx
            .register_csv(lower.as_str(), path, CsvReadOptions::new().has_header(true))
            .await
            .map_err(|e| Error::from(e).with_table(&lower).with_path(path))?;
        self.inner
            .tables
            .write()
            .insert(lower, Registered::External);
        self.bump_epoch();
        Ok(())
    }

    fn check_free(&self, name: &str) -> Result<()> {
        if self.inner.tables.read().contains_key(name) || self.inner.ctx.table_exist(name)? {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("a table named {name:?} is already registered"),
            )
            .with_table(name));
        }
        Ok(())
    }

    /// Removes table or view `name`.
    pub fn deregister(&self, name: &str) -> Result<()> {
        let lower = normalize_name(name)?;
        let removed = self.inner.tables.write().remove(&lower);
        let df = self.inner.ctx.deregister_table(lower.as_str())?;
        if removed.is_none() && df.is_none() {
            return Err(Error::new(
                ErrorKind::TableNotFound,
                format!("no table named {lower:?}"),
            )
            .with_table(lower));
        }
        self.bump_epoch();
        Ok(())
    }

    /// Names of the registered tables and views, sorted.
    pub fn tables(&self) -> Vec<String> {
        let mut names: Vec<_> = self.inner.tables.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// Runs one SQL statement with the default options.
    ///
    /// Besides DataFusion's SQL (queries, `EXPLAIN [ANALYZE]`, `CREATE VIEW`, ...), the
    /// engine understands `CREATE MATERIALIZED VIEW name AS <query>`,
    /// `REFRESH MATERIALIZED VIEW name` and `DROP MATERIALIZED VIEW name`.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        self.query(sql, QueryOptions::default()).await
    }

    /// Runs one SQL statement with `options`.
    pub async fn query(&self, sql: &str, options: QueryOptions) -> Result<QueryResult> {
        if let Some(cmd) = mv::parse_command(sql)? {
            return self.run_view_command(cmd).await;
        }
        let planned = self.plan_cached(sql).await?;
        self.run_planned(&planned, &options).await
    }

    /// The text of `EXPLAIN [ANALYZE] <sql>`: the logical and physical plans, with run
    /// time metrics when `analyze`.
    pub async fn explain(&self, sql: &str, analyze: bool) -> Result<String> {
        let verb = if analyze {
            "EXPLAIN ANALYZE"
        } else {
            "EXPLAIN"
        };
        let result = self
            .query(&format!("{verb} {sql}"), QueryOptions::new().bypass_cache())
            .await?;
        let mut out = String::new();
        for batch in result.batches() {
            let n = batch.num_columns();
            let types = batch.column(0);
            let plans = batch.column(n - 1);
            for row in 0..batch.num_rows() {
                let t = ScalarValue::try_from_array(types, row)?;
                let p = ScalarValue::try_from_array(plans, row)?;
                out.push_str(&format!("{}:\n{}\n", scalar_text(&t), scalar_text(&p)));
            }
        }
        Ok(out)
    }

    /// Plans `sql` once for repeated execution with `$1`, `$2`, ... parameters.
    pub async fn prepare(&self, sql: &str) -> Result<PreparedQuery> {
        let plan = self.inner.ctx.state().create_logical_plan(sql).await?;
        Ok(PreparedQuery {
            engine: self.clone(),
            plan: Arc::new(plan),
            sql: Arc::from(sql),
        })
    }

    /// Counters of the result cache.
    pub fn result_cache_stats(&self) -> CacheStats {
        self.inner.results.stats()
    }

    /// Empties the result cache.
    pub fn clear_result_cache(&self) {
        self.inner.results.clear();
    }

    /// Occupancy of the workload queues, sorted by name.
    pub fn queue_stats(&self) -> Vec<QueueStats> {
        self.inner.wlm.stats()
    }

    /// Plans `sql`, through the plan cache.
    pub(crate) async fn plan_cached(&self, sql: &str) -> Result<Arc<Planned>> {
        let epoch = self.inner.epoch.load(Ordering::Acquire);
        if let Some((e, p)) = self.inner.plans.lock().get(sql)
            && *e == epoch
        {
            return Ok(p.clone());
        }
        let state = self.inner.ctx.state();
        let plan = state.create_logical_plan(sql).await?;
        let planned = Arc::new(self.analyze(&state, plan)?);
        if !planned.command && !planned.volatile && self.inner.config.plan_cache_entries > 0 {
            let mut plans = self.inner.plans.lock();
            if plans.len() >= self.inner.config.plan_cache_entries {
                plans.clear();
            }
            plans.insert(sql.to_owned(), (epoch, planned.clone()));
        }
        Ok(planned)
    }

    /// Optimizes a logical plan and works out what it reads and whether it may be cached.
    pub(crate) fn analyze(&self, state: &SessionState, plan: LogicalPlan) -> Result<Planned> {
        let command = matches!(
            plan,
            LogicalPlan::Ddl(_)
                | LogicalPlan::Dml(_)
                | LogicalPlan::Statement(_)
                | LogicalPlan::Copy(_)
                | LogicalPlan::DescribeTable(_)
        );
        if command {
            return Ok(Planned {
                key: Arc::from(""),
                plan,
                tables: Vec::new(),
                cacheable: false,
                volatile: false,
                command: true,
            });
        }
        let explain = matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_));
        let volatile = is_volatile(&plan)?;
        let optimized = state.optimize(&plan)?;
        let mut tables: Vec<Arc<str>> = Vec::new();
        optimized.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let name: Arc<str> = Arc::from(scan.table_name.table());
                if !tables.contains(&name) {
                    tables.push(name);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        tables.sort();
        let registry = self.inner.tables.read();
        let versioned = tables.iter().all(|t| {
            matches!(
                registry.get(&**t),
                Some(Registered::Source(_) | Registered::Sliced(_) | Registered::View(_))
            )
        });
        drop(registry);
        let key: Arc<str> = Arc::from(optimized.display_indent_schema().to_string());
        Ok(Planned {
            plan: optimized,
            key,
            tables,
            cacheable: !explain && !volatile && versioned,
            volatile,
            command: false,
        })
    }

    /// Versions of the tables a plan reads, for the cache key and for pinning.
    pub(crate) async fn versions(
        &self,
        tables: &[Arc<str>],
    ) -> Result<Vec<(Arc<str>, Option<Version>)>> {
        let mut out = Vec::with_capacity(tables.len());
        for t in tables {
            let entry = self.inner.tables.read().get(&**t).cloned();
            let v = match entry {
                Some(Registered::Source(s)) => Some(
                    s.source
                        .version()
                        .await
                        .map_err(|e| Error::from(e).with_table(&**t))?,
                ),
                Some(Registered::Sliced(s)) => Some(s.source_version().await?),
                Some(Registered::View(v)) => Some(v.generation()),
                _ => None,
            };
            out.push((t.clone(), v));
        }
        Ok(out)
    }

    async fn run_planned(&self, planned: &Planned, options: &QueryOptions) -> Result<QueryResult> {
        if planned.command {
            return self.run_command(planned.plan.clone(), options).await;
        }
        let versions = self.versions(&planned.tables).await?;
        let use_cache = planned.cacheable && !options.no_cache && self.inner.results.enabled();
        let key = use_cache.then(|| CacheKey {
            plan: planned.key.clone(),
            versions: versions
                .iter()
                .map(|(t, v)| (t.clone(), v.unwrap_or(u64::MAX)))
                .collect(),
        });
        if let Some(k) = &key
            && let Some(batches) = self.inner.results.get(k)
        {
            return Ok(QueryResult {
                schema: Arc::new(planned.plan.schema().as_arrow().clone()),
                batches,
                from_cache: true,
            });
        }
        let pins: HashMap<&str, Version> = versions
            .iter()
            .filter_map(|(t, v)| v.map(|v| (&**t, v)))
            .collect();
        let plan = pin_versions(planned.plan.clone(), &pins)?;
        let batches = Arc::new(self.execute_optimized(plan, options).await?);
        if let Some(k) = key {
            self.inner.results.insert(k, batches.clone());
        }
        Ok(QueryResult {
            schema: Arc::new(planned.plan.schema().as_arrow().clone()),
            batches,
            from_cache: false,
        })
    }

    async fn run_command(&self, plan: LogicalPlan, options: &QueryOptions) -> Result<QueryResult> {
        let schema = Arc::new(plan.schema().as_arrow().clone());
        let ctx = self.inner.ctx.clone();
        let run = async move {
            let df = ctx.execute_logical_plan(plan).await?;
            Ok::<_, Error>(df.collect().await?)
        };
        let batches = self.guarded(run, options).await?;
        // DDL may have changed the catalog.
        self.bump_epoch();
        Ok(QueryResult {
            schema,
            batches: Arc::new(batches),
            from_cache: false,
        })
    }

    /// Runs `fut` in a workload slot, under the query's timeout and cancellation.
    async fn guarded<T>(
        &self,
        fut: impl Future<Output = Result<T>>,
        options: &QueryOptions,
    ) -> Result<T> {
        let queue = options.queue.as_deref().unwrap_or(WorkloadQueue::DEFAULT);
        let timeout = options.timeout.or(self.inner.config.query_timeout);
        let work = async {
            let _slot = self.inner.wlm.admit(queue, options.cancel.as_ref()).await?;
            fut.await
        };
        let cancelled = async {
            match &options.cancel {
                Some(c) => c.cancelled().await,
                None => std::future::pending().await,
            }
        };
        let expired = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        // Dropping `work` on cancellation or timeout drops the running streams, which
        // stops the query's tasks and frees its memory reservations.
        tokio::select! {
            r = work => r,
            () = cancelled => Err(Error::new(ErrorKind::Cancelled, "the query was cancelled")),
            () = expired => Err(Error::new(
                ErrorKind::Timeout,
                format!("the query ran longer than {:?}", timeout.unwrap_or_default()),
            )),
        }
    }

    /// Plans and runs an optimized logical plan with the query's memory pool.
    pub(crate) async fn execute_optimized(
        &self,
        plan: LogicalPlan,
        options: &QueryOptions,
    ) -> Result<Vec<RecordBatch>> {
        let state = self.inner.ctx.state();
        let limit = options
            .memory_limit
            .or(self.inner.config.query_memory_limit);
        let run = async move {
            let physical = state
                .query_planner()
                .create_physical_plan(&plan, &state)
                .await?;
            let mut task = state.task_ctx();
            if let Some(limit) = limit {
                let pool: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(limit));
                let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
                    .with_memory_pool(pool)
                    .build_arc()?;
                task = Arc::new(
                    datafusion::execution::TaskContext::from(&state).with_runtime(runtime),
                );
            }
            collect(physical, task).await
        };
        self.guarded(run, options).await
    }

    /// Optimizes and runs an unoptimized logical plan (used by materialized views).
    pub(crate) async fn execute_logical(&self, plan: LogicalPlan) -> Result<Vec<RecordBatch>> {
        let optimized = self.inner.ctx.state().optimize(&plan)?;
        self.execute_optimized(optimized, &QueryOptions::new())
            .await
    }

    pub(crate) fn source_of(&self, table: &str) -> Option<Arc<dyn TableSource>> {
        match self.inner.tables.read().get(table)? {
            Registered::Source(s) => Some(s.source.clone()),
            Registered::Sliced(s) => Some(s.source().clone()),
            _ => None,
        }
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.config.clock
    }

    pub(crate) fn state(&self) -> SessionState {
        self.inner.ctx.state()
    }

    /// Defines a materialized view from a `SELECT`, computes it and registers it as a
    /// table. Returns how it will be refreshed.
    pub async fn create_materialized_view(&self, name: &str, sql: &str) -> Result<RefreshOutcome> {
        let lower = normalize_name(name)?;
        self.check_free(&lower)?;
        let view = Arc::new(MaterializedView::define(self, &lower, sql).await?);
        let outcome = view.refresh(self).await?;
        self.register(
            &lower,
            Registered::View(view.clone()),
            Arc::new(mv::ViewProvider::new(view)),
        )?;
        Ok(outcome)
    }

    fn view(&self, name: &str) -> Result<Arc<MaterializedView>> {
        let lower = normalize_name(name)?;
        match self.inner.tables.read().get(&lower) {
            Some(Registered::View(v)) => Ok(v.clone()),
            _ => Err(Error::new(
                ErrorKind::TableNotFound,
                format!("no materialized view named {lower:?}"),
            )
            .with_table(lower)),
        }
    }

    /// Brings materialized view `name` up to date: incrementally from the rows appended
    /// since the last refresh where the view's shape allows, fully otherwise. Readers
    /// keep reading the previous contents until the new ones are swapped in.
    pub async fn refresh_materialized_view(&self, name: &str) -> Result<RefreshOutcome> {
        self.view(name)?.refresh(self).await
    }

    /// Refreshes every materialized view; returns the outcome of each, by name.
    pub async fn refresh_all(&self) -> Vec<(String, Result<RefreshOutcome>)> {
        let views: Vec<_> = self
            .inner
            .tables
            .read()
            .iter()
            .filter_map(|(n, r)| match r {
                Registered::View(v) => Some((n.clone(), v.clone())),
                _ => None,
            })
            .collect();
        let mut out = Vec::with_capacity(views.len());
        for (name, view) in views {
            out.push((name, view.refresh(self).await));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The current contents of materialized view `name`. Never waits for a refresh.
    pub fn read_materialized_view(&self, name: &str) -> Result<Arc<ViewSnapshot>> {
        Ok(self.view(name)?.snapshot())
    }

    /// How materialized view `name` is refreshed and why.
    pub fn materialized_view_info(&self, name: &str) -> Result<mv::ViewInfo> {
        Ok(self.view(name)?.info())
    }

    /// Refreshes every materialized view every `interval` on the current tokio runtime,
    /// until the returned handle is dropped or stopped.
    pub fn start_background_refresh(&self, interval: Duration) -> Result<BackgroundRefresh> {
        let handle = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                "background refresh needs a tokio runtime",
            )
            .with_source(e)
        })?;
        let weak = Arc::downgrade(&self.inner);
        let task = handle.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else {
                    break;
                };
                let engine = QueryEngine { inner };
                // Failures are kept in each view's info for callers to inspect.
                let _ = engine.refresh_all().await;
            }
        });
        Ok(BackgroundRefresh { task })
    }

    async fn run_view_command(&self, cmd: mv::Command) -> Result<QueryResult> {
        let outcome = match cmd {
            mv::Command::Create { name, query } => {
                Some(self.create_materialized_view(&name, &query).await?)
            }
            mv::Command::Refresh { name } => Some(self.refresh_materialized_view(&name).await?),
            mv::Command::Drop { name, if_exists } => {
                match self.view(&name) {
                    Ok(_) => self.deregister(&name)?,
                    Err(e) if if_exists && e.kind() == ErrorKind::TableNotFound => {}
                    Err(e) => return Err(e),
                }
                None
            }
        };
        let batch = mv::outcome_batch(outcome.as_ref())?;
        Ok(QueryResult {
            schema: batch.schema(),
            batches: Arc::new(vec![batch]),
            from_cache: false,
        })
    }
}

/// Stops the background refresh of materialized views when dropped.
#[derive(Debug)]
pub struct BackgroundRefresh {
    task: tokio::task::JoinHandle<()>,
}

impl BackgroundRefresh {
    /// Stops refreshing.
    pub fn stop(self) {}
}

impl Drop for BackgroundRefresh {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A statement planned once and run many times with different parameters.
#[derive(Debug, Clone)]
pub struct PreparedQuery {
    engine: QueryEngine,
    plan: Arc<LogicalPlan>,
    sql: Arc<str>,
}

impl PreparedQuery {
    /// The SQL text.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// Runs the statement with `params` bound to `$1`, `$2`, ...
    pub async fn execute(&self, params: &[Scalar]) -> Result<QueryResult> {
        self.execute_with(params, QueryOptions::default()).await
    }

    /// Runs the statement with `params` and `options`.
    pub async fn execute_with(
        &self,
        params: &[Scalar],
        options: QueryOptions,
    ) -> Result<QueryResult> {
        let values = params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                scalar_to_df(p).ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!("parameter ${} has no SQL value: {p:?}", i + 1),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let bound = (*self.plan)
            .clone()
            .with_param_values(values)
            .map_err(|e| {
                let e = Error::from(e);
                Error::new(ErrorKind::InvalidInput, e.message().to_owned()).with_source(e)
            })?;
        let state = self.engine.state();
        let planned = self.engine.analyze(&state, bound)?;
        self.engine.run_planned(&planned, &options).await
    }
}

fn scalar_text(v: &ScalarValue) -> String {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether a plan calls a function whose result may change between runs.
pub(crate) fn is_volatile(plan: &LogicalPlan) -> Result<bool> {
    let mut volatile = false;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                let v = match e {
                    Expr::ScalarFunction(f) => f.func.signature().volatility,
                    Expr::ScalarVariable(..) => Volatility::Volatile,
                    _ => Volatility::Immutable,
                };
                if v != Volatility::Immutable {
                    volatile = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        Ok(if volatile {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    Ok(volatile)
}

/// Replaces the scans of registered sources by scans pinned at `pins`, so that a query
/// reads one consistent version of each table.
pub(crate) fn pin_versions(
    plan: LogicalPlan,
    pins: &HashMap<&str, Version>,
) -> Result<LogicalPlan> {
    if pins.is_empty() {
        return Ok(plan);
    }
    let out = plan.transform_up_with_subqueries(|node| {
        let LogicalPlan::TableScan(mut scan) = node else {
            return Ok(Transformed::no(node));
        };
        let Some(v) = pins.get(scan.table_name.table()) else {
            return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
        };
        let provider = source_as_provider(&scan.source)?;
        let any: &dyn Any = provider.as_ref();
        if let Some(table) = any.downcast_ref::<SourceTable>() {
            scan.source = provider_as_source(Arc::new(table.pinned(*v)));
            Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
        } else {
            Ok(Transformed::no(LogicalPlan::TableScan(scan)))
        }
    })?;
    Ok(out.data)
}

/// Runs a physical plan to completion.
async fn collect(
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<datafusion::execution::TaskContext>,
) -> Result<Vec<RecordBatch>> {
    Ok(datafusion::physical_plan::collect(plan, task).await?)
}
