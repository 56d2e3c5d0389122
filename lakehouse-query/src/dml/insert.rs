//! `INSERT INTO t ... VALUES / SELECT`: the rows, cast to the table's columns, appended
//! as one commit.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, new_null_array};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::display::FormatOptions;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::{LogicalPlan, Values};
use lakehouse_core::{AppendOutcome, Error, ErrorKind, Result, WritableTable};

use crate::engine::QueryEngine;
use crate::error::DfResultExt;
use crate::options::QueryOptions;

/// `batch` (the insert query's rows, named after the table's columns) as rows of
/// `sink`: columns by name, cast where the types differ (a value that does not
/// convert is [`ErrorKind::TypeMismatch`]), nullable columns the query lacks as
/// nulls.
pub(crate) fn to_sink_schema(batch: &RecordBatch, sink: &SchemaRef) -> Result<RecordBatch> {
    let options = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    let columns = sink
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(c) if c.data_type() == field.data_type() => Ok(c.clone()),
            Some(c) => cast_with_options(c, field.data_type(), &options).map_err(|e| {
                Error::new(
                    ErrorKind::TypeMismatch,
                    format!(
                        "a value of type {} does not convert to column {:?} of type {}: {e}",
                        c.data_type(),
                        field.name(),
                        field.data_type()
                    ),
                )
                .with_column(field.name())
                .with_source(e)
            }),
            None if field.is_nullable() => Ok(new_null_array(field.data_type(), batch.num_rows())),
            None => Err(Error::new(
                ErrorKind::SchemaMismatch,
                format!("non-nullable column {:?} has no value", field.name()),
            )
            .with_column(field.name())),
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    for (field, column) in sink.fields().iter().zip(&columns) {
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(Error::new(
                ErrorKind::SchemaMismatch,
                format!("null inserted into non-nullable column {:?}", field.name()),
            )
            .with_column(field.name()));
        }
    }
    Ok(RecordBatch::try_new(sink.clone(), columns)?)
}

/// A type the query layer produces that a table column holds as another: DataFusion
/// plans strings and binaries as views.
pub(crate) fn storage_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    }
}

impl QueryEngine {
    /// Runs the insert's query and appends its rows as one commit; zero rows commit
    /// nothing.
    pub(super) async fn insert(
        &self,
        table: &str,
        writer: &Arc<dyn WritableTable>,
        input: &LogicalPlan,
        options: &QueryOptions,
    ) -> Result<u64> {
        // DataFusion types the rows of `VALUES` with the table's nullability, so that
        // a null for a non-nullable column fails as an arrow error inside the query;
        // with nullable rows it reaches the check of the table's schema, which names
        // the column.
        let input = input
            .clone()
            .transform_up(|plan| match plan {
                LogicalPlan::Values(values) => {
                    let fields: Vec<Field> = values
                        .schema
                        .fields()
                        .iter()
                        .map(|f| f.as_ref().clone().with_nullable(true))
                        .collect();
                    let schema = DFSchema::try_from(Schema::new(fields))?;
                    Ok(Transformed::yes(LogicalPlan::Values(Values {
                        schema: Arc::new(schema),
                        values: values.values,
                    })))
                }
                other => other.recompute_schema().map(Transformed::yes),
            })
            .map_df()?
            .data;
        let optimized = self.state().optimize(&input).map_df()?;
        let batches = self.execute_optimized(optimized, options).await?;
        self.append_rows(table, writer, batches, options).await
    }

    /// Appends `batches`, conformed to the table's sink schema, as one commit.
    pub(super) async fn append_rows(
        &self,
        table: &str,
        writer: &Arc<dyn WritableTable>,
        batches: Vec<RecordBatch>,
        options: &QueryOptions,
    ) -> Result<u64> {
        let sink = writer.sink_schema();
        let batches = batches
            .iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| to_sink_schema(b, &sink).map_err(|e| e.with_table(table)))
            .collect::<Result<Vec<_>>>()?;
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        if rows == 0 {
            return Ok(0);
        }
        let run = self.retrying(table, || writer.append(batches.clone(), None));
        match self.guarded(run, options).await? {
            AppendOutcome::Committed { rows, .. } => Ok(rows),
            other => Err(Error::internal(format!(
                "an append without a transaction id was not committed: {other:?}"
            ))
            .with_table(table)),
        }
    }
}
