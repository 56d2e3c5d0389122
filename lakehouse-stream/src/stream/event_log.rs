//! [`Stream`] as a [`lakehouse_core::EventLog`].

use lakehouse_core::{
    Position, PutRecord, PutResult, ReadBatch, ReadLimit, Result, SequenceNumber, ShardId,
    ShardInfo,
};

use super::Stream;
use super::committer::Job;
use super::put::Wait;

impl Stream {
    /// Awaits the disk work `jobs` that puts left to the committer thread; the first
    /// failure.
    async fn finish(&self, jobs: Vec<Job>) -> Result<()> {
        let done: Vec<_> = jobs
            .into_iter()
            .map(|job| self.inner.committer.submit(&self.inner, job))
            .collect();
        let mut result = Ok(());
        for d in done {
            let r = d.await;
            if result.is_ok() {
                result = r;
            }
        }
        result.map_err(|e| e.with_table(&self.inner.name))
    }
}

#[lakehouse_core::async_trait]
impl lakehouse_core::EventLog for Stream {
    async fn shards(&self) -> Result<Vec<ShardInfo>> {
        Ok(Stream::shards(self))
    }

    /// Appends in memory on the caller's task; the write and fsync a durable stream
    /// needs run on the stream's committer thread while the task awaits them.
    async fn put(&self, record: PutRecord) -> Result<PutResult> {
        let mut jobs = Vec::new();
        let put = self.put_record_with(record, Wait::Defer, &mut jobs)?;
        self.finish(jobs)
            .await
            .map_err(|e| e.with_shard(put.shard).with_version(put.sequence))?;
        Ok(put)
    }

    /// As `put`; when the disk work fails, every record of the call put
    /// so far fails with it (whether it is durable is unknown).
    async fn put_batch(&self, records: Vec<PutRecord>) -> Result<Vec<Result<PutResult>>> {
        let mut jobs = Vec::new();
        let mut results = self.put_records_with(records, Wait::Defer, &mut jobs);
        if let Err(e) = self.finish(jobs).await {
            for r in &mut results {
                if let Ok(put) = r {
                    *r = Err(e.clone().with_shard(put.shard).with_version(put.sequence));
                }
            }
        }
        Ok(results)
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
