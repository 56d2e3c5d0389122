//! The state machine: [`StateMachine`], a checked definition with its States Language
//! source, and the compiled model of its states that the interpreter runs.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lakehouse_core::{Error, ErrorKind, Result};
use serde_json::Value;

use crate::workflow::builder::StateMachineBuilder;
use crate::workflow::choice::Rule;
use crate::workflow::parse::parse_machine;
use crate::workflow::path::{DataPath, Path, ResultPath, Template};
use crate::workflow::retry_catch::{CatchRule, Retrier};
use crate::workflow::validate::DefinitionError;

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
        StateMachineBuilder::new(start_at)
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
    pub(crate) catch: Vec<CatchRule>,
}
