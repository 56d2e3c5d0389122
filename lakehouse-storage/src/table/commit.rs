//! The optimistic commit loop (put-if-absent of the next log entry, retried with
//! backoff) and checkpoints.

use std::sync::Arc;
use std::time::Duration;

use lakehouse_core::{Error, ErrorKind, Result, Version};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde_json::Value;

use super::{Table, TableOptions, io, now_ms};
use crate::checkpoint;
use crate::kernel::blocking;
use crate::location::Location;
use crate::log::{Action, Replay, Snapshot, commit_name, decode_commit, encode_commit};

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
        self.commit_with_txn(operation, params, &[], move |s, _| build(s))
            .await
    }

    /// [`Table::commit`] for writers `app_ids`: `build` also sees each writer's last
    /// committed sequence as of the snapshot it builds on (in the order of `app_ids`).
    pub(super) async fn commit_with_txn<F>(
        &self,
        operation: &str,
        params: Value,
        app_ids: &[String],
        build: F,
    ) -> Result<Option<(Version, u32)>>
    where
        F: Fn(&Snapshot, &[Option<i64>]) -> Result<Option<Vec<Action>>>,
    {
        let _turn = self.inner.commit_lock.lock().await;
        let mut retries = 0u32;
        let mut snap = self.cached();
        if !self.probe_is_safe(&snap, std::time::Instant::now()) {
            // The next version is put if absent: it must not be one log cleanup deleted.
            snap = self.refreshed().await?;
        }
        loop {
            snap.protocol
                .check_writable(&snap.metadata)
                .map_err(|e| e.with_table(self.uri()))?;
            let mut lasts = Vec::with_capacity(app_ids.len());
            for app in app_ids {
                lasts.push(self.txn_version(&snap, app).await?);
            }
            let Some(mut actions) = build(&snap, &lasts)? else {
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
            // A failed checkpoint only makes the next open slower: the commit stands, and
            // the error is kept for `last_checkpoint_error`.
            let outcome = self.checkpoint_of(snap).await;
            *self.inner.checkpoint_error.lock() = outcome.err();
        }
    }

    /// Writes a checkpoint of `snap`, then cleans the log past its retention.
    async fn checkpoint_of(&self, snap: &Snapshot) -> Result<()> {
        let kernel = self.inner.kernel.clone();
        let base = snap.kernel.clone();
        let version = snap.version;
        let ks = if base.version() == version {
            base
        } else {
            let k = kernel.clone();
            blocking(move || k.update(&base, Some(version))).await?
        };
        checkpoint::write(&kernel, ks.clone()).await?;
        if let Some(retention) = checkpoint::log_retention(&ks) {
            checkpoint::clean_log(
                &self.inner.location,
                &self.inner.log_dir,
                retention,
                now_ms(),
            )
            .await?;
        }
        Ok(())
    }

    /// Writes a checkpoint of the latest version now, then deletes log entries older
    /// than `delta.logRetentionDuration` that no version within it needs.
    pub async fn checkpoint(&self) -> Result<Version> {
        let snap = self.refreshed().await?;
        self.checkpoint_of(&snap).await?;
        *self.inner.checkpoint_error.lock() = None;
        Ok(snap.version)
    }

    /// The error of the last automatic checkpoint (every `checkpoint_interval` commits)
    /// if it failed and none succeeded since; commits never fail for it.
    pub fn last_checkpoint_error(&self) -> Option<Error> {
        self.inner.checkpoint_error.lock().clone()
    }

    /// The last sequence committed by `app_id` as of `snap`: from this handle's own
    /// commits, else from kernel.
    pub(super) async fn txn_version(&self, snap: &Snapshot, app_id: &str) -> Result<Option<i64>> {
        if let Some(v) = snap.txns.get(app_id) {
            return Ok(Some(*v));
        }
        let kernel = self.inner.kernel.clone();
        let ks = snap.kernel.clone();
        let app = app_id.to_owned();
        blocking(move || {
            ks.get_app_id_version(&app, kernel.engine.as_ref())
                .map_err(|e| kernel.error(e, None))
        })
        .await
    }
}

/// The `commitInfo` of a commit. Its `txnId` (a fresh UUID, the field Delta writers use
/// for one) names the commit, so that a writer that does not know whether its put was
/// applied can recognise its own entry in the log.
pub(super) fn commit_info(operation: &str, params: Value) -> Action {
    Action::CommitInfo(serde_json::json!({
        "timestamp": now_ms(),
        "operation": operation,
        "operationParameters": params,
        "engineInfo": concat!("lakehouse-storage/", env!("CARGO_PKG_VERSION")),
        "txnId": uuid::Uuid::new_v4().to_string(),
    }))
}

/// The `txnId` of the `commitInfo` among `actions`.
fn commit_token(actions: &[Action]) -> Option<&str> {
    actions.iter().find_map(|a| match a {
        Action::CommitInfo(info) => info.get("txnId").and_then(Value::as_str),
        _ => None,
    })
}

/// Puts of one log entry before its outcome is given up as unknown.
const PUT_ATTEMPTS: u32 = 4;

/// Whether an error of a commit leaves its outcome certain: the log entry was not
/// written. Other errors (I/O, timeouts) may come from a put the store applied, so
/// the files the entry names must stay (vacuum removes them if it was not).
pub(super) fn certainly_not_committed(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Conflict
            | ErrorKind::SchemaMismatch
            | ErrorKind::TypeMismatch
            | ErrorKind::InvalidInput
            | ErrorKind::Unsupported
    )
}

/// Writes `actions` as the log entry of `version` unless one exists already
/// (put-if-absent, the commit point); `false` when another writer made that version.
///
/// A put that fails may still have been applied (the store committed it and the answer
/// was lost), and a client that retries it then finds its own entry: the entry found at
/// `version` is read back and compared by the `txnId` of its `commitInfo`. A failed put
/// is sent again (the same bytes) up to [`PUT_ATTEMPTS`] times; when the outcome stays
/// unknown the error says so, and the caller must not delete the files it names.
pub(super) async fn put_if_absent(
    location: &Location,
    log_dir: &Path,
    version: Version,
    actions: &[Action],
) -> Result<bool> {
    let path = log_dir.clone().join(commit_name(version));
    let bytes = bytes::Bytes::from(encode_commit(actions)?);
    let token = commit_token(actions);
    let mut last: Option<Error> = None;
    for _ in 0..PUT_ATTEMPTS {
        match location
            .store
            .put_opts(
                &path,
                PutPayload::from(bytes.clone()),
                PutOptions::from(PutMode::Create),
            )
            .await
        {
            Ok(_) => return Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let Some(token) = token else {
                    return Ok(false);
                };
                match own_entry(location, &path, token).await {
                    Ok(own) => return Ok(own),
                    Err(e) => last = Some(e),
                }
            }
            Err(e) => last = Some(io(e, &path)),
        }
    }
    let cause = last.map(|e| e.to_string()).unwrap_or_default();
    Err(Error::new(
        ErrorKind::Io,
        format!(
            "the outcome of the commit of version {version} is unknown (the store may have \
             applied it): {cause}"
        ),
    )
    .with_version(version)
    .with_path(path.to_string()))
}

/// Whether the log entry at `path` is the one with `token` as its `txnId`.
async fn own_entry(location: &Location, path: &Path, token: &str) -> Result<bool> {
    let r = location.store.get(path).await.map_err(|e| io(e, path))?;
    let bytes = r.bytes().await.map_err(|e| io(e, path))?;
    // An entry that does not decode is not this writer's (it wrote a valid one).
    Ok(decode_commit(&bytes, path.as_ref())
        .map(|actions| commit_token(&actions) == Some(token))
        .unwrap_or(false))
}
