//! The one Zipf sampler of the examples and benchmarks.

/// Zipf(s) ranks `0..n`: rank `k` (0-based) is drawn with probability proportional to
/// `1 / (k + 1)^s`, by inverting the cumulative distribution (a binary search per draw).
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution over `n` ranks (at least one) with exponent `s`.
    pub fn new(n: usize, s: f64) -> Self {
        let n = n.max(1);
        let mut acc = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|k| {
                acc += 1.0 / (k as f64).powf(s);
                acc
            })
            .collect();
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    /// How many ranks the distribution has.
    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    /// Always `false`: a distribution has at least one rank.
    pub fn is_empty(&self) -> bool {
        self.cdf.is_empty()
    }

    /// The rank whose cumulative probability first reaches `u`, a uniform draw in `[0, 1)`.
    pub fn rank(&self, u: f64) -> usize {
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// Scatters rank `rank` over `0..n` (a multiplicative hash), so that hot ranks are not
/// adjacent ids.
pub fn scatter(rank: u64, n: u64) -> u64 {
    rank.wrapping_mul(2_654_435_761) % n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_follow_the_distribution() {
        let z = Zipf::new(1_000, 1.0);
        assert_eq!(z.len(), 1_000);
        assert_eq!(z.rank(0.0), 0);
        assert_eq!(z.rank(0.999_999_999), 999);
        // Harmonic number H(1000) is about 7.485: rank 0 holds 1 / 7.485 of the mass.
        assert_eq!(z.rank(0.13), 0);
        assert_eq!(z.rank(0.14), 1);
        let mut counts = [0usize; 2];
        for i in 0..10_000 {
            let r = z.rank(f64::from(i) / 10_000.0);
            if r < 2 {
                counts[r] += 1;
            }
        }
        assert!(counts[0] > counts[1] && counts[1] > 0, "{counts:?}");
    }
}
