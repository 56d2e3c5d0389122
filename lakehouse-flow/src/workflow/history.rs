//! Execution history: the events of an execution, and their persistence to an
//! [`EventLog`].

use std::fmt;
use std::sync::Arc;

use lakehouse_core::{Error, ErrorKind, EventLog, Position, PutRecord, ReadLimit, Result};
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
/// [`load`](Self::load) scans the whole log for one execution, so a log dedicated to
/// workflow histories (and trimmed by retention) keeps resumes fast. Cheap to clone.
#[derive(Clone)]
pub struct ExecutionStore {
    log: Arc<dyn EventLog>,
}

impl fmt::Debug for ExecutionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutionStore")
            .field("log", &self.log)
            .finish()
    }
}

impl ExecutionStore {
    /// A store writing to `log`.
    pub fn new(log: impl EventLog + 'static) -> Self {
        ExecutionStore { log: Arc::new(log) }
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
        self.log
            .put(PutRecord::new(execution, bytes))
            .await
            .map(|_| ())
            .map_err(|e| e.with_key(execution))
    }

    /// Every persisted event of `execution`, in order (empty when there is none).
    pub async fn load(&self, execution: &str) -> Result<Vec<HistoryEvent>> {
        let mut events = Vec::new();
        for shard in self.log.shards().await? {
            let mut pos = Position::TrimHorizon;
            loop {
                let batch = self
                    .log
                    .read(shard.id, pos, ReadLimit::default())
                    .await
                    .map_err(|e| e.with_key(execution))?;
                if batch.records.is_empty() {
                    break;
                }
                for r in batch
                    .records
                    .iter()
                    .filter(|r| r.partition_key == execution)
                {
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
                pos = batch.next;
                if batch.end_of_shard {
                    break;
                }
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
