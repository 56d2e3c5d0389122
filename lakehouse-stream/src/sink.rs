//! [`TableDelivery`]: micro-batches from any [`EventLog`] into any [`TableSink`],
//! exactly once (the Firehose role).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use lakehouse_core::{
    AppendOutcome, Clock, Error, ErrorKind, EventLog, Position, PutRecord, ReadLimit, Record,
    RecordBatch, Result, SequenceNumber, ShardId, SystemClock, TableSink, TxnId,
};
use parking_lot::Mutex;

use crate::offload::offload;

/// Turns records into Arrow rows.
pub trait Decoder: Send + Sync {
    /// The schema of the batches [`decode`](Self::decode) returns.
    fn schema(&self) -> SchemaRef;

    /// Decodes `records` into one batch. An error means at least one record is
    /// malformed; the sink then decodes records one at a time to find which.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] naming the malformed record.
    fn decode(&self, records: &[Record]) -> Result<RecordBatch>;
}

/// When a shard's buffered records are committed to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushPolicy {
    /// Commit when this many records are buffered.
    pub max_records: usize,
    /// Commit when this many payload bytes are buffered.
    pub max_bytes: usize,
    /// Commit when the oldest buffered record has waited this long.
    pub max_age: Duration,
}

impl Default for FlushPolicy {
    /// 50,000 records, 8 MiB or 1 second, whichever comes first.
    fn default() -> Self {
        FlushPolicy {
            max_records: 50_000,
            max_bytes: 8 << 20,
            max_age: Duration::from_secs(1),
        }
    }
}

/// What one [`TableDelivery::poll`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    /// Records read from the log.
    pub records_read: u64,
    /// Rows committed to the table.
    pub rows_committed: u64,
    /// Commits made.
    pub commits: u64,
    /// Commits the table had already applied (a replay after a crash).
    pub duplicates: u64,
    /// Malformed records sent to the dead-letter log.
    pub dead_lettered: u64,
}

#[derive(Default)]
struct Buffer {
    records: Vec<Record>,
    bytes: usize,
    /// Clock time (ms) when the oldest buffered record was read.
    since_ms: i64,
    /// Where the next read of this shard starts.
    next: Option<Position>,
}

/// Delivers every record of an [`EventLog`] into a [`TableSink`] exactly once.
///
/// Each shard is read in order and its records are buffered until the
/// [`FlushPolicy`] says to commit; the decoded batch is appended with the transaction id
/// `("{name}/{shard}", last sequence number in the batch)`. Where a shard resumes is read
/// from the table itself ([`TableSink::last_sequence`]), so after a crash at any point —
/// before the commit, after it, before the log checkpoint — a restarted delivery neither
/// loses nor duplicates rows. The log checkpoint of group `name` is advanced after each
/// commit for monitoring and for other consumers.
///
/// Closed shards (split or merged) are read to their end before their children.
/// Malformed records go to the dead-letter log if one is configured; without one, the
/// shard stops at the malformed record and `poll` returns the error, losing nothing.
pub struct TableDelivery<L, T> {
    name: String,
    log: L,
    table: T,
    decoder: Arc<dyn Decoder>,
    policy: FlushPolicy,
    dead_letter: Option<Arc<dyn EventLog>>,
    clock: Arc<dyn Clock>,
    state: Mutex<HashMap<ShardId, Buffer>>,
    finished: Mutex<HashSet<ShardId>>,
    /// Shards a running `poll` is reading and committing: a concurrent `poll` leaves
    /// them alone, so no two commits of one shard overlap.
    claimed: Mutex<HashSet<ShardId>>,
}

/// A shard claimed by one `poll`; released when dropped, also when the poll's future
/// is dropped midway (the next poll then resumes from the table).
struct Claim<'a> {
    claimed: &'a Mutex<HashSet<ShardId>>,
    shard: ShardId,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.claimed.lock().remove(&self.shard);
    }
}

impl<L, T> fmt::Debug for TableDelivery<L, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableDelivery")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<L: EventLog, T: TableSink> TableDelivery<L, T> {
    /// A delivery called `name` (unique per table) from `log` into `table`.
    pub fn new(name: impl Into<String>, log: L, table: T, decoder: Arc<dyn Decoder>) -> Self {
        TableDelivery {
            name: name.into(),
            log,
            table,
            decoder,
            policy: FlushPolicy::default(),
            dead_letter: None,
            clock: Arc::new(SystemClock),
            state: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashSet::new()),
            claimed: Mutex::new(HashSet::new()),
        }
    }

    /// Sets when buffers are committed.
    #[must_use]
    pub fn with_policy(mut self, policy: FlushPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sends malformed records to `log`, with the decoder's error prefixed to the data.
    #[must_use]
    pub fn with_dead_letter(mut self, log: Arc<dyn EventLog>) -> Self {
        self.dead_letter = Some(log);
        self
    }

    /// The clock for the age-based flush.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn app_id(&self, shard: ShardId) -> String {
        format!("{}/{shard}", self.name)
    }

    /// Reads what is available on every shard and commits the buffers that are due;
    /// `force` commits every non-empty buffer.
    ///
    /// Polls may run concurrently (the method takes `&self`): a shard that another
    /// poll of this delivery is working on is skipped, so each shard is read and
    /// committed by one poll at a time and no record is committed twice.
    ///
    /// # Errors
    ///
    /// A log, decoder (without a dead-letter log) or table error; the failing shard
    /// resumes from the table's last commit on the next poll.
    pub async fn poll(&self, force: bool) -> Result<DeliveryReport> {
        let mut report = DeliveryReport::default();
        let shards = self.log.shards().await?;
        for shard in &shards {
            if self.finished.lock().contains(&shard.id) {
                continue;
            }
            let parents_done = {
                let finished = self.finished.lock();
                shard.parents.iter().all(|p| finished.contains(p))
            };
            if !parents_done {
                continue;
            }
            if !self.claimed.lock().insert(shard.id) {
                continue;
            }
            let _claim = Claim {
                claimed: &self.claimed,
                shard: shard.id,
            };
            if let Err(e) = self.poll_shard(shard.id, force, &mut report).await {
                // Forget the buffer: the next poll resumes from the table.
                self.state.lock().remove(&shard.id);
                return Err(e);
            }
        }
        Ok(report)
    }

    async fn poll_shard(
        &self,
        shard: ShardId,
        force: bool,
        report: &mut DeliveryReport,
    ) -> Result<()> {
        let app_id = self.app_id(shard);
        let mut buffer = self.state.lock().remove(&shard).unwrap_or_default();
        let mut next = match buffer.next {
            Some(p) => p,
            None => match self.table.last_sequence(&app_id).await? {
                Some(seq) => Position::AfterSequence(seq),
                None => Position::TrimHorizon,
            },
        };
        let mut end_of_shard;
        loop {
            let room = self
                .policy
                .max_records
                .saturating_sub(buffer.records.len())
                .max(1);
            let read = self
                .log
                .read(
                    shard,
                    next,
                    ReadLimit {
                        max_records: room,
                        max_bytes: self.policy.max_bytes,
                    },
                )
                .await?;
            next = read.next;
            end_of_shard = read.end_of_shard;
            if read.records.is_empty() {
                break;
            }
            if buffer.records.is_empty() {
                buffer.since_ms = self.clock.now_millis();
            }
            report.records_read += read.records.len() as u64;
            buffer.bytes += read.records.iter().map(|r| r.data.len()).sum::<usize>();
            buffer.records.extend(read.records);
            if self.due(&buffer) {
                self.flush(shard, &app_id, &mut buffer, report).await?;
            }
        }
        if !buffer.records.is_empty() && (force || end_of_shard || self.due(&buffer)) {
            self.flush(shard, &app_id, &mut buffer, report).await?;
        }
        if end_of_shard && buffer.records.is_empty() {
            self.finished.lock().insert(shard);
        }
        buffer.next = Some(next);
        self.state.lock().insert(shard, buffer);
        Ok(())
    }

    fn due(&self, buffer: &Buffer) -> bool {
        buffer.records.len() >= self.policy.max_records
            || buffer.bytes >= self.policy.max_bytes
            || (!buffer.records.is_empty()
                && self.clock.now_millis().saturating_sub(buffer.since_ms)
                    >= crate::millis(self.policy.max_age))
    }

    async fn flush(
        &self,
        shard: ShardId,
        app_id: &str,
        buffer: &mut Buffer,
        report: &mut DeliveryReport,
    ) -> Result<()> {
        let records = std::mem::take(&mut buffer.records);
        buffer.bytes = 0;
        let Some(last) = records.last().map(|r| r.sequence) else {
            return Ok(());
        };
        // Decoding is CPU work: it runs off the executor's worker.
        let decoder = self.decoder.clone();
        let isolate = self.dead_letter.is_some();
        let decoded = offload(move || decode(&*decoder, &records, isolate))
            .await?
            .map_err(|e| e.with_shard(shard))?;
        if let Some(dlq) = &self.dead_letter {
            for (seq, record) in decoded.dead {
                dlq.put(record).await.map_err(|e| {
                    Error::new(ErrorKind::External, "the dead-letter log refused a record")
                        .with_shard(shard)
                        .with_version(seq)
                        .with_source(e)
                })?;
                report.dead_lettered += 1;
            }
        }
        let batch = decoded.batch?;
        let rows = batch.num_rows() as u64;
        match self
            .table
            .append(vec![batch], Some(TxnId::new(app_id, last)))
            .await?
        {
            AppendOutcome::Committed { .. } => {
                report.commits += 1;
                report.rows_committed += rows;
            }
            _ => report.duplicates += 1,
        }
        self.log.commit_checkpoint(&self.name, shard, last).await?;
        Ok(())
    }
}

/// What decoding a buffer gave: the batch of its good records, and the malformed ones
/// for the dead-letter log.
struct Decoded {
    batch: Result<RecordBatch>,
    dead: Vec<(SequenceNumber, PutRecord)>,
}

/// Decodes `records`; when that fails and `isolate`, decodes them one by one to set
/// the malformed ones apart (with the decoder's error prefixed to their data).
/// Without `isolate` a failure is the error.
fn decode(decoder: &dyn Decoder, records: &[Record], isolate: bool) -> Result<Decoded> {
    let first = match decoder.decode(records) {
        Ok(batch) => {
            return Ok(Decoded {
                batch: Ok(batch),
                dead: Vec::new(),
            });
        }
        Err(e) => e,
    };
    if !isolate {
        return Err(first);
    }
    let mut good = Vec::with_capacity(records.len());
    let mut dead = Vec::new();
    for r in records {
        match decoder.decode(std::slice::from_ref(r)) {
            Ok(_) => good.push(r.clone()),
            Err(e) => {
                let mut data = format!("{e}\n").into_bytes();
                data.extend_from_slice(&r.data);
                dead.push((r.sequence, PutRecord::new(r.partition_key.clone(), data)));
            }
        }
    }
    let batch = if good.is_empty() {
        Ok(RecordBatch::new_empty(decoder.schema()))
    } else {
        decoder.decode(&good)
    };
    Ok(Decoded { batch, dead })
}
