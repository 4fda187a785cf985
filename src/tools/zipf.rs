//! The Zipf distribution over ranks `0..n`: rank `k` has weight
//! `1 / (k + 1)^s`. The simulator draws which symbol ticks from it, and the
//! load generator draws its watchlists and predicts each symbol's share of
//! the feed from the same one, so "busy symbols are popular" means the same
//! thing in both.
//!
//! A leaf. The weights are `f64`, computed once at start; only the tools
//! (simulator, load generator, lab) use this, never the relay's data path.
//! Sampling is one `u64` draw and a binary search over integer cumulative
//! weights.

use rand::Rng;

/// Each rank's share of the draws, rank 0 first; they sum to 1 (none for
/// `n` = 0). `s` = 0 is uniform.
pub fn shares(n: usize, s: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    weights.into_iter().map(|w| w / total).collect()
}

/// A Zipf sampler: precomputed cumulative weights, binary search.
#[derive(Clone, Debug)]
pub struct Zipf {
    /// Cumulative shares scaled to `u64::MAX`; the last is `u64::MAX`.
    cdf: Vec<u64>,
}

impl Zipf {
    /// Ranks `0..n` (at least one) with weight `1 / (rank + 1)^s`.
    pub fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let cdf = shares(n.max(1), s)
            .into_iter()
            .map(|share| {
                acc += share;
                (f64::min(acc, 1.0) * u64::MAX as f64) as u64
            })
            .collect();
        Zipf { cdf }
    }

    /// Number of ranks.
    pub fn len(&self) -> usize {
        self.cdf.len()
    }

    /// Always false: a sampler has at least one rank.
    pub fn is_empty(&self) -> bool {
        self.cdf.is_empty()
    }

    /// A rank in `0..len()`; the same generator state gives the same rank.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let x: u64 = rng.r#gen();
        self.cdf.partition_point(|&c| c < x).min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn histogram(z: &Zipf, seed: u64, draws: u32) -> Vec<u32> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut hits = vec![0u32; z.len()];
        for _ in 0..draws {
            hits[z.sample(&mut rng)] += 1;
        }
        hits
    }

    #[test]
    fn shares_follow_the_power_law_and_sum_to_one() {
        let s = shares(50, 1.2);
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // share(k) / share(2k) = 2^s.
        assert!((s[0] / s[1] - 2f64.powf(1.2)).abs() < 1e-9);
        assert!((s[4] / s[9] - 2f64.powf(1.2)).abs() < 1e-9);
        assert!(s.windows(2).all(|w| w[0] > w[1]));
        assert!(shares(0, 1.0).is_empty());
        assert!(shares(4, 0.0).iter().all(|&x| (x - 0.25).abs() < 1e-12));
    }

    #[test]
    fn draws_match_the_shares() {
        let z = Zipf::new(100, 1.2);
        let hits = histogram(&z, 3, 200_000);
        assert!(hits[0] > hits[10] && hits[10] > hits[90]);
        for (k, share) in shares(100, 1.2).into_iter().enumerate().take(5) {
            let seen = f64::from(hits[k]) / 200_000.0;
            assert!((seen - share).abs() < 0.01, "rank {k}: {seen} vs {share}");
        }
        let uniform = histogram(&Zipf::new(10, 0.0), 3, 100_000);
        assert!(
            uniform.iter().all(|&h| (8_000..12_000).contains(&h)),
            "{uniform:?}"
        );
    }

    #[test]
    fn a_seed_gives_the_same_draws() {
        let z = Zipf::new(1_000, 1.0);
        let draw = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..1_000).map(|_| z.sample(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn every_rank_is_in_range() {
        let one = Zipf::new(1, 1.0);
        assert_eq!(histogram(&one, 1, 1_000), vec![1_000]);
        assert_eq!(Zipf::new(0, 1.0).len(), 1);
        let steep = Zipf::new(5, 8.0);
        assert!(histogram(&steep, 1, 10_000).len() == 5);
        assert!(!steep.is_empty());
    }
}
