//! Freshness samples and their percentiles, in bounded memory.

use std::sync::Mutex;

use hdrhistogram::Histogram;

/// The longest latency kept exactly: one hour, in microseconds. Longer ones count as an
/// hour (a pipeline that far behind fails its checks anyway).
const MAX_MICROS: u64 = 3_600_000_000;

/// Latencies from an event's creation to a point of the pipeline.
///
/// Kept in a histogram (three significant digits, microsecond resolution up to an hour):
/// memory stays a few tens of KiB however long the pipeline runs, and every percentile
/// is within 0.1 % of the exact one.
#[derive(Debug)]
pub struct Freshness {
    histogram: Mutex<Histogram<u64>>,
}

impl Default for Freshness {
    fn default() -> Self {
        // 1 µs to an hour at 3 significant digits: valid bounds, so this cannot fail.
        let histogram = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .expect("1 us to 1 h at 3 significant digits is a valid histogram");
        Freshness {
            histogram: Mutex::new(histogram),
        }
    }
}

impl Freshness {
    /// Records `now - t` for each event time `t` (all in microseconds).
    pub fn record(&self, now_micros: i64, event_times: &[i64]) {
        if event_times.is_empty() {
            return;
        }
        let mut h = self.histogram.lock().unwrap_or_else(|p| p.into_inner());
        for t in event_times {
            let micros = now_micros.saturating_sub(*t).clamp(1, MAX_MICROS as i64);
            h.saturating_record(micros as u64);
        }
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.histogram
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The `p`-th percentile (0-100) in milliseconds; `None` without samples.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let h = self.histogram.lock().unwrap_or_else(|p| p.into_inner());
        if h.is_empty() {
            return None;
        }
        let micros = h.value_at_quantile((p / 100.0).clamp(0.0, 1.0));
        Some(micros as f64 / 1000.0)
    }

    /// `"<p99> ms"`-style text for the progress line.
    pub fn p99_text(&self) -> String {
        self.percentile(99.0)
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_a_tenth_of_a_percent() {
        let f = Freshness::default();
        assert_eq!(f.percentile(50.0), None);
        assert_eq!(f.p99_text(), "-");
        let now = 1_000_000_000;
        // 1 ms, 2 ms, ..., 1000 ms.
        let times: Vec<i64> = (1..=1_000).map(|ms| now - ms * 1_000).collect();
        f.record(now, &times);
        assert_eq!(f.count(), 1_000);
        for (p, exact) in [(50.0, 500.0), (99.0, 990.0), (100.0, 1_000.0)] {
            let got = f.percentile(p).expect("samples were recorded");
            assert!(
                (got - exact).abs() <= exact * 0.001,
                "p{p}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn memory_does_not_grow_with_samples() {
        let f = Freshness::default();
        let before = f.histogram.lock().unwrap().distinct_values();
        let times: Vec<i64> = (0..100_000).map(|i| -(i % 5_000_000)).collect();
        for _ in 0..10 {
            f.record(0, &times);
        }
        assert_eq!(f.histogram.lock().unwrap().distinct_values(), before);
        assert_eq!(f.count(), 1_000_000);
        // Clock skew (an event "from the future") and hour-long delays are clamped.
        f.record(0, &[10, -(MAX_MICROS as i64) * 2]);
        assert_eq!(f.count(), 1_000_002);
    }
}
