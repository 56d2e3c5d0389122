//! The bytes of a JetStream message that carries records, our sequence numbers, and
//! the server's timestamps.
//!
//! A message body is a version byte, the record count (`u32`, little endian), then per
//! record the key length (`u32`), the key, the payload length (`u32`) and the payload.

use bytes::{BufMut, Bytes, BytesMut};
use lakehouse_core::{Error, ErrorKind, PartitionKey, Result, SequenceNumber};

/// The body format this build writes and reads.
pub(crate) const BODY_VERSION: u8 = 1;
/// Bytes of the body header (version and count).
pub(crate) const BODY_HEADER: usize = 5;
/// Bytes a record adds to a body besides its key and payload.
pub(crate) const RECORD_OVERHEAD: usize = 8;
/// Bits of a sequence number that hold the record's index in its message.
pub(crate) const INDEX_BITS: u32 = 16;
/// Records one message holds at most.
pub(crate) const MAX_RECORDS_PER_MESSAGE: usize = 1 << INDEX_BITS;

/// Our sequence number of record `index` of the message at `stream_seq`.
pub(crate) fn sequence(stream_seq: u64, index: usize) -> SequenceNumber {
    (stream_seq << INDEX_BITS) | index as u64
}

/// The message (stream sequence) and the index in it that `seq` addresses.
pub(crate) fn split_sequence(seq: SequenceNumber) -> (u64, usize) {
    (seq >> INDEX_BITS, (seq & ((1 << INDEX_BITS) - 1)) as usize)
}

/// Encodes records into one body; the caller keeps to the size and count bounds.
pub(crate) fn encode<'a>(records: impl ExactSizeIterator<Item = (&'a str, &'a [u8])>) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(BODY_VERSION);
    out.put_u32_le(records.len() as u32);
    for (key, data) in records {
        out.reserve(RECORD_OVERHEAD + key.len() + data.len());
        out.put_u32_le(key.len() as u32);
        out.put_slice(key.as_bytes());
        out.put_u32_le(data.len() as u32);
        out.put_slice(data);
    }
    out.freeze()
}

fn corrupt(what: &str) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("JetStream message body is malformed: {what}"),
    )
}

/// Decodes a body into its records (payloads share `body`'s buffer).
pub(crate) fn decode(body: &Bytes) -> Result<Vec<(PartitionKey, Bytes)>> {
    if body.len() < BODY_HEADER {
        return Err(corrupt("shorter than its header"));
    }
    if body[0] != BODY_VERSION {
        return Err(Error::new(
            ErrorKind::FormatVersion,
            format!(
                "JetStream message body has format version {}, this build reads {BODY_VERSION}",
                body[0]
            ),
        ));
    }
    let count = u32::from_le_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if count > MAX_RECORDS_PER_MESSAGE {
        return Err(corrupt("more records than a message holds"));
    }
    let mut out = Vec::with_capacity(count);
    let mut at = BODY_HEADER;
    let take_len = |at: &mut usize| -> Result<usize> {
        let end = at.checked_add(4).filter(|&e| e <= body.len());
        let Some(end) = end else {
            return Err(corrupt("truncated length"));
        };
        let b = &body[*at..end];
        *at = end;
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if body.len() - *at < len {
            return Err(corrupt("a length runs past the end"));
        }
        Ok(len)
    };
    for _ in 0..count {
        let klen = take_len(&mut at)?;
        let key = std::str::from_utf8(&body[at..at + klen])
            .map_err(|_| corrupt("a partition key is not UTF-8"))?;
        let key = PartitionKey::from(key);
        at += klen;
        let dlen = take_len(&mut at)?;
        out.push((key, body.slice(at..at + dlen)));
        at += dlen;
    }
    if at != body.len() {
        return Err(corrupt("bytes after the last record"));
    }
    Ok(out)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Milliseconds since the Unix epoch of an RFC 3339 time as the server writes it
/// (`2026-12-02T07:36:44.123456789Z`, or with a `+hh:mm` offset).
pub(crate) fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut at = 19;
    let mut millis = 0i64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            at += 1;
        }
        let frac = &s[start..at];
        let mut ms = String::from(&frac[..frac.len().min(3)]);
        while ms.len() < 3 {
            ms.push('0');
        }
        millis = ms.parse().ok()?;
    }
    let offset_s = match b.get(at)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let oh = num(at + 1..at + 3)?;
            let om = num(at + 4..at + 6)?;
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Some(secs * 1000 + millis)
}

/// An RFC 3339 UTC time with milliseconds, for a request's `start_time`.
pub(crate) fn format_rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip() {
        let body =
            encode([("user-1", &b"a"[..]), ("k", &b""[..]), ("ünï", &b"xyz"[..])].into_iter());
        let back = decode(&body).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back[0].0, "user-1");
        assert_eq!(&back[2].1[..], b"xyz");
        assert_eq!(back[1].1.len(), 0);
        for cut in 0..body.len() {
            assert!(decode(&body.slice(..cut)).is_err(), "a cut at {cut} fails");
        }
        let mut v = body.to_vec();
        v[0] = 9;
        assert_eq!(
            decode(&Bytes::from(v)).unwrap_err().kind(),
            ErrorKind::FormatVersion
        );
    }

    #[test]
    fn sequences_address_message_and_index() {
        let s = sequence(7, 3);
        assert_eq!(split_sequence(s), (7, 3));
        assert!(sequence(7, MAX_RECORDS_PER_MESSAGE - 1) < sequence(8, 0));
        assert_eq!(
            split_sequence(sequence(7, MAX_RECORDS_PER_MESSAGE - 1) + 1),
            (8, 0)
        );
    }

    #[test]
    fn times_round_trip() {
        for ms in [
            0,
            1,
            999,
            1_700_000_000_123,
            1_798_791_404_007,
            951_782_400_000,
        ] {
            let s = format_rfc3339_ms(ms);
            assert_eq!(parse_rfc3339_ms(&s), Some(ms), "{s}");
        }
        assert_eq!(
            parse_rfc3339_ms("2026-12-02T07:36:44.123456789Z"),
            parse_rfc3339_ms("2026-12-02T08:36:44.123+01:00")
        );
        assert_eq!(
            parse_rfc3339_ms("2026-12-02T07:36:44Z"),
            Some(1_796_197_004_000)
        );
        assert_eq!(parse_rfc3339_ms("garbage"), None);
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }
}
