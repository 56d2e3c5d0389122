//! The synthetic retail workload: a catalogue, users with a favourite category, Zipf
//! item popularity, and the four event types, encoded as fixed 32-byte records.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{
    Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use lakehouse_core::{Error, ErrorKind, Record};
use lakehouse_stream::Decoder;

pub(crate) const CATEGORIES: [&str; 8] = [
    "electronics",
    "books",
    "home",
    "toys",
    "fashion",
    "grocery",
    "sports",
    "beauty",
];
pub(crate) const REGIONS: [&str; 4] = ["na", "eu", "apac", "latam"];
pub(crate) const EVENT_TYPES: [&str; 4] = ["click", "add_to_cart", "purchase", "price_change"];

pub(crate) const CLICK: u8 = 0;
pub(crate) const CART: u8 = 1;
pub(crate) const PURCHASE: u8 = 2;
pub(crate) const PRICE_CHANGE: u8 = 3;

/// Bytes of one encoded event.
pub(crate) const EVENT_BYTES: usize = 32;

/// Microseconds since the Unix epoch, the time base of every freshness figure.
pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// One retail event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Event {
    pub(crate) id: u64,
    pub(crate) time_micros: i64,
    pub(crate) user: u32,
    pub(crate) item: u32,
    pub(crate) kind: u8,
    pub(crate) category: u8,
    pub(crate) region: u8,
    pub(crate) quantity: u8,
    pub(crate) price: f32,
}

impl Event {
    pub(crate) fn encode(&self) -> [u8; EVENT_BYTES] {
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

    pub(crate) fn decode(b: &[u8]) -> Option<Event> {
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
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
}

/// Zipf(s) ranks `0..n`, sampled by inverting the cumulative distribution.
#[derive(Debug)]
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// The catalogue: item `i` is in category `i % 8`, sold in region `(i / 8) % 4`, with a
/// base price; popularity is Zipf over a scattered rank order.
#[derive(Debug)]
pub(crate) struct Catalog {
    pub(crate) items: u32,
    pub(crate) users: u32,
    prices: Vec<f32>,
    global: Zipf,
    per_category: Zipf,
}

impl Catalog {
    pub(crate) fn new(items: u32, users: u32) -> Self {
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

    pub(crate) fn category(&self, item: u32) -> u8 {
        (item % CATEGORIES.len() as u32) as u8
    }

    pub(crate) fn region(&self, item: u32) -> u8 {
        ((item / CATEGORIES.len() as u32) % REGIONS.len() as u32) as u8
    }

    /// A user's favourite category: the preference ALS is meant to learn.
    pub(crate) fn favourite(&self, user: u32) -> u8 {
        (user.wrapping_mul(2_654_435_761) >> 29) as u8 % CATEGORIES.len() as u8
    }

    /// Scatters a popularity rank over the ids so that hot items are not adjacent.
    fn scatter(rank: u64, n: u64) -> u64 {
        rank.wrapping_mul(2_654_435_761) % n
    }
}

/// Generates events: 70 % clicks, 20 % add-to-cart, 8 % purchases, 2 % price changes;
/// 80 % of a user's events are in their favourite category.
#[derive(Debug)]
pub(crate) struct Generator {
    catalog: Arc<Catalog>,
    prices: Vec<f32>,
    rng: Rng,
    next_id: u64,
}

impl Generator {
    pub(crate) fn new(catalog: Arc<Catalog>, seed: u64) -> Self {
        Generator {
            prices: catalog.prices.clone(),
            catalog,
            rng: Rng::new(seed),
            next_id: 0,
        }
    }

    pub(crate) fn next_event(&mut self, time_micros: i64) -> Event {
        let c = &self.catalog;
        let user = self.rng.below(u64::from(c.users)) as u32;
        let item = if self.rng.unit() < 0.8 {
            let per = c.per_category.cdf.len() as u64;
            let rank = Catalog::scatter(c.per_category.sample(&mut self.rng) as u64, per);
            (rank * CATEGORIES.len() as u64 + u64::from(c.favourite(user))) as u32
        } else {
            Catalog::scatter(c.global.sample(&mut self.rng) as u64, u64::from(c.items)) as u32
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

/// The columns of the `events` table.
pub(crate) fn schema() -> SchemaRef {
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
pub(crate) struct EventDecoder {
    schema: SchemaRef,
    sample_every: u64,
    pub(crate) samples: Mutex<Vec<i64>>,
}

impl EventDecoder {
    pub(crate) fn new(sample_every: u64) -> Self {
        EventDecoder {
            schema: schema(),
            sample_every: sample_every.max(1),
            samples: Mutex::new(Vec::new()),
        }
    }

    /// Event times sampled since the last call.
    pub(crate) fn take_samples(&self) -> Vec<i64> {
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
