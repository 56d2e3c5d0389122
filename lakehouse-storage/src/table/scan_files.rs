//! A scan described as its data files ([`TableSource::scan_files`]), for engines that
//! read Parquet themselves.
//!
//! The same files as [`Table::scan`](lakehouse_core::TableSource::scan) reads (pruned
//! by statistics, partition values and the partition values a predicate implies), with
//! each file's deletion vector read into the rows to skip, its partition values typed
//! and its statistics, plus the column mapping of the table.
//!
//! [`TableSource::scan_files`]: lakehouse_core::TableSource::scan_files

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt, stream};
use lakehouse_core::{
    DeletedRows, Error, ErrorKind, FileScan, Predicate, Result, ScanFile, ScanFileStatistics,
    ScanRequest,
};

use super::{Table, live_files};
use crate::log::FileEntry;
use crate::partition::PartitionSpec;
use crate::read::{deleted_rows, file_view, object_path, partition_scalars};

/// Deletion vectors read at once while describing a scan.
const DV_READS_IN_FLIGHT: usize = 8;

impl Table {
    /// The body of [`TableSource::scan_files`](lakehouse_core::TableSource::scan_files).
    pub(super) async fn scan_files_inner(&self, request: &ScanRequest) -> Result<Option<FileScan>> {
        let snap = self.snapshot(request.version).await?;
        let schema = snap.schema.clone();
        if let Some(cols) = &request.projection {
            for c in cols {
                if schema.field_with_name(c).is_err() {
                    return Err(Error::new(
                        ErrorKind::ColumnNotFound,
                        format!("column {c} is not in the table"),
                    )
                    .with_column(c)
                    .with_table(self.uri()));
                }
            }
        }
        if let Some(p) = &request.predicate {
            p.validate(&schema).map_err(|e| e.with_table(self.uri()))?;
        }
        let spec = Self::spec_of(&snap)?;
        let prune = request.predicate.as_ref().map(|p| with_implied(&spec, p));
        let mut total = 0usize;
        let mut chosen: Vec<Arc<FileEntry>> = Vec::new();
        for f in live_files(&snap) {
            total += 1;
            if let Some(p) = &prune
                && !p.can_match(&file_view(f, &schema, &spec)?)
            {
                continue;
            }
            chosen.push(f.clone());
        }
        // A deletion vector becomes a selection over the whole file, which needs the
        // file's row count; Delta writers record it with every deletion vector, but a
        // file without it is read by the batch stream instead.
        if chosen
            .iter()
            .any(|f| f.add.deletion_vector.is_some() && f.stats.num_rows.is_none())
        {
            return Ok(None);
        }
        // Struct fields nested under physical names are renamed by this crate's reader
        // (crate::nested_mapping), which a Parquet engine reading the files by the table
        // schema would not do: such tables are read by the batch stream.
        if !crate::features::nested_column_mapping(&snap.metadata)?.is_empty() {
            return Ok(None);
        }

        let location = &self.inner.location;
        let mut scan = FileScan::new(
            location.store.clone(),
            store_url(self.uri(), &location.store),
            schema.clone(),
            snap.version,
        )?;
        scan.store_location = location.shared.clone();
        scan.partition_columns = snap.metadata.partition_columns.clone();
        scan.column_mapping = crate::log::column_mapping(&snap.metadata)?
            .into_iter()
            .collect();
        scan.total_files = total;
        let kernel = &self.inner.kernel;
        let root = &location.root;
        let spec = &spec;
        scan.files = stream::iter(chosen)
            .map(|entry| {
                let schema = schema.clone();
                async move { describe(&entry, &schema, spec, root, kernel).await }
            })
            .buffered(DV_READS_IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(Some(scan))
    }
}

/// One data file as the scan describes it.
async fn describe(
    entry: &FileEntry,
    schema: &arrow::datatypes::Schema,
    spec: &PartitionSpec,
    root: &object_store::path::Path,
    kernel: &crate::kernel::Kernel,
) -> Result<ScanFile> {
    let uri = &entry.add.path;
    let mut file = ScanFile::new(
        object_path(root, uri)?,
        u64::try_from(entry.add.size).unwrap_or(0),
    );
    file.partition_values = partition_scalars(entry, schema, spec)?;
    let mut rows = entry.stats.num_rows;
    if let Some(dv) = &entry.add.deletion_vector {
        // The snapshot counts live rows (the statistics minus the vector's cardinality):
        // the vector addresses the file's physical rows.
        let file_rows = rows
            .map(|live| live + u64::try_from(dv.cardinality).unwrap_or(0))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Internal,
                    "a file with a deletion vector and no row count reached the file scan",
                )
                .with_path(uri.clone())
            })?;
        let deleted = deleted_rows(kernel, dv)
            .await
            .map_err(|e| e.with_path(uri.clone()))?;
        let deleted = DeletedRows::new(file_rows, deleted).map_err(|e| {
            Error::new(
                ErrorKind::Corrupt,
                format!("the deletion vector does not fit the file: {e}"),
            )
            .with_path(uri.clone())
        })?;
        rows = Some(deleted.live_rows());
        file.deleted = Some(deleted);
    }
    let mut columns: BTreeMap<_, _> = entry.stats.columns.clone();
    for p in file.partition_values.keys() {
        columns.remove(p);
    }
    let mut statistics = ScanFileStatistics::default();
    statistics.num_rows = rows;
    statistics.columns = columns;
    // Delta statistics are bounds: other writers truncate strings, and deleted rows
    // leave them loose.
    statistics.exact = false;
    file.statistics = statistics;
    Ok(file)
}

/// A URL naming this table's store, unique among the tables of the process: the same
/// URI may name different stores (two in-memory tables of one name).
fn store_url(uri: &str, store: &Arc<dyn object_store::ObjectStore>) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    uri.hash(&mut h);
    (Arc::as_ptr(store) as *const () as usize).hash(&mut h);
    format!("lakehouse-table://{:016x}", h.finish())
}

/// `predicate` and what it implies on derived partition columns (as the stream scan
/// prunes).
fn with_implied(spec: &PartitionSpec, predicate: &Predicate) -> Predicate {
    match spec.implied(predicate) {
        Some(extra) => predicate.clone().and(extra),
        None => predicate.clone(),
    }
}
