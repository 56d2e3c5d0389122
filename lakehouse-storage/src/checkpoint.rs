//! Checkpoints and log retention.
//!
//! A checkpoint is the whole table state at one version, so that opening the table
//! reads it instead of every commit. Kernel writes it from its own replay: the classic
//! single-file layout (a v2 checkpoint when the table declares `v2Checkpoint`), with
//! the `txn`s, and only the tombstones younger than `delta.deletedFileRetentionDuration`
//! (one week by default), then `_last_checkpoint`.
//!
//! After a checkpoint, log entries (commits, checksums, older checkpoints, compaction
//! files) older than `delta.logRetentionDuration` (30 days by default) are deleted, up
//! to the newest checkpoint that is itself older than that: every version within the
//! retention can still be rebuilt.

use std::time::Duration;

use delta_kernel::snapshot::SnapshotRef;
use futures::StreamExt;
use lakehouse_core::{Error, ErrorKind, Result, Version};
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::kernel::{Kernel, blocking};
use crate::location::Location;

/// Default of `delta.logRetentionDuration`.
pub(crate) const DEFAULT_LOG_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Writes a checkpoint of kernel snapshot `ks`; `false` when one existed already.
pub(crate) async fn write(kernel: &Kernel, ks: SnapshotRef) -> Result<bool> {
    let kernel = kernel.clone();
    blocking(move || {
        let (result, _) = ks
            .checkpoint(kernel.engine.as_ref(), None)
            .map_err(|e| kernel.error(e, Some(ks.version())))?;
        Ok(matches!(
            result,
            delta_kernel::snapshot::CheckpointWriteResult::Written
        ))
    })
    .await
}

/// How long log entries are kept, from the table properties.
pub(crate) fn log_retention(ks: &SnapshotRef) -> Option<Duration> {
    let p = ks.table_properties();
    if p.enable_expired_log_cleanup == Some(false) {
        return None;
    }
    Some(p.log_retention_duration.unwrap_or(DEFAULT_LOG_RETENTION))
}

/// The version a log entry belongs to and whether it is a checkpoint, from its name.
fn log_entry(name: &str) -> Option<(Version, bool)> {
    let digits = name.get(..20)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rest = &name[20..];
    let v: Version = digits.parse().ok()?;
    if let Some(compacted) = rest.strip_prefix('.')
        && compacted.ends_with(".compacted.json")
    {
        // `{from}.{to}.compacted.json`: it serves up to `to`.
        let to: Version = compacted.get(..20)?.parse().ok()?;
        return Some((to, false));
    }
    let checkpoint = rest.starts_with(".checkpoint");
    (checkpoint || rest == ".json" || rest == ".crc").then_some((v, checkpoint))
}

/// Deletes the log entries older than `retention` that no version within it needs.
/// Returns how many were deleted.
pub(crate) async fn clean_log(
    location: &Location,
    log_dir: &Path,
    retention: Duration,
    now_ms: i64,
) -> Result<usize> {
    let cutoff = now_ms - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut entries: Vec<(Path, Version, bool, i64)> = Vec::new();
    let mut listing = location.store.list(Some(log_dir));
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| {
            Error::new(ErrorKind::Io, e.to_string())
                .with_path(log_dir.to_string())
                .with_source(e)
        })?;
        // Only entries directly in `_delta_log/` (not `_sidecars/`).
        let Some(name) = meta.location.filename() else {
            continue;
        };
        if meta.location.prefix_match(log_dir).map(|p| p.count()) != Some(1) {
            continue;
        }
        if let Some((v, cp)) = log_entry(name) {
            entries.push((
                meta.location.clone(),
                v,
                cp,
                meta.last_modified.timestamp_millis(),
            ));
        }
    }
    // The newest checkpoint old enough: everything before it can go.
    let Some(keep_from) = entries
        .iter()
        .filter(|(_, _, cp, t)| *cp && *t <= cutoff)
        .map(|(_, v, _, _)| *v)
        .max()
    else {
        return Ok(0);
    };
    let mut deleted = 0;
    for (path, v, _, t) in entries {
        if v >= keep_from || t > cutoff {
            continue;
        }
        match location.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
            Err(e) => {
                return Err(Error::new(ErrorKind::Io, e.to_string())
                    .with_path(path.to_string())
                    .with_source(e));
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entry_names() {
        assert_eq!(log_entry("00000000000000000007.json"), Some((7, false)));
        assert_eq!(log_entry("00000000000000000007.crc"), Some((7, false)));
        assert_eq!(
            log_entry("00000000000000000010.checkpoint.parquet"),
            Some((10, true))
        );
        assert_eq!(
            log_entry("00000000000000000010.checkpoint.0000000001.0000000002.parquet"),
            Some((10, true))
        );
        assert_eq!(
            log_entry("00000000000000000003.00000000000000000009.compacted.json"),
            Some((9, false))
        );
        assert_eq!(log_entry("_last_checkpoint"), None);
        assert_eq!(log_entry("00000000000000000007.json.tmp"), None);
    }
}
