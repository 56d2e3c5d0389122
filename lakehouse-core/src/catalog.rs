//! Writable tables and table catalogs: [`WritableTable`], [`TableCatalog`] and the
//! in-memory [`MemoryCatalog`].
//!
//! A query engine finds what it reads through [`TableSource`]; to run `INSERT`,
//! `DELETE`, `UPDATE` or `MERGE` it also needs the table's [`TableSink`] and
//! [`TableMutator`], which [`WritableTable`] bundles. A [`TableCatalog`] is a place
//! where tables live by name (a directory of Delta tables, an object-store prefix,
//! memory): `CREATE TABLE` creates there, and an engine opens what it holds.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use parking_lot::RwLock;

use crate::error::{Error, ErrorKind, Result};
use crate::memory::MemoryTable;
use crate::mutate::TableMutator;
use crate::table::{TableSink, TableSource};

/// A table that can be read ([`TableSource`]), appended to ([`TableSink`]) and
/// mutated ([`TableMutator`]): what a SQL engine needs to run DML on it.
///
/// Implemented for every type that implements the three traits, such as
/// [`MemoryTable`]; an `Arc<dyn WritableTable>` converts to an `Arc<dyn TableSource>`
/// (trait upcasting) for read-only use.
///
/// ```
/// use std::sync::Arc;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use lakehouse_core::{MemoryTable, TableSource, WritableTable};
///
/// let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
/// let table: Arc<dyn WritableTable> = Arc::new(MemoryTable::new("t", schema));
/// let source: Arc<dyn TableSource> = table.clone();
/// assert_eq!(source.schema().fields().len(), 1);
/// ```
pub trait WritableTable: TableSource + TableSink + TableMutator {}

impl<T: TableSource + TableSink + TableMutator + ?Sized> WritableTable for T {}

/// Checks a table name for a catalog: not empty, at most 255 bytes, no path separator
/// (`/`, `\`), no control character, and neither `.` nor `..` (so that a catalog
/// keeping one directory per table never leaves its root).
///
/// Errors with [`ErrorKind::InvalidInput`] naming the table.
///
/// ```
/// use lakehouse_core::validate_table_name;
///
/// assert!(validate_table_name("sales_2026").is_ok());
/// for bad in ["", "..", ".", "a/b", "a\\b", "x\0"] {
///     assert!(validate_table_name(bad).is_err(), "{bad:?}");
/// }
/// ```
pub fn validate_table_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control);
    if bad {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{name:?} is not a valid table name: it must be non-empty, at most 255 \
                 bytes, without / \\ or control characters, and not . or .."
            ),
        )
        .with_table(name));
    }
    Ok(())
}

/// Where tables live by name: creates tables, opens them and lists them.
///
/// # For implementers
///
/// * Names are checked with [`validate_table_name`] (and may be restricted further);
///   an invalid name is [`ErrorKind::InvalidInput`].
/// * [`create_table`](Self::create_table) of a name that exists is
///   [`ErrorKind::AlreadyExists`]; [`open_table`](Self::open_table) of one that does
///   not is [`ErrorKind::TableNotFound`]. Two creates of one name racing: one wins,
///   the other gets `AlreadyExists`.
/// * Partition columns are columns of the schema (else [`ErrorKind::ColumnNotFound`]);
///   a catalog whose tables are not partitioned may keep them only as metadata.
/// * A table created is at version 0 and empty; it appears in
///   [`list_tables`](Self::list_tables) and opens by its name.
#[async_trait]
pub trait TableCatalog: Send + Sync + fmt::Debug {
    /// Creates an empty table `name` with `schema`, partitioned by the identity of
    /// `partition_columns` (in this order).
    async fn create_table(
        &self,
        name: &str,
        schema: SchemaRef,
        partition_columns: &[String],
    ) -> Result<Arc<dyn WritableTable>>;

    /// Opens table `name`.
    async fn open_table(&self, name: &str) -> Result<Arc<dyn WritableTable>>;

    /// The names of the tables, sorted.
    async fn list_tables(&self) -> Result<Vec<String>>;
}

/// Checks that every partition column is a column of `schema`, once.
pub fn check_partition_columns(schema: &SchemaRef, partition_columns: &[String]) -> Result<()> {
    for (i, c) in partition_columns.iter().enumerate() {
        if schema.field_with_name(c).is_err() {
            return Err(Error::new(
                ErrorKind::ColumnNotFound,
                format!("partition column {c:?} is not a column of the table"),
            )
            .with_column(c));
        }
        if partition_columns[..i].contains(c) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("partition column {c:?} is named more than once"),
            )
            .with_column(c));
        }
    }
    Ok(())
}

/// A [`TableCatalog`] of [`MemoryTable`]s, for tests and small jobs. Partition columns
/// are checked and kept ([`partition_columns`](Self::partition_columns)); the tables
/// themselves are not partitioned. Cheap to clone: clones share the tables.
///
/// ```
/// use std::sync::Arc;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use lakehouse_core::{ErrorKind, MemoryCatalog, TableCatalog};
///
/// # futures::executor::block_on(async {
/// let catalog = MemoryCatalog::new();
/// let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
/// catalog.create_table("orders", schema.clone(), &[]).await?;
/// assert_eq!(catalog.list_tables().await?, vec!["orders".to_string()]);
/// let again = catalog.create_table("orders", schema, &[]).await.unwrap_err();
/// assert_eq!(again.kind(), ErrorKind::AlreadyExists);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct MemoryCatalog {
    tables: Arc<RwLock<BTreeMap<String, CatalogEntry>>>,
}

/// A table of a [`MemoryCatalog`] and the partition columns it was created with.
type CatalogEntry = (MemoryTable, Vec<String>);

impl fmt::Debug for MemoryCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCatalog")
            .field("tables", &self.tables.read().len())
            .finish()
    }
}

impl MemoryCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an existing table under `name`.
    pub fn insert(&self, name: &str, table: MemoryTable) -> Result<()> {
        validate_table_name(name)?;
        let mut tables = self.tables.write();
        if tables.contains_key(name) {
            return Err(already_exists(name));
        }
        tables.insert(name.to_owned(), (table, Vec::new()));
        Ok(())
    }

    /// The table `name`, as its concrete type.
    pub fn get(&self, name: &str) -> Option<MemoryTable> {
        self.tables.read().get(name).map(|(t, _)| t.clone())
    }

    /// The partition columns table `name` was created with.
    pub fn partition_columns(&self, name: &str) -> Option<Vec<String>> {
        self.tables.read().get(name).map(|(_, p)| p.clone())
    }
}

fn already_exists(name: &str) -> Error {
    Error::new(
        ErrorKind::AlreadyExists,
        format!("a table named {name:?} already exists"),
    )
    .with_table(name)
}

#[async_trait]
impl TableCatalog for MemoryCatalog {
    async fn create_table(
        &self,
        name: &str,
        schema: SchemaRef,
        partition_columns: &[String],
    ) -> Result<Arc<dyn WritableTable>> {
        validate_table_name(name)?;
        check_partition_columns(&schema, partition_columns).map_err(|e| e.with_table(name))?;
        let mut tables = self.tables.write();
        if tables.contains_key(name) {
            return Err(already_exists(name));
        }
        let table = MemoryTable::new(name, schema);
        tables.insert(name.to_owned(), (table.clone(), partition_columns.to_vec()));
        Ok(Arc::new(table))
    }

    async fn open_table(&self, name: &str) -> Result<Arc<dyn WritableTable>> {
        validate_table_name(name)?;
        match self.get(name) {
            Some(t) => Ok(Arc::new(t)),
            None => Err(Error::new(
                ErrorKind::TableNotFound,
                format!("no table named {name:?} in the catalog"),
            )
            .with_table(name)),
        }
    }

    async fn list_tables(&self) -> Result<Vec<String>> {
        Ok(self.tables.read().keys().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn memory_catalog_creates_opens_and_refuses() {
        futures::executor::block_on(async {
            let c = MemoryCatalog::new();
            let schema = Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("region", DataType::Utf8, true),
            ]));
            let t = c
                .create_table("sales", schema.clone(), &["region".into()])
                .await
                .unwrap();
            assert_eq!(t.version().await.unwrap(), 0);
            assert_eq!(c.partition_columns("sales"), Some(vec!["region".into()]));
            let opened = c.open_table("sales").await.unwrap();
            assert_eq!(opened.schema(), schema);
            let kind = |r: Result<Arc<dyn WritableTable>>| r.unwrap_err().kind();
            assert_eq!(kind(c.open_table("nope").await), ErrorKind::TableNotFound);
            assert_eq!(
                kind(c.create_table("../x", schema.clone(), &[]).await),
                ErrorKind::InvalidInput
            );
            assert_eq!(
                kind(c.create_table("t2", schema.clone(), &["nope".into()]).await),
                ErrorKind::ColumnNotFound
            );
            assert_eq!(
                kind(
                    c.create_table("t3", schema.clone(), &["id".into(), "id".into()])
                        .await
                ),
                ErrorKind::InvalidInput
            );
            assert_eq!(c.list_tables().await.unwrap(), vec!["sales".to_string()]);
        });
    }
}
