//! Read-through loading with request coalescing.

use std::error::Error as StdError;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use hashbrown::HashMap;
use lakehouse_core::{Error, ErrorKind, Result};
use parking_lot::{Condvar, Mutex};

use crate::cache::Cache;

struct Pending<V> {
    result: Mutex<Option<Result<V>>>,
    ready: Condvar,
}

type AsyncLoad<V> = Shared<BoxFuture<'static, Result<V>>>;

/// The loads in flight and the remembered failures of one cache.
pub(crate) struct Loads<K, V> {
    pending: Mutex<HashMap<K, Arc<Pending<V>>>>,
    pending_async: Mutex<HashMap<K, AsyncLoad<V>>>,
    negative: Mutex<HashMap<K, (i64, Error)>>,
    negative_ttl: Option<i64>,
    /// At most this many failures are remembered.
    negative_capacity: usize,
}

/// The most failures a cache remembers, whatever its capacity.
const MAX_NEGATIVE: u64 = 1 << 16;

impl<K, V> Loads<K, V> {
    /// Loads of a cache holding `capacity` entries (or weight): it remembers as many
    /// failures, within `16..=65,536`.
    pub(crate) fn new(negative_ttl: Option<i64>, capacity: u64) -> Self {
        Loads {
            pending: Mutex::new(HashMap::new()),
            pending_async: Mutex::new(HashMap::new()),
            negative: Mutex::new(HashMap::new()),
            negative_ttl,
            negative_capacity: usize::try_from(capacity.clamp(16, MAX_NEGATIVE))
                .unwrap_or(usize::MAX),
        }
    }

    /// Failures remembered now.
    #[cfg(test)]
    pub(crate) fn negative_len(&self) -> usize {
        self.negative.lock().len()
    }
}

/// Wakes the waiters of a load whose loader panicked.
struct Abandon<'a, K: Hash + Eq, V> {
    loads: &'a Loads<K, V>,
    key: &'a K,
    pending: &'a Arc<Pending<V>>,
    done: bool,
}

impl<K: Hash + Eq, V> Drop for Abandon<'_, K, V> {
    fn drop(&mut self) {
        if !self.done {
            *self.pending.result.lock() = Some(Err(abandoned()));
            self.loads.pending.lock().remove(self.key);
            self.pending.ready.notify_all();
        }
    }
}

/// Makes room for one more remembered failure: when `negative` is full, drops the
/// expired ones and, if that is not enough, the quarter closest to expiry. Sweeps are
/// rare (a quarter of the capacity at least frees up each time), so remembering a
/// failure stays O(1) amortised however many distinct keys fail.
fn make_room<K: Hash + Eq>(negative: &mut HashMap<K, (i64, Error)>, capacity: usize, now: i64) {
    if negative.len() < capacity {
        return;
    }
    negative.retain(|_, (deadline, _)| now < *deadline);
    if negative.len() < capacity.saturating_sub(capacity / 4).max(1) {
        return;
    }
    let mut deadlines: Vec<i64> = negative.values().map(|(d, _)| *d).collect();
    let cut = (deadlines.len() / 4).max(1);
    let (_, &mut threshold, _) = deadlines.select_nth_unstable(cut - 1);
    let mut dropped = 0;
    negative.retain(|_, (deadline, _)| {
        if *deadline <= threshold && dropped < cut {
            dropped += 1;
            false
        } else {
            true
        }
    });
}

/// What the waiters of an async load get when its loader panicked.
fn abandoned() -> Error {
    Error::new(ErrorKind::Abandoned, "the loader for this key panicked")
}

/// A loader's failure: an [`ErrorKind::External`] error with the loader's error as the
/// source (an [`Error`] of a lower layer included, which
/// [`find_kind`](Error::find_kind) finds).
fn loader_error(e: impl Into<Box<dyn StdError + Send + Sync>>) -> Error {
    let source: Box<dyn StdError + Send + Sync> = e.into();
    Error::new(ErrorKind::External, source.to_string()).with_source(source)
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn negative_hit(&self, key: &K) -> Option<Error> {
        self.loads().negative_ttl?;
        let now = self.clock().now_micros();
        let mut negative = self.loads().negative.lock();
        match negative.get(key) {
            Some((deadline, e)) if now < *deadline => Some(e.clone()),
            Some(_) => {
                negative.remove(key);
                None
            }
            None => None,
        }
    }

    fn finish_load(&self, key: &K, started: Instant, result: &Result<V>) {
        let c = self.counters();
        c.load_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        match result {
            Ok(v) => {
                c.loads.fetch_add(1, Ordering::Relaxed);
                // A value too heavy to cache is still returned to the callers.
                let _ = self.insert(key.clone(), v.clone());
            }
            Err(e) => {
                c.load_failures.fetch_add(1, Ordering::Relaxed);
                if let Some(ttl) = self.loads().negative_ttl {
                    let now = self.clock().now_micros();
                    let mut negative = self.loads().negative.lock();
                    make_room(&mut negative, self.loads().negative_capacity, now);
                    negative.insert(key.clone(), (now.saturating_add(ttl), e.clone()));
                }
            }
        }
    }

    /// The value of `key`, loading it with `load` on a miss.
    ///
    /// Concurrent misses on the same key run `load` once: the other callers block
    /// until it finishes and receive its value or its error. Errors are not cached
    /// unless the cache has a [negative ttl](crate::CacheBuilder::negative_ttl).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::External`] with the loader's error as the source;
    /// [`ErrorKind::Abandoned`] for the waiters of a loader that panicked.
    pub fn get_or_load<F, E>(&self, key: K, load: F) -> Result<V>
    where
        F: FnOnce(&K) -> std::result::Result<V, E>,
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        if let Some(v) = self.get(&key) {
            return Ok(v);
        }
        if let Some(e) = self.negative_hit(&key) {
            return Err(e);
        }
        let (pending, leader) = {
            let mut map = self.loads().pending.lock();
            match map.get(&key) {
                Some(p) => (p.clone(), false),
                None => {
                    // Another loader may have finished between our miss and the lock.
                    if let Some(v) = self.get_recheck(&key) {
                        return Ok(v);
                    }
                    let p = Arc::new(Pending {
                        result: Mutex::new(None),
                        ready: Condvar::new(),
                    });
                    map.insert(key.clone(), p.clone());
                    (p, true)
                }
            }
        };
        if !leader {
            let mut result = pending.result.lock();
            while result.is_none() {
                pending.ready.wait(&mut result);
            }
            return result
                .clone()
                .unwrap_or_else(|| Err(Error::new(ErrorKind::Abandoned, "no result was set")));
        }
        let mut guard = Abandon {
            loads: self.loads(),
            key: &key,
            pending: &pending,
            done: false,
        };
        let started = Instant::now();
        let result = load(&key).map_err(loader_error);
        self.finish_load(&key, started, &result);
        *pending.result.lock() = Some(result.clone());
        self.loads().pending.lock().remove(&key);
        pending.ready.notify_all();
        guard.done = true;
        result
    }

    /// The async form of [`get_or_load`](Self::get_or_load): concurrent misses on the
    /// same key await one load. The load keeps running while any caller still awaits
    /// it.
    ///
    /// # Errors
    ///
    /// As [`get_or_load`](Self::get_or_load): a loader that panics fails the load with
    /// [`ErrorKind::Abandoned`] for every caller awaiting it (the panic goes no
    /// further), and the next call loads again.
    pub async fn get_or_load_async<F, Fut, E>(&self, key: K, load: F) -> Result<V>
    where
        F: FnOnce(K) -> Fut,
        Fut: Future<Output = std::result::Result<V, E>> + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>>,
    {
        if let Some(v) = self.get(&key) {
            return Ok(v);
        }
        if let Some(e) = self.negative_hit(&key) {
            return Err(e);
        }
        let shared = {
            let mut map = self.loads().pending_async.lock();
            match map.get(&key) {
                Some(s) => s.clone(),
                None => {
                    if let Some(v) = self.get_recheck(&key) {
                        return Ok(v);
                    }
                    let cache = self.clone();
                    let k = key.clone();
                    let fut = load(key.clone());
                    let task = async move {
                        let started = Instant::now();
                        // A panicking loader fails this load for every waiter and
                        // leaves the key free for the next one.
                        let result = match AssertUnwindSafe(fut).catch_unwind().await {
                            Ok(r) => {
                                let result = r.map_err(loader_error);
                                cache.finish_load(&k, started, &result);
                                result
                            }
                            Err(_) => {
                                cache
                                    .counters()
                                    .load_failures
                                    .fetch_add(1, Ordering::Relaxed);
                                Err(abandoned())
                            }
                        };
                        cache.loads().pending_async.lock().remove(&k);
                        result
                    }
                    .boxed()
                    .shared();
                    map.insert(key.clone(), task.clone());
                    task
                }
            }
        };
        shared.await
    }
}
