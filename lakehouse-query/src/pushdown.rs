//! Translation between DataFusion expressions and values and the core [`Predicate`] and
//! [`Scalar`].

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, expr::InList};
use lakehouse_core::{CmpOp, Predicate, Scalar};

/// Translates a DataFusion value into a core scalar; `None` for nulls and types the
/// core predicate language has no literal for.
pub(crate) fn scalar_from_df(value: &ScalarValue) -> Option<Scalar> {
    Some(match value {
        ScalarValue::Boolean(Some(v)) => Scalar::Boolean(*v),
        ScalarValue::Int8(Some(v)) => Scalar::Int8(*v),
        ScalarValue::Int16(Some(v)) => Scalar::Int16(*v),
        ScalarValue::Int32(Some(v)) => Scalar::Int32(*v),
        ScalarValue::Int64(Some(v)) => Scalar::Int64(*v),
        ScalarValue::UInt8(Some(v)) => Scalar::UInt8(*v),
        ScalarValue::UInt16(Some(v)) => Scalar::UInt16(*v),
        ScalarValue::UInt32(Some(v)) => Scalar::UInt32(*v),
        ScalarValue::UInt64(Some(v)) => Scalar::UInt64(*v),
        ScalarValue::Float32(Some(v)) => Scalar::Float32(*v),
        ScalarValue::Float64(Some(v)) => Scalar::Float64(*v),
        ScalarValue::Utf8(Some(v))
        | ScalarValue::LargeUtf8(Some(v))
        | ScalarValue::Utf8View(Some(v)) => Scalar::Utf8(v.clone()),
        ScalarValue::Binary(Some(v))
        | ScalarValue::LargeBinary(Some(v))
        | ScalarValue::BinaryView(Some(v)) => Scalar::Binary(v.clone()),
        ScalarValue::Date32(Some(v)) => Scalar::Date32(*v),
        ScalarValue::TimestampSecond(Some(v), tz) => ts(*v, TimeUnit::Second, tz),
        ScalarValue::TimestampMillisecond(Some(v), tz) => ts(*v, TimeUnit::Millisecond, tz),
        ScalarValue::TimestampMicrosecond(Some(v), tz) => ts(*v, TimeUnit::Microsecond, tz),
        ScalarValue::TimestampNanosecond(Some(v), tz) => ts(*v, TimeUnit::Nanosecond, tz),
        ScalarValue::Decimal128(Some(v), precision, scale) => Scalar::Decimal128 {
            value: *v,
            precision: *precision,
            scale: *scale,
        },
        ScalarValue::Dictionary(_, inner) => return scalar_from_df(inner),
        _ => return None,
    })
}

fn ts(value: i64, unit: TimeUnit, tz: &Option<Arc<str>>) -> Scalar {
    Scalar::Timestamp {
        value,
        unit,
        tz: tz.clone(),
    }
}

/// Translates a core scalar into a DataFusion value.
pub(crate) fn scalar_to_df(value: &Scalar) -> Option<ScalarValue> {
    let array = value.to_array();
    ScalarValue::try_from_array(&array, 0).ok()
}

/// A column reference of `expr`, if it is one (through casts that keep the value).
fn column_name<'a>(expr: &'a Expr, schema: &Schema) -> Option<(&'a str, DataType)> {
    match expr {
        Expr::Column(c) => {
            let field = schema.field_with_name(&c.name).ok()?;
            Some((c.name.as_str(), field.data_type().clone()))
        }
        _ => None,
    }
}

/// A literal of `expr` brought to `data_type`, if it is a non-null literal.
fn literal(expr: &Expr, data_type: &DataType) -> Option<Scalar> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    let scalar = scalar_from_df(value)?;
    if scalar.data_type() == *data_type {
        return Some(scalar);
    }
    let target = match data_type {
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::Dictionary(_, v) => v.as_ref().clone(),
        other => other.clone(),
    };
    if scalar.data_type() == target {
        return Some(scalar);
    }
    let cast = scalar.cast_to(&target).ok()?;
    // A lossy cast (3.5 to an integer column) would change the meaning.
    let back = cast.cast_to(&scalar.data_type()).ok()?;
    (back == scalar).then_some(cast)
}

fn cmp_op(op: Operator) -> Option<CmpOp> {
    Some(match op {
        Operator::Eq => CmpOp::Eq,
        Operator::NotEq => CmpOp::NotEq,
        Operator::Lt => CmpOp::Lt,
        Operator::LtEq => CmpOp::LtEq,
        Operator::Gt => CmpOp::Gt,
        Operator::GtEq => CmpOp::GtEq,
        _ => return None,
    })
}

/// Translates `expr` into a predicate selecting exactly the rows for which `expr` is
/// true, or `None` if it has no exact translation.
pub(crate) fn to_predicate(expr: &Expr, schema: &Schema) -> Option<Predicate> {
    match expr {
        Expr::Literal(ScalarValue::Boolean(Some(b)), _) => Some(Predicate::Literal(*b)),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => Some(to_predicate(left, schema)?.and(to_predicate(right, schema)?)),
            Operator::Or => Some(to_predicate(left, schema)?.or(to_predicate(right, schema)?)),
            _ => {
                let op = cmp_op(*op)?;
                if let Some((column, dt)) = column_name(left, schema) {
                    let value = literal(right, &dt)?;
                    Some(Predicate::Compare {
                        column: column.to_owned(),
                        op,
                        value,
                    })
                } else {
                    let (column, dt) = column_name(right, schema)?;
                    let value = literal(left, &dt)?;
                    Some(Predicate::Compare {
                        column: column.to_owned(),
                        op: op.swap(),
                        value,
                    })
                }
            }
        },
        Expr::Between(Between {
            expr,
            negated,
            low,
            high,
        }) => {
            let (column, dt) = column_name(expr, schema)?;
            Some(Predicate::Between {
                column: column.to_owned(),
                low: literal(low, &dt)?,
                high: literal(high, &dt)?,
                negated: *negated,
            })
        }
        Expr::InList(InList {
            expr,
            list,
            negated,
        }) => {
            let (column, dt) = column_name(expr, schema)?;
            let values = list
                .iter()
                .map(|e| literal(e, &dt))
                .collect::<Option<Vec<_>>>()?;
            Some(Predicate::InList {
                column: column.to_owned(),
                values,
                negated: *negated,
            })
        }
        Expr::IsNull(inner) => {
            let (column, _) = column_name(inner, schema)?;
            Some(Predicate::IsNull {
                column: column.to_owned(),
                negated: false,
            })
        }
        Expr::IsNotNull(inner) => {
            let (column, _) = column_name(inner, schema)?;
            Some(Predicate::IsNull {
                column: column.to_owned(),
                negated: true,
            })
        }
        Expr::Not(inner) => Some(Predicate::Not(Box::new(to_predicate(inner, schema)?))),
        _ => None,
    }
}

/// A predicate implied by `expr` (every row where `expr` is true satisfies it), for
/// pruning when `expr` has no exact translation: the translatable conjuncts of an `AND`.
pub(crate) fn to_pruning_predicate(expr: &Expr, schema: &Schema) -> Option<Predicate> {
    if let Some(p) = to_predicate(expr, schema) {
        return Some(p);
    }
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => match (
            to_pruning_predicate(left, schema),
            to_pruning_predicate(right, schema),
        ) {
            (Some(l), Some(r)) => Some(l.and(r)),
            (Some(p), None) | (None, Some(p)) => Some(p),
            (None, None) => None,
        },
        _ => None,
    }
}

/// Whether `p` holds a `NOT`: SQL's three-valued `NOT` over nulls may differ from a
/// source's evaluation, so such predicates are never trusted as exact.
pub(crate) fn has_not(p: &Predicate) -> bool {
    match p {
        Predicate::Not(_) => true,
        Predicate::And(parts) | Predicate::Or(parts) => parts.iter().any(has_not),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;
    use datafusion::prelude::{col, lit};
    use lakehouse_core::col as pcol;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ])
    }

    #[test]
    fn translates_comparisons_both_ways() {
        let s = schema();
        assert_eq!(
            to_predicate(&col("a").gt(lit(5i64)), &s),
            Some(pcol("a").gt(5i64))
        );
        assert_eq!(
            to_predicate(&lit(5i64).gt(col("a")), &s),
            Some(pcol("a").lt(5i64))
        );
        assert_eq!(
            to_predicate(&col("s").in_list(vec![lit("x"), lit("y")], false), &s),
            Some(pcol("s").in_list(["x", "y"]))
        );
        // Int32 literals are widened to the column's type.
        assert_eq!(
            to_predicate(&col("a").eq(lit(3i32)), &s),
            Some(pcol("a").eq(3i64))
        );
    }

    #[test]
    fn refuses_what_it_cannot_express() {
        let s = schema();
        assert_eq!(
            to_predicate(&(col("a") + lit(1i64)).gt(lit(5i64)), &s),
            None
        );
        assert_eq!(to_predicate(&col("a").gt(lit(1.5f64)), &s), None);
        let mixed = col("a")
            .gt(lit(1i64))
            .and((col("a") + lit(1i64)).gt(lit(5i64)));
        assert_eq!(to_predicate(&mixed, &s), None);
        assert_eq!(to_pruning_predicate(&mixed, &s), Some(pcol("a").gt(1i64)));
        let or = col("a")
            .gt(lit(1i64))
            .or((col("a") + lit(1i64)).gt(lit(5i64)));
        assert_eq!(to_pruning_predicate(&or, &s), None);
    }
}
