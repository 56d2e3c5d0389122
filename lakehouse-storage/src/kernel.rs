//! The Delta log read through `delta_kernel`, the Delta project's reference reader.
//!
//! Kernel lists and replays the log (every checkpoint layout: classic single and
//! multi-part, v2 with or without sidecars in JSON or Parquet, tables without
//! `_last_checkpoint`, log compaction files), checks the protocol, resolves `txn`
//! app ids and maps times to versions. It is handed the table's own object store, so
//! nothing but that store does I/O, and it is synchronous: every call here runs on
//! Tokio's blocking pool ([`blocking`]), never on the async workers.
//!
//! Kernel's own types stay inside this crate: this module turns them into the crate's
//! [`Snapshot`](crate::log::Snapshot) and [`Error`]s.

use std::sync::{Arc, OnceLock};

use delta_kernel::KernelError;
use delta_kernel::snapshot::{Snapshot as KSnapshot, SnapshotRef};
use delta_kernel_default_engine::DefaultEngine;
use delta_kernel_default_engine::executor::tokio::TokioMultiThreadExecutor;
use lakehouse_core::{Error, ErrorKind, Result, Version};
use url::Url;

use crate::location::Location;

/// The engine kernel runs with: the table's object store and a small shared runtime
/// for kernel's own async I/O.
pub(crate) type KEngine = DefaultEngine<TokioMultiThreadExecutor>;

/// Kernel's view of one table: its engine and the table root as kernel addresses it.
#[derive(Clone)]
pub(crate) struct Kernel {
    pub(crate) engine: Arc<KEngine>,
    pub(crate) url: Url,
    uri: String,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("url", &self.url.as_str())
            .finish()
    }
}

/// One runtime with two workers serves kernel's I/O for every table of the process.
/// Kernel's checkpoint writer nests blocking calls, which needs a multi-thread runtime.
fn executor() -> Result<Arc<TokioMultiThreadExecutor>> {
    static EXEC: OnceLock<std::result::Result<Arc<TokioMultiThreadExecutor>, String>> =
        OnceLock::new();
    EXEC.get_or_init(|| {
        TokioMultiThreadExecutor::new_owned_runtime(Some(2), None)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("cannot start the Delta log runtime: {e}"),
        )
    })
}

impl Kernel {
    /// Kernel for the table at `location`.
    ///
    /// Kernel turns a URL into an object path by its path alone, so the table root is
    /// `<scheme>:///<prefix>/` in the table's own store; for `file` tables kernel also
    /// sorts listings itself (local directories list in any order).
    pub(crate) fn new(location: &Location) -> Result<Kernel> {
        let root = location.root.as_ref();
        // Kernel checks that a `file` table root exists on the local disk: other stores
        // get their own scheme (which kernel takes as listing in order, as they do).
        let scheme = match location.uri().split_once("://") {
            Some(("file", _)) => "file",
            Some((s, _)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric()) => s,
            _ => "memory",
        };
        let mut url = Url::parse(&format!("{scheme}:///"))
            .map_err(|e| Error::new(ErrorKind::Internal, format!("table root URL: {e}")))?;
        if !root.is_empty() {
            let encoded: Vec<String> = root.split('/').map(crate::partition::uri_encode).collect();
            url.set_path(&format!("/{}/", encoded.join("/")));
        }
        let engine = DefaultEngine::builder(location.store.clone())
            .with_task_executor(executor()?)
            .build();
        Ok(Kernel {
            engine: Arc::new(engine),
            url,
            uri: location.uri().to_owned(),
        })
    }

    /// The table's URI, for errors.
    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    /// Kernel's snapshot at `version` (the latest when `None`). Blocking.
    pub(crate) fn snapshot(&self, version: Option<Version>) -> Result<SnapshotRef> {
        let mut b = KSnapshot::builder_for(self.url.as_str());
        if let Some(v) = version {
            b = b.at_version(v);
        }
        b.build(self.engine.as_ref())
            .map_err(|e| self.error(e, version))
    }

    /// `base` brought up to date (or to `version`), reading only the log after it.
    pub(crate) fn update(
        &self,
        base: &SnapshotRef,
        version: Option<Version>,
    ) -> Result<SnapshotRef> {
        let mut b = KSnapshot::builder_from(base.clone());
        if let Some(v) = version {
            b = b.at_version(v);
        }
        b.build(self.engine.as_ref())
            .map_err(|e| self.error(e, version))
    }

    /// A kernel error as this crate's error, with the table named.
    pub(crate) fn error(&self, e: KernelError, version: Option<Version>) -> Error {
        let mut err = kernel_error(e);
        if let Some(v) = version
            && err.kind() == ErrorKind::VersionNotFound
        {
            err = err.with_version(v);
        }
        err.with_table(self.uri.clone())
    }
}

/// Maps a kernel error to the kind callers act on.
pub(crate) fn kernel_error(e: KernelError) -> Error {
    let kind = match &e {
        KernelError::Unsupported(_)
        | KernelError::ChangeDataFeedUnsupported(_)
        | KernelError::InvalidColumnMappingMode(_) => ErrorKind::Unsupported,
        KernelError::InvalidProtocol(m) if m.contains("nsupported") => ErrorKind::Unsupported,
        KernelError::MissingVersion(_) | KernelError::LogHistory(_) => ErrorKind::VersionNotFound,
        KernelError::ObjectStore(object_store::Error::NotFound { .. })
        | KernelError::FileNotFound(_) => ErrorKind::Corrupt,
        KernelError::ObjectStore(_) | KernelError::IOError(_) | KernelError::Reqwest(_) => {
            ErrorKind::Io
        }
        KernelError::Generic(m) if m.contains("nsupported") => ErrorKind::Unsupported,
        _ => ErrorKind::Corrupt,
    };
    let text = e.to_string();
    let kind = if kind == ErrorKind::Corrupt && text.contains("not supported") {
        ErrorKind::Unsupported
    } else if kind == ErrorKind::Corrupt
        && (text.contains("version") && (text.contains("not found") || text.contains("exist")))
    {
        ErrorKind::VersionNotFound
    } else {
        kind
    };
    Error::new(kind, format!("Delta log: {text}"))
}

/// Runs `f` (kernel work, which blocks) on Tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("a Delta log task failed: {e}")))?
}
