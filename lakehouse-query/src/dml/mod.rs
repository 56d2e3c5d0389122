//! SQL that writes: `INSERT`, `DELETE`, `UPDATE`, `TRUNCATE` and `CREATE TABLE` on
//! writable tables ([`QueryEngine::register_writable`]) and in the engine's table
//! catalog.
//!
//! DataFusion plans the statement (name resolution, column checks, the casts of
//! `INSERT` and `SET` values to the column types); the engine then runs the plan's
//! [`DmlStatement`] itself instead of DataFusion's `TableProvider::delete_from` /
//! `update` hooks. Those hooks receive the `WHERE` as a list of conjuncts that
//! DataFusion extracted from the optimized plan, keeping only those it sees as on the
//! target table: a condition it cannot place there (a subquery decorrelated into a
//! join) would be dropped and the statement would touch more rows than the SQL says.
//! Here the condition is taken whole from the unoptimized plan and either translated
//! exactly into a core [`Predicate`](lakehouse_core::Predicate) or refused.

mod catalog;
mod create;
mod insert;
mod mutate;

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};
use lakehouse_core::{Error, ErrorKind, Result};

use crate::engine::QueryEngine;
use crate::options::QueryOptions;
use crate::result::QueryResult;

pub(crate) use create::partitioned_by;
pub(crate) use mutate::physical_expr;

/// The result of a write: one row, `count` (UInt64), the rows affected, as DataFusion's
/// DML returns.
pub(crate) fn count_result(rows: u64) -> Result<QueryResult> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(UInt64Array::from(vec![rows]))],
    )?;
    Ok(QueryResult {
        schema,
        batches: Arc::new(vec![batch]),
        from_cache: false,
    })
}

pub(crate) fn unsupported(table: &str, what: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unsupported, what).with_table(table)
}

impl QueryEngine {
    /// Runs an `INSERT`, `DELETE`, `UPDATE` or `TRUNCATE` planned by DataFusion.
    pub(crate) async fn run_dml(
        &self,
        dml: &DmlStatement,
        options: &QueryOptions,
    ) -> Result<QueryResult> {
        let name = dml.table_name.table().to_ascii_lowercase();
        let writer = self.writable(&name)?;
        let rows = match &dml.op {
            WriteOp::Insert(InsertOp::Append) => {
                self.insert(&name, &writer, &dml.input, options).await?
            }
            WriteOp::Insert(op) => {
                return Err(unsupported(
                    &name,
                    format!("{op} is not supported; INSERT INTO appends"),
                ));
            }
            WriteOp::Delete => {
                let filter = mutate::filter_of(&name, &dml.input)?;
                self.delete(&name, &writer, filter, options).await?
            }
            WriteOp::Truncate => self.delete(&name, &writer, None, options).await?,
            WriteOp::Update => self.update(&name, &writer, &dml.input, options).await?,
            WriteOp::MergeInto(_) => {
                return Err(unsupported(&name, "MERGE INTO is not supported"));
            }
            other => {
                return Err(unsupported(
                    &name,
                    format!("{} is not supported", other.name()),
                ));
            }
        };
        count_result(rows)
    }

    /// Runs `attempt` until it succeeds, fails with another error than
    /// [`ErrorKind::Conflict`], or has been tried
    /// [`write_attempts`](crate::EngineBuilder::write_attempts) times.
    pub(crate) async fn retrying<T, F, Fut>(&self, table: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let attempts = self.inner.config.write_attempts.max(1);
        let mut tried = 1;
        loop {
            match attempt().await {
                Err(e) if e.kind() == ErrorKind::Conflict && tried < attempts => tried += 1,
                Err(e) if e.context().table.is_none() => return Err(e.with_table(table)),
                other => return other,
            }
        }
    }
}

/// Whether `plan` is a scan of the target, possibly under an alias.
pub(crate) fn is_target_scan(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::TableScan(_) => true,
        LogicalPlan::SubqueryAlias(a) => is_target_scan(&a.input),
        _ => false,
    }
}
