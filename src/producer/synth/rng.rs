//! The random stream behind every synthetic value: splitmix64, seeded by
//! [`super::synthesize`] from the module, producer id and sequence number.
//!
//! Consumes a 64-bit seed; produces uniform integers, picks from slices,
//! percent rolls and random bytes. Pure arithmetic (STYLE S3): no clock, no
//! OS entropy, so the same seed gives the same stream on every machine.

/// splitmix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number
/// generators", OOPSLA 2014): an add and a three-step mix per output, good
/// enough for test data and seedable from any 64-bit value.
pub(super) struct Rng(pub(super) u64);

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

pub(super) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        mix64(self.0)
    }

    /// Uniform in `0..bound` (Lemire's multiply-shift; bias at most bound / 2^64).
    pub(super) fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Uniform in `low..=high`.
    pub(super) fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    pub(super) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    pub(super) fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub(super) fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes()[..chunk.len()]);
        }
    }
}
