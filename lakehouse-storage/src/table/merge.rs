//! `MERGE INTO` a table ([`TableMutator::merge`](lakehouse_core::TableMutator::merge)),
//! copy-on-write.
//!
//! A merge reads one snapshot and prunes its files by the source's keys (their values,
//! or their range when there are many, against the files' partition values and
//! statistics) and by the request's target filter. It reads every remaining file,
//! matches its rows with the source ([`MergeRun`]) and writes a replacement for each
//! file with an updated or deleted row; files without one are untouched. The inserted
//! rows go to new files, partitioned as appends are. Everything is one commit of
//! `remove` (with `dataChange`) and `add` actions, operation `MERGE`.
//!
//! Conflicts, checked at commit against every version since the read: a file read was
//! removed or rewritten, the table's metadata changed, or a file was appended whose
//! partition values and statistics admit the source's keys (its rows might have
//! matched). Appends that cannot hold a matching row do not conflict.
//!
//! Refused as by deletes and updates: append-only tables and tables with the change
//! data feed on ([`ErrorKind::Unsupported`]), and assigning or inserting a derived
//! partition column ([`ErrorKind::Unsupported`]).

use arrow::array::RecordBatch;
use futures::TryStreamExt;
use lakehouse_core::{
    Error, ErrorKind, MatchedAction, MergeOutcome, MergeRequest, MergeRun, Result, on_rayon,
};

use super::mutate::{AppendGuard, StagedMutation, project, refuse_by_configuration};
use super::{MUTATION_ATTEMPTS, Table, TableOptions, live_files, user_schema_of};
use crate::read::{file_view, scan_files};
use crate::write::encode;

/// A merge whose new files are written but not committed yet; from
/// [`Table::stage_merge`].
///
/// [`commit`](Self::commit) makes it one commit on top of the latest version, or fails
/// with [`ErrorKind::Conflict`] when a commit since its read removed or rewrote a file
/// it read, changed the table's metadata, or appended a file whose partition values and
/// statistics admit the source's keys (appends that cannot hold a matching row do not
/// conflict). Dropping it without committing leaves its new files behind until [`Table::vacuum`] (call
/// [`abort`](Self::abort) to delete them at once).
#[derive(Debug)]
#[must_use = "a staged merge does nothing until it is committed"]
pub struct StagedMerge {
    staged: StagedMutation,
    outcome: MergeOutcome,
}

impl StagedMerge {
    /// Rows updated, deleted and inserted (`version` `None`: not committed).
    pub fn outcome(&self) -> MergeOutcome {
        self.outcome
    }

    /// The version the merge read.
    pub fn read_version(&self) -> lakehouse_core::Version {
        self.staged.read_version()
    }

    /// Files the commit removes (rewritten or wholly deleted).
    pub fn files_removed(&self) -> usize {
        self.staged.files_removed()
    }

    /// Files the commit adds (rewritten files and inserted rows).
    pub fn files_added(&self) -> usize {
        self.staged.files_added()
    }

    /// Deletes the files written for this merge; nothing is committed.
    pub async fn abort(self) {
        self.staged.abort().await;
    }

    /// Commits the merge. A merge that changed nothing commits nothing and returns a
    /// `None` version.
    pub async fn commit(self) -> Result<MergeOutcome> {
        let mut outcome = self.outcome;
        outcome.version = self.staged.commit_version().await?;
        Ok(outcome)
    }
}

impl Table {
    /// Reads the latest version and writes the files of `MERGE INTO` this table,
    /// without committing; see [`StagedMerge`] and [`MergeRequest`].
    pub async fn stage_merge(&self, request: &MergeRequest) -> Result<StagedMerge> {
        let snap = self.refreshed().await?;
        let named = |e: Error| e.with_table(self.uri());
        refuse_by_configuration(&snap.metadata.configuration).map_err(named)?;
        let schema = snap.schema.clone();
        let spec = Self::spec_of(&snap)?;
        let assigned = request
            .matched
            .iter()
            .filter_map(|c| match &c.action {
                MatchedAction::Update(a) => Some(a),
                MatchedAction::Delete => None,
            })
            .chain(request.not_matched.iter().map(|c| &c.values))
            .flatten();
        for a in assigned {
            if spec.is_derived(&a.column) {
                return Err(named(
                    Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "column {:?} is derived from another column for partitioning \
                             and cannot be assigned",
                            a.column
                        ),
                    )
                    .with_column(&a.column),
                ));
            }
        }
        if let Some(p) = &request.target_filter {
            crate::nested::check_predicate(p, &schema).map_err(named)?;
        }
        let user = user_schema_of(&snap);
        let mut run = MergeRun::new(request, &schema, &user).map_err(named)?;
        let predicate = run.target_predicate().map_err(named)?;
        let prune = match spec.implied(&predicate) {
            Some(extra) => predicate.clone().and(extra),
            None => predicate.clone(),
        };
        let mut staged = StagedMutation::empty(self, &snap, "MERGE", predicate.to_string());
        staged.guard_appends(AppendGuard {
            known: snap.files.iter().map(|f| f.add.path.clone()).collect(),
            predicate: prune.clone(),
            spec: spec.clone(),
        });
        let cfg = TableOptions::from_config(&snap.metadata.configuration).write_config();
        let write = |batches: Vec<RecordBatch>| {
            let (user, schema, spec, cfg) =
                (user.clone(), schema.clone(), spec.clone(), cfg.clone());
            async move {
                let encoded =
                    on_rayon(move || encode(&batches, &user, &schema, &spec, &cfg)).await?;
                self.upload(encoded, true).await
            }
        };
        let result: Result<MergeOutcome> = async {
            for f in live_files(&snap) {
                if !prune.can_match(&file_view(f, &schema, &spec)?) {
                    continue;
                }
                staged.push_read(f);
                let ctx = self.scan_context(&snap, spec.clone(), schema.clone(), None, 64 * 1024);
                let batches: Vec<RecordBatch> =
                    scan_files(ctx, vec![f.clone()], None).try_collect().await?;
                let mut kept = Vec::with_capacity(batches.len());
                let mut changed = false;
                for b in &batches {
                    let out = match run.merge_batch(b)? {
                        Some(out) => {
                            changed = true;
                            out
                        }
                        None => b.clone(),
                    };
                    if out.num_rows() > 0 {
                        kept.push(project(&out, &user)?);
                    }
                }
                if !changed {
                    continue;
                }
                staged.push_removed(f);
                if !kept.is_empty() {
                    staged.push_added(write(kept).await?);
                }
            }
            let (inserted, outcome) = run.finish()?;
            if let Some(rows) = inserted {
                staged.push_added(write(vec![rows]).await?);
            }
            Ok(outcome)
        }
        .await;
        match result {
            Ok(outcome) => Ok(StagedMerge { staged, outcome }),
            Err(e) => {
                staged.discard().await;
                Err(named(e))
            }
        }
    }

    pub(super) async fn merge_retrying(&self, request: &MergeRequest) -> Result<MergeOutcome> {
        let mut attempt = 1;
        loop {
            let staged = self.stage_merge(request).await?;
            match staged.commit().await {
                Err(e) if e.kind() == ErrorKind::Conflict && attempt < MUTATION_ATTEMPTS => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}
