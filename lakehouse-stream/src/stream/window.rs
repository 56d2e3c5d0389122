//! A shard's records in memory: what they cost, and the window a durable shard keeps.
//!
//! An in-memory shard holds every retained record. A durable shard holds only its
//! newest records (the memory window): once a record's frame is in its segment file
//! and the window holds more than `memory_window_bytes`, the oldest records leave
//! memory and are read back from the segments. The shard keeps a sparse index of its
//! segments ([`Mark`]s) to find them.

use std::collections::VecDeque;
use std::mem::size_of;

use lakehouse_core::{PartitionKey, SequenceNumber};

use super::shard::{Entry, ShardLog};
use crate::blocks::Blocks;
use crate::durable::{Mark, frame_len};

/// Bytes of the entry a shard keeps per record in memory (64 on 64-bit targets).
pub(crate) const ENTRY_BYTES: usize = size_of::<Entry>();

/// What a record held in memory costs: its entry, its payload, and its partition key's
/// heap allocation when the key is too long to be held inline (over 24 bytes).
/// Allocator rounding and headers are not counted.
pub(crate) fn memory_cost(key: &PartitionKey, data_len: usize) -> usize {
    let key_heap = if key.is_heap_allocated() {
        key.capacity()
    } else {
        0
    };
    ENTRY_BYTES + data_len + key_heap
}

impl ShardLog {
    pub(super) fn new(durable: bool) -> ShardLog {
        ShardLog {
            first: 0,
            mem_first: 0,
            records: Blocks::default(),
            bytes: 0,
            mem_bytes: 0,
            durable,
            first_pos: 0,
            mem_pos: 0,
            written: 0,
            marks: VecDeque::new(),
            newest_ms: i64::MIN,
            closed: false,
            visible: 0,
            pending: Vec::new(),
            pending_first: 0,
        }
    }

    /// The sequence number the next record gets.
    pub(super) fn next(&self) -> SequenceNumber {
        self.mem_first + self.records.len() as u64
    }

    /// What a record adds to the bytes counted against `max_shard_bytes`: its memory
    /// cost for an in-memory shard, its frame's bytes for a durable one.
    fn charge(&self, key: &PartitionKey, data_len: usize) -> usize {
        if self.durable {
            frame_len(key.len(), data_len)
        } else {
            memory_cost(key, data_len)
        }
    }

    /// Whether a record fits under `max` bytes. A shard holding no record takes any
    /// record, so that one within the record limit is never refused for good.
    pub(super) fn fits(&self, key: &PartitionKey, data_len: usize, max: usize) -> bool {
        self.first == self.next() || self.bytes + self.charge(key, data_len) <= max
    }

    /// Appends a record at `next()`.
    pub(super) fn push(&mut self, entry: Entry) {
        self.bytes += self.charge(&entry.key, entry.data.len());
        self.mem_bytes += memory_cost(&entry.key, entry.data.len());
        self.records.push_back(entry);
    }

    /// Drops the oldest record from memory (it stays retained on disk when durable).
    fn pop_memory(&mut self) -> Option<Entry> {
        let e = self.records.pop_front()?;
        self.mem_bytes = self
            .mem_bytes
            .saturating_sub(memory_cost(&e.key, e.data.len()));
        if self.durable {
            self.mem_pos += frame_len(e.key.len(), e.data.len()) as u64;
        }
        self.mem_first += 1;
        Some(e)
    }

    /// Trims records at least `age_ms` old at `now_ms`; returns whether any were.
    ///
    /// Records in memory are trimmed one by one. Records only on disk are trimmed a
    /// block at a time (from one index mark to the next, or to the memory window),
    /// once the record that follows the block is that old: a record on disk can
    /// outlive its retention by as long as the rest of its block (4 KiB of frames)
    /// took to arrive.
    pub(super) fn trim_age(&mut self, age_ms: i64, now_ms: i64) -> bool {
        let mut trimmed = false;
        while self.first < self.mem_first {
            let i = self.marks.partition_point(|m| m.sequence <= self.first);
            let (cut, cut_pos, cut_ms) = match self.marks.get(i) {
                Some(m) if m.sequence < self.mem_first => (m.sequence, m.pos, m.timestamp_ms),
                _ => (
                    self.mem_first,
                    self.mem_pos,
                    self.records
                        .front()
                        .map_or(self.newest_ms, |e| e.timestamp_ms),
                ),
            };
            if now_ms.saturating_sub(cut_ms) < age_ms {
                break;
            }
            let block =
                usize::try_from(cut_pos.saturating_sub(self.first_pos)).unwrap_or(usize::MAX);
            self.bytes = self.bytes.saturating_sub(block);
            self.first = cut;
            self.first_pos = cut_pos;
            trimmed = true;
        }
        if self.first == self.mem_first {
            while self
                .records
                .front()
                .is_some_and(|r| now_ms.saturating_sub(r.timestamp_ms) >= age_ms)
            {
                if let Some(e) = self.pop_memory() {
                    self.bytes = self.bytes.saturating_sub(self.charge(&e.key, e.data.len()));
                    self.first = self.mem_first;
                    self.first_pos = self.mem_pos;
                    trimmed = true;
                }
            }
        }
        if trimmed {
            self.prune_marks();
        }
        trimmed
    }

    /// Drops the marks no retained record needs: all before the last one at or
    /// before `first`.
    fn prune_marks(&mut self) {
        while self.marks.get(1).is_some_and(|m| m.sequence <= self.first) {
            self.marks.pop_front();
        }
    }

    /// Records below `end` are now in the segment files, indexed by `marks`: the
    /// oldest leave memory while the window holds more than `window` bytes.
    pub(super) fn written_to(&mut self, end: SequenceNumber, marks: Vec<Mark>, window: usize) {
        self.written = self.written.max(end);
        self.marks.extend(marks);
        self.prune_marks();
        // An evicted record stays retained, on disk: `first` does not move.
        while self.mem_bytes > window && self.mem_first < self.written {
            self.pop_memory();
        }
    }

    /// The index mark at or before `sequence` (a record on disk).
    pub(super) fn mark_for(&self, sequence: SequenceNumber) -> Option<Mark> {
        let i = self.marks.partition_point(|m| m.sequence <= sequence);
        self.marks.get(i.checked_sub(1)?).copied()
    }

    /// Where a search for the first record that arrived at or after `ts` starts
    /// on disk: the last mark at or before `first` or before `ts`, whichever is later.
    pub(super) fn mark_for_timestamp(&self, ts: i64) -> Option<Mark> {
        let floor = self.mark_for(self.first)?;
        let i = self.marks.partition_point(|m| m.timestamp_ms < ts);
        Some(match i.checked_sub(1).and_then(|i| self.marks.get(i)) {
            Some(m) if m.sequence > floor.sequence && m.sequence < self.mem_first => *m,
            _ => floor,
        })
    }

    /// Memory the shard's records take: the window's records (see
    /// [`memory_cost`]), frames waiting to be written and the segment index.
    pub(super) fn memory_bytes(&self) -> usize {
        self.mem_bytes + self.pending.capacity() + self.marks.len() * size_of::<Mark>()
    }

    /// Sets a reopened durable shard's state: `window` holds its newest records,
    /// which end at `next`; `bytes` of frames hold records from `first` on.
    pub(super) fn restore(
        &mut self,
        first: SequenceNumber,
        next: SequenceNumber,
        bytes: u64,
        window: impl ExactSizeIterator<Item = Entry>,
        marks: Vec<Mark>,
        newest_ms: i64,
    ) {
        self.first = first;
        self.mem_first = next - window.len() as u64;
        self.first_pos = 0;
        self.mem_pos = bytes;
        for e in window {
            self.mem_pos = self
                .mem_pos
                .saturating_sub(frame_len(e.key.len(), e.data.len()) as u64);
            self.mem_bytes += memory_cost(&e.key, e.data.len());
            self.records.push_back(e);
        }
        self.bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        self.written = next;
        self.marks = marks.into();
        self.newest_ms = newest_ms;
        self.visible = next;
        self.pending_first = next;
    }
}
