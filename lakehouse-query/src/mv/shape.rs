//! The shape of a view's query: whether and how it is maintained incrementally.

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};

/// One aggregate of an incrementally maintained `GROUP BY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AggKind {
    Sum,
    Count,
    Min,
    Max,
    Avg,
}

/// How a view is refreshed.
#[derive(Debug, Clone)]
pub(super) enum Shape {
    /// `aggs[i]` is the kind and the plain aggregate expression of output aggregate `i`.
    Aggregate { aggs: Vec<(AggKind, Expr)> },
    /// Projections, filters and inner joins: the rows over the appended rows are appended.
    Rows,
    /// Refreshed by running the query again, for this reason.
    Full(String),
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

pub(super) fn node_name(plan: &LogicalPlan) -> String {
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

pub(super) fn analyze_shape(plan: &LogicalPlan) -> Shape {
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
