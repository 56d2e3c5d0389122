//! [`Stream`] as a [`lakehouse_core::EventLog`].

use lakehouse_core::{
    Position, PutRecord, PutResult, ReadBatch, ReadLimit, Result, SequenceNumber, ShardId,
    ShardInfo,
};

use super::Stream;

#[lakehouse_core::async_trait]
impl lakehouse_core::EventLog for Stream {
    async fn shards(&self) -> Result<Vec<ShardInfo>> {
        Ok(Stream::shards(self))
    }

    async fn put(&self, record: PutRecord) -> Result<PutResult> {
        self.put_record(record)
    }

    async fn put_batch(&self, records: Vec<PutRecord>) -> Result<Vec<Result<PutResult>>> {
        Ok(self.put_records(records))
    }

    async fn read(&self, shard: ShardId, from: Position, limit: ReadLimit) -> Result<ReadBatch> {
        self.read_at(shard, from, limit)
    }

    async fn commit_checkpoint(
        &self,
        group: &str,
        shard: ShardId,
        sequence: SequenceNumber,
    ) -> Result<()> {
        Stream::commit_checkpoint(self, group, shard, sequence)
    }

    async fn checkpoint(&self, group: &str, shard: ShardId) -> Result<Option<SequenceNumber>> {
        Stream::checkpoint(self, group, shard)
    }
}
