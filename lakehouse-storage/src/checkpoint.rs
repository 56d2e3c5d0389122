//! Checkpoints: the whole table state at one version in one Parquet file, in the
//! Delta checkpoint layout (`txn`, `add`, `remove`, `metaData`, `protocol` columns), so
//! that opening a table reads one file instead of every commit.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use bytes::Bytes;
use futures::StreamExt;
use lakehouse_core::{Error, ErrorKind, Result, Version};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::location::Location;
use crate::log::{Action, Remove, Replay, Snapshot, Txn, checkpoint_name};

const LAST_CHECKPOINT: &str = "_last_checkpoint";

fn s(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}
fn i64f(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}
fn map(name: &str) -> Field {
    let entries = Field::new(
        "key_value",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ])),
        false,
    );
    Field::new(name, DataType::Map(Arc::new(entries), false), true)
}
fn list(name: &str) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))),
        true,
    )
}
fn strukt(name: &str, fields: Vec<Field>) -> Field {
    Field::new(name, DataType::Struct(Fields::from(fields)), true)
}

fn checkpoint_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        strukt(
            "txn",
            vec![s("appId"), i64f("version"), i64f("lastUpdated")],
        ),
        strukt(
            "add",
            vec![
                s("path"),
                map("partitionValues"),
                i64f("size"),
                i64f("modificationTime"),
                Field::new("dataChange", DataType::Boolean, true),
                s("stats"),
            ],
        ),
        strukt(
            "remove",
            vec![
                s("path"),
                i64f("deletionTimestamp"),
                Field::new("dataChange", DataType::Boolean, true),
                Field::new("extendedFileMetadata", DataType::Boolean, true),
                map("partitionValues"),
                i64f("size"),
            ],
        ),
        strukt(
            "metaData",
            vec![
                s("id"),
                s("name"),
                s("description"),
                strukt("format", vec![s("provider"), map("options")]),
                s("schemaString"),
                list("partitionColumns"),
                map("configuration"),
                i64f("createdTime"),
            ],
        ),
        strukt(
            "protocol",
            vec![
                Field::new("minReaderVersion", DataType::Int32, true),
                Field::new("minWriterVersion", DataType::Int32, true),
                list("readerFeatures"),
                list("writerFeatures"),
            ],
        ),
    ]))
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Internal, format!("checkpoint: {e}"))
}

/// The actions that rebuild `snap`.
fn actions_of(snap: &Snapshot) -> Vec<Action> {
    let mut out = Vec::with_capacity(snap.files.len() + snap.tombstones.len() + 2);
    out.push(Action::Protocol(snap.protocol.clone()));
    out.push(Action::MetaData(snap.metadata.clone()));
    for (app, v) in snap.txns.iter() {
        out.push(Action::Txn(Txn {
            app_id: app.clone(),
            version: *v,
            last_updated: None,
        }));
    }
    for path in snap.order.iter() {
        if let Some(f) = snap.files.get(path) {
            out.push(Action::Add(f.add.clone()));
        }
    }
    for (path, ts) in snap.tombstones.iter() {
        out.push(Action::Remove(Remove {
            path: path.clone(),
            deletion_timestamp: Some(*ts),
            data_change: false,
            extended_file_metadata: None,
            partition_values: None,
            size: None,
        }));
    }
    out
}

/// Writes the checkpoint of `snap` and points `_last_checkpoint` at it.
pub(crate) async fn write(location: &Location, log_dir: &Path, snap: &Snapshot) -> Result<()> {
    let schema = checkpoint_schema();
    let rows: Vec<Value> = actions_of(snap)
        .iter()
        .map(|a| serde_json::to_value(a).map_err(internal))
        .collect::<Result<_>>()?;
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .build_decoder()
        .map_err(internal)?;
    decoder.serialize(&rows).map_err(internal)?;
    let batch = decoder
        .flush()
        .map_err(internal)?
        .unwrap_or_else(|| RecordBatch::new_empty(schema.clone()));
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, None).map_err(internal)?;
    writer.write(&batch).map_err(internal)?;
    let bytes = writer.into_inner().map_err(internal)?;
    let path = log_dir.clone().join(checkpoint_name(snap.version));
    location
        .store
        .put(&path, PutPayload::from(bytes))
        .await
        .map_err(|e| Error::new(ErrorKind::Io, e.to_string()).with_path(path.to_string()))?;
    let hint = serde_json::json!({"version": snap.version, "size": rows.len()}).to_string();
    let hint_path = log_dir.clone().join(LAST_CHECKPOINT);
    location
        .store
        .put(&hint_path, PutPayload::from(hint.into_bytes()))
        .await
        .map_err(|e| Error::new(ErrorKind::Io, e.to_string()).with_path(hint_path.to_string()))?;
    Ok(())
}

/// The version `_last_checkpoint` names, if any.
pub(crate) async fn last(location: &Location, log_dir: &Path) -> Result<Option<Version>> {
    let path = log_dir.clone().join(LAST_CHECKPOINT);
    let bytes = match location.store.get(&path).await {
        Ok(r) => r
            .bytes()
            .await
            .map_err(|e| Error::new(ErrorKind::Io, e.to_string()).with_path(path.to_string()))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::new(ErrorKind::Io, e.to_string()).with_path(path.to_string())),
    };
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(
            ErrorKind::Corrupt,
            format!("unreadable checkpoint pointer: {e}"),
        )
        .with_path(path.to_string())
    })?;
    Ok(v.get("version").and_then(Value::as_u64))
}

/// The newest checkpoint at or before `version`, by listing the log.
pub(crate) async fn find_at_or_before(
    location: &Location,
    log_dir: &Path,
    version: Version,
) -> Result<Option<Version>> {
    let mut best = None;
    let mut listing = location.store.list(Some(log_dir));
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| Error::new(ErrorKind::Io, e.to_string()))?;
        let Some(name) = meta.location.filename() else {
            continue;
        };
        if let Some(v) = name
            .strip_suffix(".checkpoint.parquet")
            .filter(|s| s.len() == 20)
            .and_then(|s| s.parse::<Version>().ok())
            && v <= version
            && best.is_none_or(|b| v > b)
        {
            best = Some(v);
        }
    }
    Ok(best)
}

/// Reads the checkpoint of `version` into a snapshot.
pub(crate) async fn read(
    location: &Location,
    log_dir: &Path,
    version: Version,
) -> Result<Snapshot> {
    let path = log_dir.clone().join(checkpoint_name(version));
    let corrupt = |m: String| Error::new(ErrorKind::Corrupt, m).with_path(path.to_string());
    let bytes: Bytes = location
        .store
        .get(&path)
        .await
        .map_err(|e| corrupt(format!("cannot read checkpoint: {e}")))?
        .bytes()
        .await
        .map_err(|e| corrupt(format!("cannot read checkpoint: {e}")))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| corrupt(format!("checkpoint is not valid Parquet: {e}")))?
        .build()
        .map_err(|e| corrupt(format!("checkpoint is not valid Parquet: {e}")))?;
    let mut actions = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(format!("checkpoint is not valid Parquet: {e}")))?;
        let mut out = Vec::new();
        {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            w.write(&batch).map_err(internal)?;
            w.finish().map_err(internal)?;
        }
        for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let row: Value = serde_json::from_slice(line).map_err(internal)?;
            let Some(obj) = row.as_object() else { continue };
            for (k, v) in obj {
                if v.is_null() {
                    continue;
                }
                let wrapped = serde_json::json!({ k: v });
                if let Ok(a) = serde_json::from_value::<Action>(wrapped) {
                    actions.push(a);
                } else {
                    return Err(corrupt(format!(
                        "checkpoint holds an unreadable {k} action"
                    )));
                }
            }
        }
    }
    let mut replay = Replay::default();
    replay.apply(version, actions)?;
    replay.finish()
}
