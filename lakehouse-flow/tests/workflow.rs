//! Executions: every state type, paths, retries and catches, time limits,
//! cancellation, Map concurrency and panicking handlers, in simulated time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lakehouse_core::{Clock, ManualClock};
use lakehouse_flow::{
    Catcher, EventKind, ExecutionStatus, ManualTimer, Retrier, State, StateMachine, TaskContext,
    TaskError, TaskRegistry, Workflow,
};
use serde_json::{Value, json};

pub(crate) fn timer() -> ManualTimer {
    ManualTimer::new(ManualClock::at_millis(1_700_000_000_000))
}

pub(crate) fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

/// A handler that counts its calls and returns `f(input)`.
pub(crate) fn counted(
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
