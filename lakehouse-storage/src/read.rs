//! Scanning data files: file, row-group and page pruning, bloom filters, late
//! materialisation, cached footers, partition columns and schema evolution.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, new_null_array,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt, stream};
use lakehouse_core::{
    BatchStream, ColumnStats, Error, ErrorKind, Predicate, Result, Scalar, StatsProvider,
};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderOptions, RowFilter, RowSelection, RowSelector,
};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

use crate::kernel::{Kernel, blocking, kernel_error};
use crate::log::{DeletionVector, FileEntry};
use crate::partition::{PartitionSpec, constant_array, parse_value, uri_decode};
use crate::widening::{check_file_type, to_table_type};

/// Everything a scan needs, shared by the per-file readers.
#[derive(Debug)]
pub(crate) struct ScanContext {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) root: Path,
    pub(crate) table_schema: SchemaRef,
    pub(crate) spec: PartitionSpec,
    /// Columns returned.
    pub(crate) output: SchemaRef,
    pub(crate) predicate: Option<Predicate>,
    pub(crate) batch_size: usize,
    /// Kernel, which reads deletion vectors.
    pub(crate) kernel: Kernel,
    /// Logical column name to the name in the files (column-mapped tables only).
    pub(crate) physical: HashMap<String, String>,
    /// Parquet field id to logical column name (column mapping mode `id` only): files
    /// are read by field ids there, whatever their columns are named.
    pub(crate) field_ids: HashMap<i32, String>,
    /// The physical names inside nested columns (column-mapped tables only), by
    /// logical column name.
    pub(crate) nested: HashMap<String, crate::nested_mapping::NestedMapping>,
    /// The handle's Parquet footers.
    pub(crate) footers: FooterCache,
}

/// `batch` with the columns the file names physically renamed to their logical names.
fn to_logical(batch: RecordBatch, logical: &HashMap<String, String>) -> RecordBatch {
    if logical.is_empty() {
        return batch;
    }
    let schema = Arc::new(logical_schema(batch.schema_ref(), logical));
    RecordBatch::try_new_with_options(
        schema,
        batch.columns().to_vec(),
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .unwrap_or(batch)
}

fn logical_schema(schema: &Schema, logical: &HashMap<String, String>) -> Schema {
    Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| match logical.get(f.name()) {
                Some(name) => f.as_ref().clone().with_name(name),
                None => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    )
}

/// The object path of a file of the table.
pub(crate) fn object_path(root: &Path, uri: &str) -> Result<Path> {
    let rel = uri_decode(uri)?;
    let full = if root.as_ref().is_empty() {
        rel
    } else {
        format!("{}/{rel}", root.as_ref())
    };
    Path::parse(&full).map_err(|e| {
        Error::new(ErrorKind::Corrupt, format!("invalid file path: {e}")).with_path(uri)
    })
}

/// The Parquet footers (metadata with the page index) of the data files a table
/// handle has read, by path and size. A committed data file never changes (a new
/// version writes new files), so a footer read once serves every later scan of the
/// file: a point lookup then reads only a bloom filter and the pages it needs.
/// Bounded by the footers' decoded size ([`FOOTER_CACHE_BYTES`] per handle); the
/// least valuable are evicted.
#[derive(Clone)]
pub(crate) struct FooterCache(moka::sync::Cache<(Path, u64), Arc<ParquetMetaData>>);

/// Decoded bytes of Parquet footers one table handle (and its clones) keeps.
pub(crate) const FOOTER_CACHE_BYTES: u64 = 32 << 20;

impl FooterCache {
    /// An empty cache of at most `max_bytes` of decoded footers.
    pub(crate) fn new(max_bytes: u64) -> FooterCache {
        FooterCache(
            moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &(Path, u64), v: &Arc<ParquetMetaData>| {
                    u32::try_from(v.memory_size() + k.0.as_ref().len()).unwrap_or(u32::MAX)
                })
                .build(),
        )
    }
}

impl std::fmt::Debug for FooterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FooterCache")
            .field("entries", &self.0.entry_count())
            .field("bytes", &self.0.weighted_size())
            .finish()
    }
}

/// Reads one data file of known size from the object store.
#[derive(Debug, Clone)]
struct FileReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    footers: FooterCache,
}

fn store_err(e: object_store::Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::External(Box::new(e))
}

impl AsyncFileReader for FileReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(store_err)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(store_err)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let key = (self.path.clone(), self.size);
            if let Some(metadata) = self.footers.0.get(&key) {
                return Ok(metadata);
            }
            let size = self.size;
            let footers = self.footers.clone();
            let metadata = Arc::new(
                ParquetMetaDataReader::new()
                    .with_page_index_policy(PageIndexPolicy::Optional)
                    .load_and_finish(self, size)
                    .await?,
            );
            footers.0.insert(key, metadata.clone());
            Ok(metadata)
        }
        .boxed()
    }
}

/// Statistics of a row group for pruning.
#[derive(Debug)]
struct RowGroupStats {
    rows: Option<u64>,
    columns: HashMap<String, ColumnStats>,
}

impl StatsProvider for RowGroupStats {
    fn row_count(&self) -> Option<u64> {
        self.rows
    }
    fn column_stats(&self, column: &str) -> Option<ColumnStats> {
        self.columns.get(column).cloned()
    }
}

/// Statistics of a file for pruning: its parsed `stats` plus constant partition
/// columns, borrowed from the snapshot.
#[derive(Debug)]
pub(crate) struct FileStatsView<'a> {
    entry: &'a FileEntry,
    partitions: Arc<BTreeMap<String, Scalar>>,
}

impl StatsProvider for FileStatsView<'_> {
    fn row_count(&self) -> Option<u64> {
        self.entry.stats.num_rows
    }
    fn column_stats(&self, column: &str) -> Option<ColumnStats> {
        match self.partitions.get(column) {
            Some(v) => Some(ColumnStats::constant(
                v.clone(),
                self.entry.stats.num_rows.unwrap_or(0),
            )),
            None => self.entry.stats.columns.get(column).cloned(),
        }
    }
}

impl FileEntry {
    /// The partition values of this file, typed; parsed once and kept while the
    /// partition columns keep their types.
    pub(crate) fn partitions(
        &self,
        schema: &Schema,
        spec: &PartitionSpec,
    ) -> Result<Arc<BTreeMap<String, Scalar>>> {
        if let Some(p) = self.partitions.get()
            && p.len() == spec.fields.len()
            && spec.fields.iter().all(
                |f| match (p.get(&f.name), schema.field_with_name(&f.name)) {
                    (Some(Scalar::Null), Ok(_)) => true,
                    (Some(v), Ok(field)) => &v.data_type() == field.data_type(),
                    _ => false,
                },
            )
        {
            return Ok(p.clone());
        }
        let p = Arc::new(partition_scalars(self, schema, spec)?);
        // Another thread may have set it meanwhile: the values are the same.
        let _ = self.partitions.set(p.clone());
        Ok(p)
    }
}

/// The partition values of a file, typed.
pub(crate) fn partition_scalars(
    entry: &FileEntry,
    schema: &Schema,
    spec: &PartitionSpec,
) -> Result<BTreeMap<String, Scalar>> {
    let mut out = BTreeMap::new();
    for p in &spec.fields {
        let field = schema.field_with_name(&p.name).map_err(|_| {
            Error::new(
                ErrorKind::Corrupt,
                format!("partition column {} is not in the schema", p.name),
            )
        })?;
        let text = entry.add.partition_values.get(&p.name).cloned().flatten();
        let v = parse_value(text.as_deref(), field.data_type())
            .map_err(|e| e.with_path(entry.add.path.clone()))?;
        out.insert(p.name.clone(), v);
    }
    Ok(out)
}

/// The pruning view of a file.
pub(crate) fn file_view<'a>(
    entry: &'a FileEntry,
    schema: &Schema,
    spec: &PartitionSpec,
) -> Result<FileStatsView<'a>> {
    Ok(FileStatsView {
        entry,
        partitions: entry.partitions(schema, spec)?,
    })
}

/// Streams the rows of `files` that match, honouring `limit`.
pub(crate) fn scan_files(
    ctx: Arc<ScanContext>,
    files: Vec<Arc<FileEntry>>,
    limit: Option<usize>,
) -> BatchStream {
    let opened = stream::iter(files)
        .map(move |f| {
            let ctx = ctx.clone();
            async move { open_file(ctx, f, limit).await }
        })
        .buffered(2)
        .try_flatten();
    match limit {
        None => Box::pin(opened),
        Some(limit) => Box::pin(opened.scan(limit, |left, item| {
            let out = match item {
                Ok(_) if *left == 0 => None,
                Ok(b) => {
                    let n = b.num_rows().min(*left);
                    *left -= n;
                    Some(Ok(b.slice(0, n)))
                }
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(out)
        })),
    }
}

/// A Parquet error reading the data file at `path`, the cause kept as the source:
/// [`ErrorKind::VersionNotFound`] when the file is missing (vacuum removed the version
/// that named it), else [`ErrorKind::Corrupt`] (a truncated file shows as a read past
/// its end, which stores report as a generic error).
fn corrupt(path: &str) -> impl Fn(parquet::errors::ParquetError) -> Error + '_ {
    move |e| {
        let kind = match &e {
            parquet::errors::ParquetError::External(inner)
                if matches!(
                    inner.downcast_ref::<object_store::Error>(),
                    Some(object_store::Error::NotFound { .. })
                ) =>
            {
                ErrorKind::VersionNotFound
            }
            _ => ErrorKind::Corrupt,
        };
        Error::new(kind, format!("cannot read data file: {e}"))
            .with_path(path.to_owned())
            .with_source(e)
    }
}

async fn open_file(
    ctx: Arc<ScanContext>,
    entry: Arc<FileEntry>,
    limit: Option<usize>,
) -> Result<BatchStream> {
    let uri = entry.add.path.clone();
    let path = object_path(&ctx.root, &uri)?;
    let size = u64::try_from(entry.add.size).unwrap_or(0);
    let reader = FileReader {
        store: ctx.store.clone(),
        path: path.clone(),
        size,
        footers: ctx.footers.clone(),
    };
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let mut builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options)
        .await
        .map_err(corrupt(path.as_ref()))?;
    // Physical to logical names; a physical name that is also a logical one of another
    // column (after renames) is never read by mistake: every lookup goes through here.
    let logical: Arc<HashMap<String, String>> = Arc::new(if ctx.field_ids.is_empty() {
        ctx.physical
            .iter()
            .map(|(l, p)| (p.clone(), l.clone()))
            .collect()
    } else {
        by_field_id(builder.schema(), &ctx.field_ids).map_err(|e| e.with_path(uri.clone()))?
    });
    let file_schema = if ctx.physical.is_empty() {
        builder.schema().clone()
    } else {
        let keep: Vec<Field> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| match logical.get(f.name()) {
                Some(name) => f.as_ref().clone().with_name(name),
                // Not a column of the table (dropped): never matched by name.
                None => f
                    .as_ref()
                    .clone()
                    .with_name(format!("\u{0}dropped:{}", f.name())),
            })
            .collect();
        Arc::new(Schema::new(keep))
    };
    let parquet_schema = builder.parquet_schema().clone();
    let metadata = builder.metadata().clone();
    let partitions = partition_scalars(&entry, &ctx.table_schema, &ctx.spec)?;

    // Columns to read from the file: output and predicate columns that are data columns.
    let mut wanted: Vec<String> = ctx
        .output
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    if let Some(p) = &ctx.predicate {
        for c in p.columns() {
            if !wanted.iter().any(|w| w == c) {
                wanted.push(c.to_owned());
            }
        }
    }
    let roots: Vec<usize> = wanted
        .iter()
        .filter(|c| !partitions.contains_key(*c))
        .filter_map(|c| file_schema.index_of(c).ok())
        .collect();
    // Columns the file stores in another type than the table's (type widening, other
    // writers' layouts): checked to convert exactly, then converted wherever read.
    let widened = Arc::new(widened_columns(&file_schema, &ctx.table_schema, &roots)?);
    builder = builder
        .with_projection(ProjectionMask::roots(&parquet_schema, roots.clone()))
        .with_batch_size(ctx.batch_size);

    let mut kept: Option<Vec<usize>> = None;
    // Rows of the kept row groups that the page index leaves (`None`: all of them).
    let mut pages: Option<RowSelection> = None;
    if let Some(pred) = &ctx.predicate {
        // Row groups: statistics, then bloom filters for equality conjuncts.
        let rgs = metadata.row_groups();
        let mut keep: Vec<usize> = Vec::with_capacity(rgs.len());
        let stat_columns: Vec<&str> = pred
            .columns()
            .into_iter()
            .filter(|c| !partitions.contains_key(*c) && file_schema.index_of(c).is_ok())
            .collect();
        let mut per_column: HashMap<&str, (ArrayRef, ArrayRef, Vec<Option<u64>>)> = HashMap::new();
        for c in &stat_columns {
            if let Ok(conv) = StatisticsConverter::try_new(c, &file_schema, &parquet_schema) {
                let mins = conv.row_group_mins(rgs.iter());
                let maxes = conv.row_group_maxes(rgs.iter());
                let nulls = conv.row_group_null_counts(rgs.iter());
                // Bounds in the table type, as the rows are compared.
                let (mins, maxes) = match widened.get(*c) {
                    None => (mins, maxes),
                    Some(t) => (
                        mins.and_then(|a| to_table_type(c, &a, t).map_err(|e| arrow_err(&e))),
                        maxes.and_then(|a| to_table_type(c, &a, t).map_err(|e| arrow_err(&e))),
                    ),
                };
                if let (Ok(mins), Ok(maxes), Ok(nulls)) = (mins, maxes, nulls) {
                    let nulls = (0..nulls.len())
                        .map(|i| nulls.is_valid(i).then(|| nulls.value(i)))
                        .collect();
                    per_column.insert(c, (mins, maxes, nulls));
                }
            }
        }
        for (i, rg) in rgs.iter().enumerate() {
            let rows = u64::try_from(rg.num_rows()).unwrap_or(0);
            let mut columns: HashMap<String, ColumnStats> = partitions
                .iter()
                .map(|(k, v)| (k.clone(), ColumnStats::constant(v.clone(), rows)))
                .collect();
            for (c, (mins, maxes, nulls)) in &per_column {
                let (min, max) = bounds_at(mins, maxes, i);
                columns.insert(
                    (*c).to_owned(),
                    ColumnStats {
                        min,
                        max,
                        null_count: nulls[i],
                    },
                );
            }
            let view = RowGroupStats {
                rows: Some(rows),
                columns,
            };
            if pred.can_match(&view) {
                keep.push(i);
            }
        }
        let mut probes = bloom_probes(pred, &file_schema, &partitions);
        // A filter hashes the file's own type: probe only columns stored in the table type.
        probes.retain(|(c, _)| !widened.contains_key(c));
        if !probes.is_empty() {
            let mut filtered = Vec::with_capacity(keep.len());
            'rg: for rg in keep {
                for (col, values) in &probes {
                    let physical = logical
                        .iter()
                        .find_map(|(p, l)| (l == col).then_some(p))
                        .unwrap_or(col);
                    let Some(leaf) = leaf_index(&parquet_schema, physical) else {
                        continue;
                    };
                    let sbbf = builder
                        .get_row_group_column_bloom_filter(rg, leaf)
                        .await
                        .map_err(corrupt(path.as_ref()))?;
                    if let Some(sbbf) = sbbf
                        && !values.iter().any(|v| probe(&sbbf, v))
                    {
                        continue 'rg;
                    }
                }
                filtered.push(rg);
            }
            keep = filtered;
        }
        if keep.is_empty() {
            return Ok(Box::pin(stream::empty()));
        }
        pages = page_selection(
            pred,
            &stat_columns,
            &metadata,
            &keep,
            (&file_schema, &parquet_schema),
            &partitions,
            &widened,
        );
        kept = Some(keep.clone());
        builder = builder.with_row_groups(keep);

        // Late materialisation: conjuncts over the file's own columns filter rows
        // before the other columns are decoded.
        let local: Vec<Predicate> = pred
            .conjuncts()
            .into_iter()
            .filter(|c| {
                c.columns()
                    .iter()
                    .all(|col| !partitions.contains_key(*col) && file_schema.index_of(col).is_ok())
            })
            .cloned()
            .collect();
        if let Some(local) = Predicate::all(local) {
            let cols: Vec<usize> = local
                .columns()
                .iter()
                .filter_map(|c| file_schema.index_of(c).ok())
                .collect();
            let mask = ProjectionMask::roots(&parquet_schema, cols);
            let names = logical.clone();
            let widened = widened.clone();
            let f = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
                in_table_types(to_logical(batch, &names), &widened)
                    .and_then(|b| local.evaluate(&b))
                    .map_err(|e| arrow::error::ArrowError::ComputeError(e.to_string()))
            });
            builder = builder.with_row_filter(RowFilter::new(vec![Box::new(f)]));
        }
    } else if let Some(limit) = limit {
        builder = builder.with_limit(limit);
    }

    if let Some(dv) = &entry.add.deletion_vector {
        let deleted = deleted_rows(&ctx.kernel, dv)
            .await
            .map_err(|e| e.with_path(uri.clone()))?;
        let groups = metadata.row_groups();
        let chosen = kept.unwrap_or_else(|| (0..groups.len()).collect());
        let live = live_rows(&deleted, groups, &chosen);
        pages = Some(match pages {
            Some(p) => p.intersection(&live),
            None => live,
        });
    }
    if let Some(selection) = pages {
        builder = builder.with_row_selection(selection);
    }

    let stream = builder.build().map_err(corrupt(path.as_ref()))?;
    let ctx2 = ctx.clone();
    let path_text = path.to_string();
    let wanted = Arc::new(wanted);
    Ok(Box::pin(stream.map(move |b| {
        let b = b.map_err(corrupt(&path_text))?;
        assemble(&ctx2, &to_logical(b, &logical), &partitions, &wanted)
    })))
}

/// Entry `i` of statistics arrays `mins` and `maxes` as scalars: both bounds, or
/// neither when one is missing.
fn bounds_at(mins: &ArrayRef, maxes: &ArrayRef, i: usize) -> (Option<Scalar>, Option<Scalar>) {
    let bound = |a: &ArrayRef| {
        a.is_valid(i)
            .then(|| Scalar::try_from_array(a.as_ref(), i).ok())
            .flatten()
    };
    match (bound(mins), bound(maxes)) {
        (Some(min), Some(max)) => (Some(min), Some(max)),
        _ => (None, None),
    }
}

/// The rows of row groups `keep` (in that order) whose pages may hold a match of
/// `pred`, by the page index's bounds of each predicate column in `columns`; `None`
/// when the file has no page index or no page can be skipped. A page is judged by its
/// own column's bounds (pages of different columns end at different rows); the
/// selections of several columns intersect. Columns stored in another type than the
/// table's (type widening) are left to the row filter.
fn page_selection(
    pred: &Predicate,
    columns: &[&str],
    metadata: &ParquetMetaData,
    keep: &[usize],
    (file_schema, parquet_schema): (&Schema, &parquet::schema::types::SchemaDescriptor),
    partitions: &BTreeMap<String, Scalar>,
    widened: &HashMap<String, DataType>,
) -> Option<RowSelection> {
    let (Some(column_index), Some(offset_index)) =
        (metadata.column_index(), metadata.offset_index())
    else {
        return None;
    };
    let mut out: Option<RowSelection> = None;
    for c in columns {
        if widened.contains_key(*c) {
            continue;
        }
        let Ok(conv) = StatisticsConverter::try_new(c, file_schema, parquet_schema) else {
            continue;
        };
        let Ok(Some(counts)) = conv.data_page_row_counts(offset_index, metadata.row_groups(), keep)
        else {
            continue;
        };
        let (Ok(mins), Ok(maxes), Ok(nulls)) = (
            conv.data_page_mins(column_index, offset_index, keep),
            conv.data_page_maxes(column_index, offset_index, keep),
            conv.data_page_null_counts(column_index, offset_index, keep),
        ) else {
            continue;
        };
        let pages = counts.len();
        if mins.len() != pages || maxes.len() != pages || nulls.len() != pages {
            continue;
        }
        let mut selectors = Vec::with_capacity(pages);
        let mut skipped = false;
        for p in 0..pages {
            let rows = counts.value(p);
            let (min, max) = bounds_at(&mins, &maxes, p);
            let mut stats: HashMap<String, ColumnStats> = partitions
                .iter()
                .map(|(k, v)| (k.clone(), ColumnStats::constant(v.clone(), rows)))
                .collect();
            stats.insert(
                (*c).to_owned(),
                ColumnStats {
                    min,
                    max,
                    null_count: nulls.is_valid(p).then(|| nulls.value(p)),
                },
            );
            let view = RowGroupStats {
                rows: Some(rows),
                columns: stats,
            };
            let rows = usize::try_from(rows).unwrap_or(usize::MAX);
            if pred.can_match(&view) {
                selectors.push(RowSelector::select(rows));
            } else {
                skipped = true;
                selectors.push(RowSelector::skip(rows));
            }
        }
        if !skipped {
            continue;
        }
        let selection = RowSelection::from(selectors);
        out = Some(match out {
            Some(o) => o.intersection(&selection),
            None => selection,
        });
    }
    out
}

/// The file's column names to logical names by Parquet field id (column mapping mode
/// `id`). A file without field ids is refused, as the protocol asks.
fn by_field_id(file: &Schema, ids: &HashMap<i32, String>) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut any = false;
    for f in file.fields() {
        let Some(id) = f
            .metadata()
            .get(parquet::arrow::PARQUET_FIELD_ID_META_KEY)
            .and_then(|v| v.parse::<i32>().ok())
        else {
            continue;
        };
        any = true;
        if let Some(name) = ids.get(&id) {
            out.insert(f.name().clone(), name.clone());
        }
    }
    if !any && !file.fields().is_empty() {
        return Err(Error::new(
            ErrorKind::Corrupt,
            "a data file of a table in column mapping mode id has no Parquet field ids",
        ));
    }
    Ok(out)
}

/// The data columns (of `roots`) that `file` stores in another type than the table's,
/// with the table type; errors unless each converts exactly (see [`crate::widening`]).
fn widened_columns(
    file: &Schema,
    table: &Schema,
    roots: &[usize],
) -> Result<HashMap<String, DataType>> {
    let mut out = HashMap::new();
    for &i in roots {
        let f = file.field(i);
        let Ok(t) = table.field_with_name(f.name()) else {
            continue;
        };
        // Nested and void columns are reshaped to the table type when assembled.
        if f.data_type() != t.data_type() && !crate::nested::reads_reshaped(t.data_type()) {
            check_file_type(f.name(), f.data_type(), t.data_type())?;
            out.insert(f.name().clone(), t.data_type().clone());
        }
    }
    Ok(out)
}

/// `batch` with the `widened` columns converted to the table types.
fn in_table_types(batch: RecordBatch, widened: &HashMap<String, DataType>) -> Result<RecordBatch> {
    if widened.is_empty() {
        return Ok(batch);
    }
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        match widened.get(f.name()) {
            Some(t) => {
                columns.push(to_table_type(f.name(), c, t)?);
                fields.push(Field::new(f.name(), t.clone(), true));
            }
            None => {
                columns.push(c.clone());
                fields.push(f.as_ref().clone());
            }
        }
    }
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))
}

fn arrow_err(e: &Error) -> parquet::errors::ParquetError {
    parquet::errors::ParquetError::General(e.to_string())
}

/// The deleted row indexes of a deletion vector, ascending (read by kernel: inline,
/// or from its file beside the data).
pub(crate) async fn deleted_rows(kernel: &Kernel, dv: &DeletionVector) -> Result<Vec<u64>> {
    use delta_kernel::Engine as _;
    use delta_kernel::actions::deletion_vector::{
        DeletionVectorDescriptor, DeletionVectorStorageType,
    };
    let kernel = kernel.clone();
    let dv = dv.clone();
    blocking(move || {
        let storage: DeletionVectorStorageType = dv.storage_type.parse().map_err(kernel_error)?;
        let d = DeletionVectorDescriptor::try_new(
            storage,
            dv.path_or_inline_dv,
            dv.offset,
            dv.size_in_bytes,
            dv.cardinality,
        )
        .map_err(kernel_error)?;
        let mut rows = d
            .row_indexes(kernel.engine.storage_handler(), &kernel.url)
            .map_err(kernel_error)?;
        rows.sort_unstable();
        rows.dedup();
        Ok(rows)
    })
    .await
}

/// The rows of row groups `chosen` (in the order read) that `deleted` (ascending file
/// row indexes) leaves, as a Parquet row selection.
fn live_rows(
    deleted: &[u64],
    groups: &[parquet::file::metadata::RowGroupMetaData],
    chosen: &[usize],
) -> RowSelection {
    let mut starts = Vec::with_capacity(groups.len());
    let mut at = 0u64;
    for g in groups {
        starts.push(at);
        at += u64::try_from(g.num_rows()).unwrap_or(0);
    }
    let mut selectors = Vec::new();
    for &g in chosen {
        let (Some(&start), Some(group)) = (starts.get(g), groups.get(g)) else {
            continue;
        };
        let end = start + u64::try_from(group.num_rows()).unwrap_or(0);
        let lo = deleted.partition_point(|&d| d < start);
        let hi = deleted.partition_point(|&d| d < end);
        let mut pos = start;
        for &d in &deleted[lo..hi] {
            if d > pos {
                selectors.push(RowSelector::select((d - pos) as usize));
            }
            selectors.push(RowSelector::skip(1));
            pos = d + 1;
        }
        if end > pos {
            selectors.push(RowSelector::select((end - pos) as usize));
        }
    }
    RowSelection::from(selectors)
}

/// Builds the output batch from a file batch: partition constants, nulls for columns
/// the file predates, casts for files written with another physical type; then the
/// full predicate, then the projection.
fn assemble(
    ctx: &ScanContext,
    batch: &RecordBatch,
    partitions: &BTreeMap<String, Scalar>,
    wanted: &[String],
) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let mut fields = Vec::with_capacity(wanted.len());
    let mut columns = Vec::with_capacity(wanted.len());
    for name in wanted {
        let field = ctx.table_schema.field_with_name(name).map_err(|_| {
            Error::new(
                ErrorKind::ColumnNotFound,
                format!("column {name} not found"),
            )
            .with_column(name)
        })?;
        let column: ArrayRef = if let Some(v) = partitions.get(name) {
            constant_array(v, field.data_type(), rows)?
        } else if let Some(c) = batch.column_by_name(name) {
            let renamed;
            let c = match ctx.nested.get(name) {
                Some(mapping) => {
                    renamed = mapping
                        .to_logical(c, !ctx.field_ids.is_empty())
                        .map_err(|e| e.with_column(name))?;
                    &renamed
                }
                None => c,
            };
            if crate::nested::reads_reshaped(field.data_type())
                && c.data_type() != field.data_type()
            {
                crate::nested::from_file(c, field.data_type(), name)?
            } else {
                to_table_type(name, c, field.data_type())?
            }
        } else {
            new_null_array(field.data_type(), rows)
        };
        fields.push(Field::new(name, field.data_type().clone(), true));
        columns.push(column);
    }
    // The row count is explicit: a scan may ask for no column at all (`COUNT(*)`).
    let work = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?;
    let work = match &ctx.predicate {
        Some(p) => {
            let mask: BooleanArray = p.evaluate(&work)?;
            filter_record_batch(&work, &mask)
                .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))?
        }
        None => work,
    };
    let columns = ctx
        .output
        .fields()
        .iter()
        .map(|f| {
            work.column_by_name(f.name())
                .cloned()
                .unwrap_or_else(|| new_null_array(f.data_type(), work.num_rows()))
        })
        .collect();
    RecordBatch::try_new_with_options(
        ctx.output.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(work.num_rows())),
    )
    .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))
}

fn leaf_index(schema: &parquet::schema::types::SchemaDescriptor, column: &str) -> Option<usize> {
    schema
        .columns()
        .iter()
        .position(|c| c.path().string() == column)
}

/// Equality values per data column, from `col = v` and `col IN (...)` conjuncts.
fn bloom_probes(
    pred: &Predicate,
    schema: &Schema,
    partitions: &BTreeMap<String, Scalar>,
) -> Vec<(String, Vec<Scalar>)> {
    let mut out = Vec::new();
    for c in pred.conjuncts() {
        let (column, values) = match c {
            Predicate::Compare {
                column,
                op: lakehouse_core::CmpOp::Eq,
                value,
            } => (column, vec![value.clone()]),
            Predicate::InList {
                column,
                values,
                negated: false,
            } => (column, values.clone()),
            _ => continue,
        };
        if partitions.contains_key(column) {
            continue;
        }
        let Ok(field) = schema.field_with_name(column) else {
            continue;
        };
        let Some(values) = values
            .iter()
            .map(|v| v.cast_to(field.data_type()).ok().filter(|v| !v.is_null()))
            .collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        out.push((column.to_string(), values));
    }
    out
}

/// Whether the bloom filter may hold `v` (true when the type is not probed).
fn probe(sbbf: &parquet::bloom_filter::Sbbf, v: &Scalar) -> bool {
    match v {
        Scalar::Utf8(s) => sbbf.check(s.as_str()),
        Scalar::Int64(x) => sbbf.check(x),
        Scalar::Int32(x) => sbbf.check(x),
        Scalar::Int16(x) => sbbf.check(&i32::from(*x)),
        Scalar::Int8(x) => sbbf.check(&i32::from(*x)),
        Scalar::Date32(x) => sbbf.check(x),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Float64Array, Int64Array};
    use lakehouse_core::col;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::{EnabledStatistics, WriterProperties};

    use super::*;

    /// A file of `id` 0..10,000 and `x` = id / 10: two row groups of five pages of
    /// 1,000 rows each.
    fn file() -> (SchemaRef, ParquetMetaData) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
        ]));
        let props = WriterProperties::builder()
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_data_page_row_count_limit(1000)
            .set_write_batch_size(1000)
            .set_max_row_group_row_count(Some(5000))
            .build();
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, schema.clone(), Some(props)).unwrap();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..10_000)),
                Arc::new(Float64Array::from_iter_values(
                    (0..10_000).map(|i| i as f64 / 10.0),
                )),
            ],
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let md = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Required)
            .parse_and_finish(&Bytes::from(buf))
            .unwrap();
        (schema, md)
    }

    fn select(pred: &Predicate, columns: &[&str], keep: &[usize]) -> Option<Vec<RowSelector>> {
        let (schema, md) = file();
        let pq = md.file_metadata().schema_descr_ptr();
        page_selection(
            pred,
            columns,
            &md,
            keep,
            (&schema, &pq),
            &BTreeMap::new(),
            &HashMap::new(),
        )
        .map(Vec::from)
    }

    #[test]
    fn pages_whose_bounds_cannot_match_are_skipped() {
        // Row group 1 holds ids 5,000..10,000: only its third page can hold 7,500.
        assert_eq!(
            select(&col("id").eq(7_500i64), &["id"], &[1]),
            Some(vec![
                RowSelector::skip(2000),
                RowSelector::select(1000),
                RowSelector::skip(2000)
            ])
        );
        // Both row groups kept, in order: rows are counted across them.
        assert_eq!(
            select(&col("id").lt(1_500i64), &["id"], &[0, 1]),
            Some(vec![RowSelector::select(2000), RowSelector::skip(8000)])
        );
        // Two columns: their selections intersect.
        // (`x` is bounded on both sides, so a NaN cannot match.)
        let both = col("id")
            .gt_eq(2_000i64)
            .and(col("x").gt_eq(0.0f64))
            .and(col("x").lt(350.0f64));
        assert_eq!(
            select(&both, &["id", "x"], &[0]),
            Some(vec![
                RowSelector::skip(2000),
                RowSelector::select(2000),
                RowSelector::skip(1000)
            ])
        );
        // Nothing to skip: no selection.
        assert_eq!(select(&col("id").gt_eq(0i64), &["id"], &[0, 1]), None);
        // A column without a page index entry (not in the file) skips nothing.
        assert_eq!(select(&col("zz").eq(1i64), &["zz"], &[0]), None);
    }

    #[test]
    fn pages_with_nan_are_kept() {
        // Page bounds leave NaN out, and NaN > 10 holds: a page whose numbers are all
        // below 10 may still match when it holds a NaN.
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        let props = WriterProperties::builder()
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_data_page_row_count_limit(2)
            .set_write_batch_size(2)
            .build();
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, schema.clone(), Some(props)).unwrap();
        let xs = Float64Array::from(vec![1.0, 2.0, 3.0, f64::NAN, 20.0, 30.0]);
        w.write(&RecordBatch::try_new(schema.clone(), vec![Arc::new(xs)]).unwrap())
            .unwrap();
        w.close().unwrap();
        let md = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Required)
            .parse_and_finish(&Bytes::from(buf))
            .unwrap();
        let pq = md.file_metadata().schema_descr_ptr();
        let sel = |pred: Predicate| {
            page_selection(
                &pred,
                &["x"],
                &md,
                &[0],
                (&schema, &pq),
                &BTreeMap::new(),
                &HashMap::new(),
            )
            .map(Vec::from)
        };
        // Every page may hold a NaN: none is skipped.
        assert_eq!(sel(col("x").gt(10.0f64)), None);
        // Bounded above, NaN cannot match: the pages below 10 are skipped.
        assert_eq!(
            sel(col("x").gt(10.0f64).and(col("x").lt(100.0f64))),
            Some(vec![RowSelector::skip(4), RowSelector::select(2)])
        );
    }
}
