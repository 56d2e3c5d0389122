//! Reads: positions resolved against the stream's state, records fetched with batch
//! direct gets.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use lakehouse_core::{
    Error, ErrorKind, Position, ReadBatch, ReadLimit, Record, Result, SequenceNumber, ShardId,
};

use super::codec;
use super::{NatsLog, remote};

/// A stream's state as a read needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamState {
    /// First retained stream sequence (`last + 1` when empty).
    pub(crate) first: u64,
    /// Last stream sequence ever assigned (0 for none).
    pub(crate) last: u64,
    /// Server time of the last message, ms since the epoch.
    pub(crate) last_ms: i64,
    pub(crate) sealed: bool,
}

impl StreamState {
    /// Our sequence number the next put gets.
    pub(crate) fn next_sequence(&self) -> SequenceNumber {
        codec::sequence(self.last + 1, 0)
    }
}

/// One stored message.
struct Fetched {
    seq: u64,
    time_ms: i64,
    body: Bytes,
}

/// Where a fetch starts.
#[derive(Debug, Clone, Copy)]
enum From {
    Sequence(u64),
    Time(i64),
}

/// Messages asked for in one direct get, at most.
const FETCH_MESSAGES: usize = 256;
/// Messages asked for by a read's first direct get when it wants more records than
/// this: a message may hold thousands of records, so the first get takes one message
/// and the next ones as many as the records per message seen so far call for.
const FIRST_FETCH_RECORDS: usize = 64;

impl NatsLog {
    pub(crate) async fn stream_state(&self, shard: ShardId) -> Result<StreamState> {
        let name = self.stream_name(shard);
        let stream =
            self.inner.js.get_stream_no_info(&name).await.map_err(|e| {
                remote(&self.inner.name, "open a shard's stream", e).with_shard(shard)
            })?;
        let info = stream.get_info().await.map_err(|e| {
            let text = e.to_string();
            if text.contains("not found") {
                Error::new(
                    ErrorKind::ShardNotFound,
                    format!("stream {name} is missing"),
                )
                .with_table(&self.inner.name)
                .with_shard(shard)
            } else {
                remote(&self.inner.name, "read a shard's state", e).with_shard(shard)
            }
        })?;
        let s = &info.state;
        let first = if s.messages == 0 {
            s.last_sequence + 1
        } else {
            s.first_sequence.max(1)
        };
        let last_ms =
            i64::try_from(s.last_timestamp.unix_timestamp_nanos() / 1_000_000).unwrap_or_default();
        Ok(StreamState {
            first,
            last: s.last_sequence,
            last_ms,
            sealed: info.config.sealed,
        })
    }

    /// Reads records of `shard` from `from` within `limit`.
    pub(crate) async fn read_at(
        &self,
        shard: ShardId,
        from: Position,
        limit: ReadLimit,
    ) -> Result<ReadBatch> {
        let info = self.shard_info(shard).await?;
        let state = self.stream_state(shard).await?;
        let name = &self.inner.name;
        let err = |kind, m: String| Error::new(kind, m).with_table(name).with_shard(shard);
        let next = state.next_sequence();
        let at_sequence = |seq: SequenceNumber| -> Result<(u64, usize)> {
            if seq > next {
                return Err(err(
                    ErrorKind::InvalidPosition,
                    format!("sequence number {seq} is past the next one, {next}"),
                ));
            }
            let (m, i) = codec::split_sequence(seq);
            if m < state.first && state.first > 1 {
                return Err(err(
                    ErrorKind::PositionTrimmed,
                    format!(
                        "sequence number {seq} is older than the oldest retained, {}",
                        codec::sequence(state.first, 0)
                    ),
                ));
            }
            Ok((m.max(state.first), if m < state.first { 0 } else { i }))
        };
        let (start, mut skip) = match from {
            Position::TrimHorizon => (From::Sequence(state.first), 0),
            Position::Latest => (From::Sequence(state.last + 1), 0),
            Position::AtSequence(seq) => {
                let (m, i) = at_sequence(seq)?;
                (From::Sequence(m), i)
            }
            Position::AfterSequence(seq) => {
                let after = seq.checked_add(1).ok_or_else(|| {
                    err(
                        ErrorKind::InvalidPosition,
                        format!("no sequence after {seq}"),
                    )
                })?;
                let (m, i) = at_sequence(after)?;
                (From::Sequence(m), i)
            }
            // Nothing arrived at or after a time past the newest message.
            Position::AtTimestamp(ms) if ms > state.last_ms => (From::Sequence(state.last + 1), 0),
            Position::AtTimestamp(ms) => (From::Time(ms), 0),
        };
        let mut skip_msg = match start {
            From::Sequence(m) => Some(m),
            From::Time(_) => None,
        };
        let max_records = limit.max_records.max(1);
        let mut records: Vec<Record> = Vec::new();
        let mut bytes = 0usize;
        // Where the next read resumes: (message, index).
        let mut resume = match start {
            From::Sequence(m) => (m, skip),
            From::Time(_) => (state.last + 1, 0),
        };
        let mut next_unread_ms: Option<i64> = None;
        let mut last_read_ms: Option<i64> = None;
        let mut cursor = start;
        let (mut messages_seen, mut records_seen) = (0usize, 0usize);
        'fetch: loop {
            let room = max_records - records.len();
            let want = match (messages_seen, records_seen) {
                (0, _) if room > FIRST_FETCH_RECORDS => 1,
                (0, _) => room,
                (m, r) => room.div_ceil((r / m).max(1)),
            }
            .clamp(1, FETCH_MESSAGES);
            let byte_room = limit.max_bytes.saturating_sub(bytes).max(1);
            let fetched = self.direct_get(shard, cursor, want, byte_room).await?;
            let Some(last_fetched) = fetched.last().map(|f| f.seq) else {
                break;
            };
            for f in &fetched {
                let decoded = codec::decode(&f.body)
                    .map_err(|e| e.with_table(name).with_shard(shard).with_offset(f.seq))?;
                messages_seen += 1;
                records_seen += decoded.len();
                let from_index = if skip_msg == Some(f.seq) { skip } else { 0 };
                skip_msg = None;
                skip = 0;
                for (index, (key, data)) in decoded.into_iter().enumerate().skip(from_index) {
                    if records.len() >= max_records
                        || (!records.is_empty() && bytes + data.len() > limit.max_bytes)
                    {
                        resume = (f.seq, index);
                        next_unread_ms = Some(f.time_ms);
                        break 'fetch;
                    }
                    bytes += data.len();
                    records.push(Record {
                        shard,
                        sequence: codec::sequence(f.seq, index),
                        partition_key: key,
                        data,
                        timestamp_ms: f.time_ms,
                    });
                }
                resume = (f.seq + 1, 0);
                last_read_ms = Some(f.time_ms);
            }
            if last_fetched >= state.last
                || records.len() >= max_records
                || bytes >= limit.max_bytes
            {
                break;
            }
            cursor = From::Sequence(last_fetched + 1);
        }
        let millis_behind = match (next_unread_ms, last_read_ms) {
            (Some(t), _) => (state.last_ms - t).max(0) as u64,
            (None, Some(t)) if resume.0 <= state.last => (state.last_ms - t).max(0) as u64,
            _ => 0,
        };
        let end_of_shard =
            (info.closed || state.sealed) && next_unread_ms.is_none() && resume.0 > state.last;
        Ok(ReadBatch {
            records,
            next: Position::AtSequence(codec::sequence(resume.0, resume.1)),
            millis_behind,
            end_of_shard,
        })
    }

    /// Up to `batch` messages of `shard` from `from` (at least one if any, at most
    /// about `max_bytes`), with one batch direct get.
    async fn direct_get(
        &self,
        shard: ShardId,
        from: From,
        batch: usize,
        max_bytes: usize,
    ) -> Result<Vec<Fetched>> {
        let name = &self.inner.name;
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Error::new(ErrorKind::Unavailable, format!("NATS: {what}: {e}"))
                .with_table(name)
                .with_shard(shard)
        };
        let client = &self.inner.client;
        let inbox = client.new_inbox();
        let mut sub = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| fail("subscribe for a direct get", &e))?;
        let max_bytes = max_bytes.min(i32::MAX as usize);
        let request = match from {
            From::Sequence(seq) => {
                format!(r#"{{"seq":{seq},"batch":{batch},"max_bytes":{max_bytes}}}"#)
            }
            From::Time(ms) => format!(
                r#"{{"start_time":"{}","batch":{batch},"max_bytes":{max_bytes}}}"#,
                codec::format_rfc3339_ms(ms.max(0))
            ),
        };
        client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{}", self.stream_name(shard)),
                inbox,
                Bytes::from(request),
            )
            .await
            .map_err(|e| fail("send a direct get", &e))?;
        let timeout: Duration = self.inner.config.request_timeout;
        let mut out = Vec::new();
        loop {
            let msg = match tokio::time::timeout(timeout, sub.next()).await {
                Ok(Some(m)) => m,
                Ok(None) => return Err(fail("direct get", &"the subscription closed")),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!("NATS: a direct get got no answer within {timeout:?}"),
                    )
                    .with_table(name)
                    .with_shard(shard));
                }
            };
            if let Some(status) = msg.status {
                match status.as_u16() {
                    // End of batch, or nothing at or after the position.
                    204 | 404 => break,
                    503 => return Err(fail("direct get", &"no responders (JetStream down)")),
                    code => {
                        let text = msg.description.clone().unwrap_or_default();
                        return Err(fail("direct get", &format!("status {code} {text}")));
                    }
                }
            }
            let headers = msg.headers.as_ref();
            let header = |h: &str| {
                headers
                    .and_then(|m| m.get(h))
                    .map(|v| v.as_str().to_owned())
            };
            let seq = header("Nats-Sequence").and_then(|s| s.parse::<u64>().ok());
            let time_ms = header("Nats-Time-Stamp").and_then(|t| codec::parse_rfc3339_ms(&t));
            let (Some(seq), Some(time_ms)) = (seq, time_ms) else {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    "a direct get answer lacks its sequence or time header",
                )
                .with_table(name)
                .with_shard(shard));
            };
            out.push(Fetched {
                seq,
                time_ms,
                body: msg.payload,
            });
            if out.len() > batch {
                break;
            }
        }
        let _ = sub.unsubscribe().await;
        Ok(out)
    }
}
