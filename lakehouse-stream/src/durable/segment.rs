//! A shard's segment files: appending frames, rolling segments, recovery on open and
//! retention.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use lakehouse_core::{Error, ErrorKind, Record, Result, SequenceNumber, ShardId};

use super::frame::{HEADER, scan, u32_at};
use super::{io_error, sync_dir};

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
