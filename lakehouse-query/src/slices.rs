//! MPP-style slices: a table's rows assigned to slices by a distribution style, kept
//! in memory, scanned slice by slice on rayon, with the partitioning declared to the
//! planner so that co-located joins and aggregations need no repartition.

use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::Statistics;
use datafusion::common::stats::Precision;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::metrics::Time;
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, Partitioning};
use futures::{StreamExt, TryStreamExt};
use lakehouse_core::{
    Error, ErrorKind, Predicate, Result, ScanRequest, TableSource, Version, on_rayon,
};
use parking_lot::RwLock;

use crate::error::{DfResultExt, to_df};
use crate::pushdown::{has_not, to_predicate};
use crate::scan::{PartitionProducer, ScanExec, align};

/// How a distributed table's rows are assigned to slices (Redshift's `DISTSTYLE`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Distribution {
    /// By the hash of one column: rows with equal keys share a slice, so joins and
    /// aggregations on the key run slice-local.
    Key(String),
    /// Evenly: each appended batch is split across the slices.
    Even,
    /// Replicated: every slice sees the whole table (for small dimension tables, which
    /// the planner broadcasts to joins).
    All,
}

impl Distribution {
    /// `KEY` distribution on `column`.
    pub fn key(column: impl Into<String>) -> Self {
        Distribution::Key(column.into())
    }
}

#[derive(Debug, Default)]
struct SliceData {
    version: Option<Version>,
    slices: Vec<Vec<RecordBatch>>,
}

/// A table source held in slices.
pub(crate) struct SlicedTable {
    name: Arc<str>,
    source: Arc<dyn TableSource>,
    distribution: Distribution,
    key_index: Option<usize>,
    slices: usize,
    sync: tokio::sync::Mutex<()>,
    data: RwLock<Arc<SliceData>>,
    /// Test-only faults: panic while distributing rows, or while scanning a slice.
    #[cfg(test)]
    faults: Faults,
}

#[cfg(test)]
#[derive(Debug, Default)]
struct Faults {
    distribute: std::sync::atomic::AtomicBool,
    scan: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for SlicedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlicedTable")
            .field("name", &self.name)
            .field("distribution", &self.distribution)
            .field("slices", &self.slices)
            .finish_non_exhaustive()
    }
}

impl SlicedTable {
    pub(crate) fn new(
        name: &str,
        source: Arc<dyn TableSource>,
        distribution: Distribution,
        slices: usize,
    ) -> Result<Self> {
        let schema = source.schema();
        let key_index = match &distribution {
            Distribution::Key(column) => Some(schema.index_of(column).map_err(|_| {
                Error::new(
                    ErrorKind::ColumnNotFound,
                    format!("distribution key {column:?} is not a column of the table"),
                )
                .with_table(name)
                .with_column(column)
            })?),
            _ => None,
        };
        let slices = match distribution {
            Distribution::All => 1,
            _ => slices.max(1),
        };
        Ok(SlicedTable {
            name: Arc::from(name),
            source,
            distribution,
            key_index,
            slices,
            sync: tokio::sync::Mutex::new(()),
            data: RwLock::new(Arc::new(SliceData::default())),
            #[cfg(test)]
            faults: Faults::default(),
        })
    }

    pub(crate) fn source(&self) -> &Arc<dyn TableSource> {
        &self.source
    }

    pub(crate) async fn source_version(&self) -> Result<Version> {
        self.source
            .version()
            .await
            .map_err(|e| e.with_table(&*self.name))
    }

    /// Brings the slices up to the source's latest version.
    async fn synced(&self) -> Result<Arc<SliceData>> {
        let latest = self.source_version().await?;
        {
            let data = self.data.read();
            if data.version == Some(latest) {
                return Ok(data.clone());
            }
        }
        let _guard = self.sync.lock().await;
        let current = self.data.read().clone();
        if current.version == Some(latest) {
            return Ok(current);
        }
        let table = |e: Error| e.with_table(&*self.name);
        let (base, batches, version) = match current.version {
            Some(from) => match self.source.changes_since(from).await {
                Ok(changes) => {
                    let batches: Vec<RecordBatch> =
                        changes.batches.try_collect().await.map_err(table)?;
                    (Some(current.clone()), batches, changes.to_version)
                }
                Err(e) if e.kind() == ErrorKind::NonAppendChange => {
                    (None, self.read_all(latest).await?, latest)
                }
                Err(e) => return Err(table(e)),
            },
            None => (None, self.read_all(latest).await?, latest),
        };
        let slices = self.slices;
        let key = self
            .key_index
            .map(|i| (self.source.schema().field(i).name().clone(), i));
        #[cfg(test)]
        let panic = self
            .faults
            .distribute
            .load(std::sync::atomic::Ordering::SeqCst);
        let fresh = on_rayon(move || {
            #[cfg(test)]
            if panic {
                use rayon::prelude::*;
                (0..4).into_par_iter().for_each(|i| {
                    assert!(i != 3, "injected fault while distributing rows");
                });
            }
            distribute(batches, key, slices)
        })
        .await?;
        let mut merged = match base {
            Some(b) => b.slices.clone(),
            None => vec![Vec::new(); slices],
        };
        for (slot, new) in merged.iter_mut().zip(fresh) {
            slot.extend(new);
        }
        let data = Arc::new(SliceData {
            version: Some(version),
            slices: merged,
        });
        *self.data.write() = data.clone();
        Ok(data)
    }

    async fn read_all(&self, version: Version) -> Result<Vec<RecordBatch>> {
        let stream = self
            .source
            .scan(ScanRequest::new().at_version(version))
            .await
            .map_err(|e| e.with_table(&*self.name))?;
        stream
            .try_collect()
            .await
            .map_err(|e| e.with_table(&*self.name))
    }
}

/// Assigns rows to slices: by DataFusion's own repartitioning hash for a key (so a
/// slice is exactly the partition a hash repartition would produce), or evenly.
fn distribute(
    batches: Vec<RecordBatch>,
    key: Option<(String, usize)>,
    slices: usize,
) -> Result<Vec<Vec<RecordBatch>>> {
    use rayon::prelude::*;
    let parts: Vec<Vec<(usize, RecordBatch)>> = batches
        .into_par_iter()
        .filter(|b| b.num_rows() > 0)
        .map(|batch| -> Result<Vec<(usize, RecordBatch)>> {
            match &key {
                Some((name, index)) => {
                    let mut partitioner = BatchPartitioner::new_hash_partitioner(
                        vec![Arc::new(Column::new(name, *index))],
                        slices,
                        Time::new(),
                    )
                    .map_df()?;
                    let out = partitioner
                        .partition_iter(batch)
                        .map_df()?
                        .collect::<DfResult<Vec<_>>>()
                        .map_df()?;
                    Ok(out.into_iter().filter(|(_, b)| b.num_rows() > 0).collect())
                }
                None => {
                    let rows = batch.num_rows();
                    let per = rows.div_ceil(slices);
                    Ok((0..slices)
                        .filter_map(|i| {
                            let start = i * per;
                            (start < rows).then(|| (i, batch.slice(start, per.min(rows - start))))
                        })
                        .collect())
                }
            }
        })
        .collect::<Result<_>>()?;
    let mut out = vec![Vec::new(); slices];
    for (i, b) in parts.into_iter().flatten() {
        out[i].push(b);
    }
    Ok(out)
}

/// Scans one slice on rayon: filter, then projection.
#[derive(Debug)]
struct SliceScan {
    data: Arc<SliceData>,
    projection: Option<Vec<usize>>,
    predicate: Option<Predicate>,
    #[cfg(test)]
    panic: bool,
}

impl PartitionProducer for SliceScan {
    fn execute(&self, partition: usize, schema: SchemaRef) -> SendableRecordBatchStream {
        let batches = self.data.slices.get(partition).cloned().unwrap_or_default();
        let projection = self.projection.clone();
        let predicate = self.predicate.clone();
        let out_schema = schema.clone();
        #[cfg(test)]
        let panic = self.panic;
        let work = move || -> Result<Vec<RecordBatch>> {
            #[cfg(test)]
            assert!(!panic, "injected fault while scanning slice {partition}");
            let mut out = Vec::with_capacity(batches.len());
            for batch in batches {
                let batch = match &predicate {
                    Some(p) => p.filter(&batch)?,
                    None => batch,
                };
                if batch.num_rows() == 0 {
                    continue;
                }
                let batch = match &projection {
                    Some(p) => batch
                        .project(p)
                        .map_err(|e| Error::internal(format!("projecting a slice: {e}")))?,
                    None => batch,
                };
                out.push(batch);
            }
            Ok(out)
        };
        let stream = futures::stream::once(async move {
            match on_rayon(work).await {
                Ok(batches) => Ok(futures::stream::iter(batches.into_iter().map(Ok))),
                Err(e) => Err(to_df(e)),
            }
        })
        .try_flatten()
        .map(move |r: DfResult<RecordBatch>| r.and_then(|b| align(b, &out_schema)));
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

fn exact_support(filter: &Expr, schema: &arrow::datatypes::Schema) -> TableProviderFilterPushDown {
    match to_predicate(filter, schema) {
        Some(p) if !has_not(&p) => TableProviderFilterPushDown::Exact,
        Some(_) => TableProviderFilterPushDown::Inexact,
        None => TableProviderFilterPushDown::Unsupported,
    }
}

#[async_trait]
impl TableProvider for SlicedTable {
    fn schema(&self) -> SchemaRef {
        self.source.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let schema = self.source.schema();
        Ok(filters.iter().map(|f| exact_support(f, &schema)).collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let data = self.synced().await.map_err(to_df)?;
        let full = self.source.schema();
        let schema = match projection {
            Some(p) => Arc::new(full.project(p)?),
            None => full.clone(),
        };
        let predicate = Predicate::all(filters.iter().filter_map(|f| to_predicate(f, &full)));
        let partitioning = match (&self.distribution, self.key_index) {
            (Distribution::Key(name), Some(index)) => {
                let projected = match projection {
                    Some(p) => p.iter().position(|&i| i == index),
                    None => Some(index),
                };
                match projected {
                    Some(at) => {
                        Partitioning::Hash(vec![Arc::new(Column::new(name, at))], self.slices)
                    }
                    None => Partitioning::UnknownPartitioning(self.slices),
                }
            }
            _ => Partitioning::UnknownPartitioning(self.slices),
        };
        let rows: usize = data.slices.iter().flatten().map(|b| b.num_rows()).sum();
        let bytes: usize = data
            .slices
            .iter()
            .flatten()
            .map(|b| b.get_array_memory_size())
            .sum();
        let mut statistics = Statistics::new_unknown(&schema);
        statistics.num_rows = if predicate.is_some() {
            Precision::Inexact(rows)
        } else {
            Precision::Exact(rows)
        };
        statistics.total_byte_size = Precision::Inexact(bytes);
        let label = format!(
            "table={}, distribution={:?}, slices={}, version={}, predicate={}",
            self.name,
            self.distribution,
            self.slices,
            data.version.unwrap_or(0),
            predicate
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "none".into())
        );
        if partitioning.partition_count() == 0 {
            return Err(DataFusionError::Internal(
                "a sliced table has no slices".into(),
            ));
        }
        Ok(Arc::new(ScanExec::new(
            label,
            schema,
            partitioning,
            statistics,
            Arc::new(SliceScan {
                data,
                projection: projection.cloned(),
                predicate,
                #[cfg(test)]
                panic: self.faults.scan.load(std::sync::atomic::Ordering::SeqCst),
            }),
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use lakehouse_core::{MemoryTable, TableSink};

    use super::*;
    use crate::QueryEngine;
    use crate::registry::Registered;

    fn batch(start: i64, n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("s", DataType::Utf8, false),
        ]));
        let ids: Vec<i64> = (start..start + n).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| format!("s{}", i % 3)),
                )),
            ],
        )
        .expect("columns match the schema")
    }

    fn sliced(engine: &QueryEngine, name: &str) -> Arc<SlicedTable> {
        match engine.inner.tables.read().get(name).map(|r| &r.table) {
            Some(Registered::Sliced(t)) => t.clone(),
            other => panic!("{name} is not a distributed table: {other:?}"),
        }
    }

    /// A panic on the rayon pool, in a slice scan or in a parallel distribution, fails
    /// that query with a typed error; the process and the engine go on.
    #[tokio::test]
    async fn a_panic_on_a_slice_fails_the_query_and_the_engine_goes_on() {
        let engine = QueryEngine::builder().slices(4).build();
        let source = Arc::new(MemoryTable::new("t", batch(0, 1).schema()));
        source
            .append(vec![batch(0, 100)], None)
            .await
            .expect("append");
        engine
            .register_distributed("t", source.clone(), Distribution::key("k"))
            .expect("register");
        let table = sliced(&engine, "t");
        let count = "SELECT COUNT(*) FROM t WHERE k >= 0";
        let rows = |r: &crate::QueryResult| -> i64 {
            let col = r.batches()[0].column(0);
            let col = arrow::compute::cast(col, &DataType::Int64).expect("a count");
            col.as_any()
                .downcast_ref::<Int64Array>()
                .expect("an Int64 array")
                .value(0)
        };

        table.faults.scan.store(true, Ordering::SeqCst);
        let e = engine
            .query(count, crate::QueryOptions::new().bypass_cache())
            .await
            .expect_err("a slice panicked");
        assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
        assert!(e.message().contains("injected fault while scanning"), "{e}");
        table.faults.scan.store(false, Ordering::SeqCst);
        let r = engine.sql(count).await.expect("the engine goes on");
        assert_eq!(rows(&r), 100);

        table.faults.distribute.store(true, Ordering::SeqCst);
        source
            .append(vec![batch(100, 50)], None)
            .await
            .expect("append");
        let e = engine
            .sql(count)
            .await
            .expect_err("distributing the new rows panicked");
        assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
        assert!(
            e.message().contains("injected fault while distributing"),
            "{e}"
        );
        table.faults.distribute.store(false, Ordering::SeqCst);
        let r = engine.sql(count).await.expect("the engine goes on");
        assert_eq!(rows(&r), 150);
    }
}
