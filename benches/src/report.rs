//! Output and measurement helpers shared by the subcommands.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What a subcommand returns.
pub(crate) type BenchResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Prints figures in the `METRIC` / `RATIO` line format.
#[derive(Debug)]
pub(crate) struct Report {
    quick: bool,
    seed: u64,
}

impl Report {
    pub(crate) fn new(quick: bool, seed: u64) -> Self {
        Report { quick, seed }
    }

    /// The seed of randomised parts (`--seed N`; else one made from the clock).
    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// Whether to measure on the smaller data of `--quick`.
    pub(crate) fn quick(&self) -> bool {
        self.quick
    }

    /// `full` normally, `quick` under `--quick`.
    pub(crate) fn scale<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }

    /// `METRIC <name> <value> <unit>`.
    pub(crate) fn metric(&mut self, name: &str, value: f64, unit: &str) {
        println!("METRIC {name} {} {unit}", fmt_value(value));
    }

    /// `RATIO <name> <ours/peer>`; below 1 means we are better.
    pub(crate) fn ratio(&mut self, name: &str, ours: f64, peer: f64) {
        if peer > 0.0 && ours.is_finite() && peer.is_finite() {
            println!("RATIO {name} {:.3}", ours / peer);
        } else {
            self.note(&format!("{name}: no ratio (ours {ours}, peer {peer})"));
        }
    }

    /// A commentary line.
    pub(crate) fn note(&mut self, text: &str) {
        println!("# {text}");
    }

    /// Notes the machine the figures come from.
    pub(crate) fn machine(&mut self) {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown cpu".into());
        self.note(&format!("machine: {cores} cores, {cpu}"));
    }
}

fn fmt_value(v: f64) -> String {
    if v.abs() >= 1000.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.3}")
    } else {
        format!("{v:.6}")
    }
}

/// Runs `f` and returns its result with the wall time it took.
pub(crate) fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Latency samples, for percentiles.
#[derive(Debug, Default)]
pub(crate) struct Latencies {
    samples: Vec<Duration>,
}

impl Latencies {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Latencies {
            samples: Vec::with_capacity(n),
        }
    }

    pub(crate) fn record(&mut self, d: Duration) {
        self.samples.push(d);
    }

    /// The number of samples.
    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    /// The `p`-th percentile (0-100), nearest rank.
    pub(crate) fn percentile(&mut self, p: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        self.samples.sort_unstable();
        let rank = ((p / 100.0) * self.samples.len() as f64).ceil() as usize;
        self.samples[rank.clamp(1, self.samples.len()) - 1]
    }
}

/// The `benches/peers` folder.
pub(crate) fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// Runs a peer script with the peers' virtual environment and collects its
/// `PEER <name> <value>` lines. `None` (with a note) when the environment is missing;
/// set it up with `benches/peers/setup.sh`.
pub(crate) fn run_peer(
    report: &mut Report,
    script: &str,
    args: &[&str],
) -> Option<HashMap<String, f64>> {
    let dir = peers_dir();
    let python = dir.join(".venv/bin/python");
    if !python.exists() {
        report.note(&format!(
            "peer {script} skipped: run benches/peers/setup.sh to create {}",
            python.display()
        ));
        return None;
    }
    let output = Command::new(&python)
        .arg(dir.join(script))
        .args(args)
        .output();
    let output = match output {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            report.note(&format!(
                "peer {script} failed: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
            return None;
        }
        Err(e) => {
            report.note(&format!("peer {script} did not start: {e}"));
            return None;
        }
    };
    let mut figures = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let mut parts = line.split_whitespace();
        if let (Some("PEER"), Some(name), Some(value)) = (parts.next(), parts.next(), parts.next())
            && let Ok(v) = value.parse()
        {
            figures.insert(name.to_owned(), v);
        }
    }
    Some(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.percentile(50.0), Duration::from_millis(50));
        assert_eq!(l.percentile(99.0), Duration::from_millis(99));
        assert_eq!(l.percentile(100.0), Duration::from_millis(100));
    }

    #[test]
    fn values_print_compactly() {
        assert_eq!(fmt_value(12_345_678.9), "12345679");
        assert_eq!(fmt_value(0.25), "0.250000");
        assert_eq!(fmt_value(1.23456), "1.235");
    }
}
