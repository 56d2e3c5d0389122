//! A materialized view: its definition, its contents and its refresh, incremental
//! where the query's shape allows (over appends, and over removed rows where the
//! aggregates can take them back).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::{MemTable, TableProvider, provider_as_source};
use datafusion::logical_expr::LogicalPlan;
use futures::TryStreamExt;
use lakehouse_core::{Error, ErrorKind, Result, Version};
use parking_lot::{Mutex, RwLock};

use crate::engine::QueryEngine;
use crate::error::DfResultExt;
use crate::mv::outcome::{RefreshKind, RefreshMode, RefreshOutcome, ViewInfo};
use crate::mv::shape::{Shape, analyze_shape, node_name};
use crate::mv::snapshot::ViewSnapshot;
use crate::mv::state::{compute_state, merge_states, negate_states, retractable, rows_from_state};
use crate::mv::{align_all, collect_aligned, nullable};
use crate::plan::{is_volatile, pin_versions, plan_sql};

/// What a refresh works from, guarded so that one refresh runs at a time.
#[derive(Debug, Default)]
struct RefreshState {
    initialized: bool,
    versions: BTreeMap<Arc<str>, Version>,
    /// Partial aggregation state (aggregate shape only), schema `state_schema`.
    agg_state: Vec<RecordBatch>,
    /// Current rows (rows shape only, for appending).
    rows: Vec<RecordBatch>,
}

/// What [`ViewInfo`] reports of past refreshes.
#[derive(Debug, Default)]
struct InfoState {
    last_outcome: Option<RefreshOutcome>,
    last_error: Option<String>,
    refreshes: u64,
}

/// A materialized view: its definition, its contents and its refresh state.
pub(crate) struct MaterializedView {
    name: Arc<str>,
    sql: String,
    pub(super) plan: LogicalPlan,
    shape: Shape,
    /// Tables the query reads, with how many times each is scanned.
    tables: BTreeMap<Arc<str>, usize>,
    pub(super) schema: SchemaRef,
    snapshot: RwLock<Arc<ViewSnapshot>>,
    state: tokio::sync::Mutex<RefreshState>,
    info: Mutex<InfoState>,
}

impl fmt::Debug for MaterializedView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaterializedView")
            .field("name", &self.name)
            .field("sql", &self.sql)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

/// Names view `name` in an error that names no table yet (a missing table keeps its own
/// name).
fn naming(e: Error, name: &str) -> Error {
    if e.context().table.is_none() {
        e.with_table(name)
    } else {
        e
    }
}

/// Replaces the scan of `table` in `plan` by a scan of `batches`.
fn substitute(
    plan: &LogicalPlan,
    table: &str,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<LogicalPlan> {
    let mem: Arc<dyn TableProvider> =
        Arc::new(MemTable::try_new(schema.clone(), vec![batches]).map_df()?);
    let source = provider_as_source(mem);
    let out = plan
        .clone()
        .transform_up(|node| match node {
            LogicalPlan::TableScan(mut scan) if scan.table_name.table() == table => {
                scan.source = source.clone();
                Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
            }
            other => Ok(Transformed::no(other)),
        })
        .map_df()?;
    Ok(out.data)
}

impl MaterializedView {
    /// Plans `sql` and works out how the view can be refreshed. Computes nothing yet.
    pub(crate) async fn define(engine: &QueryEngine, name: &str, sql: &str) -> Result<Self> {
        let plan = plan_sql(&engine.state(), sql)
            .await
            .map_err(|e| naming(e, name))?;
        if !matches!(
            plan,
            LogicalPlan::Projection(_)
                | LogicalPlan::Aggregate(_)
                | LogicalPlan::Filter(_)
                | LogicalPlan::Sort(_)
                | LogicalPlan::Limit(_)
                | LogicalPlan::Distinct(_)
                | LogicalPlan::Join(_)
                | LogicalPlan::Union(_)
                | LogicalPlan::Window(_)
                | LogicalPlan::SubqueryAlias(_)
                | LogicalPlan::TableScan(_)
                | LogicalPlan::Values(_)
        ) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "a materialized view is defined by a query, not {}",
                    node_name(&plan)
                ),
            )
            .with_table(name));
        }
        let mut tables: BTreeMap<Arc<str>, usize> = BTreeMap::new();
        plan.apply_with_subqueries(|n| {
            if let LogicalPlan::TableScan(scan) = n {
                *tables
                    .entry(Arc::from(scan.table_name.table()))
                    .or_default() += 1;
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .map_df()?;
        let shape = if is_volatile(&plan)? {
            Shape::Full("the query calls a volatile function".into())
        } else {
            analyze_shape(&plan)
        };
        let schema = nullable(plan.schema().as_arrow());
        let empty = ViewSnapshot {
            schema: schema.clone(),
            batches: Vec::new(),
            generation: 0,
            versions: BTreeMap::new(),
            refreshed_at_micros: 0,
        };
        Ok(MaterializedView {
            name: Arc::from(name),
            sql: sql.to_owned(),
            plan,
            shape,
            tables,
            schema,
            snapshot: RwLock::new(Arc::new(empty)),
            state: tokio::sync::Mutex::new(RefreshState::default()),
            info: Mutex::new(InfoState::default()),
        })
    }

    /// The current contents; never waits for a refresh.
    pub(crate) fn snapshot(&self) -> Arc<ViewSnapshot> {
        self.snapshot.read().clone()
    }

    /// The generation of the current contents (the view's version for the result cache).
    pub(crate) fn generation(&self) -> u64 {
        self.snapshot.read().generation
    }

    pub(crate) fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub(crate) fn info(&self) -> ViewInfo {
        let state = self.info.lock();
        let (mode, full_reason) = match &self.shape {
            Shape::Full(r) => (RefreshMode::Full, Some(r.clone())),
            _ => (RefreshMode::Incremental, None),
        };
        ViewInfo {
            name: self.name.to_string(),
            sql: self.sql.clone(),
            mode,
            full_reason,
            last_outcome: state.last_outcome.clone(),
            last_error: state.last_error.clone(),
            refreshes: state.refreshes,
        }
    }

    /// Brings the view up to date. One refresh runs at a time per view; readers keep
    /// the previous snapshot until the new one is swapped in.
    pub(crate) async fn refresh(&self, engine: &QueryEngine) -> Result<RefreshOutcome> {
        let result = self.refresh_inner(engine).await;
        let mut info = self.info.lock();
        match &result {
            Ok(outcome) => {
                if outcome.kind != RefreshKind::UpToDate {
                    info.refreshes += 1;
                }
                info.last_outcome = Some(outcome.clone());
                info.last_error = None;
            }
            Err(e) => info.last_error = Some(e.to_string()),
        }
        result.map_err(|e| naming(e, &self.name))
    }

    async fn refresh_inner(&self, engine: &QueryEngine) -> Result<RefreshOutcome> {
        let mut state = self.state.lock().await;
        let names: Vec<Arc<str>> = self.tables.keys().cloned().collect();
        let now = engine.versions(&names).await?;
        let unversioned = now.iter().any(|(_, v)| v.is_none());
        let current: BTreeMap<Arc<str>, Version> = now
            .iter()
            .filter_map(|(t, v)| v.map(|v| (t.clone(), v)))
            .collect();
        if state.initialized && !unversioned && current == state.versions {
            let snap = self.snapshot();
            return Ok(RefreshOutcome {
                view: self.name.to_string(),
                kind: RefreshKind::UpToDate,
                delta_rows: 0,
                removed_rows: 0,
                rows: snap.num_rows() as u64,
                reason: None,
                generation: snap.generation,
            });
        }
        let full_reason = self.incremental_blocker(&state, &current, unversioned, engine);
        let (batches, kind, delta_rows, removed_rows, reason) = match full_reason {
            Some(reason) => {
                let batches = self.full(engine, &mut state, &current).await?;
                (batches, RefreshKind::Full, 0, 0, Some(reason))
            }
            None => {
                let table = current
                    .iter()
                    .find(|(t, v)| state.versions.get(*t) != Some(*v))
                    .map(|(t, _)| t.clone())
                    .ok_or_else(|| Error::internal("no changed table to refresh from"))?;
                match self
                    .incremental(engine, &mut state, &current, &table)
                    .await?
                {
                    Ok(d) => (
                        d.batches,
                        RefreshKind::Incremental,
                        d.added_rows,
                        d.removed_rows,
                        None,
                    ),
                    Err(reason) => {
                        let batches = self.full(engine, &mut state, &current).await?;
                        (batches, RefreshKind::Full, 0, 0, Some(reason))
                    }
                }
            }
        };
        state.initialized = true;
        let generation = self.generation() + 1;
        let snap = Arc::new(ViewSnapshot {
            schema: self.schema.clone(),
            batches,
            generation,
            versions: state
                .versions
                .iter()
                .map(|(t, v)| (t.to_string(), *v))
                .collect(),
            refreshed_at_micros: engine.clock().now_micros(),
        });
        let rows = snap.num_rows() as u64;
        *self.snapshot.write() = snap;
        Ok(RefreshOutcome {
            view: self.name.to_string(),
            kind,
            delta_rows,
            removed_rows,
            rows,
            reason,
            generation,
        })
    }

    /// Why this refresh cannot be incremental, or `None` if it can.
    fn incremental_blocker(
        &self,
        state: &RefreshState,
        current: &BTreeMap<Arc<str>, Version>,
        unversioned: bool,
        engine: &QueryEngine,
    ) -> Option<String> {
        if let Shape::Full(reason) = &self.shape {
            return Some(reason.clone());
        }
        if !state.initialized {
            return Some("first refresh".into());
        }
        if unversioned {
            return Some("the view reads a table without versions".into());
        }
        let changed: Vec<&Arc<str>> = current
            .iter()
            .filter(|(t, v)| state.versions.get(*t) != Some(*v))
            .map(|(t, _)| t)
            .collect();
        if changed.len() != 1 {
            return Some(format!(
                "{} tables changed ({}); incremental refresh applies one",
                changed.len(),
                changed
                    .iter()
                    .map(|t| t.as_ref())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let table = changed[0];
        if self.tables.get(table).copied().unwrap_or(0) != 1 {
            return Some(format!("the query reads table {table} more than once"));
        }
        if engine.source_of(table).is_none() {
            return Some(format!("table {table} does not list its appended rows"));
        }
        None
    }

    /// Runs the whole query at `current` versions and resets the state.
    async fn full(
        &self,
        engine: &QueryEngine,
        state: &mut RefreshState,
        current: &BTreeMap<Arc<str>, Version>,
    ) -> Result<Vec<RecordBatch>> {
        let pins = current.iter().map(|(t, v)| (&**t, *v)).collect();
        let pinned = pin_versions(self.plan.clone(), &pins)?;
        let batches = match &self.shape {
            Shape::Aggregate { aggs } => {
                let (schema, agg_state) = compute_state(engine, &pinned, aggs).await?;
                let out = rows_from_state(engine, self, aggs, &schema, agg_state.clone()).await?;
                state.agg_state = agg_state;
                out
            }
            Shape::Rows => {
                let rows = collect_aligned(engine, pinned, &self.schema).await?;
                state.rows = rows.clone();
                rows
            }
            Shape::Full(_) => collect_aligned(engine, pinned, &self.schema).await?,
        };
        state.versions = current.clone();
        Ok(batches)
    }

    /// Applies the rows added to and removed from `table`. The inner `Err` is a reason
    /// to fall back to a full refresh.
    async fn incremental(
        &self,
        engine: &QueryEngine,
        state: &mut RefreshState,
        current: &BTreeMap<Arc<str>, Version>,
        table: &Arc<str>,
    ) -> Result<std::result::Result<Delta, String>> {
        let Some(source) = engine.source_of(table) else {
            return Ok(Err(format!(
                "table {table} does not list its appended rows"
            )));
        };
        let from = state.versions.get(table).copied().unwrap_or(0);
        let changes = match source.row_changes_since(from).await {
            Ok(c) => c,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::NonAppendChange | ErrorKind::Unsupported
                ) =>
            {
                return Ok(Err(format!(
                    "table {table} changed by more than appends: {}",
                    e.message()
                )));
            }
            Err(e) => return Err(e.with_table(&**table)),
        };
        let to = changes.to_version;
        // The rows stand in for the table in the view's plan: they take the types SQL
        // sees (string views where the engine exposes them).
        let schema = engine
            .sql_schema_of(table)
            .unwrap_or_else(|| source.schema());
        let added = drain(changes.added, table, &schema).await?;
        let removed = drain(changes.removed, table, &schema).await?;
        let count = |b: &[RecordBatch]| b.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        let (added_rows, removed_rows) = (count(&added), count(&removed));
        let mut pins: HashMap<&str, Version> = current.iter().map(|(t, v)| (&**t, *v)).collect();
        pins.remove(&**table);
        let over = |rows: Vec<RecordBatch>| -> Result<LogicalPlan> {
            pin_versions(substitute(&self.plan, table, &schema, rows)?, &pins)
        };
        let batches = match &self.shape {
            Shape::Aggregate { aggs } => {
                let gone = if removed_rows > 0 {
                    let (sschema, gone) = compute_state(engine, &over(removed)?, aggs).await?;
                    if let Err(why) = retractable(&sschema, aggs) {
                        return Ok(Err(format!(
                            "table {table} changed by more than appends ({removed_rows} rows \
                             removed), and {why}"
                        )));
                    }
                    Some(gone)
                } else {
                    None
                };
                let (sschema, fresh) = compute_state(engine, &over(added)?, aggs).await?;
                let mut all = state.agg_state.clone();
                let mut changed = !fresh.is_empty();
                all.extend(fresh);
                if let Some(gone) = gone {
                    all.extend(negate_states(engine, &sschema, aggs, gone).await?);
                    changed = true;
                }
                let merged = if changed {
                    merge_states(engine, &sschema, aggs, all).await?
                } else {
                    state.agg_state.clone()
                };
                let out = rows_from_state(engine, self, aggs, &sschema, merged.clone()).await?;
                state.agg_state = merged;
                out
            }
            Shape::Rows => {
                if removed_rows > 0 {
                    return Ok(Err(format!(
                        "table {table} changed by more than appends ({removed_rows} rows \
                         removed), which a view without aggregation does not take back"
                    )));
                }
                let fresh = collect_aligned(engine, over(added)?, &self.schema).await?;
                state.rows.extend(fresh);
                state.rows.clone()
            }
            Shape::Full(reason) => return Ok(Err(reason.clone())),
        };
        let mut versions = current.clone();
        versions.insert(table.clone(), to.max(from));
        state.versions = versions;
        Ok(Ok(Delta {
            batches,
            added_rows,
            removed_rows,
        }))
    }
}

/// The non-empty batches of `rows` (of `table`), given exactly `schema`.
async fn drain(
    rows: lakehouse_core::BatchStream,
    table: &str,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let batches: Vec<RecordBatch> = rows.try_collect().await.map_err(|e| e.with_table(table))?;
    align_all(batches, schema)
}

/// What an incremental refresh computed.
struct Delta {
    batches: Vec<RecordBatch>,
    added_rows: u64,
    removed_rows: u64,
}
