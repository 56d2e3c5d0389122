//! `lakehouse-bench stream-nats` (also the last part of `stream`): `NatsLog` on a real
//! `nats-server -js`, beside a plain async-nats JetStream publisher of the same bytes in
//! the same run.
//!
//! The server is `LAKEHOUSE_NATS_URL` when set, else a `nats-server -js` this run
//! starts on a free loopback port with its store in a temporary directory (from
//! `LAKEHOUSE_NATS_SERVER`, the peers venv, or the `PATH`); without either the part is
//! skipped, saying so.
//!
//! Figures: `stream.nats_put_rps` (100-byte records, `put_batch` calls of 500 from 4
//! concurrent producers, file storage), `stream.nats_read_rps` (every record read back,
//! 10,000 a read), `stream.nats_commit_p99_ms` (one producer's `put_batch` of 500 from
//! call to acknowledgement) and `RATIO stream.nats_put_time_vs_plain_publisher`: the
//! same number of messages of the same sizes, published by 4 tasks with plain
//! async-nats `publish` and their acks awaited per call, onto streams of the same
//! configuration.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lakehouse_core::{EventLog, Position, PutRecord, ReadLimit};
use lakehouse_stream::NatsLog;

use crate::report::{BenchResult, Latencies, Report};

const PRODUCERS: usize = 4;
const SHARDS: u32 = 4;
const PER_CALL: usize = 500;

/// A `nats-server` this run started; killed on drop.
pub(crate) struct OwnServer {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("LAKEHOUSE_NATS_SERVER") {
        return Some(p.into());
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/.venv/bin/nats-server");
    if venv.exists() {
        return Some(venv);
    }
    Command::new("nats-server")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "nats-server".into())
}

/// The server's URL, and the server when this run started one.
pub(crate) fn server(report: &mut Report) -> Result<Option<(String, Option<OwnServer>)>, String> {
    if let Ok(url) = std::env::var("LAKEHOUSE_NATS_URL") {
        return Ok(Some((url, None)));
    }
    let Some(binary) = server_binary() else {
        report.note("no LAKEHOUSE_NATS_URL and no nats-server binary: NATS figures skipped");
        return Ok(None);
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let child = Command::new(&binary)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("start {}: {e}", binary.display()))?;
    let server = OwnServer { child, _dir: dir };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            report.note(&format!(
                "nats-server started on port {port} (file storage)"
            ));
            return Ok(Some((format!("nats://127.0.0.1:{port}"), Some(server))));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!("nats-server did not start on port {port}"))
}

/// Producer `p`'s `put_batch` calls: 500 records of 100 bytes, keys `user-<i>`.
fn calls(p: usize, records: usize) -> Vec<Vec<PutRecord>> {
    let per_producer = records / PRODUCERS;
    let first = p * per_producer;
    (first..first + per_producer)
        .collect::<Vec<_>>()
        .chunks(PER_CALL)
        .map(|chunk| {
            let buffer = Bytes::from(vec![b'x'; 100 * chunk.len()]);
            chunk
                .iter()
                .enumerate()
                .map(|(at, i)| {
                    PutRecord::new(
                        format!("user-{}", i % 100_000),
                        buffer.slice(at * 100..(at + 1) * 100),
                    )
                })
                .collect()
        })
        .collect()
}

pub(crate) fn run(report: &mut Report) -> BenchResult {
    let Some((url, _server)) = server(report)? else {
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(report, &url))
}

async fn run_async(report: &mut Report, url: &str) -> BenchResult {
    let records = report.scale(2_000_000usize, 200_000);
    let name = format!("bench-{}", std::process::id());
    let log = NatsLog::builder(url, &name)
        .shards(SHARDS)
        .max_shard_bytes(None)
        .open()
        .await?;

    // Puts: 4 producers, each with its input built before the clock starts.
    let inputs: Vec<Vec<Vec<PutRecord>>> = (0..PRODUCERS).map(|p| calls(p, records)).collect();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for input in inputs {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut messages = 0usize;
            for call in input {
                for r in log.put_batch(call).await? {
                    r?;
                }
                messages += 1;
            }
            Ok::<usize, lakehouse_core::Error>(messages)
        }));
    }
    for t in tasks {
        t.await??;
    }
    let ours = start.elapsed();
    let put = (records / PRODUCERS * PRODUCERS) as f64;
    report.metric("stream.nats_put_rps", put / ours.as_secs_f64(), "records/s");

    // The messages our puts made, and their sizes, as the peer publishes them.
    let mut sizes: Vec<(u32, u64, u64)> = Vec::new();
    let mut read = 0usize;
    let started = Instant::now();
    for shard in log.shards().await? {
        let mut pos = Position::TrimHorizon;
        let mut messages = std::collections::BTreeMap::<u64, u64>::new();
        loop {
            let b = log.read(shard.id, pos, ReadLimit::records(10_000)).await?;
            if b.records.is_empty() {
                break;
            }
            read += b.records.len();
            for r in &b.records {
                *messages.entry(r.sequence >> 16).or_default() +=
                    (r.partition_key.len() + r.data.len() + 8) as u64;
            }
            pos = b.next;
        }
        sizes.extend(
            messages
                .into_iter()
                .map(|(m, bytes)| (shard.id.0, m, bytes + 5)),
        );
    }
    let read_time = started.elapsed();
    if read != put as usize {
        return Err(format!("read {read} of {put} records back").into());
    }
    report.metric(
        "stream.nats_read_rps",
        read as f64 / read_time.as_secs_f64(),
        "records/s",
    );

    // Commit latency of one producer's calls, one at a time.
    let samples = report.scale(1_000usize, 200);
    let mut latencies = Latencies::with_capacity(samples);
    for call in calls(0, samples * PER_CALL * PRODUCERS)
        .into_iter()
        .take(samples)
    {
        let t = Instant::now();
        for r in log.put_batch(call).await? {
            r?;
        }
        latencies.record(t.elapsed());
    }
    report.metric(
        "stream.nats_commit_p99_ms",
        latencies.percentile(99.0).as_secs_f64() * 1e3,
        "ms",
    );
    log.delete().await?;

    // The peer: plain JetStream publishes of the same messages, 4 tasks, each awaiting
    // the acks of one call's messages together, as a put call does.
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    for s in 0..SHARDS {
        let _ = js.delete_stream(format!("PEER-{name}-{s}")).await;
        js.create_stream(async_nats::jetstream::stream::Config {
            name: format!("PEER-{name}-{s}"),
            subjects: vec![format!("peer.{name}.{s}")],
            max_age: Duration::from_secs(24 * 3600),
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await?;
    }
    sizes.sort_by_key(|&(_, m, _)| m);
    let messages: Vec<(u32, Bytes)> = sizes
        .iter()
        .map(|&(s, _, bytes)| (s, Bytes::from(vec![b'x'; bytes as usize])))
        .collect();
    let per_call = messages.len().div_ceil(records / PER_CALL).max(1);
    let chunks: Vec<Vec<(u32, Bytes)>> = messages.chunks(per_call).map(<[_]>::to_vec).collect();
    let mut lanes: Vec<Vec<Vec<(u32, Bytes)>>> = (0..PRODUCERS).map(|_| Vec::new()).collect();
    for (i, c) in chunks.into_iter().enumerate() {
        lanes[i % PRODUCERS].push(c);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (lane_no, lane) in lanes.into_iter().enumerate() {
        let js = js.clone();
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            for (call_no, call) in lane.into_iter().enumerate() {
                let mut acks = Vec::with_capacity(call.len());
                for (i, (s, body)) in call.into_iter().enumerate() {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Msg-Id", format!("peer-{lane_no}-{call_no}-{i}"));
                    acks.push(
                        js.publish_with_headers(format!("peer.{name}.{s}"), headers, body)
                            .await?,
                    );
                }
                for ack in acks {
                    ack.await?;
                }
            }
            Ok::<(), async_nats::Error>(())
        }));
    }
    for t in tasks {
        t.await?.map_err(|e| e.to_string())?;
    }
    let peer = start.elapsed();
    for s in 0..SHARDS {
        let _ = js.delete_stream(format!("PEER-{name}-{s}")).await;
    }
    report.note(&format!(
        "{} messages of {:.0} bytes on average; ours {:.2} s, plain publisher {:.2} s",
        messages.len(),
        messages.iter().map(|(_, b)| b.len()).sum::<usize>() as f64 / messages.len().max(1) as f64,
        ours.as_secs_f64(),
        peer.as_secs_f64()
    ));
    report.ratio(
        "stream.nats_put_time_vs_plain_publisher",
        ours.as_secs_f64(),
        peer.as_secs_f64(),
    );
    Ok(())
}
