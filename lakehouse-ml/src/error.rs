//! The error type of `lakehouse-ml`.

use std::error::Error as StdError;
use std::fmt;

pub use lakehouse_core::Context;

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, for callers that branch on it.
///
/// New kinds may be added in minor releases, so a `match` needs a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An argument or an interaction is malformed (NaN or negative weight, zero factors, ...).
    InvalidInput,
    /// The training data holds no interaction, or no user or item the operation needs.
    EmptyData,
    /// The user was never seen by the model and no cold-start path applies.
    UnknownUser,
    /// The item was never seen by the model.
    UnknownItem,
    /// The model has not been fitted yet.
    NotFitted,
    /// An Arrow column named in the column mapping does not exist.
    ColumnNotFound,
    /// An Arrow column has a type the loader cannot read.
    TypeMismatch,
    /// The model does not support this operation.
    Unsupported,
    /// A saved model was written by another format version.
    FormatVersion,
    /// Stored data or a text file failed to parse.
    Corrupt,
    /// An I/O operation failed; see the source.
    Io,
    /// An error from a dependency (linfa, arrow); see the source.
    External,
    /// A bug: an invariant of this library did not hold.
    Internal,
}

impl ErrorKind {
    /// A short lower-case name for the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::EmptyData => "empty data",
            ErrorKind::UnknownUser => "unknown user",
            ErrorKind::UnknownItem => "unknown item",
            ErrorKind::NotFitted => "model not fitted",
            ErrorKind::ColumnNotFound => "column not found",
            ErrorKind::TypeMismatch => "type mismatch",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::FormatVersion => "unsupported format version",
            ErrorKind::Corrupt => "corrupt data",
            ErrorKind::Io => "i/o error",
            ErrorKind::External => "external error",
            ErrorKind::Internal => "internal error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The error of `lakehouse-ml`: an [`ErrorKind`], a message, a typed [`Context`]
/// (key = the user or item id, path = the file, column = the Arrow column,
/// version = the format version, offset = the line number) and an optional source.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    context: Context,
    source: Option<BoxError>,
}

impl Error {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                context: Context::default(),
                source: None,
            }),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The message, without kind or context.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// Where it went wrong.
    pub fn context(&self) -> &Context {
        &self.inner.context
    }

    /// Names the user or item id.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.inner.context.key = Some(key.into());
        self
    }

    /// Names the file.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.inner.context.path = Some(path.into());
        self
    }

    /// Names the Arrow column.
    pub fn with_column(mut self, column: impl Into<String>) -> Self {
        self.inner.context.column = Some(column.into());
        self
    }

    /// Names the format version.
    pub fn with_version(mut self, version: u64) -> Self {
        self.inner.context.version = Some(version);
        self
    }

    /// Names the line number (of a text file) or record offset.
    pub fn with_offset(mut self, offset: u64) -> Self {
        self.inner.context.offset = Some(offset);
        self
    }

    /// Attaches the lower-level error that caused this one.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    pub(crate) fn corrupt(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corrupt, message)
    }

    pub(crate) fn not_fitted(model: &str) -> Self {
        Error::new(
            ErrorKind::NotFitted,
            format!("{model} must be fitted first"),
        )
    }

    pub(crate) fn unknown_user(id: &crate::Id) -> Self {
        Error::new(ErrorKind::UnknownUser, "user was never seen by the model")
            .with_key(id.to_string())
    }

    pub(crate) fn unknown_item(id: &crate::Id) -> Self {
        Error::new(ErrorKind::UnknownItem, "item was never seen by the model")
            .with_key(id.to_string())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.inner.kind)
            .field("message", &self.inner.message)
            .field("context", &self.inner.context)
            .field("source", &self.inner.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.inner.kind, self.inner.message)?;
        if !self.inner.context.is_empty() {
            write!(f, " ({})", self.inner.context)?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn StdError + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, "i/o operation failed").with_source(e)
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::new(ErrorKind::External, "arrow operation failed").with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_kind_message_and_key() {
        let e = Error::unknown_user(&crate::Id::from("alice"));
        assert_eq!(e.kind(), ErrorKind::UnknownUser);
        assert_eq!(
            e.to_string(),
            "unknown user: user was never seen by the model (key=\"alice\")"
        );
    }

    #[test]
    fn io_errors_keep_their_source() {
        let e = Error::from(std::io::Error::other("disk on fire"));
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("disk on fire")
        );
    }
}
