use std::sync::Arc;

use lakehouse_core::{ErrorKind, ManualClock, MemoryLog, MemoryTable, conformance};

#[tokio::test]
async fn memory_table_conforms() {
    conformance::table(|schema| async move { Ok(MemoryTable::new("suite", schema)) }).await;
}

#[tokio::test]
async fn memory_log_conforms() {
    conformance::event_log(MemoryLog::DEFAULT_MAX_RECORD_BYTES, || async {
        Ok(MemoryLog::new(4))
    })
    .await;
    conformance::event_log(100, || async {
        Ok(MemoryLog::with_options(
            2,
            100,
            Arc::new(ManualClock::at_millis(5)),
        ))
    })
    .await;
}

#[tokio::test]
async fn memory_table_overwrite_breaks_incremental_reads() {
    use arrow::array::{Int64Array, RecordBatch};
    use lakehouse_core::{TableSink, TableSource};
    let schema = conformance::table_schema();
    let t = MemoryTable::new("t", schema.clone());
    let batch = RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(vec![schema.field(0).clone()])),
        vec![Arc::new(Int64Array::from(vec![1, 2]))],
    )
    .unwrap();
    t.append(vec![batch.clone()], None).await.unwrap();
    let v = t.overwrite(vec![batch]).unwrap();
    assert_eq!(v, 2);
    let err = t.changes_since(1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NonAppendChange);
    assert_eq!(err.context().version, Some(2));
    // After the overwrite, incremental reads work again.
    assert_eq!(t.changes_since(2).await.unwrap().to_version, 2);
}

#[tokio::test]
async fn memory_log_trimmed_positions_are_typed_errors() {
    use lakehouse_core::{EventLog, Position, PutRecord, ReadLimit, ShardId};
    let clock = ManualClock::at_millis(1_000);
    let log = MemoryLog::with_options(1, 1024, Arc::new(clock.clone()));
    for i in 0..10 {
        log.put(PutRecord::new("k", format!("r{i}"))).await.unwrap();
        clock.advance_millis(100);
    }
    assert_eq!(log.trim_before(ShardId(0), 4).unwrap(), 4);
    let err = log
        .read(ShardId(0), Position::AtSequence(2), ReadLimit::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PositionTrimmed);
    let horizon = log
        .read(ShardId(0), Position::TrimHorizon, ReadLimit::records(2))
        .await
        .unwrap();
    assert_eq!(horizon.records[0].sequence, 4);
    // Two records read; the next unread (sequence 6, at 1600 ms) is 300 ms behind 1900 ms.
    assert_eq!(horizon.millis_behind, 300);
    let at = log
        .read(
            ShardId(0),
            Position::AtTimestamp(1_650),
            ReadLimit::default(),
        )
        .await
        .unwrap();
    assert_eq!(at.records[0].sequence, 7);
}
