//! A small seeded generator (SplitMix64) for deterministic workloads, crash
//! simulation and demos. Not for anything that needs unpredictability.

/// SplitMix64: small, fast, seeded.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Makes `edits` random edits to `b`: each replaces, removes or inserts a
    /// byte (drawn from `alphabet`) at a random place. For tests that fuzz
    /// parsers from valid inputs.
    #[cfg(test)]
    pub(crate) fn mutate(&mut self, b: &mut Vec<u8>, alphabet: &[u8], edits: u64) {
        for _ in 0..edits {
            let at = self.below(b.len() as u64 + 1) as usize;
            let c = alphabet[self.below(alphabet.len() as u64) as usize];
            match self.below(3) {
                0 if at < b.len() => b[at] = c,
                1 if at < b.len() => {
                    b.remove(at);
                }
                _ => b.insert(at, c),
            }
        }
    }
}
