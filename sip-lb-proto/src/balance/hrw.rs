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

    #[test]
    fn seeds_are_pinned() {
        // Two sip-lb versions in one farm must agree on every Call-ID.
        let a: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        assert_eq!(backend_seed(a), xxh3_64_with_seed(b"10.0.0.1:5060", SEED_OF_SEEDS));
        let b: SocketAddr = "[2001:db8::1]:5060".parse().unwrap();
        assert_eq!(backend_seed(b), xxh3_64_with_seed(b"[2001:db8::1]:5060", SEED_OF_SEEDS));
        assert_ne!(backend_seed(a), backend_seed("10.0.0.1:5061".parse().unwrap()));
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
