//! Weighted rendezvous (highest random weight) hashing, logarithmic method.
//!
//! Every backend `i` of a pool draws, for a Call-ID hash `h`, a uniform
//! `u_i = unit(mix(h, seed_i))` in (0, 1) and scores `-w_i / ln(u_i)`; the
//! highest score wins. Equivalently (what we compute) the lowest
//! `-ln(u_i) / w_i`, an exponential variable of rate `w_i`: the minimum of
//! independent exponentials is backend `i` with probability `w_i / Σw`.
//!
//! A backend's score for `h` never depends on the other backends, so
//! removing one (or skipping it while it is down) moves only the Call-IDs it
//! won, each to that Call-ID's runner-up: spread over all the others in
//! proportion to their weights. Adding one takes only what it now wins.
//!
//! Determinism: seeds are xxh3 with a fixed seed over the canonical
//! `ip:port` text, so every process and restart agrees. (Scores use `f64::ln`;
//! builds whose libm differ in the last ulp could only disagree on Call-IDs
//! whose two best scores are within an ulp, about 2^-50 of them.)

use std::net::SocketAddr;

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Fixed xxh3 seed for backend seeds ("sip-lb-1"). Changing it remaps
/// every Call-ID: never change it.
const SEED_OF_SEEDS: u64 = u64::from_le_bytes(*b"sip-lb-1");

/// The backend's seed: xxh3 of its canonical text, `10.0.0.1:5060` or
/// `[2001:db8::1]:5060`.
pub fn backend_seed(addr: SocketAddr) -> u64 {
    // SocketAddr's Display is the canonical form; a tiny stack buffer would
    // do, but this runs once per backend per Router build.
    xxh3_64_with_seed(addr.to_string().as_bytes(), SEED_OF_SEEDS)
}

/// Mixes a Call-ID hash with a backend seed into an independent-looking
/// 64-bit value (Stafford's mix13, the splitmix64 finaliser).
#[inline(always)]
pub fn mix(call_id_hash: u64, seed: u64) -> u64 {
    let mut z = call_id_hash ^ seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `-ln(u)` for `u` uniform in (0, 1) taken from the top 52 bits of `x`
/// (52 so that the largest `u`, `1 - 2^-53`, is exact and below 1): an
/// Exp(1) draw, finite and positive. Non-increasing in `x`.
#[inline(always)]
pub fn exp_draw(x: u64) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 52) as f64;
    let u = ((x >> 12) as f64 + 0.5) * SCALE;
    -u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Literal seeds (computed with the C libxxhash, XXH3_64bits_withSeed,
    /// seed "sip-lb-1" little-endian): two sip-lb versions in one farm must
    /// agree on every Call-ID, so a changed seed-of-seeds, hash or canonical
    /// text fails here.
    #[test]
    fn seeds_are_pinned() {
        let pinned = [
            ("10.0.0.1:5060", 0x376c_80a0_e12d_246f),
            ("10.0.0.2:5060", 0x0b91_8cb9_ecb4_5e13),
            ("10.0.0.3:5060", 0x7da3_64f0_67be_9650),
            ("10.0.0.1:5061", 0x6764_9280_ba49_97dd),
            ("[2001:db8::1]:5060", 0x89db_d073_cb00_4a35),
            ("[2001:db8::7]:5060", 0x1b04_0b7f_cc77_4954),
            // Written non-canonically: the seed is of the canonical text.
            ("[2001:0db8:0:0::7]:5060", 0x1b04_0b7f_cc77_4954),
            ("10.9.9.9:5060", 0xd982_92ab_1ac6_ea30),
        ];
        for (a, want) in pinned {
            let got = backend_seed(a.parse().unwrap());
            assert_eq!(got, want, "{a}: {got:#018x}");
        }
    }

    #[test]
    fn mix_is_pinned() {
        assert_eq!(mix(0, 0), 0);
        assert_eq!(mix(1, 0), 0x5692_161d_100b_05e5);
        assert_eq!(mix(0xc538_ca3e_5797_53dc, 0x376c_80a0_e12d_246f), 0x9dd7_a771_0384_f19a);
        assert_eq!(mix(u64::MAX, 0x0123_4567_89ab_cdef), 0xee12_8d82_ce22_fe61);
    }

    #[test]
    fn draws_are_pinned() {
        // -ln(((x >> 12) + 0.5) / 2^52); libms may differ in the last ulp.
        for (x, want) in [
            (0, 36.736_800_569_677_1),
            (1 << 12, 35.638_188_281_008_99),
            (1 << 63, 0.693_147_180_559_945_1),
            (u64::MAX, 1.110_223_024_625_156_5e-16),
        ] {
            let got = exp_draw(x);
            assert!((got - want).abs() <= 4.0 * f64::EPSILON * want, "{x:#x}: {got} vs {want}");
        }
    }

    #[test]
    fn draws_are_finite_and_ordered() {
        for x in [0, 1, 1 << 11, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
            let e = exp_draw(x);
            assert!(e.is_finite() && e > 0.0, "{x}: {e}");
        }
        assert!(exp_draw(0) > exp_draw(u64::MAX / 2));
        assert!(exp_draw(u64::MAX / 2) > exp_draw(u64::MAX));
    }
}
