//! Execution history: the events of an execution, and their persistence to an
//! [`EventLog`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use lakehouse_core::{
    Error, ErrorKind, EventLog, Position, PutRecord, ReadLimit, Record, Result, SequenceNumber,
    ShardId,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::workflow::task::TaskError;

/// One entry of an execution's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// Position in the history, from 1.
    pub id: u64,
    /// When it happened, milliseconds since the Unix epoch, from the workflow's timer.
    pub timestamp_ms: i64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What a [`HistoryEvent`] records.
///
/// `state` names a state (nested ones as `Outer/Branches[0]/Inner`); `key` identifies
/// one visit of a state within the execution (`Train#0` is the first visit of `Train`;
/// states inside a Parallel branch or a Map item carry the path of their parent), and
/// it is what a resumed execution uses to find completed work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum EventKind {
    /// The execution started with `input`.
    ExecutionStarted {
        /// The execution's input.
        input: Value,
    },
    /// The execution was resumed from its persisted history.
    ExecutionResumed,
    /// A state was entered.
    StateEntered {
        /// The state.
        state: String,
        /// The visit.
        key: String,
        /// The state's raw input.
        input: Value,
    },
    /// A state finished.
    StateExited {
        /// The state.
        state: String,
        /// The visit.
        key: String,
        /// The state's output.
        output: Value,
    },
    /// A state failed and no `Catch` handled it.
    StateFailed {
        /// The state.
        state: String,
        /// The visit.
        key: String,
        /// The error.
        error: TaskError,
    },
    /// A task handler was invoked.
    TaskStarted {
        /// The Task state.
        state: String,
        /// The visit.
        key: String,
        /// 0 for the first attempt.
        attempt: u32,
        /// The effective input passed to the handler.
        input: Value,
    },
    /// A task handler returned a result.
    TaskSucceeded {
        /// The Task state.
        state: String,
        /// The visit.
        key: String,
        /// The attempt.
        attempt: u32,
        /// The handler's result.
        output: Value,
    },
    /// A task handler failed, timed out or panicked.
    TaskFailed {
        /// The Task state.
        state: String,
        /// The visit.
        key: String,
        /// The attempt.
        attempt: u32,
        /// The error.
        error: TaskError,
    },
    /// A `Retry` rule matched; the state runs again after `delay_ms`.
    RetryScheduled {
        /// The state.
        state: String,
        /// The visit.
        key: String,
        /// The attempt about to run.
        attempt: u32,
        /// The delay before it.
        delay_ms: u64,
        /// The error that caused the retry.
        error: TaskError,
    },
    /// A `Catch` rule matched; the execution continues at `next`.
    Caught {
        /// The state.
        state: String,
        /// The visit.
        key: String,
        /// The error.
        error: TaskError,
        /// The state the execution continues at.
        next: String,
    },
    /// A Wait state is waiting until `until_ms`.
    WaitStarted {
        /// The Wait state.
        state: String,
        /// The visit.
        key: String,
        /// The end of the wait, milliseconds since the Unix epoch.
        until_ms: i64,
    },
    /// The execution succeeded.
    ExecutionSucceeded {
        /// Its output.
        output: Value,
    },
    /// The execution failed.
    ExecutionFailed {
        /// The error.
        error: TaskError,
    },
    /// The execution ran out of time.
    ExecutionTimedOut,
    /// The execution was cancelled.
    ExecutionAborted,
}

impl EventKind {
    /// The event's type name, as serialised in field `type`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::ExecutionStarted { .. } => "ExecutionStarted",
            EventKind::ExecutionResumed => "ExecutionResumed",
            EventKind::StateEntered { .. } => "StateEntered",
            EventKind::StateExited { .. } => "StateExited",
            EventKind::StateFailed { .. } => "StateFailed",
            EventKind::TaskStarted { .. } => "TaskStarted",
            EventKind::TaskSucceeded { .. } => "TaskSucceeded",
            EventKind::TaskFailed { .. } => "TaskFailed",
            EventKind::RetryScheduled { .. } => "RetryScheduled",
            EventKind::Caught { .. } => "Caught",
            EventKind::WaitStarted { .. } => "WaitStarted",
            EventKind::ExecutionSucceeded { .. } => "ExecutionSucceeded",
            EventKind::ExecutionFailed { .. } => "ExecutionFailed",
            EventKind::ExecutionTimedOut => "ExecutionTimedOut",
            EventKind::ExecutionAborted => "ExecutionAborted",
        }
    }

    /// The state the event is about, if any.
    pub fn state(&self) -> Option<&str> {
        match self {
            EventKind::StateEntered { state, .. }
            | EventKind::StateExited { state, .. }
            | EventKind::StateFailed { state, .. }
            | EventKind::TaskStarted { state, .. }
            | EventKind::TaskSucceeded { state, .. }
            | EventKind::TaskFailed { state, .. }
            | EventKind::RetryScheduled { state, .. }
            | EventKind::Caught { state, .. }
            | EventKind::WaitStarted { state, .. } => Some(state),
            _ => None,
        }
    }

    /// What makes a state-level event unique in a history: replaying an execution
    /// produces events with the same identity, which are not recorded twice.
    /// `TaskStarted` has none: it is recorded each time a handler really runs.
    pub(crate) fn identity(&self) -> Option<String> {
        let (key, attempt) = match self {
            EventKind::StateEntered { key, .. }
            | EventKind::StateExited { key, .. }
            | EventKind::StateFailed { key, .. }
            | EventKind::Caught { key, .. }
            | EventKind::WaitStarted { key, .. } => (key, 0),
            EventKind::TaskSucceeded { key, attempt, .. }
            | EventKind::TaskFailed { key, attempt, .. }
            | EventKind::RetryScheduled { key, attempt, .. } => (key, *attempt),
            _ => return None,
        };
        Some(format!("{}|{key}|{attempt}", self.name()))
    }

    /// `true` for the events that end an execution.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            EventKind::ExecutionSucceeded { .. }
                | EventKind::ExecutionFailed { .. }
                | EventKind::ExecutionTimedOut
                | EventKind::ExecutionAborted
        )
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    execution: String,
    event: HistoryEvent,
}

/// Persists execution histories to an [`EventLog`]: one record per event, with the
/// execution id as partition key, so an execution's events stay in one shard in order.
///
/// The store keeps an index of the log in memory: where each execution's records are.
/// Its first use reads the log once to build it; from then on it reads only records
/// that other writers appended since (its own appends it indexes as they are
/// acknowledged), so starting an execution reads no other execution's history and
/// [`load`](Self::load) reads only the records of the execution it loads. The index
/// costs a few dozen bytes per record; a log dedicated to workflow histories (and
/// trimmed by retention) keeps it small.
///
/// Clones share the log and the index: the workflows that share a store also share
/// its execution ids, and two starts of one id there run it once.
#[derive(Clone)]
pub struct ExecutionStore {
    log: Arc<dyn EventLog>,
    index: Arc<Mutex<Index>>,
    /// Ids of the executions started through this store that are still running.
    claims: Arc<Mutex<HashSet<String>>>,
}

impl fmt::Debug for ExecutionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutionStore")
            .field("log", &self.log)
            .field("executions", &self.index.lock().runs.len())
            .finish_non_exhaustive()
    }
}

/// Where the records of each execution are, and how far each shard has been read.
#[derive(Debug, Default)]
struct Index {
    runs: HashMap<String, BTreeSet<(ShardId, SequenceNumber)>>,
    cursors: HashMap<ShardId, Cursor>,
}

/// How far one shard is indexed.
#[derive(Debug, Default)]
struct Cursor {
    /// Every record before this sequence number is indexed (`None`: nothing read yet).
    next: Option<SequenceNumber>,
    /// This store's own records at or past `next`, indexed when acknowledged.
    ahead: BTreeSet<SequenceNumber>,
}

impl Cursor {
    /// The cursor moved to `next`: own records it passed need no more tracking.
    fn advance(&mut self, next: SequenceNumber) {
        let mut next = self.next.map_or(next, |n| n.max(next));
        while self.ahead.remove(&next) {
            next += 1;
        }
        self.ahead = self.ahead.split_off(&next);
        self.next = Some(next);
    }
}

/// The sequence number a read continuing at `position` starts at.
fn sequence_at(position: Position) -> Option<SequenceNumber> {
    match position {
        Position::AtSequence(s) => Some(s),
        Position::AfterSequence(s) => Some(s.saturating_add(1)),
        _ => None,
    }
}

impl Index {
    /// Records `execution`'s record at `sequence` of `shard`, written by this store.
    fn own(&mut self, execution: &str, shard: ShardId, sequence: SequenceNumber) {
        self.runs
            .entry(execution.to_owned())
            .or_default()
            .insert((shard, sequence));
        let cursor = self.cursors.entry(shard).or_default();
        match cursor.next {
            Some(next) if sequence == next => cursor.advance(next + 1),
            Some(next) if sequence < next => {}
            _ => {
                cursor.ahead.insert(sequence);
            }
        }
    }

    /// Indexes the records of a read of `shard`; `next` is where the read continues.
    fn apply(&mut self, shard: ShardId, records: &[Record], next: Position) {
        let cursor = self.cursors.entry(shard).or_default();
        let from = cursor.next;
        let mut fresh = Vec::new();
        for r in records {
            if from.is_some_and(|f| r.sequence < f) || cursor.ahead.remove(&r.sequence) {
                continue;
            }
            fresh.push(r);
        }
        if let Some(next) = sequence_at(next) {
            cursor.advance(next);
        }
        for r in fresh {
            self.runs
                .entry(r.partition_key.to_string())
                .or_default()
                .insert((shard, r.sequence));
        }
    }
}

/// An execution id taken by a start through this store, until the execution ends.
pub(crate) struct Claim {
    claims: Arc<Mutex<HashSet<String>>>,
    execution: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.claims.lock().remove(&self.execution);
    }
}

impl ExecutionStore {
    /// A store writing to `log`.
    pub fn new(log: impl EventLog + 'static) -> Self {
        ExecutionStore {
            log: Arc::new(log),
            index: Arc::new(Mutex::new(Index::default())),
            claims: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Appends one event of `execution`.
    pub async fn append(&self, execution: &str, event: &HistoryEvent) -> Result<()> {
        let stored = Stored {
            execution: execution.to_owned(),
            event: event.clone(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| {
            Error::new(ErrorKind::Internal, "history event does not serialise")
                .with_key(execution)
                .with_source(e)
        })?;
        let put = self
            .log
            .put(PutRecord::new(execution, bytes))
            .await
            .map_err(|e| e.with_key(execution))?;
        self.index.lock().own(execution, put.shard, put.sequence);
        Ok(())
    }

    /// Indexes what was appended to the log since the last look.
    async fn catch_up(&self) -> Result<()> {
        for shard in self.log.shards().await? {
            let start = {
                let mut index = self.index.lock();
                let cursor = index.cursors.entry(shard.id).or_default();
                cursor
                    .next
                    .map_or(Position::TrimHorizon, Position::AtSequence)
            };
            let mut pos = start;
            loop {
                let batch = match self.log.read(shard.id, pos, ReadLimit::default()).await {
                    Ok(b) => b,
                    // Records before the retained ones are gone; index what is left.
                    Err(e)
                        if e.kind() == ErrorKind::PositionTrimmed
                            && pos != Position::TrimHorizon =>
                    {
                        pos = Position::TrimHorizon;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                self.index
                    .lock()
                    .apply(shard.id, &batch.records, batch.next);
                if batch.records.is_empty() || batch.end_of_shard {
                    break;
                }
                pos = batch.next;
            }
        }
        Ok(())
    }

    /// Takes `execution` for a new execution: fails with [`ErrorKind::Conflict`] when
    /// the log holds a history for it or an execution of that id started through this
    /// store is still running.
    pub(crate) async fn claim(&self, execution: &str) -> Result<Claim> {
        self.catch_up().await.map_err(|e| e.with_key(execution))?;
        let index = self.index.lock();
        let mut claims = self.claims.lock();
        if index.runs.contains_key(execution) {
            return Err(Error::new(
                ErrorKind::Conflict,
                "an execution with this id already has a history; resume it instead",
            )
            .with_key(execution));
        }
        if !claims.insert(execution.to_owned()) {
            return Err(Error::new(
                ErrorKind::Conflict,
                "an execution with this id is already starting or running",
            )
            .with_key(execution));
        }
        Ok(Claim {
            claims: self.claims.clone(),
            execution: execution.to_owned(),
        })
    }

    /// Every persisted event of `execution`, in order (empty when there is none). Reads
    /// only the records of `execution` (and what other writers appended since the
    /// store last looked).
    pub async fn load(&self, execution: &str) -> Result<Vec<HistoryEvent>> {
        self.catch_up().await.map_err(|e| e.with_key(execution))?;
        let wanted = self
            .index
            .lock()
            .runs
            .get(execution)
            .cloned()
            .unwrap_or_default();
        let mut events = Vec::with_capacity(wanted.len());
        // Consecutive records of one shard are read together.
        let mut spans: Vec<(ShardId, SequenceNumber, SequenceNumber)> = Vec::new();
        for &(shard, seq) in &wanted {
            match spans.last_mut() {
                Some((s, _, last)) if *s == shard && *last + 1 == seq => *last = seq,
                _ => spans.push((shard, seq, seq)),
            }
        }
        for (shard, first, last) in spans {
            let mut pos = Position::AtSequence(first);
            loop {
                let want = usize::try_from(last - first + 1).unwrap_or(usize::MAX);
                let batch = match self.log.read(shard, pos, ReadLimit::records(want)).await {
                    Ok(b) => b,
                    Err(e)
                        if e.kind() == ErrorKind::PositionTrimmed
                            && pos != Position::TrimHorizon =>
                    {
                        pos = Position::TrimHorizon;
                        continue;
                    }
                    Err(e) => return Err(e.with_key(execution)),
                };
                let mut done = batch.records.is_empty() || batch.end_of_shard;
                for r in &batch.records {
                    if r.sequence >= last {
                        done = true;
                    }
                    if !wanted.contains(&(shard, r.sequence)) || r.partition_key != execution {
                        continue;
                    }
                    let stored: Stored = serde_json::from_slice(&r.data).map_err(|e| {
                        Error::new(ErrorKind::Corrupt, "history record does not decode")
                            .with_key(execution)
                            .with_shard(r.shard)
                            .with_version(r.sequence)
                            .with_source(e)
                    })?;
                    if stored.execution == execution {
                        events.push(stored.event);
                    }
                }
                if done {
                    break;
                }
                pos = batch.next;
            }
        }
        events.sort_by_key(|e| e.id);
        events.dedup_by_key(|e| e.id);
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakehouse_core::MemoryLog;
    use serde_json::json;

    #[tokio::test]
    async fn events_round_trip_through_a_log() {
        let store = ExecutionStore::new(MemoryLog::new(3));
        let events = vec![
            HistoryEvent {
                id: 1,
                timestamp_ms: 5,
                kind: EventKind::ExecutionStarted {
                    input: json!({"a": 1}),
                },
            },
            HistoryEvent {
                id: 2,
                timestamp_ms: 6,
                kind: EventKind::TaskFailed {
                    state: "T".into(),
                    key: "T#0".into(),
                    attempt: 0,
                    error: TaskError::new("E", "c"),
                },
            },
        ];
        for e in &events {
            store.append("exec-1", e).await.unwrap();
        }
        store.append("exec-2", &events[0]).await.unwrap();
        assert_eq!(store.load("exec-1").await.unwrap(), events);
        assert_eq!(store.load("exec-2").await.unwrap().len(), 1);
        assert!(store.load("exec-3").await.unwrap().is_empty());
        let text = serde_json::to_value(&events[1]).unwrap();
        assert_eq!(text["type"], "TaskFailed");
        assert_eq!(text["error"]["error"], "E");
    }
}
