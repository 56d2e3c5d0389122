//! `lakehouse-bench faults`: the fault campaign, bounded in time and seeded.
//!
//! Four parts, each counted in `METRIC faults.*` lines:
//! - table schedules: concurrent appenders, `optimize`, `vacuum` and checkpoints on a
//!   table whose object store injects errors before and after applied operations,
//!   retries that find their own write, latency, failed and partial multipart uploads
//!   and stale listings (`lakehouse_storage::faults::run_schedule`);
//! - table power losses: a local table whose un-fsynced writes are dropped or torn at a
//!   random point (`lakehouse_storage::faults::run_power_loss`);
//! - stream power losses: the same for a durable stream's segments and checkpoints
//!   (`lakehouse_stream::faults::run_power_loss`);
//! - fuzzing: every decoder that reads bytes from disk or users, on random and mutated
//!   inputs ([`crate::fuzz`]).
//!
//! Every schedule checks that each acknowledged commit or record is there once and that
//! every table and stream reopens. The run fails when any loss, duplicate, unopenable
//! table or stream, or decoder panic is found, after printing every figure. `--quick`
//! still runs at least 100 schedules and 100,000 fuzz inputs; `--seed N` repeats a run.

use std::time::{Duration, Instant};

use lakehouse_storage::faults::{PowerLossOptions, ScheduleOptions, run_power_loss, run_schedule};
use lakehouse_stream::faults::{StreamPowerLossOptions, run_power_loss as run_stream_power_loss};

use crate::report::{BenchResult, Report};

/// Totals of the schedules of one part.
#[derive(Debug, Default)]
struct Totals {
    schedules: u64,
    injected: u64,
    acknowledged: u64,
    lost: u64,
    duplicates: u64,
    unopenable: u64,
    problems: Vec<String>,
}

impl Totals {
    fn problem(&mut self, seed: u64, what: &str, problems: &[String]) {
        if self.problems.len() < 10 {
            self.problems
                .push(format!("{what} seed {seed}: {}", problems.join("; ")));
        }
    }
}

/// Runs `schedule(seed)` for at least `min` seeds, then more until `budget` is spent.
fn seeds(first: u64, min: u64, budget: Duration, mut schedule: impl FnMut(u64)) -> u64 {
    let start = Instant::now();
    let mut n = 0;
    while n < min || start.elapsed() < budget {
        schedule(first.wrapping_add(n));
        n += 1;
    }
    n
}

pub(crate) fn run(report: &mut Report) -> BenchResult {
    let seed = report.seed();
    report.note(&format!("seed {seed} (repeat this run with --seed {seed})"));
    let min = report.scale(300u64, 100);
    let budget = report.scale(Duration::from_secs(120), Duration::from_secs(20));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    // Table schedules on a fault-injecting object store.
    let options = ScheduleOptions::new();
    let mut table = Totals::default();
    let started = Instant::now();
    table.schedules = seeds(seed, min, budget, |s| {
        match rt.block_on(run_schedule(s, &options)) {
            Ok(r) => {
                table.injected += r.injected.total();
                table.acknowledged += r.acknowledged_commits;
                table.lost += r.lost_commits;
                table.duplicates += r.duplicate_rows;
                table.unopenable += u64::from(r.unopenable);
                if !r.is_clean() {
                    table.problem(s, "table schedule", &r.problems);
                }
            }
            Err(e) => {
                table.problem(s, "table schedule", &[e.to_string()]);
            }
        }
    });
    report.note(&format!(
        "{} table schedules in {:.1} s",
        table.schedules,
        started.elapsed().as_secs_f64()
    ));

    // Power losses under a local table.
    let options = PowerLossOptions::new();
    let mut power = Totals::default();
    let started = Instant::now();
    power.schedules = seeds(seed, min, budget, |s| {
        match rt.block_on(run_power_loss(s, &options)) {
            Ok(r) => {
                power.injected += 1;
                power.acknowledged += r.acknowledged_commits;
                power.lost += r.lost_commits;
                power.duplicates += r.duplicate_rows;
                power.unopenable += u64::from(r.unopenable);
                if !r.is_clean() {
                    power.problem(s, "table power loss", &r.problems);
                }
            }
            Err(e) => {
                power.problem(s, "table power loss", &[e.to_string()]);
            }
        }
    });
    report.note(&format!(
        "{} table power losses in {:.1} s",
        power.schedules,
        started.elapsed().as_secs_f64()
    ));

    // Power losses under a durable stream.
    let options = StreamPowerLossOptions::new();
    let mut stream = Totals::default();
    let started = Instant::now();
    stream.schedules = seeds(seed, min, budget, |s| {
        match run_stream_power_loss(s, &options) {
            Ok(r) => {
                stream.injected += 1;
                stream.acknowledged += r.acknowledged_records;
                stream.lost += r.lost_acknowledged;
                stream.duplicates += r.duplicate_records;
                stream.unopenable += u64::from(r.unopenable);
                if !r.is_clean() {
                    stream.problem(s, "stream power loss", &r.problems);
                }
            }
            Err(e) => {
                stream.problem(s, "stream power loss", &[e.to_string()]);
            }
        }
    });
    report.note(&format!(
        "{} stream power losses in {:.1} s",
        stream.schedules,
        started.elapsed().as_secs_f64()
    ));

    // Fuzzing.
    let fuzz = crate::fuzz::run(seed, report.scale(1_000_000, 100_000), budget);
    for (target, inputs) in &fuzz.by_target {
        report.note(&format!("fuzz target {target}: {inputs} inputs"));
    }

    report.metric(
        "faults.schedules",
        (table.schedules + power.schedules + stream.schedules) as f64,
        "schedules",
    );
    report.metric(
        "faults.injected",
        (table.injected + power.injected + stream.injected) as f64,
        "faults",
    );
    report.metric(
        "faults.acknowledged_commits",
        (table.acknowledged + power.acknowledged) as f64,
        "commits",
    );
    report.metric(
        "faults.lost_commits",
        (table.lost + power.lost) as f64,
        "commits",
    );
    report.metric(
        "faults.duplicate_rows",
        (table.duplicates + power.duplicates) as f64,
        "rows",
    );
    report.metric(
        "faults.unopenable_tables",
        (table.unopenable + power.unopenable) as f64,
        "tables",
    );
    report.metric(
        "faults.stream_acknowledged_records",
        stream.acknowledged as f64,
        "records",
    );
    report.metric(
        "faults.stream_acknowledged_lost",
        stream.lost as f64,
        "records",
    );
    report.metric(
        "faults.stream_duplicate_records",
        stream.duplicates as f64,
        "records",
    );
    report.metric(
        "faults.stream_unopenable",
        stream.unopenable as f64,
        "streams",
    );
    report.metric("faults.fuzz_inputs", fuzz.inputs as f64, "inputs");
    report.metric("faults.fuzz_panics", fuzz.panics as f64, "panics");

    let mut problems: Vec<String> = [table.problems, power.problems, stream.problems]
        .into_iter()
        .flatten()
        .collect();
    if let Some(p) = fuzz.first_panic {
        problems.push(format!("fuzz: {p}"));
    }
    for p in &problems {
        report.note(p);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("the fault campaign found {} problems", problems.len()).into())
    }
}
