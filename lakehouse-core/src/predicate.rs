//! [`Predicate`]: the small filter language that crosses crate boundaries.
//!
//! A query engine translates the filters of a query into a `Predicate` and hands it to a
//! [`TableSource`](crate::TableSource); the source uses it to skip partitions, files and
//! row groups ([`Predicate::can_match`] over [`ColumnStats`]) and, if it says so, to filter
//! rows exactly ([`Predicate::evaluate`]).
//!
//! Semantics are SQL's three-valued logic: a comparison with `NULL` is unknown, unknown
//! rows are not selected, `NOT unknown` is unknown.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;
use std::ops::Not;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, new_null_array};
use arrow::compute::kernels::{boolean, cmp};
use arrow::datatypes::{DataType, Schema};

use crate::error::{Error, ErrorKind, Result};
use crate::scalar::Scalar;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `<>`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
}

impl CmpOp {
    /// The operator that selects exactly the rows this one rejects (for non-null values).
    pub fn negate(self) -> CmpOp {
        match self {
            CmpOp::Eq => CmpOp::NotEq,
            CmpOp::NotEq => CmpOp::Eq,
            CmpOp::Lt => CmpOp::GtEq,
            CmpOp::LtEq => CmpOp::Gt,
            CmpOp::Gt => CmpOp::LtEq,
            CmpOp::GtEq => CmpOp::Lt,
        }
    }

    /// The operator with its operands swapped (`a < b` is `b > a`).
    pub fn swap(self) -> CmpOp {
        match self {
            CmpOp::Eq => CmpOp::Eq,
            CmpOp::NotEq => CmpOp::NotEq,
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::GtEq => CmpOp::LtEq,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::NotEq => "<>",
            CmpOp::Lt => "<",
            CmpOp::LtEq => "<=",
            CmpOp::Gt => ">",
            CmpOp::GtEq => ">=",
        }
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::NotEq => ord != Ordering::Equal,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::LtEq => ord != Ordering::Greater,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::GtEq => ord != Ordering::Less,
        }
    }
}

/// A filter over the columns of one table: column-versus-literal comparisons combined
/// with `AND`, `OR` and `NOT`.
///
/// Build one with [`col`] and the combinators:
///
/// ```
/// use std::ops::Not;
/// use lakehouse_core::{col, Predicate};
///
/// let p = col("category").in_list(["toys", "games"])
///     .and(col("price").between(5.0, 20.0))
///     .and(col("coupon").is_null().not());
/// assert_eq!(
///     p.to_string(),
///     "category IN ('toys', 'games') AND price BETWEEN 5.0 AND 20.0 AND coupon IS NOT NULL"
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Predicate {
    /// A constant: `TRUE` selects every row, `FALSE` none.
    Literal(bool),
    /// `column <op> value`.
    Compare {
        /// Column name.
        column: String,
        /// Operator.
        op: CmpOp,
        /// Literal on the right-hand side.
        value: Scalar,
    },
    /// `column [NOT] BETWEEN low AND high` (both bounds inclusive).
    Between {
        /// Column name.
        column: String,
        /// Lower bound, inclusive.
        low: Scalar,
        /// Upper bound, inclusive.
        high: Scalar,
        /// `NOT BETWEEN`.
        negated: bool,
    },
    /// `column [NOT] IN (values...)`.
    InList {
        /// Column name.
        column: String,
        /// The list.
        values: Vec<Scalar>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `column IS [NOT] NULL`.
    IsNull {
        /// Column name.
        column: String,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// All of the parts hold (an empty list is `TRUE`).
    And(Vec<Predicate>),
    /// Any of the parts holds (an empty list is `FALSE`).
    Or(Vec<Predicate>),
    /// The part does not hold.
    Not(Box<Predicate>),
}

/// Starts a predicate on a column: `col("price").gt(10)`.
pub fn col(name: impl Into<String>) -> ColumnRef {
    ColumnRef(name.into())
}

/// A column name waiting for its comparison; made by [`col`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct ColumnRef(String);

impl ColumnRef {
    fn cmp(self, op: CmpOp, value: impl Into<Scalar>) -> Predicate {
        Predicate::Compare {
            column: self.0,
            op,
            value: value.into(),
        }
    }

    /// `column = value`
    pub fn eq(self, value: impl Into<Scalar>) -> Predicate {
        self.cmp(CmpOp::Eq, value)
    }

    /// `column <> value`
    pub fn not_eq(self, value: impl Into<Scalar>) -> Predicate {
        self.cmp(CmpOp::NotEq, value)
    }

    /// `column < value`
    pub fn lt(self, value: impl Into<Scalar>) -> Predicate {
        self.cmp(CmpOp::Lt, value)
    }

    /// `column <= value`
    pub fn lt_eq(self, value: impl Into<Scalar>) -> Predicate {
        self.cmp(CmpOp::LtEq, value)
    }

    /// `column > value`
    pub fn gt(self, value: impl Into<Scalar>) -> Predicate {
        self.cmp(CmpOp::Gt, value)
    }

    /// `column >= value`
    pub fn gt_eq(self, value: impl Into<Scalar>) -> Predicate {
        self.cmp(CmpOp::GtEq, value)
    }

    /// `column BETWEEN low AND high`
    pub fn between(self, low: impl Into<Scalar>, high: impl Into<Scalar>) -> Predicate {
        Predicate::Between {
            column: self.0,
            low: low.into(),
            high: high.into(),
            negated: false,
        }
    }

    /// `column IN (values...)`
    pub fn in_list<I>(self, values: I) -> Predicate
    where
        I: IntoIterator,
        I::Item: Into<Scalar>,
    {
        Predicate::InList {
            column: self.0,
            values: values.into_iter().map(Into::into).collect(),
            negated: false,
        }
    }

    /// `column IS NULL`
    pub fn is_null(self) -> Predicate {
        Predicate::IsNull {
            column: self.0,
            negated: false,
        }
    }

    /// `column IS NOT NULL`
    pub fn is_not_null(self) -> Predicate {
        Predicate::IsNull {
            column: self.0,
            negated: true,
        }
    }
}

/// Minimum, maximum and null count of one column over a set of rows (a file, a row
/// group, a partition), as a source reports it for pruning.
///
/// Any field may be unknown (`None`); pruning then assumes the worst. `min` and `max`
/// are bounds: every non-null value `v` satisfies `min <= v <= max`, but the bounds need
/// not occur in the data (truncated string statistics are fine).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColumnStats {
    /// Lower bound of the non-null values.
    pub min: Option<Scalar>,
    /// Upper bound of the non-null values.
    pub max: Option<Scalar>,
    /// Number of null values.
    pub null_count: Option<u64>,
}

impl ColumnStats {
    /// Statistics of a constant column (a partition value): `value` in every row.
    pub fn constant(value: Scalar, rows: u64) -> Self {
        if value.is_null() {
            ColumnStats {
                min: None,
                max: None,
                null_count: Some(rows),
            }
        } else {
            ColumnStats {
                min: Some(value.clone()),
                max: Some(value),
                null_count: Some(0),
            }
        }
    }

    /// Exact statistics of an array, computed by scanning it.
    pub fn from_array(array: &dyn Array) -> Result<Self> {
        let null_count = array.null_count() as u64;
        let mut min_max: Option<(usize, usize)> = None;
        if array.len() > array.null_count() && !matches!(array.data_type(), DataType::Null) {
            let compare = arrow::array::make_comparator(array, array, Default::default())?;
            for row in (0..array.len()).filter(|&r| array.is_valid(r)) {
                min_max = Some(match min_max {
                    None => (row, row),
                    Some((lo, hi)) => (
                        if compare(row, lo) == Ordering::Less {
                            row
                        } else {
                            lo
                        },
                        if compare(row, hi) == Ordering::Greater {
                            row
                        } else {
                            hi
                        },
                    ),
                });
            }
        }
        let (min, max) = match min_max {
            Some((lo, hi)) => (
                Some(Scalar::try_from_array(array, lo)?),
                Some(Scalar::try_from_array(array, hi)?),
            ),
            None => (None, None),
        };
        Ok(ColumnStats {
            min,
            max,
            null_count: Some(null_count),
        })
    }

    /// Widens these statistics to also cover `other` (for merging files or row groups).
    pub fn merge(&mut self, other: &ColumnStats) {
        fn pick(a: &Option<Scalar>, b: &Option<Scalar>, keep: Ordering) -> Option<Scalar> {
            match (a, b) {
                (Some(x), Some(y)) => match x.partial_cmp_value(y) {
                    Some(o) if o == keep || o == Ordering::Equal => Some(x.clone()),
                    Some(_) => Some(y.clone()),
                    None => None,
                },
                _ => None,
            }
        }
        // An empty side (all nulls) has no bounds and leaves the other side's bounds.
        let self_empty = self.min.is_none() && self.max.is_none() && self.null_count.is_some();
        let other_empty = other.min.is_none() && other.max.is_none() && other.null_count.is_some();
        let (min, max) = if self_empty {
            (other.min.clone(), other.max.clone())
        } else if other_empty {
            (self.min.clone(), self.max.clone())
        } else {
            (
                pick(&self.min, &other.min, Ordering::Less),
                pick(&self.max, &other.max, Ordering::Greater),
            )
        };
        self.min = min;
        self.max = max;
        self.null_count = match (self.null_count, other.null_count) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
}

/// Where [`Predicate::can_match`] looks up statistics: a file, a row group or a partition.
pub trait StatsProvider {
    /// Number of rows, if known.
    fn row_count(&self) -> Option<u64>;
    /// Statistics of `column`, or `None` when nothing is known about it.
    fn column_stats(&self, column: &str) -> Option<ColumnStats>;
}

impl Predicate {
    /// `self AND other`, flattening nested conjunctions.
    #[must_use]
    pub fn and(self, other: Predicate) -> Predicate {
        match (self, other) {
            (Predicate::And(mut a), Predicate::And(b)) => {
                a.extend(b);
                Predicate::And(a)
            }
            (Predicate::And(mut a), b) => {
                a.push(b);
                Predicate::And(a)
            }
            (a, Predicate::And(mut b)) => {
                b.insert(0, a);
                Predicate::And(b)
            }
            (a, b) => Predicate::And(vec![a, b]),
        }
    }

    /// `self OR other`, flattening nested disjunctions.
    #[must_use]
    pub fn or(self, other: Predicate) -> Predicate {
        match (self, other) {
            (Predicate::Or(mut a), Predicate::Or(b)) => {
                a.extend(b);
                Predicate::Or(a)
            }
            (Predicate::Or(mut a), b) => {
                a.push(b);
                Predicate::Or(a)
            }
            (a, Predicate::Or(mut b)) => {
                b.insert(0, a);
                Predicate::Or(b)
            }
            (a, b) => Predicate::Or(vec![a, b]),
        }
    }

    /// The conjunction of `parts`; `None` when there are none.
    pub fn all(parts: impl IntoIterator<Item = Predicate>) -> Option<Predicate> {
        parts.into_iter().reduce(Predicate::and)
    }

    /// The top-level parts of a conjunction (`[self]` when it is not one).
    pub fn conjuncts(&self) -> Vec<&Predicate> {
        match self {
            Predicate::And(parts) => parts.iter().flat_map(|p| p.conjuncts()).collect(),
            other => vec![other],
        }
    }

    /// The names of the columns this predicate reads.
    pub fn columns(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        self.collect_columns(&mut out);
        out
    }

    fn collect_columns<'a>(&'a self, out: &mut BTreeSet<&'a str>) {
        match self {
            Predicate::Literal(_) => {}
            Predicate::Compare { column, .. }
            | Predicate::Between { column, .. }
            | Predicate::InList { column, .. }
            | Predicate::IsNull { column, .. } => {
                out.insert(column);
            }
            Predicate::And(parts) | Predicate::Or(parts) => {
                parts.iter().for_each(|p| p.collect_columns(out))
            }
            Predicate::Not(p) => p.collect_columns(out),
        }
    }

    /// The logical negation with `NOT` pushed down to the leaves (negation normal form).
    /// The result contains no [`Predicate::Not`].
    #[must_use]
    pub fn negate(&self) -> Predicate {
        match self {
            Predicate::Literal(b) => Predicate::Literal(!b),
            Predicate::Compare { column, op, value } => Predicate::Compare {
                column: column.clone(),
                op: op.negate(),
                value: value.clone(),
            },
            Predicate::Between {
                column,
                low,
                high,
                negated,
            } => Predicate::Between {
                column: column.clone(),
                low: low.clone(),
                high: high.clone(),
                negated: !negated,
            },
            Predicate::InList {
                column,
                values,
                negated,
            } => Predicate::InList {
                column: column.clone(),
                values: values.clone(),
                negated: !negated,
            },
            Predicate::IsNull { column, negated } => Predicate::IsNull {
                column: column.clone(),
                negated: !negated,
            },
            Predicate::And(parts) => Predicate::Or(parts.iter().map(Predicate::negate).collect()),
            Predicate::Or(parts) => Predicate::And(parts.iter().map(Predicate::negate).collect()),
            Predicate::Not(p) => p.without_not(),
        }
    }

    /// This predicate in negation normal form (no [`Predicate::Not`]).
    #[must_use]
    pub fn without_not(&self) -> Predicate {
        match self {
            Predicate::Not(p) => p.negate(),
            Predicate::And(parts) => {
                Predicate::And(parts.iter().map(Predicate::without_not).collect())
            }
            Predicate::Or(parts) => {
                Predicate::Or(parts.iter().map(Predicate::without_not).collect())
            }
            other => other.clone(),
        }
    }

    /// Checks that every column exists in `schema` and every literal converts to its
    /// column's type; the error names the column.
    pub fn validate(&self, schema: &Schema) -> Result<()> {
        let check = |column: &str, values: &mut dyn Iterator<Item = &Scalar>| -> Result<()> {
            let field = schema.field_with_name(column).map_err(|_| {
                Error::new(
                    ErrorKind::ColumnNotFound,
                    format!("predicate column {column:?} is not in the schema"),
                )
                .with_column(column)
            })?;
            for v in values {
                v.cast_to(field.data_type())
                    .map_err(|e| e.with_column(column))?;
            }
            Ok(())
        };
        match self {
            Predicate::Literal(_) => Ok(()),
            Predicate::Compare { column, value, .. } => check(column, &mut std::iter::once(value)),
            Predicate::Between {
                column, low, high, ..
            } => check(column, &mut [low, high].into_iter()),
            Predicate::InList { column, values, .. } => check(column, &mut values.iter()),
            Predicate::IsNull { column, .. } => check(column, &mut std::iter::empty()),
            Predicate::And(parts) | Predicate::Or(parts) => {
                parts.iter().try_for_each(|p| p.validate(schema))
            }
            Predicate::Not(p) => p.validate(schema),
        }
    }

    /// Evaluates the predicate on every row of `batch`: `true`, `false`, or null for
    /// unknown (SQL three-valued logic).
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<BooleanArray> {
        let rows = batch.num_rows();
        let column = |name: &str| -> Result<&ArrayRef> {
            batch.column_by_name(name).ok_or_else(|| {
                Error::new(
                    ErrorKind::ColumnNotFound,
                    format!("predicate column {name:?} is not in the batch"),
                )
                .with_column(name)
            })
        };
        match self {
            Predicate::Literal(b) => Ok(BooleanArray::from(vec![*b; rows])),
            Predicate::Compare {
                column: name,
                op,
                value,
            } => compare(column(name)?, *op, value).map_err(|e| e.with_column(name)),
            Predicate::Between {
                column: name,
                low,
                high,
                negated,
            } => {
                let array = column(name)?;
                let inside = boolean::and_kleene(
                    &compare(array, CmpOp::GtEq, low).map_err(|e| e.with_column(name))?,
                    &compare(array, CmpOp::LtEq, high).map_err(|e| e.with_column(name))?,
                )?;
                Ok(if *negated {
                    boolean::not(&inside)?
                } else {
                    inside
                })
            }
            Predicate::InList {
                column: name,
                values,
                negated,
            } => {
                let array = column(name)?;
                let mut any = BooleanArray::from(vec![false; rows]);
                for v in values {
                    let eq = compare(array, CmpOp::Eq, v).map_err(|e| e.with_column(name))?;
                    any = boolean::or_kleene(&any, &eq)?;
                }
                Ok(if *negated { boolean::not(&any)? } else { any })
            }
            Predicate::IsNull {
                column: name,
                negated,
            } => {
                let array = column(name)?;
                Ok(if *negated {
                    arrow::compute::is_not_null(array.as_ref())?
                } else {
                    arrow::compute::is_null(array.as_ref())?
                })
            }
            Predicate::And(parts) => {
                let mut acc = BooleanArray::from(vec![true; rows]);
                for p in parts {
                    acc = boolean::and_kleene(&acc, &p.evaluate(batch)?)?;
                }
                Ok(acc)
            }
            Predicate::Or(parts) => {
                let mut acc = BooleanArray::from(vec![false; rows]);
                for p in parts {
                    acc = boolean::or_kleene(&acc, &p.evaluate(batch)?)?;
                }
                Ok(acc)
            }
            Predicate::Not(p) => Ok(boolean::not(&p.evaluate(batch)?)?),
        }
    }

    /// The rows of `batch` for which the predicate is `true`.
    pub fn filter(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        if matches!(self, Predicate::Literal(true)) {
            return Ok(batch.clone());
        }
        let mask = self.evaluate(batch)?;
        Ok(arrow::compute::filter_record_batch(batch, &mask)?)
    }

    /// `false` only when no row described by `stats` can satisfy the predicate, so the
    /// file, row group or partition can be skipped. Unknown statistics, unknown columns
    /// and literals that do not convert to the column's type all answer `true`.
    pub fn can_match(&self, stats: &dyn StatsProvider) -> bool {
        self.without_not().can_match_nnf(stats)
    }

    fn can_match_nnf(&self, stats: &dyn StatsProvider) -> bool {
        match self {
            Predicate::Literal(b) => *b,
            Predicate::And(parts) => parts.iter().all(|p| p.can_match_nnf(stats)),
            Predicate::Or(parts) => parts.iter().any(|p| p.can_match_nnf(stats)),
            // `without_not` removed every `Not`; stay conservative if one slipped through.
            Predicate::Not(_) => true,
            Predicate::IsNull { column, negated } => {
                let s = stats.column_stats(column);
                let nulls = s.as_ref().and_then(|s| s.null_count);
                if *negated {
                    !matches!((nulls, stats.row_count()), (Some(n), Some(r)) if n >= r)
                } else {
                    nulls != Some(0)
                }
            }
            Predicate::Compare { column, op, value } => {
                let Some(range) = Range::of(stats, column) else {
                    return !value.is_null() && !all_null(stats, column);
                };
                if value.is_null() {
                    return false;
                }
                let Some(v) = range.convert(value) else {
                    return true;
                };
                match op {
                    CmpOp::Eq => range.may_contain(&v),
                    // Every value equals `v` only when min = max = v.
                    CmpOp::NotEq => !(range.min_is(CmpOp::Eq, &v) && range.max_is(CmpOp::Eq, &v)),
                    CmpOp::Lt => range.min_is(CmpOp::Lt, &v),
                    CmpOp::LtEq => range.min_is(CmpOp::LtEq, &v),
                    CmpOp::Gt => range.max_is(CmpOp::Gt, &v),
                    CmpOp::GtEq => range.max_is(CmpOp::GtEq, &v),
                }
            }
            Predicate::Between {
                column,
                low,
                high,
                negated,
            } => {
                if low.is_null() || high.is_null() {
                    // NULL bounds make the comparison unknown for `BETWEEN`; keep it simple
                    // and conservative for `NOT BETWEEN`.
                    return *negated;
                }
                let Some(range) = Range::of(stats, column) else {
                    return !all_null(stats, column);
                };
                let (Some(lo), Some(hi)) = (range.convert(low), range.convert(high)) else {
                    return true;
                };
                if *negated {
                    range.min_is(CmpOp::Lt, &lo) || range.max_is(CmpOp::Gt, &hi)
                } else {
                    range.max_is(CmpOp::GtEq, &lo) && range.min_is(CmpOp::LtEq, &hi)
                }
            }
            Predicate::InList {
                column,
                values,
                negated,
            } => {
                if values.is_empty() {
                    // `x IN ()` is false and `x NOT IN ()` true for every row, nulls included.
                    return *negated;
                }
                if *negated && values.iter().any(Scalar::is_null) {
                    // `x NOT IN (.., NULL)` is never true.
                    return false;
                }
                let Some(range) = Range::of(stats, column) else {
                    return !all_null(stats, column)
                        && (*negated || values.iter().any(|v| !v.is_null()));
                };
                let converted: Vec<Option<Scalar>> = values
                    .iter()
                    .filter(|v| !v.is_null())
                    .map(|v| range.convert(v))
                    .collect();
                if *negated {
                    // Skippable only when every value is one single listed constant.
                    let constant = range
                        .min
                        .as_ref()
                        .zip(range.max.as_ref())
                        .filter(|(lo, hi)| lo.partial_cmp_value(hi) == Some(Ordering::Equal));
                    match constant {
                        Some((c, _)) => !converted.iter().any(|v| {
                            v.as_ref()
                                .is_some_and(|v| v.partial_cmp_value(c) == Some(Ordering::Equal))
                        }),
                        None => true,
                    }
                } else {
                    converted.iter().any(|v| match v {
                        Some(v) => range.may_contain(v),
                        None => true,
                    })
                }
            }
        }
    }
}

/// `true` when the statistics prove that every value of `column` is null.
fn all_null(stats: &dyn StatsProvider, column: &str) -> bool {
    let nulls = stats.column_stats(column).and_then(|s| s.null_count);
    matches!((nulls, stats.row_count()), (Some(n), Some(r)) if n >= r)
}

/// The known bounds of one column, used by pruning.
struct Range {
    min: Option<Scalar>,
    max: Option<Scalar>,
    data_type: DataType,
}

impl Range {
    /// `None` when nothing is known, or when the column holds only nulls.
    fn of(stats: &dyn StatsProvider, column: &str) -> Option<Range> {
        let s = stats.column_stats(column)?;
        if all_null(stats, column) {
            return None;
        }
        let data_type = s.min.as_ref().or(s.max.as_ref())?.data_type();
        Some(Range {
            min: s.min,
            max: s.max,
            data_type,
        })
    }

    fn convert(&self, value: &Scalar) -> Option<Scalar> {
        let v = value.cast_to(&self.data_type).ok()?;
        // NaN orders with nothing; treat as unknown.
        match v {
            Scalar::Float32(f) if f.is_nan() => None,
            Scalar::Float64(f) if f.is_nan() => None,
            v => Some(v),
        }
    }

    /// `min <op> v` holds, or is unknown.
    fn min_is(&self, op: CmpOp, v: &Scalar) -> bool {
        match self.min.as_ref().and_then(|m| m.partial_cmp_value(v)) {
            Some(ord) => op.holds(ord),
            None => true,
        }
    }

    /// `max <op> v` holds, or is unknown.
    fn max_is(&self, op: CmpOp, v: &Scalar) -> bool {
        match self.max.as_ref().and_then(|m| m.partial_cmp_value(v)) {
            Some(ord) => op.holds(ord),
            None => true,
        }
    }

    fn may_contain(&self, v: &Scalar) -> bool {
        self.min_is(CmpOp::LtEq, v) && self.max_is(CmpOp::GtEq, v)
    }
}

/// `array <op> value` with the literal converted to the array's type.
fn compare(array: &ArrayRef, op: CmpOp, value: &Scalar) -> Result<BooleanArray> {
    let target = match array.data_type() {
        DataType::Dictionary(_, value_type) => value_type.as_ref().clone(),
        other => other.clone(),
    };
    if value.is_null() {
        let nulls = new_null_array(&DataType::Boolean, array.len());
        return Ok(nulls
            .as_any()
            .downcast_ref::<BooleanArray>()
            .cloned()
            .unwrap_or_else(|| BooleanArray::new_null(array.len())));
    }
    let literal = arrow::array::Scalar::new(value.to_array_of(&target)?);
    let out = match op {
        CmpOp::Eq => cmp::eq(array, &literal),
        CmpOp::NotEq => cmp::neq(array, &literal),
        CmpOp::Lt => cmp::lt(array, &literal),
        CmpOp::LtEq => cmp::lt_eq(array, &literal),
        CmpOp::Gt => cmp::gt(array, &literal),
        CmpOp::GtEq => cmp::gt_eq(array, &literal),
    }?;
    Ok(out)
}

impl Not for Predicate {
    type Output = Predicate;

    /// `NOT self`, kept as written; see [`Predicate::negate`] for the pushed-down form.
    fn not(self) -> Predicate {
        match self {
            Predicate::Not(p) => *p,
            Predicate::IsNull { column, negated } => Predicate::IsNull {
                column,
                negated: !negated,
            },
            other => Predicate::Not(Box::new(other)),
        }
    }
}

struct Ident<'a>(&'a str);

impl fmt::Display for Ident<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && self
                .0
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && self
                .0
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "\"{}\"", self.0.replace('"', "\"\""))
        }
    }
}

impl fmt::Display for Predicate {
    /// Writes the predicate as a SQL boolean expression.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn part(f: &mut fmt::Formatter<'_>, p: &Predicate) -> fmt::Result {
            match p {
                Predicate::And(v) | Predicate::Or(v) if v.len() > 1 => write!(f, "({p})"),
                _ => write!(f, "{p}"),
            }
        }
        match self {
            Predicate::Literal(b) => f.write_str(if *b { "TRUE" } else { "FALSE" }),
            Predicate::Compare { column, op, value } => {
                write!(f, "{} {} {value}", Ident(column), op.as_str())
            }
            Predicate::Between {
                column,
                low,
                high,
                negated,
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "{} {not}BETWEEN {low} AND {high}", Ident(column))
            }
            Predicate::InList {
                column,
                values,
                negated,
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "{} {not}IN (", Ident(column))?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str(")")
            }
            Predicate::IsNull { column, negated } => {
                let not = if *negated { " NOT" } else { "" };
                write!(f, "{} IS{not} NULL", Ident(column))
            }
            Predicate::And(parts) | Predicate::Or(parts) => {
                if parts.is_empty() {
                    let empty = matches!(self, Predicate::And(_));
                    return f.write_str(if empty { "TRUE" } else { "FALSE" });
                }
                let sep = if matches!(self, Predicate::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    part(f, p)?;
                }
                Ok(())
            }
            Predicate::Not(p) => {
                f.write_str("NOT ")?;
                match p.as_ref() {
                    Predicate::And(_) | Predicate::Or(_) => write!(f, "({p})"),
                    _ => write!(f, "{p}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{DictionaryArray, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Int32Type};
    use std::collections::HashMap;
    use std::sync::Arc;

    fn batch() -> RecordBatch {
        let category: DictionaryArray<Int32Type> = vec![
            Some("toys"),
            Some("books"),
            None,
            Some("toys"),
            Some("garden"),
        ]
        .into_iter()
        .collect();
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])) as ArrayRef,
            ),
            (
                "price",
                Arc::new(Float64Array::from(vec![
                    Some(9.5),
                    None,
                    Some(30.0),
                    Some(12.0),
                    Some(1.0),
                ])),
            ),
            ("category", Arc::new(category)),
            (
                "region",
                Arc::new(StringArray::from(vec!["eu", "us", "eu", "apac", "us"])),
            ),
        ])
        .unwrap()
    }

    fn ids(p: &Predicate) -> Vec<i64> {
        let out = p.filter(&batch()).unwrap();
        out.column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    #[test]
    fn evaluates_with_three_valued_logic() {
        assert_eq!(ids(&col("price").gt(10)), vec![3, 4]);
        assert_eq!(ids(&col("price").gt(10).not()), vec![1, 5]);
        assert_eq!(ids(&col("price").is_null()), vec![2]);
        assert_eq!(ids(&col("category").eq("toys")), vec![1, 4]);
        assert_eq!(ids(&col("category").not_eq("toys")), vec![2, 5]);
        assert_eq!(
            ids(&col("category").in_list(["books", "garden"])),
            vec![2, 5]
        );
        assert_eq!(
            ids(&Predicate::InList {
                column: "id".into(),
                values: vec![Scalar::Int64(1), Scalar::Null],
                negated: true
            }),
            Vec::<i64>::new()
        );
        assert_eq!(ids(&col("price").between(1, 12)), vec![1, 4, 5]);
        assert_eq!(
            ids(&col("region").eq("us").or(col("price").lt(5.0))),
            vec![2, 5]
        );
        assert_eq!(ids(&col("id").eq(Scalar::Null)), Vec::<i64>::new());
        assert_eq!(ids(&Predicate::And(vec![])), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn unknown_columns_and_bad_literals_are_typed_errors() {
        let e = col("nope").eq(1).evaluate(&batch()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ColumnNotFound);
        assert_eq!(e.context().column.as_deref(), Some("nope"));
        let e = col("id").eq("abc").evaluate(&batch()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TypeMismatch);
        let schema = batch().schema();
        assert!(col("id").eq(3).validate(&schema).is_ok());
        assert_eq!(
            col("id")
                .in_list(["x"])
                .validate(&schema)
                .unwrap_err()
                .kind(),
            ErrorKind::TypeMismatch
        );
        let schema = Schema::new(vec![Field::new("a", DataType::Int8, true)]);
        assert_eq!(
            col("a").eq(1000).validate(&schema).unwrap_err().kind(),
            ErrorKind::TypeMismatch
        );
    }

    struct Stats(u64, HashMap<&'static str, ColumnStats>);

    impl StatsProvider for Stats {
        fn row_count(&self) -> Option<u64> {
            Some(self.0)
        }
        fn column_stats(&self, column: &str) -> Option<ColumnStats> {
            self.1.get(column).cloned()
        }
    }

    fn file(min: i64, max: i64, nulls: u64) -> Stats {
        Stats(
            10,
            HashMap::from([(
                "x",
                ColumnStats {
                    min: Some(Scalar::Int64(min)),
                    max: Some(Scalar::Int64(max)),
                    null_count: Some(nulls),
                },
            )]),
        )
    }

    #[test]
    fn prunes_from_statistics() {
        let f = file(10, 20, 0);
        assert!(col("x").eq(15).can_match(&f));
        assert!(!col("x").eq(21).can_match(&f));
        assert!(!col("x").lt(10).can_match(&f));
        assert!(col("x").lt_eq(10).can_match(&f));
        assert!(!col("x").gt(20).can_match(&f));
        assert!(!col("x").between(21, 30).can_match(&f));
        assert!(col("x").between(5, 10).can_match(&f));
        assert!(!col("x").in_list([1i64, 2, 30]).can_match(&f));
        assert!(col("x").in_list([1i64, 12]).can_match(&f));
        assert!(!col("x").is_null().can_match(&f));
        assert!(!col("x").gt(20).or(col("x").lt(10)).can_match(&f));
        // NOT pushes down: NOT (x >= 10) is x < 10.
        assert!(!col("x").gt_eq(10).not().can_match(&f));
        // Int32 literals convert to the Int64 statistics.
        assert!(!col("x").eq(99i32).can_match(&f));
        // A constant column.
        let c = file(7, 7, 0);
        assert!(!col("x").not_eq(7).can_match(&c));
        assert!(!col("x").in_list([7i64]).not().can_match(&c));
        assert!(col("x").not_eq(8).can_match(&c));
        // All nulls: only IS NULL can match.
        let n = Stats(
            10,
            HashMap::from([("x", ColumnStats::constant(Scalar::Null, 10))]),
        );
        assert!(col("x").is_null().can_match(&n));
        assert!(!col("x").eq(1).can_match(&n));
        assert!(!col("x").is_not_null().can_match(&n));
        // Unknown column, unconvertible literal, NULL literal.
        assert!(col("y").eq(1).can_match(&f));
        assert!(col("x").eq("abc").can_match(&f));
        assert!(!col("x").eq(Scalar::Null).can_match(&f));
        // Empty lists: IN () matches nothing, NOT IN () everything, nulls included.
        let empty: [i64; 0] = [];
        assert!(!col("x").in_list(empty).can_match(&f));
        assert!(col("x").in_list(empty).negate().can_match(&n));
    }

    #[test]
    fn stats_from_arrays_and_merge() {
        let b = batch();
        let s = ColumnStats::from_array(b.column_by_name("price").unwrap().as_ref()).unwrap();
        assert_eq!(s.min, Some(Scalar::Float64(1.0)));
        assert_eq!(s.max, Some(Scalar::Float64(30.0)));
        assert_eq!(s.null_count, Some(1));
        let mut c =
            ColumnStats::from_array(b.column_by_name("category").unwrap().as_ref()).unwrap();
        assert_eq!(c.min, Some(Scalar::from("books")));
        assert_eq!(c.max, Some(Scalar::from("toys")));
        c.merge(&ColumnStats::constant(Scalar::from("zebra"), 3));
        assert_eq!(c.max, Some(Scalar::from("zebra")));
        assert_eq!(c.null_count, Some(1));
        c.merge(&ColumnStats::constant(Scalar::Null, 2));
        assert_eq!(c.min, Some(Scalar::from("books")));
        assert_eq!(c.null_count, Some(3));
    }

    #[test]
    fn displays_as_sql() {
        let p = col("Price")
            .gt(1)
            .and(col("a").eq("x").or(col("b").is_null()).not());
        assert_eq!(
            p.to_string(),
            "\"Price\" > 1 AND NOT (a = 'x' OR b IS NULL)"
        );
        assert_eq!(
            p.without_not().to_string(),
            "\"Price\" > 1 AND (a <> 'x' AND b IS NOT NULL)"
        );
    }
}
