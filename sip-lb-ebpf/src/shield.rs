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
//! The lists are two copies of each trie: the control plane rewrites the
//! copy not in force (at load, on a reload, on a ban) and then flips
//! `ShieldConfig::active`, so a datagram meets either the old lists or the
//! new ones. A drop by a blocked prefix is counted in `SHIELD_HITS` at the
//! slot its trie value names (per ban, for `sip-lb bans`); a source over its
//! rate is written to `SHIELD_OVER` at most every `SHIELD_REPORT_NS`, where
//! the control plane finds the sustained floods it bans.

use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, maps::lpm_trie::Key};
use sip_lb_common::maps::{ShieldBucket, ShieldSource, SHIELD_ALLOW, SHIELD_HIT_SLOTS, SHIELD_REPORT_NS};

use crate::{
    headers::Source,
    maps::{
        SHIELD_BUCKETS, SHIELD_CONFIG, SHIELD_HITS, SHIELD_NEW, SHIELD_OVER, SHIELD_PREFIXES_V4, SHIELD_PREFIXES_V4_B,
        SHIELD_PREFIXES_V6, SHIELD_PREFIXES_V6_B,
    },
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
    if let Some(v) = listed(src, cfg.active) {
        if v == SHIELD_ALLOW {
            return Ok(());
        }
        hit(v);
        return Err(Drop::Blocked);
    }
    let interval = cfg.interval_ns;
    if interval == 0 {
        return Ok(());
    }
    rate(src, interval, cfg.tolerance_ns, cfg.new_interval_ns, cfg.new_tolerance_ns)
}

/// The value of `src`'s longest matching prefix in the trie copy `active`
/// (`SHIELD_ALLOW` or a block's slot), if any.
#[inline(always)]
fn listed(src: &Source, active: u32) -> Option<u32> {
    let v = if src.v4 {
        let a = &src.addr;
        let key = Key::new(32, [a[12], a[13], a[14], a[15]]);
        if active == 0 {
            SHIELD_PREFIXES_V4.get(key)
        } else {
            SHIELD_PREFIXES_V4_B.get(key)
        }
    } else {
        let key = Key::new(128, src.addr);
        if active == 0 {
            SHIELD_PREFIXES_V6.get(key)
        } else {
            SHIELD_PREFIXES_V6_B.get(key)
        }
    };
    v.copied()
}

/// Counts a drop for the blocked prefix whose slot is `slot`.
#[inline(always)]
fn hit(slot: u32) {
    if let Some(n) = SHIELD_HITS.get_ptr_mut(slot & (SHIELD_HIT_SLOTS - 1)) {
        // SAFETY: this CPU's slot; XDP runs without preemption.
        unsafe { *n += 1 };
    }
}

/// GCRA: a source may run `tolerance` ahead of now; each datagram moves its
/// TAT on by `interval`. A new (or evicted) source starts at now.
#[inline(always)]
fn rate(src: &Source, interval: u64, tolerance: u64, new_interval: u64, new_tolerance: u64) -> Result<(), Drop> {
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = ShieldSource { addr: src.addr };
    match SHIELD_BUCKETS.get_ptr_mut(key) {
        Some(p) => {
            // SAFETY: a valid map value; see the module doc on concurrency.
            let seen = unsafe { core::ptr::read_volatile(&(*p).tat) };
            let tat = if seen > now { seen } else { now };
            if tat - now > tolerance {
                // SAFETY: as above.
                let reported = unsafe { core::ptr::read_volatile(&(*p).reported) };
                if now.wrapping_sub(reported) >= SHIELD_REPORT_NS {
                    // SAFETY: as above.
                    unsafe { core::ptr::write_volatile(&mut (*p).reported, now) };
                    let _ = SHIELD_OVER.insert(key, now, 0);
                }
                return Err(Drop::RateLimited);
            }
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(&mut (*p).tat, tat + interval) };
        }
        None => {
            // A source not followed yet: within this CPU's budget of new
            // sources, if any (a spoofed flood is all new sources; dropped
            // here, it does not evict the sources already followed either).
            if new_interval != 0 {
                let Some(t) = SHIELD_NEW.get_ptr_mut(0) else { return Ok(()) };
                // SAFETY: this CPU's entry; XDP runs without preemption.
                let t = unsafe { &mut *t };
                let tat = if *t > now { *t } else { now };
                if tat - now > new_tolerance {
                    return Err(Drop::RateLimited);
                }
                *t = tat + new_interval;
            }
            // A full map evicts its least recently used source; an insert
            // that fails anyway lets the datagram through.
            let _ = SHIELD_BUCKETS.insert(key, ShieldBucket { tat: now + interval, reported: 0 }, 0);
        }
    }
    Ok(())
}
