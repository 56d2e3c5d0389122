//! Workflows: state machines in the manner of AWS Step Functions.

mod choice;
mod definition;
mod exec;
mod history;
mod path;
mod task;

pub use definition::{
    Catcher, ChoiceRule, DefinitionError, Retrier, State, StateMachine, StateMachineBuilder,
};
pub use exec::{Execution, ExecutionHandle, ExecutionStatus, Workflow, WorkflowBuilder};
pub use history::{EventKind, ExecutionStore, HistoryEvent};
pub use task::{TaskContext, TaskError, TaskHandler, TaskRegistry};
