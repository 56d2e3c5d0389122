//! The checksummed metadata files of a durable directory: `TOPOLOGY` (shards, hash
//! ranges, lineage, closed flags) and `CHECKPOINTS` (consumer-group positions).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use lakehouse_core::{Error, ErrorKind, Result, SequenceNumber, ShardId};

use super::{io_error, sync_dir};

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
