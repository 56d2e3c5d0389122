//! Entry points for fuzzing the decoders of the Delta log (feature `fuzzing`, off by
//! default; not a stable API).
//!
//! Each entry runs a decoder on the bytes it is given and discards the outcome: an
//! error is the expected answer to bad bytes, a panic is a defect.
//!
//! * [`decode_commit`]: a commit file's JSON lines, then what the actions carry
//!   (schema, statistics, partition values, file paths, partition transforms);
//! * [`open_commit`] and [`open_checkpoint`]: a real table's log (in memory) with its
//!   newest commit or its checkpoint (Parquet) replaced, replayed through kernel;
//! * [`decode_partition_value`] and [`decode_partition_path`]: partition value text to
//!   a typed scalar, and `add.path` URIs to object paths.
//!
//! [`sample_log`] is a real table's log, the seed corpus.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use futures::StreamExt;
use lakehouse_core::{Predicate, Scalar, StatsProvider, col};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::kernel::Kernel;
use crate::location::Location;
use crate::log::{Action, LOG_DIR, decode_commit as decode, parse_stats, schema_from_string};
use crate::partition::{PartitionSpec, dir_segment, parse_value, uri_decode};
use crate::read::{file_view, object_path, partition_scalars};
use crate::{PartitionField, Table, TableOptions};

/// The table root of [`sample_log`] and [`open_log`] in their stores.
pub const SAMPLE_ROOT: &str = "fuzz";

/// A runtime for the object store calls of these entries (kernel has its own).
fn runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .ok()
    })
    .as_ref()
}

/// Predicates every replayed file is pruned with (its statistics and partition
/// values are decoded from the log).
fn probes() -> Vec<Predicate> {
    vec![
        col("id").gt(5i64),
        col("s").eq("x"),
        col("region").in_list(["eu", "us"]),
        col("d").lt_eq(Scalar::Date32(19_000)),
        col("amount").gt(Scalar::Decimal128 {
            value: 100,
            precision: 10,
            scale: 2,
        }),
        col("ts").is_null().or(col("flag").eq(true)),
        col("ts_day").between(Scalar::Date32(0), Scalar::Date32(30_000)),
    ]
}

fn sample_batch(round: i64) -> Option<RecordBatch> {
    let n = 6i64;
    let ids: Vec<i64> = (0..n).map(|i| round * 10 + i).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(StringArray::from(
            ids.iter()
                .map(|i| (i % 3 != 0).then(|| format!("s{i}")))
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            ids.iter()
                .map(|i| match i % 4 {
                    0 => Some("eu"),
                    1 => Some("us/west=1"),
                    2 => Some(""),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )),
        Arc::new(Date32Array::from(
            ids.iter()
                .map(|i| 19_000 + (*i as i32 % 2))
                .collect::<Vec<_>>(),
        )),
        Arc::new(
            Decimal128Array::from(ids.iter().map(|i| i128::from(*i) * 125).collect::<Vec<_>>())
                .with_precision_and_scale(10, 2)
                .ok()?,
        ),
        Arc::new(BooleanArray::from(
            ids.iter().map(|i| i % 2 == 0).collect::<Vec<_>>(),
        )),
        Arc::new(
            TimestampMicrosecondArray::from(
                ids.iter()
                    .map(|i| 1_700_000_000_000_000 + i * 3_600_000_000)
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
    ];
    RecordBatch::try_new(Arc::new(sample_schema()), columns).ok()
}

fn sample_schema() -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("s", DataType::Utf8, true),
        Field::new("region", DataType::Utf8, true),
        Field::new("d", DataType::Date32, true),
        Field::new("amount", DataType::Decimal128(10, 2), true),
        Field::new("flag", DataType::Boolean, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ])
}

async fn build_sample(location: Location) -> crate::Result<Vec<(String, Vec<u8>)>> {
    let options = TableOptions::new()
        .name("fuzz")
        .partition_by([
            PartitionField::identity("region"),
            PartitionField::identity("d"),
            PartitionField::identity("amount"),
            PartitionField::identity("flag"),
            PartitionField::derived("ts_day", "ts", crate::Transform::Day),
        ])
        .checkpoint_interval(1000);
    let table = Table::create(location.clone(), Arc::new(sample_schema()), options).await?;
    for round in 0..3 {
        table
            .append(sample_batch(round).into_iter().collect())
            .await?;
    }
    table.checkpoint().await?;
    for round in 3..5 {
        table
            .append(sample_batch(round).into_iter().collect())
            .await?;
    }
    let store = location.store().clone();
    let mut names = Vec::new();
    let mut listing = store.list(Some(&location.root));
    while let Some(meta) = listing.next().await {
        if let Ok(meta) = meta {
            names.push(meta.location);
        }
    }
    let mut out = Vec::new();
    for name in names {
        let Ok(got) = store.get(&name).await else {
            continue;
        };
        let Ok(bytes) = got.bytes().await else {
            continue;
        };
        if name.as_ref().contains(LOG_DIR) {
            out.push((name.to_string(), bytes.to_vec()));
        }
    }
    out.sort();
    Ok(out)
}

/// A real table's log: (object path, bytes), sorted by path, with the table root at
/// [`SAMPLE_ROOT`] of its store (the data files are left out). The
/// table is partitioned by a string, a date, a decimal, a boolean and the day of a
/// timestamp, has five commits of appends after its creation and a checkpoint at
/// version 3. Empty if it could not be written.
pub fn sample_log() -> &'static [(String, Vec<u8>)] {
    static SAMPLE: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let Some(rt) = runtime() else {
            return Vec::new();
        };
        let Ok(location) = Location::memory(SAMPLE_ROOT) else {
            return Vec::new();
        };
        rt.block_on(build_sample(location)).unwrap_or_default()
    })
}

/// Decodes a commit file and everything its actions carry that a reader parses: the
/// schema and partition transforms of `metaData`, and each `add`'s statistics,
/// partition values and path, read against that schema (or the sample's).
pub fn decode_commit(bytes: &[u8]) {
    let Ok(actions) = decode(bytes, "fuzz.json") else {
        return;
    };
    let mut schema = Arc::new(sample_schema());
    let mut spec = PartitionSpec::from_config(
        &["region".to_owned(), "d".to_owned(), "amount".to_owned()],
        &BTreeMap::new(),
    )
    .ok();
    for a in &actions {
        match a {
            Action::MetaData(m) => {
                if let Ok(s) = schema_from_string(&m.schema_string) {
                    schema = s;
                }
                let _ = crate::features::column_mapping(m);
                let _ = crate::features::column_mapping_ids(m);
                let _ = crate::widening::type_changes(&m.schema_string);
                spec = PartitionSpec::from_config(&m.partition_columns, &m.configuration).ok();
            }
            Action::Protocol(p) => {
                if let Some(Action::MetaData(m)) =
                    actions.iter().find(|a| matches!(a, Action::MetaData(_)))
                {
                    let _ = p.check_readable(m);
                }
            }
            Action::Add(add) => {
                let stats = parse_stats(add.stats.as_deref(), &schema);
                let entry = crate::log::FileEntry::new(add.clone(), stats);
                let _ = uri_decode(&add.path);
                if let Some(spec) = &spec {
                    let _ = partition_scalars(&entry, &schema, spec);
                    if let Ok(view) = file_view(&entry, &schema, spec) {
                        prune(&view);
                    }
                }
            }
            Action::Remove(r) => {
                let _ = uri_decode(&r.path);
            }
            Action::CommitInfo(_) | Action::Txn(_) => {}
        }
    }
}

fn prune(view: &dyn StatsProvider) {
    for p in probes() {
        let _ = p.can_match(view);
        let _ = p.negate().can_match(view);
    }
}

/// Replays `files` (object paths, bytes; the table root at [`SAMPLE_ROOT`]) as a table's log through
/// kernel, then decodes what the snapshot holds: partition values, statistics (pruned
/// against a few predicates) and file paths; and every commit file with
/// [`decode_commit`]. The outcome is discarded.
pub fn open_log(files: &[(String, Vec<u8>)]) {
    let Some(rt) = runtime() else {
        return;
    };
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    rt.block_on(async {
        for (name, bytes) in files {
            if let Ok(path) = Path::parse(name) {
                let _ = store.put(&path, PutPayload::from(bytes.clone())).await;
            }
        }
    });
    let Ok(location) = Location::from_store(store, SAMPLE_ROOT, "memory:///fuzz") else {
        return;
    };
    // The path of `Table::open`: kernel's replay on the blocking pool. A panic in
    // kernel's own tasks (its Parquet reader's) becomes an error there.
    let Ok(kernel) = Kernel::new(&location) else {
        return;
    };
    let loaded = rt.block_on(crate::kernel::blocking(move || {
        let ks = kernel.snapshot(None)?;
        crate::replay::full(&kernel, ks)
    }));
    if let Ok(snapshot) = loaded {
        let m = &snapshot.metadata;
        if let Ok(spec) = PartitionSpec::from_config(&m.partition_columns, &m.configuration) {
            for f in snapshot.files.iter() {
                let _ = object_path(&location.root, &f.add.path);
                if let Ok(view) = file_view(f, &snapshot.schema, &spec) {
                    prune(&view);
                }
            }
        }
    }
    for (name, bytes) in files {
        if name.ends_with(".json") {
            decode_commit(bytes);
        }
    }
}

/// [`open_log`] on the [`sample_log`] with its newest commit replaced by `bytes`.
pub fn open_commit(bytes: &[u8]) {
    let mut files = sample_log().to_vec();
    if let Some(f) = files.iter_mut().rev().find(|(p, _)| {
        p.ends_with(".json") && !p.ends_with("_last_checkpoint") && p.contains(LOG_DIR)
    }) {
        f.1 = bytes.to_vec();
    }
    open_log(&files);
}

/// [`open_log`] on the [`sample_log`] with its checkpoint (Parquet) replaced by
/// `bytes`.
pub fn open_checkpoint(bytes: &[u8]) {
    let mut files = sample_log().to_vec();
    if let Some(f) = files
        .iter_mut()
        .find(|(p, _)| p.ends_with(".checkpoint.parquet"))
    {
        f.1 = bytes.to_vec();
    }
    open_log(&files);
}

/// The partition value types [`decode_partition_value`] chooses from.
fn partition_type(pick: u8) -> DataType {
    match pick % 16 {
        0 => DataType::Utf8,
        1 => DataType::Binary,
        2 => DataType::Boolean,
        3 => DataType::Int8,
        4 => DataType::Int16,
        5 => DataType::Int32,
        6 => DataType::Int64,
        7 => DataType::Float32,
        8 => DataType::Float64,
        9 => DataType::Date32,
        10 => DataType::Timestamp(TimeUnit::Microsecond, None),
        11 => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        12 => DataType::Decimal128(38, 0),
        13 => DataType::Decimal128(10, 2),
        14 => DataType::Decimal128(38, 38),
        _ => DataType::Decimal128(5, -3),
    }
}

/// Parses `bytes[1..]` (as text, lossily) as a partition value of the type `bytes[0]`
/// chooses, then turns the value into a one-row column and back to its directory
/// segment.
pub fn decode_partition_value(bytes: &[u8]) {
    let Some((&pick, body)) = bytes.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(body);
    let data_type = partition_type(pick);
    let text = (pick & 0x80 == 0).then_some(text.as_ref());
    if let Ok(v) = parse_value(text, &data_type) {
        if let Ok(array) = crate::partition::constant_array(&v, &data_type, 2)
            && let Ok(Some(t)) = crate::partition::value_text(array.as_ref(), 1)
        {
            let _ = parse_value(Some(&t), &data_type);
            let _ = dir_segment("c", Some(&t));
        }
        let _ = v.cast_to(&DataType::Utf8);
    }
}

/// Decodes `bytes` (as text, lossily) as an `add.path` URI to the object path of a
/// file under a table root.
pub fn decode_partition_path(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let _ = uri_decode(&text);
    let _ = object_path(&Path::default(), &text);
    let _ = object_path(&Path::from("tables/t"), &text);
    let _ = dir_segment(&text, Some(&text));
}
