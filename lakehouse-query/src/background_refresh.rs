//! The background refresh of materialized views: one task on the current tokio runtime
//! that refreshes every view on an interval.

use std::sync::Arc;
use std::time::Duration;

use lakehouse_core::{Error, ErrorKind, Result};

use crate::engine::QueryEngine;

impl QueryEngine {
    /// Refreshes every materialized view every `interval` on the current tokio runtime,
    /// until the returned handle is dropped or stopped.
    pub fn start_background_refresh(&self, interval: Duration) -> Result<BackgroundRefresh> {
        let handle = tokio::runtime::Handle::try_current().map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                "background refresh needs a tokio runtime",
            )
            .with_source(e)
        })?;
        let weak = Arc::downgrade(&self.inner);
        let task = handle.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else {
                    break;
                };
                let engine = QueryEngine { inner };
                // Failures are kept in each view's info for callers to inspect.
                let _ = engine.refresh_all().await;
            }
        });
        Ok(BackgroundRefresh { task })
    }
}

/// Stops the background refresh of materialized views when dropped.
#[derive(Debug)]
pub struct BackgroundRefresh {
    task: tokio::task::JoinHandle<()>,
}

impl BackgroundRefresh {
    /// Stops refreshing.
    pub fn stop(self) {}
}

impl Drop for BackgroundRefresh {
    fn drop(&mut self) {
        self.task.abort();
    }
}
