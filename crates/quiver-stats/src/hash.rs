//! Stable 64-bit hashes for the distinct-count sketch: the same value hashes the same in every
//! process and release, so stored sketches merge with new ones.

/// The SplitMix64 finalizer: every input bit affects every output bit.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A hash of bytes: FNV-1a, then [`mix`].
pub fn bytes(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h ^ data.len() as u64)
}

/// A hash of a number, by value: `1_i64` and `1.0_f64` hash alike; `-0.0` as `0.0`.
pub fn number(x: f64) -> u64 {
    let x = if x == 0.0 { 0.0 } else { x };
    mix(x.to_bits())
}
