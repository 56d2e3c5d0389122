//! Torn log entries: what opening a table does with a commit file that is empty or
//! does not decode.
//!
//! # The rule
//!
//! A commit is acknowledged only after its bytes and its directory entry are durable
//! (local tables sync both, `crate::durable`; object stores write whole objects). So
//! a torn commit file (empty, or cut or garbled by a power loss) was never
//! acknowledged by this crate: it can only come from a writer that did not sync, and
//! that writer's process died with the machine before it could rely on the commit.
//!
//! A file is torn when it is empty, or when lines that decode are followed only by
//! lines that do not (a power loss cuts or garbles a tail); a bad line between good
//! ones is damage of another kind, an error like any torn commit below the newest.
//!
//! * A torn **newest** commit of a local table is set aside when the table is opened:
//!   its bytes are moved to `_torn/<file name>.<uuid>` under the table directory (no
//!   reader looks there, vacuum leaves `_` directories alone) and the table opens at
//!   the version before, the version free for the next commit. Openers that race take
//!   a lock file in `_torn/`, and each checks under it that the file is still torn and
//!   still the newest; a commit written meanwhile is never touched (no writer can
//!   write a version while a torn file holds its name). Only one commit is set aside
//!   per version: once version `n` was, a torn commit below `n` is an error (it was
//!   not the newest when the power failed).
//! * A torn commit **below** the newest one, or a torn newest commit on an object
//!   store, is an [`ErrorKind::Corrupt`] error naming the file: later commits were
//!   built on it, and only a person can decide what the table lost.
//!
//! Kernel reads an empty commit file as a version without actions; such files are
//! found by their size in the listing of the log after the last checkpoint.

use std::path::Path as FsPath;

use futures::StreamExt;
use lakehouse_core::{Error, ErrorKind, Result, Version};
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::kernel::blocking;
use crate::location::Location;
use crate::log::{LOG_DIR, commit_name, decode_commit, parse_commit_name};

/// Where torn commits are set aside, under the table directory.
const TORN_DIR: &str = "_torn";

/// A torn commit file found in the log.
#[derive(Debug, Clone)]
pub(super) struct Torn {
    pub(super) version: Version,
    pub(super) path: Path,
    /// Whether no commit of a later version exists.
    pub(super) newest: bool,
    /// Whether the damage is what a power loss leaves ([`is_tear`]).
    pub(super) tear: bool,
}

impl Torn {
    /// The error that names the file.
    pub(super) fn error(&self, location: &Location, why: &str) -> Error {
        Error::new(
            ErrorKind::Corrupt,
            format!(
                "the commit of version {} is torn ({why}); {}",
                self.version,
                if self.newest {
                    "it is the newest, and only a local table sets it aside"
                } else {
                    "later versions were built on it, so it cannot be set aside"
                }
            ),
        )
        .with_version(self.version)
        .with_path(self.path.to_string())
        .with_table(location.uri())
    }
}

/// The version of the last checkpoint, from `_last_checkpoint` (`None` when there is
/// none or it does not read: the whole log is then listed).
async fn last_checkpoint(location: &Location, log_dir: &Path) -> Option<Version> {
    let path = log_dir.clone().join("_last_checkpoint");
    let bytes = location.store.get(&path).await.ok()?.bytes().await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("version")?.as_u64()
}

/// The commit files after the last checkpoint: version, path and size, by version.
async fn tail(location: &Location, log_dir: &Path) -> Result<Vec<(Version, Path, u64)>> {
    let checkpoint = last_checkpoint(location, log_dir).await;
    // A local log is probed version by version from its checkpoint: a few `stat`s
    // instead of listing every entry of the log (the log holds contiguous versions).
    if let (Some(cp), Some(dir)) = (checkpoint, location.local_dir.clone()) {
        let log = log_dir.clone();
        let probed = blocking(move || Ok(probe_local_tail(&dir.join(LOG_DIR), cp))).await?;
        if let Some(found) = probed {
            return Ok(found
                .into_iter()
                .map(|(v, size)| (v, log.clone().join(commit_name(v)), size))
                .collect());
        }
    }
    let mut listing = match checkpoint {
        Some(v) => location
            .store
            .list_with_offset(Some(log_dir), &log_dir.clone().join(commit_name(v))),
        None => location.store.list(Some(log_dir)),
    };
    let mut out = Vec::new();
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| super::io(e, log_dir))?;
        if meta.location.prefix_match(log_dir).map(|p| p.count()) != Some(1) {
            continue;
        }
        if let Some(v) = meta.location.filename().and_then(parse_commit_name)
            && checkpoint.is_none_or(|cp| v > cp)
        {
            out.push((v, meta.location.clone(), meta.size));
        }
    }
    out.sort_by_key(|(v, _, _)| *v);
    Ok(out)
}

/// Most commit files [`probe_local_tail`] looks for before a listing is cheaper.
const MOST_PROBES: u64 = 1_000;

/// The commit files of local log directory `log` after version `checkpoint`: version
/// and size of each, found by looking for one version after the other until one is
/// missing. `None` when there are more than [`MOST_PROBES`] or a file cannot be
/// examined: the caller lists the log instead.
fn probe_local_tail(log: &FsPath, checkpoint: Version) -> Option<Vec<(Version, u64)>> {
    let mut out = Vec::new();
    for v in checkpoint.checked_add(1)?.. {
        if out.len() as u64 >= MOST_PROBES {
            return None;
        }
        match std::fs::metadata(log.join(commit_name(v))) {
            Ok(m) => out.push((v, m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(out),
            Err(_) => return None,
        }
    }
    None
}

/// The empty commit files after the last checkpoint (kernel reads them as versions
/// without actions), lowest first, and the newest commit version listed.
pub(super) async fn empty_commits(location: &Location) -> Result<(Vec<Torn>, Option<Version>)> {
    let log_dir = location.child(LOG_DIR)?;
    let files = tail(location, &log_dir).await?;
    let newest = files.last().map(|(v, _, _)| *v);
    let empty = files
        .into_iter()
        .filter(|(_, _, size)| *size == 0)
        .map(|(version, path, _)| Torn {
            version,
            newest: Some(version) == newest,
            tear: true,
            path,
        })
        .collect();
    Ok((empty, newest))
}

/// The commit files that do not decode, newest first, and the newest version.
pub(super) async fn undecodable_commits(
    names: &[(Version, Path)],
    location: &Location,
) -> Vec<(Torn, Error)> {
    let newest = names.iter().map(|(v, _)| *v).max();
    let mut sorted: Vec<&(Version, Path)> = names.iter().collect();
    sorted.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
    let mut out = Vec::new();
    for (v, path) in sorted {
        let Ok(r) = location.store.get(path).await else {
            continue;
        };
        let Ok(bytes) = r.bytes().await else { continue };
        if let Err(bad) = decode_commit(&bytes, path.as_ref()) {
            out.push((
                Torn {
                    version: *v,
                    path: path.clone(),
                    newest: Some(*v) == newest,
                    tear: is_tear(&bytes),
                },
                bad.with_table(location.uri()),
            ));
            // Two are enough to know the newest is not the only one.
            if out.len() == 2 {
                break;
            }
        }
    }
    out
}

/// Sets the torn newest commit `torn` of a local table aside (see the module docs);
/// `Ok(false)` when the table is not local, or the file is no longer torn or no
/// longer the newest.
pub(super) async fn set_aside(location: &Location, torn: &Torn) -> Result<bool> {
    let Some(dir) = location.local_dir.clone() else {
        return Ok(false);
    };
    let version = torn.version;
    blocking(move || {
        set_aside_local(&dir, version).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("cannot set the torn commit of version {version} aside: {e}"),
            )
            .with_version(version)
            .with_path(dir.display().to_string())
            .with_source(e)
        })
    })
    .await
}

/// Whether `bytes` look like a commit a power loss tore: empty, or lines that decode
/// followed only by lines that do not (the tail was cut or garbled). A bad line
/// between good ones is damage of another kind, never set aside.
pub(super) fn is_tear(bytes: &[u8]) -> bool {
    let lines: Vec<&[u8]> = bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let good = |l: &[u8]| decode_commit(l, "").is_ok();
    match lines.iter().position(|l| !good(l)) {
        Some(first_bad) => lines[first_bad..].iter().all(|l| !good(l)),
        None => lines.is_empty(),
    }
}

fn set_aside_local(dir: &FsPath, version: Version) -> std::io::Result<bool> {
    let log = dir.join(LOG_DIR);
    let aside_dir = dir.join(TORN_DIR);
    std::fs::create_dir_all(&aside_dir)?;
    crate::durable::sync_dir(dir)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(aside_dir.join("lock"))?;
    lock.lock()?;
    let name = commit_name(version);
    let path = log.join(&name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !is_tear(&bytes) || log.join(commit_name(version + 1)).exists() {
        return Ok(false);
    }
    // A later version set aside already: this one was below a newest commit when the
    // power failed, and later versions were built on it.
    for e in std::fs::read_dir(&aside_dir)? {
        let name = e?.file_name();
        let later = name
            .to_str()
            .and_then(|n| n.get(..20))
            .and_then(|d| d.parse::<Version>().ok())
            .is_some_and(|v| v > version);
        if later {
            return Ok(false);
        }
    }
    let aside = aside_dir.join(format!("{name}.{}", uuid::Uuid::new_v4()));
    {
        use std::io::Write;
        let mut f = std::fs::File::create_new(&aside)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    crate::durable::sync_dir(&aside_dir)?;
    std::fs::remove_file(&path)?;
    crate::durable::sync_dir(&log)?;
    Ok(true)
    // The lock is released when `lock` is dropped.
}

#[cfg(test)]
mod tests {
    use super::is_tear;

    const COMMIT: &[u8] =
        b"{\"commitInfo\":{\"operation\":\"WRITE\"}}\n{\"txn\":{\"appId\":\"a\",\"version\":1}}\n";

    #[test]
    fn tears_are_empty_files_and_damaged_tails_only() {
        assert!(is_tear(b""));
        assert!(is_tear(&COMMIT[..COMMIT.len() - 10]));
        let mut zeros = COMMIT.to_vec();
        let n = zeros.len();
        zeros[n - 12..].fill(0);
        assert!(is_tear(&zeros));
        // A whole commit is not torn, nor one damaged before a good line.
        assert!(!is_tear(COMMIT));
        let mut middle = COMMIT.to_vec();
        middle[3] = b'#';
        assert!(!is_tear(&middle));
    }
}
