//! Creating a table and opening one by replaying its log from the latest checkpoint.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use lakehouse_core::{Error, ErrorKind, Result, Version};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::commit::{commit_info, put_if_absent};
use super::{Table, TableOptions, io, now_ms};
use crate::checkpoint;
use crate::location::Location;
use crate::log::{
    Action, Format, LOG_DIR, MetaData, Protocol, Replay, Snapshot, commit_name, decode_commit,
    parse_commit_name, schema_to_string,
};
use crate::partition::PartitionSpec;
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
            if table_schema.field_with_name(c).is_err() {
                return Err(Error::new(
                    ErrorKind::ColumnNotFound,
                    format!("column {c} is not in the schema"),
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
        let mut replay = Replay::default();
        replay.apply(0, actions)?;
        Ok(Table::from_snapshot(location, log_dir, replay.finish()?))
    }

    /// Opens the table at `location`, replaying its log from the latest checkpoint.
    ///
    /// Errors with [`ErrorKind::InvalidInput`] when there is no table there and
    /// [`ErrorKind::Corrupt`] (naming the file) when the log cannot be read.
    pub async fn open(location: Location) -> Result<Table> {
        let log_dir = location.child(LOG_DIR)?;
        let snapshot = load_snapshot(&location, &log_dir, None).await?;
        Ok(Table::from_snapshot(location, log_dir, snapshot))
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

/// Loads the snapshot at `version` (the latest when `None`): from the newest usable
/// checkpoint, then the commits after it.
pub(super) async fn load_snapshot(
    location: &Location,
    log_dir: &Path,
    version: Option<Version>,
) -> Result<Snapshot> {
    let store: &Arc<dyn ObjectStore> = &location.store;
    let mut start: Option<Snapshot> = None;
    let checkpoint_hint = checkpoint::last(location, log_dir).await?;
    match (checkpoint_hint, version) {
        (Some(cp), None) => start = Some(checkpoint::read(location, log_dir, cp).await?),
        (Some(cp), Some(v)) if cp <= v => {
            start = Some(checkpoint::read(location, log_dir, cp).await?)
        }
        _ => {}
    }
    if start.is_none() && version.is_some() {
        // Time travel to before the last checkpoint: find an older one.
        if let Some(cp) =
            checkpoint::find_at_or_before(location, log_dir, version.unwrap_or(0)).await?
        {
            start = Some(checkpoint::read(location, log_dir, cp).await?);
        }
    }
    let from = start.as_ref().map_or(0, |s| s.version + 1);
    let mut replay = match &start {
        Some(s) => Replay::from_snapshot(s),
        None => Replay::default(),
    };
    // List the commits after the starting point.
    let mut versions: Vec<Version> = Vec::new();
    let offset = log_dir.clone().join(commit_name(from).replace(".json", ""));
    let mut listing = store.list_with_offset(Some(log_dir), &offset);
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| io(e, log_dir))?;
        if let Some(v) = meta.location.filename().and_then(parse_commit_name)
            && v >= from
            && version.is_none_or(|max| v <= max)
        {
            versions.push(v);
        }
    }
    // An offset listing may include the offset itself on some stores; keep order.
    versions.sort_unstable();
    versions.dedup();
    if start.is_none() && versions.first() != Some(&0) {
        return Err(match versions.first() {
            None if version.is_none() => Error::new(
                ErrorKind::InvalidInput,
                format!("no table at {}", location.uri()),
            )
            .with_table(location.uri()),
            _ => Error::new(
                ErrorKind::VersionNotFound,
                "the log no longer holds the versions needed (no checkpoint covers them)",
            )
            .with_table(location.uri()),
        });
    }
    for (i, v) in versions.iter().enumerate() {
        if *v != from + i as u64 {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("the log skips from version {} to {v}", from + i as u64 - 1),
            )
            .with_table(location.uri()));
        }
    }
    let fetched: Vec<(Version, Bytes, Path)> = stream::iter(versions.clone())
        .map(|v| {
            let store = store.clone();
            let path = log_dir.clone().join(commit_name(v));
            async move {
                let r = store.get(&path).await.map_err(|e| io(e, &path))?;
                let b = r.bytes().await.map_err(|e| io(e, &path))?;
                Ok::<_, Error>((v, b, path))
            }
        })
        .buffered(16)
        .try_collect()
        .await?;
    for (v, bytes, path) in fetched {
        replay.apply(v, decode_commit(&bytes, path.as_ref())?)?;
    }
    if let Some(v) = version
        && versions
            .last()
            .copied()
            .or(start.as_ref().map(|s| s.version))
            != Some(v)
    {
        return Err(Error::new(
            ErrorKind::VersionNotFound,
            format!("version {v} does not exist"),
        )
        .with_version(v)
        .with_table(location.uri()));
    }
    replay.finish().map_err(|e| e.with_table(location.uri()))
}
