//! A runtime-free cancellation signal.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll, Waker};

use parking_lot::Mutex;

/// A cancellation signal shared by clones: [`cancel`](Self::cancel) once, and every
/// [`cancelled`](Self::cancelled) future completes, now and later.
///
/// It needs no async runtime: waiters are woken through their own [`Waker`]s, so the
/// same token can stop a query on tokio and a workflow step on another executor.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

#[derive(Debug, Default)]
struct CancelInner {
    flag: AtomicBool,
    waiters: Mutex<Waiters>,
}

#[derive(Debug, Default)]
struct Waiters {
    next: u64,
    wakers: HashMap<u64, Waker>,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Cancels: wakes every waiter.
    pub fn cancel(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut self.inner.waiters.lock().wakers);
        for waker in wakers.into_values() {
            waker.wake();
        }
    }

    /// `true` once [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// Completes when the token is cancelled (at once if it already is).
    pub fn cancelled(&self) -> Cancelled<'_> {
        Cancelled {
            token: self,
            key: None,
        }
    }
}

/// The future of [`CancelToken::cancelled`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Cancelled<'a> {
    token: &'a CancelToken,
    key: Option<u64>,
}

impl Future for Cancelled<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.token.is_cancelled() {
            return Poll::Ready(());
        }
        let inner = self.token.inner.clone();
        let mut waiters = inner.waiters.lock();
        // Checked again under the lock: `cancel` sets the flag before it takes the wakers.
        if self.token.is_cancelled() {
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(key) => key,
            None => {
                let key = waiters.next;
                waiters.next += 1;
                self.key = Some(key);
                key
            }
        };
        waiters.wakers.insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Cancelled<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.token.inner.waiters.lock().wakers.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_wakes_waiters_and_late_waiters_return_at_once() {
        let token = CancelToken::new();
        let mut waiting = Box::pin(token.cancelled());
        assert!(
            futures::executor::block_on(futures::future::poll_immediate(&mut waiting)).is_none()
        );
        assert_eq!(token.inner.waiters.lock().wakers.len(), 1);
        let clone = token.clone();
        let thread = std::thread::spawn(move || clone.cancel());
        futures::executor::block_on(waiting);
        thread.join().expect("the cancelling thread does not panic");
        assert!(token.is_cancelled());
        futures::executor::block_on(token.cancelled());
    }

    #[test]
    fn dropped_waiters_are_forgotten() {
        let token = CancelToken::new();
        for _ in 0..100 {
            let mut waiting = Box::pin(token.cancelled());
            assert!(
                futures::executor::block_on(futures::future::poll_immediate(&mut waiting))
                    .is_none()
            );
        }
        assert!(token.inner.waiters.lock().wakers.is_empty());
    }
}
