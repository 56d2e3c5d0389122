//! The command line of the retail lakehouse example.

use std::path::PathBuf;
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: retail_lakehouse [--duration SECS] [--rate EVENTS_PER_S] [--shards N] \
[--data-dir DIR] [--items N] [--users N] [--flush-ms MS] [--compact-secs SECS] [--stream durable-nosync|durable|memory|nats] [--nats-url URL] [--s3-endpoint URL --s3-bucket NAME]

--stream  where the stream keeps its events (memory stays bounded by the first two):
  durable-nosync  (default) segment files in the data directory, written in batches without
                  fsync; each shard keeps its newest 32 MiB in memory and serves older events
                  from its files, which keep 5 minutes, at most 2 GiB per shard
  durable         the same, and a put returns once its events are fsynced
  memory          memory only: the last 2 minutes, at most 1 GiB per shard
  nats            NATS JetStream at --nats-url (default nats://127.0.0.1:4222; feature `nats`):
                  one JetStream stream per shard, 5 minutes, at most 2 GiB per shard, in files;
                  the run removes its streams at the end";

#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) duration: Duration,
    pub(crate) rate: u64,
    pub(crate) shards: u32,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) items: u32,
    pub(crate) users: u32,
    pub(crate) flush: Duration,
    /// How often the maintenance workflow compacts the table (`None`: never).
    pub(crate) compact_every: Option<Duration>,
    /// Where the stream keeps its records.
    pub(crate) stream: StreamMode,
    /// The NATS server of `--stream nats`.
    pub(crate) nats_url: String,
    pub(crate) s3_endpoint: Option<String>,
    pub(crate) s3_bucket: Option<String>,
}

/// Where the stream keeps its records (`--stream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamMode {
    /// In memory only: the last 2 minutes, at most 1 GiB per shard.
    Memory,
    /// Segment files in the data directory, a put returns once fsynced; a 32 MiB
    /// memory window per shard, 5 minutes (at most 2 GiB per shard) on disk.
    Durable,
    /// Segment files, written in batches without fsync, with the same window and
    /// retention (the default).
    DurableNoSync,
    /// NATS JetStream (feature `nats`).
    Nats,
}

impl Args {
    pub(crate) fn parse() -> Result<Args, BoxError> {
        let mut a = Args {
            duration: Duration::from_secs(10),
            rate: 200_000,
            shards: 4,
            data_dir: None,
            items: 100_000,
            users: 20_000,
            flush: Duration::from_millis(1_000),
            compact_every: Some(Duration::from_secs(2)),
            stream: StreamMode::DurableNoSync,
            nats_url: "nats://127.0.0.1:4222".to_owned(),
            s3_endpoint: None,
            s3_bucket: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (flag.clone(), None),
            };
            if name == "-h" || name == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))?,
            };
            let bad = |e: &dyn std::fmt::Display| format!("{name} {value:?}: {e}\n{USAGE}");
            match name.as_str() {
                "--duration" => {
                    let secs: f64 = value.parse().map_err(|e| bad(&e))?;
                    a.duration = Duration::try_from_secs_f64(secs).map_err(|e| bad(&e))?;
                }
                "--rate" => a.rate = value.parse().map_err(|e| bad(&e))?,
                "--shards" => a.shards = value.parse().map_err(|e| bad(&e))?,
                "--data-dir" => a.data_dir = Some(PathBuf::from(value)),
                "--items" => a.items = value.parse().map_err(|e| bad(&e))?,
                "--users" => a.users = value.parse().map_err(|e| bad(&e))?,
                "--flush-ms" => {
                    a.flush = Duration::from_millis(value.parse().map_err(|e| bad(&e))?)
                }
                "--compact-secs" => {
                    let secs: f64 = value.parse().map_err(|e| bad(&e))?;
                    a.compact_every = if secs == 0.0 {
                        None
                    } else {
                        Some(Duration::try_from_secs_f64(secs).map_err(|e| bad(&e))?)
                    };
                }
                "--stream" => {
                    a.stream = match value.as_str() {
                        "memory" => StreamMode::Memory,
                        "durable" => StreamMode::Durable,
                        "durable-nosync" => StreamMode::DurableNoSync,
                        "nats" => StreamMode::Nats,
                        _ => {
                            return Err(
                                bad(&"expected memory, durable, durable-nosync or nats").into()
                            );
                        }
                    }
                }
                "--nats-url" => a.nats_url = value,
                "--s3-endpoint" => a.s3_endpoint = Some(value),
                "--s3-bucket" => a.s3_bucket = Some(value),
                _ => return Err(format!("unknown flag {name}\n{USAGE}").into()),
            }
        }
        if a.rate == 0 || a.shards == 0 {
            return Err(format!("--rate and --shards must be positive\n{USAGE}").into());
        }
        Ok(a)
    }
}
