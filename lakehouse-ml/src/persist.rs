//! Saving and loading models with a format version.

use std::ffi::OsString;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use lakehouse_core::{Error, ErrorKind, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format version this release writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 4] = b"LHML";

/// A model that can be saved and loaded.
///
/// The file starts with the magic bytes `LHML`, the format version (u32, little
/// endian), the model kind (u16 length + UTF-8), then the model as JSON. Loading a file
/// of another format version gives [`ErrorKind::FormatVersion`]; a file of another
/// kind, [`ErrorKind::InvalidInput`]; a damaged file, [`ErrorKind::Corrupt`].
///
/// An HNSW index is not saved: call [`Als::build_index`](crate::Als::build_index)
/// again after loading.
pub trait Persist: Serialize + DeserializeOwned {
    /// The kind written into the header (`"als"`, `"item-item"`, ...).
    const KIND: &'static str;

    /// Checks that a deserialised model is internally consistent (parameters, vector
    /// lengths, indices). [`load`](Self::load) calls it, so a damaged file that still
    /// parses fails with [`ErrorKind::Corrupt`] instead of misbehaving later.
    fn validate(&self) -> Result<()>;

    /// Writes the model.
    fn save(&self, writer: impl Write) -> Result<()> {
        let mut w = BufWriter::new(writer);
        w.write_all(MAGIC)?;
        w.write_all(&FORMAT_VERSION.to_le_bytes())?;
        let kind = Self::KIND.as_bytes();
        let len = u16::try_from(kind.len())
            .map_err(|_| Error::new(ErrorKind::Internal, "model kind too long"))?;
        w.write_all(&len.to_le_bytes())?;
        w.write_all(kind)?;
        serde_json::to_writer(&mut w, self).map_err(|e| {
            Error::new(ErrorKind::InvalidInput, "model cannot be serialised").with_source(e)
        })?;
        w.flush()?;
        Ok(())
    }

    /// Reads a model written by [`save`](Self::save).
    fn load(reader: impl Read) -> Result<Self> {
        let mut r = BufReader::new(reader);
        let corrupt = |what: &str| Error::new(ErrorKind::Corrupt, what.to_owned());
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic)
            .map_err(|e| corrupt("truncated header").with_source(e))?;
        if &magic != MAGIC {
            return Err(corrupt("not a lakehouse-ml model file (bad magic)"));
        }
        let mut v = [0u8; 4];
        r.read_exact(&mut v)
            .map_err(|e| corrupt("truncated header").with_source(e))?;
        let version = u32::from_le_bytes(v);
        if version != FORMAT_VERSION {
            return Err(Error::new(
                ErrorKind::FormatVersion,
                format!(
                    "model file has format version {version}; this release reads {FORMAT_VERSION}"
                ),
            )
            .with_version(u64::from(version)));
        }
        let mut l = [0u8; 2];
        r.read_exact(&mut l)
            .map_err(|e| corrupt("truncated header").with_source(e))?;
        let mut kind = vec![0u8; usize::from(u16::from_le_bytes(l))];
        r.read_exact(&mut kind)
            .map_err(|e| corrupt("truncated header").with_source(e))?;
        if kind != Self::KIND.as_bytes() {
            return Err(Error::invalid(format!(
                "file holds a {:?} model, not {:?}",
                String::from_utf8_lossy(&kind),
                Self::KIND
            )));
        }
        let model: Self = serde_json::from_reader(r)
            .map_err(|e| corrupt("model body does not parse").with_source(e))?;
        model.validate().map_err(|e| {
            if e.kind() == ErrorKind::Corrupt {
                e
            } else {
                e.with_kind(ErrorKind::Corrupt)
                    .prefixed("model is inconsistent")
            }
        })?;
        Ok(model)
    }

    /// [`save`](Self::save) to a file, atomically: the model is written to a temporary
    /// file next to `path` (a name of its own for each target and each save, so
    /// concurrent saves do not meet), flushed to disk, renamed over `path`, and the
    /// directory is flushed so that the rename survives a power loss. On failure the
    /// temporary file is removed and `path` is unchanged.
    fn save_file(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let with_path = |e: Error| e.with_path(path.display().to_string());
        let tmp = temporary_name(path).map_err(with_path)?;
        let written = (|| -> Result<()> {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            self.save(&file)?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&tmp, path)?;
            Ok(())
        })();
        if let Err(e) = written {
            // The temporary file may not exist (it could not be created): nothing to do.
            let _ = std::fs::remove_file(&tmp);
            return Err(with_path(e));
        }
        sync_parent(path).map_err(with_path)
    }

    /// [`load`](Self::load) from a file.
    fn load_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let with_path = |e: Error| e.with_path(path.display().to_string());
        let file = std::fs::File::open(path).map_err(|e| with_path(e.into()))?;
        Self::load(file).map_err(with_path)
    }
}

/// A fresh temporary name in `path`'s directory: `.<file name>.<pid>.<n>.tmp`, unique
/// per target, process and save.
fn temporary_name(path: &Path) -> Result<PathBuf> {
    static SAVES: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(format!("{} does not name a file", path.display())))?;
    let n = SAVES.fetch_add(1, Ordering::Relaxed);
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}.{n}.tmp", std::process::id()));
    Ok(path.with_file_name(tmp))
}

/// Flushes the directory holding `path`, so that a rename into it is durable. Only
/// Unix can open a directory for that; elsewhere the rename is left to the system.
fn sync_parent(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl Persist for crate::Als {
    const KIND: &'static str = "als";

    fn validate(&self) -> Result<()> {
        self.check()
    }
}

impl Persist for crate::Ease {
    const KIND: &'static str = "ease";

    fn validate(&self) -> Result<()> {
        self.check()
    }
}

impl Persist for crate::ItemItem {
    const KIND: &'static str = "item-item";

    fn validate(&self) -> Result<()> {
        self.check()
    }
}

impl Persist for crate::Popularity {
    const KIND: &'static str = "popularity";

    fn validate(&self) -> Result<()> {
        self.check()
    }
}

impl Persist for crate::Segments {
    const KIND: &'static str = "segments";

    fn validate(&self) -> Result<()> {
        self.check()
    }
}
