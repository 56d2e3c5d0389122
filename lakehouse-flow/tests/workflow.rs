use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lakehouse_core::{Clock, ErrorKind, ManualClock, MemoryLog};
use lakehouse_flow::{
    Catcher, ChoiceRule, DefinitionError, EventKind, ExecutionStatus, ExecutionStore, ManualTimer,
    Retrier, State, StateMachine, TaskContext, TaskError, TaskRegistry, Workflow,
};
use serde_json::{Value, json};

fn timer() -> ManualTimer {
    ManualTimer::new(ManualClock::at_millis(1_700_000_000_000))
}

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// A handler that counts its calls and returns `f(input)`.
fn counted(
    calls: Arc<AtomicUsize>,
    f: impl Fn(Value) -> Result<Value, TaskError> + Send + Sync + 'static,
) -> impl Fn(Value, TaskContext) -> futures::future::Ready<Result<Value, TaskError>> {
    move |input, _ctx| {
        calls.fetch_add(1, Ordering::SeqCst);
        futures::future::ready(f(input))
    }
}

const PIPELINE: &str = r#"{
  "Comment": "retrain, evaluate, publish, warm the cache",
  "StartAt": "Prepare",
  "TimeoutSeconds": 3600,
  "States": {
    "Prepare": {"Type": "Pass", "Result": {"segments": ["new", "loyal", "lapsed"]}, "ResultPath": "$.plan", "Next": "Train"},
    "Train": {
      "Type": "Task", "Resource": "train",
      "Parameters": {"model": "als", "factors.$": "$.factors"},
      "ResultSelector": {"model_id.$": "$.id"},
      "ResultPath": "$.trained",
      "Retry": [{"ErrorEquals": ["Train.Flaky"], "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 3.0, "MaxDelaySeconds": 5}],
      "Next": "Evaluate"
    },
    "Evaluate": {
      "Type": "Parallel",
      "Branches": [
        {"StartAt": "Recall", "States": {"Recall": {"Type": "Task", "Resource": "recall", "End": true}}},
        {"StartAt": "Coverage", "States": {"Coverage": {"Type": "Pass", "Result": 0.4, "End": true}}}
      ],
      "ResultPath": "$.scores",
      "Next": "Good enough?"
    },
    "Good enough?": {
      "Type": "Choice",
      "Choices": [
        {"And": [{"Variable": "$.scores[0]", "NumericGreaterThanEquals": 0.2},
                 {"Variable": "$.trained.model_id", "StringMatches": "als-*"}],
         "Next": "Publish"}
      ],
      "Default": "Reject"
    },
    "Publish": {"Type": "Wait", "Seconds": 30, "Next": "Warm segments"},
    "Warm segments": {
      "Type": "Map", "ItemsPath": "$.plan.segments", "MaxConcurrency": 2,
      "ItemSelector": {"segment.$": "$$.Map.Item.Value", "position.$": "$$.Map.Item.Index", "model.$": "$.trained.model_id"},
      "ItemProcessor": {"StartAt": "Warm", "States": {"Warm": {"Type": "Task", "Resource": "warm", "End": true}}},
      "ResultPath": "$.warmed",
      "OutputPath": "$.warmed",
      "Next": "Done"
    },
    "Done": {"Type": "Succeed"},
    "Reject": {"Type": "Fail", "Error": "Model.Rejected", "Cause": "recall too low"}
  }
}"#;

#[tokio::test]
async fn json_pipeline_uses_every_state_type() {
    let timer = timer();
    let start_ms = timer.clock().now_millis();
    let (train, recall, warm) = (counter(), counter(), counter());
    let flaky = counter();
    let machine = StateMachine::from_json(PIPELINE).unwrap();
    let tasks = TaskRegistry::new()
        .with("train", {
            let flaky = flaky.clone();
            counted(train.clone(), move |input| {
                assert_eq!(input, json!({"model": "als", "factors": 16}));
                if flaky.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err(TaskError::new("Train.Flaky", "spot instance reclaimed"));
                }
                Ok(json!({"id": "als-7", "loss": 0.1}))
            })
        })
        .with("recall", counted(recall.clone(), |_| Ok(json!(0.31))))
        .with(
            "warm",
            counted(warm.clone(), |input| {
                Ok(json!(format!(
                    "{}#{}@{}",
                    input["segment"].as_str().unwrap(),
                    input["position"],
                    input["model"].as_str().unwrap()
                )))
            }),
        );
    let wf = Workflow::builder(machine)
        .tasks(tasks)
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let e = timer
        .run(wf.run("nightly-1", json!({"factors": 16})))
        .await
        .unwrap();
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{:?}", e.error);
    assert_eq!(
        e.output,
        Some(json!(["new#0@als-7", "loyal#1@als-7", "lapsed#2@als-7"]))
    );
    assert_eq!(train.load(Ordering::SeqCst), 3);
    assert_eq!(
        (recall.load(Ordering::SeqCst), warm.load(Ordering::SeqCst)),
        (1, 3)
    );
    // Retry delays: 2 s, then 2 * 3 = 6 s capped at 5 s; then the 30 s wait.
    let delays: Vec<u64> = e
        .history
        .iter()
        .filter_map(|h| match &h.kind {
            EventKind::RetryScheduled { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays, vec![2_000, 5_000]);
    assert_eq!(timer.clock().now_millis() - start_ms, 37_000);
    // The history names every state, nested ones with their parents.
    let entered: Vec<&str> = e
        .history
        .iter()
        .filter(|h| h.kind.name() == "StateEntered")
        .filter_map(|h| h.kind.state())
        .collect();
    for s in [
        "Prepare",
        "Train",
        "Evaluate",
        "Evaluate/Branches[0]/Recall",
        "Evaluate/Branches[1]/Coverage",
        "Good enough?",
        "Publish",
        "Warm segments",
        "Warm segments/ItemProcessor/Warm",
        "Done",
    ] {
        assert!(entered.contains(&s), "{s} entered: {entered:?}");
    }
    assert_eq!(e.task_invocations("Train"), 3);
    let ids: Vec<u64> = e.history.iter().map(|h| h.id).collect();
    assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn low_score_takes_the_default_branch_and_fails() {
    let timer = timer();
    let machine = StateMachine::from_json(PIPELINE).unwrap();
    let wf = Workflow::builder(machine)
        .task("train", |_: Value, _: TaskContext| async {
            Ok(json!({"id": "als-1"}))
        })
        .task("recall", |_: Value, _: TaskContext| async {
            Ok(json!(0.05))
        })
        .task("warm", |v: Value, _: TaskContext| async move { Ok(v) })
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let e = timer
        .run(wf.run("nightly-2", json!({"factors": 8})))
        .await
        .unwrap();
    assert_eq!(e.status, ExecutionStatus::Failed);
    assert_eq!(
        e.error,
        Some(TaskError::new("Model.Rejected", "recall too low"))
    );
    assert_eq!(e.output, None);
    assert_eq!(e.history.last().unwrap().kind.name(), "ExecutionFailed");
}

#[tokio::test]
async fn catch_routes_the_error_to_a_fallback_with_its_result_path() {
    let timer = timer();
    let calls = counter();
    let machine = StateMachine::builder("Score")
        .state(
            "Score",
            State::task("score")
                .retry(
                    Retrier::on(["Model.Diverged"])
                        .interval(Duration::from_millis(500))
                        .max_attempts(2),
                )
                .catch(Catcher::on([TaskError::ALL], "Fallback").result_path("$.failure"))
                .next("Unreachable on failure"),
        )
        .state("Unreachable on failure", State::succeed())
        .state(
            "Fallback",
            State::pass()
                .parameters(json!({"user.$": "$.user", "why.$": "$.failure.Error"}))
                .end(),
        )
        .build()
        .unwrap();
    let wf = Workflow::builder(machine)
        .task(
            "score",
            counted(calls.clone(), |_| {
                Err(TaskError::new("Model.Diverged", "loss is NaN"))
            }),
        )
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let e = timer
        .run(wf.run("c1", json!({"user": "u1"})))
        .await
        .unwrap();
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    assert_eq!(
        e.output,
        Some(json!({"user": "u1", "why": "Model.Diverged"}))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3, "first try and two retries");
    assert_eq!(
        timer.requested_sleeps(),
        vec![Duration::from_millis(500), Duration::from_millis(1_000)]
    );
    let caught = e
        .history
        .iter()
        .find(|h| h.kind.name() == "Caught")
        .unwrap();
    assert!(matches!(&caught.kind, EventKind::Caught { next, .. } if next == "Fallback"));
}

#[tokio::test]
async fn exhausted_retries_fail_the_execution() {
    let timer = timer();
    let calls = counter();
    let machine = StateMachine::builder("T")
        .state(
            "T",
            State::task("t")
                .retry(Retrier::on([TaskError::TASK_FAILED]).max_attempts(2))
                .end(),
        )
        .build()
        .unwrap();
    let wf = Workflow::builder(machine)
        .task(
            "t",
            counted(calls.clone(), |_| Err(TaskError::failed("disk full"))),
        )
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let e = timer.run(wf.run("r1", json!({}))).await.unwrap();
    assert_eq!(e.status, ExecutionStatus::Failed);
    assert_eq!(e.error.unwrap().cause, "disk full");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let failed = e
        .history
        .iter()
        .filter(|h| h.kind.name() == "TaskFailed")
        .count();
    assert_eq!(failed, 3);
}

#[tokio::test]
async fn task_timeout_is_an_error_that_catch_handles() {
    let timer = timer();
    let machine = StateMachine::builder("Slow")
        .state(
            "Slow",
            State::task("hang")
                .timeout(Duration::from_secs(5))
                .catch(Catcher::on([TaskError::TIMEOUT], "Late"))
                .end(),
        )
        .state("Late", State::pass().end())
        .build()
        .unwrap();
    let wf = Workflow::builder(machine)
        .task("hang", |_: Value, _: TaskContext| {
            futures::future::pending::<Result<Value, TaskError>>()
        })
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let e = timer.run(wf.run("t1", json!({"x": 1}))).await.unwrap();
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    let out = e.output.unwrap();
    assert_eq!(out["Error"], "States.Timeout");
    assert!(out["Cause"].as_str().unwrap().contains("5s"), "{out}");
}

#[tokio::test]
async fn a_loop_without_waits_is_bounded_by_the_execution_timeout() {
    let timer = timer();
    let machine = StateMachine::from_json(
        r#"{"StartAt": "Spin", "TimeoutSeconds": 10, "States": {
            "Spin": {"Type": "Pass", "Next": "Again?"},
            "Again?": {"Type": "Choice", "Choices": [{"Variable": "$.stop", "IsPresent": true, "Next": "End"}], "Default": "Spin"},
            "End": {"Type": "Succeed"}}}"#,
    )
    .unwrap();
    let wf = Workflow::builder(machine)
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let e = timer.run(wf.run("spin", json!({}))).await.unwrap();
    assert_eq!(e.status, ExecutionStatus::TimedOut);
    assert_eq!(e.error.unwrap().error, TaskError::TIMEOUT);
    assert_eq!(e.history.last().unwrap().kind.name(), "ExecutionTimedOut");
    assert!(e.history.len() > 10, "it looped before timing out");
}

#[tokio::test]
async fn cancel_aborts_a_running_execution() {
    let timer = timer();
    let started = Arc::new(tokio::sync::Notify::new());
    let machine = StateMachine::builder("Hang")
        .state("Hang", State::task("hang").end())
        .build()
        .unwrap();
    let wf = Workflow::builder(machine)
        .task("hang", {
            let started = started.clone();
            move |_: Value, ctx: TaskContext| {
                let started = started.clone();
                async move {
                    started.notify_one();
                    ctx.cancelled().await;
                    Ok(json!("stopped by cancellation"))
                }
            }
        })
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let handle = wf.start("c-1", json!({})).await.unwrap();
    started.notified().await;
    assert_eq!(handle.history().last().unwrap().kind.name(), "TaskStarted");
    handle.cancel();
    let e = handle.wait().await.unwrap();
    assert_eq!(e.status, ExecutionStatus::Aborted);
    assert_eq!(e.history.last().unwrap().kind.name(), "ExecutionAborted");
    assert!(!e.history.iter().any(|h| h.kind.name() == "TaskSucceeded"));
}

#[tokio::test]
async fn map_respects_its_concurrency_limit_and_keeps_item_order() {
    let timer = timer();
    let (running, peak) = (counter(), counter());
    let machine = StateMachine::builder("Each")
        .state(
            "Each",
            State::map(
                StateMachine::builder("Double")
                    .state("Double", State::task("double").end())
                    .build()
                    .unwrap(),
            )
            .items_path("$.items")
            .max_concurrency(3)
            .end(),
        )
        .build()
        .unwrap();
    let wf = Workflow::builder(machine)
        .task("double", {
            let (running, peak) = (running.clone(), peak.clone());
            move |v: Value, _: TaskContext| {
                let (running, peak) = (running.clone(), peak.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    // Finish out of order: later items are quicker.
                    for _ in 0..(20 - v.as_u64().unwrap()) {
                        tokio::task::yield_now().await;
                    }
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(json!(v.as_u64().unwrap() * 2))
                }
            }
        })
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let items: Vec<u64> = (0..10).collect();
    let e = timer
        .run(wf.run("m", json!({ "items": items })))
        .await
        .unwrap();
    assert_eq!(
        e.output,
        Some(json!((0..10).map(|i| i * 2).collect::<Vec<u64>>()))
    );
    assert_eq!(peak.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn paths_select_shape_and_place_data() {
    let timer = timer();
    let machine = StateMachine::from_json(
        r#"{"StartAt": "Price", "States": {"Price": {
            "Type": "Task", "Resource": "price",
            "InputPath": "$.order",
            "Parameters": {"sku.$": "$.sku", "qty.$": "$.lines[1]", "currency": "EUR", "exec.$": "$$.Execution.Id"},
            "ResultSelector": {"total.$": "$.amount"},
            "ResultPath": "$.priced",
            "OutputPath": "$.priced",
            "End": true}}}"#,
    )
    .unwrap();
    let wf = Workflow::builder(machine)
        .task("price", |v: Value, ctx: TaskContext| async move {
            assert_eq!(ctx.state, "Price");
            assert_eq!(ctx.attempt, 0);
            Ok(json!({"amount": v["qty"].as_f64().unwrap() * 2.5, "echo": v}))
        })
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let e = timer
        .run(wf.run(
            "p",
            json!({"order": {"sku": "kettle", "lines": [1, 4]}, "other": true}),
        ))
        .await
        .unwrap();
    assert_eq!(e.output, Some(json!({"total": 10.0})));
    let started = e
        .history
        .iter()
        .find(|h| h.kind.name() == "TaskStarted")
        .unwrap();
    assert!(matches!(&started.kind, EventKind::TaskStarted { input, .. }
        if *input == json!({"sku": "kettle", "qty": 4, "currency": "EUR", "exec": "p"})));

    // ResultPath null keeps the input; a path that matches nothing is a runtime error.
    let m2 = StateMachine::builder("A")
        .state(
            "A",
            State::pass().result(json!(1)).discard_result().next("B"),
        )
        .state("B", State::pass().input_path("$.missing").end())
        .build()
        .unwrap();
    let e = Workflow::builder(m2)
        .build()
        .unwrap()
        .run("p2", json!({"k": 1}))
        .await
        .unwrap();
    assert_eq!(e.status, ExecutionStatus::Failed);
    assert_eq!(e.error.as_ref().unwrap().error, TaskError::RUNTIME);
    assert!(e.error.unwrap().cause.contains("$.missing"));
}

#[tokio::test]
async fn waits_until_a_timestamp_or_for_seconds_from_the_input() {
    let timer = timer();
    let t0 = timer.clock().now_millis();
    let machine = StateMachine::builder("For")
        .state(
            "For",
            State::wait(Duration::ZERO)
                .field("SecondsPath", json!("$.delay"))
                .next("Until"),
        )
        .build();
    // Seconds and SecondsPath together are rejected, naming the second field.
    let err = machine.unwrap_err();
    assert!(err.to_string().contains("\"SecondsPath\""), "{err}");
    let machine = StateMachine::from_json(
        r#"{"StartAt": "For", "States": {
            "For": {"Type": "Wait", "SecondsPath": "$.delay", "Next": "Until"},
            "Until": {"Type": "Wait", "TimestampPath": "$.at", "End": true}}}"#,
    )
    .unwrap();
    let wf = Workflow::builder(machine)
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    // 2023-11-14T22:13:20Z is 1_700_000_000_000 ms; wait 90 s, then until +10 min.
    let e = timer
        .run(wf.run("w", json!({"delay": 90, "at": "2023-11-14T22:23:20Z"})))
        .await
        .unwrap();
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    assert_eq!(timer.clock().now_millis() - t0, 600_000);
}

/// A simulated crash mid-execution: the execution future is dropped while a task is in
/// flight; resuming replays the persisted history and runs only what had not finished.
#[tokio::test]
async fn resume_after_a_crash_does_not_rerun_completed_tasks() {
    let timer = timer();
    let log = MemoryLog::new(2);
    let definition = StateMachine::from_json(
        r#"{"StartAt": "Extract", "States": {
            "Extract": {"Type": "Task", "Resource": "extract", "ResultPath": "$.rows", "Next": "Both"},
            "Both": {"Type": "Parallel", "ResultPath": "$.stats", "Next": "Load", "Branches": [
                {"StartAt": "Count", "States": {"Count": {"Type": "Task", "Resource": "count", "End": true}}},
                {"StartAt": "Pause", "States": {
                    "Pause": {"Type": "Wait", "Seconds": 60, "Next": "Sum"},
                    "Sum": {"Type": "Task", "Resource": "sum", "End": true}}}]},
            "Load": {"Type": "Task", "Resource": "load", "ResultPath": "$.loaded", "Next": "Report"},
            "Report": {"Type": "Task", "Resource": "report", "End": true}}}"#,
    )
    .unwrap();
    let (extract, count, sum, load, report) =
        (counter(), counter(), counter(), counter(), counter());
    let registry = |crash: bool, started: Arc<tokio::sync::Notify>| {
        TaskRegistry::new()
            .with(
                "extract",
                counted(extract.clone(), |_| Ok(json!([3, 4, 5]))),
            )
            .with(
                "count",
                counted(count.clone(), |v| {
                    Ok(json!(v["rows"].as_array().unwrap().len()))
                }),
            )
            .with(
                "sum",
                counted(sum.clone(), |v| {
                    Ok(json!(
                        v["rows"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|x| x.as_u64().unwrap())
                            .sum::<u64>()
                    ))
                }),
            )
            .with("load", {
                let load = load.clone();
                move |_: Value, _: TaskContext| {
                    load.fetch_add(1, Ordering::SeqCst);
                    let started = started.clone();
                    async move {
                        if crash {
                            started.notify_one();
                            futures::future::pending::<()>().await;
                        }
                        Ok(json!("loaded"))
                    }
                }
            })
            .with(
                "report",
                counted(report.clone(), |v| {
                    Ok(json!({"rows": v["stats"][0], "sum": v["stats"][1], "load": v["loaded"]}))
                }),
            )
    };
    let crashed = Arc::new(tokio::sync::Notify::new());
    let wf = Workflow::builder(definition.clone())
        .tasks(registry(true, crashed.clone()))
        .store(ExecutionStore::new(log.clone()))
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    let clock_before = timer.clock().now_millis();
    timer
        .run(async {
            tokio::select! {
                _ = wf.run("etl-42", json!({"day": "2026-11-25"})) => panic!("the run should not finish"),
                () = crashed.notified() => {}
            }
        })
        .await;
    assert_eq!(timer.clock().now_millis() - clock_before, 60_000);
    let counts = |c: &[&Arc<AtomicUsize>]| {
        c.iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        counts(&[&extract, &count, &sum, &load, &report]),
        vec![1, 1, 1, 1, 0]
    );

    // A new process: the same definition, fresh handlers, the same log.
    let wf2 = Workflow::builder(definition)
        .tasks(registry(false, Arc::new(tokio::sync::Notify::new())))
        .store(ExecutionStore::new(log.clone()))
        .timer(Arc::new(timer.clone()))
        .build()
        .unwrap();
    // Starting it again under the same id is refused.
    let err = wf2.run("etl-42", json!({})).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let e = timer.run(wf2.resume("etl-42")).await.unwrap();
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{:?}", e.error);
    assert_eq!(
        e.output,
        Some(json!({"rows": 3, "sum": 12, "load": "loaded"}))
    );
    // Completed tasks were not run again; the one in flight was; no second 60 s wait.
    assert_eq!(
        counts(&[&extract, &count, &sum, &load, &report]),
        vec![1, 1, 1, 2, 1]
    );
    assert_eq!(timer.clock().now_millis() - clock_before, 60_000);
    let names: Vec<&str> = e.history.iter().map(|h| h.kind.name()).collect();
    assert_eq!(
        names.iter().filter(|n| **n == "ExecutionStarted").count(),
        1
    );
    assert_eq!(
        names.iter().filter(|n| **n == "ExecutionResumed").count(),
        1
    );
    assert_eq!(names.iter().filter(|n| **n == "WaitStarted").count(), 1);
    assert_eq!(e.task_invocations("Extract"), 1);
    assert_eq!(e.task_invocations("Load"), 2);

    // The persisted history is the execution's history; resuming an ended execution
    // returns it as recorded without running anything.
    let stored = ExecutionStore::new(log.clone())
        .load("etl-42")
        .await
        .unwrap();
    assert_eq!(stored, e.history);
    let again = wf2.resume("etl-42").await.unwrap();
    assert_eq!(again, e);
    assert_eq!(report.load(Ordering::SeqCst), 1);
    let err = wf2.resume("nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn a_panicking_task_is_a_task_failure() {
    let machine = StateMachine::builder("Boom")
        .state(
            "Boom",
            State::task("boom")
                .catch(Catcher::on([TaskError::TASK_FAILED], "Safe"))
                .end(),
        )
        .state("Safe", State::succeed())
        .build()
        .unwrap();
    let wf = Workflow::builder(machine)
        .task("boom", |_: Value, _: TaskContext| async {
            panic!("index out of bounds")
        })
        .build()
        .unwrap();
    let e = wf.run("b", json!({})).await.unwrap();
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    let out = e.output.unwrap();
    assert_eq!(out["Error"], TaskError::TASK_FAILED);
    assert!(
        out["Cause"]
            .as_str()
            .unwrap()
            .contains("index out of bounds")
    );
}

fn definition_error(text: &str) -> DefinitionError {
    let err = StateMachine::from_json(text).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<DefinitionError>())
        .cloned()
        .unwrap_or_else(|| panic!("no DefinitionError behind {err}"))
}

#[test]
fn invalid_definitions_name_the_state_and_field() {
    let cases: &[(&str, Option<&str>, Option<&str>)] = &[
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Pass"}}}"#,
            Some("A"),
            Some("Next"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B"}}}"#,
            Some("A"),
            Some("Next"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "B", "End": true}, "B": {"Type": "Succeed"}}}"#,
            Some("A"),
            Some("End"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Lambda", "End": true}}}"#,
            Some("A"),
            Some("Type"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Task", "End": true}}}"#,
            Some("A"),
            Some("Resource"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Succeed", "Resource": "x"}}}"#,
            Some("A"),
            Some("Resource"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "t", "End": true, "Retry": [{"ErrorEquals": ["X"], "BackoffRate": 0.5}]}}}"#,
            Some("A"),
            Some("Retry[0].BackoffRate"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "t", "End": true, "Catch": [{"ErrorEquals": [], "Next": "A"}]}}}"#,
            Some("A"),
            Some("Catch[0].ErrorEquals"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "t", "End": true, "TimeoutSeconds": -1}}}"#,
            Some("A"),
            Some("TimeoutSeconds"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Pass", "InputPath": "items", "End": true}}}"#,
            Some("A"),
            Some("InputPath"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Pass", "ResultPath": "$.a[0]", "End": true}}}"#,
            Some("A"),
            Some("ResultPath"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Choice", "Choices": [{"Variable": "$.x", "NumericEquals": "1", "Next": "A"}]}}}"#,
            Some("A"),
            Some("Choices[0].NumericEquals"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Choice", "Choices": [{"Variable": "$.x", "IsPresent": true}]}}}"#,
            Some("A"),
            Some("Choices[0].Next"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Wait", "End": true}}}"#,
            Some("A"),
            Some("Seconds"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Pass", "Parameters": {"x.$": 3}, "End": true}}}"#,
            Some("A"),
            Some("Parameters"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Map", "MaxConcurrency": -2, "ItemProcessor": {"StartAt": "I", "States": {"I": {"Type": "Succeed"}}}, "End": true}}}"#,
            Some("A"),
            Some("MaxConcurrency"),
        ),
        (
            r#"{"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": true, "Branches": [{"StartAt": "X", "States": {"X": {"Type": "Pass", "Next": "Y"}}}]}}}"#,
            Some("P/Branches[0]/X"),
            Some("Next"),
        ),
        (
            r#"{"StartAt": "M", "States": {"M": {"Type": "Map", "End": true, "ItemProcessor": {"StartAt": "Q", "States": {"I": {"Type": "Succeed"}}}}}}"#,
            Some("M/ItemProcessor"),
            Some("StartAt"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Succeed"}, "Orphan": {"Type": "Succeed"}}}"#,
            Some("Orphan"),
            None,
        ),
        (
            r#"{"StartAt": "Z", "States": {"A": {"Type": "Succeed"}}}"#,
            None,
            Some("StartAt"),
        ),
        (
            r#"{"States": {"A": {"Type": "Succeed"}}}"#,
            None,
            Some("StartAt"),
        ),
        (
            r#"{"StartAt": "A", "States": {"A": {"Type": "Succeed"}}, "Extra": 1}"#,
            None,
            Some("Extra"),
        ),
    ];
    for (text, state, field) in cases {
        let e = definition_error(text);
        assert_eq!((e.state(), e.field()), (*state, *field), "{text}: {e}");
        let shown = e.to_string();
        if let Some(s) = state {
            assert!(shown.contains(&format!("state {s:?}")), "{shown}");
        }
        if let Some(f) = field {
            assert!(shown.contains(&format!("field {f:?}")), "{shown}");
        }
    }
    let e = StateMachine::from_json("{\"StartAt\": ").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("not JSON"), "{e}");
}

#[test]
fn a_task_without_a_handler_is_reported_when_building() {
    let machine = StateMachine::from_json(
        r#"{"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": true, "Branches": [
            {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "missing", "End": true}}}]}}}"#,
    )
    .unwrap();
    let err = Workflow::builder(machine).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(err.context().key.as_deref(), Some("P/Branches[0]/T"));
    assert!(err.to_string().contains("field \"Resource\""), "{err}");
}

#[tokio::test]
async fn code_and_json_definitions_behave_alike() {
    let from_code = StateMachine::builder("Check")
        .state(
            "Check",
            State::choice()
                .when(
                    ChoiceRule::and([
                        ChoiceRule::is_present("$.n"),
                        ChoiceRule::numeric_gt("$.n", 10.0),
                    ]),
                    "Big",
                )
                .when(!ChoiceRule::string_eq("$.kind", "gift"), "Normal")
                .otherwise("Gift"),
        )
        .state("Big", State::pass().result(json!("big")).end())
        .state("Normal", State::pass().result(json!("normal")).end())
        .state("Gift", State::pass().result(json!("gift")).end())
        .build()
        .unwrap();
    let from_json = StateMachine::from_value(from_code.source()).unwrap();
    for m in [from_code, from_json] {
        let wf = Workflow::builder(m).build().unwrap();
        let mut outs = Vec::new();
        for input in [
            json!({"n": 11}),
            json!({"n": 1, "kind": "book"}),
            json!({"kind": "gift"}),
        ] {
            outs.push(wf.run("x", input).await.unwrap().output.unwrap());
        }
        assert_eq!(outs, vec![json!("big"), json!("normal"), json!("gift")]);
    }
}

#[tokio::test]
async fn store_failures_are_reported() {
    // A log whose records are limited to 10 bytes cannot hold any history event.
    let log = MemoryLog::with_options(1, 10, Arc::new(lakehouse_core::SystemClock));
    let machine = StateMachine::builder("A")
        .state("A", State::succeed())
        .build()
        .unwrap();
    let wf = Workflow::builder(machine)
        .store(ExecutionStore::new(log))
        .build()
        .unwrap();
    let err = wf.run("e", json!({})).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RecordTooLarge);
}
