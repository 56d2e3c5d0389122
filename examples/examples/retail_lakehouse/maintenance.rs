//! Table maintenance while events flow: a workflow that compacts the small files the
//! delivery's micro-batches leave (size-tiered, so each row is rewritten a few times
//! rather than at every run) and vacuums what compaction replaced once no reader can
//! need it any more.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lakehouse_core::TableSource;
use lakehouse_flow::{StateMachine, TaskContext, TaskError, TaskRegistry, Value, Workflow, json};
use lakehouse_storage::{OptimizeOptions, Table, VacuumOptions};

/// Compact, then vacuum when the caller asks for it.
const MAINTENANCE: &str = r#"{
  "Comment": "Compact small files per partition, then vacuum the files compaction replaced",
  "StartAt": "Compact",
  "States": {
    "Compact": {
      "Type": "Task", "Resource": "compact", "ResultPath": "$.compacted",
      "Retry": [{"ErrorEquals": ["Table.Conflict"], "IntervalSeconds": 1, "MaxAttempts": 3, "BackoffRate": 2.0}],
      "Next": "Vacuum due?"
    },
    "Vacuum due?": {
      "Type": "Choice",
      "Choices": [{"Variable": "$.vacuum", "BooleanEquals": true, "Next": "Vacuum"}],
      "Default": "Done"
    },
    "Vacuum": {"Type": "Task", "Resource": "vacuum", "ResultPath": "$.vacuumed", "End": true},
    "Done": {"Type": "Succeed"}
  }
}"#;

/// Files of similar size merged together once a tier holds this many.
pub(crate) const FANOUT: usize = 4;

/// A partition holds at most this many files after a compaction (the smallest are
/// merged when the tiers alone leave more); the delivery adds about four a second per
/// partition between two compactions.
pub(crate) const MAX_FILES_PER_PARTITION: usize = 8;

/// Replaced files are kept this long for readers of older versions (the view
/// refreshes read the files of the commits since their last refresh).
const VACUUM_RETENTION: Duration = Duration::from_secs(120);

/// What the maintenance runs did, for the progress line and the report.
#[derive(Debug, Default)]
pub(crate) struct Maintenance {
    pub(crate) runs: AtomicU64,
    pub(crate) files_removed: AtomicU64,
    pub(crate) files_added: AtomicU64,
    pub(crate) rows_rewritten: AtomicU64,
    pub(crate) files_vacuumed: AtomicU64,
    /// The most files any partition held, seen before each compaction.
    pub(crate) most_files_per_partition: AtomicU64,
    /// Files per partition at most, after the latest compaction.
    pub(crate) files_per_partition: AtomicU64,
}

/// The most files of any partition in `table`'s latest version, and the partitions.
pub(crate) async fn files_per_partition(table: &Table) -> lakehouse_core::Result<(usize, usize)> {
    let stats = table.statistics(None).await?;
    let mut per: HashMap<String, usize> = HashMap::new();
    for f in &stats.files {
        *per.entry(format!("{:?}", f.partition_values)).or_default() += 1;
    }
    Ok((per.values().max().copied().unwrap_or(0), per.len()))
}

fn table_error(what: &str, e: lakehouse_core::Error) -> TaskError {
    let name = if e.kind() == lakehouse_core::ErrorKind::Conflict {
        "Table.Conflict"
    } else {
        "Table.Failed"
    };
    TaskError::new(name, format!("{what}: {e}"))
}

/// The maintenance workflow over `table`, recording into `stats`.
pub(crate) fn workflow(
    table: Table,
    stats: Arc<Maintenance>,
) -> Result<Workflow, Box<dyn std::error::Error + Send + Sync>> {
    let machine = StateMachine::from_json(MAINTENANCE)?;
    let (t1, s1) = (table.clone(), stats.clone());
    let (t2, s2) = (table, stats);
    let tasks = TaskRegistry::new()
        .with("compact", move |_: Value, _: TaskContext| {
            let (table, stats) = (t1.clone(), s1.clone());
            async move {
                let t = Instant::now();
                let (before, _) = files_per_partition(&table)
                    .await
                    .map_err(|e| table_error("files", e))?;
                stats
                    .most_files_per_partition
                    .fetch_max(before as u64, Ordering::Relaxed);
                let m = table
                    .optimize(
                        OptimizeOptions::new()
                            .tiered(FANOUT)
                            .max_files_per_partition(MAX_FILES_PER_PARTITION),
                    )
                    .await
                    .map_err(|e| table_error("optimize", e))?;
                let (after, partitions) = files_per_partition(&table)
                    .await
                    .map_err(|e| table_error("files", e))?;
                stats.runs.fetch_add(1, Ordering::Relaxed);
                stats
                    .files_removed
                    .fetch_add(m.files_removed as u64, Ordering::Relaxed);
                stats
                    .files_added
                    .fetch_add(m.files_added as u64, Ordering::Relaxed);
                stats.rows_rewritten.fetch_add(m.rows, Ordering::Relaxed);
                stats
                    .files_per_partition
                    .store(after as u64, Ordering::Relaxed);
                Ok(json!({
                    "files_removed": m.files_removed, "files_added": m.files_added,
                    "rows": m.rows, "files_per_partition_before": before,
                    "files_per_partition_after": after, "partitions": partitions,
                    "ms": t.elapsed().as_millis() as u64
                }))
            }
        })
        .with("vacuum", move |_: Value, _: TaskContext| {
            let (table, stats) = (t2.clone(), s2.clone());
            async move {
                let m = table
                    .vacuum(
                        VacuumOptions::new()
                            .retention(VACUUM_RETENTION)
                            .allow_short_retention(),
                    )
                    .await
                    .map_err(|e| table_error("vacuum", e))?;
                stats
                    .files_vacuumed
                    .fetch_add(m.deleted.len() as u64, Ordering::Relaxed);
                Ok(json!({"deleted": m.deleted.len()}))
            }
        });
    Ok(Workflow::builder(machine).tasks(tasks).build()?)
}
