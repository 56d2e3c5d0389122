//! The shard map: which shards exist, their hash ranges, parents and state, as kept
//! in the log's KV bucket (one JSON value, updated by compare-and-swap).

use lakehouse_core::{Error, ErrorKind, Result, ShardId, ShardInfo};
use serde::{Deserialize, Serialize};

/// One shard as stored in the map (hash keys as hexadecimal strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredShard {
    pub(crate) id: u32,
    #[serde(default)]
    pub(crate) parents: Vec<u32>,
    pub(crate) start: String,
    pub(crate) end: String,
    #[serde(default)]
    pub(crate) closed: bool,
}

/// The stored form of the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredMap {
    /// Format version of this value.
    pub(crate) version: u32,
    pub(crate) shards: Vec<StoredShard>,
}

/// The shard map in memory, with the KV revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Topology {
    pub(crate) revision: u64,
    /// Every shard, in id order.
    pub(crate) shards: Vec<ShardInfo>,
}

impl Topology {
    /// A new map of `ranges`, shards numbered from 0.
    pub(crate) fn initial(ranges: &[(u128, u128)]) -> Self {
        Topology {
            revision: 0,
            shards: ranges
                .iter()
                .enumerate()
                .map(|(i, &range)| ShardInfo {
                    id: ShardId(i as u32),
                    parents: Vec::new(),
                    hash_range: range,
                    closed: false,
                })
                .collect(),
        }
    }

    /// The shard `id`.
    pub(crate) fn get(&self, id: ShardId) -> Option<&ShardInfo> {
        self.shards.iter().find(|s| s.id == id)
    }

    /// The open shard whose hash range holds `key`.
    pub(crate) fn route(&self, key: u128) -> Option<ShardId> {
        self.shards
            .iter()
            .find(|s| !s.closed && s.hash_range.0 <= key && key <= s.hash_range.1)
            .map(|s| s.id)
    }

    /// The id the next new shard gets.
    pub(crate) fn next_id(&self) -> u32 {
        self.shards.iter().map(|s| s.id.0 + 1).max().unwrap_or(0)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let stored = StoredMap {
            version: 1,
            shards: self
                .shards
                .iter()
                .map(|s| StoredShard {
                    id: s.id.0,
                    parents: s.parents.iter().map(|p| p.0).collect(),
                    start: format!("{:032x}", s.hash_range.0),
                    end: format!("{:032x}", s.hash_range.1),
                    closed: s.closed,
                })
                .collect(),
        };
        // A map of plain fields always serialises.
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8], revision: u64) -> Result<Self> {
        let corrupt = |m: String| Error::new(ErrorKind::Corrupt, m);
        let stored: StoredMap = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("the shard map in KV does not parse: {e}")))?;
        if stored.version != 1 {
            return Err(Error::new(
                ErrorKind::FormatVersion,
                format!(
                    "the shard map has format version {}, this build reads 1",
                    stored.version
                ),
            ));
        }
        let hex = |s: &str| {
            u128::from_str_radix(s, 16)
                .map_err(|_| corrupt(format!("the shard map holds a bad hash key {s:?}")))
        };
        let mut shards = stored
            .shards
            .iter()
            .map(|s| {
                Ok(ShardInfo {
                    id: ShardId(s.id),
                    parents: s.parents.iter().map(|&p| ShardId(p)).collect(),
                    hash_range: (hex(&s.start)?, hex(&s.end)?),
                    closed: s.closed,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        shards.sort_by_key(|s| s.id);
        Ok(Topology { revision, shards })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_round_trip_and_route() {
        let mut t = Topology::initial(&lakehouse_core::even_hash_ranges(3));
        t.shards[1].closed = true;
        t.shards.push(ShardInfo {
            id: ShardId(3),
            parents: vec![ShardId(1)],
            hash_range: t.shards[1].hash_range,
            closed: false,
        });
        let back = Topology::decode(&t.encode(), 7).unwrap();
        assert_eq!(back.shards, t.shards);
        assert_eq!(back.revision, 7);
        assert_eq!(back.route(0), Some(ShardId(0)));
        assert_eq!(back.route(t.shards[1].hash_range.0), Some(ShardId(3)));
        assert_eq!(back.route(u128::MAX), Some(ShardId(2)));
        assert_eq!(back.next_id(), 4);
        assert_eq!(
            Topology::decode(b"{", 1).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }
}
