//! Running CPU-bound work (decoding) off the caller's executor, on a thread of its
//! own, with a future for the result: works on any executor.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use lakehouse_core::{Error, ErrorKind, Result};
use parking_lot::Mutex;

struct Slot<T> {
    done: Option<Result<T>>,
    waker: Option<Waker>,
}

/// The result of [`offload`].
pub(crate) struct Offloaded<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> Future for Offloaded<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let mut s = self.slot.lock();
        match s.done.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

fn run<T>(f: impl FnOnce() -> T) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| {
        Error::new(
            ErrorKind::Internal,
            "work run off the executor panicked (a decoder bug)",
        )
    })
}

/// Runs `f` on a new thread (on the caller's when none can be started); a panic in
/// `f` becomes an `Internal` error.
pub(crate) fn offload<T, F>(f: F) -> Offloaded<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let slot = Arc::new(Mutex::new(Slot {
        done: None,
        waker: None,
    }));
    let shared = slot.clone();
    // The closure comes back if the thread cannot be started.
    let f = Arc::new(Mutex::new(Some(f)));
    let task = f.clone();
    let spawned = std::thread::Builder::new()
        .name("lakehouse-stream-decode".into())
        .spawn(move || {
            let Some(f) = task.lock().take() else {
                return;
            };
            let result = run(f);
            let waker = {
                let mut s = shared.lock();
                s.done = Some(result);
                s.waker.take()
            };
            if let Some(w) = waker {
                w.wake();
            }
        });
    if spawned.is_err()
        && let Some(f) = f.lock().take()
    {
        slot.lock().done = Some(run(f));
    }
    Offloaded { slot }
}
