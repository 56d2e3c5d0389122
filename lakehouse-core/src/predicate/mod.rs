//! [`Predicate`]: the small filter language that crosses crate boundaries.
//!
//! A query engine translates the filters of a query into a `Predicate` and hands it to a
//! [`TableSource`](crate::TableSource); the source uses it to skip partitions, files and
//! row groups ([`Predicate::can_match`] over [`ColumnStats`]) and, if it says so, to filter
//! rows exactly ([`Predicate::evaluate`]).
//!
//! Semantics are SQL's three-valued logic: a comparison with `NULL` is unknown, unknown
//! rows are not selected, `NOT unknown` is unknown.
//!
//! The expression type, its combinators and its checks live here; `builder` starts
//! comparisons from a column name ([`col`]), `eval` evaluates a predicate on a
//! batch, `stats` holds the statistics sources report, `prune` decides from them
//! whether data can be skipped and `display` writes a predicate as SQL.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::Not;

use arrow::datatypes::Schema;

use crate::error::{Error, ErrorKind, Result};
use crate::scalar::Scalar;

mod builder;
mod display;
mod eval;
mod prune;
mod stats;

pub use self::builder::{ColumnRef, col};
pub use self::stats::{ColumnStats, StatsProvider};

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

impl Predicate {
    /// `self AND other`, flattening nested conjunctions.
    #[must_use]
    pub fn and(self, other: Predicate) -> Predicate {
        let parts = |p| match p {
            Predicate::And(parts) => Ok(parts),
            p => Err(p),
        };
        flatten(parts(self), parts(other), Predicate::And)
    }

    /// `self OR other`, flattening nested disjunctions.
    #[must_use]
    pub fn or(self, other: Predicate) -> Predicate {
        let parts = |p| match p {
            Predicate::Or(parts) => Ok(parts),
            p => Err(p),
        };
        flatten(parts(self), parts(other), Predicate::Or)
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
}

/// Joins two operands of an `AND` or an `OR` (`make`) into one list: each is either
/// already such a list (`Ok`, its parts are spliced in) or a single predicate (`Err`).
fn flatten(
    a: std::result::Result<Vec<Predicate>, Predicate>,
    b: std::result::Result<Vec<Predicate>, Predicate>,
    make: fn(Vec<Predicate>) -> Predicate,
) -> Predicate {
    match (a, b) {
        (Ok(mut a), Ok(b)) => {
            a.extend(b);
            make(a)
        }
        (Ok(mut a), Err(b)) => {
            a.push(b);
            make(a)
        }
        (Err(a), Ok(mut b)) => {
            b.insert(0, a);
            make(b)
        }
        (Err(a), Err(b)) => make(vec![a, b]),
    }
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

#[cfg(test)]
mod fixtures {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
    };
    use arrow::datatypes::Int32Type;

    /// Five rows: `id`, `price` (with a null), `category` (a dictionary, with a null)
    /// and `region`.
    pub(super) fn batch() -> RecordBatch {
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
}
