//! CPU-bound work off the async executor.

use crate::error::{Error, Result};

/// Runs CPU-bound `work` on the rayon pool and awaits its result without blocking the
/// caller's executor thread (Parquet encoding, per-slice aggregation, model training).
///
/// A panic inside `work` comes back as an [`ErrorKind::Internal`](crate::ErrorKind::Internal)
/// error instead of unwinding into the caller. Never call this from inside a rayon task
/// and then block on it: the pool would wait on itself.
pub async fn on_rayon<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let (tx, rx) = futures::channel::oneshot::channel();
    rayon::spawn(move || {
        let out =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_owned());
                Err(Error::internal(format!(
                    "a task on the rayon pool panicked: {what}"
                )))
            });
        let _ = tx.send(out);
    });
    rx.await
        .map_err(|_| Error::internal("a task on the rayon pool ended without a result"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn returns_the_value_and_turns_panics_into_errors() {
        let v = futures::executor::block_on(on_rayon(|| Ok(6 * 7))).expect("no error");
        assert_eq!(v, 42);
        let e = futures::executor::block_on(on_rayon::<(), _>(|| panic!("boom")))
            .expect_err("a panic is an error");
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(e.message().contains("boom"), "{e}");
    }
}
