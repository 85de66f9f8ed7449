//! Counter-based randomness: every random number is a hash of the fleet seed
//! and a key (station, parameter, time slot, ...).
//!
//! A streamed RNG would have to be replayed from the start to know what a
//! station measures at a given slot; hashing the coordinates instead makes
//! [`Station::measure`](super::Station::measure) random-access and the plan
//! identical whatever order it is asked in. SplitMix64 is used because its
//! output is fixed by its definition, not by a crate version.

/// One SplitMix64 step (Steele, Lea, Flood 2014).
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a key and a list of coordinates into one well-mixed word.
pub(crate) fn hash(key: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(splitmix(key), |h, &p| splitmix(h ^ p))
}

/// A short stream of random numbers drawn from one hashed coordinate.
#[derive(Debug, Clone)]
pub(crate) struct Draw(u64);

impl Draw {
    pub(crate) fn new(key: u64, parts: &[u64]) -> Self {
        Draw(hash(key, parts))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = splitmix(self.0);
        self.0
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn uniform(&mut self) -> f64 {
        // 53 random bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub(crate) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform index below `n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        // Modulo bias is irrelevant for the handful of choices made here.
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Standard normal (Box-Muller), truncated at ±3.5 σ so that a profile
    /// tuned below a limit never crosses it by noise alone: exceedances come
    /// only from exceedance episodes, which tests can switch off.
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln never sees 0
        let u2 = self.uniform();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        z.clamp(-3.5, 3.5)
    }

    /// Poisson count with mean `lambda` (inversion; small means only).
    pub(crate) fn poisson(&mut self, lambda: f64) -> u32 {
        if lambda <= 0.0 {
            return 0;
        }
        let u = self.uniform();
        let mut p = (-lambda).exp();
        let mut cdf = p;
        let mut k = 0;
        // The cap only guards against absurd configured rates.
        while u > cdf && k < 1000 {
            k += 1;
            p *= lambda / f64::from(k);
            cdf += p;
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_coordinates_same_numbers() {
        let a: Vec<u64> = (0..4).map(|_| Draw::new(7, &[1, 2]).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Draw::new(7, &[1, 2]).next_u64(),
            Draw::new(7, &[2, 1]).next_u64()
        );
        assert_ne!(
            Draw::new(7, &[1, 2]).next_u64(),
            Draw::new(8, &[1, 2]).next_u64()
        );
    }

    #[test]
    fn normal_and_poisson_have_the_right_moments() {
        let mut d = Draw::new(42, &[]);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| d.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.03, "var {var}");
        let ks: u64 = (0..n).map(|_| u64::from(d.poisson(0.7))).sum();
        let kmean = ks as f64 / n as f64;
        assert!((kmean - 0.7).abs() < 0.02, "poisson mean {kmean}");
    }
}
