//! `CREATE TABLE t (columns) [PARTITIONED BY (columns)]` and `CREATE TABLE t
//! [PARTITIONED BY (columns)] AS SELECT ...` in the engine's table catalog.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::logical_expr::CreateMemoryTable;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    DataType as SqlType, HiveDistributionStyle, Ident, Statement,
};
use lakehouse_core::{Error, ErrorKind, Result};

use super::insert::storage_type;
use super::{count_result, unsupported};
use crate::engine::QueryEngine;
use crate::error::DfResultExt;
use crate::options::QueryOptions;
use crate::registry::normalize_name;
use crate::result::QueryResult;

fn ident_name(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

/// Takes the `PARTITIONED BY (...)` clause out of a `CREATE TABLE` (DataFusion's
/// planner refuses it) and returns its column names. A typed entry (`PARTITIONED BY
/// (day DATE)`, as Hive writes it) adds the column to the column list; an untyped one
/// names a column of the table.
pub(crate) fn partitioned_by(statement: &mut DfStatement) -> Result<Vec<String>> {
    let DfStatement::Statement(s) = statement else {
        return Ok(Vec::new());
    };
    let Statement::CreateTable(create) = s.as_mut() else {
        return Ok(Vec::new());
    };
    let style = std::mem::replace(&mut create.hive_distribution, HiveDistributionStyle::NONE);
    let columns = match style {
        HiveDistributionStyle::NONE => return Ok(Vec::new()),
        HiveDistributionStyle::PARTITIONED { columns } => columns,
        other => {
            create.hive_distribution = other;
            return Ok(Vec::new());
        }
    };
    let mut names = Vec::with_capacity(columns.len());
    for c in columns {
        let name = ident_name(&c.name);
        if c.data_type != SqlType::Unspecified {
            let listed = create.columns.iter().any(|d| ident_name(&d.name) == name);
            if listed || create.query.is_some() {
                return Err(Error::new(
                    ErrorKind::InvalidSql,
                    format!(
                        "partition column {name:?} has a type but is {}: name it without one",
                        if listed {
                            "in the column list"
                        } else {
                            "of an AS SELECT"
                        }
                    ),
                )
                .with_column(name));
            }
            create.columns.push(c);
        }
        names.push(name);
    }
    Ok(names)
}

/// `schema` with the types tables hold (views as plain strings and binaries).
fn table_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            f.as_ref()
                .clone()
                .with_data_type(storage_type(f.data_type()))
        })
        .collect();
    Arc::new(Schema::new(fields))
}

impl QueryEngine {
    /// Creates the table in the catalog, registers it writable, and appends the rows
    /// of its query (none for a column list).
    pub(crate) async fn create_table(
        &self,
        create: &CreateMemoryTable,
        partition_by: &[String],
        options: &QueryOptions,
    ) -> Result<QueryResult> {
        let raw = create.name.table();
        let name = normalize_name(raw)?;
        let Some(catalog) = self.catalog().cloned() else {
            return Err(unsupported(
                &name,
                "CREATE TABLE needs a table catalog (EngineBuilder::catalog)",
            ));
        };
        if create.temporary {
            return Err(unsupported(&name, "temporary tables are not supported"));
        }
        if create.or_replace {
            return Err(unsupported(
                &name,
                "CREATE OR REPLACE TABLE is not supported",
            ));
        }
        if !create.constraints.is_empty() {
            return Err(unsupported(
                &name,
                format!(
                    "table constraints ({}) are not supported",
                    create.constraints
                ),
            ));
        }
        if !create.column_defaults.is_empty() {
            return Err(unsupported(&name, "column defaults are not supported"));
        }
        if create.name.schema().is_some() {
            return Err(unsupported(
                &name,
                format!(
                    "tables are created in the catalog by bare name, not {}",
                    create.name
                ),
            ));
        }
        if self.inner.tables.read().contains_key(&name) {
            if create.if_not_exists {
                return count_result(0);
            }
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("a table named {name:?} already exists"),
            )
            .with_table(&name));
        }
        let schema = table_schema(create.input.schema().as_arrow());
        // The query runs before anything is created: a failing query creates nothing.
        let optimized = self.state().optimize(&create.input).map_df()?;
        let batches = self.execute_optimized(optimized, options).await?;
        let table = match catalog.create_table(&name, schema, partition_by).await {
            Err(e) if e.kind() == ErrorKind::AlreadyExists && create.if_not_exists => {
                return count_result(0);
            }
            other => other.map_err(|e| {
                if e.context().table.is_none() {
                    e.with_table(&name)
                } else {
                    e
                }
            })?,
        };
        self.register_writable(&name, table.clone())?;
        let rows = self.append_rows(&name, &table, batches, options).await?;
        count_result(rows)
    }
}
