//! Encoding appended rows into partitioned Parquet files, in parallel on rayon.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{SortColumn, concat_batches, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use bytes::Bytes;
use lakehouse_core::{ColumnStats, Error, ErrorKind, Result};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;

use crate::partition::{PartitionSpec, dir_segment, value_text};

/// Compression codec of data files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Zstandard at a level in `1..=22` (default, level 3).
    Zstd(i32),
    /// Snappy.
    Snappy,
    /// LZ4 (raw).
    Lz4,
    /// No compression.
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(3)
    }
}

impl Compression {
    pub(crate) fn to_parquet(self) -> Result<PqCompression> {
        Ok(match self {
            Compression::Zstd(level) => {
                PqCompression::ZSTD(ZstdLevel::try_new(level).map_err(|_| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!("zstd level {level} is not in 1..=22"),
                    )
                })?)
            }
            Compression::Snappy => PqCompression::SNAPPY,
            Compression::Lz4 => PqCompression::LZ4_RAW,
            Compression::None => PqCompression::UNCOMPRESSED,
        })
    }

    fn suffix(self) -> &'static str {
        match self {
            Compression::Zstd(_) => "zstd",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::None => "none",
        }
    }
}

/// How files are written.
#[derive(Debug, Clone)]
pub(crate) struct WriteConfig {
    pub(crate) compression: Compression,
    pub(crate) target_file_bytes: u64,
    pub(crate) row_group_rows: usize,
    /// Rows per data page, at most.
    pub(crate) page_rows: usize,
    pub(crate) bloom_filter_columns: Vec<String>,
    pub(crate) sort_by: Vec<String>,
}

/// One encoded data file, not yet uploaded.
#[derive(Debug)]
pub(crate) struct EncodedFile {
    /// Object path relative to the table root.
    pub(crate) path: String,
    pub(crate) bytes: Bytes,
    pub(crate) partition_values: BTreeMap<String, Option<String>>,
    pub(crate) rows: u64,
    /// Statistics of the data columns.
    pub(crate) stats: BTreeMap<String, ColumnStats>,
}

fn arrow_err(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Internal, e.to_string())
}

/// The schema of data files: the table columns that are not partition columns, without
/// void columns and struct fields (never stored).
pub(crate) fn data_schema(table: &Schema, spec: &PartitionSpec) -> SchemaRef {
    let names = spec.names();
    crate::nested::file_schema(&Schema::new(
        table
            .fields()
            .iter()
            .filter(|f| !names.contains(f.name()))
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>(),
    ))
}

/// Encodes `batches` (already conformed to the user columns) into files: rows are
/// grouped by partition, optionally sorted, and written in parallel, rolling to a new
/// file at the target size. CPU-bound: call it off the async workers.
pub(crate) fn encode(
    batches: &[RecordBatch],
    user_schema: &SchemaRef,
    table_schema: &Schema,
    spec: &PartitionSpec,
    cfg: &WriteConfig,
) -> Result<Vec<EncodedFile>> {
    let batch = concat_batches(user_schema, batches).map_err(arrow_err)?;
    if batch.num_rows() == 0 {
        return Ok(Vec::new());
    }
    let data_schema = data_schema(table_schema, spec);
    let part_arrays = spec.compute(&batch)?;
    let groups = group_rows(&part_arrays, batch.num_rows())?;
    let threads = rayon::current_num_threads().max(1);
    // Split large groups so that both cores encode even when one partition dominates.
    let mut tasks: Vec<(usize, UInt32Array)> = Vec::new();
    for (g, rows) in groups.iter().enumerate() {
        let per_task = (rows.len().div_ceil(threads))
            .max(cfg.row_group_rows)
            .max(1);
        for chunk in rows.chunks(per_task) {
            tasks.push((g, UInt32Array::from(chunk.to_vec())));
        }
    }
    let props = file_properties(cfg, &data_schema, &batch)?;
    let files: Vec<Vec<EncodedFile>> = tasks
        .par_iter()
        .map(|(g, indices)| {
            let (dirs, partition_values) =
                partition_of(spec, &part_arrays, indices.value(0) as usize)?;
            let _ = g;
            let rows = take_record_batch(&batch, indices).map_err(arrow_err)?;
            let rows = project(&rows, &data_schema)?;
            let rows = sort(rows, &cfg.sort_by)?;
            write_files(&rows, &data_schema, &props, cfg, &dirs, &partition_values)
        })
        .collect::<Result<_>>()?;
    Ok(files.into_iter().flatten().collect())
}

/// The directory (`a=1/b=x/`) and the Delta partition values of `row`.
fn partition_of(
    spec: &PartitionSpec,
    part_arrays: &[ArrayRef],
    row: usize,
) -> Result<(String, BTreeMap<String, Option<String>>)> {
    let mut dirs = String::new();
    let mut values = BTreeMap::new();
    for (p, array) in spec.fields.iter().zip(part_arrays) {
        let v = value_text(array.as_ref(), row)?;
        dirs.push_str(&dir_segment(&p.name, v.as_deref()));
        dirs.push('/');
        values.insert(p.name.clone(), v);
    }
    Ok((dirs, values))
}

/// The writer properties for files of `batch`'s rows: the table's, with dictionary
/// encoding off for the columns whose values are nearly all distinct.
fn file_properties(
    cfg: &WriteConfig,
    data_schema: &Schema,
    batch: &RecordBatch,
) -> Result<WriterProperties> {
    let props = writer_properties(cfg, data_schema)?;
    let plain = mostly_distinct(batch, data_schema)?;
    if plain.is_empty() {
        return Ok(props);
    }
    let mut b = props.into_builder();
    for c in plain {
        b = b.set_column_dictionary_enabled(ColumnPath::from(c), false);
    }
    Ok(b.build())
}

/// Rows sampled to estimate how distinct a column's values are.
const DISTINCT_SAMPLE: usize = 4096;

/// Top-level columns of `batch` (among `data_schema`'s) whose values are nearly all
/// distinct, estimated on evenly spaced sample rows: dictionary encoding them only costs
/// time (a row group smaller than the dictionary page limit never falls back to plain
/// encoding, and the dictionary is as large as the data). A column with at least one
/// repeat in ten sampled values keeps its dictionary.
fn mostly_distinct(batch: &RecordBatch, data_schema: &Schema) -> Result<Vec<String>> {
    let rows = batch.num_rows();
    if rows < DISTINCT_SAMPLE {
        return Ok(Vec::new());
    }
    let step = rows / DISTINCT_SAMPLE;
    let picks = UInt32Array::from_iter_values((0..DISTINCT_SAMPLE).map(|i| (i * step) as u32));
    let mut out = Vec::new();
    for f in data_schema.fields() {
        if !crate::nested::has_stats(f.data_type())
            || matches!(f.data_type(), arrow::datatypes::DataType::Boolean)
        {
            continue;
        }
        let Some(column) = batch.column_by_name(f.name()) else {
            continue;
        };
        let sample = arrow::compute::take(column.as_ref(), &picks, None).map_err(arrow_err)?;
        let converter = RowConverter::new(vec![SortField::new(sample.data_type().clone())])
            .map_err(arrow_err)?;
        let converted = converter.convert_columns(&[sample]).map_err(arrow_err)?;
        let distinct: std::collections::HashSet<&[u8]> =
            converted.iter().map(|r| r.data()).collect();
        if distinct.len() * 10 >= DISTINCT_SAMPLE * 9 {
            out.push(f.name().clone());
        }
    }
    Ok(out)
}

/// Row indices per distinct partition value, in first-appearance order.
fn group_rows(part_arrays: &[ArrayRef], rows: usize) -> Result<Vec<Vec<u32>>> {
    if part_arrays.is_empty() {
        return Ok(vec![(0..rows as u32).collect()]);
    }
    let fields = part_arrays
        .iter()
        .map(|a| SortField::new(a.data_type().clone()))
        .collect();
    let converter = RowConverter::new(fields).map_err(arrow_err)?;
    let converted = converter.convert_columns(part_arrays).map_err(arrow_err)?;
    let mut index: HashMap<&[u8], usize> = HashMap::new();
    let mut groups: Vec<Vec<u32>> = Vec::new();
    for (i, row) in converted.iter().enumerate() {
        let next = groups.len();
        let g = *index.entry(row.data()).or_insert(next);
        if g == next {
            groups.push(Vec::new());
        }
        groups[g].push(i as u32);
    }
    Ok(groups)
}

fn project(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let c = batch.column_by_name(f.name()).ok_or_else(|| {
                Error::new(ErrorKind::Internal, format!("column {} vanished", f.name()))
            })?;
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                // A struct with void fields: the fields are left out of the file.
                crate::nested::from_file(c, f.data_type(), f.name())
            }
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err)
}

fn sort(batch: RecordBatch, by: &[String]) -> Result<RecordBatch> {
    if by.is_empty() || batch.num_rows() < 2 {
        return Ok(batch);
    }
    let mut columns = Vec::with_capacity(by.len());
    for name in by {
        let Some(values) = batch.column_by_name(name) else {
            continue;
        };
        if !crate::nested::has_stats(values.data_type()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "cannot sort by column {name} of type {}: sort keys are columns of \
                     primitive types",
                    values.data_type()
                ),
            )
            .with_column(name));
        }
        columns.push(SortColumn {
            values: values.clone(),
            options: None,
        });
    }
    if columns.is_empty() {
        return Ok(batch);
    }
    let indices = lexsort_to_indices(&columns, None).map_err(arrow_err)?;
    take_record_batch(&batch, &indices).map_err(arrow_err)
}

pub(crate) fn writer_properties(
    cfg: &WriteConfig,
    data_schema: &Schema,
) -> Result<WriterProperties> {
    let mut b = WriterProperties::builder()
        .set_compression(cfg.compression.to_parquet()?)
        .set_max_row_group_row_count(Some(cfg.row_group_rows.max(1)))
        .set_data_page_row_count_limit(cfg.page_rows.max(1))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_dictionary_enabled(true)
        .set_created_by("lakehouse-storage".into());
    for c in &cfg.bloom_filter_columns {
        // Bloom filters are kept for columns of primitive types (refused on nested ones
        // when the table is created).
        if data_schema
            .field_with_name(c)
            .is_ok_and(|f| crate::nested::has_stats(f.data_type()))
        {
            let path = ColumnPath::from(c.as_str());
            b = b
                .set_column_bloom_filter_enabled(path.clone(), true)
                .set_column_bloom_filter_fpp(path, 0.01);
        }
    }
    Ok(b.build())
}

/// Rows per `write` call; the writer rolls to a new file between slices.
const SLICE_ROWS: usize = 64 * 1024;

fn write_files(
    rows: &RecordBatch,
    schema: &SchemaRef,
    props: &WriterProperties,
    cfg: &WriteConfig,
    dirs: &str,
    partition_values: &BTreeMap<String, Option<String>>,
) -> Result<Vec<EncodedFile>> {
    let mut out = Vec::new();
    let mut offset = 0;
    let total = rows.num_rows();
    while offset < total {
        let mut writer = ArrowWriter::try_new(
            Vec::with_capacity(1 << 20),
            schema.clone(),
            Some(props.clone()),
        )
        .map_err(arrow_err)?;
        let mut stats: BTreeMap<String, ColumnStats> = BTreeMap::new();
        let start = offset;
        while offset < total {
            let len = SLICE_ROWS.min(total - offset);
            let slice = rows.slice(offset, len);
            add_stats(&mut stats, schema, &slice)?;
            writer.write(&slice).map_err(arrow_err)?;
            offset += len;
            if (writer.bytes_written() + writer.in_progress_size()) as u64 >= cfg.target_file_bytes
            {
                break;
            }
        }
        out.push(finish_file(
            writer,
            stats,
            (offset - start) as u64,
            dirs,
            partition_values,
            cfg,
        )?);
    }
    Ok(out)
}

/// Merges the statistics of `slice`'s top-level columns of primitive types into `stats`
/// (the log's nested statistics objects are optional).
fn add_stats(
    stats: &mut BTreeMap<String, ColumnStats>,
    schema: &SchemaRef,
    slice: &RecordBatch,
) -> Result<()> {
    for (f, col) in schema.fields().iter().zip(slice.columns()) {
        if !crate::nested::has_stats(f.data_type()) {
            continue;
        }
        let s = ColumnStats::from_array(col.as_ref())?;
        match stats.get_mut(f.name()) {
            Some(acc) => acc.merge(&s),
            None => {
                stats.insert(f.name().clone(), s);
            }
        }
    }
    Ok(())
}

/// Closes `writer` into an encoded file under `dirs`.
fn finish_file(
    writer: ArrowWriter<Vec<u8>>,
    stats: BTreeMap<String, ColumnStats>,
    rows: u64,
    dirs: &str,
    partition_values: &BTreeMap<String, Option<String>>,
    cfg: &WriteConfig,
) -> Result<EncodedFile> {
    let bytes = writer.into_inner().map_err(arrow_err)?;
    Ok(EncodedFile {
        path: format!(
            "{dirs}part-{}.{}.parquet",
            uuid::Uuid::new_v4(),
            cfg.compression.suffix()
        ),
        bytes: Bytes::from(bytes),
        partition_values: partition_values.clone(),
        rows,
        stats,
    })
}

/// The file a [`PartitionWriter`] is writing.
struct OpenFile {
    writer: ArrowWriter<Vec<u8>>,
    stats: BTreeMap<String, ColumnStats>,
    rows: u64,
}

/// Writes the rows of one partition batch by batch into files of the target size, the
/// way [`encode`] writes them (same properties, statistics and file names) but without
/// holding every row at once: compaction streams a group of files through it, so that
/// memory holds one input batch and the file being written, not the whole partition
/// three times over (decoded, concatenated, taken). Rows are not sorted: a rewrite
/// with a sort key goes through [`encode`]. CPU-bound: call it off the async workers.
pub(crate) struct PartitionWriter {
    spec: PartitionSpec,
    data_schema: SchemaRef,
    cfg: WriteConfig,
    /// Decided on the first batch (which columns skip dictionary encoding).
    props: Option<WriterProperties>,
    /// The partition's directory and values, from the first row.
    partition: Option<(String, BTreeMap<String, Option<String>>)>,
    open: Option<OpenFile>,
    finished: Vec<EncodedFile>,
}

impl PartitionWriter {
    /// A writer of files of `table_schema` partitioned by `spec`.
    pub(crate) fn new(table_schema: &Schema, spec: &PartitionSpec, cfg: &WriteConfig) -> Self {
        Self {
            spec: spec.clone(),
            data_schema: data_schema(table_schema, spec),
            cfg: cfg.clone(),
            props: None,
            partition: None,
            open: None,
            finished: Vec::new(),
        }
    }

    /// Writes `batch` (conformed to the user columns, every row of one partition, the
    /// same for every batch). Errors with [`ErrorKind::Internal`] when rows of another
    /// partition come in: nothing is written for that batch.
    pub(crate) fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let part_arrays = self.spec.compute(batch)?;
        if group_rows(&part_arrays, n)?.len() > 1 {
            return Err(Error::new(
                ErrorKind::Internal,
                "rows of several partitions in one rewrite",
            ));
        }
        let (dirs, values) = partition_of(&self.spec, &part_arrays, 0)?;
        match &self.partition {
            Some((_, known)) if *known != values => {
                return Err(Error::new(
                    ErrorKind::Internal,
                    "rows of several partitions in one rewrite",
                ));
            }
            Some(_) => {}
            None => self.partition = Some((dirs, values)),
        }
        if self.props.is_none() {
            self.props = Some(file_properties(&self.cfg, &self.data_schema, batch)?);
        }
        let rows = project(batch, &self.data_schema)?;
        let mut offset = 0;
        while offset < n {
            let len = SLICE_ROWS.min(n - offset);
            let slice = rows.slice(offset, len);
            let open = match &mut self.open {
                Some(open) => open,
                None => self.open.insert(OpenFile {
                    writer: ArrowWriter::try_new(
                        Vec::with_capacity(1 << 20),
                        self.data_schema.clone(),
                        self.props.clone(),
                    )
                    .map_err(arrow_err)?,
                    stats: BTreeMap::new(),
                    rows: 0,
                }),
            };
            add_stats(&mut open.stats, &self.data_schema, &slice)?;
            open.writer.write(&slice).map_err(arrow_err)?;
            open.rows += len as u64;
            offset += len;
            let size = open.writer.bytes_written() + open.writer.in_progress_size();
            if size as u64 >= self.cfg.target_file_bytes {
                self.close_open()?;
            }
        }
        Ok(())
    }

    fn close_open(&mut self) -> Result<()> {
        let (Some(open), Some((dirs, values))) = (self.open.take(), &self.partition) else {
            return Ok(());
        };
        let file = finish_file(open.writer, open.stats, open.rows, dirs, values, &self.cfg)?;
        self.finished.push(file);
        Ok(())
    }

    /// The files that reached the target size since the last call, to upload now.
    pub(crate) fn take_finished(&mut self) -> Vec<EncodedFile> {
        std::mem::take(&mut self.finished)
    }

    /// Closes the file being written; returns it with any not yet taken.
    pub(crate) fn finish(mut self) -> Result<Vec<EncodedFile>> {
        self.close_open()?;
        Ok(self.finished)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};
    use parquet::basic::Encoding;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    /// Nearly unique columns are written plain; repeating ones keep their dictionary.
    #[test]
    fn only_repeating_columns_are_dictionary_encoded() {
        let n = 20_000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("session", DataType::Utf8, false),
            Field::new("region", DataType::Utf8, false),
            Field::new("item", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("s{:08x}", i.wrapping_mul(2_654_435_761))),
                )),
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| ["eu", "us", "apac"][(i % 3) as usize]),
                )),
                Arc::new(Int64Array::from_iter_values((0..n).map(|i| i % 1000))),
            ],
        )
        .unwrap();
        let spec = PartitionSpec::from_config(&[], &BTreeMap::new()).unwrap();
        let cfg = WriteConfig {
            compression: Compression::Zstd(3),
            target_file_bytes: 1 << 30,
            row_group_rows: 1 << 20,
            page_rows: crate::table::DEFAULT_PAGE_ROWS,
            bloom_filter_columns: Vec::new(),
            sort_by: Vec::new(),
        };
        let files = encode(&[batch], &schema, &schema, &spec, &cfg).unwrap();
        assert_eq!(files.len(), 1);
        let reader = SerializedFileReader::new(files[0].bytes.clone()).unwrap();
        let rg = reader.metadata().row_group(0);
        let dictionary = |i: usize| {
            rg.column(i)
                .encodings()
                .any(|e| matches!(e, Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY))
        };
        assert!(!dictionary(0), "unique ids are written plain");
        assert!(!dictionary(1), "unique sessions are written plain");
        assert!(dictionary(2), "three regions keep a dictionary");
        assert!(dictionary(3), "1000 items in 20000 rows keep a dictionary");
        assert_eq!(files[0].rows, n as u64);
    }

    /// A partition streamed batch by batch rolls into files of the target size that
    /// hold every row once, in order, with their statistics; rows of another partition
    /// are refused.
    #[test]
    fn a_partition_streams_into_files_of_the_target_size() {
        let user = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, false),
        ]));
        let spec = PartitionSpec::from_config(&["region".to_owned()], &BTreeMap::new()).unwrap();
        let table = spec.table_schema(&user).unwrap();
        let cfg = WriteConfig {
            compression: Compression::Zstd(1),
            target_file_bytes: 64 << 10,
            row_group_rows: 8192,
            page_rows: crate::table::DEFAULT_PAGE_ROWS,
            bloom_filter_columns: Vec::new(),
            sort_by: Vec::new(),
        };
        let batch = |from: i64, n: i64, region: &str| {
            RecordBatch::try_new(
                user.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(
                        (from..from + n).map(|i| i.wrapping_mul(2_654_435_761)),
                    )),
                    Arc::new(StringArray::from_iter_values((0..n).map(|_| region))),
                ],
            )
            .unwrap()
        };
        let mut w = PartitionWriter::new(&table, &spec, &cfg);
        for k in 0..3 {
            w.push(&batch(k * 100_000, 100_000, "eu")).unwrap();
        }
        let early = w.take_finished();
        assert!(
            !early.is_empty(),
            "files reached the target size while rows came in"
        );
        let refused = w.push(&batch(0, 10, "us")).unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Internal);
        let files: Vec<EncodedFile> = early.into_iter().chain(w.finish().unwrap()).collect();
        assert!(files.len() > 2, "{} files", files.len());
        let mut ids = Vec::new();
        for f in &files {
            assert!(f.path.starts_with("region=eu/part-"), "{}", f.path);
            assert_eq!(
                f.partition_values.get("region"),
                Some(&Some("eu".to_owned()))
            );
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(
                f.bytes.clone(),
                8192,
            )
            .unwrap();
            let before = ids.len();
            for b in reader {
                let b = b.unwrap();
                assert_eq!(b.num_columns(), 1, "the partition column is not stored");
                let col = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                ids.extend(col.values().iter().copied());
            }
            let mine = &ids[before..];
            assert_eq!(f.rows, mine.len() as u64);
            let s = &f.stats["id"];
            assert_eq!(
                s.min,
                Some(lakehouse_core::Scalar::Int64(*mine.iter().min().unwrap()))
            );
            assert_eq!(
                s.max,
                Some(lakehouse_core::Scalar::Int64(*mine.iter().max().unwrap()))
            );
        }
        let expected: Vec<i64> = (0..300_000i64)
            .map(|i| i.wrapping_mul(2_654_435_761))
            .collect();
        assert_eq!(ids, expected);
    }
}
