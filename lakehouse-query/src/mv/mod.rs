//! Materialized views: a query's result kept in memory, refreshed incrementally from the
//! rows added to and removed from its tables where the query's shape allows, fully
//! otherwise.
//!
//! Two shapes refresh incrementally when exactly one of the tables the view reads has
//! changed, and that table is read once. The changes come from
//! [`TableSource::row_changes_since`](lakehouse_core::TableSource::row_changes_since):
//! appended rows, and the rows deletes, updates and overwrites removed where the table
//! lists them.
//!
//! * **Aggregate**: one `GROUP BY` (or global aggregate) with `SUM`, `COUNT`, `AVG`, `MIN`,
//!   `MAX` (no `DISTINCT`, no `FILTER`) over projections, filters and inner joins of
//!   tables, with any projection, `HAVING`, `ORDER BY` or `LIMIT` above it. The view keeps
//!   a partial state per group (sums with their counts of values, counts, minima, maxima;
//!   `AVG` as a sum and a count; the group's row count); a refresh aggregates the added
//!   rows into a state of their own, and the removed rows into one it negates, merges
//!   them with the view's and computes the view's rows from the merged state (a group
//!   with no rows left is gone, a sum with no values left is null). Removed rows are
//!   taken back only when every aggregate is `SUM`, `COUNT` or `AVG` (of signed or
//!   floating-point values; float sums then carry the rounding of the subtraction):
//!   `MIN` and `MAX` cannot be, and such a view is refreshed fully, the reason in the
//!   [`RefreshOutcome`].
//! * **Rows**: projections, filters and inner joins only. A refresh appends the rows the
//!   query gives over the appended rows; a change that removed rows is refreshed fully.
//!
//! Anything else is refreshed fully. Readers see an immutable [`ViewSnapshot`], swapped
//! in when a refresh completes.

mod outcome;
mod shape;
mod snapshot;
mod state;
mod view;

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::logical_expr::LogicalPlan;
use lakehouse_core::{Error, ErrorKind, Result};

pub use self::outcome::{RefreshKind, RefreshMode, RefreshOutcome, ViewInfo};
pub use self::snapshot::ViewSnapshot;
pub(crate) use self::view::MaterializedView;

use self::outcome::outcome_batch;
use self::snapshot::ViewProvider;
use crate::ddl::Command;
use crate::engine::QueryEngine;
use crate::error::df_error;
use crate::registry::{Registered, normalize_name};
use crate::result::QueryResult;
use crate::scan::align;

impl QueryEngine {
    /// Defines a materialized view from a `SELECT`, computes it and registers it as a
    /// table. Returns how it will be refreshed.
    pub async fn create_materialized_view(&self, name: &str, sql: &str) -> Result<RefreshOutcome> {
        let lower = self.free_name(name)?;
        let view = Arc::new(MaterializedView::define(self, &lower, sql).await?);
        let outcome = view.refresh(self).await?;
        self.register(
            &lower,
            Registered::View(view.clone()),
            Arc::new(ViewProvider::new(view)),
        )?;
        Ok(outcome)
    }

    fn view(&self, name: &str) -> Result<Arc<MaterializedView>> {
        let lower = normalize_name(name)?;
        match self.inner.tables.read().get(&lower).map(|r| &r.table) {
            Some(Registered::View(v)) => Ok(v.clone()),
            _ => Err(Error::new(
                ErrorKind::TableNotFound,
                format!("no materialized view named {lower:?}"),
            )
            .with_table(lower)),
        }
    }

    /// Brings materialized view `name` up to date: incrementally from the rows appended
    /// since the last refresh where the view's shape allows, fully otherwise. Readers
    /// keep reading the previous contents until the new ones are swapped in.
    pub async fn refresh_materialized_view(&self, name: &str) -> Result<RefreshOutcome> {
        self.view(name)?.refresh(self).await
    }

    /// Refreshes every materialized view; returns the outcome of each, by name.
    pub async fn refresh_all(&self) -> Vec<(String, Result<RefreshOutcome>)> {
        let views: Vec<_> = self
            .inner
            .tables
            .read()
            .iter()
            .filter_map(|(n, r)| match &r.table {
                Registered::View(v) => Some((n.clone(), v.clone())),
                _ => None,
            })
            .collect();
        let mut out = Vec::with_capacity(views.len());
        for (name, view) in views {
            out.push((name, view.refresh(self).await));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The current contents of materialized view `name`. Never waits for a refresh.
    pub fn read_materialized_view(&self, name: &str) -> Result<Arc<ViewSnapshot>> {
        Ok(self.view(name)?.snapshot())
    }

    /// How materialized view `name` is refreshed and why.
    pub fn materialized_view_info(&self, name: &str) -> Result<ViewInfo> {
        Ok(self.view(name)?.info())
    }

    /// Runs a materialized view statement.
    pub(crate) async fn run_view_command(&self, cmd: Command) -> Result<QueryResult> {
        let outcome = match cmd {
            Command::Create { name, query } => {
                Some(self.create_materialized_view(&name, &query).await?)
            }
            Command::Refresh { name } => Some(self.refresh_materialized_view(&name).await?),
            Command::Drop { name, if_exists } => {
                match self.view(&name) {
                    Ok(_) => self.deregister(&name)?,
                    Err(e) if if_exists && e.kind() == ErrorKind::TableNotFound => {}
                    Err(e) => return Err(e),
                }
                None
            }
        };
        let batch = outcome_batch(outcome.as_ref())?;
        Ok(QueryResult {
            schema: batch.schema(),
            batches: Arc::new(vec![batch]),
            from_cache: false,
        })
    }
}

/// `schema` with every field nullable.
fn nullable(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<Field>>(),
    ))
}

/// Runs `plan` and gives its non-empty batches exactly `schema`.
async fn collect_aligned(
    engine: &QueryEngine,
    plan: LogicalPlan,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>> {
    align_all(engine.execute_logical(plan).await?, schema)
}

/// The non-empty `batches`, given exactly `schema`.
fn align_all(batches: Vec<RecordBatch>, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    batches
        .into_iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| align(b, schema).map_err(df_error))
        .collect()
}
