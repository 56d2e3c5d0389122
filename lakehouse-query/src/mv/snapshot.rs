//! The contents of a materialized view: [`ViewSnapshot`], and the table that scans them.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use lakehouse_core::Version;

use crate::mv::MaterializedView;

/// The contents of a materialized view at one refresh: immutable, cheap to share.
#[derive(Debug)]
pub struct ViewSnapshot {
    pub(super) schema: SchemaRef,
    pub(super) batches: Vec<RecordBatch>,
    pub(super) generation: u64,
    pub(super) versions: BTreeMap<String, Version>,
    pub(super) refreshed_at_micros: i64,
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

/// The table a materialized view is registered as: scans its current snapshot.
#[derive(Debug)]
pub(super) struct ViewProvider {
    view: Arc<MaterializedView>,
}

impl ViewProvider {
    pub(super) fn new(view: Arc<MaterializedView>) -> Self {
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
