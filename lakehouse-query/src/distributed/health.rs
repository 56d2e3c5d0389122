//! Which workers the planner may send work to: all but those that stopped answering.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use datafusion::error::DataFusionError;
use datafusion_distributed::WorkerResolver;
use lakehouse_core::{Error, ErrorKind};
use parking_lot::RwLock;

use crate::error::to_df;

/// How long a worker has to accept a connection when it is checked.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub(crate) struct Health {
    workers: Vec<url::Url>,
    down: RwLock<HashSet<url::Url>>,
}

impl Health {
    pub(crate) fn new(workers: Vec<url::Url>) -> Self {
        Health {
            workers,
            down: RwLock::new(HashSet::new()),
        }
    }

    fn live(&self) -> Vec<url::Url> {
        let down = self.down.read();
        self.workers
            .iter()
            .filter(|w| !down.contains(*w))
            .cloned()
            .collect()
    }

    /// Checks every worker; returns those that do not answer, now left out.
    pub(crate) async fn check_all(&self) -> Vec<String> {
        let mut down = Vec::new();
        for w in &self.workers {
            if answers(w).await {
                self.down.write().remove(w);
            } else {
                self.down.write().insert(w.clone());
                down.push(w.to_string());
            }
        }
        down
    }

    /// Checks the workers left out; those that answer again are taken back.
    pub(crate) async fn readmit(&self) {
        let down: Vec<url::Url> = self.down.read().iter().cloned().collect();
        for w in down {
            if answers(&w).await {
                self.down.write().remove(&w);
            }
        }
    }
}

/// Whether something accepts connections at the worker's address.
async fn answers(worker: &url::Url) -> bool {
    let (Some(host), Some(port)) = (worker.host_str(), worker.port_or_known_default()) else {
        return false;
    };
    let connect = tokio::net::TcpStream::connect((host, port));
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, connect).await,
        Ok(Ok(_))
    )
}

/// The planner's view of the cluster: the live workers.
#[derive(Debug, Clone)]
pub(crate) struct Resolver(pub(crate) Arc<Health>);

impl WorkerResolver for Resolver {
    fn get_urls(&self) -> Result<Vec<url::Url>, DataFusionError> {
        let live = self.0.live();
        if live.is_empty() {
            return Err(to_df(Error::new(
                ErrorKind::Unavailable,
                "no worker of the cluster answers",
            )));
        }
        Ok(live)
    }
}
