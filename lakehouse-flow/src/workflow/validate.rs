//! What makes a definition invalid: [`DefinitionError`], which names the state and field
//! at fault, and the checks of the state graph.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;

use lakehouse_core::{Error, ErrorKind};

use crate::workflow::machine::{CState, Kind, Next};

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

    pub(super) fn into_error(self) -> Error {
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

/// The result of parsing or checking a definition.
pub(super) type DResult<T> = std::result::Result<T, DefinitionError>;

/// A [`DefinitionError`] at `state` and `field`.
pub(super) fn derr(
    state: Option<&str>,
    field: Option<&str>,
    message: impl Into<String>,
) -> DefinitionError {
    DefinitionError {
        state: state.map(str::to_owned),
        field: field.map(str::to_owned),
        message: message.into(),
    }
}

/// Checks the state graph of the machine whose states are named `prefix` + name: every
/// transition goes to a state, and every state is reachable from `start_at`.
pub(super) fn check_graph(
    prefix: &str,
    start_at: &str,
    states: &HashMap<String, CState>,
) -> DResult<()> {
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
    let mut seen: HashSet<&str> = HashSet::from([start_at]);
    let mut queue = VecDeque::from([start_at]);
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
    Ok(())
}

impl CState {
    /// The states this one can continue at, with the field that names each.
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
