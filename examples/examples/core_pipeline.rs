//! Events through an in-memory log into an in-memory table, exactly once, then a
//! pushed-down scan: the core contracts end to end, with no servers and no disk.
//!
//! ```text
//! cargo run -p lakehouse-examples --example core_pipeline -- [events] [shards]
//! ```

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use futures::TryStreamExt;
use lakehouse_core::{
    AppendOutcome, EventLog, MemoryLog, MemoryTable, Position, PutRecord, ReadLimit, Record,
    ScanRequest, TableSink, TableSource, TxnId, col,
};

const CATEGORIES: [&str; 5] = ["toys", "books", "garden", "kitchen", "sports"];

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("item_id", DataType::Int64, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("quantity", DataType::Int64, false),
        Field::new("price", DataType::Float64, false),
    ]))
}

/// Decodes `user,item,category,quantity,price` records into one batch.
fn decode(
    schema: &SchemaRef,
    records: &[Record],
) -> Result<RecordBatch, Box<dyn std::error::Error>> {
    let (mut users, mut items, mut cats, mut qty, mut price) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in records {
        let text = std::str::from_utf8(&r.data)?;
        let f: Vec<&str> = text.split(',').collect();
        let [u, i, c, q, p] = f.as_slice() else {
            return Err(
                format!("malformed record at {} #{}: {text:?}", r.shard, r.sequence).into(),
            );
        };
        users.push(u.parse::<i64>()?);
        items.push(i.parse::<i64>()?);
        cats.push(c.to_string());
        qty.push(q.parse::<i64>()?);
        price.push(p.parse::<f64>()?);
    }
    Ok(RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(users)),
            Arc::new(Int64Array::from(items)),
            Arc::new(StringArray::from(cats)),
            Arc::new(Int64Array::from(qty)),
            Arc::new(Float64Array::from(price)),
        ],
    )?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let events: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200_000);
    let shards: u32 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(4);

    let log = MemoryLog::new(shards);
    let table = MemoryTable::new("purchases", schema());
    let started = Instant::now();

    // Produce: purchases keyed by user, in batches of 500 as a Kinesis producer would.
    let mut expected_revenue = 0.0;
    let mut batch = Vec::with_capacity(500);
    for n in 0..events {
        let user = n * 7919 % 10_000;
        let item = n * 104_729 % 50_000;
        let category = CATEGORIES[(item % 5) as usize];
        let quantity = 1 + n % 3;
        let price = 1.0 + (item % 100) as f64;
        expected_revenue += quantity as f64 * price;
        batch.push(PutRecord::new(
            format!("user-{user}"),
            format!("{user},{item},{category},{quantity},{price}"),
        ));
        if batch.len() == 500 || n + 1 == events {
            for result in log.put_batch(std::mem::take(&mut batch)).await? {
                result?;
            }
        }
    }
    let produced = started.elapsed();

    // Consume every shard in micro-batches; each commit carries the shard's last sequence
    // number as its transaction id, so a replay after a crash is a no-op.
    let mut commits = 0;
    let mut replayed = 0;
    for shard in log.shards().await? {
        let app_id = format!("purchases-sink/{}", shard.id);
        let mut position = match table.last_sequence(&app_id).await? {
            Some(seq) => Position::AfterSequence(seq),
            None => Position::TrimHorizon,
        };
        loop {
            let read = log
                .read(shard.id, position, ReadLimit::records(8_192))
                .await?;
            let Some(last) = read.records.last() else {
                break;
            };
            let txn = TxnId::new(app_id.clone(), last.sequence);
            let rows = decode(&table.sink_schema(), &read.records)?;
            if let AppendOutcome::Committed { .. } =
                table.append(vec![rows.clone()], Some(txn.clone())).await?
            {
                commits += 1;
            }
            // Simulate the crash-and-retry of one delivery: the table ignores it.
            if commits == 1
                && let AppendOutcome::Duplicate { .. } = table.append(vec![rows], Some(txn)).await?
            {
                replayed += 1;
            }
            log.commit_checkpoint("purchases-sink", shard.id, last.sequence)
                .await?;
            position = read.next;
        }
    }
    let consumed = started.elapsed() - produced;

    // Query: toys revenue, with the predicate pushed into the scan.
    let toys: Vec<RecordBatch> = table
        .scan(
            ScanRequest::new()
                .with_projection(["quantity", "price"])
                .with_predicate(col("category").eq("toys")),
        )
        .await?
        .try_collect()
        .await?;
    let revenue = |batches: &[RecordBatch]| -> f64 {
        batches
            .iter()
            .map(|b| {
                let q = b.column(0).as_primitive::<Int64Type>();
                let p = b.column(1).as_primitive::<Float64Type>();
                (0..b.num_rows())
                    .map(|i| q.value(i) as f64 * p.value(i))
                    .sum::<f64>()
            })
            .sum()
    };
    let all: Vec<RecordBatch> = table
        .scan(ScanRequest::new().with_projection(["quantity", "price"]))
        .await?
        .try_collect()
        .await?;
    let rows: usize = all.iter().map(|b| b.num_rows()).sum();
    let total = revenue(&all);

    println!("events produced     {events} into {shards} shards in {produced:.2?}");
    println!(
        "events committed    {rows} rows in {commits} commits in {consumed:.2?} (table version {})",
        table.version().await?
    );
    println!("replayed deliveries {replayed} ignored by transaction id");
    println!("revenue             {total:.2} (expected {expected_revenue:.2})");
    println!(
        "toys revenue        {:.2} from {} rows",
        revenue(&toys),
        toys.iter().map(|b| b.num_rows()).sum::<usize>()
    );
    if rows as u64 != events || (total - expected_revenue).abs() > 1e-6 * expected_revenue.max(1.0)
    {
        return Err("the table does not hold every event exactly once".into());
    }
    Ok(())
}
