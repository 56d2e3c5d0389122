//! `lakehouse-bench query --distributed`: TPC-H over Delta tables on 1, 2 and 4 worker
//! processes on loopback against the single-process engine.
//!
//! The workers are this binary started again as `lakehouse-bench worker --listen
//! 127.0.0.1:0` (the `lakehouse_worker` of the examples crate, same code). The data is
//! `benches/peers/tpch.py`'s (SF 1, `--quick` SF 0.1), written once into Delta tables
//! in a temporary directory every process reads. On a 2-core machine scale-out cannot
//! speed anything up: the figures measure the overhead of the distributed plan (plan
//! shipping, gRPC streams, shuffles) and the shape of its scaling. After the timed runs,
//! one `EXPLAIN ANALYZE` of each query gives the bytes it sent over the network
//! (`query.tpch_*_distributed_{n}w_network_mb`, summed over the 22 queries).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lakehouse_examples::tpch;
use lakehouse_query::distributed::Cluster;
use lakehouse_query::{QueryEngine, QueryOptions};

use crate::query::THREADS;
use crate::report::{BenchResult, Report, run_peer};

const RUNS: usize = 3;

/// A worker process, killed when dropped.
struct WorkerProcess {
    child: Child,
    addr: String,
}

impl WorkerProcess {
    fn start() -> Result<WorkerProcess, Box<dyn std::error::Error + Send + Sync>> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["worker", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout from the worker")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line from the worker: {line:?}"))?
            .to_owned();
        Ok(WorkerProcess { child, addr })
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `lakehouse-bench worker --listen ADDR`: serves until killed.
pub(crate) fn worker(args: Vec<String>) -> BenchResult {
    let args = lakehouse_examples::worker::WorkerArgs::parse(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let server = lakehouse_query::distributed::serve(args.listen, args.options()).await?;
        println!("listening on {}", server.local_addr());
        server.wait().await?;
        Ok(())
    })
}

pub(crate) fn run(report: &mut Report) -> BenchResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .enable_all()
        .build()?;
    rt.block_on(tpch_distributed(report))
}

/// The best of [`RUNS`] of each query, in seconds, and the queries whose answers
/// differ from DuckDB's.
async fn time_queries(
    engine: &QueryEngine,
    queries: &[String],
    dir: &Path,
) -> Result<(Vec<f64>, Vec<String>), Box<dyn std::error::Error + Send + Sync>> {
    let mut best = Vec::new();
    let mut mismatches = Vec::new();
    for (i, sql) in queries.iter().enumerate() {
        let mut fastest = Duration::MAX;
        let mut last = None;
        for _ in 0..RUNS {
            let start = Instant::now();
            let r = engine
                .query(sql, QueryOptions::new().bypass_cache())
                .await?;
            fastest = fastest.min(start.elapsed());
            last = Some(r);
        }
        best.push(fastest.as_secs_f64());
        if let Some(r) = last {
            let answer = dir.join("answers").join(format!("q{:02}.csv", i + 1));
            if let Some(problem) = tpch::compare_with_file(r.batches(), &answer)? {
                mismatches.push(format!("q{:02}: {problem}", i + 1));
            }
        }
    }
    Ok((best, mismatches))
}

async fn tpch_distributed(report: &mut Report) -> BenchResult {
    let (sf, dir, dir_text) = crate::query::tpch_data(report)?;
    let tag = if report.quick() { "sf0_1" } else { "sf1" };
    // Makes the data and DuckDB's answers if missing; no DuckDB timing.
    if run_peer(report, "tpch.py", &["--sf", sf, "--dir", &dir_text]).is_none() {
        report.note("distributed TPC-H skipped: the data could not be made");
        return Ok(());
    }
    let queries: Vec<String> = (1..=22).map(tpch::query).collect::<Result<_, _>>()?;
    let delta_dir = tempfile::tempdir()?;
    let tables = tpch::write_delta_tables(&dir, delta_dir.path()).await?;

    let local = QueryEngine::builder().target_partitions(THREADS).build();
    for (name, table) in &tables {
        local.register_table(name, Arc::new(table.clone()))?;
    }
    let (local_times, local_bad) = time_queries(&local, &queries, &dir).await?;
    let local_total: f64 = local_times.iter().sum();
    report.metric(&format!("query.tpch_{tag}_local_total_s"), local_total, "s");
    if !local_bad.is_empty() {
        report.note(&format!(
            "single process mismatches: {}",
            local_bad.join("; ")
        ));
    }

    for n in [1usize, 2, 4] {
        let workers = (0..n)
            .map(|_| WorkerProcess::start())
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = Cluster::new(workers.iter().map(|w| w.addr.as_str()))?;
        let engine = QueryEngine::builder()
            .target_partitions(THREADS)
            .distributed(cluster)
            .build();
        for (name, table) in &tables {
            engine.register_table(name, Arc::new(table.clone()))?;
        }
        let (times, bad) = time_queries(&engine, &queries, &dir).await?;
        let total: f64 = times.iter().sum();
        for (i, (d, l)) in times.iter().zip(&local_times).enumerate() {
            report.note(&format!(
                "tpch {tag} q{:02} on {n} worker(s): {:.1} ms, single process {:.1} ms",
                i + 1,
                d * 1e3,
                l * 1e3
            ));
        }
        report.metric(
            &format!("query.tpch_{tag}_distributed_{n}w_total_s"),
            total,
            "s",
        );
        report.metric(
            &format!("query.tpch_{tag}_distributed_{n}w_answers_matching_duckdb"),
            (queries.len() - bad.len()) as f64,
            "queries",
        );
        if !bad.is_empty() {
            report.note(&format!("{n} worker(s) mismatches: {}", bad.join("; ")));
        }
        let mut shuffled = Vec::with_capacity(queries.len());
        for sql in &queries {
            shuffled.push(network_bytes(&engine.explain(sql, true).await?));
        }
        for (i, bytes) in shuffled.iter().enumerate() {
            report.note(&format!(
                "tpch {tag} q{:02} on {n} worker(s): {:.2} MB over the network",
                i + 1,
                bytes / 1e6
            ));
        }
        report.metric(
            &format!("query.tpch_{tag}_distributed_{n}w_network_mb"),
            shuffled.iter().sum::<f64>() / 1e6,
            "MB",
        );
        if n == 1 {
            report.ratio(
                &format!("query.tpch_{tag}_distributed_1w_vs_local"),
                total,
                local_total,
            );
        }
        drop(workers);
    }
    Ok(())
}

/// Bytes the stages of one run sent over the network (shuffles, broadcasts and the
/// streams into the coordinator), summed from the `bytes_transferred` metrics of
/// `EXPLAIN ANALYZE`'s distributed plan ("12.3 MB", binary units).
fn network_bytes(explained: &str) -> f64 {
    const KEY: &str = "bytes_transferred=";
    let mut total = 0.0;
    let mut rest = explained;
    while let Some(at) = rest.find(KEY) {
        rest = &rest[at + KEY.len()..];
        let mut words = rest.split_whitespace();
        let value = words.next().and_then(|v| v.parse::<f64>().ok());
        let unit = words.next().map(|u| u.trim_end_matches([',', ']', ')']));
        let scale = match unit {
            Some("B") => 1.0,
            Some("KB") => 1024.0,
            Some("MB") => 1024.0 * 1024.0,
            Some("GB") => 1024.0 * 1024.0 * 1024.0,
            Some("TB") => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            _ => continue,
        };
        if let Some(v) = value {
            total += v * scale;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::network_bytes;

    #[test]
    fn network_bytes_sums_every_boundary() {
        let plan = "NetworkShuffleExec [bytes_transferred=2.0 MB, msg_count=3]\n\
                    NetworkCoalesceExec [bytes_transferred=512.0 B]\n\
                    Other [bytes_transferred=oops]";
        assert_eq!(network_bytes(plan), 2.0 * 1024.0 * 1024.0 + 512.0);
        assert_eq!(network_bytes("no metrics"), 0.0);
    }
}
