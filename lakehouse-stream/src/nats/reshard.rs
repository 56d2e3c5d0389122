//! Split and merge: child streams, the shard map replaced by compare-and-swap, the
//! parents sealed.

use async_nats::jetstream::kv;
use lakehouse_core::{Error, ErrorKind, Result, ShardId, ShardInfo};

use super::topology::Topology;
use super::{NatsLog, SHARDS_KEY, remote};

impl NatsLog {
    /// Splits open shard `shard` at `new_starting_hash_key`: the lower child takes
    /// the keys below it, the upper child the rest. Returns the children (lower,
    /// upper).
    ///
    /// # Errors
    ///
    /// `ShardNotFound`; `InvalidInput` when the shard is closed or the key is not
    /// inside its range above its first key; `Conflict` when another client changed
    /// the shard map first (read [`shards`](Self::shards) and decide again);
    /// `Unavailable`.
    pub async fn split_shard(
        &self,
        shard: ShardId,
        new_starting_hash_key: u128,
    ) -> Result<(ShardId, ShardId)> {
        let topology = self.refresh().await?;
        let parent = self.open_shard(&topology, shard)?;
        let (start, end) = parent.hash_range;
        if !(start < new_starting_hash_key && new_starting_hash_key <= end) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("hash key {new_starting_hash_key} is not inside ({start}, {end}]"),
            )
            .with_table(&self.inner.name)
            .with_shard(shard));
        }
        let lo = ShardId(topology.next_id());
        let hi = ShardId(lo.0 + 1);
        let children = [
            (lo, (start, new_starting_hash_key - 1)),
            (hi, (new_starting_hash_key, end)),
        ];
        self.reshard(&topology, &[shard], &children).await?;
        Ok((lo, hi))
    }

    /// Merges open shard `a` with open shard `b`, whose range starts right after
    /// `a`'s. Returns the child.
    ///
    /// # Errors
    ///
    /// `ShardNotFound`; `InvalidInput` when a shard is closed or they are not
    /// adjacent in that order; `Conflict` as for [`split_shard`](Self::split_shard);
    /// `Unavailable`.
    pub async fn merge_shards(&self, a: ShardId, b: ShardId) -> Result<ShardId> {
        let topology = self.refresh().await?;
        let (sa, sb) = (
            self.open_shard(&topology, a)?,
            self.open_shard(&topology, b)?,
        );
        if sa.hash_range.1.checked_add(1) != Some(sb.hash_range.0) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{a} and {b} are not adjacent (the first must be directly below the second)"
                ),
            )
            .with_table(&self.inner.name));
        }
        let child = ShardId(topology.next_id());
        self.reshard(
            &topology,
            &[a, b],
            &[(child, (sa.hash_range.0, sb.hash_range.1))],
        )
        .await?;
        Ok(child)
    }

    fn open_shard(&self, topology: &Topology, id: ShardId) -> Result<ShardInfo> {
        let s = topology.get(id).cloned().ok_or_else(|| {
            Error::new(ErrorKind::ShardNotFound, "no such shard")
                .with_table(&self.inner.name)
                .with_shard(id)
        })?;
        if s.closed {
            return Err(
                Error::new(ErrorKind::InvalidInput, "the shard is already closed")
                    .with_table(&self.inner.name)
                    .with_shard(id),
            );
        }
        Ok(s)
    }

    /// Creates the children's streams, swaps in the new map (parents closed), then
    /// seals the parents.
    async fn reshard(
        &self,
        topology: &Topology,
        parents: &[ShardId],
        children: &[(ShardId, (u128, u128))],
    ) -> Result<()> {
        for (id, _) in children {
            self.ensure_stream(*id).await?;
        }
        let mut next = topology.clone();
        for s in &mut next.shards {
            if parents.contains(&s.id) {
                s.closed = true;
            }
        }
        for &(id, range) in children {
            next.shards.push(ShardInfo {
                id,
                parents: parents.to_vec(),
                hash_range: range,
                closed: false,
            });
        }
        let revision = self
            .inner
            .meta
            .update(SHARDS_KEY, next.encode().into(), topology.revision)
            .await
            .map_err(|e| {
                if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                    Error::new(
                        ErrorKind::Conflict,
                        "another client changed the shard map first",
                    )
                    .with_table(&self.inner.name)
                } else {
                    remote(&self.inner.name, "update the shard map", e)
                }
            })?;
        next.revision = revision;
        self.install(next);
        for &p in parents {
            self.seal(p).await?;
        }
        Ok(())
    }
}
