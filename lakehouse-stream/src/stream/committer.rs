//! The disk work of puts made through the async `EventLog` contract, run on a
//! thread of the stream's own so that an executor's worker never waits for a write
//! or an fsync: the put appends its records in memory, hands the rest here and
//! awaits it. The thread joins the group commit like any writer, so async and
//! blocking puts share fsync rounds.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};

use lakehouse_core::{Error, ErrorKind, Result};
use parking_lot::{Condvar, Mutex};

use super::Inner;
use super::shard::Shard;

/// Disk work a put left to do.
#[derive(Debug)]
pub(super) enum Job {
    /// Wait until commit ticket `n` is durable (running rounds as needed).
    Commit(u64),
    /// Write the pending frames of these shards (their buffers are full).
    Write(Vec<Arc<Shard>>),
}

#[derive(Debug, Default)]
struct Slot {
    done: Option<Result<()>>,
    waker: Option<Waker>,
}

fn complete(slot: &Mutex<Slot>, result: Result<()>) {
    let waker = {
        let mut s = slot.lock();
        s.done = Some(result);
        s.waker.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
}

/// Resolves when its job is done.
#[derive(Debug)]
pub(super) struct Done {
    slot: Arc<Mutex<Slot>>,
}

impl Future for Done {
    type Output = Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
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

#[derive(Debug, Default)]
struct Queue {
    jobs: Vec<(Job, Arc<Mutex<Slot>>)>,
    started: bool,
    stopped: bool,
}

/// The queue of a stream's committer thread (started by the first job).
#[derive(Debug, Default)]
pub(super) struct Committer {
    queue: Mutex<Queue>,
    wake: Condvar,
}

fn closed() -> Error {
    Error::new(
        ErrorKind::Io,
        "the stream was closed before its writes were done",
    )
}

impl Committer {
    /// Queues `job` for the thread of `inner`, starting it if needed. Without a
    /// thread (it cannot be started) the job runs on the caller's.
    pub(super) fn submit(self: &Arc<Self>, inner: &Arc<Inner>, job: Job) -> Done {
        let slot = Arc::new(Mutex::new(Slot::default()));
        let mut q = self.queue.lock();
        if q.stopped {
            drop(q);
            complete(&slot, Err(closed()));
            return Done { slot };
        }
        if !q.started {
            let me = self.clone();
            let weak = Arc::downgrade(inner);
            let spawned = std::thread::Builder::new()
                .name("lakehouse-stream-commit".into())
                .spawn(move || me.run(&weak));
            if spawned.is_err() {
                drop(q);
                complete(&slot, run_one(inner, &job));
                return Done { slot };
            }
            q.started = true;
        }
        q.jobs.push((job, slot.clone()));
        drop(q);
        self.wake.notify_one();
        Done { slot }
    }

    /// Stops the thread once its queue is empty (the stream is being dropped).
    pub(super) fn stop(&self) {
        self.queue.lock().stopped = true;
        self.wake.notify_all();
    }

    fn run(&self, weak: &Weak<Inner>) {
        loop {
            let jobs = {
                let mut q = self.queue.lock();
                while q.jobs.is_empty() && !q.stopped {
                    self.wake.wait(&mut q);
                }
                if q.jobs.is_empty() {
                    return;
                }
                std::mem::take(&mut q.jobs)
            };
            let Some(inner) = weak.upgrade() else {
                for (_, slot) in jobs {
                    complete(&slot, Err(closed()));
                }
                return;
            };
            // One wait covers every commit ticket queued.
            let newest = jobs
                .iter()
                .filter_map(|(j, _)| match j {
                    Job::Commit(t) => Some(*t),
                    Job::Write(_) => None,
                })
                .max();
            let committed = newest.map(|t| run_one(&inner, &Job::Commit(t)));
            for (job, slot) in jobs {
                let result = match (&job, &committed) {
                    (Job::Commit(_), Some(r)) => r.clone(),
                    _ => run_one(&inner, &job),
                };
                complete(&slot, result);
            }
            drop(inner);
        }
    }
}

fn run_one(inner: &Inner, job: &Job) -> Result<()> {
    match job {
        Job::Commit(ticket) => inner.commit(*ticket),
        Job::Write(shards) => inner.write_full(shards),
    }
}
