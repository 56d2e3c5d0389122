//! [`FileScan`]: a scan described as the Parquet files it reads, so that a query engine
//! can read them with its own Parquet reader instead of pulling batches from
//! [`TableSource::scan`](crate::TableSource::scan).
//!
//! A source backed by Parquet files (a Delta table, a directory of files) returns one
//! from [`TableSource::scan_files`](crate::TableSource::scan_files). The engine then
//! plans its native scan over the files: parallel over files and row groups, with its
//! own page-index pruning and late materialisation, partition columns as constants and
//! the per-file statistics for the optimizer. Everything the source would otherwise
//! apply itself is in the description: which rows of a file are deleted, how the
//! table's column names map to the names in the files.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use object_store::ObjectStore;
use object_store::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::predicate::ColumnStats;
use crate::scalar::Scalar;
use crate::table::Version;

/// A scan of a table as a list of Parquet files in one object store.
///
/// Built by a source in [`TableSource::scan_files`](crate::TableSource::scan_files).
/// The rows of the scan are, for every file in [`files`](Self::files): the file's rows
/// minus its [`deleted`](ScanFile::deleted) rows, with the data columns read from the
/// file (by their [physical names](Self::column_mapping)), the partition columns set to
/// the file's [`partition_values`](ScanFile::partition_values), and columns the file
/// lacks (added to the table after the file was written) read as nulls. Columns whose
/// type in the file differs from [`table_schema`](Self::table_schema) are cast to it.
///
/// The files are those the request's predicate may match (pruned by statistics and
/// partition values); rows are **not** filtered: the engine applies the predicate.
///
/// ```
/// use std::sync::Arc;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use lakehouse_core::{FileScan, ScanFile, Scalar};
/// use object_store::memory::InMemory;
///
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("qty", DataType::Int64, true),
///     Field::new("day", DataType::Utf8, true),
/// ]));
/// let mut scan = FileScan::new(Arc::new(InMemory::new()), "lakehouse://sales", schema, 3)?;
/// scan.partition_columns = vec!["day".into()];
/// let mut file = ScanFile::new("sales/day=2026-01-01/part-0.parquet", 4096);
/// file.partition_values.insert("day".into(), Scalar::Utf8("2026-01-01".into()));
/// scan.files.push(file);
/// scan.total_files = 2; // the other file was pruned
/// assert_eq!(scan.data_columns().collect::<Vec<_>>(), ["qty"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct FileScan {
    /// The store holding the files.
    pub store: Arc<dyn ObjectStore>,
    /// A `scheme://authority` URL (no path) naming [`store`](Self::store), unique to it:
    /// the engine registers the store under this URL and resolves every
    /// [`ScanFile::path`] against it.
    pub store_url: String,
    /// Where another process opens [`store`](Self::store) from, for distributed
    /// execution: `file:///abs/dir` for a directory of the local file system (the
    /// store's root, which [`ScanFile::path`]s are relative to), `s3://bucket` for an
    /// S3 bucket. `None` (the default) for a store only this process holds, such as an
    /// in-memory one: such scans are not sent to other processes.
    pub store_location: Option<String>,
    /// The logical schema of the scanned version: every column of the table, partition
    /// columns included, in table order, under their logical names.
    pub table_schema: SchemaRef,
    /// The columns of [`table_schema`](Self::table_schema) that are partition columns:
    /// not stored in the files, constant per file ([`ScanFile::partition_values`]).
    pub partition_columns: Vec<String>,
    /// Logical column name to the name the files use for it, for tables whose files
    /// name columns differently (Delta column mapping); empty when the names are the
    /// same. A column absent from the map has the same name in the files.
    pub column_mapping: BTreeMap<String, String>,
    /// The files to read.
    pub files: Vec<ScanFile>,
    /// How many files the version holds before pruning (for `EXPLAIN`: files read of
    /// total).
    pub total_files: usize,
    /// The version described.
    pub version: Version,
}

impl fmt::Debug for FileScan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileScan")
            .field("store_url", &self.store_url)
            .field("store_location", &self.store_location)
            .field("version", &self.version)
            .field("partition_columns", &self.partition_columns)
            .field("column_mapping", &self.column_mapping)
            .field("files", &self.files.len())
            .field("total_files", &self.total_files)
            .finish_non_exhaustive()
    }
}

impl FileScan {
    /// A scan of no file yet (push [`ScanFile`]s onto [`files`](Self::files)).
    ///
    /// Fails with [`ErrorKind::InvalidInput`] unless `store_url` has the form
    /// `scheme://authority` (a scheme that starts with a letter, then letters, digits,
    /// `+`, `-` or `.`; nothing after the authority but an optional `/`).
    pub fn new(
        store: Arc<dyn ObjectStore>,
        store_url: impl Into<String>,
        table_schema: SchemaRef,
        version: Version,
    ) -> Result<FileScan> {
        let store_url = store_url.into();
        check_store_url(&store_url)?;
        Ok(FileScan {
            store,
            store_url,
            store_location: None,
            table_schema,
            partition_columns: Vec::new(),
            column_mapping: BTreeMap::new(),
            files: Vec::new(),
            total_files: 0,
            version,
        })
    }

    /// The columns of the table stored in the files (all but the partition columns),
    /// in table order, under their logical names.
    pub fn data_columns(&self) -> impl Iterator<Item = &str> {
        self.table_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| !self.partition_columns.iter().any(|p| p == n))
    }

    /// The name the files use for logical column `column`.
    pub fn physical_name<'a>(&'a self, column: &'a str) -> &'a str {
        self.column_mapping
            .get(column)
            .map(String::as_str)
            .unwrap_or(column)
    }
}

fn check_store_url(url: &str) -> Result<()> {
    let bad = || {
        Error::new(
            ErrorKind::InvalidInput,
            format!("a file scan's store URL must be scheme://authority, not {url:?}"),
        )
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if !scheme_ok || authority.is_empty() || authority.contains(['/', '?', '#', ' ']) {
        return Err(bad());
    }
    Ok(())
}

/// One Parquet file of a [`FileScan`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ScanFile {
    /// The file's path in [`FileScan::store`].
    pub path: Path,
    /// The file's size in bytes (the engine reads the footer without asking the store).
    pub size_bytes: u64,
    /// The value of every partition column for every row of the file, typed as in
    /// [`FileScan::table_schema`] ([`Scalar::Null`] for a null partition).
    pub partition_values: BTreeMap<String, Scalar>,
    /// What is known of the file's rows.
    pub statistics: ScanFileStatistics,
    /// Rows of the file that are not part of the table (deletion vectors), if any.
    pub deleted: Option<DeletedRows>,
}

impl ScanFile {
    /// A file with no partition values, no statistics and no deleted rows.
    pub fn new(path: impl Into<Path>, size_bytes: u64) -> ScanFile {
        ScanFile {
            path: path.into(),
            size_bytes,
            partition_values: BTreeMap::new(),
            statistics: ScanFileStatistics::default(),
            deleted: None,
        }
    }
}

/// Statistics of one [`ScanFile`], over the rows the scan yields from it (deleted
/// rows excluded).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ScanFileStatistics {
    /// The exact number of rows the file contributes (after deleted rows), if known.
    pub num_rows: Option<u64>,
    /// Statistics of data columns by logical name (partition columns are derived from
    /// [`ScanFile::partition_values`]).
    pub columns: BTreeMap<String, ColumnStats>,
    /// Whether [`columns`](Self::columns) are exact: `min` and `max` are the smallest
    /// and largest values present and null counts are exact. When `false` they are
    /// bounds only (truncated strings, rows deleted since they were computed), which
    /// still serve pruning and estimates but not answers.
    pub exact: bool,
}

/// The rows of a file that a scan skips: a sorted set of row indexes (0-based, in file
/// order) out of the file's row count. Deletion vectors are read into this form.
///
/// ```
/// use lakehouse_core::DeletedRows;
///
/// let d = DeletedRows::new(10, vec![7, 2, 2])?;
/// assert_eq!(d.rows(), [2, 7]);
/// assert_eq!(d.live_rows(), 8);
/// // Runs of (keep, count): rows 0-1 kept, 2 skipped, 3-6 kept, 7 skipped, 8-9 kept.
/// assert_eq!(d.runs(), [(true, 2), (false, 1), (true, 4), (false, 1), (true, 2)]);
/// assert!(DeletedRows::new(5, vec![5]).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedRows {
    file_rows: u64,
    rows: Arc<[u64]>,
}

impl DeletedRows {
    /// The deleted row indexes `rows` (any order, duplicates ignored) of a file of
    /// `file_rows` rows.
    ///
    /// Fails with [`ErrorKind::InvalidInput`] when an index is not below `file_rows`.
    pub fn new(file_rows: u64, mut rows: Vec<u64>) -> Result<DeletedRows> {
        rows.sort_unstable();
        rows.dedup();
        if let Some(&last) = rows.last()
            && last >= file_rows
        {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("deleted row {last} is past the end of a file of {file_rows} rows"),
            ));
        }
        Ok(DeletedRows {
            file_rows,
            rows: rows.into(),
        })
    }

    /// Rows in the file, deleted ones included.
    pub fn file_rows(&self) -> u64 {
        self.file_rows
    }

    /// The deleted row indexes, ascending.
    pub fn rows(&self) -> &[u64] {
        &self.rows
    }

    /// Rows not deleted.
    pub fn live_rows(&self) -> u64 {
        self.file_rows - self.rows.len() as u64
    }

    /// The file as alternating runs of `(kept, length)`, covering every row once, with
    /// no empty run (the form of a Parquet row selection).
    pub fn runs(&self) -> Vec<(bool, u64)> {
        let mut out: Vec<(bool, u64)> = Vec::new();
        let mut push = |keep: bool, n: u64| {
            if n == 0 {
                return;
            }
            match out.last_mut() {
                Some((k, len)) if *k == keep => *len += n,
                _ => out.push((keep, n)),
            }
        };
        let mut at = 0u64;
        for &d in self.rows.iter() {
            push(true, d - at);
            push(false, 1);
            at = d + 1;
        }
        push(true, self.file_rows - at);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_are_scheme_and_authority() {
        for ok in ["lakehouse://t1", "s3://bucket/", "lake+x.y-z://a1b2"] {
            check_store_url(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "lakehouse",
            "://x",
            "1x://y",
            "s3://",
            "s3://b/key",
            "a b://c",
        ] {
            let e = check_store_url(bad).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
        }
    }

    #[test]
    fn runs_cover_the_file() {
        let d = DeletedRows::new(6, vec![0, 1, 5]).expect("valid");
        assert_eq!(d.runs(), [(false, 2), (true, 3), (false, 1)]);
        assert_eq!(
            DeletedRows::new(3, vec![]).expect("valid").runs(),
            [(true, 3)]
        );
        assert!(
            DeletedRows::new(0, vec![])
                .expect("valid")
                .runs()
                .is_empty()
        );
    }
}
