//! Snapshots from kernel's log replay: the protocol and metadata of a version, its
//! live files (with statistics, partition values and deletion vectors), and the
//! incremental refresh that reads only the commits after a cached snapshot.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, MapArray, RecordBatch, StringArray, StructArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int32Type, Int64Type, SchemaRef};
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::engine_data::FilteredEngineData;
use delta_kernel::scan::StatsOptions;
use delta_kernel::snapshot::SnapshotRef;
use lakehouse_core::{Error, ErrorKind, Result};

use crate::fileset::FileSet;
use crate::kernel::{Kernel, kernel_error};
use crate::log::{
    Action, Add, DeletionVector, FileEntry, Format, MetaData, Protocol, Snapshot, column_mapping,
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
    let context = EntryContext::new(&metadata, schema.clone())?;
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
        batches.push(cols.entries(&selection, &context)?);
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
    let context = EntryContext::new(&metadata, schema.clone())?;
    let mut files = cur.files.clone();
    for key in &listing.summary.removes {
        files.remove(key.path());
    }
    // Batches come newest commit first.
    let mut added: Vec<Vec<Arc<FileEntry>>> = Vec::new();
    for f in listing.add_files {
        added.push(add_rows(f, &context)?);
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

/// Action kinds a commit may hold beside the ones this crate decodes that do not
/// change which files are live: change data files and domain metadata.
const INERT_ACTIONS: [&str; 2] = ["cdc", "domainMetadata"];

/// Whether [`apply_commits`] can apply a commit of `actions` (decoded, with the kinds
/// the decoder skipped): only file and `txn` actions, no protocol or metadata change
/// and no action kind it does not know.
pub(crate) fn appliable(actions: &[Action], skipped: &[String]) -> bool {
    skipped.iter().all(|k| INERT_ACTIONS.contains(&k.as_str()))
        && actions
            .iter()
            .all(|a| !matches!(a, Action::Protocol(_) | Action::MetaData(_)))
}

/// `cur` advanced by the commits after it, read by this crate instead of kernel:
/// `commits[i]` holds the actions of version `cur.version + 1 + i`, each of them
/// [`appliable`]. The protocol and metadata stay those of `cur`; kernel's snapshot
/// stays where it was (see [`Snapshot::kernel`]).
///
/// Within a commit the order of actions carries no meaning: its removes apply before
/// its adds, so that a file re-added with a new deletion vector stays live.
pub(crate) fn apply_commits(cur: &Snapshot, commits: Vec<Vec<Action>>) -> Result<Snapshot> {
    let context = EntryContext::new(&cur.metadata, cur.schema.clone())?;
    let mut files = cur.files.clone();
    let mut txns: Option<HashMap<String, i64>> = None;
    let mut version = cur.version;
    for actions in commits {
        version += 1;
        for a in &actions {
            if let Action::Remove(r) = a {
                files.remove(&r.path);
            }
        }
        for a in actions {
            match a {
                Action::Add(add) => files.insert(context.entry(add)),
                Action::Txn(t) => {
                    txns.get_or_insert_with(|| (*cur.txns).clone())
                        .insert(t.app_id, t.version);
                }
                Action::Protocol(_) | Action::MetaData(_) => {
                    return Err(Error::new(
                        ErrorKind::Internal,
                        format!(
                            "version {version}: a protocol or metadata change applied as files"
                        ),
                    ));
                }
                Action::Remove(_) | Action::CommitInfo(_) => {}
            }
        }
    }
    Ok(Snapshot {
        version,
        protocol: cur.protocol.clone(),
        metadata: cur.metadata.clone(),
        schema: cur.schema.clone(),
        files,
        txns: txns.map(Arc::new).unwrap_or_else(|| cur.txns.clone()),
        kernel: cur.kernel.clone(),
    })
}

fn add_rows(f: FilteredEngineData, context: &EntryContext) -> Result<Vec<Arc<FileEntry>>> {
    let (data, selection) = f.into_parts();
    let data = ArrowEngineData::try_from_engine_data(data).map_err(kernel_error)?;
    let batch = data.record_batch();
    let add = batch
        .column_by_name("add")
        .and_then(|c| c.as_struct_opt())
        .ok_or_else(|| corrupt("commit rows without an add column"))?;
    FileColumns::of_add_struct(add)?.entries(&selection, context)
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

    fn entries(&self, selection: &[bool], files: &EntryContext) -> Result<Vec<Arc<FileEntry>>> {
        let mut out = Vec::with_capacity(self.path.len());
        // Partition keys and values of all rows, read once.
        let partitions = match &self.partition_values {
            Some(m) => Some((m, utf8(m.keys())?, utf8(m.values())?)),
            None => None,
        };
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
            if let Some((m, keys, values)) = &partitions
                && m.is_valid(i)
            {
                let offsets = m.value_offsets();
                let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                for j in start..end {
                    partition_values.insert(
                        keys.value(j).to_owned(),
                        values.is_valid(j).then(|| values.value(j).to_owned()),
                    );
                }
            }
            let deletion_vector = match &self.dv {
                Some(dv) if dv.is_valid(i) => Some(dv_at(dv, i)?),
                _ => None,
            };
            out.push(files.entry(Add {
                path,
                partition_values,
                size,
                modification_time,
                data_change: true,
                stats,
                deletion_vector,
            }));
        }
        Ok(out)
    }
}

/// What turns the `add` actions of one table metadata into file entries: statistics
/// and partition values are keyed by physical names in column-mapped tables, and
/// bounds that older files wrote in a narrower type do not read exactly.
pub(crate) struct EntryContext {
    schema: SchemaRef,
    physical: HashMap<String, String>,
    logical: HashMap<String, String>,
    inexact: Vec<String>,
}

impl EntryContext {
    /// The context of `metadata`, whose schema is `schema`.
    pub(crate) fn new(metadata: &MetaData, schema: SchemaRef) -> Result<EntryContext> {
        let physical = column_mapping(metadata)?;
        let logical = physical
            .iter()
            .map(|(l, p)| (p.clone(), l.clone()))
            .collect();
        let inexact = inexact_stats(&type_changes(&metadata.schema_string)?);
        Ok(EntryContext {
            schema,
            physical,
            logical,
            inexact,
        })
    }

    /// The file entry of `add` as the log has it (partition values by physical names).
    pub(crate) fn entry(&self, mut add: Add) -> Arc<FileEntry> {
        if !self.logical.is_empty() {
            add.partition_values = std::mem::take(&mut add.partition_values)
                .into_iter()
                .map(|(k, v)| (self.logical.get(&k).cloned().unwrap_or(k), v))
                .collect();
        }
        let mut parsed = parse_stats_mapped(add.stats.as_deref(), &self.schema, &self.physical);
        // Bounds an older file wrote in a narrower type that do not read exactly.
        for c in &self.inexact {
            if let Some(s) = parsed.columns.get_mut(c) {
                s.min = None;
                s.max = None;
            }
        }
        // Statistics count the deleted rows too: bounds stay safe, counts do not.
        let parsed = parsed.less_deleted(add.deletion_vector.as_ref());
        Arc::new(FileEntry::new(add, parsed))
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
