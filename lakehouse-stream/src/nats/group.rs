//! [`NatsConsumerGroup`]: shards leased to the members of a group, across processes,
//! with the group's state in a KV key updated by compare-and-swap.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use lakehouse_core::{
    Error, ErrorKind, Position, ReadLimit, Record, Result, SequenceNumber, ShardId, ShardInfo,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::cursor::Cursor;
use super::{NatsLog, remote};

/// A group's state as stored: each member's heartbeat counter and each leased
/// shard's owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct GroupState {
    members: BTreeMap<String, u64>,
    leases: BTreeMap<u32, String>,
}

/// A consumer group of a [`NatsLog`] whose members may live in different processes:
/// shards are leased to live members, spread evenly, and each member reads its shards
/// from the group's checkpoint and checkpoints what it processed (at-least-once).
///
/// The group's state (members with heartbeat counters, and shard leases) is one key
/// of the KV bucket `LH-<log>-groups`, changed only by compare-and-swap on its
/// revision, so every lease has one owner at a time. A member is live while its
/// counter changes: one that has not renewed for the lease duration, as measured on
/// the observer's own clock (no clock is compared across machines), loses its shards
/// at the next rebalance, which any member's heartbeat runs. Checkpoints only move
/// forward ([`NatsLog::advance_checkpoint`]). A closed shard is leased until it is
/// checkpointed to its end, and its children only after all their parents are.
/// Cheap to clone: clones share the observations.
#[derive(Clone)]
pub struct NatsConsumerGroup {
    log: NatsLog,
    name: Arc<str>,
    lease: Duration,
    /// Member -> (last counter seen, when it was first seen), on this client's clock.
    seen: Arc<Mutex<HashMap<String, (u64, Instant)>>>,
}

impl fmt::Debug for NatsConsumerGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConsumerGroup")
            .field("log", &self.log.name())
            .field("name", &self.name)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl NatsLog {
    /// The consumer group `name` of this log; a member that does not renew within
    /// `lease` loses its shards.
    pub fn consumer_group(&self, name: impl Into<String>, lease: Duration) -> NatsConsumerGroup {
        NatsConsumerGroup {
            log: self.clone(),
            name: Arc::from(name.into()),
            lease,
            seen: Arc::default(),
        }
    }
}

fn key_of(group: &str) -> String {
    let mut key = String::from("g.");
    for b in group.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            key.push(b as char);
        } else {
            key.push_str(&format!("={b:02X}"));
        }
    }
    key
}

impl NatsConsumerGroup {
    /// The group's name (its checkpoints are stored under it).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn err(&self, kind: ErrorKind, m: impl Into<String>) -> Error {
        Error::new(kind, m)
            .with_table(self.log.name())
            .with_key(self.name.to_string())
    }

    async fn load(&self) -> Result<(GroupState, Option<u64>)> {
        let entry = self
            .log
            .inner
            .groups
            .entry(key_of(&self.name))
            .await
            .map_err(|e| remote(self.log.name(), "read a consumer group", e))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let state = serde_json::from_slice(&e.value).map_err(|e| {
                    self.err(
                        ErrorKind::Corrupt,
                        format!("group state does not parse: {e}"),
                    )
                })?;
                Ok((state, Some(e.revision)))
            }
            Some(e) => Ok((GroupState::default(), Some(e.revision))),
            None => Ok((GroupState::default(), None)),
        }
    }

    /// Writes `state` if the key is still at `revision`; `false` when it moved.
    async fn store(&self, state: &GroupState, revision: Option<u64>) -> Result<bool> {
        let bucket = &self.log.inner.groups;
        let key = key_of(&self.name);
        let value = serde_json::to_vec(state).unwrap_or_default().into();
        let result = match revision {
            Some(r) => bucket.update(&key, value, r).await.map(|_| ()),
            None => match bucket.create(&key, value).await {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(false),
                Err(e) => return Err(remote(self.log.name(), "create a consumer group", e)),
            },
        };
        match result {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(remote(self.log.name(), "update a consumer group", e)),
        }
    }

    /// A closed shard that the group has checkpointed to its last record.
    async fn finished(&self, shard: &ShardInfo) -> Result<bool> {
        if !shard.closed {
            return Ok(false);
        }
        let from = match self.log.checkpoint(&self.name, shard.id).await? {
            Some(seq) => Position::AfterSequence(seq),
            None => Position::TrimHorizon,
        };
        let probe = self
            .log
            .read_at(shard.id, from, ReadLimit::records(1))
            .await?;
        Ok(probe.records.is_empty() && probe.end_of_shard)
    }

    /// The shards the group may read now: not finished, with every parent finished.
    async fn readable(&self) -> Result<Vec<ShardId>> {
        let shards = self.log.shards().await?;
        let mut finished: HashMap<ShardId, bool> = HashMap::new();
        let mut readable = Vec::new();
        for s in &shards {
            let parents_done = s
                .parents
                .iter()
                .all(|p| finished.get(p).copied().unwrap_or(true));
            let done = parents_done && self.finished(s).await?;
            finished.insert(s.id, done);
            if parents_done && !done {
                readable.push(s.id);
            }
        }
        Ok(readable)
    }

    /// One round of the protocol for `me`: renew (`beat`), add or remove it, drop
    /// members that stopped renewing, spread the readable shards, and write the
    /// result by compare-and-swap (again from the top when another member wrote
    /// first). Returns the stored state.
    async fn round(&self, me: &str, beat: Beat) -> Result<GroupState> {
        for _ in 0..32 {
            let (mut state, revision) = self.load().await?;
            match beat {
                Beat::Join => {
                    *state.members.entry(me.to_owned()).or_default() += 1;
                }
                Beat::Renew => match state.members.get_mut(me) {
                    Some(c) => *c += 1,
                    None => {
                        return Err(self
                            .err(ErrorKind::Closed, "member expired or left; join again")
                            .with_key(me.to_owned()));
                    }
                },
                Beat::Leave => {
                    state.members.remove(me);
                }
                Beat::Observe => {}
            }
            self.expire(&mut state, me);
            let readable = self.readable().await?;
            spread(&mut state, &readable);
            if self.store(&state, revision).await? {
                return Ok(state);
            }
        }
        Err(self.err(
            ErrorKind::Conflict,
            "the group's state kept changing under compare-and-swap",
        ))
    }

    /// Removes members whose counter has not changed for the lease duration.
    fn expire(&self, state: &mut GroupState, me: &str) {
        let now = Instant::now();
        let mut seen = self.seen.lock();
        seen.retain(|m, _| state.members.contains_key(m));
        let lease = self.lease;
        state.members.retain(|member, counter| {
            if member == me {
                return true;
            }
            let entry = seen.entry(member.clone()).or_insert((*counter, now));
            if entry.0 != *counter {
                *entry = (*counter, now);
            }
            now.duration_since(entry.1) < lease
        });
        let members = &state.members;
        state.leases.retain(|_, owner| members.contains_key(owner));
    }

    /// Adds member `id` (or renews it) and rebalances.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty id, `Unavailable`, `Conflict`.
    pub async fn join(&self, id: impl Into<String>) -> Result<NatsMember> {
        let id = id.into();
        if id.is_empty() {
            return Err(self.err(ErrorKind::InvalidInput, "member id is empty"));
        }
        let state = self.round(&id, Beat::Join).await?;
        let member = NatsMember {
            group: self.clone(),
            id,
            held: Arc::default(),
            polling: Arc::default(),
        };
        member.adopt(&state);
        Ok(member)
    }

    /// Drops members that stopped renewing and rebalances, without renewing anyone.
    ///
    /// # Errors
    ///
    /// `Unavailable`, `Conflict`.
    pub async fn rebalance(&self) -> Result<()> {
        self.round("", Beat::Observe).await.map(|_| ())
    }

    /// Current leases: shard -> member, as stored.
    ///
    /// # Errors
    ///
    /// `Unavailable`.
    pub async fn assignments(&self) -> Result<BTreeMap<ShardId, String>> {
        let (state, _) = self.load().await?;
        Ok(state
            .leases
            .into_iter()
            .map(|(s, m)| (ShardId(s), m))
            .collect())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Beat {
    Join,
    Renew,
    Leave,
    Observe,
}

/// Spreads `readable` over the members: every member gets `base` shards and `extra`
/// members one more; leases stay where they are unless the spread is uneven.
fn spread(state: &mut GroupState, readable: &[ShardId]) {
    state.leases.retain(|s, _| readable.contains(&ShardId(*s)));
    if state.members.is_empty() {
        state.leases.clear();
        return;
    }
    let mut owned: BTreeMap<String, Vec<u32>> = state
        .members
        .keys()
        .map(|m| (m.clone(), Vec::new()))
        .collect();
    for (shard, owner) in &state.leases {
        if let Some(v) = owned.get_mut(owner) {
            v.push(*shard);
        }
    }
    let n = state.members.len();
    let base = readable.len() / n;
    let mut extra = readable.len() % n;
    let mut by_load: Vec<(&String, &mut Vec<u32>)> = owned.iter_mut().collect();
    by_load.sort_by_key(|(m, v)| (std::cmp::Reverse(v.len()), (*m).clone()));
    for (_, shards) in by_load {
        let cap = if extra > 0 && shards.len() > base {
            extra -= 1;
            base + 1
        } else {
            base
        };
        shards.sort_unstable();
        while shards.len() > cap {
            if let Some(s) = shards.pop() {
                state.leases.remove(&s);
            }
        }
    }
    for shard in readable {
        if state.leases.contains_key(&shard.0) {
            continue;
        }
        let Some((owner, list)) = owned
            .iter_mut()
            .min_by_key(|(m, v)| (v.len(), (*m).clone()))
        else {
            break;
        };
        list.push(shard.0);
        state.leases.insert(shard.0, owner.clone());
    }
}

/// One member of a [`NatsConsumerGroup`].
///
/// A member reads each shard it holds through the group's durable pull consumer on
/// that shard's stream (named `lh-<group>-<shard>-<lease>`), which it creates at the
/// group's checkpoint when it takes the lease, after deleting the consumer of the
/// previous holder. So the server shows every group's read position per shard
/// (`nats consumer info`), and a member that lost a lease without noticing cannot
/// take records from the new holder: its reads fail instead. The checkpoint in KV
/// stays the committed position. Cheap to clone: clones are the same member, and their
/// polls run one at a time.
#[derive(Debug, Clone)]
pub struct NatsMember {
    group: NatsConsumerGroup,
    id: String,
    /// Held shards, with this lease's cursor once the shard was polled.
    held: Arc<Mutex<BTreeMap<ShardId, Option<Cursor>>>>,
    /// Polls of this member run one at a time (a cursor is taken out while in use).
    polling: Arc<tokio::sync::Mutex<()>>,
}

impl NatsMember {
    /// The member's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Takes the leases of `state` as this member's, keeping read positions of the
    /// shards it still holds.
    fn adopt(&self, state: &GroupState) {
        let mut held = self.held.lock();
        let mine: Vec<ShardId> = state
            .leases
            .iter()
            .filter(|(_, o)| **o == self.id)
            .map(|(s, _)| ShardId(*s))
            .collect();
        held.retain(|s, _| mine.contains(s));
        for s in mine {
            held.entry(s).or_insert(None);
        }
    }

    /// Renews the member and rebalances; call it more often than the lease duration.
    ///
    /// # Errors
    ///
    /// `Closed` when the member expired or left (join again), `Unavailable`,
    /// `Conflict`.
    pub async fn heartbeat(&self) -> Result<()> {
        match self.group.round(&self.id, Beat::Renew).await {
            Ok(state) => {
                self.adopt(&state);
                Ok(())
            }
            Err(e) => {
                if e.kind() == ErrorKind::Closed {
                    self.held.lock().clear();
                }
                Err(e)
            }
        }
    }

    /// The shards this member held at its last heartbeat.
    pub fn shards(&self) -> Vec<ShardId> {
        self.held.lock().keys().copied().collect()
    }

    /// Reads up to `limit` records from each held shard, continuing where the last
    /// poll of the lease stopped (after the group's checkpoint for a new lease).
    ///
    /// # Errors
    ///
    /// `Conflict` when a shard's records were read by another client of the group (its
    /// lease moved: heartbeat to learn the new leases), `PositionTrimmed` when
    /// retention removed records the group had not read, `Unavailable`, `Timeout`.
    /// After an error every shard's next poll starts again from the group's
    /// checkpoint, so no record is skipped.
    pub async fn poll(&self, limit: ReadLimit) -> Result<Vec<(ShardId, Vec<Record>)>> {
        let _one_at_a_time = self.polling.lock().await;
        let shards: Vec<ShardId> = self.held.lock().keys().copied().collect();
        let mut out = Vec::new();
        for shard in shards {
            let taken = match self.held.lock().get_mut(&shard) {
                Some(slot) => slot.take(),
                // The lease went at a heartbeat meanwhile.
                None => continue,
            };
            let result = match taken {
                Some(mut cursor) => {
                    let r = self.group.log.poll_cursor(&mut cursor, limit).await;
                    r.map(|records| (cursor, records))
                }
                None => match self.start(shard, limit).await {
                    Ok(Some(started)) => Ok(started),
                    // The stored lease is another member's: not this member's shard.
                    Ok(None) => continue,
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok((cursor, records)) => {
                    if let Some(slot) = self.held.lock().get_mut(&shard) {
                        *slot = Some(cursor);
                    }
                    if !records.is_empty() {
                        out.push((shard, records));
                    }
                }
                Err(e) => {
                    // Records taken this poll were not handed out: every shard starts
                    // again from its checkpoint, with a new cursor.
                    for slot in self.held.lock().values_mut() {
                        *slot = None;
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Opens this lease's cursor on `shard` at the group's checkpoint, once the stored
    /// lease is confirmed to be this member's, and polls it; `None` (and the shard
    /// dropped from the held ones) when the stored lease is another member's.
    async fn start(
        &self,
        shard: ShardId,
        limit: ReadLimit,
    ) -> Result<Option<(Cursor, Vec<Record>)>> {
        let (state, _) = self.group.load().await?;
        if state.leases.get(&shard.0) != Some(&self.id) {
            self.held.lock().remove(&shard);
            return Ok(None);
        }
        let log = &self.group.log;
        let checkpoint = log.checkpoint(&self.group.name, shard).await?;
        let mut cursor = log.open_cursor(&self.group.name, shard, checkpoint).await?;
        let records = log.poll_cursor(&mut cursor, limit).await?;
        Ok(Some((cursor, records)))
    }

    fn lease_moved(&self, shard: ShardId) -> Error {
        self.group
            .err(
                ErrorKind::Conflict,
                "the shard's lease moved to another member",
            )
            .with_shard(shard)
            .with_key(self.id.clone())
    }

    /// Records that `shard` was processed up to and including `sequence` (the
    /// checkpoint only moves forward).
    ///
    /// # Errors
    ///
    /// `Conflict` when the stored lease of the shard is not this member's (its
    /// records will be delivered again to the new owner); `Unavailable`.
    pub async fn checkpoint(&self, shard: ShardId, sequence: SequenceNumber) -> Result<()> {
        let (state, _) = self.group.load().await?;
        if state.leases.get(&shard.0) != Some(&self.id) {
            self.held.lock().remove(&shard);
            return Err(self.lease_moved(shard));
        }
        self.group
            .log
            .advance_checkpoint(&self.group.name, shard, sequence)
            .await
            .map(|_| ())
    }

    /// Leaves the group, releasing the member's shards to the others.
    ///
    /// # Errors
    ///
    /// `Unavailable`, `Conflict`.
    pub async fn leave(self) -> Result<()> {
        let _one_at_a_time = self.polling.lock().await;
        let cursors: Vec<Cursor> = std::mem::take(&mut *self.held.lock())
            .into_values()
            .flatten()
            .collect();
        self.group.round(&self.id, Beat::Leave).await?;
        // The next holders delete these cursors anyway, and the server drops idle
        // ones: a failure to delete one here is not the caller's.
        for cursor in cursors {
            let _ = self.group.log.close_cursor(cursor).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_evenly_and_keeps_leases() {
        let mut state = GroupState::default();
        state.members.insert("a".into(), 1);
        let shards: Vec<ShardId> = (0..5).map(ShardId).collect();
        spread(&mut state, &shards);
        assert_eq!(state.leases.len(), 5);
        assert!(state.leases.values().all(|o| o == "a"));
        state.members.insert("b".into(), 1);
        spread(&mut state, &shards);
        let a = state.leases.values().filter(|o| *o == "a").count();
        assert_eq!((a, 5 - a), (3, 2), "{:?}", state.leases);
        let before = state.leases.clone();
        spread(&mut state, &shards);
        assert_eq!(state.leases, before, "a balanced spread is stable");
        spread(&mut state, &shards[..2]);
        assert_eq!(state.leases.len(), 2);
        assert_ne!(state.leases[&0], state.leases[&1]);
        assert_eq!(key_of("a.b"), "g.a=2Eb");
    }
}
