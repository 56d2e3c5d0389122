//! The cached snapshot and time travel: refreshing from the log, snapshots of older
//! versions, the version at a time, and the commit history.

use std::sync::Arc;
use std::time::{Duration, Instant};

use delta_kernel::table_properties::TableProperties;
use lakehouse_core::{Error, ErrorKind, Result, Version};
use object_store::ObjectStoreExt;
use serde_json::Value;

use super::open::load_snapshot;
use super::{Table, io};
use crate::checkpoint::DEFAULT_LOG_RETENTION;
use crate::kernel::blocking;
use crate::log::{Action, Snapshot, commit_name, decode_commit, decode_commit_with_skipped};
use crate::replay;

/// The longest a refresh trusts that a missing next commit means no newer version
/// (see `Table::probe_is_safe`); past it kernel lists the log.
const PROBE_TRUST: Duration = Duration::from_secs(600);

/// The most new commits a refresh reads itself; more go to kernel.
const MAX_READ_COMMITS: usize = 64;

/// What a refresh found reading the commits after its snapshot.
enum NewCommits {
    /// The commit after the snapshot does not exist.
    None,
    /// The snapshot advanced by the commits read.
    Applied(Box<Snapshot>),
    /// Kernel must list and replay the log.
    AskKernel,
}

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
    ///
    /// The commits after the cached version are read by name, one by one, and their
    /// file actions applied to the cached files: no listing of the log. A commit that
    /// changes the protocol or the metadata, a log cleaned up past the cached version
    /// and anything unexpected are replayed by kernel from the listed log instead.
    pub async fn refresh(&self) -> Result<Version> {
        Ok(self.refreshed().await?.version)
    }

    pub(super) async fn refreshed(&self) -> Result<Arc<Snapshot>> {
        let cur = self.cached();
        let started = Instant::now();
        if self.probe_is_safe(&cur, started) {
            match self.read_new_commits(&cur).await {
                NewCommits::None => {
                    self.mark_latest(started);
                    return Ok(cur);
                }
                NewCommits::Applied(next) => {
                    self.mark_latest(started);
                    return Ok(self.publish(Arc::new(*next)));
                }
                NewCommits::AskKernel => {}
            }
        }
        let kernel = self.inner.kernel.clone();
        let base = cur.clone();
        let next = blocking(move || {
            let ks = kernel.update(&base.kernel, None)?;
            if ks.version() < base.version || ks.version() == base.kernel.version() {
                return Ok(None);
            }
            if ks.version() == base.version {
                // Only commits this handle made or read already: keep the files, move
                // kernel up to them so later refreshes read from here.
                let mut same = (*base).clone();
                same.kernel = ks;
                return Ok(Some(same));
            }
            replay::incremental(&kernel, &base, ks).map(Some)
        })
        .await?;
        self.mark_latest(started);
        match next {
            None => Ok(cur),
            Some(next) => Ok(self.publish(Arc::new(next))),
        }
    }

    /// Whether the commit after `cur` not existing shows that `cur` is the latest
    /// version, at `now`.
    ///
    /// Versions are contiguous, but log cleanup deletes old commits once a checkpoint
    /// covers them: a handle that has not looked for a long time may find commit
    /// `cur + 1` gone and newer ones present. Cleanup deletes only entries older than
    /// `delta.logRetentionDuration`, and every commit after the version that was the
    /// latest when this handle last looked was written after that look: while the look
    /// is younger than the retention, none of them can be gone. Half the retention,
    /// and at most [`PROBE_TRUST`], leaves room for clocks and for a retention that
    /// another writer shortened since; past that kernel lists the log.
    pub(super) fn probe_is_safe(&self, cur: &Snapshot, now: Instant) -> bool {
        let Some(at) = *self.inner.latest_at.lock() else {
            return false;
        };
        let key = cur
            .metadata
            .configuration
            .get_key_value("delta.logRetentionDuration");
        let retention = TableProperties::from(key)
            .log_retention_duration
            .unwrap_or(DEFAULT_LOG_RETENTION);
        now.saturating_duration_since(at) < (retention / 2).min(PROBE_TRUST)
    }

    /// Notes that the cached snapshot was the latest version (or older) at `at`.
    pub(super) fn mark_latest(&self, at: Instant) {
        let mut w = self.inner.latest_at.lock();
        if w.is_none_or(|t| t < at) {
            *w = Some(at);
        }
    }

    /// The commits after `cur`, read one by one until the next does not exist, applied
    /// to `cur`'s files: kernel neither lists the log nor reads them again.
    ///
    /// A refresh that finds no newer commit costs one read of a missing object (every
    /// query's version check and every append's refresh take this path), one that finds
    /// a commit two reads. Anything else goes to kernel: a commit that changes the
    /// protocol or metadata or holds an action this crate does not apply, one that does
    /// not decode (kernel reports it), an error of the store, or more than
    /// [`MAX_READ_COMMITS`] new commits (kernel reads them at once, or a checkpoint).
    async fn read_new_commits(&self, cur: &Snapshot) -> NewCommits {
        let mut commits = Vec::new();
        loop {
            let version = cur.version + 1 + commits.len() as Version;
            let path = self.inner.log_dir.clone().join(commit_name(version));
            let got = match self.inner.location.store.get(&path).await {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            };
            let bytes = match got {
                Ok(b) => b,
                Err(object_store::Error::NotFound { .. }) => break,
                Err(_) => return NewCommits::AskKernel,
            };
            let Ok((actions, skipped)) = decode_commit_with_skipped(&bytes, path.as_ref()) else {
                return NewCommits::AskKernel;
            };
            if !replay::appliable(&actions, &skipped) || commits.len() >= MAX_READ_COMMITS {
                return NewCommits::AskKernel;
            }
            commits.push(actions);
        }
        if commits.is_empty() {
            return NewCommits::None;
        }
        match replay::apply_commits(cur, commits) {
            Ok(next) => NewCommits::Applied(Box::new(next)),
            Err(_) => NewCommits::AskKernel,
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

#[cfg(test)]
mod tests;
