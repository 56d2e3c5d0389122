//! The rows of a query: [`QueryResult`].

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use lakehouse_core::{Error, Result};

/// The rows of a query.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub(crate) schema: SchemaRef,
    pub(crate) batches: Arc<Vec<RecordBatch>>,
    pub(crate) from_cache: bool,
}

impl QueryResult {
    /// The schema of the rows.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The rows, as record batches.
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// Total number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// Whether the result came from the result cache.
    pub fn from_cache(&self) -> bool {
        self.from_cache
    }

    /// The rows as one batch.
    pub fn concat(&self) -> Result<RecordBatch> {
        arrow::compute::concat_batches(&self.schema, self.batches.iter())
            .map_err(|e| Error::internal(format!("concatenating results: {e}")).with_source(e))
    }

    /// The rows as a text table.
    pub fn pretty(&self) -> Result<String> {
        datafusion::arrow::util::pretty::pretty_format_batches(&self.batches)
            .map(|t| t.to_string())
            .map_err(|e| Error::internal(format!("formatting results: {e}")).with_source(e))
    }
}
