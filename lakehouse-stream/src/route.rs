//! Routing many partition keys at once: MD5 of up to [`LANES`] short keys computed
//! side by side.
//!
//! Kinesis routes a record by the MD5 digest of its partition key, and MD5 is a long
//! chain of dependent 32-bit operations, so one key at a time leaves most of a core
//! idle. Here the same step runs on `LANES` independent keys at once: on x86-64 in two
//! 128-bit SSE2 registers (SSE2 is part of every x86-64 CPU, so its intrinsics are safe
//! to call), elsewhere in plain arrays that the compiler may vectorise. Keys of up
//! to [`MAX_KEY`] bytes fit one MD5 block; longer keys go through
//! [`lakehouse_core::hash_key`]. The result equals `hash_key` bit for bit (tested).

/// Keys hashed together.
pub(crate) const LANES: usize = 8;
/// The longest key that fits one MD5 block (64 bytes less the padding byte and the
/// 8-byte length).
pub(crate) const MAX_KEY: usize = 55;

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

type Words = [u32; LANES];

/// The MD5 body over the lane type `W` in scope: message words, 64 steps, digests.
macro_rules! md5_body {
    ($keys:expr) => {{
        let keys: &[&[u8]] = $keys;
        debug_assert!(keys.len() <= LANES && keys.iter().all(|k| k.len() <= MAX_KEY));
        let mut words: [Words; 16] = [[0; LANES]; 16];
        for (l, key) in keys.iter().enumerate().take(LANES) {
            let mut block = [0u8; 64];
            let len = key.len().min(MAX_KEY);
            block[..len].copy_from_slice(&key[..len]);
            block[len] = 0x80;
            block[56..].copy_from_slice(&((len as u64) * 8).to_le_bytes());
            for (w, word) in block.chunks_exact(4).enumerate() {
                words[w][l] = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            }
        }
        for lane in words[0].iter_mut().skip(keys.len()) {
            *lane = 0x80;
        }
        let mut m = [W::splat(0); 16];
        for (mw, w) in m.iter_mut().zip(&words) {
            *mw = W::load(w);
        }
        let init: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
        let (mut a, mut b, mut c, mut d) = (
            W::splat(init[0]),
            W::splat(init[1]),
            W::splat(init[2]),
            W::splat(init[3]),
        );
        let ones = W::splat(u32::MAX);
        // The four round functions.
        macro_rules! f {
            ($b:expr, $c:expr, $d:expr) => {
                $b.and($c).or($b.andnot($d))
            };
        }
        macro_rules! g {
            ($b:expr, $c:expr, $d:expr) => {
                $d.and($b).or($d.andnot($c))
            };
        }
        macro_rules! h {
            ($b:expr, $c:expr, $d:expr) => {
                $b.xor($c).xor($d)
            };
        }
        macro_rules! i {
            ($b:expr, $c:expr, $d:expr) => {
                $c.xor($b.or($d.xor(ones)))
            };
        }
        // One step: `a = b + rotl(a + f(b, c, d) + k + m, s)`; four steps with the
        // state words rotating roles, written out so that every message index and
        // rotation is a constant.
        macro_rules! step {
            ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $i:expr, $s:literal, $g:literal) => {
                $a = $b.add(
                    $a.add($f!($b, $c, $d))
                        .add(W::splat(K[$i]))
                        .add(m[$g])
                        .rotl::<$s, { 32 - $s }>(),
                );
            };
        }
        macro_rules! quad {
            ($f:ident, $i:expr, [$s0:literal $s1:literal $s2:literal $s3:literal],
             [$g0:literal $g1:literal $g2:literal $g3:literal]) => {
                step!($f, a, b, c, d, $i, $s0, $g0);
                step!($f, d, a, b, c, $i + 1, $s1, $g1);
                step!($f, c, d, a, b, $i + 2, $s2, $g2);
                step!($f, b, c, d, a, $i + 3, $s3, $g3);
            };
        }
        quad!(f, 0, [7 12 17 22], [0 1 2 3]);
        quad!(f, 4, [7 12 17 22], [4 5 6 7]);
        quad!(f, 8, [7 12 17 22], [8 9 10 11]);
        quad!(f, 12, [7 12 17 22], [12 13 14 15]);
        quad!(g, 16, [5 9 14 20], [1 6 11 0]);
        quad!(g, 20, [5 9 14 20], [5 10 15 4]);
        quad!(g, 24, [5 9 14 20], [9 14 3 8]);
        quad!(g, 28, [5 9 14 20], [13 2 7 12]);
        quad!(h, 32, [4 11 16 23], [5 8 11 14]);
        quad!(h, 36, [4 11 16 23], [1 4 7 10]);
        quad!(h, 40, [4 11 16 23], [13 0 3 6]);
        quad!(h, 44, [4 11 16 23], [9 12 15 2]);
        quad!(i, 48, [6 10 15 21], [0 7 14 5]);
        quad!(i, 52, [6 10 15 21], [12 3 10 1]);
        quad!(i, 56, [6 10 15 21], [8 15 6 13]);
        quad!(i, 60, [6 10 15 21], [4 11 2 9]);
        let state = [a.lanes(), b.lanes(), c.lanes(), d.lanes()];
        let mut out = [0u128; LANES];
        for (l, o) in out.iter_mut().enumerate() {
            let mut digest = [0u8; 16];
            for (word, (lanes, iv)) in digest.chunks_exact_mut(4).zip(state.iter().zip(init)) {
                word.copy_from_slice(&lanes[l].wrapping_add(iv).to_le_bytes());
            }
            *o = u128::from_be_bytes(digest);
        }
        out
    }};
}

/// Eight lanes in two SSE2 registers.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_and_si128, _mm_andnot_si128, _mm_cvtsi128_si32, _mm_or_si128,
        _mm_set_epi32, _mm_set1_epi32, _mm_shuffle_epi32, _mm_slli_epi32, _mm_srli_epi32,
        _mm_xor_si128,
    };

    use super::{K, LANES, MAX_KEY, Words};

    /// Eight 32-bit lanes.
    #[derive(Clone, Copy)]
    struct W(__m128i, __m128i);

    impl W {
        #[inline]
        #[target_feature(enable = "sse2")]
        fn splat(x: u32) -> W {
            W(_mm_set1_epi32(x as i32), _mm_set1_epi32(x as i32))
        }

        #[inline]
        #[target_feature(enable = "sse2")]
        fn load(x: &Words) -> W {
            let i = |n: usize| x[n] as i32;
            W(
                _mm_set_epi32(i(3), i(2), i(1), i(0)),
                _mm_set_epi32(i(7), i(6), i(5), i(4)),
            )
        }

        #[inline]
        #[target_feature(enable = "sse2")]
        fn half(v: __m128i) -> [u32; 4] {
            [
                _mm_cvtsi128_si32(v) as u32,
                _mm_cvtsi128_si32(_mm_shuffle_epi32::<0b01_01_01_01>(v)) as u32,
                _mm_cvtsi128_si32(_mm_shuffle_epi32::<0b10_10_10_10>(v)) as u32,
                _mm_cvtsi128_si32(_mm_shuffle_epi32::<0b11_11_11_11>(v)) as u32,
            ]
        }

        #[inline]
        #[target_feature(enable = "sse2")]
        fn lanes(self) -> Words {
            let (lo, hi) = (W::half(self.0), W::half(self.1));
            [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
        }

        #[inline]
        #[target_feature(enable = "sse2")]
        fn add(self, o: W) -> W {
            W(_mm_add_epi32(self.0, o.0), _mm_add_epi32(self.1, o.1))
        }

        #[inline]
        #[target_feature(enable = "sse2")]
        fn and(self, o: W) -> W {
            W(_mm_and_si128(self.0, o.0), _mm_and_si128(self.1, o.1))
        }

        /// `!self & o`.
        #[inline]
        #[target_feature(enable = "sse2")]
        fn andnot(self, o: W) -> W {
            W(_mm_andnot_si128(self.0, o.0), _mm_andnot_si128(self.1, o.1))
        }

        #[inline]
        #[target_feature(enable = "sse2")]
        fn or(self, o: W) -> W {
            W(_mm_or_si128(self.0, o.0), _mm_or_si128(self.1, o.1))
        }

        #[inline]
        #[target_feature(enable = "sse2")]
        fn xor(self, o: W) -> W {
            W(_mm_xor_si128(self.0, o.0), _mm_xor_si128(self.1, o.1))
        }

        /// Rotates every lane left by `L` bits; `R` must be `32 - L`.
        #[inline]
        #[target_feature(enable = "sse2")]
        fn rotl<const L: i32, const R: i32>(self) -> W {
            W(
                _mm_or_si128(_mm_slli_epi32::<L>(self.0), _mm_srli_epi32::<R>(self.0)),
                _mm_or_si128(_mm_slli_epi32::<L>(self.1), _mm_srli_epi32::<R>(self.1)),
            )
        }
    }

    #[target_feature(enable = "sse2")]
    pub(super) fn md5_keys(keys: &[&[u8]]) -> [u128; LANES] {
        md5_body!(keys)
    }
}

/// Eight lanes in arrays, for targets without SSE2.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
mod portable {
    use super::{K, LANES, MAX_KEY, Words};

    /// Eight 32-bit lanes.
    #[derive(Clone, Copy)]
    struct W(Words);

    impl W {
        #[inline(always)]
        fn zip(self, o: W, f: impl Fn(u32, u32) -> u32) -> W {
            let mut out = [0; LANES];
            for l in 0..LANES {
                out[l] = f(self.0[l], o.0[l]);
            }
            W(out)
        }

        fn splat(x: u32) -> W {
            W([x; LANES])
        }

        fn load(x: &Words) -> W {
            W(*x)
        }

        fn lanes(self) -> Words {
            self.0
        }

        #[inline(always)]
        fn add(self, o: W) -> W {
            self.zip(o, u32::wrapping_add)
        }

        #[inline(always)]
        fn and(self, o: W) -> W {
            self.zip(o, |a, b| a & b)
        }

        /// `!self & o`.
        #[inline(always)]
        fn andnot(self, o: W) -> W {
            self.zip(o, |a, b| !a & b)
        }

        #[inline(always)]
        fn or(self, o: W) -> W {
            self.zip(o, |a, b| a | b)
        }

        #[inline(always)]
        fn xor(self, o: W) -> W {
            self.zip(o, |a, b| a ^ b)
        }

        /// Rotates every lane left by `L` bits (`R` is `32 - L`, unused here).
        #[inline(always)]
        fn rotl<const L: i32, const R: i32>(self) -> W {
            let mut out = self.0;
            for x in &mut out {
                *x = x.rotate_left(L as u32);
            }
            W(out)
        }
    }

    pub(super) fn md5_keys(keys: &[&[u8]]) -> [u128; LANES] {
        md5_body!(keys)
    }
}

/// The MD5 hash keys (digest read big-endian, as [`lakehouse_core::hash_key`]) of up
/// to `LANES` keys, each at most [`MAX_KEY`] bytes; unused lanes hash the empty key.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[allow(unsafe_code)]
pub(crate) fn md5_keys(keys: &[&[u8]]) -> [u128; LANES] {
    // SAFETY: the only requirement of `sse2::md5_keys` is that the CPU has SSE2; this
    // build enables SSE2 for all code (the `cfg` above; it is part of the x86-64
    // baseline), so any CPU that runs it has SSE2.
    unsafe { sse2::md5_keys(keys) }
}

/// The MD5 hash keys (digest read big-endian, as [`lakehouse_core::hash_key`]) of up
/// to `LANES` keys, each at most [`MAX_KEY`] bytes; unused lanes hash the empty key.
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
pub(crate) fn md5_keys(keys: &[&[u8]]) -> [u128; LANES] {
    portable::md5_keys(keys)
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
