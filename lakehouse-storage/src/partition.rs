//! Partitioning: which directory a row goes to, and how partition values are spelled.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Date32Array, Int32Array, StringArray, new_null_array,
};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Field, Int8Type, Int16Type, Int32Type, Int64Type, Schema, SchemaRef,
    TimeUnit, TimestampMicrosecondType,
};
use chrono::{Datelike, Timelike};
use lakehouse_core::{CmpOp, Error, ErrorKind, Predicate, Result, Scalar};

use crate::log::{format_date, format_decimal, format_timestamp_partition, parse_date};

/// How a partition column's value is derived from a source column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transform {
    /// The source column itself (a category, a region): the column is the partition
    /// column.
    Identity,
    /// The calendar year of a timestamp or date (`Int32`, e.g. `2026`).
    Year,
    /// The calendar month of a timestamp or date (`Utf8`, `2026-11`).
    Month,
    /// The calendar day of a timestamp or date (`Date32`).
    Day,
    /// The hour of a timestamp (`Utf8`, `2026-11-25-14`).
    Hour,
    /// `hash(value) mod n` (`Int32` in `0..n`): spreads a high-cardinality key over `n`
    /// buckets so that a point lookup reads one bucket.
    Bucket(u32),
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::Identity => f.write_str("identity"),
            Transform::Year => f.write_str("year"),
            Transform::Month => f.write_str("month"),
            Transform::Day => f.write_str("day"),
            Transform::Hour => f.write_str("hour"),
            Transform::Bucket(n) => write!(f, "bucket[{n}]"),
        }
    }
}

impl Transform {
    fn parse(s: &str) -> Option<Transform> {
        Some(match s {
            "identity" => Transform::Identity,
            "year" => Transform::Year,
            "month" => Transform::Month,
            "day" => Transform::Day,
            "hour" => Transform::Hour,
            other => Transform::Bucket(
                other
                    .strip_prefix("bucket[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)?,
            ),
        })
    }

    /// The type of the partition column for a source of type `source`.
    fn output_type(self, source: &DataType) -> DataType {
        match self {
            Transform::Identity => source.clone(),
            Transform::Year | Transform::Bucket(_) => DataType::Int32,
            Transform::Month | Transform::Hour => DataType::Utf8,
            Transform::Day => DataType::Date32,
        }
    }

    /// Whether `t(a) <= t(b)` whenever `a <= b` (so range predicates carry over).
    fn monotonic(self) -> bool {
        !matches!(self, Transform::Bucket(_))
    }
}

/// One partition column: its name, the column it is derived from and how.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionField {
    /// Name of the partition column (equals `source` for [`Transform::Identity`]).
    pub name: String,
    /// The column the value comes from.
    pub source: String,
    /// How the value is derived.
    pub transform: Transform,
}

impl PartitionField {
    /// Partition by the column's own value.
    pub fn identity(column: impl Into<String>) -> Self {
        let column = column.into();
        PartitionField {
            name: column.clone(),
            source: column,
            transform: Transform::Identity,
        }
    }

    /// Partition by a value derived from `source`, stored in a new column `name`.
    pub fn derived(
        name: impl Into<String>,
        source: impl Into<String>,
        transform: Transform,
    ) -> Self {
        PartitionField {
            name: name.into(),
            source: source.into(),
            transform,
        }
    }

    /// Partition by the day of a timestamp or date column, in a column `{source}_day`.
    pub fn day(source: impl Into<String>) -> Self {
        let source = source.into();
        Self::derived(format!("{source}_day"), source, Transform::Day)
    }

    /// Partition by the hour of a timestamp column, in a column `{source}_hour`.
    pub fn hour(source: impl Into<String>) -> Self {
        let source = source.into();
        Self::derived(format!("{source}_hour"), source, Transform::Hour)
    }

    /// Partition by the month, in a column `{source}_month`.
    pub fn month(source: impl Into<String>) -> Self {
        let source = source.into();
        Self::derived(format!("{source}_month"), source, Transform::Month)
    }

    /// Partition by the year, in a column `{source}_year`.
    pub fn year(source: impl Into<String>) -> Self {
        let source = source.into();
        Self::derived(format!("{source}_year"), source, Transform::Year)
    }

    /// Partition by `hash(source) mod buckets`, in a column `{source}_bucket`.
    pub fn bucket(source: impl Into<String>, buckets: u32) -> Self {
        let source = source.into();
        Self::derived(
            format!("{source}_bucket"),
            source,
            Transform::Bucket(buckets),
        )
    }
}

/// The partition columns of a table, in directory order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PartitionSpec {
    pub(crate) fields: Vec<PartitionField>,
}

/// Configuration key prefix under which the transforms are kept in the table metadata.
pub(crate) const CONFIG_PREFIX: &str = "lakehouse.partition.";

impl PartitionSpec {
    /// Checks the spec against the user's columns and returns the table schema: the user
    /// columns followed by the derived partition columns.
    pub(crate) fn table_schema(&self, user: &Schema) -> Result<SchemaRef> {
        let mut fields: Vec<Field> = user.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut names = std::collections::HashSet::new();
        for p in &self.fields {
            if !names.insert(p.name.as_str()) {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("partition column {} is named twice", p.name),
                )
                .with_column(&p.name));
            }
            let source = user.field_with_name(&p.source).map_err(|_| {
                Error::new(
                    ErrorKind::ColumnNotFound,
                    format!("partition source column {} is not in the schema", p.source),
                )
                .with_column(&p.source)
            })?;
            let st = source.data_type();
            let ok = match p.transform {
                Transform::Identity => {
                    p.name == p.source
                        && matches!(
                            st,
                            DataType::Utf8
                                | DataType::Boolean
                                | DataType::Int8
                                | DataType::Int16
                                | DataType::Int32
                                | DataType::Int64
                                | DataType::Date32
                                | DataType::Timestamp(TimeUnit::Microsecond, _)
                                | DataType::Decimal128(..)
                        )
                }
                Transform::Year | Transform::Month | Transform::Day => matches!(
                    st,
                    DataType::Date32 | DataType::Timestamp(TimeUnit::Microsecond, _)
                ),
                Transform::Hour => matches!(st, DataType::Timestamp(TimeUnit::Microsecond, _)),
                Transform::Bucket(n) => {
                    n > 0
                        && matches!(
                            st,
                            DataType::Utf8
                                | DataType::Int8
                                | DataType::Int16
                                | DataType::Int32
                                | DataType::Int64
                                | DataType::Date32
                        )
                }
            };
            if !ok {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "cannot partition by {} of column {} (type {st}{})",
                        p.transform,
                        p.source,
                        if p.transform == Transform::Identity && p.name != p.source {
                            ", and an identity partition keeps the column's name"
                        } else {
                            ""
                        }
                    ),
                )
                .with_column(&p.source));
            }
            if p.transform != Transform::Identity {
                if user.field_with_name(&p.name).is_ok() {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!("derived partition column {} clashes with a column", p.name),
                    )
                    .with_column(&p.name));
                }
                fields.push(Field::new(&p.name, p.transform.output_type(st), true));
            }
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    /// Names of the partition columns.
    pub(crate) fn names(&self) -> Vec<String> {
        self.fields.iter().map(|p| p.name.clone()).collect()
    }

    /// Whether `name` is a derived (not user-written) column.
    pub(crate) fn is_derived(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|p| p.name == name && p.transform != Transform::Identity)
    }

    /// The spec as table configuration entries.
    pub(crate) fn to_config(&self) -> BTreeMap<String, String> {
        self.fields
            .iter()
            .map(|p| {
                (
                    format!("{CONFIG_PREFIX}{}", p.name),
                    format!("{}({})", p.transform, p.source),
                )
            })
            .collect()
    }

    /// Rebuilds the spec from the partition column names and the configuration; a
    /// partition column with no entry is an identity partition (tables written by
    /// other engines).
    pub(crate) fn from_config(
        names: &[String],
        config: &BTreeMap<String, String>,
    ) -> Result<PartitionSpec> {
        let mut fields = Vec::with_capacity(names.len());
        for name in names {
            let field = match config.get(&format!("{CONFIG_PREFIX}{name}")) {
                None => PartitionField::identity(name.clone()),
                Some(v) => {
                    let parsed = v.split_once('(').and_then(|(t, rest)| {
                        Some((Transform::parse(t)?, rest.strip_suffix(')')?))
                    });
                    let Some((transform, source)) = parsed else {
                        return Err(Error::new(
                            ErrorKind::Corrupt,
                            format!("partition column {name} has an unreadable transform {v:?}"),
                        ));
                    };
                    PartitionField::derived(name.clone(), source, transform)
                }
            };
            fields.push(field);
        }
        Ok(PartitionSpec { fields })
    }

    /// The partition column arrays for `batch` (which has the user columns).
    pub(crate) fn compute(&self, batch: &arrow::array::RecordBatch) -> Result<Vec<ArrayRef>> {
        self.fields
            .iter()
            .map(|p| {
                let source = batch.column_by_name(&p.source).ok_or_else(|| {
                    Error::new(
                        ErrorKind::ColumnNotFound,
                        format!("column {} is missing", p.source),
                    )
                    .with_column(&p.source)
                })?;
                apply(p.transform, source)
            })
            .collect()
    }

    /// Predicates on partition columns implied by `predicate` on their source columns,
    /// for pruning: `ts >= X` implies `ts_day >= day(X)`, `k = v` implies
    /// `k_bucket = bucket(v)`. The result is weaker than or equal to `predicate` over
    /// the rows (never prunes a file holding a match).
    pub(crate) fn implied(&self, predicate: &Predicate) -> Option<Predicate> {
        let mut out = Vec::new();
        for c in predicate.conjuncts() {
            for p in &self.fields {
                if p.transform == Transform::Identity {
                    continue;
                }
                if let Some(x) = implied_one(p, c) {
                    out.push(x);
                }
            }
        }
        Predicate::all(out)
    }
}

fn implied_one(p: &PartitionField, c: &Predicate) -> Option<Predicate> {
    let t = p.transform;
    let apply_scalar = |s: &Scalar| -> Option<Scalar> {
        let arr = apply(t, &s.to_array()).ok()?;
        Scalar::try_from_array(arr.as_ref(), 0).ok()
    };
    match c {
        Predicate::Compare { column, op, value } if *column == p.source => {
            let v = apply_scalar(value)?;
            let op = match op {
                CmpOp::Eq => CmpOp::Eq,
                CmpOp::Lt | CmpOp::LtEq if t.monotonic() => CmpOp::LtEq,
                CmpOp::Gt | CmpOp::GtEq if t.monotonic() => CmpOp::GtEq,
                _ => return None,
            };
            Some(Predicate::Compare {
                column: p.name.clone(),
                op,
                value: v,
            })
        }
        Predicate::Between {
            column,
            low,
            high,
            negated: false,
        } if *column == p.source && t.monotonic() => Some(Predicate::Between {
            column: p.name.clone(),
            low: apply_scalar(low)?,
            high: apply_scalar(high)?,
            negated: false,
        }),
        Predicate::InList {
            column,
            values,
            negated: false,
        } if *column == p.source => Some(Predicate::InList {
            column: p.name.clone(),
            values: values
                .iter()
                .map(apply_scalar)
                .collect::<Option<Vec<_>>>()?,
            negated: false,
        }),
        _ => None,
    }
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Applies a transform to a column.
pub(crate) fn apply(t: Transform, source: &ArrayRef) -> Result<ArrayRef> {
    let ts_micros = |a: &ArrayRef| -> Result<Vec<Option<i64>>> {
        Ok(match a.data_type() {
            DataType::Date32 => a
                .as_primitive::<Date32Type>()
                .iter()
                .map(|d| d.map(|d| i64::from(d) * MICROS_PER_DAY))
                .collect(),
            DataType::Timestamp(TimeUnit::Microsecond, _) => a
                .as_primitive::<TimestampMicrosecondType>()
                .iter()
                .collect(),
            other => {
                return Err(Error::new(
                    ErrorKind::TypeMismatch,
                    format!("a time transform needs a timestamp or date, not {other}"),
                ));
            }
        })
    };
    let civil = |m: i64| chrono::DateTime::from_timestamp_micros(m).map(|d| d.naive_utc());
    Ok(match t {
        Transform::Identity => source.clone(),
        Transform::Year => Arc::new(
            ts_micros(source)?
                .into_iter()
                .map(|m| m.and_then(civil).map(|d| d.year()))
                .collect::<Int32Array>(),
        ),
        Transform::Month => Arc::new(
            ts_micros(source)?
                .into_iter()
                .map(|m| {
                    m.and_then(civil)
                        .map(|d| format!("{:04}-{:02}", d.year(), d.month()))
                })
                .collect::<StringArray>(),
        ),
        Transform::Day => Arc::new(
            ts_micros(source)?
                .into_iter()
                .map(|m| m.map(|m| m.div_euclid(MICROS_PER_DAY) as i32))
                .collect::<Date32Array>(),
        ),
        Transform::Hour => Arc::new(
            ts_micros(source)?
                .into_iter()
                .map(|m| {
                    m.and_then(civil).map(|d| {
                        format!(
                            "{:04}-{:02}-{:02}-{:02}",
                            d.year(),
                            d.month(),
                            d.day(),
                            d.hour()
                        )
                    })
                })
                .collect::<StringArray>(),
        ),
        Transform::Bucket(n) => Arc::new(bucket(source, n)?),
    })
}

/// FNV-1a, 64-bit: a stable hash (the bucket of a value never changes).
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn bucket(source: &ArrayRef, n: u32) -> Result<Int32Array> {
    let n = u64::from(n.max(1));
    let of = |h: u64| (h % n) as i32;
    Ok(match source.data_type() {
        DataType::Utf8 => source
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(|v| of(fnv(v.as_bytes()))))
            .collect(),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::Date32 => {
            let wide = cast(source, &DataType::Int64)
                .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
            wide.as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.map(|v| of(fnv(&v.to_le_bytes()))))
                .collect()
        }
        other => {
            return Err(Error::new(
                ErrorKind::TypeMismatch,
                format!("cannot bucket a column of type {other}"),
            ));
        }
    })
}

/// The Delta text of the value at `row` of a partition column (`None` for null).
pub(crate) fn value_text(array: &dyn Array, row: usize) -> Result<Option<String>> {
    if array.is_null(row) {
        return Ok(None);
    }
    let bad = || {
        Error::new(
            ErrorKind::InvalidInput,
            "a partition value is out of the representable range",
        )
    };
    Ok(Some(match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).to_owned(),
        DataType::Boolean => array.as_boolean().value(row).to_string(),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).to_string(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Float32 => {
            let v = array
                .as_primitive::<arrow::datatypes::Float32Type>()
                .value(row);
            if v.is_finite() {
                v.to_string()
            } else {
                float_text(f64::from(v))
            }
        }
        DataType::Float64 => float_text(
            array
                .as_primitive::<arrow::datatypes::Float64Type>()
                .value(row),
        ),
        DataType::Binary => binary_text(array.as_binary::<i32>().value(row)),
        DataType::Date32 => {
            format_date(array.as_primitive::<Date32Type>().value(row)).ok_or_else(bad)?
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            format_timestamp_partition(array.as_primitive::<TimestampMicrosecondType>().value(row))
                .ok_or_else(bad)?
        }
        DataType::Decimal128(_, s) => format_decimal(
            array
                .as_primitive::<arrow::datatypes::Decimal128Type>()
                .value(row),
            *s,
        ),
        other => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("partition columns of type {other} are not supported"),
            ));
        }
    }))
}

/// A float partition value as Spark and delta-rs both read it: `NaN`, `Infinity`,
/// `-Infinity`, else the shortest text that reads back as the same value.
fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        v.to_string()
    }
}

/// A binary partition value: its text when the bytes are UTF-8 (as Spark writes it),
/// else one `\uXXXX` escape per byte (as delta-rs writes it); both read back by
/// [`parse_value`].
fn binary_text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if !(s.len().is_multiple_of(6) && s.starts_with("\\u")) => s.to_owned(),
        _ => b.iter().map(|x| format!("\\u{x:04X}")).collect(),
    }
}

/// Parses a partition value's text back to a value of `data_type`, in every form the
/// Delta protocol and the common writers use (Spark, delta-rs, kernel):
///
/// * an empty text is null, except for strings and binary, where it is the empty value;
/// * floats: `1.5`, `1.0E10`, `NaN`, `Infinity` / `inf`, `-0.0` / `-0`;
/// * booleans in any case;
/// * binary: the text's UTF-8 bytes, or a run of `\uXXXX` escapes, one byte each;
/// * timestamps: `2026-01-01 00:00:00[.ffffff]`, ISO `2026-01-01T00:00:00[.ffffff]Z`
///   or with an offset (adjusted to UTC), or a date alone (midnight, as a `date`
///   widened to `timestamp_ntz` keeps its partition values); a timestamp without a
///   time zone takes no offset but `Z`;
/// * decimals in plain or exponent form, any trailing zeros past the scale.
pub(crate) fn parse_value(text: Option<&str>, data_type: &DataType) -> Result<Scalar> {
    let Some(t) = text else {
        return Ok(Scalar::Null);
    };
    let bad = || {
        Error::new(
            ErrorKind::Corrupt,
            format!("partition value {t:?} is not a valid {data_type}"),
        )
    };
    if t.is_empty() && !matches!(data_type, DataType::Utf8 | DataType::Binary) {
        return Ok(Scalar::Null);
    }
    Ok(match data_type {
        DataType::Utf8 => Scalar::Utf8(t.to_owned()),
        DataType::Binary => Scalar::Binary(parse_binary(t)),
        DataType::Boolean => Scalar::Boolean(match t.to_ascii_lowercase().as_str() {
            "true" => true,
            "false" => false,
            _ => return Err(bad()),
        }),
        DataType::Int8 => Scalar::Int8(t.parse().map_err(|_| bad())?),
        DataType::Int16 => Scalar::Int16(t.parse().map_err(|_| bad())?),
        DataType::Int32 => Scalar::Int32(t.parse().map_err(|_| bad())?),
        DataType::Int64 => Scalar::Int64(t.parse().map_err(|_| bad())?),
        DataType::Float32 => Scalar::Float32(t.trim().parse().map_err(|_| bad())?),
        DataType::Float64 => Scalar::Float64(t.trim().parse().map_err(|_| bad())?),
        DataType::Date32 => Scalar::Date32(parse_date(t).ok_or_else(bad)?),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => Scalar::Timestamp {
            value: parse_partition_timestamp(t, tz.is_some()).ok_or_else(bad)?,
            unit: TimeUnit::Microsecond,
            tz: tz.clone(),
        },
        DataType::Decimal128(p, s) => Scalar::Decimal128 {
            value: parse_partition_decimal(t, *p, *s).ok_or_else(bad)?,
            precision: *p,
            scale: *s,
        },
        _ => return Err(bad()),
    })
}

/// A binary partition value: `\uXXXX` escapes (as delta-rs writes them), else the
/// text's own bytes (Spark and kernel).
fn parse_binary(t: &str) -> Vec<u8> {
    let b = t.as_bytes();
    let escaped = !b.is_empty()
        && b.len().is_multiple_of(6)
        && b.chunks(6).all(|c| {
            c[0] == b'\\'
                && c[1] == b'u'
                && std::str::from_utf8(&c[2..])
                    .ok()
                    .and_then(|h| u16::from_str_radix(h, 16).ok())
                    .is_some_and(|v| v <= 0xFF)
        });
    if escaped {
        b.chunks(6)
            .filter_map(|c| {
                let h = std::str::from_utf8(&c[2..]).ok()?;
                u8::from_str_radix(&h[2..], 16).ok()
            })
            .collect()
    } else {
        b.to_vec()
    }
}

/// Microseconds since the epoch of a timestamp partition value (see [`parse_value`]).
fn parse_partition_timestamp(t: &str, utc: bool) -> Option<i64> {
    let t = t.trim();
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
    }
    // The zone: `Z`, or `+HH:MM`, `+HHMM`, `+HH` (or `-`) after the time of day.
    let (body, offset_secs) = if let Some(b) = t.strip_suffix(['Z', 'z']) {
        (b, 0i64)
    } else {
        let time_at = t.find([' ', 'T', 't'])?;
        match t[time_at..].rfind(['+', '-']).map(|i| i + time_at) {
            Some(i) => {
                let z = t[i + 1..].replace(':', "");
                if !(z.len() == 2 || z.len() == 4) || !z.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let hours: i64 = z[..2].parse().ok()?;
                let minutes: i64 = if z.len() == 4 {
                    z[2..].parse().ok()?
                } else {
                    0
                };
                let sign = if t.as_bytes()[i] == b'-' { -1 } else { 1 };
                (&t[..i], sign * (hours * 3600 + minutes * 60))
            }
            None => (t, 0),
        }
    };
    if !utc && offset_secs != 0 {
        return None;
    }
    let body = body.replacen(['T', 't'], " ", 1);
    let naive = chrono::NaiveDateTime::parse_from_str(&body, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(&body, "%Y-%m-%d %H:%M"))
        .ok()?;
    // Whole microseconds only: a finer value is not a value of the column.
    if naive.and_utc().timestamp_subsec_nanos() % 1000 != 0 {
        return None;
    }
    naive
        .and_utc()
        .timestamp_micros()
        .checked_sub(offset_secs.checked_mul(1_000_000)?)
}

/// The unscaled value of a decimal partition value at `scale`, within `precision`
/// digits (see [`parse_value`]).
fn parse_partition_decimal(t: &str, precision: u8, scale: i8) -> Option<i128> {
    let t = t.trim();
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i32>().ok()?),
        None => (t, 0),
    };
    let (neg, m) = match mantissa.as_bytes().first()? {
        b'-' => (true, &mantissa[1..]),
        b'+' => (false, &mantissa[1..]),
        _ => (false, mantissa),
    };
    let (int, frac) = m.split_once('.').unwrap_or((m, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut digits = format!("{int}{frac}");
    // The text's value is digits * 10^-(frac.len() - exp); bring it to `scale`.
    let shift = i64::from(scale) - (frac.len() as i64 - i64::from(exp));
    if shift >= 0 {
        digits.push_str(&"0".repeat(usize::try_from(shift).ok().filter(|s| *s <= 76)?));
    } else {
        let drop = usize::try_from(-shift).ok()?;
        let keep = digits.len().saturating_sub(drop);
        if !digits[keep.min(digits.len())..].bytes().all(|b| b == b'0') {
            return None;
        }
        digits.truncate(keep);
    }
    let digits = digits.trim_start_matches('0');
    if digits.len() > usize::from(precision) {
        return None;
    }
    let v: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

/// A column of `rows` copies of a partition value.
pub(crate) fn constant_array(
    value: &Scalar,
    data_type: &DataType,
    rows: usize,
) -> Result<ArrayRef> {
    if value.is_null() {
        return Ok(new_null_array(data_type, rows));
    }
    let one = value.to_array_of(data_type)?;
    let indices = arrow::array::UInt32Array::from(vec![0u32; rows]);
    arrow::compute::take(one.as_ref(), &indices, None)
        .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))
}

/// The directory segment `name=value`, escaped so that no value can leave the table
/// directory or collide with another: `/`, `=`, `%`, `:`, control characters and the
/// other characters object stores and Hive reserve become `%XX`, and a leading dot
/// becomes `%2E`; a null value is `__HIVE_DEFAULT_PARTITION__` and an empty one
/// `__EMPTY__`. Directory names are only a convention: the log keeps the exact values.
pub(crate) fn dir_segment(name: &str, value: Option<&str>) -> String {
    let v = match value {
        None => "__HIVE_DEFAULT_PARTITION__".to_owned(),
        Some("") => "__EMPTY__".to_owned(),
        Some(v) => escape(v),
    };
    format!("{}={v}", escape(name))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let reserved = c.is_ascii_control()
            || matches!(
                c,
                '"' | '#'
                    | '%'
                    | '\''
                    | '*'
                    | '/'
                    | ':'
                    | '='
                    | '?'
                    | '\\'
                    | '{'
                    | '}'
                    | '['
                    | ']'
                    | '^'
                    | '<'
                    | '>'
                    | '|'
                    | '`'
                    | '~'
            );
        if reserved {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    // Leading dots would make `.`/`..` look-alikes on some systems: escape them.
    if out.starts_with('.') {
        out.replace_range(0..1, "%2E");
    }
    out
}

/// Encodes a relative object path as the URI the log keeps in `add.path`.
pub(crate) fn uri_encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/' | b'=') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes an `add.path` URI to the relative object path.
pub(crate) fn uri_decode(uri: &str) -> Result<String> {
    let bytes = uri.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Corrupt,
                        format!("bad escape in file path {uri:?}"),
                    )
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| {
        Error::new(
            ErrorKind::Corrupt,
            format!("file path {uri:?} is not UTF-8"),
        )
    })?;
    if s.starts_with('/')
        || s.split('/')
            .any(|seg| seg == ".." || seg == "." || seg.is_empty())
    {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!("file path {uri:?} leaves the table directory"),
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_values_stay_one_segment() {
        for v in [
            "../x", "a/b", "=", "..", ".", "%2F", "a\\b", "x\ny", "naïve", "日本",
        ] {
            let seg = dir_segment("region", Some(v));
            assert!(!seg.contains('/'), "{seg}");
            let p = object_store::path::Path::parse(format!("t/{seg}/f.parquet")).unwrap();
            assert_eq!(p.parts().count(), 3, "{seg}");
            let uri = uri_encode(&format!("{seg}/f.parquet"));
            assert_eq!(uri_decode(&uri).unwrap(), format!("{seg}/f.parquet"));
        }
        assert_ne!(dir_segment("c", Some("")), dir_segment("c", None));
        assert!(uri_decode("../etc/passwd").is_err());
        assert!(uri_decode("/abs").is_err());
    }

    #[test]
    fn day_and_bucket_transforms() {
        let ts: ArrayRef = Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![
            Some(0),
            Some(-1),
            None,
        ]));
        let d = apply(Transform::Day, &ts).unwrap();
        let d = d.as_primitive::<Date32Type>();
        assert_eq!((d.value(0), d.value(1), d.is_null(2)), (0, -1, true));
        let keys: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "a"]));
        let b = apply(Transform::Bucket(8), &keys).unwrap();
        let b = b.as_primitive::<Int32Type>();
        assert_eq!(b.value(0), b.value(2));
        assert!((0..8).contains(&b.value(1)));
    }

    #[test]
    fn other_writers_partition_values_parse() {
        let f64s = |t: &str| match parse_value(Some(t), &DataType::Float64).unwrap() {
            Scalar::Float64(v) => v,
            other => panic!("{other:?}"),
        };
        assert!(f64s("NaN").is_nan());
        assert_eq!(f64s("inf"), f64::INFINITY);
        assert_eq!(f64s("Infinity"), f64::INFINITY);
        assert_eq!(f64s("-inf"), f64::NEG_INFINITY);
        assert!(f64s("-0").is_sign_negative() && f64s("-0.0") == 0.0);
        assert_eq!(f64s("1.0E10"), 1e10);
        assert_eq!(f64s("0.0000001"), 1e-7);
        assert_eq!(
            parse_value(Some("3.4"), &DataType::Float32).unwrap(),
            Scalar::Float32(3.4)
        );
        // Empty: null but for strings and binary.
        assert_eq!(
            parse_value(Some(""), &DataType::Int32).unwrap(),
            Scalar::Null
        );
        assert_eq!(
            parse_value(Some(""), &DataType::Utf8).unwrap(),
            Scalar::Utf8(String::new())
        );
        assert_eq!(
            parse_value(Some("TRUE"), &DataType::Boolean).unwrap(),
            Scalar::Boolean(true)
        );
        let bin = |t: &str| parse_value(Some(t), &DataType::Binary).unwrap();
        assert_eq!(bin("\\u00FF\\u0000"), Scalar::Binary(vec![0xFF, 0]));
        assert_eq!(bin("\u{1}\u{2}"), Scalar::Binary(vec![1, 2]));
        assert_eq!(bin("abc"), Scalar::Binary(b"abc".to_vec()));
        let ts = |t: &str, utc: bool| {
            let tz = utc.then(|| "UTC".into());
            match parse_value(Some(t), &DataType::Timestamp(TimeUnit::Microsecond, tz)) {
                Ok(Scalar::Timestamp { value, .. }) => Some(value),
                _ => None,
            }
        };
        let noon = 1_767_268_800_000_000; // 2026-01-01 12:00:00 UTC
        for t in [
            "2026-01-01 12:00:00",
            "2026-01-01 12:00:00.000000",
            "2026-01-01T12:00:00Z",
            "2026-01-01T12:00:00.000Z",
            "2026-01-01T13:30:00+01:30",
            "2026-01-01T07:00:00-0500",
        ] {
            assert_eq!(ts(t, true), Some(noon), "{t}");
        }
        assert_eq!(
            ts("2026-01-01 12:00:00.123456", false),
            Some(noon + 123_456)
        );
        assert_eq!(ts("2026-01-01T12:00:00Z", false), Some(noon));
        assert_eq!(ts("2026-01-01T13:00:00+01:00", false), None);
        assert_eq!(ts("2026-01-01", false), Some(noon - 43_200_000_000));
        assert_eq!(ts("2026-01-01 12:00:00.0000001", true), None);
        let dec = |t: &str| match parse_value(Some(t), &DataType::Decimal128(6, 2)) {
            Ok(Scalar::Decimal128 { value, .. }) => Some(value),
            _ => None,
        };
        assert_eq!(dec("1.23"), Some(123));
        assert_eq!(dec("-0.05"), Some(-5));
        assert_eq!(dec("1.5E2"), Some(15_000));
        assert_eq!(dec("1.230"), Some(123));
        assert_eq!(dec("1.234"), None);
        assert_eq!(dec("12345.6"), None);
        assert_eq!(dec("x"), None);
    }

    #[test]
    fn float_and_binary_values_round_trip_through_text() {
        use arrow::array::{BinaryArray, Float32Array, Float64Array};
        let f = Float64Array::from(vec![f64::NAN, f64::INFINITY, -0.0, 1e20, 0.1]);
        for i in 0..f.len() {
            let text = value_text(&f, i).unwrap();
            let Scalar::Float64(back) = parse_value(text.as_deref(), &DataType::Float64).unwrap()
            else {
                panic!()
            };
            assert!(
                back.to_bits() == f.value(i).to_bits() || (back.is_nan() && f.value(i).is_nan())
            );
        }
        assert_eq!(value_text(&f, 1).unwrap().as_deref(), Some("Infinity"));
        let g = Float32Array::from(vec![3.4f32]);
        assert_eq!(value_text(&g, 0).unwrap().as_deref(), Some("3.4"));
        let b = BinaryArray::from(vec![&b"ok"[..], &[0xFF, 0x00][..], &b"\\u0061"[..]]);
        for i in 0..b.len() {
            let text = value_text(&b, i).unwrap();
            assert_eq!(
                parse_value(text.as_deref(), &DataType::Binary).unwrap(),
                Scalar::Binary(b.value(i).to_vec())
            );
        }
    }

    #[test]
    fn values_round_trip_through_text() {
        let cases: Vec<(ArrayRef, DataType)> = vec![
            (Arc::new(StringArray::from(vec!["x/y"])), DataType::Utf8),
            (Arc::new(Int32Array::from(vec![-7])), DataType::Int32),
            (Arc::new(Date32Array::from(vec![19_000])), DataType::Date32),
        ];
        for (a, t) in cases {
            let text = value_text(a.as_ref(), 0).unwrap();
            let back = parse_value(text.as_deref(), &t).unwrap();
            assert_eq!(back, Scalar::try_from_array(a.as_ref(), 0).unwrap());
        }
    }
}
