//! [`Als`]: implicit-feedback matrix factorisation (Hu, Koren and Volinsky 2008).

use lakehouse_core::{Error, ErrorKind, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::als_builder::{AlsBuilder, AlsParams};
use crate::data::{Dataset, Event};
use crate::error;
use crate::history::History;
use crate::hnsw::{Hnsw, HnswParams};
use crate::id::{Id, IdMap};
use crate::linalg::{CgScratch, cg_row, gram};
use crate::recommender::{Query, Recommender, Scored, TopK, dot};
use crate::rng::Rng;

mod update;

pub use update::AlsUpdate;

/// Implicit-feedback alternating least squares: users and items get `factors`-long
/// vectors whose dot product predicts preference, fitted with confidence
/// `1 + alpha * weight` on observed pairs and 1 elsewhere. Each sweep solves every row
/// with a few warm-started conjugate-gradient steps, in parallel on rayon.
///
/// * Online fold-in: [`update`](Recommender::update) recomputes the vectors of the
///   users in the events by the least-squares solution against the fixed item vectors
///   (and gives new items a vector from their users the same way), so the next
///   recommendation reflects them without retraining. One solve per user per batch,
///   over the user's kept history with the batch merged in, in parallel on rayon:
///   exact (Cholesky) by default, or a few conjugate-gradient steps warm-started
///   from the current vector for known users
///   ([`fold_in_cg_steps`](AlsParams::fold_in_cg_steps)). A served model takes
///   updates in two phases so that readers are not
///   stalled: [`prepare_update`](Self::prepare_update) computes the vectors from
///   `&self` (under a read lock), [`apply_update`](Self::apply_update) copies them in
///   (a short write lock).
/// * Bounded history: each user keeps at most
///   [`history_per_user`](AlsParams::history_per_user) items (the most recently
///   touched); fold-in solves over them, so the cost of a solve and the memory per
///   user stay bounded however long the model serves. Seen-item exclusion consults
///   them and every item the user was fitted on (kept as bare item indices, a set
///   fixed by the fit that updates do not grow), so the model never recommends back
///   what it was trained on.
/// * Serving: [`recommend`](Recommender::recommend) scans all item vectors (contiguous
///   f32, unrolled dot products, bounded top-k selection), or, after
///   [`build_index`](Self::build_index), searches an HNSW graph;
///   [`recommend_many`](Recommender::recommend_many) scores users in blocks so that
///   each pass over the item vectors serves several users.
/// * A user is known when they have interactions or an imported vector; users with
///   neither give [`ErrorKind::UnknownUser`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Als {
    params: AlsParams,
    history: Option<History>,
    user_factors: Vec<f32>,
    item_factors: Vec<f32>,
    item_norms: Vec<f32>,
    /// `YᵀY + λI` of the item vectors, for user fold-in.
    item_gram: Vec<f64>,
    /// `XᵀX + λI` of the user vectors, for item fold-in.
    user_gram: Vec<f64>,
    #[serde(skip)]
    index: Option<Hnsw>,
    /// Names the model's current content (ids, vectors, history) for
    /// [`apply_update`](Als::apply_update): a fresh value from a process-wide counter
    /// after every change, so that no two contents share one.
    #[serde(skip, default = "update::next_state")]
    state: u64,
}

/// Users scored together by [`Als::recommend_many`].
const USER_BLOCK: usize = 16;
/// Items per tile in block scoring (keeps a tile of item vectors in cache).
const ITEM_TILE: usize = 1024;

impl Als {
    /// A model with `params` (already checked) and nothing learned yet.
    pub(crate) fn untrained(params: AlsParams) -> Self {
        Als {
            params,
            history: None,
            user_factors: Vec::new(),
            item_factors: Vec::new(),
            item_norms: Vec::new(),
            item_gram: Vec::new(),
            user_gram: Vec::new(),
            index: None,
            state: update::next_state(),
        }
    }

    /// A builder with the default [`AlsParams`].
    pub fn builder() -> AlsBuilder {
        AlsBuilder::default()
    }

    /// A model from existing vectors (trained elsewhere, or generated), row-major
    /// `ids.len() x factors`.
    ///
    /// Errors with [`ErrorKind::InvalidInput`] when the lengths do not match or a value
    /// is not finite.
    pub fn from_factors(
        params: AlsParams,
        users: Vec<Id>,
        user_factors: Vec<f32>,
        items: Vec<Id>,
        item_factors: Vec<f32>,
    ) -> Result<Als> {
        let mut als = AlsBuilder::from_params(params).build()?;
        let f = params.factors;
        if users.len() * f != user_factors.len() || items.len() * f != item_factors.len() {
            return Err(Error::invalid("factor lengths do not match ids x factors"));
        }
        if !user_factors
            .iter()
            .chain(&item_factors)
            .all(|v| v.is_finite())
        {
            return Err(Error::invalid("factors must be finite"));
        }
        let (users, items) = (IdMap::from(users), IdMap::from(items));
        if users.len() * f != user_factors.len() || items.len() * f != item_factors.len() {
            return Err(Error::invalid("ids must be distinct"));
        }
        let reg = f64::from(params.regularization);
        als.item_gram = gram(&item_factors, f, reg);
        als.user_gram = gram(&user_factors, f, reg);
        als.user_factors = user_factors;
        als.item_factors = item_factors;
        als.history = Some(History::with_ids(users, items));
        als.refresh_norms();
        Ok(als)
    }

    /// Checks a deserialised model: valid parameters and vectors that match the ids.
    pub(crate) fn check(&self) -> Result<()> {
        AlsBuilder::from_params(self.params).build()?;
        let f = self.f();
        let Some(history) = &self.history else {
            return if self.user_factors.is_empty() && self.item_factors.is_empty() {
                Ok(())
            } else {
                Err(error::corrupt("unfitted model with factors"))
            };
        };
        history.check()?;
        let (users, items) = (history.users.len(), history.items.len());
        if self.user_factors.len() != users * f
            || self.item_factors.len() != items * f
            || self.item_norms.len() != items
            || self.item_gram.len() != f * f
            || self.user_gram.len() != f * f
        {
            return Err(error::corrupt(format!(
                "vector lengths do not match {users} users, {items} items and {f} factors"
            )));
        }
        let finite32 = self
            .user_factors
            .iter()
            .chain(&self.item_factors)
            .chain(&self.item_norms)
            .all(|v| v.is_finite());
        let finite64 = self
            .item_gram
            .iter()
            .chain(&self.user_gram)
            .all(|v| v.is_finite());
        if !finite32 || !finite64 {
            return Err(error::corrupt("non-finite factor"));
        }
        Ok(())
    }

    /// The hyper-parameters.
    pub fn params(&self) -> &AlsParams {
        &self.params
    }

    fn history(&self) -> Result<&History> {
        self.history
            .as_ref()
            .ok_or_else(|| error::not_fitted("ALS"))
    }

    fn f(&self) -> usize {
        self.params.factors
    }

    fn user_row(&self, u: u32) -> &[f32] {
        let f = self.f();
        self.user_factors
            .get(u as usize * f..u as usize * f + f)
            .unwrap_or(&[])
    }

    fn item_row(&self, i: u32) -> &[f32] {
        let f = self.f();
        self.item_factors
            .get(i as usize * f..i as usize * f + f)
            .unwrap_or(&[])
    }

    fn known_user(&self, user: &Id) -> Result<u32> {
        let history = self.history()?;
        match history.users.get(user) {
            Some(u) if self.user_row(u).iter().any(|&v| v != 0.0) => Ok(u),
            _ => Err(error::unknown_user(user)),
        }
    }

    /// The vector of a known user.
    pub fn user_factors(&self, user: &Id) -> Result<&[f32]> {
        Ok(self.user_row(self.known_user(user)?))
    }

    /// The vector of an item.
    pub fn item_factors(&self, item: &Id) -> Result<&[f32]> {
        Ok(self.item_row(self.history()?.item(item)?))
    }

    /// The predicted preference of `user` for `item`.
    pub fn score(&self, user: &Id, item: &Id) -> Result<f32> {
        Ok(dot(self.user_factors(user)?, self.item_factors(item)?))
    }

    /// The number of items kept in `user`'s history (0 for a user the model never saw);
    /// at most [`history_per_user`](AlsParams::history_per_user).
    pub fn history_len(&self, user: &Id) -> usize {
        self.history
            .as_ref()
            .and_then(|h| h.users.get(user).map(|u| h.row(u).len()))
            .unwrap_or(0)
    }

    /// All user ids with a vector, in index order.
    pub fn users(&self) -> Result<&IdMap> {
        Ok(&self.history()?.users)
    }

    /// All item ids, in index order.
    pub fn items(&self) -> Result<&IdMap> {
        Ok(&self.history()?.items)
    }

    /// Recomputes every item norm (after a fit or an import).
    fn refresh_norms(&mut self) {
        let f = self.f();
        self.item_norms = self
            .item_factors
            .chunks_exact(f)
            .map(|y| dot(y, y).sqrt())
            .collect();
    }

    fn confidence(&self, w: f32) -> f32 {
        1.0 + self.params.alpha * w
    }

    /// Builds an HNSW index over the item vectors; afterwards
    /// [`recommend`](Recommender::recommend) searches it instead of scanning every
    /// item (approximate: the top-k may miss items the exact scan finds). Items added by
    /// [`update`](Recommender::update) are inserted into it.
    pub fn build_index(&mut self, params: HnswParams) -> Result<()> {
        self.history()?;
        self.index = Some(Hnsw::build_mips(&self.item_factors, self.f(), params)?);
        Ok(())
    }

    /// Drops the HNSW index; recommendations scan all items again.
    pub fn drop_index(&mut self) {
        self.index = None;
    }

    /// Whether an HNSW index is in use.
    pub fn has_index(&self) -> bool {
        self.index.is_some()
    }

    /// Sets how many candidates a search of the HNSW index keeps (`ef_search`, at least
    /// `k` of a request in any case): a larger value finds more of the exact top-k and
    /// costs more time per request. The graph is kept; the next request uses the value.
    ///
    /// # Errors
    /// [`ErrorKind::NotFitted`] without an index, [`ErrorKind::InvalidInput`] for 0.
    pub fn set_index_ef_search(&mut self, ef_search: usize) -> Result<()> {
        if ef_search == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "HNSW ef_search must be at least 1",
            ));
        }
        let index = self.index.as_mut().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFitted,
                "no HNSW index: call build_index first",
            )
        })?;
        index.set_ef_search(ef_search);
        Ok(())
    }

    /// The exact top-k for a known user (full scan), whether or not an index exists.
    pub fn recommend_exact(&self, user: &Id, query: &Query<'_>) -> Result<Vec<Scored>> {
        let u = self.known_user(user)?;
        let history = self.history()?;
        let x = self.user_row(u);
        let admit = history.admit(Some(u), query);
        let mut top = TopK::new(query.k);
        for (i, y) in self.item_factors.chunks_exact(self.f()).enumerate() {
            top.offer(dot(x, y), i as u32, &admit);
        }
        Ok(history.scored(top.into_sorted()))
    }

    fn recommend_indexed(&self, index: &Hnsw, user: &Id, query: &Query<'_>) -> Result<Vec<Scored>> {
        let u = self.known_user(user)?;
        let history = self.history()?;
        let x = self.user_row(u);
        let admit = history.admit(Some(u), query);
        let extra = if query.exclude_seen {
            history.seen_len(u)
        } else {
            0
        };
        let candidates = index.search_mips(&self.item_factors, x, query.k.saturating_add(extra));
        let mut top = TopK::new(query.k);
        for (score, i) in candidates {
            top.offer(score, i, &admit);
        }
        Ok(history.scored(top.into_sorted()))
    }

    /// Adds an item that has no interactions yet, with the mean vector of the catalogue
    /// items that share its attributes (each weighted by the number of attributes
    /// shared), so it can be recommended at once.
    ///
    /// Errors with [`ErrorKind::InvalidInput`] when the item already exists or no known
    /// item shares an attribute with it.
    pub fn add_item_from_attributes(
        &mut self,
        item: impl Into<Id>,
        attributes: &[&str],
        catalog: &crate::ItemAttributes,
    ) -> Result<()> {
        let item = item.into();
        let f = self.f();
        let history = self.history()?;
        if history.items.get(&item).is_some() {
            return Err(Error::invalid("item already has a vector").with_key(item.to_string()));
        }
        let mut sum = vec![0f32; f];
        let mut total = 0f32;
        for (other, shared) in catalog.sharing(attributes) {
            if let Some(j) = history.items.get(other) {
                let y = self.item_row(j);
                for (s, v) in sum.iter_mut().zip(y) {
                    *s += shared as f32 * v;
                }
                total += shared as f32;
            }
        }
        if total == 0.0 {
            return Err(
                Error::invalid("no known item shares an attribute with the new item")
                    .with_key(item.to_string()),
            );
        }
        for s in &mut sum {
            *s /= total;
        }
        let history = self
            .history
            .as_mut()
            .ok_or_else(|| error::not_fitted("ALS"))?;
        let i = history
            .items
            .insert(item)
            .ok_or_else(|| Error::invalid("too many items"))?;
        self.item_factors.resize(i as usize * f, 0.0);
        self.item_factors.extend_from_slice(&sum);
        self.item_norms.resize(i as usize, 0.0);
        self.item_norms.push(dot(&sum, &sum).sqrt());
        if let Some(index) = &mut self.index {
            index.insert_mips(&self.item_factors, i);
        }
        self.state = update::next_state();
        Ok(())
    }
}

impl Recommender for Als {
    fn name(&self) -> &'static str {
        "als"
    }

    fn fit(&mut self, data: &Dataset) -> Result<()> {
        let history = History::bounded_from_dataset(data, self.params.history_per_user)?;
        let f = self.f();
        let m = data.matrix();
        let alpha = self.params.alpha;
        let conf = |csr: &crate::sparse::Csr| -> Vec<Vec<(u32, f32)>> {
            (0..csr.rows())
                .map(|r| {
                    let (idx, w) = csr.row(r);
                    idx.iter()
                        .zip(w)
                        .map(|(&i, &w)| (i, 1.0 + alpha * w))
                        .collect()
                })
                .collect()
        };
        let (by_user, by_item) = (conf(m.by_user()), conf(m.by_item()));
        let mut rng = Rng::new(self.params.seed);
        let mut init = |n: usize| -> Vec<f32> {
            (0..n * f)
                .map(|_| ((rng.f64() - 0.5) * 0.02) as f32)
                .collect()
        };
        let mut x = init(m.users());
        let mut y = init(m.items());
        let reg = f64::from(self.params.regularization);
        let steps = self.params.cg_steps;
        let sweep = |target: &mut [f32], other: &[f32], rows: &[Vec<(u32, f32)>]| {
            let g: Vec<f32> = gram(other, f, reg).into_iter().map(|v| v as f32).collect();
            target.par_chunks_mut(f).zip(rows.par_iter()).for_each_init(
                || CgScratch::new(f),
                |s, (row, entries)| {
                    if entries.is_empty() {
                        row.fill(0.0);
                    } else {
                        cg_row(row, &g, other, entries, steps, s);
                    }
                },
            );
        };
        for _ in 0..self.params.iterations {
            sweep(&mut x, &y, &by_user);
            sweep(&mut y, &x, &by_item);
        }
        if !x.iter().chain(&y).all(|v| v.is_finite()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "training diverged (non-finite factors); lower alpha or the weights",
            ));
        }
        self.item_gram = gram(&y, f, reg);
        self.user_gram = gram(&x, f, reg);
        self.user_factors = x;
        self.item_factors = y;
        self.history = Some(history);
        self.index = None;
        self.refresh_norms();
        self.state = update::next_state();
        Ok(())
    }

    fn recommend(&self, user: &Id, query: &Query<'_>) -> Result<Vec<Scored>> {
        match &self.index {
            Some(index) => self.recommend_indexed(index, user, query),
            None => self.recommend_exact(user, query),
        }
    }

    fn similar_items(&self, item: &Id, k: usize) -> Result<Vec<Scored>> {
        let history = self.history()?;
        let i = history.item(item)?;
        let yi = self.item_row(i);
        let ni = self.item_norms.get(i as usize).copied().unwrap_or(0.0);
        let mut top = TopK::new(k);
        let not_self = |j: u32| j != i;
        if ni > 0.0 {
            for (j, y) in self.item_factors.chunks_exact(self.f()).enumerate() {
                let nj = self.item_norms[j];
                if nj > 0.0 {
                    top.offer(dot(yi, y) / (ni * nj), j as u32, &not_self);
                }
            }
        }
        Ok(history.scored(top.into_sorted()))
    }

    /// Folds `events` in: [`prepare_update`](Als::prepare_update) then
    /// [`apply_update`](Als::apply_update) (see there).
    fn update(&mut self, events: &[Event]) -> Result<()> {
        let update = self.prepare_update(events)?;
        self.apply_update(update)
    }

    fn recommend_many(&self, users: &[Id], query: &Query<'_>) -> Vec<Result<Vec<Scored>>> {
        if self.index.is_some() || self.history.is_none() {
            return users.par_iter().map(|u| self.recommend(u, query)).collect();
        }
        let f = self.f();
        users
            .par_chunks(USER_BLOCK)
            .flat_map_iter(|block| {
                let resolved: Vec<Result<u32>> = block.iter().map(|u| self.known_user(u)).collect();
                let history = self
                    .history
                    .as_ref()
                    .expect("checked above: the model is fitted");
                let admits: Vec<_> = resolved
                    .iter()
                    .map(|r| history.admit(r.as_ref().ok().copied(), query))
                    .collect();
                let mut tops: Vec<TopK> = block.iter().map(|_| TopK::new(query.k)).collect();
                for (t, tile) in self.item_factors.chunks(ITEM_TILE * f).enumerate() {
                    let base = (t * ITEM_TILE) as u32;
                    for (b, r) in resolved.iter().enumerate() {
                        let Ok(u) = r else { continue };
                        let x = self.user_row(*u);
                        let top = &mut tops[b];
                        for (j, y) in tile.chunks_exact(f).enumerate() {
                            top.offer(dot(x, y), base + j as u32, &admits[b]);
                        }
                    }
                }
                resolved
                    .into_iter()
                    .zip(tops)
                    .map(|(r, top)| r.map(|_| history.scored(top.into_sorted())))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_tribes() -> Dataset {
        let mut d = Dataset::new();
        for u in 0..40i64 {
            let base = if u % 2 == 0 { 0 } else { 10 };
            for k in 0..10i64 {
                if (u + k) % 3 != 0 {
                    d.push(u, base + k, 1.0, 0).unwrap();
                }
            }
        }
        d
    }

    #[test]
    fn recommends_within_the_users_tribe() {
        let mut als = Als::builder().factors(8).iterations(10).build().unwrap();
        als.fit(&two_tribes()).unwrap();
        for u in 0..40i64 {
            let rec = als.recommend(&Id::from(u), &Query::top(2)).unwrap();
            let lo = if u % 2 == 0 { 0 } else { 10 };
            for s in &rec {
                let Id::Int(i) = s.item else {
                    panic!("int ids")
                };
                assert!((lo..lo + 10).contains(&i), "user {u} got {i}");
            }
        }
        let sim = als.similar_items(&Id::from(3), 3).unwrap();
        assert!(
            sim.iter()
                .all(|s| matches!(s.item, Id::Int(i) if (0..10).contains(&i) && i != 3))
        );
    }

    #[test]
    fn training_is_deterministic_for_a_seed() {
        let d = two_tribes();
        let mut a = Als::builder().factors(8).seed(7).build().unwrap();
        let mut b = Als::builder().factors(8).seed(7).build().unwrap();
        a.fit(&d).unwrap();
        b.fit(&d).unwrap();
        assert_eq!(a.item_factors, b.item_factors);
        assert_eq!(a.user_factors, b.user_factors);
    }

    #[test]
    fn bad_parameters_are_rejected() {
        assert!(Als::builder().factors(0).build().is_err());
        assert!(Als::builder().regularization(f32::NAN).build().is_err());
        assert!(Als::builder().alpha(-1.0).build().is_err());
        let als = Als::builder().build().unwrap();
        assert_eq!(
            als.recommend(&Id::from(1), &Query::top(3))
                .unwrap_err()
                .kind(),
            ErrorKind::NotFitted
        );
    }

    #[test]
    fn batch_scoring_matches_single() {
        let mut als = Als::builder().factors(8).build().unwrap();
        als.fit(&two_tribes()).unwrap();
        let users: Vec<Id> = (0..40i64)
            .map(Id::from)
            .chain([Id::from("nobody")])
            .collect();
        let q = Query::top(5);
        let many = als.recommend_many(&users, &q);
        for (u, r) in users.iter().zip(many) {
            match als.recommend(u, &q) {
                Ok(single) => assert_eq!(r.unwrap(), single),
                Err(e) => assert_eq!(r.unwrap_err().kind(), e.kind()),
            }
        }
    }
}
