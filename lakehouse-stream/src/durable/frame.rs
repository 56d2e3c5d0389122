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
    /// The segment ends in bytes that are no valid frame and are followed by none: an
    /// incomplete frame, zero fill or garbage, as a crash or power loss leaves them.
    pub(super) torn: bool,
}

/// Whether a whole, valid frame (both checksums) starts at `b[at..]`.
fn valid_frame_at(b: &[u8], at: usize) -> bool {
    let Some(rest) = b.get(at..) else {
        return false;
    };
    if rest.len() < HEADER {
        return false;
    }
    match check_header(rest) {
        Ok(body_len) => rest
            .get(HEADER..HEADER + body_len)
            .is_some_and(|body| decode_body(rest, body).is_ok()),
        Err(_) => false,
    }
}

/// Whether a valid frame starts anywhere in `b` after offset `at`.
fn valid_frame_after(b: &[u8], at: usize) -> bool {
    (at + 1..b.len().saturating_sub(HEADER - 1)).any(|p| valid_frame_at(b, p))
}

/// Checks the frames of one segment whose first record must have sequence `first`,
/// calling `each` with every valid frame and its file offset.
///
/// Bytes after the last valid frame that hold no valid frame (an incomplete frame,
/// zero fill, garbage) are a torn tail: the scan stops there and says so. A bad frame
/// followed by a valid one, or a valid frame out of sequence, is
/// [`ErrorKind::Corrupt`] naming the shard, file and offset.
pub(super) fn scan(
    b: &[u8],
    shard: ShardId,
    path: &Path,
    first: SequenceNumber,
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
        let bad = |what: String| {
            if valid_frame_after(b, at) {
                Err(corrupt(at, what))
            } else {
                Ok(())
            }
        };
        if rest.len() < HEADER {
            bad(format!("{} stray bytes after the last frame", rest.len()))?;
            out.torn = true;
            break;
        }
        let body_len = match check_header(rest) {
            Ok(n) => n,
            Err(what) => {
                bad(what)?;
                out.torn = true;
                break;
            }
        };
        if rest.len() < HEADER + body_len {
            bad("frame runs past the end of the segment".into())?;
            out.torn = true;
            break;
        }
        let frame = match decode_body(rest, &rest[HEADER..HEADER + body_len]) {
            Ok(f) => f,
            Err(what) => {
                bad(what)?;
                out.torn = true;
                break;
            }
        };
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
        let s = scan(b, ShardId(shard), Path::new("x"), 0, |at, f| {
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
        let last = offsets[2];
        for at in 0..full.len() {
            let mut bad = full.clone();
            bad[at] ^= 0x40;
            let frame = offsets.iter().rev().find(|&&o| o <= at as u64).copied();
            if at as u64 >= last {
                // The last frame is damaged and no valid frame follows: a torn tail.
                let (s, seen) = scan_all(&bad, 7).unwrap();
                assert!(s.torn, "flip at {at}");
                assert_eq!((s.valid_len, seen.len()), (last, 2), "flip at {at}");
                continue;
            }
            let err = scan_all(&bad, 7).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "flip at {at}");
            assert_eq!(err.context().shard, Some(ShardId(7)));
            assert_eq!(err.context().offset, frame, "flip at {at}");
        }
    }

    #[test]
    fn a_garbage_or_zero_tail_is_torn_but_garbage_before_a_frame_is_corrupt() {
        let full = frames(4);
        let mut x = 0x1234_5678_u32;
        let garbage: Vec<u8> = (0..300)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for tail in [garbage.clone(), vec![0; 300], vec![0xff; 5]] {
            let mut b = full.clone();
            b.extend_from_slice(&tail);
            let (s, seen) = scan_all(&b, 1).unwrap();
            assert!(s.torn);
            assert_eq!((s.valid_len, seen.len()), (full.len() as u64, 4));
        }
        let mut b = frames(2);
        let at = b.len();
        b.extend_from_slice(&garbage[..40]);
        let mut next = Vec::new();
        encode(&mut next, 2, 0, "k", b"v");
        b.extend_from_slice(&next);
        let err = scan_all(&b, 1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert_eq!(err.context().offset, Some(at as u64));
    }
}
