//! [`MergeRun`]: matching a merge's source rows to a table's rows, batch by batch.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array, new_null_array};
use arrow::compute::{concat_batches, interleave, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};

use super::{
    MatchedAction, MergeAssignment, MergeFn, MergeOutcome, MergeRequest, MergeRows, MergeValue,
};
use crate::error::{Error, ErrorKind, Result};
use crate::mutate::match_mask;
use crate::predicate::{ColumnStats, Predicate, col};
use crate::scalar::Scalar;

fn missing(side: &str, name: &str) -> Error {
    Error::new(
        ErrorKind::ColumnNotFound,
        format!("{side} column {name:?} of the merge does not exist"),
    )
    .with_column(name)
}

/// A [`MergeRequest`] being run over a table's rows, for implementers of
/// [`TableMutator::merge`](crate::TableMutator::merge): build it (which checks the
/// request against the table), prune the table's files with
/// [`target_predicate`](Self::target_predicate), pass every remaining batch of
/// target rows to [`merge_batch`](Self::merge_batch), then take the inserted rows
/// from [`finish`](Self::finish). Nothing here writes; errors leave the table as it is.
pub struct MergeRun<'a> {
    request: &'a MergeRequest,
    target: SchemaRef,
    insert: SchemaRef,
    source: RecordBatch,
    target_keys: Vec<usize>,
    converter: RowConverter,
    index: HashMap<Vec<u8>, Vec<u32>>,
    source_matched: Vec<bool>,
    updated: u64,
    deleted: u64,
}

impl fmt::Debug for MergeRun<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MergeRun")
            .field("source_rows", &self.source.num_rows())
            .field("updated", &self.updated)
            .field("deleted", &self.deleted)
            .finish_non_exhaustive()
    }
}

impl<'a> MergeRun<'a> {
    /// Checks `request` against a table whose rows have `target` columns and whose
    /// inserted rows have `insert` columns (the same, or those the table stores
    /// without derived ones), and indexes the source by its keys.
    ///
    /// Refused: no key, a column that does not exist ([`ErrorKind::ColumnNotFound`]),
    /// key columns or source values of another type than their target column, or a
    /// scalar that does not convert exactly ([`ErrorKind::TypeMismatch`]), a column
    /// assigned twice in a clause ([`ErrorKind::InvalidInput`]), a null scalar for a
    /// non-nullable column or an insert that leaves one out, and source batches of
    /// another schema ([`ErrorKind::SchemaMismatch`]).
    pub fn new(request: &'a MergeRequest, target: &SchemaRef, insert: &SchemaRef) -> Result<Self> {
        let src_schema = &request.source_schema;
        for b in &request.source {
            if b.schema().fields() != src_schema.fields() {
                return Err(Error::new(
                    ErrorKind::SchemaMismatch,
                    "a source batch of the merge does not have the source's schema",
                ));
            }
        }
        if request.keys.is_empty() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "a merge needs at least one equality of a target and a source column in ON",
            ));
        }
        let mut target_keys = Vec::new();
        let mut fields = Vec::new();
        let mut source_keys = Vec::new();
        for k in &request.keys {
            let t = target
                .index_of(&k.target)
                .map_err(|_| missing("target", &k.target))?;
            let s = src_schema
                .index_of(&k.source)
                .map_err(|_| missing("source", &k.source))?;
            let (tt, st) = (target.field(t).data_type(), src_schema.field(s).data_type());
            if tt != st {
                return Err(Error::new(
                    ErrorKind::TypeMismatch,
                    format!(
                        "merge key {} ({tt}) and source column {} ({st}) differ in type",
                        k.target, k.source
                    ),
                )
                .with_column(&k.target));
            }
            target_keys.push(t);
            source_keys.push(s);
            fields.push(SortField::new(tt.clone()));
        }
        if let Some(p) = &request.target_filter {
            p.validate(target)?;
        }
        for clause in &request.matched {
            if let MatchedAction::Update(a) = &clause.action {
                check_values(a, target, src_schema, false)?;
            }
        }
        for clause in &request.not_matched {
            check_values(&clause.values, insert, src_schema, true)?;
        }
        let source = concat_batches(src_schema, &request.source)?;
        let converter = RowConverter::new(fields)?;
        let keys: Vec<ArrayRef> = source_keys
            .iter()
            .map(|&i| source.column(i).clone())
            .collect();
        let rows = converter.convert_columns(&keys)?;
        let mut index: HashMap<Vec<u8>, Vec<u32>> = HashMap::new();
        for i in 0..source.num_rows() {
            if keys.iter().any(|k| k.is_null(i)) {
                continue;
            }
            index
                .entry(rows.row(i).as_ref().to_vec())
                .or_default()
                .push(i as u32);
        }
        Ok(MergeRun {
            request,
            target: target.clone(),
            insert: insert.clone(),
            source_matched: vec![false; source.num_rows()],
            source,
            target_keys,
            converter,
            index,
            updated: 0,
            deleted: 0,
        })
    }

    /// A predicate that every target row matching a source row satisfies: each key
    /// within the source's values (their list when there are few, their range
    /// otherwise) and the [`target_filter`](MergeRequest::target_filter). False when
    /// no source row has all its keys. Files it rules out need not be read.
    pub fn target_predicate(&self) -> Result<Predicate> {
        if self.index.is_empty() {
            return Ok(Predicate::Literal(false));
        }
        let mut parts = Vec::new();
        for k in &self.request.keys {
            let array = self
                .source
                .column_by_name(&k.source)
                .ok_or_else(|| missing("source", &k.source))?;
            if let Some(p) = values_predicate(&k.target, array)? {
                parts.push(p);
            }
        }
        parts.extend(self.request.target_filter.clone());
        Ok(Predicate::all(parts).unwrap_or(Predicate::Literal(true)))
    }

    /// Merges one batch of target rows (with the `target` columns): `None` when no
    /// row of it is updated or deleted, else its rows after the merge (updated rows
    /// in place, deleted ones gone; maybe none). Source rows it matches are not
    /// inserted by [`finish`](Self::finish).
    pub fn merge_batch(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        if batch.num_rows() == 0 || self.index.is_empty() {
            return Ok(None);
        }
        let keys: Vec<ArrayRef> = self
            .target_keys
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let rows = self.converter.convert_columns(&keys)?;
        let (mut t_idx, mut s_idx) = (Vec::new(), Vec::new());
        for i in 0..batch.num_rows() {
            if keys.iter().any(|k| k.is_null(i)) {
                continue;
            }
            if let Some(hits) = self.index.get(rows.row(i).as_ref()) {
                for &j in hits {
                    t_idx.push(i as u32);
                    s_idx.push(j);
                }
            }
        }
        if t_idx.is_empty() {
            return Ok(None);
        }
        let mut pairs = self.pairs(batch, &t_idx, &s_idx)?;
        let mut keep: Option<BooleanArray> = None;
        if let Some(p) = &self.request.target_filter {
            keep = Some(match_mask(p, &pairs.target)?);
        }
        if let Some(on) = &self.request.on {
            let m = condition(on, &pairs)?;
            keep = Some(match keep {
                Some(k) => arrow::compute::and(&k, &m)?,
                None => m,
            });
        }
        if let Some(keep) = keep {
            let chosen = positions(&keep);
            t_idx = chosen.iter().map(|&k| t_idx[k as usize]).collect();
            s_idx = chosen.iter().map(|&k| s_idx[k as usize]).collect();
            if t_idx.is_empty() {
                return Ok(None);
            }
            pairs = take_pairs(&pairs, &chosen)?;
        }
        for &j in &s_idx {
            self.source_matched[j as usize] = true;
        }
        if self.request.matched.is_empty() {
            return Ok(None);
        }
        // Pairs come in target row order: a repeat is a row matched twice.
        if let Some(w) = t_idx.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "a target row (row {} of a batch) is matched by more than one source \
                     row: the merge is ambiguous and nothing was changed",
                    w[0]
                ),
            ));
        }
        // Each pair's clause: the first whose condition holds.
        let mut taken: Vec<Option<usize>> = vec![None; t_idx.len()];
        let mut open: Vec<u32> = (0..t_idx.len() as u32).collect();
        for (c, clause) in self.request.matched.iter().enumerate() {
            if open.is_empty() {
                break;
            }
            let hit = match &clause.condition {
                None => std::mem::take(&mut open),
                Some(f) => {
                    let mask = condition(f, &take_pairs(&pairs, &open)?)?;
                    let (hit, rest): (Vec<u32>, Vec<u32>) = open
                        .iter()
                        .enumerate()
                        .map(|(p, &k)| (mask.value(p), k))
                        .partition_map_bool();
                    open = rest;
                    hit
                }
            };
            for k in hit {
                taken[k as usize] = Some(c);
            }
        }
        // Per target row: deleted, or replaced by row `pos` of updated batch `src`.
        let n = batch.num_rows();
        let mut fate: Vec<Option<(usize, usize)>> = (0..n).map(|i| Some((0, i))).collect();
        let mut updated_batches: Vec<RecordBatch> = Vec::new();
        let mut changed = false;
        for (c, clause) in self.request.matched.iter().enumerate() {
            let mine: Vec<u32> = (0..t_idx.len() as u32)
                .filter(|&k| taken[k as usize] == Some(c))
                .collect();
            if mine.is_empty() {
                continue;
            }
            changed = true;
            match &clause.action {
                MatchedAction::Delete => {
                    self.deleted += mine.len() as u64;
                    for &k in &mine {
                        fate[t_idx[k as usize] as usize] = None;
                    }
                }
                MatchedAction::Update(assignments) => {
                    self.updated += mine.len() as u64;
                    let sub = take_pairs(&pairs, &mine)?;
                    let new = assign(
                        &sub,
                        assignments,
                        &batch.schema(),
                        sub.target.columns().to_vec(),
                    )?;
                    updated_batches.push(new);
                    let src = updated_batches.len();
                    for (pos, &k) in mine.iter().enumerate() {
                        fate[t_idx[k as usize] as usize] = Some((src, pos));
                    }
                }
            }
        }
        if !changed {
            return Ok(None);
        }
        let indices: Vec<(usize, usize)> = fate.into_iter().flatten().collect();
        let columns = (0..batch.num_columns())
            .map(|i| {
                let mut arrays: Vec<&dyn Array> = vec![batch.column(i).as_ref()];
                arrays.extend(updated_batches.iter().map(|b| b.column(i).as_ref()));
                Ok(interleave(&arrays, &indices)?)
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(indices.len()));
        Ok(Some(RecordBatch::try_new_with_options(
            batch.schema(),
            columns,
            &opts,
        )?))
    }

    /// The rows the `WHEN NOT MATCHED` clauses insert (with the `insert` columns;
    /// `None` when none) and the counts so far (`version` `None`).
    pub fn finish(self) -> Result<(Option<RecordBatch>, MergeOutcome)> {
        let mut outcome = MergeOutcome {
            rows_updated: self.updated,
            rows_deleted: self.deleted,
            ..MergeOutcome::default()
        };
        let mut open: Vec<u32> = (0..self.source.num_rows() as u32)
            .filter(|&j| !self.source_matched[j as usize])
            .collect();
        let nullable = Arc::new(Schema::new(
            self.target
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let mut inserted = Vec::new();
        for clause in &self.request.not_matched {
            if open.is_empty() {
                break;
            }
            let rows = self.unmatched_pairs(&nullable, &open)?;
            let hit = match &clause.condition {
                None => std::mem::take(&mut open),
                Some(f) => {
                    let mask = condition(f, &rows)?;
                    let (hit, rest): (Vec<u32>, Vec<u32>) = open
                        .iter()
                        .enumerate()
                        .map(|(p, &k)| (mask.value(p), k))
                        .partition_map_bool();
                    open = rest;
                    hit
                }
            };
            if hit.is_empty() {
                continue;
            }
            let rows = self.unmatched_pairs(&nullable, &hit)?;
            let base = null_template(&self.insert, hit.len());
            inserted.push(assign(&rows, &clause.values, &self.insert, base)?);
        }
        if inserted.is_empty() {
            return Ok((None, outcome));
        }
        let all = concat_batches(&self.insert, &inserted)?;
        outcome.rows_inserted = all.num_rows() as u64;
        Ok((Some(all), outcome))
    }

    fn pairs(&self, batch: &RecordBatch, t_idx: &[u32], s_idx: &[u32]) -> Result<MergeRows> {
        Ok(MergeRows {
            target: take_batch(batch, t_idx)?,
            source: take_batch(&self.source, s_idx)?,
        })
    }

    fn unmatched_pairs(&self, nullable: &SchemaRef, rows: &[u32]) -> Result<MergeRows> {
        let target = RecordBatch::try_new_with_options(
            nullable.clone(),
            nullable
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), rows.len()))
                .collect(),
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len())),
        )?;
        Ok(MergeRows {
            target,
            source: take_batch(&self.source, rows)?,
        })
    }
}

/// Splits `(flag, value)` pairs into the values whose flag is set and the others.
trait PartitionBool: Iterator<Item = (bool, u32)> + Sized {
    fn partition_map_bool(self) -> (Vec<u32>, Vec<u32>) {
        let (mut yes, mut no) = (Vec::new(), Vec::new());
        for (b, v) in self {
            if b { yes.push(v) } else { no.push(v) }
        }
        (yes, no)
    }
}

impl<I: Iterator<Item = (bool, u32)>> PartitionBool for I {}

/// Columns of `schema`, nullable or not, as null arrays of `n` rows (only the columns
/// an insert does not assign stay so, and those are nullable).
fn null_template(schema: &SchemaRef, n: usize) -> Vec<ArrayRef> {
    schema
        .fields()
        .iter()
        .map(|f| new_null_array(f.data_type(), n))
        .collect()
}

fn positions(mask: &BooleanArray) -> Vec<u32> {
    (0..mask.len() as u32)
        .filter(|&i| mask.value(i as usize))
        .collect()
}

fn take_batch(batch: &RecordBatch, rows: &[u32]) -> Result<RecordBatch> {
    let indices = UInt32Array::from(rows.to_vec());
    let columns = batch
        .columns()
        .iter()
        .map(|c| Ok(take(c.as_ref(), &indices, None)?))
        .collect::<Result<Vec<ArrayRef>>>()?;
    let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len()));
    Ok(RecordBatch::try_new_with_options(
        batch.schema(),
        columns,
        &opts,
    )?)
}

fn take_pairs(pairs: &MergeRows, rows: &[u32]) -> Result<MergeRows> {
    Ok(MergeRows {
        target: take_batch(&pairs.target, rows)?,
        source: take_batch(&pairs.source, rows)?,
    })
}

/// A condition's result as a mask without nulls (null is false).
fn condition(f: &MergeFn, rows: &MergeRows) -> Result<BooleanArray> {
    let out = f(rows)?;
    let Some(mask) = out.as_any().downcast_ref::<BooleanArray>() else {
        return Err(Error::new(
            ErrorKind::TypeMismatch,
            format!(
                "a merge condition returned {} instead of Boolean",
                out.data_type()
            ),
        ));
    };
    if mask.len() != rows.num_rows() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "a merge condition returned {} values for {} rows",
                mask.len(),
                rows.num_rows()
            ),
        ));
    }
    Ok(mask.iter().map(|v| Some(v == Some(true))).collect())
}

/// Checks the columns and constant values of a clause against `schema`; an insert
/// (`insert`) must also give every non-nullable column.
fn check_values(
    values: &[MergeAssignment],
    schema: &SchemaRef,
    source: &SchemaRef,
    insert: bool,
) -> Result<()> {
    let mut seen = HashSet::new();
    for a in values {
        let field = schema
            .field_with_name(&a.column)
            .map_err(|_| missing("target", &a.column))?;
        if !seen.insert(a.column.as_str()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "column {:?} is assigned more than once in a clause",
                    a.column
                ),
            )
            .with_column(&a.column));
        }
        match &a.value {
            MergeValue::Scalar(s) => {
                if s.is_null() && !field.is_nullable() {
                    return Err(null_into(&a.column));
                }
                s.to_array_of(field.data_type())
                    .map_err(|e| e.with_column(&a.column))?;
            }
            MergeValue::Source(name) => {
                let sf = source
                    .field_with_name(name)
                    .map_err(|_| missing("source", name))?;
                if sf.data_type() != field.data_type() {
                    return Err(wrong_type(&a.column, sf.data_type(), field.data_type()));
                }
            }
            MergeValue::Computed(_) => {}
        }
    }
    if insert
        && let Some(f) = schema
            .fields()
            .iter()
            .find(|f| !f.is_nullable() && !seen.contains(f.name().as_str()))
    {
        return Err(Error::new(
            ErrorKind::SchemaMismatch,
            format!(
                "the merge inserts rows without a value for non-nullable column {:?}",
                f.name()
            ),
        )
        .with_column(f.name()));
    }
    Ok(())
}

fn null_into(column: &str) -> Error {
    Error::new(
        ErrorKind::SchemaMismatch,
        format!("null assigned to non-nullable column {column:?}"),
    )
    .with_column(column)
}

fn wrong_type(column: &str, got: &DataType, want: &DataType) -> Error {
    Error::new(
        ErrorKind::TypeMismatch,
        format!("the value of column {column:?} is {got} where the column is {want}"),
    )
    .with_column(column)
}

/// `columns` (of `schema`, one row per pair) with `values` computed over `rows`.
fn assign(
    rows: &MergeRows,
    values: &[MergeAssignment],
    schema: &SchemaRef,
    mut columns: Vec<ArrayRef>,
) -> Result<RecordBatch> {
    let n = rows.num_rows();
    for a in values {
        let idx = schema
            .index_of(&a.column)
            .map_err(|_| missing("target", &a.column))?;
        let field = schema.field(idx);
        let array = match &a.value {
            MergeValue::Scalar(s) => {
                let one = s
                    .to_array_of(field.data_type())
                    .map_err(|e| e.with_column(&a.column))?;
                take(one.as_ref(), &UInt32Array::from(vec![0u32; n]), None)?
            }
            MergeValue::Source(name) => rows
                .source
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| missing("source", name))?,
            MergeValue::Computed(f) => f(rows).map_err(|e| e.with_column(&a.column))?,
        };
        if array.len() != n {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "the value of column {:?} has {} rows for {n} rows",
                    a.column,
                    array.len()
                ),
            )
            .with_column(&a.column));
        }
        if array.data_type() != field.data_type() {
            return Err(wrong_type(&a.column, array.data_type(), field.data_type()));
        }
        if !field.is_nullable() && array.null_count() > 0 {
            return Err(null_into(&a.column));
        }
        columns[idx] = array;
    }
    let opts = arrow::array::RecordBatchOptions::new().with_row_count(Some(n));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &opts,
    )?)
}

/// How many distinct source keys are listed (`IN`) rather than bounded.
const MAX_LISTED_KEYS: usize = 64;

/// `target IN (distinct values)` when `array` has few distinct non-null values,
/// else `target BETWEEN min AND max`; `None` when its values do not convert.
fn values_predicate(target: &str, array: &ArrayRef) -> Result<Option<Predicate>> {
    let converter = RowConverter::new(vec![SortField::new(array.data_type().clone())])?;
    let rows = converter.convert_columns(std::slice::from_ref(array))?;
    let mut seen = HashSet::new();
    let mut firsts = Vec::new();
    for i in 0..array.len() {
        if array.is_null(i) {
            continue;
        }
        if seen.insert(rows.row(i).as_ref().to_vec()) {
            firsts.push(i);
            if firsts.len() > MAX_LISTED_KEYS {
                break;
            }
        }
    }
    if firsts.len() <= MAX_LISTED_KEYS {
        let values: Option<Vec<Scalar>> = firsts
            .iter()
            .map(|&i| Scalar::try_from_array(array.as_ref(), i).ok())
            .collect();
        return Ok(values.map(|v| col(target).in_list(v)));
    }
    let Ok(stats) = ColumnStats::from_array(array.as_ref()) else {
        return Ok(None);
    };
    Ok(match (stats.min, stats.max) {
        (Some(lo), Some(hi)) => Some(col(target).between(lo, hi)),
        _ => None,
    })
}
