//! `DELETE` and `UPDATE`: the `WHERE` as a core predicate, `SET` values as computed
//! assignments, one [`TableMutator`](lakehouse_core::TableMutator) call each.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema};
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use lakehouse_core::{Assignment, ColumnFn, Error, Predicate, Result, WritableTable};

use super::{is_target_scan, unsupported};
use crate::engine::QueryEngine;
use crate::error::{DfResultExt, df_error};
use crate::options::QueryOptions;
use crate::pushdown::to_predicate;

/// The `WHERE` of a `DELETE` input plan (`Filter` over the scan), `None` without one.
pub(super) fn filter_of(table: &str, plan: &LogicalPlan) -> Result<Option<Expr>> {
    match plan {
        p if is_target_scan(p) => Ok(None),
        LogicalPlan::Filter(f) if is_target_scan(&f.input) => Ok(Some(f.predicate.clone())),
        LogicalPlan::Limit(_) => Err(unsupported(table, "DELETE ... LIMIT is not supported")),
        _ => Err(unsupported(
            table,
            "this form of DELETE is not supported (one table, an optional WHERE)",
        )),
    }
}

/// `expr` with its columns unqualified: the statement reads one table.
fn unqualified(expr: Expr) -> Result<Expr> {
    expr.transform(|e| match e {
        Expr::Column(c) if c.relation.is_some() => Ok(Transformed::yes(Expr::Column(
            Column::new_unqualified(c.name),
        ))),
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
    .map_df()
}

fn has_subquery(expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_)
                | Expr::InSubquery(_)
                | Expr::Exists(_)
                | Expr::OuterReferenceColumn(..)
        ))
    })
    .unwrap_or(true)
}

fn df_schema(schema: &SchemaRef) -> Result<DFSchema> {
    DFSchema::try_from(schema.as_ref().clone()).map_df()
}

/// `expr` planned as a physical expression over `schema`, its function calls
/// simplified first as DataFusion's optimizer would: some functions only run in their
/// simplified form (DataFusion's `coalesce` becomes a `CASE` and fails if evaluated
/// itself).
///
/// Only function calls: DataFusion 55's general simplifier is not null-safe for every
/// rewrite (`x NOT IN (1) OR x NOT IN (2)` becomes `true`, also where `x` is null:
/// apache/datafusion#24258), and a `MERGE` condition that is null must not hold.
pub(crate) fn physical_expr(
    state: &SessionState,
    expr: Expr,
    schema: &DFSchema,
) -> datafusion::common::Result<Arc<dyn PhysicalExpr>> {
    let dfs = Arc::new(schema.clone());
    let context = || {
        SimplifyContext::builder()
            .with_schema(dfs.clone())
            .with_config_options(state.config_options().clone())
            .build()
    };
    let mut expr = ExprSimplifier::new(context()).coerce(expr, &dfs)?;
    let info = context();
    // A simplified call may hold calls to simplify in turn; a few rounds reach them.
    for _ in 0..4 {
        let rewritten = expr.transform_up(|e| match e {
            Expr::ScalarFunction(ScalarFunction { func, args }) => {
                Ok(match func.simplify(args, &info)? {
                    ExprSimplifyResult::Simplified(e) => Transformed::yes(e),
                    ExprSimplifyResult::Original(args) => {
                        Transformed::no(Expr::ScalarFunction(ScalarFunction { func, args }))
                    }
                })
            }
            other => Ok(Transformed::no(other)),
        })?;
        expr = rewritten.data;
        if !rewritten.transformed {
            break;
        }
    }
    state.create_physical_expr(expr, &dfs)
}

/// `expr` with each operand of its `AND`, `OR` and `NOT` simplified on its own.
///
/// Not the whole condition: DataFusion 55's simplifier combines operands in rewrites
/// that are not null-safe (`x NOT IN (1) OR x NOT IN (2)` becomes `true`, also where
/// `x` is null: apache/datafusion#24258), and a delete would then take rows SQL keeps.
fn simplify_comparisons(
    simplifier: &ExprSimplifier,
    schema: &DFSchema,
    expr: Expr,
) -> datafusion::common::Result<Expr> {
    Ok(match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: op @ (Operator::And | Operator::Or),
            right,
        }) => Expr::BinaryExpr(BinaryExpr::new(
            Box::new(simplify_comparisons(simplifier, schema, *left)?),
            op,
            Box::new(simplify_comparisons(simplifier, schema, *right)?),
        )),
        Expr::Not(inner) => Expr::Not(Box::new(simplify_comparisons(simplifier, schema, *inner)?)),
        leaf => simplifier.simplify(simplifier.coerce(leaf, schema)?)?,
    })
}

/// The `WHERE` as an exact core predicate (so the table prunes files by partition
/// values and statistics), or a typed error naming the condition it cannot express.
pub(crate) fn where_predicate(
    state: &SessionState,
    table: &str,
    filter: Option<Expr>,
    schema: &SchemaRef,
) -> Result<Predicate> {
    let Some(expr) = filter else {
        return Ok(Predicate::Literal(true));
    };
    let expr = unqualified(expr)?;
    if has_subquery(&expr) {
        return Err(unsupported(
            table,
            format!("subqueries in the WHERE of DELETE and UPDATE are not supported: {expr}"),
        ));
    }
    if let Some(p) = to_predicate(&expr, schema) {
        return Ok(p);
    }
    // Constants folded and literals brought to the column types, the condition may
    // translate (`1 = 1`, `qty > 2 + 3`).
    let dfs = Arc::new(df_schema(schema)?);
    let context = SimplifyContext::builder()
        .with_schema(dfs.clone())
        .with_config_options(state.config_options().clone())
        .build();
    let simplifier = ExprSimplifier::new(context);
    let simplified = simplify_comparisons(&simplifier, &dfs, expr.clone()).map_df()?;
    if let Some(p) = to_predicate(&simplified, schema) {
        return Ok(p);
    }
    Err(unsupported(
        table,
        format!(
            "the WHERE condition {expr} cannot be evaluated by the table: DELETE and UPDATE \
             take comparisons of a column with a literal (=, <>, <, <=, >, >=), BETWEEN, \
             IN lists, IS [NOT] NULL, combined with AND, OR and NOT"
        ),
    ))
}

/// The `SET` values of an `UPDATE` (column and value) and its `WHERE`.
type UpdateParts = (Vec<(String, Expr)>, Option<Expr>);

/// The `SET` values of an `UPDATE` input plan (a projection of every column, assigned
/// ones computed, over an optional `Filter` over the scan) and its `WHERE`.
fn update_parts(table: &str, plan: &LogicalPlan) -> Result<UpdateParts> {
    let LogicalPlan::Projection(projection) = plan else {
        return Err(unsupported(table, "this form of UPDATE is not supported"));
    };
    let filter = match projection.input.as_ref() {
        p if is_target_scan(p) => None,
        LogicalPlan::Filter(f) if is_target_scan(&f.input) => Some(f.predicate.clone()),
        _ => {
            return Err(unsupported(
                table,
                "UPDATE ... FROM and joins in UPDATE are not supported",
            ));
        }
    };
    let mut sets = Vec::new();
    for expr in &projection.expr {
        let Expr::Alias(alias) = expr else {
            return Err(Error::internal(format!(
                "an UPDATE projection without a column alias: {expr}"
            )));
        };
        let identity = matches!(alias.expr.as_ref(), Expr::Column(c) if c.name == alias.name);
        if !identity {
            sets.push((
                alias.name.clone(),
                unqualified(alias.expr.as_ref().clone())?,
            ));
        }
    }
    Ok((sets, filter))
}

/// A computed assignment evaluating `expr` (a physical expression over `schema`) on
/// the matched rows.
///
/// SQL types the value by the registered table, whose strings may be views
/// (`EngineBuilder::string_views`): such a value is given the column's own type.
fn computed(column: &str, expr: Arc<dyn PhysicalExpr>, schema: SchemaRef) -> Assignment {
    let target = schema
        .field_with_name(column)
        .ok()
        .map(|f| f.data_type().clone());
    let f: ColumnFn = Arc::new(move |rows: &RecordBatch| {
        // The expression binds columns by position: bring the rows to its schema.
        let columns = schema
            .fields()
            .iter()
            .map(|field| {
                rows.column_by_name(field.name()).cloned().ok_or_else(|| {
                    Error::internal(format!(
                        "column {} is missing from the matched rows",
                        field.name()
                    ))
                })
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let value = expr.evaluate(&batch).map_err(df_error)?;
        let value = value.into_array(batch.num_rows()).map_err(df_error)?;
        match &target {
            Some(t) if view_of(value.data_type(), t) => Ok(arrow::compute::cast(&value, t)?),
            _ => Ok(value),
        }
    });
    Assignment::computed(column, f)
}

/// Whether `got` is the view type of `want` (the types `string_views` exposes).
fn view_of(got: &DataType, want: &DataType) -> bool {
    matches!(
        (got, want),
        (DataType::Utf8View, DataType::Utf8 | DataType::LargeUtf8)
            | (
                DataType::BinaryView,
                DataType::Binary | DataType::LargeBinary
            )
    )
}

impl QueryEngine {
    pub(super) async fn delete(
        &self,
        table: &str,
        writer: &Arc<dyn WritableTable>,
        filter: Option<Expr>,
        options: &QueryOptions,
    ) -> Result<u64> {
        let predicate = where_predicate(&self.state(), table, filter, &writer.schema())?;
        let run = self.retrying(table, || writer.delete_where(&predicate));
        Ok(self.guarded(run, options).await?.rows_affected)
    }

    pub(super) async fn update(
        &self,
        table: &str,
        writer: &Arc<dyn WritableTable>,
        input: &LogicalPlan,
        options: &QueryOptions,
    ) -> Result<u64> {
        let (sets, filter) = update_parts(table, input)?;
        let schema = writer.schema();
        let state = self.state();
        let predicate = where_predicate(&state, table, filter, &schema)?;
        if sets.is_empty() {
            return Ok(0);
        }
        let dfs = df_schema(&schema)?;
        let mut assignments = Vec::with_capacity(sets.len());
        for (column, expr) in sets {
            if has_subquery(&expr) {
                return Err(unsupported(
                    table,
                    format!("subqueries in SET are not supported: {column} = {expr}"),
                ));
            }
            let physical = physical_expr(&state, expr, &dfs)
                .map_err(|e| df_error(e).with_column(&column).with_table(table))?;
            assignments.push(computed(&column, physical, schema.clone()));
        }
        let run = self.retrying(table, || writer.update_where(&predicate, &assignments));
        Ok(self.guarded(run, options).await?.rows_affected)
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::{SessionContext, col, lit};
    use lakehouse_core::ErrorKind;
    use lakehouse_core::col as pcol;

    use super::*;

    #[test]
    fn where_translates_exactly_or_is_refused() {
        let state = SessionContext::new().state();
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("qty", DataType::Int32, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let p = |e: Expr| where_predicate(&state, "t", Some(e), &schema);
        assert_eq!(
            p(col("qty").gt(lit(2i64) + lit(3i64))).expect("folded"),
            pcol("qty").gt(5i32)
        );
        assert_eq!(
            p(lit(1i64).eq(lit(1i64))).expect("constant"),
            Predicate::Literal(true)
        );
        let e = p(col("name").like(lit("a%"))).expect_err("LIKE");
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.message().contains("name LIKE"), "{e}");
        let e = p((col("qty") * lit(2i32)).gt(lit(3i32))).expect_err("arithmetic");
        assert_eq!(e.kind(), ErrorKind::Unsupported);
    }
}
