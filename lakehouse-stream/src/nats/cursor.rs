//! A consumer group's read cursor on one shard: a durable pull consumer on the shard's
//! stream, created at the group's checkpoint when a member takes the shard's lease.
//!
//! The checkpoint in KV stays the committed position; the consumer is where this lease
//! has read up to (so `nats consumer info` shows each group's read position and lag).
//! There is one consumer per group and shard at a time: a member that takes a lease
//! deletes the consumers of the previous holders before it creates its own, so a member
//! that lost its lease without noticing cannot take messages from the new holder. Its
//! next fetch fails, and a gap in the stream sequences a cursor sees (messages taken by
//! someone else) fails the poll instead of skipping records.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, PullConsumer};
use futures::{StreamExt, TryStreamExt};
use lakehouse_core::{Error, ErrorKind, ReadLimit, Record, Result, SequenceNumber, ShardId};

use super::{NatsLog, codec, remote};

/// Messages asked for in one fetch, at most.
const FETCH_MESSAGES: usize = 256;
/// A cursor left behind by a member that went away is deleted by the server after
/// this long without a fetch.
const INACTIVE: Duration = Duration::from_secs(3600);

/// A lease's position in one shard; see the [module documentation](self).
pub(crate) struct Cursor {
    shard: ShardId,
    consumer: PullConsumer,
    name: String,
    /// Records before this one were processed already (at or before the checkpoint).
    from: SequenceNumber,
    /// The stream sequence of the message the consumer delivers next, once known.
    next_message: Option<u64>,
    /// Records of delivered messages that did not fit the last poll's limit.
    pending: VecDeque<Record>,
    /// Messages and records delivered so far, to size fetches.
    seen: (usize, usize),
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursor")
            .field("shard", &self.shard)
            .field("consumer", &self.name)
            .field("from", &self.from)
            .field("next_message", &self.next_message)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// The part of a consumer name shared by every cursor of `group` on `shard`.
pub(crate) fn consumer_prefix(group: &str, shard: ShardId) -> String {
    let mut name = String::from("lh-");
    for b in group.bytes().take(48) {
        // `_` is the escape, so two group names never share a prefix.
        if b.is_ascii_alphanumeric() {
            name.push(b as char);
        } else {
            name.push_str(&format!("_{b:02x}"));
        }
    }
    if group.len() > 48 {
        // Long names keep a digest of the whole, so two of them do not share a prefix.
        name.push_str(&format!("_{:032x}", lakehouse_core::hash_key(group)));
    }
    name.push_str(&format!("-{}-", shard.0));
    name
}

impl NatsLog {
    /// Creates the cursor of `group` on `shard`, starting after `checkpoint` (from the
    /// oldest retained record without one), and deletes the cursors of earlier leases.
    pub(crate) async fn open_cursor(
        &self,
        group: &str,
        shard: ShardId,
        checkpoint: Option<SequenceNumber>,
    ) -> Result<Cursor> {
        let log = self.name();
        let stream = self
            .inner
            .js
            .get_stream_no_info(self.stream_name(shard))
            .await
            .map_err(|e| remote(log, "open a shard's stream", e).with_shard(shard))?;
        let prefix = consumer_prefix(group, shard);
        let names: Vec<String> = stream
            .consumer_names()
            .try_collect()
            .await
            .map_err(|e| remote(log, "list a shard's consumers", e).with_shard(shard))?;
        for old in names.iter().filter(|n| n.starts_with(&prefix)) {
            if let Err(e) = stream.delete_consumer(old).await
                && !e.to_string().contains("not found")
            {
                return Err(remote(log, "delete an earlier lease's consumer", e).with_shard(shard));
            }
        }
        static CURSORS: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{prefix}{}{}",
            self.inner.producer_id,
            CURSORS.fetch_add(1, Ordering::Relaxed)
        );
        let (from, deliver_policy) = match checkpoint {
            None => (0, DeliverPolicy::All),
            Some(seq) => {
                let from = seq.checked_add(1).ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidPosition,
                        format!("no sequence after checkpoint {seq}"),
                    )
                    .with_table(log)
                    .with_shard(shard)
                })?;
                let (message, _) = codec::split_sequence(from);
                (
                    from,
                    DeliverPolicy::ByStartSequence {
                        start_sequence: message.max(1),
                    },
                )
            }
        };
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!(
                "lakehouse consumer group {group:?}, shard {}",
                shard.0
            )),
            deliver_policy,
            ack_policy: AckPolicy::None,
            inactive_threshold: INACTIVE,
            ..Default::default()
        };
        let consumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| remote(log, "create a consumer group's cursor", e).with_shard(shard))?;
        Ok(Cursor {
            shard,
            consumer,
            name,
            from,
            next_message: checkpoint.map(|_| codec::split_sequence(from).0.max(1)),
            pending: VecDeque::new(),
            seen: (0, 0),
        })
    }

    /// Deletes a cursor's consumer (when its member leaves).
    pub(crate) async fn close_cursor(&self, cursor: Cursor) -> Result<()> {
        let log = self.name();
        let stream = self
            .inner
            .js
            .get_stream_no_info(self.stream_name(cursor.shard))
            .await
            .map_err(|e| remote(log, "open a shard's stream", e).with_shard(cursor.shard))?;
        match stream.delete_consumer(&cursor.name).await {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("not found") => Ok(()),
            Err(e) => Err(remote(log, "delete a consumer", e).with_shard(cursor.shard)),
        }
    }

    /// The next records of `cursor`, within `limit`: first those a previous poll
    /// left over, then fetched messages until the limit is reached or the shard has
    /// no more.
    pub(crate) async fn poll_cursor(
        &self,
        cursor: &mut Cursor,
        limit: ReadLimit,
    ) -> Result<Vec<Record>> {
        let shard = cursor.shard;
        let log = self.name();
        let max_records = limit.max_records.max(1);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let fits = |out: &Vec<Record>, bytes: usize, r: &Record| {
            out.len() < max_records && (out.is_empty() || bytes + r.data.len() <= limit.max_bytes)
        };
        while let Some(r) = cursor.pending.front() {
            if !fits(&out, bytes, r) {
                return Ok(out);
            }
            bytes += r.data.len();
            out.extend(cursor.pending.pop_front());
        }
        loop {
            let room = max_records - out.len();
            let want = match cursor.seen {
                (0, _) => 1,
                (m, r) => room.div_ceil((r / m).max(1)),
            }
            .clamp(1, FETCH_MESSAGES);
            let byte_room = limit.max_bytes.saturating_sub(bytes).max(1);
            let mut messages = cursor
                .consumer
                .fetch()
                .max_messages(want)
                .max_bytes(byte_room.min(i32::MAX as usize))
                .messages()
                .await
                .map_err(|e| remote(log, "fetch from a consumer group's cursor", e))?;
            let mut fetched = 0usize;
            let timeout = self.inner.config.request_timeout;
            loop {
                // A fetch answers at once (`no_wait`), with what is there; a server
                // that does not answer at all fails the poll after the request timeout.
                let Ok(next) = tokio::time::timeout(timeout, messages.next()).await else {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!("NATS: a cursor fetch got no answer within {timeout:?}"),
                    )
                    .with_table(log)
                    .with_shard(shard));
                };
                let Some(message) = next else { break };
                let message = message.map_err(|e| {
                    let text = e.to_string();
                    let kind = if text.contains("timed out") || text.contains("timeout") {
                        ErrorKind::Timeout
                    } else {
                        ErrorKind::Unavailable
                    };
                    Error::new(
                        kind,
                        format!("NATS: fetch from a consumer group's cursor: {text}"),
                    )
                    .with_table(log)
                    .with_shard(shard)
                })?;
                let info = message.info().map_err(|e| {
                    Error::new(
                        ErrorKind::Corrupt,
                        format!("a delivered message has no JetStream metadata: {e}"),
                    )
                })?;
                let seq = info.stream_sequence;
                let time_ms = i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000)
                    .unwrap_or_default();
                if let Some(expected) = cursor.next_message
                    && seq != expected
                {
                    return Err(self.gap(shard, expected, seq).await);
                }
                cursor.next_message = Some(seq + 1);
                let decoded = codec::decode(&message.payload)
                    .map_err(|e| e.with_table(log).with_shard(shard).with_offset(seq))?;
                cursor.seen.0 += 1;
                cursor.seen.1 += decoded.len();
                fetched += 1;
                for (index, (key, data)) in decoded.into_iter().enumerate() {
                    let sequence = codec::sequence(seq, index);
                    if sequence < cursor.from {
                        continue;
                    }
                    let record = Record {
                        shard,
                        sequence,
                        partition_key: key,
                        data,
                        timestamp_ms: time_ms,
                    };
                    if cursor.pending.is_empty() && fits(&out, bytes, &record) {
                        bytes += record.data.len();
                        out.push(record);
                    } else {
                        cursor.pending.push_back(record);
                    }
                }
            }
            if fetched == 0 || !cursor.pending.is_empty() || out.len() >= max_records {
                return Ok(out);
            }
        }
    }

    /// The error for a cursor that got message `got` where `expected` was next: the
    /// records between were removed by retention, or another client read them.
    async fn gap(&self, shard: ShardId, expected: u64, got: u64) -> Error {
        let trimmed = match self.stream_state(shard).await {
            Ok(state) => state.first > expected,
            Err(e) => return e,
        };
        let (kind, why) = if trimmed {
            (
                ErrorKind::PositionTrimmed,
                "retention removed them before the group read them",
            )
        } else {
            (
                ErrorKind::Conflict,
                "another client read them from the group's cursor (a lease moved)",
            )
        };
        Error::new(
            kind,
            format!(
                "messages {expected} to {} of the shard were not delivered: {why}",
                got - 1
            ),
        )
        .with_table(self.name())
        .with_shard(shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_prefixes_are_valid_names_and_distinct() {
        let a = consumer_prefix("g.a b", ShardId(3));
        assert_eq!(a, "lh-g_2ea_20b-3-");
        let long = "x".repeat(60);
        let b = consumer_prefix(&long, ShardId(0));
        let c = consumer_prefix(&format!("{long}y"), ShardId(0));
        assert_ne!(b, c);
        for p in [a, b, c] {
            assert!(
                p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            );
        }
        assert_ne!(
            consumer_prefix("g", ShardId(1)),
            consumer_prefix("g", ShardId(11))
        );
    }
}
