//! Definitions in code: [`State`] (one state, a constructor per type and a setter per
//! field), [`ChoiceRule`] and [`StateMachineBuilder`]. They write States Language JSON,
//! which building checks as [`StateMachine::from_json`] would.

use std::time::Duration;

use lakehouse_core::Result;
use serde_json::{Map, Value, json};

use crate::workflow::machine::StateMachine;
use crate::workflow::retry_catch::{Catcher, Retrier};

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
    pub(super) fn new(start_at: &str) -> Self {
        StateMachineBuilder {
            start_at: start_at.into(),
            states: Map::new(),
            timeout: None,
            comment: None,
        }
    }

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
