//! A shard's segment files: appending frames, rolling segments, recovery on open and
//! retention.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use std::collections::VecDeque;

use bytes::Bytes;
use lakehouse_core::{Error, ErrorKind, PartitionKey, Record, Result, SequenceNumber, ShardId};

use super::cursor::{INDEX_EVERY_BYTES, Mark, SegRef};
use super::frame::{HEADER, scan, timestamp_at, u32_at};
use super::{io_error, sync_dir};

/// One segment file.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Sequence number of its first record.
    pub(crate) first: SequenceNumber,
    /// Shard byte position of its first frame.
    pub(crate) start_pos: u64,
    pub(crate) path: PathBuf,
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
    /// Shard byte position after the last frame written.
    end_pos: u64,
    /// The next frame written at or after this position gets an index mark.
    next_mark: u64,
}

pub(crate) fn segment_name(first: SequenceNumber) -> String {
    format!("{first:020}.seg")
}

pub(crate) fn shard_dir(root: &Path, id: ShardId) -> PathBuf {
    root.join(format!("shard-{:04}", id.0))
}

/// A shard as found on disk.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) files: ShardFiles,
    /// The newest records, as many as the memory window holds (copied out of the
    /// segments, so they hold no file buffer).
    pub(crate) window: VecDeque<Record>,
    /// The sparse index of every retained record.
    pub(crate) marks: Vec<Mark>,
    /// Sequence number of the oldest record (or of the next one when there is none).
    pub(crate) first: SequenceNumber,
    /// Sequence number after the newest record.
    pub(crate) next: SequenceNumber,
    /// Bytes of frames in the segments.
    pub(crate) bytes: u64,
    /// Arrival time of the newest record (`i64::MIN` when there is none).
    pub(crate) newest_ms: i64,
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
            end_pos: 0,
            next_mark: 0,
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

    /// Reads and checks every segment of shard `id`, truncating a torn tail of the
    /// newest, and keeps the newest records whose `cost` sums to at most `window`.
    pub(crate) fn recover(
        root: &Path,
        id: ShardId,
        window: usize,
        cost: impl Fn(&PartitionKey, usize) -> usize,
    ) -> Result<Recovered> {
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
        let mut kept: VecDeque<Record> = VecDeque::new();
        let mut kept_cost = 0usize;
        let mut marks = Vec::new();
        let mut newest_ms = i64::MIN;
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
            let bytes = fs::read(&path).map_err(|e| io_error("reading", &path, e))?;
            let newest = i + 1 == count;
            let start_pos = files.end_pos;
            files.next_mark = start_pos;
            let next_mark = &mut files.next_mark;
            let scanned = scan(&bytes, id, &path, seg_first, newest, |at, f| {
                let pos = start_pos + at;
                if pos >= *next_mark {
                    marks.push(Mark {
                        sequence: f.sequence,
                        pos,
                        timestamp_ms: f.timestamp_ms,
                    });
                    *next_mark = pos + INDEX_EVERY_BYTES;
                }
                newest_ms = f.timestamp_ms;
                let key = PartitionKey::from(f.key);
                kept_cost += cost(&key, f.data.len());
                kept.push_back(Record {
                    shard: id,
                    sequence: f.sequence,
                    partition_key: key,
                    data: Bytes::copy_from_slice(f.data),
                    timestamp_ms: f.timestamp_ms,
                });
                while kept_cost > window {
                    let Some(old) = kept.pop_front() else { break };
                    kept_cost -= cost(&old.partition_key, old.data.len());
                }
            })?;
            drop(bytes);
            if scanned.torn {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_error("opening", &path, e))?;
                f.set_len(scanned.valid_len)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| io_error("truncating a torn tail of", &path, e))?;
            }
            expect += scanned.count;
            files.end_pos += scanned.valid_len;
            files.segments.push(Segment {
                first: seg_first,
                start_pos,
                path,
                len: scanned.valid_len,
            });
        }
        files.written_end = expect;
        Ok(Recovered {
            window: kept,
            marks,
            first,
            next: expect,
            bytes: files.end_pos,
            newest_ms,
            files,
        })
    }

    /// The segments from the one holding shard byte position `pos` on, as a reader
    /// needs them (empty when retention deleted that segment).
    pub(crate) fn refs_from(&self, pos: u64) -> Vec<SegRef> {
        let i = self.segments.partition_point(|s| s.start_pos <= pos);
        let Some(start) = i.checked_sub(1) else {
            return Vec::new();
        };
        self.segments[start..]
            .iter()
            .map(|s| SegRef {
                path: s.path.clone(),
                start_pos: s.start_pos,
                len: s.len,
            })
            .collect()
    }

    /// Appends the frames in `buf` (whose first record has sequence `first`), starting a
    /// new segment whenever the newest holds `segment_bytes` or more (a segment takes at
    /// least one frame), and returns the index marks of the frames written. With
    /// `sync`, new files are made durable in their directory and a finished segment is
    /// fsynced before the next one starts.
    pub(crate) fn append(
        &mut self,
        buf: &[u8],
        first: SequenceNumber,
        segment_bytes: u64,
        sync: bool,
    ) -> Result<Vec<Mark>> {
        let mut at = 0usize;
        let mut sequence = first;
        let mut marks = Vec::new();
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
            let mut frames = 0u64;
            while at + HEADER <= buf.len() {
                let frame = HEADER + u32_at(buf, at) as usize;
                if at > start && seg.len + (at - start + frame) as u64 > segment_bytes {
                    break;
                }
                if at + frame > buf.len() {
                    return Err(Error::new(
                        ErrorKind::Internal,
                        "a pending frame overruns its buffer",
                    ));
                }
                let pos = self.end_pos + (at - start) as u64;
                if pos >= self.next_mark {
                    marks.push(Mark {
                        sequence: sequence + frames,
                        pos,
                        timestamp_ms: timestamp_at(buf, at),
                    });
                    self.next_mark = pos + INDEX_EVERY_BYTES;
                }
                frames += 1;
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
            self.end_pos += chunk.len() as u64;
            sequence += frames;
            self.written_end = sequence;
        }
        Ok(marks)
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
            start_pos: self.end_pos,
            path,
            len: 0,
        });
        self.next_mark = self.end_pos;
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
