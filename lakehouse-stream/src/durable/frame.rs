//! The frame of one record: encoding, and scanning a segment's frames back.

use std::path::Path;

use bytes::Bytes;
use lakehouse_core::{Error, ErrorKind, Record, Result, SequenceNumber, ShardId};

/// Bytes of a frame header.
pub(super) const HEADER: usize = 12;
/// Bytes of a body before the key.
const BODY_FIXED: usize = 20;
/// Appends the frame of one record to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, sequence: SequenceNumber, ts: i64, key: &str, data: &[u8]) {
    let body_len = BODY_FIXED + key.len() + data.len();
    let start = buf.len();
    buf.reserve(HEADER + body_len);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 8]);
    buf.extend_from_slice(&sequence.to_le_bytes());
    buf.extend_from_slice(&ts.to_le_bytes());
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(data);
    let body_crc = crc32c::crc32c(&buf[start + HEADER..]);
    buf[start + 4..start + 8].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&buf[start..start + 8]);
    buf[start + 8..start + 12].copy_from_slice(&header_crc.to_le_bytes());
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// What a scan of one segment found.
#[derive(Debug)]
pub(super) struct Scanned {
    pub(super) records: Vec<Record>,
    /// File offset of each record's frame.
    pub(super) offsets: Vec<u64>,
    /// Bytes of whole, valid frames; a torn tail starts here.
    pub(super) valid_len: u64,
    /// The segment ended in an incomplete frame or zero fill.
    pub(super) torn: bool,
}

/// Decodes the frames of one segment whose first record must have sequence `first`.
/// `newest` says whether it is the shard's newest segment, the only place where a torn
/// tail is expected.
pub(super) fn scan(
    bytes: &Bytes,
    shard: ShardId,
    path: &Path,
    first: SequenceNumber,
    newest: bool,
) -> Result<Scanned> {
    let corrupt = |offset: usize, what: String| {
        Error::new(ErrorKind::Corrupt, what)
            .with_shard(shard)
            .with_path(path.display().to_string())
            .with_offset(offset as u64)
    };
    let mut out = Scanned {
        records: Vec::new(),
        offsets: Vec::new(),
        valid_len: 0,
        torn: false,
    };
    let b = &bytes[..];
    let mut at = 0usize;
    let mut expect = first;
    while at < b.len() {
        let rest = &b[at..];
        let tail_is_zero = || rest.iter().all(|&x| x == 0);
        if rest.len() < HEADER {
            if newest {
                out.torn = true;
                break;
            }
            return Err(corrupt(
                at,
                format!("{} stray bytes after the last frame", rest.len()),
            ));
        }
        let body_len = u32_at(rest, 0) as usize;
        if crc32c::crc32c(&rest[..8]) != u32_at(rest, 8) {
            if newest && tail_is_zero() {
                out.torn = true;
                break;
            }
            return Err(corrupt(at, "frame header checksum mismatch".into()));
        }
        if body_len < BODY_FIXED {
            return Err(corrupt(
                at,
                format!("frame body of {body_len} bytes is too short"),
            ));
        }
        if rest.len() < HEADER + body_len {
            if newest {
                out.torn = true;
                break;
            }
            return Err(corrupt(at, "frame runs past the end of the segment".into()));
        }
        let body = &rest[HEADER..HEADER + body_len];
        if crc32c::crc32c(body) != u32_at(rest, 4) {
            return Err(corrupt(at, "frame body checksum mismatch".into()));
        }
        let sequence = u64_at(body, 0);
        if sequence != expect {
            return Err(corrupt(
                at,
                format!("frame holds sequence {sequence}, expected {expect}"),
            )
            .with_version(expect));
        }
        let ts = u64_at(body, 8) as i64;
        let key_len = u32_at(body, 16) as usize;
        if BODY_FIXED + key_len > body_len {
            return Err(corrupt(
                at,
                format!("key of {key_len} bytes overruns its frame"),
            ));
        }
        let key = std::str::from_utf8(&body[BODY_FIXED..BODY_FIXED + key_len])
            .map_err(|_| corrupt(at, "partition key is not UTF-8".into()))?;
        let data_at = at + HEADER + BODY_FIXED + key_len;
        out.records.push(Record {
            shard,
            sequence,
            partition_key: key.into(),
            data: bytes.slice(data_at..at + HEADER + body_len),
            timestamp_ms: ts,
        });
        out.offsets.push(at as u64);
        at += HEADER + body_len;
        expect += 1;
        out.valid_len = at as u64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        for i in 0..n {
            encode(
                &mut buf,
                i,
                1000 + i as i64,
                &format!("k{i}"),
                format!("v{i}").as_bytes(),
            );
        }
        buf
    }

    #[test]
    fn frames_round_trip() {
        let b = Bytes::from(frames(5));
        let s = scan(&b, ShardId(3), Path::new("x"), 0, true).unwrap();
        assert!(!s.torn);
        assert_eq!(s.valid_len, b.len() as u64);
        assert_eq!(s.records.len(), 5);
        assert_eq!(s.records[4].partition_key, "k4");
        assert_eq!(&s.records[4].data[..], b"v4");
        assert_eq!(s.records[4].timestamp_ms, 1004);
        assert_eq!(s.offsets[0], 0);
    }

    #[test]
    fn every_cut_is_torn_and_every_flip_is_caught() {
        let full = frames(3);
        let whole = scan(
            &Bytes::from(full.clone()),
            ShardId(0),
            Path::new("x"),
            0,
            true,
        )
        .unwrap();
        for cut in 0..full.len() {
            let s = scan(
                &Bytes::from(full[..cut].to_vec()),
                ShardId(0),
                Path::new("x"),
                0,
                true,
            )
            .unwrap();
            let complete = whole.offsets.iter().filter(|&&o| o < cut as u64).count();
            let boundary = whole.offsets.contains(&(cut as u64));
            assert_eq!(s.torn, !boundary && cut > 0, "cut {cut}");
            assert_eq!(
                s.records.len(),
                if boundary { complete } else { complete - 1 }
            );
        }
        for at in 0..full.len() {
            let mut bad = full.clone();
            bad[at] ^= 0x40;
            let err = scan(&Bytes::from(bad), ShardId(7), Path::new("x"), 0, true).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "flip at {at}");
            assert_eq!(err.context().shard, Some(ShardId(7)));
            let frame = whole
                .offsets
                .iter()
                .rev()
                .find(|&&o| o <= at as u64)
                .copied();
            assert_eq!(err.context().offset, frame, "flip at {at}");
        }
    }
}
