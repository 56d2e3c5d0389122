//! Converting the Arrow types producers hand to `append` into the types a table stores.
//!
//! A table stores each column in one Arrow type (`Utf8`, `Binary`, `Timestamp` in
//! microseconds, `Int8`..`Int64`, ...). Producers use others for the same values:
//! DataFusion reads strings as `Utf8View`, Polars hands `LargeUtf8`, Parquet readers give
//! dictionaries, Arrow timestamps come in seconds, milliseconds or nanoseconds. Before a
//! batch is checked against the table ([`conform_batch`](lakehouse_core::conform_batch))
//! and encoded, [`to_table_types`] converts each column whose type differs from the
//! table's when the conversion keeps every value exactly. The rules are listed in the
//! crate docs (*Arrow types on append*).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, PrimitiveArray, RecordBatch};
use arrow::compute::{CastOptions, cast, cast_with_options};
use arrow::datatypes::{
    DataType, Field, Schema, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use lakehouse_core::{Error, ErrorKind, Result};

/// Returns `batch` with every column whose type differs from the table column of the
/// same name converted to the table's type, where a rule of this module applies.
///
/// Columns not in `table`, and types without a rule, are passed through unchanged for
/// [`conform_batch`](lakehouse_core::conform_batch) to check.
pub(crate) fn to_table_types(table: &Schema, batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut changed = false;
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let target = table
            .field_with_name(field.name())
            .ok()
            .map(|f| f.data_type());
        match target {
            Some(to) if to != field.data_type() => match convert(column, to, field.name())
                // Errors inside a nested column name the top-level column.
                .map_err(|e| e.with_column(field.name()))?
            {
                Some(converted) => {
                    changed = true;
                    fields.push(Field::new(field.name(), to.clone(), field.is_nullable()));
                    columns.push(converted);
                }
                None => {
                    fields.push(field.as_ref().clone());
                    columns.push(column.clone());
                }
            },
            _ => {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
    }
    if !changed {
        return Ok(batch.clone());
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| {
        Error::new(
            ErrorKind::SchemaMismatch,
            format!("converting the batch to the table's types: {e}"),
        )
    })
}

/// `array` converted to `to`, `None` when no rule converts its type to `to`.
fn convert(array: &ArrayRef, to: &DataType, column: &str) -> Result<Option<ArrayRef>> {
    let from = array.data_type();
    if from == to {
        return Ok(Some(array.clone()));
    }
    if crate::nested::is_nested(to) || to == &DataType::Null {
        // Children convert by the same rules, field by field.
        return crate::nested::reshape(array, to, column, crate::nested::Mode::Append, &convert);
    }
    match (from, to) {
        (DataType::Dictionary(_, values), _) => {
            let values = values.as_ref().clone();
            let unpacked =
                cast(array, &values).map_err(|e| cast_error(column, from, &values, e))?;
            convert(&unpacked, to, column)
        }
        (DataType::Utf8View | DataType::LargeUtf8, DataType::Utf8)
        | (DataType::BinaryView | DataType::LargeBinary, DataType::Binary)
        | (DataType::Float16 | DataType::Float32, DataType::Float64) => cast(array, to)
            .map(Some)
            .map_err(|e| cast_error(column, from, to, e)),
        (DataType::Timestamp(unit, from_tz), DataType::Timestamp(TimeUnit::Microsecond, to_tz))
            if from_tz.is_some() == to_tz.is_some() =>
        {
            to_micros(array, *unit, column)
                .map(|a| Some(Arc::new(a.with_timezone_opt(to_tz.clone())) as ArrayRef))
        }
        (from, DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64)
            if from.is_integer() =>
        {
            checked_cast(array, to, column).map(Some)
        }
        (DataType::Decimal128(_, from_scale), DataType::Decimal128(_, to_scale))
            if from_scale == to_scale =>
        {
            checked_cast(array, to, column).map(Some)
        }
        _ => Ok(None),
    }
}

/// A cast that errors instead of producing nulls; on error, names the first value of
/// `array` that does not convert.
fn checked_cast(array: &ArrayRef, to: &DataType, column: &str) -> Result<ArrayRef> {
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    match cast_with_options(array, to, &options) {
        Ok(out) => Ok(out),
        Err(e) => {
            // The safe cast turns each value that does not fit into a null: the first
            // new null is the row to name.
            let lenient =
                cast(array, to).map_err(|e| cast_error(column, array.data_type(), to, e))?;
            let row = (0..array.len()).find(|&i| array.is_valid(i) && lenient.is_null(i));
            let value = row.map(|i| value_text(array, i));
            Err(match (row, value) {
                (Some(row), Some(value)) => value_error(
                    column,
                    format!("value {value} at row {row} does not fit the table's type {to}"),
                ),
                _ => cast_error(column, array.data_type(), to, e),
            })
        }
    }
}

/// A timestamp array of any unit as microseconds, exactly.
fn to_micros(
    array: &ArrayRef,
    unit: TimeUnit,
    column: &str,
) -> Result<PrimitiveArray<TimestampMicrosecondType>> {
    let raw: &Int64Array = &match unit {
        TimeUnit::Second => reinterpret::<TimestampSecondType>(array),
        TimeUnit::Millisecond => reinterpret::<TimestampMillisecondType>(array),
        TimeUnit::Microsecond => reinterpret::<TimestampMicrosecondType>(array),
        TimeUnit::Nanosecond => reinterpret::<TimestampNanosecondType>(array),
    };
    let mut values = Vec::with_capacity(raw.len());
    for i in 0..raw.len() {
        if raw.is_null(i) {
            values.push(0);
            continue;
        }
        let v = raw.value(i);
        let micros = match unit {
            TimeUnit::Second => v.checked_mul(1_000_000),
            TimeUnit::Millisecond => v.checked_mul(1_000),
            TimeUnit::Microsecond => Some(v),
            TimeUnit::Nanosecond if v % 1_000 == 0 => Some(v / 1_000),
            TimeUnit::Nanosecond => {
                return Err(value_error(
                    column,
                    format!(
                        "timestamp {v} ns at row {i} is not a whole number of microseconds \
                         (the table stores microseconds)"
                    ),
                ));
            }
        };
        match micros {
            Some(m) => values.push(m),
            None => {
                return Err(value_error(
                    column,
                    format!(
                        "timestamp {v} {} at row {i} overflows microseconds since the epoch",
                        unit_name(unit)
                    ),
                ));
            }
        }
    }
    Ok(PrimitiveArray::new(values.into(), raw.nulls().cloned()))
}

/// The values of a timestamp array as plain `i64`s.
fn reinterpret<T>(array: &ArrayRef) -> Int64Array
where
    T: arrow::datatypes::ArrowPrimitiveType<Native = i64>,
{
    let a = array.as_primitive::<T>();
    Int64Array::new(a.values().clone(), a.nulls().cloned())
}

fn unit_name(unit: TimeUnit) -> &'static str {
    match unit {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    }
}

/// The value at `row` as text, for error messages.
fn value_text(array: &ArrayRef, row: usize) -> String {
    arrow::util::display::ArrayFormatter::try_new(array.as_ref(), &Default::default())
        .map(|f| f.value(row).to_string())
        .unwrap_or_else(|_| "?".into())
}

fn value_error(column: &str, detail: String) -> Error {
    Error::new(
        ErrorKind::TypeMismatch,
        format!("column {column}: {detail}"),
    )
    .with_column(column)
}

fn cast_error(column: &str, from: &DataType, to: &DataType, e: arrow::error::ArrowError) -> Error {
    Error::new(
        ErrorKind::TypeMismatch,
        format!("column {column}: converting {from} to the table's type {to}: {e}"),
    )
    .with_column(column)
}

#[cfg(test)]
mod tests;
