//! The [`Recommender`] trait, queries and results, and the per-user history every
//! model keeps to exclude already-seen items.

use std::fmt;

use lakehouse_core::Result;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Event, check_weight};
use crate::id::Id;

/// One recommended or similar item with its score (higher is better; scales differ
/// between models).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The item.
    pub item: Id,
    /// The model's score.
    pub score: f32,
}

/// An item filter: `true` keeps the item (in stock, in the category, ...).
pub type ItemFilter<'a> = &'a (dyn Fn(&Id) -> bool + Sync);

/// What to recommend: how many items, whether seen items are excluded (the default),
/// and an optional filter.
#[derive(Clone, Copy)]
#[must_use]
pub struct Query<'a> {
    pub(crate) k: usize,
    pub(crate) exclude_seen: bool,
    pub(crate) filter: Option<ItemFilter<'a>>,
}

impl<'a> Query<'a> {
    /// The top `k` items the user has not interacted with yet.
    ///
    /// When fewer than `k` items qualify (a small catalogue, a strict filter), fewer are
    /// returned; `k = 0` returns nothing.
    pub fn top(k: usize) -> Self {
        Query {
            k,
            exclude_seen: true,
            filter: None,
        }
    }

    /// Also returns items the user has already interacted with.
    pub fn include_seen(mut self) -> Self {
        self.exclude_seen = false;
        self
    }

    /// Keeps only items for which `filter` returns `true`. The filter is consulted only
    /// for items that would enter the top `k`.
    pub fn filter(mut self, filter: ItemFilter<'a>) -> Self {
        self.filter = Some(filter);
        self
    }

    /// The number of items asked for.
    pub fn k(&self) -> usize {
        self.k
    }
}

impl fmt::Debug for Query<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Query")
            .field("k", &self.k)
            .field("exclude_seen", &self.exclude_seen)
            .field("filter", &self.filter.is_some())
            .finish()
    }
}

/// A recommendation model.
///
/// Users and items are named by [`Id`]. A user is *known* when the model has seen at
/// least one of their interactions (in [`fit`](Self::fit) or [`update`](Self::update));
/// unknown users give [`ErrorKind::UnknownUser`](crate::ErrorKind::UnknownUser) (wrap a model in
/// [`ColdStart`](crate::ColdStart) to answer them from popularity or segments).
pub trait Recommender: Send + Sync + fmt::Debug {
    /// A short name of the model (`"als"`, `"item-item"`, ...).
    fn name(&self) -> &'static str;

    /// Trains on `data`, replacing what the model learnt before.
    ///
    /// Errors with [`ErrorKind::EmptyData`](crate::ErrorKind::EmptyData) when `data` has no interaction.
    fn fit(&mut self, data: &Dataset) -> Result<()>;

    /// The top items for `user`.
    fn recommend(&self, user: &Id, query: &Query<'_>) -> Result<Vec<Scored>>;

    /// The items most similar to `item`, best first, `item` itself excluded.
    fn similar_items(&self, item: &Id, k: usize) -> Result<Vec<Scored>>;

    /// Takes new interactions into account without retraining; the next
    /// recommendation for their users reflects them. Validates every event before
    /// applying any.
    fn update(&mut self, events: &[Event]) -> Result<()>;

    /// Recommends for many users in parallel on the rayon pool; one result per user,
    /// in order. Must not be called from a tokio worker thread (use `spawn_blocking`).
    fn recommend_many(&self, users: &[Id], query: &Query<'_>) -> Vec<Result<Vec<Scored>>> {
        users.par_iter().map(|u| self.recommend(u, query)).collect()
    }
}

/// Checks a batch of events before any is applied.
pub(crate) fn check_events(events: &[Event]) -> Result<()> {
    for e in events {
        check_weight(e.weight, &e.user, &e.item)?;
    }
    Ok(())
}

/// Bounded selection of the `k` best `(score, index)` pairs: a min-heap in a vector,
/// no allocation per candidate. Ties go to the lower index; NaN scores are ignored.
#[derive(Debug)]
pub(crate) struct TopK {
    k: usize,
    heap: Vec<(f32, u32)>,
}

/// `a` ranks below `b` (lower score, or equal score and higher index).
#[inline]
fn worse(a: (f32, u32), b: (f32, u32)) -> bool {
    a.0 < b.0 || (a.0 == b.0 && a.1 > b.1)
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        TopK {
            k,
            // `k` may be far larger than the catalogue (even usize::MAX): grow on demand.
            heap: Vec::with_capacity(k.min(1024)),
        }
    }

    /// Whether a candidate with `score` and `index` would enter.
    #[inline]
    pub(crate) fn would_take(&self, score: f32, index: u32) -> bool {
        if self.k == 0 || score.is_nan() {
            return false;
        }
        self.heap.len() < self.k || worse(self.heap[0], (score, index))
    }

    /// Offers a candidate; `admit` is consulted only when it would enter.
    #[inline]
    pub(crate) fn offer(&mut self, score: f32, index: u32, admit: &impl Fn(u32) -> bool) {
        if !self.would_take(score, index) || !admit(index) {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push((score, index));
            let mut c = self.heap.len() - 1;
            while c > 0 {
                let p = (c - 1) / 2;
                if worse(self.heap[c], self.heap[p]) {
                    self.heap.swap(c, p);
                    c = p;
                } else {
                    break;
                }
            }
        } else {
            self.heap[0] = (score, index);
            let n = self.heap.len();
            let mut p = 0;
            loop {
                let (l, r) = (2 * p + 1, 2 * p + 2);
                let mut m = p;
                if l < n && worse(self.heap[l], self.heap[m]) {
                    m = l;
                }
                if r < n && worse(self.heap[r], self.heap[m]) {
                    m = r;
                }
                if m == p {
                    break;
                }
                self.heap.swap(p, m);
                p = m;
            }
        }
    }

    /// Best first.
    pub(crate) fn into_sorted(mut self) -> Vec<(f32, u32)> {
        self.heap
            .sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        self.heap
    }
}

/// Dot product written for auto-vectorisation (eight independent lanes).
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_keeps_best_with_ties_to_lower_index() {
        let mut t = TopK::new(3);
        let all = |_| true;
        for (i, s) in [1.0, 5.0, 3.0, 5.0, f32::NAN, 4.0, 0.5]
            .into_iter()
            .enumerate()
        {
            t.offer(s, i as u32, &all);
        }
        assert_eq!(t.into_sorted(), vec![(5.0, 1), (5.0, 3), (4.0, 5)]);
        let mut none = TopK::new(0);
        none.offer(1.0, 0, &all);
        assert!(none.into_sorted().is_empty());
    }

    #[test]
    fn topk_respects_admit() {
        let mut t = TopK::new(2);
        let odd = |i: u32| i % 2 == 1;
        for i in 0..10u32 {
            t.offer(i as f32, i, &odd);
        }
        assert_eq!(t.into_sorted(), vec![(9.0, 9), (7.0, 7)]);
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.1).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }
}
