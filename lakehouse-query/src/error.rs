//! The crate's error type.

use std::error::Error as StdError;
use std::fmt;

use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
pub use lakehouse_core::Context;

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

type BoxError = Box<dyn StdError + Send + Sync>;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The SQL text does not parse, or does not plan for a reason other than a missing
    /// table or column.
    InvalidSql,
    /// A table named by the query or the call is not registered.
    TableNotFound,
    /// A column named by the query does not exist in the tables it reads.
    ColumnNotFound,
    /// An argument is invalid (a bad option, a parameter of the wrong type or count).
    InvalidInput,
    /// A table or view with that name is already registered.
    AlreadyExists,
    /// The query ran past its memory limit and could not spill.
    ResourcesExhausted,
    /// The query's workload queue is full.
    QueueFull,
    /// The query waited or ran longer than its timeout.
    Timeout,
    /// The query was cancelled.
    Cancelled,
    /// The query or view uses something this engine does not support.
    Unsupported,
    /// A table source failed; its error is the [`source`](StdError::source).
    Source,
    /// Reading or writing files failed.
    Io,
    /// A bug: an invariant of the engine did not hold.
    Internal,
}

impl ErrorKind {
    /// A short lowercase name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidSql => "invalid sql",
            ErrorKind::TableNotFound => "table not found",
            ErrorKind::ColumnNotFound => "column not found",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::ResourcesExhausted => "resources exhausted",
            ErrorKind::QueueFull => "queue full",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Source => "table source error",
            ErrorKind::Io => "i/o error",
            ErrorKind::Internal => "internal error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of this crate: a kind, a message, a typed [`Context`] and a source.
#[derive(Debug)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    message: String,
    context: Context,
    source: Option<BoxError>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.inner.kind, self.inner.message)?;
        let c = &self.inner.context;
        let mut parts = Vec::new();
        if let Some(t) = &c.table {
            parts.push(format!("table={t}"));
        }
        if let Some(col) = &c.column {
            parts.push(format!("column={col}"));
        }
        if let Some(p) = &c.path {
            parts.push(format!("path={p}"));
        }
        if let Some(v) = c.version {
            parts.push(format!("version={v}"));
        }
        if let Some(k) = &c.key {
            parts.push(format!("key={k}"));
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

impl Error {
    /// A new error.
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

    /// Names the table or view.
    #[must_use]
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        self.inner.context.table = Some(table.into());
        self
    }

    /// Names the column.
    #[must_use]
    pub fn with_column(mut self, column: impl Into<String>) -> Self {
        self.inner.context.column = Some(column.into());
        self
    }

    /// Names the path.
    #[must_use]
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.inner.context.path = Some(path.into());
        self
    }

    /// Names the key (a workload queue, a prepared statement).
    #[must_use]
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.inner.context.key = Some(key.into());
        self
    }

    /// Attaches the cause.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }
}

impl From<lakehouse_core::Error> for Error {
    fn from(e: lakehouse_core::Error) -> Self {
        use lakehouse_core::ErrorKind as K;
        let kind = match e.kind() {
            K::ColumnNotFound => ErrorKind::ColumnNotFound,
            K::InvalidInput | K::SchemaMismatch | K::TypeMismatch => ErrorKind::InvalidInput,
            K::Unsupported => ErrorKind::Unsupported,
            K::Cancelled => ErrorKind::Cancelled,
            K::Timeout => ErrorKind::Timeout,
            K::Io => ErrorKind::Io,
            _ => ErrorKind::Source,
        };
        let mut out = Error::new(kind, e.message().to_owned());
        out.inner.context = e.context().clone();
        out.with_source(e)
    }
}

/// Extracts the first quoted name of a DataFusion message: `table 'x' not found`.
fn quoted(message: &str) -> Option<String> {
    let start = message.find('\'')? + 1;
    let len = message[start..].find('\'')?;
    Some(message[start..start + len].to_owned())
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        from_datafusion(e)
    }
}

fn from_datafusion(e: DataFusionError) -> Error {
    // Unwrap the layers that only add context.
    let e = match e {
        DataFusionError::Context(_, inner) => return from_datafusion(*inner),
        DataFusionError::Diagnostic(_, inner) => return from_datafusion(*inner),
        DataFusionError::Shared(inner) => match std::sync::Arc::try_unwrap(inner) {
            Ok(inner) => return from_datafusion(inner),
            Err(shared) => DataFusionError::Shared(shared),
        },
        DataFusionError::Collection(mut errors) if !errors.is_empty() => {
            return from_datafusion(errors.swap_remove(0));
        }
        other => other,
    };
    let message = e.strip_backtrace();
    match e {
        DataFusionError::External(inner) => match inner.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(inner) => match inner.downcast::<lakehouse_core::Error>() {
                Ok(core) => Error::from(*core),
                Err(inner) => {
                    let kind = if inner.is::<std::io::Error>() {
                        ErrorKind::Io
                    } else {
                        ErrorKind::Source
                    };
                    Error::new(kind, message).with_source(inner)
                }
            },
        },
        DataFusionError::SQL(..) => Error::new(ErrorKind::InvalidSql, message).with_source(e),
        DataFusionError::SchemaError(ref schema, _) => {
            let (kind, column) = match schema.as_ref() {
                SchemaError::FieldNotFound { field, .. } => {
                    (ErrorKind::ColumnNotFound, Some(field.name.clone()))
                }
                _ => (ErrorKind::InvalidSql, None),
            };
            let mut out = Error::new(kind, message);
            if let Some(c) = column {
                out = out.with_column(c);
            }
            out.with_source(e)
        }
        DataFusionError::Plan(ref m) => {
            if m.contains("table '") && m.contains("not found") {
                let mut out = Error::new(ErrorKind::TableNotFound, message.clone());
                if let Some(t) = quoted(m) {
                    // `datafusion.public.x` names the table `x` of the default schema.
                    let t = t
                        .strip_prefix("datafusion.public.")
                        .unwrap_or(&t)
                        .to_owned();
                    out = out.with_table(t);
                }
                out.with_source(e)
            } else if m.contains("column '") && m.contains("not found") {
                let mut out = Error::new(ErrorKind::ColumnNotFound, message.clone());
                if let Some(c) = quoted(m) {
                    out = out.with_column(c);
                }
                out.with_source(e)
            } else {
                Error::new(ErrorKind::InvalidSql, message).with_source(e)
            }
        }
        DataFusionError::NotImplemented(_) => {
            Error::new(ErrorKind::Unsupported, message).with_source(e)
        }
        DataFusionError::ResourcesExhausted(_) => {
            Error::new(ErrorKind::ResourcesExhausted, message).with_source(e)
        }
        DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => {
            Error::new(ErrorKind::Io, message).with_source(e)
        }
        DataFusionError::ArrowError(..) | DataFusionError::Execution(_) => {
            if message.contains("Resources exhausted") {
                Error::new(ErrorKind::ResourcesExhausted, message).with_source(e)
            } else if message.contains("Divide by zero") || message.contains("Cast error") {
                Error::new(ErrorKind::InvalidInput, message).with_source(e)
            } else {
                Error::new(ErrorKind::Source, message).with_source(e)
            }
        }
        DataFusionError::Configuration(_) => {
            Error::new(ErrorKind::InvalidInput, message).with_source(e)
        }
        _ => Error::new(ErrorKind::Internal, message).with_source(e),
    }
}

/// Wraps this crate's error for DataFusion, so that it comes back out unchanged.
pub(crate) fn to_df(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Wraps a core error for DataFusion.
pub(crate) fn core_to_df(e: lakehouse_core::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_context_and_source() {
        let core = lakehouse_core::Error::new(lakehouse_core::ErrorKind::Io, "disk full")
            .with_table("events");
        let e = Error::from(core);
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(e.context().table.as_deref(), Some("events"));
        assert!(e.source().is_some());
        assert_eq!(e.to_string(), "i/o error: disk full (table=events)");
    }

    #[test]
    fn round_trips_through_datafusion() {
        let ours = Error::new(ErrorKind::QueueFull, "full").with_key("etl");
        let back = Error::from(DataFusionError::Context(
            "ctx".into(),
            Box::new(to_df(ours)),
        ));
        assert_eq!(back.kind(), ErrorKind::QueueFull);
        assert_eq!(back.context().key.as_deref(), Some("etl"));
    }

    #[test]
    fn names_missing_table() {
        let e = Error::from(DataFusionError::Plan(
            "table 'datafusion.public.nope' not found".into(),
        ));
        assert_eq!(e.kind(), ErrorKind::TableNotFound);
        assert_eq!(e.context().table.as_deref(), Some("nope"));
    }
}
