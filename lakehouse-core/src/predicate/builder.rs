//! [`col`] and [`ColumnRef`]: building comparisons from a column name.

use super::{CmpOp, Predicate};
use crate::scalar::Scalar;

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
