//! [`Workflow`]: a state machine with its task handlers, built by [`WorkflowBuilder`];
//! runs, starts and resumes executions.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lakehouse_core::{Error, ErrorKind, Result};
use serde_json::Value;

use crate::time::{Timer, TokioTimer};
use crate::workflow::execution::{Execution, ExecutionHandle, finished};
use crate::workflow::history::{EventKind, ExecutionStore};
use crate::workflow::interpreter::{Run, Start, execute};
use crate::workflow::machine::StateMachine;
use crate::workflow::task::{TaskHandler, TaskRegistry};

#[cfg(doc)]
use crate::workflow::execution::ExecutionStatus;

/// Builds a [`Workflow`].
#[must_use]
pub struct WorkflowBuilder {
    machine: StateMachine,
    tasks: TaskRegistry,
    timer: Arc<dyn Timer>,
    store: Option<ExecutionStore>,
    timeout: Option<Duration>,
    jitter_seed: u64,
}

impl fmt::Debug for WorkflowBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkflowBuilder")
            .field("machine", &self.machine)
            .field("tasks", &self.tasks)
            .field("store", &self.store)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WorkflowBuilder {
    /// Registers the handler of Task resource `resource`.
    pub fn task(mut self, resource: impl Into<String>, handler: impl TaskHandler) -> Self {
        self.tasks.register(resource, handler);
        self
    }

    /// Uses `tasks` (replacing handlers registered so far).
    pub fn tasks(mut self, tasks: TaskRegistry) -> Self {
        self.tasks = tasks;
        self
    }

    /// The timer for waits, retries and time limits (default [`TokioTimer`]).
    pub fn timer(mut self, timer: Arc<dyn Timer>) -> Self {
        self.timer = timer;
        self
    }

    /// Persists every execution's history to `store`, so that
    /// [`Workflow::resume`] can continue it after a crash.
    pub fn store(mut self, store: ExecutionStore) -> Self {
        self.store = Some(store);
        self
    }

    /// The execution time limit, overriding the definition's `TimeoutSeconds`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Seed of retry jitter (mixed with the execution id).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = seed;
        self
    }

    /// Checks that every Task resource has a handler and builds the workflow. A missing
    /// handler is an [`ErrorKind::InvalidInput`] error naming the state and field
    /// `Resource`.
    pub fn build(self) -> Result<Workflow> {
        for (state, resource) in self.machine.resources() {
            if !self.tasks.contains(&resource) {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "invalid workflow definition: state {state:?}: field \"Resource\": \
                         no task handler is registered as {resource:?}"
                    ),
                )
                .with_key(state));
            }
        }
        let timeout = self.timeout.or(self.machine.timeout());
        Ok(Workflow {
            inner: Arc::new(WorkflowInner {
                machine: self.machine,
                tasks: self.tasks,
                timer: self.timer,
                store: self.store,
                timeout,
                jitter_seed: self.jitter_seed,
            }),
        })
    }
}

/// What every execution of a workflow shares.
pub(super) struct WorkflowInner {
    pub(super) machine: StateMachine,
    pub(super) tasks: TaskRegistry,
    pub(super) timer: Arc<dyn Timer>,
    pub(super) store: Option<ExecutionStore>,
    pub(super) timeout: Option<Duration>,
    pub(super) jitter_seed: u64,
}

/// A state machine with its task handlers: runs executions, records their history,
/// persists it and resumes crashed executions. The Step Functions role.
///
/// * Task states call handlers registered by name, with a per-task time limit
///   (`TimeoutSeconds`), `Retry` (interval, max attempts, backoff rate, max delay,
///   jitter) and `Catch` (error match, result path).
/// * Choice, Parallel, Map (with `MaxConcurrency`), Wait, Pass, Succeed and Fail states;
///   `InputPath`, `Parameters`, `ResultSelector`, `ResultPath` and `OutputPath`.
/// * A whole execution has a time limit (the definition's `TimeoutSeconds` or
///   [`WorkflowBuilder::timeout`]) and can be cancelled ([`ExecutionHandle::cancel`]).
/// * With a store, each history event is appended to an [`EventLog`](lakehouse_core::EventLog)
///   as it happens; [`resume`](Self::resume) replays the history and continues without
///   running completed tasks again (a task that was in flight runs again).
///
/// Cheap to clone.
#[derive(Clone)]
pub struct Workflow {
    inner: Arc<WorkflowInner>,
}

impl fmt::Debug for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workflow")
            .field("machine", &self.inner.machine)
            .field("tasks", &self.inner.tasks)
            .field("store", &self.inner.store)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl Workflow {
    /// A workflow running `machine`.
    pub fn builder(machine: StateMachine) -> WorkflowBuilder {
        WorkflowBuilder {
            machine,
            tasks: TaskRegistry::new(),
            timer: Arc::new(TokioTimer::new()),
            store: None,
            timeout: None,
            jitter_seed: 0,
        }
    }

    /// The state machine.
    pub fn machine(&self) -> &StateMachine {
        &self.inner.machine
    }

    /// Runs a new execution `id` on `input` to its end.
    ///
    /// The `Err` case is for the runtime itself (an empty id; with a store, an id that
    /// already has a persisted history or whose execution, started through the same
    /// store, is still running: [`ErrorKind::Conflict`]; a store that fails); a
    /// workflow that fails returns `Ok` with [`ExecutionStatus::Failed`]. Of two
    /// concurrent starts of one id through one store, one runs and the other gets
    /// [`ErrorKind::Conflict`].
    pub async fn run(&self, id: &str, input: Value) -> Result<Execution> {
        let run = self.prepare_new(id).await?;
        execute(run, Start::New(input)).await
    }

    /// Starts a new execution on the current tokio runtime and returns a handle to
    /// cancel it or wait for it. Fails with [`ErrorKind::Unsupported`] outside a tokio
    /// runtime, or as [`run`](Self::run) does.
    pub async fn start(&self, id: &str, input: Value) -> Result<ExecutionHandle> {
        let handle = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::new(ErrorKind::Unsupported, "no tokio runtime is current").with_source(e)
        })?;
        let run = self.prepare_new(id).await?;
        let cancel = run.cancel.clone();
        let task = handle.spawn(execute(run.clone(), Start::New(input)));
        Ok(ExecutionHandle {
            id: id.to_owned(),
            cancel,
            run,
            task,
        })
    }

    /// Continues execution `id` from its persisted history: completed tasks are not run
    /// again (their recorded results are used), a Wait waits only for what is left, and
    /// the execution time limit counts from the original start. An execution that had
    /// already ended is returned as recorded.
    ///
    /// Fails with [`ErrorKind::Unsupported`] without a store and
    /// [`ErrorKind::InvalidInput`] when there is no history for `id`.
    pub async fn resume(&self, id: &str) -> Result<Execution> {
        let store = self.inner.store.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                "resuming needs a store (WorkflowBuilder::store)",
            )
        })?;
        let events = store.load(id).await?;
        let Some(first) = events.first() else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "no persisted history for this execution",
            )
            .with_key(id));
        };
        let EventKind::ExecutionStarted { input } = &first.kind else {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "history starts with {} instead of ExecutionStarted",
                    first.kind.name()
                ),
            )
            .with_key(id));
        };
        // Events are numbered 1, 2, 3, ... as they are appended; a history whose
        // numbers do not increase (or leave no number for the next event) was not
        // written by this runtime.
        if let Some(w) = events.windows(2).find(|w| w[1].id <= w[0].id) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "history event {} follows event {}: event ids must increase",
                    w[1].id, w[0].id
                ),
            )
            .with_key(id));
        }
        if events.last().is_some_and(|e| e.id == u64::MAX) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                "history event id u64::MAX leaves no id for the next event",
            )
            .with_key(id));
        }
        let input = input.clone();
        let started_ms = first.timestamp_ms;
        if let Some(done) = finished(id, &events) {
            return Ok(done);
        }
        let run = Arc::new(Run::new(self.inner.clone(), id, events));
        execute(run, Start::Resume { input, started_ms }).await
    }

    async fn prepare_new(&self, id: &str) -> Result<Arc<Run>> {
        if id.is_empty() {
            return Err(Error::new(ErrorKind::InvalidInput, "execution id is empty"));
        }
        let claim = match &self.inner.store {
            Some(store) => Some(store.claim(id).await?),
            None => None,
        };
        let mut run = Run::new(self.inner.clone(), id, Vec::new());
        run.claim = claim;
        Ok(Arc::new(run))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::workflow::builder::State;
    use crate::workflow::execution::ExecutionStatus;

    #[tokio::test]
    async fn pass_chain_runs_to_the_end() {
        let m = StateMachine::builder("A")
            .state(
                "A",
                State::pass().result(json!(1)).result_path("$.a").next("B"),
            )
            .state("B", State::succeed())
            .build()
            .unwrap();
        let wf = Workflow::builder(m).build().unwrap();
        let e = wf.run("x", json!({"z": 0})).await.unwrap();
        assert_eq!(e.status, ExecutionStatus::Succeeded);
        assert_eq!(e.output, Some(json!({"z": 0, "a": 1})));
        let names: Vec<&str> = e.history.iter().map(|h| h.kind.name()).collect();
        assert_eq!(
            names,
            [
                "ExecutionStarted",
                "StateEntered",
                "StateExited",
                "StateEntered",
                "StateExited",
                "ExecutionSucceeded"
            ]
        );
    }
}
