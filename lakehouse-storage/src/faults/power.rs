//! A simulated volatile page cache for local tables (Unix), and the power loss that
//! drops what it held.
//!
//! A local store built on a [`PageCache`] (`Location::local_simulated`) does every
//! file system step of its writes through it. The cache performs the step on the real
//! directory and records what a power loss could still undo:
//!
//! * the files written since their last `fsync` (by inode, so that hard links share
//!   the state);
//! * per directory, the entries created, removed and renamed since its last `fsync`
//!   (removed and replaced files are kept aside by a hard link, so that a power loss
//!   can bring them back).
//!
//! After a set number of steps the power fails: that step and every later one fail
//! before touching the disk, as for a process that lost its machine.
//! [`PageCache::power_loss`] then applies the loss: each directory keeps a random prefix of its
//! unsynced entry changes (a journaling file system commits them in order) and loses
//! the rest; each file whose bytes were not synced is left whole, empty, cut at a
//! random byte or with a garbled tail.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use object_store::PutPayload;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, RngCore};

/// An unsynced change of a directory entry.
#[derive(Debug)]
enum DirOp {
    /// A file or directory created (or linked) at the path.
    Created(PathBuf),
    /// The file at `path` removed; `kept` links to it.
    Removed { path: PathBuf, kept: PathBuf },
    /// `from` renamed to `to`; `replaced` links to the file `to` named before.
    Renamed {
        from: PathBuf,
        to: PathBuf,
        replaced: Option<PathBuf>,
    },
}

#[derive(Debug)]
struct State {
    /// Steps done so far.
    steps: u64,
    /// The step at which the power fails.
    cut_at: u64,
    /// The power failed.
    off: bool,
    /// `(device, inode)` of the files written since their last sync.
    volatile: HashSet<(u64, u64)>,
    /// Per directory, the entry changes since its last sync, oldest first.
    pending: HashMap<PathBuf, Vec<DirOp>>,
    /// Files kept aside so far.
    kept: u64,
}

/// What [`PageCache::power_loss`] did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Loss {
    /// Directory entry changes undone.
    pub(crate) entries_undone: u64,
    /// Files left empty, cut or garbled.
    pub(crate) files_damaged: u64,
}

/// A simulated volatile page cache over a directory (see the module docs).
#[derive(Debug)]
pub(crate) struct PageCache {
    state: Mutex<State>,
    /// Whether `fsync` is honoured (`false` models a store that does not sync).
    fsync: bool,
    /// Where removed and replaced files are kept (outside the simulated directory).
    aside: PathBuf,
}

fn power_off() -> io::Error {
    io::Error::other("the power failed")
}

fn id(meta: &std::fs::Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

fn parent(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl PageCache {
    /// A cache whose power fails at step `cut_at`; files kept aside go to `aside` (an
    /// existing directory on the same file system, outside the simulated one).
    pub(crate) fn new(cut_at: u64, fsync: bool, aside: PathBuf) -> PageCache {
        PageCache {
            state: Mutex::new(State {
                steps: 0,
                cut_at,
                off: false,
                volatile: HashSet::new(),
                pending: HashMap::new(),
                kept: 0,
            }),
            fsync,
            aside,
        }
    }

    /// The power fails `n` steps from now.
    pub(crate) fn cut_after(&self, n: u64) {
        let mut s = self.state.lock();
        s.cut_at = s.steps.saturating_add(n.max(1));
    }

    /// Steps done before the power failed (or so far).
    pub(crate) fn steps(&self) -> u64 {
        self.state.lock().steps
    }

    /// Whether the power failed during the workload.
    pub(crate) fn is_off(&self) -> bool {
        self.state.lock().off
    }

    /// Runs one step, unless the power is off or fails now.
    fn step<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.state.lock();
        if s.off {
            return Err(power_off());
        }
        s.steps += 1;
        if s.steps >= s.cut_at {
            s.off = true;
            return Err(power_off());
        }
        f(&mut s)
    }

    /// Links `path` into the aside directory; the link's path.
    fn keep(&self, s: &mut State, path: &Path) -> io::Result<PathBuf> {
        s.kept += 1;
        let kept = self.aside.join(s.kept.to_string());
        std::fs::hard_link(path, &kept)?;
        Ok(kept)
    }

    pub(crate) fn create_new(&self, path: &Path) -> io::Result<File> {
        self.step(|s| {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(path)?;
            s.volatile.insert(id(&f.metadata()?));
            s.pending
                .entry(parent(path))
                .or_default()
                .push(DirOp::Created(path.to_path_buf()));
            Ok(f)
        })
    }

    pub(crate) fn write(&self, file: &mut File, payload: &PutPayload) -> io::Result<()> {
        self.step(|s| {
            crate::durable::write_payload(file, payload)?;
            s.volatile.insert(id(&file.metadata()?));
            Ok(())
        })
    }

    pub(crate) fn sync_file(&self, file: &File) -> io::Result<()> {
        self.step(|s| {
            if self.fsync {
                file.sync_all()?;
                s.volatile.remove(&id(&file.metadata()?));
            }
            Ok(())
        })
    }

    pub(crate) fn link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step(|s| {
            std::fs::hard_link(from, to)?;
            s.pending
                .entry(parent(to))
                .or_default()
                .push(DirOp::Created(to.to_path_buf()));
            Ok(())
        })
    }

    pub(crate) fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.step(|s| {
            let replaced = match std::fs::symlink_metadata(to) {
                Ok(m) if m.is_file() => Some(self.keep(s, to)?),
                _ => None,
            };
            std::fs::rename(from, to)?;
            s.pending
                .entry(parent(to))
                .or_default()
                .push(DirOp::Renamed {
                    from: from.to_path_buf(),
                    to: to.to_path_buf(),
                    replaced,
                });
            Ok(())
        })
    }

    pub(crate) fn remove(&self, path: &Path) -> io::Result<()> {
        self.step(|s| {
            let kept = self.keep(s, path)?;
            std::fs::remove_file(path)?;
            s.pending
                .entry(parent(path))
                .or_default()
                .push(DirOp::Removed {
                    path: path.to_path_buf(),
                    kept,
                });
            Ok(())
        })
    }

    pub(crate) fn create_dir(&self, path: &Path) -> io::Result<()> {
        self.step(|s| {
            std::fs::create_dir(path)?;
            s.pending
                .entry(parent(path))
                .or_default()
                .push(DirOp::Created(path.to_path_buf()));
            Ok(())
        })
    }

    pub(crate) fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.step(|s| {
            if self.fsync {
                crate::durable::sync_dir(dir)?;
                s.pending.remove(dir);
            }
            Ok(())
        })
    }

    pub(crate) fn adopt(&self, path: &Path) -> io::Result<()> {
        self.step(|s| {
            s.volatile.insert(id(&std::fs::metadata(path)?));
            s.pending
                .entry(parent(path))
                .or_default()
                .push(DirOp::Created(path.to_path_buf()));
            Ok(())
        })
    }

    /// Cuts the power (if it has not failed yet) and applies the loss to the files
    /// under `root`, drawing from `rng`.
    pub(crate) fn power_loss(&self, root: &Path, rng: &mut StdRng) -> io::Result<Loss> {
        let mut s = self.state.lock();
        s.off = true;
        let mut loss = Loss::default();
        // Deepest directories first: undoing a directory's creation takes its subtree.
        let mut dirs: Vec<PathBuf> = s.pending.keys().cloned().collect();
        dirs.sort_by_key(|d| std::cmp::Reverse((d.components().count(), d.clone())));
        for dir in dirs {
            let ops = s.pending.remove(&dir).unwrap_or_default();
            let survive = rng.random_range(0..=ops.len());
            for op in ops.into_iter().skip(survive).rev() {
                loss.entries_undone += 1;
                undo(op)?;
            }
        }
        let mut seen = HashSet::new();
        let mut files = Vec::new();
        collect_files(root, &mut files)?;
        files.sort();
        for f in files {
            let meta = std::fs::symlink_metadata(&f)?;
            let key = id(&meta);
            if !s.volatile.contains(&key) || !seen.insert(key) {
                continue;
            }
            if damage(&f, meta.len(), rng)? {
                loss.files_damaged += 1;
            }
        }
        s.volatile.clear();
        Ok(loss)
    }
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

fn undo(op: DirOp) -> io::Result<()> {
    match op {
        DirOp::Created(p) => match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => ignore_missing(std::fs::remove_dir_all(&p)),
            Ok(_) => ignore_missing(std::fs::remove_file(&p)),
            Err(_) => Ok(()),
        },
        DirOp::Removed { path, kept } => ignore_missing(std::fs::hard_link(kept, path)),
        DirOp::Renamed { from, to, replaced } => {
            ignore_missing(std::fs::rename(&to, from))?;
            match replaced {
                Some(kept) => ignore_missing(std::fs::hard_link(kept, to)),
                None => Ok(()),
            }
        }
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            collect_files(&e.path(), out)?;
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

/// Leaves the unsynced file at `path` whole, empty, cut or garbled; whether it
/// changed.
fn damage(path: &Path, len: u64, rng: &mut StdRng) -> io::Result<bool> {
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    match rng.random_range(0..4) {
        // The page cache reached the disk in time.
        0 => Ok(false),
        // Delayed allocation: the size was committed, not the blocks, or nothing.
        1 => {
            f.set_len(0)?;
            Ok(len > 0)
        }
        2 => {
            let at = if len == 0 {
                0
            } else {
                rng.random_range(0..len)
            };
            f.set_len(at)?;
            Ok(at < len)
        }
        _ => {
            if len == 0 {
                return Ok(false);
            }
            let at = rng.random_range(0..len);
            let mut garbage = vec![0u8; usize::try_from(len - at).unwrap_or(0)];
            if rng.random_bool(0.5) {
                rng.fill_bytes(&mut garbage);
            }
            use std::io::{Seek, SeekFrom, Write};
            let mut f = f;
            f.seek(SeekFrom::Start(at))?;
            f.write_all(&garbage)?;
            Ok(true)
        }
    }
}
