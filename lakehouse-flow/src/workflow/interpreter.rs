//! The workflow interpreter: one execution's state ([`Run`]), its walk through the
//! states of a machine, its history recorded and persisted as it happens, and replay
//! of a persisted history on resume.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use lakehouse_core::{CancelToken, Error, ErrorKind, Result};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::backoff::JitterRng;
use crate::workflow::choice::parse_timestamp;
use crate::workflow::engine::WorkflowInner;
use crate::workflow::execution::{Execution, finished};
use crate::workflow::history::{Claim, EventKind, HistoryEvent};
use crate::workflow::machine::{CState, Kind, Machine, Next, WaitFor};
use crate::workflow::task::TaskError;

/// How an execution begins: afresh, or from a persisted history.
pub(super) enum Start {
    New(Value),
    Resume { input: Value, started_ms: i64 },
}

/// What a replayed history already knows.
#[derive(Default)]
pub(super) struct Replay {
    /// Outcomes of task attempts, by state key and attempt.
    pub(super) tasks: HashMap<(String, u32), std::result::Result<Value, TaskError>>,
    /// Deadlines of started waits, by state key.
    pub(super) waits: HashMap<String, i64>,
    /// Identities of the recorded events, which are not recorded again.
    pub(super) seen: HashSet<String>,
}

/// The state of one execution while it runs.
pub(super) struct Run {
    pub(super) wf: Arc<WorkflowInner>,
    pub(super) id: String,
    pub(super) history: Mutex<Vec<HistoryEvent>>,
    next_id: AtomicU64,
    pub(super) replay: Replay,
    store_error: Mutex<Option<Error>>,
    pub(super) rng: Mutex<JitterRng>,
    pub(super) cancel: CancelToken,
    transitions: AtomicU64,
    /// The execution id, taken in the store for as long as the execution runs.
    pub(super) claim: Option<Claim>,
}

/// A state's output and the state to continue at (`None`: the machine ends).
pub(super) type StepResult = std::result::Result<(Value, Option<String>), TaskError>;

/// A [`TaskError::RUNTIME`] error.
pub(super) fn runtime(cause: impl Into<String>) -> TaskError {
    TaskError::new(TaskError::RUNTIME, cause)
}

impl Run {
    pub(super) fn new(wf: Arc<WorkflowInner>, id: &str, events: Vec<HistoryEvent>) -> Run {
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
        let next_id = events.last().map_or(1, |e| e.id.saturating_add(1));
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
            claim: None,
        }
    }

    /// Appends an event (unless a replayed history already holds it) and persists it.
    pub(super) async fn record(&self, kind: EventKind) {
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

    pub(super) fn context(&self, state: &str, item: Option<(usize, &Value)>) -> Value {
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
    pub(super) fn run_machine<'a>(
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

    pub(super) fn effective_input(
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

    pub(super) fn output(
        &self,
        name: &str,
        st: &CState,
        out: &Value,
    ) -> std::result::Result<Value, TaskError> {
        st.output_path
            .apply(out, &self.context(name, None))
            .map_err(runtime)
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
            .and_then(parse_timestamp)
            .ok_or_else(|| runtime(format!("TimestampPath {p} is not an RFC 3339 timestamp")))?,
    })
}

/// Runs an execution to its end under its time limit and cancellation, and returns it
/// as its history records it.
pub(super) async fn execute(run: Arc<Run>, start: Start) -> Result<Execution> {
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
