//! Type widening (the Delta feature `typeWidening`): a column's type in the schema may
//! be wider than the type older data files store it in. Such files are read by an
//! exact conversion to the table type; a change the Delta protocol does not allow is
//! refused by name.
//!
//! The changes allowed (Delta protocol, "Type Widening"):
//! `byte` -> `short` -> `integer` -> `long`; `float` -> `double`; `byte`, `short`,
//! `integer` -> `double`; `date` -> `timestamp_ntz`; `decimal(p, s)` ->
//! `decimal(p + k1, s + k2)` with `k1 >= k2 >= 0`; `byte`, `short`, `integer` ->
//! `decimal(10 + k1, k2)` and `long` -> `decimal(20 + k1, k2)`, `k1 >= k2 >= 0`.

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::DataType;
use arrow::util::display::FormatOptions;
use lakehouse_core::{Error, ErrorKind, Result};
use serde_json::Value;

/// A Delta primitive type, as far as type widening needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Byte,
    Short,
    Int,
    Long,
    Float,
    Double,
    Date,
    TimestampNtz,
    Decimal(u8, i8),
    /// Any other type: only "changed" to itself.
    Other,
}

fn kind_of_name(name: &str) -> Kind {
    match name.trim() {
        "byte" => Kind::Byte,
        "short" => Kind::Short,
        "integer" => Kind::Int,
        "long" => Kind::Long,
        "float" => Kind::Float,
        "double" => Kind::Double,
        "date" => Kind::Date,
        "timestamp_ntz" => Kind::TimestampNtz,
        other => other
            .strip_prefix("decimal(")
            .and_then(|r| r.strip_suffix(')'))
            .and_then(|r| r.split_once(','))
            .and_then(|(p, s)| {
                Some(Kind::Decimal(
                    p.trim().parse().ok()?,
                    s.trim().parse().ok()?,
                ))
            })
            .unwrap_or(Kind::Other),
    }
}

fn kind_of_arrow(t: &DataType) -> Kind {
    match t {
        DataType::Int8 => Kind::Byte,
        DataType::Int16 => Kind::Short,
        DataType::Int32 => Kind::Int,
        DataType::Int64 => Kind::Long,
        DataType::Float32 => Kind::Float,
        DataType::Float64 => Kind::Double,
        DataType::Date32 | DataType::Date64 => Kind::Date,
        DataType::Timestamp(_, None) => Kind::TimestampNtz,
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => Kind::Decimal(*p, *s),
        _ => Kind::Other,
    }
}

/// Whether the protocol allows widening `from` to `to` (or they are the same).
fn allowed(from: Kind, to: Kind) -> bool {
    use Kind::*;
    let int_digits = |k: Kind| match k {
        Byte | Short | Int => Some(10i16),
        Long => Some(20),
        _ => None,
    };
    match (from, to) {
        (a, b) if a == b => true,
        (Byte, Short | Int | Long) | (Short, Int | Long) | (Int, Long) => true,
        (Float, Double) | (Byte | Short | Int, Double) => true,
        (Date, TimestampNtz) => true,
        (Decimal(p, s), Decimal(p2, s2)) => {
            let (k1, k2) = (i16::from(p2) - i16::from(p), i16::from(s2) - i16::from(s));
            k1 >= k2 && k2 >= 0
        }
        (i, Decimal(p, s)) => {
            int_digits(i).is_some_and(|d| s >= 0 && i16::from(p) - i16::from(s) >= d)
        }
        _ => false,
    }
}

/// One recorded type change of a column (`delta.typeChanges`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeChange {
    /// The column (top-level name, or dotted path of a struct field).
    pub(crate) column: String,
    pub(crate) from: String,
    pub(crate) to: String,
}

/// The type changes a table's schema records (`delta.typeChanges` in the metadata of
/// any field, nested ones included), each checked to be one the protocol allows.
///
/// Errors with [`ErrorKind::Unsupported`] naming the column and the change otherwise,
/// and with [`ErrorKind::Corrupt`] when the metadata is not a list of changes.
pub(crate) fn type_changes(schema_string: &str) -> Result<Vec<TypeChange>> {
    // Cheap path: most tables never widened a type.
    if !schema_string.contains("delta.typeChanges") {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_str(schema_string)
        .map_err(|e| Error::new(ErrorKind::Corrupt, format!("table schema: {e}")))?;
    let mut out = Vec::new();
    collect_struct(&v, "", &mut out)?;
    for c in &out {
        if !allowed(kind_of_name(&c.from), kind_of_name(&c.to)) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "column {}: the table changed its type from {} to {}, a type change the \
                     Delta feature typeWidening does not allow",
                    c.column, c.from, c.to
                ),
            )
            .with_column(&c.column));
        }
    }
    Ok(out)
}

fn collect_struct(v: &Value, prefix: &str, out: &mut Vec<TypeChange>) -> Result<()> {
    for f in v
        .get("fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
        let path = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        };
        if let Some(changes) = f.pointer("/metadata/delta.typeChanges") {
            let bad = || {
                Error::new(
                    ErrorKind::Corrupt,
                    format!("column {path}: delta.typeChanges is not a list of type changes"),
                )
                .with_column(&path)
            };
            // Written as a JSON list; some writers keep it as a string holding one.
            let parsed;
            let list = match changes {
                Value::Array(a) => a,
                Value::String(s) => {
                    parsed = serde_json::from_str::<Value>(s).map_err(|_| bad())?;
                    parsed.as_array().ok_or_else(bad)?
                }
                _ => return Err(bad()),
            };
            for c in list {
                let (Some(from), Some(to)) = (
                    c.get("fromType").and_then(Value::as_str),
                    c.get("toType").and_then(Value::as_str),
                ) else {
                    return Err(bad());
                };
                let column = match c.get("fieldPath").and_then(Value::as_str) {
                    Some(p) => format!("{path}.{p}"),
                    None => path.clone(),
                };
                out.push(TypeChange {
                    column,
                    from: from.to_owned(),
                    to: to.to_owned(),
                });
            }
        }
        nested(f.get("type"), &path, out)?;
    }
    Ok(())
}

fn nested(t: Option<&Value>, path: &str, out: &mut Vec<TypeChange>) -> Result<()> {
    let Some(t) = t.filter(|t| t.is_object()) else {
        return Ok(());
    };
    match t.get("type").and_then(Value::as_str) {
        Some("struct") => collect_struct(t, path, out),
        Some("array") => nested(t.get("elementType"), &format!("{path}.element"), out),
        Some("map") => {
            nested(t.get("keyType"), &format!("{path}.key"), out)?;
            nested(t.get("valueType"), &format!("{path}.value"), out)
        }
        _ => Ok(()),
    }
}

/// Top-level columns whose file statistics may be inexact in the table type: a
/// `float` widened to `double` (the `float` written as decimal text is not the
/// `double` the value reads as). Their bounds are not used for pruning.
pub(crate) fn inexact_stats(changes: &[TypeChange]) -> Vec<String> {
    changes
        .iter()
        .filter(|c| kind_of_name(&c.from) == Kind::Float && !c.column.contains('.'))
        .map(|c| c.column.clone())
        .collect()
}

/// Whether a data file's Arrow type `file` reads as the table type `table` exactly:
/// the same Delta type in another Arrow layout (string views, dictionaries,
/// timestamps in other units or zones, decimals of other widths) or an allowed
/// widening of it.
fn readable_as(file: &DataType, table: &DataType) -> bool {
    use DataType as D;
    if file == table {
        return true;
    }
    match (file, table) {
        (D::Dictionary(_, v), t) => readable_as(v, t),
        (D::Null, _) => true,
        (D::Utf8 | D::LargeUtf8 | D::Utf8View, D::Utf8 | D::LargeUtf8 | D::Utf8View) => true,
        (
            D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_),
            D::Binary | D::LargeBinary | D::BinaryView,
        ) => true,
        // Timestamps in any unit (INT96 reads as nanoseconds) and zone label.
        (D::Timestamp(_, _), D::Timestamp(_, _)) => true,
        // Unsigned integers from writers that keep them: converted with a range check.
        (
            D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64,
            D::Int8 | D::Int16 | D::Int32 | D::Int64,
        ) => true,
        (D::Float16, D::Float32 | D::Float64) => true,
        // Nested columns: converted field by field by the cast in `to_table_type`.
        (D::Struct(_), D::Struct(_)) | (D::Map(..), D::Map(..)) => true,
        (
            D::List(_) | D::LargeList(_) | D::ListView(_) | D::FixedSizeList(..),
            D::List(_) | D::LargeList(_),
        ) => true,
        (f, t) => {
            let (a, b) = (kind_of_arrow(f), kind_of_arrow(t));
            a != Kind::Other && b != Kind::Other && allowed(a, b)
        }
    }
}

/// Errors with [`ErrorKind::Unsupported`] naming the column unless a data file's
/// column of type `file` reads exactly as the table's type `table`.
pub(crate) fn check_file_type(column: &str, file: &DataType, table: &DataType) -> Result<()> {
    if readable_as(file, table) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Unsupported,
        format!(
            "column {column}: a data file stores it as {file}, which does not read as the \
             table type {table} (not a type widening the Delta protocol allows)"
        ),
    )
    .with_column(column))
}

/// `array` (from a data file) in the table type `table`: exact, or an error naming the
/// column (an unsigned value out of the signed range).
pub(crate) fn to_table_type(column: &str, array: &ArrayRef, table: &DataType) -> Result<ArrayRef> {
    if array.data_type() == table {
        return Ok(array.clone());
    }
    if let (DataType::Timestamp(_, tz), DataType::Timestamp(..)) = (table, array.data_type()) {
        // Parquet keeps the ticks; the zone is only a label: keep the ticks, then the unit.
        let relabelled = relabel(array, tz.clone())?;
        return cast_with_options(&relabelled, table, &checked()).map_err(|e| mismatch(column, &e));
    }
    cast_with_options(array, table, &checked()).map_err(|e| mismatch(column, &e))
}

/// A timestamp array with another zone label and the same ticks.
fn relabel(array: &ArrayRef, tz: Option<Arc<str>>) -> Result<ArrayRef> {
    let data = array
        .to_data()
        .into_builder()
        .data_type(match array.data_type() {
            DataType::Timestamp(u, _) => DataType::Timestamp(*u, tz),
            other => other.clone(),
        })
        .build()
        .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
    Ok(arrow::array::make_array(data))
}

fn checked() -> CastOptions<'static> {
    CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    }
}

fn mismatch(column: &str, e: &arrow::error::ArrowError) -> Error {
    Error::new(
        ErrorKind::TypeMismatch,
        format!("column {column}: a data file's value does not convert to the table type: {e}"),
    )
    .with_column(column)
}

/// `new` (a `schemaString` this crate made) with each top-level column that `old` has
/// keeping its field metadata from `old`: the protocol asks writers to keep
/// `delta.typeChanges` when the schema changes (and other writers' metadata stays too).
pub(crate) fn keep_field_metadata(old: &str, new: &str) -> Result<String> {
    if !old.contains("delta.") {
        return Ok(new.to_owned());
    }
    let corrupt =
        |e: serde_json::Error| Error::new(ErrorKind::Corrupt, format!("table schema: {e}"));
    let old: Value = serde_json::from_str(old).map_err(corrupt)?;
    let mut new: Value = serde_json::from_str(new).map_err(corrupt)?;
    let kept: std::collections::HashMap<&str, &Value> = old
        .get("fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| Some((f.get("name")?.as_str()?, f.get("metadata")?)))
        .collect();
    if let Some(fields) = new.get_mut("fields").and_then(Value::as_array_mut) {
        for f in fields {
            let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
            if let Some(m) = kept.get(name).copied().cloned()
                && let Some(obj) = f.as_object_mut()
            {
                obj.insert("metadata".into(), m);
            }
        }
    }
    Ok(new.to_string())
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::TimeUnit;

    use super::*;

    #[test]
    fn the_protocols_widenings_and_no_others() {
        let ok = [
            ("byte", "short"),
            ("byte", "long"),
            ("short", "integer"),
            ("integer", "long"),
            ("float", "double"),
            ("byte", "double"),
            ("integer", "double"),
            ("date", "timestamp_ntz"),
            ("decimal(10,2)", "decimal(12,2)"),
            ("decimal(10,2)", "decimal(20,5)"),
            ("decimal(10,2)", "decimal(11,3)"),
            ("byte", "decimal(10,0)"),
            ("integer", "decimal(12,2)"),
            ("long", "decimal(20,0)"),
            ("long", "decimal(22,1)"),
        ];
        for (a, b) in ok {
            assert!(allowed(kind_of_name(a), kind_of_name(b)), "{a} -> {b}");
        }
        let refused = [
            ("long", "integer"),
            ("double", "float"),
            ("long", "double"),
            ("timestamp_ntz", "date"),
            ("date", "timestamp"),
            ("decimal(10,2)", "decimal(10,3)"),
            ("decimal(10,2)", "decimal(12,1)"),
            ("byte", "decimal(4,1)"),
            ("integer", "decimal(10,1)"),
            ("long", "decimal(19,0)"),
            ("string", "long"),
            ("integer", "string"),
        ];
        for (a, b) in refused {
            assert!(!allowed(kind_of_name(a), kind_of_name(b)), "{a} -> {b}");
        }
    }

    #[test]
    fn type_changes_are_found_nested_and_checked() {
        let s = r#"{"type":"struct","fields":[
            {"name":"a","type":"long","nullable":true,"metadata":{"delta.typeChanges":[
                {"fromType":"short","toType":"integer"},{"fromType":"integer","toType":"long"}]}},
            {"name":"s","type":{"type":"struct","fields":[
                {"name":"m","type":{"type":"map","keyType":"double","valueType":"string",
                 "valueContainsNull":true},"nullable":true,"metadata":{"delta.typeChanges":[
                 {"fromType":"float","toType":"double","fieldPath":"key"}]}}]},
             "nullable":true,"metadata":{}}]}"#;
        let c = type_changes(s).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[2].column, "s.m.key");
        assert_eq!(inexact_stats(&c), Vec::<String>::new());
        let bad = r#"{"type":"struct","fields":[{"name":"b","type":"integer","nullable":true,
            "metadata":{"delta.typeChanges":[{"fromType":"long","toType":"integer"}]}}]}"#;
        let e = type_changes(bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains("from long to integer"), "{e}");
        let corrupt = r#"{"type":"struct","fields":[{"name":"b","type":"integer",
            "nullable":true,"metadata":{"delta.typeChanges":7}}]}"#;
        assert_eq!(
            type_changes(corrupt).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }

    #[test]
    fn file_types_read_exactly_or_are_refused() {
        use arrow::array::{Array, AsArray, Int32Array};
        assert!(readable_as(&DataType::Int32, &DataType::Int64));
        assert!(readable_as(
            &DataType::Date32,
            &DataType::Timestamp(TimeUnit::Microsecond, None)
        ));
        assert!(!readable_as(
            &DataType::Date32,
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        ));
        assert!(!readable_as(&DataType::Int64, &DataType::Int32));
        assert!(!readable_as(&DataType::Utf8, &DataType::Int64));
        assert!(readable_as(
            &DataType::Decimal128(10, 2),
            &DataType::Decimal128(20, 5)
        ));
        assert!(!readable_as(
            &DataType::Decimal128(10, 2),
            &DataType::Decimal128(10, 3)
        ));
        let e = check_file_type("c", &DataType::Int64, &DataType::Int32).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        let a: ArrayRef = Arc::new(Int32Array::from(vec![Some(7), None, Some(-3)]));
        let d = to_table_type("c", &a, &DataType::Decimal128(12, 2)).unwrap();
        let d = d.as_primitive::<arrow::datatypes::Decimal128Type>();
        assert_eq!((d.value(0), d.is_null(1), d.value(2)), (700, true, -300));
    }
}
