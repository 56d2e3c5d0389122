//! The tables an engine knows: registration of sources, distributed tables, streaming
//! tails, files and materialized views, and the versions a query reads them at.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;

use datafusion::datasource::TableProvider;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions};
use lakehouse_core::{Error, ErrorKind, Result, TableSource, Version, WritableTable};

use crate::engine::QueryEngine;
use crate::error::{DfResultExt, df_error};
use crate::mv::MaterializedView;
use crate::scan::{SourceTable, TailTable};
use crate::slices::{Distribution, SlicedTable};

/// A registered table, as the engine knows it.
#[derive(Debug, Clone)]
pub(crate) enum Registered {
    Source(SourceTable),
    Sliced(Arc<SlicedTable>),
    Tail,
    View(Arc<MaterializedView>),
    External,
}

/// A registered table and its registration: a number that no other registration of
/// the engine has (the catalog epoch it started), so that tables registered under one
/// name one after the other are told apart.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub(crate) id: u64,
    pub(crate) table: Registered,
    /// The table's sink and mutator, for a table registered writable.
    pub(crate) writer: Option<Arc<dyn WritableTable>>,
}

/// Registered tables by (lower-case) name.
pub(crate) type Tables = HashMap<String, Registration>;

pub(crate) fn normalize_name(name: &str) -> Result<String> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{name:?} is not a valid table name (letters, digits and _)"),
        )
        .with_table(name));
    }
    Ok(name.to_ascii_lowercase())
}

impl QueryEngine {
    /// Registers `provider` as table `name`, known to the engine as `entry`.
    pub(crate) fn register(
        &self,
        name: &str,
        entry: Registered,
        provider: Arc<dyn TableProvider>,
    ) -> Result<()> {
        self.register_with_writer(name, entry, provider, None)
    }

    /// Registers `provider` as table `name`, writable through `writer` when given.
    pub(crate) fn register_with_writer(
        &self,
        name: &str,
        entry: Registered,
        provider: Arc<dyn TableProvider>,
        writer: Option<Arc<dyn WritableTable>>,
    ) -> Result<()> {
        let name = normalize_name(name)?;
        let mut tables = self.inner.tables.write();
        self.check_free(&tables, &name)?;
        self.inner
            .ctx
            .register_table(name.as_str(), provider)
            .map_df()?;
        // The epoch changes under the lock: see `registrations`.
        let id = self.inner.plans.invalidate();
        tables.insert(
            name,
            Registration {
                id,
                table: entry,
                writer,
            },
        );
        Ok(())
    }

    /// `name`, normalized, if no table has it yet.
    pub(crate) fn free_name(&self, name: &str) -> Result<String> {
        let lower = normalize_name(name)?;
        self.check_free(&self.inner.tables.read(), &lower)?;
        Ok(lower)
    }

    fn check_free(&self, tables: &Tables, name: &str) -> Result<()> {
        if tables.contains_key(name) || self.inner.ctx.table_exist(name).map_df()? {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("a table named {name:?} is already registered"),
            )
            .with_table(name));
        }
        Ok(())
    }

    /// Records a table DataFusion registered itself (files).
    fn registered_external(&self, name: String) {
        let mut tables = self.inner.tables.write();
        let id = self.inner.plans.invalidate();
        tables.insert(
            name,
            Registration {
                id,
                table: Registered::External,
                writer: None,
            },
        );
    }

    /// Registers `source` as table `name`. Filters are pushed down as [`Predicate`]s
    /// (exact where the source says so), and the source's statistics feed planning.
    ///
    /// [`Predicate`]: lakehouse_core::Predicate
    pub fn register_table(&self, name: &str, source: Arc<dyn TableSource>) -> Result<()> {
        let table = SourceTable::new(name, source, self.inner.config.string_views);
        self.register(name, Registered::Source(table.clone()), Arc::new(table))
    }

    /// Registers `table` as table `name`, read as [`register_table`](Self::register_table)
    /// does and written by SQL: `INSERT` appends through its
    /// [`TableSink`](lakehouse_core::TableSink), `DELETE` and `UPDATE` go to its
    /// [`TableMutator`](lakehouse_core::TableMutator), each statement one commit.
    /// Tables registered otherwise are read-only: DML on them is
    /// [`ErrorKind::Unsupported`].
    pub fn register_writable(&self, name: &str, table: Arc<dyn WritableTable>) -> Result<()> {
        let source: Arc<dyn TableSource> = table.clone();
        let provider = SourceTable::new(name, source, self.inner.config.string_views);
        self.register_with_writer(
            name,
            Registered::Source(provider.clone()),
            Arc::new(provider),
            Some(table),
        )
    }

    /// The sink and mutator of table `name` (normalized): [`ErrorKind::TableNotFound`]
    /// when no table has the name, [`ErrorKind::Unsupported`] when it is registered
    /// read-only.
    pub(crate) fn writable(&self, name: &str) -> Result<Arc<dyn WritableTable>> {
        let tables = self.inner.tables.read();
        match tables.get(name) {
            Some(Registration {
                writer: Some(w), ..
            }) => Ok(w.clone()),
            Some(_) => Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "table {name:?} is read-only: register it with register_writable to \
                     change it with SQL"
                ),
            )
            .with_table(name)),
            None if self.inner.ctx.table_exist(name).unwrap_or(false) => Err(Error::new(
                ErrorKind::Unsupported,
                format!("table {name:?} is not a lakehouse table and cannot be changed"),
            )
            .with_table(name)),
            None => Err(
                Error::new(ErrorKind::TableNotFound, format!("no table named {name:?}"))
                    .with_table(name),
            ),
        }
    }

    /// Registers `source` as a distributed table `name`: its rows are assigned to the
    /// engine's slices by `distribution`, kept in memory, brought up to date with
    /// `changes_since` before each query, and scanned slice by slice on rayon. A
    /// [`Distribution::Key`] table declares hash partitioning on its key, so joins and
    /// aggregations on the key need no repartition.
    pub fn register_distributed(
        &self,
        name: &str,
        source: Arc<dyn TableSource>,
        distribution: Distribution,
    ) -> Result<()> {
        let table = Arc::new(SlicedTable::new(
            name,
            source,
            distribution,
            self.inner.slices,
        )?);
        self.register(name, Registered::Sliced(table.clone()), table)
    }

    /// Registers table `name` as the union of the committed `table` and the rows of
    /// `live` not yet committed (a stream tail), for real-time queries. Both must have
    /// the same schema. Results over such a table are never cached.
    pub fn register_with_tail(
        &self,
        name: &str,
        table: Arc<dyn TableSource>,
        live: Arc<dyn TableSource>,
    ) -> Result<()> {
        let (a, b) = (table.schema(), live.schema());
        let same = a.fields().len() == b.fields().len()
            && a.fields()
                .iter()
                .zip(b.fields())
                .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type());
        if !same {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("the live source's schema {b} differs from the table's {a}"),
            )
            .with_table(name));
        }
        self.register(
            name,
            Registered::Tail,
            Arc::new(TailTable::new(
                name,
                table,
                live,
                self.inner.config.string_views,
            )),
        )
    }

    /// Registers a directory (or file) of Parquet files as table `name`.
    pub async fn register_parquet(&self, name: &str, path: &str) -> Result<()> {
        let lower = self.free_name(name)?;
        self.inner
            .ctx
            .register_parquet(lower.as_str(), path, ParquetReadOptions::default())
            .await
            .map_err(|e| df_error(e).with_table(&lower).with_path(path))?;
        self.registered_external(lower);
        Ok(())
    }

    /// Registers a CSV file or directory with a header row as table `name`; the schema
    /// is inferred.
    pub async fn register_csv(&self, name: &str, path: &str) -> Result<()> {
        let lower = self.free_name(name)?;
        self.inner
            .ctx
            .register_csv(lower.as_str(), path, CsvReadOptions::new().has_header(true))
            .await
            .map_err(|e| df_error(e).with_table(&lower).with_path(path))?;
        self.registered_external(lower);
        Ok(())
    }

    /// Removes table or view `name`.
    pub fn deregister(&self, name: &str) -> Result<()> {
        let lower = normalize_name(name)?;
        let mut tables = self.inner.tables.write();
        let removed = tables.remove(&lower);
        let df = self.inner.ctx.deregister_table(lower.as_str()).map_df()?;
        if removed.is_none() && df.is_none() {
            return Err(Error::new(
                ErrorKind::TableNotFound,
                format!("no table named {lower:?}"),
            )
            .with_table(lower));
        }
        self.inner.plans.invalidate();
        Ok(())
    }

    /// Names of the registered tables and views, sorted.
    pub fn tables(&self) -> Vec<String> {
        let mut names: Vec<_> = self.inner.tables.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// The source behind a table that lists its changes (a source or distributed table).
    pub(crate) fn source_of(&self, table: &str) -> Option<Arc<dyn TableSource>> {
        match &self.inner.tables.read().get(table)?.table {
            Registered::Source(s) => Some(s.source.clone()),
            Registered::Sliced(s) => Some(s.source().clone()),
            _ => None,
        }
    }

    /// The schema SQL sees for the source of `table` (views where the engine exposes
    /// them), as [`source_of`](Self::source_of) finds it.
    pub(crate) fn sql_schema_of(&self, table: &str) -> Option<SchemaRef> {
        match &self.inner.tables.read().get(table)?.table {
            Registered::Source(s) => Some(s.schema()),
            Registered::Sliced(s) => Some(s.source().schema()),
            _ => None,
        }
    }

    /// Whether every table of `tables` has versions (so results over them may be cached).
    pub(crate) fn all_versioned(&self, tables: &[Arc<str>]) -> bool {
        let registry = self.inner.tables.read();
        tables.iter().all(|t| {
            matches!(
                registry.get(&**t).map(|r| &r.table),
                Some(Registered::Source(_) | Registered::Sliced(_) | Registered::View(_))
            )
        })
    }

    /// The catalog epoch and the registrations of `tables` (0 for a name not
    /// registered), read together: the epoch changes with every registration and
    /// removal, under the same lock.
    pub(crate) fn registrations(&self, tables: &[Arc<str>]) -> (u64, Vec<u64>) {
        let registry = self.inner.tables.read();
        let epoch = self.inner.plans.epoch();
        let ids = tables
            .iter()
            .map(|t| registry.get(&**t).map_or(0, |r| r.id))
            .collect();
        (epoch, ids)
    }

    /// Versions of the tables a plan reads, for the cache key and for pinning.
    pub(crate) async fn versions(
        &self,
        tables: &[Arc<str>],
    ) -> Result<Vec<(Arc<str>, Option<Version>)>> {
        let mut out = Vec::with_capacity(tables.len());
        for t in tables {
            let entry = self.inner.tables.read().get(&**t).map(|r| r.table.clone());
            let v = match entry {
                Some(Registered::Source(s)) => {
                    Some(s.source.version().await.map_err(|e| e.with_table(&**t))?)
                }
                Some(Registered::Sliced(s)) => Some(s.source_version().await?),
                Some(Registered::View(v)) => Some(v.generation()),
                _ => None,
            };
            out.push((t.clone(), v));
        }
        Ok(out)
    }
}
