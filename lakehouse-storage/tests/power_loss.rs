//! Power loss on local tables: torn log entries, and the simulated page cache.

use lakehouse_core::{ErrorKind, ScanRequest, TableSource};
use lakehouse_storage::{Location, Table, TableOptions};

use crate::common::{batch, collect, ints, schema};

/// The commit file of `version` under `dir`.
fn commit_file(dir: &std::path::Path, version: u64) -> std::path::PathBuf {
    dir.join("_delta_log").join(format!("{version:020}.json"))
}

async fn table_with_versions(dir: &std::path::Path, appends: i64) -> Table {
    let t = Table::create(Location::local(dir).unwrap(), schema(), TableOptions::new())
        .await
        .unwrap();
    for i in 0..appends {
        t.append(vec![batch(i * 10, 10)]).await.unwrap();
    }
    t
}

/// What power loss leaves of a commit that was never acknowledged: nothing (0 bytes),
/// or a prefix of its JSON.
fn torn_forms(full: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", Vec::new()),
        ("partial JSON", full[..full.len() / 2].to_vec()),
        ("garbled tail", {
            let mut b = full.to_vec();
            let n = b.len();
            b[n - 8..].copy_from_slice(b"\0\0\0\0\0\0\0\0");
            b
        }),
    ]
}

#[tokio::test]
async fn a_torn_newest_commit_is_set_aside_and_the_table_opens_at_the_version_before() {
    for form in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        table_with_versions(dir.path(), 2).await;
        let newest = commit_file(dir.path(), 2);
        let full = std::fs::read(&newest).unwrap();
        let (what, torn) = torn_forms(&full).swap_remove(form);
        std::fs::write(&newest, &torn).unwrap();

        let t = Table::open(Location::local(dir.path()).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(t.version().await.unwrap(), 1, "{what}");
        let want: Vec<i64> = (0..10).collect();
        assert_eq!(
            ints(&collect(&t, ScanRequest::new()).await, "order_id"),
            want
        );
        // The torn bytes are kept aside, and the version is free for the next commit.
        let aside: Vec<_> = std::fs::read_dir(dir.path().join("_torn"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with("00000000000000000002.json.")
            })
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        assert_eq!(aside, vec![torn], "{what}");
        let c = t.append(vec![batch(100, 5)]).await.unwrap();
        assert_eq!(c.version, 2, "{what}");
        let reopened = Table::open(Location::local(dir.path()).unwrap())
            .await
            .unwrap();
        let mut want: Vec<i64> = (0..10).collect();
        want.extend(100..105);
        assert_eq!(
            ints(&collect(&reopened, ScanRequest::new()).await, "order_id"),
            want,
            "{what}"
        );
    }
}

/// The same after a checkpoint, where the commits after it are looked for one by one:
/// an empty newest commit two versions past the checkpoint is set aside, an empty
/// commit below a good one is an error naming it.
#[tokio::test]
async fn empty_commits_after_a_checkpoint_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new().checkpoint_interval(3),
    )
    .await
    .unwrap();
    for i in 0..5 {
        t.append(vec![batch(i * 10, 10)]).await.unwrap();
    }
    let last: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("_delta_log").join("_last_checkpoint")).unwrap(),
    )
    .unwrap();
    assert_eq!(last["version"], 3);
    std::fs::write(commit_file(dir.path(), 5), b"").unwrap();
    let t = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap();
    assert_eq!(t.version().await.unwrap(), 4);
    let want: Vec<i64> = (0..40).collect();
    assert_eq!(
        ints(&collect(&t, ScanRequest::new()).await, "order_id"),
        want
    );
    assert!(!commit_file(dir.path(), 5).exists());

    // A good commit on top, then the one below it emptied.
    t.append(vec![batch(100, 5)]).await.unwrap();
    std::fs::write(commit_file(dir.path(), 4), b"").unwrap();
    let e = Table::open(Location::local(dir.path()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    assert!(
        e.context()
            .path
            .clone()
            .unwrap_or_default()
            .ends_with("00000000000000000004.json"),
        "{e}"
    );
}

/// Openers that race over one torn newest commit: each opens at the version before,
/// the file is set aside once, and a commit made meanwhile is never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_openers_set_a_torn_commit_aside_once() {
    let dir = tempfile::tempdir().unwrap();
    table_with_versions(dir.path(), 2).await;
    std::fs::write(commit_file(dir.path(), 2), b"").unwrap();
    let open = || async { Table::open(Location::local(dir.path()).unwrap()).await };
    let opened = futures::future::join_all((0..4).map(|_| open())).await;
    let tables: Vec<Table> = opened.into_iter().map(Result::unwrap).collect();
    for t in &tables {
        assert_eq!(t.version().await.unwrap(), 1);
    }
    let c = tables[0].append(vec![batch(100, 5)]).await.unwrap();
    assert_eq!(c.version, 2);
    // A late opener finds a good newest commit and leaves it alone.
    let late = open().await.unwrap();
    assert_eq!(late.version().await.unwrap(), 2);
    let aside = std::fs::read_dir(dir.path().join("_torn"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("00000000000000000002.json.")
        })
        .count();
    assert_eq!(aside, 1);
}

/// Two torn commits at the top of the log: the newest is set aside, the one below
/// it is not (later versions were built on it) and opening names it.
#[tokio::test]
async fn only_the_newest_of_two_torn_commits_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    table_with_versions(dir.path(), 3).await;
    std::fs::write(commit_file(dir.path(), 3), b"").unwrap();
    std::fs::write(commit_file(dir.path(), 2), b"{\"add\":").unwrap();
    for _ in 0..2 {
        let e = Table::open(Location::local(dir.path()).unwrap())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
        let path = e.context().path.clone().unwrap_or_default();
        assert!(path.ends_with("00000000000000000002.json"), "{e}");
    }
    assert_eq!(
        std::fs::read(commit_file(dir.path(), 2)).unwrap(),
        b"{\"add\":"
    );
}

#[tokio::test]
async fn a_torn_commit_below_the_newest_is_a_corrupt_error_naming_the_file() {
    for form in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        table_with_versions(dir.path(), 3).await;
        let torn_file = commit_file(dir.path(), 2);
        let full = std::fs::read(&torn_file).unwrap();
        let (what, torn) = torn_forms(&full).swap_remove(form);
        std::fs::write(&torn_file, &torn).unwrap();

        let e = Table::open(Location::local(dir.path()).unwrap())
            .await
            .expect_err(what);
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{what}: {e}");
        let path = e.context().path.clone().unwrap_or_default();
        assert!(
            path.ends_with("_delta_log/00000000000000000002.json"),
            "{what}: {e}"
        );
        // Nothing was set aside or changed: the loss needs a person.
        assert!(!dir.path().join("_torn").exists(), "{what}");
        assert_eq!(std::fs::read(&torn_file).unwrap(), torn, "{what}");
    }
}

#[cfg(all(feature = "fault-injection", unix))]
mod simulated {
    use lakehouse_storage::faults::{PowerLossOptions, run_power_loss};

    /// Seeded power cuts at random points of concurrent appends, checkpoints and
    /// compaction: every acknowledged commit survives, once, and every version reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn power_loss_loses_no_acknowledged_commit() {
        let options = PowerLossOptions::new();
        let mut acknowledged = 0;
        for seed in 0..20 {
            let r = run_power_loss(seed, &options).await.unwrap();
            assert!(r.is_clean(), "seed {seed}: {r:?}");
            acknowledged += r.acknowledged_commits;
        }
        assert!(acknowledged > 0, "no commit was acknowledged before a cut");
    }

    /// The same schedules on a store that skips its fsyncs (the local store before it
    /// synced files and directories): the simulation finds the losses.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn power_loss_without_fsync_loses_acknowledged_commits() {
        let options = PowerLossOptions::new().without_fsync();
        let mut unclean = 0;
        for seed in 0..20 {
            let r = run_power_loss(seed, &options).await.unwrap();
            unclean += u32::from(!r.is_clean());
        }
        assert!(unclean > 0, "no seed lost anything without fsync");
    }
}
