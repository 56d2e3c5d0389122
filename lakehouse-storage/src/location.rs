//! Where a table lives: an object store and a prefix in it.

use std::fmt;
use std::sync::Arc;

use lakehouse_core::{Error, ErrorKind, Result};
use object_store::ObjectStore;
use object_store::memory::InMemory;
use object_store::path::Path;

use crate::durable::Fs;
use crate::local::LocalStore;

/// A table's home: an [`ObjectStore`] and the prefix of the table in it.
///
/// ```
/// use lakehouse_storage::Location;
///
/// let dir = tempfile::tempdir()?;
/// let local = Location::local(dir.path().join("events"))?;
/// assert!(local.uri().starts_with("file://"));
/// let memory = Location::memory("events")?;
/// assert_eq!(memory.uri(), "memory:///events");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Location {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) root: Path,
    pub(crate) uri: String,
    /// The table directory, for a table on the local file system.
    pub(crate) local_dir: Option<std::path::PathBuf>,
    /// Where another process opens `store` from (`file:///dir`, `s3://bucket`); `None`
    /// for a store of this process only.
    pub(crate) shared: Option<String>,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Location").field("uri", &self.uri).finish()
    }
}

impl Location {
    /// A directory on the local file system (created if missing).
    ///
    /// Errors with [`ErrorKind::Io`] when the directory cannot be created.
    /// Writes are durable when they return: files and their directories are synced.
    pub fn local(dir: impl AsRef<std::path::Path>) -> Result<Location> {
        Self::local_with(dir.as_ref(), Fs::default())
    }

    fn local_with(dir: &std::path::Path, fs: Fs) -> Result<Location> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot create the table directory: {e}"),
            )
            .with_path(dir.display().to_string())
            .with_source(e)
        })?;
        let abs = dir.canonicalize().map_err(|e| {
            Error::new(ErrorKind::Io, e.to_string())
                .with_path(dir.display().to_string())
                .with_source(e)
        })?;
        // object_store's local store, with a listing that skips what precedes an offset
        // (kernel lists the log from a version on).
        let store = LocalStore::new(abs.clone(), fs).map_err(|e| {
            Error::new(ErrorKind::Io, e.to_string())
                .with_path(abs.display().to_string())
                .with_source(e)
        })?;
        Ok(Location {
            store: Arc::new(store),
            root: Path::default(),
            uri: format!("file://{}", abs.display()),
            shared: Some(format!("file://{}", abs.display())),
            local_dir: Some(abs),
        })
    }

    /// A directory on the local file system whose writes go through a simulated page
    /// cache (power-loss simulation).
    #[cfg(all(feature = "fault-injection", unix))]
    pub(crate) fn local_simulated(
        dir: &std::path::Path,
        cache: Arc<crate::faults::power::PageCache>,
    ) -> Result<Location> {
        Self::local_with(dir, Fs::simulated(cache))
    }

    /// A table in a fresh in-memory store (for tests).
    pub fn memory(name: &str) -> Result<Location> {
        Self::from_store(Arc::new(InMemory::new()), name, format!("memory:///{name}"))
    }

    /// A table under `prefix` of any object store; `uri` is how it is shown in errors
    /// and logs.
    pub fn from_store(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        uri: impl Into<String>,
    ) -> Result<Location> {
        let root = Path::parse(prefix.trim_matches('/')).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("invalid table prefix: {e}"),
            )
            .with_path(prefix)
        })?;
        Ok(Location {
            store,
            root,
            uri: uri.into(),
            local_dir: None,
            shared: None,
        })
    }

    /// A table in an S3 bucket, or any S3-compatible endpoint (feature `s3`).
    ///
    /// `endpoint` is `None` for AWS; credentials and region come from the arguments
    /// or, when `None`, from the usual `AWS_*` environment variables.
    #[cfg(feature = "s3")]
    pub fn s3(config: S3Config) -> Result<Location> {
        use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_conditional_put(S3ConditionalPut::ETagMatch);
        if let Some(r) = &config.region {
            b = b.with_region(r);
        }
        if let Some(e) = &config.endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        if let (Some(k), Some(s)) = (&config.access_key_id, &config.secret_access_key) {
            b = b.with_access_key_id(k).with_secret_access_key(s);
        }
        let store = b
            .build()
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("S3 configuration: {e}")))?;
        let uri = format!("s3://{}/{}", config.bucket, config.prefix.trim_matches('/'));
        let mut location = Self::from_store(Arc::new(store), &config.prefix, uri)?;
        location.shared = Some(format!("s3://{}", config.bucket));
        Ok(location)
    }

    /// The table's URI, as shown in errors.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub(crate) fn child(&self, rel: &str) -> Result<Path> {
        let full = if self.root.as_ref().is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.root.as_ref())
        };
        Path::parse(&full).map_err(|e| {
            Error::new(ErrorKind::InvalidInput, format!("invalid object path: {e}")).with_path(full)
        })
    }
}

/// Where an S3 table lives (feature `s3`).
#[cfg(feature = "s3")]
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Prefix of the table in the bucket.
    pub prefix: String,
    /// Region; `None` reads `AWS_REGION`.
    pub region: Option<String>,
    /// Endpoint of an S3-compatible server (`http://127.0.0.1:9000`); `None` for AWS.
    pub endpoint: Option<String>,
    /// Access key; `None` reads the environment.
    pub access_key_id: Option<String>,
    /// Secret key; `None` reads the environment.
    pub secret_access_key: Option<String>,
}
