//! The partial aggregation state of an aggregate view: the plans that compute it from
//! rows, merge two states group by group (a removed rows' state negated first, where
//! the aggregates allow it) and give the view's rows from a state.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, TableReference};
use datafusion::datasource::{MemTable, provider_as_source};
use datafusion::functions_aggregate::expr_fn::{count, max, min, sum};
use datafusion::logical_expr::{
    Aggregate, Expr, LogicalPlan, LogicalPlanBuilder, Projection, cast, lit, when,
};
use lakehouse_core::{Error, Result};

use crate::engine::QueryEngine;
use crate::error::DfResultExt;
use crate::mv::shape::AggKind;
use crate::mv::{MaterializedView, collect_aligned, nullable};

/// The name partial states are scanned under.
const STATE_TABLE: &str = "__mv_state";

/// The single aggregate node of `plan`.
fn find_aggregate(plan: &LogicalPlan) -> Result<Aggregate> {
    let mut found = None;
    plan.apply(|n| {
        if let LogicalPlan::Aggregate(a) = n {
            found = Some(a.clone());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_df()?;
    found.ok_or_else(|| Error::internal("an aggregate view lost its aggregation"))
}

fn state_col(name: &str) -> Expr {
    Expr::Column(Column::new(Some(STATE_TABLE), name))
}

/// The state columns of `aggs`, each with how it merges, in order: one per `COUNT`,
/// `MIN` and `MAX`, two per `SUM` and `AVG` (the sum and the count of values that are
/// not null, so that a sum whose values were all retracted becomes null again), then
/// the group's row count (a group whose rows were all retracted is gone).
fn state_exprs(aggs: &[(AggKind, Expr)]) -> Result<Vec<(Expr, AggKind)>> {
    let mut out = Vec::new();
    for (kind, expr) in aggs {
        match kind {
            AggKind::Avg | AggKind::Sum => {
                let Expr::AggregateFunction(f) = expr else {
                    return Err(Error::internal("a SUM or AVG state lost its function"));
                };
                let arg = f.params.args[0].clone();
                let total = if *kind == AggKind::Sum {
                    expr.clone()
                } else {
                    sum(arg.clone())
                };
                out.push((total, AggKind::Sum));
                out.push((count(arg), AggKind::Sum));
            }
            AggKind::Count => out.push((expr.clone(), AggKind::Sum)),
            k => out.push((expr.clone(), *k)),
        }
    }
    out.push((count(lit(1i64)), AggKind::Sum));
    Ok(out)
}

/// The partial-state aggregation of `plan`'s aggregate: groups `g0..`, states `s0..`
/// (see [`state_exprs`]).
fn state_plan(plan: &LogicalPlan, aggs: &[(AggKind, Expr)]) -> Result<LogicalPlan> {
    let agg = find_aggregate(plan)?;
    let group = agg
        .group_expr
        .iter()
        .enumerate()
        .map(|(i, e)| e.clone().alias(format!("g{i}")))
        .collect();
    let states = state_exprs(aggs)?
        .into_iter()
        .enumerate()
        .map(|(i, (e, _))| e.alias(format!("s{i}")))
        .collect();
    Ok(LogicalPlan::Aggregate(
        Aggregate::try_new(agg.input.clone(), group, states).map_df()?,
    ))
}

/// How each state column merges with itself.
fn merge_kinds(aggs: &[(AggKind, Expr)]) -> Vec<AggKind> {
    let mut out = Vec::new();
    for (kind, _) in aggs {
        match kind {
            AggKind::Avg | AggKind::Sum => {
                out.push(AggKind::Sum);
                out.push(AggKind::Sum);
            }
            AggKind::Count => out.push(AggKind::Sum),
            k => out.push(*k),
        }
    }
    out.push(AggKind::Sum);
    out
}

/// Whether removed rows can be taken out of a state of `schema`: every aggregate is
/// `SUM`, `COUNT` or `AVG` and no state column is unsigned (it is negated). `Err` says
/// why not.
pub(super) fn retractable(
    schema: &SchemaRef,
    aggs: &[(AggKind, Expr)],
) -> std::result::Result<(), String> {
    if let Some((_, e)) = aggs
        .iter()
        .find(|(k, _)| matches!(k, AggKind::Min | AggKind::Max))
    {
        return Err(format!("MIN and MAX cannot take removed rows back ({e})"));
    }
    let kinds = merge_kinds(aggs);
    let groups = schema.fields().len() - kinds.len();
    if let Some(f) = schema
        .fields()
        .iter()
        .skip(groups)
        .find(|f| f.data_type().is_unsigned_integer())
    {
        return Err(format!(
            "the state column {} is unsigned and cannot be negated",
            f.name()
        ));
    }
    Ok(())
}

/// `states` with every state column negated (removed rows' states, to be merged).
pub(super) async fn negate_states(
    engine: &QueryEngine,
    schema: &SchemaRef,
    aggs: &[(AggKind, Expr)],
    states: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let groups = schema.fields().len() - merge_kinds(aggs).len();
    let exprs: Vec<Expr> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let c = state_col(f.name());
            let e = if i < groups {
                c
            } else {
                cast(Expr::Negative(Box::new(c)), f.data_type().clone())
            };
            e.alias(f.name())
        })
        .collect();
    let plan = LogicalPlanBuilder::from(state_scan(schema, states)?)
        .project(exprs)
        .map_df()?
        .build()
        .map_df()?;
    collect_aligned(engine, plan, schema).await
}

/// A scan of partial states.
fn state_scan(schema: &SchemaRef, batches: Vec<RecordBatch>) -> Result<LogicalPlan> {
    let table = MemTable::try_new(schema.clone(), vec![batches]).map_df()?;
    LogicalPlanBuilder::scan(STATE_TABLE, provider_as_source(Arc::new(table)), None)
        .and_then(LogicalPlanBuilder::build)
        .map_df()
}

/// Runs the partial-state aggregation of `plan`: the state's schema and batches.
pub(super) async fn compute_state(
    engine: &QueryEngine,
    plan: &LogicalPlan,
    aggs: &[(AggKind, Expr)],
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let plan = state_plan(plan, aggs)?;
    let schema = nullable(plan.schema().as_arrow());
    let batches = collect_aligned(engine, plan, &schema).await?;
    Ok((schema, batches))
}

/// Merges partial states group by group.
pub(super) async fn merge_states(
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
        .aggregate(group_exprs, merge_exprs)
        .map_df()?
        .build()
        .map_df()?;
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
    let plan = LogicalPlanBuilder::from(agg)
        .project(casts)
        .map_df()?
        .build()
        .map_df()?;
    collect_aligned(engine, plan, schema).await
}

/// Computes the rows of `view` (with aggregates `aggs`) from a partial state of
/// `schema`: the view's query with its aggregation replaced by a projection of the state.
pub(super) async fn rows_from_state(
    engine: &QueryEngine,
    view: &MaterializedView,
    aggs: &[(AggKind, Expr)],
    schema: &SchemaRef,
    states: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let agg = find_aggregate(&view.plan)?;
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
    let some = |n: usize| state_col(&format!("s{n}")).gt(lit(0i64));
    for ((kind, _), (q, f)) in aggs.iter().zip(fields.iter().skip(groups)) {
        let e = match kind {
            AggKind::Avg => {
                let total = cast(state_col(&format!("s{s}")), DataType::Float64);
                let n = cast(state_col(&format!("s{}", s + 1)), DataType::Float64);
                let e = when(some(s + 1), total / n).end().map_df()?;
                s += 2;
                e
            }
            AggKind::Sum => {
                let e = when(some(s + 1), state_col(&format!("s{s}")))
                    .end()
                    .map_df()?;
                s += 2;
                e
            }
            _ => {
                s += 1;
                state_col(&format!("s{}", s - 1))
            }
        };
        exprs.push(cast(e, f.data_type().clone()).alias_qualified(q.clone(), f.name()));
    }
    let mut scan = state_scan(schema, states)?;
    if groups > 0 {
        // Groups whose rows were all retracted are gone.
        scan = LogicalPlanBuilder::from(scan)
            .filter(some(s))
            .map_df()?
            .build()
            .map_df()?;
    }
    let projection = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(scan)).map_df()?);
    let mut replacement = Some(projection);
    let plan = view
        .plan
        .clone()
        .transform_up(|node| match node {
            LogicalPlan::Aggregate(_) => match replacement.take() {
                Some(p) => Ok(Transformed::yes(p)),
                None => Ok(Transformed::no(node)),
            },
            other => Ok(Transformed::yes(other.recompute_schema()?)),
        })
        .map_df()?
        .data;
    collect_aligned(engine, plan, &view.schema).await
}
