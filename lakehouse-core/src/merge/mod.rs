//! [`MergeRequest`]: `MERGE INTO target USING source ON ... WHEN [NOT] MATCHED ...` as
//! one commit of a [`TableMutator`](crate::TableMutator), and [`MergeRun`], the row
//! matching that implementations share.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;

use crate::error::Result;
use crate::predicate::Predicate;
use crate::scalar::Scalar;
use crate::table::Version;

mod run;

pub use self::run::MergeRun;

/// Pairs of rows a merge function sees: row `i` of `target` and row `i` of `source`
/// (the same number of rows). For `WHEN NOT MATCHED` clauses every target column is
/// null; the target batch then has the table's columns, all nullable.
#[derive(Debug, Clone)]
pub struct MergeRows {
    /// Target rows, with every column of the table.
    pub target: RecordBatch,
    /// Source rows, with every column of the source.
    pub source: RecordBatch,
}

impl MergeRows {
    /// The number of row pairs.
    pub fn num_rows(&self) -> usize {
        self.source.num_rows()
    }
}

/// A function over row pairs ([`MergeRows`]) returning one value per pair: a
/// `Boolean` array for conditions (null counts as false), the column's type for values.
pub type MergeFn = Arc<dyn Fn(&MergeRows) -> Result<ArrayRef> + Send + Sync>;

/// The value a merge clause gives a column.
#[derive(Clone)]
pub enum MergeValue {
    /// This value for every row (converted exactly to the column's type).
    Scalar(Scalar),
    /// The source column of that name, which must have the target column's type.
    Source(String),
    /// Computed from the row pairs (see [`MergeFn`]).
    Computed(MergeFn),
}

impl fmt::Debug for MergeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MergeValue::Scalar(s) => f.debug_tuple("Scalar").field(s).finish(),
            MergeValue::Source(c) => f.debug_tuple("Source").field(c).finish(),
            MergeValue::Computed(_) => f.write_str("Computed(..)"),
        }
    }
}

/// `column = value` in a `WHEN MATCHED THEN UPDATE` or the values of a
/// `WHEN NOT MATCHED THEN INSERT`.
#[derive(Debug, Clone)]
pub struct MergeAssignment {
    /// The target column.
    pub column: String,
    /// Its value.
    pub value: MergeValue,
}

impl MergeAssignment {
    /// `column = value`.
    pub fn scalar(column: impl Into<String>, value: impl Into<Scalar>) -> Self {
        MergeAssignment {
            column: column.into(),
            value: MergeValue::Scalar(value.into()),
        }
    }

    /// `column = source.source_column`.
    pub fn source(column: impl Into<String>, source_column: impl Into<String>) -> Self {
        MergeAssignment {
            column: column.into(),
            value: MergeValue::Source(source_column.into()),
        }
    }

    /// `column = f(row pairs)`.
    pub fn computed(column: impl Into<String>, f: MergeFn) -> Self {
        MergeAssignment {
            column: column.into(),
            value: MergeValue::Computed(f),
        }
    }
}

/// What a `WHEN MATCHED` clause does to the target row.
#[derive(Debug, Clone)]
pub enum MatchedAction {
    /// `UPDATE SET ...`: the other columns keep their values.
    Update(Vec<MergeAssignment>),
    /// `DELETE`.
    Delete,
}

/// `WHEN MATCHED [AND condition] THEN action`.
#[derive(Clone)]
pub struct MatchedClause {
    /// Applies only to pairs where this is true; `None` applies to all.
    pub condition: Option<MergeFn>,
    /// Update or delete.
    pub action: MatchedAction,
}

/// `WHEN NOT MATCHED [AND condition] THEN INSERT (columns) VALUES (values)`.
#[derive(Clone)]
pub struct NotMatchedClause {
    /// Applies only to source rows where this is true; `None` applies to all.
    pub condition: Option<MergeFn>,
    /// The inserted row's columns; the table's other columns are null.
    pub values: Vec<MergeAssignment>,
}

impl fmt::Debug for MatchedClause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MatchedClause")
            .field("condition", &self.condition.as_ref().map(|_| ".."))
            .field("action", &self.action)
            .finish()
    }
}

impl fmt::Debug for NotMatchedClause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotMatchedClause")
            .field("condition", &self.condition.as_ref().map(|_| ".."))
            .field("values", &self.values)
            .finish()
    }
}

/// One equality of the `ON` clause: `target.column = source.column`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MergeKey {
    /// The target column.
    pub target: String,
    /// The source column, of the same type.
    pub source: String,
}

/// `MERGE INTO table USING source ON keys [AND on] WHEN ...`, for
/// [`TableMutator::merge`](crate::TableMutator::merge).
///
/// A target row and a source row **match** when every key pair is equal (a null key
/// matches nothing), the target row satisfies [`target_filter`](Self::target_filter)
/// and [`on`](Self::on) is true for the pair. Then:
///
/// * each matched pair takes the first `WHEN MATCHED` clause whose condition is true
///   (update or delete its target row); a pair no clause takes is left as it is;
/// * each source row matching no target row takes the first `WHEN NOT MATCHED` clause
///   whose condition is true and inserts a row;
/// * when there is a `WHEN MATCHED` clause, a target row matched by more than one
///   source row is an error ([`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)) and nothing is committed
///   (the SQL standard's cardinality rule, as Delta Lake).
///
/// The keys let a table read only the files whose statistics or partition values may
/// hold the source's keys; at least one is required.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use lakehouse_core::{MergeAssignment, MergeRequest};
///
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("id", DataType::Int64, false),
///     Field::new("qty", DataType::Int64, false),
/// ]));
/// let changes = RecordBatch::try_new(schema.clone(), vec![
///     Arc::new(Int64Array::from(vec![1, 7])),
///     Arc::new(Int64Array::from(vec![10, 0])),
/// ])?;
/// let upsert = MergeRequest::new(schema, vec![changes])
///     .on_key("id", "id")
///     .when_matched_update(None, vec![MergeAssignment::source("qty", "qty")])
///     .when_not_matched_insert(None, vec![
///         MergeAssignment::source("id", "id"),
///         MergeAssignment::source("qty", "qty"),
///     ]);
/// assert_eq!(upsert.keys.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct MergeRequest {
    /// The source's schema.
    pub source_schema: SchemaRef,
    /// The source rows.
    pub source: Vec<RecordBatch>,
    /// The equalities of the `ON` clause.
    pub keys: Vec<MergeKey>,
    /// The part of the `ON` clause over target columns only, as a pushdown predicate
    /// (it also prunes files).
    pub target_filter: Option<Predicate>,
    /// The rest of the `ON` clause, over the pair.
    pub on: Option<MergeFn>,
    /// `WHEN MATCHED` clauses, tried in order.
    pub matched: Vec<MatchedClause>,
    /// `WHEN NOT MATCHED` clauses, tried in order.
    pub not_matched: Vec<NotMatchedClause>,
}

impl fmt::Debug for MergeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MergeRequest")
            .field("source_rows", &self.source_rows())
            .field("keys", &self.keys)
            .field("target_filter", &self.target_filter)
            .field("on", &self.on.as_ref().map(|_| ".."))
            .field("matched", &self.matched)
            .field("not_matched", &self.not_matched)
            .finish()
    }
}

impl MergeRequest {
    /// A merge of `source` (rows of `source_schema`) with no keys and no clauses yet.
    pub fn new(source_schema: SchemaRef, source: Vec<RecordBatch>) -> Self {
        MergeRequest {
            source_schema,
            source,
            keys: Vec::new(),
            target_filter: None,
            on: None,
            matched: Vec::new(),
            not_matched: Vec::new(),
        }
    }

    /// Adds `target.target_column = source.source_column` to the `ON` clause.
    #[must_use]
    pub fn on_key(mut self, target: impl Into<String>, source: impl Into<String>) -> Self {
        self.keys.push(MergeKey {
            target: target.into(),
            source: source.into(),
        });
        self
    }

    /// Adds a condition on target columns to the `ON` clause.
    #[must_use]
    pub fn on_target(mut self, predicate: Predicate) -> Self {
        self.target_filter = Some(match self.target_filter.take() {
            Some(p) => p.and(predicate),
            None => predicate,
        });
        self
    }

    /// Sets the rest of the `ON` clause, a condition over the pair.
    #[must_use]
    pub fn on_condition(mut self, condition: MergeFn) -> Self {
        self.on = Some(condition);
        self
    }

    /// Adds `WHEN MATCHED [AND condition] THEN UPDATE SET assignments`.
    #[must_use]
    pub fn when_matched_update(
        mut self,
        condition: Option<MergeFn>,
        assignments: Vec<MergeAssignment>,
    ) -> Self {
        self.matched.push(MatchedClause {
            condition,
            action: MatchedAction::Update(assignments),
        });
        self
    }

    /// Adds `WHEN MATCHED [AND condition] THEN DELETE`.
    #[must_use]
    pub fn when_matched_delete(mut self, condition: Option<MergeFn>) -> Self {
        self.matched.push(MatchedClause {
            condition,
            action: MatchedAction::Delete,
        });
        self
    }

    /// Adds `WHEN NOT MATCHED [AND condition] THEN INSERT values`.
    #[must_use]
    pub fn when_not_matched_insert(
        mut self,
        condition: Option<MergeFn>,
        values: Vec<MergeAssignment>,
    ) -> Self {
        self.not_matched
            .push(NotMatchedClause { condition, values });
        self
    }

    /// The number of source rows.
    pub fn source_rows(&self) -> usize {
        self.source.iter().map(|b| b.num_rows()).sum()
    }
}

/// What a merge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MergeOutcome {
    /// Target rows updated.
    pub rows_updated: u64,
    /// Target rows deleted.
    pub rows_deleted: u64,
    /// Rows inserted.
    pub rows_inserted: u64,
    /// The version committed; `None` when nothing changed and nothing was committed.
    pub version: Option<Version>,
}

impl MergeOutcome {
    /// Rows updated, deleted and inserted: what SQL reports as rows affected.
    pub fn rows_affected(&self) -> u64 {
        self.rows_updated + self.rows_deleted + self.rows_inserted
    }
}
