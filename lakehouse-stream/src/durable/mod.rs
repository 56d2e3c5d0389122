//! Durable mode: the on-disk layout of a [`Stream`](crate::Stream).
//!
//! A durable stream lives in one directory:
//!
//! ```text
//! <dir>/LOCK                       held (advisory lock) while a process has it open
//! <dir>/TOPOLOGY                   shards, hash ranges, lineage, closed flags (+ CRC32C)
//! <dir>/CHECKPOINTS                consumer-group checkpoints: a log of CRC32C blocks
//! <dir>/shard-0000/00000000000000000000.seg
//! <dir>/shard-0000/00000000000000052113.seg   segments named by their first sequence
//! ```
//!
//! A segment is a run of frames, one per record, with no file header:
//!
//! ```text
//! u32 body length | u32 CRC32C(body) | u32 CRC32C(first 8 bytes) | body
//! body = u64 sequence | i64 arrival ms | u32 key length | key | payload
//! ```
//!
//! (all integers little-endian). The header checksum protects the length, so a
//! corrupted length is reported instead of being mistaken for the end of the log.
//! A shard keeps a sparse index of its segments in memory: one mark (sequence number,
//! byte position, arrival time; 24 bytes) at the first frame of every segment and then
//! at the first frame after every 4 KiB of frames. A read of a record that is no longer
//! in the shard's memory window seeks to the mark at or before it and decodes forward,
//! through at most 4 KiB of frames before the first record it returns, checking every
//! checksum again.
//!
//! On open every segment is scanned and the index is rebuilt from the frames. Bytes
//! after a segment's last valid frame that hold no valid frame (an incomplete frame,
//! zero fill, garbage: what a crash or a power loss leaves) are a torn tail and are
//! truncated; a bad frame that a valid frame follows is an [`ErrorKind::Corrupt`]
//! error naming the shard, the file and the byte offset. A shard's log is the run of
//! frames in sequence from its oldest segment: where a torn segment or a missing one
//! ends it (possible only for segments written without fsync, under
//! [`Durability::None`], after the last [`Stream::sync`](crate::Stream::sync)), the
//! later segments are renamed `*.seg.orphan` and no longer read.
//!
//! `TOPOLOGY` is always written through a fsynced temporary file and a rename.
//! `CHECKPOINTS` is appended to by commit rounds (see `meta`).
//!
//! `frame` encodes and scans the frames, `segment` keeps a shard's segment files
//! (writing, rolling, recovery, retention), `cursor` reads records back from them and
//! `meta` keeps the checksummed `TOPOLOGY` and `CHECKPOINTS` files; this module holds
//! the [`Durability`] setting and the directory lock.

use std::fs::{self, File, OpenOptions};
use std::path::Path;
use std::time::Duration;

use lakehouse_core::{Error, ErrorKind, Result};

mod cursor;
mod frame;
pub(crate) mod fsio;
mod meta;
mod segment;

pub(crate) use self::cursor::{Cursor, Mark};
pub(crate) use self::frame::{encode, frame_len};
pub(crate) use self::meta::{CheckpointLog, Checkpoints, ShardMeta, read_topology, write_topology};
pub(crate) use self::segment::ShardFiles;

/// When a durable stream's writes reach stable storage (fsync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Never fsync records: they are written to the operating system in batches (at
    /// 1 MiB of pending frames per shard, on [`Stream::sync`](crate::Stream::sync) and
    /// when the stream is dropped). A process crash loses what was not yet written; an
    /// operating-system crash or power loss loses what the OS had not flushed since
    /// the last `sync` (which fsyncs every segment written since, and the
    /// directories). Reads see records at once.
    None,
    /// A put returns after its records are fsynced. Concurrent writers share one
    /// fsync round (group commit). Readers see a record once it is durable.
    PerBatch,
    /// A background thread writes and fsyncs every interval; puts do not wait, so up
    /// to one interval of acknowledged records can be lost in a crash. Readers see a
    /// record once it is durable.
    Interval(Duration),
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("{what} failed: {e}"))
        .with_path(path.display().to_string())
        .with_source(e)
}

fn sync_dir(dir: &Path) -> Result<()> {
    fsio::sync_dir(dir).map_err(|e| io_error("fsync of the directory", dir, e))
}

/// Takes the directory's advisory lock so that one handle at a time opens it, waiting
/// up to a second for a closing handle to let go.
pub(crate) fn lock_dir(root: &Path) -> Result<File> {
    fs::create_dir_all(root).map_err(|e| io_error("creating", root, e))?;
    let path = root.join("LOCK");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_error("opening", &path, e))?;
    // A handle dropped just before may still be closing on another thread (the last
    // reference can be held by a `Durability::Interval` sync thread): wait briefly.
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    format!("the stream directory is open elsewhere ({e})"),
                )
                .with_path(root.display().to_string()));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}
