//! Durable mode: the on-disk layout of a [`Stream`](crate::Stream).
//!
//! A durable stream lives in one directory:
//!
//! ```text
//! <dir>/LOCK                       held (advisory lock) while a process has it open
//! <dir>/TOPOLOGY                   shards, hash ranges, lineage, closed flags (+ CRC32C)
//! <dir>/CHECKPOINTS                consumer-group checkpoints (+ CRC32C)
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
//! On open every segment is scanned: the per-segment index (sequence -> file offset) is
//! rebuilt from the frames, an incomplete frame (or zero fill) at the end of a shard's
//! newest segment is a torn tail and is truncated, and any other bad frame is an
//! [`ErrorKind::Corrupt`] error naming the shard, the file and the byte offset.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use lakehouse_core::{Error, ErrorKind, Record, Result, SequenceNumber, ShardId};

/// When a durable stream's writes reach stable storage (fsync).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Never fsync: records are written to the operating system in batches (at 1 MiB
    /// of pending frames per shard, on [`Stream::sync`](crate::Stream::sync) and when
    /// the stream is dropped). A process crash loses what was not yet written; an
    /// operating-system crash loses what the OS had not flushed. Reads see records at
    /// once.
    None,
    /// A put returns after its records are fsynced. Concurrent writers share one
    /// fsync round (group commit). Readers see a record once it is durable.
    PerBatch,
    /// A background thread writes and fsyncs every interval; puts do not wait, so up
    /// to one interval of acknowledged records can be lost in a crash. Readers see a
    /// record once it is durable.
    Interval(Duration),
}

/// Bytes of a frame header.
pub(crate) const HEADER: usize = 12;
/// Bytes of a body before the key.
const BODY_FIXED: usize = 20;

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(ErrorKind::Io, format!("{what} failed: {e}"))
        .with_path(path.display().to_string())
        .with_source(e)
}

/// Appends the frame of one record to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, sequence: SequenceNumber, ts: i64, key: &str, data: &[u8]) {
    let body_len = BODY_FIXED + key.len() + data.len();
    let start = buf.len();
    buf.reserve(HEADER + body_len);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 8]);
    buf.extend_from_slice(&sequence.to_le_bytes());
    buf.extend_from_slice(&ts.to_le_bytes());
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(data);
    let body_crc = crc32c::crc32c(&buf[start + HEADER..]);
    buf[start + 4..start + 8].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&buf[start..start + 8]);
    buf[start + 8..start + 12].copy_from_slice(&header_crc.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// What a scan of one segment found.
#[derive(Debug)]
pub(crate) struct Scanned {
    pub(crate) records: Vec<Record>,
    /// File offset of each record's frame.
    pub(crate) offsets: Vec<u64>,
    /// Bytes of whole, valid frames; a torn tail starts here.
    pub(crate) valid_len: u64,
    /// The segment ended in an incomplete frame or zero fill.
    pub(crate) torn: bool,
}

/// Decodes the frames of one segment whose first record must have sequence `first`.
/// `newest` says whether it is the shard's newest segment, the only place where a torn
/// tail is expected.
pub(crate) fn scan(
    bytes: &Bytes,
    shard: ShardId,
    path: &Path,
    first: SequenceNumber,
    newest: bool,
) -> Result<Scanned> {
    let corrupt = |offset: usize, what: String| {
        Error::new(ErrorKind::Corrupt, what)
            .with_shard(shard)
            .with_path(path.display().to_string())
            .with_offset(offset as u64)
    };
    let mut out = Scanned {
        records: Vec::new(),
        offsets: Vec::new(),
        valid_len: 0,
        torn: false,
    };
    let b = &bytes[..];
    let mut at = 0usize;
    let mut expect = first;
    while at < b.len() {
        let rest = &b[at..];
        let tail_is_zero = || rest.iter().all(|&x| x == 0);
        if rest.len() < HEADER {
            if newest {
                out.torn = true;
                break;
            }
            return Err(corrupt(
                at,
                format!("{} stray bytes after the last frame", rest.len()),
            ));
        }
        let body_len = u32_at(rest, 0) as usize;
        if crc32c::crc32c(&rest[..8]) != u32_at(rest, 8) {
            if newest && tail_is_zero() {
                out.torn = true;
                break;
            }
            return Err(corrupt(at, "frame header checksum mismatch".into()));
        }
        if body_len < BODY_FIXED {
            return Err(corrupt(
                at,
                format!("frame body of {body_len} bytes is too short"),
            ));
        }
        if rest.len() < HEADER + body_len {
            if newest {
                out.torn = true;
                break;
            }
            return Err(corrupt(at, "frame runs past the end of the segment".into()));
        }
        let body = &rest[HEADER..HEADER + body_len];
        if crc32c::crc32c(body) != u32_at(rest, 4) {
            return Err(corrupt(at, "frame body checksum mismatch".into()));
        }
        let sequence = u64_at(body, 0);
        if sequence != expect {
            return Err(corrupt(
                at,
                format!("frame holds sequence {sequence}, expected {expect}"),
            )
            .with_version(expect));
        }
        let ts = u64_at(body, 8) as i64;
        let key_len = u32_at(body, 16) as usize;
        if BODY_FIXED + key_len > body_len {
            return Err(corrupt(
                at,
                format!("key of {key_len} bytes overruns its frame"),
            ));
        }
        let key = std::str::from_utf8(&body[BODY_FIXED..BODY_FIXED + key_len])
            .map_err(|_| corrupt(at, "partition key is not UTF-8".into()))?;
        let data_at = at + HEADER + BODY_FIXED + key_len;
        out.records.push(Record {
            shard,
            sequence,
            partition_key: key.into(),
            data: bytes.slice(data_at..at + HEADER + body_len),
            timestamp_ms: ts,
        });
        out.offsets.push(at as u64);
        at += HEADER + body_len;
        expect += 1;
        out.valid_len = at as u64;
    }
    Ok(out)
}

/// One segment file and its index.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Sequence number of its first record.
    pub(crate) first: SequenceNumber,
    pub(crate) path: PathBuf,
    /// File offset of each record's frame: the index, rebuilt from the frames on open.
    pub(crate) offsets: Vec<u64>,
    pub(crate) len: u64,
}

/// The files of one shard: its segments (oldest first) and the open newest one.
#[derive(Debug)]
pub(crate) struct ShardFiles {
    pub(crate) id: ShardId,
    pub(crate) dir: PathBuf,
    pub(crate) segments: Vec<Segment>,
    writer: Option<File>,
    /// Written since the last fsync.
    unsynced: bool,
    /// Sequence number after the last frame written.
    written_end: SequenceNumber,
}

pub(crate) fn segment_name(first: SequenceNumber) -> String {
    format!("{first:020}.seg")
}

pub(crate) fn shard_dir(root: &Path, id: ShardId) -> PathBuf {
    root.join(format!("shard-{:04}", id.0))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("fsync of the directory", dir, e))
}

/// A shard's records as found on disk.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) files: ShardFiles,
    pub(crate) records: Vec<Record>,
    /// Sequence number of the oldest record (or of the next one when there is none).
    pub(crate) first: SequenceNumber,
}

impl ShardFiles {
    /// A shard with no files yet.
    pub(crate) fn new(root: &Path, id: ShardId) -> ShardFiles {
        ShardFiles {
            id,
            dir: shard_dir(root, id),
            segments: Vec::new(),
            writer: None,
            unsynced: false,
            written_end: 0,
        }
    }

    /// Written since the last fsync.
    pub(crate) fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// Sequence number after the last frame written.
    pub(crate) fn written_end(&self) -> SequenceNumber {
        self.written_end
    }

    /// Reads the segments of shard `id`, truncating a torn tail of the newest.
    pub(crate) fn recover(root: &Path, id: ShardId) -> Result<Recovered> {
        let mut files = ShardFiles::new(root, id);
        let mut names: Vec<(SequenceNumber, PathBuf)> = Vec::new();
        match fs::read_dir(&files.dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|e| io_error("listing", &files.dir, e))?;
                    let path = entry.path();
                    let name = entry.file_name();
                    let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
                        continue;
                    };
                    let first = stem.parse().map_err(|_| {
                        Error::new(
                            ErrorKind::Corrupt,
                            "a segment name is not a sequence number",
                        )
                        .with_shard(id)
                        .with_path(path.display().to_string())
                    })?;
                    names.push((first, path));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("listing", &files.dir, e)),
        }
        names.sort();
        let mut records = Vec::new();
        let first = names.first().map_or(0, |(f, _)| *f);
        let mut expect = first;
        let count = names.len();
        for (i, (seg_first, path)) in names.into_iter().enumerate() {
            if seg_first != expect {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("segment starts at sequence {seg_first}, expected {expect}: a segment is missing"),
                )
                .with_shard(id)
                .with_path(path.display().to_string())
                .with_version(expect));
            }
            let bytes = Bytes::from(fs::read(&path).map_err(|e| io_error("reading", &path, e))?);
            let newest = i + 1 == count;
            let scanned = scan(&bytes, id, &path, seg_first, newest)?;
            if scanned.torn {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_error("opening", &path, e))?;
                f.set_len(scanned.valid_len)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| io_error("truncating a torn tail of", &path, e))?;
            }
            expect += scanned.records.len() as u64;
            records.extend(scanned.records);
            files.segments.push(Segment {
                first: seg_first,
                path,
                offsets: scanned.offsets,
                len: scanned.valid_len,
            });
        }
        files.written_end = expect;
        Ok(Recovered {
            files,
            records,
            first,
        })
    }

    /// Where the frame of `sequence` is: its segment file and byte offset.
    pub(crate) fn locate(&self, sequence: SequenceNumber) -> Option<(PathBuf, u64)> {
        let i = self.segments.partition_point(|s| s.first <= sequence);
        let seg = self.segments.get(i.checked_sub(1)?)?;
        let at = usize::try_from(sequence - seg.first).ok()?;
        seg.offsets.get(at).map(|&o| (seg.path.clone(), o))
    }

    /// Appends the frames in `buf` (whose first record has sequence `first`), starting a
    /// new segment whenever the newest holds `segment_bytes` or more (a segment takes at
    /// least one frame). With `sync`, new files are made durable in their directory and
    /// a finished segment is fsynced before the next one starts.
    pub(crate) fn append(
        &mut self,
        buf: &[u8],
        first: SequenceNumber,
        segment_bytes: u64,
        sync: bool,
    ) -> Result<()> {
        let mut at = 0usize;
        let mut sequence = first;
        while at + HEADER <= buf.len() {
            if self.segments.last().is_none_or(|s| s.len >= segment_bytes) {
                self.roll(sequence, sync)?;
            }
            let Some(seg) = self.segments.last_mut() else {
                return Err(Error::new(ErrorKind::Internal, "no segment after a roll"));
            };
            if self.writer.is_none() {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&seg.path)
                    .map_err(|e| io_error("opening", &seg.path, e))?;
                self.writer = Some(file);
            }
            let Some(writer) = self.writer.as_mut() else {
                return Err(Error::new(ErrorKind::Internal, "no open segment"));
            };
            let start = at;
            let mut offsets = Vec::new();
            while at + HEADER <= buf.len() {
                let frame = HEADER + u32_at(buf, at) as usize;
                if at > start && seg.len + (at - start + frame) as u64 > segment_bytes {
                    break;
                }
                offsets.push(seg.len + (at - start) as u64);
                at += frame;
            }
            let chunk = buf.get(start..at).ok_or_else(|| {
                Error::new(ErrorKind::Internal, "a pending frame overruns its buffer")
            })?;
            self.unsynced = true;
            writer
                .write_all(chunk)
                .map_err(|e| io_error("writing", &seg.path, e).with_shard(self.id))?;
            seg.len += chunk.len() as u64;
            sequence += offsets.len() as u64;
            seg.offsets.extend(offsets);
            self.written_end = sequence;
        }
        Ok(())
    }

    /// Finishes the newest segment (fsynced when `sync`) and starts one whose first
    /// record is `first`.
    fn roll(&mut self, first: SequenceNumber, sync: bool) -> Result<()> {
        if let Some(old) = self.writer.take()
            && sync
            && self.unsynced
        {
            let path = self
                .segments
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            old.sync_data()
                .map_err(|e| io_error("fsync", &path, e).with_shard(self.id))?;
            self.unsynced = false;
        }
        fs::create_dir_all(&self.dir).map_err(|e| io_error("creating", &self.dir, e))?;
        let path = self.dir.join(segment_name(first));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error("creating", &path, e))?;
        if sync {
            sync_dir(&self.dir)?;
            if let Some(root) = self.dir.parent() {
                sync_dir(root)?;
            }
        }
        self.segments.push(Segment {
            first,
            path,
            offsets: Vec::new(),
            len: 0,
        });
        self.writer = Some(file);
        Ok(())
    }

    /// Fsyncs the newest segment if anything was written since the last fsync.
    pub(crate) fn sync(&mut self) -> Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        if let (Some(w), Some(seg)) = (&self.writer, self.segments.last()) {
            w.sync_data()
                .map_err(|e| io_error("fsync", &seg.path, e).with_shard(self.id))?;
        }
        self.unsynced = false;
        Ok(())
    }

    /// Deletes whole segments all of whose records are older than `oldest` (never the
    /// newest segment, whose name keeps the next sequence number).
    pub(crate) fn retain(&mut self, oldest: SequenceNumber) -> Result<()> {
        while self.segments.len() > 1 && self.segments[1].first <= oldest {
            let seg = self.segments.remove(0);
            match fs::remove_file(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("deleting", &seg.path, e).with_shard(self.id)),
            }
        }
        Ok(())
    }
}

/// A shard as the topology file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardMeta {
    pub(crate) id: ShardId,
    pub(crate) parents: Vec<ShardId>,
    pub(crate) range: (u128, u128),
    pub(crate) closed: bool,
}

const TOPOLOGY: &str = "TOPOLOGY";
const CHECKPOINTS: &str = "CHECKPOINTS";

/// Writes `text` plus a CRC32C line to `root/name` atomically (temporary file, fsync,
/// rename, directory fsync when `sync`).
fn write_checked(root: &Path, name: &str, text: &str, sync: bool) -> Result<()> {
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(text);
    let _ = writeln!(out, "crc {:08x}", crc32c::crc32c(text.as_bytes()));
    let tmp = root.join(format!("{name}.tmp"));
    let path = root.join(name);
    let mut f = File::create(&tmp).map_err(|e| io_error("creating", &tmp, e))?;
    f.write_all(out.as_bytes())
        .map_err(|e| io_error("writing", &tmp, e))?;
    if sync {
        f.sync_all().map_err(|e| io_error("fsync", &tmp, e))?;
    }
    drop(f);
    fs::rename(&tmp, &path).map_err(|e| io_error("renaming", &tmp, e))?;
    if sync {
        sync_dir(root)?;
    }
    Ok(())
}

/// Reads a file written by [`write_checked`]; `None` when it does not exist.
fn read_checked(root: &Path, name: &str) -> Result<Option<String>> {
    let path = root.join(name);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("reading", &path, e)),
    };
    let corrupt = |what: &str| {
        Error::new(ErrorKind::Corrupt, format!("{name}: {what}"))
            .with_path(path.display().to_string())
    };
    let body_end = text.trim_end_matches('\n').rfind('\n').map_or(0, |i| i + 1);
    let (body, last) = text.split_at(body_end);
    let crc = last
        .trim()
        .strip_prefix("crc ")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| corrupt("no checksum line"))?;
    if crc32c::crc32c(body.as_bytes()) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(Some(body.to_owned()))
}

/// Persists the shard topology (lineage, ranges, closed flags).
pub(crate) fn write_topology(root: &Path, shards: &[ShardMeta], sync: bool) -> Result<()> {
    let mut text = String::from("lakehouse-stream topology 1\n");
    for s in shards {
        let parents: Vec<String> = s.parents.iter().map(|p| p.0.to_string()).collect();
        let _ = writeln!(
            text,
            "shard {} {} {} {} {}",
            s.id.0,
            if parents.is_empty() {
                "-".to_owned()
            } else {
                parents.join(",")
            },
            s.range.0,
            s.range.1,
            if s.closed { "closed" } else { "open" },
        );
    }
    write_checked(root, TOPOLOGY, &text, sync)
}

/// Reads the shard topology; `None` for a new directory.
pub(crate) fn read_topology(root: &Path) -> Result<Option<Vec<ShardMeta>>> {
    let Some(text) = read_checked(root, TOPOLOGY)? else {
        return Ok(None);
    };
    let bad = |line: &str| {
        Error::new(
            ErrorKind::Corrupt,
            format!("malformed topology line {line:?}"),
        )
        .with_path(root.join(TOPOLOGY).display().to_string())
    };
    let mut shards = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(' ').collect();
        let [tag, id, parents, start, end, state] = f[..] else {
            return Err(bad(line));
        };
        if tag != "shard" {
            return Err(bad(line));
        }
        let id = ShardId(id.parse().map_err(|_| bad(line))?);
        if id.0 as usize != shards.len() {
            return Err(bad(line));
        }
        let parents = if parents == "-" {
            Vec::new()
        } else {
            parents
                .split(',')
                .map(|p| p.parse().map(ShardId).map_err(|_| bad(line)))
                .collect::<Result<_>>()?
        };
        shards.push(ShardMeta {
            id,
            parents,
            range: (
                start.parse().map_err(|_| bad(line))?,
                end.parse().map_err(|_| bad(line))?,
            ),
            closed: match state {
                "open" => false,
                "closed" => true,
                _ => return Err(bad(line)),
            },
        });
    }
    if shards.is_empty() {
        return Err(bad("(no shards)"));
    }
    Ok(Some(shards))
}

fn hex(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Persists consumer-group checkpoints.
pub(crate) fn write_checkpoints<'a>(
    root: &Path,
    entries: impl Iterator<Item = (&'a str, ShardId, SequenceNumber)>,
    sync: bool,
) -> Result<()> {
    let mut text = String::from("lakehouse-stream checkpoints 1\n");
    for (group, shard, seq) in entries {
        let _ = writeln!(text, "{} {} {}", shard.0, seq, hex(group));
    }
    write_checked(root, CHECKPOINTS, &text, sync)
}

/// Reads consumer-group checkpoints (none for a new directory).
pub(crate) fn read_checkpoints(root: &Path) -> Result<Vec<(String, ShardId, SequenceNumber)>> {
    let Some(text) = read_checked(root, CHECKPOINTS)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let mut f = line.split(' ');
        let parsed = (|| {
            let shard = ShardId(f.next()?.parse().ok()?);
            let seq = f.next()?.parse().ok()?;
            let group = unhex(f.next().unwrap_or(""))?;
            Some((group, shard, seq))
        })();
        out.push(parsed.ok_or_else(|| {
            Error::new(
                ErrorKind::Corrupt,
                format!("malformed checkpoint line {line:?}"),
            )
            .with_path(root.join(CHECKPOINTS).display().to_string())
        })?);
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        for i in 0..n {
            encode(
                &mut buf,
                i,
                1000 + i as i64,
                &format!("k{i}"),
                format!("v{i}").as_bytes(),
            );
        }
        buf
    }

    #[test]
    fn frames_round_trip() {
        let b = Bytes::from(frames(5));
        let s = scan(&b, ShardId(3), Path::new("x"), 0, true).unwrap();
        assert!(!s.torn);
        assert_eq!(s.valid_len, b.len() as u64);
        assert_eq!(s.records.len(), 5);
        assert_eq!(s.records[4].partition_key, "k4");
        assert_eq!(&s.records[4].data[..], b"v4");
        assert_eq!(s.records[4].timestamp_ms, 1004);
        assert_eq!(s.offsets[0], 0);
    }

    #[test]
    fn every_cut_is_torn_and_every_flip_is_caught() {
        let full = frames(3);
        let whole = scan(
            &Bytes::from(full.clone()),
            ShardId(0),
            Path::new("x"),
            0,
            true,
        )
        .unwrap();
        for cut in 0..full.len() {
            let s = scan(
                &Bytes::from(full[..cut].to_vec()),
                ShardId(0),
                Path::new("x"),
                0,
                true,
            )
            .unwrap();
            let complete = whole.offsets.iter().filter(|&&o| o < cut as u64).count();
            let boundary = whole.offsets.contains(&(cut as u64));
            assert_eq!(s.torn, !boundary && cut > 0, "cut {cut}");
            assert_eq!(
                s.records.len(),
                if boundary { complete } else { complete - 1 }
            );
        }
        for at in 0..full.len() {
            let mut bad = full.clone();
            bad[at] ^= 0x40;
            let err = scan(&Bytes::from(bad), ShardId(7), Path::new("x"), 0, true).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "flip at {at}");
            assert_eq!(err.context().shard, Some(ShardId(7)));
            let frame = whole
                .offsets
                .iter()
                .rev()
                .find(|&&o| o <= at as u64)
                .copied();
            assert_eq!(err.context().offset, frame, "flip at {at}");
        }
    }

    #[test]
    fn topology_and_checkpoints_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let shards = vec![
            ShardMeta {
                id: ShardId(0),
                parents: vec![],
                range: (0, 9),
                closed: true,
            },
            ShardMeta {
                id: ShardId(1),
                parents: vec![ShardId(0)],
                range: (0, u128::MAX),
                closed: false,
            },
        ];
        write_topology(dir.path(), &shards, true).unwrap();
        assert_eq!(read_topology(dir.path()).unwrap().unwrap(), shards);
        write_checkpoints(dir.path(), [("g 1\n", ShardId(1), 42)].into_iter(), false).unwrap();
        assert_eq!(
            read_checkpoints(dir.path()).unwrap(),
            vec![("g 1\n".to_owned(), ShardId(1), 42)]
        );
        let path = dir.path().join(TOPOLOGY);
        let mut text = fs::read(&path).unwrap();
        text[30] ^= 1;
        fs::write(&path, text).unwrap();
        assert_eq!(
            read_topology(dir.path()).unwrap_err().kind(),
            ErrorKind::Corrupt
        );
    }
}
