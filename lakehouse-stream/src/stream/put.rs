//! The put path: validating, routing and appending records, with back-pressure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lakehouse_core::{
    Error, ErrorKind, PartitionKey, PutRecord, PutResult, Result, SequenceNumber,
};

use super::committer::Job;
use super::group_commit::FLUSH_BYTES;
use super::shard::{Entry, Shard, ShardLog};
use super::{Inner, Stream};
use crate::durable;
use crate::route;

/// What a put does when its shard has no room under `max_shard_bytes` for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backpressure {
    /// Fail the record with [`ErrorKind::Full`]; nothing is written.
    Reject,
    /// Wait up to this long for retention to free space, then fail with `Full`.
    Wait(Duration),
}

/// How a put does the disk work its records need (durable streams).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// On the calling thread, before it returns.
    Block,
    /// Left to the committer thread: the caller gets the jobs to await.
    Defer,
}

impl Inner {
    /// Appends a record (validated, routed to this open shard, with room) to `log`,
    /// framing it for the segment file when durable.
    fn append(
        &self,
        shard: &Shard,
        log: &mut ShardLog,
        key: PartitionKey,
        data: Bytes,
        timestamp_ms: i64,
    ) -> SequenceNumber {
        let sequence = log.next();
        if shard.files.is_some() {
            if log.pending.is_empty() {
                log.pending_first = sequence;
            }
            durable::encode(
                &mut log.pending,
                sequence,
                timestamp_ms,
                key.as_str(),
                &data,
            );
        }
        log.newest_ms = timestamp_ms;
        log.push(Entry {
            key,
            data,
            timestamp_ms,
        });
        if !self.gated {
            log.visible = sequence + 1;
        }
        sequence
    }
}

impl Stream {
    /// Appends one record.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty partition key, `RecordTooLarge` above the record
    /// limit, `Full` when the shard is full and the back-pressure policy gives up.
    pub fn put_record(&self, record: PutRecord) -> Result<PutResult> {
        self.put_record_with(record, Wait::Block, &mut Vec::new())
    }

    pub(super) fn put_record_with(
        &self,
        record: PutRecord,
        wait: Wait,
        jobs: &mut Vec<Job>,
    ) -> Result<PutResult> {
        record
            .validate(self.inner.max_record_bytes)
            .map_err(|e| e.with_table(&self.inner.name))?;
        let hash = record.routing_key();
        self.put_routed(hash, record.partition_key, record.data, wait, jobs)
    }

    /// Appends a validated record whose hash key is `hash`, applying the back-pressure
    /// policy and routing again if its shard closes meanwhile.
    fn put_routed(
        &self,
        hash: u128,
        key: PartitionKey,
        data: Bytes,
        wait: Wait,
        jobs: &mut Vec<Job>,
    ) -> Result<PutResult> {
        let deadline = match self.inner.backpressure {
            Backpressure::Reject => None,
            // `None` inside `Some`: a wait too long to name an instant never ends.
            Backpressure::Wait(d) => Some(Instant::now().checked_add(d)),
        };
        loop {
            let open = self.inner.routing.load();
            let i = open.partition_point(|s| s.range.1 < hash);
            let Some(shard) = open.get(i) else {
                return Err(Error::new(
                    ErrorKind::Internal,
                    "no open shard owns a hash key",
                ));
            };
            let now = self.inner.clock.now_millis();
            let mut log = shard.log.lock();
            if log.closed {
                // Split or merged since routing: route again.
                continue;
            }
            self.trim_age(&mut log, now);
            if !log.fits(&key, data.len(), self.inner.max_shard_bytes) {
                let full = || {
                    Error::new(
                        ErrorKind::Full,
                        format!(
                            "shard holds {} bytes, the bound is {}",
                            log.bytes, self.inner.max_shard_bytes
                        ),
                    )
                    .with_table(&self.inner.name)
                    .with_shard(shard.id)
                    .with_key(key.as_str())
                };
                let left = match deadline {
                    Some(Some(d)) => d.checked_duration_since(Instant::now()),
                    Some(None) => Some(Duration::MAX),
                    None => None,
                };
                match left {
                    Some(left) if !left.is_zero() => {
                        let wait = left.min(Duration::from_millis(10));
                        shard.space.wait_for(&mut log, wait);
                        continue;
                    }
                    _ => return Err(full()),
                }
            }
            let timestamp_ms = now.max(log.newest_ms);
            let sequence = self.inner.append(shard, &mut log, key, data, timestamp_ms);
            let full = log.pending.len() >= FLUSH_BYTES;
            drop(log);
            shard.data.notify_all();
            if self.inner.durable.is_some() {
                let shards = if full {
                    vec![shard.clone()]
                } else {
                    Vec::new()
                };
                self.inner
                    .after_append(&shards, wait, jobs)
                    .map_err(|e| e.with_shard(shard.id).with_version(sequence))?;
            }
            return Ok(PutResult {
                shard: shard.id,
                sequence,
            });
        }
    }

    /// Appends several records; one result per entry, in request order. A failed entry
    /// fails alone.
    ///
    /// Records are routed first, then each shard is locked once for all of its records,
    /// with one clock reading per shard.
    pub fn put_records(&self, records: Vec<PutRecord>) -> Vec<Result<PutResult>> {
        self.put_records_with(records, Wait::Block, &mut Vec::new())
    }

    pub(super) fn put_records_with(
        &self,
        records: Vec<PutRecord>,
        wait: Wait,
        jobs: &mut Vec<Job>,
    ) -> Vec<Result<PutResult>> {
        let mut results: Vec<Option<Result<PutResult>>> = Vec::with_capacity(records.len());
        let mut pending: Vec<Option<PutRecord>> = Vec::with_capacity(records.len());
        let mut hashes = vec![0u128; records.len()];
        // Short keys without an explicit hash key are hashed LANES at a time.
        let mut lanes = [0usize; route::LANES];
        let mut filled = 0;
        let hash_lanes = |lanes: &[usize], pending: &[Option<PutRecord>], hashes: &mut [u128]| {
            let mut keys: [&[u8]; route::LANES] = [&[]; route::LANES];
            for (k, &i) in keys.iter_mut().zip(lanes) {
                *k = pending[i]
                    .as_ref()
                    .map_or(&[][..], |r| r.partition_key.as_bytes());
            }
            let digests = route::md5_keys(&keys[..lanes.len()]);
            for (&i, h) in lanes.iter().zip(digests) {
                hashes[i] = h;
            }
        };
        for (i, r) in records.into_iter().enumerate() {
            match r.validate(self.inner.max_record_bytes) {
                Ok(()) => {
                    let batched =
                        r.explicit_hash_key.is_none() && r.partition_key.len() <= route::MAX_KEY;
                    if !batched {
                        hashes[i] = r.routing_key();
                    }
                    results.push(None);
                    pending.push(Some(r));
                    if batched {
                        lanes[filled] = i;
                        filled += 1;
                        if filled == route::LANES {
                            hash_lanes(&lanes, &pending, &mut hashes);
                            filled = 0;
                        }
                    }
                }
                Err(e) => {
                    results.push(Some(Err(e.with_table(&self.inner.name))));
                    pending.push(None);
                }
            }
        }
        if filled > 0 {
            hash_lanes(&lanes[..filled], &pending, &mut hashes);
        }
        let mut pending: Vec<Option<(PartitionKey, Bytes)>> = pending
            .into_iter()
            .map(|r| r.map(|r| (r.partition_key, r.data)))
            .collect();
        let groups: Vec<(Arc<Shard>, Vec<usize>)> = {
            let open = self.inner.routing.load();
            let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); open.len()];
            for (i, &h) in hashes.iter().enumerate() {
                if pending[i].is_some() {
                    let s = open.partition_point(|s| s.range.1 < h);
                    if let Some(group) = by_shard.get_mut(s) {
                        group.push(i);
                    }
                }
            }
            open.iter()
                .cloned()
                .zip(by_shard)
                .filter(|(_, g)| !g.is_empty())
                .collect()
        };
        let mut full: Vec<Arc<Shard>> = Vec::new();
        for (shard, group) in &groups {
            let now = self.inner.clock.now_millis();
            let mut log = shard.log.lock();
            self.trim_age(&mut log, now);
            // Once one record of this shard is left to the single-record path, so are
            // all after it: they are put in request order, which keeps each key's order
            // (a smaller record must not overtake one waiting for space).
            let mut deferred = false;
            for &i in group {
                let Some((key, data)) = pending[i].take() else {
                    continue;
                };
                if deferred || log.closed || !log.fits(&key, data.len(), self.inner.max_shard_bytes)
                {
                    // Resharded meanwhile, or full: the single-record path reroutes or
                    // applies the back-pressure policy.
                    pending[i] = Some((key, data));
                    deferred = true;
                    continue;
                }
                let timestamp_ms = now.max(log.newest_ms);
                let sequence = self.inner.append(shard, &mut log, key, data, timestamp_ms);
                results[i] = Some(Ok(PutResult {
                    shard: shard.id,
                    sequence,
                }));
            }
            if log.pending.len() >= FLUSH_BYTES {
                full.push(shard.clone());
            }
            drop(log);
            shard.data.notify_all();
        }
        if self.inner.durable.is_some()
            && let Err(e) = self.inner.after_append(&full, wait, jobs)
        {
            {
                // Not acknowledged: whether these records are durable is unknown.
                for r in results.iter_mut() {
                    if let Some(Ok(put)) = r {
                        *r = Some(Err(e
                            .clone()
                            .with_shard(put.shard)
                            .with_version(put.sequence)));
                    }
                }
            }
        }
        results
            .into_iter()
            .zip(pending)
            .zip(hashes)
            .map(|((done, left), hash)| match (done, left) {
                (Some(r), _) => r,
                (None, Some((key, data))) => self.put_routed(hash, key, data, wait, jobs),
                (None, None) => Err(Error::new(
                    ErrorKind::Internal,
                    "a record was neither put nor failed",
                )),
            })
            .collect()
    }
}
