//! The JSONPath subset of the States Language: reference paths (`$`, `$.a.b`,
//! `$.items[0]`, `$['odd key']`, and `$$.…` into the context object) and payload
//! templates (`Parameters`, `ResultSelector`, `ItemSelector`) whose `"key.$"` fields
//! are paths.

use std::fmt;

use serde_json::{Map, Value};

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(usize),
}

/// A parsed reference path.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Path {
    text: String,
    /// Starts at the context object (`$$`) instead of the payload (`$`).
    context: bool,
    steps: Vec<Step>,
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Path {
    /// `$`: the whole payload.
    pub(crate) fn root() -> Path {
        Path {
            text: "$".into(),
            context: false,
            steps: Vec::new(),
        }
    }

    /// Parses a path; the error says what is wrong with it.
    pub(crate) fn parse(text: &str) -> Result<Path, String> {
        let (context, mut rest) = if let Some(r) = text.strip_prefix("$$") {
            (true, r)
        } else if let Some(r) = text.strip_prefix('$') {
            (false, r)
        } else {
            return Err(format!("path {text:?} does not start with '$'"));
        };
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                let name = &r[..end];
                if name.is_empty() {
                    return Err(format!("path {text:?} has an empty field name"));
                }
                if name.contains(['*', '?', '@', ']', '(', ')']) {
                    return Err(format!(
                        "path {text:?}: only plain field names and indices are supported"
                    ));
                }
                steps.push(Step::Field(name.to_owned()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = r
                    .find(']')
                    .ok_or_else(|| format!("path {text:?} has an unclosed '['"))?;
                let inner = &r[..end];
                let quoted = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')));
                match quoted {
                    Some(name) => steps.push(Step::Field(name.to_owned())),
                    None => {
                        let i = inner.parse::<usize>().map_err(|_| {
                            format!(
                                "path {text:?}: [{inner}] is not an index or a quoted name \
                                 (wildcards and filters are not supported)"
                            )
                        })?;
                        steps.push(Step::Index(i));
                    }
                }
                rest = &r[end + 1..];
            } else {
                return Err(format!("path {text:?}: unexpected {rest:?}"));
            }
        }
        Ok(Path {
            text: text.to_owned(),
            context,
            steps,
        })
    }

    /// `true` for paths that only name fields (what `ResultPath` allows).
    pub(crate) fn fields_only(&self) -> bool {
        !self.context && self.steps.iter().all(|s| matches!(s, Step::Field(_)))
    }

    /// The value at this path in `payload` (or in `context` for a `$$` path).
    pub(crate) fn get<'v>(&self, payload: &'v Value, context: &'v Value) -> Option<&'v Value> {
        let mut v = if self.context { context } else { payload };
        for step in &self.steps {
            v = match step {
                Step::Field(f) => v.as_object()?.get(f)?,
                Step::Index(i) => v.as_array()?.get(*i)?,
            };
        }
        Some(v)
    }

    /// Like [`get`](Self::get), with an error naming the path.
    pub(crate) fn select(&self, payload: &Value, context: &Value) -> Result<Value, String> {
        self.get(payload, context)
            .cloned()
            .ok_or_else(|| format!("path {} matches nothing in the input", self.text))
    }

    /// Writes `value` at this path inside `target`, creating objects on the way.
    /// Fails when a step runs into something that is not an object.
    pub(crate) fn set(&self, target: Value, value: Value) -> Result<Value, String> {
        if self.steps.is_empty() {
            return Ok(value);
        }
        let mut root = target;
        let mut cur = &mut root;
        for (i, step) in self.steps.iter().enumerate() {
            let Step::Field(name) = step else {
                return Err(format!("result path {} contains an index", self.text));
            };
            let Value::Object(map) = cur else {
                return Err(format!(
                    "result path {}: the input at step {} is not an object",
                    self.text,
                    i + 1
                ));
            };
            if i + 1 == self.steps.len() {
                map.insert(name.clone(), value);
                return Ok(root);
            }
            cur = map
                .entry(name.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        Ok(root)
    }
}

/// `InputPath` / `OutputPath`: a path, or `null` (the effective payload is `{}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DataPath {
    Path(Path),
    Null,
}

impl Default for DataPath {
    fn default() -> Self {
        DataPath::Path(Path::root())
    }
}

impl DataPath {
    pub(crate) fn apply(&self, payload: &Value, context: &Value) -> Result<Value, String> {
        match self {
            DataPath::Null => Ok(Value::Object(Map::new())),
            DataPath::Path(p) if p.steps.is_empty() && !p.context => Ok(payload.clone()),
            DataPath::Path(p) => p.select(payload, context),
        }
    }
}

/// `ResultPath`: where a state's result goes in its input. `null` discards the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResultPath {
    Path(Path),
    Discard,
}

impl Default for ResultPath {
    fn default() -> Self {
        ResultPath::Path(Path::root())
    }
}

impl ResultPath {
    pub(crate) fn merge(&self, input: Value, result: Value) -> Result<Value, String> {
        match self {
            ResultPath::Discard => Ok(input),
            ResultPath::Path(p) => p.set(input, result),
        }
    }
}

/// A payload template: JSON in which an object field named `"key.$"` holds a path
/// whose value becomes field `"key"`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Template {
    Value(Value),
    Path(Path),
    Object(Vec<(String, Template)>),
    Array(Vec<Template>),
}

impl Template {
    /// Parses a template; the error names the offending key.
    pub(crate) fn parse(v: &Value) -> Result<Template, String> {
        Ok(match v {
            Value::Object(map) => {
                let mut fields = Vec::with_capacity(map.len());
                for (k, v) in map {
                    if let Some(name) = k.strip_suffix(".$") {
                        let text = v
                            .as_str()
                            .ok_or_else(|| format!("key {k:?} must hold a path string"))?;
                        if text.starts_with("States.") {
                            return Err(format!(
                                "key {k:?}: intrinsic functions are not supported"
                            ));
                        }
                        let path = Path::parse(text).map_err(|e| format!("key {k:?}: {e}"))?;
                        fields.push((name.to_owned(), Template::Path(path)));
                    } else {
                        fields.push((k.clone(), Template::parse(v)?));
                    }
                }
                Template::Object(fields)
            }
            Value::Array(items) => Template::Array(
                items
                    .iter()
                    .map(Template::parse)
                    .collect::<Result<_, _>>()?,
            ),
            other => Template::Value(other.clone()),
        })
    }

    /// Fills the template from `payload` and `context`.
    pub(crate) fn render(&self, payload: &Value, context: &Value) -> Result<Value, String> {
        Ok(match self {
            Template::Value(v) => v.clone(),
            Template::Path(p) => p.select(payload, context)?,
            Template::Object(fields) => {
                let mut map = Map::with_capacity(fields.len());
                for (k, t) in fields {
                    map.insert(k.clone(), t.render(payload, context)?);
                }
                Value::Object(map)
            }
            Template::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|t| t.render(payload, context))
                    .collect::<Result<_, _>>()?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_reads_paths() {
        let v = json!({"a": {"b": [10, {"c": "x"}]}, "odd key": 1});
        let ctx = json!({"Execution": {"Id": "e1"}});
        let get = |p: &str| Path::parse(p).unwrap().get(&v, &ctx).cloned();
        assert_eq!(get("$"), Some(v.clone()));
        assert_eq!(get("$.a.b[0]"), Some(json!(10)));
        assert_eq!(get("$.a.b[1].c"), Some(json!("x")));
        assert_eq!(get("$['odd key']"), Some(json!(1)));
        assert_eq!(get("$.a.b[5]"), None);
        assert_eq!(get("$.missing"), None);
        assert_eq!(get("$$.Execution.Id"), Some(json!("e1")));
        for bad in ["a.b", "$.", "$.a[", "$.a[*]", "$..a", "$.a[?(@.x)]", "$x"] {
            assert!(Path::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn result_path_sets_and_creates() {
        let p = Path::parse("$.result.score").unwrap();
        assert_eq!(
            p.set(json!({"x": 1}), json!(0.9)).unwrap(),
            json!({"x": 1, "result": {"score": 0.9}})
        );
        assert!(p.set(json!({"result": 3}), json!(1)).is_err());
        assert_eq!(
            Path::root().set(json!({"x": 1}), json!(2)).unwrap(),
            json!(2)
        );
        assert_eq!(
            ResultPath::Discard.merge(json!(1), json!(2)).unwrap(),
            json!(1)
        );
    }

    #[test]
    fn templates_fill_paths() {
        let t = Template::parse(&json!({
            "user.$": "$.who",
            "fixed": [1, {"deep.$": "$$.Map.Item.Index"}],
        }))
        .unwrap();
        let out = t
            .render(
                &json!({"who": "u7"}),
                &json!({"Map": {"Item": {"Index": 3}}}),
            )
            .unwrap();
        assert_eq!(out, json!({"user": "u7", "fixed": [1, {"deep": 3}]}));
        assert!(t.render(&json!({}), &json!({})).is_err());
        assert!(Template::parse(&json!({"x.$": 5})).is_err());
        assert!(Template::parse(&json!({"x.$": "States.Format('{}', $.a)"})).is_err());
    }
}
