//! The orchestration runtime: event-source triggers and workflows.
//!
//! Placeholder docs; completed below.

mod backoff;
mod dead_letter;
mod time;
mod trigger;
mod workflow;

pub use backoff::{Backoff, Jitter, JitterRng};
pub use dead_letter::DeadLetter;
pub use time::{CancelToken, ManualTimer, Timer, TokioTimer};
pub use trigger::{
    BatchError, BatchHandler, RunningTrigger, ShardMetrics, Trigger, TriggerBatch, TriggerBuilder,
    TriggerConfig, TriggerMetrics,
};
pub use workflow::{
    Catcher, ChoiceRule, DefinitionError, EventKind, Execution, ExecutionHandle, ExecutionStatus,
    ExecutionStore, HistoryEvent, Retrier, State, StateMachine, StateMachineBuilder, TaskContext,
    TaskError, TaskHandler, TaskRegistry, Workflow, WorkflowBuilder,
};
