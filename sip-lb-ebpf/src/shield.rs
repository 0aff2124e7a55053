//! The shield's XDP stage (`docs/shield.md`), shared by both XDP programs:
//! for a UDP datagram to a SIP port, before any scan or redirect,
//!
//! 1. a source in `[shield] allow` (or a backend) goes on as without shield;
//! 2. a source in `[shield] block` is dropped (`XDP_DROP`, `shield_blocked`);
//! 3. with `[shield] rate`, a source over its rate is dropped
//!    (`shield_rate_limited`): GCRA as in `sip_lb_proto::shield::bucket`, one
//!    theoretical arrival time (TAT) per source in `SHIELD_BUCKETS`, an LRU
//!    hash map of bounded size (a spoofed flood evicts the quietest entries
//!    instead of growing memory).
//!
//! The TAT is updated with a plain load and store, not a compare-and-swap:
//! two CPUs taking the same source's datagram at the same instant may both
//! see the old TAT, so a source may get a datagram or two more through than
//! its burst; never fewer. The workers' own check (after this one) still
//! applies the exact limit.
//!
//! The maps are written once, at load, from the policy the process started
//! with; reloads and runtime bans apply in the workers only.

use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, maps::lpm_trie::Key};
use sip_lb_common::maps::{ShieldSource, SHIELD_ALLOW};

use crate::{
    headers::Source,
    maps::{SHIELD_BUCKETS, SHIELD_CONFIG, SHIELD_PREFIXES_V4, SHIELD_PREFIXES_V6},
};

/// Why the shield dropped a datagram.
pub enum Drop {
    Blocked,
    RateLimited,
}

/// The shield's verdict on a datagram from `src`: `Ok` to go on.
#[inline(always)]
pub fn check(src: &Source) -> Result<(), Drop> {
    let Some(cfg) = SHIELD_CONFIG.get(0) else { return Ok(()) };
    if cfg.enabled == 0 {
        return Ok(());
    }
    // Allow and block share one trie per family: one lookup, the longest
    // match decides (the loader resolved allow-over-block already).
    // Only "no match" goes on to the rate (any other value is a block): one
    // path into the Call-ID scan for the verifier, not one per value.
    if let Some(v) = listed(src) {
        return if v == SHIELD_ALLOW { Ok(()) } else { Err(Drop::Blocked) };
    }
    let interval = cfg.interval_ns;
    if interval == 0 {
        return Ok(());
    }
    rate(src, interval, cfg.tolerance_ns)
}

/// The value of `src`'s longest matching prefix (`SHIELD_ALLOW` or
/// `SHIELD_BLOCK`), if any.
#[inline(always)]
fn listed(src: &Source) -> Option<u8> {
    let v = if src.v4 {
        let a = &src.addr;
        SHIELD_PREFIXES_V4.get(Key::new(32, [a[12], a[13], a[14], a[15]]))
    } else {
        SHIELD_PREFIXES_V6.get(Key::new(128, src.addr))
    };
    v.copied()
}

/// GCRA: a source may run `tolerance` ahead of now; each datagram moves its
/// TAT on by `interval`. A new (or evicted) source starts at now.
#[inline(always)]
fn rate(src: &Source, interval: u64, tolerance: u64) -> Result<(), Drop> {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = ShieldSource { addr: src.addr };
    match SHIELD_BUCKETS.get_ptr_mut(key) {
        Some(p) => {
            // SAFETY: a valid map value; see the module doc on concurrency.
            let seen = unsafe { core::ptr::read_volatile(p) };
            let tat = if seen > now { seen } else { now };
            if tat - now > tolerance {
                return Err(Drop::RateLimited);
            }
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(p, tat + interval) };
        }
        None => {
            // A full map evicts its least recently used source; an insert
            // that fails anyway lets the datagram through.
            let _ = SHIELD_BUCKETS.insert(key, now + interval, 0);
        }
    }
    Ok(())
}
