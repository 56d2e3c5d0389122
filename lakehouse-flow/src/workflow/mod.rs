//! Workflows: state machines in the manner of AWS Step Functions.
//!
//! A definition is parsed from JSON (`parse`) or built in code (`builder`) into a
//! `StateMachine` (`machine`); `validate` and `retry_catch` hold what both paths
//! check. A `Workflow` (`engine`) runs it with the handlers of a `TaskRegistry`
//! (`task`): the `interpreter` walks the states (`task_states` for Task, Parallel and
//! Map, `choice` for Choice rules, `path` for the data paths) and records the
//! `history` of each `execution`.

mod builder;
mod choice;
mod engine;
mod execution;
mod history;
mod interpreter;
mod machine;
mod parse;
mod path;
mod retry_catch;
mod task;
mod task_states;
mod validate;

pub use builder::{ChoiceRule, State, StateMachineBuilder};
pub use engine::{Workflow, WorkflowBuilder};
pub use execution::{Execution, ExecutionHandle, ExecutionStatus};
pub use history::{EventKind, ExecutionStore, HistoryEvent};
pub use machine::StateMachine;
pub use retry_catch::{Catcher, Retrier};
pub use task::{TaskContext, TaskError, TaskHandler, TaskRegistry};
pub use validate::DefinitionError;
