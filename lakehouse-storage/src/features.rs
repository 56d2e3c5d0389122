//! Delta table features: which reader and writer features this crate honours, the
//! protocol a schema needs, and column mapping (logical to physical column names).

use std::collections::HashMap;

use arrow::datatypes::Schema;
use lakehouse_core::{Error, ErrorKind, Result};
use serde_json::Value;

use crate::log::{MetaData, Protocol};
use crate::nested_mapping::NestedMapping;

impl Protocol {
    /// The lowest protocol that can describe `schema`: (1, 2), or (3, 7) with the
    /// `timestampNtz` feature when a column is a timestamp without a time zone.
    pub(crate) fn for_schema(schema: &Schema) -> Protocol {
        let ntz = schema
            .fields()
            .iter()
            .any(|f| crate::nested::has_timestamp_ntz(f.data_type()));
        if ntz {
            Protocol {
                min_reader_version: 3,
                min_writer_version: 7,
                reader_features: Some(vec!["timestampNtz".into()]),
                writer_features: Some(vec!["timestampNtz".into()]),
            }
        } else {
            Protocol {
                min_reader_version: 1,
                min_writer_version: 2,
                reader_features: None,
                writer_features: None,
            }
        }
    }

    /// This protocol, upgraded so that it also describes `schema` (a column added by
    /// schema evolution may need `timestampNtz`); `None` when it does already.
    pub(crate) fn upgraded_for(&self, schema: &Schema) -> Option<Protocol> {
        let need = Protocol::for_schema(schema);
        let has = |fs: &Option<Vec<String>>| fs.iter().flatten().any(|f| f == "timestampNtz");
        if need.reader_features.is_none() || has(&self.reader_features) {
            return None;
        }
        let mut reader = self.reader_features.clone().unwrap_or_default();
        let mut writer = self.writer_features.clone().unwrap_or_else(|| {
            // The features a legacy writer version implies.
            let mut w = Vec::new();
            if self.min_writer_version >= 2 {
                w.extend(["appendOnly".to_owned(), "invariants".to_owned()]);
            }
            w
        });
        reader.push("timestampNtz".into());
        writer.push("timestampNtz".into());
        Some(Protocol {
            min_reader_version: 3,
            min_writer_version: 7,
            reader_features: Some(reader),
            writer_features: Some(writer),
        })
    }

    /// This protocol with the reader and writer table feature `feature` (protocol 3 / 7;
    /// a legacy writer version's implied features are listed explicitly).
    pub(crate) fn with_feature(&self, feature: &str) -> Protocol {
        let mut reader = self.reader_features.clone().unwrap_or_default();
        let mut writer = self.writer_features.clone().unwrap_or_else(|| {
            let mut w = Vec::new();
            if self.min_writer_version >= 2 {
                w.extend(["appendOnly".to_owned(), "invariants".to_owned()]);
            }
            w
        });
        for list in [&mut reader, &mut writer] {
            if !list.iter().any(|f| f == feature) {
                list.push(feature.to_owned());
            }
        }
        Protocol {
            min_reader_version: 3,
            min_writer_version: 7,
            reader_features: Some(reader),
            writer_features: Some(writer),
        }
    }

    /// Whether the protocol declares `feature` as a reader and a writer feature.
    pub(crate) fn has_feature(&self, feature: &str) -> bool {
        let has = |fs: &Option<Vec<String>>| fs.iter().flatten().any(|f| f == feature);
        has(&self.reader_features) && has(&self.writer_features)
    }

    /// Errors with [`ErrorKind::Unsupported`], naming the feature, unless this crate
    /// reads the table right: every reader feature it declares is one honoured here.
    pub(crate) fn check_readable(&self, metadata: &MetaData) -> Result<()> {
        let unsupported = |f: &str, why: &str| {
            Err(Error::new(
                ErrorKind::Unsupported,
                format!("the table uses the Delta reader feature {f}, {why}"),
            ))
        };
        if self.min_reader_version > 3 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the table needs Delta reader version {}; this crate reads up to 3",
                    self.min_reader_version
                ),
            ));
        }
        column_mapping(metadata)?;
        nested_column_mapping(metadata)?;
        // Every recorded type change must be one this crate reads exactly.
        crate::widening::type_changes(&metadata.schema_string)?;
        for f in self.reader_features.iter().flatten() {
            match f.as_str() {
                // Read through kernel (log layout) or honoured by the scan.
                "timestampNtz"
                | "v2Checkpoint"
                | "vacuumProtocolCheck"
                | "deletionVectors"
                | "checkpointProtection" => {}
                "columnMapping" => {}
                // Older files are read in the wider table types (crate::widening).
                "typeWidening" | "typeWidening-preview" => {}
                other => return unsupported(other, "which this crate does not read"),
            }
        }
        Ok(())
    }

    /// Errors with [`ErrorKind::Unsupported`], naming the feature, unless this crate's
    /// commits keep what the table declares.
    pub(crate) fn check_writable(&self, metadata: &MetaData) -> Result<()> {
        self.check_readable(metadata)?;
        let unsupported = |f: &str| {
            Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the table uses the Delta writer feature {f}, which this crate does not write"
                ),
            ))
        };
        if self.min_writer_version > 7 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the table needs Delta writer version {}; this crate writes up to 7",
                    self.min_writer_version
                ),
            ));
        }
        if metadata
            .configuration
            .keys()
            .any(|k| k.starts_with("delta.constraints."))
        {
            return unsupported("checkConstraints");
        }
        if !column_mapping(metadata)?.is_empty() {
            return unsupported("columnMapping");
        }
        for key in ["delta.generationExpression", "delta.identity.start"] {
            if metadata.schema_string.contains(key) {
                return unsupported(if key.contains("identity") {
                    "identityColumns"
                } else {
                    "generatedColumns"
                });
            }
        }
        for f in self.writer_features.iter().flatten() {
            match f.as_str() {
                "timestampNtz"
                | "appendOnly"
                | "invariants"
                | "v2Checkpoint"
                | "vacuumProtocolCheck"
                | "deletionVectors"
                | "changeDataFeed"
                | "domainMetadata"
                | "checkpointProtection" => {}
                // New files are written in the current types, and schema changes keep
                // `delta.typeChanges`; this crate never changes a column's type.
                "typeWidening" | "typeWidening-preview" => {}
                other => return unsupported(other),
            }
        }
        Ok(())
    }
}

/// The physical column names of a column-mapped table (`delta.columnMapping.mode`
/// `name` or `id`), by logical name; empty without column mapping. Files, partition
/// values and statistics use the physical names.
pub(crate) fn column_mapping(metadata: &MetaData) -> Result<HashMap<String, String>> {
    let mode = metadata
        .configuration
        .get("delta.columnMapping.mode")
        .map(String::as_str)
        .unwrap_or("none");
    match mode {
        "none" => return Ok(HashMap::new()),
        "name" | "id" => {}
        other => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("the table uses the Delta reader feature columnMapping in mode {other}"),
            ));
        }
    }
    let mut out = HashMap::new();
    for f in &top_level_fields(metadata)? {
        let (Some(name), Some(physical)) = (
            f.get("name").and_then(Value::as_str),
            f.pointer("/metadata/delta.columnMapping.physicalName")
                .and_then(Value::as_str),
        ) else {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "a column of a column-mapped table has no physical name",
            ));
        };
        out.insert(name.to_owned(), physical.to_owned());
    }
    Ok(out)
}

/// The physical names inside the nested columns of a column-mapped table, by logical
/// column name: only columns with struct fields at some depth; empty without column
/// mapping.
pub(crate) fn nested_column_mapping(metadata: &MetaData) -> Result<HashMap<String, NestedMapping>> {
    if column_mapping(metadata)?.is_empty() {
        return Ok(HashMap::new());
    }
    let mut out = HashMap::new();
    for f in &top_level_fields(metadata)? {
        let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
        let mapping = NestedMapping::from_delta_type(f.get("type").unwrap_or(&Value::Null), name)?;
        if mapping.renames() {
            out.insert(name.to_owned(), mapping);
        }
    }
    Ok(out)
}

/// The logical column names of a table in column mapping mode `id`, by field id
/// (`delta.columnMapping.id`); empty in the other modes. Data files are read by the
/// Parquet field ids, whatever their columns are named.
pub(crate) fn column_mapping_ids(metadata: &MetaData) -> Result<HashMap<i32, String>> {
    if metadata
        .configuration
        .get("delta.columnMapping.mode")
        .map(String::as_str)
        != Some("id")
    {
        return Ok(HashMap::new());
    }
    let mut out = HashMap::new();
    for f in &top_level_fields(metadata)? {
        let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
        let id = f
            .pointer("/metadata/delta.columnMapping.id")
            .and_then(Value::as_i64)
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Corrupt,
                    format!("column {name} of a table in column mapping mode id has no field id"),
                )
                .with_column(name)
            })?;
        out.insert(id, name.to_owned());
    }
    Ok(out)
}

/// The top-level fields of the table schema, as the log's JSON has them.
fn top_level_fields(metadata: &MetaData) -> Result<Vec<Value>> {
    let mut v: Value = serde_json::from_str(&metadata.schema_string)
        .map_err(|e| Error::new(ErrorKind::Corrupt, format!("table schema: {e}")))?;
    Ok(match v.get_mut("fields").map(Value::take) {
        Some(Value::Array(fields)) => fields,
        _ => Vec::new(),
    })
}
