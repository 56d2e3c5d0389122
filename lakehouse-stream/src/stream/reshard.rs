//! Resharding: splitting a shard in two and merging two adjacent shards, with
//! parent/child lineage.

use std::sync::Arc;

use lakehouse_core::{Error, ErrorKind, Result, ShardId};

use super::Stream;
use super::shard::{Shard, Topology};
use crate::durable::{self, ShardFiles, ShardMeta};

impl Stream {
    /// Splits an open shard at `new_starting_hash_key`: the lower child owns
    /// `[start, key - 1]`, the upper `[key, end]`. The parent is closed for puts and
    /// stays readable. Returns the children's ids.
    ///
    /// # Errors
    ///
    /// `ShardNotFound`; `InvalidInput` for a closed shard or a key outside
    /// `(start, end]`.
    pub fn split_shard(
        &self,
        shard: ShardId,
        new_starting_hash_key: u128,
    ) -> Result<(ShardId, ShardId)> {
        let mut topology = self.inner.topology.write();
        let parent = topology.all.get(shard.0 as usize).cloned().ok_or_else(|| {
            Error::new(ErrorKind::ShardNotFound, "no such shard").with_shard(shard)
        })?;
        let (start, end) = parent.range;
        if !(start < new_starting_hash_key && new_starting_hash_key <= end) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("hash key {new_starting_hash_key} is not inside ({start}, {end}]"),
            )
            .with_shard(shard));
        }
        let log = parent.log.lock();
        if log.closed {
            return Err(
                Error::new(ErrorKind::InvalidInput, "the shard is already closed")
                    .with_shard(shard),
            );
        }
        drop(log);
        let lo = ShardId(topology.all.len() as u32);
        let hi = ShardId(lo.0 + 1);
        let children = [
            self.new_shard(lo, vec![shard], (start, new_starting_hash_key - 1)),
            self.new_shard(hi, vec![shard], (new_starting_hash_key, end)),
        ];
        self.persist_topology(&topology, &[shard], &children)?;
        topology.replace_open(&self.inner.routing, &[shard], &children);
        parent.log.lock().closed = true;
        parent.data.notify_all();
        Ok((lo, hi))
    }

    /// Merges two open, adjacent shards (`a` directly below `b` in hash-key order)
    /// into a new shard; both parents are closed and stay readable.
    ///
    /// # Errors
    ///
    /// `ShardNotFound`; `InvalidInput` when either is closed or they are not adjacent.
    pub fn merge_shards(&self, a: ShardId, b: ShardId) -> Result<ShardId> {
        let mut topology = self.inner.topology.write();
        let get =
            |id: ShardId| {
                topology.all.get(id.0 as usize).cloned().ok_or_else(|| {
                    Error::new(ErrorKind::ShardNotFound, "no such shard").with_shard(id)
                })
            };
        let (sa, sb) = (get(a)?, get(b)?);
        if sa.range.1.checked_add(1) != Some(sb.range.0) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{a} and {b} are not adjacent (the first must be directly below the second)"
                ),
            ));
        }
        if sa.log.lock().closed || sb.log.lock().closed {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "both shards must be open",
            ));
        }
        let child = ShardId(topology.all.len() as u32);
        let added = [self.new_shard(child, vec![a, b], (sa.range.0, sb.range.1))];
        self.persist_topology(&topology, &[a, b], &added)?;
        topology.replace_open(&self.inner.routing, &[a, b], &added);
        sa.log.lock().closed = true;
        sb.log.lock().closed = true;
        sa.data.notify_all();
        sb.data.notify_all();
        Ok(child)
    }

    fn new_shard(&self, id: ShardId, parents: Vec<ShardId>, range: (u128, u128)) -> Arc<Shard> {
        let files = self
            .inner
            .durable
            .as_ref()
            .map(|d| ShardFiles::new(&d.dir, id));
        Shard::new(id, parents, range, files)
    }

    /// Writes the topology that closing `closing` and adding `added` gives (durable
    /// streams), before the change is made in memory.
    fn persist_topology(
        &self,
        topology: &Topology,
        closing: &[ShardId],
        added: &[Arc<Shard>],
    ) -> Result<()> {
        let Some(d) = &self.inner.durable else {
            return Ok(());
        };
        let metas: Vec<ShardMeta> = topology
            .all
            .iter()
            .chain(added)
            .map(|s| s.meta(closing.contains(&s.id)))
            .collect();
        durable::write_topology(&d.dir, &metas).map_err(|e| e.with_table(&self.inner.name))
    }
}
