//! [`Table::vacuum`]: deleting files no version within the retention needs.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use lakehouse_core::{Error, ErrorKind, Result};
use object_store::ObjectStoreExt;

use super::{Table, io, now_ms};
use crate::log::{Action, LOG_DIR, Snapshot};

/// Options of [`Table::vacuum`].
#[derive(Debug, Clone)]
#[must_use]
pub struct VacuumOptions {
    retention: Duration,
    enforce_retention: bool,
    dry_run: bool,
}

/// The shortest retention [`Table::vacuum`] accepts unless told otherwise: readers and
/// time travel within this window keep working.
pub const MIN_VACUUM_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for VacuumOptions {
    fn default() -> Self {
        VacuumOptions {
            retention: MIN_VACUUM_RETENTION,
            enforce_retention: true,
            dry_run: false,
        }
    }
}

impl VacuumOptions {
    /// Retain removed and orphan files for 7 days.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long unreferenced files are kept.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Allow a retention shorter than [`MIN_VACUUM_RETENTION`] (a reader or a writer
    /// still using an old version may then fail).
    pub fn allow_short_retention(mut self) -> Self {
        self.enforce_retention = false;
        self
    }

    /// List what would be deleted without deleting it.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }
}

/// What [`Table::vacuum`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VacuumMetrics {
    /// Files deleted (or that would be, in a dry run), relative to the table root.
    pub deleted: Vec<String>,
}

impl Table {
    /// The files (decoded paths) removed by commits made after `cutoff_ms`: versions
    /// within the retention still read them.
    async fn removed_since(&self, snap: &Snapshot, cutoff_ms: i64) -> Result<HashSet<String>> {
        let mut out = HashSet::new();
        let mut v = snap.version;
        loop {
            let actions = match self.commit_actions(v).await {
                Ok(a) => a,
                // Commits past the log retention are gone; the retention of the log is
                // far longer than any vacuum retention.
                Err(e) if e.kind() == ErrorKind::VersionNotFound => break,
                Err(e) => return Err(e),
            };
            let mut time = None;
            let mut removed = Vec::new();
            for a in actions {
                match a {
                    Action::Remove(r) => {
                        // Its deletion vector file: older versions read it too.
                        if let Some(dv) = r.deletion_vector.as_ref().and_then(|d| d.file()) {
                            removed.push(dv?);
                        }
                        removed.push(r.path);
                    }
                    Action::CommitInfo(info) => {
                        time = info
                            .get("inCommitTimestamp")
                            .or_else(|| info.get("timestamp"))
                            .and_then(serde_json::Value::as_i64);
                    }
                    _ => {}
                }
            }
            if time.is_some_and(|t| t <= cutoff_ms) {
                break;
            }
            for p in &removed {
                out.insert(self.table_relative(p)?);
            }
            if v == 0 {
                break;
            }
            v -= 1;
        }
        Ok(out)
    }

    /// The object path, relative to the table root, of a file the log names: a relative
    /// URI, or an absolute one under the table's URI (Delta allows both). Any other
    /// path is an error: vacuum cannot tell whether a listed file is that one, so it
    /// deletes nothing rather than a file a version needs.
    fn table_relative(&self, uri: &str) -> Result<String> {
        if let Ok(rel) = crate::partition::uri_decode(uri) {
            return Ok(rel);
        }
        let under = |file: &url::Url, table: &url::Url| {
            if file.scheme() != table.scheme() || file.host_str() != table.host_str() {
                return None;
            }
            let base = table.path().trim_end_matches('/');
            let rest = file.path().strip_prefix(base)?.strip_prefix('/')?;
            crate::partition::uri_decode(rest).ok()
        };
        match (url::Url::parse(uri), url::Url::parse(self.uri())) {
            (Ok(file), Ok(table)) => under(&file, &table),
            _ => None,
        }
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the log names file {uri:?}, which is not under the table directory: \
                     vacuum deletes nothing rather than a file a version may need"
                ),
            )
            .with_path(uri)
            .with_table(self.uri())
        })
    }

    /// Deletes files no version within the retention needs: files removed from the
    /// table longer ago than the retention (data files and the deletion vector files
    /// of their `remove`s; a vector file a live file uses is kept), and orphans (left by writers that failed
    /// before committing) older than the retention.
    ///
    /// Errors with [`ErrorKind::InvalidInput`] for a retention under
    /// [`MIN_VACUUM_RETENTION`] unless [`VacuumOptions::allow_short_retention`] is set.
    pub async fn vacuum(&self, options: VacuumOptions) -> Result<VacuumMetrics> {
        if options.enforce_retention && options.retention < MIN_VACUUM_RETENTION {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "retention {:?} is below the {:?} guard; readers of older versions could \
                     fail (allow_short_retention() overrides)",
                    options.retention, MIN_VACUUM_RETENTION
                ),
            )
            .with_table(self.uri()));
        }
        let snap = self.refreshed().await?;
        let cutoff = now_ms() - i64::try_from(options.retention.as_millis()).unwrap_or(i64::MAX);
        // Live data files and the deletion vector files they use.
        let live: HashSet<String> = snap
            .files
            .iter()
            .flat_map(|f| {
                let dv = f.add.deletion_vector.as_ref().and_then(|d| d.file());
                std::iter::once(Ok(f.add.path.clone())).chain(dv)
            })
            .map(|p| self.table_relative(&p?))
            .collect::<Result<_>>()?;
        let tomb = self.removed_since(&snap, cutoff).await?;
        let root = self.inner.location.root.clone();
        let prefix_len = if root.as_ref().is_empty() {
            0
        } else {
            root.as_ref().len() + 1
        };
        let mut listing = self.inner.location.store.list(Some(&root));
        let mut deleted = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = match meta {
                Ok(m) => m,
                // Removed while the listing ran (another vacuum, a log cleanup).
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(io(e, &root)),
            };
            let full = meta.location.as_ref();
            let rel = full.get(prefix_len..).unwrap_or_default();
            if rel.starts_with(LOG_DIR) || rel.starts_with('_') || live.contains(rel) {
                continue;
            }
            // Removed within the retention (older versions still read it), or
            // written within it (a writer may be about to commit it).
            if tomb.contains(rel) || meta.last_modified.timestamp_millis() > cutoff {
                continue;
            }
            if !options.dry_run {
                match self.inner.location.store.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(io(e, &meta.location)),
                }
            }
            deleted.push(rel.to_owned());
        }
        deleted.sort();
        Ok(VacuumMetrics { deleted })
    }
}
