//! [`RedisTopK`]: heavy hitters on a Redis sorted set.

use std::fmt;
use std::sync::Arc;

use lakehouse_core::{Error, ErrorKind, Result};

use super::pool::Pool;

/// Heavy hitters on a Redis sorted set (`ZINCRBY`, `ZREVRANGE`): exact counts shared by
/// every process, for top sellers across a fleet. Made by
/// [`RedisCache::top_k`](crate::RedisCache::top_k).
#[derive(Clone)]
pub struct RedisTopK {
    pool: Arc<Pool>,
    key: String,
}

impl fmt::Debug for RedisTopK {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTopK").field("key", &self.key).finish()
    }
}

impl RedisTopK {
    pub(crate) fn new(pool: Arc<Pool>, key: String) -> Self {
        RedisTopK { pool, key }
    }

    /// Adds `weight` to `member`.
    ///
    /// # Errors
    ///
    /// When Redis fails; see [`RedisCache`](crate::RedisCache#errors) for the kinds.
    pub fn record(&self, member: &str, weight: f64) -> Result<()> {
        self.record_many(&[(member, weight)])
    }

    /// Adds several weights in one pipelined round trip.
    ///
    /// # Errors
    ///
    /// When Redis fails; see [`RedisCache`](crate::RedisCache#errors) for the kinds.
    pub fn record_many(&self, updates: &[(&str, f64)]) -> Result<()> {
        let mut pipe = redis::pipe();
        for (member, weight) in updates {
            pipe.cmd("ZINCRBY")
                .arg(&self.key)
                .arg(*weight)
                .arg(*member)
                .ignore();
        }
        self.pool.run(|c| pipe.query::<()>(c))
    }

    /// The `k` heaviest members with their weights, heaviest first.
    ///
    /// # Errors
    ///
    /// When Redis fails; see [`RedisCache`](crate::RedisCache#errors) for the kinds.
    pub fn top(&self, k: usize) -> Result<Vec<(String, f64)>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        self.pool.run(|c| {
            redis::cmd("ZREVRANGE")
                .arg(&self.key)
                .arg(0)
                .arg(k as i64 - 1)
                .arg("WITHSCORES")
                .query(c)
        })
    }

    /// Multiplies every weight by `factor` (0 < factor <= 1): call it on a schedule
    /// for exponentially decayed trending.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidConfig`] for a factor outside (0, 1]; when Redis fails, see
    /// [`RedisCache`](crate::RedisCache#errors) for the kinds.
    pub fn decay(&self, factor: f64) -> Result<()> {
        if !(factor > 0.0 && factor <= 1.0) {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("decay factor {factor} is not in (0, 1]"),
            ));
        }
        self.pool.run(|c| {
            redis::cmd("ZUNIONSTORE")
                .arg(&self.key)
                .arg(1)
                .arg(&self.key)
                .arg("WEIGHTS")
                .arg(factor)
                .query::<()>(c)
        })
    }

    /// Deletes the set.
    ///
    /// # Errors
    ///
    /// When Redis fails; see [`RedisCache`](crate::RedisCache#errors) for the kinds.
    pub fn clear(&self) -> Result<()> {
        self.pool
            .run(|c| redis::cmd("DEL").arg(&self.key).query::<()>(c))
    }
}
