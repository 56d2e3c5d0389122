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
    /// The last read reached the end of a closed shard.
    end_of_shard: bool,
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
///
/// A table that records several writers in one commit
/// ([`TableSink::writers_per_commit`] above 1, as Delta tables do) gets one commit per
/// poll for every shard due: when one shard's buffer is due, the buffers of all the
/// shards the poll read go into that commit, each shard's sequence recorded with it
/// ([`TableSink::append_writers`]). A table partitioned `P` ways then gets `P` files
/// per flush interval, not `P` per shard; a restart resumes every shard from the
/// sequence the table holds for it, as with one commit per shard.
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
        let together = self.table.writers_per_commit();
        let mut claims = Vec::new();
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
            let claim = Claim {
                claimed: &self.claimed,
                shard: shard.id,
            };
            let polled = if together > 1 {
                self.read_shard(shard.id, &mut report).await
            } else {
                self.poll_shard(shard.id, force, &mut report).await
            };
            if let Err(e) = polled {
                // Forget the buffer: the next poll resumes from the table.
                self.state.lock().remove(&shard.id);
                return Err(e);
            }
            if together > 1 {
                // Held until the shard's buffer is committed with the others.
                claims.push(claim);
            }
        }
        if together > 1 {
            // While commits leave full buffers behind them, read and commit again.
            let shards: Vec<ShardId> = claims.iter().map(|c| c.shard).collect();
            while self
                .flush_together(&shards, force, together, &mut report)
                .await?
            {
                for &shard in &shards {
                    if self.finished.lock().contains(&shard) {
                        continue;
                    }
                    if let Err(e) = self.read_shard(shard, &mut report).await {
                        self.state.lock().remove(&shard);
                        return Err(e);
                    }
                }
            }
        }
        Ok(report)
    }

    /// Where `shard`'s reads start when no buffer says: after the sequence the table
    /// holds for it.
    async fn resume_position(&self, app_id: &str) -> Result<Position> {
        Ok(match self.table.last_sequence(app_id).await? {
            Some(seq) => Position::AfterSequence(seq),
            None => Position::TrimHorizon,
        })
    }

    /// Reads `shard` into its buffer until the buffer is due (by size or by age) or
    /// nothing more is available; commits nothing (see [`Self::flush_together`]).
    async fn read_shard(&self, shard: ShardId, report: &mut DeliveryReport) -> Result<()> {
        let app_id = self.app_id(shard);
        let mut buffer = self.state.lock().remove(&shard).unwrap_or_default();
        let mut next = match buffer.next {
            Some(p) => p,
            None => self.resume_position(&app_id).await?,
        };
        while buffer.records.len() < self.policy.max_records && buffer.bytes < self.policy.max_bytes
        {
            let (after, end_of_shard, got) =
                self.read_into(shard, next, &mut buffer, report).await?;
            next = after;
            buffer.end_of_shard = end_of_shard;
            // A backlog must not hold the commit past its age.
            if !got || self.due(&buffer) {
                break;
            }
        }
        buffer.next = Some(next);
        self.state.lock().insert(shard, buffer);
        Ok(())
    }

    /// When one of `shards`' buffers is due (or `force`), commits every non-empty one
    /// of them, at most `together` shards per commit, each shard's last sequence
    /// recorded with the commit. Whether one of the committed buffers was full (its
    /// shard may hold more to read now).
    async fn flush_together(
        &self,
        shards: &[ShardId],
        force: bool,
        together: usize,
        report: &mut DeliveryReport,
    ) -> Result<bool> {
        let (due, full, mut pending) = {
            let mut state = self.state.lock();
            let due = shards.iter().any(|s| {
                state.get(s).is_some_and(|b| {
                    !b.records.is_empty() && (force || b.end_of_shard || self.due(b))
                })
            });
            let full = due
                && shards.iter().any(|s| {
                    state.get(s).is_some_and(|b| {
                        b.records.len() >= self.policy.max_records
                            || b.bytes >= self.policy.max_bytes
                    })
                });
            let mut pending = Vec::new();
            if due {
                for &s in shards {
                    if let Some(b) = state.get_mut(&s)
                        && !b.records.is_empty()
                    {
                        b.bytes = 0;
                        pending.push((s, std::mem::take(&mut b.records)));
                    }
                }
            }
            (due, full, pending)
        };
        if due {
            while !pending.is_empty() {
                let rest = pending.split_off(pending.len().min(together));
                let group = std::mem::replace(&mut pending, rest);
                let ids: Vec<ShardId> = group.iter().map(|(s, _)| *s).collect();
                if let Err(e) = self.commit_group(group, report).await {
                    // Forget the buffers: the next poll resumes from the table.
                    let mut state = self.state.lock();
                    for s in ids.iter().chain(pending.iter().map(|(s, _)| s)) {
                        state.remove(s);
                    }
                    return Err(e);
                }
            }
        }
        let mut state = self.state.lock();
        for s in shards {
            if state
                .get(s)
                .is_some_and(|b| b.end_of_shard && b.records.is_empty())
            {
                self.finished.lock().insert(*s);
                state.remove(s);
            }
        }
        Ok(full)
    }

    /// Decodes the records of several shards and appends them as one commit with one
    /// transaction id per shard, then advances each shard's log checkpoint.
    async fn commit_group(
        &self,
        group: Vec<(ShardId, Vec<Record>)>,
        report: &mut DeliveryReport,
    ) -> Result<()> {
        // Every shard's decoding starts at once, each on a thread of its own.
        let started = group
            .into_iter()
            .map(|(shard, records)| Ok((shard, self.start_decode(records)?)))
            .collect::<Result<Vec<_>>>()?;
        let mut batches = Vec::new();
        let mut txns = Vec::new();
        let mut checkpoints = Vec::new();
        for (shard, (last, decoding)) in started {
            let (batch, dead) = self.finish_decode(shard, decoding).await?;
            report.dead_lettered += dead;
            txns.push(TxnId::new(self.app_id(shard), last));
            checkpoints.push((shard, last));
            batches.push(batch);
        }
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        match self.table.append_writers(batches, txns).await? {
            AppendOutcome::Committed { .. } => {
                report.commits += 1;
                report.rows_committed += rows;
            }
            _ => report.duplicates += 1,
        }
        for (shard, last) in checkpoints {
            self.log.commit_checkpoint(&self.name, shard, last).await?;
        }
        Ok(())
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
            None => self.resume_position(&app_id).await?,
        };
        let mut end_of_shard;
        loop {
            let (after, end, got) = self.read_into(shard, next, &mut buffer, report).await?;
            next = after;
            end_of_shard = end;
            if !got {
                break;
            }
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

    /// Reads the records of `shard` after `next` into `buffer`, as many as it has room
    /// for: where the next read starts, whether the shard is closed and read to its end,
    /// and whether any record came.
    async fn read_into(
        &self,
        shard: ShardId,
        next: Position,
        buffer: &mut Buffer,
        report: &mut DeliveryReport,
    ) -> Result<(Position, bool, bool)> {
        let limit = ReadLimit {
            max_records: self
                .policy
                .max_records
                .saturating_sub(buffer.records.len())
                .max(1),
            max_bytes: self.policy.max_bytes.saturating_sub(buffer.bytes).max(1),
        };
        let read = self.log.read(shard, next, limit).await?;
        if read.records.is_empty() {
            return Ok((read.next, read.end_of_shard, false));
        }
        if buffer.records.is_empty() {
            buffer.since_ms = self.clock.now_millis();
        }
        report.records_read += read.records.len() as u64;
        buffer.bytes += read.records.iter().map(|r| r.data.len()).sum::<usize>();
        buffer.records.extend(read.records);
        Ok((read.next, read.end_of_shard, true))
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
        if records.is_empty() {
            return Ok(());
        }
        let (last, decoding) = self.start_decode(records)?;
        let (batch, dead) = self.finish_decode(shard, decoding).await?;
        report.dead_lettered += dead;
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

    /// Starts decoding `records` (not empty) off the executor's worker, on a thread of
    /// its own: the sequence of the last record and the decoding under way.
    fn start_decode(
        &self,
        records: Vec<Record>,
    ) -> Result<(SequenceNumber, crate::offload::Offloaded<Result<Decoded>>)> {
        let Some(last) = records.last().map(|r| r.sequence) else {
            return Err(Error::new(
                ErrorKind::Internal,
                "an empty buffer was handed to the decoder",
            ));
        };
        let decoder = self.decoder.clone();
        let isolate = self.dead_letter.is_some();
        Ok((last, offload(move || decode(&*decoder, &records, isolate))))
    }

    /// Waits for `decoding` of `shard`'s records and sends the malformed ones to the
    /// dead-letter log: the batch of the good ones and how many went there.
    async fn finish_decode(
        &self,
        shard: ShardId,
        decoding: crate::offload::Offloaded<Result<Decoded>>,
    ) -> Result<(RecordBatch, u64)> {
        let decoded = decoding.await?.map_err(|e| e.with_shard(shard))?;
        let mut dead_lettered = 0;
        if let Some(dlq) = &self.dead_letter {
            for (seq, record) in decoded.dead {
                dlq.put(record).await.map_err(|e| {
                    Error::new(ErrorKind::External, "the dead-letter log refused a record")
                        .with_shard(shard)
                        .with_version(seq)
                        .with_source(e)
                })?;
                dead_lettered += 1;
            }
        }
        Ok((decoded.batch?, dead_lettered))
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
