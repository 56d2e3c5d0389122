//! Tables on an S3-compatible server (feature `s3`), when `LAKEHOUSE_S3_ENDPOINT` names
//! one with a bucket `LAKEHOUSE_S3_BUCKET` (`.ci/run` starts moto's server on loopback).
//! Without them the test is skipped.
//!
//! Writers share one handle here: moto's conditional put checks `If-None-Match` and
//! stores the object in two steps, so two PUTs racing on one key can both succeed there
//! (seen in this test with separate handles). S3 itself makes the check atomic; races
//! between processes are tested on the local store, whose put-if-absent is atomic.

use lakehouse_core::{ScanRequest, TableSource, conformance};
use lakehouse_storage::{
    Location, OptimizeOptions, PartitionField, S3Config, Table, TableOptions, VacuumOptions,
};

use crate::common::{batch, collect, ints, schema};

fn location(prefix: &str) -> Option<Location> {
    let endpoint = std::env::var("LAKEHOUSE_S3_ENDPOINT").ok()?;
    let bucket = std::env::var("LAKEHOUSE_S3_BUCKET").unwrap_or_else(|_| "lakehouse".into());
    let run = std::process::id();
    Some(
        Location::s3(S3Config {
            bucket,
            prefix: format!("run-{run}/{prefix}"),
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
        })
        .expect("S3 location"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_on_an_s3_compatible_server() {
    let Some(loc) = location("events") else {
        eprintln!("LAKEHOUSE_S3_ENDPOINT is not set: skipping the S3 test");
        return;
    };
    let t = Table::create(
        loc.clone(),
        schema(),
        TableOptions::new()
            .partition_by([PartitionField::identity("region")])
            .checkpoint_interval(5),
    )
    .await
    .unwrap();
    // Two tasks append at once through clones of one handle.
    let other = t.clone();
    let a = {
        let t = t.clone();
        tokio::spawn(async move {
            for i in 0..8i64 {
                t.append(vec![batch(i * 10, 10)]).await.unwrap();
            }
        })
    };
    let b = tokio::spawn(async move {
        for i in 0..8i64 {
            other.append(vec![batch(1000 + i * 10, 10)]).await.unwrap();
        }
    });
    a.await.unwrap();
    b.await.unwrap();
    let again = Table::open(loc).await.unwrap();
    assert_eq!(again.version().await.unwrap(), 16);
    let mut want: Vec<i64> = (0..80).collect();
    want.extend(1000..1080);
    assert_eq!(
        ints(&collect(&again, ScanRequest::new()).await, "order_id"),
        want
    );
    again.optimize(OptimizeOptions::new()).await.unwrap();
    again
        .vacuum(
            VacuumOptions::new()
                .retention(std::time::Duration::ZERO)
                .allow_short_retention(),
        )
        .await
        .unwrap();
    assert_eq!(again.files(None, None).await.unwrap().len(), 4);
    assert_eq!(
        ints(&collect(&again, ScanRequest::new()).await, "order_id"),
        want
    );

    let n = std::sync::atomic::AtomicUsize::new(0);
    conformance::table(|s| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let loc = location(&format!("conformance-{i}")).unwrap();
        async move { Table::create(loc, s, TableOptions::new()).await }
    })
    .await;
}
