//! Injected time for the flow runtime: [`Timer`] (a clock plus sleeping), the tokio
//! implementation and a simulated one for tests.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskCx, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;
use lakehouse_core::{Clock, ManualClock, SystemClock};
use parking_lot::Mutex;

/// A clock that can also sleep: everything in this crate reads time and waits through
/// one, so tests can replace real time with [`ManualTimer`].
pub trait Timer: Send + Sync + fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> i64;

    /// A future that completes once `duration` has passed on this timer's clock.
    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()>;
}

/// Real time: a [`Clock`] (the system clock by default) and `tokio::time::sleep`.
///
/// Its sleeps need a tokio runtime with the time driver enabled.
#[derive(Debug, Clone)]
pub struct TokioTimer {
    clock: Arc<dyn Clock>,
}

impl TokioTimer {
    /// The system clock and tokio's sleep.
    pub fn new() -> Self {
        TokioTimer {
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads the time from `clock` (record ages, timestamps in history) and sleeps with
    /// tokio.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        TokioTimer { clock }
    }
}

impl Default for TokioTimer {
    fn default() -> Self {
        TokioTimer::new()
    }
}

impl Timer for TokioTimer {
    fn now_millis(&self) -> i64 {
        self.clock.now_millis()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(duration))
    }
}

#[derive(Debug, Default)]
struct ManualState {
    next_id: u64,
    /// Pending sleeps by (deadline in micros, id).
    sleepers: BTreeMap<(i64, u64), Option<Waker>>,
    /// Every duration ever passed to `sleep`, in call order.
    requested: Vec<Duration>,
}

/// Simulated time over a [`ManualClock`]: a sleep completes when the clock reaches its
/// deadline, and the clock moves only through [`advance`](Self::advance),
/// [`advance_to_next`](Self::advance_to_next) or [`run`](Self::run).
///
/// Share the same [`ManualClock`] with a [`MemoryLog`](lakehouse_core::MemoryLog) so that record
/// arrival times and the runtime's sense of "now" agree. Clones share the timer.
#[derive(Debug, Clone, Default)]
pub struct ManualTimer {
    clock: ManualClock,
    state: Arc<Mutex<ManualState>>,
}

impl ManualTimer {
    /// A timer that reads and moves `clock`.
    pub fn new(clock: ManualClock) -> Self {
        ManualTimer {
            clock,
            state: Arc::default(),
        }
    }

    /// The clock this timer moves.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// Moves the clock forward by `duration` and wakes the sleeps that are due.
    pub fn advance(&self, duration: Duration) {
        self.clock
            .set_micros(self.clock.now_micros().saturating_add(micros(duration)));
        self.wake_due();
    }

    /// Moves the clock to the earliest pending deadline (if it lies ahead) and wakes the
    /// sleeps that are due. Returns `false` when nothing is sleeping.
    pub fn advance_to_next(&self) -> bool {
        let next = self.state.lock().sleepers.keys().next().map(|k| k.0);
        match next {
            Some(deadline) => {
                if deadline > self.clock.now_micros() {
                    self.clock.set_micros(deadline);
                }
                self.wake_due();
                true
            }
            None => false,
        }
    }

    /// How many sleeps are pending.
    pub fn pending(&self) -> usize {
        self.state.lock().sleepers.len()
    }

    /// Every duration passed to [`Timer::sleep`] so far, in call order.
    pub fn requested_sleeps(&self) -> Vec<Duration> {
        self.state.lock().requested.clone()
    }

    /// Drives `future` to completion in simulated time: polls it, lets the other tasks of
    /// the runtime run, and whenever everything is waiting, jumps the clock to the next
    /// pending deadline. Retries, backoff, waits and timeouts thus take no real time and
    /// happen in a deterministic order.
    ///
    /// Meant for a current-thread tokio runtime (`#[tokio::test]`), where "everything is
    /// waiting" is observable by yielding. If nothing ever completes the future and no
    /// sleep is pending, this keeps yielding forever.
    pub async fn run<F: Future>(&self, future: F) -> F::Output {
        const IDLE_YIELDS: usize = 64;
        let mut future = std::pin::pin!(future);
        loop {
            for _ in 0..IDLE_YIELDS {
                if let Poll::Ready(out) = futures::poll!(future.as_mut()) {
                    return out;
                }
                tokio::task::yield_now().await;
            }
            self.advance_to_next();
        }
    }

    fn wake_due(&self) {
        let now = self.clock.now_micros();
        let wakers: Vec<Waker> = {
            let mut state = self.state.lock();
            state
                .sleepers
                .range_mut(..=(now, u64::MAX))
                .filter_map(|(_, w)| w.take())
                .collect()
        };
        for w in wakers {
            w.wake();
        }
    }
}

impl Timer for ManualTimer {
    fn now_millis(&self) -> i64 {
        self.clock.now_millis()
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'static, ()> {
        let deadline = self.clock.now_micros().saturating_add(micros(duration));
        let id = {
            let mut state = self.state.lock();
            state.requested.push(duration);
            let id = state.next_id;
            state.next_id += 1;
            state.sleepers.insert((deadline, id), None);
            id
        };
        Box::pin(ManualSleep {
            timer: self.clone(),
            key: (deadline, id),
            done: false,
        })
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

struct ManualSleep {
    timer: ManualTimer,
    key: (i64, u64),
    done: bool,
}

impl Future for ManualSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskCx<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        let mut state = self.timer.state.lock();
        if self.timer.clock.now_micros() >= self.key.0 {
            state.sleepers.remove(&self.key);
            drop(state);
            self.done = true;
            return Poll::Ready(());
        }
        state.sleepers.insert(self.key, Some(cx.waker().clone()));
        Poll::Pending
    }
}

impl Drop for ManualSleep {
    fn drop(&mut self) {
        if !self.done {
            self.timer.state.lock().sleepers.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleep_completes_at_its_deadline() {
        let timer = ManualTimer::new(ManualClock::at_millis(1_000));
        let mut short = timer.sleep(Duration::from_millis(10));
        let mut long = timer.sleep(Duration::from_millis(50));
        assert!(futures::poll!(short.as_mut()).is_pending());
        assert_eq!(timer.pending(), 2);
        timer.advance(Duration::from_millis(9));
        assert!(futures::poll!(short.as_mut()).is_pending());
        assert!(timer.advance_to_next());
        assert_eq!(timer.now_millis(), 1_010);
        assert!(futures::poll!(short.as_mut()).is_ready());
        assert!(futures::poll!(long.as_mut()).is_pending());
        assert!(timer.advance_to_next());
        assert_eq!(timer.now_millis(), 1_050);
        assert!(futures::poll!(long.as_mut()).is_ready());
        assert!(!timer.advance_to_next());
        assert_eq!(
            timer.requested_sleeps(),
            vec![Duration::from_millis(10), Duration::from_millis(50)]
        );
    }

    #[tokio::test]
    async fn dropped_sleep_is_forgotten() {
        let timer = ManualTimer::default();
        let s = timer.sleep(Duration::from_secs(1));
        assert_eq!(timer.pending(), 1);
        drop(s);
        assert_eq!(timer.pending(), 0);
    }

    #[tokio::test]
    async fn run_jumps_over_sleeps() {
        let timer = ManualTimer::new(ManualClock::at_millis(0));
        let t = timer.clone();
        let out = timer
            .run(async move {
                t.sleep(Duration::from_secs(3600)).await;
                t.sleep(Duration::from_secs(60)).await;
                t.now_millis()
            })
            .await;
        assert_eq!(out, 3_660_000);
    }
}
