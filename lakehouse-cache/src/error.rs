//! The error type of `lakehouse-cache`.

use std::error::Error as StdError;
use std::sync::Arc;

use lakehouse_core::Context;

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A configuration value is out of range (zero capacity, zero shards, ...).
    InvalidConfig,
    /// An entry's weight exceeds what the cache can ever hold.
    WeightTooLarge,
    /// A read-through loader failed; the loader's error is the source.
    Loader,
    /// The loader of another caller for the same key panicked or was dropped.
    LoaderAbandoned,
    /// A remote tier (Redis) failed or is unreachable; the in-process tier still served.
    Backend,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::InvalidConfig => "invalid configuration",
            ErrorKind::WeightTooLarge => "weight too large",
            ErrorKind::Loader => "loader failed",
            ErrorKind::LoaderAbandoned => "loader abandoned",
            ErrorKind::Backend => "backend error",
        })
    }
}

/// The error of this crate: a kind, a message, a typed [`Context`] (the key) and, for
/// loader failures, the loader's error as the source. Cheap to clone: every waiter of a
/// coalesced load receives the same error.
#[derive(Debug, Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    kind: ErrorKind,
    message: String,
    context: Context,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

impl Error {
    /// A new error.
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

    /// Where it went wrong.
    pub fn context(&self) -> &Context {
        &self.inner.context
    }

    /// Names the key, rendered with `Debug`.
    #[must_use]
    pub fn with_key(mut self, key: impl std::fmt::Debug) -> Self {
        Arc::make_mut(&mut self.inner).context.key = Some(format!("{key:?}"));
        self
    }

    /// Attaches the cause.
    #[must_use]
    pub fn with_source(mut self, source: Arc<dyn StdError + Send + Sync>) -> Self {
        Arc::make_mut(&mut self.inner).source = Some(source);
        self
    }
}
