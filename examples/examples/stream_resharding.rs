//! Clickstream events into a sharded stream, a hot shard split while producers run,
//! and a reader that follows shard lineage so every user's events stay in order.
//!
//! ```text
//! cargo run --release -p lakehouse-examples --example stream_resharding
//! ```

use std::collections::HashMap;

use lakehouse_core::{Position, PutRecord, ReadLimit};
use lakehouse_stream::Stream;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stream = Stream::builder("clickstream").shards(2).build()?;
    let users = 1_000;
    let mut sent = 0u64;
    let mut put_round = |stream: &Stream, round: u32| -> Result<(), Box<dyn std::error::Error>> {
        let batch: Vec<PutRecord> = (0..users)
            .map(|u| PutRecord::new(format!("user-{u}"), format!("{round}")))
            .collect();
        for r in stream.put_records(batch) {
            r?;
            sent += 1;
        }
        Ok(())
    };
    for round in 0..50 {
        put_round(&stream, round)?;
    }
    // Shard 0 is hot: split it in the middle of its hash range, keep producing.
    let (start, end) = stream.shards()[0].hash_range;
    let (lo, hi) = stream.split_shard(lakehouse_core::ShardId(0), start + (end - start) / 2 + 1)?;
    for round in 50..100 {
        put_round(&stream, round)?;
    }
    // Then merge the children back, and produce more.
    let merged = stream.merge_shards(lo, hi)?;
    for round in 100..150 {
        put_round(&stream, round)?;
    }

    // Read shards in id order: parents before children.
    let mut last: HashMap<String, u32> = HashMap::new();
    let mut read = 0u64;
    for shard in stream.shards() {
        let mut it = stream.shard_iterator(shard.id, Position::TrimHorizon)?;
        loop {
            let out = stream.get_records(&it, ReadLimit::records(5_000))?;
            for r in &out.records {
                let round: u32 = std::str::from_utf8(&r.data)?.parse()?;
                if let Some(prev) = last.insert(r.partition_key.to_string(), round)
                    && round != prev + 1
                {
                    return Err(
                        format!("{} out of order: {prev} then {round}", r.partition_key).into(),
                    );
                }
            }
            read += out.records.len() as u64;
            match out.next_iterator {
                Some(next) if !out.records.is_empty() => it = next,
                _ => break,
            }
        }
        println!(
            "{}  parents {:?}  closed {:<5}  records read so far {read}",
            shard.id, shard.parents, shard.closed
        );
    }
    println!(
        "put {sent}, read {read}, {} users each in order; merged shard {merged}",
        last.len()
    );
    if read != sent {
        return Err("records were lost or duplicated".into());
    }
    Ok(())
}
