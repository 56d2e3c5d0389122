//! [`ItemItem`]: item-to-item collaborative filtering.

use lakehouse_core::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Event};
use crate::error;
use crate::history::History;
use crate::id::Id;
use crate::recommender::{Query, Recommender, Scored, TopK, check_events};
use crate::sparse::Csr;

/// How [`ItemItem`] measures the similarity of two items from their users.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Similarity {
    /// Cosine of the items' user-weight vectors.
    Cosine,
    /// Co-occurrence with both item vectors weighted by Okapi BM25 (items are the
    /// documents, users the terms): heavy users and very popular items count less.
    Bm25 {
        /// Term-frequency saturation (`k1`); 100 suits implicit feedback.
        k1: f32,
        /// Length normalisation (`b`, in `[0, 1]`).
        b: f32,
    },
    /// RP3beta (Paudel, Christoffel, Newell and Bernstein, 2017): the probability of a
    /// three-step random walk item → user → item on the interaction graph, each
    /// transition probability raised to `alpha`, divided by the target item's
    /// popularity raised to `beta`, so that very popular items are not everyone's
    /// neighbour. Transitions are weights over the user's or the item's total weight.
    Rp3Beta {
        /// Exponent of the transition probabilities (`> 0`; 1 is the plain walk).
        alpha: f32,
        /// Popularity penalty (`>= 0`; 0 is the plain walk, P3alpha).
        beta: f32,
    },
}

impl Similarity {
    /// BM25 with `k1 = 100`, `b = 0.8`.
    pub fn bm25() -> Self {
        Similarity::Bm25 { k1: 100.0, b: 0.8 }
    }
}

/// Item-to-item collaborative filtering, the classic retail "customers who bought this
/// also bought": every item keeps its `neighbors` most similar items; a user's score for
/// an item is the sum over the user's items of (interaction weight x similarity).
///
/// [`update`](Recommender::update) adds interactions to users' histories, so new
/// interactions change the next recommendation at once; the similarities themselves
/// change only on the next [`fit`](Recommender::fit). Items new since the fit have no
/// neighbours yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemItem {
    similarity: Similarity,
    neighbors: usize,
    history: Option<History>,
    /// Per item: neighbour items with similarities, best first.
    order: Vec<Vec<(u32, f32)>>,
}

impl ItemItem {
    /// A model with the given similarity and number of neighbours per item.
    ///
    /// Errors with [`InvalidInput`](crate::ErrorKind::InvalidInput) for zero neighbours
    /// or BM25 parameters out of range.
    pub fn new(similarity: Similarity, neighbors: usize) -> Result<Self> {
        if neighbors == 0 {
            return Err(Error::invalid("neighbors must be at least 1"));
        }
        if let Similarity::Rp3Beta { alpha, beta } = similarity
            && !(alpha.is_finite() && alpha > 0.0 && beta.is_finite() && beta >= 0.0)
        {
            return Err(Error::invalid(format!(
                "RP3beta needs alpha > 0 and beta >= 0, both finite, got alpha={alpha}, beta={beta}"
            )));
        }
        if let Similarity::Bm25 { k1, b } = similarity
            && !(k1.is_finite() && k1 >= 0.0 && (0.0..=1.0).contains(&b))
        {
            return Err(Error::invalid(format!(
                "BM25 needs k1 >= 0 and b in [0, 1], got k1={k1}, b={b}"
            )));
        }
        Ok(ItemItem {
            similarity,
            neighbors,
            history: None,
            order: Vec::new(),
        })
    }

    /// Cosine similarity with 50 neighbours.
    pub fn cosine() -> Self {
        ItemItem::new(Similarity::Cosine, 50).expect("cosine with 50 neighbours is valid")
    }

    /// BM25-weighted co-occurrence with 50 neighbours.
    pub fn bm25() -> Self {
        ItemItem::new(Similarity::bm25(), 50).expect("default BM25 parameters are valid")
    }

    /// RP3beta with `alpha` and `beta` (see [`Similarity::Rp3Beta`]) and `neighbors`
    /// neighbours per item.
    ///
    /// Errors with [`InvalidInput`](crate::ErrorKind::InvalidInput) as
    /// [`new`](Self::new).
    pub fn rp3beta(alpha: f32, beta: f32, neighbors: usize) -> Result<Self> {
        ItemItem::new(Similarity::Rp3Beta { alpha, beta }, neighbors)
    }

    fn history(&self) -> Result<&History> {
        self.history
            .as_ref()
            .ok_or_else(|| error::not_fitted("item-item"))
    }

    /// Checks a deserialised model: valid parameters, neighbours that are mapped items.
    pub(crate) fn check(&self) -> Result<()> {
        ItemItem::new(self.similarity, self.neighbors)?;
        let n = match &self.history {
            Some(h) => {
                h.check()?;
                h.items.len()
            }
            None => 0,
        };
        let ok = self.order.len() <= n
            && self
                .order
                .iter()
                .all(|row| row.iter().all(|&(j, s)| (j as usize) < n && s.is_finite()));
        if ok {
            Ok(())
        } else {
            Err(error::corrupt("neighbour lists name unmapped items"))
        }
    }

    fn neighbours(&self, item: u32) -> &[(u32, f32)] {
        self.order.get(item as usize).map_or(&[], |v| v.as_slice())
    }
}

impl Recommender for ItemItem {
    fn name(&self) -> &'static str {
        match self.similarity {
            Similarity::Rp3Beta { .. } => "rp3beta",
            _ => "item-item",
        }
    }

    fn fit(&mut self, data: &Dataset) -> Result<()> {
        let history = History::from_dataset(data)?;
        let m = data.matrix();
        let mut by_item = m.by_item().clone();
        // The similarity of i to j is `scale[j] x Σ_u by_item[i][u] x by_user[u][j]`;
        // `by_user` is `by_item` transposed except for RP3beta, whose two steps differ.
        let mut by_user = None;
        let mut scale = None;
        match self.similarity {
            Similarity::Cosine => {
                let norms: Vec<f32> = (0..by_item.rows())
                    .map(|i| by_item.row(i).1.iter().map(|v| v * v).sum::<f32>().sqrt())
                    .collect();
                by_item.map_values(|i, _, v| if norms[i] > 0.0 { v / norms[i] } else { 0.0 });
            }
            Similarity::Bm25 { k1, b } => {
                let n_items = by_item.rows() as f32;
                let by_user = m.by_user();
                let idf: Vec<f32> = (0..by_user.rows())
                    .map(|u| (n_items.ln() - (1.0 + by_user.row(u).0.len() as f32).ln()).max(0.0))
                    .collect();
                let lengths: Vec<f32> = (0..by_item.rows())
                    .map(|i| by_item.row(i).1.iter().sum())
                    .collect();
                let avg =
                    (lengths.iter().sum::<f32>() / lengths.len().max(1) as f32).max(f32::EPSILON);
                by_item.map_values(|i, u, v| {
                    let norm = (1.0 - b) + b * lengths[i] / avg;
                    v * (k1 + 1.0) / (k1 * norm + v) * idf[u as usize]
                });
            }
            Similarity::Rp3Beta { alpha, beta } => {
                let total = |c: &Csr, r: usize| c.row(r).1.iter().sum::<f32>();
                let item_totals: Vec<f32> =
                    (0..by_item.rows()).map(|i| total(&by_item, i)).collect();
                let mut to_item = m.by_user().clone();
                let user_totals: Vec<f32> =
                    (0..to_item.rows()).map(|u| total(&to_item, u)).collect();
                let step = |v: f32, t: f32| if t > 0.0 { (v / t).powf(alpha) } else { 0.0 };
                by_item.map_values(|i, _, v| step(v, item_totals[i]));
                to_item.map_values(|u, _, v| step(v, user_totals[u]));
                by_user = Some(to_item);
                scale = Some(
                    item_totals
                        .iter()
                        .map(|&t| if t > 0.0 { t.powf(-beta) } else { 0.0 })
                        .collect::<Vec<f32>>(),
                );
            }
        }
        let by_user = by_user.unwrap_or_else(|| by_item.transpose());
        let n = by_item.rows();
        let k = self.neighbors;
        let order: Vec<Vec<(u32, f32)>> = (0..n)
            .into_par_iter()
            .map_init(
                || (vec![0f32; n], Vec::<u32>::new()),
                |(acc, touched), i| {
                    let (users, wi) = by_item.row(i);
                    for (&u, &a) in users.iter().zip(wi) {
                        let (items, wu) = by_user.row(u as usize);
                        for (&j, &c) in items.iter().zip(wu) {
                            let add = a * c;
                            // A zero term (zero weight) would mark `j` touched twice.
                            if add == 0.0 {
                                continue;
                            }
                            if acc[j as usize] == 0.0 {
                                touched.push(j);
                            }
                            acc[j as usize] += add;
                        }
                    }
                    let mut top = TopK::new(k);
                    let not_self = |j: u32| j as usize != i;
                    for &j in touched.iter() {
                        let s = match &scale {
                            Some(scale) => acc[j as usize] * scale[j as usize],
                            None => acc[j as usize],
                        };
                        if s > 0.0 {
                            top.offer(s, j, &not_self);
                        }
                        acc[j as usize] = 0.0;
                    }
                    touched.clear();
                    top.into_sorted().into_iter().map(|(s, j)| (j, s)).collect()
                },
            )
            .collect();
        self.order = order;
        self.history = Some(history);
        Ok(())
    }

    fn recommend(&self, user: &Id, query: &Query<'_>) -> Result<Vec<Scored>> {
        let history = self.history()?;
        let u = history.known_user(user)?;
        let mut acc = vec![0f32; history.num_items()];
        let mut touched = Vec::new();
        for &(i, w) in history.row(u) {
            for &(j, s) in self.neighbours(i) {
                let add = w * s;
                // Zero-weight interactions add nothing (and must not mark `j` twice).
                if add == 0.0 {
                    continue;
                }
                if acc[j as usize] == 0.0 {
                    touched.push(j);
                }
                acc[j as usize] += add;
            }
        }
        let admit = history.admit(Some(u), query);
        let mut top = TopK::new(query.k);
        for &j in &touched {
            top.offer(acc[j as usize], j, &admit);
        }
        Ok(history.scored(top.into_sorted()))
    }

    fn similar_items(&self, item: &Id, k: usize) -> Result<Vec<Scored>> {
        let history = self.history()?;
        let i = history.item(item)?;
        Ok(history.scored(
            self.neighbours(i)
                .iter()
                .take(k)
                .map(|&(j, s)| (s, j))
                .collect(),
        ))
    }

    fn update(&mut self, events: &[Event]) -> Result<()> {
        check_events(events)?;
        let history = self
            .history
            .as_mut()
            .ok_or_else(|| error::not_fitted("item-item"))?;
        for e in events {
            history.add(e)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baskets() -> Dataset {
        let mut d = Dataset::new();
        // bread goes with butter, beer with chips.
        for u in 0..20 {
            let (a, b) = if u % 2 == 0 {
                ("bread", "butter")
            } else {
                ("beer", "chips")
            };
            d.push(u, a, 1.0, 0).unwrap();
            d.push(u, b, 1.0, 0).unwrap();
        }
        d.push(100, "bread", 1.0, 0).unwrap();
        d.push(101, "beer", 1.0, 0).unwrap();
        d
    }

    #[test]
    fn co_bought_items_are_similar_and_recommended() {
        let rp3 = ItemItem::rp3beta(1.0, 0.5, 50).unwrap();
        for mut m in [ItemItem::cosine(), ItemItem::bm25(), rp3] {
            m.fit(&baskets()).unwrap();
            let sim = m.similar_items(&Id::from("bread"), 5).unwrap();
            assert_eq!(sim[0].item, Id::from("butter"));
            assert!(sim.iter().all(|s| s.item != Id::from("bread")));
            let rec = m.recommend(&Id::from(100), &Query::top(3)).unwrap();
            assert_eq!(rec[0].item, Id::from("butter"));
            assert!(rec.iter().all(|s| s.item != Id::from("bread")));
            let rec = m.recommend(&Id::from(101), &Query::top(1)).unwrap();
            assert_eq!(rec[0].item, Id::from("chips"));
        }
    }

    #[test]
    fn rp3beta_matches_the_hand_computed_walk() {
        // u0 {a, b}, u1 {a, b, c}, u2 {b, c}. Item totals a 2, b 3, c 2; user totals
        // u0 2, u1 3, u2 2. With alpha 1: W_ab = (1/2)(1/2) + (1/2)(1/3) = 5/12 and
        // W_ac = (1/2)(1/3) = 1/6; beta 1 divides by the target's total: 5/36, 1/12.
        let mut d = Dataset::new();
        for (u, i) in [
            (0, "a"),
            (0, "b"),
            (1, "a"),
            (1, "b"),
            (1, "c"),
            (2, "b"),
            (2, "c"),
        ] {
            d.push(u, i, 1.0, 0).unwrap();
        }
        let mut m = ItemItem::rp3beta(1.0, 1.0, 5).unwrap();
        m.fit(&d).unwrap();
        let sim = m.similar_items(&Id::from("a"), 5).unwrap();
        assert_eq!(sim.len(), 2);
        assert_eq!(sim[0].item, Id::from("b"));
        assert!((sim[0].score - 5.0 / 36.0).abs() < 1e-6, "{sim:?}");
        assert_eq!(sim[1].item, Id::from("c"));
        assert!((sim[1].score - 1.0 / 12.0).abs() < 1e-6, "{sim:?}");
        // alpha 2 squares each transition: W_ab = 1/16 + 1/36, before the penalty.
        let mut sq = ItemItem::rp3beta(2.0, 0.0, 5).unwrap();
        sq.fit(&d).unwrap();
        let top = &sq.similar_items(&Id::from("a"), 1).unwrap()[0];
        assert!((top.score - (1.0 / 16.0 + 1.0 / 36.0)).abs() < 1e-6);
        assert_eq!(sq.name(), "rp3beta");
        for (alpha, beta) in [(0.0, 0.5), (-1.0, 0.5), (1.0, -0.1), (f32::NAN, 0.0)] {
            assert!(ItemItem::rp3beta(alpha, beta, 5).is_err());
        }
    }

    #[test]
    fn updates_show_in_next_recommendation() {
        let mut m = ItemItem::cosine();
        m.fit(&baskets()).unwrap();
        m.update(&[Event::new("newcomer", "beer")]).unwrap();
        let rec = m.recommend(&Id::from("newcomer"), &Query::top(1)).unwrap();
        assert_eq!(rec[0].item, Id::from("chips"));
        assert!(m.update(&[Event::new(1, "x").weight(f32::NAN)]).is_err());
        assert!(ItemItem::new(Similarity::Cosine, 0).is_err());
    }
}
