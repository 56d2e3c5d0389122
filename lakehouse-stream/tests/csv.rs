//! A test decoder shared by the test crates of `lakehouse-stream` (tests/lib.rs and
//! tests/nats.rs).

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use lakehouse_core::{Error, ErrorKind, Record, Result};
use lakehouse_stream::Decoder;

/// Decodes `user,amount` records.
pub(crate) struct Csv(pub(crate) SchemaRef);

impl Decoder for Csv {
    fn schema(&self) -> SchemaRef {
        self.0.clone()
    }

    fn decode(&self, records: &[Record]) -> Result<RecordBatch> {
        let mut users = Vec::new();
        let mut amounts = Vec::new();
        for r in records {
            let text = std::str::from_utf8(&r.data).unwrap_or("");
            let parsed = text
                .split_once(',')
                .and_then(|(u, a)| a.parse::<i64>().ok().map(|a| (u.to_owned(), a)));
            let Some((u, a)) = parsed else {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("malformed record {text:?}"),
                )
                .with_shard(r.shard)
                .with_version(r.sequence));
            };
            users.push(u);
            amounts.push(a);
        }
        Ok(RecordBatch::try_new(
            self.0.clone(),
            vec![
                Arc::new(StringArray::from(users)),
                Arc::new(Int64Array::from(amounts)),
            ],
        )?)
    }
}
