//! Creating a table and opening one: kernel replays its log from the newest checkpoint.

use std::collections::BTreeMap;
use std::time::Instant;

use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use lakehouse_core::{Error, ErrorKind, Result, Version};
use object_store::path::Path;

use super::commit::{commit_info, put_if_absent};
use super::torn;
use super::{Table, TableOptions, now_ms};
use crate::kernel::{Kernel, blocking};
use crate::location::Location;
use crate::log::{
    Action, Format, LOG_DIR, MetaData, Protocol, Snapshot, parse_commit_name, schema_to_string,
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
        let mut protocol = Protocol::for_schema(&table_schema);
        if options.deletion_vectors {
            protocol = protocol.with_feature("deletionVectors");
        }
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
        // Version 0 did not exist before the put: it is the latest from here.
        let started = Instant::now();
        if !put_if_absent(&location, &log_dir, 0, &actions).await? {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("a table already exists at {}", location.uri()),
            )
            .with_table(location.uri()));
        }
        let kernel = Kernel::new(&location)?;
        let snapshot = load_snapshot(&location, &kernel, Some(0)).await?;
        Ok(Table::from_snapshot(
            location, log_dir, kernel, snapshot, started,
        ))
    }

    /// Opens the table at `location`, replaying its log from the latest checkpoint.
    ///
    /// Errors with [`ErrorKind::InvalidInput`] when there is no table there and
    /// [`ErrorKind::Corrupt`] (naming the file) when the log cannot be read.
    ///
    /// A torn newest commit (empty or cut by a power loss; never acknowledged, since
    /// commits are durable before they are) of a local table is set aside under
    /// `_torn/` and the table opens at the version before; a torn commit below the
    /// newest is a [`ErrorKind::Corrupt`] error naming its file.
    pub async fn open(location: Location) -> Result<Table> {
        let log_dir = location.child(LOG_DIR)?;
        let kernel = Kernel::new(&location)?;
        let started = Instant::now();
        let snapshot = load_snapshot(&location, &kernel, None).await?;
        Ok(Table::from_snapshot(
            location, log_dir, kernel, snapshot, started,
        ))
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
///
/// Opening the latest version also looks for torn commits (`torn`): a torn newest
/// commit of a local table is set aside once and the load repeated; any other torn
/// commit is an [`ErrorKind::Corrupt`] error naming its file.
pub(super) async fn load_snapshot(
    location: &Location,
    kernel: &Kernel,
    version: Option<Version>,
) -> Result<Snapshot> {
    // A torn newest commit is set aside (by this opener or a racing one) and the load
    // repeated; a second torn newest commit after that is an error.
    let mut attempts = 0;
    let mut retried = false;
    loop {
        let k = kernel.clone();
        let loaded = blocking(move || {
            let ks = k.snapshot(version)?;
            replay::full(&k, ks)
        })
        .await;
        let torn = match loaded {
            Ok(s) if version.is_some() => return Ok(s),
            Ok(s) => {
                let (empty, newest) = torn::empty_commits(location).await?;
                if newest.is_some_and(|n| n < s.version) && !retried {
                    // The loaded version's commit vanished since (a racing opener set
                    // it aside): load once more.
                    retried = true;
                    continue;
                }
                let Some(first) = empty.first() else {
                    return Ok(s);
                };
                if empty.len() > 1 || !first.newest || attempts >= 2 {
                    return Err(first.error(location, "the file is empty"));
                }
                first.clone()
            }
            Err(e) => match explain(location, version, e).await {
                // A log file that vanished under kernel (a racing opener set it
                // aside): load once more.
                Explained::Error(e)
                    if !retried
                        && location.local_dir.is_some()
                        && matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::VersionNotFound) =>
                {
                    retried = true;
                    continue;
                }
                Explained::Error(e) => return Err(e),
                Explained::TornNewest(t, e) => {
                    if attempts >= 2 || version.is_some() {
                        return Err(e);
                    }
                    t
                }
            },
        };
        if location.local_dir.is_none() {
            return Err(torn.error(location, "it does not decode or is empty"));
        }
        // `false`: another opener set it aside first, or it is no longer torn.
        torn::set_aside(location, &torn).await?;
        attempts += 1;
    }
}

/// What a failed load was.
enum Explained {
    /// An error to report.
    Error(Error),
    /// The newest commit does not decode, and it alone: it may be set aside. The
    /// error names it.
    TornNewest(torn::Torn, Error),
}

/// A better error for a failed load: no table at all, or the commit file that does not
/// parse (kernel's JSON errors do not name the file).
async fn explain(location: &Location, version: Option<Version>, e: Error) -> Explained {
    if e.kind() != ErrorKind::Corrupt && e.kind() != ErrorKind::VersionNotFound {
        return Explained::Error(e);
    }
    let Ok(log_dir) = location.child(LOG_DIR) else {
        return Explained::Error(e);
    };
    let mut names: Vec<(Version, Path)> = Vec::new();
    let mut listing = location.store.list(Some(&log_dir));
    while let Some(meta) = listing.next().await {
        let Ok(meta) = meta else {
            return Explained::Error(e);
        };
        if let Some(v) = meta.location.filename().and_then(parse_commit_name) {
            names.push((v, meta.location.clone()));
        }
    }
    if names.is_empty() && version.is_none() {
        let any = location.store.list(Some(&log_dir)).next().await.is_some();
        if !any {
            return Explained::Error(
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("no table at {}", location.uri()),
                )
                .with_table(location.uri()),
            );
        }
    }
    let earliest = names.iter().map(|(v, _)| *v).min();
    if let Some(v) = version
        && earliest.is_none_or(|first| v < first)
    {
        return Explained::Error(
            Error::new(
                ErrorKind::VersionNotFound,
                format!("the log no longer holds version {v} (no checkpoint covers it): {e}"),
            )
            .with_version(v)
            .with_table(location.uri()),
        );
    }
    if e.kind() == ErrorKind::Corrupt {
        let mut bad = torn::undecodable_commits(&names, location).await;
        match bad.len() {
            0 => {}
            1 if bad[0].0.newest && bad[0].0.tear => {
                let (t, e) = bad.remove(0);
                return Explained::TornNewest(t, e);
            }
            // The lowest one found: later versions were built on it.
            _ => {
                let (_, e) = bad.remove(bad.len() - 1);
                return Explained::Error(e);
            }
        }
    }
    Explained::Error(e)
}
