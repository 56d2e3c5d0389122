//! Shared fixtures.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use lakehouse_core::{
    BatchStream, Changes, FilterSupport, MemoryTable, Predicate, ScanRequest, TableSink,
    TableSource, TableStatistics, Version,
};
use lakehouse_query::QueryResult;

pub(crate) fn sales_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("region", DataType::Utf8, false),
        Field::new("item", DataType::Int64, false),
        Field::new("qty", DataType::Int64, false),
        Field::new("price", DataType::Float64, true),
    ]))
}

/// `n` rows: region cycles over eu/us/apac, item = i % 10, qty = i % 7 + 1, price = i.
pub(crate) fn sales_batch(start: i64, n: i64) -> RecordBatch {
    let regions = ["eu", "us", "apac"];
    let ids: Vec<i64> = (start..start + n).collect();
    RecordBatch::try_new(
        sales_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| regions[(*i % 3) as usize]),
            )),
            Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i % 10))),
            Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i % 7 + 1))),
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|i| *i as f64),
            )),
        ],
    )
    .expect("the sales columns match the schema")
}

pub(crate) async fn sales_table(rows: i64) -> Arc<MemoryTable> {
    let table = Arc::new(MemoryTable::new("sales", sales_schema()));
    if rows > 0 {
        table
            .append(vec![sales_batch(0, rows)], None)
            .await
            .expect("append to a memory table");
    }
    table
}

/// Column `c` of the result as strings, row by row (nulls as "null").
pub(crate) fn column_strings(result: &QueryResult, c: usize) -> Vec<String> {
    let mut out = Vec::new();
    for batch in result.batches() {
        let col = batch.column(c);
        for row in 0..batch.num_rows() {
            out.push(
                arrow::util::display::array_value_to_string(col, row)
                    .expect("every arrow value prints"),
            );
        }
    }
    out
}

/// Column `c` as i64 values.
pub(crate) fn column_i64(result: &QueryResult, c: usize) -> Vec<i64> {
    let mut out = Vec::new();
    for batch in result.batches() {
        let col = arrow::compute::cast(batch.column(c), &DataType::Int64).expect("cast to i64");
        let col = col
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("an Int64 array after the cast");
        out.extend((0..col.len()).map(|i| col.value(i)));
    }
    out
}

/// A source that wraps another and reports `support` for every predicate; with
/// `Unsupported` or `Inexact` it ignores the predicate, so the engine must filter.
#[derive(Debug)]
pub(crate) struct Sloppy {
    pub(crate) inner: Arc<MemoryTable>,
    pub(crate) support: FilterSupport,
    pub(crate) scans: AtomicUsize,
    pub(crate) last_predicate: parking_lot::Mutex<Option<Predicate>>,
}

impl Sloppy {
    pub(crate) fn new(inner: Arc<MemoryTable>, support: FilterSupport) -> Self {
        Sloppy {
            inner,
            support,
            scans: AtomicUsize::new(0),
            last_predicate: parking_lot::Mutex::new(None),
        }
    }
}

#[async_trait]
impl TableSource for Sloppy {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
    async fn version(&self) -> lakehouse_core::Result<Version> {
        self.inner.version().await
    }
    fn filter_support(&self, _predicate: &Predicate) -> FilterSupport {
        self.support
    }
    async fn scan(&self, mut request: ScanRequest) -> lakehouse_core::Result<BatchStream> {
        self.scans.fetch_add(1, Ordering::SeqCst);
        *self.last_predicate.lock() = request.predicate.clone();
        if self.support != FilterSupport::Exact {
            request.predicate = None;
        }
        self.inner.scan(request).await
    }
    async fn statistics(
        &self,
        version: Option<Version>,
    ) -> lakehouse_core::Result<TableStatistics> {
        self.inner.statistics(version).await
    }
    async fn changes_since(&self, version: Version) -> lakehouse_core::Result<Changes> {
        self.inner.changes_since(version).await
    }
}

/// A source whose scans yield one batch every `delay`, forever, and that records when a
/// scan stream is dropped.
pub(crate) struct Endless {
    pub(crate) delay: Duration,
    pub(crate) open_streams: Arc<AtomicUsize>,
    pub(crate) started: Arc<AtomicBool>,
}

impl fmt::Debug for Endless {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Endless")
    }
}

struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl TableSource for Endless {
    fn schema(&self) -> SchemaRef {
        sales_schema()
    }
    async fn version(&self) -> lakehouse_core::Result<Version> {
        Ok(1)
    }
    async fn scan(&self, _request: ScanRequest) -> lakehouse_core::Result<BatchStream> {
        self.open_streams.fetch_add(1, Ordering::SeqCst);
        self.started.store(true, Ordering::SeqCst);
        let guard = OpenGuard(self.open_streams.clone());
        let delay = self.delay;
        let stream = futures::stream::unfold((0i64, guard), move |(i, guard)| async move {
            tokio::time::sleep(delay).await;
            Some((Ok(sales_batch(i * 100, 100)), (i + 1, guard)))
        });
        Ok(Box::pin(stream))
    }
    async fn statistics(
        &self,
        _version: Option<Version>,
    ) -> lakehouse_core::Result<TableStatistics> {
        Ok(TableStatistics::default())
    }
    async fn changes_since(&self, version: Version) -> lakehouse_core::Result<Changes> {
        Ok(Changes {
            from_version: version,
            to_version: 1,
            batches: Box::pin(futures::stream::empty()),
        })
    }
}
