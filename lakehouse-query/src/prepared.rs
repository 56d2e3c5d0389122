//! Prepared queries: a statement planned once and run many times with `$1`, `$2`, ...
//! parameters.

use std::sync::Arc;

use datafusion::logical_expr::LogicalPlan;
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
