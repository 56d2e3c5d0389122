//! [`History`]: the per-user interactions every model keeps to exclude already-seen
//! items (and that [`Als`](crate::Als) folds new interactions into), optionally bounded
//! to the most recently touched items of each user (every fitted item is still
//! excluded then).

use lakehouse_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Event};
use crate::error;
use crate::id::{Id, IdMap};
use crate::recommender::{Query, Scored};

/// At most this many entries over its bound, a row drops its oldest one at a time.
const FEW: usize = 4;

/// No bound on the items kept per user.
pub(crate) const UNBOUNDED: usize = usize::MAX;

/// Per-user interaction history: sorted item indices with summed weights, and for each
/// entry when it was last touched.
///
/// Recency is a logical clock: every recorded interaction advances it by one and stamps
/// its entry. Stamps are `u32` and compared by age (`clock - stamp`, wrapping), so the
/// order stays right for any entry touched within the last 2³² interactions; an older
/// one only risks being kept a little longer than it should.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct History {
    pub(crate) users: IdMap,
    pub(crate) items: IdMap,
    rows: Vec<Vec<(u32, f32)>>,
    /// When each entry of `rows` was last touched, row by row. A row may have no stamps
    /// (a file from before stamps were kept): its entries then count as touched at 0.
    #[serde(default)]
    touched: Vec<Vec<u32>>,
    /// The logical clock: the stamp of the latest recorded interaction.
    #[serde(default)]
    clock: u32,
    /// Per user, every item of the fitted dataset, sorted, when rows are bounded
    /// (empty without a bound: the rows then keep them all). Seen-item exclusion
    /// consults them as well as `rows`, so a fitted model never recommends an item it
    /// was fitted on, however many the user had and whatever updates have evicted from
    /// the row since. Set by the fit only (updates neither add to nor read them), so
    /// they never grow; 4 bytes an item.
    #[serde(default)]
    fitted: Vec<Vec<u32>>,
}

/// One user's history: entries sorted by item, with their stamps.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Row {
    pub(crate) entries: Vec<(u32, f32)>,
    pub(crate) touched: Vec<u32>,
}

/// One interaction of a batch, by index: `(item, weight, stamp)`.
pub(crate) type Touch = (u32, f32, u32);

impl History {
    /// The history of `data`, every interaction kept.
    pub(crate) fn from_dataset(data: &Dataset) -> Result<History> {
        History::bounded_from_dataset(data, UNBOUNDED)
    }

    /// The history of `data` with at most `limit` items per user: the most recent ones
    /// by their latest timestamp, ties going to the larger weight, then the lower item
    /// index. Entries are stamped in that order, so later evictions follow it too.
    /// With a bound (`limit < UNBOUNDED`), every user's fitted items are also kept,
    /// without weight or stamp, for seen-item exclusion.
    pub(crate) fn bounded_from_dataset(data: &Dataset, limit: usize) -> Result<History> {
        if data.is_empty() {
            return Err(Error::new(
                ErrorKind::EmptyData,
                "cannot fit on a dataset with no interaction",
            ));
        }
        let m = data.matrix();
        let by_user = m.by_user();
        // The latest timestamp of every (user, item) pair, at its position in the CSR.
        let mut offsets = Vec::with_capacity(m.users() + 1);
        offsets.push(0usize);
        for u in 0..m.users() {
            offsets.push(offsets[u] + by_user.row(u).0.len());
        }
        let mut latest = vec![i64::MIN; offsets[m.users()]];
        for x in data.interactions() {
            let (items, _) = by_user.row(x.user as usize);
            if let Ok(k) = items.binary_search(&x.item) {
                let t = &mut latest[offsets[x.user as usize] + k];
                *t = (*t).max(x.timestamp);
            }
        }
        let limit = limit.max(1);
        let mut clock = 0u32;
        let mut rows = Vec::with_capacity(m.users());
        let mut touched = Vec::with_capacity(m.users());
        let mut fitted: Vec<Vec<u32>> = Vec::new();
        if limit < UNBOUNDED {
            fitted.reserve_exact(m.users());
        }
        let mut order: Vec<usize> = Vec::new();
        for u in 0..m.users() {
            let (items, weights) = by_user.row(u);
            let times = &latest[offsets[u]..offsets[u + 1]];
            order.clear();
            order.extend(0..items.len());
            order.sort_unstable_by(|&a, &b| {
                times[a]
                    .cmp(&times[b])
                    .then(weights[a].total_cmp(&weights[b]))
                    .then(items[b].cmp(&items[a]))
            });
            let drop = order.len().saturating_sub(limit);
            let mut stamps = vec![0u32; items.len()];
            let mut keep = vec![false; items.len()];
            for (rank, &k) in order[drop..].iter().enumerate() {
                stamps[k] = u32::try_from(rank).unwrap_or(u32::MAX);
                keep[k] = true;
            }
            clock = clock.max(u32::try_from(order.len() - drop).unwrap_or(u32::MAX));
            let mut row = Vec::with_capacity(items.len() - drop);
            let mut row_stamps = Vec::with_capacity(items.len() - drop);
            for k in (0..items.len()).filter(|&k| keep[k]) {
                row.push((items[k], weights[k]));
                row_stamps.push(stamps[k]);
            }
            rows.push(row);
            touched.push(row_stamps);
            if limit < UNBOUNDED {
                fitted.push(items.to_vec());
            }
        }
        Ok(History {
            users: data.users().clone(),
            items: data.items().clone(),
            rows,
            touched,
            clock,
            fitted,
        })
    }

    /// Ids without interactions (a model imported from vectors).
    pub(crate) fn with_ids(users: IdMap, items: IdMap) -> History {
        History {
            users,
            items,
            ..History::default()
        }
    }

    /// Checks a deserialised history: rows for mapped users only, item indices in
    /// range and sorted, weights finite and `>= 0`, a stamp per entry (or none); fitted
    /// items of mapped users only, in range and sorted.
    pub(crate) fn check(&self) -> Result<()> {
        if self.rows.len() > self.users.len()
            || self.touched.len() > self.rows.len()
            || self.fitted.len() > self.users.len()
        {
            return Err(error::corrupt("history has rows for unmapped users"));
        }
        let n = self.items.len();
        for row in &self.fitted {
            if !row.iter().all(|&i| (i as usize) < n) || !row.windows(2).all(|p| p[0] < p[1]) {
                return Err(error::corrupt(
                    "history has an unmapped or unsorted fitted item",
                ));
            }
        }
        for (u, row) in self.rows.iter().enumerate() {
            let in_range = row
                .iter()
                .all(|&(i, w)| (i as usize) < n && w.is_finite() && w >= 0.0);
            if !in_range || !row.windows(2).all(|p| p[0].0 < p[1].0) {
                return Err(error::corrupt(
                    "history row has an unmapped or unsorted item, or a bad weight",
                ));
            }
            let stamps = self.touched.get(u).map_or(0, Vec::len);
            if stamps != 0 && stamps != row.len() {
                return Err(error::corrupt(
                    "history row and its stamps differ in length",
                ));
            }
        }
        Ok(())
    }

    /// The user's index when they have at least one interaction.
    pub(crate) fn known_user(&self, user: &Id) -> Result<u32> {
        match self.users.get(user) {
            Some(u) if !self.row(u).is_empty() => Ok(u),
            _ => Err(error::unknown_user(user)),
        }
    }

    pub(crate) fn item(&self, item: &Id) -> Result<u32> {
        self.items
            .get(item)
            .ok_or_else(|| error::unknown_item(item))
    }

    pub(crate) fn row(&self, user: u32) -> &[(u32, f32)] {
        self.rows.get(user as usize).map_or(&[], |r| r.as_slice())
    }

    /// The stamp of entry `k` of the user's row.
    fn stamp(&self, user: u32, k: usize) -> u32 {
        self.touched
            .get(user as usize)
            .and_then(|t| t.get(k))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn num_items(&self) -> usize {
        self.items.len()
    }

    /// The logical clock (the stamp of the latest recorded interaction).
    pub(crate) fn clock(&self) -> u32 {
        self.clock
    }

    /// Records an event (no bound on the row); returns `(user, item, new_user,
    /// new_item)`.
    pub(crate) fn add(&mut self, e: &Event) -> Result<(u32, u32, bool, bool)> {
        let (nu, ni) = (self.users.len(), self.items.len());
        let too_many = || Error::invalid("more than u32::MAX - 1 distinct ids");
        let u = self.users.insert(e.user.clone()).ok_or_else(too_many)?;
        let i = self.items.insert(e.item.clone()).ok_or_else(too_many)?;
        self.clock = self.clock.wrapping_add(1);
        let mut row = self.take_row(u);
        match row.entries.binary_search_by_key(&i, |x| x.0) {
            Ok(k) => {
                row.entries[k].1 += e.weight;
                row.touched[k] = self.clock;
            }
            Err(k) => {
                row.entries.insert(k, (i, e.weight));
                row.touched.insert(k, self.clock);
            }
        }
        self.set_row(u, row);
        Ok((u, i, self.users.len() > nu, self.items.len() > ni))
    }

    /// Moves a user's row out (with a stamp per entry), leaving it empty.
    fn take_row(&mut self, user: u32) -> Row {
        let u = user as usize;
        let entries = self.rows.get_mut(u).map(std::mem::take).unwrap_or_default();
        let mut touched = self
            .touched
            .get_mut(u)
            .map(std::mem::take)
            .unwrap_or_default();
        touched.resize(entries.len(), 0);
        Row { entries, touched }
    }

    /// The user's row after `batch` (sorted by item, one touch per item, stamps newer
    /// than every stamp in the history), keeping at most `limit` items: the most
    /// recently touched.
    ///
    /// `clock` is the clock after the batch. `user` may be past the mapped users (a
    /// user new in the batch): their row starts empty.
    pub(crate) fn merged_row(&self, user: u32, batch: &[Touch], clock: u32, limit: usize) -> Row {
        let old = self.row(user);
        let n = old.len() + batch.len();
        let mut row = Row {
            entries: Vec::with_capacity(n),
            touched: Vec::with_capacity(n),
        };
        let (mut a, mut b) = (0, 0);
        while a < old.len() || b < batch.len() {
            let take_old = b == batch.len() || (a < old.len() && old[a].0 < batch[b].0);
            if take_old {
                row.entries.push(old[a]);
                row.touched.push(self.stamp(user, a));
                a += 1;
            } else {
                let (i, w, t) = batch[b];
                if a < old.len() && old[a].0 == i {
                    row.entries.push((i, old[a].1 + w));
                    a += 1;
                } else {
                    row.entries.push((i, w));
                }
                row.touched.push(t);
                b += 1;
            }
        }
        row.keep_recent(clock, limit);
        row
    }

    /// Replaces a user's row (the id map must already cover `user`).
    pub(crate) fn set_row(&mut self, user: u32, row: Row) {
        let u = user as usize;
        if self.rows.len() <= u {
            self.rows.resize_with(u + 1, Vec::new);
        }
        if self.touched.len() <= u {
            self.touched.resize_with(u + 1, Vec::new);
        }
        self.rows[u] = row.entries;
        self.touched[u] = row.touched;
    }

    /// Sets the clock (after a batch whose rows were set with [`set_row`](Self::set_row)).
    pub(crate) fn set_clock(&mut self, clock: u32) {
        self.clock = clock;
    }

    /// Every item `user` was fitted on, sorted, when rows are bounded; empty otherwise.
    fn fitted(&self, user: u32) -> &[u32] {
        self.fitted.get(user as usize).map_or(&[], |r| r.as_slice())
    }

    /// Whether `user` interacted with `item`: in their kept row, or in the fitted data.
    pub(crate) fn seen(&self, user: u32, item: u32) -> bool {
        self.row(user).binary_search_by_key(&item, |x| x.0).is_ok()
            || self.fitted(user).binary_search(&item).is_ok()
    }

    /// An upper bound on the number of items [`seen`](Self::seen) holds for `user` (an
    /// item both kept and fitted counts twice).
    pub(crate) fn seen_len(&self, user: u32) -> usize {
        self.row(user).len() + self.fitted(user).len()
    }

    /// Converts a top-k of indices to scored ids.
    pub(crate) fn scored(&self, top: Vec<(f32, u32)>) -> Vec<Scored> {
        top.into_iter()
            .filter_map(|(score, i)| {
                self.items.id(i).map(|id| Scored {
                    item: id.clone(),
                    score,
                })
            })
            .collect()
    }

    /// A candidate test for [`TopK`](crate::recommender::TopK) honouring the query for
    /// `user`.
    pub(crate) fn admit<'q>(
        &'q self,
        user: Option<u32>,
        query: &'q Query<'q>,
    ) -> impl Fn(u32) -> bool + 'q {
        move |i| {
            if query.exclude_seen
                && let Some(u) = user
                && self.seen(u, i)
            {
                return false;
            }
            match query.filter {
                Some(f) => self.items.id(i).is_some_and(f),
                None => true,
            }
        }
    }
}

impl Row {
    /// Drops all but the `limit` most recently touched entries (ties: the lower item
    /// index stays), with ages taken against `clock`.
    fn keep_recent(&mut self, clock: u32, limit: usize) {
        let limit = limit.max(1);
        let excess = self.entries.len().saturating_sub(limit);
        if excess == 0 {
            return;
        }
        if excess <= FEW {
            // A batch usually pushes out one or two entries: drop the oldest (of equal
            // age, the higher item index) one at a time, without sorting or allocating.
            // Item indices are distinct, so this keeps the same entries as the order
            // below.
            for _ in 0..excess {
                let key = |k: usize| (clock.wrapping_sub(self.touched[k]), self.entries[k].0);
                let mut oldest = 0;
                for k in 1..self.entries.len() {
                    if key(k) > key(oldest) {
                        oldest = k;
                    }
                }
                self.entries.remove(oldest);
                self.touched.remove(oldest);
            }
            return;
        }
        let age = |k: usize| clock.wrapping_sub(self.touched[k]);
        let mut order: Vec<usize> = (0..self.entries.len()).collect();
        order.select_nth_unstable_by(limit - 1, |&a, &b| {
            age(a)
                .cmp(&age(b))
                .then(self.entries[a].0.cmp(&self.entries[b].0))
        });
        let mut keep = vec![false; self.entries.len()];
        for &k in &order[..limit] {
            keep[k] = true;
        }
        let mut k = 0;
        self.entries.retain(|_| {
            k += 1;
            keep[k - 1]
        });
        let mut k = 0;
        self.touched.retain(|_| {
            k += 1;
            keep[k - 1]
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_rows_keep_the_most_recent_items() {
        let mut d = Dataset::new();
        // User 0 touched items a, b, c at times 1, 3, 2: c and b are the latest two.
        d.push(0, "a", 1.0, 1).unwrap();
        d.push(0, "b", 1.0, 3).unwrap();
        d.push(0, "c", 1.0, 2).unwrap();
        d.push(0, "a", 1.0, 0).unwrap();
        let h = History::bounded_from_dataset(&d, 2).unwrap();
        let names = |h: &History, row: &[(u32, f32)]| -> Vec<String> {
            row.iter()
                .map(|&(i, _)| h.items.id(i).unwrap().to_string())
                .collect()
        };
        assert_eq!(names(&h, h.row(0)), ["b", "c"]);
        h.check().unwrap();
        // The fitted item the bound left out still counts as seen.
        let a = h.items.get(&Id::from("a")).unwrap();
        assert!(h.seen(0, a));
        assert_eq!(h.seen_len(0), 5);
        let mut bad = h.clone();
        bad.fitted[0].reverse();
        assert!(bad.check().is_err(), "unsorted fitted items");
        let mut bad = h.clone();
        bad.fitted[0].push(99);
        assert!(bad.check().is_err(), "unmapped fitted item");
        // A batch touching a (older than everything kept) and b again: b and a stay.
        let a = h.items.get(&Id::from("a")).unwrap();
        let b = h.items.get(&Id::from("b")).unwrap();
        let clock = h.clock() + 2;
        let mut batch = vec![(a, 2.0, h.clock() + 1), (b, 1.0, h.clock() + 2)];
        batch.sort_by_key(|t| t.0);
        let row = h.merged_row(0, &batch, clock, 2);
        let mut h2 = h.clone();
        h2.set_row(0, row);
        h2.set_clock(clock);
        assert_eq!(names(&h2, h2.row(0)), ["a", "b"]);
        assert_eq!(h2.row(0)[0].1, 2.0, "a's dropped weight does not come back");
        assert_eq!(h2.row(0)[1].1, 2.0, "b's weight sums");
        h2.check().unwrap();
    }

    #[test]
    fn rows_without_stamps_still_merge() {
        let mut d = Dataset::new();
        d.push(1, 10, 1.0, 0).unwrap();
        d.push(1, 11, 1.0, 0).unwrap();
        let mut h = History::from_dataset(&d).unwrap();
        assert!(h.fitted.is_empty(), "unbounded rows keep every fitted item");
        h.touched.clear();
        h.check().unwrap();
        h.add(&Event::new(1, 12)).unwrap();
        assert_eq!(h.row(0).len(), 3);
        assert_eq!(h.touched[0].len(), 3);
        h.check().unwrap();
    }
}
