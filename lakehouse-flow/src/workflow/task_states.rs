//! The task-like states, Task, Parallel and Map: attempts with `Retry` and `Catch`,
//! the fan-out of branches and items, and the call of a task handler under its time
//! limit (or its recorded outcome, on replay).

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use crate::panic::catch_panic;
use crate::workflow::history::EventKind;
use crate::workflow::interpreter::{Run, StepResult, runtime};
use crate::workflow::machine::{CState, Kind, Machine, Next};
use crate::workflow::path::{DataPath, Template};
use crate::workflow::task::{TaskContext, TaskError};

impl Run {
    /// Runs a Task, Parallel or Map state: its attempts, with the `Retry` rules between
    /// them and the `Catch` rules after the last.
    pub(super) async fn run_with_retry(
        &self,
        name: &str,
        st: &CState,
        raw: Value,
        key: &str,
    ) -> StepResult {
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
        items_path: &DataPath,
        item_selector: Option<&Template>,
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
            catch_panic(|| handler.call(input, ctx))
                .await
                .unwrap_or_else(|msg| {
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
