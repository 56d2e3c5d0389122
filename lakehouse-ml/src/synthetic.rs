//! A synthetic interaction generator with planted preferences, for tests and
//! benchmarks.

use std::collections::HashSet;

use lakehouse_core::{Error, Result};

use crate::data::Dataset;
use crate::id::Id;
use crate::rng::Rng;

/// The largest number of users or of items [`Synthetic::generate`] accepts.
const MAX_SIDE: usize = 1 << 26;

/// Generates users and items in `groups` taste groups: user `u` (id `1..=users`) belongs
/// to group `(u - 1) % groups`, item `i` likewise; each of a user's picks goes to an
/// item of their own group with probability `affinity`, else to any item, both with
/// Zipf-skewed item popularity. User activity is skewed too (a few heavy users); a
/// heavy user who has exhausted their group's items can only add items of other
/// groups, so the overall in-group share is somewhat below `affinity`.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Synthetic {
    users: usize,
    items: usize,
    interactions: usize,
    groups: usize,
    affinity: f64,
    skew: f64,
    seed: u64,
}

/// The generated data and its planted groups.
#[derive(Debug, Clone)]
pub struct SyntheticData {
    /// The interactions (weight 1, distinct user-item pairs, timestamps in seconds-spaced
    /// microseconds).
    pub dataset: Dataset,
    groups: usize,
}

impl SyntheticData {
    /// The planted group of a user or item id.
    pub fn group_of(&self, id: &Id) -> Option<usize> {
        match id {
            Id::Int(v) if *v >= 1 => Some(((*v - 1) as usize) % self.groups),
            _ => None,
        }
    }
}

impl Synthetic {
    /// The shape of MovieLens-100k: 943 users, 1682 items, 100 000 interactions,
    /// 10 groups, affinity 0.8.
    pub fn movielens_shape() -> Self {
        Synthetic {
            users: 943,
            items: 1682,
            interactions: 100_000,
            groups: 10,
            affinity: 0.8,
            skew: 0.9,
            seed: 1,
        }
    }

    /// A custom size.
    pub fn new(users: usize, items: usize, interactions: usize) -> Self {
        Synthetic {
            users,
            items,
            interactions,
            ..Synthetic::movielens_shape()
        }
    }

    /// Number of taste groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Share of in-group interactions, in `[0, 1]`.
    pub fn affinity(mut self, affinity: f64) -> Self {
        self.affinity = affinity;
        self
    }

    /// Zipf exponent of item popularity.
    pub fn skew(mut self, skew: f64) -> Self {
        self.skew = skew;
        self
    }

    /// Random seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Generates the data.
    ///
    /// Errors with [`InvalidInput`](crate::ErrorKind::InvalidInput) for zero users,
    /// items or groups, more groups than users or items, more than 2^26 users or items,
    /// or more interactions than half the user-item pairs.
    pub fn generate(&self) -> Result<SyntheticData> {
        let (nu, ni, g) = (self.users, self.items, self.groups);
        if nu == 0 || ni == 0 || g == 0 || g > ni || g > nu {
            return Err(Error::invalid("need users, items >= groups >= 1"));
        }
        if nu > MAX_SIDE || ni > MAX_SIDE {
            return Err(Error::invalid(format!(
                "at most {MAX_SIDE} users and {MAX_SIDE} items"
            )));
        }
        if self.interactions > nu.saturating_mul(ni) / 2 {
            return Err(Error::invalid(
                "at most half of all user-item pairs can be filled",
            ));
        }
        if !(0.0..=1.0).contains(&self.affinity) || !self.skew.is_finite() {
            return Err(Error::invalid("affinity must be in [0, 1] and skew finite"));
        }
        let mut rng = Rng::new(self.seed);
        // Item popularity: a random rank per item, Zipf weight by rank.
        let mut ranks: Vec<usize> = (0..ni).collect();
        rng.shuffle(&mut ranks);
        let weight = |i: usize| 1.0 / ((ranks[i] + 1) as f64).powf(self.skew);
        let cumulative = |items: &[usize]| -> Vec<f64> {
            let mut acc = 0.0;
            items
                .iter()
                .map(|&i| {
                    acc += weight(i);
                    acc
                })
                .collect()
        };
        let all: Vec<usize> = (0..ni).collect();
        let all_cum = cumulative(&all);
        let by_group: Vec<Vec<usize>> = (0..g).map(|k| (k..ni).step_by(g).collect()).collect();
        let group_cum: Vec<Vec<f64>> = by_group.iter().map(|v| cumulative(v)).collect();
        let pick = |rng: &mut Rng, items: &[usize], cum: &[f64]| -> usize {
            let total = cum.last().copied().unwrap_or(0.0);
            let x = rng.f64() * total;
            items[cum.partition_point(|&c| c <= x).min(items.len() - 1)]
        };
        // User activity: log-normal shares, at least 5 and at most half the catalogue each.
        let shares: Vec<f64> = (0..nu).map(|_| (rng.normal() * 0.8).exp()).collect();
        let total: f64 = shares.iter().sum();
        let cap = (ni / 2).max(1);
        let mut events = Vec::with_capacity(self.interactions);
        for (u, share) in shares.iter().enumerate() {
            let want = ((share / total) * self.interactions as f64).round() as usize;
            let want = want.clamp(5.min(cap), cap);
            let k = u % g;
            let mut seen = HashSet::with_capacity(want);
            let mut attempts = 0;
            while seen.len() < want && attempts < want * 20 {
                attempts += 1;
                let i = if rng.f64() < self.affinity {
                    pick(&mut rng, &by_group[k], &group_cum[k])
                } else {
                    pick(&mut rng, &all, &all_cum)
                };
                if seen.insert(i) {
                    events.push((u, i));
                }
            }
        }
        rng.shuffle(&mut events);
        let mut dataset = Dataset::new();
        const BASE: i64 = 1_600_000_000_000_000;
        for (n, (u, i)) in events.into_iter().enumerate() {
            dataset.push(
                (u + 1) as i64,
                (i + 1) as i64,
                1.0,
                BASE + n as i64 * 1_000_000,
            )?;
        }
        Ok(SyntheticData { dataset, groups: g })
    }
}
