//! The checksummed metadata files of a durable directory: `TOPOLOGY` (shards, hash
//! ranges, lineage, closed flags) and `CHECKPOINTS` (consumer-group positions).
//!
//! `TOPOLOGY` is rewritten whole (temporary file, rename). `CHECKPOINTS` is a log of
//! blocks, each a run of `shard sequence hex(group)` lines closed by a `crc` line
//! that checks the block; the first block starts with the header line. A commit
//! round appends one block with the checkpoints that changed (one write, one fsync),
//! the newest line of a (group, shard) wins, and the file is rewritten as one block
//! once it grows to several times what that takes. A block cut short by a crash at
//! the end of the file is dropped on open.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use lakehouse_core::{Error, ErrorKind, Result, SequenceNumber, ShardId};

use super::{fsio, io_error, sync_dir};

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
    let mut f = fsio::create(&tmp).map_err(|e| io_error("creating", &tmp, e))?;
    fsio::write_all(&mut f, &tmp, out.as_bytes()).map_err(|e| io_error("writing", &tmp, e))?;
    if sync {
        fsio::sync_file(&f, &tmp).map_err(|e| io_error("fsync", &tmp, e))?;
    }
    drop(f);
    fsio::rename(&tmp, &path).map_err(|e| io_error("renaming", &tmp, e))?;
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

/// Persists the shard topology (lineage, ranges, closed flags), fsynced whatever the
/// durability setting: a stream whose `TOPOLOGY` a power loss tore would not open.
pub(crate) fn write_topology(root: &Path, shards: &[ShardMeta]) -> Result<()> {
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
    write_checked(root, TOPOLOGY, &text, true)
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

const CHECKPOINTS_HEADER: &str = "lakehouse-stream checkpoints 1\n";

/// A checkpoint as `CHECKPOINTS` holds it: (group, shard) and sequence number.
pub(crate) type Checkpoints = HashMap<(String, ShardId), SequenceNumber>;

fn checkpoint_line(out: &mut String, group: &str, shard: ShardId, seq: SequenceNumber) {
    let _ = writeln!(out, "{} {} {}", shard.0, seq, hex(group));
}

/// Persists consumer-group checkpoints as one block (replacing the file).
pub(crate) fn write_checkpoints<'a>(
    root: &Path,
    entries: impl Iterator<Item = (&'a str, ShardId, SequenceNumber)>,
    sync: bool,
) -> Result<()> {
    let mut text = String::from(CHECKPOINTS_HEADER);
    for (group, shard, seq) in entries {
        checkpoint_line(&mut text, group, shard, seq);
    }
    write_checked(root, CHECKPOINTS, &text, sync)
}

/// What a read of `CHECKPOINTS` found.
struct CheckpointFile {
    entries: Vec<(String, ShardId, SequenceNumber)>,
    /// Bytes of whole, valid blocks; a torn block starts here.
    valid_len: u64,
    /// Bytes in the file.
    len: u64,
}

/// Reads the blocks of `CHECKPOINTS`; `None` when it does not exist.
fn read_checkpoint_file(root: &Path) -> Result<Option<CheckpointFile>> {
    let path = root.join(CHECKPOINTS);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("reading", &path, e)),
    };
    let corrupt = |what: String, offset: usize| {
        Error::new(ErrorKind::Corrupt, format!("{CHECKPOINTS}: {what}"))
            .with_path(path.display().to_string())
            .with_offset(offset as u64)
    };
    let mut entries = Vec::new();
    let mut block_start = 0usize;
    let mut line_start = 0usize;
    let mut valid_len = 0usize;
    let mut bad: Option<(usize, String)> = None;
    while line_start < bytes.len() {
        let Some(nl) = bytes[line_start..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let line = &bytes[line_start..line_start + nl];
        let next = line_start + nl + 1;
        if let Some(hexcrc) = line.strip_prefix(b"crc ") {
            let block = &bytes[block_start..line_start];
            let crc = std::str::from_utf8(hexcrc)
                .ok()
                .and_then(|h| u32::from_str_radix(h.trim(), 16).ok());
            if bad.is_some() {
                // A damaged block followed by a whole one: not a torn tail.
                let (at, what) = bad.take().unwrap_or_default();
                return Err(corrupt(what, at));
            }
            if crc != Some(crc32c::crc32c(block)) {
                bad = Some((block_start, "checksum mismatch".to_owned()));
            } else {
                let body = if block_start == 0 {
                    match block.strip_prefix(CHECKPOINTS_HEADER.as_bytes()) {
                        Some(b) => b,
                        None => return Err(corrupt("no header line".to_owned(), 0)),
                    }
                } else {
                    block
                };
                let text = std::str::from_utf8(body)
                    .map_err(|_| corrupt("not UTF-8".to_owned(), block_start))?;
                for l in text.lines() {
                    entries.push(parse_checkpoint(l).ok_or_else(|| {
                        corrupt(format!("malformed checkpoint line {l:?}"), block_start)
                    })?);
                }
                valid_len = next;
            }
            block_start = next;
        }
        line_start = next;
    }
    Ok(Some(CheckpointFile {
        entries,
        valid_len: valid_len as u64,
        len: bytes.len() as u64,
    }))
}

fn parse_checkpoint(line: &str) -> Option<(String, ShardId, SequenceNumber)> {
    let mut f = line.split(' ');
    let shard = ShardId(f.next()?.parse().ok()?);
    let seq = f.next()?.parse().ok()?;
    let group = unhex(f.next().unwrap_or(""))?;
    if f.next().is_some() {
        return None;
    }
    Some((group, shard, seq))
}

/// Reads consumer-group checkpoints (none for a new directory), the newest line of
/// each (group, shard) winning.
#[cfg(test)]
pub(crate) fn read_checkpoints(root: &Path) -> Result<Vec<(String, ShardId, SequenceNumber)>> {
    let Some(file) = read_checkpoint_file(root)? else {
        return Ok(Vec::new());
    };
    let mut latest: Checkpoints = HashMap::new();
    let mut order = Vec::new();
    for (g, s, q) in file.entries {
        if latest.insert((g.clone(), s), q).is_none() {
            order.push((g, s));
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|k| latest.get(&k).map(|q| (k.0.clone(), k.1, *q)))
        .collect())
}

/// The `CHECKPOINTS` file of an open stream: blocks are appended to it.
#[derive(Debug)]
pub(crate) struct CheckpointLog {
    root: PathBuf,
    /// Open for appending; `None` when the file must be rewritten first (there is
    /// none yet, or an append failed and may have left part of a block).
    file: Option<File>,
    len: u64,
    /// What the file holds.
    written: Checkpoints,
    /// Appended since the last fsync.
    unsynced: bool,
}

impl CheckpointLog {
    /// Opens the log in `root` and reads its checkpoints, cutting off a block torn by
    /// a crash (fsynced with `sync`).
    pub(crate) fn open(root: &Path, sync: bool) -> Result<(CheckpointLog, Checkpoints)> {
        let mut log = CheckpointLog {
            root: root.to_owned(),
            file: None,
            len: 0,
            written: HashMap::new(),
            unsynced: false,
        };
        let Some(found) = read_checkpoint_file(root)? else {
            return Ok((log, HashMap::new()));
        };
        for (g, s, q) in found.entries {
            log.written.insert((g, s), q);
        }
        let path = root.join(CHECKPOINTS);
        if found.valid_len > 0 {
            let file =
                fsio::open_append(&path, false).map_err(|e| io_error("opening", &path, e))?;
            if found.valid_len < found.len {
                fsio::set_len(&file, &path, found.valid_len)
                    .map_err(|e| io_error("truncating a torn block of", &path, e))?;
                if sync {
                    fsio::sync_file(&file, &path).map_err(|e| io_error("fsync", &path, e))?;
                }
            }
            log.file = Some(file);
            log.len = found.valid_len;
        }
        let current = log.written.clone();
        Ok((log, current))
    }

    /// Appended since the last fsync.
    pub(crate) fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// Brings the file up to `current`: appends a block of the checkpoints that
    /// changed, then fsyncs it with `sync`. When the file grew too large or must be
    /// rewritten, it is rewritten as one block, always fsynced (a torn rewrite would
    /// lose every checkpoint, not only the newest).
    pub(crate) fn write(&mut self, current: &Checkpoints, sync: bool) -> Result<()> {
        let changed: Vec<(&(String, ShardId), &SequenceNumber)> = current
            .iter()
            .filter(|(k, q)| self.written.get(*k) != Some(*q))
            .collect();
        let path = self.root.join(CHECKPOINTS);
        let compact_at = (64u64 << 10).max(self.written.len() as u64 * 4 * 48);
        if self.file.is_none() || (!changed.is_empty() && self.len > compact_at) {
            if current.is_empty() && self.file.is_none() && self.written.is_empty() {
                return Ok(());
            }
            self.file = None;
            write_checkpoints(
                &self.root,
                current.iter().map(|((g, s), q)| (g.as_str(), *s, *q)),
                true,
            )?;
            self.written = current.clone();
            self.unsynced = false;
            let file =
                fsio::open_append(&path, false).map_err(|e| io_error("opening", &path, e))?;
            self.len = file.metadata().map_or(0, |m| m.len());
            self.file = Some(file);
            return Ok(());
        }
        if !changed.is_empty() {
            let mut block = String::new();
            for ((g, s), q) in &changed {
                checkpoint_line(&mut block, g, *s, **q);
            }
            let _ = writeln!(block, "crc {:08x}", crc32c::crc32c(block.as_bytes()));
            let Some(file) = self.file.as_mut() else {
                return Err(Error::new(ErrorKind::Internal, "no open checkpoint log"));
            };
            if let Err(e) = fsio::write_all(file, &path, block.as_bytes()) {
                // Part of the block may be in the file: rewrite it next time.
                self.file = None;
                return Err(io_error("writing", &path, e));
            }
            self.len += block.len() as u64;
            self.unsynced = true;
            for ((g, s), q) in changed {
                self.written.insert((g.clone(), *s), *q);
            }
        }
        if sync && self.unsynced {
            if let Some(file) = &self.file {
                fsio::sync_file(file, &path).map_err(|e| io_error("fsync", &path, e))?;
            }
            self.unsynced = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        write_topology(dir.path(), &shards).unwrap();
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
