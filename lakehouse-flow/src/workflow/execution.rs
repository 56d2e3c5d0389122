//! What an execution is and how it ended: [`Execution`], [`ExecutionStatus`], and the
//! [`ExecutionHandle`] of one running in the background.

use std::fmt;
use std::sync::Arc;

use lakehouse_core::{CancelToken, Error, ErrorKind, Result};
use serde_json::Value;

use crate::workflow::history::{EventKind, HistoryEvent};
use crate::workflow::interpreter::Run;
use crate::workflow::task::TaskError;

#[cfg(doc)]
use crate::workflow::engine::Workflow;

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExecutionStatus {
    /// It reached a Succeed state or an end.
    Succeeded,
    /// A state failed and nothing caught the error.
    Failed,
    /// It ran past its time limit.
    TimedOut,
    /// It was cancelled.
    Aborted,
}

/// A finished execution: its status, output or error, and its whole history.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Execution {
    /// The execution id.
    pub id: String,
    /// How it ended.
    pub status: ExecutionStatus,
    /// The output, when it succeeded.
    pub output: Option<Value>,
    /// The error, when it failed (also set for a time-out or cancellation).
    pub error: Option<TaskError>,
    /// Every event, in order (including those of earlier runs when resumed).
    pub history: Vec<HistoryEvent>,
}

impl Execution {
    /// How many times the task handler of the Task state `state` was invoked,
    /// counted from the history.
    pub fn task_invocations(&self, state: &str) -> usize {
        self.history
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::TaskStarted { state: s, .. } if s == state))
            .count()
    }
}

/// A running execution, from [`Workflow::start`].
pub struct ExecutionHandle {
    pub(super) id: String,
    pub(super) cancel: CancelToken,
    pub(super) run: Arc<Run>,
    pub(super) task: tokio::task::JoinHandle<Result<Execution>>,
}

impl fmt::Debug for ExecutionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutionHandle")
            .field("id", &self.id)
            .field("cancelled", &self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl ExecutionHandle {
    /// The execution id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Cancels the execution: running tasks are dropped and it ends as
    /// [`ExecutionStatus::Aborted`].
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The history so far.
    pub fn history(&self) -> Vec<HistoryEvent> {
        self.run.history.lock().clone()
    }

    /// Waits for the execution to end.
    pub async fn wait(self) -> Result<Execution> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::new(ErrorKind::Internal, "the execution task failed")
                .with_key(self.id)
                .with_source(e)),
        }
    }
}

/// The execution as recorded, if its history has a terminal event.
pub(super) fn finished(id: &str, events: &[HistoryEvent]) -> Option<Execution> {
    let last = events.iter().rev().find(|e| e.kind.is_terminal())?;
    let (status, output, error) = match &last.kind {
        EventKind::ExecutionSucceeded { output } => {
            (ExecutionStatus::Succeeded, Some(output.clone()), None)
        }
        EventKind::ExecutionFailed { error } => {
            (ExecutionStatus::Failed, None, Some(error.clone()))
        }
        EventKind::ExecutionTimedOut => (
            ExecutionStatus::TimedOut,
            None,
            Some(TaskError::new(
                TaskError::TIMEOUT,
                "the execution timed out",
            )),
        ),
        _ => (
            ExecutionStatus::Aborted,
            None,
            Some(TaskError::new(
                "States.Aborted",
                "the execution was cancelled",
            )),
        ),
    };
    Some(Execution {
        id: id.to_owned(),
        status,
        output,
        error,
        history: events.to_vec(),
    })
}
