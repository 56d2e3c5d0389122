//! `lakehouse-bench e2e`: sustained events/s through stream -> table -> views -> cache,
//! and how fresh each stage is.
//!
//! Workload: retail events (32-byte records: id, time, user, item, type, category,
//! region, quantity, price; 100 K items with Zipf(1.0) popularity, 8 categories x 4
//! regions) put by one producer thread, as fast as the pipeline takes them, on a
//! 4-shard in-memory stream keyed by user. Consumers, all running at once:
//!
//! * a `TableDelivery` into a local Delta table partitioned by day, category and region
//!   (zstd 1), committing each shard every `FLUSH` (exactly once by transaction id);
//!   after each commit two materialized views (sales per category / region / hour,
//!   events per type) are refreshed incrementally and the sales pushed into a cache;
//! * a `flow` trigger that keeps trending items and top sellers per category in
//!   `lakehouse-cache`.
//!
//! `e2e.events_per_s` is the event count divided by the time from the first put until
//! every event is committed, in the views and in the cache. Freshness is measured on
//! every 16th event from its creation (just before its put): to the cache, to the
//! views (commit plus refresh) and to the table (bounded by the flush interval).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::TimestampMicrosecondArray;
use arrow::array::{Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use lakehouse_cache::{Cache, GroupedTopK, TopK};
use lakehouse_core::{Error, ErrorKind, PutRecord, Record, SystemClock};
use lakehouse_flow::{BatchError, Trigger, TriggerBatch};
use lakehouse_query::{QueryEngine, RefreshKind};
use lakehouse_storage::{Compression, Location, PartitionField, Table, TableOptions};
use lakehouse_stream::{Decoder, FlushPolicy, Stream, TableDelivery};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::report::{BenchResult, Latencies, Report};

const ITEMS: usize = 100_000;
const USERS: u64 = 100_000;
const SHARDS: u32 = 4;
const FLUSH: Duration = Duration::from_millis(250);
const SAMPLE: u64 = 16;
const CATEGORIES: [&str; 8] = [
    "electronics",
    "books",
    "home",
    "toys",
    "fashion",
    "grocery",
    "sports",
    "beauty",
];
const REGIONS: [&str; 4] = ["na", "eu", "apac", "latam"];
const TYPES: [&str; 4] = ["click", "add_to_cart", "purchase", "price_change"];
const VIEWS: [(&str, &str); 2] = [
    (
        "sales_by_hour",
        "SELECT category, region, date_trunc('hour', event_time) AS hour, COUNT(*) AS orders, \
         SUM(price * quantity) AS revenue FROM events WHERE event_type = 'purchase' \
         GROUP BY category, region, date_trunc('hour', event_time)",
    ),
    (
        "events_by_type",
        "SELECT event_type, COUNT(*) AS events FROM events GROUP BY event_type",
    ),
];

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// One event: `(id, time, user, item, kind, quantity, price)`; category and region
/// follow from the item.
fn encode(id: u64, time: i64, user: u32, item: u32, kind: u8, qty: u8, price: f32) -> Vec<u8> {
    let mut b = Vec::with_capacity(32);
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&time.to_le_bytes());
    b.extend_from_slice(&user.to_le_bytes());
    b.extend_from_slice(&item.to_le_bytes());
    b.extend_from_slice(&[kind, (item % 8) as u8, ((item / 8) % 4) as u8, qty]);
    b.extend_from_slice(&price.to_le_bytes());
    b
}

struct Decoded {
    id: u64,
    time: i64,
    user: u32,
    item: u32,
    kind: u8,
    category: u8,
    region: u8,
    qty: u8,
    price: f32,
}

fn decode(d: &[u8]) -> Option<Decoded> {
    let b: &[u8; 32] = d.try_into().ok()?;
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
    let e = Decoded {
        id: u64_at(0),
        time: u64_at(8) as i64,
        user: u32_at(16),
        item: u32_at(20),
        kind: b[24],
        category: b[25],
        region: b[26],
        qty: b[27],
        price: f32::from_bits(u32_at(28)),
    };
    (e.kind < 4 && e.category < 8 && e.region < 4).then_some(e)
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Int64, false),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("user_id", DataType::Int64, false),
        Field::new("item_id", DataType::Int64, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("price", DataType::Float64, false),
        Field::new("quantity", DataType::Int32, false),
    ]))
}

/// Records into rows; keeps the times of sampled events for the freshness figures.
struct EventDecoder {
    schema: SchemaRef,
    samples: Mutex<Vec<i64>>,
}

impl Decoder for EventDecoder {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn decode(&self, records: &[Record]) -> lakehouse_core::Result<RecordBatch> {
        let n = records.len();
        let (mut ids, mut times, mut users, mut items) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut kinds, mut cats, mut regions, mut prices, mut qty) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let mut sampled = Vec::new();
        for r in records {
            let e = decode(&r.data).ok_or_else(|| {
                Error::new(ErrorKind::InvalidInput, "malformed event").with_shard(r.shard)
            })?;
            if e.id % SAMPLE == 0 {
                sampled.push(e.time);
            }
            ids.push(e.id as i64);
            times.push(e.time);
            users.push(i64::from(e.user));
            items.push(i64::from(e.item));
            kinds.push(TYPES[e.kind as usize]);
            cats.push(CATEGORIES[e.category as usize]);
            regions.push(REGIONS[e.region as usize]);
            prices.push(f64::from(e.price));
            qty.push(i32::from(e.qty));
        }
        let batch = RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
                Arc::new(Int64Array::from(users)),
                Arc::new(Int64Array::from(items)),
                Arc::new(StringArray::from(kinds)),
                Arc::new(StringArray::from(cats)),
                Arc::new(StringArray::from(regions)),
                Arc::new(Float64Array::from(prices)),
                Arc::new(Int32Array::from(qty)),
            ],
        )
        .map_err(|e| Error::new(ErrorKind::InvalidInput, "batch").with_source(e))?;
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(sampled);
        Ok(batch)
    }
}

/// Zipf(1.0) item ranks by inverting the cumulative distribution.
fn zipf_cdf(n: usize) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (1..=n)
        .map(|k| {
            acc += 1.0 / k as f64;
            acc
        })
        .collect();
    for c in &mut cdf {
        *c /= acc;
    }
    cdf
}

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

/// What the cache trigger keeps.
struct Hot {
    trending: TopK<u32>,
    sellers: GroupedTopK<u8, u32>,
    applied: AtomicU64,
    fresh: Samples,
}

pub(crate) fn run(report: &mut Report) -> BenchResult {
    let events: u64 = report.scale(4_000_000, 1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(pipeline(report, events))
}

async fn pipeline(report: &mut Report, events: u64) -> BenchResult {
    let dir = tempfile::tempdir()?;
    let stream = Stream::builder("e2e")
        .shards(SHARDS)
        .max_shard_bytes(1 << 30)
        .build()?;
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
    let sales: Cache<String, f64> = Cache::new(10_000)?;

    let hot = Arc::new(Hot {
        trending: TopK::trending(4096, 4, Duration::from_secs(60), Arc::new(SystemClock)),
        sellers: GroupedTopK::new(1024, None, Arc::new(SystemClock)),
        applied: AtomicU64::new(0),
        fresh: Samples::default(),
    });
    let h = hot.clone();
    let cache_trigger = Trigger::builder(stream.clone(), move |batch: TriggerBatch| {
        let mut sampled = Vec::new();
        for r in batch.records.iter() {
            let Some(e) = decode(&r.data) else { continue };
            match e.kind {
                0 => h.trending.record(e.item, 1.0),
                1 => h.trending.record(e.item, 3.0),
                2 => h.sellers.record(&e.category, e.item, f64::from(e.qty)),
                _ => {}
            }
            if e.id % SAMPLE == 0 {
                sampled.push(e.time);
            }
        }
        h.applied
            .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
        h.fresh.record(now_micros(), &sampled);
        futures::future::ready(Ok::<(), BatchError>(()))
    })
    .name("e2e-cache")
    .batch_size(10_000)
    .poll_interval(Duration::from_millis(1))
    .build()?
    .start()?;

    let decoder = Arc::new(EventDecoder {
        schema: schema(),
        samples: Mutex::new(Vec::new()),
    });
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
        let (stream, acked, committed, hot) = (
            stream.clone(),
            acked.clone(),
            committed.clone(),
            hot.clone(),
        );
        std::thread::spawn(move || {
            let cdf = zipf_cdf(ITEMS);
            let mut rng = StdRng::seed_from_u64(9);
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
                    .map(|k| {
                        let u: f64 = rng.random();
                        let rank = cdf.partition_point(|&c| c < u).min(ITEMS - 1) as u64;
                        let item = (rank.wrapping_mul(2_654_435_761) % ITEMS as u64) as u32;
                        let user = rng.random_range(0..USERS) as u32;
                        let kind = match rng.random_range(0..100u32) {
                            0..70 => 0,
                            70..90 => 1,
                            90..98 => 2,
                            _ => 3,
                        };
                        let price = 2.0 + (item % 500) as f32;
                        let data = encode(id + k, now, user, item, kind, 1 + (k % 3) as u8, price);
                        PutRecord::new(format!("user-{user}"), data)
                    })
                    .collect();
                let ok = stream
                    .put_records(batch)
                    .iter()
                    .filter(|r| r.is_ok())
                    .count();
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
            let samples =
                std::mem::take(&mut *decoder.samples.lock().unwrap_or_else(|p| p.into_inner()));
            table_fresh.record(now_micros(), &samples);
            committed.fetch_add(r.rows_committed, Ordering::SeqCst);
            for (name, _) in VIEWS {
                let o = engine.refresh_materialized_view(name).await?;
                refreshes.0 += 1;
                refreshes.1 += u64::from(o.kind() == RefreshKind::Incremental);
            }
            let view = engine.read_materialized_view("sales_by_hour")?;
            for b in view.batches() {
                use arrow::array::AsArray;
                let (Some(c), Some(g), Some(v)) = (
                    b.column_by_name("category"),
                    b.column_by_name("region"),
                    b.column_by_name("revenue"),
                ) else {
                    return Err("sales_by_hour lacks a column".into());
                };
                let (c, g) = (c.as_string::<i32>(), g.as_string::<i32>());
                let v = v.as_primitive::<arrow::datatypes::Float64Type>();
                for i in 0..b.num_rows() {
                    sales.insert(format!("{}/{}", c.value(i), g.value(i)), v.value(i))?;
                }
            }
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
        "e2e: {total} events, {SHARDS} shards, flush every {} ms: {commits} commits, {} files, {} MB; \
         {} view refreshes ({} incremental)",
        FLUSH.as_millis(),
        stats.files.len(),
        stats.size_bytes() / 1_000_000,
        refreshes.0,
        refreshes.1
    ));
    report.metric("e2e.events_per_s", total as f64 / secs, "events/s");
    report.metric("e2e.freshness_p99_ms", hot.fresh.p(99.0), "ms");
    report.metric("e2e.freshness_p50_ms", hot.fresh.p(50.0), "ms");
    report.metric("e2e.view_freshness_p99_ms", view_fresh.p(99.0), "ms");
    report.metric("e2e.table_freshness_p99_ms", table_fresh.p(99.0), "ms");
    report.metric("e2e.table_freshness_p50_ms", table_fresh.p(50.0), "ms");
    Ok(())
}
