//! Entry points for fuzzing the decoders of a durable stream directory (feature
//! `fuzzing`, off by default; not a stable API).
//!
//! Every entry writes the bytes it is given into a fresh durable directory, opens it
//! and reads every shard back, discarding the outcome: an error is the expected answer
//! to bad bytes, a panic is a defect. The directory starts as a copy of a real stream's
//! files ([`sample_files`]): two shards with lineage, several segments each, a
//! checkpoint, and a memory window small enough that reads go through the segments.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use lakehouse_core::{Position, PutRecord, ReadLimit, ShardId};

use crate::{Durability, Stream};

/// The memory window of the streams opened here: a few records, so that reads of
/// older records decode their frames from the segment files.
const WINDOW: usize = 256;

/// A directory that is removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Option<ScratchDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("lakehouse-stream-fuzz-{}-{n}", std::process::id());
        // Memory-backed when the system has it: thousands of directories are written.
        let shm = Path::new("/dev/shm");
        let bases = [
            shm.is_dir().then(|| shm.to_path_buf()),
            Some(std::env::temp_dir()),
        ];
        for base in bases.into_iter().flatten() {
            let dir = base.join(&name);
            let _ = std::fs::remove_dir_all(&dir);
            if std::fs::create_dir_all(&dir).is_ok() {
                return Some(ScratchDir(dir));
            }
        }
        None
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read_tree(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            read_tree(root, &path, out);
        } else if let (Ok(rel), Ok(bytes)) = (path.strip_prefix(root), std::fs::read(&path)) {
            let rel = rel.to_string_lossy().replace('\\', "/");
            if rel != "LOCK" {
                out.push((rel, bytes));
            }
        }
    }
}

fn build_sample() -> Vec<(String, Vec<u8>)> {
    let Some(dir) = ScratchDir::new() else {
        return Vec::new();
    };
    let built = (|| -> crate::Result<()> {
        let stream = Stream::builder("fuzz")
            .shards(2)
            .durable(&dir.0)
            .durability(Durability::None)
            .segment_bytes(160)
            .memory_window_bytes(WINDOW)
            .build()?;
        for i in 0..16u32 {
            let key = format!("key-{}", i % 5);
            let data = format!("record {i} {}", "x".repeat((i % 7) as usize));
            stream.put_record(PutRecord::new(key, data))?;
        }
        let (left, _) = stream.split_shard(ShardId(0), u128::MAX / 4)?;
        for i in 0..6u32 {
            stream.put_record(PutRecord::new(format!("key-{i}"), format!("after {i}")))?;
        }
        stream.commit_checkpoint("group one", ShardId(1), 3)?;
        stream.commit_checkpoint("g2", left, 0)?;
        stream.sync()?;
        Ok(())
    })();
    let mut files = Vec::new();
    if built.is_ok() {
        read_tree(&dir.0, &dir.0, &mut files);
    }
    files.sort();
    files
}

/// The files of a real durable stream directory, as (path relative to the directory,
/// bytes), sorted by path: the seed corpus of the entries below.
pub fn sample_files() -> &'static [(String, Vec<u8>)] {
    static SAMPLE: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    SAMPLE.get_or_init(build_sample)
}

/// The sample's segment files (their indices in [`sample_files`]).
fn segment_indices() -> Vec<usize> {
    sample_files()
        .iter()
        .enumerate()
        .filter(|(_, (p, _))| p.ends_with(".seg"))
        .map(|(i, _)| i)
        .collect()
}

/// Writes `files` (relative paths; any with `..` or a leading `/` are skipped) into a
/// fresh directory, opens it as a durable stream, reads every shard from its oldest
/// record to its end and the consumer checkpoints, and discards the outcome.
pub fn open_dir(files: &[(String, Vec<u8>)]) {
    let Some(dir) = ScratchDir::new() else {
        return;
    };
    for (rel, bytes) in files {
        if rel.is_empty() || rel.starts_with('/') || rel.split('/').any(|s| s == "..") {
            continue;
        }
        let path = dir.0.join(rel);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(&path, bytes);
    }
    let opened = Stream::builder("fuzz")
        .durable(&dir.0)
        .durability(Durability::None)
        .memory_window_bytes(WINDOW)
        .build();
    let Ok(stream) = opened else {
        return;
    };
    for shard in stream.shards() {
        let mut position = Position::TrimHorizon;
        // Bounded: a shard of the sample holds a few dozen records.
        for _ in 0..64 {
            let Ok(batch) = stream.read_at(shard.id, position, ReadLimit::records(7)) else {
                break;
            };
            if batch.records.is_empty() {
                break;
            }
            position = batch.next;
        }
        let _ = stream.checkpoint("group one", shard.id);
        let _ = stream.read_at(shard.id, Position::Latest, ReadLimit::records(1));
        let _ = stream.read_at(shard.id, Position::AtTimestamp(0), ReadLimit::records(3));
    }
}

/// [`open_dir`] on the sample with one segment replaced by `bytes[1..]`; `bytes[0]`
/// chooses the segment (a sealed one or a shard's newest).
pub fn open_segment(bytes: &[u8]) {
    let Some((&pick, body)) = bytes.split_first() else {
        return;
    };
    let segments = segment_indices();
    if segments.is_empty() {
        return;
    }
    let mut files = sample_files().to_vec();
    files[segments[usize::from(pick) % segments.len()]].1 = body.to_vec();
    open_dir(&files);
}

/// [`open_dir`] on the sample with `TOPOLOGY` (`bytes[0]` even) or `CHECKPOINTS` (odd)
/// replaced by `bytes[1..]`.
pub fn open_metadata(bytes: &[u8]) {
    let Some((&pick, body)) = bytes.split_first() else {
        return;
    };
    let name = if pick.is_multiple_of(2) {
        "TOPOLOGY"
    } else {
        "CHECKPOINTS"
    };
    let mut files = sample_files().to_vec();
    match files.iter_mut().find(|(p, _)| p == name) {
        Some(f) => f.1 = body.to_vec(),
        None => files.push((name.to_owned(), body.to_vec())),
    }
    open_dir(&files);
}
