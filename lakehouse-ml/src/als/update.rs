//! Online fold-in of [`Als`] in two phases: [`Als::prepare_update`] computes new
//! vectors from `&self`, [`Als::apply_update`] copies them in.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use lakehouse_core::{Error, ErrorKind, Result};
use rayon::prelude::*;

use super::Als;
use crate::data::Event;
use crate::error;
use crate::history::{Row, Touch};
use crate::id::{Id, IdMap};
use crate::linalg::{SolveScratch, cg_gathered, solve_gathered};
use crate::recommender::{check_events, dot};

/// The source of [`Als`] content states; 0 is never handed out.
static STATES: AtomicU64 = AtomicU64::new(1);

/// A state no model has had yet.
pub(super) fn next_state() -> u64 {
    STATES.fetch_add(1, Ordering::Relaxed)
}

/// New user and item vectors for a batch of events, computed by
/// [`Als::prepare_update`] and applied by [`Als::apply_update`].
///
/// It holds one vector and one history row per user in the batch, and one vector per
/// item the model had not seen: memory proportional to the batch, not to the model.
#[derive(Debug, Clone)]
#[must_use = "an update changes nothing until it is applied"]
pub struct AlsUpdate {
    /// The content state of the model it was computed from.
    state: u64,
    events: usize,
    clock: u32,
    base_users: usize,
    base_items: usize,
    new_users: Vec<Id>,
    new_items: Vec<Id>,
    /// `new_items.len() x factors`.
    new_item_factors: Vec<f32>,
    /// Users whose vector and history change, ascending.
    users: Vec<u32>,
    /// `users.len() x factors`.
    user_factors: Vec<f32>,
    rows: Vec<Row>,
}

impl AlsUpdate {
    /// The number of events it was prepared from.
    pub fn events(&self) -> usize {
        self.events
    }

    /// The number of users whose vector it recomputes (one solve each).
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// The number of users the model had not seen.
    pub fn new_users(&self) -> usize {
        self.new_users.len()
    }

    /// The number of items the model had not seen.
    pub fn new_items(&self) -> usize {
        self.new_items.len()
    }

    /// `true` when it was prepared from no event (applying it changes nothing).
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }
}

/// The index of `id` in `map`, or the index it gets as a new id.
fn resolve<'e>(
    map: &IdMap,
    new: &mut Vec<Id>,
    new_index: &mut HashMap<&'e Id, u32>,
    id: &'e Id,
) -> Result<u32> {
    if let Some(i) = map.get(id) {
        return Ok(i);
    }
    if let Some(&i) = new_index.get(id) {
        return Ok(i);
    }
    let i = u32::try_from(map.len() + new.len())
        .ok()
        .filter(|&i| i < u32::MAX)
        .ok_or_else(|| Error::invalid("more than u32::MAX - 1 distinct ids"))?;
    new_index.insert(id, i);
    new.push(id.clone());
    Ok(i)
}

fn not_positive_definite() -> Error {
    Error::new(
        ErrorKind::Internal,
        "fold-in system is not positive definite",
    )
}

fn diverged() -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        "fold-in diverged (non-finite factors); lower alpha or the weights",
    )
}

impl Als {
    /// Computes the fold-in of `events` without changing the model: for every user in
    /// the events, the least-squares vector against the fixed item vectors over the
    /// user's history with the events merged in (repeated pairs sum their weights;
    /// at most [`history_per_user`](crate::AlsParams::history_per_user) items, the most
    /// recently touched, are kept); for every item the model has not seen, a vector
    /// from the known users who touched it, the same way. One solve per user and per new
    /// item, in parallel on the current rayon pool. A user who already has a vector is
    /// solved by [`fold_in_cg_steps`](crate::AlsParams::fold_in_cg_steps)
    /// conjugate-gradient steps warm-started from it (approximate, `O(n x factors)` a
    /// step for `n` kept items), unless the batch touches a quarter or more of their
    /// kept items; everyone else, and everyone when that parameter is 0, exactly.
    ///
    /// Takes `&self`, so a served model can prepare under a read lock while requests
    /// are answered; then [`apply_update`](Self::apply_update) under a short write
    /// lock. The update applies to the model exactly as it was when prepared (or a
    /// clone of it that has not changed since either): if the model changed in between
    /// (another update applied, a refit, an added item), `apply_update` refuses it with
    /// [`ErrorKind::Conflict`] and changes nothing; prepare it again from the same
    /// events.
    ///
    /// # Errors
    /// [`ErrorKind::NotFitted`] before [`fit`](crate::Recommender::fit) or
    /// [`from_factors`](Self::from_factors); [`ErrorKind::InvalidInput`] for a weight
    /// that is negative or not finite (nothing is prepared), too many distinct ids, or
    /// weights so large that a solve is not finite.
    pub fn prepare_update(&self, events: &[Event]) -> Result<AlsUpdate> {
        let history = self.history()?;
        check_events(events)?;
        let f = self.f();
        let (base_users, base_items) = (history.users.len(), history.items.len());
        let mut update = AlsUpdate {
            state: self.state,
            events: events.len(),
            clock: history.clock(),
            base_users,
            base_items,
            new_users: Vec::new(),
            new_items: Vec::new(),
            new_item_factors: Vec::new(),
            users: Vec::new(),
            user_factors: Vec::new(),
            rows: Vec::new(),
        };
        if events.is_empty() {
            return Ok(update);
        }

        // Events by index, stamped in order after the history's clock; then sorted by
        // (user, item) with repeated pairs merged (weights summed, the latest stamp).
        let (mut new_user_index, mut new_item_index) = (HashMap::new(), HashMap::new());
        let mut touched: Vec<(u32, Touch)> = Vec::with_capacity(events.len());
        let mut stamp = history.clock();
        for e in events {
            let u = resolve(
                &history.users,
                &mut update.new_users,
                &mut new_user_index,
                &e.user,
            )?;
            let i = resolve(
                &history.items,
                &mut update.new_items,
                &mut new_item_index,
                &e.item,
            )?;
            stamp = stamp.wrapping_add(1);
            touched.push((u, (i, e.weight, stamp)));
        }
        update.clock = stamp;
        // Stable: equal pairs stay in event order, so the last one has the latest stamp.
        touched.sort_by_key(|&(u, (i, _, _))| (u, i));
        let mut users: Vec<u32> = Vec::with_capacity(touched.len());
        let mut batch: Vec<Touch> = Vec::with_capacity(touched.len());
        for (u, (i, w, t)) in touched {
            match (users.last(), batch.last_mut()) {
                (Some(&lu), Some(last)) if lu == u && last.0 == i => {
                    last.1 += w;
                    last.2 = t;
                }
                _ => {
                    users.push(u);
                    batch.push((i, w, t));
                }
            }
        }

        // New items first: their vectors enter the solves of their users.
        let mut by_new_item: Vec<(u32, u32, f32)> = users
            .iter()
            .zip(&batch)
            .filter(|(_, t)| t.0 as usize >= base_items)
            .map(|(&u, &(i, w, _))| (i, u, w))
            .collect();
        by_new_item.sort_unstable_by_key(|&(i, u, _)| (i, u));
        let item_groups = groups(&by_new_item, |x| x.0);
        let user_known =
            |u: u32| (u as usize) < base_users && self.user_row(u).iter().any(|&v| v != 0.0);
        let item_vectors: Vec<Vec<f32>> = item_groups
            .par_iter()
            .map_init(SolveScratch::default, |s, &(a, b)| {
                let entries: Vec<(&[f32], f32)> = by_new_item[a..b]
                    .iter()
                    .filter(|&&(_, u, _)| user_known(u))
                    .map(|&(_, u, w)| (self.user_row(u), self.confidence(w)))
                    .collect();
                let mut y = vec![0f32; f];
                if !solve_gathered(&self.user_gram, f, entries.into_iter(), s, &mut y) {
                    return Err(not_positive_definite());
                }
                if !y.iter().all(|v| v.is_finite()) {
                    return Err(diverged());
                }
                Ok(y)
            })
            .collect::<Result<_>>()?;
        update.new_item_factors = vec![0f32; update.new_items.len() * f];
        for (&(a, _), y) in item_groups.iter().zip(&item_vectors) {
            let k = by_new_item[a].0 as usize - base_items;
            update.new_item_factors[k * f..k * f + f].copy_from_slice(y);
        }

        // One solve per user over the merged, bounded row.
        let new_item_factors = &update.new_item_factors;
        let item_vector = |i: u32| -> &[f32] {
            match (i as usize).checked_sub(base_items) {
                None => self.item_row(i),
                Some(k) => &new_item_factors[k * f..k * f + f],
            }
        };
        let (clock, limit) = (update.clock, self.params.history_per_user);
        // CG solves an f-dimensional system in f steps, up to rounding: more do nothing.
        let steps = self.params.fold_in_cg_steps.min(2 * f);
        let gram32: Vec<f32> = if steps > 0 {
            self.item_gram.iter().map(|&v| v as f32).collect()
        } else {
            Vec::new()
        };
        let user_groups = groups(&users, |&u| u);
        let mut user_factors = vec![0f32; user_groups.len() * f];
        update.rows = user_factors
            .par_chunks_mut(f)
            .zip(user_groups.par_iter())
            .map_init(SolveScratch::default, |s, (x, &(a, b))| {
                let u = users[a];
                let row = history.merged_row(u, &batch[a..b], clock, limit);
                let entries = row
                    .entries
                    .iter()
                    .map(|&(i, w)| (item_vector(i), self.confidence(w)));
                // Warm-started CG for a user with a vector whose batch changes less
                // than a quarter of their row; the exact solve otherwise.
                let current: &[f32] = if (u as usize) < base_users {
                    self.user_row(u)
                } else {
                    &[]
                };
                let incremental = 4 * (b - a) < row.entries.len();
                if steps > 0 && incremental && current.iter().any(|&v| v != 0.0) {
                    x.copy_from_slice(current);
                    cg_gathered(&gram32, f, entries, steps, s, x);
                } else if !solve_gathered(&self.item_gram, f, entries, s, x) {
                    return Err(not_positive_definite());
                }
                if !x.iter().all(|v| v.is_finite()) {
                    return Err(diverged());
                }
                Ok(row)
            })
            .collect::<Result<_>>()?;
        update.users = user_groups.iter().map(|&(a, _)| users[a]).collect();
        update.user_factors = user_factors;
        Ok(update)
    }

    /// Applies an update from [`prepare_update`](Self::prepare_update): maps its new
    /// users and items, copies its vectors, replaces the history rows of its users,
    /// extends the item norms by the new items and inserts them in the HNSW index if
    /// there is one. The work is proportional to the update (plus the index insertions),
    /// not to the model, so a write lock around it is short.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] when the model changed after the update was prepared
    /// (nothing is changed; prepare it again from the same events).
    pub fn apply_update(&mut self, update: AlsUpdate) -> Result<()> {
        if update.state != self.state {
            return Err(Error::new(
                ErrorKind::Conflict,
                "the model changed after this update was prepared; prepare it again",
            ));
        }
        if update.is_empty() {
            return Ok(());
        }
        let f = self.f();
        let history = self
            .history
            .as_mut()
            .ok_or_else(|| error::not_fitted("ALS"))?;
        if history.users.len() != update.base_users || history.items.len() != update.base_items {
            return Err(Error::new(
                ErrorKind::Internal,
                "update state matches but the id maps differ",
            ));
        }
        for id in update.new_users {
            history.users.insert(id);
        }
        for id in update.new_items {
            history.items.insert(id);
        }
        self.user_factors.resize(history.users.len() * f, 0.0);
        self.item_factors.resize(update.base_items * f, 0.0);
        self.item_factors
            .extend_from_slice(&update.new_item_factors);
        self.item_norms.resize(update.base_items, 0.0);
        self.item_norms.extend(
            update
                .new_item_factors
                .chunks_exact(f)
                .map(|y| dot(y, y).sqrt()),
        );
        for ((&u, x), row) in update
            .users
            .iter()
            .zip(update.user_factors.chunks_exact(f))
            .zip(update.rows)
        {
            let start = u as usize * f;
            self.user_factors[start..start + f].copy_from_slice(x);
            history.set_row(u, row);
        }
        history.set_clock(update.clock);
        if let Some(index) = &mut self.index {
            for i in update.base_items..self.item_norms.len() {
                index.insert_mips(&self.item_factors, i as u32);
            }
        }
        self.state = next_state();
        Ok(())
    }
}

/// The ranges of equal keys in `sorted`.
fn groups<T, K: PartialEq>(sorted: &[T], key: impl Fn(&T) -> K) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for k in 1..=sorted.len() {
        if k == sorted.len() || key(&sorted[k]) != key(&sorted[start]) {
            out.push((start, k));
            start = k;
        }
    }
    out
}

#[cfg(test)]
mod tests;
