//! Freshness samples and their percentiles.

use std::sync::Mutex;

/// Latencies in milliseconds from an event's creation to a point of the pipeline.
#[derive(Debug, Default)]
pub struct Freshness {
    samples: Mutex<Vec<f64>>,
}

impl Freshness {
    /// Records `now - t` for each event time `t` (all in microseconds).
    pub fn record(&self, now_micros: i64, event_times: &[i64]) {
        if event_times.is_empty() {
            return;
        }
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        s.extend(
            event_times
                .iter()
                .map(|t| (now_micros - t).max(0) as f64 / 1000.0),
        );
    }

    /// The `p`-th percentile (nearest rank) in milliseconds; `None` without samples.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if s.is_empty() {
            return None;
        }
        s.sort_unstable_by(f64::total_cmp);
        let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
        Some(s[rank.clamp(1, s.len()) - 1])
    }

    /// `"<p50> ms"`-style text for the progress line.
    pub fn p99_text(&self) -> String {
        self.percentile(99.0)
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"))
    }
}
