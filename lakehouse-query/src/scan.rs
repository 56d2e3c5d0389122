//! The DataFusion side of a [`TableSource`]: a `TableProvider` that pushes filters,
//! projections and limits down and reports the source's statistics, and the leaf
//! execution plan that streams a scan.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ColumnStatistics, Statistics};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, StatisticsArgs,
};
use futures::{StreamExt, TryStreamExt};
use lakehouse_core::{
    FilterSupport, Predicate, ScanRequest, TableSource, TableStatistics, Version,
};

use crate::error::to_df;
use crate::pushdown::{has_not, scalar_to_df, to_predicate, to_pruning_predicate};

/// Produces the batches of one output partition of a [`ScanExec`].
pub(crate) trait PartitionProducer: Send + Sync + fmt::Debug {
    /// Streams partition `partition`.
    fn execute(&self, partition: usize, schema: SchemaRef) -> SendableRecordBatchStream;
}

/// A leaf plan over a [`PartitionProducer`], with a declared partitioning and statistics.
#[derive(Debug)]
pub(crate) struct ScanExec {
    label: String,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    statistics: Arc<Statistics>,
    producer: Arc<dyn PartitionProducer>,
    /// Rows and batches produced, for `EXPLAIN ANALYZE`.
    metrics: ExecutionPlanMetricsSet,
}

impl ScanExec {
    pub(crate) fn new(
        label: String,
        schema: SchemaRef,
        partitioning: Partitioning,
        statistics: Statistics,
        producer: Arc<dyn PartitionProducer>,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            partitioning,
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        ScanExec {
            label,
            schema,
            properties: Arc::new(properties),
            statistics: Arc::new(statistics),
            producer,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for ScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LakehouseScanExec: {}, partitioning={}",
            self.label, self.properties.partitioning
        )
    }
}

impl ExecutionPlan for ScanExec {
    fn name(&self) -> &str {
        "LakehouseScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "LakehouseScanExec is a leaf and takes no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let count = self.properties.partitioning.partition_count();
        if partition >= count {
            return Err(DataFusionError::Internal(format!(
                "partition {partition} out of range: the scan has {count}"
            )));
        }
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let stream = self
            .producer
            .execute(partition, self.schema.clone())
            .map(move |r| {
                if let Ok(batch) = &r {
                    baseline.record_output(batch.num_rows());
                }
                r
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> DfResult<Arc<Statistics>> {
        if args.partition().is_none() || self.properties.partitioning.partition_count() == 1 {
            Ok(self.statistics.clone())
        } else {
            Ok(Arc::new(Statistics::new_unknown(&self.schema)))
        }
    }

    #[allow(deprecated)]
    fn partition_statistics(&self, partition: Option<usize>) -> DfResult<Arc<Statistics>> {
        if partition.is_none() || self.properties.partitioning.partition_count() == 1 {
            Ok(self.statistics.clone())
        } else {
            Ok(Arc::new(Statistics::new_unknown(&self.schema)))
        }
    }
}

/// Converts a source's statistics into DataFusion's for the projected `schema`.
pub(crate) fn to_df_statistics(
    stats: &TableStatistics,
    schema: &Schema,
    exact_rows: bool,
) -> Statistics {
    let rows = stats.num_rows() as usize;
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let mut out = ColumnStatistics::new_unknown();
            if let Some(c) = stats.column(field.name()) {
                let convert = |v: &Option<lakehouse_core::Scalar>| {
                    v.as_ref()
                        .and_then(scalar_to_df)
                        .filter(|s| s.data_type() == *field.data_type())
                        .map(Precision::Inexact)
                        .unwrap_or(Precision::Absent)
                };
                out.min_value = convert(&c.min);
                out.max_value = convert(&c.max);
                out.null_count = c
                    .null_count
                    .map(|n| Precision::Inexact(n as usize))
                    .unwrap_or(Precision::Absent);
            }
            out
        })
        .collect();
    Statistics {
        num_rows: if exact_rows {
            Precision::Exact(rows)
        } else {
            Precision::Inexact(rows)
        },
        total_byte_size: Precision::Inexact(stats.size_bytes() as usize),
        column_statistics: columns,
    }
}

/// How a predicate from `filters` may be pushed to `source`.
pub(crate) fn pushdown_support(
    source: &dyn TableSource,
    schema: &Schema,
    filter: &Expr,
) -> TableProviderFilterPushDown {
    if let Some(p) = to_predicate(filter, schema) {
        match source.filter_support(&p) {
            FilterSupport::Exact if !has_not(&p) => return TableProviderFilterPushDown::Exact,
            FilterSupport::Unsupported => return TableProviderFilterPushDown::Unsupported,
            _ => return TableProviderFilterPushDown::Inexact,
        }
    }
    match to_pruning_predicate(filter, schema) {
        Some(p) if source.filter_support(&p) != FilterSupport::Unsupported => {
            TableProviderFilterPushDown::Inexact
        }
        _ => TableProviderFilterPushDown::Unsupported,
    }
}

/// The conjunction of the pushable parts of `filters`.
pub(crate) fn combined_predicate(filters: &[Expr], schema: &Schema) -> Option<Predicate> {
    Predicate::all(
        filters
            .iter()
            .filter_map(|f| to_pruning_predicate(f, schema)),
    )
}

/// Streams one scan of a source.
#[derive(Debug)]
struct SourceScan {
    source: Arc<dyn TableSource>,
    request: ScanRequest,
}

impl PartitionProducer for SourceScan {
    fn execute(&self, _partition: usize, schema: SchemaRef) -> SendableRecordBatchStream {
        let source = self.source.clone();
        let request = self.request.clone();
        let out_schema = schema.clone();
        let stream = futures::stream::once(async move { source.scan(request).await })
            .try_flatten()
            .map(move |r| match r {
                Ok(batch) => align(batch, &out_schema),
                Err(e) => Err(to_df(e)),
            });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

/// Gives `batch` exactly `schema` (sources may differ in nullability or metadata).
pub(crate) fn align(batch: RecordBatch, schema: &SchemaRef) -> DfResult<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    let batch = if batch.num_columns() == schema.fields().len() {
        batch
    } else {
        // A source that ignored the projection: pick the asked-for columns by name.
        let indices = schema
            .fields()
            .iter()
            .map(|f| batch.schema_ref().index_of(f.name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                DataFusionError::Execution(format!(
                    "a table source returned columns {:?} where {:?} were asked for",
                    batch
                        .schema_ref()
                        .fields()
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>(),
                    schema.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
                ))
            })?;
        batch.project(&indices)?
    };
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow::compute::cast(c, f.data_type()).map_err(DataFusionError::from)
            }
        })
        .collect::<DfResult<Vec<_>>>()?;
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options)
        .map_err(DataFusionError::from)
}

/// `schema` with its top-level string and binary columns as views (`Utf8View`,
/// `BinaryView`), as DataFusion's Parquet reader reads them.
pub(crate) fn view_types(schema: &SchemaRef) -> SchemaRef {
    let view = |t: &DataType| match t {
        DataType::Utf8 | DataType::LargeUtf8 => Some(DataType::Utf8View),
        DataType::Binary | DataType::LargeBinary => Some(DataType::BinaryView),
        _ => None,
    };
    if !schema
        .fields()
        .iter()
        .any(|f| view(f.data_type()).is_some())
    {
        return schema.clone();
    }
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| match view(f.data_type()) {
            Some(t) => Arc::new(f.as_ref().clone().with_data_type(t)),
            None => f.clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A [`TableSource`] as a DataFusion table, optionally pinned to one version.
#[derive(Debug, Clone)]
pub(crate) struct SourceTable {
    pub(crate) name: Arc<str>,
    pub(crate) source: Arc<dyn TableSource>,
    pub(crate) version: Option<Version>,
    /// Whether string and binary columns are exposed as views
    /// (`EngineBuilder::string_views`).
    pub(crate) views: bool,
}

impl SourceTable {
    pub(crate) fn new(name: &str, source: Arc<dyn TableSource>, views: bool) -> Self {
        SourceTable {
            name: Arc::from(name),
            source,
            version: None,
            views,
        }
    }

    /// The schema the engine sees: the source's, with views where [`Self::views`].
    pub(crate) fn schema(&self) -> SchemaRef {
        let schema = self.source.schema();
        if self.views {
            view_types(&schema)
        } else {
            schema
        }
    }

    pub(crate) fn pinned(&self, version: Version) -> Self {
        SourceTable {
            version: Some(version),
            ..self.clone()
        }
    }

    /// The plan that scans the source: DataFusion's Parquet scan when the source
    /// describes the scan as files, else a stream of the source's batches.
    pub(crate) async fn plan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let full = self.schema();
        let schema = match projection {
            Some(p) => Arc::new(full.project(p)?),
            None => full.clone(),
        };
        let version = match self.version {
            Some(v) => v,
            None => self.source.version().await.map_err(to_df)?,
        };
        let predicate = combined_predicate(filters, &full);
        let mut request = ScanRequest::new().at_version(version);
        if projection.is_some() {
            request = request.with_projection(schema.fields().iter().map(|f| f.name().clone()));
        }
        if let Some(p) = &predicate {
            request = request.with_predicate(p.clone());
        }
        if let Some(l) = limit {
            request = request.with_limit(l);
        }
        if let Some(plan) =
            crate::file_scan::plan_file_scan(self, state, &request, projection, filters, limit)
                .await?
        {
            return Ok(plan);
        }
        // Files whose statistics the predicate may match, of all files (for EXPLAIN).
        let mut files_read = None;
        let statistics = match self.source.statistics(Some(version)).await {
            Ok(s) => {
                let total = s.files.len();
                let mut stats = if let Some(p) = &predicate {
                    // Files the predicate rules out do not count.
                    let files: Vec<_> = s.files.into_iter().filter(|f| p.can_match(f)).collect();
                    files_read = Some((files.len(), total));
                    to_df_statistics(
                        &TableStatistics {
                            version: s.version,
                            files,
                        },
                        &schema,
                        false,
                    )
                } else {
                    files_read = Some((total, total));
                    // Sources' statistics are conservative, not exact: never let the
                    // planner answer COUNT(*) from them.
                    to_df_statistics(&s, &schema, false)
                };
                if let Some(l) = limit {
                    stats.num_rows = stats.num_rows.min(&Precision::Inexact(l)).to_inexact();
                }
                stats
            }
            Err(_) => Statistics::new_unknown(&schema),
        };
        let mut label = format!(
            "table={}, version={version}, predicate={}",
            self.name,
            predicate
                .map(|p| p.to_string())
                .unwrap_or_else(|| "none".into())
        );
        if let Some((read, total)) = files_read {
            label.push_str(&format!(", files={read}/{total}"));
        }
        Ok(Arc::new(ScanExec::new(
            label,
            schema,
            Partitioning::UnknownPartitioning(1),
            statistics,
            Arc::new(SourceScan {
                source: self.source.clone(),
                request,
            }),
        )))
    }
}

#[async_trait]
impl TableProvider for SourceTable {
    fn schema(&self) -> SchemaRef {
        SourceTable::schema(self)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let schema = SourceTable::schema(self);
        Ok(filters
            .iter()
            .map(|f| pushdown_support(self.source.as_ref(), &schema, f))
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.plan(state, projection, filters, limit).await
    }
}

/// A committed table unioned with a live source of rows not yet committed.
#[derive(Debug, Clone)]
pub(crate) struct TailTable {
    pub(crate) table: SourceTable,
    pub(crate) live: SourceTable,
}

impl TailTable {
    pub(crate) fn new(
        name: &str,
        table: Arc<dyn TableSource>,
        live: Arc<dyn TableSource>,
        views: bool,
    ) -> Self {
        TailTable {
            table: SourceTable::new(name, table, views),
            live: SourceTable::new(&format!("{name}#live"), live, views),
        }
    }
}

#[async_trait]
impl TableProvider for TailTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let a = self.table.supports_filters_pushdown(filters)?;
        let b = self.live.supports_filters_pushdown(filters)?;
        Ok(a.into_iter()
            .zip(b)
            .map(|(a, b)| {
                use TableProviderFilterPushDown as P;
                match (a, b) {
                    (P::Exact, P::Exact) => P::Exact,
                    (P::Unsupported, P::Unsupported) => P::Unsupported,
                    _ => P::Inexact,
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let table = self.table.plan(state, projection, filters, limit).await?;
        let live = self.live.plan(state, projection, filters, limit).await?;
        UnionExec::try_new(vec![table, live])
    }
}
