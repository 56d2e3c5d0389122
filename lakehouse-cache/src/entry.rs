//! What callers say about one entry ([`EntryOptions`]) and what they are told when it
//! leaves ([`RemovalCause`]).

use std::sync::Arc;
use std::time::Duration;

/// Why an entry left the cache, as the eviction listener is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalCause {
    /// Evicted to stay within capacity.
    Size,
    /// Its time to live or time to idle ran out.
    Expired,
    /// Removed by an `invalidate*` call.
    Explicit,
    /// Overwritten by an insert of the same key.
    Replaced,
}

/// Per-entry settings for [`Cache::insert_with`](crate::Cache::insert_with).
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct EntryOptions {
    pub(crate) ttl: Option<Duration>,
    pub(crate) tags: Vec<Arc<str>>,
}

impl EntryOptions {
    /// Default settings: the cache's time to live, no tags.
    pub fn new() -> Self {
        Self::default()
    }

    /// This entry expires `ttl` after insertion, whatever the cache's default.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Tags the entry so that [`Cache::invalidate_tag`](crate::Cache::invalidate_tag)
    /// can remove it.
    pub fn tag(mut self, tag: impl Into<Arc<str>>) -> Self {
        self.tags.push(tag.into());
        self
    }
}
