//! Interaction data: [`Dataset`] (from events or Arrow batches), splits, and the
//! sparse matrix view.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use lakehouse_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

use crate::id::{Id, IdMap};
use crate::rng::Rng;
use crate::sparse::InteractionMatrix;

/// One interaction by dense indices: `user` touched `item` with `weight` at `timestamp`
/// (microseconds since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// User index in [`Dataset::users`].
    pub user: u32,
    /// Item index in [`Dataset::items`].
    pub item: u32,
    /// Strength of the interaction (a count, a rating, an event-type weight); `>= 0`.
    pub weight: f32,
    /// Microseconds since the Unix epoch.
    pub timestamp: i64,
}

/// One interaction by external ids, as online updates receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The user.
    pub user: Id,
    /// The item.
    pub item: Id,
    /// Strength of the interaction; `>= 0` and finite.
    pub weight: f32,
    /// Microseconds since the Unix epoch.
    pub timestamp: i64,
}

impl Event {
    /// An event of weight 1 at time 0.
    pub fn new(user: impl Into<Id>, item: impl Into<Id>) -> Self {
        Event {
            user: user.into(),
            item: item.into(),
            weight: 1.0,
            timestamp: 0,
        }
    }

    /// Sets the weight.
    #[must_use]
    pub fn weight(mut self, weight: f32) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the time, in microseconds since the Unix epoch.
    #[must_use]
    pub fn at_micros(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }
}

pub(crate) fn check_weight(weight: f32, user: &Id, item: &Id) -> Result<()> {
    if weight.is_finite() && weight >= 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "interaction weight must be finite and >= 0, got {weight} for item {item}"
        ))
        .with_key(user.to_string()))
    }
}

/// How to read interactions from Arrow columns.
///
/// The user and item columns may be any integer or string type; the weight comes from
/// a numeric column, from an event-type column through a weight table, or is 1; the
/// optional timestamp column may be an integer (taken as microseconds) or an Arrow
/// timestamp of any unit.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct Columns {
    user: String,
    item: String,
    weight: WeightSource,
    timestamp: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum WeightSource {
    One,
    Column(String),
    EventType {
        column: String,
        weights: HashMap<String, f32>,
    },
}

impl Columns {
    /// Reads users from column `user` and items from column `item`, each with weight 1.
    pub fn new(user: impl Into<String>, item: impl Into<String>) -> Self {
        Columns {
            user: user.into(),
            item: item.into(),
            weight: WeightSource::One,
            timestamp: None,
        }
    }

    /// Reads the weight from a numeric column.
    pub fn weight(mut self, column: impl Into<String>) -> Self {
        self.weight = WeightSource::Column(column.into());
        self
    }

    /// Derives the weight from an event-type string column (`"view"`, `"cart"`,
    /// `"purchase"`, ...); rows whose type is not in `weights` are skipped.
    pub fn event_type<S: Into<String>>(
        mut self,
        column: impl Into<String>,
        weights: impl IntoIterator<Item = (S, f32)>,
    ) -> Self {
        self.weight = WeightSource::EventType {
            column: column.into(),
            weights: weights.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        };
        self
    }

    /// Reads the time from a column.
    pub fn timestamp(mut self, column: impl Into<String>) -> Self {
        self.timestamp = Some(column.into());
        self
    }
}

/// Interactions with their user and item id mappings.
///
/// Datasets split from one another ([`split_random`](Self::split_random),
/// [`split_by_time`](Self::split_by_time)) share the same id mappings, so indices agree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    users: IdMap,
    items: IdMap,
    interactions: Vec<Interaction>,
}

impl Dataset {
    /// An empty dataset.
    pub fn new() -> Self {
        Dataset::default()
    }

    /// Builds a dataset from Arrow batches.
    ///
    /// Errors: [`ErrorKind::ColumnNotFound`], [`ErrorKind::TypeMismatch`], and
    /// [`ErrorKind::InvalidInput`] for null ids or NaN / negative weights (nothing is
    /// added from a batch that fails).
    pub fn from_batches<'a>(
        batches: impl IntoIterator<Item = &'a RecordBatch>,
        columns: &Columns,
    ) -> Result<Dataset> {
        let mut ds = Dataset::new();
        for batch in batches {
            ds.extend_from_batch(batch, columns)?;
        }
        Ok(ds)
    }

    /// Appends the rows of one Arrow batch; on error the dataset is unchanged.
    pub fn extend_from_batch(&mut self, batch: &RecordBatch, columns: &Columns) -> Result<()> {
        let users = read_ids(batch, &columns.user)?;
        let items = read_ids(batch, &columns.item)?;
        let weights: Vec<Option<f32>> = match &columns.weight {
            WeightSource::One => vec![Some(1.0); batch.num_rows()],
            WeightSource::Column(name) => {
                let arr = column(batch, name)?;
                // Casting would turn unparsable strings into nulls: accept numbers only.
                if !arr.data_type().is_numeric() {
                    return Err(Error::new(
                        ErrorKind::TypeMismatch,
                        format!("weight column must be numeric, not {}", arr.data_type()),
                    )
                    .with_column(name.clone()));
                }
                let arr = cast(arr, &DataType::Float64).map_err(|e| {
                    Error::new(ErrorKind::TypeMismatch, "weight column is not numeric")
                        .with_column(name.clone())
                        .with_source(e)
                })?;
                let arr = arr.as_primitive::<Float64Type>();
                (0..arr.len())
                    .map(|i| {
                        if arr.is_null(i) {
                            Some(f32::NAN)
                        } else {
                            Some(arr.value(i) as f32)
                        }
                    })
                    .collect()
            }
            WeightSource::EventType {
                column: name,
                weights,
            } => {
                let arr = column(batch, name)?;
                let arr = cast(arr, &DataType::Utf8).map_err(|e| {
                    Error::new(ErrorKind::TypeMismatch, "event type column is not a string")
                        .with_column(name.clone())
                        .with_source(e)
                })?;
                let arr = arr.as_string::<i32>();
                (0..arr.len())
                    .map(|i| {
                        if arr.is_null(i) {
                            None
                        } else {
                            weights.get(arr.value(i)).copied()
                        }
                    })
                    .collect()
            }
        };
        let times = match &columns.timestamp {
            None => vec![0i64; batch.num_rows()],
            Some(name) => read_times(batch, name)?,
        };
        let mut staged = Vec::with_capacity(batch.num_rows());
        for (row, (((user, item), weight), ts)) in users
            .into_iter()
            .zip(items)
            .zip(weights)
            .zip(times)
            .enumerate()
        {
            let (Some(user), Some(item)) = (user, item) else {
                return Err(Error::invalid("user or item id is null")
                    .with_offset(row as u64)
                    .with_column(format!("{}/{}", columns.user, columns.item)));
            };
            let Some(weight) = weight else { continue };
            check_weight(weight, &user, &item).map_err(|e| e.with_offset(row as u64))?;
            staged.push((user, item, weight, ts));
        }
        for (user, item, weight, ts) in staged {
            self.push(user, item, weight, ts)?;
        }
        Ok(())
    }

    /// Adds one interaction.
    ///
    /// Errors with [`ErrorKind::InvalidInput`] for a NaN, infinite or negative weight.
    pub fn push(
        &mut self,
        user: impl Into<Id>,
        item: impl Into<Id>,
        weight: f32,
        timestamp: i64,
    ) -> Result<()> {
        let (user, item) = (user.into(), item.into());
        check_weight(weight, &user, &item)?;
        let too_many = || Error::invalid("more than u32::MAX - 1 distinct ids");
        let u = self.users.insert(user).ok_or_else(too_many)?;
        let i = self.items.insert(item).ok_or_else(too_many)?;
        self.interactions.push(Interaction {
            user: u,
            item: i,
            weight,
            timestamp,
        });
        Ok(())
    }

    /// Adds an [`Event`].
    pub fn push_event(&mut self, event: &Event) -> Result<()> {
        self.push(
            event.user.clone(),
            event.item.clone(),
            event.weight,
            event.timestamp,
        )
    }

    /// The user id mapping.
    pub fn users(&self) -> &IdMap {
        &self.users
    }

    /// The item id mapping.
    pub fn items(&self) -> &IdMap {
        &self.items
    }

    /// Number of users known to the mapping.
    pub fn num_users(&self) -> usize {
        self.users.len()
    }

    /// Number of items known to the mapping.
    pub fn num_items(&self) -> usize {
        self.items.len()
    }

    /// Number of interactions.
    pub fn len(&self) -> usize {
        self.interactions.len()
    }

    /// `true` when there is no interaction.
    pub fn is_empty(&self) -> bool {
        self.interactions.is_empty()
    }

    /// The interactions, in insertion order.
    pub fn interactions(&self) -> &[Interaction] {
        &self.interactions
    }

    /// The same dataset with every weight set to 1 (implicit feedback from ratings).
    #[must_use]
    pub fn with_unit_weights(mut self) -> Dataset {
        for x in &mut self.interactions {
            x.weight = 1.0;
        }
        self
    }

    /// The sparse user-item matrix, repeated pairs summed.
    pub fn matrix(&self) -> InteractionMatrix {
        let triples: Vec<(u32, u32, f32)> = self
            .interactions
            .iter()
            .map(|x| (x.user, x.item, x.weight))
            .collect();
        InteractionMatrix::new(self.num_users(), self.num_items(), &triples)
    }

    /// Repeated (user, item) pairs merged: weights summed, the latest time kept.
    fn merged(&self) -> Vec<Interaction> {
        let mut map: HashMap<(u32, u32), usize> = HashMap::with_capacity(self.len());
        let mut out: Vec<Interaction> = Vec::with_capacity(self.len());
        for x in &self.interactions {
            match map.get(&(x.user, x.item)) {
                Some(&k) => {
                    out[k].weight += x.weight;
                    out[k].timestamp = out[k].timestamp.max(x.timestamp);
                }
                None => {
                    map.insert((x.user, x.item), out.len());
                    out.push(*x);
                }
            }
        }
        out
    }

    fn with_interactions(&self, interactions: Vec<Interaction>) -> Dataset {
        Dataset {
            users: self.users.clone(),
            items: self.items.clone(),
            interactions,
        }
    }

    fn check_fraction(test_fraction: f64) -> Result<()> {
        if (0.0..1.0).contains(&test_fraction) {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "test fraction must be in [0, 1), got {test_fraction}"
            )))
        }
    }

    /// Splits the distinct (user, item) pairs at random into `(train, test)`, with
    /// about `test_fraction` of them in test. Deterministic for a seed.
    pub fn split_random(&self, test_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        Self::check_fraction(test_fraction)?;
        let mut pairs = self.merged();
        let mut rng = Rng::new(seed);
        rng.shuffle(&mut pairs);
        let n_test = (pairs.len() as f64 * test_fraction).round() as usize;
        let train = pairs.split_off(n_test);
        Ok((self.with_interactions(train), self.with_interactions(pairs)))
    }

    /// Splits the distinct (user, item) pairs by time: the latest `test_fraction` of
    /// them (by their last interaction) go to test. Ties keep insertion order.
    pub fn split_by_time(&self, test_fraction: f64) -> Result<(Dataset, Dataset)> {
        Self::check_fraction(test_fraction)?;
        let mut pairs = self.merged();
        pairs.sort_by_key(|x| x.timestamp);
        let n_test = (pairs.len() as f64 * test_fraction).round() as usize;
        let test = pairs.split_off(pairs.len() - n_test);
        Ok((self.with_interactions(pairs), self.with_interactions(test)))
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        Error::new(ErrorKind::ColumnNotFound, "column not in batch").with_column(name)
    })
}

fn read_ids(batch: &RecordBatch, name: &str) -> Result<Vec<Option<Id>>> {
    let arr = column(batch, name)?;
    let dt = arr.data_type();
    if dt.is_integer() {
        let arr = cast(arr, &DataType::Int64)?;
        let arr = arr.as_primitive::<Int64Type>();
        Ok((0..arr.len())
            .map(|i| (!arr.is_null(i)).then(|| Id::Int(arr.value(i))))
            .collect())
    } else if matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _)
    ) {
        let arr = cast(arr, &DataType::Utf8).map_err(|e| {
            Error::new(
                ErrorKind::TypeMismatch,
                "id column is not an integer or string",
            )
            .with_column(name)
            .with_source(e)
        })?;
        let arr = arr.as_string::<i32>();
        Ok((0..arr.len())
            .map(|i| (!arr.is_null(i)).then(|| Id::from(arr.value(i))))
            .collect())
    } else {
        Err(Error::new(
            ErrorKind::TypeMismatch,
            format!("id column must be an integer or string, not {dt}"),
        )
        .with_column(name))
    }
}

fn read_times(batch: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    let arr = column(batch, name)?;
    let scale: fn(i64) -> i64 = match arr.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => |v| v.saturating_mul(1_000_000),
        DataType::Timestamp(TimeUnit::Millisecond, _) => |v| v.saturating_mul(1_000),
        DataType::Timestamp(TimeUnit::Microsecond, _) => |v| v,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => |v| v / 1_000,
        dt if dt.is_integer() => |v| v,
        dt => {
            return Err(Error::new(
                ErrorKind::TypeMismatch,
                format!("timestamp column must be an integer or timestamp, not {dt}"),
            )
            .with_column(name));
        }
    };
    let arr = cast(arr, &DataType::Int64)?;
    let arr = arr.as_primitive::<Int64Type>();
    Ok((0..arr.len())
        .map(|i| {
            if arr.is_null(i) {
                0
            } else {
                scale(arr.value(i))
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Dataset {
        let mut d = Dataset::new();
        for u in 0..10i64 {
            for i in 0..10i64 {
                if (u + i) % 3 == 0 {
                    d.push(u, format!("item-{i}"), 1.0, u * 10 + i).unwrap();
                }
            }
        }
        d
    }

    #[test]
    fn bad_weights_are_rejected_and_nothing_added() {
        let mut d = Dataset::new();
        for w in [f32::NAN, -1.0, f32::INFINITY] {
            let e = d.push(1, 2, w, 0).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
        assert!(d.is_empty());
        assert_eq!(d.num_users(), 0);
    }

    #[test]
    fn random_split_partitions_pairs() {
        let d = sample();
        let (train, test) = d.split_random(0.25, 7).unwrap();
        assert_eq!(train.len() + test.len(), d.len());
        assert_eq!(test.len(), (d.len() as f64 * 0.25).round() as usize);
        assert_eq!(train.users(), d.users());
        let (train2, _) = d.split_random(0.25, 7).unwrap();
        assert_eq!(train, train2);
        assert!(d.split_random(1.0, 0).is_err());
    }

    #[test]
    fn time_split_puts_latest_in_test() {
        let d = sample();
        let (train, test) = d.split_by_time(0.2).unwrap();
        let max_train = train
            .interactions()
            .iter()
            .map(|x| x.timestamp)
            .max()
            .unwrap();
        let min_test = test
            .interactions()
            .iter()
            .map(|x| x.timestamp)
            .min()
            .unwrap();
        assert!(max_train <= min_test);
        assert_eq!(train.len() + test.len(), d.len());
    }
}
