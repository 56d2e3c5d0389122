//! Routing many partition keys at once: MD5 of up to [`LANES`] short keys computed
//! side by side.
//!
//! Kinesis routes a record by the MD5 digest of its partition key, and MD5 is a long
//! chain of dependent 32-bit operations, so one key at a time leaves most of a core
//! idle. Here the same step runs on `LANES` independent keys held in arrays, which the
//! compiler turns into SIMD instructions (SSE2, part of every x86-64 CPU). Keys of up
//! to [`MAX_KEY`] bytes fit one MD5 block; longer keys go through
//! [`lakehouse_core::hash_key`]. The result equals `hash_key` bit for bit (tested).

/// Keys hashed together.
pub(crate) const LANES: usize = 8;
/// The longest key that fits one MD5 block (64 bytes less the padding byte and the
/// 8-byte length).
pub(crate) const MAX_KEY: usize = 55;

type V = [u32; LANES];

const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

const S: [[u32; 4]; 4] = [
    [7, 12, 17, 22],
    [5, 9, 14, 20],
    [4, 11, 16, 23],
    [6, 10, 15, 21],
];

#[inline(always)]
fn map3(b: &V, c: &V, d: &V, f: impl Fn(u32, u32, u32) -> u32) -> V {
    let mut out = [0; LANES];
    for l in 0..LANES {
        out[l] = f(b[l], c[l], d[l]);
    }
    out
}

/// `b + rotl(a + f + k + m, s)` on every lane.
#[inline(always)]
fn step(a: &V, b: &V, f: &V, k: u32, m: &V, s: u32) -> V {
    let mut out = [0; LANES];
    for l in 0..LANES {
        out[l] = b[l].wrapping_add(
            a[l].wrapping_add(f[l])
                .wrapping_add(k)
                .wrapping_add(m[l])
                .rotate_left(s),
        );
    }
    out
}

/// The MD5 hash keys (digest read big-endian, as [`lakehouse_core::hash_key`]) of up
/// to `LANES` keys, each at most [`MAX_KEY`] bytes; unused lanes hash the empty key.
pub(crate) fn md5_keys(keys: &[&[u8]]) -> [u128; LANES] {
    debug_assert!(keys.len() <= LANES && keys.iter().all(|k| k.len() <= MAX_KEY));
    let mut m: [V; 16] = [[0; LANES]; 16];
    for (l, key) in keys.iter().enumerate().take(LANES) {
        let mut block = [0u8; 64];
        let len = key.len().min(MAX_KEY);
        block[..len].copy_from_slice(&key[..len]);
        block[len] = 0x80;
        block[56..].copy_from_slice(&((len as u64) * 8).to_le_bytes());
        for (w, word) in block.chunks_exact(4).enumerate() {
            m[w][l] = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        }
    }
    for lane in m[0].iter_mut().skip(keys.len()) {
        *lane = 0x80;
    }
    let (mut a, mut b, mut c, mut d): (V, V, V, V) = (
        [0x67452301; LANES],
        [0xefcdab89; LANES],
        [0x98badcfe; LANES],
        [0x10325476; LANES],
    );
    for i in 0..64 {
        let (f, g) = match i / 16 {
            0 => (map3(&b, &c, &d, |b, c, d| (b & c) | (!b & d)), i),
            1 => (
                map3(&b, &c, &d, |b, c, d| (d & b) | (!d & c)),
                (5 * i + 1) % 16,
            ),
            2 => (map3(&b, &c, &d, |b, c, d| b ^ c ^ d), (3 * i + 5) % 16),
            _ => (map3(&b, &c, &d, |b, c, d| c ^ (b | !d)), (7 * i) % 16),
        };
        let next_b = step(&a, &b, &f, K[i], &m[g], S[i / 16][i % 4]);
        a = d;
        d = c;
        c = b;
        b = next_b;
    }
    let mut out = [0u128; LANES];
    for (l, o) in out.iter_mut().enumerate() {
        let mut digest = [0u8; 16];
        digest[0..4].copy_from_slice(&a[l].wrapping_add(0x67452301).to_le_bytes());
        digest[4..8].copy_from_slice(&b[l].wrapping_add(0xefcdab89).to_le_bytes());
        digest[8..12].copy_from_slice(&c[l].wrapping_add(0x98badcfe).to_le_bytes());
        digest[12..16].copy_from_slice(&d[l].wrapping_add(0x10325476).to_le_bytes());
        *o = u128::from_be_bytes(digest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakehouse_core::hash_key;
    use proptest::prelude::*;

    #[test]
    fn matches_md5_for_known_keys_and_every_length() {
        let keys: Vec<String> = (0..=MAX_KEY).map(|n| "k".repeat(n)).collect();
        for chunk in keys.chunks(LANES) {
            let refs: Vec<&[u8]> = chunk.iter().map(|k| k.as_bytes()).collect();
            let got = md5_keys(&refs);
            for (k, h) in chunk.iter().zip(got) {
                assert_eq!(h, hash_key(k), "key of {} bytes", k.len());
            }
        }
        assert_eq!(md5_keys(&[])[0], 0xd41d8cd98f00b204e9800998ecf8427e);
    }

    proptest! {
        #[test]
        fn matches_md5_for_any_keys(keys in prop::collection::vec("\\PC{0,18}", 1..=LANES)) {
            let keys: Vec<&String> = keys.iter().filter(|k| k.len() <= MAX_KEY).collect();
            let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
            let got = md5_keys(&refs);
            for (k, h) in keys.iter().zip(got) {
                prop_assert_eq!(h, hash_key(k));
            }
        }
    }
}
