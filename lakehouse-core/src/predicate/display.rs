//! [`Predicate`] written as a SQL boolean expression.

use std::fmt;

use super::Predicate;

struct Ident<'a>(&'a str);

impl fmt::Display for Ident<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && self
                .0
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && self
                .0
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if plain {
            f.write_str(self.0)
        } else {
            write!(f, "\"{}\"", self.0.replace('"', "\"\""))
        }
    }
}

impl fmt::Display for Predicate {
    /// Writes the predicate as a SQL boolean expression.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn part(f: &mut fmt::Formatter<'_>, p: &Predicate) -> fmt::Result {
            match p {
                Predicate::And(v) | Predicate::Or(v) if v.len() > 1 => write!(f, "({p})"),
                _ => write!(f, "{p}"),
            }
        }
        match self {
            Predicate::Literal(b) => f.write_str(if *b { "TRUE" } else { "FALSE" }),
            Predicate::Compare { column, op, value } => {
                write!(f, "{} {} {value}", Ident(column), op.as_str())
            }
            Predicate::Between {
                column,
                low,
                high,
                negated,
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "{} {not}BETWEEN {low} AND {high}", Ident(column))
            }
            Predicate::InList {
                column,
                values,
                negated,
            } => {
                let not = if *negated { "NOT " } else { "" };
                write!(f, "{} {not}IN (", Ident(column))?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str(")")
            }
            Predicate::IsNull { column, negated } => {
                let not = if *negated { " NOT" } else { "" };
                write!(f, "{} IS{not} NULL", Ident(column))
            }
            Predicate::And(parts) | Predicate::Or(parts) => {
                if parts.is_empty() {
                    let empty = matches!(self, Predicate::And(_));
                    return f.write_str(if empty { "TRUE" } else { "FALSE" });
                }
                let sep = if matches!(self, Predicate::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    part(f, p)?;
                }
                Ok(())
            }
            Predicate::Not(p) => {
                f.write_str("NOT ")?;
                match p.as_ref() {
                    Predicate::And(_) | Predicate::Or(_) => write!(f, "({p})"),
                    _ => write!(f, "{p}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Not;

    use crate::predicate::col;

    #[test]
    fn displays_as_sql() {
        let p = col("Price")
            .gt(1)
            .and(col("a").eq("x").or(col("b").is_null()).not());
        assert_eq!(
            p.to_string(),
            "\"Price\" > 1 AND NOT (a = 'x' OR b IS NULL)"
        );
        assert_eq!(
            p.without_not().to_string(),
            "\"Price\" > 1 AND (a <> 'x' AND b IS NOT NULL)"
        );
    }
}
