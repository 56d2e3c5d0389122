//! Choice rules: parsing and evaluating the comparison operators of the States
//! Language, and RFC 3339 timestamps.

use std::cmp::Ordering;

use serde_json::Value;

use crate::workflow::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    Str,
    Num,
    Bool,
    Ts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Is {
    Null,
    Present,
    Numeric,
    String,
    Boolean,
    Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Operand {
    Value(Value),
    Path(Path),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Test {
    Cmp { ty: Ty, op: Op, operand: Operand },
    Matches(String),
    Is(Is, bool),
}

/// A compiled choice rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Rule {
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
    Test { variable: Path, test: Test },
}

/// `(field, message)` of a rule that does not parse.
pub(crate) type RuleError = (String, String);

impl Rule {
    /// Parses a rule object. `top` rules carry `Next`, which the caller reads; nested
    /// ones must not.
    pub(crate) fn parse(v: &Value, top: bool) -> Result<Rule, RuleError> {
        let map = v.as_object().ok_or_else(|| {
            (
                "Choices".to_owned(),
                "a choice rule must be an object".to_owned(),
            )
        })?;
        for key in map.keys() {
            let known = matches!(key.as_str(), "Variable" | "And" | "Or" | "Not" | "Comment")
                || (top && key == "Next")
                || operator(key).is_some();
            if !known {
                let msg = if key == "Next" {
                    "a nested choice rule cannot have Next".to_owned()
                } else {
                    "unknown field or unsupported comparison operator".to_owned()
                };
                return Err((key.clone(), msg));
            }
        }
        let list = |key: &str| -> Result<Vec<Rule>, RuleError> {
            let items = map[key]
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| {
                    (
                        key.to_owned(),
                        "must be a non-empty array of rules".to_owned(),
                    )
                })?;
            items.iter().map(|r| Rule::parse(r, false)).collect()
        };
        if map.contains_key("And") {
            return Ok(Rule::And(list("And")?));
        }
        if map.contains_key("Or") {
            return Ok(Rule::Or(list("Or")?));
        }
        if let Some(inner) = map.get("Not") {
            return Ok(Rule::Not(Box::new(Rule::parse(inner, false)?)));
        }
        let variable = map
            .get("Variable")
            .ok_or_else(|| ("Variable".to_owned(), "is missing".to_owned()))?
            .as_str()
            .ok_or_else(|| ("Variable".to_owned(), "must be a path string".to_owned()))?;
        let variable = Path::parse(variable).map_err(|e| ("Variable".to_owned(), e))?;
        let ops: Vec<(&String, &Value)> =
            map.iter().filter(|(k, _)| operator(k).is_some()).collect();
        let [(name, operand)] = ops.as_slice() else {
            return Err((
                "Variable".to_owned(),
                format!(
                    "a rule needs exactly one comparison operator, found {}",
                    ops.len()
                ),
            ));
        };
        let test = parse_test(name, operand).map_err(|m| ((*name).clone(), m))?;
        Ok(Rule::Test { variable, test })
    }

    /// Evaluates the rule; an error names a path that matched nothing.
    pub(crate) fn eval(&self, payload: &Value, context: &Value) -> Result<bool, String> {
        match self {
            Rule::And(rules) => {
                for r in rules {
                    if !r.eval(payload, context)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Rule::Or(rules) => {
                for r in rules {
                    if r.eval(payload, context)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Rule::Not(r) => Ok(!r.eval(payload, context)?),
            Rule::Test { variable, test } => {
                let value = variable.get(payload, context);
                if let Test::Is(Is::Present, want) = test {
                    return Ok(value.is_some() == *want);
                }
                let value = value.ok_or_else(|| {
                    format!("choice variable {variable} matches nothing in the input")
                })?;
                Ok(match test {
                    Test::Is(kind, want) => {
                        let is = match kind {
                            Is::Null => value.is_null(),
                            Is::Numeric => value.is_number(),
                            Is::String => value.is_string(),
                            Is::Boolean => value.is_boolean(),
                            Is::Timestamp => value.as_str().and_then(parse_timestamp).is_some(),
                            Is::Present => true,
                        };
                        is == *want
                    }
                    Test::Matches(pattern) => value.as_str().is_some_and(|s| glob(pattern, s)),
                    Test::Cmp { ty, op, operand } => {
                        let other = match operand {
                            Operand::Value(v) => v,
                            Operand::Path(p) => p.get(payload, context).ok_or_else(|| {
                                format!("choice operand path {p} matches nothing in the input")
                            })?,
                        };
                        compare(*ty, value, other).is_some_and(|ord| match op {
                            Op::Eq => ord == Ordering::Equal,
                            Op::Lt => ord == Ordering::Less,
                            Op::Gt => ord == Ordering::Greater,
                            Op::Le => ord != Ordering::Greater,
                            Op::Ge => ord != Ordering::Less,
                        })
                    }
                })
            }
        }
    }
}

/// Recognises an operator name: its test family and whether the operand is a path.
fn operator(name: &str) -> Option<(&str, bool)> {
    let (base, path) = match name.strip_suffix("Path") {
        Some(b) if !matches!(name, "IsPresent") => (b, true),
        _ => (name, false),
    };
    const CMP: [&str; 24] = [
        "StringEquals",
        "StringLessThan",
        "StringGreaterThan",
        "StringLessThanEquals",
        "StringGreaterThanEquals",
        "StringMatches",
        "NumericEquals",
        "NumericLessThan",
        "NumericGreaterThan",
        "NumericLessThanEquals",
        "NumericGreaterThanEquals",
        "BooleanEquals",
        "TimestampEquals",
        "TimestampLessThan",
        "TimestampGreaterThan",
        "TimestampLessThanEquals",
        "TimestampGreaterThanEquals",
        "IsNull",
        "IsPresent",
        "IsNumeric",
        "IsString",
        "IsBoolean",
        "IsTimestamp",
        "",
    ];
    let known = CMP.iter().any(|c| !c.is_empty() && *c == base);
    let path_ok = !(base.starts_with("Is") || base == "StringMatches");
    (known && (!path || path_ok)).then_some((base, path))
}

fn parse_test(name: &str, operand: &Value) -> Result<Test, String> {
    let (base, is_path) = operator(name).ok_or("unknown comparison operator")?;
    if let Some(kind) = base.strip_prefix("Is") {
        let want = operand.as_bool().ok_or("must be true or false")?;
        let kind = match kind {
            "Null" => Is::Null,
            "Present" => Is::Present,
            "Numeric" => Is::Numeric,
            "String" => Is::String,
            "Boolean" => Is::Boolean,
            _ => Is::Timestamp,
        };
        return Ok(Test::Is(kind, want));
    }
    if base == "StringMatches" {
        let p = operand.as_str().ok_or("must be a string pattern")?;
        return Ok(Test::Matches(p.to_owned()));
    }
    let (ty, rest) = [
        ("String", Ty::Str),
        ("Numeric", Ty::Num),
        ("Boolean", Ty::Bool),
        ("Timestamp", Ty::Ts),
    ]
    .iter()
    .find_map(|(p, ty)| base.strip_prefix(p).map(|r| (*ty, r)))
    .ok_or("unknown comparison operator")?;
    let op = match rest {
        "Equals" => Op::Eq,
        "LessThan" => Op::Lt,
        "GreaterThan" => Op::Gt,
        "LessThanEquals" => Op::Le,
        _ => Op::Ge,
    };
    let operand = if is_path {
        let text = operand.as_str().ok_or("must be a path string")?;
        Operand::Path(Path::parse(text)?)
    } else {
        let ok = match ty {
            Ty::Str => operand.is_string(),
            Ty::Num => operand.is_number(),
            Ty::Bool => operand.is_boolean(),
            Ty::Ts => operand.as_str().and_then(parse_timestamp).is_some(),
        };
        if !ok {
            return Err(match ty {
                Ty::Str => "must be a string",
                Ty::Num => "must be a number",
                Ty::Bool => "must be true or false",
                Ty::Ts => "must be an RFC 3339 timestamp string",
            }
            .to_owned());
        }
        Operand::Value(operand.clone())
    };
    Ok(Test::Cmp { ty, op, operand })
}

fn compare(ty: Ty, a: &Value, b: &Value) -> Option<Ordering> {
    match ty {
        Ty::Str => Some(a.as_str()?.cmp(b.as_str()?)),
        Ty::Num => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
        },
        Ty::Bool => (a.as_bool()? == b.as_bool()?)
            .then_some(Ordering::Equal)
            .or(Some(Ordering::Less)),
        Ty::Ts => Some(parse_timestamp(a.as_str()?)?.cmp(&parse_timestamp(b.as_str()?)?)),
    }
}

/// `*` matches any run of characters; `\*` and `\\` are literal.
fn glob(pattern: &str, text: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Tok {
        Star,
        Char(char),
    }
    let mut toks = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => toks.push(Tok::Char(chars.next().unwrap_or('\\'))),
            '*' => toks.push(Tok::Star),
            c => toks.push(Tok::Char(c)),
        }
    }
    let text: Vec<char> = text.chars().collect();
    // Greedy matching with backtracking to the last star.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match toks.get(p) {
            Some(Tok::Char(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            Some(Tok::Star) => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    toks[p..].iter().all(|t| *t == Tok::Star)
}

/// Milliseconds since the Unix epoch of an RFC 3339 timestamp
/// (`2026-11-25T14:00:00Z`, `2026-11-25T14:00:00.250+01:00`).
pub(crate) fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &s[start..i.min(start + 3)];
        millis = frac.parse::<i64>().ok()? * 10i64.pow(3 - frac.len() as u32);
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            let o = h * 60 + m;
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_min * 60;
    Some(secs * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(rule: Value, input: Value) -> Result<bool, String> {
        Rule::parse(&rule, false)
            .map_err(|(f, m)| format!("{f}: {m}"))?
            .eval(&input, &json!({}))
    }

    #[test]
    fn comparisons() {
        let input =
            json!({"n": 5, "f": 2.5, "s": "beta", "b": true, "t": "2026-01-01T00:00:00Z", "m": 5});
        let cases = [
            (json!({"Variable": "$.n", "NumericEquals": 5}), true),
            (json!({"Variable": "$.n", "NumericGreaterThan": 4.5}), true),
            (
                json!({"Variable": "$.f", "NumericLessThanEquals": 2.5}),
                true,
            ),
            (json!({"Variable": "$.n", "NumericLessThan": 5}), false),
            (json!({"Variable": "$.n", "NumericEqualsPath": "$.m"}), true),
            (json!({"Variable": "$.s", "StringEquals": "beta"}), true),
            (
                json!({"Variable": "$.s", "StringGreaterThan": "alpha"}),
                true,
            ),
            (json!({"Variable": "$.s", "StringMatches": "b*a"}), true),
            (json!({"Variable": "$.s", "StringMatches": "a*"}), false),
            (json!({"Variable": "$.b", "BooleanEquals": false}), false),
            (
                json!({"Variable": "$.t", "TimestampGreaterThan": "2025-12-31T23:59:59Z"}),
                true,
            ),
            (
                json!({"Variable": "$.t", "TimestampEquals": "2026-01-01T01:00:00+01:00"}),
                true,
            ),
            (json!({"Variable": "$.s", "NumericEquals": 1}), false),
            (json!({"Variable": "$.missing", "IsPresent": false}), true),
            (json!({"Variable": "$.n", "IsNumeric": true}), true),
            (json!({"Variable": "$.t", "IsTimestamp": true}), true),
            (json!({"Not": {"Variable": "$.n", "IsString": true}}), true),
            (
                json!({"And": [{"Variable": "$.n", "NumericGreaterThan": 1}, {"Variable": "$.b", "BooleanEquals": true}]}),
                true,
            ),
            (
                json!({"Or": [{"Variable": "$.n", "NumericGreaterThan": 10}, {"Variable": "$.s", "StringEquals": "x"}]}),
                false,
            ),
            (
                json!({"And": [{"Variable": "$.x", "IsPresent": true}, {"Variable": "$.x", "NumericEquals": 1}]}),
                false,
            ),
        ];
        for (rule, want) in cases {
            assert_eq!(eval(rule.clone(), input.clone()), Ok(want), "{rule}");
        }
        assert!(eval(json!({"Variable": "$.x", "NumericEquals": 1}), input).is_err());
    }

    #[test]
    fn bad_rules_name_the_field() {
        let err = |r: Value| Rule::parse(&r, false).unwrap_err();
        assert_eq!(
            err(json!({"Variable": "$.n", "NumericEquals": "5"})).0,
            "NumericEquals"
        );
        assert_eq!(
            err(json!({"Variable": "$.n", "NumbersEqual": 5})).0,
            "NumbersEqual"
        );
        assert_eq!(err(json!({"NumericEquals": 5})).0, "Variable");
        assert_eq!(
            err(json!({"Variable": "n", "NumericEquals": 5})).0,
            "Variable"
        );
        assert_eq!(err(json!({"And": []})).0, "And");
        assert_eq!(
            err(json!({"Variable": "$.n", "IsNullPath": "$.x"})).0,
            "IsNullPath"
        );
    }

    #[test]
    fn glob_patterns() {
        assert!(glob("*.log", "app.log"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("lit\\*", "lit*"));
        assert!(!glob("lit\\*", "litX"));
        assert!(glob("*", ""));
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(
            parse_timestamp("2026-11-25T14:00:00Z"),
            Some(1_795_615_200_000)
        );
        assert_eq!(
            parse_timestamp("2026-11-25T15:00:00+01:00"),
            parse_timestamp("2026-11-25T14:00:00Z")
        );
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-01-01 00:00:00Z",
            "2026-01-01T00:00:00",
            "x",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
