//! How far behind each stage is, waiting for stages to catch up, and the process's
//! memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::BoxError;

/// A consumer that makes no progress for this long while behind cannot catch up.
pub(crate) const STALLED: Duration = Duration::from_secs(30);

/// How far each consumer of the stream is behind the producer, in records.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Behind {
    pub(crate) table: u64,
    pub(crate) cache: u64,
    pub(crate) fold_in: u64,
}

impl Behind {
    pub(crate) fn text(&self) -> String {
        format!(
            "table {}, cache {}, fold-in {}",
            self.table, self.cache, self.fold_in
        )
    }
}

/// A `kB` field of `/proc/self/status` in megabytes, on Linux.
pub(crate) fn status_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The process's peak resident set size (`VmHWM`).
pub(crate) fn peak_rss_mb() -> Option<f64> {
    status_mb("VmHWM:")
}

/// The process's resident set size now (`VmRSS`).
pub(crate) fn rss_mb() -> Option<f64> {
    status_mb("VmRSS:")
}

/// Returns once `flag` is set.
pub(crate) async fn wait_flag(flag: &AtomicBool) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `behind` (records a consumer has still to process) is zero; fails only
/// when it stops shrinking for [`STALLED`], naming the consumer and how far behind it is.
pub(crate) async fn catch_up(what: &str, behind: impl Fn() -> u64) -> Result<(), BoxError> {
    let t = Instant::now();
    let (mut best, mut improved) = (behind(), Instant::now());
    let mut said = Instant::now();
    while best > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = behind();
        if now < best {
            (best, improved) = (now, Instant::now());
        }
        if improved.elapsed() > STALLED {
            return Err(format!(
                "{what} is {best} records behind and made no progress for {} s",
                STALLED.as_secs()
            )
            .into());
        }
        if said.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "waiting for {what}: {best} records behind after {:.0} s",
                t.elapsed().as_secs_f64()
            );
            said = Instant::now();
        }
    }
    Ok(())
}
