//! The query engine handle and how one query runs: through the plan cache and the
//! result cache, in a workload slot, under its timeout, cancellation and memory limit.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::execution::SessionState;
use datafusion::execution::memory_pool::{FairSpillPool, MemoryPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use lakehouse_core::{Clock, Error, ErrorKind, Result, Version};
use parking_lot::RwLock;

use crate::builder::EngineBuilder;
use crate::ddl::parse_command;
use crate::error::DfResultExt;
use crate::options::QueryOptions;
use crate::plan::{Planned, pin_versions};
use crate::plan_cache::PlanCache;
use crate::registry::Tables;
use crate::result::QueryResult;
use crate::result_cache::{CacheKey, ResultCache};
use crate::wlm::{QueueStats, Wlm, WorkloadQueue};

/// What clones of one engine share.
pub(crate) struct Inner {
    pub(crate) ctx: SessionContext,
    pub(crate) config: EngineBuilder,
    pub(crate) slices: usize,
    pub(crate) tables: RwLock<Tables>,
    pub(crate) plans: PlanCache,
    pub(crate) results: ResultCache,
    pub(crate) wlm: Wlm,
    /// The coordinator's side of distributed execution.
    #[cfg(feature = "distributed")]
    pub(crate) coordinator: Option<Arc<crate::distributed::Coordinator>>,
}

/// A SQL query engine over any [`TableSource`](lakehouse_core::TableSource), on Apache
/// DataFusion.
///
/// Cheap to clone: clones share tables, caches and queues. See the [crate
/// documentation](crate) for an example.
#[derive(Clone)]
pub struct QueryEngine {
    pub(crate) inner: Arc<Inner>,
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

    /// Runs one SQL statement with the default options.
    ///
    /// Besides DataFusion's SQL (queries, `EXPLAIN [ANALYZE]`, `CREATE VIEW`, ...), the
    /// engine understands `CREATE MATERIALIZED VIEW name AS <query>`,
    /// `REFRESH MATERIALIZED VIEW name` and `DROP MATERIALIZED VIEW name`, and writes
    /// to writable tables: `INSERT`, `DELETE`, `UPDATE`, `MERGE INTO`, `TRUNCATE` and
    /// `CREATE TABLE` (see the [crate documentation](crate#writing-with-sql)), each
    /// returning one row with the rows affected in a `count` column.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        self.query(sql, QueryOptions::default()).await
    }

    /// Runs one SQL statement with `options`.
    pub async fn query(&self, sql: &str, options: QueryOptions) -> Result<QueryResult> {
        if let Some(cmd) = parse_command(sql)? {
            return self.run_view_command(cmd).await;
        }
        if let Some(merge) = crate::merge::parse_merge(self, sql)? {
            return self.run_merge(&merge, &options).await;
        }
        let planned = self.plan_cached(sql).await?;
        self.run_planned(&planned, &options).await
    }

    /// The text of `EXPLAIN [ANALYZE] <sql>`: the logical and physical plans, with run
    /// time metrics when `analyze`.
    ///
    /// In distributed mode, `EXPLAIN` without `analyze` shows the distributed plan: its
    /// stages, their tasks and the network boundaries between them.
    pub async fn explain(&self, sql: &str, analyze: bool) -> Result<String> {
        #[cfg(feature = "distributed")]
        if !analyze && self.inner.coordinator.is_some() {
            return self.explain_distributed(sql).await;
        }
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
                let t = ScalarValue::try_from_array(types, row).map_df()?;
                let p = ScalarValue::try_from_array(plans, row).map_df()?;
                out.push_str(&format!("{}:\n{}\n", scalar_text(&t), scalar_text(&p)));
            }
        }
        Ok(out)
    }

    /// The logical plan of `sql` and the distributed physical plan, stage by stage.
    #[cfg(feature = "distributed")]
    async fn explain_distributed(&self, sql: &str) -> Result<String> {
        let planned = self.plan_cached(sql).await?;
        if planned.command {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "EXPLAIN of a statement that is not a query",
            ));
        }
        let state = self.state();
        let physical = state
            .query_planner()
            .create_physical_plan(&planned.plan, &state)
            .await
            .map_df()?;
        Ok(format!(
            "logical_plan:\n{}\nphysical_plan:\n{}\n",
            planned.plan.display_indent(),
            datafusion_distributed::display_plan_ascii(physical.as_ref(), false)
        ))
    }

    /// Occupancy of the workload queues, sorted by name.
    pub fn queue_stats(&self) -> Vec<QueueStats> {
        self.inner.wlm.stats()
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.config.clock
    }

    pub(crate) fn state(&self) -> SessionState {
        self.inner.ctx.state()
    }

    /// Runs a planned statement, answering from the result cache where it may.
    pub(crate) async fn run_planned(
        &self,
        planned: &Planned,
        options: &QueryOptions,
    ) -> Result<QueryResult> {
        if planned.command {
            return match &planned.plan {
                LogicalPlan::Dml(dml) => self.run_dml(dml, options).await,
                LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) => {
                    let result = self
                        .create_table(create, &planned.partition_by, options)
                        .await;
                    self.inner.plans.invalidate();
                    result
                }
                _ => self.run_command(planned.plan.clone(), options).await,
            };
        }
        let versions = self.versions(&planned.tables).await?;
        // Read after the versions: when the catalog is still in the epoch the plan was
        // made in, the plan, the versions and the registrations are of the same tables.
        let (epoch, registrations) = self.registrations(&planned.tables);
        let use_cache = planned.cacheable
            && epoch == planned.epoch
            && !options.no_cache
            && self.inner.results.enabled();
        let key = use_cache.then(|| CacheKey::new(planned.key.clone(), &versions, &registrations));
        let schema = Arc::new(planned.plan.schema().as_arrow().clone());
        if let Some(k) = &key
            && let Some(batches) = self.inner.results.get(k)
        {
            return Ok(QueryResult {
                schema,
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
            schema,
            batches,
            from_cache: false,
        })
    }

    async fn run_command(&self, plan: LogicalPlan, options: &QueryOptions) -> Result<QueryResult> {
        let schema = Arc::new(plan.schema().as_arrow().clone());
        let ctx = self.inner.ctx.clone();
        let run = async move {
            let df = ctx.execute_logical_plan(plan).await.map_df()?;
            df.collect().await.map_df()
        };
        let batches = self.distributed_run(run, options).await?;
        // DDL may have changed the catalog.
        self.inner.plans.invalidate();
        Ok(QueryResult {
            schema,
            batches: Arc::new(batches),
            from_cache: false,
        })
    }

    /// Runs `fut` in a workload slot, under the query's timeout and cancellation.
    pub(crate) async fn guarded<T>(
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
        let state = self.state();
        let limit = options
            .memory_limit
            .or(self.inner.config.query_memory_limit);
        let run = async move {
            let physical = state
                .query_planner()
                .create_physical_plan(&plan, &state)
                .await
                .map_df()?;
            let mut task = state.task_ctx();
            if let Some(limit) = limit {
                let pool: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(limit));
                let runtime = RuntimeEnvBuilder::from_runtime_env(state.runtime_env())
                    .with_memory_pool(pool)
                    .build_arc()
                    .map_df()?;
                task = Arc::new(
                    datafusion::execution::TaskContext::from(&state).with_runtime(runtime),
                );
            }
            datafusion::physical_plan::collect(physical, task)
                .await
                .map_df()
        };
        self.distributed_run(run, options).await
    }

    /// Runs `fut` [`guarded`](Self::guarded); in distributed mode, with the
    /// coordinator serving and the workers that fail left out of the next queries.
    async fn distributed_run<T>(
        &self,
        fut: impl Future<Output = Result<T>>,
        options: &QueryOptions,
    ) -> Result<T> {
        #[cfg(feature = "distributed")]
        if let Some(coordinator) = &self.inner.coordinator {
            coordinator.before_query().await?;
            return match self.guarded(fut, options).await {
                Ok(v) => Ok(v),
                Err(e) if matches!(e.kind(), ErrorKind::Cancelled | ErrorKind::Timeout) => Err(e),
                Err(e) => Err(coordinator.after_failure(e).await),
            };
        }
        self.guarded(fut, options).await
    }

    /// Optimizes and runs an unoptimized logical plan (used by materialized views).
    pub(crate) async fn execute_logical(&self, plan: LogicalPlan) -> Result<Vec<RecordBatch>> {
        let optimized = self.state().optimize(&plan).map_df()?;
        self.execute_optimized(optimized, &QueryOptions::new())
            .await
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
