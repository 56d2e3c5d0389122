//! The Delta Lake transaction log: actions, the Arrow <-> Delta schema mapping, and the
//! replay of commits into a [`Snapshot`].
//!
//! A table is a directory holding Parquet files and `_delta_log/`, in which commit `v` is
//! the newline-delimited JSON file `{v:020}.json`. A commit is created with a
//! put-if-absent, so two writers can never both create the same version: the loser
//! re-reads, checks for conflicts and tries the next version.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use lakehouse_core::{ColumnStats, Error, ErrorKind, Result, Scalar, Version};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::fileset::FileSet;

/// The `_delta_log` directory name.
pub(crate) const LOG_DIR: &str = "_delta_log";

/// One action of a commit, as one line of JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Action {
    /// Information about the commit (not needed to read the table).
    CommitInfo(Value),
    /// The reader and writer versions the table requires.
    Protocol(Protocol),
    /// The table's schema, partitioning and configuration.
    MetaData(MetaData),
    /// A data file that became part of the table.
    Add(Add),
    /// A data file that left the table.
    Remove(Remove),
    /// The last sequence committed by a writer (idempotent commits).
    Txn(Txn),
}

/// The `protocol` action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Protocol {
    pub(crate) min_reader_version: i32,
    pub(crate) min_writer_version: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reader_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) writer_features: Option<Vec<String>>,
}

pub(crate) use crate::features::column_mapping;

/// The `format` of `metaData`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Format {
    pub(crate) provider: String,
    #[serde(default)]
    pub(crate) options: BTreeMap<String, String>,
}

/// The `metaData` action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MetaData {
    pub(crate) id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
    pub(crate) format: Format,
    pub(crate) schema_string: String,
    pub(crate) partition_columns: Vec<String>,
    #[serde(default)]
    pub(crate) configuration: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created_time: Option<i64>,
}

/// The `add` action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Add {
    /// URI-encoded path relative to the table root.
    pub(crate) path: String,
    pub(crate) partition_values: BTreeMap<String, Option<String>>,
    pub(crate) size: i64,
    pub(crate) modification_time: i64,
    pub(crate) data_change: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stats: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deletion_vector: Option<DeletionVector>,
}

/// A deletion vector descriptor: the rows of a data file that are deleted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeletionVector {
    /// `u` (relative file), `p` (absolute path) or `i` (inline).
    pub(crate) storage_type: String,
    pub(crate) path_or_inline_dv: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) offset: Option<i32>,
    pub(crate) size_in_bytes: i32,
    pub(crate) cardinality: i64,
}

impl Add {
    /// The `remove` action that retires this file at `timestamp_ms`; `data_change` is
    /// false when the rows live on in other files (compaction), true when they change.
    pub(crate) fn removal(&self, timestamp_ms: i64, data_change: bool) -> Remove {
        Remove {
            path: self.path.clone(),
            deletion_timestamp: Some(timestamp_ms),
            data_change,
            extended_file_metadata: Some(true),
            partition_values: Some(self.partition_values.clone()),
            size: Some(self.size),
            deletion_vector: self.deletion_vector.clone(),
        }
    }
}

/// The `remove` action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Remove {
    pub(crate) path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deletion_timestamp: Option<i64>,
    pub(crate) data_change: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) extended_file_metadata: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) partition_values: Option<BTreeMap<String, Option<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deletion_vector: Option<DeletionVector>,
}

/// The `txn` action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Txn {
    pub(crate) app_id: String,
    pub(crate) version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_updated: Option<i64>,
}

/// The object name of commit `version`.
pub(crate) fn commit_name(version: Version) -> String {
    format!("{version:020}.json")
}

/// The version of a log object name (`…/00000000000000000007.json` -> 7).
pub(crate) fn parse_commit_name(name: &str) -> Option<Version> {
    let stem = name.strip_suffix(".json")?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

/// Serialises actions as one commit file.
pub(crate) fn encode_commit(actions: &[Action]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(256 * actions.len());
    for a in actions {
        serde_json::to_writer(&mut out, a)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("encoding a commit: {e}")))?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Parses a commit file. Unknown action kinds (from newer writers) are skipped; a line
/// that is not JSON is a [`ErrorKind::Corrupt`] error naming the file and line.
pub(crate) fn decode_commit(bytes: &[u8], file: &str) -> Result<Vec<Action>> {
    decode_commit_with_skipped(bytes, file).map(|(actions, _)| actions)
}

/// [`decode_commit`], also naming the kinds of the actions it skipped (each once).
pub(crate) fn decode_commit_with_skipped(
    bytes: &[u8],
    file: &str,
) -> Result<(Vec<Action>, Vec<String>)> {
    let mut skipped: Vec<String> = Vec::new();
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Error::new(ErrorKind::Corrupt, format!("commit is not UTF-8: {e}")).with_path(file)
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| {
            Error::new(
                ErrorKind::Corrupt,
                format!("line {} of the commit is not JSON: {e}", n + 1),
            )
            .with_path(file)
        })?;
        let Some(kind) = value.as_object().and_then(|o| o.keys().next().cloned()) else {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("line {} of the commit is not an action object", n + 1),
            )
            .with_path(file));
        };
        if !matches!(
            kind.as_str(),
            "commitInfo" | "protocol" | "metaData" | "add" | "remove" | "txn"
        ) {
            if !skipped.contains(&kind) {
                skipped.push(kind);
            }
            continue;
        }
        let action: Action = serde_json::from_value(value).map_err(|e| {
            Error::new(
                ErrorKind::Corrupt,
                format!(
                    "line {} of the commit is not a valid {kind} action: {e}",
                    n + 1
                ),
            )
            .with_path(file)
        })?;
        out.push(action);
    }
    if out.is_empty() {
        return Err(Error::new(ErrorKind::Corrupt, "the commit holds no action").with_path(file));
    }
    Ok((out, skipped))
}

// ---------------------------------------------------------------------------------
// Schema

/// The Delta type name of a primitive Arrow type, or `None` if Delta cannot hold it
/// here.
fn delta_type(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "byte".into(),
        DataType::Int16 => "short".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "long".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 => "string".into(),
        DataType::Binary => "binary".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp_ntz".into(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if is_utc(tz) => "timestamp".into(),
        DataType::Decimal128(p, s) if *s >= 0 => format!("decimal({p},{s})"),
        DataType::Null => "void".into(),
        _ => return None,
    })
}

/// The Delta type (a name, or a struct, array or map object) of an Arrow type, or
/// `None` if Delta cannot hold it here.
fn delta_type_json(t: &DataType) -> Option<Value> {
    Some(match t {
        DataType::Struct(fields) => serde_json::json!({
            "type": "struct",
            "fields": fields
                .iter()
                .map(|f| delta_field_json(f))
                .collect::<Option<Vec<_>>>()?,
        }),
        DataType::List(item) => serde_json::json!({
            "type": "array",
            "elementType": delta_type_json(item.data_type())?,
            "containsNull": item.is_nullable(),
        }),
        DataType::Map(entries, _) => {
            let (key, value) = crate::nested::map_fields(entries)?;
            serde_json::json!({
                "type": "map",
                "keyType": delta_type_json(key.data_type())?,
                "valueType": delta_type_json(value.data_type())?,
                "valueContainsNull": value.is_nullable(),
            })
        }
        other => Value::from(delta_type(other)?),
    })
}

/// A Delta `StructField` of an Arrow field; its metadata is the field's (string
/// values).
fn delta_field_json(f: &Field) -> Option<Value> {
    let metadata: Map<String, Value> = f
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    Some(serde_json::json!({
        "name": f.name(),
        "type": delta_type_json(f.data_type())?,
        "nullable": f.is_nullable(),
        "metadata": metadata,
    }))
}

fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "+00:00" | "Z" | "Etc/UTC")
}

fn arrow_type(name: &str) -> Option<DataType> {
    Some(match name {
        "boolean" => DataType::Boolean,
        "byte" => DataType::Int8,
        "short" => DataType::Int16,
        "integer" => DataType::Int32,
        "long" => DataType::Int64,
        "float" => DataType::Float32,
        "double" => DataType::Float64,
        "string" => DataType::Utf8,
        "binary" => DataType::Binary,
        "date" => DataType::Date32,
        "timestamp_ntz" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "void" => DataType::Null,
        other => {
            let inner = other.strip_prefix("decimal(")?.strip_suffix(')')?;
            let (p, s) = inner.split_once(',')?;
            DataType::Decimal128(p.trim().parse().ok()?, s.trim().parse().ok()?)
        }
    })
}

/// Checks that every column of `schema` has a type the Delta format holds here.
pub(crate) fn check_schema(schema: &Schema) -> Result<()> {
    if schema.fields().is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "a table needs at least one column",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for f in schema.fields() {
        if f.name().is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a column name is empty",
            ));
        }
        if !seen.insert(f.name().to_lowercase()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "column {} appears twice (names are case-insensitive)",
                    f.name()
                ),
            )
            .with_column(f.name()));
        }
        if let Some(bad) = unsupported_type(f.data_type()) {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "column {} has type {}, which the table format does not hold; use \
                     boolean, Int8-64, Float32/64, Utf8, Binary, Date32, Decimal128, \
                     Timestamp(Microsecond, None | \"UTC\"), Null (void), or Struct, List \
                     and Map of them",
                    f.name(),
                    bad
                ),
            )
            .with_column(f.name()));
        }
        crate::nested::check_names(f.name(), f.data_type())
            .and_then(|()| crate::nested::check_void(f.name(), f.data_type(), false))
            .map_err(|e| e.with_column(f.name()))?;
    }
    if schema
        .fields()
        .iter()
        .all(|f| f.data_type() == &DataType::Null)
    {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "a table needs at least one column that is not void (Null)",
        ));
    }
    Ok(())
}

/// The first type within `t` (or `t` itself) that the table format does not hold.
fn unsupported_type(t: &DataType) -> Option<&DataType> {
    match t {
        DataType::Struct(fields) => fields.iter().find_map(|f| unsupported_type(f.data_type())),
        DataType::List(item) => unsupported_type(item.data_type()),
        DataType::Map(entries, _) => match crate::nested::map_fields(entries) {
            Some((k, v)) => {
                unsupported_type(k.data_type()).or_else(|| unsupported_type(v.data_type()))
            }
            None => Some(t),
        },
        other => delta_type(other).is_none().then_some(other),
    }
}

/// The Delta `schemaString` of an Arrow schema.
pub(crate) fn schema_to_string(schema: &Schema) -> Result<String> {
    schema_to_string_keeping(schema, None)
}

/// [`schema_to_string`] that keeps, for each top-level column of `old` (a previous
/// `schemaString`) still in `schema` with the same name, the column exactly as `old`
/// has it (its metadata as the log had it, whatever its JSON types).
pub(crate) fn schema_to_string_keeping(schema: &Schema, old: Option<&str>) -> Result<String> {
    check_schema(schema)?;
    let old_fields: Vec<Value> = old
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| v.get("fields").and_then(Value::as_array).cloned())
        .unwrap_or_default();
    let fields: Vec<Value> = schema
        .fields()
        .iter()
        .map(|f| {
            let kept = old_fields.iter().find(|o| {
                o.get("name").and_then(Value::as_str) == Some(f.name().as_str())
                    && o.get("type")
                        .and_then(|t| arrow_type_json(t, f.name()).ok())
                        .is_some_and(|t| &t == f.data_type())
            });
            match kept {
                Some(o) => o.clone(),
                None => delta_field_json(f).unwrap_or_default(),
            }
        })
        .collect();
    Ok(serde_json::json!({"type": "struct", "fields": fields}).to_string())
}

fn schema_error(column: &str, m: String) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("table schema: column {column}: {m}"),
    )
    .with_column(crate::nested::top(column))
}

/// The Arrow type of a Delta type (a name or a struct, array or map object) of column
/// `column` (a dotted path).
fn arrow_type_json(t: &Value, column: &str) -> Result<DataType> {
    if let Some(name) = t.as_str() {
        return arrow_type(name).ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!("column {column} has type {name}, which is not supported"),
            )
            .with_column(crate::nested::top(column))
        });
    }
    let kind = t.get("type").and_then(Value::as_str).unwrap_or_default();
    let get = |k: &str| {
        t.get(k)
            .ok_or_else(|| schema_error(column, format!("the {kind} type has no {k}")))
    };
    let flag = |k: &str| t.get(k).and_then(Value::as_bool).unwrap_or(true);
    match kind {
        "struct" => {
            let fields = get("fields")?
                .as_array()
                .ok_or_else(|| schema_error(column, "struct fields are not a list".into()))?;
            let fields = fields
                .iter()
                .map(|f| arrow_field_json(f, Some(column)))
                .collect::<Result<Vec<_>>>()?;
            Ok(DataType::Struct(fields.into()))
        }
        "array" => {
            let item = arrow_type_json(get("elementType")?, &format!("{column}[]"))?;
            Ok(crate::nested::list_type(item, flag("containsNull")))
        }
        "map" => {
            let key = arrow_type_json(get("keyType")?, &format!("{column}.key"))?;
            let value = arrow_type_json(get("valueType")?, &format!("{column}.value"))?;
            Ok(crate::nested::map_type(
                key,
                value,
                flag("valueContainsNull"),
            ))
        }
        other => Err(Error::new(
            ErrorKind::Unsupported,
            format!("column {column} has type {other:?}, which is not supported"),
        )
        .with_column(crate::nested::top(column))),
    }
}

/// The Arrow field of a Delta `StructField`, inside struct `parent` (a dotted path) or
/// at the top level. Its metadata becomes the field's: strings as they are, other JSON
/// values as their JSON text.
fn arrow_field_json(f: &Value, parent: Option<&str>) -> Result<Field> {
    let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
        Error::new(
            ErrorKind::Corrupt,
            format!(
                "table schema: a field{} has no name",
                parent.map(|p| format!(" of {p}")).unwrap_or_default()
            ),
        )
    })?;
    let path = match parent {
        Some(p) => format!("{p}.{name}"),
        None => name.to_owned(),
    };
    let t = f
        .get("type")
        .ok_or_else(|| schema_error(&path, "the field has no type".into()))?;
    let data_type = arrow_type_json(t, &path).map_err(|e| match parent {
        None => e.with_column(name),
        Some(_) => e,
    })?;
    // A void column holds only nulls, whatever the log declares.
    let nullable =
        data_type == DataType::Null || f.get("nullable").and_then(Value::as_bool).unwrap_or(true);
    let metadata: HashMap<String, String> = f
        .get("metadata")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect();
    Ok(Field::new(name, data_type, nullable).with_metadata(metadata))
}

/// The Arrow schema of a Delta `schemaString`.
pub(crate) fn schema_from_string(s: &str) -> Result<SchemaRef> {
    let corrupt = |m: String| Error::new(ErrorKind::Corrupt, format!("table schema: {m}"));
    let v: Value = serde_json::from_str(s).map_err(|e| corrupt(e.to_string()))?;
    let fields = v
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| corrupt("no fields".into()))?;
    let out = fields
        .iter()
        .map(|f| arrow_field_json(f, None))
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(Schema::new(out)))
}

// ---------------------------------------------------------------------------------
// Statistics

/// Per-file statistics as the `stats` JSON of an `add` action.
pub(crate) fn stats_to_json(rows: u64, columns: &BTreeMap<String, ColumnStats>) -> String {
    let mut min = Map::new();
    let mut max = Map::new();
    let mut nulls = Map::new();
    for (name, s) in columns {
        if let Some(n) = s.null_count {
            nulls.insert(name.clone(), Value::from(n));
        }
        // Both bounds or neither: a one-sided bound is still safe, but keep it simple.
        if let (Some(lo), Some(hi)) = (&s.min, &s.max)
            && let (Some(lo), Some(hi)) = (scalar_to_json(lo, false), scalar_to_json(hi, true))
        {
            min.insert(name.clone(), lo);
            max.insert(name.clone(), hi);
        }
    }
    serde_json::json!({
        "numRecords": rows,
        "minValues": min,
        "maxValues": max,
        "nullCount": nulls,
    })
    .to_string()
}

/// Longest string kept in statistics; longer values leave the column without bounds.
const MAX_STAT_STRING: usize = 64;

fn scalar_to_json(s: &Scalar, _upper: bool) -> Option<Value> {
    Some(match s {
        Scalar::Boolean(v) => Value::from(*v),
        Scalar::Int8(v) => Value::from(*v),
        Scalar::Int16(v) => Value::from(*v),
        Scalar::Int32(v) => Value::from(*v),
        Scalar::Int64(v) => Value::from(*v),
        Scalar::Float32(v) if v.is_finite() => Value::from(f64::from(*v)),
        Scalar::Float64(v) if v.is_finite() => Value::from(*v),
        Scalar::Utf8(v) if v.len() <= MAX_STAT_STRING => Value::from(v.as_str()),
        Scalar::Date32(d) => Value::from(format_date(*d)?),
        Scalar::Timestamp {
            value,
            unit: TimeUnit::Microsecond,
            tz,
        } => Value::from(format_timestamp_stat(*value, tz.is_some())?),
        Scalar::Decimal128 { value, scale, .. } => Value::from(format_decimal(*value, *scale)),
        _ => return None,
    })
}

/// Parses a statistic back to the column's type; `None` when it cannot be read (the
/// column is then treated as having no bounds).
fn json_to_scalar(v: &Value, t: &DataType) -> Option<Scalar> {
    Some(match t {
        DataType::Boolean => Scalar::Boolean(v.as_bool()?),
        DataType::Int8 => Scalar::Int8(i8::try_from(v.as_i64()?).ok()?),
        DataType::Int16 => Scalar::Int16(i16::try_from(v.as_i64()?).ok()?),
        DataType::Int32 => Scalar::Int32(i32::try_from(v.as_i64()?).ok()?),
        DataType::Int64 => Scalar::Int64(v.as_i64()?),
        DataType::Float32 => Scalar::Float32(v.as_f64()? as f32),
        DataType::Float64 => Scalar::Float64(v.as_f64()?),
        DataType::Utf8 => Scalar::Utf8(v.as_str()?.to_owned()),
        DataType::Date32 => Scalar::Date32(parse_date(v.as_str()?)?),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => Scalar::Timestamp {
            value: parse_timestamp(v.as_str()?)?,
            unit: TimeUnit::Microsecond,
            tz: tz.clone(),
        },
        DataType::Decimal128(p, s) => Scalar::Decimal128 {
            value: parse_decimal(&v.to_string().replace('"', ""), *s)?,
            precision: *p,
            scale: *s,
        },
        _ => return None,
    })
}

/// Statistics parsed from an `add` action's `stats`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ParsedStats {
    pub(crate) num_rows: Option<u64>,
    pub(crate) columns: BTreeMap<String, ColumnStats>,
}

impl ParsedStats {
    /// The statistics of a file whose deletion vector `dv` hides some of its rows: the
    /// log's statistics count every row of the file, so the row count loses the
    /// vector's cardinality and null counts become unknown (bounds stay safe).
    pub(crate) fn less_deleted(mut self, dv: Option<&DeletionVector>) -> ParsedStats {
        if let Some(dv) = dv {
            let deleted = u64::try_from(dv.cardinality).unwrap_or(0);
            self.num_rows = self.num_rows.map(|n| n.saturating_sub(deleted));
            for c in self.columns.values_mut() {
                c.null_count = None;
            }
        }
        self
    }
}

/// Parses `stats` against the schema; unreadable or missing parts are left unknown.
pub(crate) fn parse_stats(stats: Option<&str>, schema: &Schema) -> ParsedStats {
    parse_stats_mapped(stats, schema, &HashMap::new())
}

/// [`parse_stats`] for a column-mapped table: `physical` names each column's key.
pub(crate) fn parse_stats_mapped(
    stats: Option<&str>,
    schema: &Schema,
    physical: &HashMap<String, String>,
) -> ParsedStats {
    let Some(raw) = stats.and_then(|s| serde_json::from_str::<RawStats<'_>>(s).ok()) else {
        return ParsedStats::default();
    };
    let num_rows = raw
        .num_records
        .and_then(|v| serde_json::from_str::<Value>(v.get()).ok())
        .and_then(|v| v.as_u64());
    fn fields<'a>(v: Option<&'a RawValue>) -> Option<FieldIndex<'a>> {
        v.and_then(|v| serde_json::from_str::<RawFields<'a>>(v.get()).ok())
            .map(RawFields::index)
    }
    let (mins, maxs, nulls) = (
        fields(raw.min_values),
        fields(raw.max_values),
        fields(raw.null_count),
    );
    let mut columns = BTreeMap::new();
    for f in schema.fields() {
        // Nested columns have nested statistics objects (per leaf) and void columns
        // none: neither bounds nor a null count of the column itself.
        if !crate::nested::has_stats(f.data_type()) {
            continue;
        }
        let key = physical.get(f.name()).unwrap_or(f.name());
        let get = |m: &Option<FieldIndex<'_>>| {
            m.as_ref()
                .and_then(|m| m.get(key))
                .and_then(|v| serde_json::from_str::<Value>(v.get()).ok())
        };
        let min = get(&mins).and_then(|x| json_to_scalar(&x, f.data_type()));
        let max = get(&maxs).and_then(|x| json_to_scalar(&x, f.data_type()));
        let null_count = get(&nulls).and_then(|x| x.as_u64());
        let (min, max) = match (min, max) {
            (Some(a), Some(b)) => (Some(a), Some(b)),
            _ => (None, None),
        };
        if min.is_some() || null_count.is_some() {
            columns.insert(
                f.name().clone(),
                ColumnStats {
                    min,
                    max,
                    null_count,
                },
            );
        }
    }
    ParsedStats { num_rows, columns }
}

/// The top level of a `stats` object, its parts left unparsed: a part that does not
/// have the expected form makes only that part unknown.
#[derive(Deserialize)]
struct RawStats<'a> {
    #[serde(rename = "numRecords", borrow, default)]
    num_records: Option<&'a RawValue>,
    #[serde(rename = "minValues", borrow, default)]
    min_values: Option<&'a RawValue>,
    #[serde(rename = "maxValues", borrow, default)]
    max_values: Option<&'a RawValue>,
    #[serde(rename = "nullCount", borrow, default)]
    null_count: Option<&'a RawValue>,
}

/// The members of one statistics object (`minValues`, ...), values unparsed, keys
/// borrowed unless they hold escapes.
struct RawFields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// [`RawFields`] ready for lookups by column: a scan when there are few.
enum FieldIndex<'a> {
    Few(Vec<(Cow<'a, str>, &'a RawValue)>),
    Many(HashMap<Cow<'a, str>, &'a RawValue>),
}

impl<'a> RawFields<'a> {
    fn index(self) -> FieldIndex<'a> {
        if self.0.len() <= 16 {
            FieldIndex::Few(self.0)
        } else {
            FieldIndex::Many(self.0.into_iter().collect())
        }
    }
}

impl<'a> FieldIndex<'a> {
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        match self {
            // The last of repeated keys, as a parsed JSON object keeps it.
            FieldIndex::Few(v) => v.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v),
            FieldIndex::Many(m) => m.get(key).copied(),
        }
    }
}

/// A JSON string, borrowed from the input where it holds no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawFields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<CowStr<'de>, &'de RawValue>()? {
                    out.push((k.0, v));
                }
                Ok(RawFields(out))
            }
        }
        d.deserialize_map(V)
    }
}

// ---------------------------------------------------------------------------------
// Value formats shared by statistics and partition values

pub(crate) fn format_date(days: i32) -> Option<String> {
    let d = chrono::NaiveDate::from_num_days_from_ce_opt(days.checked_add(719_163)?)?;
    Some(d.format("%Y-%m-%d").to_string())
}

pub(crate) fn parse_date(s: &str) -> Option<i32> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.num_days_from_ce() - 719_163)
}

use chrono::Datelike;

fn format_timestamp_stat(micros: i64, utc: bool) -> Option<String> {
    let t = chrono::DateTime::from_timestamp_micros(micros)?.naive_utc();
    let s = t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    Some(if utc { s + "Z" } else { s })
}

/// Partition value text of a timestamp: `YYYY-MM-DD HH:MM:SS.ffffff`.
pub(crate) fn format_timestamp_partition(micros: i64) -> Option<String> {
    let t = chrono::DateTime::from_timestamp_micros(micros)?.naive_utc();
    Some(t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
}

/// Parses the timestamp forms of statistics and partition values (with `T` or a space,
/// an optional fraction and an optional `Z`).
pub(crate) fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim_end_matches('Z').replace('T', " ");
    let t = chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%d %H:%M:%S"))
        .ok()?;
    Some(t.and_utc().timestamp_micros())
}

pub(crate) fn format_decimal(value: i128, scale: i8) -> String {
    if scale <= 0 {
        return value.to_string();
    }
    let neg = value < 0;
    let digits = value.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{}{int}.{frac}", if neg { "-" } else { "" })
}

pub(crate) fn parse_decimal(s: &str, scale: i8) -> Option<i128> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let scale = usize::try_from(scale).ok()?;
    if frac.len() > scale || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let text = format!("{int}{frac:0<scale$}");
    let v: i128 = if text.is_empty() {
        0
    } else {
        text.parse().ok()?
    };
    Some(if neg { -v } else { v })
}

// ---------------------------------------------------------------------------------
// Snapshots

/// A data file of a snapshot with its parsed statistics.
#[derive(Debug, Clone)]
pub(crate) struct FileEntry {
    pub(crate) add: Add,
    pub(crate) stats: ParsedStats,
    /// The typed partition values, parsed on first use (see `FileEntry::partitions`).
    pub(crate) partitions: std::sync::OnceLock<Arc<BTreeMap<String, Scalar>>>,
}

impl FileEntry {
    /// A file with its parsed statistics.
    pub(crate) fn new(add: Add, stats: ParsedStats) -> FileEntry {
        FileEntry {
            add,
            stats,
            partitions: std::sync::OnceLock::new(),
        }
    }
}

/// The state of a table at one version: replayed by kernel, then advanced by this
/// handle's own commits.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) version: Version,
    pub(crate) protocol: Protocol,
    pub(crate) metadata: MetaData,
    pub(crate) schema: SchemaRef,
    /// Live files by path, iterated in commit order of their `add`.
    pub(crate) files: FileSet,
    /// The last sequence of the writers (app ids) of the commits after `kernel`'s
    /// version that this handle made or read itself; every other app id is as
    /// `kernel` has it.
    pub(crate) txns: Arc<HashMap<String, i64>>,
    /// Kernel's snapshot this one was replayed from (at `version` or older: this
    /// handle's own commits, and the commits of others that a refresh read without
    /// kernel, advance the snapshot alone).
    pub(crate) kernel: delta_kernel::snapshot::SnapshotRef,
}

/// Advances a snapshot by the actions of this handle's own commits.
#[derive(Debug)]
pub(crate) struct Replay {
    version: Version,
    protocol: Protocol,
    metadata: MetaData,
    schema: SchemaRef,
    files: FileSet,
    txns: HashMap<String, i64>,
    kernel: delta_kernel::snapshot::SnapshotRef,
}

impl Replay {
    /// Continues from a snapshot.
    pub(crate) fn from_snapshot(s: &Snapshot) -> Replay {
        Replay {
            version: s.version,
            protocol: s.protocol.clone(),
            metadata: s.metadata.clone(),
            schema: s.schema.clone(),
            files: s.files.clone(),
            txns: (*s.txns).clone(),
            kernel: s.kernel.clone(),
        }
    }

    /// Applies the actions of commit `version`.
    pub(crate) fn apply(&mut self, version: Version, actions: Vec<Action>) -> Result<()> {
        for a in actions {
            match a {
                Action::CommitInfo(_) => {}
                Action::Protocol(p) => self.protocol = p,
                Action::MetaData(m) => {
                    self.schema = schema_from_string(&m.schema_string)?;
                    self.metadata = m;
                }
                Action::Add(add) => {
                    let stats = parse_stats(add.stats.as_deref(), &self.schema)
                        .less_deleted(add.deletion_vector.as_ref());
                    self.files.insert(Arc::new(FileEntry::new(add, stats)));
                }
                Action::Remove(r) => {
                    self.files.remove(&r.path);
                }
                Action::Txn(t) => {
                    self.txns.insert(t.app_id, t.version);
                }
            }
        }
        self.version = version;
        Ok(())
    }

    /// The snapshot after the applied commits.
    pub(crate) fn finish(self) -> Result<Snapshot> {
        self.protocol.check_readable(&self.metadata)?;
        Ok(Snapshot {
            version: self.version,
            protocol: self.protocol,
            metadata: self.metadata,
            schema: self.schema,
            files: self.files,
            txns: Arc::new(self.txns),
            kernel: self.kernel,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn commit_names_round_trip() {
        assert_eq!(commit_name(7), "00000000000000000007.json");
        assert_eq!(parse_commit_name("00000000000000000007.json"), Some(7));
        assert_eq!(parse_commit_name("7.json"), None);
        assert_eq!(
            parse_commit_name("00000000000000000007.checkpoint.parquet"),
            None
        );
    }

    #[test]
    fn decimals_and_dates_round_trip() {
        for (v, s) in [(12345i128, 2i8), (-5, 3), (0, 2), (7, 0)] {
            assert_eq!(parse_decimal(&format_decimal(v, s), s), Some(v));
        }
        assert_eq!(format_decimal(-5, 3), "-0.005");
        for d in [-1000, 0, 19_000, 2_000_000] {
            assert_eq!(parse_date(&format_date(d).unwrap()), Some(d));
        }
        let t = 1_700_000_000_123_456;
        assert_eq!(
            parse_timestamp(&format_timestamp_partition(t).unwrap()),
            Some(t)
        );
        assert_eq!(
            parse_timestamp(&format_timestamp_stat(t, true).unwrap()),
            Some(t)
        );
    }

    #[test]
    fn schema_round_trips_and_rejects_unsupported_types() {
        let s = Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("b", DataType::Utf8, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("d", DataType::Decimal128(10, 2), true),
        ]);
        let back = schema_from_string(&schema_to_string(&s).unwrap()).unwrap();
        assert_eq!(back.as_ref(), &s);
        let bad = Schema::new(vec![Field::new("u", DataType::UInt64, true)]);
        let e = schema_to_string(&bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.to_string().contains('u'));
    }

    #[test]
    fn nested_schemas_map_both_ways_as_delta_writers_spell_them() {
        use crate::nested::{list_type, map_type};
        // As Python `deltalake` and Spark write them (the log's own field order).
        let text = r#"{"type":"struct","fields":[{"name":"s","type":{"type":"struct","fields":[{"name":"a","type":"integer","nullable":false,"metadata":{"comment":"the a"}},{"name":"v","type":"void","nullable":true,"metadata":{}}]},"nullable":true,"metadata":{}},{"name":"l","type":{"type":"array","elementType":{"type":"array","elementType":"long","containsNull":false},"containsNull":true},"nullable":true,"metadata":{}},{"name":"m","type":{"type":"map","keyType":"string","valueType":{"type":"struct","fields":[{"name":"x","type":"timestamp_ntz","nullable":true,"metadata":{}}]},"valueContainsNull":false},"nullable":false,"metadata":{"delta.columnMapping.id":7}}]}"#;
        let schema = schema_from_string(text).unwrap();
        let a = Field::new("a", DataType::Int32, false)
            .with_metadata([("comment".to_owned(), "the a".to_owned())].into());
        let want = Schema::new(vec![
            Field::new(
                "s",
                DataType::Struct(vec![a, Field::new("v", DataType::Null, true)].into()),
                true,
            ),
            Field::new(
                "l",
                list_type(list_type(DataType::Int64, false), true),
                true,
            ),
            Field::new(
                "m",
                map_type(
                    DataType::Utf8,
                    DataType::Struct(
                        vec![Field::new(
                            "x",
                            DataType::Timestamp(TimeUnit::Microsecond, None),
                            true,
                        )]
                        .into(),
                    ),
                    false,
                ),
                false,
            )
            .with_metadata([("delta.columnMapping.id".to_owned(), "7".to_owned())].into()),
        ]);
        assert_eq!(schema.as_ref(), &want);
        // Back to the same JSON, but for the metadata value that is not a string.
        let back: Value = serde_json::from_str(&schema_to_string(&schema).unwrap()).unwrap();
        let mut original: Value = serde_json::from_str(text).unwrap();
        original["fields"][2]["metadata"] = serde_json::json!({"delta.columnMapping.id": "7"});
        assert_eq!(back, original);
        // Kept exactly when the log already has the column.
        let kept: Value =
            serde_json::from_str(&schema_to_string_keeping(&schema, Some(text)).unwrap()).unwrap();
        assert_eq!(kept, serde_json::from_str::<Value>(text).unwrap());
        assert!(crate::nested::has_timestamp_ntz(
            schema.field(2).data_type()
        ));
    }

    #[test]
    fn unreadable_nested_types_name_the_column() {
        let e = schema_from_string(
            r#"{"type":"struct","fields":[{"name":"s","type":{"type":"struct","fields":[{"name":"x","type":"variant","nullable":true}]},"nullable":true}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(e.to_string().contains("s.x"), "{e}");
        assert_eq!(e.context().column.as_deref(), Some("s"));
        let e = schema_from_string(
            r#"{"type":"struct","fields":[{"name":"l","type":{"type":"array"},"nullable":true}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        // Void inside a list, and a struct of only void fields, cannot be written.
        for t in [
            crate::nested::list_type(DataType::Null, true),
            DataType::Struct(vec![Field::new("v", DataType::Null, true)].into()),
        ] {
            let s = Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("c", t, true),
            ]);
            let e = schema_to_string(&s).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
            assert_eq!(e.context().column.as_deref(), Some("c"));
        }
    }

    #[test]
    fn corrupt_commits_name_the_file_and_line() {
        let e = decode_commit(
            b"{\"txn\":{\"appId\":\"a\",\"version\":1}}\nnot json",
            "x.json",
        )
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.to_string().contains("line 2"), "{e}");
        assert_eq!(e.context().path.as_deref(), Some("x.json"));
    }

    /// The parse before the typed one: a `Value` tree, then lookups.
    fn parse_stats_by_tree(stats: &str, schema: &Schema) -> ParsedStats {
        let Ok(v) = serde_json::from_str::<Value>(stats) else {
            return ParsedStats::default();
        };
        let num_rows = v.get("numRecords").and_then(Value::as_u64);
        let mut columns = BTreeMap::new();
        for f in schema.fields() {
            let get = |k: &str| v.get(k).and_then(|m| m.get(f.name()));
            let min = get("minValues").and_then(|x| json_to_scalar(x, f.data_type()));
            let max = get("maxValues").and_then(|x| json_to_scalar(x, f.data_type()));
            let null_count = get("nullCount").and_then(Value::as_u64);
            let (min, max) = match (min, max) {
                (Some(a), Some(b)) => (Some(a), Some(b)),
                _ => (None, None),
            };
            if min.is_some() || null_count.is_some() {
                columns.insert(
                    f.name().clone(),
                    ColumnStats {
                        min,
                        max,
                        null_count,
                    },
                );
            }
        }
        ParsedStats { num_rows, columns }
    }

    /// A JSON value of some kind a writer could put in a statistics object.
    fn any_stat_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z\"\\\\é]{0,6}".prop_map(Value::from),
            Just(serde_json::json!("2024-03-01")),
            Just(serde_json::json!("2024-03-01T10:00:00.000000Z")),
            Just(serde_json::json!({"leaf": 1})),
            Just(serde_json::json!([1, 2])),
        ]
    }

    proptest::proptest! {
        /// The typed parse reads every statistics object as the tree parse does,
        /// including keys with escapes, repeated keys, parts of the wrong form and
        /// more columns than the short lookup scans.
        #[test]
        fn typed_stats_parse_equals_the_tree_parse(
            num_records in any_stat_value(),
            parts in proptest::collection::vec(
                (0usize..3, proptest::collection::vec((0usize..20, any_stat_value()), 0..24)),
                0..4,
            ),
            not_an_object in proptest::bool::weighted(0.1),
        ) {
            let names: Vec<String> = (0..20)
                .map(|i| if i % 7 == 3 { format!("c\"{i}") } else { format!("c{i}") })
                .collect();
            let types = [DataType::Int64, DataType::Utf8, DataType::Float64, DataType::Date32,
                DataType::Boolean];
            let schema = Schema::new(
                names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| Field::new(n, types[i % types.len()].clone(), true))
                    .collect::<Vec<_>>(),
            );
            let kinds = ["minValues", "maxValues", "nullCount"];
            // Objects written by hand, so that repeated keys stay repeated.
            let mut text = format!("{{\"numRecords\":{num_records}");
            let mut seen = std::collections::HashSet::new();
            for (kind, members) in &parts {
                // A top-level key appears once: writers never repeat one.
                if !seen.insert(*kind) {
                    continue;
                }
                let body = if not_an_object {
                    "7".to_owned()
                } else {
                    let m: Vec<String> = members
                        .iter()
                        .map(|(c, v)| format!("{}:{v}", Value::from(names[*c].clone())))
                        .collect();
                    format!("{{{}}}", m.join(","))
                };
                text.push_str(&format!(",\"{}\":{body}", kinds[*kind]));
            }
            text.push('}');
            let typed = parse_stats(Some(&text), &schema);
            let tree = parse_stats_by_tree(&text, &schema);
            proptest::prop_assert_eq!(typed.num_rows, tree.num_rows, "{}", text);
            proptest::prop_assert_eq!(typed.columns, tree.columns, "{}", text);
        }
    }
}
