//! Puts: records routed to shards, packed into messages, published with a window of
//! outstanding acks, sent again with the same message id after a timeout.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use bytes::Bytes;
use lakehouse_core::{Error, ErrorKind, PutRecord, PutResult, Result, ShardId};

use super::codec;
use super::{NatsLog, remote};

/// One message to publish: the records (indices into the call's records) it holds.
struct Outgoing {
    shard: ShardId,
    body: Bytes,
    records: Vec<usize>,
    id: String,
    /// The stream sequence this message must follow (single-writer fencing).
    expect: Option<u64>,
}

impl Outgoing {
    fn message(&self) -> PublishMessage {
        let m = PublishMessage::build()
            .payload(self.body.clone())
            .message_id(&self.id);
        match self.expect {
            Some(last) => m.expected_last_sequence(last),
            None => m,
        }
    }
}

/// Why a message was not stored.
enum Failure {
    /// The shard's stream is sealed: route the records again.
    Sealed,
    /// The final error for every record of the message.
    Error(Error),
}

/// The JetStream error code inside a publish error, if the server answered with one.
fn server_code(e: &PublishError) -> Option<u64> {
    let source = std::error::Error::source(e)?;
    source
        .downcast_ref::<async_nats::jetstream::Error>()
        .map(|j| j.error_code().0)
}

async fn await_ack(
    sent: std::result::Result<PublishAckFuture, PublishError>,
) -> std::result::Result<PublishAck, PublishError> {
    match sent {
        Ok(f) => f.await,
        Err(e) => Err(e),
    }
}

/// The server refused a message for its expected last sequence.
fn wrong_last(e: &PublishError) -> bool {
    e.kind() == PublishErrorKind::WrongLastSequence
}

/// Whether a publish error may be cured by sending the message again.
fn retryable(e: &PublishError) -> bool {
    matches!(
        e.kind(),
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::Other
    ) && server_code(e).is_none()
}

impl NatsLog {
    /// Appends `records`, each succeeding or failing on its own, with message ids
    /// derived from `batch_id`: calling again with the same `batch_id` and records
    /// (within the duplicate window, on an unchanged shard map) stores nothing new and
    /// returns the sequence numbers of the first call.
    ///
    /// # Errors
    ///
    /// Per record: `InvalidInput`, `RecordTooLarge`, `Full` (the shard's stream is at
    /// its `max_bytes`), `Unavailable` or `Timeout` (the server did not confirm the
    /// record within the publish timeout; it may or may not be stored, and a retry
    /// with the same `batch_id` does not store it twice).
    pub async fn put_batch_with_id(
        &self,
        batch_id: &str,
        records: Vec<PutRecord>,
    ) -> Vec<Result<PutResult>> {
        self.put_many(records, Some(batch_id)).await
    }

    /// Appends records; see [`put_batch_with_id`](Self::put_batch_with_id) for the
    /// errors. Message ids are unique to this client.
    pub(crate) async fn put_many(
        &self,
        records: Vec<PutRecord>,
        batch_id: Option<&str>,
    ) -> Vec<Result<PutResult>> {
        let name = &self.inner.name;
        let mut results: Vec<Option<Result<PutResult>>> = vec![None; records.len()];
        let mut pending = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            match r.validate(self.inner.max_record_bytes) {
                Ok(()) => pending.push(i),
                Err(e) => results[i] = Some(Err(e.with_table(name))),
            }
        }
        // Single-writer fencing: one put at a time, each knowing the shards' last
        // sequences.
        let mut fence = if self.inner.config.single_writer {
            Some(self.inner.fence.lock().await)
        } else {
            None
        };
        let mut attempt = 0u32;
        while !pending.is_empty() {
            attempt += 1;
            let topology = if attempt == 1 {
                self.topology()
            } else {
                match self.refresh().await {
                    Ok(t) => t,
                    Err(e) => {
                        for &i in &pending {
                            results[i] = Some(Err(e.clone()));
                        }
                        break;
                    }
                }
            };
            // Records per shard, in call order.
            let mut by_shard: BTreeMap<ShardId, Vec<usize>> = BTreeMap::new();
            for &i in &pending {
                match topology.route(records[i].routing_key()) {
                    Some(s) => by_shard.entry(s).or_default().push(i),
                    None => {
                        results[i] = Some(Err(Error::new(
                            ErrorKind::Internal,
                            "no open shard holds the record's hash key",
                        )
                        .with_table(name)))
                    }
                }
            }
            let mut outgoing = self.pack(&records, &by_shard, batch_id, attempt);
            if let Some(known) = fence.as_deref_mut()
                && let Err(e) = self.expect_sequences(known, &mut outgoing).await
            {
                for &i in by_shard.values().flatten() {
                    results[i] = Some(Err(e.clone()));
                }
                break;
            }
            pending.clear();
            for (msg, outcome) in self.publish_all(outgoing).await {
                if let Some(known) = fence.as_deref_mut() {
                    match &outcome {
                        Ok(ack) => {
                            let last = known.entry(msg.shard).or_default();
                            *last = (*last).max(ack.sequence);
                        }
                        // Learn the shard's state again before the next put.
                        Err(_) => {
                            known.remove(&msg.shard);
                        }
                    }
                }
                match outcome {
                    Ok(ack) => {
                        for (k, &i) in msg.records.iter().enumerate() {
                            results[i] = Some(Ok(PutResult {
                                shard: msg.shard,
                                sequence: codec::sequence(ack.sequence, k),
                            }));
                        }
                    }
                    Err(Failure::Sealed) if attempt < 8 => pending.extend(msg.records),
                    Err(Failure::Sealed) => {
                        for &i in &msg.records {
                            results[i] = Some(Err(Error::new(
                                ErrorKind::Conflict,
                                "the shard stayed sealed after reloading the shard map",
                            )
                            .with_table(name)
                            .with_shard(msg.shard)));
                        }
                    }
                    Err(Failure::Error(e)) => {
                        for &i in &msg.records {
                            results[i] =
                                Some(Err(e.clone().with_key(records[i].partition_key.as_str())));
                        }
                    }
                }
            }
            pending.sort_unstable();
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(Error::new(ErrorKind::Internal, "a record got no result")))
            })
            .collect()
    }

    /// Packs each shard's records into messages under the body limit.
    fn pack(
        &self,
        records: &[PutRecord],
        by_shard: &BTreeMap<ShardId, Vec<usize>>,
        batch_id: Option<&str>,
        attempt: u32,
    ) -> Vec<Outgoing> {
        let limit = self.inner.max_body_bytes;
        let mut out = Vec::new();
        for (&shard, idx) in by_shard {
            let mut start = 0;
            let mut part = 0;
            while start < idx.len() {
                let mut size = codec::BODY_HEADER;
                let mut end = start;
                while end < idx.len() && end - start < codec::MAX_RECORDS_PER_MESSAGE {
                    let r = &records[idx[end]];
                    let add = codec::RECORD_OVERHEAD + r.partition_key.len() + r.data.len();
                    if end > start && size + add > limit {
                        break;
                    }
                    size += add;
                    end += 1;
                }
                let members = idx[start..end].to_vec();
                let body = codec::encode(members.iter().map(|&i| {
                    let r = &records[i];
                    (r.partition_key.as_str(), &r.data[..])
                }));
                let id = match batch_id {
                    Some(b) => format!("{b}:{}:{attempt}:{part}", shard.0),
                    None => format!(
                        "{}:{}",
                        self.inner.producer_id,
                        self.inner.next_msg.fetch_add(1, Ordering::Relaxed)
                    ),
                };
                out.push(Outgoing {
                    shard,
                    body,
                    records: members,
                    id,
                    expect: None,
                });
                part += 1;
                start = end;
            }
        }
        out
    }

    /// Publishes every message without waiting in between, then awaits the acks; a
    /// message whose ack timed out (or whose connection broke) is sent again, with
    /// the same id, until the publish timeout.
    async fn publish_all(
        &self,
        outgoing: Vec<Outgoing>,
    ) -> Vec<(Outgoing, std::result::Result<PublishAck, Failure>)> {
        let js = &self.inner.js;
        let window = self.inner.config.max_outstanding_acks;
        // Acks awaited oldest first once `window` are outstanding: an ack future holds
        // one of the client's permits until it is awaited.
        let mut in_flight = VecDeque::with_capacity(window.min(outgoing.len()));
        let mut acks = Vec::with_capacity(outgoing.len());
        let mut msgs = Vec::with_capacity(outgoing.len());
        for msg in outgoing {
            if in_flight.len() >= window
                && let Some(oldest) = in_flight.pop_front()
            {
                acks.push(await_ack(oldest).await);
            }
            in_flight.push_back(
                js.send_publish(self.subject(msg.shard), msg.message())
                    .await,
            );
            msgs.push(msg);
        }
        for f in in_flight {
            acks.push(await_ack(f).await);
        }
        let deadline = Instant::now() + self.inner.config.publish_timeout;
        let mut out = Vec::with_capacity(msgs.len());
        // Shards where a message of this put was sent again or failed: under fencing,
        // the messages after it were refused for the wrong last sequence and go again
        // in order, or fail as it did.
        let mut broken: HashMap<ShardId, Option<Error>> = HashMap::new();
        for (msg, ack) in msgs.into_iter().zip(acks) {
            let behind = broken.get(&msg.shard).cloned();
            let ack = match (ack, behind) {
                (Err(_), Some(Some(e))) if msg.expect.is_some() => {
                    out.push((msg, Err(Failure::Error(e))));
                    continue;
                }
                (Err(e), Some(None)) if msg.expect.is_some() && wrong_last(&e) => {
                    self.publish_again(&msg, e, deadline).await
                }
                (Err(e), _) if retryable(&e) => {
                    broken.entry(msg.shard).or_insert(None);
                    self.publish_again(&msg, e, deadline).await
                }
                (other, _) => other,
            };
            let outcome = ack.map_err(|e| self.failure(&msg, e));
            if let Err(Failure::Error(e)) = &outcome {
                broken.insert(msg.shard, Some(e.clone()));
            }
            out.push((msg, outcome));
        }
        out
    }

    /// Sends `msg` again with its id until it is acknowledged, a non-retryable error
    /// comes back, or `deadline` passes.
    async fn publish_again(
        &self,
        msg: &Outgoing,
        mut last: PublishError,
        deadline: Instant,
    ) -> std::result::Result<PublishAck, PublishError> {
        let mut pause = Duration::from_millis(20);
        while Instant::now() < deadline {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
            let result = await_ack(
                self.inner
                    .js
                    .send_publish(self.subject(msg.shard), msg.message())
                    .await,
            )
            .await;
            match result {
                Ok(ack) => return Ok(ack),
                Err(e) if retryable(&e) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Sets each message's expected last sequence, from what this client knows of
    /// each shard (asking the server for shards it does not know yet).
    async fn expect_sequences(
        &self,
        known: &mut HashMap<ShardId, u64>,
        outgoing: &mut [Outgoing],
    ) -> Result<()> {
        let mut next: HashMap<ShardId, u64> = HashMap::new();
        for msg in outgoing.iter_mut() {
            let last = match next.get(&msg.shard) {
                Some(&l) => l,
                None => match known.get(&msg.shard) {
                    Some(&l) => l,
                    None => {
                        let l = self.stream_state(msg.shard).await?.last;
                        known.insert(msg.shard, l);
                        l
                    }
                },
            };
            msg.expect = Some(last);
            next.insert(msg.shard, last + 1);
        }
        Ok(())
    }

    fn failure(&self, msg: &Outgoing, e: PublishError) -> Failure {
        let name = &self.inner.name;
        if wrong_last(&e) {
            return Failure::Error(
                Error::new(
                    ErrorKind::Conflict,
                    "another writer appended to the shard (single-writer fencing)",
                )
                .with_table(name)
                .with_shard(msg.shard),
            );
        }
        match server_code(&e) {
            Some(10109) => Failure::Sealed,
            // Store failed: with `discard: new`, the stream is at a limit.
            Some(10077) | Some(10047) => Failure::Error(
                Error::new(ErrorKind::Full, format!("the shard's stream is full: {e}"))
                    .with_table(name)
                    .with_shard(msg.shard),
            ),
            Some(10054) => Failure::Error(
                Error::new(
                    ErrorKind::RecordTooLarge,
                    format!("the server refused the message size: {e}"),
                )
                .with_table(name)
                .with_shard(msg.shard),
            ),
            _ if e.kind() == PublishErrorKind::MaxPayloadExceeded => Failure::Error(
                Error::new(ErrorKind::RecordTooLarge, e.to_string())
                    .with_table(name)
                    .with_shard(msg.shard),
            ),
            // No stream answered: JetStream is not (yet) up after a restart, or the
            // log was deleted. Resharding creates streams before it routes to them.
            _ if e.kind() == PublishErrorKind::StreamNotFound => Failure::Error(
                Error::new(
                    ErrorKind::Unavailable,
                    format!("NATS: no JetStream stream answered for {}: {e}", msg.shard),
                )
                .with_table(name)
                .with_shard(msg.shard),
            ),
            _ => Failure::Error(remote(name, "publish", e).with_shard(msg.shard)),
        }
    }
}
