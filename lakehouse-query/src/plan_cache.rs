//! The plan cache: planned SQL texts, reused until the catalog changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lakehouse_core::Result;
use parking_lot::Mutex;

use crate::engine::QueryEngine;
use crate::plan::{Planned, plan_statement};

/// Planned SQL by text. Registering or removing a table, or running DDL, starts a new
/// epoch; plans of an older epoch are planned again.
#[derive(Debug)]
pub(crate) struct PlanCache {
    capacity: usize,
    epoch: AtomicU64,
    plans: Mutex<HashMap<String, (u64, Arc<Planned>)>>,
}

impl PlanCache {
    /// A cache of at most `capacity` plans (0 disables it).
    pub(crate) fn new(capacity: usize) -> Self {
        PlanCache {
            capacity,
            epoch: AtomicU64::new(0),
            plans: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets every plan: the catalog changed. Returns the new epoch.
    pub(crate) fn invalidate(&self) -> u64 {
        let epoch = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.plans.lock().clear();
        epoch
    }

    /// The current epoch: it changes whenever a table is registered or removed.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn get(&self, sql: &str, epoch: u64) -> Option<Arc<Planned>> {
        match self.plans.lock().get(sql) {
            Some((e, p)) if *e == epoch => Some(p.clone()),
            _ => None,
        }
    }

    /// Keeps `planned` for `sql` if it may be reused; a full cache starts over.
    fn insert(&self, sql: &str, epoch: u64, planned: &Arc<Planned>) {
        if planned.command || planned.volatile || self.capacity == 0 {
            return;
        }
        let mut plans = self.plans.lock();
        if plans.len() >= self.capacity {
            plans.clear();
        }
        plans.insert(sql.to_owned(), (epoch, planned.clone()));
    }
}

impl QueryEngine {
    /// Plans `sql`, through the plan cache.
    pub(crate) async fn plan_cached(&self, sql: &str) -> Result<Arc<Planned>> {
        let cache = &self.inner.plans;
        let epoch = cache.epoch();
        if let Some(planned) = cache.get(sql, epoch) {
            return Ok(planned);
        }
        let state = self.state();
        let (plan, partition_by) = plan_statement(&state, sql).await?;
        let mut planned = self.analyze(&state, plan, epoch)?;
        planned.partition_by = partition_by;
        let planned = Arc::new(planned);
        cache.insert(sql, epoch, &planned);
        Ok(planned)
    }
}
