//! The local file system store, with a listing that reads only what follows an offset.
//!
//! A table's `_delta_log/` directory keeps every commit for the log retention (30 days
//! by default): thousands of JSON files. Kernel finds new commits by listing the
//! directory from the version after a snapshot's checkpoint (`list_with_offset`), and
//! object_store's [`LocalFileSystem`] answers that by walking the whole directory and
//! turning every entry's file system path into an object path through a URL before it
//! compares it with the offset: 10,000 entries cost about as much as the rest of a
//! refresh. [`LocalStore`] answers `list_with_offset` by comparing entry names with the
//! offset as they are read from the directory and reading the metadata of only the
//! entries after it.
//!
//! Writes are durable before they are acknowledged (`crate::durable`): a put syncs the
//! file and its directory, a multipart upload syncs both when it completes, copies and
//! renames sync the destination's directory. Reads go to [`LocalFileSystem`] unchanged.

use std::ffi::OsStr;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
    UploadPart,
};

use crate::durable::{self, DurableDirs, Fs, Placement, PutError};

/// [`LocalFileSystem`] rooted at a directory, with a `list_with_offset` that reads the
/// metadata of only the entries after the offset.
#[derive(Debug)]
pub(crate) struct LocalStore {
    inner: LocalFileSystem,
    /// The directory the store is rooted at (absolute, canonical).
    root: PathBuf,
    /// Where writes go: the file system, or a simulated page cache.
    fs: Fs,
    /// The directories whose entries this store made durable.
    dirs: DurableDirs,
}

impl LocalStore {
    /// The store rooted at the canonical absolute directory `root`, writing through
    /// `fs`. The entry of `root` itself is synced in its parent.
    pub(crate) fn new(root: PathBuf, fs: Fs) -> Result<LocalStore> {
        if let Some(parent) = root.parent() {
            fs.sync_dir(parent).map_err(|e| fs_error(&root, e))?;
        }
        Ok(LocalStore {
            inner: LocalFileSystem::new_with_prefix(&root)?,
            root,
            fs,
            dirs: DurableDirs::default(),
        })
    }

    /// Runs `job` (blocking file system work) off the async workers.
    async fn blocking<T, F>(job: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        if tokio::runtime::Handle::try_current().is_err() {
            return job();
        }
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            })?
    }

    /// Syncs the directory of `path` (and the entries above it), after a copy or a
    /// rename to `path`.
    async fn sync_parent(&self, path: PathBuf) -> Result<()> {
        let (fs, dirs, root) = (self.fs.clone(), self.dirs.clone(), self.root.clone());
        Self::blocking(move || {
            let Some(parent) = path.parent() else {
                return Ok(());
            };
            fs.sync_dir(parent)
                .and_then(|()| dirs.ensure(&fs, &root, parent))
                .map_err(|e| fs_error(&path, e))
        })
        .await
    }
}

/// A file system error on `path` as object_store reports one.
fn fs_error(path: &std::path::Path, e: std::io::Error) -> object_store::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        return object_store::Error::NotFound {
            path: path.display().to_string(),
            source: Box::new(e),
        };
    }
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("{}: {e}", path.display()).into(),
    }
}

/// A multipart upload of object_store's local store, whose file and directory entry
/// are synced when it completes.
#[derive(Debug)]
struct DurableUpload {
    inner: Box<dyn MultipartUpload>,
    dest: PathBuf,
    root: PathBuf,
    fs: Fs,
    dirs: DurableDirs,
}

#[async_trait]
impl MultipartUpload for DurableUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let r = self.inner.complete().await?;
        let (fs, dirs, root, dest) = (
            self.fs.clone(),
            self.dirs.clone(),
            self.root.clone(),
            self.dest.clone(),
        );
        LocalStore::blocking(move || {
            let sync = || -> std::io::Result<()> {
                fs.adopt(&dest)?;
                fs.sync_file(&std::fs::File::open(&dest)?)?;
                let parent = dest.parent().unwrap_or(&root);
                fs.sync_dir(parent)?;
                dirs.ensure(&fs, &root, parent)
            };
            sync().map_err(|e| fs_error(&dest, e))
        })
        .await?;
        Ok(r)
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

/// Whether `s` spells the same on disk as in an object path: no character that
/// object_store's local store percent-encodes or decodes, nor its staging suffix `#`.
fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'='))
}

/// The files under `dir` (object path `dir_path`) whose object paths sort after
/// `offset`, appended to `out`. `ancestors` holds the canonical paths of `dir` and the
/// directories above it, for symbolic link loops. Entry names are compared with the
/// offset before any metadata is read.
fn walk(
    root: &std::path::Path,
    dir: &std::path::Path,
    dir_path: &str,
    offset: &str,
    ancestors: &mut Vec<PathBuf>,
    out: &mut Vec<ObjectMeta>,
) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // A missing prefix lists nothing, as in object_store's local store.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.kind() == std::io::ErrorKind::NotADirectory =>
        {
            return Ok(());
        }
        Err(e) => return Err(walk_error(dir, e)),
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(walk_error(dir, e)),
        };
        let name = entry.file_name();
        let location = match name.to_str().filter(|n| plain(n)) {
            Some(n) if dir_path.is_empty() => n.to_owned(),
            Some(n) => format!("{dir_path}/{n}"),
            // Names object paths spell differently: as object_store does.
            None => match encoded(root, &entry.path(), &name)? {
                Some(p) => p,
                None => continue,
            },
        };
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        let symlink = file_type.is_symlink();
        let mut meta = None;
        let is_dir = if symlink {
            // Followed, as object_store's local store does; a broken link is no entry.
            match std::fs::metadata(entry.path()) {
                Ok(m) => {
                    let d = m.is_dir();
                    meta = Some(m);
                    d
                }
                Err(_) => continue,
            }
        } else {
            file_type.is_dir()
        };
        if is_dir {
            // Paths under `location/` sort against `offset` as `location/` does, unless
            // `offset` lies under it.
            let sub = format!("{location}/");
            if !offset.starts_with(&sub) && sub.as_str() <= offset {
                continue;
            }
            let canonical = if symlink {
                let target = std::fs::canonicalize(entry.path()).map_err(|e| walk_error(dir, e))?;
                if ancestors.iter().any(|a| a.starts_with(&target)) {
                    return Err(object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: format!("a symbolic link loop at {}", entry.path().display())
                            .into(),
                    });
                }
                target
            } else {
                match ancestors.last() {
                    Some(parent) => parent.join(&name),
                    None => entry.path(),
                }
            };
            ancestors.push(canonical);
            let r = walk(root, &entry.path(), &location, offset, ancestors, out);
            ancestors.pop();
            r?;
            continue;
        }
        if location.as_str() <= offset {
            continue;
        }
        let meta = match meta {
            Some(m) => m,
            None => match entry.metadata() {
                Ok(m) => m,
                // Deleted since the directory was read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(walk_error(dir, e)),
            },
        };
        if !meta.is_file() {
            continue;
        }
        out.push(object_meta(Path::from(location.as_str()), &meta));
    }
    Ok(())
}

/// The object path of a file whose name is not [`plain`], as object_store's local store
/// spells it; `None` for the names it does not list (its staging files `name#<n>`).
fn encoded(root: &std::path::Path, path: &std::path::Path, name: &OsStr) -> Result<Option<String>> {
    let full = Path::from_absolute_path(path)?;
    let base = Path::from_absolute_path(root)?;
    let Some(parts) = full.prefix_match(&base) else {
        return Err(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!("{} is not under {}", path.display(), root.display()).into(),
        });
    };
    let p = Path::from_iter(parts);
    let staging = name
        .to_str()
        .and_then(|n| n.split_once('#'))
        .is_some_and(|(_, suffix)| {
            !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())
        });
    Ok((!staging).then(|| p.as_ref().to_owned()))
}

fn walk_error(dir: &std::path::Path, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("cannot list {}: {e}", dir.display()).into(),
    }
}

/// An entry's metadata as object_store's local store reports it (its ETag included).
fn object_meta(location: Path, meta: &std::fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        location,
        last_modified: meta
            .modified()
            .ok()
            .map(DateTime::<Utc>::from)
            .unwrap_or_default(),
        size: meta.len(),
        e_tag: Some(e_tag(meta)),
        version: None,
    }
}

/// The ETag object_store's local store gives a file.
fn e_tag(meta: &std::fs::Metadata) -> String {
    let micros = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0u64;
    format!("{inode:x}-{micros:x}-{:x}", meta.len())
}

/// The files under `prefix` after `offset`, sorted by path.
fn list_after(root: PathBuf, prefix: Path, offset: Path) -> Result<Vec<ObjectMeta>> {
    let mut dir = root.clone();
    dir.extend(prefix.parts().map(|p| p.as_ref().to_owned()));
    let canonical = match std::fs::canonicalize(&dir) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(walk_error(&dir, e)),
    };
    let mut out = Vec::new();
    let mut ancestors = vec![canonical];
    walk(
        &root,
        &dir,
        prefix.as_ref(),
        offset.as_ref(),
        &mut ancestors,
        &mut out,
    )?;
    out.sort_unstable_by(|a, b| a.location.cmp(&b.location));
    Ok(out)
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let placement = match opts.mode {
            PutMode::Create => Placement::Create,
            PutMode::Overwrite => Placement::Overwrite,
            // As object_store's local store answers them.
            PutMode::Update(_) => return self.inner.put_opts(location, payload, opts).await,
        };
        if !opts.attributes.is_empty() {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let dest = self.inner.path_to_filesystem(location)?;
        let (fs, dirs, root) = (self.fs.clone(), self.dirs.clone(), self.root.clone());
        Self::blocking(
            move || match durable::put(&fs, &dirs, &root, &dest, &payload, placement) {
                Ok(meta) => Ok(PutResult {
                    e_tag: Some(e_tag(&meta)),
                    version: None,
                }),
                Err(PutError::AlreadyExists(source)) => Err(object_store::Error::AlreadyExists {
                    path: dest.display().to_string(),
                    source: Box::new(source),
                }),
                Err(PutError::Io(e)) => Err(fs_error(&dest, e)),
            },
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let dest = self.inner.path_to_filesystem(location)?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(DurableUpload {
            inner,
            dest,
            root: self.root.clone(),
            fs: self.fs.clone(),
            dirs: self.dirs.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        if !self.fs.is_simulated() {
            // A delete that a power loss undoes leaves a file no version needs: it is
            // deleted again by the next vacuum or log cleanup. Nothing to sync.
            return self.inner.delete_stream(locations);
        }
        let root = self.root.clone();
        let fs = self.fs.clone();
        locations
            .then(move |location| {
                let (root, fs) = (root.clone(), fs.clone());
                async move {
                    let location = location?;
                    let mut path = root;
                    path.extend(location.parts().map(|p| p.as_ref().to_owned()));
                    Self::blocking(move || fs.remove(&path).map_err(|e| fs_error(&path, e)))
                        .await?;
                    Ok(location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let prefix = prefix.cloned().unwrap_or_default();
        if !prefix.parts().all(|p| plain(p.as_ref())) {
            return self.inner.list_with_offset(Some(&prefix), offset);
        }
        let root = self.root.clone();
        let offset = offset.clone();
        let job = move || list_after(root, prefix, offset);
        if tokio::runtime::Handle::try_current().is_err() {
            return match job() {
                Ok(v) => stream::iter(v.into_iter().map(Ok)).boxed(),
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            };
        }
        stream::once(async move {
            tokio::task::spawn_blocking(job)
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                })?
        })
        .map_ok(|v| stream::iter(v.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let dest = self.inner.path_to_filesystem(to)?;
        self.inner.copy_opts(from, to, options).await?;
        self.sync_parent(dest).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        let dest = self.inner.path_to_filesystem(to)?;
        self.inner.rename_opts(from, to, options).await?;
        self.sync_parent(dest).await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;

    use super::*;

    fn names(v: Vec<ObjectMeta>) -> Vec<String> {
        v.into_iter().map(|m| m.location.to_string()).collect()
    }

    /// The same entries, sizes and ETags as object_store's local store, for offsets
    /// before, inside and after the entries, nested directories included.
    #[tokio::test]
    async fn lists_after_an_offset_as_object_stores_local_store_does() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| object_store::Error::Generic {
            store: "test",
            source: Box::new(e),
        })?;
        let root = std::fs::canonicalize(dir.path()).map_err(|e| walk_error(dir.path(), e))?;
        let ours = LocalStore::new(root.clone(), Fs::default())?;
        let theirs = LocalFileSystem::new_with_prefix(&root)?;
        for name in [
            "_delta_log/00000000000000000000.json",
            "_delta_log/00000000000000000001.json",
            "_delta_log/00000000000000000002.checkpoint.parquet",
            "_delta_log/00000000000000000002.json",
            "_delta_log/_last_checkpoint",
            "_delta_log/_sidecars/a.parquet",
            "_delta_log/with space.json",
            "_delta_logx/00000000000000000005.json",
            "part=1/a.parquet",
        ] {
            ours.put(&Path::from(name), PutPayload::from_static(b"x"))
                .await?;
        }
        for (prefix, offset) in [
            ("_delta_log", "_delta_log/00000000000000000001"),
            ("_delta_log", "_delta_log/00000000000000000001.json"),
            ("_delta_log", "_delta_log"),
            ("_delta_log", "_delta_log/_sidecars/a"),
            ("_delta_log", "_delta_log/zzz"),
            ("", "_delta_log/00000000000000000002.json"),
            ("", "part=0"),
            ("missing", "missing/0"),
        ] {
            let p = (!prefix.is_empty()).then(|| Path::from(prefix));
            let o = Path::from(offset);
            let a: Vec<ObjectMeta> = ours.list_with_offset(p.as_ref(), &o).try_collect().await?;
            let mut b: Vec<ObjectMeta> = theirs
                .list_with_offset(p.as_ref(), &o)
                .try_collect()
                .await?;
            b.sort_by(|x, y| x.location.cmp(&y.location));
            assert_eq!(a, b, "prefix {prefix:?}, offset {offset:?}");
            if prefix == "_delta_log" && offset.ends_with("01") {
                assert_eq!(
                    names(a),
                    [
                        "_delta_log/00000000000000000001.json",
                        "_delta_log/00000000000000000002.checkpoint.parquet",
                        "_delta_log/00000000000000000002.json",
                        "_delta_log/_last_checkpoint",
                        "_delta_log/_sidecars/a.parquet",
                        "_delta_log/with space.json",
                    ]
                );
            }
        }
        Ok(())
    }
}
