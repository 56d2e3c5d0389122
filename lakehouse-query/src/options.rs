//! How one query runs: [`QueryOptions`].

use std::time::Duration;

use lakehouse_core::CancelToken;

/// How a query runs: its workload queue, cancellation, timeout, memory and caching.
///
/// ```
/// use std::time::Duration;
/// use lakehouse_query::{CancelToken, QueryOptions};
///
/// let cancel = CancelToken::new();
/// let options = QueryOptions::new()
///     .queue("dashboards")
///     .timeout(Duration::from_secs(5))
///     .cancel(cancel.clone())
///     .memory_limit(256 << 20);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct QueryOptions {
    pub(crate) queue: Option<String>,
    pub(crate) cancel: Option<CancelToken>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) memory_limit: Option<usize>,
    pub(crate) no_cache: bool,
}

impl QueryOptions {
    /// The engine's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs in this workload queue instead of [`WorkloadQueue::DEFAULT`](crate::WorkloadQueue::DEFAULT).
    pub fn queue(mut self, name: impl Into<String>) -> Self {
        self.queue = Some(name.into());
        self
    }

    /// Cancels the query, running or queued, when the token is cancelled from anywhere:
    /// it fails with [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled) and releases
    /// its memory.
    pub fn cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Fails the query with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) after this
    /// long (queueing included).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Overrides the engine's per-query memory limit.
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = Some(bytes);
        self
    }

    /// Neither reads nor fills the result cache.
    pub fn bypass_cache(mut self) -> Self {
        self.no_cache = true;
        self
    }
}
