//! [`Table`] as a [`TableSource`] and a [`TableSink`].

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use async_trait::async_trait;
use lakehouse_core::{
    AppendOutcome, BatchStream, Changes, Error, ErrorKind, FileScan, FileStats, FilterSupport,
    Predicate, Result, RowChanges, ScanRequest, TableSink, TableSource, TableStatistics, TxnId,
    Version,
};

use super::{Table, live_files};
use crate::log::{Action, FileEntry};
use crate::partition::PartitionSpec;
use crate::read::scan_files;

#[async_trait]
impl TableSource for Table {
    fn schema(&self) -> SchemaRef {
        self.cached().schema.clone()
    }

    async fn version(&self) -> Result<Version> {
        self.refresh().await
    }

    fn partition_columns(&self) -> Vec<String> {
        self.cached().metadata.partition_columns.clone()
    }

    fn filter_support(&self, _predicate: &Predicate) -> FilterSupport {
        FilterSupport::Exact
    }

    async fn scan(&self, request: ScanRequest) -> Result<BatchStream> {
        self.scan_inner(request).await
    }

    async fn scan_files(&self, request: &ScanRequest) -> Result<Option<FileScan>> {
        self.scan_files_inner(request).await
    }

    async fn statistics(&self, version: Option<Version>) -> Result<TableStatistics> {
        let snap = self.snapshot(version).await?;
        let spec = Self::spec_of(&snap)?;
        let files = live_files(&snap)
            .map(|f| file_stats(f, &snap.schema, &spec))
            .collect::<Result<Vec<_>>>()?;
        Ok(TableStatistics {
            version: snap.version,
            files,
        })
    }

    async fn changes_since(&self, version: Version) -> Result<Changes> {
        let latest = self.refreshed().await?;
        if version > latest.version {
            return Err(self.beyond_latest(version, latest.version));
        }
        let mut added: Vec<Arc<FileEntry>> = Vec::new();
        for v in version + 1..=latest.version {
            for a in self.commit_actions(v).await? {
                match a {
                    Action::Add(add) if add.data_change => {
                        let stats = crate::log::parse_stats(add.stats.as_deref(), &latest.schema);
                        added.push(Arc::new(FileEntry::new(add, stats)));
                    }
                    Action::Remove(r) if r.data_change => {
                        return Err(Error::new(
                            ErrorKind::NonAppendChange,
                            format!("version {v} removed rows (file {})", r.path),
                        )
                        .with_version(v)
                        .with_table(self.uri()));
                    }
                    _ => {}
                }
            }
        }
        let ctx = self.scan_context(
            &latest,
            Self::spec_of(&latest)?,
            latest.schema.clone(),
            None,
            8192,
        );
        Ok(Changes {
            from_version: version,
            to_version: latest.version,
            batches: scan_files(ctx, added, None),
        })
    }

    /// Rows of added files, and the rows removed files and new deletion vectors took
    /// away (see `changes.rs`): deletes and updates, copy-on-write or with deletion
    /// vectors, and overwrites are reported; compaction is skipped.
    async fn row_changes_since(&self, version: Version) -> Result<RowChanges> {
        self.row_changes_inner(version).await
    }
}

#[async_trait]
impl TableSink for Table {
    fn sink_schema(&self) -> SchemaRef {
        self.user_schema()
    }

    async fn append(&self, batches: Vec<RecordBatch>, txn: Option<TxnId>) -> Result<AppendOutcome> {
        self.append_writers(batches, txn.into_iter().collect())
            .await
    }

    /// Any number of writers: each is one `txn` action of the commit.
    fn writers_per_commit(&self) -> usize {
        usize::MAX
    }

    async fn append_writers(
        &self,
        batches: Vec<RecordBatch>,
        txns: Vec<TxnId>,
    ) -> Result<AppendOutcome> {
        match self.append_inner(batches, txns).await? {
            (Some(info), _) => Ok(AppendOutcome::Committed {
                version: info.version,
                rows: info.rows,
            }),
            (None, last) => Ok(AppendOutcome::Duplicate {
                last_sequence: last.unwrap_or_default(),
            }),
        }
    }

    async fn last_sequence(&self, app_id: &str) -> Result<Option<u64>> {
        let snap = self.refreshed().await?;
        Ok(self.txn_version(&snap, app_id).await?.map(|v| v as u64))
    }
}

/// The statistics of one live file, partition columns as constants.
pub(super) fn file_stats(
    f: &FileEntry,
    schema: &Schema,
    spec: &PartitionSpec,
) -> Result<FileStats> {
    let partition_values = f.partitions(schema, spec)?;
    let rows = f.stats.num_rows.unwrap_or(0);
    let mut columns = f.stats.columns.clone();
    for (k, v) in partition_values.iter() {
        columns.insert(
            k.clone(),
            lakehouse_core::ColumnStats::constant(v.clone(), rows),
        );
    }
    Ok(FileStats {
        path: f.add.path.clone(),
        partition_values: (*partition_values).clone(),
        num_rows: rows,
        size_bytes: f.add.size as u64,
        columns,
    })
}
