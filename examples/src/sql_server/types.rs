//! Arrow types and values as Postgres types and values: the row description of a
//! result, each cell in the text or the binary format, and parameters from the client.
//!
//! | Arrow | Postgres |
//! |---|---|
//! | `Boolean` | `bool` |
//! | `Int8`, `Int16`, `UInt8` | `int2` |
//! | `Int32`, `UInt16` | `int4` |
//! | `Int64`, `UInt32` | `int8` |
//! | `UInt64` | `numeric` (it does not fit `int8`) |
//! | `Float16`, `Float32` | `float4` |
//! | `Float64` | `float8` |
//! | `Utf8`, `LargeUtf8`, `Utf8View` | `text` |
//! | `Binary`, `LargeBinary`, `BinaryView`, `FixedSizeBinary` | `bytea` |
//! | `Date32`, `Date64` | `date` |
//! | `Time32`, `Time64` | `time` |
//! | `Timestamp(unit, None)` | `timestamp` |
//! | `Timestamp(unit, Some(tz))` | `timestamptz` (sent in UTC) |
//! | `Decimal32/64/128/256(p, s)` | `numeric(p, s)` |
//! | `Null` (a bare `SELECT NULL`) | `text` |
//! | `Dictionary(_, v)` | as `v` |
//!
//! Timestamps and times are sent with microseconds, Postgres's precision: nanoseconds
//! are truncated. Refused, with SQLSTATE `0A000` naming the column: intervals,
//! durations, lists, structs, maps, unions and run-end encoded arrays (cast them to
//! text in the query: `CAST(c AS VARCHAR)`).

use std::error::Error as StdError;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Decimal32Type, Decimal64Type, Decimal128Type, Decimal256Type,
    Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    Time32MillisecondType, Time32SecondType, Time64MicrosecondType, Time64NanosecondType, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::temporal_conversions::{date32_to_datetime, time64us_to_time, timestamp_us_to_datetime};
use bytes::{BufMut, BytesMut};
use lakehouse_core::{Error, ErrorKind, Result, Scalar};
use pgwire::api::Type;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions;
use postgres_types::{IsNull, ToSql, to_sql_checked};

/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (Postgres's).
const PG_EPOCH_DAYS: i64 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * 86_400_000_000;

/// The Postgres type a column of `data_type` is sent as, with its type modifier (`-1`
/// for none), or `None` when it has no mapping.
pub(crate) fn pg_type(data_type: &DataType) -> Option<(Type, i32)> {
    use DataType as D;
    let numeric = |p: u8, s: i8| {
        // numeric(p, s): ((p << 16) | s) + 4, for a scale Postgres can express.
        let modifier = if s >= 0 {
            ((i32::from(p) << 16) | i32::from(s)) + 4
        } else {
            -1
        };
        (Type::NUMERIC, modifier)
    };
    Some(match data_type {
        D::Boolean => (Type::BOOL, -1),
        D::Int8 | D::Int16 | D::UInt8 => (Type::INT2, -1),
        D::Int32 | D::UInt16 => (Type::INT4, -1),
        D::Int64 | D::UInt32 => (Type::INT8, -1),
        D::UInt64 => (Type::NUMERIC, -1),
        D::Float16 | D::Float32 => (Type::FLOAT4, -1),
        D::Float64 => (Type::FLOAT8, -1),
        D::Utf8 | D::LargeUtf8 | D::Utf8View | D::Null => (Type::TEXT, -1),
        D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => (Type::BYTEA, -1),
        D::Date32 | D::Date64 => (Type::DATE, -1),
        D::Time32(_) | D::Time64(_) => (Type::TIME, -1),
        D::Timestamp(_, None) => (Type::TIMESTAMP, -1),
        D::Timestamp(_, Some(_)) => (Type::TIMESTAMPTZ, -1),
        D::Decimal32(p, s) | D::Decimal64(p, s) | D::Decimal128(p, s) | D::Decimal256(p, s) => {
            numeric(*p, *s)
        }
        D::Dictionary(_, value) => return pg_type(value),
        _ => return None,
    })
}

/// The row description of `schema`, each column in the format the client asked for.
pub(crate) fn fields(
    schema: &arrow::datatypes::Schema,
    format: impl Fn(usize) -> FieldFormat,
) -> Result<Vec<FieldInfo>> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (ty, modifier) = pg_type(f.data_type()).ok_or_else(|| unsupported_column(f))?;
            Ok(FieldInfo::new(f.name().clone(), None, None, ty, format(i))
                .with_type_modifier(modifier))
        })
        .collect()
}

fn unsupported_column(field: &arrow::datatypes::Field) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!(
            "column {:?} has type {}, which has no Postgres type here; cast it in the query \
             (CAST({} AS VARCHAR))",
            field.name(),
            field.data_type(),
            field.name()
        ),
    )
    .with_column(field.name().clone())
}

/// One value, borrowed from a column, ready to be written in either format.
#[derive(Debug)]
enum Cell<'a> {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Text(&'a str),
    Bytes(&'a [u8]),
    /// Days since 1970-01-01.
    Date(i64),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds since 1970-01-01; `true` when the column has a time zone (UTC).
    Timestamp(i64, bool),
    /// Decimal digits with an optional leading `-` and the number of digits after
    /// the point (negative: that many zeros to append).
    Numeric(String, i8),
}

/// Writes row `row` of `columns` (already in their sending types, see [`prepare`]).
pub(crate) fn encode_row(
    encoder: &mut DataRowEncoder,
    fields: &[FieldInfo],
    columns: &[ArrayRef],
    row: usize,
) -> Result<()> {
    for (field, column) in fields.iter().zip(columns) {
        let cell = cell(column, row)?;
        encoder
            .encode_field_with_type_and_format(
                &cell,
                field.datatype(),
                field.format(),
                field.format_options(),
            )
            .map_err(|e| Error::new(ErrorKind::Internal, format!("encoding a cell: {e}")))?;
    }
    Ok(())
}

/// The columns of a batch in the types [`cell`] reads: dictionaries decoded, views,
/// large and fixed-size variants brought to their plain form.
pub(crate) fn prepare(column: &ArrayRef) -> Result<ArrayRef> {
    use DataType as D;
    let target = match column.data_type() {
        D::Dictionary(_, value) => Some(value.as_ref().clone()),
        D::LargeUtf8 | D::Utf8View => Some(D::Utf8),
        D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => Some(D::Binary),
        D::Float16 => Some(D::Float32),
        D::Date64 => Some(D::Date32),
        _ => None,
    };
    match target {
        None => Ok(column.clone()),
        Some(t) => {
            let cast = arrow::compute::cast(column, &t)?;
            // A dictionary of large strings, say: one more step.
            prepare(&cast)
        }
    }
}

fn cell(column: &ArrayRef, row: usize) -> Result<Cell<'_>> {
    use DataType as D;
    if column.is_null(row) {
        return Ok(Cell::Null);
    }
    let a = column.as_ref();
    Ok(match column.data_type() {
        D::Null => Cell::Null,
        D::Boolean => Cell::Bool(a.as_boolean().value(row)),
        D::Int8 => Cell::I16(i16::from(a.as_primitive::<Int8Type>().value(row))),
        D::Int16 => Cell::I16(a.as_primitive::<Int16Type>().value(row)),
        D::UInt8 => Cell::I16(i16::from(a.as_primitive::<UInt8Type>().value(row))),
        D::Int32 => Cell::I32(a.as_primitive::<Int32Type>().value(row)),
        D::UInt16 => Cell::I32(i32::from(a.as_primitive::<UInt16Type>().value(row))),
        D::Int64 => Cell::I64(a.as_primitive::<Int64Type>().value(row)),
        D::UInt32 => Cell::I64(i64::from(a.as_primitive::<UInt32Type>().value(row))),
        D::UInt64 => Cell::Numeric(a.as_primitive::<UInt64Type>().value(row).to_string(), 0),
        D::Float16 => Cell::F32(a.as_primitive::<Float16Type>().value(row).to_f32()),
        D::Float32 => Cell::F32(a.as_primitive::<Float32Type>().value(row)),
        D::Float64 => Cell::F64(a.as_primitive::<Float64Type>().value(row)),
        D::Utf8 => Cell::Text(a.as_string::<i32>().value(row)),
        D::Binary => Cell::Bytes(a.as_binary::<i32>().value(row)),
        D::Date32 => Cell::Date(i64::from(a.as_primitive::<Date32Type>().value(row))),
        D::Date64 => Cell::Date(a.as_primitive::<Date64Type>().value(row) / 86_400_000),
        D::Time32(TimeUnit::Second) => {
            Cell::Time(i64::from(a.as_primitive::<Time32SecondType>().value(row)) * 1_000_000)
        }
        D::Time32(_) => {
            Cell::Time(i64::from(a.as_primitive::<Time32MillisecondType>().value(row)) * 1_000)
        }
        D::Time64(TimeUnit::Microsecond) => {
            Cell::Time(a.as_primitive::<Time64MicrosecondType>().value(row))
        }
        D::Time64(_) => Cell::Time(a.as_primitive::<Time64NanosecondType>().value(row) / 1_000),
        D::Timestamp(unit, tz) => {
            let micros = match unit {
                TimeUnit::Second => a
                    .as_primitive::<TimestampSecondType>()
                    .value(row)
                    .saturating_mul(1_000_000),
                TimeUnit::Millisecond => a
                    .as_primitive::<TimestampMillisecondType>()
                    .value(row)
                    .saturating_mul(1_000),
                TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().value(row),
                TimeUnit::Nanosecond => a
                    .as_primitive::<TimestampNanosecondType>()
                    .value(row)
                    .div_euclid(1_000),
            };
            Cell::Timestamp(micros, tz.is_some())
        }
        D::Decimal32(_, s) => {
            Cell::Numeric(a.as_primitive::<Decimal32Type>().value(row).to_string(), *s)
        }
        D::Decimal64(_, s) => {
            Cell::Numeric(a.as_primitive::<Decimal64Type>().value(row).to_string(), *s)
        }
        D::Decimal128(_, s) => Cell::Numeric(
            a.as_primitive::<Decimal128Type>().value(row).to_string(),
            *s,
        ),
        D::Decimal256(_, s) => Cell::Numeric(
            a.as_primitive::<Decimal256Type>().value(row).to_string(),
            *s,
        ),
        other => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("type {other} has no Postgres type here"),
            ));
        }
    })
}

/// `(negative, integer digits, fraction digits)` of an unscaled value and its scale.
fn decimal_parts(unscaled: &str, scale: i8) -> (bool, String, String) {
    let (negative, digits) = match unscaled.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, unscaled),
    };
    if scale <= 0 {
        let zeros = "0".repeat(usize::from(scale.unsigned_abs()));
        return (negative, format!("{digits}{zeros}"), String::new());
    }
    let scale = usize::from(scale.unsigned_abs());
    let padded = if digits.len() <= scale {
        format!("{}{digits}", "0".repeat(scale + 1 - digits.len()))
    } else {
        digits.to_owned()
    };
    let (int, frac) = padded.split_at(padded.len() - scale);
    (negative, int.to_owned(), frac.to_owned())
}

/// The text of a decimal: `-12.340` for unscaled `-12340` at scale 3.
pub(crate) fn decimal_text(unscaled: &str, scale: i8) -> String {
    let (negative, int, frac) = decimal_parts(unscaled, scale);
    let sign = if negative && (int.bytes().chain(frac.bytes())).any(|b| b != b'0') {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// Postgres's binary `numeric`: base-10000 digits around the decimal point.
fn numeric_binary(unscaled: &str, scale: i8, out: &mut BytesMut) {
    let (negative, int, frac) = decimal_parts(unscaled, scale);
    let int = int.trim_start_matches('0');
    // Group the integer part from the point leftwards, the fraction rightwards.
    let int_pad = (4 - int.len() % 4) % 4;
    let int_digits = format!("{}{int}", "0".repeat(int_pad));
    let frac_pad = (4 - frac.len() % 4) % 4;
    let frac_digits = format!("{frac}{}", "0".repeat(frac_pad));
    let group = |s: &str| -> Vec<i16> {
        s.as_bytes()
            .chunks(4)
            .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0')))
            .collect()
    };
    let mut digits = group(&int_digits);
    let mut weight = digits.len() as i16 - 1;
    digits.extend(group(&frac_digits));
    // Leading zero groups (only in the fraction now) move the weight down.
    let leading = digits.iter().take_while(|d| **d == 0).count();
    digits.drain(..leading);
    weight -= leading as i16;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    let dscale = i16::from(scale.max(0));
    if digits.is_empty() {
        out.put_i16(0);
        out.put_i16(0);
        out.put_u16(0x0000);
        out.put_i16(dscale);
        return;
    }
    out.put_i16(digits.len() as i16);
    out.put_i16(weight);
    out.put_u16(if negative { 0x4000 } else { 0x0000 });
    out.put_i16(dscale);
    for d in digits {
        out.put_i16(d);
    }
}

type BoxError = Box<dyn StdError + Sync + Send>;

fn out_of_range(what: &str) -> BoxError {
    format!("{what} is out of the range Postgres can represent").into()
}

impl ToSql for Cell<'_> {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        match self {
            Cell::Null => return Ok(IsNull::Yes),
            Cell::Bool(v) => out.put_u8(u8::from(*v)),
            Cell::I16(v) => out.put_i16(*v),
            Cell::I32(v) => out.put_i32(*v),
            Cell::I64(v) => out.put_i64(*v),
            Cell::F32(v) => out.put_f32(*v),
            Cell::F64(v) => out.put_f64(*v),
            Cell::Text(v) => out.put_slice(v.as_bytes()),
            Cell::Bytes(v) => out.put_slice(v),
            Cell::Date(days) => {
                let d = i32::try_from(days - PG_EPOCH_DAYS).map_err(|_| out_of_range("a date"))?;
                out.put_i32(d);
            }
            Cell::Time(micros) => out.put_i64(*micros),
            Cell::Timestamp(micros, _) => out.put_i64(micros.saturating_sub(PG_EPOCH_MICROS)),
            Cell::Numeric(digits, scale) => numeric_binary(digits, *scale, out),
        }
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl ToSqlText for Cell<'_> {
    fn to_sql_text(
        &self,
        ty: &Type,
        out: &mut BytesMut,
        options: &FormatOptions,
    ) -> std::result::Result<IsNull, BoxError> {
        let text = match self {
            Cell::Null => return Ok(IsNull::Yes),
            Cell::Bool(v) => return v.to_sql_text(ty, out, options),
            Cell::I16(v) => v.to_string(),
            Cell::I32(v) => v.to_string(),
            Cell::I64(v) => v.to_string(),
            Cell::F32(v) => float_text(f64::from(*v), v.to_string()),
            Cell::F64(v) => float_text(*v, v.to_string()),
            Cell::Text(v) => {
                out.put_slice(v.as_bytes());
                return Ok(IsNull::No);
            }
            Cell::Bytes(v) => {
                out.put_slice(b"\\x");
                for b in *v {
                    out.put_slice(format!("{b:02x}").as_bytes());
                }
                return Ok(IsNull::No);
            }
            Cell::Date(days) => i32::try_from(*days)
                .ok()
                .and_then(date32_to_datetime)
                .ok_or_else(|| out_of_range("a date"))?
                .format("%Y-%m-%d")
                .to_string(),
            Cell::Time(micros) => {
                let t = time64us_to_time(*micros).ok_or_else(|| out_of_range("a time"))?;
                format!("{}{}", t.format("%H:%M:%S"), fraction(*micros))
            }
            Cell::Timestamp(micros, tz) => {
                let t =
                    timestamp_us_to_datetime(*micros).ok_or_else(|| out_of_range("a timestamp"))?;
                let zone = if *tz { "+00" } else { "" };
                format!(
                    "{}{}{zone}",
                    t.format("%Y-%m-%d %H:%M:%S"),
                    fraction(*micros)
                )
            }
            Cell::Numeric(digits, scale) => decimal_text(digits, *scale),
        };
        out.put_slice(text.as_bytes());
        Ok(IsNull::No)
    }
}

/// The fraction of a second of `micros` as Postgres writes it: `.5`, `.000123`, or
/// nothing.
fn fraction(micros: i64) -> String {
    let f = micros.rem_euclid(1_000_000);
    if f == 0 {
        String::new()
    } else {
        format!(".{f:06}").trim_end_matches('0').to_owned()
    }
}

/// Postgres's spelling of the special floats; Rust's shortest round-trip digits
/// otherwise.
fn float_text(v: f64, shortest: String) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        shortest
    }
}

/// The Arrow type a parameter of Postgres type `ty` is read as, when the statement does
/// not fix one.
pub(crate) fn arrow_type(ty: &Type) -> Option<DataType> {
    Some(match ty.name() {
        "bool" => DataType::Boolean,
        "int2" => DataType::Int16,
        "int4" => DataType::Int32,
        "int8" => DataType::Int64,
        "float4" => DataType::Float32,
        "float8" => DataType::Float64,
        "text" | "varchar" | "bpchar" | "name" | "unknown" | "numeric" => DataType::Utf8,
        "bytea" => DataType::Binary,
        "date" => DataType::Date32,
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
        _ => return None,
    })
}

/// A parameter as the client sent it (`None`: SQL `NULL`), in the text or the binary
/// format of Postgres type `ty`, brought to `target` when the statement fixes a type.
pub(crate) fn parameter(
    value: Option<&[u8]>,
    binary: bool,
    ty: &Type,
    target: Option<&DataType>,
) -> Result<Scalar> {
    let Some(bytes) = value else {
        return Ok(Scalar::Null);
    };
    let bad = |what: &str| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("parameter of type {}: {what}", ty.name()),
        )
    };
    let scalar = if !binary {
        let text = std::str::from_utf8(bytes).map_err(|_| bad("the text is not UTF-8"))?;
        Scalar::Utf8(text.to_owned())
    } else {
        let need = |n: usize| -> Result<()> {
            if bytes.len() == n {
                Ok(())
            } else {
                Err(bad(&format!("{} bytes, expected {n}", bytes.len())))
            }
        };
        let utf8 = || -> Result<Scalar> {
            let text = std::str::from_utf8(bytes).map_err(|_| bad("the text is not UTF-8"))?;
            Ok(Scalar::Utf8(text.to_owned()))
        };
        match ty.name() {
            "bool" => {
                need(1)?;
                Scalar::Boolean(bytes[0] != 0)
            }
            "int2" => {
                need(2)?;
                Scalar::Int16(i16::from_be_bytes(array(bytes)))
            }
            "int4" => {
                need(4)?;
                Scalar::Int32(i32::from_be_bytes(array(bytes)))
            }
            "int8" => {
                need(8)?;
                Scalar::Int64(i64::from_be_bytes(array(bytes)))
            }
            "float4" => {
                need(4)?;
                Scalar::Float32(f32::from_be_bytes(array(bytes)))
            }
            "float8" => {
                need(8)?;
                Scalar::Float64(f64::from_be_bytes(array(bytes)))
            }
            "text" | "varchar" | "bpchar" | "name" | "unknown" => utf8()?,
            "bytea" => Scalar::Binary(bytes.to_vec()),
            "date" => {
                need(4)?;
                let d = i64::from(i32::from_be_bytes(array(bytes))) + PG_EPOCH_DAYS;
                Scalar::Date32(i32::try_from(d).map_err(|_| bad("the date is out of range"))?)
            }
            "timestamp" | "timestamptz" => {
                need(8)?;
                let micros = i64::from_be_bytes(array(bytes)).saturating_add(PG_EPOCH_MICROS);
                Scalar::Timestamp {
                    value: micros,
                    unit: TimeUnit::Microsecond,
                    tz: (ty.name() == "timestamptz").then(|| Arc::from("UTC")),
                }
            }
            "numeric" => {
                Scalar::Utf8(numeric_from_binary(bytes).ok_or_else(|| bad("malformed numeric"))?)
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "parameters of type {} in the binary format are not supported; send \
                         them as text",
                        ty.name()
                    ),
                ));
            }
        }
    };
    let target = target.cloned().or_else(|| arrow_type(ty));
    match target {
        Some(t) if t != scalar.data_type() => scalar
            .cast_to(&t)
            .map_err(|e| bad(&format!("cannot be read as {t}: {e}"))),
        _ => Ok(scalar),
    }
}

/// The first `N` bytes (the caller checked the length).
fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = N.min(bytes.len());
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// The decimal text of a binary `numeric`, or `None` when it is malformed or `NaN`.
fn numeric_from_binary(bytes: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<i16> {
        let b = bytes.get(i * 2..i * 2 + 2)?;
        Some(i16::from_be_bytes([b[0], b[1]]))
    };
    let ndigits = usize::try_from(word(0)?).ok()?;
    let weight = i64::from(word(1)?);
    let sign = word(2)? as u16;
    let dscale = usize::try_from(word(3)?).ok()?;
    if sign != 0x0000 && sign != 0x4000 {
        return None;
    }
    let mut int = String::new();
    let mut frac = String::new();
    for i in 0..ndigits {
        let d = word(4 + i)?;
        if !(0..10_000).contains(&d) {
            return None;
        }
        // Group i stands for d * 10000^(weight - i).
        if (i as i64) <= weight {
            int.push_str(&format!("{d:04}"));
        } else {
            frac.push_str(&format!("{d:04}"));
        }
    }
    // Groups between the last digit and the point, and before the first fraction group.
    let last = ndigits as i64 - 1;
    if weight > last {
        for _ in 0..(weight - last) {
            int.push_str("0000");
        }
    }
    if weight < -1 {
        frac.insert_str(0, &"0000".repeat(usize::try_from(-1 - weight).ok()?));
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    frac.truncate(dscale);
    while frac.len() < dscale {
        frac.push('0');
    }
    let sign = if sign == 0x4000 { "-" } else { "" };
    Some(if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_text_places_the_point() {
        assert_eq!(decimal_text("-12340", 3), "-12.340");
        assert_eq!(decimal_text("5", 2), "0.05");
        assert_eq!(decimal_text("-5", 2), "-0.05");
        assert_eq!(decimal_text("0", 2), "0.00");
        assert_eq!(decimal_text("7", -2), "700");
        assert_eq!(decimal_text("123", 0), "123");
    }

    #[test]
    fn numeric_binary_round_trips() {
        for (digits, scale, text) in [
            ("123456789", 2, "1234567.89"),
            ("-5", 4, "-0.0005"),
            ("0", 3, "0.000"),
            ("100000000", 0, "100000000"),
            (
                "12345678901234567890123456789",
                10,
                "1234567890123456789.0123456789",
            ),
            ("10000", 8, "0.00010000"),
        ] {
            let mut out = BytesMut::new();
            numeric_binary(digits, scale, &mut out);
            assert_eq!(
                numeric_from_binary(&out).as_deref(),
                Some(text),
                "{digits} at {scale}"
            );
        }
    }

    #[test]
    fn every_mapped_type_has_an_arrow_reading() {
        for t in [
            DataType::Int64,
            DataType::Boolean,
            DataType::Float64,
            DataType::Utf8,
            DataType::Date32,
            DataType::Timestamp(TimeUnit::Microsecond, None),
        ] {
            let (pg, _) = pg_type(&t).expect("mapped");
            assert_eq!(arrow_type(&pg), Some(t));
        }
        assert!(pg_type(&DataType::Interval(arrow::datatypes::IntervalUnit::DayTime)).is_none());
    }
}
