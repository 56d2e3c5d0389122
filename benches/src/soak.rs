//! `soak`: the README's main example (`retail_lakehouse`) for ten minutes at its default
//! rate (`--quick`: one minute), as a child process, as a user runs it. Its resident
//! memory is sampled every second from `/proc/<pid>/status`; the rest comes from the
//! lines of its report.
//!
//! Figures: `soak.rss_growth_mb_per_min` (least-squares slope of resident memory after
//! the first minute, or the first third of a shorter run; goal <= 5), `soak.rss_peak_mb` (<= 1,500), `soak.fold_in_lag_p99_ms`
//! (freshness to recommendation, <= 1,000), `soak.cache_freshness_p99_ms` (<= 10),
//! `soak.max_files_per_partition` (the most any partition held during the run, <= 16),
//! `soak.events_lost` (acknowledged events missing from the table, 0), and
//! `soak.events_per_s`. To tell what grows: `soak.heap_growth_mb_per_min` and
//! `soak.heap_peak_mb` (the example's live heap, from its progress lines) and
//! `soak.stream_memory_growth_mb_per_min` (the stream's in-memory window within it).
//!
//! The example binary must sit beside this one (`cargo build --release -p
//! lakehouse-examples --example retail_lakehouse` with the same target directory).
//! `LAKEHOUSE_SOAK_SECS` and `LAKEHOUSE_SOAK_RATE` override the duration and rate.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::report::{BenchResult, Report};

/// Where `cargo` puts the example next to this binary.
fn example_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("lakehouse-bench has no directory")?;
    let path = dir.join("examples").join("retail_lakehouse");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build it with `cargo build --release -p lakehouse-examples --example retail_lakehouse` \
             (same target directory as lakehouse-bench)",
            path.display()
        ))
    }
}

/// The resident set size of process `pid` in megabytes.
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Least-squares slope of `(seconds, megabytes)`, in megabytes per minute.
fn slope_per_min(samples: &[(f64, f64)]) -> Option<f64> {
    if samples.len() < 2 {
        return None;
    }
    let n = samples.len() as f64;
    let (sx, sy) = samples
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in samples {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    (den > 0.0).then(|| num / den * 60.0)
}

/// The time, live heap and stream memory (MB) of a progress line:
/// `[ 12.0s] ... | rss 900 MB, heap 350 MB, stream 120 MB`.
fn progress_figures(line: &str) -> Option<(f64, f64, f64)> {
    let t = line
        .strip_prefix('[')?
        .split_once("s]")?
        .0
        .trim()
        .parse()
        .ok()?;
    let after = |marker: &str| -> Option<f64> {
        let at = line.rfind(marker)? + marker.len();
        line[at..].split_whitespace().next()?.parse().ok()
    };
    Some((t, after(", heap ")?, after(", stream ")?))
}

/// The number after `prefix` on the report line that starts with it.
fn figure(lines: &[String], prefix: &str) -> Option<f64> {
    let line = lines.iter().find(|l| l.starts_with(prefix))?;
    line[prefix.len()..].split_whitespace().next()?.parse().ok()
}

/// The number after `marker` anywhere on the report line that starts with `prefix`.
fn figure_after(lines: &[String], prefix: &str, marker: &str) -> Option<f64> {
    let line = lines.iter().find(|l| l.starts_with(prefix))?;
    let at = line.find(marker)? + marker.len();
    line[at..].split_whitespace().next()?.parse().ok()
}

pub(crate) fn run(r: &mut Report) -> BenchResult {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let secs = env("LAKEHOUSE_SOAK_SECS").unwrap_or(r.scale(600, 60));
    let rate = env("LAKEHOUSE_SOAK_RATE").unwrap_or(200_000);
    let binary = example_binary()?;
    r.note(&format!(
        "retail_lakehouse --duration {secs} --rate {rate} (the example's defaults otherwise)"
    ));
    let started = Instant::now();
    let mut child = Command::new(&binary)
        .args(["--duration", &secs.to_string(), "--rate", &rate.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let pid = child.id();

    // The progress lines go to stderr; keep the last few for a failure message.
    let tail = Arc::new(Mutex::new(Vec::<String>::new()));
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let t = tail.clone();
    let progress = std::thread::spawn(move || {
        let mut heap = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            heap.extend(progress_figures(&line));
            let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
            t.push(line);
            if t.len() > 20 {
                t.remove(0);
            }
        }
        heap
    });
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let report = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });

    let mut samples = Vec::new();
    loop {
        if let Some(status) = child.try_wait()? {
            let lines = report.join().map_err(|_| "report reader panicked")?;
            let heap = progress.join().unwrap_or_default();
            if !status.success() {
                let tail = tail.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
                let report = lines.join("\n");
                return Err(
                    format!("retail_lakehouse failed ({status}):\n{report}\n{tail}").into(),
                );
            }
            return figures(r, &lines, &samples, &heap, secs);
        }
        if let Some(mb) = rss_mb(pid) {
            samples.push((started.elapsed().as_secs_f64(), mb));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn figures(
    r: &mut Report,
    lines: &[String],
    samples: &[(f64, f64)],
    heap: &[(f64, f64, f64)],
    secs: u64,
) -> BenchResult {
    for l in lines.iter().filter(|l| {
        l.starts_with("events ")
            || l.starts_with("rows in table")
            || l.starts_with("behind ")
            || l.starts_with("table files")
            || l.starts_with("maintenance ")
            || l.starts_with("peak resident")
            || l.starts_with("freshness ")
            || l.starts_with("consistency")
    }) {
        r.note(l);
    }
    // Generation runs for `secs`; later samples are the catch-up and the report. The
    // slope is taken after the first minute (after the first third of a shorter run).
    let warm = (secs as f64 / 3.0).min(60.0);
    let steady: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= warm && *t <= secs as f64)
        .collect();
    match slope_per_min(&steady) {
        Some(s) => r.metric("soak.rss_growth_mb_per_min", s, "MB/min"),
        None => r.note("soak.rss_growth_mb_per_min: fewer than two samples after the warm-up"),
    }
    // What grows: the live heap (the example's counting allocator) and, within it, the
    // stream's in-memory window, from the progress lines (times are the example's).
    let after_warm = |f: fn(&(f64, f64, f64)) -> f64| -> Vec<(f64, f64)> {
        heap.iter()
            .filter(|h| h.0 >= warm && h.0 <= secs as f64)
            .map(|h| (h.0, f(h)))
            .collect()
    };
    match slope_per_min(&after_warm(|h| h.1)) {
        Some(s) => r.metric("soak.heap_growth_mb_per_min", s, "MB/min"),
        None => r.note("soak.heap_growth_mb_per_min: no progress lines after the warm-up"),
    }
    if let Some(s) = slope_per_min(&after_warm(|h| h.2)) {
        r.metric("soak.stream_memory_growth_mb_per_min", s, "MB/min");
    }
    if let Some(h) = heap.iter().map(|h| h.1).reduce(f64::max) {
        r.metric("soak.heap_peak_mb", h, "MB");
    }
    let peak = samples.iter().map(|(_, mb)| *mb).fold(0.0, f64::max);
    let peak = figure(lines, "peak resident memory ").map_or(peak, |hwm| hwm.max(peak));
    r.metric("soak.rss_peak_mb", peak, "MB");
    let need = |v: Option<f64>, what: &str| v.ok_or_else(|| format!("the report has no {what}"));
    r.metric(
        "soak.fold_in_lag_p99_ms",
        need(
            figure(lines, "freshness to recommendation p99 "),
            "recommendation freshness",
        )?,
        "ms",
    );
    r.metric(
        "soak.cache_freshness_p99_ms",
        need(figure(lines, "freshness to cache p99 "), "cache freshness")?,
        "ms",
    );
    r.metric(
        "soak.max_files_per_partition",
        need(
            figure_after(lines, "table files per partition ", "at most "),
            "files per partition",
        )?,
        "files",
    );
    let acked = need(figure(lines, "events ingested "), "events ingested")?;
    let rows = need(figure(lines, "rows in table "), "rows in table")?;
    r.metric("soak.events_lost", (acked - rows).max(0.0), "events");
    r.metric(
        "soak.events_per_s",
        need(figure(lines, "events per second "), "events per second")?,
        "events/s",
    );
    if !lines.iter().any(|l| l == "consistency ok") {
        return Err("the example's consistency checks did not pass".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{figure, figure_after, progress_figures, slope_per_min};

    #[test]
    fn slope_and_report_figures() {
        let flat: Vec<(f64, f64)> = (0..10).map(|t| (t as f64, 100.0)).collect();
        assert_eq!(slope_per_min(&flat), Some(0.0));
        let growing: Vec<(f64, f64)> = (0..10).map(|t| (t as f64, 2.0 * t as f64)).collect();
        assert!((slope_per_min(&growing).unwrap() - 120.0).abs() < 1e-9);
        assert_eq!(slope_per_min(&flat[..1]), None);
        let lines = vec![
            "events ingested 1200".to_owned(),
            "table files per partition max 3 (32 partitions), at most 11 during the run".to_owned(),
        ];
        assert_eq!(figure(&lines, "events ingested "), Some(1200.0));
        assert_eq!(
            figure_after(&lines, "table files per partition ", "at most "),
            Some(11.0)
        );
        assert_eq!(figure(&lines, "rows in table "), None);
        let progress = "[ 65.0s] 13000000 events (200000/s) | behind: none | table v40, \
                        files/partition 3 | model v2 folded 10 (to recs 120 ms) | rss 900 MB, \
                        heap 351 MB, stream 120 MB";
        assert_eq!(progress_figures(progress), Some((65.0, 351.0, 120.0)));
        assert_eq!(progress_figures("consistency ok"), None);
    }
}
