//! User handlers that panic: the panic is caught and becomes an error of the invocation,
//! so that it fails one batch or one task and never the runtime.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

/// Calls `call` and awaits the future it returns; a panic in either is caught and
/// returned as its message.
pub(crate) async fn catch_panic<F, Fut>(call: F) -> Result<Fut::Output, String>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
        Err(panic) => Err(panic),
    };
    outcome.map_err(|panic| panic_message(panic.as_ref()).to_owned())
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_their_message() {
        let run =
            |f: fn() -> futures::future::Ready<u32>| futures::executor::block_on(catch_panic(f));
        assert_eq!(run(|| futures::future::ready(7)), Ok(7));
        assert_eq!(run(|| panic!("boom")), Err("boom".to_owned()));
        assert_eq!(
            run(|| panic!("{} {}", "formatted", 2)),
            Err("formatted 2".to_owned())
        );
        let payload = || -> futures::future::Ready<u32> { std::panic::panic_any(3_u8) };
        assert_eq!(run(payload), Err("non-string panic payload".to_owned()));
        let later = futures::executor::block_on(catch_panic(|| async { panic!("later") }));
        assert_eq!(later, Err::<(), _>("later".to_owned()));
    }
}
