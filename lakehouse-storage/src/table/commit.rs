//! The optimistic commit loop (put-if-absent of the next log entry, retried with
//! backoff) and checkpoints.

use std::sync::Arc;
use std::time::Duration;

use lakehouse_core::{Error, ErrorKind, Result, Version};
use object_store::path::Path;
use object_store::{PutMode, PutOptions, PutPayload};
use serde_json::Value;

use super::{Table, TableOptions, io, now_ms};
use crate::checkpoint;
use crate::location::Location;
use crate::log::{Action, Replay, Snapshot, commit_name, encode_commit};

impl Table {
    /// The optimistic commit loop: `build` sees the latest snapshot and returns the
    /// actions (or `None` to skip); the commit is a put-if-absent of the next version.
    pub(super) async fn commit<F>(
        &self,
        operation: &str,
        params: Value,
        build: F,
    ) -> Result<Option<(Version, u32)>>
    where
        F: Fn(&Snapshot) -> Result<Option<Vec<Action>>>,
    {
        let _turn = self.inner.commit_lock.lock().await;
        let mut retries = 0u32;
        let mut snap = self.cached();
        loop {
            let Some(mut actions) = build(&snap)? else {
                return Ok(None);
            };
            actions.insert(0, commit_info(operation, params.clone()));
            let version = snap.version + 1;
            if put_if_absent(&self.inner.location, &self.inner.log_dir, version, &actions).await? {
                let mut replay = Replay::from_snapshot(&snap);
                replay.apply(version, actions)?;
                let next = Arc::new(replay.finish()?);
                self.publish(next.clone());
                self.maybe_checkpoint(&next).await;
                return Ok(Some((version, retries)));
            }
            retries += 1;
            if retries > self.inner.max_retries {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("gave up after {retries} lost commit races"),
                )
                .with_table(self.uri()));
            }
            let exp = retries.min(8);
            let base = 1u64 << exp; // 2..256 us units of 50us
            let jitter: u64 = rand::random_range(0..=base);
            tokio::time::sleep(Duration::from_micros(50 * (base + jitter))).await;
            snap = self.refreshed().await?;
        }
    }

    pub(super) async fn maybe_checkpoint(&self, snap: &Snapshot) {
        let interval = TableOptions::from_config(&snap.metadata.configuration).checkpoint_interval;
        if interval > 0 && snap.version > 0 && snap.version.is_multiple_of(interval) {
            // Best effort: a failed checkpoint only makes the next open slower.
            let _ = checkpoint::write(&self.inner.location, &self.inner.log_dir, snap).await;
        }
    }

    /// Writes a checkpoint of the latest version now.
    pub async fn checkpoint(&self) -> Result<Version> {
        let snap = self.refreshed().await?;
        checkpoint::write(&self.inner.location, &self.inner.log_dir, &snap).await?;
        Ok(snap.version)
    }
}

pub(super) fn commit_info(operation: &str, params: Value) -> Action {
    Action::CommitInfo(serde_json::json!({
        "timestamp": now_ms(),
        "operation": operation,
        "operationParameters": params,
        "engineInfo": concat!("lakehouse-storage/", env!("CARGO_PKG_VERSION")),
    }))
}

/// Writes `actions` as the log entry of `version` unless one exists already
/// (put-if-absent, the commit point); `false` when another writer made that version.
pub(super) async fn put_if_absent(
    location: &Location,
    log_dir: &Path,
    version: Version,
    actions: &[Action],
) -> Result<bool> {
    let path = log_dir.clone().join(commit_name(version));
    let bytes = encode_commit(actions)?;
    match location
        .store
        .put_opts(
            &path,
            PutPayload::from(bytes),
            PutOptions::from(PutMode::Create),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(io(e, &path)),
    }
}
