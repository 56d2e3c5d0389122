//! A source's [`FileScan`] planned as DataFusion's own Parquet scan: `DataSourceExec`
//! over a `FileScanConfig` with a `ParquetSource`.
//!
//! What the plan does with the description:
//!
//! * Files are spread over `target_partitions` groups by size (DataFusion may split
//!   large files further by byte range); row groups and pages are pruned by the
//!   predicate, which is evaluated above the scan or, where the engine asks for it, in
//!   the decoder (late materialisation: `EngineBuilder::filter_pushdown`).
//! * Partition columns are `table_partition_cols`: constants per file.
//! * Per-file statistics (exact row counts, min / max and null counts as bounds) reach
//!   the optimizer through the files and the file groups.
//! * Deleted rows become a file-level `ParquetRowSelection`.
//! * Physical column names (column mapping) are resolved per file by an expression
//!   adapter that renames the logical columns to the file's names before DataFusion's
//!   default adapter fills missing columns with nulls and casts types.
//! * The store is registered with the session's runtime under the scan's URL.
//!
//! The filters DataFusion pushed into the scan are applied by a `FilterExec` above the
//! `DataSourceExec`, which DataFusion's filter pushdown gives the scan for pruning and,
//! with `filter_pushdown`, moves into the Parquet decoder: a source that reports
//! [`FilterSupport::Exact`](lakehouse_core::FilterSupport) for its batch stream is thus
//! still exact when read as files. `EXPLAIN ANALYZE` shows
//! the files read of the total as the scan's `files=read/total` metric.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::datatypes::{Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{Column, ColumnStatistics, DFSchema, ScalarValue, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfigBuilder, FileSource, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result as DfResult;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::utils::conjunction;
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_expr_adapter::{
    DefaultPhysicalExprAdapterFactory, PhysicalExprAdapter, PhysicalExprAdapterFactory,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{
    CustomMetricValue, MetricBuilder, MetricType, MetricValue,
};
use datafusion::physical_plan::projection::ProjectionExec;
use lakehouse_core::{FileScan, ScanFile, ScanRequest};

use crate::error::to_df;
use crate::pushdown::scalar_to_df;
use crate::scan::SourceTable;

/// Plans `table`'s scan as DataFusion's Parquet scan when its source describes it as
/// files; `None` keeps the batch-stream path (the source does not, or its files'
/// schema is not the one the table is registered with).
pub(crate) async fn plan_file_scan(
    table: &SourceTable,
    state: &dyn Session,
    request: &ScanRequest,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let Some(scan) = table.source.scan_files(request).await.map_err(to_df)? else {
        return Ok(None);
    };
    let views = table.views;
    let schema = table.schema();
    let Some(layout) = Layout::new(&schema, &scan, views) else {
        return Ok(None);
    };

    // Columns the scan produces: the projection, plus the columns the filters read
    // (DataFusion leaves out of the projection the columns only exact filters use).
    let wanted: Vec<usize> = match projection {
        Some(p) => p.clone(),
        None => (0..schema.fields().len()).collect(),
    };
    let filters: Vec<Expr> = filters
        .iter()
        .map(|f| unqualified(f.clone()))
        .collect::<DfResult<_>>()?;
    let mut read = wanted.clone();
    if !filters.is_empty() {
        let mut names: HashSet<String> = HashSet::new();
        for f in &filters {
            names.extend(f.column_refs().into_iter().map(|c| c.name.clone()));
        }
        for n in names {
            if let Ok(i) = schema.index_of(&n)
                && !read.contains(&i)
            {
                read.push(i);
            }
        }
    }
    let read_schema = Arc::new(schema.project(&read)?);
    let out_schema = Arc::new(schema.project(&wanted)?);

    if scan.files.is_empty() {
        return Ok(Some(Arc::new(EmptyExec::new(out_schema))));
    }

    #[cfg(not(feature = "distributed"))]
    let url = ObjectStoreUrl::parse(&scan.store_url)?;
    // Distributed, a store other processes can open is named by its location, which
    // the workers' store registry reads back.
    #[cfg(feature = "distributed")]
    let url = {
        let stores = state
            .config()
            .get_extension::<crate::distributed::StoreLocations>();
        let url = match (&stores, &scan.store_location) {
            (Some(_), Some(location)) => {
                ObjectStoreUrl::parse(crate::distributed::location_url(location))?
            }
            _ => ObjectStoreUrl::parse(&scan.store_url)?,
        };
        if let Some(stores) = stores {
            stores.record(url.as_str(), scan.store_location.clone());
        }
        url
    };
    state
        .runtime_env()
        .register_object_store(url.as_ref(), scan.store.clone());

    let mapping = (!scan.column_mapping.is_empty()).then(|| {
        Arc::new(
            scan.column_mapping
                .iter()
                .map(|(l, p)| (l.clone(), p.clone()))
                .collect::<HashMap<_, _>>(),
        )
    });
    let files: Vec<PartitionedFile> = scan
        .files
        .iter()
        .map(|f| {
            let file = layout.partitioned_file(f)?;
            // The mapping travels with the files too, for the distributed codec (the
            // adapter factory below cannot be inspected).
            Ok(match &mapping {
                Some(m) => file.with_extension(FileColumnMapping(m.clone())),
                None => file,
            })
        })
        .collect::<DfResult<_>>()?;
    let groups = spread(files, state.config().target_partitions());
    let table_schema = layout.table_schema.table_schema().clone();
    let groups = groups
        .into_iter()
        .map(|g| {
            let stats = Statistics::try_merge_iter(
                g.iter().filter_map(|f| f.statistics.as_deref()),
                &table_schema,
            )?;
            Ok(g.with_statistics(Arc::new(stats)))
        })
        .collect::<DfResult<Vec<_>>>()?;
    let statistics = Statistics::try_merge_iter(
        groups.iter().filter_map(|g| g.file_statistics(None)),
        &table_schema,
    )?;

    let mut options = state.table_options().parquet.clone();
    // In the decoder or above the scan, as the session says (see
    // `EngineBuilder::filter_pushdown`).
    let session = &state.config_options().execution.parquet;
    options.global.pushdown_filters = session.pushdown_filters;
    options.global.reorder_filters = session.reorder_filters;
    // Row-group and page pruning stay on here; the `nan_pruning` rule turns them off
    // in scans whose final filter reads a float column (Parquet's float bounds leave
    // NaN out). Files were pruned by the source already, NaN-aware.
    options.global.enable_page_index = true;
    // Strings decode as the table is registered (views or not): no cast after
    // decoding.
    options.global.schema_force_view_types = views;
    let parquet =
        ParquetSource::new(layout.table_schema.clone()).with_table_parquet_options(options);
    MetricBuilder::new(parquet.metrics())
        .with_type(MetricType::Summary)
        .build(MetricValue::Custom {
            name: "files".into(),
            value: Arc::new(FilesRead::new(scan.files.len(), scan.total_files)),
        });

    let adapter: Arc<dyn PhysicalExprAdapterFactory> = match mapping {
        None => Arc::new(DefaultPhysicalExprAdapterFactory),
        Some(physical) => Arc::new(MappedAdapterFactory { physical }),
    };
    let config = FileScanConfigBuilder::new(url, Arc::new(parquet))
        .with_file_groups(groups)
        .with_statistics(statistics)
        .with_projection_indices(Some(read.iter().map(|&i| layout.index[i]).collect()))?
        .with_limit(if filters.is_empty() { limit } else { None })
        .with_expr_adapter(Some(adapter))
        .build();
    let mut plan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);

    if let Some(predicate) = conjunction(filters) {
        let df_schema = DFSchema::try_from(read_schema.as_ref().clone())?;
        let predicate = state.create_physical_expr(predicate, &df_schema)?;
        plan = Arc::new(FilterExec::try_new(predicate, plan)?);
    }
    if read != wanted {
        let exprs: Vec<(Arc<dyn PhysicalExpr>, String)> = wanted
            .iter()
            .enumerate()
            .map(|(at, &i)| {
                let name = schema.field(i).name().clone();
                (
                    Arc::new(PhysicalColumn::new(&name, at)) as Arc<dyn PhysicalExpr>,
                    name,
                )
            })
            .collect();
        plan = Arc::new(ProjectionExec::try_new(exprs, plan)?);
    }
    Ok(Some(plan))
}

/// `expr` with its column references stripped of table qualifiers (the scan's schema
/// has none).
fn unqualified(expr: Expr) -> DfResult<Expr> {
    expr.transform(|e| match e {
        Expr::Column(c) if c.relation.is_some() => Ok(Transformed::yes(Expr::Column(
            Column::new_unqualified(c.name),
        ))),
        other => Ok(Transformed::no(other)),
    })
    .data()
}

/// How the registered table's columns sit in DataFusion's file-scan schema (the data
/// columns, then the partition columns).
struct Layout {
    table_schema: TableSchema,
    /// Column `i` of the registered schema is column `index[i]` of the scan schema.
    index: Vec<usize>,
    data_fields: Vec<FieldRef>,
    partition_fields: Vec<FieldRef>,
}

impl Layout {
    /// `None` unless the scan describes exactly the registered columns (names and
    /// types, as views where `views`) and names only known partition columns.
    fn new(schema: &Schema, scan: &FileScan, views: bool) -> Option<Layout> {
        let described = if views {
            crate::scan::view_types(&scan.table_schema)
        } else {
            scan.table_schema.clone()
        };
        let described = described.fields();
        if described.len() != schema.fields().len()
            || described
                .iter()
                .zip(schema.fields())
                .any(|(a, b)| a.name() != b.name() || a.data_type() != b.data_type())
        {
            return None;
        }
        if scan
            .partition_columns
            .iter()
            .any(|p| schema.index_of(p).is_err())
        {
            return None;
        }
        let mut data_fields = Vec::new();
        let mut partition_fields = Vec::new();
        let mut index = vec![0; schema.fields().len()];
        let mut partition_at = Vec::new();
        for (i, f) in schema.fields().iter().enumerate() {
            if scan.partition_columns.iter().any(|p| p == f.name()) {
                partition_at.push(i);
                partition_fields.push(f.clone());
            } else {
                index[i] = data_fields.len();
                data_fields.push(f.clone());
            }
        }
        for (k, i) in partition_at.into_iter().enumerate() {
            index[i] = data_fields.len() + k;
        }
        let file_schema = Arc::new(Schema::new(data_fields.clone()));
        Some(Layout {
            table_schema: TableSchema::builder(file_schema)
                .with_table_partition_cols(partition_fields.clone())
                .build(),
            index,
            data_fields,
            partition_fields,
        })
    }

    fn partitioned_file(&self, f: &ScanFile) -> DfResult<PartitionedFile> {
        let mut file = PartitionedFile::new(f.path.to_string(), f.size_bytes);
        // The path as given: `PartitionedFile::new` would encode it a second time.
        file.object_meta.location = f.path.clone();
        let values = self
            .partition_fields
            .iter()
            .map(|field| {
                let v = f
                    .partition_values
                    .get(field.name())
                    .and_then(scalar_to_df)
                    .unwrap_or(ScalarValue::Null);
                v.cast_to(field.data_type())
            })
            .collect::<DfResult<Vec<_>>>()?;
        file = file.with_partition_values(values);
        if let Some(deleted) = &f.deleted {
            let selectors: Vec<RowSelector> = deleted
                .runs()
                .into_iter()
                .map(|(keep, n)| {
                    let n = n as usize;
                    if keep {
                        RowSelector::select(n)
                    } else {
                        RowSelector::skip(n)
                    }
                })
                .collect();
            file = file.with_extension(ParquetRowSelection::new(RowSelection::from(selectors)));
        }
        // After the partition values: DataFusion appends their (exact) statistics.
        Ok(file.with_statistics(Arc::new(self.file_statistics(f))))
    }

    /// DataFusion's statistics of the data columns of `f`.
    fn file_statistics(&self, f: &ScanFile) -> Statistics {
        let s = &f.statistics;
        let precision = |v: ScalarValue| {
            if s.exact {
                Precision::Exact(v)
            } else {
                Precision::Inexact(v)
            }
        };
        let columns = self
            .data_fields
            .iter()
            .map(|field| {
                let mut out = ColumnStatistics::new_unknown();
                let Some(c) = s.columns.get(field.name()) else {
                    return out;
                };
                let typed = |v: &Option<lakehouse_core::Scalar>| {
                    v.as_ref()
                        .and_then(scalar_to_df)
                        .and_then(|v| v.cast_to(field.data_type()).ok())
                        .filter(|v| !v.is_null())
                };
                // Float bounds may leave NaN out (see `crate::nan_pruning`): given to
                // DataFusion they would prune files and answer `max(x)` without NaN.
                if let (Some(min), Some(max)) = (typed(&c.min), typed(&c.max))
                    && !field.data_type().is_floating()
                {
                    out.min_value = precision(min);
                    out.max_value = precision(max);
                }
                if let Some(n) = c.null_count {
                    out.null_count = if s.exact {
                        Precision::Exact(n as usize)
                    } else {
                        Precision::Inexact(n as usize)
                    };
                }
                out
            })
            .collect();
        Statistics {
            num_rows: s
                .num_rows
                .map(|n| Precision::Exact(n as usize))
                .unwrap_or(Precision::Absent),
            total_byte_size: Precision::Inexact(f.size_bytes as usize),
            column_statistics: columns,
        }
    }
}

/// `files` in at most `target` groups of about equal bytes (largest file first onto
/// the lightest group), each group in path order.
fn spread(mut files: Vec<PartitionedFile>, target: usize) -> Vec<FileGroup> {
    let n = target.max(1).min(files.len());
    files.sort_by(|a, b| {
        b.object_meta
            .size
            .cmp(&a.object_meta.size)
            .then_with(|| a.path().cmp(b.path()))
    });
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = (0..n).map(|_| (0, Vec::new())).collect();
    for f in files {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(bytes, _)| *bytes)
            .expect("at least one group when there is a file");
        lightest.0 += f.object_meta.size;
        lightest.1.push(f);
    }
    groups
        .into_iter()
        .map(|(_, mut g)| {
            g.sort_by(|a, b| a.path().cmp(b.path()));
            FileGroup::new(g)
        })
        .collect()
}

/// The `files=read/total` metric of a file scan: files after the source's pruning, of
/// all files of the version.
#[derive(Debug, Default)]
struct FilesRead {
    read: AtomicUsize,
    total: AtomicUsize,
}

impl FilesRead {
    fn new(read: usize, total: usize) -> Self {
        FilesRead {
            read: AtomicUsize::new(read),
            total: AtomicUsize::new(total),
        }
    }
}

impl fmt::Display for FilesRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.read.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed)
        )
    }
}

impl CustomMetricValue for FilesRead {
    fn new_empty(&self) -> Arc<dyn CustomMetricValue> {
        Arc::new(FilesRead::default())
    }

    fn aggregate(&self, other: Arc<dyn CustomMetricValue + 'static>) {
        if let Some(o) = other.as_any().downcast_ref::<FilesRead>() {
            self.read
                .fetch_add(o.read.load(Ordering::Relaxed), Ordering::Relaxed);
            self.total
                .fetch_add(o.total.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_usize(&self) -> usize {
        self.read.load(Ordering::Relaxed)
    }

    fn is_eq(&self, other: &Arc<dyn CustomMetricValue>) -> bool {
        other.as_any().downcast_ref::<FilesRead>().is_some_and(|o| {
            o.read.load(Ordering::Relaxed) == self.read.load(Ordering::Relaxed)
                && o.total.load(Ordering::Relaxed) == self.total.load(Ordering::Relaxed)
        })
    }
}

/// A file's column mapping (logical to physical names), attached to each
/// `PartitionedFile` of a table with column mapping.
#[derive(Debug, Clone)]
pub(crate) struct FileColumnMapping(pub(crate) Arc<HashMap<String, String>>);

/// Resolves logical column names to the files' physical names, then adapts as
/// DataFusion does by default (nulls for missing columns, casts).
#[derive(Debug)]
pub(crate) struct MappedAdapterFactory {
    /// Logical name to physical name.
    pub(crate) physical: Arc<HashMap<String, String>>,
}

impl PhysicalExprAdapterFactory for MappedAdapterFactory {
    fn create(
        &self,
        logical_file_schema: SchemaRef,
        physical_file_schema: SchemaRef,
    ) -> DfResult<Arc<dyn PhysicalExprAdapter>> {
        // The logical schema under physical names, field for field (same order, so
        // column indexes stay valid).
        let renamed = Arc::new(Schema::new(
            logical_file_schema
                .fields()
                .iter()
                .map(|f| match self.physical.get(f.name()) {
                    Some(p) => Arc::new(Field::clone(f).with_name(p)),
                    None => f.clone(),
                })
                .collect::<Vec<_>>(),
        ));
        Ok(Arc::new(MappedAdapter {
            physical: self.physical.clone(),
            inner: DefaultPhysicalExprAdapterFactory.create(renamed, physical_file_schema)?,
        }))
    }
}

#[derive(Debug)]
struct MappedAdapter {
    physical: Arc<HashMap<String, String>>,
    inner: Arc<dyn PhysicalExprAdapter>,
}

impl PhysicalExprAdapter for MappedAdapter {
    fn rewrite(&self, expr: Arc<dyn PhysicalExpr>) -> DfResult<Arc<dyn PhysicalExpr>> {
        let renamed = expr
            .transform(|e| {
                if let Some(c) = e.downcast_ref::<PhysicalColumn>()
                    && let Some(p) = self.physical.get(c.name())
                {
                    return Ok(Transformed::yes(
                        Arc::new(PhysicalColumn::new(p, c.index())) as Arc<dyn PhysicalExpr>,
                    ));
                }
                Ok(Transformed::no(e))
            })
            .data()?;
        self.inner.rewrite(renamed)
    }
}
