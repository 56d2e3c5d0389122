//! Deletes and updates by predicate ([`TableMutator`]): copy-on-write, or with
//! deletion vectors where the table enables them.
//!
//! A mutation reads one snapshot, prunes its files by partition values and statistics,
//! reads each candidate file and evaluates the predicate row by row. Files without a
//! match are untouched. When the predicate reads partition columns only, a delete
//! removes the files it matches whole, without reading them. Everything is one commit
//! of `remove` (with `dataChange`) and `add` actions.
//!
//! * **Copy-on-write** (the default): every file with a matching row is replaced by a
//!   file of its surviving or updated rows (a file whose rows all go is only removed);
//!   existing deletion vectors are applied while reading, and the new files have none.
//! * **Deletion vectors** (tables created with
//!   [`TableOptions::deletion_vectors`], or any table with the `deletionVectors`
//!   feature and `delta.enableDeletionVectors = true`): see `deletion_vectors.rs`. A
//!   file whose rows all go is removed without a vector.
//!
//! Refused: tables configured `delta.appendOnly`, and tables with the change data feed
//! on (their `cdc` files are not written), as [`ErrorKind::Unsupported`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{Field, Schema, SchemaRef};
use futures::TryStreamExt;
use lakehouse_core::{
    Assignment, Error, ErrorKind, MutationOutcome, Predicate, Result, TableMutator, Version,
    check_assignments, match_mask, mutate_batch, on_rayon,
};
use object_store::ObjectStoreExt;

use super::commit::certainly_not_committed;
use super::deletion_vectors::{dv_edit, with_deletion_vector, writes_deletion_vectors};
use super::{Table, TableOptions, io, live_files, now_ms, user_schema_of};
use crate::log::{Action, Add, FileEntry};
use crate::read::{deleted_rows, file_view, scan_files};
use crate::write::encode;

/// Times [`TableMutator::delete_where`], [`TableMutator::update_where`] and
/// [`TableMutator::merge`] run a
/// mutation again (reading the newer version) after a conflict, before reporting it.
pub const MUTATION_ATTEMPTS: u32 = 3;

/// A delete or update whose new files are written but not committed yet; from
/// [`Table::stage_delete`] or [`Table::stage_update`].
///
/// [`commit`](Self::commit) makes it one commit on top of the latest version, or fails
/// with [`ErrorKind::Conflict`] when a commit since the version it read removed or
/// rewrote a file it read (or changed the schema); concurrent appends do not conflict.
/// Dropping it without committing leaves its new files behind until
/// [`Table::vacuum`] (call [`abort`](Self::abort) to delete them at once).
#[derive(Debug)]
#[must_use = "a staged mutation does nothing until it is committed"]
pub struct StagedMutation {
    table: Table,
    operation: &'static str,
    predicate: String,
    read_version: Version,
    rows_affected: u64,
    /// The schema and table id the mutation read with.
    schema: SchemaRef,
    table_id: String,
    /// Every file whose rows the mutation depends on (the candidates after pruning).
    read: Vec<Arc<FileEntry>>,
    removed: Vec<Arc<FileEntry>>,
    added: Vec<Add>,
    /// Files written for the mutation (data and deletion vector files), relative URIs.
    written: Vec<String>,
    /// Files re-added with a new deletion vector.
    deletion_vectors: usize,
    /// For a merge: files added since the read that it could have matched conflict.
    appends: Option<AppendGuard>,
}

/// What a merge read, to tell whether a concurrent append could have held rows it
/// matches: the paths live at the read, and a predicate that such rows satisfy.
#[derive(Debug)]
pub(super) struct AppendGuard {
    pub(super) known: HashSet<String>,
    pub(super) predicate: Predicate,
    pub(super) spec: crate::partition::PartitionSpec,
}

impl StagedMutation {
    /// A mutation of `snap` that has read, removed and added nothing yet.
    pub(super) fn empty(
        table: &Table,
        snap: &crate::log::Snapshot,
        operation: &'static str,
        predicate: String,
    ) -> Self {
        StagedMutation {
            table: table.clone(),
            operation,
            predicate,
            read_version: snap.version,
            rows_affected: 0,
            schema: snap.schema.clone(),
            table_id: snap.metadata.id.clone(),
            read: Vec::new(),
            removed: Vec::new(),
            added: Vec::new(),
            written: Vec::new(),
            deletion_vectors: 0,
            appends: None,
        }
    }

    pub(super) fn guard_appends(&mut self, guard: AppendGuard) {
        self.appends = Some(guard);
    }

    pub(super) fn push_read(&mut self, f: &Arc<FileEntry>) {
        self.read.push(f.clone());
    }

    pub(super) fn push_removed(&mut self, f: &Arc<FileEntry>) {
        self.removed.push(f.clone());
    }

    /// Adds new data files (written for this mutation).
    pub(super) fn push_added(&mut self, adds: Vec<Add>) {
        self.written.extend(adds.iter().map(|a| a.path.clone()));
        self.added.extend(adds);
    }

    /// Deletes the files written so far (after an error while staging).
    pub(super) async fn discard(&self) {
        self.table.delete_quietly(&self.written).await;
    }

    /// Rows deleted or updated.
    pub fn rows_affected(&self) -> u64 {
        self.rows_affected
    }

    /// The version the mutation read.
    pub fn read_version(&self) -> Version {
        self.read_version
    }

    /// Files the commit removes (rewritten or wholly deleted).
    pub fn files_removed(&self) -> usize {
        self.removed.len()
    }

    /// New data files the commit adds (files re-added with a deletion vector are
    /// counted by [`deletion_vectors`](Self::deletion_vectors)).
    pub fn files_added(&self) -> usize {
        self.added.len() - self.deletion_vectors
    }

    /// Files the commit keeps with a new deletion vector (0 for copy-on-write).
    pub fn deletion_vectors(&self) -> usize {
        self.deletion_vectors
    }

    /// Deletes the files written for this mutation; nothing is committed.
    pub async fn abort(self) {
        self.table.delete_quietly(&self.written).await;
    }

    /// Commits the mutation (see the type's docs for conflicts). A mutation that
    /// matched no row commits nothing and returns a `None` version.
    pub async fn commit(self) -> Result<MutationOutcome> {
        let rows_affected = self.rows_affected;
        Ok(match self.commit_version().await? {
            Some(version) => MutationOutcome {
                rows_affected,
                version: Some(version),
            },
            None => MutationOutcome::unchanged(),
        })
    }

    /// Commits the removes and adds; `None` when there are none.
    pub(super) async fn commit_version(self) -> Result<Option<Version>> {
        if self.removed.is_empty() && self.added.is_empty() {
            return Ok(None);
        }
        let StagedMutation {
            table,
            operation,
            predicate,
            read_version,
            rows_affected: _,
            schema,
            table_id,
            read,
            removed,
            added,
            written,
            deletion_vectors: _,
            appends,
        } = self;
        let ts = now_ms();
        let r = table
            .commit(
                operation,
                serde_json::json!({ "predicate": predicate }),
                move |latest| {
                    check_no_conflict(latest, read_version, &schema, &table_id, &read)?;
                    if let Some(guard) = &appends {
                        check_appends(latest, read_version, guard)?;
                    }
                    let mut actions: Vec<Action> = removed
                        .iter()
                        .map(|f| Action::Remove(f.add.removal(ts, true)))
                        .collect();
                    actions.extend(added.iter().cloned().map(Action::Add));
                    Ok(Some(actions))
                },
            )
            .await;
        match r {
            Ok(Some((version, _))) => Ok(Some(version)),
            Ok(None) => Err(Error::new(
                ErrorKind::Internal,
                "a mutation commit was skipped",
            )),
            Err(e) => {
                if certainly_not_committed(&e) {
                    table.delete_quietly(&written).await;
                }
                Err(e.with_table(table.uri()))
            }
        }
    }
}

/// Whether committing on `latest` keeps the Delta rules for a mutation that read
/// `read` at `read_version`: every file read is still live with the same deletion
/// vector, and the table (its id and schema) is the same.
fn check_no_conflict(
    latest: &crate::log::Snapshot,
    read_version: Version,
    schema: &SchemaRef,
    table_id: &str,
    read: &[Arc<FileEntry>],
) -> Result<()> {
    if latest.version == read_version {
        return Ok(());
    }
    if latest.metadata.id != table_id || latest.schema.fields() != schema.fields() {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "the table's metadata changed after version {read_version}, which the \
                 mutation read"
            ),
        )
        .with_version(read_version));
    }
    let live: HashMap<&str, &Arc<FileEntry>> = latest
        .files
        .iter()
        .map(|f| (f.add.path.as_str(), f))
        .collect();
    for f in read {
        let same = live
            .get(f.add.path.as_str())
            .is_some_and(|l| l.add.deletion_vector == f.add.deletion_vector);
        if !same {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "file {} read by the mutation at version {read_version} was removed or \
                     rewritten by a concurrent commit",
                    f.add.path
                ),
            )
            .with_path(f.add.path.clone())
            .with_version(read_version));
        }
    }
    Ok(())
}

/// Whether a file added after `read_version` could hold rows matching the guard's
/// predicate (then the merge would have read it: a conflict).
fn check_appends(
    latest: &crate::log::Snapshot,
    read_version: Version,
    guard: &AppendGuard,
) -> Result<()> {
    for f in latest
        .files
        .iter()
        .filter(|f| !guard.known.contains(&f.add.path))
    {
        if guard
            .predicate
            .can_match(&file_view(f, &latest.schema, &guard.spec)?)
        {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "file {} appended by a concurrent commit after version {read_version} \
                     may hold rows the merge matches",
                    f.add.path
                ),
            )
            .with_path(f.add.path.clone())
            .with_version(read_version));
        }
    }
    Ok(())
}

impl Table {
    /// Reads the latest version and writes the files of a delete of the rows matching
    /// `predicate`, without committing; see [`StagedMutation`].
    pub async fn stage_delete(&self, predicate: &Predicate) -> Result<StagedMutation> {
        self.stage(predicate, None).await
    }

    /// Reads the latest version and writes the files of an update of the rows matching
    /// `predicate`, without committing; see [`StagedMutation`]. Assigning a partition
    /// column derived from another column is [`ErrorKind::Unsupported`]; assigning an
    /// identity partition column moves the rows to their new partition.
    pub async fn stage_update(
        &self,
        predicate: &Predicate,
        assignments: &[Assignment],
    ) -> Result<StagedMutation> {
        self.stage(predicate, Some(assignments)).await
    }

    async fn stage(
        &self,
        predicate: &Predicate,
        assignments: Option<&[Assignment]>,
    ) -> Result<StagedMutation> {
        let snap = self.refreshed().await?;
        let schema = snap.schema.clone();
        crate::nested::check_predicate(predicate, &schema).map_err(|e| e.with_table(self.uri()))?;
        predicate
            .validate(&schema)
            .map_err(|e| e.with_table(self.uri()))?;
        refuse_by_configuration(&snap.metadata.configuration)
            .map_err(|e| e.with_table(self.uri()))?;
        let spec = Self::spec_of(&snap)?;
        if let Some(assignments) = assignments {
            check_assignments(&schema, assignments).map_err(|e| e.with_table(self.uri()))?;
            if let Some(a) = assignments.iter().find(|a| spec.is_derived(&a.column)) {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "column {:?} is derived from another column for partitioning and \
                         cannot be assigned",
                        a.column
                    ),
                )
                .with_column(&a.column)
                .with_table(self.uri()));
            }
        }
        let prune = match spec.implied(predicate) {
            Some(extra) => predicate.clone().and(extra),
            None => predicate.clone(),
        };
        let partition_names = spec.names();
        let partition_only = assignments.is_none()
            && predicate
                .columns()
                .iter()
                .all(|c| partition_names.iter().any(|p| p == c));
        let user = user_schema_of(&snap);
        let opts = TableOptions::from_config(&snap.metadata.configuration);
        let cfg = opts.write_config();
        let operation = if assignments.is_some() {
            "UPDATE"
        } else {
            "DELETE"
        };
        let mut staged = StagedMutation::empty(self, &snap, operation, predicate.to_string());
        let dv_mode = writes_deletion_vectors(&snap);
        // Files to add again with a new deletion vector: the file, its deleted rows and
        // its row count.
        let mut pending: Vec<(Arc<FileEntry>, Vec<u64>, u64)> = Vec::new();
        let result: Result<()> = async {
            for f in live_files(&snap) {
                if !prune.can_match(&file_view(f, &schema, &spec)?) {
                    continue;
                }
                staged.read.push(f.clone());
                if partition_only && let Some(rows) = live_rows(f) {
                    if self.partition_matches(f, &schema, &spec, predicate)? {
                        staged.rows_affected += rows;
                        staged.removed.push(f.clone());
                    }
                    continue;
                }
                if dv_mode {
                    let old = match &f.add.deletion_vector {
                        Some(dv) => deleted_rows(&self.inner.kernel, dv)
                            .await
                            .map_err(|e| e.with_path(f.add.path.clone()))?,
                        None => Vec::new(),
                    };
                    let batches = self.read_physical(&snap, &spec, &schema, f).await?;
                    let Some(edit) = dv_edit(&batches, &old, predicate, assignments, &user)? else {
                        continue;
                    };
                    staged.rows_affected += edit.matched;
                    staged.removed.push(f.clone());
                    if (edit.deleted.len() as u64) < edit.physical_rows {
                        pending.push((f.clone(), edit.deleted, edit.physical_rows));
                    }
                    if !edit.updated.is_empty() {
                        let kept = edit.updated;
                        let (user2, schema2, spec2, cfg2) =
                            (user.clone(), schema.clone(), spec.clone(), cfg.clone());
                        let encoded =
                            on_rayon(move || encode(&kept, &user2, &schema2, &spec2, &cfg2))
                                .await?;
                        let adds = self.upload(encoded, true).await?;
                        staged.written.extend(adds.iter().map(|a| a.path.clone()));
                        staged.added.extend(adds);
                    }
                    continue;
                }
                let ctx = self.scan_context(&snap, spec.clone(), schema.clone(), None, 64 * 1024);
                let batches: Vec<RecordBatch> =
                    scan_files(ctx, vec![f.clone()], None).try_collect().await?;
                let mut kept = Vec::with_capacity(batches.len());
                let mut matched = 0u64;
                for b in &batches {
                    let (out, n) = mutate_batch(b, predicate, assignments)?;
                    matched += n;
                    if out.num_rows() > 0 {
                        kept.push(project(&out, &user)?);
                    }
                }
                if matched == 0 {
                    continue;
                }
                staged.rows_affected += matched;
                staged.removed.push(f.clone());
                if kept.is_empty() {
                    continue;
                }
                let (user2, schema2, spec2, cfg2) =
                    (user.clone(), schema.clone(), spec.clone(), cfg.clone());
                let encoded =
                    on_rayon(move || encode(&kept, &user2, &schema2, &spec2, &cfg2)).await?;
                let adds = self.upload(encoded, true).await?;
                staged.written.extend(adds.iter().map(|a| a.path.clone()));
                staged.added.extend(adds);
            }
            if !pending.is_empty() {
                let vectors: Vec<Vec<u64>> = pending.iter().map(|p| p.1.clone()).collect();
                let (descriptors, file) = crate::deletion_vector::encode_commit(&vectors)?;
                if let Some(file) = file {
                    let path = self.inner.location.child(&file.path)?;
                    self.inner
                        .location
                        .store
                        .put(&path, file.bytes.into())
                        .await
                        .map_err(|e| io(e, &path))?;
                    staged.written.push(file.path);
                }
                for ((f, _, rows), d) in pending.iter().zip(descriptors) {
                    staged
                        .added
                        .push(with_deletion_vector(&f.add, d.into_log(), *rows));
                    staged.deletion_vectors += 1;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            staged.discard().await;
            return Err(e.with_table(self.uri()));
        }
        Ok(staged)
    }

    /// Whether `predicate`, which reads partition columns only, is true for the
    /// partition values of `f`.
    fn partition_matches(
        &self,
        f: &FileEntry,
        schema: &Schema,
        spec: &crate::partition::PartitionSpec,
        predicate: &Predicate,
    ) -> Result<bool> {
        let values = f.partitions(schema, spec)?;
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for p in &spec.fields {
            let field = schema.field_with_name(&p.name).map_err(|_| {
                Error::new(
                    ErrorKind::Corrupt,
                    format!("partition column {} is not in the schema", p.name),
                )
            })?;
            let value = values
                .get(&p.name)
                .cloned()
                .unwrap_or(lakehouse_core::Scalar::Null);
            columns.push(value.to_array_of(field.data_type())?);
            fields.push(Field::new(&p.name, field.data_type().clone(), true));
        }
        // One row, also without partition columns (a predicate on none, `TRUE`).
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(1)),
        )?;
        Ok(match_mask(predicate, &batch)?.value(0))
    }

    async fn mutate_retrying(
        &self,
        predicate: &Predicate,
        assignments: Option<&[Assignment]>,
    ) -> Result<MutationOutcome> {
        let mut attempt = 1;
        loop {
            let staged = self.stage(predicate, assignments).await?;
            match staged.commit().await {
                Err(e) if e.kind() == ErrorKind::Conflict && attempt < MUTATION_ATTEMPTS => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// Refuses mutations the table's configuration forbids or that need more than this
/// crate writes: `delta.appendOnly` tables take no deletes or updates, and tables with
/// the change data feed on (`delta.enableChangeDataFeed`) would need `cdc` files.
pub(super) fn refuse_by_configuration(
    config: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let on = |key: &str| {
        config
            .get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    if on("delta.appendOnly") {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "the table is append-only (delta.appendOnly): rows cannot be deleted or updated",
        ));
    }
    if on("delta.enableChangeDataFeed") {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "the table has the change data feed on (delta.enableChangeDataFeed), whose cdc \
             files this crate does not write: rows cannot be deleted or updated here",
        ));
    }
    Ok(())
}

/// Live rows of `f` (its statistics less its deletion vector, as the snapshot keeps
/// them), when known.
fn live_rows(f: &FileEntry) -> Option<u64> {
    f.stats.num_rows
}

/// The columns of `user` from `batch` (the table's columns without derived partition
/// columns, which the writer computes again).
pub(super) fn project(batch: &RecordBatch, user: &SchemaRef) -> Result<RecordBatch> {
    let columns = user
        .fields()
        .iter()
        .map(|f| {
            batch.column_by_name(f.name()).cloned().ok_or_else(|| {
                Error::new(
                    ErrorKind::Internal,
                    format!("column {} is missing from a read batch", f.name()),
                )
                .with_column(f.name())
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(user.clone(), columns)?)
}

/// Copy-on-write or with deletion vectors (see the module docs); a conflict is retried by reading the newer
/// version, up to [`MUTATION_ATTEMPTS`] runs in all, then reported as
/// [`ErrorKind::Conflict`]. Use [`Table::stage_delete`] / [`Table::stage_update`] /
/// [`Table::stage_merge`] to handle conflicts yourself. Merges: see
/// [`StagedMerge`](super::StagedMerge).
#[lakehouse_core::async_trait]
impl TableMutator for Table {
    async fn delete_where(&self, predicate: &Predicate) -> Result<MutationOutcome> {
        self.mutate_retrying(predicate, None).await
    }

    async fn update_where(
        &self,
        predicate: &Predicate,
        assignments: &[Assignment],
    ) -> Result<MutationOutcome> {
        self.mutate_retrying(predicate, Some(assignments)).await
    }

    async fn merge(
        &self,
        request: &lakehouse_core::MergeRequest,
    ) -> Result<lakehouse_core::MergeOutcome> {
        self.merge_retrying(request).await
    }
}
