//! [`TableRoot`]: a directory (or object-store prefix) of Delta tables, one per name,
//! as a [`TableCatalog`].

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use futures::TryStreamExt;
use lakehouse_core::{
    Error, ErrorKind, Result, TableCatalog, WritableTable, check_partition_columns,
    validate_table_name,
};
use object_store::ObjectStore;
use object_store::path::Path;

use crate::location::Location;
use crate::log::LOG_DIR;
use crate::partition::PartitionField;
use crate::table::{Table, TableOptions};

/// A directory of Delta tables, one sub-directory per table name: a local directory,
/// a prefix of any object store, or memory. Implements [`TableCatalog`], so a query
/// engine can open every table in it and create new ones (`CREATE TABLE`).
///
/// Names are checked with [`validate_table_name`] (no path separators, not `.` or
/// `..`), so a table never lives outside the root. A sub-directory counts as a table
/// when it holds a `_delta_log/` entry. New tables get the root's
/// [`table_options`](Self::table_options), partitioned by the identity of the columns
/// `create_table` names.
///
/// ```
/// use std::sync::Arc;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use lakehouse_core::{TableCatalog, TableSource};
/// use lakehouse_storage::TableRoot;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let root = TableRoot::local(dir.path())?;
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("id", DataType::Int64, false),
///     Field::new("region", DataType::Utf8, true),
/// ]));
/// root.create_table("sales", schema, &["region".to_string()]).await?;
/// assert_eq!(root.list_tables().await?, vec!["sales".to_string()]);
/// let sales = root.open_table("sales").await?;
/// assert_eq!(sales.version().await?, 0);
/// assert!(dir.path().join("sales").join("_delta_log").is_dir());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TableRoot {
    base: Location,
    options: TableOptions,
}

impl fmt::Debug for TableRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableRoot")
            .field("uri", &self.base.uri())
            .finish_non_exhaustive()
    }
}

impl TableRoot {
    /// A directory on the local file system (created if missing).
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<TableRoot> {
        Ok(Self::at(Location::local(dir)?))
    }

    /// The prefix `prefix` of any object store; `uri` is how it is shown in errors.
    pub fn from_store(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        uri: impl Into<String>,
    ) -> Result<TableRoot> {
        Ok(Self::at(Location::from_store(store, prefix, uri)?))
    }

    /// A root in a fresh in-memory store (for tests).
    pub fn memory() -> TableRoot {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        Self::at(Location {
            store,
            root: Path::default(),
            uri: "memory://".into(),
            local_dir: None,
            shared: None,
        })
    }

    /// The root at `base`: tables are its sub-directories.
    pub fn at(base: Location) -> TableRoot {
        TableRoot {
            base,
            options: TableOptions::default(),
        }
    }

    /// Options of the tables [`create_table`](TableCatalog::create_table) creates; their
    /// partitioning is replaced by the columns `create_table` names.
    pub fn table_options(mut self, options: TableOptions) -> Self {
        self.options = options;
        self
    }

    /// The root's URI.
    pub fn uri(&self) -> &str {
        self.base.uri()
    }

    /// Where table `name` lives (whether or not it exists; a local directory is
    /// created).
    pub fn location(&self, name: &str) -> Result<Location> {
        validate_table_name(name)?;
        match &self.base.local_dir {
            Some(dir) => Location::local(dir.join(name)),
            None => {
                let uri = format!("{}/{name}", self.base.uri().trim_end_matches('/'));
                let mut loc = Location::from_store(self.base.store.clone(), "", uri)?;
                loc.root = self.base.child(name)?;
                // The same store as the root's: other processes open it alike.
                loc.shared = self.base.shared.clone();
                Ok(loc)
            }
        }
    }

    /// Whether `name` holds a Delta log.
    async fn exists(&self, name: &str) -> Result<bool> {
        let log = self.base.child(&format!("{name}/{LOG_DIR}"))?;
        let mut listing = self.base.store.list(Some(&log));
        let first = listing.try_next().await.map_err(|e| {
            Error::new(ErrorKind::Io, format!("listing {}: {e}", log.as_ref()))
                .with_table(name)
                .with_source(e)
        })?;
        Ok(first.is_some())
    }

    /// Opens table `name` as its concrete type.
    pub async fn open(&self, name: &str) -> Result<Table> {
        validate_table_name(name)?;
        if !self.exists(name).await? {
            return Err(Error::new(
                ErrorKind::TableNotFound,
                format!("no table named {name:?} under {}", self.base.uri()),
            )
            .with_table(name));
        }
        Table::open(self.location(name)?).await
    }

    /// Creates table `name` as its concrete type (see [`TableCatalog::create_table`]).
    pub async fn create(
        &self,
        name: &str,
        schema: SchemaRef,
        partition_columns: &[String],
    ) -> Result<Table> {
        validate_table_name(name)?;
        check_partition_columns(&schema, partition_columns).map_err(|e| e.with_table(name))?;
        if self.exists(name).await? {
            return Err(already_exists(name));
        }
        let options = self
            .options
            .clone()
            .name(name)
            .partition_by(partition_columns.iter().map(PartitionField::identity));
        let location = self.location(name)?;
        match Table::create(location, schema, options).await {
            // Another creator won the race for version 0.
            Err(e) if e.kind() == ErrorKind::Conflict => Err(already_exists(name)),
            other => other,
        }
    }
}

fn already_exists(name: &str) -> Error {
    Error::new(
        ErrorKind::AlreadyExists,
        format!("a table named {name:?} already exists"),
    )
    .with_table(name)
}

#[lakehouse_core::async_trait]
impl TableCatalog for TableRoot {
    async fn create_table(
        &self,
        name: &str,
        schema: SchemaRef,
        partition_columns: &[String],
    ) -> Result<Arc<dyn WritableTable>> {
        Ok(Arc::new(
            self.create(name, schema, partition_columns).await?,
        ))
    }

    async fn open_table(&self, name: &str) -> Result<Arc<dyn WritableTable>> {
        Ok(Arc::new(self.open(name).await?))
    }

    async fn list_tables(&self) -> Result<Vec<String>> {
        let root = (!self.base.root.as_ref().is_empty()).then_some(&self.base.root);
        let listing = self
            .base
            .store
            .list_with_delimiter(root)
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Io, format!("listing {}: {e}", self.base.uri()))
                    .with_path(self.base.uri())
                    .with_source(e)
            })?;
        let mut names = Vec::new();
        for prefix in listing.common_prefixes {
            let Some(name) = prefix.filename() else {
                continue;
            };
            if validate_table_name(name).is_ok() && self.exists(name).await? {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}
