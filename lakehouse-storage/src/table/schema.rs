//! Schema evolution: adding nullable columns at the end.

use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};
use lakehouse_core::{Error, ErrorKind, Result, Version};
use serde_json::Value;

use super::Table;
use crate::log::{Action, schema_to_string_keeping};

impl Table {
    /// Adds nullable columns at the end of the schema (older files read them as nulls).
    ///
    /// Errors with [`ErrorKind::SchemaMismatch`] for a non-nullable column or a name
    /// already in use, and [`ErrorKind::Unsupported`] for a type the format cannot hold.
    pub async fn add_columns(&self, fields: Vec<Field>) -> Result<Version> {
        let snap = self.refreshed().await?;
        let mut all: Vec<Field> = snap
            .schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        all.extend(fields);
        self.evolve_schema(Arc::new(Schema::new(all))).await
    }

    /// Replaces the schema with `schema`, which must keep every column (same name,
    /// type and order) and may only add nullable columns at the end.
    pub async fn evolve_schema(&self, schema: SchemaRef) -> Result<Version> {
        let snap = self.refreshed().await?;
        check_evolution(&snap.schema, &schema)?;
        // Columns kept exactly as the log has them (with their metadata).
        let schema_string = schema_to_string_keeping(&schema, Some(&snap.metadata.schema_string))?;
        let r = self
            .commit("ADD COLUMNS", Value::Null, move |latest| {
                check_evolution(&latest.schema, &schema)?;
                let mut meta = latest.metadata.clone();
                meta.schema_string = crate::widening::keep_field_metadata(
                    &latest.metadata.schema_string,
                    &schema_string,
                )?;
                let mut actions = vec![Action::MetaData(meta)];
                if let Some(p) = latest.protocol.upgraded_for(&schema) {
                    actions.push(Action::Protocol(p));
                }
                Ok(Some(actions))
            })
            .await?;
        Ok(r.map(|(v, _)| v).unwrap_or(snap.version))
    }
}

/// Whether `new` keeps every column of `old` (name, type, position) and only adds
/// nullable columns.
pub(super) fn extends(new: &Schema, old: &Schema) -> bool {
    check_evolution(old, new).is_ok()
}

fn check_evolution(old: &Schema, new: &Schema) -> Result<()> {
    let mut problems = Vec::new();
    for (i, f) in old.fields().iter().enumerate() {
        match new.fields().get(i) {
            Some(n) if n.name() == f.name() && n.data_type() == f.data_type() => {
                if n.is_nullable() != f.is_nullable() {
                    problems.push(format!("column {} changes nullability", f.name()));
                }
            }
            Some(n) if n.name() == f.name() => problems.push(format!(
                "column {} changes type from {} to {}",
                f.name(),
                f.data_type(),
                n.data_type()
            )),
            _ => problems.push(format!("column {} is dropped, renamed or moved", f.name())),
        }
    }
    for f in new.fields().iter().skip(old.fields().len()) {
        if !f.is_nullable() {
            problems.push(format!("new column {} must be nullable", f.name()));
        }
        if old.field_with_name(f.name()).is_ok() {
            problems.push(format!("column {} already exists", f.name()));
        }
    }
    if problems.is_empty() {
        crate::log::check_schema(new)
    } else {
        Err(Error::new(ErrorKind::SchemaMismatch, problems.join("; ")))
    }
}
