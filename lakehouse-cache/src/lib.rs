//! The hot-item tier of the Lakehouse: what many users ask for in a short span (top
//! sellers, items trending now, hot query results) kept in memory at very high rates.
//!
//! * [`Cache`]: a bounded concurrent cache (entries or weight), time to live and to
//!   idle, per-entry expiry and tags, invalidation by key, predicate, prefix or tag, an
//!   eviction listener, statistics, and read-through loading where concurrent misses
//!   on one key run the loader once ([`Cache::get_or_load`],
//!   [`Cache::get_or_load_async`]).
//! * [`CacheTier`]: the byte-oriented contract shared with the Redis tier.
//! * [`SpaceSaving`], [`TopK`], [`GroupedTopK`]: heavy hitters with a documented error
//!   bound, mergeable, with optional exponential decay for "trending now".
//!
//! Errors are the workspace's one [`Error`] type (from `lakehouse-core`, re-exported
//! here): branch on its [`ErrorKind`]; a loader's or Redis's own error is its `source()`.
//!
//! # Quick start
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use lakehouse_cache::{Cache, EntryOptions, GroupedTopK, TopK};
//! use lakehouse_core::SystemClock;
//!
//! let cache: Cache<String, Arc<str>> = Cache::builder()
//!     .max_weight(64 << 20, |k: &String, v: &Arc<str>| (k.len() + v.len()) as u64)
//!     .time_to_live(Duration::from_secs(300))
//!     .build()?;
//! cache.insert_with("sql:top-toys".into(), Arc::from("kettle,toaster"), EntryOptions::new().tag("sales"))?;
//! assert_eq!(cache.get(&"sql:top-toys".into()).as_deref(), Some("kettle,toaster"));
//!
//! // Read-through: the loader runs only on a miss.
//! let v = cache.get_or_load("sql:top-books".into(), |_| Ok::<_, std::io::Error>(Arc::from("atlas")))?;
//! assert_eq!(&*v, "atlas");
//! assert_eq!(cache.invalidate_tag("sales"), 1);
//!
//! // Trending items with a 10-minute half-life, and top sellers per category.
//! let trending = TopK::trending(1024, 4, Duration::from_secs(600), Arc::new(SystemClock));
//! trending.record(42u64, 1.0);
//! assert_eq!(trending.top(1)[0].key, 42);
//! let sellers = GroupedTopK::new(1024, None, Arc::new(SystemClock));
//! sellers.record(&"toys", 7u64, 3.0);
//! assert_eq!(sellers.top(&"toys", 1)[0].estimate, 3.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! * `redis` (off by default): `RedisCache`, the [`CacheTier`] contract on Redis with an
//!   in-process near cache, pipelining and cross-process invalidation over pub/sub; and
//!   `RedisTopK`, heavy hitters on a Redis sorted set. No `redis` type appears in the
//!   public API. When Redis is down the near cache keeps serving and errors are counted.
//!
//! # Runtime
//!
//! Everything is synchronous and lock-based with short critical sections; no thread or
//! task is spawned. [`Cache::get_or_load`] blocks the calling thread while another
//! caller's loader runs; [`Cache::get_or_load_async`] awaits instead and works on any
//! executor. Eviction listeners run on the thread that caused the removal, outside the
//! cache's locks. The Redis tier uses blocking connections with timeouts (default
//! 200 ms): from async code, call it inside `spawn_blocking`. Its invalidation listener
//! runs on one background thread.

mod builder;
mod cache;
mod entry;
mod expiry;
mod load;
#[cfg(feature = "redis")]
mod redis_tier;
mod shard;
mod space_saving;
mod stats;
mod tier;
mod topk;

pub use lakehouse_core::{Context, Error, ErrorKind, Result};

pub use crate::builder::CacheBuilder;
pub use crate::cache::Cache;
pub use crate::entry::{EntryOptions, RemovalCause};
#[cfg(feature = "redis")]
pub use crate::redis_tier::{
    InvalidationListener, RedisCache, RedisCacheBuilder, RedisStats, RedisTopK,
};
pub use crate::space_saving::{HeavyHitter, SpaceSaving};
pub use crate::stats::CacheStats;
pub use crate::tier::CacheTier;
pub use crate::topk::{GroupedTopK, TopK};
