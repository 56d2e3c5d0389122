//! Every file operation that changes a durable directory, in one place.
//!
//! With feature `fault-injection` each operation is first shown to the power-loss
//! simulation ([`crate::faults`]), which records what reached stable storage and can
//! refuse the operation once its simulated power is off. Without the feature these are
//! the plain `std::fs` calls.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

#[cfg(feature = "fault-injection")]
use crate::faults::journal::{self, Op};

/// Asks the simulation (if one watches `path`) whether `op` may run.
#[cfg(feature = "fault-injection")]
fn before(op: Op<'_>) -> io::Result<()> {
    journal::before(op)
}

/// Tells the simulation (if one watches the path) that `op` ran.
#[cfg(feature = "fault-injection")]
fn after(op: Op<'_>) {
    journal::after(op);
}

/// Creates `dir` and its missing parents.
pub(crate) fn create_dir_all(dir: &Path) -> io::Result<()> {
    #[cfg(feature = "fault-injection")]
    {
        if dir.is_dir() {
            return Ok(());
        }
        before(Op::CreateDir(dir))?;
        fs::create_dir_all(dir)?;
        after(Op::CreateDir(dir));
        Ok(())
    }
    #[cfg(not(feature = "fault-injection"))]
    fs::create_dir_all(dir)
}

/// Opens `path` for appending, creating it when `create`.
pub(crate) fn open_append(path: &Path, create: bool) -> io::Result<File> {
    #[cfg(feature = "fault-injection")]
    before(Op::Open(path))?;
    let file = OpenOptions::new().create(create).append(true).open(path)?;
    #[cfg(feature = "fault-injection")]
    after(Op::Open(path));
    Ok(file)
}

/// Creates `path` empty (truncating a file that exists) for writing.
pub(crate) fn create(path: &Path) -> io::Result<File> {
    #[cfg(feature = "fault-injection")]
    before(Op::Create(path))?;
    let file = File::create(path)?;
    #[cfg(feature = "fault-injection")]
    after(Op::Create(path));
    Ok(file)
}

/// Writes all of `buf` to `file` (at `path`).
pub(crate) fn write_all(file: &mut File, path: &Path, buf: &[u8]) -> io::Result<()> {
    #[cfg(feature = "fault-injection")]
    if let Err(e) = before(Op::Write(path)) {
        // The power went off during this write: some prefix may have reached the file.
        let part = journal::torn_write_len(path, buf.len());
        let _ = file.write_all(&buf[..part]);
        return Err(e);
    }
    file.write_all(buf)
}

/// Fsyncs the data of `file` (at `path`), and its length.
pub(crate) fn sync_file(file: &File, path: &Path) -> io::Result<()> {
    #[cfg(feature = "fault-injection")]
    before(Op::Sync(path))?;
    file.sync_all()?;
    #[cfg(feature = "fault-injection")]
    after(Op::Sync(path));
    Ok(())
}

/// Fsyncs the file at `path` (opened for the purpose).
pub(crate) fn sync_path(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    sync_file(&file, path)
}

/// Cuts `file` (at `path`) to `len` bytes.
pub(crate) fn set_len(file: &File, path: &Path, len: u64) -> io::Result<()> {
    #[cfg(feature = "fault-injection")]
    before(Op::SetLen(path, len))?;
    file.set_len(len)?;
    #[cfg(feature = "fault-injection")]
    after(Op::SetLen(path, len));
    Ok(())
}

/// Fsyncs directory `dir`, making its entries (created, renamed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(feature = "fault-injection")]
    before(Op::SyncDir(dir))?;
    File::open(dir)?.sync_all()?;
    #[cfg(feature = "fault-injection")]
    after(Op::SyncDir(dir));
    Ok(())
}

/// Renames `from` to `to`, replacing `to`.
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(feature = "fault-injection")]
    before(Op::Rename(from, to))?;
    fs::rename(from, to)?;
    #[cfg(feature = "fault-injection")]
    after(Op::Rename(from, to));
    Ok(())
}

/// Deletes the file at `path`.
pub(crate) fn remove_file(path: &Path) -> io::Result<()> {
    #[cfg(feature = "fault-injection")]
    before(Op::Remove(path))?;
    fs::remove_file(path)?;
    #[cfg(feature = "fault-injection")]
    after(Op::Remove(path));
    Ok(())
}
