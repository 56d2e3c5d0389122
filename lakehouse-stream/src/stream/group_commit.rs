//! Group commit of a durable stream: pending frames are written to the segments and
//! fsynced in rounds that cover every writer waiting when a round starts.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use lakehouse_core::{Error, ErrorKind, Result};
use parking_lot::{Condvar, Mutex, MutexGuard};

use super::committer::Job;
use super::put::Wait;
use super::shard::Shard;
use super::{Inner, Stream};
use crate::durable::{CheckpointLog, Durability, ShardFiles};

/// Pending frames of a shard are written to its segment once they reach this size
/// (durable streams without per-batch fsync).
pub(super) const FLUSH_BYTES: usize = 1 << 20;

/// The body of the thread that fsyncs a [`Durability::Interval`] stream.
pub(super) fn interval_sync(weak: &Weak<Inner>, every: Duration) {
    loop {
        std::thread::sleep(every);
        let Some(inner) = weak.upgrade() else {
            return;
        };
        if let Some(d) = &inner.durable {
            let target = d.appended.fetch_add(1, Ordering::SeqCst) + 1;
            // A failure is kept in the commit state and reported to `sync` callers.
            let _ = inner.commit(target);
        }
    }
}

/// The durable side of a stream: its directory and the group-commit state.
#[derive(Debug)]
pub(super) struct Durable {
    pub(super) dir: PathBuf,
    pub(super) durability: Durability,
    segment_bytes: u64,
    /// Tickets handed to appenders; a commit round covers every ticket issued before it
    /// starts.
    appended: AtomicU64,
    commit: Mutex<CommitState>,
    committed: Condvar,
    /// A checkpoint changed since `CHECKPOINTS` was last written. Checkpoints are
    /// written by commit rounds, never by the consumer that commits them.
    pub(super) checkpoints_dirty: AtomicBool,
    /// Why the last write of `CHECKPOINTS` failed (cleared by one that succeeds);
    /// held while it is written.
    pub(super) checkpoints_failed: Mutex<Option<Error>>,
    /// The `CHECKPOINTS` file (lock order: after `checkpoints_failed`).
    checkpoint_log: Mutex<CheckpointLog>,
    _lock: File,
}

#[derive(Debug)]
struct CommitState {
    /// Every ticket up to this one is durable.
    synced: u64,
    /// A writer is running a commit round.
    leading: bool,
    /// A write or fsync failed: what is durable is unknown, so the stream refuses to
    /// acknowledge anything more.
    failed: Option<String>,
}

impl Durable {
    /// The durable side of a stream kept in `dir`, whose advisory lock `lock` holds.
    pub(super) fn new(
        dir: PathBuf,
        durability: Durability,
        segment_bytes: u64,
        lock: File,
        checkpoint_log: CheckpointLog,
    ) -> Durable {
        Durable {
            dir,
            durability,
            segment_bytes,
            appended: AtomicU64::new(0),
            commit: Mutex::new(CommitState {
                synced: 0,
                leading: false,
                failed: None,
            }),
            committed: Condvar::new(),
            checkpoints_dirty: AtomicBool::new(false),
            checkpoints_failed: Mutex::new(None),
            checkpoint_log: Mutex::new(checkpoint_log),
            _lock: lock,
        }
    }
}

impl Inner {
    /// After records were appended to some shards (of which `full` are those whose
    /// pending frames reached `FLUSH_BYTES`): writes or commits them per the
    /// durability setting, now ([`Wait::Block`]) or by pushing the work to `jobs` for
    /// the committer thread ([`Wait::Defer`]).
    pub(super) fn after_append(
        &self,
        full: &[Arc<Shard>],
        wait: Wait,
        jobs: &mut Vec<Job>,
    ) -> Result<()> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        match d.durability {
            Durability::PerBatch => {
                let ticket = d.appended.fetch_add(1, Ordering::SeqCst) + 1;
                match wait {
                    Wait::Block => self.commit(ticket),
                    Wait::Defer => {
                        jobs.push(Job::Commit(ticket));
                        Ok(())
                    }
                }
            }
            Durability::None | Durability::Interval(_) if full.is_empty() => Ok(()),
            Durability::None | Durability::Interval(_) => match wait {
                Wait::Block => self.write_full(full),
                Wait::Defer => {
                    jobs.push(Job::Write(full.to_vec()));
                    Ok(())
                }
            },
        }
    }

    /// Writes the pending frames of `full` to their segments (streams without
    /// per-batch fsync).
    pub(super) fn write_full(&self, full: &[Arc<Shard>]) -> Result<()> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        for shard in full {
            if let Some(files) = &shard.files {
                let mut files = files.lock();
                self.write_pending(shard, &mut files)?;
            }
        }
        if d.durability == Durability::None && !full.is_empty() {
            // Not a failure of the put: reported to `commit_checkpoint`.
            let _ = self.write_checkpoints(false);
        }
        Ok(())
    }

    /// Writes `shard`'s pending frames to its newest segment, deletes segments that
    /// retention emptied and lets the written records leave the memory window.
    fn write_pending(&self, shard: &Shard, files: &mut ShardFiles) -> Result<()> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        let (buf, first, oldest) = {
            let mut log = shard.log.lock();
            (
                std::mem::take(&mut log.pending),
                log.pending_first,
                log.first,
            )
        };
        let sync = d.durability != Durability::None;
        let written = files
            .append(&buf, first, d.segment_bytes, sync)
            .and_then(|marks| files.retain(oldest).map(|()| marks))
            .map_err(|e| e.with_table(&self.name));
        match written {
            Ok(marks) => {
                // The written records may now leave the memory window.
                let end = files.written_end();
                shard
                    .log
                    .lock()
                    .written_to(end, marks, self.memory_window_bytes);
                Ok(())
            }
            Err(e) => {
                d.commit.lock().failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Appends the checkpoints that changed since they were last written to
    /// `CHECKPOINTS`, and fsyncs it with `sync` if anything in it is not yet durable.
    /// Every checkpoint committed before the call is in the file when it returns
    /// `Ok`; a failure is kept for `commit_checkpoint` to report, and the next round
    /// tries again.
    pub(super) fn write_checkpoints(&self, sync: bool) -> Result<()> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        // Held across the snapshot and the write, so that writes do not interleave and
        // an older snapshot never replaces a newer one.
        let mut failed = d.checkpoints_failed.lock();
        let dirty = d.checkpoints_dirty.swap(false, Ordering::SeqCst);
        let mut log = d.checkpoint_log.lock();
        if !(dirty || sync && log.unsynced()) {
            return Ok(());
        }
        // A checkpoint committed after this snapshot sets the flag again.
        let snapshot = self.checkpoints.lock().clone();
        let written = log
            .write(&snapshot, sync)
            .map_err(|e| e.with_table(&self.name));
        drop(log);
        match written {
            Ok(()) => {
                *failed = None;
                Ok(())
            }
            Err(e) => {
                d.checkpoints_dirty.store(true, Ordering::SeqCst);
                *failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// One commit round: writes every shard's pending frames and, with `sync`, fsyncs
    /// every segment written since its last fsync (in parallel) while `CHECKPOINTS` is
    /// written if a checkpoint changed, then lets readers see what became durable.
    /// Only a failure of the segments fails the round (and the stream).
    fn flush(&self, sync: bool) -> Result<()> {
        let shards = self.topology.read().all.clone();
        let mut to_sync = Vec::new();
        for shard in &shards {
            let Some(files) = &shard.files else {
                continue;
            };
            let mut files = files.lock();
            self.write_pending(shard, &mut files)?;
            if sync && files.unsynced() {
                to_sync.push(shard);
            }
        }
        let sync_one = |shard: &Shard| -> Result<()> {
            let Some(files) = &shard.files else {
                return Ok(());
            };
            let mut files = files.lock();
            files.sync().map_err(|e| e.with_table(&self.name))?;
            let end = files.written_end();
            drop(files);
            let mut log = shard.log.lock();
            if self.gated && end > log.visible {
                log.visible = end;
                drop(log);
                shard.data.notify_all();
            }
            Ok(())
        };
        let checkpoints_dirty = self.durable.as_ref().is_some_and(|d| {
            d.checkpoints_dirty.load(Ordering::SeqCst)
                || (sync && d.checkpoint_log.lock().unsynced())
        });
        match (to_sync.len(), checkpoints_dirty) {
            (0, _) => {
                let _ = self.write_checkpoints(sync);
                Ok(())
            }
            (1, false) => sync_one(to_sync[0]),
            _ => std::thread::scope(|s| {
                // Its failure is kept for `commit_checkpoint`, not the round's.
                let checkpoints =
                    checkpoints_dirty.then(|| s.spawn(|| self.write_checkpoints(sync)));
                let handles: Vec<_> = to_sync[1..]
                    .iter()
                    .map(|shard| s.spawn(|| sync_one(shard)))
                    .collect();
                let mut result = sync_one(to_sync[0]);
                for h in handles {
                    let r = h.join().unwrap_or_else(|_| {
                        Err(Error::new(ErrorKind::Internal, "an fsync thread panicked"))
                    });
                    if result.is_ok() {
                        result = r;
                    }
                }
                if let Some(h) = checkpoints {
                    let _ = h.join();
                }
                result
            }),
        }
    }

    /// Waits until ticket `ticket` is durable, running commit rounds while no other
    /// writer does: writers that arrive during a round's fsync are all covered by the
    /// next round (group commit).
    pub(super) fn commit(&self, ticket: u64) -> Result<()> {
        let Some(d) = &self.durable else {
            return Ok(());
        };
        let mut st = d.commit.lock();
        loop {
            if let Some(failed) = &st.failed {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!(
                        "an earlier write or fsync failed, nothing more is acknowledged: {failed}"
                    ),
                )
                .with_table(&self.name));
            }
            if st.synced >= ticket {
                return Ok(());
            }
            if st.leading {
                d.committed.wait(&mut st);
                continue;
            }
            st.leading = true;
            let (target, result) = MutexGuard::unlocked(&mut st, || {
                let target = d.appended.load(Ordering::SeqCst);
                (target, self.flush(true))
            });
            st.leading = false;
            match result {
                Ok(()) => st.synced = st.synced.max(target),
                Err(e) => {
                    st.failed.get_or_insert_with(|| e.to_string());
                }
            }
            d.committed.notify_all();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.committer.stop();
        if let Some(d) = &self.durable {
            // Best effort: `Stream::sync` reports errors; a drop cannot.
            let _ = self.flush(d.durability != Durability::None);
        }
    }
}

impl Stream {
    /// Writes every pending record of a durable stream to its segment and fsyncs it,
    /// whatever the [`Durability`] setting; returns when all records put and all
    /// checkpoints committed before the call are durable. Does nothing for an
    /// in-memory stream.
    ///
    /// # Errors
    ///
    /// `Io` when a write or fsync fails (now or earlier: after a failed fsync the
    /// stream acknowledges nothing more), or when the checkpoints cannot be written.
    pub fn sync(&self) -> Result<()> {
        let Some(d) = &self.inner.durable else {
            return Ok(());
        };
        let ticket = d.appended.fetch_add(1, Ordering::SeqCst) + 1;
        self.inner.commit(ticket)?;
        match d.checkpoints_failed.lock().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
