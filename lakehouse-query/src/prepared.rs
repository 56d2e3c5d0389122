//! Prepared queries: a statement planned once and run many times with `$1`, `$2`, ...
//! parameters.

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Cast, Expr, LogicalPlan, TryCast};
use lakehouse_core::{Error, ErrorKind, Result, Scalar};

use crate::engine::QueryEngine;
use crate::error::df_error;
use crate::options::QueryOptions;
use crate::plan::plan_sql;
use crate::pushdown::scalar_to_df;
use crate::result::QueryResult;

impl QueryEngine {
    /// Plans `sql` once for repeated execution with `$1`, `$2`, ... parameters.
    pub async fn prepare(&self, sql: &str) -> Result<PreparedQuery> {
        let epoch = self.inner.plans.epoch();
        let plan = plan_sql(&self.state(), sql).await?;
        Ok(PreparedQuery {
            engine: self.clone(),
            plan: Arc::new(plan),
            sql: Arc::from(sql),
            epoch,
        })
    }
}

/// A statement planned once and run many times with different parameters.
#[derive(Debug, Clone)]
pub struct PreparedQuery {
    engine: QueryEngine,
    plan: Arc<LogicalPlan>,
    sql: Arc<str>,
    /// The catalog epoch the plan was made in.
    epoch: u64,
}

impl PreparedQuery {
    /// The SQL text.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The schema of the rows the statement returns (empty for a statement that returns
    /// none).
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.plan.schema().as_arrow().clone())
    }

    /// The types of the parameters `$1`, `$2`, ... up to the highest one the statement
    /// names, as the planner inferred them from their use (`WHERE id = $1`) or a cast
    /// (`$1::BIGINT`); `None` where the statement does not fix a type, as in
    /// `SELECT $1`, or does not use that number.
    pub fn parameter_types(&self) -> Result<Vec<Option<DataType>>> {
        let mut found = self.plan.get_parameter_types().map_err(df_error)?;
        // A placeholder under a cast keeps no type of its own: take the cast's.
        self.plan
            .apply_with_subqueries(|plan| {
                plan.apply_expressions(|expr| {
                    expr.apply(|e| {
                        if let Expr::Cast(Cast { expr, field })
                        | Expr::TryCast(TryCast { expr, field }) = e
                            && let Expr::Placeholder(p) = expr.as_ref()
                        {
                            let slot = found.entry(p.id.clone()).or_insert(None);
                            if slot.is_none() {
                                *slot = Some(field.data_type().clone());
                            }
                        }
                        Ok(TreeNodeRecursion::Continue)
                    })
                })
            })
            .map_err(df_error)?;
        let mut out: Vec<Option<DataType>> = Vec::new();
        for (id, data_type) in found {
            let Some(n) = id.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) else {
                return Err(Error::new(
                    ErrorKind::InvalidSql,
                    format!("parameter {id} is not numbered ($1, $2, ...)"),
                ));
            };
            if n == 0 {
                return Err(Error::new(ErrorKind::InvalidSql, "parameters start at $1"));
            }
            if out.len() < n {
                out.resize(n, None);
            }
            out[n - 1] = data_type;
        }
        Ok(out)
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
            // Parameters of the wrong number or type.
            .map_err(|e| df_error(e).with_kind(ErrorKind::InvalidInput))?;
        let state = self.engine.state();
        let planned = self.engine.analyze(&state, bound, self.epoch)?;
        self.engine.run_planned(&planned, &options).await
    }
}
