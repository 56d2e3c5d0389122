//! [`DeadLetter`]: what a trigger writes to its on-failure log for a record it gave up on.

use bytes::Bytes;
use lakehouse_core::{Error, ErrorKind, PutRecord, Record, Result, SequenceNumber, ShardId};
use serde_json::{Map, Value, json};

/// A record a trigger could not process, with the error that ended its retries.
///
/// Written to the on-failure log as a JSON object under the record's own partition key;
/// [`DeadLetter::decode`] reads it back. The payload is kept verbatim: as a string in
/// field `data` when it is UTF-8, otherwise as lower-case hex in field `data_hex`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The trigger (consumer group) that gave up.
    pub trigger: String,
    /// The shard the record was read from.
    pub shard: ShardId,
    /// Its sequence number in that shard.
    pub sequence: SequenceNumber,
    /// Its partition key.
    pub partition_key: String,
    /// Its arrival time in the source log, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// How many handler invocations failed on it (0 when it expired before any).
    pub attempts: u32,
    /// The [`ErrorKind`] of the last error, as [`ErrorKind::as_str`] names it.
    pub error_kind: String,
    /// The last error, as displayed.
    pub error: String,
    /// The original payload.
    pub data: Bytes,
}

impl DeadLetter {
    pub(crate) fn from_record(
        trigger: &str,
        record: &Record,
        attempts: u32,
        error: &Error,
    ) -> DeadLetter {
        DeadLetter {
            trigger: trigger.to_owned(),
            shard: record.shard,
            sequence: record.sequence,
            partition_key: record.partition_key.to_string(),
            timestamp_ms: record.timestamp_ms,
            attempts,
            error_kind: error.kind().as_str().to_owned(),
            error: error.to_string(),
            data: record.data.clone(),
        }
    }

    /// The JSON object written to the on-failure log.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "trigger": self.trigger,
            "shard": self.shard.0,
            "sequence": self.sequence,
            "partition_key": self.partition_key,
            "timestamp_ms": self.timestamp_ms,
            "attempts": self.attempts,
            "error_kind": self.error_kind,
            "error": self.error,
        });
        if let Value::Object(map) = &mut v {
            match std::str::from_utf8(&self.data) {
                Ok(text) => map.insert("data".into(), Value::String(text.to_owned())),
                Err(_) => map.insert("data_hex".into(), Value::String(hex(&self.data))),
            };
        }
        v
    }

    pub(crate) fn to_put(&self) -> PutRecord {
        // Serialising a `Value` built from strings and integers cannot fail.
        let bytes = serde_json::to_vec(&self.to_json()).unwrap_or_default();
        PutRecord::new(self.partition_key.clone(), bytes)
    }

    /// Reads a dead letter back from a record of the on-failure log.
    ///
    /// Fails with [`ErrorKind::Corrupt`] when the record is not a dead letter, naming
    /// the missing or malformed field.
    pub fn decode(record: &Record) -> Result<DeadLetter> {
        let corrupt = |what: String| {
            Error::new(ErrorKind::Corrupt, format!("not a dead letter: {what}"))
                .with_shard(record.shard)
                .with_version(record.sequence)
        };
        let v: Value =
            serde_json::from_slice(&record.data).map_err(|e| corrupt(format!("bad JSON: {e}")))?;
        let map = v
            .as_object()
            .ok_or_else(|| corrupt("not a JSON object".into()))?;
        let text = |f: &str| -> Result<String> {
            map.get(f)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| corrupt(format!("field {f:?} is missing or not a string")))
        };
        let int = |f: &str| -> Result<i64> {
            map.get(f)
                .and_then(Value::as_i64)
                .ok_or_else(|| corrupt(format!("field {f:?} is missing or not an integer")))
        };
        let uint = |f: &str| -> Result<u64> {
            map.get(f)
                .and_then(Value::as_u64)
                .ok_or_else(|| corrupt(format!("field {f:?} is missing or not an integer")))
        };
        let trigger = text("trigger")?;
        Ok(DeadLetter {
            trigger,
            shard: ShardId(
                u32::try_from(uint("shard")?).map_err(|_| corrupt("shard out of range".into()))?,
            ),
            sequence: uint("sequence")?,
            partition_key: text("partition_key")?,
            timestamp_ms: int("timestamp_ms")?,
            attempts: u32::try_from(uint("attempts")?)
                .map_err(|_| corrupt("attempts out of range".into()))?,
            error_kind: text("error_kind")?,
            error: text("error")?,
            data: data_of(map).map_err(&corrupt)?,
        })
    }
}

fn data_of(map: &Map<String, Value>) -> std::result::Result<Bytes, String> {
    if let Some(text) = map.get("data").and_then(Value::as_str) {
        return Ok(Bytes::from(text.to_owned()));
    }
    let hex_text = map
        .get("data_hex")
        .and_then(Value::as_str)
        .ok_or("field \"data\" or \"data_hex\" is missing")?;
    unhex(hex_text)
        .map(Bytes::from)
        .ok_or_else(|| "field \"data_hex\" is not hex".to_owned())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(data: &'static [u8]) -> Record {
        Record {
            shard: ShardId(2),
            sequence: 17,
            partition_key: "user-9".into(),
            data: Bytes::from_static(data),
            timestamp_ms: 1_234,
        }
    }

    #[test]
    fn round_trips_text_and_binary_payloads() {
        let err = Error::new(ErrorKind::External, "price is negative");
        for data in [&b"{\"price\":-1}"[..], &[0xff, 0x00, 0x10][..]] {
            let dl = DeadLetter::from_record("t", &record(data), 4, &err);
            let put = dl.to_put();
            assert_eq!(put.partition_key, "user-9");
            let back = DeadLetter::decode(&Record {
                data: put.data,
                ..record(b"")
            })
            .unwrap();
            assert_eq!(back, dl);
            assert_eq!(back.data.as_ref(), data);
            assert_eq!(back.error, "external error: price is negative");
        }
    }

    #[test]
    fn decode_names_the_bad_field() {
        let e = DeadLetter::decode(&record(b"{\"trigger\":1}")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(e.message().contains("\"trigger\""), "{e}");
        let e = DeadLetter::decode(&record(b"not json")).unwrap_err();
        assert!(e.message().contains("bad JSON"), "{e}");
    }
}
