//! Durable writes of the local store: a put is acknowledged only once its bytes and
//! its directory entry would survive a power loss.
//!
//! object_store's local store writes a staging file, then links or renames it into
//! place, and syncs nothing: the page cache holds the write, and a power loss can leave
//! a commit that was acknowledged as absent, empty or torn. [`put`] does the same steps
//! with the syncs a file system needs:
//!
//! 1. the staging file `name#<n>` is written and synced (`fsync`): its bytes are on
//!    disk before any name points to them, so a visible log entry is never torn;
//! 2. it is linked (put-if-absent) or renamed (overwrite) into place;
//! 3. the directory is synced, making the new entry durable; a directory this store
//!    has not made durable yet has its own entry synced in its parent, up to the root
//!    of the store (directories other writers created may not be synced yet).
//!
//! Each step goes through [`Fs`], which is the file system itself, or (feature
//! `fault-injection`) a simulated page cache that power losses can be replayed on.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::PutPayload;
use parking_lot::Mutex;

#[cfg(all(feature = "fault-injection", unix))]
use crate::faults::power::PageCache;

/// The file system operations of a local store.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fs {
    #[cfg(all(feature = "fault-injection", unix))]
    cache: Option<Arc<PageCache>>,
}

impl Fs {
    /// Operations through the simulated page cache `cache`.
    #[cfg(all(feature = "fault-injection", unix))]
    pub(crate) fn simulated(cache: Arc<PageCache>) -> Fs {
        Fs { cache: Some(cache) }
    }

    /// Whether operations go through a simulated page cache.
    pub(crate) fn is_simulated(&self) -> bool {
        #[cfg(all(feature = "fault-injection", unix))]
        if self.cache.is_some() {
            return true;
        }
        false
    }

    /// Creates `path`, which must not exist.
    pub(crate) fn create_new(&self, path: &Path) -> io::Result<File> {
        #[cfg(all(feature = "fault-injection", unix))]
        if let Some(c) = &self.cache {
            return c.create_new(path);
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
    }

    /// Writes `payload` to `file` (at `path`).
    pub(crate) fn write(&self, file: &mut File, payload: &PutPayload) -> io::Result<()> {
        #[cfg(all(feature = "fault-injection", unix))]
        if let Some(c) = &self.cache {
            return c.write(file, payload);
        }
        write_payload(file, payload)
    }

    /// Syncs the bytes and size of `file`.
    pub(crate) fn sync_file(&self, file: &File) -> io::Result<()> {
        #[cfg(all(feature = "fault-injection", unix))]
        if let Some(c) = &self.cache {
            return c.sync_file(file);
        }
        file.sync_all()
    }

    /// Links `to` to the file at `from`; `AlreadyExists` when `to` exists.
    pub(crate) fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        #[cfg(all(feature = "fault-injection", unix))]
        if let Some(c) = &self.cache {
            return c.link(from, to);
        }
        std::fs::hard_link(from, to)
    }

    /// Renames `from` to `to`, replacing `to`.
    pub(crate) fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        #[cfg(all(feature = "fault-injection", unix))]
        if let Some(c) = &self.cache {
            return c.rename(from, to);
        }
        std::fs::rename(from, to)
    }

    /// Removes the file `path`.
    pub(crate) fn remove(&self, path: &Path) -> io::Result<()> {
        #[cfg(all(feature = "fault-injection", unix))]
        if let Some(c) = &self.cache {
            return c.remove(path);
        }
        std::fs::remove_file(path)
    }

    /// Creates the directory `path` (its parent exists).
    pub(crate) fn create_dir(&self, path: &Path) -> io::Result<()> {
        #[cfg(all(feature = "fault-injection", unix))]
        if let Some(c) = &self.cache {
            return c.create_dir(path);
        }
        std::fs::create_dir(path)
    }

    /// Syncs the entries of the directory `dir`.
    pub(crate) fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        #[cfg(all(feature = "fault-injection", unix))]
        if let Some(c) = &self.cache {
            return c.sync_dir(dir);
        }
        sync_dir(dir)
    }

    /// A file another writer (object_store's multipart upload) wrote at `path`, not
    /// synced yet.
    pub(crate) fn adopt(&self, path: &Path) -> io::Result<()> {
        #[cfg(all(feature = "fault-injection", unix))]
        if let Some(c) = &self.cache {
            return c.adopt(path);
        }
        let _ = path;
        Ok(())
    }
}

pub(crate) fn write_payload(file: &mut File, payload: &PutPayload) -> io::Result<()> {
    use std::io::Write;
    payload.iter().try_for_each(|chunk| file.write_all(chunk))
}

/// Syncs the entries of the directory `dir` (a no-op where directories cannot be
/// opened, as on Windows).
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The directories of one store whose own entries are known to be durable.
#[derive(Debug, Clone, Default)]
pub(crate) struct DurableDirs {
    known: Arc<Mutex<HashSet<PathBuf>>>,
}

impl DurableDirs {
    /// Makes the entry of `dir` durable in its parent, and so on up to `root`
    /// (excluded: the store's root is made durable when the store is created).
    pub(crate) fn ensure(&self, fs: &Fs, root: &Path, dir: &Path) -> io::Result<()> {
        let mut d = dir;
        while d != root && d.starts_with(root) {
            if self.known.lock().contains(d) {
                break;
            }
            let Some(parent) = d.parent() else { break };
            fs.sync_dir(parent)?;
            self.known.lock().insert(d.to_path_buf());
            d = parent;
        }
        Ok(())
    }
}

/// How [`put`] places the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Link, failing when the destination exists (put-if-absent).
    Create,
    /// Rename over the destination.
    Overwrite,
}

/// An error of [`put`]: the file system error, and whether the destination existed.
#[derive(Debug)]
pub(crate) enum PutError {
    /// The destination exists (`Placement::Create`).
    AlreadyExists(io::Error),
    /// Any other failure; nothing was acknowledged.
    Io(io::Error),
}

/// Writes `payload` durably at `dest` under the store root `root` (see the module
/// docs); returns the metadata of the written file. Blocks: call it off the async
/// workers.
pub(crate) fn put(
    fs: &Fs,
    dirs: &DurableDirs,
    root: &Path,
    dest: &Path,
    payload: &PutPayload,
    placement: Placement,
) -> Result<std::fs::Metadata, PutError> {
    let parent = dest
        .parent()
        .ok_or_else(|| PutError::Io(io::Error::other("the destination has no parent")))?;
    let (mut file, staging) = staged(fs, dest).map_err(PutError::Io)?;
    let written = fs
        .write(&mut file, payload)
        .and_then(|()| fs.sync_file(&file))
        .and_then(|()| file.metadata());
    drop(file);
    let meta = match written {
        Ok(m) => m,
        Err(e) => {
            let _ = fs.remove(&staging);
            return Err(PutError::Io(e));
        }
    };
    match placement {
        Placement::Create => {
            let linked = fs.link(&staging, dest);
            let _ = fs.remove(&staging);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(PutError::AlreadyExists(e));
                }
                Err(e) => return Err(PutError::Io(e)),
            }
        }
        Placement::Overwrite => {
            if let Err(e) = fs.rename(&staging, dest) {
                let _ = fs.remove(&staging);
                return Err(PutError::Io(e));
            }
        }
    }
    fs.sync_dir(parent).map_err(PutError::Io)?;
    dirs.ensure(fs, root, parent).map_err(PutError::Io)?;
    Ok(meta)
}

/// A fresh staging file `dest#<n>`, creating the directories above it.
fn staged(fs: &Fs, dest: &Path) -> io::Result<(File, PathBuf)> {
    let mut n = 1u64;
    let mut created_dirs = false;
    loop {
        let mut name = dest.as_os_str().to_owned();
        name.push(format!("#{n}"));
        let staging = PathBuf::from(name);
        match fs.create_new(&staging) {
            Ok(f) => return Ok((f, staging)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !created_dirs => {
                created_dirs = true;
                if let Some(parent) = dest.parent() {
                    create_dirs(fs, parent)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Creates `dir` and the missing directories above it; their entries are made durable
/// with the entry of the file put in `dir` ([`DurableDirs::ensure`]).
fn create_dirs(fs: &Fs, dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut d = dir;
    while !d.exists() {
        missing.push(d.to_path_buf());
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    for m in missing.iter().rev() {
        match fs.create_dir(m) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
