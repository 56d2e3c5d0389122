//! [`Table::optimize`]: compaction and clustering of small files.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use futures::{StreamExt, TryStreamExt};
use lakehouse_core::{Error, ErrorKind, Predicate, Result, Version, on_rayon};

use super::commit::certainly_not_committed;
use super::{Table, TableOptions, live_files, now_ms, user_schema_of};
use crate::log::{Action, Add, FileEntry};
use crate::read::{file_view, scan_files};
use crate::write::{PartitionWriter, encode};

/// Options of [`Table::optimize`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct OptimizeOptions {
    target_file_bytes: Option<u64>,
    min_file_bytes: Option<u64>,
    sort_by: Vec<String>,
    predicate: Option<Predicate>,
    tiered: Option<usize>,
    max_files: Option<usize>,
    purge: bool,
}

impl OptimizeOptions {
    /// Compact with the table's target file size.
    pub fn new() -> Self {
        Self::default()
    }

    /// Size of the files written.
    pub fn target_file_size(mut self, bytes: u64) -> Self {
        self.target_file_bytes = Some(bytes.max(1));
        self
    }

    /// Files at least this big are left alone (default: half the target).
    pub fn min_file_size(mut self, bytes: u64) -> Self {
        self.min_file_bytes = Some(bytes);
        self
    }

    /// Cluster rows by these columns while rewriting (every small file of a partition
    /// is rewritten sorted, so that zone maps become selective).
    pub fn sort_by<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.sort_by = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Only partitions whose files may match `predicate` (on partition columns).
    pub fn only(mut self, predicate: Predicate) -> Self {
        self.predicate = Some(predicate);
        self
    }

    /// Size-tiered compaction, for tables that take small commits continuously: within a
    /// partition, the files below the minimum size are bucketed by size (a file joins a
    /// bucket when its size is within half to one and a half times the bucket's mean),
    /// and only buckets of at least `fanout` files are merged, each into one file of
    /// about their combined size. Each row is then rewritten about
    /// log<sub>fanout</sub>(partition size / commit size) times, instead of at every
    /// run, and a partition keeps about `fanout - 1` files per size tier. `fanout` is at
    /// least 2. Without it (the default), every small file of a partition is rewritten
    /// at each run.
    pub fn tiered(mut self, fanout: usize) -> Self {
        self.tiered = Some(fanout.max(2));
        self
    }

    /// Also rewrite every file that has a deletion vector, whatever its size and even
    /// alone in its partition, so that no live file keeps one (Delta's `REORG TABLE
    /// ... APPLY (PURGE)`). The deleted rows are then gone from the latest version's
    /// files; [`Table::vacuum`] deletes the old files and vectors after the retention.
    /// With [`min_file_size`](Self::min_file_size)`(0)` only files with a deletion
    /// vector are rewritten (those of one partition into one file).
    pub fn purge_deletion_vectors(mut self) -> Self {
        self.purge = true;
        self
    }

    /// With [`tiered`](Self::tiered): a partition that would still hold more than `n`
    /// files (of any size) after its full tiers are merged also has its smallest
    /// remaining small files merged into one, as many as it takes to get to `n` (or
    /// all of them). This bounds the files a reader of a partition opens, at the cost
    /// of rewriting small files more often. `n` is at least 1.
    pub fn max_files_per_partition(mut self, n: usize) -> Self {
        self.max_files = Some(n.max(1));
        self
    }
}

/// The groups to merge in one partition under tiered compaction: full tiers, plus the
/// smallest other small files while the partition would hold more than `max_files`
/// (`total` counts every file of the partition, small or not).
fn tiered_groups<T>(
    small: Vec<T>,
    total: usize,
    size: impl Fn(&T) -> u64,
    fanout: usize,
    max_files: Option<usize>,
) -> Vec<Vec<T>> {
    let sizes: Vec<u64> = small.iter().map(&size).collect();
    let mut groups: Vec<Vec<usize>> = size_tiers((0..small.len()).collect(), |&i| sizes[i], fanout);
    let picked: usize = groups.iter().map(Vec::len).sum();
    let left = total.saturating_sub(picked) + groups.len();
    if let Some(max) = max_files
        && left > max
    {
        let taken: std::collections::HashSet<usize> = groups.iter().flatten().copied().collect();
        let mut rest: Vec<usize> = (0..small.len()).filter(|i| !taken.contains(i)).collect();
        rest.sort_by_key(|&i| sizes[i]);
        // Merging k files into one removes k - 1 of them.
        let k = (left - max + 1).min(rest.len());
        if k >= 2 {
            rest.truncate(k);
            groups.push(rest);
        }
    }
    let mut slots: Vec<Option<T>> = small.into_iter().map(Some).collect();
    groups
        .into_iter()
        .map(|g| g.into_iter().filter_map(|i| slots[i].take()).collect())
        .collect()
}

/// Buckets of items of similar size (each within half to one and a half times the
/// mean of its bucket, smallest first) holding at least `fanout` items.
fn size_tiers<T>(mut items: Vec<T>, size: impl Fn(&T) -> u64, fanout: usize) -> Vec<Vec<T>> {
    items.sort_by_key(|i| size(i));
    let mut buckets: Vec<Vec<T>> = Vec::new();
    let mut total = 0f64;
    for item in items {
        let s = size(&item).max(1) as f64;
        match buckets.last_mut() {
            Some(b) if s <= total / b.len() as f64 * 1.5 => {
                total += s;
                b.push(item);
            }
            _ => {
                total = s;
                buckets.push(vec![item]);
            }
        }
    }
    buckets.retain(|b| b.len() >= fanout);
    buckets
}

/// What [`Table::optimize`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OptimizeMetrics {
    /// The commit, if anything was rewritten.
    pub version: Option<Version>,
    /// Files removed.
    pub files_removed: usize,
    /// Files written.
    pub files_added: usize,
    /// Rows rewritten.
    pub rows: u64,
}

impl Table {
    /// Compacts small files: per partition, files below the minimum size are rewritten
    /// into files of the target size (optionally clustered by a sort key), and files
    /// with deletion vectors too when asked
    /// ([`OptimizeOptions::purge_deletion_vectors`]); rewritten files have none. The rewrite
    /// keeps every row, so incremental readers skip it. Without a sort key a partition's
    /// files are read and written batch by batch (up to four partitions at once, one per
    /// rayon thread), so memory holds a batch and the file being written per partition,
    /// whatever the partition's size; with one, a group is sorted whole in memory. Errors with
    /// [`ErrorKind::Conflict`] if another writer removed one of the files meanwhile.
    pub async fn optimize(&self, options: OptimizeOptions) -> Result<OptimizeMetrics> {
        let snap = self.refreshed().await?;
        let spec = Self::spec_of(&snap)?;
        let opts = TableOptions::from_config(&snap.metadata.configuration);
        let target = options.target_file_bytes.unwrap_or(opts.target_file_bytes);
        let min = options.min_file_bytes.unwrap_or(target / 2);
        let mut groups: BTreeMap<PartitionKey, Vec<Arc<FileEntry>>> = BTreeMap::new();
        // Files with deletion vectors to purge, rewritten whatever the tiers say.
        let mut purge: BTreeMap<PartitionKey, Vec<Arc<FileEntry>>> = BTreeMap::new();
        let mut totals: BTreeMap<PartitionKey, usize> = BTreeMap::new();
        for f in live_files(&snap) {
            if let Some(p) = &options.predicate
                && !p.can_match(&file_view(f, &snap.schema, &spec)?)
            {
                continue;
            }
            let key = partition_key(f);
            *totals.entry(key.clone()).or_default() += 1;
            if options.purge && f.add.deletion_vector.is_some() {
                purge.entry(key).or_default().push(f.clone());
                continue;
            }
            if (f.add.size as u64) >= min && options.sort_by.is_empty() {
                continue;
            }
            groups.entry(key).or_default().push(f.clone());
        }
        groups.retain(|key, files| {
            files.len() > 1 || !options.sort_by.is_empty() || purge.contains_key(key)
        });
        let mut groups: Vec<Vec<Arc<FileEntry>>> = match options.tiered {
            Some(fanout) => groups
                .into_iter()
                .flat_map(|(key, files)| {
                    let total = totals.get(&key).copied().unwrap_or(files.len());
                    tiered_groups(
                        files,
                        total,
                        |f| f.add.size.max(0) as u64,
                        fanout,
                        options.max_files,
                    )
                })
                .collect(),
            None => groups.into_values().collect(),
        };
        // Each partition's files to purge join its first group (or make one).
        for (key, files) in purge {
            let home = groups
                .iter_mut()
                .find(|g| g.first().is_some_and(|f| partition_key(f) == key));
            match home {
                Some(g) => g.extend(files),
                None => groups.push(files),
            }
        }
        if groups.is_empty() {
            return Ok(OptimizeMetrics::default());
        }
        let mut removed: Vec<Arc<FileEntry>> = Vec::new();
        let mut added: Vec<Add> = Vec::new();
        let mut rows = 0u64;
        let mut cfg = opts.write_config();
        cfg.target_file_bytes = target;
        if !options.sort_by.is_empty() {
            cfg.sort_by = options.sort_by.clone();
        }
        let user = user_schema_of(&snap);
        // Without a sort key each group streams through a writer, two groups at a time
        // (one per core of the rayon pool): memory holds a batch and a file being
        // written per group, not the group's rows. With one, a group's rows are sorted
        // together, so they are read whole.
        let lanes = rayon::current_num_threads().clamp(1, 4);
        let rewrites: Vec<(Vec<Arc<FileEntry>>, Result<Rewritten>)> = futures::stream::iter(groups)
            .map(|files| {
                let ctx = self.scan_context(&snap, spec.clone(), user.clone(), None, 64 * 1024);
                let (user, schema, spec, cfg) =
                    (user.clone(), snap.schema.clone(), spec.clone(), cfg.clone());
                async move {
                    let r = if cfg.sort_by.is_empty() {
                        self.rewrite_streamed(ctx, files.clone(), &schema, &spec, &cfg)
                            .await
                    } else {
                        self.rewrite_whole(ctx, files.clone(), user, schema, spec, cfg)
                            .await
                    };
                    (files, r)
                }
            })
            .buffer_unordered(lanes)
            .collect()
            .await;
        let mut failed = None;
        for (files, r) in rewrites {
            match r {
                Ok((adds, n)) => {
                    rows += n;
                    added.extend(adds);
                    removed.extend(files);
                }
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if let Some(e) = failed {
            // Nothing refers to what the other groups wrote: remove it.
            let written: Vec<String> = added.iter().map(|a| a.path.clone()).collect();
            self.delete_quietly(&written).await;
            return Err(e);
        }
        let written: Vec<String> = added.iter().map(|a| a.path.clone()).collect();
        let (nr, na) = (removed.len(), added.len());
        let ts = now_ms();
        let r = self
            .commit(
                "OPTIMIZE",
                serde_json::json!({"targetSize": target, "purge": options.purge}),
                move |latest| {
                    // A file removed, or given another deletion vector, since.
                    let live: std::collections::HashMap<&str, &Arc<FileEntry>> = latest
                        .files
                        .iter()
                        .map(|f| (f.add.path.as_str(), f))
                        .collect();
                    if let Some(gone) = removed.iter().find(|f| {
                        live.get(f.add.path.as_str())
                            .is_none_or(|l| l.add.deletion_vector != f.add.deletion_vector)
                    }) {
                        return Err(Error::new(
                            ErrorKind::Conflict,
                            format!(
                                "file {} was removed or rewritten by a concurrent commit",
                                gone.add.path
                            ),
                        )
                        .with_path(gone.add.path.clone()));
                    }
                    let mut actions: Vec<Action> = removed
                        .iter()
                        .map(|f| Action::Remove(f.add.removal(ts, false)))
                        .collect();
                    actions.extend(added.iter().cloned().map(Action::Add));
                    Ok(Some(actions))
                },
            )
            .await;
        match r {
            Ok(r) => Ok(OptimizeMetrics {
                version: r.map(|(v, _)| v),
                files_removed: nr,
                files_added: na,
                rows,
            }),
            Err(e) => {
                if certainly_not_committed(&e) {
                    self.delete_quietly(&written).await;
                }
                Err(e)
            }
        }
    }
}

impl Table {
    /// Rewrites one partition's `files` batch by batch through a [`PartitionWriter`],
    /// uploading each file once it reaches the target size. On an error, deletes what
    /// it uploaded.
    async fn rewrite_streamed(
        &self,
        ctx: Arc<crate::read::ScanContext>,
        files: Vec<Arc<FileEntry>>,
        schema: &arrow::datatypes::Schema,
        spec: &crate::partition::PartitionSpec,
        cfg: &crate::write::WriteConfig,
    ) -> Result<Rewritten> {
        let mut added: Vec<Add> = Vec::new();
        let r = async {
            let mut input = scan_files(ctx, files, None);
            let mut writer = PartitionWriter::new(schema, spec, cfg);
            let mut rows = 0u64;
            while let Some(batch) = input.try_next().await? {
                rows += batch.num_rows() as u64;
                let (w, done) = on_rayon(move || {
                    writer.push(&batch)?;
                    let done = writer.take_finished();
                    Ok((writer, done))
                })
                .await?;
                writer = w;
                if !done.is_empty() {
                    added.extend(self.upload(done, false).await?);
                }
            }
            let last = on_rayon(move || writer.finish()).await?;
            added.extend(self.upload(last, false).await?);
            Ok(rows)
        }
        .await;
        match r {
            Ok(rows) => Ok((added, rows)),
            Err(e) => {
                let written: Vec<String> = added.iter().map(|a| a.path.clone()).collect();
                self.delete_quietly(&written).await;
                Err(e)
            }
        }
    }

    /// Rewrites one partition's `files` from all their rows at once (a sort key orders
    /// the whole group).
    async fn rewrite_whole(
        &self,
        ctx: Arc<crate::read::ScanContext>,
        files: Vec<Arc<FileEntry>>,
        user: arrow::datatypes::SchemaRef,
        schema: arrow::datatypes::SchemaRef,
        spec: crate::partition::PartitionSpec,
        cfg: crate::write::WriteConfig,
    ) -> Result<Rewritten> {
        let batches: Vec<RecordBatch> = scan_files(ctx, files, None).try_collect().await?;
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        let encoded = on_rayon(move || encode(&batches, &user, &schema, &spec, &cfg)).await?;
        Ok((self.upload(encoded, false).await?, rows))
    }
}

/// What a group's rewrite uploaded, and the rows it read.
type Rewritten = (Vec<Add>, u64);

/// The partition values of a file, as a grouping key.
type PartitionKey = Vec<(String, Option<String>)>;

fn partition_key(f: &FileEntry) -> PartitionKey {
    f.add.partition_values.clone().into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::{size_tiers, tiered_groups};

    #[test]
    fn a_file_budget_merges_the_smallest_files_left_after_the_tiers() {
        let groups =
            |sizes: &[u64], total, max| tiered_groups(sizes.to_vec(), total, |s| *s, 4, max);
        // Without a budget only the full tier is merged.
        assert_eq!(
            groups(&[10, 11, 9, 12, 40, 100], 6, None),
            vec![vec![9, 10, 11, 12]]
        );
        // 6 small + 4 big files = 10; one tier leaves 7; a budget of 5 merges the
        // three smallest others (7 - 3 + 1 = 5).
        assert_eq!(
            groups(&[10, 11, 9, 12, 40, 100, 300, 5], 10, Some(5)),
            vec![vec![9, 10, 11, 12], vec![5, 40, 100]]
        );
        // Within the budget nothing more happens.
        assert_eq!(groups(&[10, 200], 3, Some(3)), Vec::<Vec<u64>>::new());
        // Over it with no tier: the smallest files are merged.
        assert_eq!(groups(&[10, 200, 30], 5, Some(3)), vec![vec![10, 30, 200]]);
        // One small file cannot be merged with itself.
        assert_eq!(groups(&[10], 9, Some(3)), Vec::<Vec<u64>>::new());
    }

    #[test]
    fn size_tiers_bucket_similar_sizes_and_keep_full_buckets() {
        let tiers = |sizes: &[u64], fanout| size_tiers(sizes.to_vec(), |s| *s, fanout);
        // Three small files are below the fanout.
        assert!(tiers(&[10, 11, 9], 4).is_empty());
        // Four similar files make a tier; the big one stays alone.
        assert_eq!(tiers(&[10, 11, 9, 40, 12], 4), vec![vec![9, 10, 11, 12]]);
        // Two full tiers of different sizes are merged separately.
        assert_eq!(
            tiers(&[40, 10, 41, 11, 39, 9, 42, 12], 4),
            vec![vec![9, 10, 11, 12], vec![39, 40, 41, 42]]
        );
        // A file half again above the mean starts a new bucket.
        assert!(tiers(&[10, 10, 10, 16], 4).is_empty());
        assert!(tiers(&[], 2).is_empty());
    }
}
