//! Task handlers: the code a Task state runs, registered by name.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use lakehouse_core::CancelToken;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A States Language error: a name that `Retry` and `Catch` rules match on, and a
/// human-readable cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// The error name, such as `"States.Timeout"` or a handler's own `"Model.Diverged"`.
    pub error: String,
    /// What happened.
    pub cause: String,
}

impl TaskError {
    /// Matches every error except [`RUNTIME`](Self::RUNTIME).
    pub const ALL: &'static str = "States.ALL";
    /// A task failed (matches every task error except a timeout).
    pub const TASK_FAILED: &'static str = "States.TaskFailed";
    /// A task or the execution ran out of time.
    pub const TIMEOUT: &'static str = "States.Timeout";
    /// The definition met data it cannot handle (a path that matches nothing); not
    /// matched by [`ALL`](Self::ALL).
    pub const RUNTIME: &'static str = "States.Runtime";
    /// A `Parameters` or `ItemSelector` path matched nothing.
    pub const PARAMETER_PATH_FAILURE: &'static str = "States.ParameterPathFailure";
    /// A `ResultPath` could not be applied to the input.
    pub const RESULT_PATH_MATCH_FAILURE: &'static str = "States.ResultPathMatchFailure";
    /// No Choice rule matched and there was no default.
    pub const NO_CHOICE_MATCHED: &'static str = "States.NoChoiceMatched";

    /// An error named `error` with `cause`.
    pub fn new(error: impl Into<String>, cause: impl Into<String>) -> Self {
        TaskError {
            error: error.into(),
            cause: cause.into(),
        }
    }

    /// A generic task failure ([`TASK_FAILED`](Self::TASK_FAILED)).
    pub fn failed(cause: impl Into<String>) -> Self {
        TaskError::new(Self::TASK_FAILED, cause)
    }

    /// Whether a `Retry` or `Catch` rule listing `names` handles this error.
    pub fn matches<S: AsRef<str>>(&self, names: &[S]) -> bool {
        names.iter().any(|n| {
            let n = n.as_ref();
            n == self.error
                || (n == Self::ALL && self.error != Self::RUNTIME)
                || (n == Self::TASK_FAILED
                    && self.error != Self::TIMEOUT
                    && self.error != Self::RUNTIME)
        })
    }

    /// The error object a `Catch` places in the input: `{"Error": ..., "Cause": ...}`.
    pub fn to_json(&self) -> Value {
        json!({"Error": self.error, "Cause": self.cause})
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error, self.cause)
    }
}

impl std::error::Error for TaskError {}

impl From<lakehouse_core::Error> for TaskError {
    /// A lakehouse error becomes a [`TASK_FAILED`](Self::TASK_FAILED) (or, for
    /// [`ErrorKind::Timeout`](lakehouse_core::ErrorKind::Timeout), a
    /// [`TIMEOUT`](Self::TIMEOUT)) with the error as the cause.
    fn from(e: lakehouse_core::Error) -> Self {
        let name = if e.kind() == lakehouse_core::ErrorKind::Timeout {
            Self::TIMEOUT
        } else {
            Self::TASK_FAILED
        };
        TaskError::new(name, e.to_string())
    }
}

/// What a task handler knows about its invocation.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TaskContext {
    /// The execution.
    pub execution_id: String,
    /// The Task state (nested states as `Outer/Branches[0]/Inner`).
    pub state: String,
    /// 0 on the first attempt, then 1, 2, ... on retries.
    pub attempt: u32,
    /// A key unique to this task invocation within the execution and stable across a
    /// resume: use it to make side effects idempotent.
    pub key: String,
    pub(crate) cancel: CancelToken,
}

impl TaskContext {
    /// Completes when the execution is cancelled or times out; long tasks may select on
    /// it to stop early (they are dropped anyway).
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
}

/// The code behind a Task state's `Resource`.
///
/// Implemented for every `Fn(Value, TaskContext) -> impl Future<Output = Result<Value,
/// TaskError>>` that is `Send + Sync + 'static`.
pub trait TaskHandler: Send + Sync + 'static {
    /// Runs the task on its effective input and returns its result.
    fn call(&self, input: Value, ctx: TaskContext) -> BoxFuture<'static, Result<Value, TaskError>>;
}

impl<F, Fut> TaskHandler for F
where
    F: Fn(Value, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, TaskError>> + Send + 'static,
{
    fn call(&self, input: Value, ctx: TaskContext) -> BoxFuture<'static, Result<Value, TaskError>> {
        Box::pin(self(input, ctx))
    }
}

/// Task handlers by resource name. Cheap to clone.
#[derive(Clone, Default)]
pub struct TaskRegistry {
    handlers: HashMap<String, Arc<dyn TaskHandler>>,
}

impl fmt::Debug for TaskRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.handlers.keys().collect();
        names.sort();
        f.debug_struct("TaskRegistry")
            .field("handlers", &names)
            .finish()
    }
}

impl TaskRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        TaskRegistry::default()
    }

    /// Registers `handler` as `resource`, replacing any earlier one.
    #[must_use]
    pub fn with(mut self, resource: impl Into<String>, handler: impl TaskHandler) -> Self {
        self.register(resource, handler);
        self
    }

    /// Registers `handler` as `resource`, replacing any earlier one.
    pub fn register(&mut self, resource: impl Into<String>, handler: impl TaskHandler) {
        self.handlers.insert(resource.into(), Arc::new(handler));
    }

    /// The handler registered as `resource`.
    pub(crate) fn get(&self, resource: &str) -> Option<&Arc<dyn TaskHandler>> {
        self.handlers.get(resource)
    }

    /// Whether `resource` is registered.
    pub fn contains(&self, resource: &str) -> bool {
        self.handlers.contains_key(resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_matching_follows_the_states_language() {
        let custom = TaskError::new("Model.Diverged", "loss is NaN");
        let timeout = TaskError::new(TaskError::TIMEOUT, "slow");
        let runtime = TaskError::new(TaskError::RUNTIME, "bad path");
        assert!(custom.matches(&["Model.Diverged"]));
        assert!(custom.matches(&[TaskError::ALL]));
        assert!(custom.matches(&[TaskError::TASK_FAILED]));
        assert!(!custom.matches(&["Other"]));
        assert!(timeout.matches(&[TaskError::ALL]));
        assert!(timeout.matches(&[TaskError::TIMEOUT]));
        assert!(!timeout.matches(&[TaskError::TASK_FAILED]));
        assert!(!runtime.matches(&[TaskError::ALL, TaskError::TASK_FAILED]));
        assert!(TaskError::failed("x").matches(&[TaskError::TASK_FAILED]));
        assert_eq!(
            custom.to_json(),
            json!({"Error": "Model.Diverged", "Cause": "loss is NaN"})
        );
    }
}
