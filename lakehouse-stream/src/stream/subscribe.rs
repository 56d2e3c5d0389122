//! Push subscriptions (enhanced fan-out): a subscriber is woken when records arrive.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lakehouse_core::{Position, ReadLimit, Record, Result, SequenceNumber, ShardId};

use super::Stream;
use super::shard::Shard;

impl Stream {
    /// Subscribes to `shard` from `position`: the subscriber is woken when records
    /// arrive instead of polling (enhanced fan-out). Each subscription reads from the
    /// log with its own position and takes at most `buffer` records per delivery, so a
    /// slow subscriber holds no memory and misses nothing.
    ///
    /// # Errors
    ///
    /// As [`shard_iterator`](Self::shard_iterator).
    pub fn subscribe(
        &self,
        shard: ShardId,
        position: Position,
        buffer: usize,
    ) -> Result<Subscription> {
        let s = self.shard(shard)?;
        let start = self.resolve_start(&s, position)?;
        Ok(Subscription {
            stream: self.clone(),
            shard: s,
            next: start,
            buffer: buffer.max(1),
        })
    }
}

/// A push subscription to one shard; made by [`Stream::subscribe`].
pub struct Subscription {
    stream: Stream,
    shard: Arc<Shard>,
    next: SequenceNumber,
    buffer: usize,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("shard", &self.shard.id)
            .field("next", &self.next)
            .finish()
    }
}

impl Subscription {
    /// The next records, waiting up to `timeout` for some to arrive. An empty result
    /// means the timeout passed; `Ok(None)` means the shard is closed and fully
    /// delivered (subscribe to its children).
    ///
    /// # Errors
    ///
    /// `PositionTrimmed` when retention removed records before they were delivered
    /// (under [`TrimmedRead::Error`](crate::TrimmedRead::Error)).
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<Vec<Record>>> {
        // `None`: a timeout too long to name an instant waits for records.
        let deadline = Instant::now().checked_add(timeout);
        {
            let mut log = self.shard.log.lock();
            while log.visible <= self.next && !log.closed {
                match deadline {
                    Some(deadline) => {
                        let now = Instant::now();
                        if now >= deadline {
                            return Ok(Some(Vec::new()));
                        }
                        self.shard.data.wait_for(&mut log, deadline - now);
                    }
                    None => self.shard.data.wait(&mut log),
                }
            }
        }
        let batch = self.stream.read_at(
            self.shard.id,
            Position::AtSequence(self.next),
            ReadLimit::records(self.buffer),
        )?;
        if let Position::AtSequence(s) = batch.next {
            self.next = s;
        }
        if batch.records.is_empty() && batch.end_of_shard {
            return Ok(None);
        }
        Ok(Some(batch.records))
    }

    /// The sequence number the next delivery starts at.
    pub fn position(&self) -> SequenceNumber {
        self.next
    }
}
