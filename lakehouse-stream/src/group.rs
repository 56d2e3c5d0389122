//! [`ConsumerGroup`]: shards leased to group members, with checkpoints and rebalancing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lakehouse_core::{
    Clock, Error, ErrorKind, Position, ReadLimit, Record, Result, SequenceNumber, ShardId,
    ShardInfo,
};
use parking_lot::Mutex;

use crate::stream::Stream;

#[derive(Debug, Default)]
struct GroupState {
    /// Member id -> last heartbeat (ms).
    members: BTreeMap<String, i64>,
    /// Shard -> (owner, lease expiry in ms).
    leases: HashMap<ShardId, (String, i64)>,
    /// Where each shard's next read starts, per owner session.
    positions: HashMap<ShardId, Position>,
}

/// A consumer group on a [`Stream`]: shards are leased to live members, spread evenly;
/// each member reads its shards from the group's checkpoint and checkpoints what it has
/// processed. Delivery is at least once: when a lease moves (a member joins, leaves or
/// stops renewing), the new owner resumes after the last checkpoint.
///
/// A closed shard (split or merged) is leased only until it is read and checkpointed to
/// its end; its children are leased only after all their parents are finished, which
/// keeps per-key order. Cheap to clone: clones share the group.
#[derive(Clone)]
pub struct ConsumerGroup {
    stream: Stream,
    name: Arc<str>,
    lease_ms: i64,
    clock: Arc<dyn Clock>,
    state: Arc<Mutex<GroupState>>,
}

impl fmt::Debug for ConsumerGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("ConsumerGroup")
            .field("name", &self.name)
            .field("members", &state.members.len())
            .field("leases", &state.leases.len())
            .finish()
    }
}

impl ConsumerGroup {
    /// A group called `name` on `stream`; a member that does not renew within
    /// `lease` loses its shards.
    pub fn new(
        stream: Stream,
        name: impl Into<String>,
        lease: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        ConsumerGroup {
            stream,
            name: Arc::from(name.into()),
            lease_ms: crate::millis(lease),
            clock,
            state: Arc::new(Mutex::new(GroupState::default())),
        }
    }

    /// Adds (or renews) member `id` and rebalances.
    pub fn join(&self, id: impl Into<String>) -> Result<Member> {
        let id = id.into();
        if id.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "member id is empty"));
        }
        self.state
            .lock()
            .members
            .insert(id.clone(), self.clock.now_millis());
        self.rebalance()?;
        Ok(Member {
            group: self.clone(),
            id,
        })
    }

    /// A closed shard that the group has checkpointed to its last record.
    fn finished(&self, shard: &ShardInfo) -> Result<bool> {
        if !shard.closed {
            return Ok(false);
        }
        let from = match self.stream.checkpoint(&self.name, shard.id)? {
            Some(seq) => Position::AfterSequence(seq),
            None => Position::TrimHorizon,
        };
        let probe = self.stream.read_at(shard.id, from, ReadLimit::records(1))?;
        Ok(probe.records.is_empty() && probe.end_of_shard)
    }

    /// Drops expired members and spreads the readable shards evenly over the rest.
    /// Leases of live members stay where they are unless the spread is uneven.
    pub fn rebalance(&self) -> Result<()> {
        let now = self.clock.now_millis();
        let shards = self.stream.shards();
        // Shards come in id order, parents before children: a shard is finished only
        // when its parents are, so a grandchild never overtakes an unread grandparent.
        let mut finished: HashMap<ShardId, bool> = HashMap::new();
        for s in &shards {
            let parents_done = s
                .parents
                .iter()
                .all(|p| finished.get(p).copied().unwrap_or(true));
            let done = parents_done && self.finished(s)?;
            finished.insert(s.id, done);
        }
        let readable: Vec<ShardId> = shards
            .iter()
            .filter(|s| {
                !finished[&s.id]
                    && s.parents
                        .iter()
                        .all(|p| finished.get(p).copied().unwrap_or(true))
            })
            .map(|s| s.id)
            .collect();
        let mut state = self.state.lock();
        let lease_ms = self.lease_ms;
        state.members.retain(|_, beat| now - *beat < lease_ms);
        let members: Vec<String> = state.members.keys().cloned().collect();
        // Release leases of finished shards, gone members and expired leases.
        let GroupState {
            members: live,
            leases,
            positions,
        } = &mut *state;
        leases.retain(|shard, (owner, expiry)| {
            let keep = readable.contains(shard) && live.contains_key(owner) && *expiry > now;
            if !keep {
                positions.remove(shard);
            }
            keep
        });
        if members.is_empty() {
            return Ok(());
        }
        let mut owned: BTreeMap<String, Vec<ShardId>> =
            members.iter().map(|m| (m.clone(), Vec::new())).collect();
        for (shard, (owner, _)) in leases.iter() {
            if let Some(v) = owned.get_mut(owner) {
                v.push(*shard);
            }
        }
        // Every member gets `base` shards and `extra` members one more; members above
        // their share give shards back, the most loaded keeping the extra ones.
        let base = readable.len() / members.len();
        let mut extra = readable.len() % members.len();
        let mut by_load: Vec<&mut Vec<ShardId>> = owned.values_mut().collect();
        by_load.sort_by_key(|v| std::cmp::Reverse(v.len()));
        for shards in by_load {
            let cap = if extra > 0 && shards.len() > base {
                extra -= 1;
                base + 1
            } else {
                base
            };
            shards.sort();
            while shards.len() > cap {
                if let Some(s) = shards.pop() {
                    leases.remove(&s);
                    positions.remove(&s);
                }
            }
        }
        // Hand free shards to the least loaded members.
        let free: Vec<ShardId> = readable
            .iter()
            .filter(|s| !leases.contains_key(s))
            .copied()
            .collect();
        for shard in &free {
            let Some((owner, list)) = owned.iter_mut().min_by_key(|(_, v)| v.len()) else {
                break;
            };
            list.push(*shard);
            leases.insert(*shard, (owner.clone(), now + lease_ms));
        }
        Ok(())
    }

    /// Current leases: shard -> member.
    pub fn assignments(&self) -> BTreeMap<ShardId, String> {
        self.state
            .lock()
            .leases
            .iter()
            .map(|(s, (m, _))| (*s, m.clone()))
            .collect()
    }

    /// The group's name (its checkpoints are stored under it).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One member of a [`ConsumerGroup`].
#[derive(Debug, Clone)]
pub struct Member {
    group: ConsumerGroup,
    id: String,
}

impl Member {
    /// The member's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Renews the member and its leases; call it more often than the lease duration.
    pub fn heartbeat(&self) -> Result<()> {
        let now = self.group.clock.now_millis();
        {
            let mut state = self.group.state.lock();
            if !state.members.contains_key(&self.id) {
                return Err(
                    Error::new(ErrorKind::Closed, "member expired or left; join again")
                        .with_key(self.id.clone()),
                );
            }
            state.members.insert(self.id.clone(), now);
            let lease_ms = self.group.lease_ms;
            for (owner, expiry) in state.leases.values_mut() {
                if *owner == self.id {
                    *expiry = now + lease_ms;
                }
            }
        }
        self.group.rebalance()
    }

    /// The shards this member holds.
    pub fn shards(&self) -> Vec<ShardId> {
        let mut v: Vec<ShardId> = self
            .group
            .state
            .lock()
            .leases
            .iter()
            .filter(|(_, (o, _))| *o == self.id)
            .map(|(s, _)| *s)
            .collect();
        v.sort();
        v
    }

    /// Reads up to `limit` records from each held shard, continuing where the last poll
    /// of this lease stopped (or after the group checkpoint for a new lease).
    ///
    /// # Errors
    ///
    /// Stream errors (for example a trimmed checkpoint position).
    pub fn poll(&self, limit: ReadLimit) -> Result<Vec<(ShardId, Vec<Record>)>> {
        let mut out = Vec::new();
        for shard in self.shards() {
            let start = self.group.state.lock().positions.get(&shard).copied();
            let start = match start {
                Some(p) => p,
                None => match self.group.stream.checkpoint(&self.group.name, shard)? {
                    Some(seq) => Position::AfterSequence(seq),
                    None => Position::TrimHorizon,
                },
            };
            let batch = self.group.stream.read_at(shard, start, limit)?;
            let mut state = self.group.state.lock();
            // Only advance if the lease is still ours.
            if state.leases.get(&shard).is_some_and(|(o, _)| *o == self.id) {
                state.positions.insert(shard, batch.next);
                if !batch.records.is_empty() {
                    out.push((shard, batch.records));
                }
            }
        }
        Ok(out)
    }

    /// Records that `shard` was processed up to and including `sequence`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Conflict`] when the member no longer holds the shard's lease (its
    /// records will be delivered again to the new owner).
    pub fn checkpoint(&self, shard: ShardId, sequence: SequenceNumber) -> Result<()> {
        let held = self
            .group
            .state
            .lock()
            .leases
            .get(&shard)
            .is_some_and(|(o, _)| *o == self.id);
        if !held {
            return Err(Error::new(
                ErrorKind::Conflict,
                "the shard's lease moved to another member",
            )
            .with_shard(shard)
            .with_key(self.id.clone()));
        }
        self.group
            .stream
            .commit_checkpoint(&self.group.name, shard, sequence)
    }

    /// Leaves the group, releasing the member's shards to the others.
    pub fn leave(self) -> Result<()> {
        {
            let mut state = self.group.state.lock();
            state.members.remove(&self.id);
            let GroupState {
                leases, positions, ..
            } = &mut *state;
            leases.retain(|shard, (o, _)| {
                let keep = *o != self.id;
                if !keep {
                    positions.remove(shard);
                }
                keep
            });
        }
        self.group.rebalance()
    }
}
