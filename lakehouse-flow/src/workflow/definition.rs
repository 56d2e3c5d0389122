//! State machine definitions: the States Language subset, parsed from JSON or built in
//! code, checked, and compiled for the interpreter.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::backoff::Jitter;
use crate::workflow::choice::{Rule, parse_timestamp};
use crate::workflow::path::{DataPath, Path, ResultPath, Template};
use lakehouse_core::{Error, ErrorKind, Result};

/// What is wrong with a workflow definition, and where: the state (nested states are
/// named `Outer/Branches[1]/Inner` or `Outer/ItemProcessor/Inner`) and the field.
///
/// It is the [`source`](std::error::Error::source) of the [`ErrorKind::InvalidInput`]
/// error that parsing or building returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    state: Option<String>,
    field: Option<String>,
    message: String,
}

impl DefinitionError {
    /// The state, if the problem is inside one.
    pub fn state(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// The field, if one is at fault.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn into_error(self) -> Error {
        let mut e = Error::new(ErrorKind::InvalidInput, self.to_string());
        if let Some(s) = &self.state {
            e = e.with_key(s.clone());
        }
        e.with_source(self)
    }
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid workflow definition: ")?;
        if let Some(s) = &self.state {
            write!(f, "state {s:?}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "field {field:?}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for DefinitionError {}

/// A retry rule (the States Language `Retry` entry): which errors it handles and how
/// it waits.
///
/// Attempt `n` (counting from 0) waits `min(interval * backoff_rate^n, max_delay)`,
/// randomised by `jitter`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Retrier {
    /// Error names this rule handles (`States.ALL` for every error but
    /// `States.Runtime`).
    pub error_equals: Vec<String>,
    /// Delay before the first retry (default 1 s).
    pub interval: Duration,
    /// Retries at most (default 3; 0 means never).
    pub max_attempts: u32,
    /// Multiplier per retry (default 2.0, at least 1.0).
    pub backoff_rate: f64,
    /// Upper bound of a delay.
    pub max_delay: Option<Duration>,
    /// Randomisation of the delay (default none).
    pub jitter: Jitter,
}

impl Retrier {
    /// A rule for `errors` with the defaults.
    pub fn on<S: Into<String>>(errors: impl IntoIterator<Item = S>) -> Self {
        Retrier {
            error_equals: errors.into_iter().map(Into::into).collect(),
            interval: Duration::from_secs(1),
            max_attempts: 3,
            backoff_rate: 2.0,
            max_delay: None,
            jitter: Jitter::None,
        }
    }

    /// Sets the first delay.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets the number of retries.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Sets the multiplier per retry.
    #[must_use]
    pub fn backoff_rate(mut self, rate: f64) -> Self {
        self.backoff_rate = rate;
        self
    }

    /// Caps every delay.
    #[must_use]
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = Some(max);
        self
    }

    /// Randomises delays.
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    pub(crate) fn backoff(&self) -> crate::Backoff {
        crate::Backoff {
            initial: self.interval,
            rate: self.backoff_rate,
            max_delay: self.max_delay,
            jitter: self.jitter,
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "ErrorEquals": self.error_equals,
            "IntervalSeconds": self.interval.as_secs_f64(),
            "MaxAttempts": self.max_attempts,
            "BackoffRate": self.backoff_rate,
        });
        if let Some(d) = self.max_delay {
            v["MaxDelaySeconds"] = json!(d.as_secs_f64());
        }
        if self.jitter == Jitter::Full {
            v["JitterStrategy"] = json!("FULL");
        }
        v
    }
}

/// A fallback rule (the States Language `Catch` entry): on a matching error, continue
/// at `next` with the error object `{"Error", "Cause"}` placed at `result_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Catcher {
    /// Error names this rule handles.
    pub error_equals: Vec<String>,
    /// The state to continue at.
    pub next: String,
    /// Where the error object goes in the state's input (`"$"` by default; `None`
    /// discards it).
    pub result_path: Option<String>,
}

impl Catcher {
    /// On `errors`, continue at `next` with the error object as the whole input.
    pub fn on<S: Into<String>>(
        errors: impl IntoIterator<Item = S>,
        next: impl Into<String>,
    ) -> Self {
        Catcher {
            error_equals: errors.into_iter().map(Into::into).collect(),
            next: next.into(),
            result_path: Some("$".into()),
        }
    }

    /// Places the error object at `path` in the state's input instead.
    #[must_use]
    pub fn result_path(mut self, path: impl Into<String>) -> Self {
        self.result_path = Some(path.into());
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "ErrorEquals": self.error_equals,
            "Next": self.next,
            "ResultPath": self.result_path,
        })
    }
}

/// A condition of a Choice state, built in code. Serialises to the States Language
/// rule it stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceRule(Value);

impl ChoiceRule {
    /// `variable` compared by `operator` (any States Language comparison operator, such
    /// as `"NumericGreaterThanEquals"` or `"StringMatches"`) with `operand`.
    pub fn compare(variable: &str, operator: &str, operand: impl Into<Value>) -> Self {
        let mut m = Map::new();
        m.insert("Variable".into(), Value::String(variable.into()));
        m.insert(operator.into(), operand.into());
        ChoiceRule(Value::Object(m))
    }

    /// `variable == value` (strings).
    pub fn string_eq(variable: &str, value: &str) -> Self {
        Self::compare(variable, "StringEquals", value)
    }

    /// `variable == value` (numbers).
    pub fn numeric_eq(variable: &str, value: f64) -> Self {
        Self::compare(variable, "NumericEquals", value)
    }

    /// `variable > value` (numbers).
    pub fn numeric_gt(variable: &str, value: f64) -> Self {
        Self::compare(variable, "NumericGreaterThan", value)
    }

    /// `variable >= value` (numbers).
    pub fn numeric_ge(variable: &str, value: f64) -> Self {
        Self::compare(variable, "NumericGreaterThanEquals", value)
    }

    /// `variable < value` (numbers).
    pub fn numeric_lt(variable: &str, value: f64) -> Self {
        Self::compare(variable, "NumericLessThan", value)
    }

    /// `variable == value` (booleans).
    pub fn boolean_eq(variable: &str, value: bool) -> Self {
        Self::compare(variable, "BooleanEquals", value)
    }

    /// `variable` exists in the input.
    pub fn is_present(variable: &str) -> Self {
        Self::compare(variable, "IsPresent", true)
    }

    /// All of `rules`.
    pub fn and(rules: impl IntoIterator<Item = ChoiceRule>) -> Self {
        ChoiceRule(json!({"And": rules.into_iter().map(|r| r.0).collect::<Vec<_>>()}))
    }

    /// Any of `rules`.
    pub fn or(rules: impl IntoIterator<Item = ChoiceRule>) -> Self {
        ChoiceRule(json!({"Or": rules.into_iter().map(|r| r.0).collect::<Vec<_>>()}))
    }

    /// The rule as States Language JSON.
    pub fn to_json(&self) -> Value {
        self.0.clone()
    }
}

impl std::ops::Not for ChoiceRule {
    type Output = ChoiceRule;

    /// The negation of the rule (`"Not"`).
    fn not(self) -> ChoiceRule {
        ChoiceRule(json!({"Not": self.0}))
    }
}

/// One state, built in code: a constructor per state type and chained setters for its
/// fields. Building writes States Language JSON; [`StateMachineBuilder::build`] checks it
/// as [`StateMachine::from_json`] would, so both paths give the same errors.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct State(Map<String, Value>);

impl State {
    fn of(kind: &str) -> Self {
        let mut m = Map::new();
        m.insert("Type".into(), Value::String(kind.into()));
        State(m)
    }

    fn set(mut self, key: &str, v: impl Into<Value>) -> Self {
        self.0.insert(key.into(), v.into());
        self
    }

    fn push(mut self, key: &str, v: Value) -> Self {
        let entry = self
            .0
            .entry(key)
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = entry {
            a.push(v);
        }
        self
    }

    /// A Task state running the handler registered as `resource`.
    pub fn task(resource: &str) -> Self {
        Self::of("Task").set("Resource", resource)
    }

    /// A Pass state (passes its input, or [`result`](Self::result), on).
    pub fn pass() -> Self {
        Self::of("Pass")
    }

    /// A Wait state that waits `duration`.
    pub fn wait(duration: Duration) -> Self {
        Self::of("Wait").set("Seconds", duration.as_secs_f64())
    }

    /// A Wait state that waits until the RFC 3339 `timestamp`.
    pub fn wait_until(timestamp: &str) -> Self {
        Self::of("Wait").set("Timestamp", timestamp)
    }

    /// A Choice state; add rules with [`when`](Self::when).
    pub fn choice() -> Self {
        Self::of("Choice")
    }

    /// A Succeed state.
    pub fn succeed() -> Self {
        Self::of("Succeed")
    }

    /// A Fail state ending the execution with `error` and `cause`.
    pub fn fail(error: &str, cause: &str) -> Self {
        Self::of("Fail").set("Error", error).set("Cause", cause)
    }

    /// A Parallel state running `branches` on the same input; its result is the array
    /// of their outputs.
    pub fn parallel(branches: impl IntoIterator<Item = StateMachine>) -> Self {
        let b: Vec<Value> = branches.into_iter().map(|m| m.source().clone()).collect();
        Self::of("Parallel").set("Branches", b)
    }

    /// A Map state running `processor` on every item of the array at
    /// [`items_path`](Self::items_path) (the whole input by default).
    pub fn map(processor: StateMachine) -> Self {
        Self::of("Map").set("ItemProcessor", processor.source().clone())
    }

    /// Continue at `state`.
    pub fn next(self, state: &str) -> Self {
        self.set("Next", state)
    }

    /// End the machine (or branch) after this state.
    pub fn end(self) -> Self {
        self.set("End", true)
    }

    /// Selects the state's input (`InputPath`).
    pub fn input_path(self, path: &str) -> Self {
        self.set("InputPath", path)
    }

    /// Selects the state's output (`OutputPath`).
    pub fn output_path(self, path: &str) -> Self {
        self.set("OutputPath", path)
    }

    /// Where the result goes in the input (`ResultPath`).
    pub fn result_path(self, path: &str) -> Self {
        self.set("ResultPath", path)
    }

    /// Discards the result: the output is the input (`"ResultPath": null`).
    pub fn discard_result(self) -> Self {
        self.set("ResultPath", Value::Null)
    }

    /// A payload template for the effective input (`Parameters`).
    pub fn parameters(self, template: Value) -> Self {
        self.set("Parameters", template)
    }

    /// A payload template applied to the result (`ResultSelector`).
    pub fn result_selector(self, template: Value) -> Self {
        self.set("ResultSelector", template)
    }

    /// The fixed result of a Pass state (`Result`).
    pub fn result(self, value: Value) -> Self {
        self.set("Result", value)
    }

    /// A retry rule (Task, Parallel, Map).
    pub fn retry(self, retrier: Retrier) -> Self {
        self.push("Retry", retrier.to_json())
    }

    /// A fallback rule (Task, Parallel, Map).
    pub fn catch(self, catcher: Catcher) -> Self {
        self.push("Catch", catcher.to_json())
    }

    /// A Task's time limit per attempt (`TimeoutSeconds`).
    pub fn timeout(self, timeout: Duration) -> Self {
        self.set("TimeoutSeconds", timeout.as_secs_f64())
    }

    /// A Choice rule: when `rule` holds, continue at `next`.
    pub fn when(self, rule: ChoiceRule, next: &str) -> Self {
        let mut r = rule.0;
        if let Value::Object(m) = &mut r {
            m.insert("Next".into(), Value::String(next.into()));
        }
        self.push("Choices", r)
    }

    /// A Choice state's default next state.
    pub fn otherwise(self, next: &str) -> Self {
        self.set("Default", next)
    }

    /// A Map state's items (`ItemsPath`).
    pub fn items_path(self, path: &str) -> Self {
        self.set("ItemsPath", path)
    }

    /// A Map state's per-item template (`ItemSelector`); `$$.Map.Item.Value` and
    /// `$$.Map.Item.Index` name the item.
    pub fn item_selector(self, template: Value) -> Self {
        self.set("ItemSelector", template)
    }

    /// A Map state's limit of items processed at once (0: no limit).
    pub fn max_concurrency(self, limit: usize) -> Self {
        self.set("MaxConcurrency", limit)
    }

    /// A comment.
    pub fn comment(self, text: &str) -> Self {
        self.set("Comment", text)
    }

    /// Sets any field to raw JSON, for fields without a setter.
    pub fn field(self, name: &str, value: Value) -> Self {
        self.set(name, value)
    }
}

/// Builds a [`StateMachine`] in code.
#[derive(Debug, Clone)]
#[must_use]
pub struct StateMachineBuilder {
    start_at: String,
    states: Map<String, Value>,
    timeout: Option<Duration>,
    comment: Option<String>,
}

impl StateMachineBuilder {
    /// Adds the state `name`.
    pub fn state(mut self, name: &str, state: State) -> Self {
        self.states.insert(name.into(), Value::Object(state.0));
        self
    }

    /// The execution time limit (`TimeoutSeconds`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// A comment.
    pub fn comment(mut self, text: &str) -> Self {
        self.comment = Some(text.into());
        self
    }

    /// Checks and compiles the machine.
    pub fn build(self) -> Result<StateMachine> {
        let mut v = json!({"StartAt": self.start_at, "States": self.states});
        if let Some(t) = self.timeout {
            v["TimeoutSeconds"] = json!(t.as_secs_f64());
        }
        if let Some(c) = self.comment {
            v["Comment"] = json!(c);
        }
        StateMachine::from_value(&v)
    }
}

/// A checked, compiled workflow definition. Cheap to clone.
#[derive(Clone)]
pub struct StateMachine {
    pub(crate) machine: Arc<Machine>,
    source: Arc<Value>,
}

impl fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateMachine")
            .field("start_at", &self.machine.start_at)
            .field("states", &self.machine.states.len())
            .field("timeout", &self.machine.timeout)
            .finish()
    }
}

impl StateMachine {
    /// Parses a definition in the States Language subset: `StartAt`, `States`,
    /// `TimeoutSeconds`, `Comment`, `Version`; states of type Task, Pass, Choice, Wait,
    /// Succeed, Fail, Parallel and Map.
    ///
    /// Errors are [`ErrorKind::InvalidInput`] and name the state and field; the
    /// structured [`DefinitionError`] is their source.
    pub fn from_json(text: &str) -> Result<StateMachine> {
        let v: Value = serde_json::from_str(text).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "invalid workflow definition: not JSON (line {}, column {}): {e}",
                    e.line(),
                    e.column()
                ),
            )
            .with_source(e)
        })?;
        StateMachine::from_value(&v)
    }

    /// Like [`from_json`](Self::from_json), from a parsed value.
    pub fn from_value(v: &Value) -> Result<StateMachine> {
        let machine = parse_machine(v, "", true).map_err(DefinitionError::into_error)?;
        Ok(StateMachine {
            machine: Arc::new(machine),
            source: Arc::new(v.clone()),
        })
    }

    /// Starts a machine in code whose first state is `start_at`.
    pub fn builder(start_at: &str) -> StateMachineBuilder {
        StateMachineBuilder {
            start_at: start_at.into(),
            states: Map::new(),
            timeout: None,
            comment: None,
        }
    }

    /// The definition as States Language JSON.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// The first state.
    pub fn start_at(&self) -> &str {
        &self.machine.start_at
    }

    /// The execution time limit, if the definition sets one.
    pub fn timeout(&self) -> Option<Duration> {
        self.machine.timeout
    }

    /// Every Task resource named in the machine, nested machines included, with the
    /// state that names it.
    pub fn resources(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.machine.collect_resources("", &mut out);
        out
    }
}

/// A compiled machine (top level, a Parallel branch or a Map processor).
#[derive(Debug)]
pub(crate) struct Machine {
    pub(crate) start_at: String,
    pub(crate) states: HashMap<String, CState>,
    pub(crate) timeout: Option<Duration>,
}

impl Machine {
    fn collect_resources(&self, prefix: &str, out: &mut Vec<(String, String)>) {
        let mut names: Vec<&String> = self.states.keys().collect();
        names.sort();
        for name in names {
            let s = &self.states[name];
            let qualified = format!("{prefix}{name}");
            match &s.kind {
                Kind::Task { resource, .. } => out.push((qualified, resource.clone())),
                Kind::Parallel { branches } => {
                    for (i, b) in branches.iter().enumerate() {
                        b.collect_resources(&format!("{qualified}/Branches[{i}]/"), out);
                    }
                }
                Kind::Map { processor, .. } => {
                    processor.collect_resources(&format!("{qualified}/ItemProcessor/"), out)
                }
                _ => {}
            }
        }
    }
}

#[derive(Debug)]
pub(crate) enum Next {
    To(String),
    End,
}

#[derive(Debug)]
pub(crate) enum WaitFor {
    For(Duration),
    Until(i64),
    ForPath(Path),
    UntilPath(Path),
}

#[derive(Debug)]
pub(crate) enum Kind {
    Task {
        resource: String,
        timeout: Option<Duration>,
    },
    Pass {
        result: Option<Value>,
    },
    Choice {
        choices: Vec<(Rule, String)>,
        default: Option<String>,
    },
    Wait(WaitFor),
    Succeed,
    Fail {
        error: String,
        cause: String,
    },
    Parallel {
        branches: Vec<Arc<Machine>>,
    },
    Map {
        processor: Arc<Machine>,
        items_path: DataPath,
        item_selector: Option<Template>,
        max_concurrency: usize,
    },
}

/// A compiled state.
#[derive(Debug)]
pub(crate) struct CState {
    pub(crate) kind: Kind,
    pub(crate) input_path: DataPath,
    pub(crate) output_path: DataPath,
    pub(crate) result_path: ResultPath,
    pub(crate) parameters: Option<Template>,
    pub(crate) result_selector: Option<Template>,
    pub(crate) next: Next,
    pub(crate) retry: Vec<Retrier>,
    pub(crate) catch: Vec<(Vec<String>, String, ResultPath)>,
}

impl CState {
    fn targets(&self) -> Vec<(&'static str, &str)> {
        let mut t = Vec::new();
        if let Next::To(n) = &self.next {
            t.push(("Next", n.as_str()));
        }
        if let Kind::Choice { choices, default } = &self.kind {
            for (_, n) in choices {
                t.push(("Choices", n.as_str()));
            }
            if let Some(d) = default {
                t.push(("Default", d.as_str()));
            }
        }
        for (_, n, _) in &self.catch {
            t.push(("Catch", n.as_str()));
        }
        t
    }
}

type DResult<T> = std::result::Result<T, DefinitionError>;

fn derr(state: Option<&str>, field: Option<&str>, message: impl Into<String>) -> DefinitionError {
    DefinitionError {
        state: state.map(str::to_owned),
        field: field.map(str::to_owned),
        message: message.into(),
    }
}

fn parse_machine(v: &Value, prefix: &str, top: bool) -> DResult<Machine> {
    let at = (!prefix.is_empty()).then(|| prefix.trim_end_matches('/'));
    let map = v
        .as_object()
        .ok_or_else(|| derr(at, None, "a state machine must be a JSON object"))?;
    for key in map.keys() {
        let ok = matches!(key.as_str(), "StartAt" | "States" | "Comment")
            || (top && matches!(key.as_str(), "TimeoutSeconds" | "Version"))
            || (!top && key == "ProcessorConfig");
        if !ok {
            return Err(derr(at, Some(key), "unknown or unsupported field"));
        }
    }
    let start_at = map
        .get("StartAt")
        .ok_or_else(|| derr(at, Some("StartAt"), "is missing"))?
        .as_str()
        .ok_or_else(|| derr(at, Some("StartAt"), "must be a string"))?
        .to_owned();
    let states_v = map
        .get("States")
        .ok_or_else(|| derr(at, Some("States"), "is missing"))?
        .as_object()
        .ok_or_else(|| derr(at, Some("States"), "must be an object of states"))?;
    if states_v.is_empty() {
        return Err(derr(at, Some("States"), "has no states"));
    }
    let timeout = match map.get("TimeoutSeconds") {
        None => None,
        Some(t) => Some(seconds(t).ok_or_else(|| {
            derr(
                at,
                Some("TimeoutSeconds"),
                "must be a positive number of seconds",
            )
        })?),
    };
    let mut states = HashMap::with_capacity(states_v.len());
    for (name, sv) in states_v {
        if name.is_empty() || name.len() > 80 {
            return Err(derr(
                Some(&format!("{prefix}{name}")),
                None,
                "state names must have 1 to 80 characters",
            ));
        }
        states.insert(name.clone(), parse_state(&format!("{prefix}{name}"), sv)?);
    }
    if !states.contains_key(&start_at) {
        return Err(derr(
            at,
            Some("StartAt"),
            format!("names {start_at:?}, which is not a state"),
        ));
    }
    // Every transition goes to a state, and every state is reachable.
    let mut names: Vec<&String> = states.keys().collect();
    names.sort();
    for name in &names {
        for (field, target) in states[*name].targets() {
            if !states.contains_key(target) {
                return Err(derr(
                    Some(&format!("{prefix}{name}")),
                    Some(field),
                    format!("names {target:?}, which is not a state"),
                ));
            }
        }
    }
    let mut seen: HashSet<&str> = HashSet::from([start_at.as_str()]);
    let mut queue = VecDeque::from([start_at.as_str()]);
    while let Some(n) = queue.pop_front() {
        for (_, t) in states[n].targets() {
            if seen.insert(t) {
                queue.push_back(t);
            }
        }
    }
    if let Some(lost) = names.iter().find(|n| !seen.contains(n.as_str())) {
        return Err(derr(
            Some(&format!("{prefix}{lost}")),
            None,
            "is not reachable from StartAt",
        ));
    }
    Ok(Machine {
        start_at,
        states,
        timeout,
    })
}

fn seconds(v: &Value) -> Option<Duration> {
    let s = v.as_f64()?;
    (s > 0.0 && s.is_finite())
        .then(|| Duration::try_from_secs_f64(s).ok())
        .flatten()
}

fn allowed_fields(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Task" => &[
            "Resource",
            "InputPath",
            "OutputPath",
            "Parameters",
            "ResultSelector",
            "ResultPath",
            "Retry",
            "Catch",
            "Next",
            "End",
            "TimeoutSeconds",
        ],
        "Pass" => &[
            "InputPath",
            "OutputPath",
            "Parameters",
            "ResultPath",
            "Result",
            "Next",
            "End",
        ],
        "Choice" => &["InputPath", "OutputPath", "Choices", "Default"],
        "Wait" => &[
            "InputPath",
            "OutputPath",
            "Next",
            "End",
            "Seconds",
            "Timestamp",
            "SecondsPath",
            "TimestampPath",
        ],
        "Succeed" => &["InputPath", "OutputPath"],
        "Fail" => &["Error", "Cause"],
        "Parallel" => &[
            "InputPath",
            "OutputPath",
            "Parameters",
            "ResultSelector",
            "ResultPath",
            "Retry",
            "Catch",
            "Next",
            "End",
            "Branches",
        ],
        "Map" => &[
            "InputPath",
            "OutputPath",
            "Parameters",
            "ItemSelector",
            "ResultSelector",
            "ResultPath",
            "Retry",
            "Catch",
            "Next",
            "End",
            "ItemsPath",
            "MaxConcurrency",
            "Iterator",
            "ItemProcessor",
        ],
        _ => return None,
    })
}

fn parse_state(name: &str, v: &Value) -> DResult<CState> {
    let at = Some(name);
    let map = v
        .as_object()
        .ok_or_else(|| derr(at, None, "a state must be a JSON object"))?;
    let kind_name = map
        .get("Type")
        .ok_or_else(|| derr(at, Some("Type"), "is missing"))?
        .as_str()
        .ok_or_else(|| derr(at, Some("Type"), "must be a string"))?;
    let allowed = allowed_fields(kind_name).ok_or_else(|| {
        derr(
            at,
            Some("Type"),
            format!(
                "{kind_name:?} is not a supported state type (Task, Pass, Choice, Wait, \
                 Succeed, Fail, Parallel, Map)"
            ),
        )
    })?;
    for key in map.keys() {
        if key != "Type" && key != "Comment" && !allowed.contains(&key.as_str()) {
            return Err(derr(
                at,
                Some(key),
                format!("is not a field of a {kind_name} state (or is not supported)"),
            ));
        }
    }
    let str_field = |f: &str| -> DResult<Option<&str>> {
        map.get(f)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| derr(at, Some(f), "must be a string"))
            })
            .transpose()
    };
    let path_field = |f: &str| -> DResult<Option<Path>> {
        str_field(f)?
            .map(|t| Path::parse(t).map_err(|e| derr(at, Some(f), e)))
            .transpose()
    };
    let data_path = |f: &str| -> DResult<DataPath> {
        match map.get(f) {
            None => Ok(DataPath::default()),
            Some(Value::Null) => Ok(DataPath::Null),
            Some(_) => Ok(DataPath::Path(path_field(f)?.unwrap_or_else(Path::root))),
        }
    };
    let template = |f: &str| -> DResult<Option<Template>> {
        map.get(f)
            .map(|t| Template::parse(t).map_err(|e| derr(at, Some(f), e)))
            .transpose()
    };
    let input_path = data_path("InputPath")?;
    let output_path = data_path("OutputPath")?;
    let result_path = match map.get("ResultPath") {
        None => ResultPath::default(),
        Some(Value::Null) => ResultPath::Discard,
        Some(_) => {
            let p = path_field("ResultPath")?.unwrap_or_else(Path::root);
            if !p.fields_only() {
                return Err(derr(
                    at,
                    Some("ResultPath"),
                    "must name fields only, from '$' (no indices, no '$$')",
                ));
            }
            ResultPath::Path(p)
        }
    };
    let parameters = if kind_name == "Map" {
        None
    } else {
        template("Parameters")?
    };
    let result_selector = template("ResultSelector")?;
    let terminal = matches!(kind_name, "Choice" | "Succeed" | "Fail");
    let next = if terminal {
        Next::End
    } else {
        match (map.get("Next"), map.get("End")) {
            (Some(_), Some(_)) => {
                return Err(derr(
                    at,
                    Some("End"),
                    "a state cannot have both Next and End",
                ));
            }
            (Some(n), None) => Next::To(
                n.as_str()
                    .ok_or_else(|| derr(at, Some("Next"), "must be a state name"))?
                    .to_owned(),
            ),
            (None, Some(Value::Bool(true))) => Next::End,
            (None, Some(_)) => return Err(derr(at, Some("End"), "must be true")),
            (None, None) => {
                return Err(derr(at, Some("Next"), "is missing (or set \"End\": true)"));
            }
        }
    };
    let retry = match map.get("Retry") {
        None => Vec::new(),
        Some(r) => parse_retry(name, r)?,
    };
    let catch = match map.get("Catch") {
        None => Vec::new(),
        Some(c) => parse_catch(name, c)?,
    };
    let kind = match kind_name {
        "Task" => {
            let resource =
                str_field("Resource")?.ok_or_else(|| derr(at, Some("Resource"), "is missing"))?;
            if resource.is_empty() {
                return Err(derr(at, Some("Resource"), "is empty"));
            }
            let timeout = map
                .get("TimeoutSeconds")
                .map(|t| {
                    seconds(t).ok_or_else(|| {
                        derr(
                            at,
                            Some("TimeoutSeconds"),
                            "must be a positive number of seconds",
                        )
                    })
                })
                .transpose()?;
            Kind::Task {
                resource: resource.to_owned(),
                timeout,
            }
        }
        "Pass" => Kind::Pass {
            result: map.get("Result").cloned(),
        },
        "Choice" => {
            let list = map
                .get("Choices")
                .ok_or_else(|| derr(at, Some("Choices"), "is missing"))?
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| derr(at, Some("Choices"), "must be a non-empty array"))?;
            let mut choices = Vec::with_capacity(list.len());
            for (i, c) in list.iter().enumerate() {
                let field = |f: &str| format!("Choices[{i}].{f}");
                let rule = Rule::parse(c, true).map_err(|(f, m)| derr(at, Some(&field(&f)), m))?;
                let next = c
                    .get("Next")
                    .and_then(Value::as_str)
                    .ok_or_else(|| derr(at, Some(&field("Next")), "is missing or not a string"))?;
                choices.push((rule, next.to_owned()));
            }
            Kind::Choice {
                choices,
                default: str_field("Default")?.map(str::to_owned),
            }
        }
        "Wait" => {
            let given: Vec<&str> = ["Seconds", "Timestamp", "SecondsPath", "TimestampPath"]
                .into_iter()
                .filter(|f| map.contains_key(*f))
                .collect();
            let [field] = given.as_slice() else {
                return Err(derr(
                    at,
                    Some(given.get(1).copied().unwrap_or("Seconds")),
                    "a Wait state needs exactly one of Seconds, Timestamp, SecondsPath, \
                     TimestampPath",
                ));
            };
            let f = Some(*field);
            Kind::Wait(match *field {
                "Seconds" => {
                    let s = map[*field].as_f64().filter(|s| *s >= 0.0 && s.is_finite());
                    WaitFor::For(
                        s.and_then(|s| Duration::try_from_secs_f64(s).ok())
                            .ok_or_else(|| derr(at, f, "must be a non-negative number"))?,
                    )
                }
                "Timestamp" => WaitFor::Until(
                    map[*field]
                        .as_str()
                        .and_then(parse_timestamp)
                        .ok_or_else(|| derr(at, f, "must be an RFC 3339 timestamp"))?,
                ),
                "SecondsPath" => WaitFor::ForPath(path_field(field)?.unwrap_or_else(Path::root)),
                _ => WaitFor::UntilPath(path_field(field)?.unwrap_or_else(Path::root)),
            })
        }
        "Succeed" => Kind::Succeed,
        "Fail" => Kind::Fail {
            error: str_field("Error")?.unwrap_or("States.Fail").to_owned(),
            cause: str_field("Cause")?.unwrap_or("").to_owned(),
        },
        "Parallel" => {
            let list = map
                .get("Branches")
                .ok_or_else(|| derr(at, Some("Branches"), "is missing"))?
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| derr(at, Some("Branches"), "must be a non-empty array"))?;
            let branches = list
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    parse_machine(b, &format!("{name}/Branches[{i}]/"), false).map(Arc::new)
                })
                .collect::<DResult<_>>()?;
            Kind::Parallel { branches }
        }
        "Map" => {
            let (field, proc_v) = match (map.get("ItemProcessor"), map.get("Iterator")) {
                (Some(p), None) => ("ItemProcessor", p),
                (None, Some(p)) => ("Iterator", p),
                (Some(_), Some(_)) => {
                    return Err(derr(
                        at,
                        Some("Iterator"),
                        "give ItemProcessor or Iterator, not both",
                    ));
                }
                (None, None) => return Err(derr(at, Some("ItemProcessor"), "is missing")),
            };
            let processor = Arc::new(parse_machine(proc_v, &format!("{name}/{field}/"), false)?);
            let item_selector = match (
                map.contains_key("ItemSelector"),
                map.contains_key("Parameters"),
            ) {
                (true, true) => {
                    return Err(derr(
                        at,
                        Some("Parameters"),
                        "give ItemSelector or Parameters, not both",
                    ));
                }
                (true, false) => template("ItemSelector")?,
                (false, _) => template("Parameters")?,
            };
            let max_concurrency = match map.get("MaxConcurrency") {
                None => 0,
                Some(m) => m
                    .as_u64()
                    .and_then(|m| usize::try_from(m).ok())
                    .ok_or_else(|| {
                        derr(at, Some("MaxConcurrency"), "must be a non-negative integer")
                    })?,
            };
            Kind::Map {
                processor,
                items_path: data_path("ItemsPath")?,
                item_selector,
                max_concurrency,
            }
        }
        _ => unreachable!("allowed_fields accepted only the known state types"),
    };
    Ok(CState {
        kind,
        input_path,
        output_path,
        result_path,
        parameters,
        result_selector,
        next,
        retry,
        catch,
    })
}

fn error_names(at: Option<&str>, field: &str, v: Option<&Value>) -> DResult<Vec<String>> {
    let list = v
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| derr(at, Some(field), "must be a non-empty array of error names"))?;
    list.iter()
        .map(|e| {
            e.as_str()
                .map(str::to_owned)
                .ok_or_else(|| derr(at, Some(field), "error names must be strings"))
        })
        .collect()
}

fn parse_retry(name: &str, v: &Value) -> DResult<Vec<Retrier>> {
    let at = Some(name);
    let list = v
        .as_array()
        .ok_or_else(|| derr(at, Some("Retry"), "must be an array"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let f = |x: &str| format!("Retry[{i}].{x}");
        let m = r
            .as_object()
            .ok_or_else(|| derr(at, Some(&format!("Retry[{i}]")), "must be an object"))?;
        for key in m.keys() {
            if !matches!(
                key.as_str(),
                "ErrorEquals"
                    | "IntervalSeconds"
                    | "MaxAttempts"
                    | "BackoffRate"
                    | "MaxDelaySeconds"
                    | "JitterStrategy"
                    | "Comment"
            ) {
                return Err(derr(at, Some(&f(key)), "unknown or unsupported field"));
            }
        }
        let mut retrier = Retrier::on(error_names(at, &f("ErrorEquals"), m.get("ErrorEquals"))?);
        if let Some(x) = m.get("IntervalSeconds") {
            retrier.interval = seconds(x).ok_or_else(|| {
                derr(at, Some(&f("IntervalSeconds")), "must be a positive number")
            })?;
        }
        if let Some(x) = m.get("MaxAttempts") {
            retrier.max_attempts =
                x.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        derr(
                            at,
                            Some(&f("MaxAttempts")),
                            "must be a non-negative integer",
                        )
                    })?;
        }
        if let Some(x) = m.get("BackoffRate") {
            retrier.backoff_rate = x
                .as_f64()
                .filter(|b| *b >= 1.0 && b.is_finite())
                .ok_or_else(|| {
                    derr(
                        at,
                        Some(&f("BackoffRate")),
                        "must be a number of at least 1.0",
                    )
                })?;
        }
        if let Some(x) = m.get("MaxDelaySeconds") {
            retrier.max_delay = Some(seconds(x).ok_or_else(|| {
                derr(at, Some(&f("MaxDelaySeconds")), "must be a positive number")
            })?);
        }
        if let Some(x) = m.get("JitterStrategy") {
            retrier.jitter = match x.as_str() {
                Some("FULL") => Jitter::Full,
                Some("NONE") => Jitter::None,
                _ => {
                    return Err(derr(
                        at,
                        Some(&f("JitterStrategy")),
                        "must be \"FULL\" or \"NONE\"",
                    ));
                }
            };
        }
        out.push(retrier);
    }
    Ok(out)
}

fn parse_catch(name: &str, v: &Value) -> DResult<Vec<(Vec<String>, String, ResultPath)>> {
    let at = Some(name);
    let list = v
        .as_array()
        .ok_or_else(|| derr(at, Some("Catch"), "must be an array"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let f = |x: &str| format!("Catch[{i}].{x}");
        let m = c
            .as_object()
            .ok_or_else(|| derr(at, Some(&format!("Catch[{i}]")), "must be an object"))?;
        for key in m.keys() {
            if !matches!(
                key.as_str(),
                "ErrorEquals" | "Next" | "ResultPath" | "Comment"
            ) {
                return Err(derr(at, Some(&f(key)), "unknown or unsupported field"));
            }
        }
        let errors = error_names(at, &f("ErrorEquals"), m.get("ErrorEquals"))?;
        let next = m
            .get("Next")
            .and_then(Value::as_str)
            .ok_or_else(|| derr(at, Some(&f("Next")), "is missing or not a string"))?;
        let result_path = match m.get("ResultPath") {
            None => ResultPath::default(),
            Some(Value::Null) => ResultPath::Discard,
            Some(p) => {
                let p = p
                    .as_str()
                    .ok_or_else(|| derr(at, Some(&f("ResultPath")), "must be a path string"))?;
                let p = Path::parse(p).map_err(|e| derr(at, Some(&f("ResultPath")), e))?;
                if !p.fields_only() {
                    return Err(derr(at, Some(&f("ResultPath")), "must name fields only"));
                }
                ResultPath::Path(p)
            }
        };
        out.push((errors, next.to_owned(), result_path));
    }
    Ok(out)
}
