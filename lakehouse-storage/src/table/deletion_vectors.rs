//! Deletes and updates that write deletion vectors, for tables that enable them
//! ([`TableOptions::deletion_vectors`](super::TableOptions::deletion_vectors)).
//!
//! A file with matching rows is read whole, its existing vector not applied, so that
//! each row has its position in the file. The positions of the matched live rows are
//! merged with the existing vector; the file is removed (its `remove` carries the old
//! vector) and added again with the merged one, or only removed when no row is left.
//! An update also writes the matched rows, updated, to a new file. The statistics of a
//! re-added file stay those of all its rows (`numRecords` is the physical count, as
//! Delta asks) and say `tightBounds: false`.

use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use futures::TryStreamExt;
use lakehouse_core::{Assignment, Predicate, Result, apply_assignments, match_mask};
use serde_json::Value;

use super::Table;
use super::mutate::project;
use super::options::DELETION_VECTORS_KEY;
use crate::log::{Add, DeletionVector, FileEntry, Snapshot};
use crate::partition::PartitionSpec;
use crate::read::scan_files;

/// What a deletion-vector delete or update does to one file.
#[derive(Debug)]
pub(super) struct DvEdit {
    /// Live rows the predicate matched.
    pub(super) matched: u64,
    /// The file's deleted rows after the mutation (the old vector and the matched rows),
    /// ascending.
    pub(super) deleted: Vec<u64>,
    /// Rows in the file, deleted or not.
    pub(super) physical_rows: u64,
    /// The matched rows with the update applied, in the table's user columns (empty for
    /// a delete).
    pub(super) updated: Vec<RecordBatch>,
}

/// Whether deletes and updates of the table at `snap` write deletion vectors: the
/// protocol declares the `deletionVectors` feature and `delta.enableDeletionVectors`
/// is true.
pub(super) fn writes_deletion_vectors(snap: &Snapshot) -> bool {
    snap.protocol.has_feature("deletionVectors")
        && snap
            .metadata
            .configuration
            .get(DELETION_VECTORS_KEY)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

impl Table {
    /// Every row of `f` in file order, its deletion vector not applied, with the
    /// columns of `schema` (partition columns as constants).
    pub(super) async fn read_physical(
        &self,
        snap: &Snapshot,
        spec: &PartitionSpec,
        schema: &SchemaRef,
        f: &FileEntry,
    ) -> Result<Vec<RecordBatch>> {
        let mut whole = f.clone();
        whole.add.deletion_vector = None;
        let ctx = self.scan_context(snap, spec.clone(), schema.clone(), None, 64 * 1024);
        scan_files(ctx, vec![Arc::new(whole)], None)
            .try_collect()
            .await
    }
}

/// The edit of a file whose rows (every row, in file order) are `batches` and whose
/// existing vector deletes `old` (ascending): `None` when no live row matches.
pub(super) fn dv_edit(
    batches: &[RecordBatch],
    old: &[u64],
    predicate: &Predicate,
    assignments: Option<&[Assignment]>,
    user: &SchemaRef,
) -> Result<Option<DvEdit>> {
    let mut offset = 0u64;
    let mut next_old = 0usize;
    let mut matched_rows = Vec::new();
    let mut updated = Vec::new();
    for b in batches {
        let mask = match_mask(predicate, b)?;
        let mut hit = Vec::with_capacity(b.num_rows());
        for i in 0..b.num_rows() {
            let pos = offset + i as u64;
            while old.get(next_old).is_some_and(|d| *d < pos) {
                next_old += 1;
            }
            let live = old.get(next_old) != Some(&pos);
            let m = live && mask.value(i);
            if m {
                matched_rows.push(pos);
            }
            hit.push(m);
        }
        if let Some(assignments) = assignments {
            let hit = BooleanArray::from(hit);
            if hit.true_count() > 0 {
                let rows = arrow::compute::filter_record_batch(b, &hit)?;
                updated.push(project(&apply_assignments(&rows, assignments)?, user)?);
            }
        }
        offset += b.num_rows() as u64;
    }
    if matched_rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(DvEdit {
        matched: matched_rows.len() as u64,
        deleted: crate::deletion_vector::union(old, &matched_rows),
        physical_rows: offset,
        updated,
    }))
}

/// `add` again with deletion vector `dv`: the same file and statistics, which count
/// all `physical_rows` and are marked as not tight.
pub(super) fn with_deletion_vector(add: &Add, dv: DeletionVector, physical_rows: u64) -> Add {
    let mut stats: Value = add
        .stats
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .filter(Value::is_object)
        .unwrap_or_else(|| serde_json::json!({}));
    if stats.get("numRecords").and_then(Value::as_u64).is_none() {
        stats["numRecords"] = Value::from(physical_rows);
    }
    stats["tightBounds"] = Value::from(false);
    Add {
        data_change: true,
        stats: Some(stats.to_string()),
        deletion_vector: Some(dv),
        ..add.clone()
    }
}
