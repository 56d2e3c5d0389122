//! The synthetic retail workload: a catalogue, users with a favourite category, Zipf
//! item popularity, and the four event types, encoded as fixed 32-byte records.
//!
//! ```
//! use std::sync::Arc;
//! use lakehouse_examples::workload::{Catalog, Event, Generator};
//!
//! let catalog = Arc::new(Catalog::new(1_000, 100));
//! let mut events = Generator::new(catalog.clone(), 7);
//! let e = events.next_event(1_700_000_000_000_000);
//! assert_eq!(Event::decode(&e.encode()), Some(e));
//! assert_eq!(e.category, catalog.category(e.item));
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{
    AsArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, TimeUnit};
use lakehouse_core::{Error, ErrorKind, PutRecord, Record};
use lakehouse_stream::Decoder;

use crate::zipf::{Zipf, scatter};

/// The eight product categories; an item's category is `item % 8`.
pub const CATEGORIES: [&str; 8] = [
    "electronics",
    "books",
    "home",
    "toys",
    "fashion",
    "grocery",
    "sports",
    "beauty",
];
/// The four sales regions; an item's region is `(item / 8) % 4`.
pub const REGIONS: [&str; 4] = ["na", "eu", "apac", "latam"];
/// The `event_type` column's values, indexed by [`Event::kind`].
pub const EVENT_TYPES: [&str; 4] = ["click", "add_to_cart", "purchase", "price_change"];

/// [`Event::kind`] of a product page view.
pub const CLICK: u8 = 0;
/// [`Event::kind`] of an add-to-cart.
pub const CART: u8 = 1;
/// [`Event::kind`] of a purchase.
pub const PURCHASE: u8 = 2;
/// [`Event::kind`] of a price change (the new price is [`Event::price`]).
pub const PRICE_CHANGE: u8 = 3;

/// Bytes of one encoded event.
pub const EVENT_BYTES: usize = 32;

/// Microseconds since the Unix epoch, the time base of every freshness figure.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// One retail event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    /// Sequential id, unique per generator.
    pub id: u64,
    /// Creation time, microseconds since the Unix epoch.
    pub time_micros: i64,
    /// The user.
    pub user: u32,
    /// The item.
    pub item: u32,
    /// [`CLICK`], [`CART`], [`PURCHASE`] or [`PRICE_CHANGE`].
    pub kind: u8,
    /// Index into [`CATEGORIES`].
    pub category: u8,
    /// Index into [`REGIONS`].
    pub region: u8,
    /// Units bought or put in the cart (0 for clicks and price changes).
    pub quantity: u8,
    /// The item's price when the event happened.
    pub price: f32,
}

impl Event {
    /// The stream record of this event, keyed by user (`user-<id>`).
    pub fn put_record(&self) -> PutRecord {
        PutRecord::new(format!("user-{}", self.user), self.encode().to_vec())
    }

    /// The 32-byte little-endian record of this event.
    pub fn encode(&self) -> [u8; EVENT_BYTES] {
        let mut b = [0u8; EVENT_BYTES];
        b[0..8].copy_from_slice(&self.id.to_le_bytes());
        b[8..16].copy_from_slice(&self.time_micros.to_le_bytes());
        b[16..20].copy_from_slice(&self.user.to_le_bytes());
        b[20..24].copy_from_slice(&self.item.to_le_bytes());
        b[24] = self.kind;
        b[25] = self.category;
        b[26] = self.region;
        b[27] = self.quantity;
        b[28..32].copy_from_slice(&self.price.to_le_bytes());
        b
    }

    /// The event of a 32-byte record; `None` if the record is malformed.
    pub fn decode(b: &[u8]) -> Option<Event> {
        if b.len() != EVENT_BYTES {
            return None;
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or_default());
        let e = Event {
            id: u64_at(0),
            time_micros: u64_at(8) as i64,
            user: u32_at(16),
            item: u32_at(20),
            kind: b[24],
            category: b[25],
            region: b[26],
            quantity: b[27],
            price: f32::from_bits(u32_at(28)),
        };
        let valid = (e.kind as usize) < EVENT_TYPES.len()
            && (e.category as usize) < CATEGORIES.len()
            && (e.region as usize) < REGIONS.len()
            && e.price.is_finite();
        valid.then_some(e)
    }
}

/// xorshift64*: a small deterministic generator (the workload is seeded).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
}

/// The catalogue: item `i` is in category `i % 8`, sold in region `(i / 8) % 4`, with a
/// base price; popularity is Zipf over a scattered rank order.
#[derive(Debug)]
pub struct Catalog {
    /// Items in the catalogue (at least 128).
    pub items: u32,
    /// Users (at least 1).
    pub users: u32,
    prices: Vec<f32>,
    global: Zipf,
    per_category: Zipf,
}

impl Catalog {
    /// A catalogue of `items` items (log-uniform prices between 2 and 500) for `users` users.
    pub fn new(items: u32, users: u32) -> Self {
        let items = items.max(CATEGORIES.len() as u32 * 16);
        let mut rng = Rng::new(42);
        let prices = (0..items)
            .map(|_| {
                // Log-uniform between 2 and 500.
                let p = (2f64.ln() + rng.unit() * (500f64 / 2.0).ln()).exp();
                (p * 100.0).round() as f32 / 100.0
            })
            .collect();
        Catalog {
            items,
            users: users.max(1),
            prices,
            global: Zipf::new(items as usize, 1.0),
            per_category: Zipf::new(items as usize / CATEGORIES.len(), 1.0),
        }
    }

    /// The item's category (index into [`CATEGORIES`]).
    pub fn category(&self, item: u32) -> u8 {
        (item % CATEGORIES.len() as u32) as u8
    }

    /// The item's region (index into [`REGIONS`]).
    pub fn region(&self, item: u32) -> u8 {
        ((item / CATEGORIES.len() as u32) % REGIONS.len() as u32) as u8
    }

    /// A user's favourite category: the preference ALS is meant to learn.
    pub fn favourite(&self, user: u32) -> u8 {
        (user.wrapping_mul(2_654_435_761) >> 29) as u8 % CATEGORIES.len() as u8
    }
}

/// Generates events: 70 % clicks, 20 % add-to-cart, 8 % purchases, 2 % price changes;
/// 80 % of a user's events are in their favourite category.
#[derive(Debug)]
pub struct Generator {
    catalog: Arc<Catalog>,
    prices: Vec<f32>,
    rng: Rng,
    next_id: u64,
}

impl Generator {
    /// A generator over `catalog`, seeded with `seed`.
    pub fn new(catalog: Arc<Catalog>, seed: u64) -> Self {
        Generator {
            prices: catalog.prices.clone(),
            catalog,
            rng: Rng::new(seed),
            next_id: 0,
        }
    }

    /// The next event, stamped `time_micros`.
    pub fn next_event(&mut self, time_micros: i64) -> Event {
        let c = &self.catalog;
        let user = self.rng.below(u64::from(c.users)) as u32;
        let item = if self.rng.unit() < 0.8 {
            let per = c.per_category.len() as u64;
            let rank = scatter(c.per_category.rank(self.rng.unit()) as u64, per);
            (rank * CATEGORIES.len() as u64 + u64::from(c.favourite(user))) as u32
        } else {
            scatter(c.global.rank(self.rng.unit()) as u64, u64::from(c.items)) as u32
        };
        let roll = self.rng.below(100);
        let kind = match roll {
            0..70 => CLICK,
            70..90 => CART,
            90..98 => PURCHASE,
            _ => PRICE_CHANGE,
        };
        if kind == PRICE_CHANGE {
            // Up to 10 % up or down.
            let f = 0.9 + 0.2 * self.rng.unit() as f32;
            let p = &mut self.prices[item as usize];
            *p = ((*p * f * 100.0).round() / 100.0).max(0.5);
        }
        let quantity = if kind == PURCHASE || kind == CART {
            1 + self.rng.below(3) as u8
        } else {
            0
        };
        let id = self.next_id;
        self.next_id += 1;
        Event {
            id,
            time_micros,
            user,
            item,
            kind,
            category: c.category(item),
            region: c.region(item),
            quantity,
            price: self.prices[item as usize],
        }
    }
}

/// The materialized views of the pipeline, `(name, SQL)`, refreshed after every commit.
pub const VIEWS: [(&str, &str); 2] = [
    (
        "sales_by_hour",
        "SELECT category, region, date_trunc('hour', event_time) AS hour, \
         COUNT(*) AS orders, SUM(quantity) AS units, SUM(price * quantity) AS revenue \
         FROM events WHERE event_type = 'purchase' \
         GROUP BY category, region, date_trunc('hour', event_time)",
    ),
    (
        "events_by_type",
        "SELECT event_type, COUNT(*) AS events FROM events GROUP BY event_type",
    ),
];

/// Revenue per `category/region` summed over the rows of the `sales_by_hour` view: what
/// the pipeline pushes into the cache after each refresh.
pub fn sales_totals(view: &[RecordBatch]) -> lakehouse_core::Result<HashMap<String, f64>> {
    // Strings come as views from the engine, or as `Utf8`: read both as `Utf8`.
    let column = |b: &RecordBatch, name: &str| -> lakehouse_core::Result<arrow::array::ArrayRef> {
        let c = b.column_by_name(name).cloned().ok_or_else(|| {
            Error::new(ErrorKind::ColumnNotFound, "sales_by_hour lacks a column").with_column(name)
        })?;
        match c.data_type() {
            arrow::datatypes::DataType::Utf8View => {
                Ok(arrow::compute::cast(&c, &arrow::datatypes::DataType::Utf8)?)
            }
            _ => Ok(c),
        }
    };
    let mut totals = HashMap::new();
    for b in view {
        let (cat, reg, rev) = (
            column(b, "category")?,
            column(b, "region")?,
            column(b, "revenue")?,
        );
        let (Some(cat), Some(reg), Some(rev)) = (
            cat.as_string_opt::<i32>(),
            reg.as_string_opt::<i32>(),
            rev.as_primitive_opt::<Float64Type>(),
        ) else {
            return Err(Error::new(
                ErrorKind::TypeMismatch,
                "sales_by_hour: category and region must be Utf8, revenue Float64",
            ));
        };
        for i in 0..b.num_rows() {
            *totals
                .entry(format!("{}/{}", cat.value(i), reg.value(i)))
                .or_default() += rev.value(i);
        }
    }
    Ok(totals)
}

/// The columns of the `events` table.
pub fn schema() -> SchemaRef {
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

/// Decodes stream records into `events` rows, and keeps a sample of event times so that
/// the caller can measure event-to-table freshness once the commit returns.
#[derive(Debug)]
pub struct EventDecoder {
    schema: SchemaRef,
    sample_every: u64,
    /// Creation times of the sampled events decoded since [`take_samples`](Self::take_samples).
    pub samples: Mutex<Vec<i64>>,
}

impl EventDecoder {
    /// A decoder that samples the time of every `sample_every`-th event (by id).
    pub fn new(sample_every: u64) -> Self {
        EventDecoder {
            schema: schema(),
            sample_every: sample_every.max(1),
            samples: Mutex::new(Vec::new()),
        }
    }

    /// Event times sampled since the last call.
    pub fn take_samples(&self) -> Vec<i64> {
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Decoder for EventDecoder {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn decode(&self, records: &[Record]) -> lakehouse_core::Result<RecordBatch> {
        let n = records.len();
        let mut ids = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        let mut users = Vec::with_capacity(n);
        let mut items = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        let mut cats = Vec::with_capacity(n);
        let mut regions = Vec::with_capacity(n);
        let mut prices = Vec::with_capacity(n);
        let mut qty = Vec::with_capacity(n);
        let mut sampled = Vec::new();
        for r in records {
            let e = Event::decode(&r.data).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("malformed retail event of {} bytes", r.data.len()),
                )
                .with_shard(r.shard)
                .with_key(r.partition_key.clone())
            })?;
            if e.id % self.sample_every == 0 {
                sampled.push(e.time_micros);
            }
            ids.push(e.id as i64);
            times.push(e.time_micros);
            users.push(i64::from(e.user));
            items.push(i64::from(e.item));
            kinds.push(EVENT_TYPES[e.kind as usize]);
            cats.push(CATEGORIES[e.category as usize]);
            regions.push(REGIONS[e.region as usize]);
            prices.push(f64::from(e.price));
            qty.push(i32::from(e.quantity));
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
        .map_err(|e| {
            Error::new(ErrorKind::InvalidInput, "cannot build the batch").with_source(e)
        })?;
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(sampled);
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let catalog = Arc::new(Catalog::new(1_000, 50));
        let mut g = Generator::new(catalog, 1);
        for _ in 0..1_000 {
            let e = g.next_event(123);
            assert_eq!(Event::decode(&e.encode()), Some(e));
        }
    }
}
