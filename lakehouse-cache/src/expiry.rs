//! Expiry: a cache's time to live and time to idle, and the per-entry deadlines, all
//! in microseconds of the cache's [`Clock`](lakehouse_core::Clock).

use std::time::Duration;

/// The deadline of an entry that never expires.
pub(crate) const NEVER: i64 = i64::MAX;

/// `d` in microseconds, saturating at `i64::MAX`.
pub(crate) fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// The expiry settings of one cache, in clock microseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expiry {
    /// Time to live of entries inserted without their own.
    ttl: Option<i64>,
    /// Time to idle: entries expire when not read for this long.
    tti: Option<i64>,
}

impl Expiry {
    pub(crate) fn new(ttl: Option<Duration>, tti: Option<Duration>) -> Self {
        Expiry {
            ttl: ttl.map(micros),
            tti: tti.map(micros),
        }
    }

    /// `true` when entries expire after a time without reads: reads then record when
    /// they happened.
    pub(crate) fn tracks_idle(&self) -> bool {
        self.tti.is_some()
    }

    /// The time to live of an entry inserted with `own` as its own (if any).
    pub(crate) fn ttl_for(&self, own: Option<Duration>) -> Option<i64> {
        own.map(micros).or(self.ttl)
    }

    /// `true` when telling whether an entry with deadline `expires_at` expired needs
    /// the clock: a lookup of an entry that never expires does not read it.
    pub(crate) fn needs_clock(&self, expires_at: i64) -> bool {
        expires_at != NEVER || self.tti.is_some()
    }

    /// `true` when an entry with deadline `expires_at`, last read at `last_access`, has
    /// expired at `now`.
    pub(crate) fn is_expired(&self, expires_at: i64, last_access: i64, now: i64) -> bool {
        now >= expires_at
            || self
                .tti
                .is_some_and(|tti| now.saturating_sub(last_access) >= tti)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lakehouse_core::ManualClock;

    use super::*;
    use crate::{Cache, EntryOptions};

    #[test]
    fn deadlines_and_idle_limits() {
        let e = Expiry::new(Some(Duration::from_secs(10)), Some(Duration::from_secs(3)));
        assert_eq!(e.ttl_for(None), Some(10_000_000));
        assert_eq!(e.ttl_for(Some(Duration::from_secs(1))), Some(1_000_000));
        assert!(e.needs_clock(NEVER), "time to idle needs the clock");
        assert!(!e.is_expired(NEVER, 0, 2_999_999));
        assert!(e.is_expired(NEVER, 0, 3_000_000), "idle for 3 s");
        assert!(e.is_expired(5, 5, 5), "deadline reached");
        let none = Expiry::new(None, None);
        assert_eq!(none.ttl_for(None), None);
        assert!(!none.needs_clock(NEVER));
        assert!(!none.is_expired(NEVER, 0, i64::MIN));
        assert_eq!(micros(Duration::MAX), i64::MAX);
    }

    #[test]
    fn expiry_follows_the_injected_clock() {
        let clock = ManualClock::at_millis(0);
        let cache: Cache<&str, i32> = Cache::builder()
            .max_entries(10)
            .time_to_live(Duration::from_secs(10))
            .time_to_idle(Duration::from_secs(3))
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        cache.insert("a", 1).unwrap();
        cache
            .insert_with("b", 2, EntryOptions::new().ttl(Duration::from_secs(1)))
            .unwrap();
        clock.advance_millis(1_500);
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.get(&"b"), None, "b's own ttl ran out");
        clock.advance_millis(2_000);
        assert_eq!(cache.get(&"a"), Some(1), "read 2 s ago, idle limit 3 s");
        clock.advance_millis(3_000);
        assert_eq!(cache.get(&"a"), None, "idle for 3 s");
        cache.insert("c", 3).unwrap();
        clock.advance_millis(2_000);
        assert_eq!(cache.get(&"c"), Some(3));
        clock.advance_millis(2_000);
        assert_eq!(cache.get(&"c"), Some(3));
        clock.advance_millis(2_000);
        assert_eq!(cache.get(&"c"), Some(3));
        clock.advance_millis(5_000);
        assert_eq!(cache.get(&"c"), None, "ttl of 10 s ran out despite reads");
        assert_eq!(cache.stats().expirations, 3);
        // Purging removes expired entries that nobody reads.
        cache.insert("d", 4).unwrap();
        cache.insert("e", 5).unwrap();
        clock.advance_millis(3_000);
        assert_eq!(cache.purge_expired(), 2);
        assert_eq!(cache.entry_count(), 0);
        assert_eq!(cache.invalidate_all(), 0);
    }

    #[test]
    fn contains_key_honours_the_idle_limit() {
        let clock = ManualClock::at_millis(0);
        let cache: Cache<&str, i32> = Cache::builder()
            .max_entries(10)
            .time_to_idle(Duration::from_secs(3))
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        cache.insert("a", 1).unwrap();
        clock.advance_millis(2_000);
        assert!(cache.contains_key(&"a"), "idle for 2 s, limit 3 s");
        assert!(!cache.contains_key(&"b"));
        clock.advance_millis(2_000);
        // contains_key is not a read: "a" has been idle since its insert, 4 s ago.
        assert!(!cache.contains_key(&"a"), "idle for 4 s");
        assert_eq!(cache.get(&"a"), None);
    }
}
