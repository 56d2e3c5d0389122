//! Reading records back from a shard's segment files: the sparse index that says where
//! to start, and a cursor that decodes frames from there.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use lakehouse_core::{Error, ErrorKind, PartitionKey, Result, SequenceNumber, ShardId};

use super::frame::{HEADER, check_header, decode_body};
use super::io_error;

/// A new index entry is made once this many frame bytes were written since the last
/// one (and at the start of every segment), so a read decodes at most this many bytes
/// of frames before its first record.
pub(crate) const INDEX_EVERY_BYTES: u64 = 4096;

/// An entry of a shard's sparse segment index: record `sequence` (arrived at
/// `timestamp_ms`) has its frame at byte position `pos` of the shard, counted over all
/// of its segments from the oldest retained one at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) sequence: SequenceNumber,
    pub(crate) pos: u64,
    pub(crate) timestamp_ms: i64,
}

/// A segment as a reader needs it: where it is and which bytes of the shard it holds.
#[derive(Debug, Clone)]
pub(crate) struct SegRef {
    pub(crate) path: PathBuf,
    /// Shard byte position of its first frame.
    pub(crate) start_pos: u64,
    /// Bytes of whole frames in it when the reference was taken.
    pub(crate) len: u64,
}

/// A record read back from a segment.
#[derive(Debug)]
pub(crate) struct DiskRecord {
    pub(crate) sequence: SequenceNumber,
    pub(crate) timestamp_ms: i64,
    pub(crate) key: PartitionKey,
    pub(crate) data: Bytes,
    /// Byte offset of its frame in the segment file.
    pub(crate) offset: u64,
}

/// Decodes frames forward from a position, across segments, checking every checksum.
#[derive(Debug)]
pub(crate) struct Cursor {
    shard: ShardId,
    segs: Vec<SegRef>,
    i: usize,
    offset: u64,
    expect: SequenceNumber,
    reader: Option<BufReader<File>>,
}

impl Cursor {
    /// A cursor at the frame of record `mark.sequence`, which is at shard byte position
    /// `mark.pos`, in the first of `segs`.
    pub(crate) fn new(shard: ShardId, segs: Vec<SegRef>, mark: Mark) -> Cursor {
        let offset = segs
            .first()
            .map_or(0, |s| mark.pos.saturating_sub(s.start_pos));
        Cursor {
            shard,
            segs,
            i: 0,
            offset,
            expect: mark.sequence,
            reader: None,
        }
    }

    /// The segment file the last record came from (or the next will).
    pub(crate) fn path(&self) -> Option<&Path> {
        self.segs.get(self.i).map(|s| s.path.as_path())
    }

    fn corrupt(&self, path: &Path, what: String) -> Error {
        Error::new(ErrorKind::Corrupt, what)
            .with_shard(self.shard)
            .with_path(path.display().to_string())
            .with_offset(self.offset)
    }

    /// The next record; `None` past the last frame of the last segment.
    ///
    /// # Errors
    ///
    /// `PositionTrimmed` when retention deleted the segment meanwhile, `Io` when it
    /// cannot be read, `Corrupt` for a bad frame.
    pub(crate) fn read_next(&mut self) -> Result<Option<DiskRecord>> {
        loop {
            let Some(seg) = self.segs.get(self.i) else {
                return Ok(None);
            };
            if self.offset >= seg.len {
                self.i += 1;
                self.offset = 0;
                self.reader = None;
                continue;
            }
            let path = seg.path.clone();
            let len = seg.len;
            if self.reader.is_none() {
                let mut file = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(Error::new(
                            ErrorKind::PositionTrimmed,
                            "retention deleted the segment while it was read",
                        )
                        .with_shard(self.shard)
                        .with_version(self.expect)
                        .with_path(path.display().to_string()));
                    }
                    Err(e) => return Err(io_error("opening", &path, e).with_shard(self.shard)),
                };
                file.seek(SeekFrom::Start(self.offset))
                    .map_err(|e| io_error("seeking in", &path, e).with_shard(self.shard))?;
                self.reader = Some(BufReader::with_capacity(64 << 10, file));
            }
            let Some(reader) = self.reader.as_mut() else {
                return Err(Error::new(ErrorKind::Internal, "no open segment reader"));
            };
            let mut header = [0u8; HEADER];
            reader
                .read_exact(&mut header)
                .map_err(|e| io_error("reading", &path, e).with_shard(self.shard))?;
            let body_len = check_header(&header).map_err(|w| self.corrupt(&path, w))?;
            if self.offset + (HEADER + body_len) as u64 > len {
                return Err(self.corrupt(&path, "frame runs past the end of the segment".into()));
            }
            let mut body = vec![0u8; body_len];
            let Some(reader) = self.reader.as_mut() else {
                return Err(Error::new(ErrorKind::Internal, "no open segment reader"));
            };
            reader
                .read_exact(&mut body)
                .map_err(|e| io_error("reading", &path, e).with_shard(self.shard))?;
            let (sequence, timestamp_ms, key, data_at) = {
                let f = decode_body(&header, &body).map_err(|w| self.corrupt(&path, w))?;
                (
                    f.sequence,
                    f.timestamp_ms,
                    PartitionKey::from(f.key),
                    f.data_at,
                )
            };
            if sequence != self.expect {
                return Err(self
                    .corrupt(
                        &path,
                        format!("frame holds sequence {sequence}, expected {}", self.expect),
                    )
                    .with_version(self.expect));
            }
            let offset = self.offset;
            self.offset += (HEADER + body_len) as u64;
            self.expect += 1;
            return Ok(Some(DiskRecord {
                sequence,
                timestamp_ms,
                key,
                data: Bytes::from(body).slice(data_at..),
                offset,
            }));
        }
    }
}
