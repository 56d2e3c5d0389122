//! Nested columns (struct, list, map, in any nesting) and `void` columns.
//!
//! A table stores a nested column in one Arrow shape, the one Delta and Parquet writers
//! agree on: `Struct` with the table's fields, `List` whose item field is named
//! `element`, and `Map` whose entries struct `key_value` holds a non-null `key` and a
//! `value`. A Delta `void` column (NullType) is an Arrow `Null` column: it is never
//! stored in data files and reads as nulls.
//!
//! Producers and other writers use other shapes for the same values (list items named
//! `item`, map entries named `entries`, `LargeList`, struct fields of a file missing or
//! in another order): [`reshape`] brings an array to the table's exact type, child by
//! child, with the same per-leaf rules as top-level columns.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, ListArray, MapArray, NullArray, StructArray, new_null_array,
};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use lakehouse_core::{Error, ErrorKind, Result};

/// The item field name of a table's list columns.
pub(crate) const LIST_ITEM: &str = "element";
/// The entries field name of a table's map columns.
pub(crate) const MAP_ENTRIES: &str = "key_value";
/// The key field name of a map's entries.
pub(crate) const MAP_KEY: &str = "key";
/// The value field name of a map's entries.
pub(crate) const MAP_VALUE: &str = "value";

/// Whether `t` is a struct, list or map type (of any layout).
pub(crate) fn is_nested(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Struct(_)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::FixedSizeList(..)
            | DataType::Map(..)
    )
}

/// Whether a column of type `t` gets per-file statistics (min, max, null count): the
/// top-level columns of primitive types.
pub(crate) fn has_stats(t: &DataType) -> bool {
    !is_nested(t) && !matches!(t, DataType::Null)
}

/// Whether `t` holds a timestamp without a time zone at any depth (the Delta feature
/// `timestampNtz`).
pub(crate) fn has_timestamp_ntz(t: &DataType) -> bool {
    match t {
        DataType::Timestamp(_, None) => true,
        DataType::Struct(fields) => fields.iter().any(|f| has_timestamp_ntz(f.data_type())),
        DataType::List(f) | DataType::Map(f, _) => has_timestamp_ntz(f.data_type()),
        _ => false,
    }
}

/// The list type of a table: items named `element`.
pub(crate) fn list_type(item: DataType, nullable: bool) -> DataType {
    DataType::List(Arc::new(Field::new(LIST_ITEM, item, nullable)))
}

/// The map type of a table: entries `key_value` with a non-null `key` and a `value`.
pub(crate) fn map_type(key: DataType, value: DataType, value_nullable: bool) -> DataType {
    let entries = Fields::from(vec![
        Field::new(MAP_KEY, key, false),
        Field::new(MAP_VALUE, value, value_nullable),
    ]);
    DataType::Map(
        Arc::new(Field::new(MAP_ENTRIES, DataType::Struct(entries), false)),
        false,
    )
}

/// The key and value fields of a map type's entries.
pub(crate) fn map_fields(entries: &Field) -> Option<(&FieldRef, &FieldRef)> {
    match entries.data_type() {
        DataType::Struct(f) if f.len() == 2 => Some((&f[0], &f[1])),
        _ => None,
    }
}

/// `t` without its `void` fields: `None` for a `void` type itself. Void fields are
/// dropped from structs at every depth (the table format never stores them; a table
/// refuses void fields inside lists and maps, see [`check_void`]).
pub(crate) fn without_void(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Null => None,
        DataType::Struct(fields) => Some(DataType::Struct(
            fields
                .iter()
                .filter_map(|f| {
                    without_void(f.data_type())
                        .map(|d| Arc::new(f.as_ref().clone().with_data_type(d)))
                })
                .collect::<Fields>(),
        )),
        other => Some(other.clone()),
    }
}

/// The schema of data files for columns `schema`: void columns and fields left out.
pub(crate) fn file_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .filter_map(|f| {
                without_void(f.data_type()).map(|d| f.as_ref().clone().with_data_type(d))
            })
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// Checks where `void` sits in column `column` of type `t`: never inside a list or a
/// map, and never as every field of a struct (that struct would have no data).
pub(crate) fn check_void(column: &str, t: &DataType, in_container: bool) -> Result<()> {
    let refuse = |why: &str| {
        Err(
            Error::new(ErrorKind::Unsupported, format!("column {column}: {why}"))
                .with_column(top(column)),
        )
    };
    match t {
        DataType::Null if in_container => {
            refuse("a void (Null) type inside a list or a map is not stored")
        }
        DataType::Struct(fields) => {
            if fields.is_empty() || fields.iter().all(|f| f.data_type() == &DataType::Null) {
                return refuse("a struct needs at least one field that is not void (Null)");
            }
            fields.iter().try_for_each(|f| {
                check_void(
                    &format!("{column}.{}", f.name()),
                    f.data_type(),
                    in_container,
                )
            })
        }
        DataType::List(f) | DataType::Map(f, _) => check_void(column, f.data_type(), true),
        _ => Ok(()),
    }
}

/// Checks the field names of the structs in `t`: not empty, each once (names are
/// case-insensitive in Delta).
pub(crate) fn check_names(column: &str, t: &DataType) -> Result<()> {
    match t {
        DataType::Struct(fields) => {
            let mut seen = HashSet::new();
            for f in fields {
                let path = format!("{column}.{}", f.name());
                if f.name().is_empty() {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!("a field of column {column} has an empty name"),
                    )
                    .with_column(top(column)));
                }
                if !seen.insert(f.name().to_lowercase()) {
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!("field {path} appears twice (names are case-insensitive)"),
                    )
                    .with_column(top(column)));
                }
                check_names(&path, f.data_type())?;
            }
            Ok(())
        }
        DataType::List(f) | DataType::Map(f, _) => check_names(column, f.data_type()),
        _ => Ok(()),
    }
}

/// How [`reshape`] treats what the target type does not describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Appending: a struct field that is not in the table is an error, a missing one
    /// is null (an error when the field is not nullable and its struct row is valid).
    Append,
    /// Reading a data file: fields the table no longer has are dropped, fields the
    /// file predates read as nulls.
    Read,
}

/// Converts a leaf (a non-nested array) to a table type: `Ok(None)` when no rule
/// applies.
pub(crate) type Leaf<'a> = &'a dyn Fn(&ArrayRef, &DataType, &str) -> Result<Option<ArrayRef>>;

/// `array` as exactly `to`; `column` (a dotted path) names it in errors.
///
/// Structs are matched by field name (exactly, else ignoring case), lists of any layout
/// become `List` with the target's item field, maps keep their entries with the
/// target's names; `leaf` converts the values that are not nested. `Ok(None)` when a
/// leaf has no rule (the caller reports the column's types).
pub(crate) fn reshape(
    array: &ArrayRef,
    to: &DataType,
    column: &str,
    mode: Mode,
    leaf: Leaf<'_>,
) -> Result<Option<ArrayRef>> {
    let from = array.data_type();
    if from == to {
        return Ok(Some(array.clone()));
    }
    if to == &DataType::Null {
        // A void column holds no values: whatever a file or a producer has is null.
        if mode == Mode::Append && from != &DataType::Null && array.null_count() != array.len() {
            return Err(mismatch(
                column,
                format!("the column is void (Null) in the table but the batch has {from} values"),
            ));
        }
        return Ok(Some(Arc::new(NullArray::new(array.len()))));
    }
    match (from, to) {
        (DataType::Struct(_), DataType::Struct(to_fields)) => {
            reshape_struct(array.as_struct(), to_fields, column, mode, leaf)
        }
        (
            DataType::List(_)
            | DataType::LargeList(_)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::FixedSizeList(..),
            DataType::List(to_item),
        ) => reshape_list(array, to_item, column, mode, leaf),
        (DataType::Map(..), DataType::Map(to_entries, sorted)) => {
            reshape_map(array.as_map(), to_entries, *sorted, column, mode, leaf)
        }
        (_, DataType::Struct(_) | DataType::List(_) | DataType::Map(..)) => Err(mismatch(
            column,
            format!("the batch has {from}, the table has {to}"),
        )),
        _ if is_nested(from) => Err(mismatch(
            column,
            format!("the batch has {from}, the table has {to}"),
        )),
        _ => leaf(array, to, column),
    }
}

/// The top-level column of a path such as `s.a` or `l[].x` (callers that know the
/// top-level name set it again: a column name may hold a dot).
pub(crate) fn top(column: &str) -> &str {
    column.split(['.', '[']).next().unwrap_or(column)
}

fn mismatch(column: &str, detail: String) -> Error {
    let top = top(column);
    Error::new(
        ErrorKind::SchemaMismatch,
        format!("column {column}: {detail}"),
    )
    .with_column(top)
}

fn arrow_error(column: &str, e: arrow::error::ArrowError) -> Error {
    Error::new(ErrorKind::SchemaMismatch, format!("column {column}: {e}")).with_column(top(column))
}

fn reshape_struct(
    array: &StructArray,
    to_fields: &Fields,
    column: &str,
    mode: Mode,
    leaf: Leaf<'_>,
) -> Result<Option<ArrayRef>> {
    let DataType::Struct(from_fields) = array.data_type() else {
        return Ok(None);
    };
    let find = |name: &str| {
        from_fields
            .iter()
            .position(|f| f.name() == name)
            .or_else(|| {
                from_fields
                    .iter()
                    .position(|f| f.name().eq_ignore_ascii_case(name))
            })
    };
    if mode == Mode::Append {
        let extra: Vec<String> = from_fields
            .iter()
            .filter(|f| {
                !to_fields
                    .iter()
                    .any(|t| t.name().eq_ignore_ascii_case(f.name()))
            })
            .map(|f| format!("{column}.{}", f.name()))
            .collect();
        if !extra.is_empty() {
            return Err(mismatch(
                column,
                format!("fields not in the table: {}", extra.join(", ")),
            ));
        }
    }
    let mut children = Vec::with_capacity(to_fields.len());
    for target in to_fields {
        let path = format!("{column}.{}", target.name());
        let child = match find(target.name()) {
            Some(i) => match reshape(array.column(i), target.data_type(), &path, mode, leaf)? {
                Some(c) => c,
                None => {
                    return Err(mismatch(
                        &path,
                        format!(
                            "the batch has {}, the table has {}",
                            from_fields[i].data_type(),
                            target.data_type()
                        ),
                    ));
                }
            },
            None => {
                if mode == Mode::Append && !target.is_nullable() && array.len() > array.null_count()
                {
                    return Err(mismatch(
                        &path,
                        "the field is not nullable and the batch does not have it".into(),
                    ));
                }
                new_null_array(target.data_type(), array.len())
            }
        };
        children.push(child);
    }
    let out = StructArray::try_new(to_fields.clone(), children, array.nulls().cloned())
        .map_err(|e| arrow_error(column, e))?;
    Ok(Some(Arc::new(out)))
}

fn reshape_list(
    array: &ArrayRef,
    to_item: &FieldRef,
    column: &str,
    mode: Mode,
    leaf: Leaf<'_>,
) -> Result<Option<ArrayRef>> {
    let strict = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    // Other layouts become a `List` of the same items first (offsets that do not fit
    // 32 bits are an error, never truncated).
    let list = match array.data_type() {
        DataType::List(_) => array.clone(),
        DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _) => {
            let same = DataType::List(Arc::new(Field::new(
                LIST_ITEM,
                f.data_type().clone(),
                f.is_nullable(),
            )));
            cast_with_options(array, &same, &strict).map_err(|e| arrow_error(column, e))?
        }
        _ => return Ok(None),
    };
    let list = list.as_list::<i32>();
    let path = format!("{column}[]");
    let Some(values) = reshape(list.values(), to_item.data_type(), &path, mode, leaf)? else {
        return Err(mismatch(
            &path,
            format!(
                "the batch has items of type {}, the table has {}",
                list.values().data_type(),
                to_item.data_type()
            ),
        ));
    };
    let out = ListArray::try_new(
        to_item.clone(),
        list.offsets().clone(),
        values,
        list.nulls().cloned(),
    )
    .map_err(|e| arrow_error(column, e))?;
    Ok(Some(Arc::new(out)))
}

fn reshape_map(
    array: &MapArray,
    to_entries: &FieldRef,
    sorted: bool,
    column: &str,
    mode: Mode,
    leaf: Leaf<'_>,
) -> Result<Option<ArrayRef>> {
    let (Some((to_key, to_value)), DataType::Struct(to_fields)) =
        (map_fields(to_entries), to_entries.data_type())
    else {
        return Ok(None);
    };
    let entries = array.entries();
    if entries.num_columns() != 2 {
        return Err(mismatch(
            column,
            "map entries need a key and a value".into(),
        ));
    }
    let mut children = Vec::with_capacity(2);
    for (i, target, part) in [(0, to_key, "key"), (1, to_value, "value")] {
        let path = format!("{column}.{part}");
        let Some(c) = reshape(entries.column(i), target.data_type(), &path, mode, leaf)? else {
            return Err(mismatch(
                &path,
                format!(
                    "the batch has {}, the table has {}",
                    entries.column(i).data_type(),
                    target.data_type()
                ),
            ));
        };
        children.push(c);
    }
    let entries = StructArray::try_new(to_fields.clone(), children, entries.nulls().cloned())
        .map_err(|e| arrow_error(column, e))?;
    let out = MapArray::try_new(
        to_entries.clone(),
        array.offsets().clone(),
        entries,
        array.nulls().cloned(),
        sorted,
    )
    .map_err(|e| arrow_error(column, e))?;
    Ok(Some(Arc::new(out)))
}

/// The read-side leaf rule: a value of another physical type is cast to the table's.
pub(crate) fn cast_leaf(array: &ArrayRef, to: &DataType, column: &str) -> Result<Option<ArrayRef>> {
    arrow::compute::cast(array, to).map(Some).map_err(|e| {
        Error::new(ErrorKind::TypeMismatch, format!("column {column}: {e}"))
            .with_column(top(column))
    })
}

/// A column read from a data file (`array`) as the table's type `to`: nested shapes
/// reshaped, other types cast.
pub(crate) fn from_file(array: &ArrayRef, to: &DataType, column: &str) -> Result<ArrayRef> {
    reshape(array, to, column, Mode::Read, &cast_leaf)
        .map_err(|e| e.with_column(column))?
        .ok_or_else(|| {
            Error::new(
                ErrorKind::TypeMismatch,
                format!(
                    "column {column}: the file has {}, the table has {to}",
                    array.data_type()
                ),
            )
            .with_column(column)
        })
}

/// Checks that `predicate` only tests nested and void columns of `schema` with
/// `IS NULL` / `IS NOT NULL`: comparisons of their values are an
/// [`ErrorKind::Unsupported`] error naming the column (never a wrong answer).
pub(crate) fn check_predicate(
    predicate: &lakehouse_core::Predicate,
    schema: &Schema,
) -> Result<()> {
    use lakehouse_core::Predicate;
    let check = |column: &str, what: &str| -> Result<()> {
        let Ok(f) = schema.field_with_name(column) else {
            return Ok(());
        };
        if has_stats(f.data_type()) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "a predicate with {what} on column {column} of type {}: nested and void \
                 columns are only tested with IS NULL / IS NOT NULL",
                f.data_type()
            ),
        )
        .with_column(column))
    };
    match predicate {
        Predicate::Compare { column, .. } => check(column, "a comparison"),
        Predicate::Between { column, .. } => check(column, "BETWEEN"),
        Predicate::InList { column, .. } => check(column, "IN"),
        Predicate::And(parts) | Predicate::Or(parts) => {
            parts.iter().try_for_each(|p| check_predicate(p, schema))
        }
        Predicate::Not(p) => check_predicate(p, schema),
        // Literals and IS NULL: any column.
        _ => Ok(()),
    }
}

/// Whether a column of type `to` read from a file goes through [`from_file`] (nested
/// and void columns) rather than a plain cast.
pub(crate) fn reads_reshaped(to: &DataType) -> bool {
    is_nested(to) || to == &DataType::Null
}
