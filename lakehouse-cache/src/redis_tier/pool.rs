//! The connections to one Redis server, their circuit breaker, and how a Redis failure
//! becomes an [`Error`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use lakehouse_core::{Clock, Error, ErrorKind, Result};
use parking_lot::Mutex;

/// Connections to one Redis server, with a circuit breaker: after a failure, calls fail
/// fast for `retry_after` instead of waiting on a dead server.
pub(crate) struct Pool {
    pub(crate) client: redis::Client,
    slots: Vec<Mutex<Option<redis::Connection>>>,
    next: AtomicUsize,
    pub(crate) timeout: Duration,
    retry_after: i64,
    down_until: AtomicI64,
    /// Failed or skipped calls, the invalidation listener's included.
    pub(crate) errors: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl Pool {
    /// `size` connections (opened lazily) to the server of `client`.
    pub(crate) fn new(
        client: redis::Client,
        size: usize,
        timeout: Duration,
        retry_after: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Pool {
            client,
            slots: (0..size).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            timeout,
            retry_after: i64::try_from(retry_after.as_micros()).unwrap_or(i64::MAX),
            down_until: AtomicI64::new(i64::MIN),
            errors: AtomicU64::new(0),
            clock,
        }
    }

    /// Counts a failed or skipped call.
    fn failed(&self, e: Error) -> Error {
        self.errors.fetch_add(1, Ordering::Relaxed);
        e
    }

    /// Runs `f` on one of the connections, connecting first if needed.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Unavailable`] while the circuit breaker is open; otherwise the
    /// Redis error as the source, with the kind [`kind_of`] gives it.
    pub(crate) fn run<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let now = self.clock.now_micros();
        if now < self.down_until.load(Ordering::Relaxed) {
            return Err(self.failed(Error::new(
                ErrorKind::Unavailable,
                "redis is marked down after a recent failure",
            )));
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock();
        if slot.is_none() {
            match self.client.get_connection_with_timeout(self.timeout) {
                Ok(c) => {
                    let _ = c.set_read_timeout(Some(self.timeout));
                    let _ = c.set_write_timeout(Some(self.timeout));
                    *slot = Some(c);
                }
                Err(e) => {
                    self.down_until
                        .store(now.saturating_add(self.retry_after), Ordering::Relaxed);
                    return Err(self.failed(redis_error("cannot connect to redis", e)));
                }
            }
        }
        let conn = slot.as_mut().expect("connected above");
        match f(conn) {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    *slot = None;
                    self.down_until
                        .store(now.saturating_add(self.retry_after), Ordering::Relaxed);
                }
                Err(self.failed(redis_error("redis command failed", e)))
            }
        }
    }
}

/// `e` as the source of an error of the kind [`kind_of`] gives it.
pub(crate) fn redis_error(message: &str, e: redis::RedisError) -> Error {
    Error::new(kind_of(&e), message).with_source(e)
}

/// The kind of a Redis failure, from the client's classification of it (never from its
/// text); [`RedisCache`](crate::RedisCache#errors) documents the mapping.
pub(crate) fn kind_of(e: &redis::RedisError) -> ErrorKind {
    use redis::{ErrorKind as Redis, ServerErrorKind as Server};
    if e.is_timeout() {
        return ErrorKind::Timeout;
    }
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        return ErrorKind::Unavailable;
    }
    match e.kind() {
        Redis::Server(
            Server::BusyLoading
            | Server::TryAgain
            | Server::ClusterDown
            | Server::MasterDown
            | Server::ReadOnly
            | Server::Moved
            | Server::Ask,
        )
        | Redis::ClusterConnectionNotFound
        | Redis::MasterNameNotFoundBySentinel
        | Redis::NoValidReplicasFoundBySentinel
        | Redis::EmptySentinelList => ErrorKind::Unavailable,
        Redis::InvalidClientConfig | Redis::AuthenticationFailed => ErrorKind::InvalidConfig,
        Redis::Parse => ErrorKind::Corrupt,
        Redis::UnexpectedReturnType => ErrorKind::TypeMismatch,
        Redis::RESP3NotSupported => ErrorKind::Unsupported,
        _ => ErrorKind::External,
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::io;

    use super::*;

    fn kind(e: impl Into<redis::RedisError>) -> ErrorKind {
        kind_of(&e.into())
    }

    #[test]
    fn kinds_follow_the_redis_classification() {
        let io_kind = |k: io::ErrorKind| kind(io::Error::new(k, "x"));
        assert_eq!(io_kind(io::ErrorKind::TimedOut), ErrorKind::Timeout);
        assert_eq!(io_kind(io::ErrorKind::WouldBlock), ErrorKind::Timeout);
        assert_eq!(
            io_kind(io::ErrorKind::ConnectionRefused),
            ErrorKind::Unavailable
        );
        assert_eq!(
            io_kind(io::ErrorKind::ConnectionReset),
            ErrorKind::Unavailable
        );
        assert_eq!(io_kind(io::ErrorKind::Other), ErrorKind::Unavailable);
        let general = |k: redis::ErrorKind| kind((k, "x"));
        assert_eq!(general(redis::ErrorKind::Io), ErrorKind::Unavailable);
        assert_eq!(
            general(redis::ErrorKind::AuthenticationFailed),
            ErrorKind::InvalidConfig
        );
        assert_eq!(
            general(redis::ErrorKind::InvalidClientConfig),
            ErrorKind::InvalidConfig
        );
        assert_eq!(general(redis::ErrorKind::Parse), ErrorKind::Corrupt);
        assert_eq!(
            general(redis::ErrorKind::UnexpectedReturnType),
            ErrorKind::TypeMismatch
        );
        assert_eq!(
            general(redis::ErrorKind::RESP3NotSupported),
            ErrorKind::Unsupported
        );
        assert_eq!(general(redis::ErrorKind::Client), ErrorKind::External);
        let reply = redis::make_extension_error("WRONGTYPE".into(), Some("not a set".into()));
        assert_eq!(kind(reply), ErrorKind::External);
    }

    #[test]
    fn the_redis_error_is_the_source() {
        let e = redis_error(
            "redis command failed",
            io::Error::new(io::ErrorKind::TimedOut, "read timed out").into(),
        );
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert_eq!(e.message(), "redis command failed");
        let source = e.source().expect("the redis error");
        assert!(source.downcast_ref::<redis::RedisError>().is_some());
    }
}
