//! The cache tier of the retail pipeline: what the stream trigger and the view refreshes
//! keep current.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::RecordBatch;
use lakehouse_cache::{Cache, GroupedTopK, TopK};
use lakehouse_core::{EventLog, Result, SystemClock};
use lakehouse_flow::{BatchError, RunningTrigger, Trigger, TriggerBatch};

use crate::freshness::Freshness;
use crate::workload::{CART, CLICK, Event, PRICE_CHANGE, PURCHASE, now_micros, sales_totals};

/// Trending items, top sellers, latest prices and sales figures, fed by the stream.
#[derive(Debug)]
pub struct Hot {
    /// Item clicks (weight 1) and carts (weight 3), halving every minute.
    pub trending: TopK<u32>,
    /// Units sold per category.
    pub sellers: GroupedTopK<u8, u32>,
    /// Latest price per item (from price-change events).
    pub prices: Cache<u32, f32>,
    /// Sales figures from the `sales_by_hour` view, by `category/region`.
    pub sales: Cache<String, f64>,
    /// Records applied so far.
    pub applied: AtomicU64,
    /// Event-to-cache latency of every `sample_every`-th event.
    pub freshness: Freshness,
    sample_every: u64,
}

impl Hot {
    /// An empty cache tier that times every `sample_every`-th event (by id).
    pub fn new(sample_every: u64) -> Result<Hot> {
        Ok(Hot {
            trending: TopK::trending(4096, 4, Duration::from_secs(60), Arc::new(SystemClock)),
            sellers: GroupedTopK::new(1024, None, Arc::new(SystemClock)),
            prices: Cache::new(200_000)?,
            sales: Cache::new(10_000)?,
            applied: AtomicU64::new(0),
            freshness: Freshness::default(),
            sample_every: sample_every.max(1),
        })
    }

    /// Folds a batch of stream records into the counters and caches; malformed records
    /// are skipped (the table delivery reports them).
    pub fn apply(&self, batch: &TriggerBatch) {
        let mut sampled = Vec::new();
        for e in batch.records.iter().filter_map(|r| Event::decode(&r.data)) {
            match e.kind {
                CLICK => self.trending.record(e.item, 1.0),
                CART => self.trending.record(e.item, 3.0),
                PURCHASE => self
                    .sellers
                    .record(&e.category, e.item, f64::from(e.quantity)),
                PRICE_CHANGE => {
                    let _ = self.prices.insert(e.item, e.price);
                }
                _ => {}
            }
            if e.id % self.sample_every == 0 {
                sampled.push(e.time_micros);
            }
        }
        self.applied
            .fetch_add(batch.records.len() as u64, Ordering::Relaxed);
        self.freshness.record(now_micros(), &sampled);
    }

    /// Starts a trigger named `name` that applies every record of `log` as it arrives.
    pub fn start_feeding<L: EventLog + 'static>(
        self: &Arc<Self>,
        log: L,
        name: &str,
    ) -> Result<RunningTrigger> {
        let hot = self.clone();
        Trigger::builder(log, move |batch: TriggerBatch| {
            hot.apply(&batch);
            futures::future::ready(Ok::<(), BatchError>(()))
        })
        .name(name)
        .batch_size(10_000)
        .poll_interval(Duration::from_millis(1))
        .build()?
        .start()
    }

    /// Pushes the revenue per category and region of the `sales_by_hour` view's rows
    /// into [`sales`](Self::sales).
    pub fn push_sales(&self, view: &[RecordBatch]) -> Result<()> {
        for (k, v) in sales_totals(view)? {
            self.sales.insert(k, v)?;
        }
        Ok(())
    }
}
