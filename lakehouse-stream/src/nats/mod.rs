//! [`NatsLog`]: the [`EventLog`](lakehouse_core::EventLog) on NATS JetStream
//! (feature `nats`).
//!
//! ```no_run
//! use lakehouse_core::{EventLog, Position, PutRecord, ReadLimit};
//! use lakehouse_stream::NatsLog;
//!
//! # async fn run() -> lakehouse_core::Result<()> {
//! // Inside a Tokio runtime, with `nats-server -js` (2.11 or newer) listening.
//! let log = NatsLog::builder("nats://127.0.0.1:4222", "clicks")
//!     .shards(4)
//!     .open()
//!     .await?;
//! let put = log.put(PutRecord::new("user-42", "viewed kettle")).await?;
//! let batch = log
//!     .read(put.shard, Position::AtSequence(put.sequence), ReadLimit::records(10))
//!     .await?;
//! assert_eq!(&batch.records[0].data[..], b"viewed kettle");
//! # Ok(())
//! # }
//! ```
//!
//! # Mapping
//!
//! * **Shards.** Each shard is one JetStream stream, `LH-<log>-<shard>`, with one
//!   subject, `lh.<log>.<shard>`. A stream's sequence numbers are contiguous, so a
//!   shard's order is the stream's order, whichever client wrote.
//! * **Routing.** The client hashes a record's partition key with MD5 (or takes its
//!   explicit hash key) and sends it to the open shard whose range holds it, as the
//!   in-process [`Stream`](crate::Stream) does. The shard map (ranges, parents,
//!   closed flags) is one JSON value in the KV bucket `LH-<log>-meta`, key `shards`;
//!   every client watches it and re-routes when it changes.
//! * **Many records per message.** A put packs the records of one shard into as few
//!   JetStream messages as fit the server's `max_payload` (at most 65,536 records a
//!   message); a record's sequence number is `stream_sequence << 16 | index`, so
//!   sequence numbers strictly increase within a shard and address single records,
//!   and the next sequence to be assigned is `(last_stream_sequence + 1) << 16`. The
//!   messages of a put call are published without waiting for each other, and their
//!   acks awaited together: up to [`NatsLogBuilder::max_outstanding_acks`] are in
//!   flight per client.
//! * **Idempotent producers.** Every message carries a `Nats-Msg-Id`; a publish whose
//!   ack timed out or whose connection broke is sent again with the same id, and the
//!   server stores it once, returning the first copy's sequence, as long as the retry
//!   comes within the stream's duplicate window
//!   ([`NatsLogBuilder::duplicate_window`], 2 minutes by default).
//!   [`NatsLog::put_batch_with_id`] derives the ids from a caller's batch id, so that
//!   a caller that retries a whole batch after an error (for example after a
//!   restart) gets the original sequence numbers back instead of a second copy.
//! * **Fencing.** With [`NatsLogBuilder::single_writer`], every message carries the
//!   stream sequence it must follow (`Nats-Expected-Last-Sequence`): a second writer
//!   is refused with `Conflict`, and messages sent again after a broken connection keep
//!   their order.
//! * **Retention and back-pressure.** Each stream has `max_age`
//!   ([`NatsLogBuilder::retention`]) and `max_bytes`
//!   ([`NatsLogBuilder::max_shard_bytes`]) limits with `discard: new`: a put to a full
//!   shard fails with [`ErrorKind::Full`], as in process, and nothing is written.
//! * **Reads.** A read is stateless, as the contract's positions are: it asks for
//!   the stream's state (first and last sequence, newest timestamp) and then fetches
//!   a batch of messages with one batch direct get (`$JS.API.DIRECT.GET`, NATS 2.11 or
//!   newer), starting at a stream sequence (`TRIM_HORIZON` is the first retained
//!   message, `LATEST` the one after the last, `AT`/`AFTER_SEQUENCE_NUMBER` the
//!   message a sequence number addresses, skipping the records before its index) or at
//!   a server time (`AT_TIMESTAMP`, the `start_time` of the request). A record's
//!   timestamp is its message's server time. Positions older than the first retained
//!   message fail with `PositionTrimmed`, those past the next sequence with
//!   `InvalidPosition`.
//! * **Checkpoints.** The KV bucket `LH-<log>-checkpoints` holds one key per group and
//!   shard. [`EventLog::commit_checkpoint`](lakehouse_core::EventLog::commit_checkpoint)
//!   writes it (the latest call wins, as the contract says);
//!   [`NatsLog::advance_checkpoint`] moves it only forward, by compare-and-swap on the
//!   key's revision.
//! * **Consumer groups.** [`NatsConsumerGroup`] leases shards to members in any
//!   process: the group's members and leases are one key of the KV bucket
//!   `LH-<log>-groups`, changed by compare-and-swap, so a lease has one owner at a
//!   time; members renew by bumping a counter, and one whose counter stops moving for
//!   the lease duration loses its shards at the next rebalance. A member reads each
//!   shard it holds through one durable pull consumer of the group on the shard's
//!   stream (`lh-<group>-<shard>-<lease>`, no acks), created at the group's checkpoint
//!   when the member takes the lease, after it deletes the previous holder's: the
//!   server shows each group's read position and lag per shard, and a member that
//!   lost its lease without noticing cannot take the new holder's records. The
//!   checkpoint, which members only move forward, stays the committed position.
//! * **Clusters.** [`NatsLogBuilder::replicas`] sets the replicas of every stream and
//!   bucket (3 in a three-node cluster: one node may fail); the builder takes the
//!   cluster's URLs, comma-separated, and the client moves to another node when its
//!   own goes away.
//! * **Split and merge.** [`NatsLog::split_shard`] and [`NatsLog::merge_shards`]
//!   create the child streams, then replace the shard map by compare-and-swap (the
//!   parents closed, the children listing them as parents: the lineage), then seal
//!   the parent streams (`sealed: true`, so no client with an old map can append to
//!   them). A producer whose put meets a sealed stream reloads the map and routes
//!   again. Readers read a parent to its end (`end_of_shard`) before its children.
//!
//! # Runtime
//!
//! The client runs on Tokio: create and use a `NatsLog` inside a Tokio runtime. It
//! reconnects by itself after the server restarts; calls made while the server is
//! away fail with [`ErrorKind::Unavailable`] or [`ErrorKind::Timeout`], and the
//! same calls succeed again once it is back.
//!
//! # Limits
//!
//! * Without single-writer fencing, per-key order holds within one connection. When a
//!   connection breaks while a put's messages are in flight, the messages sent again
//!   go after any of the same put that reached the server on the new connection, so
//!   the records of one failed put may be stored out of order (none is lost or stored
//!   twice within the duplicate window).
//! * A put whose ack did not come in time (`Timeout`, `Unavailable`) may still be
//!   stored: the client sends what it buffered when it reconnects. Retry it with
//!   [`NatsLog::put_batch_with_id`] and the same id to have it stored once.
//! * Reads with `allow_direct` may be answered by any replica of a replicated
//!   stream, which can lag the leader by a moment.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::kv;
use futures::StreamExt;
use lakehouse_core::{Error, ErrorKind, Result, ShardId, ShardInfo};
use parking_lot::RwLock;

mod codec;
mod cursor;
mod event_log;
mod group;
mod put;
mod read;
mod reshard;
mod topology;

pub use self::group::{NatsConsumerGroup, NatsMember};
use self::topology::Topology;

/// The KV key of the shard map.
const SHARDS_KEY: &str = "shards";

/// Configures and opens a [`NatsLog`]; from [`NatsLog::builder`].
#[derive(Debug, Clone)]
pub struct NatsLogBuilder {
    url: String,
    name: String,
    shards: u32,
    max_record_bytes: Option<usize>,
    retention: Option<Duration>,
    max_shard_bytes: Option<u64>,
    replicas: usize,
    duplicate_window: Duration,
    request_timeout: Duration,
    publish_timeout: Duration,
    max_outstanding_acks: usize,
    memory_storage: bool,
    single_writer: bool,
}

impl NatsLogBuilder {
    /// Shards of a new log (ignored when the log exists: its shard map wins).
    /// Default 4.
    #[must_use]
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self
    }

    /// The largest record (partition key plus payload). Default: what fits one
    /// message under the server's `max_payload`, less 1 KiB for headers.
    #[must_use]
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = Some(bytes);
        self
    }

    /// How long records are kept (the streams' `max_age`); `None` keeps them until
    /// `max_shard_bytes` is reached. Default 24 hours.
    #[must_use]
    pub fn retention(mut self, age: Option<Duration>) -> Self {
        self.retention = age;
        self
    }

    /// The bytes a shard's stream may hold (its `max_bytes`, with `discard: new`);
    /// puts beyond it fail with `Full`. `None` for no bound. Default 256 MiB.
    #[must_use]
    pub fn max_shard_bytes(mut self, bytes: Option<u64>) -> Self {
        self.max_shard_bytes = bytes;
        self
    }

    /// Replicas of each stream and bucket (1, 3 or 5 in a cluster). Default 1.
    #[must_use]
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// How long the server remembers message ids for deduplication (at most the
    /// retention age). Default 2 minutes.
    #[must_use]
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// How long a request to the server (a read, a KV operation) may take. Default 5 s.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a put keeps sending a message again (same id) after a timeout or a
    /// broken connection before it fails. Default 10 s.
    #[must_use]
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Publish acks one client waits for at once. Default 1,024.
    #[must_use]
    pub fn max_outstanding_acks(mut self, acks: usize) -> Self {
        self.max_outstanding_acks = acks;
        self
    }

    /// Fences this client as the only writer of the log's shards: each message
    /// carries the stream sequence it expects to follow (`Nats-Expected-Last-Sequence`),
    /// so a put fails with `Conflict` when another client appended in between, and the
    /// messages of a put that are sent again after a broken connection go in their
    /// original order. This client's puts then run one at a time. Default off.
    #[must_use]
    pub fn single_writer(mut self, single: bool) -> Self {
        self.single_writer = single;
        self
    }

    /// Keeps new streams in server memory instead of files (for tests and caches).
    #[must_use]
    pub fn memory_storage(mut self, memory: bool) -> Self {
        self.memory_storage = memory;
        self
    }

    /// Connects and opens the log, creating its streams and buckets if they do not
    /// exist yet.
    ///
    /// # Errors
    ///
    /// `InvalidConfig` for a bad name or setting, `Unavailable` when the server cannot
    /// be reached or has no JetStream, `Corrupt` for an unreadable shard map.
    pub async fn open(self) -> Result<NatsLog> {
        NatsLog::open(self).await
    }
}

/// A failure of the server or the connection: `Timeout` when the cause timed out,
/// else `Unavailable`, with the source kept.
pub(crate) fn remote(
    name: &str,
    what: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    let text = e.to_string();
    let kind = if text.contains("timed out") || text.contains("timeout") {
        ErrorKind::Timeout
    } else {
        ErrorKind::Unavailable
    };
    Error::new(kind, format!("NATS: {what}: {text}"))
        .with_table(name)
        .with_source(e)
}

pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) meta: kv::Store,
    pub(crate) checkpoints: kv::Store,
    pub(crate) groups: kv::Store,
    pub(crate) topology: Arc<RwLock<Arc<Topology>>>,
    pub(crate) max_record_bytes: usize,
    /// Bytes of one message body at most.
    pub(crate) max_body_bytes: usize,
    pub(crate) config: NatsLogBuilder,
    /// Prefix of the message ids this client makes up.
    pub(crate) producer_id: String,
    pub(crate) next_msg: AtomicU64,
    /// Under single-writer fencing: the last stream sequence of each shard this
    /// client knows of, held for the whole of a put.
    pub(crate) fence: tokio::sync::Mutex<HashMap<ShardId, u64>>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(w) = &self.watcher {
            w.abort();
        }
    }
}

/// A sharded, ordered, replayable log on NATS JetStream, implementing
/// [`lakehouse_core::EventLog`]: one stream per shard, records batched into
/// messages, shard map, lineage and checkpoints in KV buckets. See the
/// [module documentation](self) for the mapping. Cheap to clone: clones share one
/// connection.
#[derive(Clone)]
pub struct NatsLog {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for NatsLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsLog")
            .field("name", &self.inner.name)
            .field("shards", &self.inner.topology.read().shards.len())
            .finish_non_exhaustive()
    }
}

/// Whether `name` is usable in stream, bucket and subject names.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl NatsLog {
    /// The default record limit when the server's `max_payload` allows it: 1 MiB, as
    /// the in-process stream's.
    pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

    /// Starts configuring the log `name` (letters, digits, `_` and `-`) on the server
    /// at `url` (for example `nats://127.0.0.1:4222`), or on a cluster given as a
    /// comma-separated list of its servers' URLs (the client also learns the other
    /// members of a cluster from the server it reaches, and moves to one of them when
    /// its server goes away).
    pub fn builder(url: impl Into<String>, name: impl Into<String>) -> NatsLogBuilder {
        NatsLogBuilder {
            url: url.into(),
            name: name.into(),
            shards: 4,
            max_record_bytes: None,
            retention: Some(Duration::from_secs(24 * 3600)),
            max_shard_bytes: Some(256 << 20),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            request_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(10),
            max_outstanding_acks: 1024,
            memory_storage: false,
            single_writer: false,
        }
    }

    async fn open(config: NatsLogBuilder) -> Result<NatsLog> {
        let name = config.name.clone();
        let bad = |m: String| Error::new(ErrorKind::InvalidConfig, m).with_table(&name);
        if !valid_name(&name) {
            return Err(bad(format!(
                "log name {name:?} must be 1 to 64 letters, digits, '_' or '-'"
            )));
        }
        if config.shards == 0 || config.shards > 4096 {
            return Err(bad(format!("{} shards: 1 to 4096 allowed", config.shards)));
        }
        if config.max_outstanding_acks == 0 || config.replicas == 0 {
            return Err(bad(
                "max_outstanding_acks and replicas must be positive".into()
            ));
        }
        if config.duplicate_window.is_zero() {
            return Err(bad("the duplicate window must be positive".into()));
        }
        let mut servers = Vec::new();
        for url in config
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            let addr = url
                .parse::<async_nats::ServerAddr>()
                .map_err(|e| bad(format!("server address {url:?}: {e}")))?;
            servers.push(addr);
        }
        if servers.is_empty() {
            return Err(bad("no server address given".into()));
        }
        let client = async_nats::ConnectOptions::new()
            .name(format!("lakehouse-stream {name}"))
            .connection_timeout(config.request_timeout)
            .request_timeout(Some(config.request_timeout))
            .connect(servers)
            .await
            .map_err(|e| remote(&name, &format!("connect to {}", config.url), e))?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.request_timeout)
            .max_ack_inflight(config.max_outstanding_acks)
            .build(client.clone());
        let max_payload = client.server_info().max_payload;
        let max_body_bytes = max_payload.saturating_sub(1024);
        let limit = max_body_bytes.saturating_sub(codec::BODY_HEADER + codec::RECORD_OVERHEAD);
        let max_record_bytes = match config.max_record_bytes {
            Some(n) if n > limit => {
                return Err(bad(format!(
                    "max_record_bytes {n} does not fit one message: the server's \
                     max_payload is {max_payload} bytes, so at most {limit} bytes"
                )));
            }
            Some(0) => return Err(bad("max_record_bytes must be positive".into())),
            Some(n) => n,
            None => Self::DEFAULT_MAX_RECORD_BYTES.min(limit),
        };
        let meta = bucket(&js, &config, &format!("LH-{name}-meta"), 8).await?;
        let checkpoints = bucket(&js, &config, &format!("LH-{name}-checkpoints"), 1).await?;
        let groups = bucket(&js, &config, &format!("LH-{name}-groups"), 1).await?;

        let mut log = NatsLog {
            inner: Arc::new(Inner {
                name: name.clone(),
                client,
                js,
                meta,
                checkpoints,
                groups,
                topology: Arc::new(RwLock::new(Arc::new(Topology::initial(&[])))),
                max_record_bytes,
                max_body_bytes,
                producer_id: String::new(),
                next_msg: AtomicU64::new(0),
                fence: tokio::sync::Mutex::default(),
                config,
                watcher: None,
            }),
        };
        let topology = match log.load_topology().await? {
            Some(t) => t,
            None => log.create_topology().await?,
        };
        // Closed shards whose seal did not happen (a crash between the map update and
        // the seal) are sealed now, and every listed stream exists.
        for s in &topology.shards {
            log.ensure_stream(s.id).await?;
            if s.closed {
                log.seal(s.id).await?;
            }
        }
        *log.inner.topology.write() = Arc::new(topology);
        let watcher = log.watch_topology().await?;
        let inner = Arc::get_mut(&mut log.inner)
            .ok_or_else(|| Error::new(ErrorKind::Internal, "a log being opened was shared"))?;
        inner.producer_id = inner
            .client
            .new_inbox()
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        inner.watcher = Some(watcher);
        Ok(log)
    }

    /// The log's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The record size limit (partition key plus payload).
    pub fn max_record_bytes(&self) -> usize {
        self.inner.max_record_bytes
    }

    /// The JetStream stream that holds `shard`.
    pub fn stream_name(&self, shard: ShardId) -> String {
        format!("LH-{}-{:04}", self.inner.name, shard.0)
    }

    pub(crate) fn subject(&self, shard: ShardId) -> String {
        format!("lh.{}.{:04}", self.inner.name, shard.0)
    }

    pub(crate) fn topology(&self) -> Arc<Topology> {
        self.inner.topology.read().clone()
    }

    /// Installs `t` unless a newer map is already installed.
    pub(crate) fn install(&self, t: Topology) -> Arc<Topology> {
        let mut cur = self.inner.topology.write();
        if t.revision >= cur.revision {
            *cur = Arc::new(t);
        }
        cur.clone()
    }

    /// Reads the shard map from KV (and installs it).
    pub(crate) async fn refresh(&self) -> Result<Arc<Topology>> {
        match self.load_topology().await? {
            Some(t) => Ok(self.install(t)),
            None => Err(Error::new(
                ErrorKind::Corrupt,
                "the shard map is missing from the meta bucket",
            )
            .with_table(&self.inner.name)),
        }
    }

    async fn load_topology(&self) -> Result<Option<Topology>> {
        let entry = self
            .inner
            .meta
            .entry(SHARDS_KEY)
            .await
            .map_err(|e| remote(&self.inner.name, "read the shard map", e))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => Topology::decode(&e.value, e.revision)
                .map(Some)
                .map_err(|e| e.with_table(&self.inner.name)),
            _ => Ok(None),
        }
    }

    async fn create_topology(&self) -> Result<Topology> {
        let mut t = Topology::initial(&lakehouse_core::even_hash_ranges(self.inner.config.shards));
        for s in &t.shards {
            self.ensure_stream(s.id).await?;
        }
        match self.inner.meta.create(SHARDS_KEY, t.encode().into()).await {
            Ok(revision) => {
                t.revision = revision;
                Ok(t)
            }
            // Another client created the log first: its map wins.
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                self.load_topology().await?.ok_or_else(|| {
                    Error::new(ErrorKind::Conflict, "the shard map was created and removed")
                        .with_table(&self.inner.name)
                })
            }
            Err(e) => Err(remote(&self.inner.name, "create the shard map", e)),
        }
    }

    /// Creates the stream of `shard` if it does not exist.
    pub(crate) async fn ensure_stream(&self, shard: ShardId) -> Result<()> {
        let c = &self.inner.config;
        let config = jetstream::stream::Config {
            name: self.stream_name(shard),
            subjects: vec![self.subject(shard)],
            retention: jetstream::stream::RetentionPolicy::Limits,
            discard: jetstream::stream::DiscardPolicy::New,
            max_age: c.retention.unwrap_or_default(),
            max_bytes: c
                .max_shard_bytes
                .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)),
            max_messages: -1,
            max_message_size: -1,
            storage: if c.memory_storage {
                jetstream::stream::StorageType::Memory
            } else {
                jetstream::stream::StorageType::File
            },
            num_replicas: c.replicas,
            // The server wants the window within the age limit.
            duplicate_window: match c.retention {
                Some(age) => c.duplicate_window.min(age),
                None => c.duplicate_window,
            },
            allow_direct: true,
            description: Some(format!("lakehouse-stream log {} {shard}", self.inner.name)),
            ..Default::default()
        };
        self.inner
            .js
            .get_or_create_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| remote(&self.inner.name, "create a shard's stream", e).with_shard(shard))
    }

    /// Seals the stream of closed shard `shard` (no more appends, ever).
    pub(crate) async fn seal(&self, shard: ShardId) -> Result<()> {
        let name = self.stream_name(shard);
        let err = |e: &dyn fmt::Display| {
            Error::new(ErrorKind::Unavailable, format!("NATS: seal {name}: {e}"))
                .with_table(&self.inner.name)
                .with_shard(shard)
        };
        let mut stream = self.inner.js.get_stream(&name).await.map_err(|e| err(&e))?;
        let info = stream.info().await.map_err(|e| err(&e))?;
        if info.config.sealed {
            return Ok(());
        }
        let mut config = info.config.clone();
        config.sealed = true;
        self.inner
            .js
            .update_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| err(&e))
    }

    async fn watch_topology(&self) -> Result<tokio::task::JoinHandle<()>> {
        let mut watch = self
            .inner
            .meta
            .watch(SHARDS_KEY)
            .await
            .map_err(|e| remote(&self.inner.name, "watch the shard map", e))?;
        let holder = Arc::downgrade(&self.inner.topology);
        Ok(tokio::spawn(async move {
            while let Some(Ok(entry)) = watch.next().await {
                let Some(holder) = holder.upgrade() else {
                    break;
                };
                if entry.operation != kv::Operation::Put {
                    continue;
                }
                if let Ok(t) = Topology::decode(&entry.value, entry.revision) {
                    let mut cur = holder.write();
                    if t.revision > cur.revision {
                        *cur = Arc::new(t);
                    }
                }
            }
        }))
    }

    /// The shard `id` in the current map (reloading the map once if it is unknown,
    /// as another client may have just split a shard).
    pub(crate) async fn shard_info(&self, id: ShardId) -> Result<ShardInfo> {
        if let Some(s) = self.topology().get(id) {
            return Ok(s.clone());
        }
        self.refresh().await?.get(id).cloned().ok_or_else(|| {
            Error::new(ErrorKind::ShardNotFound, "no such shard")
                .with_table(&self.inner.name)
                .with_shard(id)
        })
    }

    /// Removes the log: its streams and buckets, and every record in them.
    ///
    /// # Errors
    ///
    /// `Unavailable` when the server cannot be reached.
    pub async fn delete(self) -> Result<()> {
        let topology = self.refresh().await?;
        for s in &topology.shards {
            match self.inner.js.delete_stream(self.stream_name(s.id)).await {
                Ok(_) => {}
                Err(e) if e.to_string().contains("not found") => {}
                Err(e) => return Err(remote(&self.inner.name, "delete a stream", e)),
            }
        }
        for b in ["meta", "checkpoints", "groups"] {
            let bucket = format!("LH-{}-{b}", self.inner.name);
            match self.inner.js.delete_key_value(&bucket).await {
                Ok(_) => {}
                Err(e) if e.to_string().contains("not found") => {}
                Err(e) => return Err(remote(&self.inner.name, "delete a bucket", e)),
            }
        }
        Ok(())
    }
}

/// Opens the KV bucket `bucket`, creating it if it does not exist.
async fn bucket(
    js: &jetstream::Context,
    config: &NatsLogBuilder,
    bucket: &str,
    history: i64,
) -> Result<kv::Store> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: bucket.to_owned(),
            history,
            num_replicas: config.replicas,
            storage: if config.memory_storage {
                jetstream::stream::StorageType::Memory
            } else {
                jetstream::stream::StorageType::File
            },
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Created by another client in the meantime.
        Err(e) => js
            .get_key_value(bucket)
            .await
            .map_err(|_| remote(&config.name, &format!("create the bucket {bucket}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("orders_2026-a"));
        for bad in ["", "a.b", "a b", "a*", "a>", "ü"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
