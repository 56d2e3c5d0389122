//! The frame of one record: encoding, and scanning a segment's frames back.

use std::path::Path;

use lakehouse_core::{Error, ErrorKind, Result, SequenceNumber, ShardId};

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

/// The bytes a record's frame takes in a segment file.
pub(crate) fn frame_len(key_len: usize, data_len: usize) -> usize {
    HEADER + BODY_FIXED + key_len + data_len
}

/// One decoded frame, borrowing its body.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub(crate) sequence: SequenceNumber,
    pub(crate) timestamp_ms: i64,
    pub(crate) key: &'a str,
    /// Where the payload starts in the body.
    pub(crate) data_at: usize,
    pub(crate) data: &'a [u8],
}

/// Checks a frame header (at least [`HEADER`] bytes): the body length, or what is
/// wrong with it.
pub(super) fn check_header(h: &[u8]) -> std::result::Result<usize, String> {
    if crc32c::crc32c(&h[..8]) != u32_at(h, 8) {
        return Err("frame header checksum mismatch".into());
    }
    let body_len = u32_at(h, 0) as usize;
    if body_len < BODY_FIXED {
        return Err(format!("frame body of {body_len} bytes is too short"));
    }
    Ok(body_len)
}

/// Checks and decodes the body of a frame whose header is `h`.
pub(super) fn decode_body<'a>(h: &[u8], body: &'a [u8]) -> std::result::Result<Frame<'a>, String> {
    if crc32c::crc32c(body) != u32_at(h, 4) {
        return Err("frame body checksum mismatch".into());
    }
    let key_len = u32_at(body, 16) as usize;
    if BODY_FIXED + key_len > body.len() {
        return Err(format!("key of {key_len} bytes overruns its frame"));
    }
    let key = std::str::from_utf8(&body[BODY_FIXED..BODY_FIXED + key_len])
        .map_err(|_| "partition key is not UTF-8".to_owned())?;
    let data_at = BODY_FIXED + key_len;
    Ok(Frame {
        sequence: u64_at(body, 0),
        timestamp_ms: u64_at(body, 8) as i64,
        key,
        data_at,
        data: &body[data_at..],
    })
}

/// The arrival time in the frame that starts at `buf[at..]`.
pub(super) fn timestamp_at(buf: &[u8], at: usize) -> i64 {
    u64_at(buf, at + HEADER + 8) as i64
}

/// What a scan of one segment found.
#[derive(Debug)]
pub(super) struct Scanned {
    /// Whole, valid frames.
    pub(super) count: u64,
    /// Bytes of whole, valid frames; a torn tail starts here.
    pub(super) valid_len: u64,
    /// The segment ended in an incomplete frame or zero fill.
    pub(super) torn: bool,
}

/// Checks the frames of one segment whose first record must have sequence `first`,
/// calling `each` with every valid frame and its file offset. `newest` says whether it
/// is the shard's newest segment, the only place where a torn tail is expected.
pub(super) fn scan(
    b: &[u8],
    shard: ShardId,
    path: &Path,
    first: SequenceNumber,
    newest: bool,
    mut each: impl FnMut(u64, &Frame<'_>),
) -> Result<Scanned> {
    let corrupt = |offset: usize, what: String| {
        Error::new(ErrorKind::Corrupt, what)
            .with_shard(shard)
            .with_path(path.display().to_string())
            .with_offset(offset as u64)
    };
    let mut out = Scanned {
        count: 0,
        valid_len: 0,
        torn: false,
    };
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
        let body_len = match check_header(rest) {
            Ok(n) => n,
            Err(_) if newest && tail_is_zero() => {
                out.torn = true;
                break;
            }
            Err(what) => return Err(corrupt(at, what)),
        };
        if rest.len() < HEADER + body_len {
            if newest {
                out.torn = true;
                break;
            }
            return Err(corrupt(at, "frame runs past the end of the segment".into()));
        }
        let frame = decode_body(rest, &rest[HEADER..HEADER + body_len])
            .map_err(|what| corrupt(at, what))?;
        if frame.sequence != expect {
            return Err(corrupt(
                at,
                format!("frame holds sequence {}, expected {expect}", frame.sequence),
            )
            .with_version(expect));
        }
        each(at as u64, &frame);
        at += HEADER + body_len;
        expect += 1;
        out.count += 1;
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

    /// (offset, key, data, timestamp) of each frame `scan` reports.
    type Seen = Vec<(u64, String, Vec<u8>, i64)>;

    fn scan_all(b: &[u8], shard: u32) -> Result<(Scanned, Seen)> {
        let mut seen = Vec::new();
        let s = scan(b, ShardId(shard), Path::new("x"), 0, true, |at, f| {
            seen.push((at, f.key.to_owned(), f.data.to_vec(), f.timestamp_ms));
        })?;
        Ok((s, seen))
    }

    #[test]
    fn frames_round_trip() {
        let b = frames(5);
        let (s, seen) = scan_all(&b, 3).unwrap();
        assert!(!s.torn);
        assert_eq!(s.valid_len, b.len() as u64);
        assert_eq!((s.count, seen.len()), (5, 5));
        assert_eq!(seen[4].1, "k4");
        assert_eq!(seen[4].2, b"v4");
        assert_eq!(seen[4].3, 1004);
        assert_eq!(seen[0].0, 0);
        assert_eq!(seen[1].0, frame_len(2, 2) as u64);
        assert_eq!(timestamp_at(&b, seen[2].0 as usize), 1002);
    }

    #[test]
    fn every_cut_is_torn_and_every_flip_is_caught() {
        let full = frames(3);
        let (_, whole) = scan_all(&full, 0).unwrap();
        let offsets: Vec<u64> = whole.iter().map(|w| w.0).collect();
        for cut in 0..full.len() {
            let (s, seen) = scan_all(&full[..cut], 0).unwrap();
            let complete = offsets.iter().filter(|&&o| o < cut as u64).count();
            let boundary = offsets.contains(&(cut as u64));
            assert_eq!(s.torn, !boundary && cut > 0, "cut {cut}");
            assert_eq!(seen.len(), if boundary { complete } else { complete - 1 });
        }
        for at in 0..full.len() {
            let mut bad = full.clone();
            bad[at] ^= 0x40;
            let err = scan_all(&bad, 7).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "flip at {at}");
            assert_eq!(err.context().shard, Some(ShardId(7)));
            let frame = offsets.iter().rev().find(|&&o| o <= at as u64).copied();
            assert_eq!(err.context().offset, frame, "flip at {at}");
        }
    }
}
