//! Consumer-group checkpoints: how far each group processed each shard.

use lakehouse_core::{Result, SequenceNumber, ShardId};

use super::Stream;
use crate::durable::{self, Durability};

impl Stream {
    /// Records that `group` processed `shard` up to and including `sequence`.
    ///
    /// # Errors
    ///
    /// `ShardNotFound`.
    pub fn commit_checkpoint(
        &self,
        group: &str,
        shard: ShardId,
        sequence: SequenceNumber,
    ) -> Result<()> {
        self.shard(shard)?;
        let mut checkpoints = self.inner.checkpoints.lock();
        checkpoints.insert((group.to_owned(), shard), sequence);
        if let Some(d) = &self.inner.durable {
            durable::write_checkpoints(
                &d.dir,
                checkpoints.iter().map(|((g, s), q)| (g.as_str(), *s, *q)),
                d.durability != Durability::None,
            )
            .map_err(|e| e.with_table(&self.inner.name))?;
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
