//! [`CacheBuilder`]: the capacity, expiry, shards, clock and listener of a [`Cache`].

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use lakehouse_core::{Clock, Error, ErrorKind, Result, SystemClock};

use crate::cache::{Cache, Listener, Settings, Weigher};
use crate::entry::RemovalCause;
use crate::expiry::Expiry;

/// Configures a [`Cache`]; made by [`Cache::builder`].
#[must_use]
pub struct CacheBuilder<K, V> {
    max_entries: Option<u64>,
    max_weight: Option<u64>,
    weigher: Option<Weigher<K, V>>,
    ttl: Option<Duration>,
    tti: Option<Duration>,
    shards: Option<usize>,
    clock: Arc<dyn Clock>,
    listener: Option<Listener<K, V>>,
    negative_ttl: Option<Duration>,
}

impl<K, V> fmt::Debug for CacheBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("max_entries", &self.max_entries)
            .field("max_weight", &self.max_weight)
            .field("ttl", &self.ttl)
            .field("tti", &self.tti)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl<K, V> CacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn new() -> Self {
        CacheBuilder {
            max_entries: None,
            max_weight: None,
            weigher: None,
            ttl: None,
            tti: None,
            shards: None,
            clock: Arc::new(SystemClock),
            listener: None,
            negative_ttl: None,
        }
    }

    /// Holds at most this many entries.
    pub fn max_entries(mut self, n: u64) -> Self {
        self.max_entries = Some(n);
        self
    }

    /// Holds at most this total weight, as measured by `weigher` (bytes, say).
    pub fn max_weight(
        mut self,
        total: u64,
        weigher: impl Fn(&K, &V) -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.max_weight = Some(total);
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// Entries expire this long after they were inserted.
    pub fn time_to_live(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Entries expire when not read for this long.
    pub fn time_to_idle(mut self, tti: Duration) -> Self {
        self.tti = Some(tti);
        self
    }

    /// Number of independently locked shards (rounded up to a power of two). The
    /// default scales with the capacity, up to 64.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// The clock that expiry reads.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Called, outside any lock, for every entry that leaves the cache.
    pub fn eviction_listener(
        mut self,
        f: impl Fn(&K, &V, RemovalCause) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Arc::new(f));
        self
    }

    /// Remembers a failed read-through load for this long, so that a failing back end
    /// is not asked again by every caller.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// Builds the cache.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] without a capacity, with a zero capacity or zero
    /// shards.
    pub fn build(self) -> Result<Cache<K, V>> {
        let capacity = match (self.max_weight, self.max_entries) {
            (Some(w), _) => w,
            (None, Some(n)) => n,
            (None, None) => {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    "set max_entries or max_weight",
                ));
            }
        };
        if capacity == 0 {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "capacity must be positive",
            ));
        }
        if self.shards == Some(0) {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "shards must be positive",
            ));
        }
        // Enough entries per shard that the eviction order stays meaningful.
        let default_shards = (capacity / 256).clamp(1, 64) as usize;
        Ok(Cache::with_settings(Settings {
            capacity,
            shards: self.shards.unwrap_or(default_shards).next_power_of_two(),
            weigher: self.weigher,
            expiry: Expiry::new(self.ttl, self.tti),
            clock: self.clock,
            listener: self.listener,
            negative_ttl: self.negative_ttl,
        }))
    }
}
