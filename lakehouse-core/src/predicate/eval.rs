//! Evaluating a [`Predicate`] on the rows of a batch.

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, new_null_array};
use arrow::compute::kernels::{boolean, cmp};
use arrow::datatypes::DataType;

use super::{CmpOp, Predicate};
use crate::error::{Error, ErrorKind, Result};
use crate::scalar::Scalar;

impl Predicate {
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

#[cfg(test)]
mod tests {
    use std::ops::Not;

    use arrow::array::Int64Array;
    use arrow::datatypes::{Field, Schema};

    use super::super::fixtures::batch;
    use super::*;
    use crate::ErrorKind;
    use crate::predicate::col;

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
}
