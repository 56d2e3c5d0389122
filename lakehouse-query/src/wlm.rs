//! Workload management: named queues with a number of concurrent slots and a bounded
//! number of waiting queries.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lakehouse_core::{CancelToken, Error, ErrorKind, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A workload queue: at most `slots` queries of the queue run at once, at most
/// `max_queued` more wait for a slot, and a query waits at most `queue_timeout`.
///
/// ```
/// use std::time::Duration;
/// use lakehouse_query::WorkloadQueue;
///
/// let etl = WorkloadQueue::new("etl", 2)
///     .max_queued(16)
///     .queue_timeout(Duration::from_secs(30));
/// assert_eq!(etl.name(), "etl");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadQueue {
    name: String,
    slots: usize,
    max_queued: usize,
    queue_timeout: Option<Duration>,
}

impl WorkloadQueue {
    /// The name of the default queue, used when a query names none.
    pub const DEFAULT: &'static str = "default";

    /// A queue running `slots` queries at once (at least one), with up to 1024 waiting
    /// and no wait timeout.
    #[must_use]
    pub fn new(name: impl Into<String>, slots: usize) -> Self {
        WorkloadQueue {
            name: name.into(),
            slots: slots.max(1),
            max_queued: 1024,
            queue_timeout: None,
        }
    }

    /// At most this many queries wait; more fail with [`ErrorKind::Full`].
    #[must_use]
    pub fn max_queued(mut self, max_queued: usize) -> Self {
        self.max_queued = max_queued;
        self
    }

    /// A query that waits longer fails with [`ErrorKind::Timeout`].
    #[must_use]
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = Some(timeout);
        self
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Concurrent slots.
    pub fn slots(&self) -> usize {
        self.slots
    }
}

#[derive(Debug)]
struct Queue {
    config: WorkloadQueue,
    semaphore: Arc<Semaphore>,
    waiting: AtomicUsize,
}

/// Occupancy of one workload queue.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// The queue.
    pub name: String,
    /// Queries running.
    pub running: usize,
    /// Queries waiting for a slot.
    pub waiting: usize,
    /// Concurrent slots.
    pub slots: usize,
}

#[derive(Debug)]
pub(crate) struct Wlm {
    queues: HashMap<String, Queue>,
}

struct WaitGuard<'a>(&'a AtomicUsize);

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Wlm {
    pub(crate) fn new(queues: Vec<WorkloadQueue>) -> Self {
        let mut map = HashMap::new();
        for q in queues {
            map.insert(
                q.name.clone(),
                Queue {
                    semaphore: Arc::new(Semaphore::new(q.slots)),
                    waiting: AtomicUsize::new(0),
                    config: q,
                },
            );
        }
        Wlm { queues: map }
    }

    /// Waits for a slot of `queue`, giving up when `cancel` fires.
    pub(crate) async fn admit(
        &self,
        queue: &str,
        cancel: Option<&CancelToken>,
    ) -> Result<OwnedSemaphorePermit> {
        let q = self.queues.get(queue).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("no workload queue named {queue:?}"),
            )
            .with_key(queue)
        })?;
        if let Ok(permit) = q.semaphore.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if q.waiting.fetch_add(1, Ordering::AcqRel) >= q.config.max_queued {
            q.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::new(
                ErrorKind::Full,
                format!(
                    "workload queue {queue:?} already has {} queries waiting",
                    q.config.max_queued
                ),
            )
            .with_key(queue));
        }
        let _guard = WaitGuard(&q.waiting);
        let acquire = q.semaphore.clone().acquire_owned();
        let timeout = async {
            match q.config.queue_timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let cancelled = async {
            match cancel {
                Some(c) => c.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            permit = acquire => permit.map_err(|_| Error::internal("workload semaphore closed")),
            () = timeout => Err(Error::new(
                ErrorKind::Timeout,
                format!("waited longer than {:?} for a slot of workload queue {queue:?}",
                    q.config.queue_timeout.unwrap_or_default()),
            ).with_key(queue)),
            () = cancelled => Err(Error::new(ErrorKind::Cancelled, "cancelled while queued").with_key(queue)),
        }
    }

    pub(crate) fn stats(&self) -> Vec<QueueStats> {
        let mut out: Vec<_> = self
            .queues
            .values()
            .map(|q| QueueStats {
                name: q.config.name.clone(),
                running: q.config.slots - q.semaphore.available_permits(),
                waiting: q.waiting.load(Ordering::Acquire),
                slots: q.config.slots,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queues_then_refuses_when_full() {
        let wlm = Wlm::new(vec![WorkloadQueue::new("q", 1).max_queued(1)]);
        let first = wlm.admit("q", None).await.expect("a free slot");
        let wlm = Arc::new(wlm);
        let w2 = wlm.clone();
        let waiter = tokio::spawn(async move { w2.admit("q", None).await.map(|_| ()) });
        while wlm.stats()[0].waiting == 0 {
            tokio::task::yield_now().await;
        }
        let third = wlm.admit("q", None).await.expect_err("the queue is full");
        assert_eq!(third.kind(), ErrorKind::Full);
        drop(first);
        waiter
            .await
            .expect("joins")
            .expect("admitted after the slot frees");
        let unknown = wlm.admit("nope", None).await.expect_err("no such queue");
        assert_eq!(unknown.kind(), ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn cancel_while_queued() {
        let wlm = Wlm::new(vec![WorkloadQueue::new("q", 1)]);
        let _slot = wlm.admit("q", None).await.expect("a free slot");
        let token = CancelToken::new();
        token.cancel();
        let e = wlm.admit("q", Some(&token)).await.expect_err("cancelled");
        assert_eq!(e.kind(), ErrorKind::Cancelled);
        assert_eq!(wlm.stats()[0].waiting, 0);
    }
}
