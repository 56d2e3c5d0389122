//! Offline evaluation: ranking metrics of a model's top-k on held-out interactions.

use std::collections::HashSet;

use lakehouse_core::{Error, ErrorKind, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::id::Id;
use crate::recommender::{Query, Recommender};

/// Ranking quality at a cut-off `k`, averaged over the evaluated users.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The cut-off.
    pub k: usize,
    /// Hits in the top k divided by k.
    pub precision: f64,
    /// Hits in the top k divided by the user's held-out items.
    pub recall: f64,
    /// Normalised discounted cumulative gain with binary relevance.
    pub ndcg: f64,
    /// Mean average precision at k (average precision divided by `min(k, held-out)`).
    pub map: f64,
    /// Distinct recommended items divided by the catalogue size.
    pub coverage: f64,
    /// Users evaluated (held-out items and known to the model).
    pub users: usize,
    /// Users with held-out items that the model did not know (skipped).
    pub skipped_users: usize,
}

/// Precision@k, recall@k, NDCG@k and AP@k of one user, and the items recommended.
type UserScores = ([f64; 4], Vec<Id>);

/// Evaluates `model` (trained on a split of the same [`Dataset`] as `test`) on the
/// held-out interactions of `test`: for every user with held-out items, the top `k`
/// excluding the items they were trained on. Users run in parallel on rayon.
///
/// Errors with [`ErrorKind::EmptyData`] when `test` is empty and
/// [`ErrorKind::InvalidInput`] when `k` is 0; other model errors propagate.
pub fn evaluate(model: &dyn Recommender, test: &Dataset, k: usize) -> Result<Metrics> {
    if k == 0 {
        return Err(Error::invalid("k must be at least 1"));
    }
    if test.is_empty() {
        return Err(Error::new(ErrorKind::EmptyData, "no held-out interaction"));
    }
    let m = test.matrix();
    let users: Vec<(Id, HashSet<Id>)> = (0..m.users())
        .filter_map(|u| {
            let (items, _) = m.by_user().row(u);
            if items.is_empty() {
                return None;
            }
            let id = test.users().id(u as u32)?.clone();
            let relevant = items
                .iter()
                .filter_map(|&i| test.items().id(i).cloned())
                .collect();
            Some((id, relevant))
        })
        .collect();
    let query = Query::top(k);
    let per_user: Vec<Result<Option<UserScores>>> = users
        .par_iter()
        .map(|(user, relevant)| {
            let recs = match model.recommend(user, &query) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::UnknownUser => return Ok(None),
                Err(e) => return Err(e),
            };
            let mut hits = 0usize;
            let (mut dcg, mut ap) = (0f64, 0f64);
            for (rank, s) in recs.iter().enumerate() {
                if relevant.contains(&s.item) {
                    hits += 1;
                    dcg += 1.0 / ((rank + 2) as f64).log2();
                    ap += hits as f64 / (rank + 1) as f64;
                }
            }
            let ideal: f64 = (0..relevant.len().min(k))
                .map(|r| 1.0 / ((r + 2) as f64).log2())
                .sum();
            let p = hits as f64 / k as f64;
            let r = hits as f64 / relevant.len() as f64;
            let n = if ideal > 0.0 { dcg / ideal } else { 0.0 };
            let a = ap / relevant.len().min(k) as f64;
            Ok(Some((
                [p, r, n, a],
                recs.into_iter().map(|s| s.item).collect(),
            )))
        })
        .collect();
    let mut sums = [0f64; 4];
    let (mut evaluated, mut skipped) = (0usize, 0usize);
    let mut distinct: HashSet<Id> = HashSet::new();
    for r in per_user {
        match r? {
            Some((v, items)) => {
                evaluated += 1;
                for (s, x) in sums.iter_mut().zip(v) {
                    *s += x;
                }
                distinct.extend(items);
            }
            None => skipped += 1,
        }
    }
    let n = evaluated.max(1) as f64;
    Ok(Metrics {
        k,
        precision: sums[0] / n,
        recall: sums[1] / n,
        ndcg: sums[2] / n,
        map: sums[3] / n,
        coverage: distinct.len() as f64 / test.num_items().max(1) as f64,
        users: evaluated,
        skipped_users: skipped,
    })
}
