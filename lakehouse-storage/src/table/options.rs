//! [`TableOptions`]: what a table is created with, kept in its metadata.

use std::collections::BTreeMap;

use crate::partition::{PartitionField, PartitionSpec};
use crate::write::{Compression, WriteConfig};

/// The table property that turns deletion vectors on for writers.
pub(crate) const DELETION_VECTORS_KEY: &str = "delta.enableDeletionVectors";

/// Rows per data page by default (see [`TableOptions::page_rows`]).
pub const DEFAULT_PAGE_ROWS: usize = 8_192;

/// Options of a new table; stored in the table so that every writer uses them.
#[derive(Debug, Clone)]
#[must_use]
pub struct TableOptions {
    pub(super) name: Option<String>,
    pub(super) partition_by: Vec<PartitionField>,
    pub(super) compression: Compression,
    pub(super) target_file_bytes: u64,
    pub(super) row_group_rows: usize,
    pub(super) page_rows: usize,
    pub(super) bloom_filter_columns: Vec<String>,
    pub(super) sort_by: Vec<String>,
    pub(super) checkpoint_interval: u64,
    pub(super) deletion_vectors: bool,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            name: None,
            partition_by: Vec::new(),
            compression: Compression::default(),
            target_file_bytes: 128 << 20,
            row_group_rows: 128 * 1024,
            page_rows: DEFAULT_PAGE_ROWS,
            bloom_filter_columns: Vec::new(),
            sort_by: Vec::new(),
            checkpoint_interval: 10,
            deletion_vectors: false,
        }
    }
}

impl TableOptions {
    /// Defaults: unpartitioned, zstd level 3, 128 MiB files, 128 Ki-row row groups,
    /// pages of at most 8,192 rows, a checkpoint every 10 commits.
    pub fn new() -> Self {
        Self::default()
    }

    /// A human-readable table name (kept in the metadata).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Partition columns, outermost directory first.
    pub fn partition_by(mut self, fields: impl IntoIterator<Item = PartitionField>) -> Self {
        self.partition_by = fields.into_iter().collect();
        self
    }

    /// Compression codec of data files.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Size at which a writer starts a new file.
    pub fn target_file_size(mut self, bytes: u64) -> Self {
        self.target_file_bytes = bytes.max(1);
        self
    }

    /// Rows per Parquet row group (smaller groups make point lookups cheaper).
    pub fn row_group_rows(mut self, rows: usize) -> Self {
        self.row_group_rows = rows.max(1);
        self
    }

    /// Rows per Parquet data page, at most ([`DEFAULT_PAGE_ROWS`] by default). A scan
    /// that selects a few rows decompresses and decodes the pages that hold them, one
    /// per column read: smaller pages make point lookups cheaper, at some cost in
    /// compression and in per-page work for full scans. The page index records every
    /// page's bounds, so scans skip the pages that cannot match.
    pub fn page_rows(mut self, rows: usize) -> Self {
        self.page_rows = rows.max(1);
        self
    }

    /// Columns that get a bloom filter per row group, for point lookups.
    pub fn bloom_filter_columns<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.bloom_filter_columns = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Sort key within each file (zone maps, as Redshift sort keys).
    pub fn sort_by<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.sort_by = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Commits between checkpoints (0 disables automatic checkpoints).
    pub fn checkpoint_interval(mut self, commits: u64) -> Self {
        self.checkpoint_interval = commits;
        self
    }

    /// Deletes and updates write deletion vectors instead of rewriting files
    /// (copy-on-write, the default).
    ///
    /// The table is created with the Delta `deletionVectors` reader and writer feature
    /// (protocol 3 / 7) and `delta.enableDeletionVectors = true`: readers must support
    /// deletion vectors (delta-rs, Spark 3.4+ with Delta 2.4+, DuckDB's `delta`
    /// extension, `delta_kernel` do). A delete then marks the deleted rows of each
    /// file it touches in a deletion vector (merged with the file's existing one)
    /// and an update does the same for the old rows and writes the updated rows to a
    /// new file. [`Table::optimize`](crate::Table::optimize) with
    /// [`OptimizeOptions::purge_deletion_vectors`](crate::OptimizeOptions::purge_deletion_vectors)
    /// rewrites the files that have one.
    pub fn deletion_vectors(mut self, enabled: bool) -> Self {
        self.deletion_vectors = enabled;
        self
    }

    /// How a writer encodes files of a table with these options.
    pub(super) fn write_config(&self) -> WriteConfig {
        WriteConfig {
            compression: self.compression,
            target_file_bytes: self.target_file_bytes,
            row_group_rows: self.row_group_rows,
            page_rows: self.page_rows,
            bloom_filter_columns: self.bloom_filter_columns.clone(),
            sort_by: self.sort_by.clone(),
        }
    }

    pub(super) fn to_config(&self, spec: &PartitionSpec) -> BTreeMap<String, String> {
        let mut c = spec.to_config();
        let comp = match self.compression {
            Compression::Zstd(l) => format!("zstd({l})"),
            Compression::Snappy => "snappy".into(),
            Compression::Lz4 => "lz4".into(),
            Compression::None => "none".into(),
        };
        c.insert("lakehouse.compression".into(), comp);
        c.insert(
            "lakehouse.targetFileSize".into(),
            self.target_file_bytes.to_string(),
        );
        c.insert(
            "lakehouse.rowGroupRows".into(),
            self.row_group_rows.to_string(),
        );
        c.insert("lakehouse.pageRows".into(), self.page_rows.to_string());
        c.insert(
            "lakehouse.bloomFilterColumns".into(),
            self.bloom_filter_columns.join(","),
        );
        c.insert("lakehouse.sortBy".into(), self.sort_by.join(","));
        c.insert(
            "lakehouse.checkpointInterval".into(),
            self.checkpoint_interval.to_string(),
        );
        c.insert(
            "delta.checkpointInterval".into(),
            self.checkpoint_interval.max(1).to_string(),
        );
        if self.deletion_vectors {
            c.insert(DELETION_VECTORS_KEY.into(), "true".into());
        }
        c
    }

    pub(super) fn from_config(c: &BTreeMap<String, String>) -> TableOptions {
        let d = TableOptions::default();
        let list = |k: &str| -> Vec<String> {
            c.get(k)
                .map(|v| {
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let compression = match c.get("lakehouse.compression").map(String::as_str) {
            Some("snappy") => Compression::Snappy,
            Some("lz4") => Compression::Lz4,
            Some("none") => Compression::None,
            Some(z) => z
                .strip_prefix("zstd(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|l| l.parse().ok())
                .map_or(d.compression, Compression::Zstd),
            None => d.compression,
        };
        TableOptions {
            name: None,
            partition_by: Vec::new(),
            compression,
            target_file_bytes: c
                .get("lakehouse.targetFileSize")
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.target_file_bytes),
            row_group_rows: c
                .get("lakehouse.rowGroupRows")
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.row_group_rows),
            page_rows: c
                .get("lakehouse.pageRows")
                .and_then(|v| v.parse().ok())
                .filter(|&n: &usize| n > 0)
                .unwrap_or(d.page_rows),
            bloom_filter_columns: list("lakehouse.bloomFilterColumns"),
            sort_by: list("lakehouse.sortBy"),
            checkpoint_interval: c
                .get("lakehouse.checkpointInterval")
                .or_else(|| c.get("delta.checkpointInterval"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.checkpoint_interval),
            deletion_vectors: c
                .get(DELETION_VECTORS_KEY)
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        }
    }
}
