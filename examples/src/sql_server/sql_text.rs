//! What the server reads in SQL text itself: where one statement of a query string
//! ends, what kind of statement it is (its leading keywords, for the command tag), and
//! the `$1`, `$2`, ... parameters of a statement the engine cannot plan ahead.
//!
//! The scanner knows `'...'` strings (with `''`), `"..."` identifiers, `--` and nested
//! `/* */` comments; a `;` or a `$n` inside them is text.

use lakehouse_core::{Error, ErrorKind, Result, Scalar};

/// Calls `f(byte index, char)` for each character of `sql` outside strings, quoted
/// identifiers and comments.
fn for_each_code_char(sql: &str, mut f: impl FnMut(usize, char)) {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Code,
        Single,
        Double,
        Line,
        Block(u32),
    }
    let mut state = State::Code;
    let mut chars = sql.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        state = match (state, c) {
            (State::Code, '\'') => State::Single,
            (State::Code, '"') => State::Double,
            (State::Code, '-') if next == Some('-') => {
                chars.next();
                State::Line
            }
            (State::Code, '/') if next == Some('*') => {
                chars.next();
                State::Block(1)
            }
            (State::Code, c) => {
                f(i, c);
                State::Code
            }
            // `''` inside a string is a quote; the scanner leaves and re-enters.
            (State::Single, '\'') => State::Code,
            (State::Double, '"') => State::Code,
            (State::Line, '\n') => State::Code,
            (State::Block(d), '*') if next == Some('/') => {
                chars.next();
                if d == 1 {
                    State::Code
                } else {
                    State::Block(d - 1)
                }
            }
            (State::Block(d), '/') if next == Some('*') => {
                chars.next();
                State::Block(d + 1)
            }
            (s, _) => s,
        };
    }
}

/// The statements of a query string, split at `;` outside strings and comments, each
/// trimmed; empty ones are left out.
pub(crate) fn split_statements(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for_each_code_char(sql, |i, c| {
        if c == ';' {
            out.push(&sql[start..i]);
            start = i + 1;
        }
    });
    out.push(&sql[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|s| !only_comments(s))
        .collect()
}

fn only_comments(sql: &str) -> bool {
    let mut code = false;
    for_each_code_char(sql, |_, c| code |= !c.is_whitespace());
    !code
}

/// The first `n` words of `sql` (outside comments), upper-cased.
pub(crate) fn leading_words(sql: &str, n: usize) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut done = false;
    for_each_code_char(sql, |_, c| {
        if done {
            return;
        }
        if c.is_alphanumeric() || c == '_' {
            current.extend(c.to_uppercase());
        } else {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            // Words end at the first symbol that is not a separator: `(` of a
            // parenthesised query is skipped only before the first word.
            if !(c.is_whitespace() || (c == '(' && words.is_empty())) {
                done = true;
            }
        }
        if words.len() >= n {
            done = true;
        }
    });
    if !done && !current.is_empty() {
        words.push(current);
    }
    words.truncate(n);
    words
}

/// The words of `sql` outside parentheses, strings, quoted identifiers and comments,
/// upper-cased: `CREATE TABLE t PARTITIONED BY (day) AS SELECT ...` has `AS`, `CREATE
/// TABLE t (a INT, "as" INT)` has not.
pub(crate) fn top_level_words(sql: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for_each_code_char(sql, |_, c| {
        if c.is_alphanumeric() || c == '_' {
            if depth == 0 {
                current.extend(c.to_uppercase());
            }
            return;
        }
        if !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    });
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// `(byte range, number)` of each `$n` parameter of `sql`.
fn parameters(sql: &str) -> Vec<(std::ops::Range<usize>, usize)> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    for_each_code_char(sql, |i, c| {
        if c != '$' || (i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_')) {
            return;
        }
        let digits = bytes[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > 0
            && let Ok(n) = sql[i + 1..i + 1 + digits].parse::<usize>()
        {
            out.push((i..i + 1 + digits, n));
        }
    });
    out
}

/// The highest parameter number `sql` uses (0 for none).
pub(crate) fn parameter_count(sql: &str) -> usize {
    parameters(sql)
        .into_iter()
        .map(|(_, n)| n)
        .max()
        .unwrap_or(0)
}

/// `sql` with each `$n` replaced by the SQL literal of `params[n - 1]`.
pub(crate) fn bind_literals(sql: &str, params: &[Scalar]) -> Result<String> {
    let mut out = String::with_capacity(sql.len() + 16 * params.len());
    let mut last = 0;
    for (range, n) in parameters(sql) {
        let value = n
            .checked_sub(1)
            .and_then(|i| params.get(i))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "the statement uses ${n}, but {} parameters were bound",
                        params.len()
                    ),
                )
            })?;
        out.push_str(&sql[last..range.start]);
        out.push_str(&literal(value)?);
        last = range.end;
    }
    out.push_str(&sql[last..]);
    Ok(out)
}

/// A SQL literal of `value` that DataFusion reads back as the same value and type.
pub(crate) fn literal(value: &Scalar) -> Result<String> {
    let quoted = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let float = |v: f64, ty: &str| {
        if v.is_finite() {
            format!("CAST({v:?} AS {ty})")
        } else {
            format!(
                "CAST('{}' AS {ty})",
                if v.is_nan() {
                    "NaN"
                } else if v > 0.0 {
                    "inf"
                } else {
                    "-inf"
                }
            )
        }
    };
    Ok(match value {
        Scalar::Null => "NULL".to_owned(),
        Scalar::Boolean(v) => if *v { "TRUE" } else { "FALSE" }.to_owned(),
        Scalar::Int8(v) => format!("CAST({v} AS TINYINT)"),
        Scalar::Int16(v) => format!("CAST({v} AS SMALLINT)"),
        Scalar::Int32(v) => format!("CAST({v} AS INT)"),
        Scalar::Int64(v) => format!("CAST({v} AS BIGINT)"),
        Scalar::UInt8(v) => format!("CAST({v} AS TINYINT UNSIGNED)"),
        Scalar::UInt16(v) => format!("CAST({v} AS SMALLINT UNSIGNED)"),
        Scalar::UInt32(v) => format!("CAST({v} AS INT UNSIGNED)"),
        Scalar::UInt64(v) => format!("CAST({v} AS BIGINT UNSIGNED)"),
        Scalar::Float32(v) => float(f64::from(*v), "REAL"),
        Scalar::Float64(v) => float(*v, "DOUBLE"),
        Scalar::Utf8(s) => quoted(s),
        Scalar::Binary(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("X'{hex}'")
        }
        Scalar::Decimal128 {
            value,
            precision,
            scale,
        } => format!(
            "CAST('{}' AS DECIMAL({precision}, {scale}))",
            super::types::decimal_text(&value.to_string(), *scale)
        ),
        other => {
            // Dates and timestamps: their text, cast back to their type.
            let text = other.cast_to(&arrow::datatypes::DataType::Utf8)?;
            let Scalar::Utf8(text) = text else {
                return Err(Error::new(
                    ErrorKind::Internal,
                    "a cast to text gave no text",
                ));
            };
            let ty = match other.data_type() {
                arrow::datatypes::DataType::Date32 => "DATE",
                arrow::datatypes::DataType::Timestamp(_, None) => "TIMESTAMP",
                arrow::datatypes::DataType::Timestamp(_, Some(_)) => "TIMESTAMPTZ",
                t => {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!("a parameter of type {t} cannot be bound here"),
                    ));
                }
            };
            format!("CAST({} AS {ty})", quoted(&text))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_outside_strings_and_comments() {
        let sql = "SELECT 'a;b'; -- c;d\n SELECT \"x;\" /* ; /* ; */ ; */ FROM t;; ";
        assert_eq!(
            split_statements(sql),
            vec![
                "SELECT 'a;b'",
                "-- c;d\n SELECT \"x;\" /* ; /* ; */ ; */ FROM t"
            ]
        );
        assert!(split_statements(" ; -- nothing\n").is_empty());
    }

    #[test]
    fn leading_words_skip_comments_and_parentheses() {
        assert_eq!(leading_words("/* x */ (select 1)", 2), vec!["SELECT", "1"]);
        assert_eq!(
            leading_words("create   materialized view v as select 1", 3),
            vec!["CREATE", "MATERIALIZED", "VIEW"]
        );
        assert_eq!(leading_words("insert", 3), vec!["INSERT"]);
    }

    #[test]
    fn top_level_words_skip_parentheses_strings_and_quoted_names() {
        assert_eq!(
            top_level_words("create table t partitioned by (day) as select 1"),
            vec![
                "CREATE",
                "TABLE",
                "T",
                "PARTITIONED",
                "BY",
                "AS",
                "SELECT",
                "1"
            ]
        );
        let words = top_level_words("CREATE TABLE t (a INT, \"as\" INT, b VARCHAR DEFAULT 'as')");
        assert_eq!(words, vec!["CREATE", "TABLE", "T"]);
        assert!(!words.iter().any(|w| w == "AS"));
    }

    #[test]
    fn literals_replace_parameters_outside_strings() {
        let sql = "SELECT '$1', $2 FROM t WHERE a = $1 AND b = $10x";
        assert_eq!(parameter_count(sql), 10);
        let mut params = vec![Scalar::Utf8("it's".into()), Scalar::Int64(-3)];
        params.extend(std::iter::repeat_n(Scalar::Null, 8));
        assert_eq!(
            bind_literals(sql, &params).unwrap(),
            "SELECT '$1', CAST(-3 AS BIGINT) FROM t WHERE a = 'it''s' AND b = NULLx"
        );
        assert!(bind_literals("SELECT $3", &params[..2]).is_err());
    }
}
