//! [`Ease`]: EASE, the closed-form linear item-item model of Steck (2019).

use lakehouse_core::{Error, ErrorKind, Result};
use ndarray::{Array2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Event};
use crate::error;
use crate::history::History;
use crate::id::Id;
use crate::recommender::{Query, Recommender, Scored, TopK, check_events};
use crate::sparse::InteractionMatrix;
use crate::spd;

/// The largest catalogue [`Ease`] fits by default: the fit holds about three dense
/// `items x items` f64 matrices (4.8 GB at 20 000 items) and the model one in f32.
pub const DEFAULT_EASE_MAX_ITEMS: usize = 20_000;

/// EASE ("embarrassingly shallow autoencoder", Steck 2019): a dense item-item weight
/// matrix `B` learnt in closed form, `B = I - P diag(1/diag(P))` with `P = (XᵀX +
/// λI)⁻¹` for the user-item matrix `X`, so that `B` has a zero diagonal (no item
/// predicts itself). A user's score for item `j` is `Σᵢ x_ui B_ij` over the user's
/// items. On implicit feedback such as MovieLens it often ranks better than matrix
/// factorisation, at the cost of an `items x items` model.
///
/// * Fit: the Gram matrix `XᵀX` from the sparse interactions, then the inverse by a
///   blocked Cholesky factorisation in f64 on the rayon pool; `O(items³)` time and
///   `O(items²)` memory, so the catalogue is bounded ([`max_items`](Self::max_items),
///   default [`DEFAULT_EASE_MAX_ITEMS`]; more gives
///   [`ErrorKind::ResourcesExhausted`]).
/// * Serving: `O(history x items)` per user, exact.
/// * [`update`](Recommender::update) adds interactions to users' histories, and since
///   scores are linear in a user's interactions the next recommendation reflects them
///   exactly (a new user is served from their first interaction). The weights change
///   only on the next [`fit`](Recommender::fit): items new since the fit score 0 and
///   have no similar items.
/// * Unknown users give [`ErrorKind::UnknownUser`]; wrap the model in
///   [`ColdStart`](crate::ColdStart) to answer them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ease {
    regularization: f64,
    max_items: usize,
    history: Option<History>,
    /// Items the weights cover: the catalogue at fit time.
    items: usize,
    /// Row-major `items x items`: `weights[i * items + j]` is `B_ij`, what an
    /// interaction with `i` adds to `j`'s score; the diagonal is zero.
    weights: Vec<f32>,
}

impl Ease {
    /// A model with L2 regularisation `λ` (`regularization`), which must be positive
    /// and finite; a few hundred suits MovieLens-sized data with unit weights.
    ///
    /// Errors with [`ErrorKind::InvalidInput`] otherwise.
    pub fn new(regularization: f64) -> Result<Self> {
        check_regularization(regularization)?;
        Ok(Ease {
            regularization,
            max_items: DEFAULT_EASE_MAX_ITEMS,
            history: None,
            items: 0,
            weights: Vec::new(),
        })
    }

    /// Refuses to fit catalogues larger than `items` (the default is
    /// [`DEFAULT_EASE_MAX_ITEMS`]).
    #[must_use]
    pub fn max_items(mut self, items: usize) -> Self {
        self.max_items = items;
        self
    }

    /// The regularisation `λ`.
    pub fn regularization(&self) -> f64 {
        self.regularization
    }

    /// The weight `B_ij` of item `from` towards item `to`: how much an interaction with
    /// `from` adds to `to`'s score. `None` before a fit or for items the fit did not
    /// cover.
    pub fn weight(&self, from: &Id, to: &Id) -> Option<f32> {
        let h = self.history.as_ref()?;
        let (i, j) = (h.items.get(from)? as usize, h.items.get(to)? as usize);
        (i < self.items && j < self.items).then(|| self.weights[i * self.items + j])
    }

    fn history(&self) -> Result<&History> {
        self.history
            .as_ref()
            .ok_or_else(|| error::not_fitted("ease"))
    }

    fn row(&self, item: u32) -> Option<&[f32]> {
        let i = item as usize;
        (i < self.items).then(|| &self.weights[i * self.items..(i + 1) * self.items])
    }

    /// Checks a deserialised model: a valid `λ`, a square weight matrix over mapped
    /// items, finite weights.
    pub(crate) fn check(&self) -> Result<()> {
        check_regularization(self.regularization).map_err(|e| e.with_kind(ErrorKind::Corrupt))?;
        let mapped = match &self.history {
            Some(h) => {
                h.check()?;
                h.items.len()
            }
            None => 0,
        };
        if self.items.checked_mul(self.items) != Some(self.weights.len()) || self.items > mapped {
            return Err(error::corrupt(
                "EASE weights are not a square matrix over the mapped items",
            ));
        }
        if !self.weights.iter().all(|w| w.is_finite()) {
            return Err(error::corrupt("non-finite EASE weight"));
        }
        Ok(())
    }
}

fn check_regularization(l: f64) -> Result<()> {
    if l.is_finite() && l > 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "EASE regularization must be positive and finite, got {l}"
        )))
    }
}

/// `XᵀX + λI` (`items x items`, f64) of the interaction matrix: row `i` sums, over
/// the users of item `i`, their weight on `i` times their row. Rows in parallel.
fn gram(m: &InteractionMatrix, regularization: f64) -> Array2<f64> {
    let n = m.items();
    let (by_item, by_user) = (m.by_item(), m.by_user());
    let mut g = Array2::<f64>::zeros((n, n));
    let rows: Vec<_> = g.axis_iter_mut(Axis(0)).enumerate().collect();
    rows.into_par_iter().for_each(|(i, mut row)| {
        let (users, wi) = by_item.row(i);
        for (&u, &a) in users.iter().zip(wi) {
            let a = f64::from(a);
            let (items, wu) = by_user.row(u as usize);
            for (&j, &c) in items.iter().zip(wu) {
                row[j as usize] += a * f64::from(c);
            }
        }
        row[i] += regularization;
    });
    g
}

impl Recommender for Ease {
    fn name(&self) -> &'static str {
        "ease"
    }

    fn fit(&mut self, data: &Dataset) -> Result<()> {
        let history = History::from_dataset(data)?;
        let n = data.num_items();
        if n > self.max_items {
            return Err(Error::new(
                ErrorKind::ResourcesExhausted,
                format!(
                    "EASE keeps an items x items matrix: {n} items is more than max_items {}",
                    self.max_items
                ),
            ));
        }
        let p = spd::inverse(gram(&data.matrix(), self.regularization)).map_err(|e| {
            Error::invalid(format!(
                "XᵀX + λI is not numerically positive definite (item {}): raise the \
                 regularization or scale the weights down",
                e.column
            ))
        })?;
        let diag: Vec<f64> = (0..n).map(|j| p[[j, j]]).collect();
        let mut weights = vec![0f32; n * n];
        if n > 0 {
            weights
                .par_chunks_mut(n)
                .zip(p.axis_iter(Axis(0)).collect::<Vec<_>>())
                .enumerate()
                .for_each(|(i, (out, prow))| {
                    for (j, (o, &v)) in out.iter_mut().zip(prow.iter()).enumerate() {
                        *o = if i == j { 0.0 } else { (-v / diag[j]) as f32 };
                    }
                });
        }
        self.items = n;
        self.weights = weights;
        self.history = Some(history);
        Ok(())
    }

    fn recommend(&self, user: &Id, query: &Query<'_>) -> Result<Vec<Scored>> {
        let history = self.history()?;
        let u = history.known_user(user)?;
        let mut acc = vec![0f32; self.items];
        for &(i, w) in history.row(u) {
            if let Some(row) = self.row(i) {
                for (a, &b) in acc.iter_mut().zip(row) {
                    *a += w * b;
                }
            }
        }
        let admit = history.admit(Some(u), query);
        let mut top = TopK::new(query.k);
        for (j, &s) in acc.iter().enumerate() {
            top.offer(s, j as u32, &admit);
        }
        Ok(history.scored(top.into_sorted()))
    }

    /// The items `item` weighs most towards (its row of `B`), positive weights only.
    fn similar_items(&self, item: &Id, k: usize) -> Result<Vec<Scored>> {
        let history = self.history()?;
        let i = history.item(item)?;
        let Some(row) = self.row(i) else {
            return Ok(Vec::new());
        };
        let mut top = TopK::new(k);
        let not_self = |j: u32| j != i;
        for (j, &w) in row.iter().enumerate() {
            if w > 0.0 {
                top.offer(w, j as u32, &not_self);
            }
        }
        Ok(history.scored(top.into_sorted()))
    }

    fn update(&mut self, events: &[Event]) -> Result<()> {
        check_events(events)?;
        let history = self
            .history
            .as_mut()
            .ok_or_else(|| error::not_fitted("ease"))?;
        for e in events {
            history.add(e)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three users over items a, b, c: u0 {a, b}, u1 {a, b, c}, u2 {b, c}.
    fn tiny() -> Dataset {
        let mut d = Dataset::new();
        for (u, i) in [(0, "a"), (0, "b"), (1, "a"), (1, "b"), (1, "c"), (2, "b")] {
            d.push(u, i, 1.0, 0).unwrap();
        }
        d.push(2, "c", 1.0, 0).unwrap();
        d
    }

    #[test]
    fn weights_match_the_hand_computed_closed_form() {
        // XᵀX = [[2, 2, 1], [2, 3, 2], [1, 2, 2]]; with λ = 1, G = [[3, 2, 1], [2, 4, 2],
        // [1, 2, 3]], det G = 16 and P = G⁻¹ = [[8, -4, 0], [-4, 8, -4], [0, -4, 8]] / 16.
        // B_ij = -P_ij / P_jj with P_jj = 1/2: B_ab = (4/16) / (1/2) = 0.5, B_ac = 0, B_ba = 0.5, B_bc = 0.5,
        // B_ca = 0, B_cb = 0.5; the diagonal is 0.
        let mut m = Ease::new(1.0).unwrap();
        m.fit(&tiny()).unwrap();
        let w = |a: &str, b: &str| m.weight(&Id::from(a), &Id::from(b)).unwrap();
        let want = [
            ("a", "a", 0.0),
            ("a", "b", 0.5),
            ("a", "c", 0.0),
            ("b", "a", 0.5),
            ("b", "b", 0.0),
            ("b", "c", 0.5),
            ("c", "a", 0.0),
            ("c", "b", 0.5),
            ("c", "c", 0.0),
        ];
        for (a, b, v) in want {
            assert!(
                (w(a, b) - v).abs() < 1e-6,
                "B[{a}][{b}] = {} not {v}",
                w(a, b)
            );
        }
        // u0 has a and b: c scores B_ac + B_bc = 0.5, and seen items are excluded.
        let rec = m.recommend(&Id::from(0), &Query::top(3)).unwrap();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].item, Id::from("c"));
        assert!((rec[0].score - 0.5).abs() < 1e-6);
        // With seen items included, a (B_ba), b (B_ab) and c (B_bc) all score 0.5.
        let all = m
            .recommend(&Id::from(0), &Query::top(3).include_seen())
            .unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.iter().all(|s| (s.score - 0.5).abs() < 1e-6));
        let sim = m.similar_items(&Id::from("b"), 5).unwrap();
        let names: Vec<String> = sim.iter().map(|s| s.item.to_string()).collect();
        assert_eq!(names, ["a", "c"]);
    }

    #[test]
    fn unknown_users_updates_and_limits() {
        let mut m = Ease::new(1.0).unwrap();
        assert_eq!(
            m.recommend(&Id::from(0), &Query::top(1))
                .unwrap_err()
                .kind(),
            ErrorKind::NotFitted
        );
        m.fit(&tiny()).unwrap();
        assert_eq!(
            m.recommend(&Id::from(9), &Query::top(1))
                .unwrap_err()
                .kind(),
            ErrorKind::UnknownUser
        );
        // A new user is served from their first interaction: a points at b.
        m.update(&[Event::new(9, "a")]).unwrap();
        let rec = m.recommend(&Id::from(9), &Query::top(1)).unwrap();
        assert_eq!(rec[0].item, Id::from("b"));
        // Items new since the fit score nothing and have no neighbours.
        m.update(&[Event::new(9, "new")]).unwrap();
        assert!(m.similar_items(&Id::from("new"), 3).unwrap().is_empty());
        assert!(m.update(&[Event::new(1, "x").weight(-1.0)]).is_err());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(Ease::new(bad).unwrap_err().kind(), ErrorKind::InvalidInput);
        }
        let mut small = Ease::new(1.0).unwrap().max_items(2);
        assert_eq!(
            small.fit(&tiny()).unwrap_err().kind(),
            ErrorKind::ResourcesExhausted
        );
    }
}
