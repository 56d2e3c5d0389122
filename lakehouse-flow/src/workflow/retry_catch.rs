//! Retry and Catch rules: [`Retrier`] and [`Catcher`], their States Language JSON and
//! its parsing.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::backoff::{Backoff, Jitter};
use crate::workflow::parse::{result_path, seconds};
use crate::workflow::path::ResultPath;
use crate::workflow::validate::{DResult, derr};

/// A retry rule (the States Language `Retry` entry): which errors it handles and how
/// it waits.
///
/// Attempt `n` (counting from 0) waits `min(interval * backoff_rate^n, max_delay)`,
/// randomised by `jitter`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Retrier {
    /// Error names this rule handles (`States.ALL` for every error but
    /// `States.Runtime`).
    pub error_equals: Vec<String>,
    /// Delay before the first retry (default 1 s).
    pub interval: Duration,
    /// Retries at most (default 3; 0 means never).
    pub max_attempts: u32,
    /// Multiplier per retry (default 2.0, at least 1.0).
    pub backoff_rate: f64,
    /// Upper bound of a delay.
    pub max_delay: Option<Duration>,
    /// Randomisation of the delay (default none).
    pub jitter: Jitter,
}

impl Retrier {
    /// A rule for `errors` with the defaults.
    pub fn on<S: Into<String>>(errors: impl IntoIterator<Item = S>) -> Self {
        Retrier {
            error_equals: errors.into_iter().map(Into::into).collect(),
            interval: Duration::from_secs(1),
            max_attempts: 3,
            backoff_rate: 2.0,
            max_delay: None,
            jitter: Jitter::None,
        }
    }

    /// Sets the first delay.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Sets the number of retries.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Sets the multiplier per retry.
    #[must_use]
    pub fn backoff_rate(mut self, rate: f64) -> Self {
        self.backoff_rate = rate;
        self
    }

    /// Caps every delay.
    #[must_use]
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = Some(max);
        self
    }

    /// Randomises delays.
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    pub(crate) fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.interval,
            rate: self.backoff_rate,
            max_delay: self.max_delay,
            jitter: self.jitter,
        }
    }

    pub(super) fn to_json(&self) -> Value {
        let mut v = json!({
            "ErrorEquals": self.error_equals,
            "IntervalSeconds": self.interval.as_secs_f64(),
            "MaxAttempts": self.max_attempts,
            "BackoffRate": self.backoff_rate,
        });
        if let Some(d) = self.max_delay {
            v["MaxDelaySeconds"] = json!(d.as_secs_f64());
        }
        if self.jitter == Jitter::Full {
            v["JitterStrategy"] = json!("FULL");
        }
        v
    }
}

/// A fallback rule (the States Language `Catch` entry): on a matching error, continue
/// at `next` with the error object `{"Error", "Cause"}` placed at `result_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Catcher {
    /// Error names this rule handles.
    pub error_equals: Vec<String>,
    /// The state to continue at.
    pub next: String,
    /// Where the error object goes in the state's input (`"$"` by default; `None`
    /// discards it).
    pub result_path: Option<String>,
}

impl Catcher {
    /// On `errors`, continue at `next` with the error object as the whole input.
    pub fn on<S: Into<String>>(
        errors: impl IntoIterator<Item = S>,
        next: impl Into<String>,
    ) -> Self {
        Catcher {
            error_equals: errors.into_iter().map(Into::into).collect(),
            next: next.into(),
            result_path: Some("$".into()),
        }
    }

    /// Places the error object at `path` in the state's input instead.
    #[must_use]
    pub fn result_path(mut self, path: impl Into<String>) -> Self {
        self.result_path = Some(path.into());
        self
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "ErrorEquals": self.error_equals,
            "Next": self.next,
            "ResultPath": self.result_path,
        })
    }
}

/// The error names of a rule's `ErrorEquals`: a non-empty array of strings.
fn error_names(at: Option<&str>, field: &str, v: Option<&Value>) -> DResult<Vec<String>> {
    let list = v
        .and_then(Value::as_array)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| derr(at, Some(field), "must be a non-empty array of error names"))?;
    list.iter()
        .map(|e| {
            e.as_str()
                .map(str::to_owned)
                .ok_or_else(|| derr(at, Some(field), "error names must be strings"))
        })
        .collect()
}

/// Parses the `Retry` or `Catch` array `field` of state `name`: every entry must be an
/// object with only `allowed` fields (and `Comment`); `parse` reads one entry, given a
/// namer of its fields (`Retry[2].MaxAttempts`).
fn parse_rules<T>(
    name: &str,
    field: &str,
    v: &Value,
    allowed: &[&str],
    parse: impl Fn(&Map<String, Value>, &dyn Fn(&str) -> String) -> DResult<T>,
) -> DResult<Vec<T>> {
    let at = Some(name);
    let list = v
        .as_array()
        .ok_or_else(|| derr(at, Some(field), "must be an array"))?;
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let f = |x: &str| format!("{field}[{i}].{x}");
            let m = entry
                .as_object()
                .ok_or_else(|| derr(at, Some(&format!("{field}[{i}]")), "must be an object"))?;
            for key in m.keys() {
                if key != "Comment" && !allowed.contains(&key.as_str()) {
                    return Err(derr(at, Some(&f(key)), "unknown or unsupported field"));
                }
            }
            parse(m, &f)
        })
        .collect()
}

/// Parses the `Retry` array of state `name`.
pub(super) fn parse_retry(name: &str, v: &Value) -> DResult<Vec<Retrier>> {
    const FIELDS: &[&str] = &[
        "ErrorEquals",
        "IntervalSeconds",
        "MaxAttempts",
        "BackoffRate",
        "MaxDelaySeconds",
        "JitterStrategy",
    ];
    let at = Some(name);
    parse_rules(name, "Retry", v, FIELDS, |m, f| {
        let mut retrier = Retrier::on(error_names(at, &f("ErrorEquals"), m.get("ErrorEquals"))?);
        if let Some(x) = m.get("IntervalSeconds") {
            retrier.interval = seconds(x).ok_or_else(|| {
                derr(at, Some(&f("IntervalSeconds")), "must be a positive number")
            })?;
        }
        if let Some(x) = m.get("MaxAttempts") {
            retrier.max_attempts =
                x.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| {
                        derr(
                            at,
                            Some(&f("MaxAttempts")),
                            "must be a non-negative integer",
                        )
                    })?;
        }
        if let Some(x) = m.get("BackoffRate") {
            retrier.backoff_rate = x
                .as_f64()
                .filter(|b| *b >= 1.0 && b.is_finite())
                .ok_or_else(|| {
                    derr(
                        at,
                        Some(&f("BackoffRate")),
                        "must be a number of at least 1.0",
                    )
                })?;
        }
        if let Some(x) = m.get("MaxDelaySeconds") {
            retrier.max_delay = Some(seconds(x).ok_or_else(|| {
                derr(at, Some(&f("MaxDelaySeconds")), "must be a positive number")
            })?);
        }
        if let Some(x) = m.get("JitterStrategy") {
            retrier.jitter = match x.as_str() {
                Some("FULL") => Jitter::Full,
                Some("NONE") => Jitter::None,
                _ => {
                    return Err(derr(
                        at,
                        Some(&f("JitterStrategy")),
                        "must be \"FULL\" or \"NONE\"",
                    ));
                }
            };
        }
        Ok(retrier)
    })
}

/// A compiled `Catch` entry: the error names, the state to continue at and where the
/// error object goes.
pub(crate) type CatchRule = (Vec<String>, String, ResultPath);

/// Parses the `Catch` array of state `name`.
pub(super) fn parse_catch(name: &str, v: &Value) -> DResult<Vec<CatchRule>> {
    let at = Some(name);
    parse_rules(
        name,
        "Catch",
        v,
        &["ErrorEquals", "Next", "ResultPath"],
        |m, f| {
            let errors = error_names(at, &f("ErrorEquals"), m.get("ErrorEquals"))?;
            let next = m
                .get("Next")
                .and_then(Value::as_str)
                .ok_or_else(|| derr(at, Some(&f("Next")), "is missing or not a string"))?;
            let result_path = result_path(at, &f("ResultPath"), m.get("ResultPath"))?;
            Ok((errors, next.to_owned(), result_path))
        },
    )
}
