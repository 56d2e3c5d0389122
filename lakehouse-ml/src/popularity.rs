//! [`Popularity`]: most popular items overall, or trending with a time decay.

use std::sync::Arc;
use std::time::Duration;

use lakehouse_core::{Clock, Error, ErrorKind, Result, SystemClock};
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Event};
use crate::error;
use crate::history::History;
use crate::id::Id;
use crate::recommender::{Query, Recommender, Scored, TopK, check_events};

/// Items ranked by the total weight of their interactions, optionally decayed with a
/// half-life (trending: an interaction `h` old counts half as much as one now).
///
/// Trending scores are read at the time of the injected [`Clock`]
/// ([`SystemClock`] unless [`with_clock`](Self::with_clock) says otherwise).
/// Recommendations are the same for every user, minus the items the user has seen;
/// unknown users get the global list. [`similar_items`](Recommender::similar_items)
/// is not supported ([`ErrorKind::Unsupported`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Popularity {
    half_life_micros: Option<i64>,
    history: Option<History>,
    /// Per item: score as of `as_of[i]`.
    scores: Vec<f64>,
    as_of: Vec<i64>,
    #[serde(skip, default = "system_clock")]
    clock: Arc<dyn Clock>,
}

fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

impl Default for Popularity {
    fn default() -> Self {
        Popularity::new()
    }
}

impl Popularity {
    /// All-time popularity.
    pub fn new() -> Self {
        Popularity {
            half_life_micros: None,
            history: None,
            scores: Vec::new(),
            as_of: Vec::new(),
            clock: system_clock(),
        }
    }

    /// Trending: interactions lose half their weight every `half_life`.
    ///
    /// Errors with [`ErrorKind::InvalidInput`] for a zero half-life.
    pub fn trending(half_life: Duration) -> Result<Self> {
        let micros = i64::try_from(half_life.as_micros()).unwrap_or(i64::MAX);
        if micros == 0 {
            return Err(Error::invalid("trending half-life must be positive"));
        }
        Ok(Popularity {
            half_life_micros: Some(micros),
            ..Popularity::new()
        })
    }

    /// Reads trending scores at `clock`'s time.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The factor by which a score at `from` has decayed at `to`; scores from the
    /// future (`from > to`) do not grow. Computed in f64, so any two times are valid.
    fn decay(&self, from: i64, to: i64) -> f64 {
        match self.half_life_micros {
            Some(h) => {
                let elapsed = (to as f64 - from as f64).max(0.0);
                (-elapsed / h as f64).exp2()
            }
            None => 1.0,
        }
    }

    fn add(&mut self, item: u32, weight: f32, at: i64) {
        let i = item as usize;
        if self.scores.len() <= i {
            self.scores.resize(i + 1, 0.0);
            self.as_of.resize(i + 1, at);
        }
        let w = f64::from(weight);
        if self.half_life_micros.is_some() && at > self.as_of[i] {
            self.scores[i] = self.scores[i] * self.decay(self.as_of[i], at) + w;
            self.as_of[i] = at;
        } else {
            self.scores[i] += w * self.decay(at, self.as_of[i]);
        }
    }

    /// Checks a deserialised model: one score and time per mapped item.
    pub(crate) fn check(&self) -> Result<()> {
        if self.half_life_micros.is_some_and(|h| h <= 0) {
            return Err(error::corrupt("trending half-life must be positive"));
        }
        let n = match &self.history {
            Some(h) => {
                h.check()?;
                h.items.len()
            }
            None => 0,
        };
        if self.scores.len() != self.as_of.len() || self.scores.len() > n {
            return Err(error::corrupt("scores do not match the items"));
        }
        if !self.scores.iter().all(|s| s.is_finite()) {
            return Err(error::corrupt("non-finite score"));
        }
        Ok(())
    }

    /// The current score of every item index.
    fn current(&self) -> Vec<f32> {
        let now = self.clock.now_micros();
        self.scores
            .iter()
            .zip(&self.as_of)
            .map(|(&s, &t)| (s * self.decay(t, now)) as f32)
            .collect()
    }

    /// The top `k` items for an optional known user index.
    pub(crate) fn top(&self, user: Option<u32>, query: &Query<'_>) -> Result<Vec<Scored>> {
        let history = self
            .history
            .as_ref()
            .ok_or_else(|| error::not_fitted("popularity"))?;
        let admit = history.admit(user, query);
        let mut top = TopK::new(query.k);
        for (i, s) in self.current().into_iter().enumerate() {
            top.offer(s, i as u32, &admit);
        }
        Ok(history.scored(top.into_sorted()))
    }

    /// The global top `k` (no user).
    pub fn top_items(&self, query: &Query<'_>) -> Result<Vec<Scored>> {
        self.top(None, query)
    }
}

impl Recommender for Popularity {
    fn name(&self) -> &'static str {
        if self.half_life_micros.is_some() {
            "trending"
        } else {
            "popularity"
        }
    }

    fn fit(&mut self, data: &Dataset) -> Result<()> {
        let history = History::from_dataset(data)?;
        let latest = data
            .interactions()
            .iter()
            .map(|x| x.timestamp)
            .max()
            .unwrap_or(0);
        self.scores = vec![0.0; data.num_items()];
        self.as_of = vec![latest; data.num_items()];
        for x in data.interactions() {
            self.add(x.item, x.weight, x.timestamp);
        }
        self.history = Some(history);
        Ok(())
    }

    fn recommend(&self, user: &Id, query: &Query<'_>) -> Result<Vec<Scored>> {
        let history = self
            .history
            .as_ref()
            .ok_or_else(|| error::not_fitted("popularity"))?;
        let u = history.known_user(user).ok();
        self.top(u, query)
    }

    fn similar_items(&self, _item: &Id, _k: usize) -> Result<Vec<Scored>> {
        Err(Error::new(
            ErrorKind::Unsupported,
            "popularity has no item similarity",
        ))
    }

    fn update(&mut self, events: &[Event]) -> Result<()> {
        check_events(events)?;
        let mut history = self
            .history
            .take()
            .ok_or_else(|| error::not_fitted("popularity"))?;
        let mut result = Ok(());
        for e in events {
            match history.add(e) {
                Ok((_, i, _, _)) => self.add(i, e.weight, e.timestamp),
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
        }
        self.history = Some(history);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakehouse_core::ManualClock;

    const HOUR: i64 = 3_600_000_000;

    #[test]
    fn popularity_ranks_by_weight_and_excludes_seen() {
        let mut d = Dataset::new();
        for (u, i) in [(1, "a"), (2, "a"), (3, "a"), (1, "b"), (2, "b"), (3, "c")] {
            d.push(u, i, 1.0, 0).unwrap();
        }
        let mut p = Popularity::new();
        p.fit(&d).unwrap();
        let top: Vec<_> = p.recommend(&Id::from(99), &Query::top(3)).unwrap();
        assert_eq!(
            top.iter().map(|s| s.item.to_string()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        let for_1 = p.recommend(&Id::from(1), &Query::top(3)).unwrap();
        assert_eq!(for_1.len(), 1);
        assert_eq!(for_1[0].item, Id::from("c"));
        assert_eq!(
            p.similar_items(&Id::from("a"), 3).unwrap_err().kind(),
            ErrorKind::Unsupported
        );
    }

    #[test]
    fn trending_prefers_recent_items() {
        let clock = ManualClock::at_millis(0);
        clock.set_micros(100 * HOUR);
        let mut d = Dataset::new();
        for u in 0..10 {
            d.push(u, "old-hit", 1.0, 0).unwrap();
        }
        for u in 0..3 {
            d.push(u, "new", 1.0, 99 * HOUR).unwrap();
        }
        let mut t = Popularity::trending(Duration::from_secs(3600 * 6))
            .unwrap()
            .with_clock(Arc::new(clock.clone()));
        t.fit(&d).unwrap();
        let top = t.top_items(&Query::top(2)).unwrap();
        assert_eq!(top[0].item, Id::from("new"));
        // Fresh interactions for the old item bring it back.
        let events: Vec<Event> = (0..20)
            .map(|u| Event::new(100 + u, "old-hit").at_micros(100 * HOUR))
            .collect();
        t.update(&events).unwrap();
        assert_eq!(
            t.top_items(&Query::top(1)).unwrap()[0].item,
            Id::from("old-hit")
        );
        assert!(Popularity::trending(Duration::ZERO).is_err());
    }
}
