//! [`Blocks`]: the queue a shard keeps its records in.
//!
//! A shard grows at one end and is trimmed at the other, like a `VecDeque`, but a
//! `VecDeque` grows by doubling: it copies every record it holds into a buffer twice
//! the size, while the shard's lock is held, and the new buffer's pages are touched
//! for the first time during that copy. Here records live in blocks of at most
//! [`BLOCK`] entries: a put that fills a block allocates one more, a full block is
//! never moved, and a trim that empties the oldest block frees it (64 KiB: small
//! enough to come from, and go back to, the allocator's free lists rather than fresh
//! pages). Only a shard's sole block grows by doubling, from a few entries, so that
//! idle shards hold little memory.

use std::collections::VecDeque;

/// Entries per block.
pub(crate) const BLOCK: usize = 1024;
/// Entries a block is first made for when it is the only one; it doubles up to `BLOCK`.
const FIRST: usize = 16;

/// A double-ended queue of `T` in fixed blocks, indexed from the oldest entry.
#[derive(Debug)]
pub(crate) struct Blocks<T> {
    /// Every block but the first and last holds exactly [`BLOCK`] entries; the first
    /// may have lost some to `pop_front`, the last may not be full yet.
    blocks: VecDeque<VecDeque<T>>,
    len: usize,
}

impl<T> Default for Blocks<T> {
    fn default() -> Self {
        Blocks {
            blocks: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> Blocks<T> {
    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends at the back.
    pub(crate) fn push_back(&mut self, value: T) {
        match self.blocks.back_mut() {
            Some(last) if last.len() < BLOCK => last.push_back(value),
            _ => {
                // A shard's first block grows from a few entries, so that idle shards
                // (and closed ones that retention emptied) hold little memory.
                let capacity = if self.blocks.is_empty() { FIRST } else { BLOCK };
                let mut block = VecDeque::with_capacity(capacity);
                block.push_back(value);
                self.blocks.push_back(block);
            }
        }
        self.len += 1;
    }

    /// Removes the oldest entry.
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        let first = self.blocks.front_mut()?;
        let value = first.pop_front()?;
        if first.is_empty() {
            self.blocks.pop_front();
        }
        self.len -= 1;
        Some(value)
    }

    /// The oldest entry.
    pub(crate) fn front(&self) -> Option<&T> {
        self.blocks.front().and_then(VecDeque::front)
    }

    /// Block and offset of entry `i`.
    fn locate(&self, i: usize) -> Option<(usize, usize)> {
        if i >= self.len {
            return None;
        }
        let head = self.blocks.front().map_or(0, VecDeque::len);
        if i < head {
            Some((0, i))
        } else {
            let rest = i - head;
            Some((1 + rest / BLOCK, rest % BLOCK))
        }
    }

    /// Entry `i` (0 is the oldest).
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        let (b, o) = self.locate(i)?;
        self.blocks.get(b).and_then(|block| block.get(o))
    }

    /// The entries from `start` on, oldest first.
    pub(crate) fn iter_from(&self, start: usize) -> impl Iterator<Item = &T> {
        let (first, offset) = self.locate(start).unwrap_or((self.blocks.len(), 0));
        self.blocks
            .range(first..)
            .enumerate()
            .flat_map(move |(k, block)| block.range(if k == 0 { offset } else { 0 }..))
    }

    /// The index of the first entry for which `pred` is false, given that `pred` is
    /// true for a prefix of the entries and false for the rest.
    pub(crate) fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid).is_some_and(&mut pred) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

impl<T> FromIterator<T> for Blocks<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut blocks = Blocks::default();
        for value in iter {
            blocks.push_back(value);
        }
        blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Push,
        Pop,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![3 => Just(Op::Push), 1 => Just(Op::Pop)]
    }

    proptest! {
        /// Any sequence of pushes and pops leaves the same entries, at the same
        /// indexes, as a `VecDeque`; reads from any index and binary searches agree.
        #[test]
        fn behaves_as_a_vecdeque(ops in proptest::collection::vec(op(), 0..6000), probe in 0usize..7000) {
            let mut model = VecDeque::new();
            let mut blocks = Blocks::default();
            for (n, op) in ops.iter().enumerate() {
                match op {
                    // Increasing values, so that `partition_point` has a sorted input.
                    Op::Push => {
                        model.push_back(n);
                        blocks.push_back(n);
                    }
                    Op::Pop => prop_assert_eq!(blocks.pop_front(), model.pop_front()),
                }
            }
            prop_assert_eq!(blocks.len(), model.len());
            prop_assert_eq!(blocks.front(), model.front());
            prop_assert_eq!(blocks.get(probe), model.get(probe));
            let tail: Vec<_> = blocks.iter_from(probe).copied().collect();
            let want: Vec<_> = model.range(probe.min(model.len())..).copied().collect();
            prop_assert_eq!(tail, want);
            let cut = ops.len() / 2;
            prop_assert_eq!(blocks.partition_point(|&v| v < cut), model.partition_point(|&v| v < cut));
        }
    }

    #[test]
    fn blocks_hold_at_most_block_entries_and_empty_ones_are_freed() {
        let mut blocks: Blocks<usize> = (0..BLOCK * 3 + 5).collect();
        assert_eq!(blocks.blocks.len(), 4);
        assert!(blocks.blocks.iter().all(|b| b.len() <= BLOCK));
        for want in 0..BLOCK {
            assert_eq!(blocks.pop_front(), Some(want));
        }
        assert_eq!(blocks.blocks.len(), 3);
        assert_eq!(blocks.get(0), Some(&BLOCK));
        assert_eq!(blocks.get(BLOCK * 2 + 4), Some(&(BLOCK * 3 + 4)));
        assert_eq!(blocks.get(BLOCK * 2 + 5), None);
        for _ in 0..BLOCK * 2 + 5 {
            assert!(blocks.pop_front().is_some());
        }
        assert_eq!((blocks.len(), blocks.blocks.len()), (0, 0));
        assert_eq!(blocks.pop_front(), None);
        blocks.push_back(7);
        assert_eq!(blocks.iter_from(0).copied().collect::<Vec<_>>(), vec![7]);
    }
}
