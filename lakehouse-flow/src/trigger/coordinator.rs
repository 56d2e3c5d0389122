//! The coordinator of a trigger: finds the shards of the log, starts a worker per
//! shard once its parents are done, and reaps the workers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use lakehouse_core::{CancelToken, Error, ErrorKind, Result, ShardId};

use crate::trigger::metrics::bump;
use crate::trigger::shard::shard_worker;
use crate::trigger::{Inner, Mode, ShardExit, ShardMetrics, sleep_or_stop};

/// Cancels its token when dropped, so that the shard workers of an abandoned drain stop.
struct CancelOnDrop(CancelToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Runs the trigger until every shard is caught up ([`Mode::Drain`]) or until `stop`.
pub(super) async fn coordinate(inner: Arc<Inner>, mode: Mode, stop: CancelToken) -> Result<()> {
    let _stop_workers = CancelOnDrop(stop.clone());
    let mut running: HashMap<ShardId, tokio::task::JoinHandle<Result<ShardExit>>> = HashMap::new();
    let mut ended: HashSet<ShardId> = HashSet::new();
    let mut caught_up: HashSet<ShardId> = HashSet::new();
    let mut first_error: Option<Error> = None;
    loop {
        if stop.is_cancelled() {
            break;
        }
        let shards = match inner.log.shards().await {
            Ok(s) => s,
            Err(e) if mode == Mode::Drain => return Err(e),
            Err(_) => {
                bump(&inner.counters.shard_failures, 1);
                if !sleep_or_stop(&inner, inner.config.shard_discovery_interval, &stop).await {
                    break;
                }
                continue;
            }
        };
        let known: HashSet<ShardId> = shards.iter().map(|s| s.id).collect();
        for info in &shards {
            if running.contains_key(&info.id)
                || ended.contains(&info.id)
                || caught_up.contains(&info.id)
            {
                continue;
            }
            let parents_done = info
                .parents
                .iter()
                .all(|p| ended.contains(p) || !known.contains(p));
            if parents_done {
                inner.shards.lock().entry(info.id).or_insert(ShardMetrics {
                    shard: info.id,
                    millis_behind: 0,
                    checkpoint: None,
                    records_processed: 0,
                    finished: false,
                });
                let task = tokio::spawn(shard_worker(inner.clone(), info.id, mode, stop.clone()));
                running.insert(info.id, task);
            }
        }
        match mode {
            Mode::Drain => {
                if running.is_empty() {
                    break;
                }
                for (shard, task) in running.drain() {
                    match reap(&inner, shard, task.await) {
                        Ok(ShardExit::Ended) => {
                            ended.insert(shard);
                        }
                        Ok(_) => {
                            caught_up.insert(shard);
                        }
                        Err(e) => {
                            // The failed shard is not retried in a drain, and its
                            // children wait for it.
                            caught_up.insert(shard);
                            first_error.get_or_insert(e);
                        }
                    }
                }
            }
            Mode::Continuous => {
                sleep_or_stop(&inner, inner.config.shard_discovery_interval, &stop).await;
                let done: Vec<ShardId> = running
                    .iter()
                    .filter(|(_, t)| t.is_finished())
                    .map(|(s, _)| *s)
                    .collect();
                for shard in done {
                    let Some(task) = running.remove(&shard) else {
                        continue;
                    };
                    if let Ok(ShardExit::Ended) = reap(&inner, shard, task.await) {
                        ended.insert(shard);
                    }
                    // Failed workers are started again from their checkpoint in the
                    // next round, one discovery interval later.
                }
            }
        }
    }
    for (shard, task) in running.drain() {
        let _ = reap(&inner, shard, task.await);
    }
    first_error.map_or(Ok(()), Err)
}

/// The exit of a joined shard worker; a failure is counted and returned.
fn reap(
    inner: &Inner,
    shard: ShardId,
    joined: std::result::Result<Result<ShardExit>, tokio::task::JoinError>,
) -> Result<ShardExit> {
    let out = match joined {
        Ok(Ok(exit)) => return Ok(exit),
        Ok(Err(e)) => e,
        Err(e) => Error::new(ErrorKind::Internal, "a shard worker panicked")
            .with_shard(shard)
            .with_source(e),
    };
    bump(&inner.counters.shard_failures, 1);
    Err(out)
}
