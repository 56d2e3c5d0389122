//! What reached stable storage: a journal of the file operations on a watched
//! directory, the simulated power switch, and the damage a power loss does.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::Rng;

/// A file operation on a durable directory (see `durable::fsio`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op<'a> {
    CreateDir(&'a Path),
    Open(&'a Path),
    Create(&'a Path),
    Write(&'a Path),
    Sync(&'a Path),
    SetLen(&'a Path, u64),
    SyncDir(&'a Path),
    Rename(&'a Path, &'a Path),
    Remove(&'a Path),
}

impl Op<'_> {
    fn path(&self) -> &Path {
        match *self {
            Op::CreateDir(p)
            | Op::Open(p)
            | Op::Create(p)
            | Op::Write(p)
            | Op::Sync(p)
            | Op::SetLen(p, _)
            | Op::SyncDir(p)
            | Op::Rename(p, _)
            | Op::Remove(p) => p,
        }
    }
}

/// A file as stable storage holds it.
#[derive(Debug, Clone)]
struct FileState {
    /// Bytes before this offset were fsynced (and not cut since).
    synced_len: u64,
    /// Its directory entry was fsynced since it was created or renamed here.
    entry_durable: bool,
    /// For an entry not yet durable: what the path held before (`None`: nothing),
    /// which a power loss may bring back.
    before: Option<Vec<u8>>,
}

/// The journal of one watched directory.
#[derive(Debug)]
pub(crate) struct Journal {
    root: PathBuf,
    /// Operations seen; the one numbered `cut_at` finds the power off.
    ops: u64,
    cut_at: u64,
    off: bool,
    files: HashMap<PathBuf, FileState>,
    /// Directories created here whose entry was not yet made durable.
    new_dirs: HashMap<PathBuf, bool>,
    rng: Rng,
}

static WATCHED: Mutex<Vec<Arc<Mutex<Journal>>>> = Mutex::new(Vec::new());

fn power_off_error() -> io::Error {
    io::Error::other("simulated power loss: the device is off")
}

fn find(path: &Path) -> Option<Arc<Mutex<Journal>>> {
    WATCHED
        .lock()
        .iter()
        .find(|j| path.starts_with(&j.lock().root))
        .cloned()
}

/// Refuses `op` when its directory's power is off (or goes off now).
pub(crate) fn before(op: Op<'_>) -> io::Result<()> {
    let Some(j) = find(op.path()) else {
        return Ok(());
    };
    let mut j = j.lock();
    j.ops += 1;
    if j.ops >= j.cut_at {
        j.off = true;
    }
    if j.off {
        return Err(power_off_error());
    }
    if let Op::Open(p) | Op::Create(p) = op
        && !j.files.contains_key(p)
    {
        // A file that was there before the journal saw it is durable.
        let exists = p.exists();
        j.files.insert(
            p.to_owned(),
            FileState {
                synced_len: len_of(p),
                entry_durable: exists,
                before: None,
            },
        );
    }
    if let Op::Rename(_, to) = op {
        // What `to` durably holds now, for a power loss to bring back.
        let before = match j.files.get(to) {
            Some(s) if !s.entry_durable => s.before.clone(),
            Some(s) => fs::read(to).ok().map(|mut b| {
                b.truncate(usize::try_from(s.synced_len).unwrap_or(usize::MAX));
                b
            }),
            None => fs::read(to).ok(),
        };
        j.files.entry(to.to_owned()).or_insert(FileState {
            synced_len: 0,
            entry_durable: false,
            before: None,
        });
        if let Some(s) = j.files.get_mut(to) {
            s.before = before;
        }
    }
    Ok(())
}

fn len_of(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |m| m.len())
}

/// Records that `op` ran.
pub(crate) fn after(op: Op<'_>) {
    let Some(j) = find(op.path()) else {
        return;
    };
    let mut j = j.lock();
    let j = &mut *j;
    match op {
        Op::CreateDir(dir) => {
            let mut d = dir;
            while d.starts_with(&j.root) && d != j.root {
                j.new_dirs.entry(d.to_owned()).or_insert(false);
                match d.parent() {
                    Some(p) => d = p,
                    None => break,
                }
            }
        }
        Op::Create(p) => {
            if let Some(s) = j.files.get_mut(p) {
                s.synced_len = 0;
            }
        }
        Op::Open(_) | Op::Write(_) => {}
        Op::Sync(p) => {
            let len = len_of(p);
            if let Some(s) = j.files.get_mut(p) {
                s.synced_len = len;
            }
        }
        Op::SetLen(p, len) => {
            if let Some(s) = j.files.get_mut(p) {
                s.synced_len = s.synced_len.min(len);
            }
        }
        Op::SyncDir(dir) => {
            for (path, s) in &mut j.files {
                if path.parent() == Some(dir) {
                    s.entry_durable = true;
                    s.before = None;
                }
            }
            for (path, durable) in &mut j.new_dirs {
                if path.parent() == Some(dir) {
                    *durable = true;
                }
            }
        }
        Op::Rename(from, to) => {
            let moved = j.files.remove(from);
            let before = j.files.get(to).and_then(|s| s.before.clone());
            j.files.insert(
                to.to_owned(),
                FileState {
                    synced_len: moved.map_or(0, |m| m.synced_len),
                    entry_durable: false,
                    before,
                },
            );
        }
        Op::Remove(p) => {
            j.files.remove(p);
        }
    }
}

/// How many bytes of a write of `len` bytes to `path` reach the file when the power
/// goes off during it.
pub(crate) fn torn_write_len(path: &Path, len: usize) -> usize {
    match find(path) {
        Some(j) => {
            let mut j = j.lock();
            j.rng.below(len as u64 + 1) as usize
        }
        None => 0,
    }
}

/// Starts watching `root`: its operation number `cut_at` (counted from 1) finds the
/// power off.
pub(crate) fn watch(root: &Path, cut_at: u64, seed: u64) -> Arc<Mutex<Journal>> {
    let j = Arc::new(Mutex::new(Journal {
        root: root.to_owned(),
        ops: 0,
        cut_at: cut_at.max(1),
        off: false,
        files: HashMap::new(),
        new_dirs: HashMap::new(),
        rng: Rng::new(seed),
    }));
    WATCHED.lock().push(j.clone());
    j
}

/// Stops watching the journal's directory.
pub(crate) fn unwatch(journal: &Arc<Mutex<Journal>>) {
    WATCHED.lock().retain(|j| !Arc::ptr_eq(j, journal));
}

impl Journal {
    /// Whether the power is off.
    pub(crate) fn is_off(&self) -> bool {
        self.off
    }

    /// Operations seen so far.
    pub(crate) fn ops(&self) -> u64 {
        self.ops
    }

    /// Turns the power off: every later operation fails.
    pub(crate) fn power_off(&mut self) {
        self.off = true;
    }

    /// Does to the directory what a power loss may do, once every handle on it is
    /// closed: directory entries never fsynced vanish or revert, and the bytes of a
    /// file after its last fsync are kept, dropped, cut at a random byte, zeroed or
    /// replaced by garbage. Returns a description of each change.
    pub(crate) fn apply_power_loss(&mut self) -> io::Result<Vec<String>> {
        let mut done = Vec::new();
        let mut dirs: Vec<PathBuf> = self
            .new_dirs
            .iter()
            .filter(|(_, durable)| !**durable)
            .map(|(p, _)| p.clone())
            .collect();
        dirs.sort();
        let mut gone: Vec<PathBuf> = Vec::new();
        for dir in dirs {
            if gone.iter().any(|g| dir.starts_with(g)) {
                continue;
            }
            if self.rng.below(2) == 0 {
                let _ = fs::remove_dir_all(&dir);
                done.push(format!("directory {} vanished", dir.display()));
                gone.push(dir);
            }
        }
        let mut files: Vec<(PathBuf, FileState)> = self.files.drain().collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, state) in files {
            if gone.iter().any(|g| path.starts_with(g)) {
                continue;
            }
            if !state.entry_durable && self.rng.below(2) == 0 {
                match &state.before {
                    Some(bytes) => {
                        fs::write(&path, bytes)?;
                        done.push(format!("{} reverted", path.display()));
                    }
                    None => {
                        let _ = fs::remove_file(&path);
                        done.push(format!("{} vanished", path.display()));
                    }
                }
                continue;
            }
            let Ok(bytes) = fs::read(&path) else {
                continue;
            };
            let synced = usize::try_from(state.synced_len)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            if synced == bytes.len() {
                continue;
            }
            let unsynced = (bytes.len() - synced) as u64;
            let mut out = bytes[..synced].to_vec();
            let what = match self.rng.below(5) {
                0 => {
                    out = bytes;
                    "kept"
                }
                1 => "dropped",
                2 => {
                    let keep = self.rng.below(unsynced) as usize;
                    out.extend_from_slice(&bytes[synced..synced + keep]);
                    "cut at a random byte"
                }
                3 => {
                    let keep = self.rng.below(unsynced) as usize;
                    out.extend_from_slice(&bytes[synced..synced + keep]);
                    out.resize(bytes.len(), 0);
                    "zero-filled"
                }
                _ => {
                    let keep = self.rng.below(unsynced) as usize;
                    out.extend_from_slice(&bytes[synced..synced + keep]);
                    while out.len() < bytes.len() {
                        out.push(self.rng.next() as u8);
                    }
                    "replaced by garbage"
                }
            };
            fs::write(&path, &out)?;
            done.push(format!(
                "{}: {unsynced} unsynced bytes {what}",
                path.display()
            ));
        }
        Ok(done)
    }
}
