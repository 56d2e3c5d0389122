//! Writers in other processes: killed mid-commit, and appending concurrently.
//!
//! The child writer is this test binary re-executed on the ignored test
//! `crash::child_writer`, with its instructions in environment variables.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use lakehouse_core::{ScanRequest, TableSource};
use lakehouse_storage::{Location, Table, TableOptions, VacuumOptions};

use crate::common::{batch, collect, files_under, ints, schema};

const DIR: &str = "LAKEHOUSE_STORAGE_CHILD_DIR";
const WRITER: &str = "LAKEHOUSE_STORAGE_CHILD_WRITER";
const COMMITS: &str = "LAKEHOUSE_STORAGE_CHILD_COMMITS";
const ROWS: i64 = 100;

/// Entry point of the child process (does nothing unless started by a test below).
#[test]
#[ignore = "run as a child process by the crash tests"]
fn child_writer() {
    let (Ok(dir), Ok(writer)) = (std::env::var(DIR), std::env::var(WRITER)) else {
        return;
    };
    let writer: i64 = writer.parse().unwrap();
    let commits: i64 = std::env::var(COMMITS)
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(i64::MAX);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = Table::open(Location::local(&dir).unwrap()).await.unwrap();
        let mut i = 0;
        while i < commits {
            let c = t
                .append(vec![batch(
                    writer * 1_000_000_000 + i * ROWS,
                    ROWS as usize,
                )])
                .await
                .unwrap();
            println!("committed {} {}", i, c.version);
            i += 1;
        }
    });
}

fn spawn_child(dir: &std::path::Path, writer: i64, commits: Option<i64>) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        "crash::child_writer",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(DIR, dir)
    .env(WRITER, writer.to_string())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(c) = commits {
        cmd.env(COMMITS, c.to_string());
    }
    cmd.spawn().unwrap()
}

#[tokio::test]
async fn a_writer_killed_mid_commit_leaves_the_last_committed_version() {
    let dir = tempfile::tempdir().unwrap();
    Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new(),
    )
    .await
    .unwrap();
    let mut child = spawn_child(dir.path(), 1, None);
    let stdout = child.stdout.take().unwrap();
    let mut acked = 0i64;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.starts_with("committed ") {
            acked += 1;
            if acked == 12 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(acked, 12);

    let t = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    let version = t.version().await.unwrap() as i64;
    assert!(
        version >= acked,
        "acknowledged {acked} commits, table at {version}"
    );
    // Every visible commit is complete: whole blocks of ids, nothing partial.
    let ids = ints(&collect(&t, ScanRequest::new()).await, "order_id");
    let want: Vec<i64> = (0..version * ROWS).map(|i| 1_000_000_000 + i).collect();
    assert_eq!(ids, want);

    // Orphans of the interrupted commit go away with vacuum; referenced files stay.
    let m = t
        .vacuum(
            VacuumOptions::new()
                .retention(std::time::Duration::ZERO)
                .allow_short_retention(),
        )
        .await
        .unwrap();
    let data: Vec<String> = files_under(dir.path())
        .into_iter()
        .filter(|f| f.ends_with(".parquet") && !f.starts_with("_delta_log"))
        .collect();
    assert_eq!(
        data.len(),
        t.statistics(None).await.unwrap().files.len(),
        "vacuumed {:?}",
        m.deleted
    );
    assert_eq!(
        ints(&collect(&t, ScanRequest::new()).await, "order_id"),
        want
    );
}

#[tokio::test]
async fn two_processes_appending_concurrently_lose_no_commit() {
    let dir = tempfile::tempdir().unwrap();
    Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new(),
    )
    .await
    .unwrap();
    let per_writer = 150i64;
    let mut children: Vec<_> = (1..=2)
        .map(|w| spawn_child(dir.path(), w, Some(per_writer)))
        .collect();
    for c in &mut children {
        let status = c.wait().unwrap();
        assert!(status.success());
    }
    let t = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    assert_eq!(t.version().await.unwrap() as i64, 2 * per_writer);
    let ids = ints(&collect(&t, ScanRequest::new()).await, "order_id");
    let mut want: Vec<i64> = Vec::new();
    for w in 1..=2i64 {
        want.extend((0..per_writer * ROWS).map(|i| w * 1_000_000_000 + i));
    }
    want.sort_unstable();
    assert_eq!(ids, want);
}

/// Writers killed at seeded random points (after a random number of acknowledged
/// commits, then a random pause, so the kill lands anywhere in the next commit or the
/// checkpoint after it): after each kill the table reopens, every version reads and
/// grows by whole commits, and each writer's acknowledged commits are all there.
#[tokio::test]
async fn writers_killed_at_random_points_leave_every_version_readable() {
    use rand::{Rng, SeedableRng};

    let mut rng = rand::rngs::StdRng::seed_from_u64(22);
    let dir = tempfile::tempdir().unwrap();
    Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new().checkpoint_interval(4),
    )
    .await
    .unwrap();
    let mut acked: Vec<i64> = Vec::new();
    for writer in 1..=4i64 {
        let want = rng.random_range(1..=6);
        let pause = std::time::Duration::from_micros(rng.random_range(0..4_000));
        let mut child = spawn_child(dir.path(), writer, None);
        let stdout = child.stdout.take().unwrap();
        let mut n = 0i64;
        for line in BufReader::new(stdout).lines() {
            if line.unwrap().starts_with("committed ") {
                n += 1;
                if n == want {
                    break;
                }
            }
        }
        std::thread::sleep(pause);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert_eq!(n, want, "writer {writer} stopped early");
        acked.push(n);

        let t = Table::open(Location::local(dir.path()).unwrap())
            .await
            .unwrap();
        let latest = t.version().await.unwrap();
        let mut previous = 0;
        for v in 0..=latest {
            let ids = ints(
                &collect(&t, ScanRequest::new().at_version(v)).await,
                "order_id",
            );
            assert_eq!(
                ids.len() as i64 % ROWS,
                0,
                "version {v} holds part of a commit"
            );
            assert!(ids.len() >= previous, "version {v} lost rows");
            previous = ids.len();
        }
        let ids = ints(&collect(&t, ScanRequest::new()).await, "order_id");
        for (i, n) in acked.iter().enumerate() {
            let w = i as i64 + 1;
            let mine: Vec<i64> = ids
                .iter()
                .copied()
                .filter(|id| id / 1_000_000_000 == w)
                .collect();
            // Whole commits, in order, at least the acknowledged ones.
            let commits = mine.len() as i64 / ROWS;
            assert!(
                commits >= *n,
                "writer {w}: {commits} of {n} acknowledged commits"
            );
            let want: Vec<i64> = (0..commits * ROWS).map(|i| w * 1_000_000_000 + i).collect();
            assert_eq!(mine, want, "writer {w}");
        }
    }
}
