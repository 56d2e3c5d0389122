//! Consumer-group checkpoints: how far each group processed each shard.

use std::sync::atomic::Ordering;

use lakehouse_core::{Result, SequenceNumber, ShardId};

use super::Stream;

impl Stream {
    /// Records that `group` processed `shard` up to and including `sequence`.
    ///
    /// The call only updates memory and never waits for the disk. A durable stream
    /// writes its checkpoints to its `CHECKPOINTS` file in its commit rounds, many
    /// calls to one write: under [`Durability::PerBatch`](crate::Durability::PerBatch)
    /// with the next put's fsync, under
    /// [`Durability::Interval`](crate::Durability::Interval) every interval, under
    /// [`Durability::None`](crate::Durability::None) with the next 1 MiB of frames
    /// written; and always in [`Stream::sync`] and when the stream is dropped. A crash
    /// before then loses only the newest checkpoints: a consumer resumes at its
    /// previous one and is given some records again (at-least-once), and no record is
    /// lost. Call [`Stream::sync`] for a checkpoint that must be durable now.
    ///
    /// # Errors
    ///
    /// `ShardNotFound`; `Io` when the last write of the checkpoints failed (the
    /// checkpoint is kept in memory, and the next commit round writes it again).
    pub fn commit_checkpoint(
        &self,
        group: &str,
        shard: ShardId,
        sequence: SequenceNumber,
    ) -> Result<()> {
        self.shard(shard)?;
        self.inner
            .checkpoints
            .lock()
            .insert((group.to_owned(), shard), sequence);
        if let Some(d) = &self.inner.durable {
            d.checkpoints_dirty.store(true, Ordering::SeqCst);
            // Held while a write is running: that write reports for itself.
            if let Some(failed) = d.checkpoints_failed.try_lock()
                && let Some(e) = failed.clone()
            {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The last checkpoint of `group` on `shard`.
    ///
    /// # Errors
    ///
    /// `ShardNotFound`.
    pub fn checkpoint(&self, group: &str, shard: ShardId) -> Result<Option<SequenceNumber>> {
        self.shard(shard)?;
        Ok(self
            .inner
            .checkpoints
            .lock()
            .get(&(group.to_owned(), shard))
            .copied())
    }
}
