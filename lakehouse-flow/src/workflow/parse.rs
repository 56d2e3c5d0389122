//! The States Language parser: a JSON definition compiled into the [`Machine`] model,
//! checked field by field, every error naming the state and field.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::workflow::choice::{Rule, parse_timestamp};
use crate::workflow::machine::{CState, Kind, Machine, Next, WaitFor};
use crate::workflow::path::{DataPath, Path, ResultPath, Template};
use crate::workflow::retry_catch::{parse_catch, parse_retry};
use crate::workflow::validate::{DResult, check_graph, derr};

/// Parses and checks a machine (the top level, a Parallel branch or a Map processor)
/// whose states are named `prefix` + name.
pub(super) fn parse_machine(v: &Value, prefix: &str, top: bool) -> DResult<Machine> {
    let at = (!prefix.is_empty()).then(|| prefix.trim_end_matches('/'));
    let map = v
        .as_object()
        .ok_or_else(|| derr(at, None, "a state machine must be a JSON object"))?;
    for key in map.keys() {
        let ok = matches!(key.as_str(), "StartAt" | "States" | "Comment")
            || (top && matches!(key.as_str(), "TimeoutSeconds" | "Version"))
            || (!top && key == "ProcessorConfig");
        if !ok {
            return Err(derr(at, Some(key), "unknown or unsupported field"));
        }
    }
    let start_at = map
        .get("StartAt")
        .ok_or_else(|| derr(at, Some("StartAt"), "is missing"))?
        .as_str()
        .ok_or_else(|| derr(at, Some("StartAt"), "must be a string"))?
        .to_owned();
    let states_v = map
        .get("States")
        .ok_or_else(|| derr(at, Some("States"), "is missing"))?
        .as_object()
        .ok_or_else(|| derr(at, Some("States"), "must be an object of states"))?;
    if states_v.is_empty() {
        return Err(derr(at, Some("States"), "has no states"));
    }
    let timeout = timeout_seconds(at, map)?;
    let mut states = HashMap::with_capacity(states_v.len());
    for (name, sv) in states_v {
        if name.is_empty() || name.len() > 80 {
            return Err(derr(
                Some(&format!("{prefix}{name}")),
                None,
                "state names must have 1 to 80 characters",
            ));
        }
        states.insert(name.clone(), parse_state(&format!("{prefix}{name}"), sv)?);
    }
    if !states.contains_key(&start_at) {
        return Err(derr(
            at,
            Some("StartAt"),
            format!("names {start_at:?}, which is not a state"),
        ));
    }
    check_graph(prefix, &start_at, &states)?;
    Ok(Machine {
        start_at,
        states,
        timeout,
    })
}

/// A positive, finite number of seconds.
pub(super) fn seconds(v: &Value) -> Option<Duration> {
    let s = v.as_f64()?;
    (s > 0.0 && s.is_finite())
        .then(|| Duration::try_from_secs_f64(s).ok())
        .flatten()
}

/// The `TimeoutSeconds` field of a machine or a Task state, if present.
fn timeout_seconds(at: Option<&str>, map: &Map<String, Value>) -> DResult<Option<Duration>> {
    map.get("TimeoutSeconds")
        .map(|t| {
            seconds(t).ok_or_else(|| {
                derr(
                    at,
                    Some("TimeoutSeconds"),
                    "must be a positive number of seconds",
                )
            })
        })
        .transpose()
}

/// A `ResultPath` field: absent (the result replaces the input), `null` (the result is
/// discarded) or a path of fields from `$`.
pub(super) fn result_path(at: Option<&str>, field: &str, v: Option<&Value>) -> DResult<ResultPath> {
    let p = match v {
        None => return Ok(ResultPath::default()),
        Some(Value::Null) => return Ok(ResultPath::Discard),
        Some(p) => p,
    };
    let p = p
        .as_str()
        .ok_or_else(|| derr(at, Some(field), "must be a path string"))?;
    let p = Path::parse(p).map_err(|e| derr(at, Some(field), e))?;
    if !p.fields_only() {
        return Err(derr(
            at,
            Some(field),
            "must name fields only, from '$' (no indices, no '$$')",
        ));
    }
    Ok(ResultPath::Path(p))
}

/// The non-empty array `field` of a state (`Choices`, `Branches`).
fn non_empty_array<'v>(
    at: Option<&str>,
    map: &'v Map<String, Value>,
    field: &str,
) -> DResult<&'v Vec<Value>> {
    map.get(field)
        .ok_or_else(|| derr(at, Some(field), "is missing"))?
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| derr(at, Some(field), "must be a non-empty array"))
}

/// The fields of a state of type `kind` besides `Type` and `Comment`, in groups;
/// `None` for a type this subset does not support.
fn allowed_fields(kind: &str) -> Option<&'static [&'static [&'static str]]> {
    const IO: &[&str] = &["InputPath", "OutputPath"];
    const TRANSITION: &[&str] = &["Next", "End"];
    // What Task, Parallel and Map states do with their result and their errors.
    const TASK_LIKE: &[&str] = &[
        "Parameters",
        "ResultSelector",
        "ResultPath",
        "Retry",
        "Catch",
    ];
    Some(match kind {
        "Task" => &[IO, TRANSITION, TASK_LIKE, &["Resource", "TimeoutSeconds"]],
        "Pass" => &[IO, TRANSITION, &["Parameters", "ResultPath", "Result"]],
        "Choice" => &[IO, &["Choices", "Default"]],
        "Wait" => &[
            IO,
            TRANSITION,
            &["Seconds", "Timestamp", "SecondsPath", "TimestampPath"],
        ],
        "Succeed" => &[IO],
        "Fail" => &[&["Error", "Cause"]],
        "Parallel" => &[IO, TRANSITION, TASK_LIKE, &["Branches"]],
        "Map" => &[
            IO,
            TRANSITION,
            TASK_LIKE,
            &[
                "ItemSelector",
                "ItemsPath",
                "MaxConcurrency",
                "Iterator",
                "ItemProcessor",
            ],
        ],
        _ => return None,
    })
}

/// Parses one state, named `name` (qualified for nested machines).
fn parse_state(name: &str, v: &Value) -> DResult<CState> {
    let at = Some(name);
    let map = v
        .as_object()
        .ok_or_else(|| derr(at, None, "a state must be a JSON object"))?;
    let kind_name = map
        .get("Type")
        .ok_or_else(|| derr(at, Some("Type"), "is missing"))?
        .as_str()
        .ok_or_else(|| derr(at, Some("Type"), "must be a string"))?;
    let allowed = allowed_fields(kind_name).ok_or_else(|| {
        derr(
            at,
            Some("Type"),
            format!(
                "{kind_name:?} is not a supported state type (Task, Pass, Choice, Wait, \
                 Succeed, Fail, Parallel, Map)"
            ),
        )
    })?;
    for key in map.keys() {
        let known = allowed.iter().any(|group| group.contains(&key.as_str()));
        if key != "Type" && key != "Comment" && !known {
            return Err(derr(
                at,
                Some(key),
                format!("is not a field of a {kind_name} state (or is not supported)"),
            ));
        }
    }
    let str_field = |f: &str| -> DResult<Option<&str>> {
        map.get(f)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| derr(at, Some(f), "must be a string"))
            })
            .transpose()
    };
    let path_field = |f: &str| -> DResult<Option<Path>> {
        str_field(f)?
            .map(|t| Path::parse(t).map_err(|e| derr(at, Some(f), e)))
            .transpose()
    };
    let data_path = |f: &str| -> DResult<DataPath> {
        match map.get(f) {
            None => Ok(DataPath::default()),
            Some(Value::Null) => Ok(DataPath::Null),
            Some(_) => Ok(DataPath::Path(path_field(f)?.unwrap_or_else(Path::root))),
        }
    };
    let template = |f: &str| -> DResult<Option<Template>> {
        map.get(f)
            .map(|t| Template::parse(t).map_err(|e| derr(at, Some(f), e)))
            .transpose()
    };
    let input_path = data_path("InputPath")?;
    let output_path = data_path("OutputPath")?;
    let result_path = result_path(at, "ResultPath", map.get("ResultPath"))?;
    let parameters = if kind_name == "Map" {
        None
    } else {
        template("Parameters")?
    };
    let result_selector = template("ResultSelector")?;
    let terminal = matches!(kind_name, "Choice" | "Succeed" | "Fail");
    let next = if terminal {
        Next::End
    } else {
        match (map.get("Next"), map.get("End")) {
            (Some(_), Some(_)) => {
                return Err(derr(
                    at,
                    Some("End"),
                    "a state cannot have both Next and End",
                ));
            }
            (Some(n), None) => Next::To(
                n.as_str()
                    .ok_or_else(|| derr(at, Some("Next"), "must be a state name"))?
                    .to_owned(),
            ),
            (None, Some(Value::Bool(true))) => Next::End,
            (None, Some(_)) => return Err(derr(at, Some("End"), "must be true")),
            (None, None) => {
                return Err(derr(at, Some("Next"), "is missing (or set \"End\": true)"));
            }
        }
    };
    let retry = match map.get("Retry") {
        None => Vec::new(),
        Some(r) => parse_retry(name, r)?,
    };
    let catch = match map.get("Catch") {
        None => Vec::new(),
        Some(c) => parse_catch(name, c)?,
    };
    let kind = match kind_name {
        "Task" => {
            let resource =
                str_field("Resource")?.ok_or_else(|| derr(at, Some("Resource"), "is missing"))?;
            if resource.is_empty() {
                return Err(derr(at, Some("Resource"), "is empty"));
            }
            Kind::Task {
                resource: resource.to_owned(),
                timeout: timeout_seconds(at, map)?,
            }
        }
        "Pass" => Kind::Pass {
            result: map.get("Result").cloned(),
        },
        "Choice" => {
            let list = non_empty_array(at, map, "Choices")?;
            let mut choices = Vec::with_capacity(list.len());
            for (i, c) in list.iter().enumerate() {
                let field = |f: &str| format!("Choices[{i}].{f}");
                let rule = Rule::parse(c, true).map_err(|(f, m)| derr(at, Some(&field(&f)), m))?;
                let next = c
                    .get("Next")
                    .and_then(Value::as_str)
                    .ok_or_else(|| derr(at, Some(&field("Next")), "is missing or not a string"))?;
                choices.push((rule, next.to_owned()));
            }
            Kind::Choice {
                choices,
                default: str_field("Default")?.map(str::to_owned),
            }
        }
        "Wait" => {
            let given: Vec<&str> = ["Seconds", "Timestamp", "SecondsPath", "TimestampPath"]
                .into_iter()
                .filter(|f| map.contains_key(*f))
                .collect();
            let [field] = given.as_slice() else {
                return Err(derr(
                    at,
                    Some(given.get(1).copied().unwrap_or("Seconds")),
                    "a Wait state needs exactly one of Seconds, Timestamp, SecondsPath, \
                     TimestampPath",
                ));
            };
            let f = Some(*field);
            Kind::Wait(match *field {
                "Seconds" => {
                    let s = map[*field].as_f64().filter(|s| *s >= 0.0 && s.is_finite());
                    WaitFor::For(
                        s.and_then(|s| Duration::try_from_secs_f64(s).ok())
                            .ok_or_else(|| derr(at, f, "must be a non-negative number"))?,
                    )
                }
                "Timestamp" => WaitFor::Until(
                    map[*field]
                        .as_str()
                        .and_then(parse_timestamp)
                        .ok_or_else(|| derr(at, f, "must be an RFC 3339 timestamp"))?,
                ),
                "SecondsPath" => WaitFor::ForPath(path_field(field)?.unwrap_or_else(Path::root)),
                _ => WaitFor::UntilPath(path_field(field)?.unwrap_or_else(Path::root)),
            })
        }
        "Succeed" => Kind::Succeed,
        "Fail" => Kind::Fail {
            error: str_field("Error")?.unwrap_or("States.Fail").to_owned(),
            cause: str_field("Cause")?.unwrap_or("").to_owned(),
        },
        "Parallel" => {
            let list = non_empty_array(at, map, "Branches")?;
            let branches = list
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    parse_machine(b, &format!("{name}/Branches[{i}]/"), false).map(Arc::new)
                })
                .collect::<DResult<_>>()?;
            Kind::Parallel { branches }
        }
        "Map" => {
            let (field, proc_v) = match (map.get("ItemProcessor"), map.get("Iterator")) {
                (Some(p), None) => ("ItemProcessor", p),
                (None, Some(p)) => ("Iterator", p),
                (Some(_), Some(_)) => {
                    return Err(derr(
                        at,
                        Some("Iterator"),
                        "give ItemProcessor or Iterator, not both",
                    ));
                }
                (None, None) => return Err(derr(at, Some("ItemProcessor"), "is missing")),
            };
            let processor = Arc::new(parse_machine(proc_v, &format!("{name}/{field}/"), false)?);
            let item_selector = match (
                map.contains_key("ItemSelector"),
                map.contains_key("Parameters"),
            ) {
                (true, true) => {
                    return Err(derr(
                        at,
                        Some("Parameters"),
                        "give ItemSelector or Parameters, not both",
                    ));
                }
                (true, false) => template("ItemSelector")?,
                (false, _) => template("Parameters")?,
            };
            let max_concurrency = match map.get("MaxConcurrency") {
                None => 0,
                Some(m) => m
                    .as_u64()
                    .and_then(|m| usize::try_from(m).ok())
                    .ok_or_else(|| {
                        derr(at, Some("MaxConcurrency"), "must be a non-negative integer")
                    })?,
            };
            Kind::Map {
                processor,
                items_path: data_path("ItemsPath")?,
                item_selector,
                max_concurrency,
            }
        }
        _ => unreachable!("allowed_fields accepted only the known state types"),
    };
    Ok(CState {
        kind,
        input_path,
        output_path,
        result_path,
        parameters,
        result_selector,
        next,
        retry,
        catch,
    })
}
