//! A shard's segment files: appending frames, rolling segments, recovery on open and
//! retention.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use std::collections::VecDeque;

use bytes::Bytes;
use lakehouse_core::{Error, ErrorKind, PartitionKey, Record, Result, SequenceNumber, ShardId};

use super::cursor::{INDEX_EVERY_BYTES, Mark, SegRef};
use super::frame::{HEADER, scan, timestamp_at, u32_at};
use super::{fsio, io_error, sync_dir};

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
    /// Finished segments written without fsync (`Durability::None`), fsynced by the
    /// next [`sync`](Self::sync).
    unsynced_closed: Vec<PathBuf>,
    /// A segment (or the shard's directory) was created without fsyncing the
    /// directories.
    dirs_unsynced: bool,
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
            unsynced_closed: Vec::new(),
            dirs_unsynced: false,
            written_end: 0,
            end_pos: 0,
            next_mark: 0,
        }
    }

    /// Written (or a file created) since the last fsync.
    pub(crate) fn unsynced(&self) -> bool {
        self.unsynced || self.dirs_unsynced || !self.unsynced_closed.is_empty()
    }

    /// Sequence number after the last frame written.
    pub(crate) fn written_end(&self) -> SequenceNumber {
        self.written_end
    }

    /// Reads and checks every segment of shard `id`, and keeps the newest records
    /// whose `cost` sums to at most `window`.
    ///
    /// The shard's log is its longest run of valid frames in sequence from the oldest
    /// segment on: a torn tail (bytes after a segment's last valid frame that hold no
    /// valid frame) is truncated, and where a torn segment or a missing one cuts the
    /// run short, the later segments (written after it without fsync, under
    /// `Durability::None`, and never made durable) are renamed to `*.seg.orphan` and
    /// no longer read. A bad frame followed by a valid one is `Corrupt`.
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
        let mut ended = false;
        for (seg_first, path) in names {
            if ended || seg_first != expect {
                // After a torn segment, or a segment that vanished: never durable.
                ended = true;
                let mut aside = path.clone().into_os_string();
                aside.push(".orphan");
                let aside = PathBuf::from(aside);
                fsio::rename(&path, &aside)
                    .map_err(|e| io_error("setting aside", &path, e).with_shard(id))?;
                continue;
            }
            let bytes = fs::read(&path).map_err(|e| io_error("reading", &path, e))?;
            let start_pos = files.end_pos;
            files.next_mark = start_pos;
            let next_mark = &mut files.next_mark;
            let scanned = scan(&bytes, id, &path, seg_first, |at, f| {
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
                ended = true;
                fsio::open_append(&path, false)
                    .and_then(|f| {
                        fsio::set_len(&f, &path, scanned.valid_len)?;
                        fsio::sync_file(&f, &path)
                    })
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
        if ended {
            sync_dir(&files.dir)?;
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
                let file = fsio::open_append(&seg.path, false)
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
            fsio::write_all(writer, &seg.path, chunk)
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
            && self.unsynced
        {
            let path = self
                .segments
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            if sync {
                fsio::sync_file(&old, &path)
                    .map_err(|e| io_error("fsync", &path, e).with_shard(self.id))?;
            } else {
                self.unsynced_closed.push(path);
            }
            self.unsynced = false;
        }
        fsio::create_dir_all(&self.dir).map_err(|e| io_error("creating", &self.dir, e))?;
        let path = self.dir.join(segment_name(first));
        let file = fsio::open_append(&path, true).map_err(|e| io_error("creating", &path, e))?;
        if sync {
            self.sync_dirs()?;
        } else {
            self.dirs_unsynced = true;
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

    /// Fsyncs the shard's directory and the stream's, making new segments durable.
    fn sync_dirs(&mut self) -> Result<()> {
        sync_dir(&self.dir)?;
        if let Some(root) = self.dir.parent() {
            sync_dir(root)?;
        }
        self.dirs_unsynced = false;
        Ok(())
    }

    /// Fsyncs whatever was written or created since the last fsync: finished
    /// segments written without one, the newest segment and the directories.
    pub(crate) fn sync(&mut self) -> Result<()> {
        while let Some(path) = self.unsynced_closed.first() {
            match fsio::sync_path(path) {
                Ok(()) => {}
                // Deleted by retention meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("fsync", path, e).with_shard(self.id)),
            }
            self.unsynced_closed.remove(0);
        }
        if self.unsynced {
            if let (Some(w), Some(seg)) = (&self.writer, self.segments.last()) {
                fsio::sync_file(w, &seg.path)
                    .map_err(|e| io_error("fsync", &seg.path, e).with_shard(self.id))?;
            }
            self.unsynced = false;
        }
        if self.dirs_unsynced {
            self.sync_dirs()?;
        }
        Ok(())
    }

    /// Deletes whole segments all of whose records are older than `oldest` (never the
    /// newest segment, whose name keeps the next sequence number).
    pub(crate) fn retain(&mut self, oldest: SequenceNumber) -> Result<()> {
        while self.segments.len() > 1 && self.segments[1].first <= oldest {
            let seg = self.segments.remove(0);
            match fsio::remove_file(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("deleting", &seg.path, e).with_shard(self.id)),
            }
        }
        Ok(())
    }
}
