//! [`TableMutator`]: deletes and row-level rewrites of a table, as atomic commits.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;

use crate::error::{Error, ErrorKind, Result};
use crate::merge::{MergeOutcome, MergeRequest};
use crate::predicate::Predicate;
use crate::scalar::Scalar;
use crate::table::Version;

/// A function computing the new values of one column for the matched rows.
///
/// It gets the matched rows with every column of the table, as they were before the
/// update (so that `SET a = b, b = a` swaps), and returns one value per row, of the
/// column's type.
pub type ColumnFn = Arc<dyn Fn(&RecordBatch) -> Result<ArrayRef> + Send + Sync>;

/// The new value of a column in [`TableMutator::update_where`].
#[derive(Clone)]
pub enum AssignmentValue {
    /// Every matched row gets this value (converted exactly to the column's type).
    Scalar(Scalar),
    /// Computed from the matched rows (see [`ColumnFn`]).
    Computed(ColumnFn),
}

impl fmt::Debug for AssignmentValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssignmentValue::Scalar(s) => f.debug_tuple("Scalar").field(s).finish(),
            AssignmentValue::Computed(_) => f.write_str("Computed(..)"),
        }
    }
}

/// `column = value` of an update.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Array, AsArray, Int64Array};
/// use arrow::datatypes::Int64Type;
/// use lakehouse_core::Assignment;
///
/// let reset = Assignment::scalar("qty", 0i64);
/// let double = Assignment::computed("qty", Arc::new(|rows| {
///     let qty = rows.column_by_name("qty").unwrap().as_primitive::<Int64Type>();
///     Ok(Arc::new(qty.unary::<_, Int64Type>(|v| v * 2)) as _)
/// }));
/// assert_eq!(reset.column, "qty");
/// assert_eq!(double.column, "qty");
/// ```
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The column assigned.
    pub column: String,
    /// Its new value.
    pub value: AssignmentValue,
}

impl Assignment {
    /// `column = value` for every matched row.
    pub fn scalar(column: impl Into<String>, value: impl Into<Scalar>) -> Self {
        Assignment {
            column: column.into(),
            value: AssignmentValue::Scalar(value.into()),
        }
    }

    /// `column = f(matched rows)`.
    pub fn computed(column: impl Into<String>, f: ColumnFn) -> Self {
        Assignment {
            column: column.into(),
            value: AssignmentValue::Computed(f),
        }
    }
}

/// What a [`TableMutator`] operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MutationOutcome {
    /// Rows deleted or updated.
    pub rows_affected: u64,
    /// The version committed; `None` when no row matched and nothing was committed.
    pub version: Option<Version>,
}

impl MutationOutcome {
    /// No row matched: no commit.
    pub fn unchanged() -> Self {
        MutationOutcome {
            rows_affected: 0,
            version: None,
        }
    }
}

/// A table whose rows can be deleted and rewritten by predicate.
///
/// The predicate is the one of [`ScanRequest`](crate::ScanRequest) filters, with SQL
/// semantics: a row matches when it evaluates to `true` (a null, unknown, result does
/// not match).
///
/// # For implementers
///
/// * **Atomic**: an operation is one commit (readers see all of its changes at the
///   new version or none), and time travel to the previous version still shows the
///   rows as they were. When no row matches, nothing is committed and the outcome's
///   `version` is `None`.
/// * **Conflicts**: the operation reads one version and commits on top of the latest.
///   A concurrent commit that only added rows (an append) does not conflict: the
///   appended rows are kept and not touched by this operation (as Delta's
///   *WriteSerializable* isolation). A concurrent commit that removed or rewrote data
///   this operation read, or changed the schema, is a conflict:
///   [`ErrorKind::Conflict`], nothing of this operation is committed, and the caller
///   may run it again (it then reads the newer version). Implementations may re-run
///   it themselves a bounded number of times before reporting the conflict; they say
///   so in their docs.
/// * **Refused** before anything is written: a predicate or an assignment naming an
///   unknown column ([`ErrorKind::ColumnNotFound`]), a column assigned twice
///   ([`ErrorKind::InvalidInput`]), a value that does not convert exactly to the
///   column's type or a computed column of another type ([`ErrorKind::TypeMismatch`]),
///   a computed column with another number of rows ([`ErrorKind::InvalidInput`]),
///   a null assigned to a non-nullable column ([`ErrorKind::SchemaMismatch`]). An
///   implementation may also refuse assignments it cannot store (for example to a
///   partition column derived from another column): [`ErrorKind::Unsupported`].
#[async_trait]
pub trait TableMutator: Send + Sync + fmt::Debug {
    /// Deletes every row matching `predicate`, as one commit.
    async fn delete_where(&self, predicate: &Predicate) -> Result<MutationOutcome>;

    /// Sets `assignments` on every row matching `predicate`, as one commit; the other
    /// rows and columns keep their values and the number of rows is unchanged.
    async fn update_where(
        &self,
        predicate: &Predicate,
        assignments: &[Assignment],
    ) -> Result<MutationOutcome>;

    /// `MERGE INTO` this table `USING` the request's source, as one commit: the
    /// matched rows updated or deleted and the unmatched source rows inserted, by the
    /// rules of [`MergeRequest`]. When nothing changes, nothing is committed and the
    /// outcome's `version` is `None`.
    ///
    /// Conflicts are those above, with one more: a concurrent append of rows that the
    /// merge could have matched (a file whose statistics or partition values admit
    /// the source's keys) is a conflict too, since the merge would have updated them
    /// or not inserted their duplicates. [`MergeRun`](crate::MergeRun) does the row
    /// matching for implementations; the request is refused, before anything is
    /// written, for the reasons [`MergeRun::new`](crate::MergeRun::new) lists and
    /// those above.
    ///
    /// The default refuses with [`ErrorKind::Unsupported`].
    async fn merge(&self, request: &MergeRequest) -> Result<MergeOutcome> {
        let _ = request;
        Err(Error::new(
            ErrorKind::Unsupported,
            format!("{self:?} does not support MERGE"),
        ))
    }
}

#[async_trait]
impl<T: TableMutator + ?Sized> TableMutator for Arc<T> {
    async fn delete_where(&self, predicate: &Predicate) -> Result<MutationOutcome> {
        (**self).delete_where(predicate).await
    }

    async fn update_where(
        &self,
        predicate: &Predicate,
        assignments: &[Assignment],
    ) -> Result<MutationOutcome> {
        (**self).update_where(predicate, assignments).await
    }

    async fn merge(&self, request: &MergeRequest) -> Result<MergeOutcome> {
        (**self).merge(request).await
    }
}

/// The rows of `batch` that `predicate` matches (`true`; null does not match), as a
/// mask without nulls.
pub fn match_mask(predicate: &Predicate, batch: &RecordBatch) -> Result<BooleanArray> {
    let mask = predicate.evaluate(batch)?;
    if mask.null_count() == 0 {
        return Ok(mask);
    }
    Ok(mask.iter().map(|v| Some(v == Some(true))).collect())
}

/// Checks `assignments` against `schema` (see [`TableMutator`] for what is refused),
/// without data.
pub fn check_assignments(schema: &SchemaRef, assignments: &[Assignment]) -> Result<()> {
    let mut seen = HashSet::new();
    for a in assignments {
        let field = schema.field_with_name(&a.column).map_err(|_| {
            Error::new(
                ErrorKind::ColumnNotFound,
                format!("assigned column {:?} is not in the table", a.column),
            )
            .with_column(&a.column)
        })?;
        if !seen.insert(a.column.as_str()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("column {:?} is assigned more than once", a.column),
            )
            .with_column(&a.column));
        }
        if let AssignmentValue::Scalar(s) = &a.value {
            if s.is_null() && !field.is_nullable() {
                return Err(Error::new(
                    ErrorKind::SchemaMismatch,
                    format!("null assigned to non-nullable column {:?}", a.column),
                )
                .with_column(&a.column));
            }
            s.to_array_of(field.data_type())
                .map_err(|e| e.with_column(&a.column))?;
        }
    }
    Ok(())
}

/// `rows` with `assignments` applied: the columns of `rows` in their order, assigned
/// ones replaced. Every assignment sees `rows` as given.
pub fn apply_assignments(rows: &RecordBatch, assignments: &[Assignment]) -> Result<RecordBatch> {
    let schema = rows.schema();
    check_assignments(&schema, assignments)?;
    let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
    for a in assignments {
        let idx = schema.index_of(&a.column).map_err(|_| {
            Error::new(
                ErrorKind::ColumnNotFound,
                format!("assigned column {:?} is not in the table", a.column),
            )
            .with_column(&a.column)
        })?;
        let field = schema.field(idx);
        let array = match &a.value {
            AssignmentValue::Scalar(s) => {
                let one = s
                    .to_array_of(field.data_type())
                    .map_err(|e| e.with_column(&a.column))?;
                let indices = arrow::array::UInt32Array::from(vec![0u32; rows.num_rows()]);
                arrow::compute::take(one.as_ref(), &indices, None)?
            }
            AssignmentValue::Computed(f) => {
                let array = f(rows).map_err(|e| e.with_column(&a.column))?;
                if array.len() != rows.num_rows() {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!(
                            "the value of column {:?} has {} rows for {} matched rows",
                            a.column,
                            array.len(),
                            rows.num_rows()
                        ),
                    )
                    .with_column(&a.column));
                }
                if array.data_type() != field.data_type() {
                    return Err(Error::new(
                        ErrorKind::TypeMismatch,
                        format!(
                            "the value of column {:?} is {} where the column is {}",
                            a.column,
                            array.data_type(),
                            field.data_type()
                        ),
                    )
                    .with_column(&a.column));
                }
                array
            }
        };
        if !field.is_nullable() && array.null_count() > 0 {
            return Err(Error::new(
                ErrorKind::SchemaMismatch,
                format!("null assigned to non-nullable column {:?}", a.column),
            )
            .with_column(&a.column));
        }
        columns[idx] = array;
    }
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The rows of `batch` after a delete (`assignments` `None`) or an update by
/// `predicate`, and how many matched. Updated rows stay where they were.
pub fn mutate_batch(
    batch: &RecordBatch,
    predicate: &Predicate,
    assignments: Option<&[Assignment]>,
) -> Result<(RecordBatch, u64)> {
    let mask = match_mask(predicate, batch)?;
    let matched = mask.true_count() as u64;
    if matched == 0 {
        return Ok((batch.clone(), 0));
    }
    match assignments {
        None => {
            let keep = arrow::compute::not(&mask)?;
            Ok((arrow::compute::filter_record_batch(batch, &keep)?, matched))
        }
        Some(assignments) => {
            let hit = arrow::compute::filter_record_batch(batch, &mask)?;
            let updated = apply_assignments(&hit, assignments)?;
            let columns = (0..batch.num_columns())
                .map(|i| {
                    Ok(arrow::compute::kernels::zip::zip(
                        &mask,
                        &scatter(&mask, updated.column(i))?,
                        batch.column(i),
                    )?)
                })
                .collect::<Result<Vec<ArrayRef>>>()?;
            Ok((RecordBatch::try_new(batch.schema(), columns)?, matched))
        }
    }
}

/// `values` (one per `true` of `mask`) spread to the length of `mask`: slot `i` holds
/// the value of the `k`-th true position when `mask[i]` is the `k`-th true, else a
/// repeat of the first value (unused by the zip).
fn scatter(mask: &BooleanArray, values: &ArrayRef) -> Result<ArrayRef> {
    let mut k = 0u32;
    let indices: arrow::array::UInt32Array = (0..mask.len())
        .map(|i| {
            let idx = k;
            if mask.value(i) {
                k += 1;
                Some(idx)
            } else {
                None
            }
        })
        .collect();
    Ok(arrow::compute::take(values.as_ref(), &indices, None)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predicate::col;
    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    None,
                    Some("c"),
                    Some("d"),
                ])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn delete_keeps_rows_whose_predicate_is_false_or_null() {
        let (out, n) = mutate_batch(&batch(), &col("name").not_eq("c"), None).unwrap();
        assert_eq!(n, 2);
        let ids = out.column(0).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(ids, vec![2, 3]);
    }

    #[test]
    fn update_changes_matched_rows_in_place() {
        let double = Assignment::computed(
            "id",
            Arc::new(|rows| {
                let c = rows.column(0).as_primitive::<Int64Type>();
                Ok(Arc::new(c.unary::<_, Int64Type>(|v| v * 10)) as ArrayRef)
            }),
        );
        let p = col("id").gt_eq(3i64);
        let (out, n) = mutate_batch(
            &batch(),
            &p,
            Some(&[double, Assignment::scalar("name", "z")]),
        )
        .unwrap();
        assert_eq!(n, 2);
        let ids = out.column(0).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(ids, vec![1, 2, 30, 40]);
        let names: Vec<Option<&str>> = out.column(1).as_string::<i32>().iter().collect();
        assert_eq!(names, vec![Some("a"), None, Some("z"), Some("z")]);
    }

    #[test]
    fn bad_assignments_are_refused_with_typed_errors() {
        let b = batch();
        let p = Predicate::Literal(true);
        let kind = |a: Vec<Assignment>| mutate_batch(&b, &p, Some(&a)).unwrap_err().kind();
        assert_eq!(
            kind(vec![Assignment::scalar("nope", 1i64)]),
            ErrorKind::ColumnNotFound
        );
        assert_eq!(
            kind(vec![
                Assignment::scalar("id", 1i64),
                Assignment::scalar("id", 2i64)
            ]),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(vec![Assignment::scalar("id", Scalar::Null)]),
            ErrorKind::SchemaMismatch
        );
        assert_eq!(
            kind(vec![Assignment::scalar("id", "x")]),
            ErrorKind::TypeMismatch
        );
        let short = Assignment::computed(
            "id",
            Arc::new(|_| Ok(Arc::new(Int64Array::from(vec![1])) as ArrayRef)),
        );
        assert_eq!(kind(vec![short]), ErrorKind::InvalidInput);
        let wrong = Assignment::computed(
            "id",
            Arc::new(|r| Ok(Arc::new(StringArray::from(vec!["x"; r.num_rows()])) as ArrayRef)),
        );
        assert_eq!(kind(vec![wrong]), ErrorKind::TypeMismatch);
    }

    #[test]
    fn memory_table_mutations_are_commits_with_history() {
        use crate::table::{ScanRequest, TableSink, TableSource};
        use futures::TryStreamExt;
        futures::executor::block_on(async {
            let b = batch();
            let t = crate::MemoryTable::new("t", b.schema());
            t.append(vec![b.clone()], None).await.unwrap();
            let m: Arc<dyn TableMutator> = Arc::new(t.clone());
            let out = m.delete_where(&col("id").lt(3i64)).await.unwrap();
            assert_eq!(
                out,
                MutationOutcome {
                    rows_affected: 2,
                    version: Some(2)
                }
            );
            let none = m.delete_where(&col("id").lt(0i64)).await.unwrap();
            assert_eq!(none, MutationOutcome::unchanged());
            assert_eq!(t.version().await.unwrap(), 2);
            let rows = |v: u64| {
                let t = t.clone();
                async move {
                    let got: Vec<RecordBatch> = t
                        .scan(ScanRequest::new().at_version(v))
                        .await
                        .unwrap()
                        .try_collect()
                        .await
                        .unwrap();
                    got.iter().map(|b| b.num_rows()).sum::<usize>()
                }
            };
            assert_eq!(rows(1).await, 4);
            assert_eq!(rows(2).await, 2);
            let err = t.changes_since(1).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NonAppendChange);
            let upd = m
                .update_where(&col("id").eq(4i64), &[Assignment::scalar("name", "x")])
                .await
                .unwrap();
            assert_eq!(upd.rows_affected, 1);
            assert_eq!(rows(3).await, 2);
            let err = m
                .update_where(&col("nope").eq(1i64), &[])
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ColumnNotFound);
        });
    }
}
