//! [`TableSource::row_changes_since`](lakehouse_core::TableSource::row_changes_since)
//! for tables: the rows commits added and removed, from their `add` and `remove`
//! actions.
//!
//! Files are followed through the commits after the start version (in each commit
//! removes first, then adds, so a file re-added with a new deletion vector is one
//! change). Actions without `dataChange` (compaction) move rows without changing them
//! and are skipped. At the end:
//!
//! * **added**: the rows of files added since (with their latest deletion vector),
//!   unless removed again;
//! * **removed**: for each file that existed before and was removed since, the rows it
//!   had then and has no longer: all its live rows when it is gone, the rows its new
//!   deletion vector hides beyond its old one when it came back with one. A
//!   copy-on-write rewrite shows as all the old file's rows removed and the new file's
//!   rows added.
//!
//! The change data feed (`cdc` files) is not read: the data files say the same.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use futures::{StreamExt, TryStreamExt, stream};
use lakehouse_core::{Error, ErrorKind, Result, RowChanges, Version};

use super::Table;
use crate::log::{Action, Add, DeletionVector, FileEntry, Snapshot, parse_stats};
use crate::read::{deleted_rows, scan_files};

/// A file of an earlier version that a commit since removed.
#[derive(Debug)]
struct Removed {
    add: Add,
    /// Its deletion vector before the first removal.
    before: Option<DeletionVector>,
    /// `None` while gone; `Some(dv)` when added back (with vector `dv`).
    now: Option<Option<DeletionVector>>,
}

impl Table {
    pub(super) async fn row_changes_inner(&self, version: Version) -> Result<RowChanges> {
        let latest = self.refreshed().await?;
        if version > latest.version {
            return Err(self.beyond_latest(version, latest.version));
        }
        // Files added since, in commit order (`None` once removed again).
        let mut added: Vec<Option<Add>> = Vec::new();
        let mut added_at: HashMap<String, usize> = HashMap::new();
        let mut removed: Vec<Removed> = Vec::new();
        let mut removed_at: HashMap<String, usize> = HashMap::new();
        // Every `add` seen since, for files compaction wrote and a later commit removes.
        let mut seen: HashMap<String, Add> = HashMap::new();
        // The files of `version`, loaded at the first remove of one.
        let mut before: Option<HashMap<String, Add>> = None;
        for v in version + 1..=latest.version {
            let actions = self.commit_actions(v).await?;
            for a in &actions {
                let Action::Remove(r) = a else { continue };
                if !r.data_change {
                    continue;
                }
                if let Some(i) = added_at.remove(&r.path) {
                    added[i] = None;
                    continue;
                }
                if let Some(&i) = removed_at.get(&r.path) {
                    removed[i].now = None;
                    continue;
                }
                let add = match seen.get(&r.path) {
                    Some(a) => a.clone(),
                    None => {
                        if before.is_none() {
                            let snap = self.snapshot(Some(version)).await?;
                            before = Some(
                                snap.files
                                    .iter()
                                    .map(|f| (f.add.path.clone(), f.add.clone()))
                                    .collect(),
                            );
                        }
                        before
                            .as_ref()
                            .and_then(|files| files.get(&r.path))
                            .cloned()
                            .ok_or_else(|| {
                                Error::new(
                                    ErrorKind::Corrupt,
                                    format!(
                                        "version {v} removes file {}, which no earlier \
                                         version has",
                                        r.path
                                    ),
                                )
                                .with_version(v)
                                .with_path(r.path.clone())
                            })?
                    }
                };
                removed_at.insert(r.path.clone(), removed.len());
                removed.push(Removed {
                    add,
                    before: r.deletion_vector.clone(),
                    now: None,
                });
            }
            for a in actions {
                let Action::Add(add) = a else { continue };
                seen.insert(add.path.clone(), add.clone());
                if !add.data_change {
                    continue;
                }
                if let Some(&i) = removed_at.get(&add.path)
                    && removed[i].now.is_none()
                {
                    removed[i].now = Some(add.deletion_vector.clone());
                    continue;
                }
                if let Some(&i) = added_at.get(&add.path) {
                    added[i] = Some(add);
                } else {
                    added_at.insert(add.path.clone(), added.len());
                    added.push(Some(add));
                }
            }
        }
        let to_version = latest.version;
        let spec = Self::spec_of(&latest)?;
        let ctx = self.scan_context(&latest, spec.clone(), latest.schema.clone(), None, 8192);
        let added: Vec<Arc<FileEntry>> = added
            .into_iter()
            .flatten()
            .map(|add| {
                let stats = parse_stats(add.stats.as_deref(), &latest.schema)
                    .less_deleted(add.deletion_vector.as_ref());
                Arc::new(FileEntry::new(add, stats))
            })
            .collect();
        let table = self.clone();
        let removed_rows = stream::iter(removed)
            .filter(|r| futures::future::ready(r.now.as_ref() != Some(&r.before)))
            .then(move |r| {
                let table = table.clone();
                let latest = latest.clone();
                let spec = spec.clone();
                async move { table.removed_rows(&latest, &spec, r).await }
            })
            .map_ok(|batches| stream::iter(batches.into_iter().map(Ok)))
            .try_flatten();
        Ok(RowChanges {
            from_version: version,
            to_version,
            added: scan_files(ctx, added, None),
            removed: Box::pin(removed_rows),
        })
    }

    /// The rows file `r` had before and has no longer.
    async fn removed_rows(
        &self,
        latest: &Snapshot,
        spec: &crate::partition::PartitionSpec,
        r: Removed,
    ) -> Result<Vec<RecordBatch>> {
        let kernel = &self.inner.kernel;
        let rows = |dv: Option<DeletionVector>| async move {
            match dv {
                Some(dv) => deleted_rows(kernel, &dv).await,
                None => Ok(Vec::new()),
            }
        };
        let hidden_before = rows(r.before.clone()).await?;
        let hidden_now = match &r.now {
            Some(dv) => Some(rows(dv.clone()).await?),
            None => None,
        };
        let entry = FileEntry::new(r.add, Default::default());
        let batches = self
            .read_physical(latest, spec, &latest.schema, &entry)
            .await
            .map_err(|e| e.with_path(entry.add.path.clone()))?;
        let mut out = Vec::with_capacity(batches.len());
        let mut offset = 0u64;
        for b in batches {
            let keep: BooleanArray = (0..b.num_rows() as u64)
                .map(|i| {
                    let pos = offset + i;
                    let was_live = hidden_before.binary_search(&pos).is_err();
                    let gone = match &hidden_now {
                        None => true,
                        Some(now) => now.binary_search(&pos).is_ok(),
                    };
                    Some(was_live && gone)
                })
                .collect();
            offset += b.num_rows() as u64;
            let rows = arrow::compute::filter_record_batch(&b, &keep)?;
            if rows.num_rows() > 0 {
                out.push(rows);
            }
        }
        Ok(out)
    }
}
