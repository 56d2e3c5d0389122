//! [`Table`]: create, open, append, scan, time travel and maintenance.
//!
//! One concept per module: `options` is what a table is created with, `open` creates
//! and opens tables, `snapshot` refreshes the cached snapshot and travels in time,
//! `append` writes new files and `commit` is the optimistic commit loop, `scan` plans
//! reads, `mutate` deletes and updates rows (`deletion_vectors` where the table
//! enables them), `schema` evolves the schema, `optimize` and `vacuum` are the maintenance
//! operations and `impls` implements the `TableSource` and `TableSink` contracts.

use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use lakehouse_core::{Error, ErrorKind, Predicate, Result};
use object_store::path::Path;
use parking_lot::RwLock;

use crate::kernel::Kernel;
use crate::location::Location;
use crate::log::{FileEntry, Snapshot};
use crate::partition::{PartitionField, PartitionSpec};
use crate::read::ScanContext;

mod append;
mod changes;
mod commit;
mod deletion_vectors;
mod impls;
mod merge;
mod mutate;
mod open;
mod optimize;
mod options;
mod scan;
mod scan_files;
mod schema;
mod snapshot;
mod torn;
mod vacuum;

pub use self::append::CommitInfo;
pub use self::merge::StagedMerge;
pub use self::mutate::{MUTATION_ATTEMPTS, StagedMutation};
pub use self::optimize::{OptimizeMetrics, OptimizeOptions};
pub use self::options::{DEFAULT_PAGE_ROWS, TableOptions};
pub use self::snapshot::HistoryEntry;
pub use self::vacuum::{MIN_VACUUM_RETENTION, VacuumMetrics, VacuumOptions};

struct Inner {
    location: Location,
    log_dir: Path,
    kernel: Kernel,
    /// The last checkpoint that failed, kept until one succeeds.
    checkpoint_error: parking_lot::Mutex<Option<Error>>,
    snapshot: RwLock<Arc<Snapshot>>,
    /// When the cached snapshot (or an older one) was last known to be the latest
    /// version: the log was listed, or the next commit found missing, after this time.
    latest_at: parking_lot::Mutex<Option<std::time::Instant>>,
    /// Commits of one handle (and its clones) go one at a time; other handles and
    /// processes race through put-if-absent.
    commit_lock: tokio::sync::Mutex<()>,
    max_retries: u32,
    /// Footers of the data files scans read (see `FooterCache`).
    footers: crate::read::FooterCache,
}

/// A partitioned columnar table in the Delta Lake format: Parquet files plus a
/// transaction log, on a local directory, in memory or on S3.
///
/// Cheap to clone; every clone shares the cached snapshot. Several handles, threads
/// and processes may append at once: commits are put-if-absent, and a writer that
/// loses a race re-reads the log, checks for conflicts and retries with backoff.
///
/// Requires a Tokio runtime with the time driver (for commit backoff). Encoding runs
/// on the rayon pool, never on the async workers.
#[derive(Clone)]
pub struct Table {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.inner.snapshot.read();
        f.debug_struct("Table")
            .field("uri", &self.inner.location.uri())
            .field("version", &s.version)
            .field("files", &s.files.len())
            .finish()
    }
}

/// An object store error on `path`, the store's error kept as the source.
///
/// A missing object is [`ErrorKind::VersionNotFound`]: every object this crate reads
/// by name is a log entry or a file of a version, and it is gone when log cleanup or
/// vacuum removed that version (or another writer's commit is not visible yet). Bad
/// bytes are [`ErrorKind::Corrupt`] where they are decoded, never here; every other
/// failure is [`ErrorKind::Io`].
fn io(e: object_store::Error, path: &Path) -> Error {
    let kind = match e {
        object_store::Error::NotFound { .. } => ErrorKind::VersionNotFound,
        _ => ErrorKind::Io,
    };
    Error::new(kind, e.to_string())
        .with_path(path.to_string())
        .with_source(e)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Table {
    fn from_snapshot(
        location: Location,
        log_dir: Path,
        kernel: Kernel,
        snapshot: Snapshot,
        latest_at: std::time::Instant,
    ) -> Table {
        Table {
            inner: Arc::new(Inner {
                location,
                log_dir,
                kernel,
                checkpoint_error: parking_lot::Mutex::new(None),
                snapshot: RwLock::new(Arc::new(snapshot)),
                latest_at: parking_lot::Mutex::new(Some(latest_at)),
                commit_lock: tokio::sync::Mutex::new(()),
                max_retries: 10_000,
                footers: crate::read::FooterCache::new(crate::read::FOOTER_CACHE_BYTES),
            }),
        }
    }

    /// Where the table lives.
    pub fn location(&self) -> &Location {
        &self.inner.location
    }

    fn uri(&self) -> &str {
        self.inner.location.uri()
    }

    fn cached(&self) -> Arc<Snapshot> {
        self.inner.snapshot.read().clone()
    }

    /// Makes `next` the cached snapshot unless a newer one is cached already (or the
    /// same version replayed by kernel as far); returns the cached snapshot.
    fn publish(&self, next: Arc<Snapshot>) -> Arc<Snapshot> {
        let mut w = self.inner.snapshot.write();
        if w.version < next.version
            || (w.version == next.version && w.kernel.version() < next.kernel.version())
        {
            *w = next;
        }
        w.clone()
    }

    /// What a scan of files of `snap` reads with: this table's store, `snap`'s schema.
    fn scan_context(
        &self,
        snap: &Snapshot,
        spec: PartitionSpec,
        output: SchemaRef,
        predicate: Option<Predicate>,
        batch_size: usize,
    ) -> Arc<ScanContext> {
        Arc::new(ScanContext {
            store: self.inner.location.store.clone(),
            root: self.inner.location.root.clone(),
            table_schema: snap.schema.clone(),
            spec,
            output,
            predicate,
            batch_size,
            kernel: self.inner.kernel.clone(),
            physical: crate::log::column_mapping(&snap.metadata).unwrap_or_default(),
            field_ids: crate::features::column_mapping_ids(&snap.metadata).unwrap_or_default(),
            nested: crate::features::nested_column_mapping(&snap.metadata).unwrap_or_default(),
            footers: self.inner.footers.clone(),
        })
    }

    fn spec_of(s: &Snapshot) -> Result<PartitionSpec> {
        PartitionSpec::from_config(&s.metadata.partition_columns, &s.metadata.configuration)
    }

    /// The columns appends carry: the table schema without derived partition columns.
    pub fn user_schema(&self) -> SchemaRef {
        let s = self.cached();
        user_schema_of(&s)
    }

    /// The partition columns and how they are derived.
    pub fn partitioning(&self) -> Vec<PartitionField> {
        Self::spec_of(&self.cached())
            .map(|s| s.fields)
            .unwrap_or_default()
    }
}

fn user_schema_of(s: &Snapshot) -> SchemaRef {
    let Ok(spec) = Table::spec_of(s) else {
        return s.schema.clone();
    };
    Arc::new(Schema::new(
        s.schema
            .fields()
            .iter()
            .filter(|f| !spec.is_derived(f.name()))
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>(),
    ))
}

/// The live files of `snap` in the order they were added (the order scans read them).
fn live_files(snap: &Snapshot) -> impl Iterator<Item = &Arc<FileEntry>> {
    snap.files.iter()
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    fn not_found() -> object_store::Error {
        object_store::Error::NotFound {
            path: "t/_delta_log/00000000000000000003.json".into(),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::NotFound)),
        }
    }

    /// A missing object is not corrupt data: the version that named it is gone.
    #[test]
    fn a_missing_object_is_version_not_found_not_corrupt() {
        let e = io(
            not_found(),
            &Path::from("t/_delta_log/00000000000000000003.json"),
        );
        assert_eq!(e.kind(), ErrorKind::VersionNotFound, "{e}");
        assert_eq!(
            e.context().path.as_deref(),
            Some("t/_delta_log/00000000000000000003.json")
        );
    }

    /// The store's error is the source, for every kind.
    #[test]
    fn the_store_error_is_kept_as_the_source() {
        let generic = object_store::Error::Generic {
            store: "test",
            source: "disk on fire".into(),
        };
        for (e, kind) in [
            (not_found(), ErrorKind::VersionNotFound),
            (generic, ErrorKind::Io),
        ] {
            let ours = io(e, &Path::from("t/x"));
            assert_eq!(ours.kind(), kind);
            let source = ours.source().expect("the store's error is the source");
            assert!(
                source.downcast_ref::<object_store::Error>().is_some(),
                "{source:?}"
            );
        }
    }
}
