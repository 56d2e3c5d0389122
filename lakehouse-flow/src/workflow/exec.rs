//! The workflow interpreter: runs a [`StateMachine`] with registered task handlers,
//! records and persists its history, and resumes it by replay.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::backoff::JitterRng;
use crate::time::{Timer, TokioTimer};
use crate::workflow::definition::{CState, Kind, Machine, Next, StateMachine, WaitFor};
use crate::workflow::history::{EventKind, ExecutionStore, HistoryEvent};
use crate::workflow::task::{TaskContext, TaskError, TaskHandler, TaskRegistry};
use lakehouse_core::CancelToken;
use lakehouse_core::{Error, ErrorKind, Result};

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

struct WorkflowInner {
    machine: StateMachine,
    tasks: TaskRegistry,
    timer: Arc<dyn Timer>,
    store: Option<ExecutionStore>,
    timeout: Option<Duration>,
    jitter_seed: u64,
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
    /// The `Err` case is for the runtime itself (an empty id, an id that already has a
    /// persisted history: [`ErrorKind::Conflict`], a store that fails); a workflow that
    /// fails returns `Ok` with [`ExecutionStatus::Failed`].
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
        if let Some(store) = &self.inner.store
            && !store.load(id).await?.is_empty()
        {
            return Err(Error::new(
                ErrorKind::Conflict,
                "an execution with this id already has a history; resume it instead",
            )
            .with_key(id));
        }
        Ok(Arc::new(Run::new(self.inner.clone(), id, Vec::new())))
    }
}

/// A running execution, from [`Workflow::start`].
pub struct ExecutionHandle {
    id: String,
    cancel: CancelToken,
    run: Arc<Run>,
    task: tokio::task::JoinHandle<Result<Execution>>,
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
fn finished(id: &str, events: &[HistoryEvent]) -> Option<Execution> {
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

enum Start {
    New(Value),
    Resume { input: Value, started_ms: i64 },
}

/// What a replayed history already knows.
#[derive(Default)]
struct Replay {
    tasks: HashMap<(String, u32), std::result::Result<Value, TaskError>>,
    waits: HashMap<String, i64>,
    seen: HashSet<String>,
}

/// The state of one execution while it runs.
struct Run {
    wf: Arc<WorkflowInner>,
    id: String,
    history: Mutex<Vec<HistoryEvent>>,
    next_id: AtomicU64,
    replay: Replay,
    store_error: Mutex<Option<Error>>,
    rng: Mutex<JitterRng>,
    cancel: CancelToken,
    transitions: AtomicU64,
}

type StepResult = std::result::Result<(Value, Option<String>), TaskError>;

fn runtime(cause: impl Into<String>) -> TaskError {
    TaskError::new(TaskError::RUNTIME, cause)
}

impl Run {
    fn new(wf: Arc<WorkflowInner>, id: &str, events: Vec<HistoryEvent>) -> Run {
        let mut replay = Replay::default();
        for e in &events {
            if let Some(identity) = e.kind.identity() {
                replay.seen.insert(identity);
            }
            match &e.kind {
                EventKind::TaskSucceeded {
                    key,
                    attempt,
                    output,
                    ..
                } => {
                    replay
                        .tasks
                        .insert((key.clone(), *attempt), Ok(output.clone()));
                }
                EventKind::TaskFailed {
                    key,
                    attempt,
                    error,
                    ..
                } => {
                    replay
                        .tasks
                        .insert((key.clone(), *attempt), Err(error.clone()));
                }
                EventKind::WaitStarted { key, until_ms, .. } => {
                    replay.waits.insert(key.clone(), *until_ms);
                }
                _ => {}
            }
        }
        let mut h = std::hash::DefaultHasher::new();
        id.hash(&mut h);
        let next_id = events.last().map_or(1, |e| e.id + 1);
        Run {
            rng: Mutex::new(JitterRng::new(wf.jitter_seed ^ h.finish())),
            wf,
            id: id.to_owned(),
            history: Mutex::new(events),
            next_id: AtomicU64::new(next_id),
            replay,
            store_error: Mutex::new(None),
            cancel: CancelToken::new(),
            transitions: AtomicU64::new(0),
        }
    }

    /// Appends an event (unless a replayed history already holds it) and persists it.
    async fn record(&self, kind: EventKind) {
        if kind
            .identity()
            .is_some_and(|identity| self.replay.seen.contains(&identity))
        {
            return;
        }
        let event = HistoryEvent {
            id: self.next_id.fetch_add(1, Ordering::SeqCst),
            timestamp_ms: self.wf.timer.now_millis(),
            kind,
        };
        let persist = self.wf.store.as_ref().map(|_| event.clone());
        self.history.lock().push(event);
        if let (Some(store), Some(event)) = (&self.wf.store, persist)
            && let Err(e) = store.append(&self.id, &event).await
        {
            self.store_error.lock().get_or_insert(e);
        }
    }

    fn context(&self, state: &str, item: Option<(usize, &Value)>) -> Value {
        let mut ctx = json!({
            "Execution": {"Id": self.id, "Name": self.id},
            "State": {"Name": state},
        });
        if let Some((index, value)) = item {
            ctx["Map"] = json!({"Item": {"Index": index, "Value": value}});
        }
        ctx
    }

    /// Runs `machine` from its start on `input`; state keys are prefixed by `scope`,
    /// state names by `prefix`.
    fn run_machine<'a>(
        &'a self,
        machine: &'a Machine,
        input: Value,
        scope: String,
        prefix: String,
    ) -> BoxFuture<'a, std::result::Result<Value, TaskError>> {
        Box::pin(async move {
            let mut visits: HashMap<&str, u32> = HashMap::new();
            let mut name: &str = &machine.start_at;
            let mut payload = input;
            loop {
                let Some((name_ref, state)) = machine.states.get_key_value(name) else {
                    return Err(runtime(format!("state {name:?} does not exist")));
                };
                let visit = visits.entry(name_ref).or_insert(0);
                let key = format!("{scope}{name}#{visit}");
                *visit += 1;
                let qualified = format!("{prefix}{name}");
                self.record(EventKind::StateEntered {
                    state: qualified.clone(),
                    key: key.clone(),
                    input: payload.clone(),
                })
                .await;
                match self.run_state(&qualified, state, payload, &key).await {
                    Ok((output, next)) => {
                        self.record(EventKind::StateExited {
                            state: qualified,
                            key,
                            output: output.clone(),
                        })
                        .await;
                        match next {
                            None => return Ok(output),
                            Some(next) => {
                                let Some((next_ref, _)) = machine.states.get_key_value(&next)
                                else {
                                    return Err(runtime(format!("state {next:?} does not exist")));
                                };
                                name = next_ref;
                                payload = output;
                            }
                        }
                    }
                    Err(error) => {
                        self.record(EventKind::StateFailed {
                            state: qualified,
                            key,
                            error: error.clone(),
                        })
                        .await;
                        return Err(error);
                    }
                }
                // Let time-outs and cancellation in, even in a loop of Pass and Choice
                // states that never waits.
                if self.transitions.fetch_add(1, Ordering::Relaxed) % 16 == 15 {
                    tokio::task::yield_now().await;
                }
            }
        })
    }

    async fn run_state(&self, name: &str, st: &CState, raw: Value, key: &str) -> StepResult {
        let next = || match &st.next {
            Next::To(n) => Some(n.clone()),
            Next::End => None,
        };
        match &st.kind {
            Kind::Pass { result } => {
                let effective = self.effective_input(name, st, &raw)?;
                let result = result.clone().unwrap_or(effective);
                let out = st
                    .result_path
                    .merge(raw, result)
                    .map_err(|e| TaskError::new(TaskError::RESULT_PATH_MATCH_FAILURE, e))?;
                Ok((self.output(name, st, &out)?, next()))
            }
            Kind::Succeed => {
                let input = st
                    .input_path
                    .apply(&raw, &self.context(name, None))
                    .map_err(runtime)?;
                Ok((self.output(name, st, &input)?, None))
            }
            Kind::Fail { error, cause } => Err(TaskError::new(error.clone(), cause.clone())),
            Kind::Choice { choices, default } => {
                let ctx = self.context(name, None);
                let input = st.input_path.apply(&raw, &ctx).map_err(runtime)?;
                for (rule, target) in choices {
                    if rule.eval(&input, &ctx).map_err(runtime)? {
                        return Ok((self.output(name, st, &input)?, Some(target.clone())));
                    }
                }
                match default {
                    Some(d) => Ok((self.output(name, st, &input)?, Some(d.clone()))),
                    None => Err(TaskError::new(
                        TaskError::NO_CHOICE_MATCHED,
                        format!("no choice rule of state {name:?} matched and it has no Default"),
                    )),
                }
            }
            Kind::Wait(wait) => {
                let ctx = self.context(name, None);
                let input = st.input_path.apply(&raw, &ctx).map_err(runtime)?;
                let now = self.wf.timer.now_millis();
                let until = match self.replay.waits.get(key) {
                    Some(until) => *until,
                    None => wait_until(wait, &input, &ctx, now)?,
                };
                self.record(EventKind::WaitStarted {
                    state: name.to_owned(),
                    key: key.to_owned(),
                    until_ms: until,
                })
                .await;
                let left = until.saturating_sub(self.wf.timer.now_millis());
                if left > 0 {
                    self.wf
                        .timer
                        .sleep(Duration::from_millis(left.unsigned_abs()))
                        .await;
                }
                Ok((self.output(name, st, &input)?, next()))
            }
            Kind::Task { .. } | Kind::Parallel { .. } | Kind::Map { .. } => {
                self.run_with_retry(name, st, raw, key).await
            }
        }
    }

    fn effective_input(
        &self,
        name: &str,
        st: &CState,
        raw: &Value,
    ) -> std::result::Result<Value, TaskError> {
        let ctx = self.context(name, None);
        let input = st.input_path.apply(raw, &ctx).map_err(runtime)?;
        match &st.parameters {
            None => Ok(input),
            Some(t) => t
                .render(&input, &ctx)
                .map_err(|e| TaskError::new(TaskError::PARAMETER_PATH_FAILURE, e)),
        }
    }

    fn output(
        &self,
        name: &str,
        st: &CState,
        out: &Value,
    ) -> std::result::Result<Value, TaskError> {
        st.output_path
            .apply(out, &self.context(name, None))
            .map_err(runtime)
    }

    async fn run_with_retry(&self, name: &str, st: &CState, raw: Value, key: &str) -> StepResult {
        let effective = self.effective_input(name, st, &raw)?;
        let mut used = vec![0u32; st.retry.len()];
        let mut attempt = 0u32;
        loop {
            let result = match &st.kind {
                Kind::Task { resource, timeout } => {
                    self.call_task(name, resource, *timeout, effective.clone(), key, attempt)
                        .await
                }
                Kind::Parallel { branches } => {
                    let runs = branches.iter().enumerate().map(|(i, b)| {
                        self.run_machine(
                            b,
                            effective.clone(),
                            format!("{key}@{attempt}/b{i}/"),
                            format!("{name}/Branches[{i}]/"),
                        )
                    });
                    futures::future::try_join_all(runs).await.map(Value::Array)
                }
                Kind::Map {
                    processor,
                    items_path,
                    item_selector,
                    max_concurrency,
                } => {
                    self.run_map(
                        name,
                        key,
                        attempt,
                        &effective,
                        processor,
                        items_path,
                        item_selector.as_ref(),
                        *max_concurrency,
                    )
                    .await
                }
                _ => Err(runtime("not a task-like state")),
            };
            let error = match result {
                Ok(result) => {
                    let result = match &st.result_selector {
                        None => result,
                        Some(t) => t
                            .render(&result, &self.context(name, None))
                            .map_err(|e| TaskError::new(TaskError::RUNTIME, e))?,
                    };
                    let out = st
                        .result_path
                        .merge(raw, result)
                        .map_err(|e| TaskError::new(TaskError::RESULT_PATH_MATCH_FAILURE, e))?;
                    let next = match &st.next {
                        Next::To(n) => Some(n.clone()),
                        Next::End => None,
                    };
                    return Ok((self.output(name, st, &out)?, next));
                }
                Err(e) => e,
            };
            if let Some(i) = st.retry.iter().position(|r| error.matches(&r.error_equals))
                && used[i] < st.retry[i].max_attempts
            {
                let delay = st.retry[i].backoff().delay(used[i], &mut self.rng.lock());
                used[i] += 1;
                attempt += 1;
                self.record(EventKind::RetryScheduled {
                    state: name.to_owned(),
                    key: key.to_owned(),
                    attempt,
                    delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error: error.clone(),
                })
                .await;
                // On replay, an attempt whose outcome is recorded needs no wait before it.
                if !self.replay.tasks.contains_key(&(key.to_owned(), attempt)) {
                    self.wf.timer.sleep(delay).await;
                }
                continue;
            }
            if let Some((_, next, result_path)) = st.catch.iter().find(|c| error.matches(&c.0)) {
                let out = result_path
                    .merge(raw, error.to_json())
                    .map_err(|e| TaskError::new(TaskError::RESULT_PATH_MATCH_FAILURE, e))?;
                self.record(EventKind::Caught {
                    state: name.to_owned(),
                    key: key.to_owned(),
                    error,
                    next: next.clone(),
                })
                .await;
                return Ok((out, Some(next.clone())));
            }
            return Err(error);
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_map(
        &self,
        name: &str,
        key: &str,
        attempt: u32,
        effective: &Value,
        processor: &Machine,
        items_path: &crate::workflow::path::DataPath,
        item_selector: Option<&crate::workflow::path::Template>,
        max_concurrency: usize,
    ) -> std::result::Result<Value, TaskError> {
        let items = items_path
            .apply(effective, &self.context(name, None))
            .map_err(runtime)?;
        let Value::Array(items) = items else {
            return Err(runtime(format!(
                "the items of Map state {name:?} are not an array"
            )));
        };
        let limit = if max_concurrency == 0 {
            items.len().max(1)
        } else {
            max_concurrency
        };
        let mut inputs = Vec::with_capacity(items.len());
        for (j, item) in items.iter().enumerate() {
            inputs.push(match item_selector {
                None => item.clone(),
                Some(t) => t
                    .render(effective, &self.context(name, Some((j, item))))
                    .map_err(|e| TaskError::new(TaskError::PARAMETER_PATH_FAILURE, e))?,
            });
        }
        let outputs: Vec<Value> = futures::stream::iter(inputs.into_iter().enumerate())
            .map(|(j, input)| {
                self.run_machine(
                    processor,
                    input,
                    format!("{key}@{attempt}/i{j}/"),
                    format!("{name}/ItemProcessor/"),
                )
            })
            .buffered(limit)
            .try_collect()
            .await?;
        Ok(Value::Array(outputs))
    }

    async fn call_task(
        &self,
        name: &str,
        resource: &str,
        timeout: Option<Duration>,
        input: Value,
        key: &str,
        attempt: u32,
    ) -> std::result::Result<Value, TaskError> {
        if let Some(recorded) = self.replay.tasks.get(&(key.to_owned(), attempt)) {
            return recorded.clone();
        }
        let Some(handler) = self.wf.tasks.get(resource) else {
            return Err(runtime(format!(
                "no task handler is registered as {resource:?}"
            )));
        };
        self.record(EventKind::TaskStarted {
            state: name.to_owned(),
            key: key.to_owned(),
            attempt,
            input: input.clone(),
        })
        .await;
        let ctx = TaskContext {
            execution_id: self.id.clone(),
            state: name.to_owned(),
            attempt,
            key: key.to_owned(),
            cancel: self.cancel.clone(),
        };
        let call = async {
            let fut = std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(input, ctx)));
            let outcome = match fut {
                Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            outcome.unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("non-string panic payload");
                Err(TaskError::failed(format!("task handler panicked: {msg}")))
            })
        };
        let result = match timeout {
            None => call.await,
            Some(limit) => {
                tokio::select! {
                    biased;
                    r = call => r,
                    () = self.wf.timer.sleep(limit) => Err(TaskError::new(
                        TaskError::TIMEOUT,
                        format!("task {name:?} did not finish within {limit:?}"),
                    )),
                }
            }
        };
        match &result {
            Ok(output) => {
                self.record(EventKind::TaskSucceeded {
                    state: name.to_owned(),
                    key: key.to_owned(),
                    attempt,
                    output: output.clone(),
                })
                .await
            }
            Err(error) => {
                self.record(EventKind::TaskFailed {
                    state: name.to_owned(),
                    key: key.to_owned(),
                    attempt,
                    error: error.clone(),
                })
                .await
            }
        }
        result
    }
}

fn wait_until(
    wait: &WaitFor,
    input: &Value,
    ctx: &Value,
    now: i64,
) -> std::result::Result<i64, TaskError> {
    let after = |d: Duration| now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Ok(match wait {
        WaitFor::For(d) => after(*d),
        WaitFor::Until(ts) => *ts,
        WaitFor::ForPath(p) => {
            let secs = p
                .get(input, ctx)
                .and_then(Value::as_f64)
                .filter(|s| *s >= 0.0 && s.is_finite())
                .ok_or_else(|| runtime(format!("SecondsPath {p} is not a non-negative number")))?;
            after(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
        }
        WaitFor::UntilPath(p) => p
            .get(input, ctx)
            .and_then(Value::as_str)
            .and_then(crate::workflow::choice::parse_timestamp)
            .ok_or_else(|| runtime(format!("TimestampPath {p} is not an RFC 3339 timestamp")))?,
    })
}

async fn execute(run: Arc<Run>, start: Start) -> Result<Execution> {
    let now = run.wf.timer.now_millis();
    let (input, started_ms) = match start {
        Start::New(input) => {
            run.record(EventKind::ExecutionStarted {
                input: input.clone(),
            })
            .await;
            (input, now)
        }
        Start::Resume { input, started_ms } => {
            run.record(EventKind::ExecutionResumed).await;
            (input, started_ms)
        }
    };
    if let Some(e) = run.store_error.lock().take() {
        return Err(e);
    }
    enum End {
        Done(std::result::Result<Value, TaskError>),
        TimedOut,
        Aborted,
    }
    let timer = run.wf.timer.clone();
    let deadline = async {
        match run.wf.timeout {
            None => futures::future::pending::<()>().await,
            Some(limit) => {
                let end =
                    started_ms.saturating_add(i64::try_from(limit.as_millis()).unwrap_or(i64::MAX));
                let left = end.saturating_sub(timer.now_millis());
                if left > 0 {
                    timer
                        .sleep(Duration::from_millis(left.unsigned_abs()))
                        .await;
                }
            }
        }
    };
    let machine = run.wf.machine.machine.clone();
    let end = tokio::select! {
        biased;
        () = run.cancel.cancelled() => End::Aborted,
        () = deadline => End::TimedOut,
        r = run.run_machine(&machine, input, String::new(), String::new()) => End::Done(r),
    };
    // Stop anything that still watches the token (a timed-out task's handler).
    run.cancel.cancel();
    let kind = match end {
        End::Done(Ok(output)) => EventKind::ExecutionSucceeded { output },
        End::Done(Err(error)) => EventKind::ExecutionFailed { error },
        End::TimedOut => EventKind::ExecutionTimedOut,
        End::Aborted => EventKind::ExecutionAborted,
    };
    run.record(kind).await;
    if let Some(e) = run.store_error.lock().take() {
        return Err(e);
    }
    let history = run.history.lock().clone();
    finished(&run.id, &history).ok_or_else(|| {
        Error::new(
            ErrorKind::Internal,
            "an ended execution has no terminal event",
        )
        .with_key(&run.id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pass_chain_runs_to_the_end() {
        let m = StateMachine::builder("A")
            .state(
                "A",
                crate::State::pass()
                    .result(json!(1))
                    .result_path("$.a")
                    .next("B"),
            )
            .state("B", crate::State::succeed())
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
