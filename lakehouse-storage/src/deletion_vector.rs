//! Deletion vectors in Delta's on-disk format: the encoder this crate's deletes and
//! updates use (see [`TableOptions::deletion_vectors`](crate::TableOptions::deletion_vectors)).
//!
//! A deletion vector is the set of deleted row indexes of one data file (the row's
//! position in the file, from 0), stored as a 64-bit `RoaringBitmapArray` in its
//! portable serialization behind a 4-byte magic. Small vectors are kept inline in the
//! log (storage type `i`, the bytes Z85-encoded); larger ones go into a
//! `deletion_vector_<uuid>.bin` file beside the data (storage type `u`): a version
//! byte, then per vector its size (big-endian), the magic and bitmap, and a CRC-32 of
//! them (big-endian). The file format comes from `delta_kernel`'s writer; this module
//! chooses inline or file and names the file.
//!
//! Reading is `delta_kernel`'s (see the scan), so whatever is written here is read back
//! by the same code that reads the vectors of other writers.

use delta_kernel::actions::deletion_vector_writer::{
    DeletionVector as _, KernelDeletionVector, StreamingDeletionVectorWriter,
};
use lakehouse_core::{Error, ErrorKind, Result};

/// The magic of the portable `RoaringBitmapArray` serialization (little-endian).
const PORTABLE_MAGIC: u32 = 1_681_511_377;

/// Vectors whose bytes (magic included) are at most this long are kept inline in the
/// log; longer ones go into a deletion vector file. 128 bytes hold about 50 scattered
/// rows, or any number of rows in a few runs.
pub const INLINE_MAX_BYTES: usize = 128;

/// A deletion vector descriptor: what an `add` (or `remove`) action's
/// `deletionVector` field holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionVectorDescriptor {
    /// `i` (inline), `u` (a file beside the data, by UUID) or `p` (an absolute path).
    pub storage_type: String,
    /// The Z85-encoded bytes (inline) or the Z85-encoded UUID of the file.
    pub path_or_inline_dv: String,
    /// Where the vector starts in its file (`None` inline).
    pub offset: Option<i32>,
    /// The vector's size in bytes (magic and bitmap).
    pub size_in_bytes: i32,
    /// Rows the vector deletes.
    pub cardinality: i64,
}

impl DeletionVectorDescriptor {
    /// The descriptor as the JSON object of a Delta `deletionVector` field.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "storageType": self.storage_type,
            "pathOrInlineDv": self.path_or_inline_dv,
            "sizeInBytes": self.size_in_bytes,
            "cardinality": self.cardinality,
        });
        if let Some(o) = self.offset {
            v["offset"] = serde_json::json!(o);
        }
        v
    }

    pub(crate) fn into_log(self) -> crate::log::DeletionVector {
        crate::log::DeletionVector {
            storage_type: self.storage_type,
            path_or_inline_dv: self.path_or_inline_dv,
            offset: self.offset,
            size_in_bytes: self.size_in_bytes,
            cardinality: self.cardinality,
        }
    }
}

/// A deletion vector file to write beside the data: its name relative to the table
/// root, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionVectorFile {
    /// `deletion_vector_<uuid>.bin`.
    pub path: String,
    /// The file's contents.
    pub bytes: Vec<u8>,
}

fn kernel_dv(deleted: &[u64]) -> KernelDeletionVector {
    let mut dv = KernelDeletionVector::new();
    dv.add_deleted_row_indexes(deleted);
    dv
}

fn encode_error(e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!("encoding a deletion vector: {e}"),
    )
}

/// The inline form of `deleted` (row indexes, in any order; repeats count once), or
/// `None` when it is longer than `max_bytes`.
fn inline(deleted: &[u64], max_bytes: usize) -> Result<Option<DeletionVectorDescriptor>> {
    let dv = kernel_dv(deleted);
    let cardinality = dv.cardinality();
    let bitmap = dv.serialize().map_err(encode_error)?;
    let mut bytes = PORTABLE_MAGIC.to_le_bytes().to_vec();
    bytes.extend_from_slice(&bitmap);
    if bytes.len() > max_bytes {
        return Ok(None);
    }
    let size = i32::try_from(bytes.len()).map_err(encode_error)?;
    // Z85 encodes groups of 4 bytes; readers stop at the end of the bitmap.
    bytes.resize(bytes.len().div_ceil(4) * 4, 0);
    Ok(Some(DeletionVectorDescriptor {
        storage_type: "i".into(),
        path_or_inline_dv: z85::encode(&bytes),
        offset: None,
        size_in_bytes: size,
        cardinality: i64::try_from(cardinality).map_err(encode_error)?,
    }))
}

/// Encodes the deletion vector of `deleted` inline, whatever its size (readers accept
/// any size; writers keep inline vectors small, see [`INLINE_MAX_BYTES`]).
pub fn encode_inline(deleted: &[u64]) -> Result<DeletionVectorDescriptor> {
    inline(deleted, usize::MAX)?.ok_or_else(|| encode_error("an unbounded inline vector"))
}

/// Encodes one deletion vector per entry of `vectors`, all into one new deletion
/// vector file, in order.
pub fn encode_file(
    vectors: &[&[u64]],
) -> Result<(Vec<DeletionVectorDescriptor>, DeletionVectorFile)> {
    let uuid = uuid::Uuid::new_v4();
    let mut bytes = Vec::new();
    let mut out = Vec::with_capacity(vectors.len());
    {
        let mut writer = StreamingDeletionVectorWriter::new(&mut bytes);
        for deleted in vectors {
            let r = writer
                .write_deletion_vector(kernel_dv(deleted))
                .map_err(encode_error)?;
            out.push(DeletionVectorDescriptor {
                storage_type: "u".into(),
                path_or_inline_dv: z85::encode(uuid.as_bytes()),
                offset: Some(r.offset),
                size_in_bytes: r.size_in_bytes,
                cardinality: r.cardinality,
            });
        }
        writer.finalize().map_err(encode_error)?;
    }
    Ok((
        out,
        DeletionVectorFile {
            path: format!("deletion_vector_{uuid}.bin"),
            bytes,
        },
    ))
}

/// Encodes the vectors of one commit: those of at most [`INLINE_MAX_BYTES`] inline,
/// the others into one file (returned when there is one). Descriptors are in the order
/// of `vectors`.
pub(crate) fn encode_commit(
    vectors: &[Vec<u64>],
) -> Result<(Vec<DeletionVectorDescriptor>, Option<DeletionVectorFile>)> {
    let mut out: Vec<Option<DeletionVectorDescriptor>> = Vec::with_capacity(vectors.len());
    let mut big: Vec<usize> = Vec::new();
    for (i, v) in vectors.iter().enumerate() {
        let d = inline(v, INLINE_MAX_BYTES)?;
        if d.is_none() {
            big.push(i);
        }
        out.push(d);
    }
    let mut file = None;
    if !big.is_empty() {
        let slices: Vec<&[u64]> = big.iter().map(|&i| vectors[i].as_slice()).collect();
        let (descs, f) = encode_file(&slices)?;
        for (i, d) in big.into_iter().zip(descs) {
            out[i] = Some(d);
        }
        file = Some(f);
    }
    let out = out
        .into_iter()
        .map(|d| d.ok_or_else(|| encode_error("a vector was not encoded")))
        .collect::<Result<Vec<_>>>()?;
    Ok((out, file))
}

impl crate::log::DeletionVector {
    /// The file holding this vector, as the log names files (a path relative to the
    /// table root for storage type `u`, the absolute path for `p`); `None` inline.
    pub(crate) fn file(&self) -> Option<Result<String>> {
        match self.storage_type.as_str() {
            "u" => {
                let s = self.path_or_inline_dv.as_str();
                let corrupt = || {
                    Error::new(
                        ErrorKind::Corrupt,
                        format!("deletion vector path {s:?} does not end with a Z85 UUID"),
                    )
                };
                let Some(split) = s.len().checked_sub(20).filter(|i| s.is_char_boundary(*i)) else {
                    return Some(Err(corrupt()));
                };
                let (prefix, id) = s.split_at(split);
                let uuid = match z85::decode(id)
                    .ok()
                    .and_then(|b| uuid::Uuid::from_slice(&b).ok())
                {
                    Some(u) => u,
                    None => return Some(Err(corrupt())),
                };
                Some(Ok(if prefix.is_empty() {
                    format!("deletion_vector_{uuid}.bin")
                } else {
                    format!("{prefix}/deletion_vector_{uuid}.bin")
                }))
            }
            "p" => Some(Ok(self.path_or_inline_dv.clone())),
            _ => None,
        }
    }
}

/// The union of two ascending lists of row indexes, ascending, without repeats.
pub(crate) fn union(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x < y => {
                i += 1;
                *x
            }
            (Some(x), Some(y)) if x > y => {
                j += 1;
                *y
            }
            (Some(x), Some(_)) => {
                i += 1;
                j += 1;
                *x
            }
            (Some(x), None) => {
                i += 1;
                *x
            }
            (None, Some(y)) => {
                j += 1;
                *y
            }
            (None, None) => break,
        };
        if out.last() != Some(&next) {
            out.push(next);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_vectors_go_inline_and_big_ones_into_one_file() {
        let small = vec![1u64, 5, 9];
        let big: Vec<u64> = (0..500).map(|i| i * 7).collect();
        let (descs, file) = encode_commit(&[small.clone(), big.clone(), vec![2]]).unwrap();
        assert_eq!(descs[0].storage_type, "i");
        assert_eq!(descs[0].cardinality, 3);
        assert_eq!(descs[1].storage_type, "u");
        assert_eq!(descs[1].offset, Some(1));
        assert_eq!(descs[1].cardinality, 500);
        assert_eq!(descs[2].storage_type, "i");
        let file = file.unwrap();
        assert!(file.path.starts_with("deletion_vector_") && file.path.ends_with(".bin"));
        assert_eq!(file.bytes[0], 1);
        // size, magic + bitmap, CRC.
        assert_eq!(
            file.bytes.len(),
            1 + 4 + descs[1].size_in_bytes as usize + 4
        );
        let log = descs[1].clone().into_log();
        assert_eq!(log.file().unwrap().unwrap(), file.path);
        assert!(descs[0].clone().into_log().file().is_none());
    }

    #[test]
    fn unions_are_sorted_without_repeats() {
        assert_eq!(union(&[1, 3, 5], &[2, 3, 9]), vec![1, 2, 3, 5, 9]);
        assert_eq!(union(&[], &[4]), vec![4]);
        assert_eq!(union(&[], &[]), Vec::<u64>::new());
    }
}
