//! Definitions: errors naming the state and field, handlers checked when building, and
//! code-built machines behaving like their JSON.

use lakehouse_core::ErrorKind;
use lakehouse_flow::{ChoiceRule, DefinitionError, State, StateMachine, Workflow};
use serde_json::json;

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
