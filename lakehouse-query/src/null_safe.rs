//! DataFusion's expression simplification, with `IN` lists combined null-safely.
//!
//! DataFusion 55's simplifier combines two `IN` lists over the same expression by
//! intersecting them (`x IN (1, 2) AND x IN (2, 3)` becomes `x IN (2)`, `x NOT IN (1) OR
//! x NOT IN (2)` becomes `x NOT IN ()`, that is `true`) or by taking one from the other
//! (`x IN (1, 2) AND x NOT IN (1)`). Three of those rewrites are wrong under SQL's
//! three-valued logic:
//!
//! * an empty result becomes a constant, also where `x` is null: `x NOT IN (1) OR
//!   x NOT IN (2)` is null for a null `x`, not true, so a `WHERE` that holds it must not
//!   return the row;
//! * a `NULL` in a list is dropped from the comparison (`x NOT IN (1, NULL) OR x NOT IN
//!   (2)` is null for `x = 2`, not true);
//! * list items that are not constants are compared by their text (`x IN (y) AND x IN
//!   (z)` is true where `x = y = z`, not false).
//!
//! The rule here replaces DataFusion's `simplify_expressions` in the engine's optimizer.
//! Before it runs DataFusion's simplification on a plan node, it rewrites every pair that
//! DataFusion would intersect or subtract, itself and correctly: lists of constants are
//! intersected or subtracted as DataFusion would, an empty result becomes `x IS NULL AND
//! NULL` (false, or null where `x` is null) or `x IS NOT NULL OR NULL`, a list holding
//! `NULL` is split into its constants and a `NULL` operand, and a list with non-constant
//! items is written as the comparisons it stands for. What DataFusion then finds to
//! combine is only what it combines correctly (unions). The rewrite follows DataFusion's
//! own way of forming lists while it simplifies: `x = 1 OR x = 2` counts as `x IN (1, 2)`
//! and `NOT (x IN (1))` as `x NOT IN (1)`.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{BinaryExpr, Cast, Expr, LogicalPlan, Operator};
use datafusion::optimizer::simplify_expressions::SimplifyExpressions;
use datafusion::optimizer::{ApplyOrder, Optimizer, OptimizerConfig, OptimizerRule};

/// DataFusion's optimizer rules, its expression simplification replaced by
/// [`NullSafeSimplify`].
pub(crate) fn optimizer_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    let simplify = SimplifyExpressions::new();
    Optimizer::new()
        .rules
        .into_iter()
        .map(|rule| {
            if rule.name() == simplify.name() {
                Arc::new(NullSafeSimplify::default()) as Arc<dyn OptimizerRule + Send + Sync>
            } else {
                rule
            }
        })
        .collect()
}

/// DataFusion's `simplify_expressions`, run after the node's `IN` lists are combined
/// null-safely (see the [module docs](self)).
#[derive(Debug, Default)]
pub(crate) struct NullSafeSimplify {
    inner: SimplifyExpressions,
}

impl OptimizerRule for NullSafeSimplify {
    fn name(&self) -> &str {
        "null_safe_simplify_expressions"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let names = NamePreserver::new(&plan);
        let mut rewrite = |expr: Expr| {
            let name = names.save(&expr);
            let combined = combine_in_lists(expr)?;
            Ok(Transformed::new_transformed(
                name.restore(combined.data),
                combined.transformed,
            ))
        };
        let combined = plan.map_expressions(|expr| {
            // As DataFusion's rule: a grouping set keeps the names of its members.
            if let Expr::GroupingSet(_) = &expr {
                expr.map_children(&mut rewrite)
            } else {
                rewrite(expr)
            }
        })?;
        let changed = combined.transformed;
        let mut simplified = self.inner.rewrite(combined.data, config)?;
        simplified.transformed |= changed;
        Ok(simplified)
    }
}

/// `expr` with each pair of `IN` lists that DataFusion would intersect or subtract
/// combined null-safely, bottom up.
pub(crate) fn combine_in_lists(expr: Expr) -> Result<Transformed<Expr>> {
    expr.transform_up(|e| {
        Ok(match e {
            Expr::InList(list) => normalise(list),
            // `x = NULL` is null: as a list `x IN (NULL)` it would join the lists
            // DataFusion combines, which drop the `NULL`.
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::Eq,
                right,
            }) if is_null_literal(&left) || is_null_literal(&right) => {
                Transformed::yes(null_bool())
            }
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: op @ (Operator::And | Operator::Or),
                right,
            }) => match combine(op, &left, &right) {
                Some(combined) => Transformed::yes(combined),
                None => Transformed::no(Expr::BinaryExpr(BinaryExpr { left, op, right })),
            },
            other => Transformed::no(other),
        })
    })
}

/// An expression's truth as an `IN` list of constants, as DataFusion's simplifier can
/// come to see it.
struct ListView {
    key: Expr,
    items: Vec<ScalarValue>,
    negated: bool,
}

impl ListView {
    fn contains(&self, v: &ScalarValue) -> bool {
        self.items.iter().any(|i| i == v)
    }

    fn union(mut self, other: ListView) -> ListView {
        for v in other.items {
            if !self.contains(&v) {
                self.items.push(v);
            }
        }
        self
    }
}

fn view(expr: &Expr) -> Option<ListView> {
    match expr {
        Expr::InList(InList {
            expr,
            list,
            negated,
        }) => {
            let items = list
                .iter()
                .map(|item| match item {
                    Expr::Literal(v, _) if !v.is_null() => Some(v.clone()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Some(ListView {
                key: expr.as_ref().clone(),
                items,
                negated: *negated,
            })
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => match (left.as_ref(), right.as_ref()) {
            (Expr::Literal(v, _), key) | (key, Expr::Literal(v, _))
                if !v.is_null() && !matches!(key, Expr::Literal(..)) =>
            {
                Some(ListView {
                    key: key.clone(),
                    items: vec![v.clone()],
                    negated: false,
                })
            }
            _ => None,
        },
        Expr::Not(inner) => view(inner).map(|v| ListView {
            negated: !v.negated,
            ..v
        }),
        // Unions: DataFusion merges these itself (correctly), and the merged list may
        // then meet another.
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::Or | Operator::And) =>
        {
            let (l, r) = (view(left)?, view(right)?);
            let negated = *op == Operator::And;
            (l.key == r.key && l.negated == negated && r.negated == negated).then(|| l.union(r))
        }
        _ => None,
    }
}

/// `left op right` as one list or a null-safe constant where DataFusion would intersect
/// or subtract the two lists; `None` where it would not.
fn combine(op: Operator, left: &Expr, right: &Expr) -> Option<Expr> {
    let (l, r) = (view(left)?, view(right)?);
    if l.key != r.key {
        return None;
    }
    let (kept, negated) = match (op, l.negated, r.negated) {
        // Intersections.
        (Operator::And, false, false) | (Operator::Or, true, true) => {
            let kept: Vec<ScalarValue> =
                l.items.iter().filter(|v| r.contains(v)).cloned().collect();
            (kept, l.negated)
        }
        // One list taken from the other.
        (Operator::And, false, true) => (
            l.items.iter().filter(|v| !r.contains(v)).cloned().collect(),
            false,
        ),
        (Operator::And, true, false) => (
            r.items.iter().filter(|v| !l.contains(v)).cloned().collect(),
            false,
        ),
        _ => return None,
    };
    let key = l.key;
    let mut unique: Vec<ScalarValue> = Vec::with_capacity(kept.len());
    for v in kept {
        if !unique.contains(&v) {
            unique.push(v);
        }
    }
    Some(if unique.is_empty() {
        // Never true (or, negated, never false) for a value, null for a null.
        if negated {
            Expr::BinaryExpr(BinaryExpr::new(
                Box::new(Expr::IsNotNull(Box::new(key))),
                Operator::Or,
                Box::new(null_bool()),
            ))
        } else {
            Expr::BinaryExpr(BinaryExpr::new(
                Box::new(Expr::IsNull(Box::new(key))),
                Operator::And,
                Box::new(null_bool()),
            ))
        }
    } else {
        Expr::InList(InList::new(
            Box::new(key),
            unique.into_iter().map(|v| Expr::Literal(v, None)).collect(),
            negated,
        ))
    })
}

/// A list whose items are non-null constants as is; one holding `NULL` as its constants
/// and a `NULL` operand; one with other items as the comparisons it stands for.
fn normalise(list: InList) -> Transformed<Expr> {
    let InList {
        expr: key,
        list: items,
        negated,
    } = list;
    let items: Vec<Expr> = items.into_iter().map(fold_literal_cast).collect();
    if items.is_empty() {
        return Transformed::no(Expr::InList(InList::new(key, items, negated)));
    }
    if items.iter().any(|i| !matches!(i, Expr::Literal(..))) {
        // `x IN (a, b)` is `x = a OR x = b`; `x NOT IN (a, b)` is `x <> a AND x <> b`.
        let (cmp, join) = if negated {
            (Operator::NotEq, Operator::And)
        } else {
            (Operator::Eq, Operator::Or)
        };
        let chain = items
            .into_iter()
            .map(|item| Expr::BinaryExpr(BinaryExpr::new(key.clone(), cmp, Box::new(item))))
            .reduce(|acc, c| Expr::BinaryExpr(BinaryExpr::new(Box::new(acc), join, Box::new(c))));
        return match chain {
            Some(chain) => Transformed::yes(chain),
            None => Transformed::no(null_bool()),
        };
    }
    if items.iter().any(is_null_literal) {
        // `x IN (1, NULL)` is true for 1 and null otherwise: `x IN (1) OR NULL`;
        // `x NOT IN (1, NULL)` is false for 1 and null otherwise: `x NOT IN (1) AND NULL`.
        let values: Vec<Expr> = items.into_iter().filter(|i| !is_null_literal(i)).collect();
        if values.is_empty() {
            return Transformed::yes(null_bool());
        }
        let join = if negated { Operator::And } else { Operator::Or };
        return Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
            Box::new(Expr::InList(InList::new(key, values, negated))),
            join,
            Box::new(null_bool()),
        )));
    }
    Transformed::no(Expr::InList(InList::new(key, items, negated)))
}

/// A cast of a constant as the constant it gives (type coercion casts list items; the
/// simplifier folds them before it combines lists).
fn fold_literal_cast(item: Expr) -> Expr {
    match item {
        Expr::Cast(Cast { expr, field }) if field.metadata().is_empty() => {
            match fold_literal_cast(*expr) {
                Expr::Literal(v, None) => match v.cast_to(field.data_type()) {
                    Ok(cast) => Expr::Literal(cast, None),
                    Err(_) => Expr::Cast(Cast::new_from_field(
                        Box::new(Expr::Literal(v, None)),
                        field,
                    )),
                },
                inner => Expr::Cast(Cast::new_from_field(Box::new(inner), field)),
            }
        }
        other => other,
    }
}

fn is_null_literal(e: &Expr) -> bool {
    matches!(e, Expr::Literal(v, _) if v.is_null())
}

fn null_bool() -> Expr {
    Expr::Literal(ScalarValue::Boolean(None), None)
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col, lit};

    use super::*;

    fn combined(e: Expr) -> Expr {
        combine_in_lists(e).expect("rewrites").data
    }

    #[test]
    fn empty_intersections_stay_null_for_null() {
        let e = col("x")
            .in_list(vec![lit(1)], true)
            .or(col("x").in_list(vec![lit(2)], true));
        assert_eq!(
            combined(e),
            col("x").is_not_null().or(null_bool()),
            "x NOT IN (1) OR x NOT IN (2)"
        );
        let e = col("x")
            .in_list(vec![lit(1), lit(2)], false)
            .and(col("x").in_list(vec![lit(1), lit(2)], true));
        assert_eq!(combined(e), col("x").is_null().and(null_bool()));
    }

    #[test]
    fn non_empty_intersections_are_lists() {
        let e = col("x")
            .in_list(vec![lit(1), lit(2), lit(3)], true)
            .or(col("x").in_list(vec![lit(3), lit(4)], true));
        assert_eq!(combined(e), col("x").in_list(vec![lit(3)], true));
        // `x = 1 OR x = 2` is a list to the simplifier.
        let e = col("x")
            .eq(lit(1))
            .or(col("x").eq(lit(2)))
            .and(col("x").in_list(vec![lit(2), lit(5)], false));
        assert_eq!(combined(e), col("x").in_list(vec![lit(2)], false));
    }

    #[test]
    fn lists_with_null_or_columns_are_not_combined() {
        let e = col("x")
            .in_list(vec![lit(1), lit(ScalarValue::Int32(None))], true)
            .or(col("x").in_list(vec![lit(2)], true));
        assert_eq!(
            combined(e),
            col("x")
                .in_list(vec![lit(1)], true)
                .and(null_bool())
                .or(col("x").in_list(vec![lit(2)], true))
        );
        let e = col("x")
            .in_list(vec![col("y")], false)
            .and(col("x").in_list(vec![col("z")], false));
        assert_eq!(
            combined(e),
            col("x").eq(col("y")).and(col("x").eq(col("z")))
        );
    }

    #[test]
    fn unions_are_left_to_the_simplifier() {
        let e = col("x")
            .in_list(vec![lit(1)], true)
            .and(col("x").in_list(vec![lit(2)], true));
        assert_eq!(combined(e.clone()), e);
        let e = col("x").eq(lit(1)).or(col("y").eq(lit(1)));
        assert_eq!(combined(e.clone()), e);
    }
}
