//! [`NatsLog`] as a [`lakehouse_core::EventLog`], and its checkpoints.

use async_nats::jetstream::kv;
use lakehouse_core::{
    Error, ErrorKind, Position, PutRecord, PutResult, ReadBatch, ReadLimit, Result, SequenceNumber,
    ShardId, ShardInfo,
};

use super::{NatsLog, remote};

/// The checkpoint key of `group` on `shard`: characters other than letters, digits,
/// `_` and `-` are written as `=XX` (their UTF-8 bytes in hex).
fn checkpoint_key(group: &str, shard: ShardId) -> String {
    let mut key = String::with_capacity(group.len() + 8);
    for b in group.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            key.push(b as char);
        } else {
            key.push_str(&format!("={b:02X}"));
        }
    }
    key.push_str(&format!(".{}", shard.0));
    key
}

impl NatsLog {
    fn check_group(&self, group: &str) -> Result<()> {
        if group.is_empty() {
            return Err(
                Error::new(ErrorKind::InvalidInput, "consumer group name is empty")
                    .with_table(&self.inner.name),
            );
        }
        Ok(())
    }

    /// The checkpoint of `group` on `shard` and its KV revision.
    async fn checkpoint_entry(
        &self,
        group: &str,
        shard: ShardId,
    ) -> Result<Option<(SequenceNumber, u64)>> {
        self.check_group(group)?;
        self.shard_info(shard).await?;
        let entry = self
            .inner
            .checkpoints
            .entry(checkpoint_key(group, shard))
            .await
            .map_err(|e| remote(&self.inner.name, "read a checkpoint", e).with_shard(shard))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let seq = std::str::from_utf8(&entry.value)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| {
                Error::new(ErrorKind::Corrupt, "a checkpoint in KV is not a number")
                    .with_table(&self.inner.name)
                    .with_shard(shard)
                    .with_key(group)
            })?;
        Ok(Some((seq, entry.revision)))
    }

    /// The last checkpoint of `group` on `shard`.
    ///
    /// # Errors
    ///
    /// `ShardNotFound`, `InvalidInput` for an empty group, `Unavailable`.
    pub async fn checkpoint(&self, group: &str, shard: ShardId) -> Result<Option<SequenceNumber>> {
        Ok(self.checkpoint_entry(group, shard).await?.map(|(s, _)| s))
    }

    /// Sets the checkpoint of `group` on `shard` to `sequence`, whatever it was.
    ///
    /// # Errors
    ///
    /// `ShardNotFound`, `InvalidInput` for an empty group, `Unavailable`.
    pub async fn commit_checkpoint(
        &self,
        group: &str,
        shard: ShardId,
        sequence: SequenceNumber,
    ) -> Result<()> {
        self.check_group(group)?;
        self.shard_info(shard).await?;
        self.inner
            .checkpoints
            .put(checkpoint_key(group, shard), sequence.to_string().into())
            .await
            .map(|_| ())
            .map_err(|e| remote(&self.inner.name, "write a checkpoint", e).with_shard(shard))
    }

    /// Moves the checkpoint of `group` on `shard` forward to `sequence`, by
    /// compare-and-swap on its KV revision: a checkpoint never moves back, whichever
    /// client writes. Returns the checkpoint now stored (greater than `sequence` when
    /// another client had already moved it further).
    ///
    /// # Errors
    ///
    /// `ShardNotFound`, `InvalidInput` for an empty group, `Unavailable`, `Conflict`
    /// when the key kept changing under the swap.
    pub async fn advance_checkpoint(
        &self,
        group: &str,
        shard: ShardId,
        sequence: SequenceNumber,
    ) -> Result<SequenceNumber> {
        let key = checkpoint_key(group, shard);
        let store = &self.inner.checkpoints;
        for _ in 0..16 {
            let value = sequence.to_string().into();
            let outcome = match self.checkpoint_entry(group, shard).await? {
                Some((current, _)) if current >= sequence => return Ok(current),
                Some((_, revision)) => store.update(&key, value, revision).await.map(|_| ()),
                None => store.create(&key, value).await.map(|_| ()).map_err(|e| {
                    // Someone created it first: go round again.
                    kv::UpdateError::with_source(kv::UpdateErrorKind::WrongLastRevision, e)
                }),
            };
            match outcome {
                Ok(()) => return Ok(sequence),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => {
                    return Err(
                        remote(&self.inner.name, "advance a checkpoint", e).with_shard(shard)
                    );
                }
            }
        }
        Err(Error::new(
            ErrorKind::Conflict,
            "the checkpoint kept changing under compare-and-swap",
        )
        .with_table(&self.inner.name)
        .with_shard(shard)
        .with_key(group))
    }

    /// All shards, open and closed, in id order, from the shard map in KV.
    ///
    /// # Errors
    ///
    /// `Unavailable` when the server cannot be reached.
    pub async fn shards(&self) -> Result<Vec<ShardInfo>> {
        Ok(self.refresh().await?.shards.clone())
    }
}

#[lakehouse_core::async_trait]
impl lakehouse_core::EventLog for NatsLog {
    async fn shards(&self) -> Result<Vec<ShardInfo>> {
        NatsLog::shards(self).await
    }

    async fn put(&self, record: PutRecord) -> Result<PutResult> {
        self.put_many(vec![record], None)
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::new(ErrorKind::Internal, "a put got no result")))
    }

    async fn put_batch(&self, records: Vec<PutRecord>) -> Result<Vec<Result<PutResult>>> {
        Ok(self.put_many(records, None).await)
    }

    async fn read(&self, shard: ShardId, from: Position, limit: ReadLimit) -> Result<ReadBatch> {
        self.read_at(shard, from, limit).await
    }

    async fn commit_checkpoint(
        &self,
        group: &str,
        shard: ShardId,
        sequence: SequenceNumber,
    ) -> Result<()> {
        NatsLog::commit_checkpoint(self, group, shard, sequence).await
    }

    async fn checkpoint(&self, group: &str, shard: ShardId) -> Result<Option<SequenceNumber>> {
        NatsLog::checkpoint(self, group, shard).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_keys_are_valid_kv_keys() {
        assert_eq!(checkpoint_key("sink-1", ShardId(3)), "sink-1.3");
        assert_eq!(checkpoint_key("a.b c", ShardId(0)), "a=2Eb=20c.0");
        assert_ne!(
            checkpoint_key("a.b", ShardId(0)),
            checkpoint_key("a=2Eb", ShardId(0))
        );
    }
}
