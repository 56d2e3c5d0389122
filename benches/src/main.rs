//! `lakehouse-bench`: the benchmark report of the Lakehouse workspace.
//!
//! ```text
//! cargo run --release -p lakehouse-benches --bin lakehouse-bench -- <subcommand> [--quick]
//! ```
//!
//! Subcommands: `core`, `flow`, `stream`, `storage`, `query`, `cache`, `ml`, `e2e`, `faults`, `soak`,
//! `all` (every one but `soak`, which runs the main example for ten minutes);
//! `cache-hit-ratio` runs the hit-ratio comparison of `cache` alone, `ml-fold-in` the
//! fold-in figures of `ml`, `ml-quality` its quality figures (every model and implicit
//! on the MovieLens split), `storage-log` the log figures of `storage` (open, refresh,
//! plan), `stream-nats` the NATS JetStream figures of `stream`.
//! Every figure is one line, `METRIC <name> <value> <unit>`; a comparison with a peer
//! measured in the same run is `RATIO <name> <ours/peer>` (below 1 means we are better).
//! Lines starting with `#` are commentary. `--quick` measures the same figures on
//! smaller data; `--seed N` fixes the seed of randomised parts (`faults`), which is
//! otherwise made from the clock and printed.

mod cache;
mod cache_hit_ratio;
mod core;
mod e2e;
mod faults;
mod flow;
// The decoder fuzzing of the `faults` report.
mod fuzz;
mod ml;
mod ml_fold_in;
mod ml_models;
mod query;
mod query_distributed;
mod query_dml;
mod query_pgwire;
// Shared measurement helpers; not every subcommand uses every one.
#[allow(dead_code)]
mod report;
mod soak;
mod storage;
mod storage_log;
mod stream;
mod stream_nats;

use std::process::ExitCode;

use report::Report;

const USAGE: &str = "usage: lakehouse-bench <core|flow|stream|storage|query|cache|ml|e2e|faults|soak|all|cache-hit-ratio|ml-fold-in|ml-quality|storage-log|stream-nats|query-dml> [--quick] [--seed N] [--distributed]

query --distributed: TPC-H over Delta tables on 1, 2 and 4 worker processes (this binary
started again as `lakehouse-bench worker --listen HOST:PORT`) against one process.";

type Subcommand = fn(&mut Report) -> report::BenchResult;

const SUBCOMMANDS: &[(&str, Subcommand)] = &[
    ("core", core::run),
    ("flow", flow::run),
    ("stream", stream_with_nats),
    ("storage", storage::run),
    ("query", query::run),
    ("cache", cache::run),
    ("ml", ml::run),
    ("e2e", e2e::run),
    ("faults", faults::run),
    ("soak", soak::run),
];

/// Parts of a subcommand that can run alone; `all` does not list them again.
const PARTS: &[(&str, Subcommand)] = &[
    ("cache-hit-ratio", cache_hit_ratio::run),
    ("ml-fold-in", ml_fold_in::run),
    ("ml-quality", ml::quality_only),
    ("storage-log", storage_log::run_alone),
    ("stream-nats", stream_nats::run),
    ("query-dml", query_dml::run),
    ("query-distributed", query_distributed::run),
];

/// `stream`: the in-process and durable stream, then the same on NATS JetStream.
fn stream_with_nats(report: &mut Report) -> report::BenchResult {
    stream::run(report)?;
    stream_nats::run(report)
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("worker") {
        return match query_distributed::worker(std::env::args().skip(2).collect()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lakehouse-bench worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut quick = false;
    let mut distributed = false;
    let mut seed = None;
    let mut chosen = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--distributed" => distributed = true,
            "--seed" => match args.next().and_then(|s| s.parse::<u64>().ok()) {
                Some(s) => seed = Some(s),
                None => {
                    eprintln!("--seed needs a number\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "all" => chosen.extend(SUBCOMMANDS.iter().map(|(n, _)| *n).filter(|n| *n != "soak")),
            name => match SUBCOMMANDS.iter().chain(PARTS).find(|(n, _)| *n == name) {
                Some((n, _)) => chosen.push(*n),
                None => {
                    eprintln!("unknown argument {name:?}\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
        }
    }
    if chosen.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    if distributed {
        for name in &mut chosen {
            if *name == "query" {
                *name = "query-distributed";
            }
        }
    }
    let seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let mut report = Report::new(quick, seed);
    report.machine();
    let mut failed = false;
    for name in chosen {
        let Some((_, run)) = SUBCOMMANDS.iter().chain(PARTS).find(|(n, _)| *n == name) else {
            continue;
        };
        report.note(&format!("== {name}{}", if quick { " (quick)" } else { "" }));
        if let Err(e) = run(&mut report) {
            eprintln!("lakehouse-bench {name} failed: {e}");
            failed = true;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
