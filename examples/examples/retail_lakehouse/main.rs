//! The retail lakehouse, end to end, in one process with no servers.
//!
//! ```text
//! cargo run --release -p lakehouse-examples --example retail_lakehouse -- \
//!     [--duration SECS] [--rate EVENTS_PER_S] [--shards N] [--data-dir DIR] \
//!     [--items N] [--users N] [--flush-ms MS]
//! # the same pipeline with the table on S3 or an S3-compatible server:
//! cargo run --release -p lakehouse-examples --features s3 --example retail_lakehouse -- \
//!     --s3-endpoint http://127.0.0.1:9000 --s3-bucket lakehouse   # credentials: AWS_* env
//! # the same pipeline with the stream on NATS JetStream (`nats-server -js` running):
//! cargo run --release -p lakehouse-examples --features nats --example retail_lakehouse -- \
//!     --stream nats --nats-url nats://127.0.0.1:4222
//! ```
//!
//! 1. A generator makes retail events (clicks, add-to-cart, purchases, price changes
//!    over 100,000 items with Zipf popularity; users prefer a category) at `--rate`
//!    and puts them on a sharded stream, keyed by user. By default the stream is durable
//!    in the data directory without fsync (`--stream durable-nosync`): each shard keeps
//!    its newest 32 MiB in memory and serves older records from its segment files, which
//!    keep 5 minutes, at most 2 GiB per shard, so memory stays bounded whatever the rate.
//!    `--stream durable` also fsyncs before a put returns; `--stream memory` keeps the
//!    last 2 minutes in memory only (at most 1 GiB per shard); `--stream nats` puts the
//!    events on NATS JetStream, one JetStream stream per shard (feature `nats`).
//! 2. A table delivery micro-batches every shard into a Delta table partitioned by
//!    day, category and region, exactly once: each commit carries the shard's last
//!    sequence number as its transaction id.
//! 3. After each commit, materialized views (sales per category / region / hour, events
//!    per type) are refreshed incrementally and the sales figures pushed into a cache.
//! 4. A trigger on the stream keeps trending items, top sellers per category and the
//!    latest prices in the cache; another folds users' new carts and purchases into
//!    the serving ALS model.
//! 5. A workflow retrains ALS from the table, evaluates it against popularity,
//!    publishes it and warms the cache of recommendations: once while events flow and
//!    once at the end.
//! 6. A maintenance workflow compacts the table every few seconds (size-tiered, so
//!    files per partition stay bounded) and vacuums the files compaction replaced.
//!
//! It ends with a report whose lines are stable for scripts (`events ingested N`,
//! `rows in table N`, `freshness to cache p99 X ms`, `consistency ok`), and exits with
//! an error when a consistency check fails.

mod args;
mod heap;
mod maintenance;
mod model;
mod stages;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use lakehouse_core::{EventLog, PutRecord, TableSource};
use lakehouse_flow::{BatchError, ExecutionStatus, Trigger, TriggerBatch, Workflow, json};
use lakehouse_ml::Event as MlEvent;
use lakehouse_query::{QueryEngine, RefreshKind};
use lakehouse_storage::{Compression, Location, PartitionField, Table, TableOptions};
use lakehouse_stream::{Durability, FlushPolicy, Stream, TableDelivery};

use lakehouse_examples::freshness::Freshness;
use lakehouse_examples::hot::Hot;
use lakehouse_examples::workload::{
    self, CART, CATEGORIES, Catalog, Event, EventDecoder, Generator, PURCHASE, VIEWS, now_micros,
};

use crate::args::{Args, StreamMode};
use crate::maintenance::Maintenance;
use crate::model::Models;
use crate::stages::{Behind, STALLED, catch_up, peak_rss_mb, rss_mb, wait_flag};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Counts live heap bytes for the progress line and the report (see [`heap`]).
#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

/// Every `SAMPLE`-th event is timed through the pipeline.
const SAMPLE: u64 = 16;

/// Where the table goes, the stream's directory, and a directory to remove at the end
/// (the default temp dir).
fn location(args: &Args) -> Result<(Location, PathBuf, Option<PathBuf>), BoxError> {
    let (dir, temp) = match &args.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = std::env::temp_dir().join(format!(
                "retail-lakehouse-{}-{}",
                std::process::id(),
                now_micros()
            ));
            (dir.clone(), Some(dir))
        }
    };
    std::fs::create_dir_all(&dir)?;
    let table = if args.s3_endpoint.is_some() || args.s3_bucket.is_some() {
        s3_location(args)?
    } else {
        Location::local(dir.join("events"))?
    };
    Ok((table, dir.join("stream"), temp))
}

#[cfg(feature = "s3")]
fn s3_location(args: &Args) -> Result<Location, BoxError> {
    let bucket = args
        .s3_bucket
        .clone()
        .ok_or("--s3-endpoint needs --s3-bucket")?;
    let config = lakehouse_storage::S3Config {
        bucket,
        prefix: format!("retail-lakehouse/{}", now_micros()),
        region: Some(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into())),
        endpoint: args.s3_endpoint.clone(),
        ..Default::default()
    };
    Ok(Location::s3(config)?)
}

#[cfg(not(feature = "s3"))]
fn s3_location(_: &Args) -> Result<Location, BoxError> {
    Err("this build has no S3 support: run with `--features s3`".into())
}

/// Counters the progress line and the report read.
#[derive(Default)]
struct Progress {
    acked: AtomicU64,
    rejected: AtomicU64,
    committed: AtomicU64,
    commits: AtomicU64,
    version: AtomicU64,
    refreshes: AtomicU64,
    incremental: AtomicU64,
    /// Records the folding thread has handled (their carts and purchases folded in).
    fold_seen: AtomicU64,
    /// The largest live heap the progress line saw, in megabytes.
    heap_peak_mb: AtomicU64,
    producing_done: AtomicBool,
}

impl Progress {
    fn behind(&self, hot: &Hot) -> Behind {
        let acked = self.acked.load(Ordering::SeqCst);
        Behind {
            table: acked.saturating_sub(self.committed.load(Ordering::SeqCst)),
            cache: acked.saturating_sub(hot.applied.load(Ordering::SeqCst)),
            fold_in: acked.saturating_sub(self.fold_seen.load(Ordering::SeqCst)),
        }
    }
}

fn main() -> Result<(), BoxError> {
    // Before the runtime's threads exist, so that none of them has an arena of its own.
    let arenas_capped = heap::limit_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(example(arenas_capped))
}

async fn example(arenas_capped: bool) -> Result<(), BoxError> {
    let args = Args::parse()?;
    let (location, stream_dir, temp_dir) = location(&args)?;
    let uri = location.uri().to_owned();
    println!(
        "retail_lakehouse: {} events/s for {:.1} s, {} shards, {} items, {} users, flush every {} ms",
        args.rate,
        args.duration.as_secs_f64(),
        args.shards,
        args.items,
        args.users,
        args.flush.as_millis()
    );
    println!("table at {uri}");
    if arenas_capped {
        println!("malloc arenas capped at {} (heap.rs)", heap::ARENA_MAX);
    }

    let result = run(&args, location, stream_dir).await;
    delete_nats_log().await;
    if let Some(dir) = temp_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

/// The stream on NATS JetStream: a log named after this run, so runs never share
/// records (`delete_nats_log` removes it at the end).
#[cfg(feature = "nats")]
async fn nats_log(args: &Args) -> Result<Arc<dyn EventLog>, BoxError> {
    let name = format!("retail-events-{}", std::process::id());
    let log = lakehouse_stream::NatsLog::builder(&args.nats_url, name)
        .shards(args.shards)
        .retention(Some(Duration::from_secs(300)))
        .max_shard_bytes(Some(2 << 30))
        .open()
        .await
        .map_err(|e| format!("--stream nats at {}: {e}", args.nats_url))?;
    *NATS_LOG.lock().unwrap_or_else(|p| p.into_inner()) = Some(log.clone());
    Ok(Arc::new(log))
}

#[cfg(feature = "nats")]
static NATS_LOG: std::sync::Mutex<Option<lakehouse_stream::NatsLog>> = std::sync::Mutex::new(None);

#[cfg(not(feature = "nats"))]
async fn nats_log(_: &Args) -> Result<Arc<dyn EventLog>, BoxError> {
    Err("--stream nats needs the `nats` feature (cargo run --features nats ...)".into())
}

/// Removes the run's JetStream streams and buckets, if it made any.
async fn delete_nats_log() {
    #[cfg(feature = "nats")]
    {
        let log = NATS_LOG.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(log) = log
            && let Err(e) = log.delete().await
        {
            eprintln!("removing the run's JetStream streams failed: {e}");
        }
    }
}

async fn run(args: &Args, location: Location, stream_dir: PathBuf) -> Result<(), BoxError> {
    let catalog = Arc::new(Catalog::new(args.items, args.users));
    if stream_dir.exists() {
        return Err(format!("{} exists (use an empty --data-dir)", stream_dir.display()).into());
    }
    // Durable (the default, without fsync), memory per shard is a 32 MiB window plus the
    // unwritten frames (up to 1 MiB) and the segment index, and the disk keeps five
    // minutes, at most 2 GiB per shard. In memory, the stream keeps the last 2 minutes of
    // events, at most 1 GiB of memory per shard (counted as records really cost: about
    // 100 bytes each here); the table is the durable copy. A consumer behind retention
    // loses its position and the run fails naming it.
    let builder = Stream::builder("retail-events").shards(args.shards);
    let own_stream: Option<Stream> = match args.stream {
        StreamMode::Memory => Some(
            builder
                .retention(Some(Duration::from_secs(120)))
                .max_shard_bytes(1 << 30)
                .build()?,
        ),
        StreamMode::Durable | StreamMode::DurableNoSync => Some(
            builder
                .retention(Some(Duration::from_secs(300)))
                .durable(&stream_dir)
                .durability(if args.stream == StreamMode::Durable {
                    Durability::PerBatch
                } else {
                    Durability::None
                })
                .memory_window_bytes(32 << 20)
                .max_shard_bytes(2 << 30)
                .build()?,
        ),
        StreamMode::Nats => None,
    };
    let stream: Arc<dyn EventLog> = match &own_stream {
        Some(s) => Arc::new(s.clone()),
        None => nats_log(args).await?,
    };
    let table = Table::create(
        location,
        workload::schema(),
        TableOptions::new()
            .name("events")
            .partition_by([
                PartitionField::day("event_time"),
                PartitionField::identity("category"),
                PartitionField::identity("region"),
            ])
            .compression(Compression::Zstd(1)),
    )
    .await
    .map_err(|e| format!("{e} (use an empty --data-dir)"))?;

    // SQL over the table, and the materialized views.
    let engine = QueryEngine::new();
    engine.register_table("events", Arc::new(table.clone()))?;
    for (name, sql) in VIEWS {
        engine.create_materialized_view(name, sql).await?;
    }

    let hot = Arc::new(Hot::new(SAMPLE)?);
    let models = Models::new()?;
    let progress = Arc::new(Progress::default());
    let table_fresh = Arc::new(Freshness::default());
    let view_fresh = Arc::new(Freshness::default());
    let rec_fresh = Arc::new(Freshness::default());

    // The cache trigger: trending, top sellers and prices, straight from the stream. It
    // runs on a runtime of its own, one thread, so that its polls do not queue behind
    // query and commit work on the shared workers (freshness to the cache p99 was
    // 39-150 ms at 200 K events/s; one run since gave 63 ms on a loaded machine, not
    // conclusive: see BENCHMARKS.md, soak).
    let cache_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cache_trigger = {
        let _on = cache_runtime.enter();
        hot.start_feeding(stream.clone(), "cache-feeder")?
    };
    let (cache_done, cache_until) = tokio::sync::oneshot::channel::<()>();
    let cache_thread = std::thread::Builder::new()
        .name("cache-feeder".into())
        .spawn(move || {
            let _ = cache_runtime.block_on(cache_until);
        })?;

    // The fold-in trigger: carts and purchases go to the folding thread, which folds
    // what gathered while it folded the previous group into the serving model.
    let folder = {
        let (models, fresh, progress) = (models.clone(), rec_fresh.clone(), progress.clone());
        std::thread::Builder::new()
            .name("fold-in".into())
            .spawn(move || models.fold_forever(&fresh, &progress.fold_seen))?
    };
    let m = models.clone();
    let fold_trigger = Trigger::builder(stream.clone(), move |batch: TriggerBatch| {
        let models = m.clone();
        async move {
            let handed = batch.records.len() as u64;
            let mut events = Vec::new();
            let mut sampled = Vec::new();
            for r in batch.records.iter() {
                let Some(e) = Event::decode(&r.data) else {
                    continue;
                };
                let weight = match e.kind {
                    CART => 3.0,
                    PURCHASE => 5.0,
                    _ => continue,
                };
                events.push(MlEvent::new(i64::from(e.user), i64::from(e.item)).weight(weight));
                if e.id % SAMPLE < 4 {
                    sampled.push(e.time_micros);
                }
            }
            // Waits only when the folding thread is far behind (a bounded queue).
            tokio::task::spawn_blocking(move || models.hand_in(events, sampled, handed))
                .await
                .map_err(|e| {
                    BatchError::new(lakehouse_core::Error::new(
                        lakehouse_core::ErrorKind::Internal,
                        format!("fold-in hand-in panicked: {e}"),
                    ))
                })?
                .map_err(BatchError::new)?;
            Ok(())
        }
    })
    .name("recommender-fold-in")
    .batch_size(10_000)
    .poll_interval(Duration::from_millis(2))
    .build()?
    .start()?;

    // The table delivery, with view refreshes after each commit.
    let decoder = Arc::new(EventDecoder::new(SAMPLE));
    let delivery = TableDelivery::new(
        "retail-sink",
        stream.clone(),
        table.clone(),
        decoder.clone(),
    )
    .with_policy(FlushPolicy {
        max_records: 500_000,
        max_bytes: 64 << 20,
        max_age: args.flush,
    });
    let deliver = {
        let (engine, hot, progress) = (engine.clone(), hot.clone(), progress.clone());
        let (table, table_fresh, view_fresh) =
            (table.clone(), table_fresh.clone(), view_fresh.clone());
        tokio::spawn(async move {
            // Once generation ends, the delivery must keep committing until it has
            // everything: it fails only after 30 s without a commit.
            let mut last_commit = Instant::now();
            loop {
                let done = progress.producing_done.load(Ordering::SeqCst);
                let report = delivery.poll(done).await?;
                if report.commits > 0 {
                    last_commit = Instant::now();
                    let samples = decoder.take_samples();
                    table_fresh.record(now_micros(), &samples);
                    progress
                        .committed
                        .fetch_add(report.rows_committed, Ordering::SeqCst);
                    progress
                        .commits
                        .fetch_add(report.commits, Ordering::Relaxed);
                    progress
                        .version
                        .store(table.version().await?, Ordering::Relaxed);
                    for (name, _) in VIEWS {
                        let outcome = engine.refresh_materialized_view(name).await?;
                        progress.refreshes.fetch_add(1, Ordering::Relaxed);
                        if outcome.kind() == RefreshKind::Incremental {
                            progress.incremental.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    hot.push_sales(engine.read_materialized_view("sales_by_hour")?.batches())?;
                    view_fresh.record(now_micros(), &samples);
                }
                if done
                    && progress.committed.load(Ordering::SeqCst)
                        >= progress.acked.load(Ordering::SeqCst)
                {
                    return Ok::<u64, BoxError>(report.duplicates);
                }
                if done && last_commit.elapsed() > STALLED {
                    let behind = progress
                        .acked
                        .load(Ordering::SeqCst)
                        .saturating_sub(progress.committed.load(Ordering::SeqCst));
                    return Err(format!(
                        "the table delivery is {behind} records behind and made no commit for {} s",
                        STALLED.as_secs()
                    )
                    .into());
                }
                if report.records_read == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };

    // The workflow, first run while events flow.
    let workflow = model::workflow(engine.clone(), models.clone())?;
    let first_run = {
        let (workflow, progress) = (workflow.clone(), progress.clone());
        let wait = args.duration.mul_f64(0.25).max(Duration::from_secs(1));
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            while progress.committed.load(Ordering::SeqCst) < 1_000
                && !progress.producing_done.load(Ordering::SeqCst)
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            run_workflow(&workflow, "retrain-1").await
        })
    };

    // Table maintenance while events flow: compaction every few seconds, a vacuum
    // every tenth run, and a last compaction once the delivery has committed everything.
    let maintenance = Arc::new(Maintenance::default());
    let maintenance_stop = Arc::new(AtomicBool::new(false));
    let maintain = match args.compact_every {
        Some(every) => {
            let workflow = maintenance::workflow(table.clone(), maintenance.clone())?;
            let stop = maintenance_stop.clone();
            Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                let mut failures = Vec::new();
                for run in 1u64.. {
                    let last = tokio::select! {
                        _ = tick.tick() => stop.load(Ordering::SeqCst),
                        _ = wait_flag(&stop) => true,
                    };
                    let input = json!({"vacuum": run % 10 == 0});
                    match workflow.run(&format!("maintenance-{run}"), input).await {
                        Ok(e) if e.status == ExecutionStatus::Succeeded => {}
                        Ok(e) => failures.push(format!(
                            "maintenance-{run} {:?}: {:?}",
                            e.status,
                            e.error.map(|x| x.to_json())
                        )),
                        Err(e) => failures.push(format!("maintenance-{run}: {e}")),
                    }
                    if last {
                        break;
                    }
                }
                failures
            }))
        }
        None => None,
    };

    // The producer, paced to the rate, on its own thread.
    let started = Instant::now();
    let runtime = tokio::runtime::Handle::current();
    let producer = {
        let (stream, progress, catalog) = (stream.clone(), progress.clone(), catalog.clone());
        let (rate, duration) = (args.rate, args.duration);
        std::thread::spawn(move || {
            let mut generator = Generator::new(catalog, 7);
            let mut sent = 0u64;
            let t0 = Instant::now();
            loop {
                let elapsed = t0.elapsed();
                if elapsed >= duration {
                    break;
                }
                let due = (rate as f64 * elapsed.as_secs_f64()) as u64;
                if sent >= due {
                    std::thread::sleep(Duration::from_micros(500));
                    continue;
                }
                let n = (due - sent).min(500);
                let now = now_micros();
                let batch: Vec<PutRecord> = (0..n)
                    .map(|_| {
                        let e = generator.next_event(now);
                        e.put_record()
                    })
                    .collect();
                let (mut ok, mut bad) = (0, 0);
                let results = match runtime.block_on(stream.put_batch(batch)) {
                    Ok(results) => results,
                    Err(e) => vec![Err(e); n as usize],
                };
                for r in results {
                    if r.is_ok() { ok += 1 } else { bad += 1 }
                }
                progress.acked.fetch_add(ok, Ordering::SeqCst);
                progress.rejected.fetch_add(bad, Ordering::Relaxed);
                sent += n;
            }
        })
    };

    // The live progress line.
    let live = {
        let (progress, hot, models) = (progress.clone(), hot.clone(), models.clone());
        let (table_fresh, rec_fresh) = (table_fresh.clone(), rec_fresh.clone());
        let maintenance = maintenance.clone();
        let own_stream = own_stream.clone();
        tokio::spawn(async move {
            let tty = std::io::stderr().is_terminal();
            let mut tick =
                tokio::time::interval(Duration::from_millis(if tty { 250 } else { 2000 }));
            let (mut last_n, mut last_t) = (0u64, Instant::now());
            let mut trimmed = Instant::now();
            loop {
                tick.tick().await;
                if trimmed.elapsed() >= heap::TRIM_EVERY {
                    trimmed = Instant::now();
                    tokio::task::spawn_blocking(heap::trim);
                }
                let acked = progress.acked.load(Ordering::Relaxed);
                let now = Instant::now();
                let rate = (acked - last_n) as f64 / now.duration_since(last_t).as_secs_f64();
                (last_n, last_t) = (acked, now);
                let heap = heap::live_mb();
                progress
                    .heap_peak_mb
                    .fetch_max(heap as u64, Ordering::Relaxed);
                let stream_mb = own_stream.as_ref().map_or(0.0, |s| {
                    s.memory_bytes().iter().sum::<usize>() as f64 / (1024.0 * 1024.0)
                });
                let line = format!(
                    "[{:5.1}s] {acked} events ({:.0}/s) | behind: {} | table v{}, files/partition {} | {} view refreshes | to table {} | to cache {} | model v{} folded {} (to recs {}) | rss {}, heap {heap:.0} MB, stream {stream_mb:.0} MB",
                    started.elapsed().as_secs_f64(),
                    rate,
                    progress.behind(&hot).text(),
                    progress.version.load(Ordering::Relaxed),
                    maintenance.files_per_partition.load(Ordering::Relaxed),
                    progress.refreshes.load(Ordering::Relaxed),
                    table_fresh.p99_text(),
                    hot.freshness.p99_text(),
                    models.version.load(Ordering::Relaxed),
                    models.folded.load(Ordering::Relaxed),
                    rec_fresh.p99_text(),
                    rss_mb().map_or("?".to_owned(), |mb| format!("{mb:.0} MB")),
                );
                if tty {
                    eprint!("\r{line:<160}");
                } else {
                    eprintln!("{line}");
                }
            }
        })
    };

    producer
        .join()
        .map_err(|_| "the producer thread panicked")?;
    let produce_secs = started.elapsed().as_secs_f64();
    // The final retrain reads the last events generated, however long catching up took.
    models.end_window_at(now_micros());
    progress.producing_done.store(true, Ordering::SeqCst);
    let acked = progress.acked.load(Ordering::SeqCst);
    let behind_at_end = progress.behind(&hot);
    let duplicates = deliver.await??;
    let to_table_secs = started.elapsed().as_secs_f64();
    maintenance_stop.store(true, Ordering::SeqCst);
    let maintenance_failures = match maintain {
        Some(task) => task.await?,
        None => Vec::new(),
    };
    catch_up("the cache trigger", || {
        acked.saturating_sub(hot.applied.load(Ordering::SeqCst))
    })
    .await?;
    let cache_metrics = cache_trigger.stop().await?;
    let _ = cache_done.send(());
    cache_thread
        .join()
        .map_err(|_| "the cache trigger's thread panicked")?;
    catch_up("the fold-in", || {
        acked.saturating_sub(progress.fold_seen.load(Ordering::SeqCst))
    })
    .await?;
    let caught_up_secs = started.elapsed().as_secs_f64() - produce_secs;
    let fold_metrics = fold_trigger.stop().await?;
    models.stop_folding();
    folder.join().map_err(|_| "the folding thread panicked")?;
    live.abort();
    eprintln!();
    let first = first_run.await?;
    let final_run = run_workflow(&workflow, "retrain-final").await;

    // The report.
    let n = |s: &str| s.to_owned();
    println!("== report");
    println!("events ingested {acked}");
    println!(
        "events rejected {}",
        progress.rejected.load(Ordering::Relaxed)
    );
    println!("events per second {:.0}", acked as f64 / produce_secs);
    println!(
        "all events in the table after {to_table_secs:.2} s (generation took {produce_secs:.2} s)"
    );
    println!(
        "behind when generation ended: {} records (every consumer caught up {caught_up_secs:.2} s later)",
        behind_at_end.text()
    );
    let count = scalar_i64(&engine, "SELECT COUNT(event_id) FROM events").await?;
    let generated = acked + progress.rejected.load(Ordering::Relaxed);
    let distinct = distinct_event_ids(&engine, generated).await? as i64;
    let committed = progress.committed.load(Ordering::SeqCst);
    println!("rows in table {count}");
    println!("rows committed by the sink {committed}");
    println!("distinct event ids {distinct}");
    println!("replayed commits ignored {duplicates}");
    let stats = table.statistics(None).await?;
    println!("table version {}", stats.version);
    println!("table commits {}", progress.commits.load(Ordering::Relaxed));
    println!("table files {}", stats.files.len());
    let (most_files, partitions) = maintenance::files_per_partition(&table).await?;
    let most_during = maintenance
        .most_files_per_partition
        .load(Ordering::Relaxed)
        .max(most_files as u64);
    println!(
        "table files per partition max {most_files} ({partitions} partitions), at most {most_during} during the run"
    );
    println!("table bytes {}", stats.size_bytes());
    println!(
        "maintenance {} compactions: {} files into {} ({} rows rewritten), {} files vacuumed",
        maintenance.runs.load(Ordering::Relaxed),
        maintenance.files_removed.load(Ordering::Relaxed),
        maintenance.files_added.load(Ordering::Relaxed),
        maintenance.rows_rewritten.load(Ordering::Relaxed),
        maintenance.files_vacuumed.load(Ordering::Relaxed),
    );
    match peak_rss_mb() {
        Some(mb) => println!("peak resident memory {mb:.0} MB"),
        None => println!("peak resident memory unknown (no /proc/self/status)"),
    }
    println!(
        "live heap at most {} MB (sampled with the progress line), {:.0} MB at the end",
        progress.heap_peak_mb.load(Ordering::Relaxed),
        heap::live_mb()
    );
    println!(
        "view refreshes {} ({} incremental)",
        progress.refreshes.load(Ordering::Relaxed),
        progress.incremental.load(Ordering::Relaxed)
    );
    for (what, f) in [
        ("table", &*table_fresh),
        ("views", &*view_fresh),
        ("cache", &hot.freshness),
        ("recommendation", &*rec_fresh),
    ] {
        for p in [50.0, 99.0] {
            match f.percentile(p) {
                Some(ms) => println!("freshness to {what} p{p:.0} {ms:.2} ms"),
                None => println!("freshness to {what} p{p:.0} none (no samples)"),
            }
        }
    }
    println!(
        "cache trigger {} records in {} invocations; fold-in trigger {} records, {} interactions folded in ({} groups, {} prepared again)",
        cache_metrics.records_processed,
        cache_metrics.invocations,
        fold_metrics.records_processed,
        models.folded.load(Ordering::Relaxed),
        models.fold_groups.load(Ordering::Relaxed),
        models.fold_retries.load(Ordering::Relaxed)
    );

    // Sample SQL answers.
    let sql = [
        n(
            "SELECT category, COUNT(*) AS orders, ROUND(SUM(price * quantity), 2) AS revenue \
           FROM events WHERE event_type = 'purchase' GROUP BY category ORDER BY revenue DESC LIMIT 3",
        ),
        n(
            "SELECT region, SUM(orders) AS orders, ROUND(SUM(revenue), 2) AS revenue \
           FROM sales_by_hour GROUP BY region ORDER BY revenue DESC",
        ),
        n("SELECT event_type, events FROM events_by_type ORDER BY events DESC"),
    ];
    for q in &sql {
        println!("sql> {q}");
        let r = engine.sql(q).await.map_err(|e| format!("{q}: {e}"))?;
        print!("{}", r.pretty()?);
        println!();
    }

    // Top sellers and trending, from the cache tier.
    let trending: Vec<String> = hot
        .trending
        .top(5)
        .iter()
        .map(|h| {
            format!(
                "{} ({})",
                h.key,
                CATEGORIES[catalog.category(h.key) as usize]
            )
        })
        .collect();
    println!("trending now {}", trending.join(", "));
    for (c, name) in CATEGORIES.iter().enumerate().take(3) {
        let top: Vec<String> = hot
            .sellers
            .top(&(c as u8), 3)
            .iter()
            .map(|h| format!("{} x{:.0}", h.key, h.estimate))
            .collect();
        println!("top sellers {name} {}", top.join(", "));
    }
    println!(
        "cached: {} prices, {} sales figures, {} warmed recommendation lists",
        hot.prices.entry_count(),
        hot.sales.entry_count(),
        models.recs.entry_count()
    );

    // The workflow runs and a sample user's recommendations.
    println!("workflow retrain-1 {}", describe(&first));
    println!("workflow retrain-final {}", describe(&final_run));
    let sample_user = scalar_i64(
        &engine,
        "SELECT user_id FROM events GROUP BY user_id ORDER BY COUNT(*) DESC, user_id LIMIT 1",
    )
    .await?;
    let favourite = catalog.favourite(sample_user as u32);
    match models.recommend(sample_user, 5) {
        Some(recs) => {
            let in_favourite = recs
                .iter()
                .filter(|(i, _)| catalog.category(*i as u32) == favourite)
                .count();
            let shown: Vec<String> = recs
                .iter()
                .map(|(i, s)| {
                    format!(
                        "{i} ({}, {s:.2})",
                        CATEGORIES[catalog.category(*i as u32) as usize]
                    )
                })
                .collect();
            println!(
                "recommendations for user {sample_user} (prefers {}): {} ({in_favourite} of {} in the preferred category)",
                CATEGORIES[favourite as usize],
                shown.join(", "),
                recs.len()
            );
        }
        None => println!("recommendations for user {sample_user}: no published model"),
    }

    // Consistency checks.
    let by_type = scalar_i64(&engine, "SELECT SUM(events) FROM events_by_type").await?;
    let purchases = scalar_i64(
        &engine,
        "SELECT COUNT(*) FROM events WHERE event_type = 'purchase'",
    )
    .await?;
    let view_orders = scalar_i64(
        &engine,
        "SELECT CAST(SUM(orders) AS BIGINT) FROM sales_by_hour",
    )
    .await?;
    let mut failures = Vec::new();
    if count as u64 != acked {
        failures.push(format!(
            "rows in table {count} != events acknowledged by the stream {acked}"
        ));
    }
    if count as u64 != committed {
        failures.push(format!(
            "rows in table {count} != rows the sink committed {committed}"
        ));
    }
    if distinct != count {
        failures.push(format!("{} duplicated events", count - distinct));
    }
    if by_type != count {
        failures.push(format!(
            "view events_by_type holds {by_type} events, the table {count}"
        ));
    }
    if view_orders != purchases {
        failures.push(format!(
            "view sales_by_hour holds {view_orders} orders, the table {purchases}"
        ));
    }
    if hot.applied.load(Ordering::SeqCst) != acked {
        failures.push(format!(
            "the cache trigger applied {} of {acked} events",
            hot.applied.load(Ordering::SeqCst)
        ));
    }
    if let Some(e) = models.fold_error() {
        failures.push(format!("{e}"));
    }
    for f in &maintenance_failures {
        failures.push(format!("table maintenance failed: {f}"));
    }
    if !matches!(&final_run, Ok((ExecutionStatus::Succeeded, _))) {
        failures.push("the final model workflow did not succeed".to_owned());
    }
    if failures.is_empty() {
        println!("consistency ok");
        Ok(())
    } else {
        for f in &failures {
            println!("consistency FAILED: {f}");
        }
        Err(format!("{} consistency checks failed", failures.len()).into())
    }
}

/// The number of distinct event ids in the table, in memory of one bit per event
/// generated (the generator numbers events from 0, so every id is below `generated`;
/// one that is not is left out, which the duplicate check then reports).
/// `COUNT(DISTINCT event_id)` held a hash set of every id, which grows with the table:
/// 16 bytes an event or more.
async fn distinct_event_ids(engine: &QueryEngine, generated: u64) -> Result<u64, BoxError> {
    use futures::StreamExt;
    let mut seen = vec![0u64; usize::try_from(generated.div_ceil(64))?];
    let mut distinct = 0u64;
    let mut batches = engine
        .session()
        .sql("SELECT event_id FROM events")
        .await?
        .execute_stream()
        .await?;
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        let ids = batch.column(0).as_primitive::<Int64Type>();
        for id in ids.iter().flatten() {
            let Ok(id) = u64::try_from(id) else { continue };
            if id >= generated {
                continue;
            }
            let (word, bit) = ((id / 64) as usize, 1u64 << (id % 64));
            if seen[word] & bit == 0 {
                seen[word] |= bit;
                distinct += 1;
            }
        }
    }
    Ok(distinct)
}

/// The first column of the first row of a query, as an integer.
async fn scalar_i64(engine: &QueryEngine, sql: &str) -> Result<i64, BoxError> {
    let r = engine.sql(sql).await.map_err(|e| format!("{sql}: {e}"))?;
    let b: RecordBatch = r.concat()?;
    if b.num_rows() == 0 || b.column(0).is_null(0) {
        return Ok(0);
    }
    let col = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64)?;
    Ok(col.as_primitive::<Int64Type>().value(0))
}

type WorkflowOutcome = Result<(ExecutionStatus, lakehouse_flow::Value), String>;

async fn run_workflow(workflow: &Workflow, id: &str) -> WorkflowOutcome {
    let t = Instant::now();
    let e = workflow
        .run(id, json!({"requested_by": "retail_lakehouse"}))
        .await
        .map_err(|e| e.to_string())?;
    let ms = t.elapsed().as_millis();
    let mut out = e
        .output
        .clone()
        .unwrap_or_else(|| json!({"error": e.error.as_ref().map(|x| x.to_json())}));
    out["took_ms"] = json!(ms);
    Ok((e.status, out))
}

fn describe(outcome: &WorkflowOutcome) -> String {
    match outcome {
        Ok((status, out)) => {
            let m = &out["metrics"];
            let t = &out["trained"];
            if *status == ExecutionStatus::Succeeded {
                format!(
                    "succeeded in {} ms: trained on {} interactions ({} users, {} items) in {} ms; \
                     ndcg@10 {:.4} vs popularity {:.4}, recall@10 {:.4}; published model v{}; warmed {} users",
                    out["took_ms"],
                    t["interactions"],
                    t["users"],
                    t["items"],
                    t["train_ms"],
                    m["ndcg"].as_f64().unwrap_or(0.0),
                    m["popularity_ndcg"].as_f64().unwrap_or(0.0),
                    m["recall"].as_f64().unwrap_or(0.0),
                    out["published"]["version"],
                    out["warmed"]["users"],
                )
            } else {
                format!("{status:?}: {out}")
            }
        }
        Err(e) => format!("did not run: {e}"),
    }
}
