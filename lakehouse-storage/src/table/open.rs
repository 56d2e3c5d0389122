//! Creating a table and opening one: kernel replays its log from the newest checkpoint.

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use lakehouse_core::{Error, ErrorKind, Result, Version};
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::commit::{commit_info, put_if_absent};
use super::{Table, TableOptions, now_ms};
use crate::kernel::{Kernel, blocking};
use crate::location::Location;
use crate::log::{
    Action, Format, LOG_DIR, MetaData, Protocol, Snapshot, decode_commit, parse_commit_name,
    schema_to_string,
};
use crate::partition::PartitionSpec;
use crate::replay;
use crate::write::Compression;

impl Table {
    /// Creates a table at `location` with the user columns `schema`.
    ///
    /// Derived partition columns (day of a timestamp, hash buckets) are appended to the
    /// schema. Errors with [`ErrorKind::Conflict`] if a table already exists there,
    /// [`ErrorKind::Unsupported`] for column types the format cannot hold and
    /// [`ErrorKind::InvalidInput`] for a partitioning that does not fit the columns.
    pub async fn create(
        location: Location,
        schema: SchemaRef,
        options: TableOptions,
    ) -> Result<Table> {
        let spec = PartitionSpec {
            fields: options.partition_by.clone(),
        };
        let table_schema = spec.table_schema(&schema)?;
        for c in options.bloom_filter_columns.iter().chain(&options.sort_by) {
            let Ok(field) = table_schema.field_with_name(c) else {
                return Err(Error::new(
                    ErrorKind::ColumnNotFound,
                    format!("column {c} is not in the schema"),
                )
                .with_column(c));
            };
            if !crate::nested::has_stats(field.data_type()) {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "column {c} has type {}: sort keys and bloom filters are columns of \
                         primitive types",
                        field.data_type()
                    ),
                )
                .with_column(c));
            }
        }
        Compression::to_parquet(options.compression)?;
        let protocol = Protocol::for_schema(&table_schema);
        let metadata = MetaData {
            id: uuid::Uuid::new_v4().to_string(),
            name: options.name.clone(),
            description: None,
            format: Format {
                provider: "parquet".into(),
                options: BTreeMap::new(),
            },
            schema_string: schema_to_string(&table_schema)?,
            partition_columns: spec.names(),
            configuration: options.to_config(&spec),
            created_time: Some(now_ms()),
        };
        let actions = vec![
            commit_info("CREATE TABLE", serde_json::json!({"mode": "ErrorIfExists"})),
            Action::Protocol(protocol),
            Action::MetaData(metadata),
        ];
        let log_dir = location.child(LOG_DIR)?;
        if !put_if_absent(&location, &log_dir, 0, &actions).await? {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("a table already exists at {}", location.uri()),
            )
            .with_table(location.uri()));
        }
        let kernel = Kernel::new(&location)?;
        let snapshot = load_snapshot(&location, &kernel, Some(0)).await?;
        Ok(Table::from_snapshot(location, log_dir, kernel, snapshot))
    }

    /// Opens the table at `location`, replaying its log from the latest checkpoint.
    ///
    /// Errors with [`ErrorKind::InvalidInput`] when there is no table there and
    /// [`ErrorKind::Corrupt`] (naming the file) when the log cannot be read.
    pub async fn open(location: Location) -> Result<Table> {
        let log_dir = location.child(LOG_DIR)?;
        let kernel = Kernel::new(&location)?;
        let snapshot = load_snapshot(&location, &kernel, None).await?;
        Ok(Table::from_snapshot(location, log_dir, kernel, snapshot))
    }

    /// Opens the table, or creates it when there is none.
    pub async fn open_or_create(
        location: Location,
        schema: SchemaRef,
        options: TableOptions,
    ) -> Result<Table> {
        match Table::create(location.clone(), schema, options).await {
            Err(e) if e.kind() == ErrorKind::Conflict => Table::open(location).await,
            other => other,
        }
    }
}

/// Loads the snapshot at `version` (the latest when `None`) through kernel: the newest
/// usable checkpoint of any layout, then the commits after it.
pub(super) async fn load_snapshot(
    location: &Location,
    kernel: &Kernel,
    version: Option<Version>,
) -> Result<Snapshot> {
    let k = kernel.clone();
    let loaded = blocking(move || {
        let ks = k.snapshot(version)?;
        replay::full(&k, ks)
    })
    .await;
    match loaded {
        Ok(s) => Ok(s),
        Err(e) => Err(explain(location, version, e).await),
    }
}

/// A better error for a failed load: no table at all, or the commit file that does not
/// parse (kernel's JSON errors do not name the file).
async fn explain(location: &Location, version: Option<Version>, e: Error) -> Error {
    if e.kind() != ErrorKind::Corrupt && e.kind() != ErrorKind::VersionNotFound {
        return e;
    }
    let Ok(log_dir) = location.child(LOG_DIR) else {
        return e;
    };
    let mut names: Vec<(Version, Path)> = Vec::new();
    let mut listing = location.store.list(Some(&log_dir));
    while let Some(meta) = listing.next().await {
        let Ok(meta) = meta else { return e };
        if let Some(v) = meta.location.filename().and_then(parse_commit_name) {
            names.push((v, meta.location.clone()));
        }
    }
    if names.is_empty() && version.is_none() {
        let any = location.store.list(Some(&log_dir)).next().await.is_some();
        if !any {
            return Error::new(
                ErrorKind::InvalidInput,
                format!("no table at {}", location.uri()),
            )
            .with_table(location.uri());
        }
    }
    let earliest = names.iter().map(|(v, _)| *v).min();
    if let Some(v) = version
        && earliest.is_none_or(|first| v < first)
    {
        return Error::new(
            ErrorKind::VersionNotFound,
            format!("the log no longer holds version {v} (no checkpoint covers it): {e}"),
        )
        .with_version(v)
        .with_table(location.uri());
    }
    if e.kind() == ErrorKind::Corrupt {
        names.sort();
        for (_, path) in names.iter().rev() {
            let Ok(r) = location.store.get(path).await else {
                continue;
            };
            let Ok(bytes) = r.bytes().await else { continue };
            if let Err(bad) = decode_commit(&bytes, path.as_ref()) {
                return bad.with_table(location.uri());
            }
        }
    }
    e
}
