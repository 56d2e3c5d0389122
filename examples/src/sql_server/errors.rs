//! Errors as Postgres reports them: an `ErrorResponse` with a SQLSTATE code chosen by
//! the error's [`ErrorKind`] (and, for SQL that does not parse, by DataFusion's error
//! variant in its source), never by its message text.

use std::error::Error as StdError;

use arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use lakehouse_core::{Error, ErrorKind};
use pgwire::error::{ErrorInfo, PgWireError};

/// The SQLSTATE code of `e`.
///
/// | kind | SQLSTATE |
/// |---|---|
/// | `InvalidSql` from the SQL parser | `42601` syntax_error |
/// | `InvalidSql` otherwise (planning) | `42000` syntax_error_or_access_rule_violation |
/// | `TableNotFound` | `42P01` undefined_table |
/// | `ColumnNotFound` | `42703` undefined_column |
/// | `AlreadyExists` | `42P07` duplicate_table |
/// | `TypeMismatch`, `SchemaMismatch` | `42804` datatype_mismatch |
/// | `InvalidInput` (division by zero: `22012`) | `22000` data_exception |
/// | `Unsupported` | `0A000` feature_not_supported |
/// | `Conflict` | `40001` serialization_failure |
/// | `Cancelled`, `Timeout` | `57014` query_canceled |
/// | `ResourcesExhausted` | `53200` out_of_memory |
/// | `Full` | `53000` insufficient_resources |
/// | `VersionNotFound` | `22023` invalid_parameter_value |
/// | `Io`, `Unavailable` | `58030` io_error |
/// | `Corrupt` | `XX001` data_corrupted |
/// | anything else | `XX000` internal_error |
pub fn sqlstate(e: &Error) -> &'static str {
    match e.kind() {
        ErrorKind::InvalidSql if parse_error(e) => "42601",
        ErrorKind::InvalidSql => "42000",
        ErrorKind::TableNotFound => "42P01",
        ErrorKind::ColumnNotFound => "42703",
        ErrorKind::AlreadyExists => "42P07",
        ErrorKind::TypeMismatch | ErrorKind::SchemaMismatch => "42804",
        ErrorKind::InvalidInput if division_by_zero(e) => "22012",
        ErrorKind::InvalidInput => "22000",
        ErrorKind::Unsupported => "0A000",
        ErrorKind::Conflict => "40001",
        ErrorKind::Cancelled | ErrorKind::Timeout => "57014",
        ErrorKind::ResourcesExhausted => "53200",
        ErrorKind::Full => "53000",
        ErrorKind::VersionNotFound => "22023",
        ErrorKind::Io | ErrorKind::Unavailable => "58030",
        ErrorKind::Corrupt => "XX001",
        _ => "XX000",
    }
}

/// The DataFusion errors in `e`'s source chain, outermost first.
fn datafusion_errors(e: &Error) -> impl Iterator<Item = &DataFusionError> {
    let mut next: Option<&(dyn StdError + 'static)> = e.source();
    std::iter::from_fn(move || {
        while let Some(current) = next {
            next = current.source();
            if let Some(df) = current.downcast_ref::<DataFusionError>() {
                return Some(df);
            }
        }
        None
    })
}

fn parse_error(e: &Error) -> bool {
    datafusion_errors(e).any(|df| matches!(df.find_root(), DataFusionError::SQL(..)))
}

fn division_by_zero(e: &Error) -> bool {
    datafusion_errors(e).any(|df| {
        matches!(
            df.find_root(),
            DataFusionError::ArrowError(inner, _) if matches!(**inner, ArrowError::DivideByZero)
        )
    })
}

/// `e` as the client sees it: severity `ERROR`, its SQLSTATE, its message, and as the
/// detail the table or column it names and its cause (its source).
pub(crate) fn error_info(e: &Error) -> ErrorInfo {
    let mut info = ErrorInfo::new(
        "ERROR".to_owned(),
        sqlstate(e).to_owned(),
        wire_text(e.message()),
    );
    let mut detail = Vec::new();
    let context = e.context();
    if !context.is_empty() {
        detail.push(context.to_string());
    }
    // The cause, unless the message already tells it.
    if let Some(source) = e.source().map(ToString::to_string)
        && !source.is_empty()
        && !e.message().contains(&source)
    {
        detail.push(format!("caused by: {source}"));
    }
    if !detail.is_empty() {
        info.detail = Some(wire_text(&detail.join("; ")));
    }
    info
}

/// `text` as a field of an `ErrorResponse`, a C string: a NUL (from a value quoted in
/// the message, such as a binary parameter) is written `\0`, else it would end the
/// field and the client could not read the message.
fn wire_text(text: &str) -> String {
    text.replace('\0', "\\0")
}

/// `e` as pgwire's error, for the handlers' results.
pub(crate) fn pg_error(e: &Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e)))
}

/// A protocol-level refusal with its own SQLSTATE.
pub(crate) fn pg_refusal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        message.into(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_bytes_do_not_end_an_error_field() {
        let e = Error::new(ErrorKind::InvalidInput, "cannot convert '\0\0)'").with_table("t\0");
        let info = error_info(&e);
        assert_eq!(info.message, "cannot convert '\\0\\0)'");
        assert!(!info.detail.expect("detail").contains('\0'));
        assert_eq!(info.code, "22000");
    }
}
