//! Pruning: whether a [`Predicate`] can match any row described by statistics.

use std::cmp::Ordering;

use arrow::datatypes::DataType;

use super::{CmpOp, Predicate, StatsProvider};
use crate::scalar::Scalar;

impl Predicate {
    /// `false` only when no row described by `stats` can satisfy the predicate, so the
    /// file, row group or partition can be skipped. Unknown statistics, unknown columns
    /// and literals that do not convert to the column's type all answer `true`.
    pub fn can_match(&self, stats: &dyn StatsProvider) -> bool {
        // Pruning runs once per file: skip the rewrite when there is no `Not` to remove.
        if self.has_not() {
            self.without_not().can_match_nnf(stats, &[])
        } else {
            self.can_match_nnf(stats, &[])
        }
    }

    fn has_not(&self) -> bool {
        match self {
            Predicate::Not(_) => true,
            Predicate::And(parts) | Predicate::Or(parts) => parts.iter().any(Predicate::has_not),
            _ => false,
        }
    }

    /// `no_nan`: columns whose NaN values cannot satisfy the enclosing conjunction, so
    /// that only their numbers, which the bounds cover, matter.
    fn can_match_nnf(&self, stats: &dyn StatsProvider, no_nan: &[&str]) -> bool {
        match self {
            Predicate::Literal(b) => *b,
            Predicate::And(parts) => {
                let mut inner: Vec<&str> = no_nan.to_vec();
                inner.extend(nan_excluded(parts));
                parts.iter().all(|p| p.can_match_nnf(stats, &inner))
            }
            Predicate::Or(parts) => parts.iter().any(|p| p.can_match_nnf(stats, no_nan)),
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
                // A NaN (not in the bounds) satisfies every comparison with a number
                // but equality.
                let nan = range.bounds_leave_out_nan() && !no_nan.contains(&column.as_str());
                match op {
                    CmpOp::Eq => range.may_contain(&v),
                    // Every value equals `v` only when min = max = v.
                    CmpOp::NotEq => {
                        nan || !(range.min_is(CmpOp::Eq, &v) && range.max_is(CmpOp::Eq, &v))
                    }
                    CmpOp::Lt => nan || range.min_is(CmpOp::Lt, &v),
                    CmpOp::LtEq => nan || range.min_is(CmpOp::LtEq, &v),
                    CmpOp::Gt => nan || range.max_is(CmpOp::Gt, &v),
                    CmpOp::GtEq => nan || range.max_is(CmpOp::GtEq, &v),
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
                    (range.bounds_leave_out_nan() && !no_nan.contains(&column.as_str()))
                        || range.min_is(CmpOp::Lt, &lo)
                        || range.max_is(CmpOp::Gt, &hi)
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
                if *negated && range.bounds_leave_out_nan() && !no_nan.contains(&column.as_str()) {
                    // A NaN is in no list of numbers.
                    true
                } else if *negated {
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

/// The columns a NaN of which fails one of the conjuncts `parts`: one bounded from
/// below and from above by numbers (a NaN is above every number, or below), or
/// compared for equality with one.
fn nan_excluded(parts: &[Predicate]) -> Vec<&str> {
    let number = |v: &Scalar| match v {
        Scalar::Float32(f) => !f.is_nan(),
        Scalar::Float64(f) => !f.is_nan(),
        v => !v.is_null(),
    };
    let mut lower: Vec<&str> = Vec::new();
    let mut upper: Vec<&str> = Vec::new();
    let mut out: Vec<&str> = Vec::new();
    for p in parts {
        match p {
            Predicate::Compare { column, op, value } if number(value) => match op {
                CmpOp::Eq => out.push(column.as_str()),
                CmpOp::Gt | CmpOp::GtEq => lower.push(column.as_str()),
                CmpOp::Lt | CmpOp::LtEq => upper.push(column.as_str()),
                CmpOp::NotEq => {}
            },
            Predicate::Between {
                column,
                low,
                high,
                negated: false,
            } if number(low) && number(high) => out.push(column.as_str()),
            Predicate::InList {
                column,
                values,
                negated: false,
            } if values.iter().all(number) => out.push(column.as_str()),
            _ => {}
        }
    }
    out.extend(lower.into_iter().filter(|c| upper.contains(c)));
    out
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

    /// Whether the column may hold NaN values the bounds do not cover: float bounds
    /// leave NaN out (Parquet's statistics do by the format's rules, and Delta writers
    /// take theirs from them), while Arrow's comparisons order NaN above every number
    /// (below, with the sign bit set), so `x > 1` holds for a NaN. Only equality,
    /// `BETWEEN` and `IN` with numbers can prune such a column.
    fn bounds_leave_out_nan(&self) -> bool {
        matches!(
            self.data_type,
            DataType::Float16 | DataType::Float32 | DataType::Float64
        )
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ops::Not;

    use super::*;
    use crate::predicate::{ColumnStats, col};

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

    /// Float bounds leave NaN out, and Arrow's comparisons (which the rows are filtered
    /// with) order NaN above every number, or below with the sign bit set: only
    /// predicates a NaN cannot satisfy prune by them.
    #[test]
    fn float_bounds_never_prune_what_a_nan_satisfies() {
        let f = Stats(
            10,
            HashMap::from([(
                "x",
                ColumnStats {
                    min: Some(Scalar::Float64(0.5)),
                    max: Some(Scalar::Float64(1.0)),
                    null_count: Some(0),
                },
            )]),
        );
        let nans = arrow::array::Float64Array::from(vec![f64::NAN, -f64::NAN]);
        let batch = arrow::array::RecordBatch::try_from_iter([(
            "x",
            std::sync::Arc::new(nans) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let satisfied_by_nan = |p: &Predicate| p.evaluate(&batch).unwrap().true_count() > 0;
        for p in [
            col("x").gt(1.0),
            col("x").gt_eq(2.0),
            col("x").lt(0.5),
            col("x").lt_eq(0.0),
            col("x").not_eq(1.0),
            col("x").between(0.0, 2.0).not(),
            col("x").in_list([0.75f64]).not(),
            col("x").gt(1.0).or(col("x").lt(0.5)),
        ] {
            assert!(satisfied_by_nan(&p), "{p:?}");
            assert!(p.can_match(&f), "{p:?} pruned a file that may hold NaN");
        }
        // A NaN satisfies none of these: the bounds still prune.
        for p in [
            col("x").eq(2.0),
            col("x").between(1.5, 3.0),
            col("x").in_list([2.0f64, 3.0]),
            col("x").gt(1.0).and(col("x").lt(5.0)),
            col("x")
                .gt_eq(2.0)
                .and(col("x").lt_eq(3.0))
                .and(col("x").not_eq(2.5)),
            col("x").eq(2.0).and(col("x").not_eq(1.0)),
        ] {
            assert!(!satisfied_by_nan(&p), "{p:?}");
            assert!(!p.can_match(&f), "{p:?}");
        }
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
}
