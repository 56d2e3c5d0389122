//! Cold start: [`ColdStart`] answers users a model does not know, and
//! [`ItemAttributes`] places new items by their attributes.

use std::collections::HashMap;

use lakehouse_core::{ErrorKind, Result};
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Event};
use crate::id::Id;
use crate::popularity::Popularity;
use crate::recommender::{Query, Recommender, Scored};
use crate::segments::Segments;

/// Item attributes (category, brand, tags), for placing items that have no
/// interactions yet ([`Als::add_item_from_attributes`](crate::Als::add_item_from_attributes)).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemAttributes {
    by_attribute: HashMap<String, Vec<Id>>,
}

impl ItemAttributes {
    /// An empty catalogue.
    pub fn new() -> Self {
        ItemAttributes::default()
    }

    /// Records `item`'s attributes.
    pub fn insert<S: AsRef<str>>(&mut self, item: impl Into<Id>, attributes: &[S]) {
        let item = item.into();
        for a in attributes {
            let list = self.by_attribute.entry(a.as_ref().to_owned()).or_default();
            if !list.contains(&item) {
                list.push(item.clone());
            }
        }
    }

    /// The items sharing at least one of `attributes`, with how many they share.
    pub fn sharing(&self, attributes: &[&str]) -> Vec<(&Id, usize)> {
        let mut counts: HashMap<&Id, usize> = HashMap::new();
        for a in attributes {
            for item in self.by_attribute.get(*a).into_iter().flatten() {
                *counts.entry(item).or_default() += 1;
            }
        }
        let mut out: Vec<_> = counts.into_iter().collect();
        out.sort();
        out
    }
}

/// A model with cold-start fallbacks: users the model knows get its recommendations;
/// others get their segment's favourites (when segments are attached and the user is
/// in one, or features are given), else the popular (or trending) items.
#[derive(Debug, Clone)]
pub struct ColdStart<R> {
    model: R,
    popularity: Popularity,
    segments: Option<Segments>,
}

impl<R: Recommender> ColdStart<R> {
    /// Wraps `model` with all-time popularity as the fallback.
    pub fn new(model: R) -> Self {
        ColdStart {
            model,
            popularity: Popularity::new(),
            segments: None,
        }
    }

    /// Uses `popularity` (e.g. [`Popularity::trending`]) as the fallback; it is fitted
    /// along with the model.
    #[must_use]
    pub fn with_popularity(mut self, popularity: Popularity) -> Self {
        self.popularity = popularity;
        self
    }

    /// Attaches user segments.
    #[must_use]
    pub fn with_segments(mut self, segments: Segments) -> Self {
        self.segments = Some(segments);
        self
    }

    /// The wrapped model.
    pub fn model(&self) -> &R {
        &self.model
    }

    /// Recommends for a user the model may not know, placing them in a segment by
    /// `features` when they are unknown.
    pub fn recommend_with_features(
        &self,
        user: &Id,
        features: &[f64],
        query: &Query<'_>,
    ) -> Result<Vec<Scored>> {
        match self.model.recommend(user, query) {
            Err(e) if e.kind() == ErrorKind::UnknownUser => match &self.segments {
                Some(s) => s.recommend_segment(s.assign(features)?, query),
                None => self.popularity.recommend(user, query),
            },
            other => other,
        }
    }
}

impl<R: Recommender> Recommender for ColdStart<R> {
    fn name(&self) -> &'static str {
        self.model.name()
    }

    fn fit(&mut self, data: &Dataset) -> Result<()> {
        self.model.fit(data)?;
        self.popularity.fit(data)
    }

    fn recommend(&self, user: &Id, query: &Query<'_>) -> Result<Vec<Scored>> {
        match self.model.recommend(user, query) {
            Err(e) if e.kind() == ErrorKind::UnknownUser => {
                if let Some(s) = &self.segments
                    && let Some(seg) = s.segment_of(user)
                {
                    return s.recommend_segment(seg, query);
                }
                self.popularity.recommend(user, query)
            }
            other => other,
        }
    }

    fn similar_items(&self, item: &Id, k: usize) -> Result<Vec<Scored>> {
        self.model.similar_items(item, k)
    }

    fn update(&mut self, events: &[Event]) -> Result<()> {
        self.model.update(events)?;
        self.popularity.update(events)
    }
}
