//! Tables written here are read by delta-rs, Polars and DuckDB (Python), when
//! `LAKEHOUSE_PEERS_PYTHON` names a Python with `deltalake`, `polars` and `duckdb`
//! (`bash benches/peers/setup.sh`; `.ci/run` sets it). Without it the test is skipped.

use lakehouse_core::{ScanRequest, TableSource};
use lakehouse_storage::{Location, OptimizeOptions, PartitionField, Table, TableOptions};

use crate::common::{batch, collect, peers_python, rows, run_script, schema, sum_f64};

#[tokio::test]
async fn delta_rs_polars_and_duckdb_read_our_tables() {
    let Some(python) = peers_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let t = Table::create(
        Location::local(dir.path()).unwrap(),
        schema(),
        TableOptions::new()
            .partition_by([
                PartitionField::day("ts"),
                PartitionField::identity("region"),
            ])
            .checkpoint_interval(3),
    )
    .await
    .unwrap();
    for i in 0..5 {
        t.append(vec![batch(i * 1000, 1000)]).await.unwrap();
    }
    t.optimize(OptimizeOptions::new()).await.unwrap();
    let ours = collect(&t, ScanRequest::new()).await;
    let v = run_script(
        &python,
        "read_delta.py",
        &[dir.path().to_str().unwrap(), "price"],
    );
    let want_rows = rows(&ours) as u64;
    let want_sum = sum_f64(&ours, "price");
    assert_eq!(v["version"].as_u64(), Some(t.version().await.unwrap()));
    for engine in ["deltars", "polars", "duckdb"] {
        assert_eq!(
            v[format!("{engine}_rows")].as_u64(),
            Some(want_rows),
            "{engine}: {v}"
        );
        let sum = v[format!("{engine}_sum")].as_f64().unwrap();
        assert!(
            (sum - want_sum).abs() < 1e-6,
            "{engine}: {sum} vs {want_sum}"
        );
    }
    assert_eq!(
        v["partitions"]["region"],
        serde_json::json!(["apac", "eu", "latam", "us"])
    );
}

/// Tables Python `deltalake` writes (partition values of several types with escaped
/// characters and nulls, copy-on-write deletes with a checkpoint, schema evolution)
/// read by us exactly as `deltalake` reads them.
#[tokio::test]
async fn we_read_what_deltalake_writes() {
    use arrow::array::{Array, AsArray};
    let Some(python) = peers_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let want = run_script(&python, "write_delta.py", &[dir.path().to_str().unwrap()]);
    for name in ["partitions", "deletes_checkpoint", "evolution"] {
        let t = Table::open(Location::local(dir.path().join(name)).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = collect(&t, ScanRequest::new()).await;
        let w = &want[name];
        assert_eq!(rows(&got) as u64, w["rows"].as_u64().unwrap(), "{name}");
        let ids: Vec<i64> = crate::common::ints(&got, "id");
        let want_ids: Vec<i64> = serde_json::from_value(w["ids"].clone()).unwrap();
        assert_eq!(ids, want_ids, "{name}");
        assert!(
            (sum_f64(&got, "value") - w["value"].as_f64().unwrap()).abs() < 1e-9,
            "{name}"
        );
        let mut labels: Vec<String> = got
            .iter()
            .flat_map(|b| {
                let c = b
                    .column_by_name("label")
                    .unwrap()
                    .as_string::<i32>()
                    .clone();
                (0..c.len())
                    .filter(|i| c.is_valid(*i))
                    .map(|i| c.value(i).to_owned())
                    .collect::<Vec<_>>()
            })
            .collect();
        labels.sort();
        let want_labels: Vec<String> = serde_json::from_value(w["labels"].clone()).unwrap();
        assert_eq!(labels, want_labels, "{name}");
    }
}
