//! [`Scalar`]: one typed value, as used in predicates and statistics.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, LargeStringArray,
    NullArray, StringArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray, UInt8Array, UInt16Array, UInt32Array,
    UInt64Array, new_null_array,
};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

use crate::error::{Error, ErrorKind, Result};

/// One value of an Arrow scalar type, or a typeless `NULL`.
///
/// Used for predicate literals and for the minimum / maximum statistics that sources
/// report. Two scalars order only when they have the same variant (and, for timestamps
/// and decimals, the same unit or scale); use [`Scalar::cast_to`] to bring a literal to a
/// column's type first. Floating-point `NaN` compares with nothing.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Scalar {
    /// SQL `NULL` of no particular type.
    Null,
    /// `Boolean`.
    Boolean(bool),
    /// `Int8`.
    Int8(i8),
    /// `Int16`.
    Int16(i16),
    /// `Int32`.
    Int32(i32),
    /// `Int64`.
    Int64(i64),
    /// `UInt8`.
    UInt8(u8),
    /// `UInt16`.
    UInt16(u16),
    /// `UInt32`.
    UInt32(u32),
    /// `UInt64`.
    UInt64(u64),
    /// `Float32`.
    Float32(f32),
    /// `Float64`.
    Float64(f64),
    /// `Utf8` (also stands for `LargeUtf8` and dictionary-encoded strings).
    Utf8(String),
    /// `Binary`.
    Binary(Vec<u8>),
    /// `Date32`: days since 1970-01-01.
    Date32(i32),
    /// `Timestamp(unit, tz)`: ticks of `unit` since the Unix epoch.
    Timestamp {
        /// Ticks since the epoch.
        value: i64,
        /// Length of one tick.
        unit: TimeUnit,
        /// Time zone, if any.
        tz: Option<Arc<str>>,
    },
    /// `Decimal128(precision, scale)`: `value / 10^scale`.
    Decimal128 {
        /// Unscaled value.
        value: i128,
        /// Total number of digits.
        precision: u8,
        /// Digits after the decimal point.
        scale: i8,
    },
}

impl Scalar {
    /// A UTC-less microsecond timestamp, the most common event-time type.
    pub fn timestamp_micros(value: i64) -> Self {
        Scalar::Timestamp {
            value,
            unit: TimeUnit::Microsecond,
            tz: None,
        }
    }

    /// `true` for [`Scalar::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Scalar::Null)
    }

    /// The Arrow type of this value (`Null` for [`Scalar::Null`]).
    pub fn data_type(&self) -> DataType {
        match self {
            Scalar::Null => DataType::Null,
            Scalar::Boolean(_) => DataType::Boolean,
            Scalar::Int8(_) => DataType::Int8,
            Scalar::Int16(_) => DataType::Int16,
            Scalar::Int32(_) => DataType::Int32,
            Scalar::Int64(_) => DataType::Int64,
            Scalar::UInt8(_) => DataType::UInt8,
            Scalar::UInt16(_) => DataType::UInt16,
            Scalar::UInt32(_) => DataType::UInt32,
            Scalar::UInt64(_) => DataType::UInt64,
            Scalar::Float32(_) => DataType::Float32,
            Scalar::Float64(_) => DataType::Float64,
            Scalar::Utf8(_) => DataType::Utf8,
            Scalar::Binary(_) => DataType::Binary,
            Scalar::Date32(_) => DataType::Date32,
            Scalar::Timestamp { unit, tz, .. } => DataType::Timestamp(*unit, tz.clone()),
            Scalar::Decimal128 {
                precision, scale, ..
            } => DataType::Decimal128(*precision, *scale),
        }
    }

    /// A one-element Arrow array holding this value.
    pub fn to_array(&self) -> ArrayRef {
        match self {
            Scalar::Null => Arc::new(NullArray::new(1)),
            Scalar::Boolean(v) => Arc::new(BooleanArray::from(vec![*v])),
            Scalar::Int8(v) => Arc::new(Int8Array::from(vec![*v])),
            Scalar::Int16(v) => Arc::new(Int16Array::from(vec![*v])),
            Scalar::Int32(v) => Arc::new(Int32Array::from(vec![*v])),
            Scalar::Int64(v) => Arc::new(Int64Array::from(vec![*v])),
            Scalar::UInt8(v) => Arc::new(UInt8Array::from(vec![*v])),
            Scalar::UInt16(v) => Arc::new(UInt16Array::from(vec![*v])),
            Scalar::UInt32(v) => Arc::new(UInt32Array::from(vec![*v])),
            Scalar::UInt64(v) => Arc::new(UInt64Array::from(vec![*v])),
            Scalar::Float32(v) => Arc::new(Float32Array::from(vec![*v])),
            Scalar::Float64(v) => Arc::new(Float64Array::from(vec![*v])),
            Scalar::Utf8(v) => Arc::new(StringArray::from(vec![v.as_str()])),
            Scalar::Binary(v) => Arc::new(BinaryArray::from(vec![v.as_slice()])),
            Scalar::Date32(v) => Arc::new(Date32Array::from(vec![*v])),
            Scalar::Timestamp { value, unit, tz } => match unit {
                TimeUnit::Second => {
                    Arc::new(TimestampSecondArray::from(vec![*value]).with_timezone_opt(tz.clone()))
                }
                TimeUnit::Millisecond => Arc::new(
                    TimestampMillisecondArray::from(vec![*value]).with_timezone_opt(tz.clone()),
                ),
                TimeUnit::Microsecond => Arc::new(
                    TimestampMicrosecondArray::from(vec![*value]).with_timezone_opt(tz.clone()),
                ),
                TimeUnit::Nanosecond => Arc::new(
                    TimestampNanosecondArray::from(vec![*value]).with_timezone_opt(tz.clone()),
                ),
            },
            Scalar::Decimal128 {
                value,
                precision,
                scale,
            } => Arc::new(
                Decimal128Array::from(vec![*value])
                    .with_precision_and_scale(*precision, *scale)
                    .unwrap_or_else(|_| Decimal128Array::from(vec![*value])),
            ),
        }
    }

    /// A one-element array of type `data_type`, or a null of that type for [`Scalar::Null`].
    pub fn to_array_of(&self, data_type: &DataType) -> Result<ArrayRef> {
        if self.is_null() {
            return Ok(new_null_array(data_type, 1));
        }
        let array = self.to_array();
        if array.data_type() == data_type {
            return Ok(array);
        }
        let options = arrow::compute::CastOptions {
            safe: false,
            ..Default::default()
        };
        arrow::compute::cast_with_options(&array, data_type, &options).map_err(|e| {
            Error::new(
                ErrorKind::TypeMismatch,
                format!("cannot convert {self} to {data_type}"),
            )
            .with_source(e)
        })
    }

    /// Reads the value at `row` of `array`; a null slot gives [`Scalar::Null`].
    ///
    /// Dictionary arrays are decoded; `LargeUtf8` and `Utf8View` read as [`Scalar::Utf8`].
    pub fn try_from_array(array: &dyn Array, row: usize) -> Result<Scalar> {
        if row >= array.len() {
            return Err(Error::invalid(format!(
                "row {row} is out of bounds for an array of length {}",
                array.len()
            )));
        }
        if array.is_null(row) {
            return Ok(Scalar::Null);
        }
        let v = match array.data_type() {
            DataType::Null => Scalar::Null,
            DataType::Boolean => Scalar::Boolean(array.as_boolean().value(row)),
            DataType::Int8 => Scalar::Int8(array.as_primitive::<Int8Type>().value(row)),
            DataType::Int16 => Scalar::Int16(array.as_primitive::<Int16Type>().value(row)),
            DataType::Int32 => Scalar::Int32(array.as_primitive::<Int32Type>().value(row)),
            DataType::Int64 => Scalar::Int64(array.as_primitive::<Int64Type>().value(row)),
            DataType::UInt8 => Scalar::UInt8(array.as_primitive::<UInt8Type>().value(row)),
            DataType::UInt16 => Scalar::UInt16(array.as_primitive::<UInt16Type>().value(row)),
            DataType::UInt32 => Scalar::UInt32(array.as_primitive::<UInt32Type>().value(row)),
            DataType::UInt64 => Scalar::UInt64(array.as_primitive::<UInt64Type>().value(row)),
            DataType::Float32 => Scalar::Float32(array.as_primitive::<Float32Type>().value(row)),
            DataType::Float64 => Scalar::Float64(array.as_primitive::<Float64Type>().value(row)),
            DataType::Utf8 => Scalar::Utf8(array.as_string::<i32>().value(row).to_owned()),
            DataType::LargeUtf8 => Scalar::Utf8(
                array
                    .as_any()
                    .downcast_ref::<LargeStringArray>()
                    .map(|a| a.value(row).to_owned())
                    .ok_or_else(|| Error::new(ErrorKind::Internal, "LargeUtf8 downcast"))?,
            ),
            DataType::Utf8View => Scalar::Utf8(array.as_string_view().value(row).to_owned()),
            DataType::Binary => Scalar::Binary(array.as_binary::<i32>().value(row).to_vec()),
            DataType::LargeBinary => Scalar::Binary(array.as_binary::<i64>().value(row).to_vec()),
            DataType::Date32 => Scalar::Date32(array.as_primitive::<Date32Type>().value(row)),
            DataType::Timestamp(unit, tz) => {
                let value = match unit {
                    TimeUnit::Second => array.as_primitive::<TimestampSecondType>().value(row),
                    TimeUnit::Millisecond => {
                        array.as_primitive::<TimestampMillisecondType>().value(row)
                    }
                    TimeUnit::Microsecond => {
                        array.as_primitive::<TimestampMicrosecondType>().value(row)
                    }
                    TimeUnit::Nanosecond => {
                        array.as_primitive::<TimestampNanosecondType>().value(row)
                    }
                };
                Scalar::Timestamp {
                    value,
                    unit: *unit,
                    tz: tz.clone(),
                }
            }
            DataType::Decimal128(precision, scale) => Scalar::Decimal128 {
                value: array.as_primitive::<Decimal128Type>().value(row),
                precision: *precision,
                scale: *scale,
            },
            DataType::Dictionary(_, value_type) => {
                let one = array.slice(row, 1);
                let decoded = arrow::compute::cast(&one, value_type)?;
                return Scalar::try_from_array(decoded.as_ref(), 0);
            }
            other => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("no scalar representation for type {other}"),
                ));
            }
        };
        Ok(v)
    }

    /// This value converted to `data_type`, with an error when it does not fit
    /// (`300` to `Int8`, `"abc"` to `Int64`).
    pub fn cast_to(&self, data_type: &DataType) -> Result<Scalar> {
        if self.is_null() || &self.data_type() == data_type {
            return Ok(self.clone());
        }
        let target = match data_type {
            // Strings of every layout and dictionaries of strings compare as `Utf8`.
            DataType::LargeUtf8 | DataType::Utf8View => &DataType::Utf8,
            DataType::LargeBinary | DataType::BinaryView => &DataType::Binary,
            DataType::Dictionary(_, value) => value.as_ref(),
            other => other,
        };
        if &self.data_type() == target {
            return Ok(self.clone());
        }
        let array = self.to_array_of(target)?;
        Scalar::try_from_array(array.as_ref(), 0)
    }

    /// Orders two values of the same type; `None` when the types differ, either is null,
    /// or a float is `NaN`.
    pub fn partial_cmp_value(&self, other: &Scalar) -> Option<Ordering> {
        use Scalar::*;
        match (self, other) {
            (Boolean(a), Boolean(b)) => a.partial_cmp(b),
            (Int8(a), Int8(b)) => a.partial_cmp(b),
            (Int16(a), Int16(b)) => a.partial_cmp(b),
            (Int32(a), Int32(b)) => a.partial_cmp(b),
            (Int64(a), Int64(b)) => a.partial_cmp(b),
            (UInt8(a), UInt8(b)) => a.partial_cmp(b),
            (UInt16(a), UInt16(b)) => a.partial_cmp(b),
            (UInt32(a), UInt32(b)) => a.partial_cmp(b),
            (UInt64(a), UInt64(b)) => a.partial_cmp(b),
            (Float32(a), Float32(b)) => a.partial_cmp(b),
            (Float64(a), Float64(b)) => a.partial_cmp(b),
            (Utf8(a), Utf8(b)) => a.partial_cmp(b),
            (Binary(a), Binary(b)) => a.partial_cmp(b),
            (Date32(a), Date32(b)) => a.partial_cmp(b),
            (
                Timestamp {
                    value: a, unit: ua, ..
                },
                Timestamp {
                    value: b, unit: ub, ..
                },
            ) if ua == ub => a.partial_cmp(b),
            (
                Decimal128 {
                    value: a,
                    scale: sa,
                    ..
                },
                Decimal128 {
                    value: b,
                    scale: sb,
                    ..
                },
            ) if sa == sb => a.partial_cmp(b),
            _ => None,
        }
    }
}

impl fmt::Display for Scalar {
    /// Writes the value as a SQL literal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Null => f.write_str("NULL"),
            Scalar::Boolean(v) => f.write_str(if *v { "TRUE" } else { "FALSE" }),
            Scalar::Int8(v) => write!(f, "{v}"),
            Scalar::Int16(v) => write!(f, "{v}"),
            Scalar::Int32(v) => write!(f, "{v}"),
            Scalar::Int64(v) => write!(f, "{v}"),
            Scalar::UInt8(v) => write!(f, "{v}"),
            Scalar::UInt16(v) => write!(f, "{v}"),
            Scalar::UInt32(v) => write!(f, "{v}"),
            Scalar::UInt64(v) => write!(f, "{v}"),
            Scalar::Float32(v) => write!(f, "{v:?}"),
            Scalar::Float64(v) => write!(f, "{v:?}"),
            Scalar::Utf8(v) => write!(f, "'{}'", v.replace('\'', "''")),
            Scalar::Binary(v) => {
                f.write_str("X'")?;
                for b in v {
                    write!(f, "{b:02X}")?;
                }
                f.write_str("'")
            }
            Scalar::Date32(v) => write!(f, "DATE {v}"),
            Scalar::Timestamp { value, unit, tz } => {
                let unit = match unit {
                    TimeUnit::Second => "s",
                    TimeUnit::Millisecond => "ms",
                    TimeUnit::Microsecond => "us",
                    TimeUnit::Nanosecond => "ns",
                };
                match tz {
                    Some(tz) => write!(f, "TIMESTAMP({unit}, {tz}) {value}"),
                    None => write!(f, "TIMESTAMP({unit}) {value}"),
                }
            }
            Scalar::Decimal128 { value, scale, .. } => {
                if *scale <= 0 {
                    write!(f, "{value}")?;
                    for _ in 0..(-*scale) {
                        f.write_str("0")?;
                    }
                    Ok(())
                } else {
                    // By digits: `10^scale` does not fit an i128 past scale 38.
                    let scale = *scale as usize;
                    let sign = if *value < 0 { "-" } else { "" };
                    let digits = value.unsigned_abs().to_string();
                    let padded = format!("{digits:0>width$}", width = scale + 1);
                    let (int, frac) = padded.split_at(padded.len() - scale);
                    write!(f, "{sign}{int}.{frac}")
                }
            }
        }
    }
}

macro_rules! from_native {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for Scalar {
            fn from(v: $t) -> Self {
                Scalar::$variant(v)
            }
        })*
    };
}

from_native!(
    bool => Boolean,
    i8 => Int8,
    i16 => Int16,
    i32 => Int32,
    i64 => Int64,
    u8 => UInt8,
    u16 => UInt16,
    u32 => UInt32,
    u64 => UInt64,
    f32 => Float32,
    f64 => Float64,
    String => Utf8,
    Vec<u8> => Binary,
);

impl From<&str> for Scalar {
    fn from(v: &str) -> Self {
        Scalar::Utf8(v.to_owned())
    }
}

impl<T: Into<Scalar>> From<Option<T>> for Scalar {
    fn from(v: Option<T>) -> Self {
        v.map_or(Scalar::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_arrays() {
        let values = [
            Scalar::Boolean(true),
            Scalar::Int8(-3),
            Scalar::Int64(i64::MIN),
            Scalar::UInt64(u64::MAX),
            Scalar::Float64(2.5),
            Scalar::Utf8("Zürich/../x".into()),
            Scalar::Binary(vec![0, 255]),
            Scalar::Date32(19_000),
            Scalar::timestamp_micros(1_700_000_000_000_000),
            Scalar::Decimal128 {
                value: -12345,
                precision: 10,
                scale: 2,
            },
        ];
        for v in values {
            let back = Scalar::try_from_array(v.to_array().as_ref(), 0).unwrap();
            assert_eq!(back, v);
        }
    }

    #[test]
    fn casts_and_orders() {
        let lit = Scalar::Int32(7).cast_to(&DataType::Int64).unwrap();
        assert_eq!(lit, Scalar::Int64(7));
        assert_eq!(
            lit.partial_cmp_value(&Scalar::Int64(9)),
            Some(Ordering::Less)
        );
        assert_eq!(lit.partial_cmp_value(&Scalar::Int32(9)), None);
        assert_eq!(
            Scalar::Int64(300)
                .cast_to(&DataType::Int8)
                .unwrap_err()
                .kind(),
            ErrorKind::TypeMismatch
        );
        assert_eq!(
            Scalar::from("abc")
                .cast_to(&DataType::Int64)
                .unwrap_err()
                .kind(),
            ErrorKind::TypeMismatch
        );
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        assert_eq!(Scalar::from("a").cast_to(&dict).unwrap(), Scalar::from("a"));
        assert_eq!(
            Scalar::Float64(f64::NAN).partial_cmp_value(&Scalar::Float64(1.0)),
            None
        );
    }

    #[test]
    fn displays_sql_literals() {
        assert_eq!(Scalar::from("it's").to_string(), "'it''s'");
        assert_eq!(
            Scalar::Decimal128 {
                value: -105,
                precision: 5,
                scale: 2
            }
            .to_string(),
            "-1.05"
        );
        assert_eq!(Scalar::Null.to_string(), "NULL");
    }

    #[test]
    fn reads_dictionary_and_nulls() {
        use arrow::array::DictionaryArray;
        let dict: DictionaryArray<Int32Type> =
            vec![Some("a"), None, Some("b")].into_iter().collect();
        assert_eq!(Scalar::try_from_array(&dict, 2).unwrap(), Scalar::from("b"));
        assert_eq!(Scalar::try_from_array(&dict, 1).unwrap(), Scalar::Null);
        assert_eq!(
            Scalar::try_from_array(&dict, 9).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}
