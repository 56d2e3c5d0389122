//! Materialized views: a query's result kept in memory, refreshed incrementally from the
//! rows appended to its tables where the query's shape allows, fully otherwise.
//!
//! Two shapes refresh incrementally when exactly one of the tables the view reads has
//! changed, by appends only, and that table is read once:
//!
//! * **Aggregate**: one `GROUP BY` (or global aggregate) with `SUM`, `COUNT`, `AVG`, `MIN`,
//!   `MAX` (no `DISTINCT`, no `FILTER`) over projections, filters and inner joins of
//!   tables, with any projection, `HAVING`, `ORDER BY` or `LIMIT` above it. The view keeps
//!   a partial state per group (sums, counts, minima, maxima; `AVG` as a sum and a count);
//!   a refresh aggregates the appended rows into a state of their own, merges the two and
//!   computes the view's rows from the merged state.
//! * **Rows**: projections, filters and inner joins only. A refresh appends the rows the
//!   query gives over the appended rows.
//!
//! Anything else (and a table whose change removed rows) is refreshed fully. Readers see
//! an immutable [`ViewSnapshot`], swapped in when a refresh completes.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, TableReference};
use datafusion::datasource::provider_as_source;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::logical_expr::{
    Aggregate, Expr, JoinType, LogicalPlan, LogicalPlanBuilder, Projection, cast,
};
use datafusion::physical_plan::ExecutionPlan;
use futures::TryStreamExt;
use lakehouse_core::{ErrorKind as CoreKind, Version};
use parking_lot::{Mutex, RwLock};

use crate::engine::{QueryEngine, is_volatile, pin_versions};
use crate::error::{Error, ErrorKind, Result};
use crate::scan::align;

/// How a materialized view can be refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefreshMode {
    /// From the rows appended since the last refresh (when one table changed by appends).
    Incremental,
    /// By running the whole query again.
    Full,
}

/// What one refresh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefreshKind {
    /// No table the view reads changed; nothing was done.
    UpToDate,
    /// Only the appended rows were read.
    Incremental,
    /// The whole query ran again.
    Full,
}

impl RefreshKind {
    fn as_str(self) -> &'static str {
        match self {
            RefreshKind::UpToDate => "up to date",
            RefreshKind::Incremental => "incremental",
            RefreshKind::Full => "full",
        }
    }
}

impl fmt::Display for RefreshKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of refreshing a materialized view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshOutcome {
    view: String,
    kind: RefreshKind,
    delta_rows: u64,
    rows: u64,
    reason: Option<String>,
    generation: u64,
}

impl RefreshOutcome {
    /// The view's name.
    pub fn view(&self) -> &str {
        &self.view
    }

    /// Whether the refresh was incremental, full or not needed.
    pub fn kind(&self) -> RefreshKind {
        self.kind
    }

    /// Appended rows read by an incremental refresh (0 otherwise).
    pub fn delta_rows(&self) -> u64 {
        self.delta_rows
    }

    /// Rows of the view after the refresh.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Why a refresh was full (`None` for incremental and up-to-date refreshes).
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The generation of the view's contents after the refresh.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// The contents of a materialized view at one refresh: immutable, cheap to share.
#[derive(Debug)]
pub struct ViewSnapshot {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    generation: u64,
    versions: BTreeMap<String, Version>,
    refreshed_at_micros: i64,
}

impl ViewSnapshot {
    /// The view's schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The view's rows.
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// Increases with every refresh that changed the contents (1 after the first).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The version of each table the contents reflect.
    pub fn versions(&self) -> &BTreeMap<String, Version> {
        &self.versions
    }

    /// When the contents were computed, in microseconds since the Unix epoch, by the
    /// engine's clock.
    pub fn refreshed_at_micros(&self) -> i64 {
        self.refreshed_at_micros
    }
}

/// How a materialized view is defined and refreshed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ViewInfo {
    /// The view's name.
    pub name: String,
    /// The defining query.
    pub sql: String,
    /// Whether appends to one table are applied incrementally.
    pub mode: RefreshMode,
    /// Why the view is always refreshed fully (`None` when it is incremental).
    pub full_reason: Option<String>,
    /// The last successful refresh.
    pub last_outcome: Option<RefreshOutcome>,
    /// The error of the last refresh, if it failed.
    pub last_error: Option<String>,
    /// Refreshes that did work (incremental or full).
    pub refreshes: u64,
}

/// One aggregate of an incrementally maintained `GROUP BY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggKind {
    Sum,
    Count,
    Min,
    Max,
    Avg,
}

#[derive(Debug, Clone)]
enum Shape {
    /// `aggs[i]` is the kind and the plain aggregate expression of output aggregate `i`.
    Aggregate {
        aggs: Vec<(AggKind, Expr)>,
    },
    Rows,
    Full(String),
}

#[derive(Debug, Default)]
struct RefreshState {
    initialized: bool,
    versions: BTreeMap<Arc<str>, Version>,
    /// Partial aggregation state (aggregate shape only), schema `state_schema`.
    agg_state: Vec<RecordBatch>,
    /// Current rows (rows shape only, for appending).
    rows: Vec<RecordBatch>,
}

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
    plan: LogicalPlan,
    shape: Shape,
    /// Tables the query reads, with how many times each is scanned.
    tables: BTreeMap<Arc<str>, usize>,
    schema: SchemaRef,
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

const STATE_TABLE: &str = "__mv_state";

fn nullable(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<Field>>(),
    ))
}

fn has_subquery(e: &Expr) -> bool {
    e.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ))
    })
    .unwrap_or(true)
}

fn node_name(plan: &LogicalPlan) -> String {
    let text = plan.display().to_string();
    text.split(':').next().unwrap_or("").trim().to_owned()
}

/// Checks that `plan` holds only projections, filters, aliases, scans and inner joins.
fn linear_below(plan: &LogicalPlan) -> std::result::Result<(), String> {
    match plan {
        LogicalPlan::TableScan(_) => Ok(()),
        LogicalPlan::SubqueryAlias(a) => linear_below(&a.input),
        LogicalPlan::Projection(p) => {
            if p.expr.iter().any(has_subquery) {
                return Err("a projection holds a subquery".into());
            }
            linear_below(&p.input)
        }
        LogicalPlan::Filter(f) => {
            if has_subquery(&f.predicate) {
                return Err("a filter holds a subquery".into());
            }
            linear_below(&f.input)
        }
        LogicalPlan::Join(j) if j.join_type == JoinType::Inner => {
            if j.filter.as_ref().is_some_and(has_subquery) {
                return Err("a join condition holds a subquery".into());
            }
            linear_below(&j.left)?;
            linear_below(&j.right)
        }
        other => Err(format!(
            "{} is not maintained incrementally",
            node_name(other)
        )),
    }
}

fn agg_kind(e: &Expr) -> std::result::Result<(AggKind, Expr), String> {
    let plain = e.clone().unalias();
    let Expr::AggregateFunction(f) = &plain else {
        return Err(format!("{plain} is not an aggregate function"));
    };
    let p = &f.params;
    if p.distinct || p.filter.is_some() || !p.order_by.is_empty() {
        return Err(format!("{plain} uses DISTINCT, FILTER or ORDER BY"));
    }
    let kind = match f.func.name().to_ascii_lowercase().as_str() {
        "sum" => AggKind::Sum,
        "count" => AggKind::Count,
        "min" => AggKind::Min,
        "max" => AggKind::Max,
        "avg" | "mean" => AggKind::Avg,
        other => return Err(format!("aggregate {other} is not maintained incrementally")),
    };
    if p.args.len() > 1 || (kind != AggKind::Count && p.args.len() != 1) {
        return Err(format!("{plain} takes an unexpected number of arguments"));
    }
    Ok((kind, plain))
}

fn analyze_shape(plan: &LogicalPlan) -> Shape {
    let mut aggregates = 0;
    let _ = plan.apply(|n| {
        if matches!(n, LogicalPlan::Aggregate(_)) {
            aggregates += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if aggregates > 1 {
        return Shape::Full("the query aggregates more than once".into());
    }
    if aggregates == 0 {
        return match linear_below(plan) {
            Ok(()) => Shape::Rows,
            Err(reason) => Shape::Full(reason),
        };
    }
    // Above the aggregate: single-input nodes only.
    let mut node = plan;
    let agg = loop {
        match node {
            LogicalPlan::Aggregate(a) => break a,
            LogicalPlan::Projection(p) if !p.expr.iter().any(has_subquery) => node = &p.input,
            LogicalPlan::Filter(f) if !has_subquery(&f.predicate) => node = &f.input,
            LogicalPlan::Sort(s) => node = &s.input,
            LogicalPlan::Limit(l) => node = &l.input,
            LogicalPlan::SubqueryAlias(a) => node = &a.input,
            other => {
                return Shape::Full(format!(
                    "{} above the aggregation is not maintained incrementally",
                    node_name(other)
                ));
            }
        }
    };
    if agg
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)) || has_subquery(e))
    {
        return Shape::Full("grouping sets are not maintained incrementally".into());
    }
    let aggs = match agg.aggr_expr.iter().map(agg_kind).collect() {
        Ok(a) => a,
        Err(reason) => return Shape::Full(reason),
    };
    match linear_below(&agg.input) {
        Ok(()) => Shape::Aggregate { aggs },
        Err(reason) => Shape::Full(reason),
    }
}

/// The single aggregate node of `plan`.
fn find_aggregate(plan: &LogicalPlan) -> Result<Aggregate> {
    let mut found = None;
    plan.apply(|n| {
        if let LogicalPlan::Aggregate(a) = n {
            found = Some(a.clone());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    found.ok_or_else(|| Error::internal("an aggregate view lost its aggregation"))
}

fn state_col(name: &str) -> Expr {
    Expr::Column(Column::new(Some(STATE_TABLE), name))
}

/// The partial-state aggregation of `plan`'s aggregate: groups `g0..`, states `s0..`.
fn state_plan(plan: &LogicalPlan, aggs: &[(AggKind, Expr)]) -> Result<LogicalPlan> {
    let agg = find_aggregate(plan)?;
    let group = agg
        .group_expr
        .iter()
        .enumerate()
        .map(|(i, e)| e.clone().alias(format!("g{i}")))
        .collect();
    let mut states = Vec::new();
    for (kind, expr) in aggs {
        match kind {
            AggKind::Avg => {
                let Expr::AggregateFunction(f) = expr else {
                    return Err(Error::internal("an AVG state lost its function"));
                };
                let arg = f.params.args[0].clone();
                states.push(sum(arg.clone()));
                states.push(count(arg));
            }
            _ => states.push(expr.clone()),
        }
    }
    let states = states
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.alias(format!("s{i}")))
        .collect();
    Ok(LogicalPlan::Aggregate(Aggregate::try_new(
        agg.input.clone(),
        group,
        states,
    )?))
}

/// How each state column merges with itself.
fn merge_kinds(aggs: &[(AggKind, Expr)]) -> Vec<AggKind> {
    let mut out = Vec::new();
    for (kind, _) in aggs {
        match kind {
            AggKind::Avg => {
                out.push(AggKind::Sum);
                out.push(AggKind::Sum);
            }
            AggKind::Count => out.push(AggKind::Sum),
            k => out.push(*k),
        }
    }
    out
}

fn state_scan(schema: &SchemaRef, batches: Vec<RecordBatch>) -> Result<LogicalPlan> {
    let table = MemTable::try_new(schema.clone(), vec![batches])?;
    Ok(
        LogicalPlanBuilder::scan(STATE_TABLE, provider_as_source(Arc::new(table)), None)?
            .build()?,
    )
}

/// Replaces the scan of `table` in `plan` by a scan of `batches`.
fn substitute(
    plan: &LogicalPlan,
    table: &str,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<LogicalPlan> {
    let mem: Arc<dyn TableProvider> = Arc::new(MemTable::try_new(schema.clone(), vec![batches])?);
    let source = provider_as_source(mem);
    let out = plan.clone().transform_up(|node| match node {
        LogicalPlan::TableScan(mut scan) if scan.table_name.table() == table => {
            scan.source = source.clone();
            Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
        }
        other => Ok(Transformed::no(other)),
    })?;
    Ok(out.data)
}

async fn collect_all(engine: &QueryEngine, plan: LogicalPlan) -> Result<Vec<RecordBatch>> {
    engine.execute_logical(plan).await
}

fn align_all(batches: Vec<RecordBatch>, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    batches
        .into_iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| align(b, schema).map_err(Error::from))
        .collect()
}

impl MaterializedView {
    /// Plans `sql` and works out how the view can be refreshed. Computes nothing yet.
    pub(crate) async fn define(engine: &QueryEngine, name: &str, sql: &str) -> Result<Self> {
        let plan = engine
            .state()
            .create_logical_plan(sql)
            .await
            .map_err(|e| Error::from(e).with_table(name))?;
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
        })?;
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
        result.map_err(|e| {
            if e.context().table.is_none() {
                e.with_table(&*self.name)
            } else {
                e
            }
        })
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
                rows: snap.num_rows() as u64,
                reason: None,
                generation: snap.generation,
            });
        }
        let full_reason = self.incremental_blocker(&state, &current, unversioned, engine);
        let (batches, kind, delta_rows, reason) = match full_reason {
            Some(reason) => {
                let batches = self.full(engine, &mut state, &current).await?;
                (batches, RefreshKind::Full, 0, Some(reason))
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
                    Ok((batches, delta)) => (batches, RefreshKind::Incremental, delta, None),
                    Err(reason) => {
                        let batches = self.full(engine, &mut state, &current).await?;
                        (batches, RefreshKind::Full, 0, Some(reason))
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
                let plan = state_plan(&pinned, aggs)?;
                let schema = nullable(plan.schema().as_arrow());
                let agg_state = align_all(collect_all(engine, plan).await?, &schema)?;
                let out = self
                    .rows_from_state(engine, &schema, agg_state.clone())
                    .await?;
                state.agg_state = agg_state;
                out
            }
            Shape::Rows => {
                let rows = align_all(collect_all(engine, pinned).await?, &self.schema)?;
                state.rows = rows.clone();
                rows
            }
            Shape::Full(_) => align_all(collect_all(engine, pinned).await?, &self.schema)?,
        };
        state.versions = current.clone();
        Ok(batches)
    }

    /// Applies the rows appended to `table`. The inner `Err` is a reason to fall back to
    /// a full refresh.
    async fn incremental(
        &self,
        engine: &QueryEngine,
        state: &mut RefreshState,
        current: &BTreeMap<Arc<str>, Version>,
        table: &Arc<str>,
    ) -> Result<std::result::Result<(Vec<RecordBatch>, u64), String>> {
        let Some(source) = engine.source_of(table) else {
            return Ok(Err(format!(
                "table {table} does not list its appended rows"
            )));
        };
        let from = state.versions.get(table).copied().unwrap_or(0);
        let changes = match source.changes_since(from).await {
            Ok(c) => c,
            Err(e) if matches!(e.kind(), CoreKind::NonAppendChange | CoreKind::Unsupported) => {
                return Ok(Err(format!(
                    "table {table} changed by more than appends: {}",
                    e.message()
                )));
            }
            Err(e) => return Err(Error::from(e).with_table(&**table)),
        };
        let to = changes.to_version;
        let schema = source.schema();
        let delta: Vec<RecordBatch> = changes
            .batches
            .try_collect()
            .await
            .map_err(|e| Error::from(e).with_table(&**table))?;
        let delta = align_all(delta, &schema)?;
        let delta_rows: u64 = delta.iter().map(|b| b.num_rows() as u64).sum();
        let mut pins: std::collections::HashMap<&str, Version> =
            current.iter().map(|(t, v)| (&**t, *v)).collect();
        pins.remove(&**table);
        let plan = substitute(&self.plan, table, &schema, delta)?;
        let plan = pin_versions(plan, &pins)?;
        let batches = match &self.shape {
            Shape::Aggregate { aggs } => {
                let splan = state_plan(&plan, aggs)?;
                let sschema = nullable(splan.schema().as_arrow());
                let fresh = align_all(collect_all(engine, splan).await?, &sschema)?;
                let merged = if fresh.is_empty() {
                    state.agg_state.clone()
                } else {
                    let mut all = state.agg_state.clone();
                    all.extend(fresh);
                    self.merge_states(engine, &sschema, aggs, all).await?
                };
                let out = self
                    .rows_from_state(engine, &sschema, merged.clone())
                    .await?;
                state.agg_state = merged;
                out
            }
            Shape::Rows => {
                let fresh = align_all(collect_all(engine, plan).await?, &self.schema)?;
                state.rows.extend(fresh);
                state.rows.clone()
            }
            Shape::Full(reason) => return Ok(Err(reason.clone())),
        };
        let mut versions = current.clone();
        versions.insert(table.clone(), to.max(from));
        state.versions = versions;
        Ok(Ok((batches, delta_rows)))
    }

    /// Merges partial states group by group.
    async fn merge_states(
        &self,
        engine: &QueryEngine,
        schema: &SchemaRef,
        aggs: &[(AggKind, Expr)],
        states: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        let kinds = merge_kinds(aggs);
        let groups = schema.fields().len() - kinds.len();
        let group_exprs: Vec<Expr> = (0..groups).map(|i| state_col(&format!("g{i}"))).collect();
        let merge_exprs: Vec<Expr> = kinds
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let name = format!("s{i}");
                let c = state_col(&name);
                let e = match k {
                    AggKind::Min => min(c),
                    AggKind::Max => max(c),
                    _ => sum(c),
                };
                e.alias(name)
            })
            .collect();
        let scan = state_scan(schema, states)?;
        let agg = LogicalPlanBuilder::from(scan)
            .aggregate(group_exprs, merge_exprs)?
            .build()?;
        // Keep the state schema exactly (a sum of sums widens decimals).
        let casts: Vec<Expr> = schema
            .fields()
            .iter()
            .map(|f| {
                cast(
                    Expr::Column(Column::from_name(f.name())),
                    f.data_type().clone(),
                )
                .alias(f.name())
            })
            .collect();
        let plan = LogicalPlanBuilder::from(agg).project(casts)?.build()?;
        align_all(collect_all(engine, plan).await?, schema)
    }

    /// Computes the view's rows from a partial state: the query with its aggregation
    /// replaced by a projection of the state.
    async fn rows_from_state(
        &self,
        engine: &QueryEngine,
        schema: &SchemaRef,
        states: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        let Shape::Aggregate { aggs } = &self.shape else {
            return Err(Error::internal(
                "rows_from_state on a view without aggregation",
            ));
        };
        let agg = find_aggregate(&self.plan)?;
        let agg_schema: DFSchemaRef = agg.schema.clone();
        let groups = agg.group_expr.len();
        let fields: Vec<(Option<TableReference>, Arc<Field>)> = agg_schema
            .iter()
            .map(|(q, f)| (q.cloned(), f.clone()))
            .collect();
        if fields.len() != groups + aggs.len() {
            return Err(Error::internal(
                "an aggregate's schema does not match its expressions",
            ));
        }
        let mut exprs = Vec::with_capacity(fields.len());
        for (i, (q, f)) in fields.iter().take(groups).enumerate() {
            let e = cast(state_col(&format!("g{i}")), f.data_type().clone());
            exprs.push(e.alias_qualified(q.clone(), f.name()));
        }
        let mut s = 0;
        for ((kind, _), (q, f)) in aggs.iter().zip(fields.iter().skip(groups)) {
            let e = match kind {
                AggKind::Avg => {
                    let total = cast(state_col(&format!("s{s}")), DataType::Float64);
                    let n = cast(state_col(&format!("s{}", s + 1)), DataType::Float64);
                    s += 2;
                    total / n
                }
                _ => {
                    s += 1;
                    state_col(&format!("s{}", s - 1))
                }
            };
            exprs.push(cast(e, f.data_type().clone()).alias_qualified(q.clone(), f.name()));
        }
        let scan = state_scan(schema, states)?;
        let projection = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(scan))?);
        let mut replacement = Some(projection);
        let plan = self
            .plan
            .clone()
            .transform_up(|node| match node {
                LogicalPlan::Aggregate(_) => match replacement.take() {
                    Some(p) => Ok(Transformed::yes(p)),
                    None => Ok(Transformed::no(node)),
                },
                other => Ok(Transformed::yes(other.recompute_schema()?)),
            })?
            .data;
        align_all(collect_all(engine, plan).await?, &self.schema)
    }
}

/// The table a materialized view is registered as: scans its current snapshot.
#[derive(Debug)]
pub(crate) struct ViewProvider {
    view: Arc<MaterializedView>,
}

impl ViewProvider {
    pub(crate) fn new(view: Arc<MaterializedView>) -> Self {
        ViewProvider { view }
    }
}

#[async_trait]
impl TableProvider for ViewProvider {
    fn schema(&self) -> SchemaRef {
        self.view.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let snap = self.view.snapshot();
        let table = MemTable::try_new(self.view.schema(), vec![snap.batches.clone()])?;
        table.scan(state, projection, filters, limit).await
    }
}

/// A materialized view statement the engine handles itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `CREATE MATERIALIZED VIEW name AS query`
    Create { name: String, query: String },
    /// `REFRESH MATERIALIZED VIEW name`
    Refresh { name: String },
    /// `DROP MATERIALIZED VIEW [IF EXISTS] name`
    Drop { name: String, if_exists: bool },
}

/// The next whitespace-separated word of `s` and the rest after it.
fn word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

fn expect_word<'a>(s: &'a str, want: &str, sql: &str) -> Result<&'a str> {
    match word(s) {
        Some((w, rest)) if w.eq_ignore_ascii_case(want) => Ok(rest),
        found => Err(Error::new(
            ErrorKind::InvalidSql,
            format!(
                "expected {} but found {:?} in {sql:?}",
                want.to_ascii_uppercase(),
                found.map(|(w, _)| w).unwrap_or("the end")
            ),
        )),
    }
}

fn name_only(rest: &str, sql: &str) -> Result<String> {
    let (name, tail) = word(rest).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidSql,
            format!("a view name is missing in {sql:?}"),
        )
    })?;
    if !tail.trim().is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidSql,
            format!(
                "unexpected {:?} after the view name in {sql:?}",
                tail.trim()
            ),
        ));
    }
    Ok(name.to_owned())
}

/// Recognizes the materialized view statements; `None` for any other SQL.
pub(crate) fn parse_command(sql: &str) -> Result<Option<Command>> {
    let text = sql.trim().trim_end_matches(';').trim_end();
    let Some((first, rest)) = word(text) else {
        return Ok(None);
    };
    let Some((second, rest2)) = word(rest) else {
        return Ok(None);
    };
    let verb = first.to_ascii_lowercase();
    if !second.eq_ignore_ascii_case("materialized")
        || !matches!(verb.as_str(), "create" | "refresh" | "drop")
    {
        return Ok(None);
    }
    let rest = expect_word(rest2, "view", sql)?;
    Ok(Some(match verb.as_str() {
        "create" => {
            let (name, after) = word(rest).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidSql,
                    format!("a view name is missing in {sql:?}"),
                )
            })?;
            let query = expect_word(after, "as", sql)?.trim();
            if query.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidSql,
                    format!("the query after AS is missing in {sql:?}"),
                ));
            }
            Command::Create {
                name: name.to_owned(),
                query: query.to_owned(),
            }
        }
        "refresh" => Command::Refresh {
            name: name_only(rest, sql)?,
        },
        _ => {
            let (if_exists, rest) = match word(rest) {
                Some((w, tail)) if w.eq_ignore_ascii_case("if") => {
                    (true, expect_word(tail, "exists", sql)?)
                }
                _ => (false, rest),
            };
            Command::Drop {
                name: name_only(rest, sql)?,
                if_exists,
            }
        }
    }))
}

/// The rows a materialized view statement returns: one row describing the refresh,
/// or none (for `DROP`).
pub(crate) fn outcome_batch(outcome: Option<&RefreshOutcome>) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("view", DataType::Utf8, false),
        Field::new("refresh", DataType::Utf8, false),
        Field::new("delta_rows", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("reason", DataType::Utf8, true),
    ]));
    let o: Vec<&RefreshOutcome> = outcome.into_iter().collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            o.iter().map(|o| o.view.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            o.iter().map(|o| o.kind.as_str()),
        )),
        Arc::new(UInt64Array::from_iter_values(
            o.iter().map(|o| o.delta_rows),
        )),
        Arc::new(UInt64Array::from_iter_values(o.iter().map(|o| o.rows))),
        Arc::new(StringArray::from_iter(
            o.iter().map(|o| o.reason.as_deref()),
        )),
    ];
    RecordBatch::try_new(schema, columns)
        .map_err(|e| Error::internal(format!("building a refresh report: {e}")).with_source(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_view_statements() {
        assert_eq!(parse_command("SELECT 1").expect("plain sql"), None);
        assert_eq!(
            parse_command("create materialized view v as select a from t;").expect("create"),
            Some(Command::Create {
                name: "v".into(),
                query: "select a from t".into()
            })
        );
        assert_eq!(
            parse_command("REFRESH MATERIALIZED VIEW v").expect("refresh"),
            Some(Command::Refresh { name: "v".into() })
        );
        assert_eq!(
            parse_command("DROP MATERIALIZED VIEW IF EXISTS v;").expect("drop"),
            Some(Command::Drop {
                name: "v".into(),
                if_exists: true
            })
        );
        let e = parse_command("CREATE MATERIALIZED VIEW v SELECT 1").expect_err("no AS");
        assert_eq!(e.kind(), ErrorKind::InvalidSql);
        assert!(e.message().contains("expected AS"), "{e}");
        let e = parse_command("REFRESH MATERIALIZED VIEW").expect_err("no name");
        assert!(e.message().contains("view name is missing"), "{e}");
    }
}
