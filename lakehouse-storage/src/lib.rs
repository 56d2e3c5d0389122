//! Partitioned columnar tables in the Delta Lake format, on any object store.
//!
//! This crate is the S3 + Lake Formation layer of the Lakehouse workspace. It is under construction: this
//! release defines its error type only. See the workspace README for the crates that
//! are ready.

use std::error::Error as StdError;
use std::fmt;

pub use lakehouse_core::Context;

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A table, file or log entry failed validation.
    Corrupt,
    /// Data does not match the table schema.
    SchemaMismatch,
    /// A partition value or path is not allowed.
    InvalidPartition,
    /// A concurrent commit won and retries ran out.
    Conflict,
    /// The object store failed.
    Io,
}

/// The error of this crate: a kind, a message, a typed [`Context`] and a source.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    context: Context,
    #[source]
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl Error {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            context: Context::default(),
            source: None,
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Where it went wrong.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Names the table URI.
    #[must_use]
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.context.table = Some(table.into());
        self
    }

    /// Attaches the cause.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }
}

impl From<lakehouse_core::Error> for Error {
    fn from(e: lakehouse_core::Error) -> Self {
        let table = e.context().table.clone();
        let mut out = Error::new(ErrorKind::Io, e.message().to_owned());
        out.context = e.context().clone();
        out.context.table = table;
        out.with_source(e)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_context_and_source() {
        let core = lakehouse_core::Error::new(lakehouse_core::ErrorKind::Io, "disk full")
            .with_table("events");
        let e = Error::from(core);
        assert_eq!(e.context().table.as_deref(), Some("events"));
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("i/o error: disk full (table=events)")
        );
    }
}
