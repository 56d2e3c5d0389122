//! [`ColumnStats`] and [`StatsProvider`]: the statistics a source reports for pruning.

use std::cmp::Ordering;

use arrow::array::{
    Array, BinaryArray, BinaryViewArray, BooleanArray, Date32Array, Date64Array, Decimal128Array,
    Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, LargeBinaryArray,
    LargeStringArray, StringArray, StringViewArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampNanosecondArray, TimestampSecondArray, UInt8Array,
    UInt16Array, UInt32Array, UInt64Array,
};
use arrow::datatypes::DataType;

use crate::error::Result;
use crate::scalar::Scalar;

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
        let min_max =
            if array.len() > array.null_count() && !matches!(array.data_type(), DataType::Null) {
                extremes(array)?
            } else {
                None
            };
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

/// Where [`Predicate::can_match`](super::Predicate::can_match) looks up statistics: a
/// file, a row group or a partition.
pub trait StatsProvider {
    /// Number of rows, if known.
    fn row_count(&self) -> Option<u64>;
    /// Statistics of `column`, or `None` when nothing is known about it.
    fn column_stats(&self, column: &str) -> Option<ColumnStats>;
}

/// Rows holding the smallest and the largest non-null value of `array` (the first of
/// equal ones), in the order `make_comparator` defines (floats by total order, strings
/// and binary bytewise). Common types are scanned by typed loops; the rest compare
/// through a dynamic comparator.
fn extremes(array: &dyn Array) -> Result<Option<(usize, usize)>> {
    macro_rules! typed {
        ($($t:ty),*) => {
            $(if let Some(a) = array.as_any().downcast_ref::<$t>() {
                return Ok(arg_extremes(a.len(), |i| a.is_valid(i), |i| a.value(i)));
            })*
        };
    }
    typed!(
        Int8Array,
        Int16Array,
        Int32Array,
        Int64Array,
        UInt8Array,
        UInt16Array,
        UInt32Array,
        UInt64Array,
        Date32Array,
        Date64Array,
        TimestampSecondArray,
        TimestampMillisecondArray,
        TimestampMicrosecondArray,
        TimestampNanosecondArray,
        Decimal128Array
    );
    if let Some(a) = array.as_any().downcast_ref::<Float32Array>() {
        return Ok(arg_extremes(
            a.len(),
            |i| a.is_valid(i),
            |i| TotalF32(a.value(i)),
        ));
    }
    if let Some(a) = array.as_any().downcast_ref::<Float64Array>() {
        return Ok(arg_extremes(
            a.len(),
            |i| a.is_valid(i),
            |i| TotalF64(a.value(i)),
        ));
    }
    typed!(
        StringArray,
        LargeStringArray,
        StringViewArray,
        BinaryArray,
        LargeBinaryArray,
        BinaryViewArray,
        BooleanArray
    );
    let compare = arrow::array::make_comparator(array, array, Default::default())?;
    let mut min_max: Option<(usize, usize)> = None;
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
    Ok(min_max)
}

/// The first rows of the smallest and largest valid values among `0..len`.
fn arg_extremes<V: PartialOrd>(
    len: usize,
    valid: impl Fn(usize) -> bool,
    value: impl Fn(usize) -> V,
) -> Option<(usize, usize)> {
    let mut rows = (0..len).filter(|&i| valid(i));
    let first = rows.next()?;
    let (mut lo, mut hi) = (first, first);
    let (mut lo_v, mut hi_v) = (value(first), value(first));
    for i in rows {
        let v = value(i);
        if v < lo_v {
            lo = i;
            lo_v = v;
        } else if v > hi_v {
            hi = i;
            hi_v = v;
        }
    }
    Some((lo, hi))
}

/// `f32` ordered by `total_cmp`, as Arrow's comparators order floats.
#[derive(PartialEq)]
struct TotalF32(f32);

impl PartialOrd for TotalF32 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.0.total_cmp(&other.0))
    }
}

/// `f64` ordered by `total_cmp`, as Arrow's comparators order floats.
#[derive(PartialEq)]
struct TotalF64(f64);

impl PartialOrd for TotalF64 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.0.total_cmp(&other.0))
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::batch;
    use super::*;

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

    /// The row search the comparator defines, for checking the typed loops.
    fn by_comparator(array: &dyn Array) -> Option<(usize, usize)> {
        let compare = arrow::array::make_comparator(array, array, Default::default()).unwrap();
        let mut out: Option<(usize, usize)> = None;
        for r in (0..array.len()).filter(|&r| array.is_valid(r)) {
            out = Some(match out {
                None => (r, r),
                Some((lo, hi)) => (
                    if compare(r, lo) == Ordering::Less {
                        r
                    } else {
                        lo
                    },
                    if compare(r, hi) == Ordering::Greater {
                        r
                    } else {
                        hi
                    },
                ),
            });
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn typed_extremes_match_the_comparator(
            ints in proptest::collection::vec(proptest::option::of(-5i64..5), 0..40),
            floats in proptest::collection::vec(
                proptest::option::of(proptest::sample::select(vec![
                    f64::NAN, -f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0, 1.5, -2.5,
                ])),
                0..40,
            ),
            strings in proptest::collection::vec(proptest::option::of("[ab]{0,3}"), 0..40),
            bools in proptest::collection::vec(proptest::option::of(proptest::bool::ANY), 0..40),
        ) {
            let arrays: Vec<arrow::array::ArrayRef> = vec![
                std::sync::Arc::new(Int64Array::from(ints.clone())),
                std::sync::Arc::new(Float64Array::from(floats)),
                std::sync::Arc::new(StringArray::from(strings.clone())),
                std::sync::Arc::new(StringViewArray::from(strings)),
                std::sync::Arc::new(BooleanArray::from(bools)),
                std::sync::Arc::new(
                    TimestampMicrosecondArray::from(ints).with_timezone("UTC"),
                ),
            ];
            for a in arrays {
                proptest::prop_assert_eq!(extremes(a.as_ref()).unwrap(), by_comparator(a.as_ref()));
            }
        }
    }
}
