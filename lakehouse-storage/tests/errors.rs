//! Error kinds of store failures: a missing object is not corrupt data, and the
//! store's error is kept as the source.

use std::error::Error as _;

use futures::TryStreamExt;
use lakehouse_core::{ErrorKind, ScanRequest, TableSource};
use lakehouse_storage::{Location, Table, TableOptions};

use crate::common::{batch, files_under, schema};

/// A data file removed under a version (a vacuum elsewhere) reads as a version that
/// is gone, not as corrupt bytes; the store's NotFound is the source.
#[tokio::test]
async fn a_missing_data_file_is_version_not_found_with_the_store_error_as_source() {
    let dir = tempfile::tempdir().unwrap();
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new(),
    )
    .await
    .unwrap();
    t.append(vec![batch(0, 10)]).await.unwrap();
    let data: Vec<String> = files_under(dir.path())
        .into_iter()
        .filter(|f| f.ends_with(".parquet") && !f.starts_with("_delta_log"))
        .collect();
    assert_eq!(data.len(), 1);
    std::fs::remove_file(dir.path().join(&data[0])).unwrap();

    let e = match t.scan(ScanRequest::new()).await {
        Ok(s) => s
            .try_collect::<Vec<_>>()
            .await
            .expect_err("the file is gone"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::VersionNotFound, "{e}");
    let mut source = e.source();
    let mut found = false;
    while let Some(s) = source {
        if let Some(object_store::Error::NotFound { .. }) = s.downcast_ref::<object_store::Error>()
        {
            found = true;
        }
        source = s.source();
    }
    assert!(found, "no NotFound in the sources of {e:?}");
}
