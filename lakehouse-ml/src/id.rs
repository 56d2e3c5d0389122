//! External user and item ids and their mapping to dense indices.

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A user or item id as the application knows it: an integer or a string.
///
/// `Id::Int(7)` and `Id::from("7")` are different ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Id {
    /// An integer id.
    Int(i64),
    /// A string id.
    Str(Box<str>),
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Int(v) => write!(f, "{v}"),
            Id::Str(s) => f.write_str(s),
        }
    }
}

impl From<i64> for Id {
    fn from(v: i64) -> Self {
        Id::Int(v)
    }
}

impl From<i32> for Id {
    fn from(v: i32) -> Self {
        Id::Int(i64::from(v))
    }
}

impl From<u32> for Id {
    fn from(v: u32) -> Self {
        Id::Int(i64::from(v))
    }
}

impl From<&str> for Id {
    fn from(v: &str) -> Self {
        Id::Str(v.into())
    }
}

impl From<String> for Id {
    fn from(v: String) -> Self {
        Id::Str(v.into_boxed_str())
    }
}

impl From<&Id> for Id {
    fn from(v: &Id) -> Self {
        v.clone()
    }
}

/// A two-way mapping between [`Id`]s and dense indices `0..len`, in order of first sight.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Vec<Id>", into = "Vec<Id>")]
pub struct IdMap {
    ids: Vec<Id>,
    index: HashMap<Id, u32>,
}

impl IdMap {
    /// An empty map.
    pub fn new() -> Self {
        IdMap::default()
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// `true` when no id is mapped.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The index of `id`, if mapped.
    pub fn get(&self, id: &Id) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// The id at `index`, if in range.
    pub fn id(&self, index: u32) -> Option<&Id> {
        self.ids.get(index as usize)
    }

    /// All ids in index order.
    pub fn ids(&self) -> &[Id] {
        &self.ids
    }

    /// The index of `id`, mapping it to the next free index if it is new.
    ///
    /// Returns `None` when the map already holds `u32::MAX` ids.
    pub fn insert(&mut self, id: Id) -> Option<u32> {
        if let Some(&i) = self.index.get(&id) {
            return Some(i);
        }
        let i = u32::try_from(self.ids.len())
            .ok()
            .filter(|&i| i < u32::MAX)?;
        self.index.insert(id.clone(), i);
        self.ids.push(id);
        Some(i)
    }
}

impl From<Vec<Id>> for IdMap {
    fn from(ids: Vec<Id>) -> Self {
        let mut map = IdMap::new();
        for id in ids {
            map.insert(id);
        }
        map
    }
}

impl From<IdMap> for Vec<Id> {
    fn from(map: IdMap) -> Self {
        map.ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_both_ways_in_first_sight_order() {
        let mut m = IdMap::new();
        assert_eq!(m.insert(Id::from("b")), Some(0));
        assert_eq!(m.insert(Id::from(7)), Some(1));
        assert_eq!(m.insert(Id::from("b")), Some(0));
        assert_eq!(m.get(&Id::Int(7)), Some(1));
        assert_eq!(m.get(&Id::from("7")), None);
        assert_eq!(m.id(0), Some(&Id::from("b")));
        assert_eq!(m.len(), 2);
        let json = serde_json::to_string(&m).unwrap();
        let back: IdMap = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}
