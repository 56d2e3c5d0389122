//! [`RedisCache`]: the [`CacheTier`] on Redis with an in-process near cache, and its
//! cross-process invalidation.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use lakehouse_core::{Clock, Error, ErrorKind, Result, SystemClock};

use super::pool::Pool;
use super::topk::RedisTopK;
use crate::cache::Cache;
use crate::entry::EntryOptions;
use crate::stats::CacheStats;
use crate::tier::CacheTier;

/// Configures a [`RedisCache`]; made by [`RedisCache::builder`].
#[must_use]
pub struct RedisCacheBuilder {
    url: String,
    prefix: String,
    near_capacity: u64,
    near_ttl: Duration,
    default_ttl: Option<Duration>,
    pool_size: usize,
    timeout: Duration,
    retry_after: Duration,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for RedisCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCacheBuilder")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("near_capacity", &self.near_capacity)
            .finish_non_exhaustive()
    }
}

impl RedisCacheBuilder {
    /// Prefix of every key this cache writes (default `lakehouse:`); also names the
    /// invalidation channel.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Entries of the in-process near cache (default 100,000).
    pub fn near_capacity(mut self, n: u64) -> Self {
        self.near_capacity = n;
        self
    }

    /// How long a value read from Redis is served from the near cache without asking
    /// Redis again (default 1 s). Bounds staleness when invalidation messages are lost.
    pub fn near_ttl(mut self, ttl: Duration) -> Self {
        self.near_ttl = ttl;
        self
    }

    /// Time to live in Redis for inserts without their own (default: none).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// Connections to open (default 4).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n.max(1);
        self
    }

    /// Connect, read and write timeout (default 200 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// After a failure, skip Redis for this long (default 1 s).
    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = d;
        self
    }

    /// The clock for the circuit breaker and the near cache.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the cache. Connects lazily: a server that is down now is not an error.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] for a malformed URL or a zero near capacity.
    pub fn build(self) -> Result<RedisCache> {
        let client = redis::Client::open(self.url.as_str()).map_err(|e| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("bad redis url {:?}", self.url),
            )
            .with_source(e)
        })?;
        let near = Cache::builder()
            .max_entries(self.near_capacity)
            .time_to_live(self.near_ttl)
            .clock(self.clock.clone())
            .build()?;
        let origin = format!(
            "{:x}",
            self.clock.now_micros() ^ (std::process::id() as i64) << 20
        );
        Ok(RedisCache {
            inner: Arc::new(RedisInner {
                pool: Arc::new(Pool::new(
                    client,
                    self.pool_size,
                    self.timeout,
                    self.retry_after,
                    self.clock,
                )),
                near,
                channel: format!("{}invalidate", self.prefix),
                prefix: self.prefix,
                default_ttl: self.default_ttl,
                near_ttl: self.near_ttl,
                origin,
                redis_hits: AtomicU64::new(0),
                redis_misses: AtomicU64::new(0),
            }),
        })
    }
}

struct RedisInner {
    pool: Arc<Pool>,
    near: Cache<String, Bytes>,
    prefix: String,
    channel: String,
    default_ttl: Option<Duration>,
    near_ttl: Duration,
    origin: String,
    redis_hits: AtomicU64,
    redis_misses: AtomicU64,
}

/// Counters of a [`RedisCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// The near cache's counters.
    pub near: CacheStats,
    /// Near misses that Redis answered.
    pub redis_hits: u64,
    /// Near misses that Redis did not have.
    pub redis_misses: u64,
    /// Failed or skipped Redis calls.
    pub backend_errors: u64,
}

/// A [`CacheTier`] on Redis with an in-process near cache in front.
///
/// Reads are served from the near cache, then from Redis (`GET`, or one `MGET` for
/// [`get_many`](CacheTier::get_many)); values read from Redis stay near for the near
/// ttl. Writes go to Redis (`SET .. PX`) and to the near cache, and publish the key on
/// an invalidation channel so that other processes running
/// [`spawn_invalidation_listener`](Self::spawn_invalidation_listener) drop their near
/// copy.
///
/// When Redis is down or slow, nothing panics and the near cache keeps serving: reads
/// that miss near report a miss, writes and invalidations update the near cache and
/// return the failure, and every failed or skipped call is counted in
/// [`stats`](Self::stats). After a failure, calls skip Redis for `retry_after`.
///
/// # Errors
///
/// A Redis failure is returned with the Redis error as its
/// [`source`](std::error::Error::source) and a kind that follows the client's
/// classification of it:
///
/// * [`ErrorKind::Unavailable`]: Redis cannot be reached, the connection broke, the
///   server (or cluster) cannot serve now (loading, failing over, read-only), or calls
///   skip Redis after a recent failure;
/// * [`ErrorKind::Timeout`]: Redis did not answer within the timeout;
/// * [`ErrorKind::InvalidConfig`]: the client configuration or the credentials are
///   wrong;
/// * [`ErrorKind::Corrupt`] and [`ErrorKind::TypeMismatch`]: a reply that does not
///   parse, or does not have the expected type;
/// * [`ErrorKind::Unsupported`]: the server lacks a protocol feature (RESP3);
/// * [`ErrorKind::External`]: Redis refused the command (an error reply such as
///   `WRONGTYPE`, a missing permission, an aborted transaction), and anything else.
#[derive(Clone)]
pub struct RedisCache {
    inner: Arc<RedisInner>,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.inner.prefix)
            .field("near", &self.inner.near)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Starts configuring a cache on the Redis server at `url` (`redis://host:port/db`).
    pub fn builder(url: impl Into<String>) -> RedisCacheBuilder {
        RedisCacheBuilder {
            url: url.into(),
            prefix: "lakehouse:".into(),
            near_capacity: 100_000,
            near_ttl: Duration::from_secs(1),
            default_ttl: None,
            pool_size: 4,
            timeout: Duration::from_millis(200),
            retry_after: Duration::from_secs(1),
            clock: Arc::new(SystemClock),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> RedisStats {
        RedisStats {
            near: self.inner.near.stats(),
            redis_hits: self.inner.redis_hits.load(Ordering::Relaxed),
            redis_misses: self.inner.redis_misses.load(Ordering::Relaxed),
            backend_errors: self.inner.pool.errors.load(Ordering::Relaxed),
        }
    }

    /// A top-k tracker on a Redis sorted set named `name`, sharing this cache's
    /// connections.
    pub fn top_k(&self, name: &str) -> RedisTopK {
        RedisTopK::new(self.inner.pool.clone(), self.key(&format!("topk:{name}")))
    }

    /// Subscribes to the invalidation channel on a background thread and drops near
    /// copies of keys that other processes write or invalidate. Reconnects after
    /// failures; stops when the returned handle is dropped.
    pub fn spawn_invalidation_listener(&self) -> InvalidationListener {
        let stop = Arc::new(AtomicBool::new(false));
        let (cache, flag) = (self.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("lakehouse-cache-invalidation".into())
            .spawn(move || cache.listen(&flag))
            .ok();
        InvalidationListener { stop, handle }
    }

    fn listen(&self, stop: &AtomicBool) {
        let pool = &self.inner.pool;
        while !stop.load(Ordering::Relaxed) {
            let conn = pool.client.get_connection_with_timeout(pool.timeout);
            let Ok(mut conn) = conn else {
                pool.errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            let mut pubsub = conn.as_pubsub();
            if pubsub.subscribe(&self.inner.channel).is_err()
                || pubsub
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .is_err()
            {
                pool.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            while !stop.load(Ordering::Relaxed) {
                match pubsub.get_message() {
                    Ok(msg) => {
                        let payload: String = msg.get_payload().unwrap_or_default();
                        if let Some((origin, key)) = payload.split_once('\n')
                            && origin != self.inner.origin
                        {
                            self.inner.near.invalidate(&key.to_owned());
                        }
                    }
                    Err(e) if e.is_timeout() => {}
                    Err(_) => {
                        pool.errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }

    fn publish(&self, pipe: &mut redis::Pipeline, key: &str) {
        pipe.cmd("PUBLISH")
            .arg(&self.inner.channel)
            .arg(format!("{}\n{key}", self.inner.origin))
            .ignore();
    }
}

impl CacheTier for RedisCache {
    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let k = key.to_owned();
        if let Some(v) = self.inner.near.get(&k) {
            return Ok(Some(v));
        }
        let remote: Result<Option<Vec<u8>>> = self
            .inner
            .pool
            .run(|c| redis::cmd("GET").arg(self.key(key)).query(c));
        match remote {
            Ok(Some(v)) => {
                self.inner.redis_hits.fetch_add(1, Ordering::Relaxed);
                let v = Bytes::from(v);
                let _ = self.inner.near.insert(k, v.clone());
                Ok(Some(v))
            }
            Ok(None) => {
                self.inner.redis_misses.fetch_add(1, Ordering::Relaxed);
                Ok(None)
            }
            // Counted in the pool; a cache read degrades to a miss.
            Err(_) => Ok(None),
        }
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        let mut out: Vec<Option<Bytes>> = keys
            .iter()
            .map(|k| self.inner.near.get(&(*k).to_owned()))
            .collect();
        let missing: Vec<usize> = (0..keys.len()).filter(|&i| out[i].is_none()).collect();
        if missing.is_empty() {
            return Ok(out);
        }
        let mut cmd = redis::cmd("MGET");
        for &i in &missing {
            cmd.arg(self.key(keys[i]));
        }
        let remote: Result<Vec<Option<Vec<u8>>>> = self.inner.pool.run(|c| cmd.query(c));
        if let Ok(values) = remote {
            for (&i, v) in missing.iter().zip(values) {
                match v {
                    Some(v) => {
                        self.inner.redis_hits.fetch_add(1, Ordering::Relaxed);
                        let v = Bytes::from(v);
                        let _ = self.inner.near.insert(keys[i].to_owned(), v.clone());
                        out[i] = Some(v);
                    }
                    None => {
                        self.inner.redis_misses.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        Ok(out)
    }

    fn insert(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        let ttl = ttl.or(self.inner.default_ttl);
        // The near copy lives no longer than the near ttl, which bounds staleness.
        let near_options = EntryOptions::new()
            .ttl(ttl.map_or(self.inner.near_ttl, |t| t.min(self.inner.near_ttl)));
        self.inner
            .near
            .insert_with(key.to_owned(), value.clone(), near_options)?;
        let mut pipe = redis::pipe();
        let set = pipe.cmd("SET").arg(self.key(key)).arg(value.as_ref());
        if let Some(t) = ttl {
            set.arg("PX").arg(t.as_millis().max(1) as u64);
        }
        set.ignore();
        self.publish(&mut pipe, key);
        self.inner
            .pool
            .run(|c| pipe.query::<()>(c))
            .map_err(|e| e.with_key(key))
    }

    fn invalidate(&self, key: &str) -> Result<()> {
        self.inner.near.invalidate(&key.to_owned());
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(self.key(key)).ignore();
        self.publish(&mut pipe, key);
        self.inner
            .pool
            .run(|c| pipe.query::<()>(c))
            .map_err(|e| e.with_key(key))
    }
}

/// Stops the invalidation listener when dropped.
#[derive(Debug)]
pub struct InvalidationListener {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for InvalidationListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
