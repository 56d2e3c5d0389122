//! The one error type of the Lakehouse workspace and the typed [`Context`] every crate
//! attaches to its errors.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::log::ShardId;

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, for callers that branch on it.
///
/// New kinds may be added in minor releases, so a `match` needs a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An argument or a record is malformed (empty partition key, negative limit, ...).
    InvalidInput,
    /// Data does not have the schema the table expects; the message names the columns.
    SchemaMismatch,
    /// A column named in a projection or predicate does not exist.
    ColumnNotFound,
    /// A value cannot be compared with or converted to a column's type.
    TypeMismatch,
    /// The requested table version does not exist (never written or already removed).
    VersionNotFound,
    /// Data was removed or rewritten in a version range, so only a full re-read is correct.
    NonAppendChange,
    /// The shard does not exist in this log.
    ShardNotFound,
    /// The position to read from is older than the oldest record still retained.
    PositionTrimmed,
    /// The position to read from is not valid for this shard.
    InvalidPosition,
    /// A record or cache entry exceeds the configured size limit.
    RecordTooLarge,
    /// A concurrent writer committed first and the operation could not be retried.
    Conflict,
    /// Stored data failed validation (checksum, truncated file, bad format).
    Corrupt,
    /// An I/O operation failed; see the source.
    Io,
    /// The implementation does not support this operation.
    Unsupported,
    /// A bounded resource is full and the caller asked not to wait.
    Full,
    /// The object was closed or shut down.
    Closed,
    /// An operation did not finish in time.
    Timeout,
    /// An operation was cancelled by its caller.
    Cancelled,
    /// An error from a user-supplied callback (a handler, a cache loader) or an external
    /// library; see the source.
    External,
    /// A remote service (Redis, an object store, a stream server) failed or cannot be
    /// reached; see the source.
    Unavailable,
    /// A configuration value is out of range (zero capacity, zero shards, ...).
    InvalidConfig,
    /// The SQL text does not parse, or does not plan for a reason other than a missing
    /// table or column.
    InvalidSql,
    /// A table or view named by a query or a call does not exist.
    TableNotFound,
    /// A table, view or object with that name already exists.
    AlreadyExists,
    /// An operation ran past its memory limit and could not spill.
    ResourcesExhausted,
    /// The data an operation needs is empty (no interactions to train on, ...).
    EmptyData,
    /// A user id that the model never saw, and no cold-start path applies.
    UnknownUser,
    /// An item id that the model never saw.
    UnknownItem,
    /// A model was used before it was fitted.
    NotFitted,
    /// Stored data was written by a format version this build cannot read.
    FormatVersion,
    /// Another caller's computation that this one waited for (a coalesced cache load)
    /// panicked or was dropped before it produced a value.
    Abandoned,
    /// A bug: an invariant of this library did not hold.
    Internal,
}

impl ErrorKind {
    /// A short lower-case name for the kind, used in messages and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::SchemaMismatch => "schema mismatch",
            ErrorKind::ColumnNotFound => "column not found",
            ErrorKind::TypeMismatch => "type mismatch",
            ErrorKind::VersionNotFound => "version not found",
            ErrorKind::NonAppendChange => "non-append change",
            ErrorKind::ShardNotFound => "shard not found",
            ErrorKind::PositionTrimmed => "position trimmed",
            ErrorKind::InvalidPosition => "invalid position",
            ErrorKind::RecordTooLarge => "record too large",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Corrupt => "corrupt data",
            ErrorKind::Io => "i/o error",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Full => "full",
            ErrorKind::Closed => "closed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::External => "external error",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::InvalidConfig => "invalid configuration",
            ErrorKind::InvalidSql => "invalid sql",
            ErrorKind::TableNotFound => "table not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::ResourcesExhausted => "resources exhausted",
            ErrorKind::EmptyData => "empty data",
            ErrorKind::UnknownUser => "unknown user",
            ErrorKind::UnknownItem => "unknown item",
            ErrorKind::NotFitted => "model not fitted",
            ErrorKind::FormatVersion => "unsupported format version",
            ErrorKind::Abandoned => "abandoned",
            ErrorKind::Internal => "internal error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an error happened: the table, file, shard, key, column or version involved.
///
/// Every lakehouse crate attaches one to its errors so that a message names the thing
/// to look at. Fields that do not apply stay `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Context {
    /// Table name or URI.
    pub table: Option<String>,
    /// File or object path.
    pub path: Option<String>,
    /// Stream shard.
    pub shard: Option<ShardId>,
    /// Record, cache or partition key.
    pub key: Option<String>,
    /// Column name.
    pub column: Option<String>,
    /// Table version or sequence number.
    pub version: Option<u64>,
    /// Byte offset inside a file.
    pub offset: Option<u64>,
}

impl Context {
    /// `true` when no field is set.
    pub fn is_empty(&self) -> bool {
        self == &Context::default()
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut field = |f: &mut fmt::Formatter<'_>, name: &str, value: &dyn fmt::Display| {
            let r = write!(f, "{sep}{name}={value}");
            sep = ", ";
            r
        };
        if let Some(v) = &self.table {
            field(f, "table", v)?;
        }
        if let Some(v) = &self.path {
            field(f, "path", v)?;
        }
        if let Some(v) = &self.shard {
            field(f, "shard", v)?;
        }
        if let Some(v) = &self.key {
            field(f, "key", &format_args!("{v:?}"))?;
        }
        if let Some(v) = &self.column {
            field(f, "column", v)?;
        }
        if let Some(v) = &self.version {
            field(f, "version", v)?;
        }
        if let Some(v) = &self.offset {
            field(f, "offset", v)?;
        }
        Ok(())
    }
}

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The error of every Lakehouse crate.
///
/// It carries an [`ErrorKind`] to branch on, a message, a typed [`Context`] and, where a
/// lower layer failed (an object store, DataFusion, Redis, an I/O call), that error as
/// its [`source`](StdError::source). Cheap to clone: the waiters of one coalesced
/// operation all receive the same error.
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    message: String,
    context: Context,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Arc::new(Inner {
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

    /// Sets the whole context.
    pub fn with_context(mut self, context: Context) -> Self {
        Arc::make_mut(&mut self.inner).context = context;
        self
    }

    /// Names the table.
    pub fn with_table(mut self, table: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.inner).context.table = Some(table.into());
        self
    }

    /// Names the file or object.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.inner).context.path = Some(path.into());
        self
    }

    /// Names the shard.
    pub fn with_shard(mut self, shard: ShardId) -> Self {
        Arc::make_mut(&mut self.inner).context.shard = Some(shard);
        self
    }

    /// Names the key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.inner).context.key = Some(key.into());
        self
    }

    /// Names the column.
    pub fn with_column(mut self, column: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.inner).context.column = Some(column.into());
        self
    }

    /// Names the version or sequence number.
    pub fn with_version(mut self, version: u64) -> Self {
        Arc::make_mut(&mut self.inner).context.version = Some(version);
        self
    }

    /// Names the byte offset.
    pub fn with_offset(mut self, offset: u64) -> Self {
        Arc::make_mut(&mut self.inner).context.offset = Some(offset);
        self
    }

    /// Attaches the lower-level error that caused this one.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        Arc::make_mut(&mut self.inner).source = Some(Arc::from(source.into()));
        self
    }

    /// Attaches a cause that is already shared (the error of a coalesced operation).
    pub fn with_shared_source(mut self, source: Arc<dyn StdError + Send + Sync + 'static>) -> Self {
        Arc::make_mut(&mut self.inner).source = Some(source);
        self
    }

    /// Changes the kind, keeping message, context and source.
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        Arc::make_mut(&mut self.inner).kind = kind;
        self
    }

    /// Puts `message` in front of the current one (`message: current`), keeping kind,
    /// context and source.
    pub fn prefixed(mut self, message: impl fmt::Display) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        inner.message = format!("{message}: {}", inner.message);
        self
    }

    /// The first error of `kind` found in this error's [`source`](StdError::source)
    /// chain, this one included, if its type is [`Error`].
    pub fn find_kind(&self, kind: ErrorKind) -> Option<&Error> {
        let mut current: Option<&(dyn StdError + 'static)> = Some(self);
        while let Some(e) = current {
            if let Some(ours) = e.downcast_ref::<Error>()
                && ours.kind() == kind
            {
                return Some(ours);
            }
            current = e.source();
        }
        None
    }

    /// A new [`ErrorKind::InvalidInput`] error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// A new [`ErrorKind::Internal`] error: a bug, an invariant that did not hold.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
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
        let kind = match e.kind() {
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                ErrorKind::Corrupt
            }
            _ => ErrorKind::Io,
        };
        Error::new(kind, "i/o operation failed").with_source(e)
    }
}

impl ErrorKind {
    /// The kind of an Arrow error, decided by its variant (an [`Error`] wrapped in
    /// `ArrowError::ExternalError` keeps its own kind). `From<ArrowError>` uses it; a
    /// caller holding only a reference (a shared DataFusion error) can too.
    pub fn of_arrow(e: &arrow::error::ArrowError) -> ErrorKind {
        use arrow::error::ArrowError as A;
        match e {
            A::SchemaError(_) => ErrorKind::SchemaMismatch,
            A::CastError(_) => ErrorKind::TypeMismatch,
            A::InvalidArgumentError(_)
            | A::DivideByZero
            | A::ArithmeticOverflow(_)
            | A::ParseError(_)
            | A::ComputeError(_) => ErrorKind::InvalidInput,
            A::IoError(_, _) => ErrorKind::Io,
            A::ParquetError(_) => ErrorKind::Corrupt,
            A::MemoryError(_) => ErrorKind::ResourcesExhausted,
            A::ExternalError(inner) => inner
                .downcast_ref::<Error>()
                .map_or(ErrorKind::External, Error::kind),
            _ => ErrorKind::External,
        }
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        if let arrow::error::ArrowError::ExternalError(inner) = &e
            && let Some(ours) = inner.downcast_ref::<Error>()
        {
            return ours.clone();
        }
        Error::new(ErrorKind::of_arrow(&e), "arrow operation failed").with_source(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_kind_message_and_context() {
        let e = Error::new(
            ErrorKind::RecordTooLarge,
            "record of 2000000 bytes exceeds 1048576",
        )
        .with_shard(ShardId(3))
        .with_key("user-7");
        assert_eq!(
            e.to_string(),
            "record too large: record of 2000000 bytes exceeds 1048576 (shard=shard-0003, key=\"user-7\")"
        );
        assert_eq!(e.kind(), ErrorKind::RecordTooLarge);
        assert_eq!(e.context().shard, Some(ShardId(3)));
    }

    #[test]
    fn clones_share_and_builders_copy_on_write() {
        let e = Error::new(ErrorKind::Io, "write failed").with_table("events");
        let other = e.clone().with_key("k");
        assert_eq!(e.context().key, None);
        assert_eq!(other.context().key.as_deref(), Some("k"));
        assert_eq!(other.context().table.as_deref(), Some("events"));
        let outer = Error::new(ErrorKind::External, "handler failed").with_source(other);
        assert_eq!(
            outer.find_kind(ErrorKind::Io).map(|e| e.message()),
            Some("write failed")
        );
        assert!(outer.find_kind(ErrorKind::Timeout).is_none());
    }

    #[test]
    fn arrow_kinds_follow_the_variant() {
        use arrow::error::ArrowError as A;
        assert_eq!(
            ErrorKind::of_arrow(&A::CastError("x".into())),
            ErrorKind::TypeMismatch
        );
        assert_eq!(
            ErrorKind::of_arrow(&A::DivideByZero),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            ErrorKind::of_arrow(&A::SchemaError("x".into())),
            ErrorKind::SchemaMismatch
        );
        assert_eq!(
            ErrorKind::of_arrow(&A::MemoryError("x".into())),
            ErrorKind::ResourcesExhausted
        );
        assert_eq!(
            ErrorKind::of_arrow(&A::IpcError("x".into())),
            ErrorKind::External
        );
        let wrapped = A::ExternalError(Box::new(Error::new(ErrorKind::Timeout, "slow")));
        assert_eq!(ErrorKind::of_arrow(&wrapped), ErrorKind::Timeout);
        assert_eq!(
            Error::from(A::CastError("x".into())).kind(),
            ErrorKind::TypeMismatch
        );
    }

    #[test]
    fn arrow_external_errors_come_back_out() {
        let ours = Error::new(ErrorKind::Full, "queue full").with_key("etl");
        let wrapped = arrow::error::ArrowError::ExternalError(Box::new(ours));
        let back = Error::from(wrapped);
        assert_eq!(back.kind(), ErrorKind::Full);
        assert_eq!(back.context().key.as_deref(), Some("etl"));
    }

    #[test]
    fn source_is_kept() {
        let io = std::io::Error::other("disk on fire");
        let e = Error::new(ErrorKind::Io, "write failed").with_source(io);
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("disk on fire")
        );
    }
}
