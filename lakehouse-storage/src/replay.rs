//! Snapshots from kernel's log replay: the protocol and metadata of a version, its
//! live files (with statistics, partition values and deletion vectors), and the
//! incremental refresh that reads only the commits after a cached snapshot.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, MapArray, RecordBatch, StringArray, StructArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::engine_data::FilteredEngineData;
use delta_kernel::scan::StatsOptions;
use delta_kernel::snapshot::SnapshotRef;
use lakehouse_core::{Error, ErrorKind, Result};

use crate::fileset::FileSet;
use crate::kernel::{Kernel, kernel_error};
use crate::log::{
    Add, DeletionVector, FileEntry, Format, MetaData, Protocol, Snapshot, column_mapping,
    parse_stats_mapped, schema_from_string,
};
use crate::widening::{inexact_stats, type_changes};

/// The protocol and metadata of a kernel snapshot, as this crate's actions.
fn protocol_and_metadata(ks: &SnapshotRef) -> (Protocol, MetaData) {
    let tc = ks.table_configuration();
    let p = tc.protocol();
    let names = |f: Option<&[delta_kernel::table_features::TableFeature]>| {
        f.map(|fs| fs.iter().map(|x| x.to_string()).collect::<Vec<_>>())
    };
    let protocol = Protocol {
        min_reader_version: p.min_reader_version(),
        min_writer_version: p.min_writer_version(),
        reader_features: names(p.reader_features()),
        writer_features: names(p.writer_features()),
    };
    let m = tc.metadata();
    let metadata = MetaData {
        id: m.id().to_owned(),
        name: m.name().map(str::to_owned),
        description: m.description().map(str::to_owned),
        format: Format {
            provider: m.format_provider().to_owned(),
            options: m
                .format_options()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        },
        schema_string: m.schema_string().clone(),
        partition_columns: m.partition_columns().to_vec(),
        configuration: m
            .configuration()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        created_time: m.created_time(),
    };
    (protocol, metadata)
}

/// The snapshot of kernel snapshot `ks`: a full replay of its live files. Blocking.
pub(crate) fn full(kernel: &Kernel, ks: SnapshotRef) -> Result<Snapshot> {
    let (protocol, metadata) = protocol_and_metadata(&ks);
    protocol.check_readable(&metadata)?;
    let schema = schema_from_string(&metadata.schema_string)
        .map_err(|e| e.with_table(kernel.uri().to_owned()))?;
    let physical = column_mapping(&metadata)?;
    let inexact = inexact_stats(&type_changes(&metadata.schema_string)?);
    let scan = ks
        .clone()
        .scan_builder()
        .with_stats(StatsOptions::json_only())
        // Files are read here, partition values parsed here (in every writer's form):
        // kernel needs no per-file transforms.
        .without_row_transforms()
        .build()
        .map_err(|e| kernel.error(e, None))?;
    let mut batches: Vec<Vec<Arc<FileEntry>>> = Vec::new();
    let iter = scan
        .scan_metadata(kernel.engine.as_ref())
        .map_err(|e| kernel.error(e, None))?;
    for sm in iter {
        let sm = sm.map_err(|e| kernel.error(e, None))?;
        let (data, selection) = sm.scan_files.into_parts();
        let data = ArrowEngineData::try_from_engine_data(data).map_err(kernel_error)?;
        let batch = data.record_batch();
        let cols = FileColumns::of_scan_rows(batch)?;
        batches.push(cols.entries(&selection, &schema, &physical, &inexact)?);
    }
    // Kernel yields the newest commits first; files are kept in the order they were
    // added.
    let files: FileSet = batches.into_iter().rev().flatten().collect();
    Ok(Snapshot {
        version: ks.version(),
        protocol,
        metadata,
        schema,
        files,
        txns: Arc::new(HashMap::new()),
        kernel: ks,
    })
}

/// `cur` brought up to kernel snapshot `ks` (newer): only the commits in between are
/// read when `ks` still lists them, else a full replay. Blocking.
pub(crate) fn incremental(kernel: &Kernel, cur: &Snapshot, ks: SnapshotRef) -> Result<Snapshot> {
    let (protocol, metadata) = protocol_and_metadata(&ks);
    protocol.check_readable(&metadata)?;
    let stream = ks
        .clone()
        .incremental_scan_builder(cur.version)
        .build(kernel.engine.as_ref())
        .map_err(|e| kernel.error(e, None))?;
    let Some(stream) = stream else {
        return full(kernel, ks);
    };
    let listing = stream.into_listing().map_err(|e| kernel.error(e, None))?;
    let schema = schema_from_string(&metadata.schema_string)
        .map_err(|e| e.with_table(kernel.uri().to_owned()))?;
    let physical = column_mapping(&metadata)?;
    let inexact = inexact_stats(&type_changes(&metadata.schema_string)?);
    let mut files = cur.files.clone();
    for key in &listing.summary.removes {
        files.remove(key.path());
    }
    // Batches come newest commit first.
    let mut added: Vec<Vec<Arc<FileEntry>>> = Vec::new();
    for f in listing.add_files {
        added.push(add_rows(f, &schema, &physical, &inexact)?);
    }
    for entry in added.into_iter().rev().flatten() {
        files.insert(entry);
    }
    Ok(Snapshot {
        version: ks.version(),
        protocol,
        metadata,
        schema,
        files,
        // Other writers' commits may have moved any app id: ask kernel again.
        txns: Arc::new(HashMap::new()),
        kernel: ks,
    })
}

fn add_rows(
    f: FilteredEngineData,
    schema: &arrow::datatypes::Schema,
    physical: &HashMap<String, String>,
    inexact: &[String],
) -> Result<Vec<Arc<FileEntry>>> {
    let (data, selection) = f.into_parts();
    let data = ArrowEngineData::try_from_engine_data(data).map_err(kernel_error)?;
    let batch = data.record_batch();
    let add = batch
        .column_by_name("add")
        .and_then(|c| c.as_struct_opt())
        .ok_or_else(|| corrupt("commit rows without an add column"))?;
    FileColumns::of_add_struct(add)?.entries(&selection, schema, physical, inexact)
}

fn corrupt(m: &str) -> Error {
    Error::new(ErrorKind::Corrupt, format!("Delta log: {m}"))
}

/// The columns of a file action, wherever kernel put them.
struct FileColumns {
    path: StringArray,
    size: ArrayRef,
    mtime: Option<ArrayRef>,
    stats: Option<StringArray>,
    partition_values: Option<MapArray>,
    dv: Option<StructArray>,
}

fn utf8(a: &ArrayRef) -> Result<StringArray> {
    let a = if a.data_type() == &DataType::Utf8 {
        a.clone()
    } else {
        cast(a, &DataType::Utf8).map_err(|e| corrupt(&format!("a string column: {e}")))?
    };
    Ok(a.as_string::<i32>().clone())
}

fn int64(a: &ArrayRef, i: usize) -> Option<i64> {
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::Int64 => Some(a.as_primitive::<Int64Type>().value(i)),
        DataType::Int32 => Some(i64::from(a.as_primitive::<Int32Type>().value(i))),
        _ => None,
    }
}

impl FileColumns {
    /// Rows of kernel's scan metadata (`path`, `size`, ..., `fileConstantValues`).
    fn of_scan_rows(batch: &RecordBatch) -> Result<FileColumns> {
        let col = |n: &str| batch.column_by_name(n).cloned();
        let path = utf8(&col("path").ok_or_else(|| corrupt("scan rows without a path"))?)?;
        let pv = batch
            .column_by_name("fileConstantValues")
            .and_then(|c| c.as_struct_opt())
            .and_then(|s| s.column_by_name("partitionValues"))
            .and_then(|c| c.as_map_opt())
            .cloned();
        Ok(FileColumns {
            path,
            size: col("size").ok_or_else(|| corrupt("scan rows without a size"))?,
            mtime: col("modificationTime"),
            stats: col("stats").map(|c| utf8(&c)).transpose()?,
            partition_values: pv,
            dv: col("deletionVector").and_then(|c| c.as_struct_opt().cloned()),
        })
    }

    /// The `add` struct of commit rows.
    fn of_add_struct(add: &StructArray) -> Result<FileColumns> {
        let col = |n: &str| add.column_by_name(n).cloned();
        Ok(FileColumns {
            path: utf8(&col("path").ok_or_else(|| corrupt("an add without a path"))?)?,
            size: col("size").ok_or_else(|| corrupt("an add without a size"))?,
            mtime: col("modificationTime"),
            stats: col("stats").map(|c| utf8(&c)).transpose()?,
            partition_values: col("partitionValues").and_then(|c| c.as_map_opt().cloned()),
            dv: col("deletionVector").and_then(|c| c.as_struct_opt().cloned()),
        })
    }

    fn entries(
        &self,
        selection: &[bool],
        schema: &arrow::datatypes::Schema,
        physical: &HashMap<String, String>,
        inexact: &[String],
    ) -> Result<Vec<Arc<FileEntry>>> {
        // Partition values are keyed by physical names in column-mapped tables.
        let logical: HashMap<&str, &str> = physical
            .iter()
            .map(|(l, p)| (p.as_str(), l.as_str()))
            .collect();
        let mut out = Vec::new();
        for i in 0..self.path.len() {
            if !selection.get(i).copied().unwrap_or(true) || self.path.is_null(i) {
                continue;
            }
            let path = self.path.value(i).to_owned();
            let size = int64(&self.size, i).unwrap_or_default();
            let modification_time = self.mtime.as_ref().and_then(|m| int64(m, i)).unwrap_or(0);
            let stats = self
                .stats
                .as_ref()
                .filter(|s| s.is_valid(i))
                .map(|s| s.value(i).to_owned());
            let mut partition_values = BTreeMap::new();
            if let Some(m) = &self.partition_values
                && m.is_valid(i)
            {
                let entry = m.value(i);
                let keys = utf8(entry.column(0))?;
                let values = utf8(entry.column(1))?;
                for j in 0..keys.len() {
                    let key = keys.value(j);
                    partition_values.insert(
                        logical.get(key).copied().unwrap_or(key).to_owned(),
                        values.is_valid(j).then(|| values.value(j).to_owned()),
                    );
                }
            }
            let deletion_vector = match &self.dv {
                Some(dv) if dv.is_valid(i) => Some(dv_at(dv, i)?),
                _ => None,
            };
            let mut parsed = parse_stats_mapped(stats.as_deref(), schema, physical);
            // Bounds an older file wrote in a narrower type that do not read exactly.
            for c in inexact {
                if let Some(s) = parsed.columns.get_mut(c) {
                    s.min = None;
                    s.max = None;
                }
            }
            // Statistics count the deleted rows too: bounds stay safe, counts do not.
            let parsed = parsed.less_deleted(deletion_vector.as_ref());
            out.push(Arc::new(FileEntry::new(
                Add {
                    path,
                    partition_values,
                    size,
                    modification_time,
                    data_change: true,
                    stats,
                    deletion_vector,
                },
                parsed,
            )));
        }
        Ok(out)
    }
}

fn dv_at(dv: &StructArray, i: usize) -> Result<DeletionVector> {
    let s = |n: &str| -> Result<Option<String>> {
        match dv.column_by_name(n) {
            Some(c) => {
                let c = utf8(c)?;
                Ok(c.is_valid(i).then(|| c.value(i).to_owned()))
            }
            None => Ok(None),
        }
    };
    let n = |name: &str| dv.column_by_name(name).and_then(|c| int64(c, i));
    Ok(DeletionVector {
        storage_type: s("storageType")?
            .ok_or_else(|| corrupt("a deletion vector without a storage type"))?,
        path_or_inline_dv: s("pathOrInlineDv")?
            .ok_or_else(|| corrupt("a deletion vector without a path"))?,
        offset: n("offset").and_then(|v| i32::try_from(v).ok()),
        size_in_bytes: n("sizeInBytes")
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or_default(),
        cardinality: n("cardinality").unwrap_or_default(),
    })
}
