//! Distributed execution on worker processes (feature `distributed`), on the
//! `datafusion-distributed` engine: [`Cluster`] configures a coordinating engine
//! ([`EngineBuilder::distributed`](crate::EngineBuilder::distributed)), [`serve`] runs a
//! worker.
//!
//! How a query runs: the coordinator plans it as the single-process engine does, then
//! the engine's distributed planner cuts the physical plan into stages at its
//! repartitions, splits file scans into one task per worker (files, or byte ranges of
//! large files) and ships each stage's plan to the workers over gRPC; the workers
//! stream their output to the stages above them, the last stage runs on the
//! coordinator.
//!
//! What crosses the wire: DataFusion's own nodes through its plan codec; the parts of a
//! lakehouse file scan that codec drops (deletion vectors as row selections, the column
//! mapping's physical names, the store's location) through this crate's codec, which
//! rebuilds the scan on the worker and registers the store there (see
//! [`WorkerOptions::store_opener`]). What stays on the coordinator: scans of sources that
//! are not files (the batch stream of a [`TableSource`](crate::TableSource), slices,
//! streaming tails), in-memory tables (materialized views' contents) and file scans of
//! stores only this process holds (in-memory stores): the planner gives their stages
//! one task, which runs in the coordinator's own worker. The codec refuses to encode
//! any such node that would still be sent: an error, never a plan shipped without its
//! parts.

mod codec;
mod exec;
mod health;
mod worker;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::SessionConfig;
use datafusion_distributed::{
    DesiredTaskCountEvent, DesiredTaskCountEventResponse, DesiredTaskCountHandler,
    DistributedConfig, DistributedExt, SessionStateBuilderExt, Worker,
};
use lakehouse_core::{Error, ErrorKind, Result};
use parking_lot::{Mutex, RwLock};

pub(crate) use self::codec::LakehouseCodec;
pub use self::worker::{StoreOpener, WorkerOptions, WorkerServer, serve};

/// The workers a coordinating engine sends work to, and how it serves its own share.
///
/// ```no_run
/// use lakehouse_query::QueryEngine;
/// use lakehouse_query::distributed::Cluster;
///
/// # fn main() -> lakehouse_query::Result<()> {
/// let cluster = Cluster::new(["127.0.0.1:50051", "127.0.0.1:50052"])?;
/// let engine = QueryEngine::builder().distributed(cluster).build();
/// # let _ = engine;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Cluster {
    workers: Vec<url::Url>,
    /// Bound when the cluster is made; served from the engine's first query.
    listener: Arc<Mutex<Option<std::net::TcpListener>>>,
    coordinator_addr: SocketAddr,
    coordinator_url: url::Url,
    bytes_per_partition: Option<usize>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("workers", &self.workers())
            .field("coordinator", &self.coordinator_addr)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A cluster of these workers (`host:port` or `http://host:port`, as [`serve`]
    /// listens). The coordinator serves the stages it runs itself to the workers on a
    /// free port of 127.0.0.1 (see [`coordinator_listen`](Self::coordinator_listen)).
    ///
    /// Errors: no worker or a malformed address ([`ErrorKind::InvalidConfig`]), no free
    /// port ([`ErrorKind::Io`]).
    pub fn new<I, S>(workers: I) -> Result<Cluster>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let workers = workers
            .into_iter()
            .map(|w| worker_url(w.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        if workers.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "a cluster needs at least one worker",
            ));
        }
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let (listener, coordinator_addr) = bind(any_port)?;
        Ok(Cluster {
            workers,
            listener: Arc::new(Mutex::new(Some(listener))),
            coordinator_url: worker_url(&coordinator_addr.to_string())?,
            coordinator_addr,
            bytes_per_partition: None,
        })
    }

    /// Serves the coordinator's stages on `addr` instead (an address the workers
    /// reach: workers read the output of stages the coordinator runs from it).
    pub fn coordinator_listen(mut self, addr: SocketAddr) -> Result<Cluster> {
        let (listener, bound) = bind(addr)?;
        self.listener = Arc::new(Mutex::new(Some(listener)));
        self.coordinator_url = worker_url(&bound.to_string())?;
        self.coordinator_addr = bound;
        Ok(self)
    }

    /// Bytes of Parquet one partition of a file scan reads (default 16 MiB): a scan of
    /// more than `target partitions × bytes` is split over several workers, up to all.
    pub fn file_scan_bytes_per_partition(mut self, bytes: usize) -> Cluster {
        self.bytes_per_partition = Some(bytes.max(1));
        self
    }

    /// The workers' URLs.
    pub fn workers(&self) -> Vec<String> {
        self.workers.iter().map(|u| u.to_string()).collect()
    }

    /// Where the coordinator serves its own stages.
    pub fn coordinator_addr(&self) -> SocketAddr {
        self.coordinator_addr
    }
}

fn bind(addr: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr)> {
    let io = |e: std::io::Error| {
        Error::new(
            ErrorKind::Io,
            format!("cannot listen on {addr} for the coordinator's stages: {e}"),
        )
        .with_source(e)
    };
    let listener = std::net::TcpListener::bind(addr).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    let bound = listener.local_addr().map_err(io)?;
    Ok((listener, bound))
}

/// The scheme of store URLs that name a store by its location.
pub(crate) const LOCATION_SCHEME: &str = "lakehouse-location";

/// The store URL naming the store at `location` (`file:///dir`, `s3://bucket`): the
/// location in hex as the authority, so that a worker opens the store from the URL
/// alone, before any plan node is decoded.
pub(crate) fn location_url(location: &str) -> String {
    let mut url = format!("{LOCATION_SCHEME}://");
    for b in location.bytes() {
        url.push_str(&format!("{b:02x}"));
    }
    url
}

/// The location a [`location_url`] names.
pub(crate) fn url_location(url: &url::Url) -> Option<String> {
    if url.scheme() != LOCATION_SCHEME {
        return None;
    }
    let hex = url.host_str()?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    let bytes = hex
        .chunks(2)
        .map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8))
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// `host:port` or `http://host:port` as a worker URL.
pub(crate) fn worker_url(address: &str) -> Result<url::Url> {
    let text = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let bad = |why: String| {
        Error::new(
            ErrorKind::InvalidConfig,
            format!("{address:?} is not a worker address: {why}"),
        )
    };
    let url = url::Url::parse(&text).map_err(|e| bad(e.to_string()))?;
    if url.scheme() != "http" || url.host().is_none() || url.port_or_known_default().is_none() {
        return Err(bad("expected host:port or http://host:port".into()));
    }
    Ok(url)
}

/// The stores lakehouse file scans read, by the URL the scan registers them under, and
/// where another process opens each (`None`: this process only). Recorded while
/// planning, read when the plan is cut into stages.
#[derive(Debug, Default)]
pub(crate) struct StoreLocations {
    by_url: RwLock<HashMap<String, Option<String>>>,
}

impl StoreLocations {
    pub(crate) fn record(&self, url: &str, location: Option<String>) {
        self.by_url.write().insert(url.to_owned(), location);
    }

    /// `Some(location)` for a lakehouse store: `Some(None)` when other processes cannot
    /// open it.
    pub(crate) fn get(&self, url: &str) -> Option<Option<String>> {
        self.by_url.read().get(url).cloned()
    }
}

/// What a distributed engine holds besides its session: the coordinator's worker,
/// served to the other workers from the first query on.
pub(crate) struct Coordinator {
    cluster: Cluster,
    worker: Worker,
    health: Arc<health::Health>,
    served: tokio::sync::OnceCell<()>,
}

impl fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinator")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Coordinator {
    /// Starts serving the coordinator's stages (once), and takes back workers that
    /// answer again after a failure.
    pub(crate) async fn before_query(&self) -> Result<()> {
        self.served
            .get_or_try_init(|| async {
                let listener = self.cluster.listener.lock().take().ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidConfig,
                        "the cluster's coordinator listener is used by another engine",
                    )
                })?;
                let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| {
                    Error::new(ErrorKind::Io, format!("coordinator listener: {e}")).with_source(e)
                })?;
                worker::spawn_server(self.worker.clone(), listener);
                Ok::<(), Error>(())
            })
            .await?;
        self.health.readmit().await;
        Ok(())
    }

    /// After a failed query: workers that no longer answer are left out of the next
    /// plans; the error is [`ErrorKind::Unavailable`] when one did not answer.
    pub(crate) async fn after_failure(&self, e: Error) -> Error {
        let mut down = self.health.check_all().await;
        let broken = connection_broke(&e);
        // A killed worker's connection breaks before its listener closes: give the
        // process a moment to go before deciding that every worker still answers.
        for _ in 0..10 {
            if !down.is_empty() || !broken {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            down = self.health.check_all().await;
        }
        if e.kind() == ErrorKind::Unavailable {
            return e;
        }
        if down.is_empty() {
            if broken {
                return Error::new(
                    ErrorKind::Unavailable,
                    format!("the query lost its connection to a worker: {}", e.message()),
                )
                .with_source(e);
            }
            return e;
        }
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "the query failed while worker(s) {} did not answer: {}",
                down.join(", "),
                e.message()
            ),
        )
        .with_source(e)
    }
}

/// Whether `e` reports a connection to a worker that broke or could not be made (the
/// gRPC transport's errors), rather than an error of the query itself.
fn connection_broke(e: &Error) -> bool {
    let message = e.to_string().to_ascii_lowercase();
    [
        "h2 protocol error",
        "broken pipe",
        "transport error",
        "connection refused",
        "connection reset",
        "error trying to connect",
        "stream closed",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// The session of a coordinating engine: the engine's planner under the distributed
/// planner, the workers, this crate's codec and the coordinator's own worker.
pub(crate) fn coordinator_session(
    config: SessionConfig,
    cluster: &Cluster,
) -> (SessionStateBuilder, Arc<Coordinator>) {
    let stores = Arc::new(StoreLocations::default());
    let mut config = config.with_extension(stores.clone());
    let mut distributed = DistributedConfig::default();
    if let Some(bytes) = cluster.bytes_per_partition {
        distributed.file_scan_config_bytes_per_partition = bytes;
    }
    config.set_distributed_option_extension(distributed);
    // The coordinator's worker shares the engine's runtime: the stores registered while
    // planning, for the stages it runs itself.
    let runtime = worker::runtime(&WorkerOptions::new());
    let worker = Worker::from_session_builder(worker::SessionSetup::new(WorkerOptions::new()))
        .with_runtime_env(runtime.clone());
    let health = Arc::new(health::Health::new(cluster.workers.clone()));
    let config = config
        .with_distributed_worker_resolver(health::Resolver(health.clone()))
        .with_distributed_user_codec(LakehouseCodec::coordinator())
        .with_distributed_desired_task_count_handler(LocalStoresStayHome {
            stores: stores.clone(),
        })
        .with_distributed_local_worker_context(
            worker.to_local_worker_context(cluster.coordinator_url.clone()),
        );
    let builder = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_query_planner(Arc::new(LakehousePlanner { stores }))
        .with_distributed_planner();
    (
        builder,
        Arc::new(Coordinator {
            cluster: cluster.clone(),
            worker,
            health,
            served: tokio::sync::OnceCell::new(),
        }),
    )
}

/// One task, hence the coordinator, for a file scan of a store only this process holds.
#[derive(Debug)]
struct LocalStoresStayHome {
    stores: Arc<StoreLocations>,
}

#[async_trait::async_trait]
impl DesiredTaskCountHandler for LocalStoresStayHome {
    async fn handle(
        &self,
        ev: DesiredTaskCountEvent<'_>,
    ) -> Option<datafusion::error::Result<DesiredTaskCountEventResponse>> {
        let scan = exec::file_scan_of(ev.plan)?;
        match self.stores.get(scan.object_store_url.as_str()) {
            Some(None) => Some(Ok(DesiredTaskCountEventResponse::maximum(1))),
            _ => None,
        }
    }
}

/// DataFusion's planner, then each lakehouse file scan marked so that what DataFusion's
/// plan codec drops crosses the wire with it.
#[derive(Debug)]
struct LakehousePlanner {
    stores: Arc<StoreLocations>,
}

#[async_trait::async_trait]
impl QueryPlanner for LakehousePlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session_state: &dyn datafusion::catalog::Session,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let plan = DefaultPhysicalPlanner::default()
            .create_physical_plan(logical_plan, session_state)
            .await?;
        exec::mark_file_scans(plan, &self.stores)
    }
}
