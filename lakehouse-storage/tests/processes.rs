//! Two processes writing one table: one appends (and compacts now and then) while the
//! other deletes by predicate; nothing appended is lost, nothing deleted comes back.
//!
//! The appender is this test binary re-executed on the ignored test
//! `processes::child_appender` (as in `crash.rs`), with its instructions in
//! environment variables. It appends until the deleting test tells it to stop, so
//! that every delete round runs while the other process is writing.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use lakehouse_core::{ErrorKind, ScanRequest, TableMutator, col};
use lakehouse_storage::{Location, OptimizeOptions, PartitionField, Table, TableOptions};

use crate::common::{batch, collect, ints, schema};

const DIR: &str = "LAKEHOUSE_STORAGE_APPENDER_DIR";
/// The appender stops before its next commit once this file exists.
const STOP: &str = "LAKEHOUSE_STORAGE_APPENDER_STOP";
/// Commit `k` (from 1) is followed by a compaction when `k % COMPACT_EVERY == 0`.
const COMPACT_EVERY: i64 = 4;
/// Rows per append: commit `i` appends ids `i * ROWS .. (i + 1) * ROWS`.
const ROWS: i64 = 50;
/// The appender's limit, should the test that started it be gone.
const MAX_COMMITS: i64 = 400;
/// Delete rounds the test runs while the appender runs.
const ROUNDS: usize = 12;

/// Entry point of the appending process (does nothing unless started by a test below).
#[test]
#[ignore = "run as a child process by the tests of this module"]
fn child_appender() {
    let (Ok(dir), Ok(stop)) = (std::env::var(DIR), std::env::var(STOP)) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = Table::open(Location::local(&dir).unwrap()).await.unwrap();
        let mut i = 0;
        while i < MAX_COMMITS && !Path::new(&stop).exists() {
            // An append does not conflict with deletes (only the version it takes is
            // raced for, which the commit retries); anything else is a failure.
            let c = t
                .append(vec![batch(i * ROWS, ROWS as usize)])
                .await
                .unwrap();
            println!("appended {i} {}", c.version);
            i += 1;
            if i % COMPACT_EVERY == 0 {
                // A compaction rewrites files the other process deletes from: a
                // conflict either way, retried.
                loop {
                    match t.optimize(OptimizeOptions::new()).await {
                        Ok(_) => break,
                        Err(e) if e.kind() == ErrorKind::Conflict => {
                            println!("compaction conflict");
                        }
                        Err(e) => panic!("compaction: {e}"),
                    }
                }
            }
        }
        println!("stopped {i}");
    });
}

/// What the appender reported: commits acknowledged, compaction conflicts, exit.
#[derive(Default)]
struct Progress {
    appended: AtomicI64,
    conflicts: AtomicI64,
    stopped: AtomicBool,
}

fn spawn_appender(dir: &Path, stop: &Path) -> (std::process::Child, Arc<Progress>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "processes::child_appender",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR, dir)
        .env(STOP, stop)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let progress = Arc::new(Progress::default());
    let stdout = child.stdout.take().unwrap();
    let p = progress.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("appended ") {
                // Commit i is the (i + 1)th: the appender commits in order.
                if let Some(i) = rest.split(' ').next().and_then(|i| i.parse::<i64>().ok()) {
                    p.appended.store(i + 1, Ordering::SeqCst);
                }
            } else if line == "compaction conflict" {
                p.conflicts.fetch_add(1, Ordering::SeqCst);
            }
        }
        p.stopped.store(true, Ordering::SeqCst);
    });
    (child, progress)
}

/// Deletes the ids divisible by 7 of commits `from..to`, retrying conflicts; checks
/// that each of them was there exactly once. Returns the conflicts met.
async fn delete_sevens(t: &Table, from: i64, to: i64) -> u64 {
    let ids: Vec<i64> = (from * ROWS..to * ROWS).filter(|i| i % 7 == 0).collect();
    let predicate = col("order_id").in_list(ids.iter().copied());
    let mut conflicts = 0;
    loop {
        match t.delete_where(&predicate).await {
            Ok(out) => {
                assert_eq!(
                    out.rows_affected,
                    ids.len() as u64,
                    "deleting the sevens of commits {from}..{to}"
                );
                return conflicts;
            }
            Err(e) if e.kind() == ErrorKind::Conflict => conflicts += 1,
            Err(e) => panic!("deleting the sevens of commits {from}..{to}: {e}"),
        }
    }
}

async fn one_appends_while_the_other_deletes(options: TableOptions) {
    let dir = tempfile::tempdir().unwrap();
    let control = tempfile::tempdir().unwrap();
    let stop = control.path().join("stop");
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        options.checkpoint_interval(5),
    )
    .await
    .unwrap();
    let (mut child, progress) = spawn_appender(dir.path(), &stop);
    let wait_for_more = |done: i64| {
        let progress = progress.clone();
        async move {
            loop {
                let n = progress.appended.load(Ordering::SeqCst);
                if n > done || progress.stopped.load(Ordering::SeqCst) {
                    return n;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
    };
    let mut done = 0i64;
    let mut conflicts = 0;
    for _ in 0..ROUNDS {
        let n = wait_for_more(done).await;
        assert!(
            !progress.stopped.load(Ordering::SeqCst),
            "the appender stopped by itself after {n} commits"
        );
        conflicts += delete_sevens(&t, done, n).await;
        done = n;
    }
    std::fs::write(&stop, b"").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "the appender failed: {status}");
    while !progress.stopped.load(Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let appended = progress.appended.load(Ordering::SeqCst);
    if appended > done {
        conflicts += delete_sevens(&t, done, appended).await;
    }
    assert!(
        appended > ROUNDS as i64,
        "{appended} appends for {ROUNDS} rounds"
    );

    eprintln!(
        "{appended} appends, {conflicts} delete conflicts, {} compaction conflicts",
        progress.conflicts.load(Ordering::SeqCst)
    );
    // Every appended row not deleted is there once; no deleted row is.
    let want: Vec<i64> = (0..appended * ROWS).filter(|i| i % 7 != 0).collect();
    let reopened = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    let got = ints(&collect(&reopened, ScanRequest::new()).await, "order_id");
    assert_eq!(
        got.len(),
        want.len(),
        "{appended} appends, {conflicts} delete conflicts, {} compaction conflicts",
        progress.conflicts.load(Ordering::SeqCst)
    );
    assert_eq!(got, want);
    // The handle that deleted sees the same.
    assert_eq!(
        ints(&collect(&t, ScanRequest::new()).await, "order_id"),
        want
    );
}

#[tokio::test]
async fn one_process_appends_while_another_deletes_copy_on_write() {
    one_appends_while_the_other_deletes(TableOptions::new()).await;
}

#[tokio::test]
async fn one_process_appends_while_another_deletes_with_deletion_vectors() {
    one_appends_while_the_other_deletes(
        TableOptions::new()
            .deletion_vectors(true)
            .partition_by([PartitionField::identity("region")]),
    )
    .await;
}
