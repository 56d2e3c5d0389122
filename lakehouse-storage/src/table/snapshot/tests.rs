//! Refreshing by reading new commits without kernel gives the snapshot a fresh open
//! gives: commits of other handles (appends, deletes with and without deletion
//! vectors, compaction, `txn`s), checkpoints between refreshes, metadata changes (which
//! take kernel's path) and a log cleaned past the refreshing handle's version.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use lakehouse_core::{TableSink, TxnId, col};
use proptest::prelude::*;

use super::super::{OptimizeOptions, Table, TableOptions};
use crate::location::Location;
use crate::log::{Action, Snapshot};
use crate::partition::PartitionField;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("part", DataType::Utf8, true),
        Field::new("x", DataType::Float64, true),
    ]))
}

/// Partition values that need escaping in paths, and a null one.
const PARTS: [Option<&str>; 4] = [Some("a"), Some("b c/%"), Some("é=1"), None];

fn batch(first: i64, rows: usize, part: Option<&str>) -> RecordBatch {
    let ids: Vec<i64> = (first..first + rows as i64).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from(vec![part; rows])),
            Arc::new(Float64Array::from(
                ids.iter().map(|i| *i as f64 / 3.0).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

/// Everything a snapshot says about the table, files in path order.
#[derive(Debug, PartialEq)]
struct Summary {
    version: u64,
    protocol: String,
    metadata: String,
    schema: SchemaRef,
    files: Vec<String>,
    txns: BTreeMap<String, Option<i64>>,
}

const APPS: [&str; 2] = ["app-0", "app-1"];

async fn summary(t: &Table, s: &Snapshot) -> Summary {
    let mut files: Vec<String> = s
        .files
        .iter()
        .map(|f| {
            format!(
                "{} size={} mtime={} pv={:?} stats={:?} dv={:?} parsed={:?}",
                f.add.path,
                f.add.size,
                f.add.modification_time,
                f.add.partition_values,
                f.add.stats,
                f.add.deletion_vector,
                f.stats
            )
        })
        .collect();
    files.sort();
    let mut txns = BTreeMap::new();
    for app in APPS {
        txns.insert(app.to_owned(), t.txn_version(s, app).await.unwrap());
    }
    Summary {
        version: s.version,
        protocol: format!("{:?}", s.protocol),
        metadata: format!("{:?}", s.metadata),
        schema: s.schema.clone(),
        files,
        txns,
    }
}

/// The reader's refreshed snapshot against a fresh open's.
async fn assert_same_as_open(reader: &Table, dir: &std::path::Path) {
    let got = reader.refreshed().await.unwrap();
    let fresh = Table::open(Location::local(dir).unwrap()).await.unwrap();
    let want = fresh.cached();
    assert_eq!(summary(reader, &got).await, summary(&fresh, &want).await);
}

async fn create(dir: &std::path::Path, dv: bool, checkpoint_interval: u64) -> Table {
    Table::create(
        Location::local(dir).unwrap(),
        schema(),
        TableOptions::new()
            .partition_by([PartitionField::identity("part")])
            .deletion_vectors(dv)
            .checkpoint_interval(checkpoint_interval),
    )
    .await
    .unwrap()
}

async fn open(dir: &std::path::Path) -> Table {
    Table::open(Location::local(dir).unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_commit_is_read_without_kernel_and_a_metadata_change_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let writer = create(dir.path(), true, 0).await;
    writer.append(vec![batch(0, 10, Some("a"))]).await.unwrap();
    let reader = open(dir.path()).await;
    let kernel_at = reader.cached().kernel.version();

    writer
        .append(vec![batch(10, 5, Some("b c/%"))])
        .await
        .unwrap();
    TableSink::append(
        &writer,
        vec![batch(15, 5, None)],
        Some(TxnId::new(APPS[0], 3)),
    )
    .await
    .unwrap();
    writer
        .stage_delete(&col("id").lt(3i64))
        .await
        .unwrap()
        .commit()
        .await
        .unwrap();
    assert_same_as_open(&reader, dir.path()).await;
    // Read by this crate: kernel's snapshot did not move.
    assert_eq!(reader.cached().kernel.version(), kernel_at);
    assert_eq!(reader.cached().version, 4);

    // A metadata change is kernel's to replay.
    writer
        .add_columns(vec![Field::new("y", DataType::Utf8, true)])
        .await
        .unwrap();
    assert_same_as_open(&reader, dir.path()).await;
    assert_eq!(reader.cached().kernel.version(), 5);
    assert_eq!(reader.cached().schema.fields().len(), 4);
}

#[test]
fn protocol_metadata_and_unknown_actions_need_kernel() {
    use crate::log::decode_commit_with_skipped;
    use crate::replay::appliable;
    let check = |text: &str| {
        let (actions, skipped) = decode_commit_with_skipped(text.as_bytes(), "x.json").unwrap();
        appliable(&actions, &skipped)
    };
    let add = r#"{"add":{"path":"f.parquet","partitionValues":{},"size":1,"modificationTime":0,"dataChange":true}}"#;
    assert!(check(add));
    assert!(check(&format!(
        "{add}\n{}",
        r#"{"cdc":{"path":"c.parquet","partitionValues":{},"size":1,"dataChange":false}}"#
    )));
    assert!(check(&format!(
        "{add}\n{}",
        r#"{"domainMetadata":{"domain":"d","configuration":"{}","removed":false}}"#
    )));
    assert!(!check(&format!(
        "{add}\n{}",
        r#"{"protocol":{"minReaderVersion":1,"minWriterVersion":2}}"#
    )));
    assert!(!check(&format!("{add}\n{}", r#"{"someFutureAction":{}}"#)));
    assert!(!check(
        r#"{"metaData":{"id":"x","format":{"provider":"parquet"},"schemaString":"{\"type\":\"struct\",\"fields\":[]}","partitionColumns":[]}}"#
    ));
}

/// A handle that did not look for longer than the log retention finds the commit
/// after its version cleaned up, and newer ones present: it must not take the missing
/// commit for the end of the log (nor put a commit there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_cleaned_past_the_handle_is_not_taken_for_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let writer = create(dir.path(), false, 2).await;
    writer
        .commit("SET TBLPROPERTIES", serde_json::Value::Null, |s| {
            let mut m = s.metadata.clone();
            m.configuration.insert(
                "delta.logRetentionDuration".into(),
                "interval 1 second".into(),
            );
            Ok(Some(vec![Action::MetaData(m)]))
        })
        .await
        .unwrap();
    let reader = open(dir.path()).await;
    assert_eq!(reader.cached().version, 1);
    for i in 0..3 {
        writer
            .append(vec![batch(i * 10, 10, Some("a"))])
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1300)).await;
    for i in 3..5 {
        writer
            .append(vec![batch(i * 10, 10, Some("a"))])
            .await
            .unwrap();
    }
    let log = dir.path().join("_delta_log");
    assert!(
        !log.join(format!("{:020}.json", 2)).exists(),
        "the cleanup removed the commit after the reader's version"
    );
    assert!(writer.last_checkpoint_error().is_none());
    assert_same_as_open(&reader, dir.path()).await;
    assert_eq!(reader.cached().version, 6);
    // Appends from the reader go after the latest version.
    reader.append(vec![batch(100, 1, None)]).await.unwrap();
    assert_eq!(open(dir.path()).await.cached().version, 7);
}

#[derive(Debug, Clone)]
enum Op {
    /// Rows appended by writer `w` into partition `part`, with a `txn` of `app` maybe.
    Append {
        w: usize,
        rows: usize,
        part: usize,
        app: Option<usize>,
    },
    /// Rows with `id < below` deleted by writer `w`.
    Delete { w: usize, below: i64 },
    /// Compaction by writer `w`.
    Optimize { w: usize },
    /// A checkpoint written by writer `w`.
    Checkpoint { w: usize },
    /// A column added by writer `w` (a metadata change).
    AddColumn { w: usize },
    /// The reader appends itself.
    ReaderAppend { part: usize },
    /// The reader refreshes; compared with a fresh open.
    Refresh,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 1..4usize, 0..PARTS.len(), proptest::option::of(0..APPS.len()))
            .prop_map(|(w, rows, part, app)| Op::Append { w, rows, part, app }),
        1 => (0..2usize, 0..40i64).prop_map(|(w, below)| Op::Delete { w, below }),
        1 => (0..2usize).prop_map(|w| Op::Optimize { w }),
        1 => (0..2usize).prop_map(|w| Op::Checkpoint { w }),
        1 => (0..2usize).prop_map(|w| Op::AddColumn { w }),
        1 => (0..PARTS.len()).prop_map(|part| Op::ReaderAppend { part }),
        3 => Just(Op::Refresh),
    ]
}

async fn run(ops: Vec<Op>, dv: bool, checkpoint_interval: u64) {
    let dir = tempfile::tempdir().unwrap();
    let first = create(dir.path(), dv, checkpoint_interval).await;
    let writers = [first, open(dir.path()).await];
    let reader = open(dir.path()).await;
    let mut next_id = 0i64;
    let mut seq = [0u64; APPS.len()];
    let mut columns = 0;
    for op in ops {
        match op {
            Op::Append { w, rows, part, app } => {
                let b = batch(next_id, rows, PARTS[part]);
                next_id += rows as i64;
                let txn = app.map(|a| {
                    seq[a] += 1;
                    TxnId::new(APPS[a], seq[a])
                });
                TableSink::append(&writers[w], vec![b], txn).await.unwrap();
            }
            Op::Delete { w, below } => {
                writers[w]
                    .stage_delete(&col("id").lt(below))
                    .await
                    .unwrap()
                    .commit()
                    .await
                    .unwrap();
            }
            Op::Optimize { w } => {
                writers[w].optimize(OptimizeOptions::new()).await.unwrap();
            }
            Op::Checkpoint { w } => {
                writers[w].checkpoint().await.unwrap();
            }
            Op::AddColumn { w } => {
                columns += 1;
                writers[w]
                    .add_columns(vec![Field::new(
                        format!("c{columns}"),
                        DataType::Int64,
                        true,
                    )])
                    .await
                    .unwrap();
            }
            Op::ReaderAppend { part } => {
                reader
                    .append(vec![batch(next_id, 2, PARTS[part])])
                    .await
                    .unwrap();
                next_id += 2;
            }
            Op::Refresh => assert_same_as_open(&reader, dir.path()).await,
        }
    }
    assert_same_as_open(&reader, dir.path()).await;
    for w in &writers {
        assert_same_as_open(w, dir.path()).await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random commits of two writers and the reader's own, with refreshes between:
    /// every refresh gives what a fresh open of the table gives.
    #[test]
    fn refreshes_equal_fresh_opens(
        ops in proptest::collection::vec(op(), 1..24),
        dv in any::<bool>(),
        checkpoint_interval in prop_oneof![Just(0u64), Just(3u64)],
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(ops, dv, checkpoint_interval));
    }
}
