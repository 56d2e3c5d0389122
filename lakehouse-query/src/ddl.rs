//! The materialized view statements the engine handles itself, before DataFusion's
//! parser: `CREATE MATERIALIZED VIEW name AS query`, `REFRESH MATERIALIZED VIEW name` and
//! `DROP MATERIALIZED VIEW [IF EXISTS] name`.

use lakehouse_core::{Error, ErrorKind, Result};

/// A materialized view statement the engine handles itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// `CREATE MATERIALIZED VIEW name AS query`
    Create { name: String, query: String },
    /// `REFRESH MATERIALIZED VIEW name`
    Refresh { name: String },
    /// `DROP MATERIALIZED VIEW [IF EXISTS] name`
    Drop { name: String, if_exists: bool },
}

/// The next whitespace-separated word of `s` and the rest after it.
fn word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

fn expect_word<'a>(s: &'a str, want: &str, sql: &str) -> Result<&'a str> {
    match word(s) {
        Some((w, rest)) if w.eq_ignore_ascii_case(want) => Ok(rest),
        found => Err(Error::new(
            ErrorKind::InvalidSql,
            format!(
                "expected {} but found {:?} in {sql:?}",
                want.to_ascii_uppercase(),
                found.map(|(w, _)| w).unwrap_or("the end")
            ),
        )),
    }
}

/// The view name at the start of `rest` and what follows it.
fn view_name<'a>(rest: &'a str, sql: &str) -> Result<(&'a str, &'a str)> {
    word(rest).ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidSql,
            format!("a view name is missing in {sql:?}"),
        )
    })
}

/// The view name that ends the statement.
fn name_only(rest: &str, sql: &str) -> Result<String> {
    let (name, tail) = view_name(rest, sql)?;
    if !tail.trim().is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidSql,
            format!(
                "unexpected {:?} after the view name in {sql:?}",
                tail.trim()
            ),
        ));
    }
    Ok(name.to_owned())
}

/// Recognizes the materialized view statements; `None` for any other SQL.
pub(crate) fn parse_command(sql: &str) -> Result<Option<Command>> {
    let text = sql.trim().trim_end_matches(';').trim_end();
    let Some((first, rest)) = word(text) else {
        return Ok(None);
    };
    let Some((second, rest2)) = word(rest) else {
        return Ok(None);
    };
    let verb = first.to_ascii_lowercase();
    if !second.eq_ignore_ascii_case("materialized")
        || !matches!(verb.as_str(), "create" | "refresh" | "drop")
    {
        return Ok(None);
    }
    let rest = expect_word(rest2, "view", sql)?;
    Ok(Some(match verb.as_str() {
        "create" => {
            let (name, after) = view_name(rest, sql)?;
            let query = expect_word(after, "as", sql)?.trim();
            if query.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidSql,
                    format!("the query after AS is missing in {sql:?}"),
                ));
            }
            Command::Create {
                name: name.to_owned(),
                query: query.to_owned(),
            }
        }
        "refresh" => Command::Refresh {
            name: name_only(rest, sql)?,
        },
        _ => {
            let (if_exists, rest) = match word(rest) {
                Some((w, tail)) if w.eq_ignore_ascii_case("if") => {
                    (true, expect_word(tail, "exists", sql)?)
                }
                _ => (false, rest),
            };
            Command::Drop {
                name: name_only(rest, sql)?,
                if_exists,
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_view_statements() {
        assert_eq!(parse_command("SELECT 1").expect("plain sql"), None);
        assert_eq!(
            parse_command("create materialized view v as select a from t;").expect("create"),
            Some(Command::Create {
                name: "v".into(),
                query: "select a from t".into()
            })
        );
        assert_eq!(
            parse_command("REFRESH MATERIALIZED VIEW v").expect("refresh"),
            Some(Command::Refresh { name: "v".into() })
        );
        assert_eq!(
            parse_command("DROP MATERIALIZED VIEW IF EXISTS v;").expect("drop"),
            Some(Command::Drop {
                name: "v".into(),
                if_exists: true
            })
        );
        let e = parse_command("CREATE MATERIALIZED VIEW v SELECT 1").expect_err("no AS");
        assert_eq!(e.kind(), ErrorKind::InvalidSql);
        assert!(e.message().contains("expected AS"), "{e}");
        let e = parse_command("REFRESH MATERIALIZED VIEW").expect_err("no name");
        assert!(e.message().contains("view name is missing"), "{e}");
    }
}
