//! [`Segments`]: users clustered with linfa's k-means, each cluster with its own
//! popular items.

use std::collections::HashMap;

use lakehouse_core::{Error, ErrorKind, Result};
use linfa::prelude::*;
use linfa_clustering::KMeans;
use ndarray::{Array2, ArrayView2};
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::als::Als;
use crate::data::Dataset;
use crate::error;
use crate::id::{Id, IdMap};
use crate::recommender::{Query, Scored, TopK};

/// Parameters of [`Segments`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SegmentParams {
    /// Number of segments (k).
    pub clusters: usize,
    /// Seed of the k-means initialisation.
    pub seed: u64,
    /// Iteration cap of k-means.
    pub max_iterations: u64,
    /// Items kept per segment.
    pub top_items: usize,
}

impl Default for SegmentParams {
    fn default() -> Self {
        SegmentParams {
            clusters: 8,
            seed: 42,
            max_iterations: 100,
            top_items: 500,
        }
    }
}

/// User segments: k-means clusters of user feature vectors (demographics, behaviour
/// aggregates, or ALS user vectors), each with the items most popular among its users.
/// A new user is placed by their features and gets their segment's favourites.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Segments {
    dims: usize,
    centroids: Vec<f64>,
    #[serde(with = "assignment_pairs")]
    assignment: HashMap<Id, usize>,
    items: IdMap,
    /// Per segment: `(item, score)`, best first.
    popular: Vec<Vec<(u32, f32)>>,
}

impl Segments {
    /// Clusters `users` by the rows of `features` (one row per user) and ranks items per
    /// segment by the interaction weight of its users in `data`.
    ///
    /// Errors with [`ErrorKind::InvalidInput`] when the row count differs from the user
    /// count, a value is not finite, or there are fewer users than clusters.
    pub fn fit_features(
        users: &[Id],
        features: ArrayView2<'_, f64>,
        data: &Dataset,
        params: SegmentParams,
    ) -> Result<Segments> {
        if features.nrows() != users.len() {
            return Err(Error::invalid(format!(
                "{} feature rows for {} users",
                features.nrows(),
                users.len()
            )));
        }
        if params.clusters == 0 || users.len() < params.clusters {
            return Err(Error::invalid(format!(
                "need at least {} users for {} segments, got {}",
                params.clusters.max(1),
                params.clusters,
                users.len()
            )));
        }
        if features.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid("features must be finite"));
        }
        let records: Array2<f64> = features.to_owned();
        let dataset = DatasetBase::from(records);
        let rng = Xoshiro256Plus::seed_from_u64(params.seed);
        let model = KMeans::params_with_rng(params.clusters, rng)
            .max_n_iterations(params.max_iterations)
            .tolerance(1e-6)
            .fit(&dataset)
            .map_err(|e| Error::new(ErrorKind::External, "k-means failed").with_source(e))?;
        let labels = model.predict(dataset.records());
        let assignment: HashMap<Id, usize> =
            users.iter().cloned().zip(labels.iter().copied()).collect();
        let mut scores: Vec<HashMap<u32, f32>> = vec![HashMap::new(); params.clusters];
        for x in data.interactions() {
            let Some(user) = data.users().id(x.user) else {
                continue;
            };
            if let Some(&s) = assignment.get(user) {
                *scores[s].entry(x.item).or_default() += x.weight;
            }
        }
        let popular = scores
            .into_iter()
            .map(|m| {
                let mut top = TopK::new(params.top_items);
                let all = |_| true;
                for (i, s) in m {
                    top.offer(s, i, &all);
                }
                top.into_sorted().into_iter().map(|(s, i)| (i, s)).collect()
            })
            .collect();
        Ok(Segments {
            dims: features.ncols(),
            centroids: model.centroids().iter().copied().collect(),
            assignment,
            items: data.items().clone(),
            popular,
        })
    }

    /// Clusters the users of a fitted ALS model by their vectors.
    pub fn fit_on_als(als: &Als, data: &Dataset, params: SegmentParams) -> Result<Segments> {
        let f = als.params().factors;
        let mut users = Vec::new();
        let mut rows = Vec::new();
        for id in als.users()?.ids() {
            if let Ok(v) = als.user_factors(id) {
                users.push(id.clone());
                rows.extend(v.iter().map(|&x| f64::from(x)));
            }
        }
        let features = Array2::from_shape_vec((users.len(), f), rows)
            .map_err(|e| Error::new(ErrorKind::Internal, "factor matrix shape").with_source(e))?;
        Segments::fit_features(&users, features.view(), data, params)
    }

    /// Checks a deserialised value: centroids of the stated width, one per segment.
    pub(crate) fn check(&self) -> Result<()> {
        let k = self.popular.len();
        if self.dims == 0
            || k == 0
            || self.centroids.len() != self.dims.saturating_mul(k)
            || !self.centroids.iter().all(|v| v.is_finite())
            || self.assignment.values().any(|&s| s >= k)
        {
            return Err(error::corrupt(format!(
                "segments do not match: {k} segments, {} centroid values of width {}",
                self.centroids.len(),
                self.dims
            )));
        }
        Ok(())
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.popular.len()
    }

    /// `true` when there is no segment (never, for a fitted value).
    pub fn is_empty(&self) -> bool {
        self.popular.is_empty()
    }

    /// The segment a clustered user belongs to.
    pub fn segment_of(&self, user: &Id) -> Option<usize> {
        self.assignment.get(user).copied()
    }

    /// The segment whose centre is nearest to `features`.
    ///
    /// Errors with [`ErrorKind::InvalidInput`] for a wrong length or non-finite values.
    pub fn assign(&self, features: &[f64]) -> Result<usize> {
        if features.len() != self.dims || features.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "expected {} finite features, got {}",
                self.dims,
                features.len()
            )));
        }
        let best = self
            .centroids
            .chunks_exact(self.dims)
            .enumerate()
            .map(|(s, c)| {
                let d: f64 = c.iter().zip(features).map(|(a, b)| (a - b) * (a - b)).sum();
                (d, s)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, s)| s);
        best.ok_or_else(|| Error::new(ErrorKind::Internal, "segments without centroids"))
    }

    /// The favourite items of `segment` (the query's seen-item exclusion does not apply:
    /// segment recommendations are for users without history).
    pub fn recommend_segment(&self, segment: usize, query: &Query<'_>) -> Result<Vec<Scored>> {
        let list = self
            .popular
            .get(segment)
            .ok_or_else(|| Error::invalid(format!("no segment {segment}")))?;
        let mut out = Vec::with_capacity(query.k.min(list.len()));
        for &(i, score) in list {
            if out.len() >= query.k {
                break;
            }
            let Some(id) = self.items.id(i) else { continue };
            if query.filter.is_none_or(|f| f(id)) {
                out.push(Scored {
                    item: id.clone(),
                    score,
                });
            }
        }
        Ok(out)
    }
}

/// JSON maps need string keys and [`Id`] is an enum: the user-to-segment map is stored
/// as a list of `(id, segment)` pairs, sorted by id so that saved files are stable.
mod assignment_pairs {
    use std::collections::HashMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::id::Id;

    pub(super) fn serialize<S: Serializer>(
        map: &HashMap<Id, usize>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut pairs: Vec<(&Id, &usize)> = map.iter().collect();
        pairs.sort();
        pairs.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<HashMap<Id, usize>, D::Error> {
        Ok(Vec::<(Id, usize)>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}
