//! `lakehouse-bench e2e`: sustained events/s through stream -> table -> views -> cache,
//! and how fresh each stage is.
//!
//! Workload: the retail events of the `retail_lakehouse` example, from the same
//! generator (`lakehouse_examples::workload`: 32-byte records; 100 K items with Zipf(1.0)
//! popularity, 8 categories x 4 regions, 100 K users who each prefer a category) put by
//! one producer thread, as fast as the pipeline takes them, on a 4-shard in-memory
//! stream keyed by user. Consumers, all running at once:
//!
//! * a `TableDelivery` into a local Delta table partitioned by day, category and region
//!   (zstd 1), committing each shard every `FLUSH` (exactly once by transaction id);
//!   after each commit two materialized views (sales per category / region / hour,
//!   events per type) are refreshed incrementally and the sales pushed into a cache;
//! * a `flow` trigger that keeps trending items and top sellers per category in
//!   `lakehouse-cache`.
//!
//! The pipeline runs twice: on the in-process stream (`e2e.*`), then with its events in
//! NATS JetStream (`e2e.nats_*`; the server as in `stream-nats`, skipped without one),
//! where the producer's puts and every consumer's reads go through the server.
//!
//! `e2e.events_per_s` is the event count divided by the time from the first put until
//! every event is committed, in the views and in the cache. Freshness is measured on
//! every 16th event from its creation (just before its put): to the cache, to the
//! views (commit plus refresh) and to the table (bounded by the flush interval).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::Int64Array;
use arrow::datatypes::DataType;
use lakehouse_core::{EventLog, PutRecord};
use lakehouse_examples::hot::Hot;
use lakehouse_examples::workload::{Catalog, EventDecoder, Generator, VIEWS, now_micros, schema};
use lakehouse_query::{QueryEngine, RefreshKind};
use lakehouse_storage::{Compression, Location, PartitionField, Table, TableOptions};
use lakehouse_stream::{FlushPolicy, Stream, TableDelivery};

use crate::report::{BenchResult, Latencies, Report};

const ITEMS: u32 = 100_000;
const USERS: u32 = 100_000;
const SHARDS: u32 = 4;
const FLUSH: Duration = Duration::from_millis(250);
const SAMPLE: u64 = 16;

/// Freshness samples (ms) shared between tasks.
#[derive(Default)]
struct Samples(Mutex<Latencies>);

impl Samples {
    fn record(&self, now: i64, times: &[i64]) {
        let mut l = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for t in times {
            l.record(Duration::from_micros((now - t).max(0) as u64));
        }
    }

    fn p(&self, p: f64) -> f64 {
        let mut l = self.0.lock().unwrap_or_else(|p| p.into_inner());
        l.percentile(p).as_secs_f64() * 1e3
    }
}

/// Puts one batch, returning how many records were acknowledged.
type Put = Box<dyn Fn(Vec<PutRecord>) -> usize + Send>;

pub(crate) fn run(report: &mut Report) -> BenchResult {
    let events: u64 = report.scale(4_000_000, 1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let stream = Stream::builder("e2e")
        .shards(SHARDS)
        .max_shard_bytes(1 << 30)
        .build()?;
    let producer = stream.clone();
    let put: Put = Box::new(move |batch| {
        producer
            .put_records(batch)
            .iter()
            .filter(|r| r.is_ok())
            .count()
    });
    rt.block_on(pipeline(report, events, stream, put, "e2e."))?;
    // The same pipeline with its events in NATS JetStream.
    let Some((url, _server)) = crate::stream_nats::server(report)? else {
        return Ok(());
    };
    rt.block_on(async {
        let log = lakehouse_stream::NatsLog::builder(&url, format!("e2e-{}", std::process::id()))
            .shards(SHARDS)
            .max_shard_bytes(None)
            .open()
            .await?;
        let producer = log.clone();
        let handle = tokio::runtime::Handle::current();
        let put: Put = Box::new(move |batch| {
            handle
                .block_on(lakehouse_core::EventLog::put_batch(&producer, batch))
                .map_or(0, |results| results.iter().filter(|r| r.is_ok()).count())
        });
        let result = pipeline(report, events, log.clone(), put, "e2e.nats_").await;
        log.delete().await?;
        result
    })
}

async fn pipeline<L: EventLog + Clone + 'static>(
    report: &mut Report,
    events: u64,
    stream: L,
    put: Put,
    prefix: &str,
) -> BenchResult {
    let dir = tempfile::tempdir()?;
    let table = Table::create(
        Location::local(dir.path())?,
        schema(),
        TableOptions::new()
            .partition_by([
                PartitionField::day("event_time"),
                PartitionField::identity("category"),
                PartitionField::identity("region"),
            ])
            .compression(Compression::Zstd(1)),
    )
    .await?;
    let engine = QueryEngine::new();
    engine.register_table("events", Arc::new(table.clone()))?;
    for (name, sql) in VIEWS {
        engine.create_materialized_view(name, sql).await?;
    }
    let hot = Arc::new(Hot::new(SAMPLE)?);
    let cache_trigger = hot.start_feeding(stream.clone(), "e2e-cache")?;

    let decoder = Arc::new(EventDecoder::new(SAMPLE));
    let delivery = TableDelivery::new("e2e-sink", stream.clone(), table.clone(), decoder.clone())
        .with_policy(FlushPolicy {
            max_records: 1_000_000,
            max_bytes: 64 << 20,
            max_age: FLUSH,
        });
    let acked = Arc::new(AtomicU64::new(0));
    let committed = Arc::new(AtomicU64::new(0));
    let (table_fresh, view_fresh) = (Arc::new(Samples::default()), Arc::new(Samples::default()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();

    // One producer thread, as fast as the pipeline drains (at most 2 M events ahead).
    let producer = {
        let (acked, committed, hot) = (acked.clone(), committed.clone(), hot.clone());
        std::thread::spawn(move || {
            let mut generator = Generator::new(Arc::new(Catalog::new(ITEMS, USERS)), 9);
            let mut id = 0u64;
            while id < events {
                let behind = acked.load(Ordering::Relaxed).saturating_sub(
                    committed
                        .load(Ordering::Relaxed)
                        .min(hot.applied.load(Ordering::Relaxed)),
                );
                if behind > 2_000_000 {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let now = now_micros();
                let n = (events - id).min(500);
                let batch: Vec<PutRecord> = (0..n)
                    .map(|_| generator.next_event(now).put_record())
                    .collect();
                let ok = put(batch);
                acked.fetch_add(ok as u64, Ordering::SeqCst);
                id += n;
            }
        })
    };

    let mut refreshes = (0u64, 0u64);
    let mut commits = 0u64;
    loop {
        let finishing = done.load(Ordering::SeqCst);
        let r = delivery.poll(finishing).await?;
        if r.commits > 0 {
            commits += r.commits;
            let samples = decoder.take_samples();
            table_fresh.record(now_micros(), &samples);
            committed.fetch_add(r.rows_committed, Ordering::SeqCst);
            for (name, _) in VIEWS {
                let o = engine.refresh_materialized_view(name).await?;
                refreshes.0 += 1;
                refreshes.1 += u64::from(o.kind() == RefreshKind::Incremental);
            }
            hot.push_sales(engine.read_materialized_view("sales_by_hour")?.batches())?;
            view_fresh.record(now_micros(), &samples);
        }
        if !finishing && producer.is_finished() {
            done.store(true, Ordering::SeqCst);
        }
        if finishing && committed.load(Ordering::SeqCst) >= acked.load(Ordering::SeqCst) {
            break;
        }
        if r.records_read == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    producer.join().map_err(|_| "the producer panicked")?;
    let total = acked.load(Ordering::SeqCst);
    while hot.applied.load(Ordering::SeqCst) < total {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    cache_trigger.stop().await?;

    let rows = engine.sql("SELECT COUNT(*) FROM events").await?.concat()?;
    let rows = arrow::compute::cast(rows.column(0), &DataType::Int64)?;
    let rows = rows
        .as_any()
        .downcast_ref::<Int64Array>()
        .map_or(0, |a| a.value(0)) as u64;
    if rows != total || total != events {
        return Err(
            format!("{events} events put, {total} acknowledged, {rows} rows in the table").into(),
        );
    }
    let stats = lakehouse_core::TableSource::statistics(&table, None).await?;
    report.note(&format!(
        "{prefix}*: {total} events, {SHARDS} shards, flush every {} ms: {commits} commits, {} files, {} MB; \
         {} view refreshes ({} incremental)",
        FLUSH.as_millis(),
        stats.files.len(),
        stats.size_bytes() / 1_000_000,
        refreshes.0,
        refreshes.1
    ));
    report.metric(
        &format!("{prefix}events_per_s"),
        total as f64 / secs,
        "events/s",
    );
    report.metric(
        &format!("{prefix}freshness_p99_ms"),
        hot.freshness.percentile(99.0).unwrap_or(0.0),
        "ms",
    );
    report.metric(
        &format!("{prefix}freshness_p50_ms"),
        hot.freshness.percentile(50.0).unwrap_or(0.0),
        "ms",
    );
    report.metric(
        &format!("{prefix}view_freshness_p99_ms"),
        view_fresh.p(99.0),
        "ms",
    );
    report.metric(
        &format!("{prefix}table_freshness_p99_ms"),
        table_fresh.p(99.0),
        "ms",
    );
    report.metric(
        &format!("{prefix}table_freshness_p50_ms"),
        table_fresh.p(50.0),
        "ms",
    );
    Ok(())
}
