//! The engine's table catalog: registering the tables it holds.

use std::sync::Arc;

use lakehouse_core::{Result, TableCatalog};

use crate::engine::QueryEngine;
use crate::registry::normalize_name;

impl QueryEngine {
    /// The table catalog `CREATE TABLE` creates tables in, if one is configured
    /// ([`EngineBuilder::catalog`](crate::EngineBuilder::catalog)).
    pub fn catalog(&self) -> Option<&Arc<dyn TableCatalog>> {
        self.inner.config.catalog.as_ref()
    }

    /// Registers, writable, every table of the catalog that is not registered yet, and
    /// returns their names, sorted. Tables whose catalog name is not a valid engine
    /// name (letters, digits and `_`, not starting with a digit) are left out; names
    /// are matched without regard to case. Without a catalog, registers nothing.
    pub async fn register_catalog_tables(&self) -> Result<Vec<String>> {
        let Some(catalog) = self.catalog().cloned() else {
            return Ok(Vec::new());
        };
        let mut registered = Vec::new();
        for name in catalog.list_tables().await? {
            let Ok(lower) = normalize_name(&name) else {
                continue;
            };
            if self.inner.tables.read().contains_key(&lower) {
                continue;
            }
            let table = catalog.open_table(&name).await?;
            self.register_writable(&lower, table)?;
            registered.push(lower);
        }
        registered.sort();
        Ok(registered)
    }
}
