//! [`CacheTier`]: the byte-oriented cache contract shared by the in-process cache and the
//! Redis tier.

use std::fmt::Debug;
use std::time::Duration;

use bytes::Bytes;
use lakehouse_core::Result;

use crate::cache::Cache;
use crate::entry::EntryOptions;

/// A cache of byte values under string keys, as a service shares with other processes.
///
/// [`Cache<String, Bytes>`](Cache) implements it in process; with the `redis` feature,
/// `RedisCache` implements it on Redis with an in-process near cache in front, so code
/// written against this trait moves from one process to many without change.
pub trait CacheTier: Send + Sync + Debug {
    /// The value of `key`, if cached.
    ///
    /// # Errors
    ///
    /// Implementations with a remote tier may report its failure; see their docs for
    /// what they still serve.
    fn get(&self, key: &str) -> Result<Option<Bytes>>;

    /// Caches `value` under `key`, expiring after `ttl` (or the tier's default).
    ///
    /// # Errors
    ///
    /// When the value cannot be stored (too heavy, remote tier down).
    fn insert(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()>;

    /// Removes `key`.
    ///
    /// # Errors
    ///
    /// When a remote tier could not be told.
    fn invalidate(&self, key: &str) -> Result<()>;

    /// The values of several keys, in order. The default calls [`get`](Self::get) for
    /// each; remote tiers fetch them in one round trip.
    ///
    /// # Errors
    ///
    /// As [`get`](Self::get).
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Bytes>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }
}

impl CacheTier for Cache<String, Bytes> {
    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(Cache::get(self, &key.to_owned()))
    }

    fn insert(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        let options = match ttl {
            Some(t) => EntryOptions::new().ttl(t),
            None => EntryOptions::new(),
        };
        self.insert_with(key.to_owned(), value, options)
    }

    fn invalidate(&self, key: &str) -> Result<()> {
        Cache::invalidate(self, &key.to_owned());
        Ok(())
    }
}
