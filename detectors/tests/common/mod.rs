//! Helpers shared by the oracle tests.

#![allow(dead_code)]

/// The fixture script's generator, step for step: splitmix64 uniforms
/// transformed with the C math library's log, exp, cos and pow.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn uniform(&mut self) -> f64 {
        (((self.next_u64() >> 11) as f64) + 0.5) * (1.0 / 9_007_199_254_740_992.0)
    }

    pub fn normal(&mut self, mu: f64, sd: f64) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        mu + sd * ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos())
    }
}
