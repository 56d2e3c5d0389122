//! Exponential backoff with jitter, shared by triggers and workflow retries.

use std::time::Duration;

/// How a computed delay is randomised so that many retrying callers spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// The delay as computed.
    None,
    /// A uniformly random delay between zero and the computed delay ("full jitter").
    #[default]
    Full,
}

/// Exponential backoff: retry `n` (counting from 0) waits
/// `min(initial * rate^n, max_delay)`, randomised by [`Jitter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Multiplier applied per retry (at least 1.0).
    pub rate: f64,
    /// Upper bound of any delay.
    pub max_delay: Option<Duration>,
    /// Randomisation.
    pub jitter: Jitter,
}

impl Default for Backoff {
    /// 100 ms, doubling, at most 30 s, full jitter.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            rate: 2.0,
            max_delay: Some(Duration::from_secs(30)),
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// The delay before retry `retry` (0 for the first retry), before jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        if self.initial.is_zero() {
            return Duration::ZERO;
        }
        let factor = self
            .rate
            .max(1.0)
            .powi(i32::try_from(retry).unwrap_or(i32::MAX));
        let secs = self.initial.as_secs_f64() * factor;
        let cap = self.max_delay.map_or(f64::MAX, |d| d.as_secs_f64());
        let secs = secs.min(cap);
        // Durations beyond about 584 years saturate.
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }

    /// The delay before retry `retry`, with jitter drawn from `rng`.
    pub fn delay(&self, retry: u32, rng: &mut JitterRng) -> Duration {
        let base = self.base_delay(retry);
        match self.jitter {
            Jitter::None => base,
            Jitter::Full => base.mul_f64(rng.next_f64()),
        }
    }
}

/// A small seeded random source (SplitMix64) for jitter. Seeded explicitly, so runs can
/// be reproduced; it is not for cryptography.
#[derive(Debug, Clone)]
pub struct JitterRng {
    state: u64,
}

impl JitterRng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        JitterRng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            rate: 2.0,
            max_delay: Some(Duration::from_millis(500)),
            jitter: Jitter::None,
        };
        let mut rng = JitterRng::new(1);
        let delays: Vec<u128> = (0..5).map(|n| b.delay(n, &mut rng).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
        assert_eq!(b.base_delay(u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn full_jitter_stays_below_the_base_and_varies() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            rate: 3.0,
            max_delay: None,
            jitter: Jitter::Full,
        };
        let mut rng = JitterRng::new(42);
        let mut seen = std::collections::HashSet::new();
        for n in 0..6 {
            for _ in 0..20 {
                let d = b.delay(n, &mut rng);
                assert!(d <= b.base_delay(n), "{d:?} > {:?}", b.base_delay(n));
                seen.insert(d);
            }
        }
        assert!(
            seen.len() > 100,
            "jitter produced only {} values",
            seen.len()
        );
    }

    #[test]
    fn uncapped_growth_saturates_instead_of_panicking() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            rate: 10.0,
            max_delay: None,
            jitter: Jitter::None,
        };
        assert_eq!(b.base_delay(400), Duration::MAX);
    }

    #[test]
    fn same_seed_same_sequence() {
        let mut a = JitterRng::new(7);
        let mut b = JitterRng::new(7);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let x = JitterRng::new(8).next_f64();
        assert!((0.0..1.0).contains(&x));
    }
}
