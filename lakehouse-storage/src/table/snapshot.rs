//! The cached snapshot and time travel: refreshing from the log, snapshots of older
//! versions, the version at a time, and the commit history.

use std::sync::Arc;

use lakehouse_core::{Error, ErrorKind, Result, Version};
use object_store::ObjectStoreExt;
use serde_json::Value;

use super::open::load_snapshot;
use super::{Table, io};
use crate::kernel::blocking;
use crate::log::{Action, Snapshot, commit_name, decode_commit};
use crate::replay;

/// One entry of [`Table::history`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// The version.
    pub version: Version,
    /// Commit time, milliseconds since the epoch: the commit's in-commit timestamp
    /// where it has one.
    pub timestamp_ms: i64,
    /// The operation (`WRITE`, `OPTIMIZE`, `CREATE TABLE`, ...).
    pub operation: String,
}

impl Table {
    /// Reads commits made since the cached snapshot (by other handles or processes)
    /// and returns the latest version.
    pub async fn refresh(&self) -> Result<Version> {
        Ok(self.refreshed().await?.version)
    }

    pub(super) async fn refreshed(&self) -> Result<Arc<Snapshot>> {
        let cur = self.cached();
        // Versions are contiguous: when the commit after the cached version does not
        // exist, nothing newer does, and one existence check replaces kernel's listing
        // of the log directory (thousands of entries on a long-lived table). Every
        // query's version check and every append's refresh take this path.
        if !self.may_have_commit(cur.version + 1).await {
            return Ok(cur);
        }
        let kernel = self.inner.kernel.clone();
        let base = cur.clone();
        let next = blocking(move || {
            let ks = kernel.update(&base.kernel, None)?;
            if ks.version() < base.version || ks.version() == base.kernel.version() {
                return Ok(None);
            }
            if ks.version() == base.version {
                // Only this handle's commits: keep the files, move kernel up to them so
                // later refreshes read from here.
                let mut same = (*base).clone();
                same.kernel = ks;
                return Ok(Some(same));
            }
            replay::incremental(&kernel, &base, ks).map(Some)
        })
        .await?;
        match next {
            None => Ok(cur),
            Some(next) => Ok(self.publish(Arc::new(next))),
        }
    }

    /// The error for a version after the latest one.
    pub(super) fn beyond_latest(&self, version: Version, latest: Version) -> Error {
        Error::new(
            ErrorKind::VersionNotFound,
            format!("version {version} does not exist; the latest is {latest}"),
        )
        .with_version(version)
        .with_table(self.uri())
    }

    /// Whether the log may hold commit `version`: `false` only when the store says it
    /// does not exist (any other answer leaves the decision to kernel's listing).
    async fn may_have_commit(&self, version: Version) -> bool {
        let path = self.inner.log_dir.clone().join(commit_name(version));
        !matches!(
            self.inner.location.store.head(&path).await,
            Err(object_store::Error::NotFound { .. })
        )
    }

    /// The snapshot at `version` (the latest when `None`).
    pub(super) async fn snapshot(&self, version: Option<Version>) -> Result<Arc<Snapshot>> {
        let latest = self.refreshed().await?;
        match version {
            None => Ok(latest),
            Some(v) if v == latest.version => Ok(latest),
            Some(v) if v > latest.version => Err(self.beyond_latest(v, latest.version)),
            Some(v) => Ok(Arc::new(
                load_snapshot(&self.inner.location, &self.inner.kernel, Some(v)).await?,
            )),
        }
    }

    /// The latest version committed at or before `timestamp_ms` (time travel by time).
    ///
    /// A commit's time is its in-commit timestamp where the table enables them, else
    /// the time its log entry was written.
    ///
    /// Errors with [`ErrorKind::VersionNotFound`] when the table did not exist yet.
    pub async fn version_at(&self, timestamp_ms: i64) -> Result<Version> {
        let latest = self.refreshed().await?;
        let kernel = self.inner.kernel.clone();
        let ks = latest.kernel.clone();
        let version = latest.version;
        blocking(move || {
            let ks = if ks.version() == version {
                ks
            } else {
                kernel.update(&ks, Some(version))?
            };
            let found = delta_kernel::history_manager::latest_version_as_of(
                &ks,
                kernel.engine.as_ref(),
                timestamp_ms,
                delta_kernel::history_manager::HistoryCommitType::Published,
            );
            match found {
                Ok(c) => Ok(c.version),
                Err(e) => {
                    let e = kernel.error(e, None);
                    Err(
                        if e.kind() == ErrorKind::Corrupt || e.kind() == ErrorKind::VersionNotFound
                        {
                            Error::new(
                                ErrorKind::VersionNotFound,
                                format!(
                                    "no version of the table was committed by {timestamp_ms}: {e}"
                                ),
                            )
                            .with_table(kernel.uri().to_owned())
                        } else {
                            e
                        },
                    )
                }
            }
        })
        .await
    }

    pub(super) async fn commit_actions(&self, version: Version) -> Result<Vec<Action>> {
        let path = self.inner.log_dir.clone().join(commit_name(version));
        let r = self
            .inner
            .location
            .store
            .get(&path)
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => Error::new(
                    ErrorKind::VersionNotFound,
                    format!("the log no longer holds version {version}"),
                )
                .with_version(version)
                .with_path(path.to_string())
                .with_source(e),
                e => io(e, &path),
            })?;
        let meta_time = r.meta.last_modified.timestamp_millis();
        let bytes = r.bytes().await.map_err(|e| io(e, &path))?;
        let mut actions = decode_commit(&bytes, path.as_ref())?;
        // Make sure a commit time is known even for commits without commitInfo.
        if !actions.iter().any(|a| matches!(a, Action::CommitInfo(_))) {
            actions.push(Action::CommitInfo(
                serde_json::json!({"timestamp": meta_time}),
            ));
        }
        Ok(actions)
    }

    /// The most recent commits, newest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>> {
        let latest = self.refresh().await?;
        let mut out = Vec::new();
        let mut v = latest;
        while out.len() < limit {
            let actions = match self.commit_actions(v).await {
                Ok(a) => a,
                Err(e) if e.kind() == ErrorKind::VersionNotFound => break,
                Err(e) => return Err(e),
            };
            let info = actions.iter().find_map(|a| match a {
                Action::CommitInfo(v) => Some(v.clone()),
                _ => None,
            });
            let info = info.unwrap_or_default();
            out.push(HistoryEntry {
                version: v,
                // The in-commit timestamp where the table enables them.
                timestamp_ms: info
                    .get("inCommitTimestamp")
                    .or_else(|| info.get("timestamp"))
                    .and_then(Value::as_i64)
                    .unwrap_or_default(),
                operation: info
                    .get("operation")
                    .and_then(Value::as_str)
                    .unwrap_or("UNKNOWN")
                    .to_owned(),
            });
            if v == 0 {
                break;
            }
            v -= 1;
        }
        Ok(out)
    }
}
