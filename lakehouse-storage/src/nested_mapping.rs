//! Column mapping inside nested columns.
//!
//! In a column-mapped table (`delta.columnMapping.mode` `name` or `id`) every field has
//! a physical name and a field id, struct fields nested in structs, lists and maps as
//! much as top-level columns: data files name nested fields physically (Spark writes
//! `col-<uuid>` names and Parquet field ids at every depth). [`NestedMapping`] is that
//! naming for one top-level column, read from the table schema;
//! [`NestedMapping::to_logical`] renames the struct fields of an array read from a file
//! to their logical names, without copying values, so that [`crate::nested::reshape`]
//! then matches them by name as it does in tables without column mapping.
//!
//! A file's struct field is matched by its Parquet field id where the table is in mode
//! `id` and the file has one, else by its physical name; a field of the file that
//! matches no field of the table (dropped, or of another table) is renamed to a name no
//! logical field has, so it is never read in place of another.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, GenericListArray, MapArray, OffsetSizeTrait, StructArray,
};
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use lakehouse_core::{Error, ErrorKind, Result};
use serde_json::Value;

/// How the fields nested in one column are named in data files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NestedMapping {
    /// A type without struct fields inside: nothing to rename.
    Leaf,
    /// A struct's fields.
    Struct(Vec<MappedField>),
    /// A list's items.
    List(Box<NestedMapping>),
    /// A map's keys and values.
    Map(Box<NestedMapping>, Box<NestedMapping>),
}

/// One struct field of a column-mapped table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MappedField {
    logical: String,
    physical: String,
    id: Option<i32>,
    nested: NestedMapping,
}

/// What a field a file holds is named when no field of the table matches it.
const UNMATCHED: &str = "\u{0}unmatched:";

impl NestedMapping {
    /// The naming of a Delta schema type (the JSON of a field's `type`); `column` names
    /// the field in errors. Every struct field must carry a physical name.
    pub(crate) fn from_delta_type(ty: &Value, column: &str) -> Result<NestedMapping> {
        let Some(object) = ty.as_object() else {
            return Ok(NestedMapping::Leaf);
        };
        match object.get("type").and_then(Value::as_str) {
            Some("struct") => {
                let mut fields = Vec::new();
                for f in object
                    .get("fields")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let logical = f.get("name").and_then(Value::as_str).unwrap_or_default();
                    let path = format!("{column}.{logical}");
                    let physical = f
                        .pointer("/metadata/delta.columnMapping.physicalName")
                        .and_then(Value::as_str)
                        .ok_or_else(|| {
                            Error::new(
                                ErrorKind::Corrupt,
                                format!(
                                    "field {path} of a column-mapped table has no physical name"
                                ),
                            )
                            .with_column(column)
                        })?;
                    let id = f
                        .pointer("/metadata/delta.columnMapping.id")
                        .and_then(Value::as_i64)
                        .and_then(|id| i32::try_from(id).ok());
                    let nested = NestedMapping::from_delta_type(
                        f.get("type").unwrap_or(&Value::Null),
                        &path,
                    )?;
                    fields.push(MappedField {
                        logical: logical.to_owned(),
                        physical: physical.to_owned(),
                        id,
                        nested,
                    });
                }
                Ok(NestedMapping::Struct(fields))
            }
            Some("array") => Ok(NestedMapping::List(Box::new(
                NestedMapping::from_delta_type(
                    object.get("elementType").unwrap_or(&Value::Null),
                    &format!("{column}[]"),
                )?,
            ))),
            Some("map") => Ok(NestedMapping::Map(
                Box::new(NestedMapping::from_delta_type(
                    object.get("keyType").unwrap_or(&Value::Null),
                    &format!("{column}.key"),
                )?),
                Box::new(NestedMapping::from_delta_type(
                    object.get("valueType").unwrap_or(&Value::Null),
                    &format!("{column}.value"),
                )?),
            )),
            _ => Ok(NestedMapping::Leaf),
        }
    }

    /// Whether some struct field is nested here (a mapping with work to do).
    pub(crate) fn renames(&self) -> bool {
        match self {
            NestedMapping::Leaf => false,
            NestedMapping::Struct(_) => true,
            NestedMapping::List(item) => item.renames(),
            NestedMapping::Map(key, value) => key.renames() || value.renames(),
        }
    }

    /// `array`, read from a data file, with its struct fields under their logical names
    /// (`by_id`: match the files' Parquet field ids first). Values are not copied.
    /// Arrays of another shape than the mapping expects are returned as they are (the
    /// conversion to the table type that follows reports them).
    pub(crate) fn to_logical(&self, array: &ArrayRef, by_id: bool) -> Result<ArrayRef> {
        let arrow = |e: arrow::error::ArrowError| Error::new(ErrorKind::Corrupt, e.to_string());
        match (self, array.data_type()) {
            (NestedMapping::Struct(fields), DataType::Struct(file_fields)) => {
                let s = array.as_struct();
                let mut out_fields = Vec::with_capacity(file_fields.len());
                let mut columns = Vec::with_capacity(file_fields.len());
                for (f, c) in file_fields.iter().zip(s.columns()) {
                    let (name, child) = match find(fields, f, by_id) {
                        Some(m) => (m.logical.clone(), m.nested.to_logical(c, by_id)?),
                        None => (format!("{UNMATCHED}{}", f.name()), c.clone()),
                    };
                    out_fields.push(renamed(f, name, child.data_type()));
                    columns.push(child);
                }
                let out =
                    StructArray::try_new(Fields::from(out_fields), columns, s.nulls().cloned())
                        .map_err(arrow)?;
                Ok(Arc::new(out))
            }
            (NestedMapping::List(item), DataType::List(f)) => {
                Ok(Arc::new(rename_list::<i32>(array, f, item, by_id)?))
            }
            (NestedMapping::List(item), DataType::LargeList(f)) => {
                Ok(Arc::new(rename_list::<i64>(array, f, item, by_id)?))
            }
            (NestedMapping::Map(key, value), DataType::Map(entries_field, sorted)) => {
                let map = array.as_map();
                let entries = map.entries();
                let DataType::Struct(entry_fields) = entries_field.data_type() else {
                    return Ok(array.clone());
                };
                if entries.num_columns() != 2 {
                    return Ok(array.clone());
                }
                let k = key.to_logical(entries.column(0), by_id)?;
                let v = value.to_logical(entries.column(1), by_id)?;
                let fields = Fields::from(vec![
                    renamed(
                        &entry_fields[0],
                        entry_fields[0].name().clone(),
                        k.data_type(),
                    ),
                    renamed(
                        &entry_fields[1],
                        entry_fields[1].name().clone(),
                        v.data_type(),
                    ),
                ]);
                let entries = StructArray::try_new(fields, vec![k, v], entries.nulls().cloned())
                    .map_err(arrow)?;
                let field = renamed(
                    entries_field,
                    entries_field.name().clone(),
                    entries.data_type(),
                );
                let out = MapArray::try_new(
                    field,
                    map.offsets().clone(),
                    entries,
                    map.nulls().cloned(),
                    *sorted,
                )
                .map_err(arrow)?;
                Ok(Arc::new(out))
            }
            _ => Ok(array.clone()),
        }
    }
}

/// A list (offsets of `O`) whose items are renamed by `item`.
fn rename_list<O: OffsetSizeTrait>(
    array: &ArrayRef,
    field: &FieldRef,
    item: &NestedMapping,
    by_id: bool,
) -> Result<GenericListArray<O>> {
    let list = array.as_list::<O>();
    let values = item.to_logical(list.values(), by_id)?;
    let field = renamed(field, field.name().clone(), values.data_type());
    GenericListArray::try_new(field, list.offsets().clone(), values, list.nulls().cloned())
        .map_err(|e| Error::new(ErrorKind::Corrupt, e.to_string()))
}

/// The field of the table that a file's field `f` holds.
fn find<'a>(fields: &'a [MappedField], f: &Field, by_id: bool) -> Option<&'a MappedField> {
    if by_id
        && let Some(id) = f
            .metadata()
            .get(parquet::arrow::PARQUET_FIELD_ID_META_KEY)
            .and_then(|v| v.parse::<i32>().ok())
    {
        return fields.iter().find(|m| m.id == Some(id));
    }
    fields.iter().find(|m| m.physical == *f.name())
}

/// `f` under `name` with type `t`, its nullability and metadata kept.
fn renamed(f: &FieldRef, name: String, t: &DataType) -> FieldRef {
    Arc::new(f.as_ref().clone().with_name(name).with_data_type(t.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, ListArray, StringArray};
    use serde_json::json;

    fn mapped(name: &str, physical: &str, id: i64, ty: Value) -> Value {
        json!({"name": name, "type": ty, "nullable": true, "metadata": {
            "delta.columnMapping.physicalName": physical, "delta.columnMapping.id": id}})
    }

    fn with_id(name: &str, t: DataType, id: i32) -> Field {
        Field::new(name, t, true).with_metadata(
            [(
                parquet::arrow::PARQUET_FIELD_ID_META_KEY.to_owned(),
                id.to_string(),
            )]
            .into(),
        )
    }

    /// `struct<a: long, b: string>`: `a` stored as `col-a`, `b` stored as `a`.
    fn swapped() -> NestedMapping {
        let ty = json!({"type": "struct", "fields": [
            mapped("a", "col-a", 1, json!("long")),
            mapped("b", "a", 2, json!("string")),
        ]});
        NestedMapping::from_delta_type(&ty, "s").unwrap()
    }

    fn file_struct(fields: Vec<Field>) -> ArrayRef {
        let columns: Vec<ArrayRef> = fields
            .iter()
            .map(|f| -> ArrayRef {
                match f.data_type() {
                    DataType::Int64 => Arc::new(Int64Array::from(vec![7])),
                    _ => Arc::new(StringArray::from(vec!["x"])),
                }
            })
            .collect();
        Arc::new(StructArray::new(Fields::from(fields), columns, None))
    }

    fn names(a: &ArrayRef) -> Vec<String> {
        match a.data_type() {
            DataType::Struct(f) => f.iter().map(|f| f.name().clone()).collect(),
            other => panic!("not a struct: {other}"),
        }
    }

    #[test]
    fn physical_names_become_logical_and_never_cross() {
        let file = file_struct(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("col-a", DataType::Int64, true),
            Field::new("col-dropped", DataType::Int64, true),
        ]);
        let out = swapped().to_logical(&file, false).unwrap();
        assert_eq!(names(&out)[..2], ["b".to_owned(), "a".to_owned()]);
        assert!(names(&out)[2].starts_with(UNMATCHED));
        let s = out.as_struct();
        assert_eq!(s.column_by_name("a").unwrap().data_type(), &DataType::Int64);
        assert_eq!(s.column_by_name("b").unwrap().data_type(), &DataType::Utf8);
    }

    #[test]
    fn field_ids_win_over_names_in_mode_id() {
        // The file calls field 2 `col-a`: by id it is `b`, by name it would be `a`.
        let file = file_struct(vec![
            with_id("col-a", DataType::Utf8, 2),
            with_id("zzz", DataType::Int64, 1),
        ]);
        let out = swapped().to_logical(&file, true).unwrap();
        assert_eq!(names(&out), ["b", "a"]);
        let by_name = swapped().to_logical(&file, false).unwrap();
        assert_eq!(names(&by_name)[0], "a");
    }

    #[test]
    fn lists_and_maps_rename_the_structs_inside() {
        let inner = json!({"type": "struct", "fields": [mapped("x", "col-x", 3, json!("long"))]});
        let list = NestedMapping::from_delta_type(
            &json!({"type": "array", "elementType": inner, "containsNull": true}),
            "l",
        )
        .unwrap();
        assert!(list.renames());
        let item = file_struct(vec![Field::new("col-x", DataType::Int64, true)]);
        let field = Arc::new(Field::new("element", item.data_type().clone(), true));
        let array: ArrayRef = Arc::new(ListArray::new(
            field,
            arrow::buffer::OffsetBuffer::from_lengths([1]),
            item,
            None,
        ));
        let out = list.to_logical(&array, false).unwrap();
        let values = out.as_list::<i32>().values().clone();
        assert_eq!(names(&values), ["x"]);

        let flat = NestedMapping::from_delta_type(
            &json!({"type": "map", "keyType": "string", "valueType": "long"}),
            "m",
        )
        .unwrap();
        assert!(!flat.renames());
        assert!(
            !NestedMapping::from_delta_type(&json!("long"), "c")
                .unwrap()
                .renames()
        );
    }

    #[test]
    fn a_nested_field_without_physical_name_is_corrupt() {
        let ty = json!({"type": "struct", "fields": [{"name": "a", "type": "long",
            "nullable": true, "metadata": {}}]});
        let e = NestedMapping::from_delta_type(&ty, "s").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        assert!(e.to_string().contains("s.a"), "{e}");
    }
}
