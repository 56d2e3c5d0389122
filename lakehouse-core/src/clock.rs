//! [`Clock`]: time, injected so that tests control it.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time. Components take one instead of reading the system clock,
/// so tests can move time by hand with [`ManualClock`].
pub trait Clock: Send + Sync + Debug {
    /// Microseconds since the Unix epoch.
    fn now_micros(&self) -> i64;

    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> i64 {
        self.now_micros().div_euclid(1000)
    }
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
        }
    }
}

/// A clock that moves only when told to. Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    micros: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock showing `millis` milliseconds since the epoch.
    pub fn at_millis(millis: i64) -> Self {
        let clock = ManualClock::default();
        clock.set_micros(millis.saturating_mul(1000));
        clock
    }

    /// Sets the time.
    pub fn set_micros(&self, micros: i64) {
        self.micros.store(micros, Ordering::SeqCst);
    }

    /// Moves the time forward by `millis` milliseconds.
    pub fn advance_millis(&self, millis: i64) {
        self.micros
            .fetch_add(millis.saturating_mul(1000), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> i64 {
        self.micros.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::at_millis(1_000);
        let shared = c.clone();
        assert_eq!(c.now_millis(), 1_000);
        shared.advance_millis(250);
        assert_eq!(c.now_millis(), 1_250);
        assert_eq!(c.now_micros(), 1_250_000);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_millis() > 1_577_836_800_000);
    }
}
