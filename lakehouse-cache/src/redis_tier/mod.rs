//! The Redis tier (feature `redis`): [`RedisCache`] and [`RedisTopK`].
//!
//! Both share a [`Pool`](pool::Pool) of blocking connections with a circuit breaker;
//! Redis failures become [`Error`](lakehouse_core::Error)s whose kind follows the
//! client's own classification of the failure and whose source is the Redis error.

mod cache;
mod pool;
mod topk;

pub use self::cache::{InvalidationListener, RedisCache, RedisCacheBuilder, RedisStats};
pub use self::topk::RedisTopK;
