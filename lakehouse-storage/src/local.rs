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
//! entries after it; every other call goes to [`LocalFileSystem`] unchanged.

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
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// [`LocalFileSystem`] rooted at a directory, with a `list_with_offset` that reads the
/// metadata of only the entries after the offset.
#[derive(Debug)]
pub(crate) struct LocalStore {
    inner: LocalFileSystem,
    /// The directory the store is rooted at (absolute, canonical).
    root: PathBuf,
}

impl LocalStore {
    /// The store rooted at the canonical absolute directory `root`.
    pub(crate) fn new(root: PathBuf) -> Result<LocalStore> {
        Ok(LocalStore {
            inner: LocalFileSystem::new_with_prefix(&root)?,
            root,
        })
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
    let modified = meta.modified().ok();
    let micros = modified
        .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0u64;
    ObjectMeta {
        location,
        last_modified: modified.map(DateTime::<Utc>::from).unwrap_or_default(),
        size: meta.len(),
        e_tag: Some(format!("{inode:x}-{micros:x}-{:x}", meta.len())),
        version: None,
    }
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
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
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
        self.inner.delete_stream(locations)
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
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
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
        let ours = LocalStore::new(root.clone())?;
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
