//! A worker: the gRPC server that runs the stages a coordinator sends ([`serve`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion_distributed::{DistributedExt, Worker, WorkerQueryContext, WorkerSessionBuilder};
use futures::StreamExt;
use lakehouse_core::{Error, ErrorKind, Result};
use object_store::ObjectStore;

use super::LakehouseCodec;

/// Opens the object store at a location (`s3://bucket`) for a worker.
pub type StoreOpener = Arc<dyn Fn(&str) -> Result<Arc<dyn ObjectStore>> + Send + Sync>;

/// How a worker opens the stores the scans it receives read.
///
/// A file scan arrives with its store's location (`file:///dir` for a local directory,
/// `s3://bucket` for S3); the worker opens it with the opener of its scheme once and
/// keeps it for the following queries. `file` is built in (the directory must be the
/// same path on the worker: a directory shared by the processes); other schemes need
/// an opener, built from the same storage configuration as the coordinator's tables.
#[derive(Clone, Default)]
pub struct WorkerOptions {
    openers: BTreeMap<String, StoreOpener>,
}

impl fmt::Debug for WorkerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerOptions")
            .field("schemes", &self.openers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl WorkerOptions {
    /// Local directories only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens stores of locations `scheme://...` with `opener`, given the location.
    pub fn store_opener(
        mut self,
        scheme: &str,
        opener: impl Fn(&str) -> Result<Arc<dyn ObjectStore>> + Send + Sync + 'static,
    ) -> Self {
        self.openers
            .insert(scheme.to_ascii_lowercase(), Arc::new(opener));
        self
    }

    /// The store at `location`.
    pub(crate) fn open(&self, location: &str) -> Result<Arc<dyn ObjectStore>> {
        let scheme = location
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        if let Some(opener) = self.openers.get(&scheme) {
            return opener(location);
        }
        if scheme == "file" {
            let dir = &location["file://".len()..];
            let store =
                object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| {
                    Error::new(
                        ErrorKind::Io,
                        format!("the worker cannot open the table directory {dir}: {e}"),
                    )
                    .with_path(dir)
                })?;
            return Ok(Arc::new(store));
        }
        Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("the worker has no store opener for {location} (scheme {scheme:?})"),
        )
        .with_path(location))
    }
}

/// A worker's stores: those registered, and those named by their location
/// ([`location_url`](super::location_url)), opened on first use and kept.
#[derive(Debug)]
pub(crate) struct LocationStores {
    inner: DefaultObjectStoreRegistry,
    options: WorkerOptions,
}

impl LocationStores {
    pub(crate) fn new(options: WorkerOptions) -> Self {
        LocationStores {
            inner: DefaultObjectStoreRegistry::new(),
            options,
        }
    }
}

impl ObjectStoreRegistry for LocationStores {
    fn register_store(
        &self,
        url: &url::Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.inner.register_store(url, store)
    }

    fn get_store(&self, url: &url::Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.inner.get_store(url) {
            return Ok(store);
        }
        let Some(location) = super::url_location(url) else {
            return self.inner.get_store(url);
        };
        let store = self.options.open(&location).map_err(crate::error::to_df)?;
        self.inner.register_store(url, store.clone());
        Ok(store)
    }
}

/// A runtime whose stores are [`LocationStores`].
pub(crate) fn runtime(options: &WorkerOptions) -> Arc<RuntimeEnv> {
    RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(LocationStores::new(options.clone())))
        .build_arc()
        .unwrap_or_else(|_| Arc::new(RuntimeEnv::default()))
}

/// The session each stage runs in on a worker: this crate's codec.
#[derive(Debug, Clone)]
pub(crate) struct SessionSetup {
    options: WorkerOptions,
}

impl SessionSetup {
    pub(crate) fn new(options: WorkerOptions) -> Self {
        SessionSetup { options }
    }
}

#[async_trait::async_trait]
impl WorkerSessionBuilder for SessionSetup {
    async fn build_session_state(
        &self,
        ctx: WorkerQueryContext,
    ) -> std::result::Result<SessionState, DataFusionError> {
        Ok(ctx
            .builder
            .with_distributed_user_codec(LakehouseCodec::worker(self.options.clone()))
            .build())
    }
}

/// A running worker; dropping it leaves the server running until the runtime stops.
#[derive(Debug)]
pub struct WorkerServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>,
}

impl WorkerServer {
    /// The address it listens on (a coordinator's [`Cluster`](super::Cluster) names it).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting work and waits for the server to end.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await
    }

    /// Waits until the server ends (an I/O failure, or [`shutdown`](Self::shutdown)).
    pub async fn wait(self) -> Result<()> {
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::new(ErrorKind::Io, format!("worker server: {e}"))),
            Err(e) => Err(Error::new(
                ErrorKind::Internal,
                format!("worker server task: {e}"),
            )),
        }
    }
}

/// Runs a worker on `listen` (port 0: a free one, see [`WorkerServer::local_addr`]) on
/// the current tokio runtime: it runs the stages coordinators send and streams their
/// output to whoever reads it, opening stores by `options`.
///
/// Errors with [`ErrorKind::Io`] when it cannot listen.
pub async fn serve(listen: SocketAddr, options: WorkerOptions) -> Result<WorkerServer> {
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        Error::new(
            ErrorKind::Io,
            format!("the worker cannot listen on {listen}: {e}"),
        )
        .with_source(e)
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::new(ErrorKind::Io, format!("worker address: {e}")).with_source(e))?;
    let runtime = runtime(&options);
    let worker = Worker::from_session_builder(SessionSetup::new(options)).with_runtime_env(runtime);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(worker.into_worker_server())
            .serve_with_incoming_shutdown(incoming(listener), async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(WorkerServer {
        addr,
        stop: Some(stop),
        task,
    })
}

/// Serves `worker` on `listener` until the runtime stops (the coordinator's own worker).
pub(crate) fn spawn_server(worker: Worker, listener: tokio::net::TcpListener) {
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(worker.into_worker_server())
            .serve_with_incoming(incoming(listener))
            .await
    });
}

/// The connections `listener` accepts, with no delay on small writes.
fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static {
    futures::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            stream
        });
        Some((next, listener))
    })
    .boxed()
}
