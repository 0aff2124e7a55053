//! The shield's XDP stage (`docs/shield.md`), shared by both XDP programs:
//! for a UDP datagram to a SIP port, before any scan or redirect,
//!
//! 1. a source in `[shield] allow` (or a backend) goes on as without shield;
//! 2. a source in `[shield] block` is dropped (`XDP_DROP`, `shield_blocked`);
//! 3. with `[shield] rate`, a source over its rate is dropped
//!    (`shield_rate_limited`): GCRA as in `sip_lb_proto::shield::bucket`, one
//!    theoretical arrival time (TAT) per source, in a table of fixed size
//!    per family (`SHIELD_BUCKETS_V4`/`_V6`, arrays of groups of
//!    `SHIELD_WAYS` slots found by a keyed hash), like the workers' table: a
//!    spoofed flood recycles the slots quiet longest instead of growing
//!    memory. An array lookup is inlined by the verifier and the clock is
//!    the tick (`bpf_jiffies64`, inlined too): no helper call on the way of
//!    a followed source.
//!
//! The TAT is updated with a plain load and store, not a compare-and-swap:
//! two CPUs taking the same source's datagram at the same instant may both
//! see the old TAT, so a source may get a datagram or two more through than
//! its burst; never fewer. The clock moves in ticks (4 ms at HZ=250), so a
//! source may also get up to one tick's worth of its rate through at once
//! beyond its burst (the sustained rate is exact). The workers' own check
//! (after this one) still applies the exact limit.
//!
//! The lists are two copies of each trie: the control plane rewrites the
//! copy not in force (at load, on a reload, on a ban) and then flips
//! `ShieldConfig::active`, so a datagram meets either the old lists or the
//! new ones. A drop by a blocked prefix is counted in `SHIELD_HITS` at the
//! slot its trie value names (per ban, for `sip-lb bans`); a source over its
//! rate is written to `SHIELD_OVER` at most every `SHIELD_REPORT_NS`, where
//! the control plane finds the sustained floods it bans.

use core::ptr::{addr_of_mut, read_volatile, write_volatile};

use aya_ebpf::{helpers::generated::bpf_jiffies64, maps::lpm_trie::Key};
use sip_lb_common::maps::{
    ShieldConfig, ShieldGroup, ShieldSource, SHIELD_ALLOW, SHIELD_GROUP_BITS, SHIELD_HIT_SLOTS, SHIELD_REPORT_NS,
    SHIELD_WAYS,
};

use crate::{
    headers::Source,
    maps::{
        SHIELD_BUCKETS_V4, SHIELD_BUCKETS_V6, SHIELD_CONFIG, SHIELD_HITS, SHIELD_NEW, SHIELD_OVER, SHIELD_PREFIXES_V4,
        SHIELD_PREFIXES_V4_B, SHIELD_PREFIXES_V6, SHIELD_PREFIXES_V6_B,
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
    if cfg.interval_ns == 0 {
        return Ok(());
    }
    // The address by value, in two words: the call then needs no copy of
    // `src` in memory.
    let a = &src.addr;
    let w = |i: usize| u64::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3], a[i + 4], a[i + 5], a[i + 6], a[i + 7]]);
    rate(src.v4, w(0), w(8), cfg)
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
/// TAT on by `interval`. A new source starts at now, in the slot of its
/// group quiet longest.
///
/// Not inlined: a BPF-to-BPF call, so that the verifier meets one state
/// after it (only the verdict in r0) instead of one per path through the
/// slot search, each walking the Call-ID scan again.
#[inline(never)]
fn rate(v4: bool, x0: u64, x1: u64, cfg: &ShieldConfig) -> Result<(), Drop> {
    // The tick clock: the verifier inlines bpf_jiffies64 as one load (a
    // nanosecond clock is a helper call, and dominated this stage's cost).
    // SAFETY: no preconditions.
    let now = unsafe { bpf_jiffies64() }.wrapping_mul(cfg.tick_ns);
    let k = &cfg.group_keys;
    if v4 {
        // Bytes 12..16 of the mapped form: the high half of the second word.
        let w = (x1 >> 32) as u32;
        let g = group(k[0].wrapping_mul(u64::from(w)).wrapping_add(k[4]));
        let Some(p) = SHIELD_BUCKETS_V4.get_ptr_mut(g) else { return Ok(()) };
        take(p, w, [x0, x1], now, cfg)
    } else {
        // The four 32-bit words are the halves of the two.
        let h = k[0]
            .wrapping_mul(x0 & 0xffff_ffff)
            .wrapping_add(k[1].wrapping_mul(x0 >> 32))
            .wrapping_add(k[2].wrapping_mul(x1 & 0xffff_ffff))
            .wrapping_add(k[3].wrapping_mul(x1 >> 32))
            .wrapping_add(k[4]);
        let Some(p) = SHIELD_BUCKETS_V6.get_ptr_mut(group(h)) else { return Ok(()) };
        take(p, [x0, x1], [x0, x1], now, cfg)
    }
}

/// The group of a multiply-add-shift hash: its top bits.
#[inline(always)]
fn group(h: u64) -> u32 {
    (h >> (64 - SHIELD_GROUP_BITS)) as u32
}

/// A source address as a slot holds it.
trait Addr: Copy {
    fn same(&self, other: &Self) -> bool;
}

impl Addr for u32 {
    #[inline(always)]
    fn same(&self, other: &Self) -> bool {
        *self == *other
    }
}

impl Addr for [u64; 2] {
    #[inline(always)]
    fn same(&self, other: &Self) -> bool {
        // Word by word: an array compare may become a call to bcmp.
        self[0] == other[0] && self[1] == other[1]
    }
}

/// Counts a datagram from the source `src` (as two words of its address,
/// IPv6 or IPv4-mapped; held in the slot as `addr`) in its group `g`.
///
/// The group is shared by every CPU and updated with plain loads and
/// stores (see the module doc): two CPUs claiming one slot at once leave one
/// of the two sources in it, or a torn IPv6 address that matches neither
/// (its next datagram claims a slot again); either way a limit can only be
/// looser by a datagram, never tighter.
#[inline(always)]
fn take<A: Addr>(g: *mut ShieldGroup<A>, addr: A, src: [u64; 2], now: u64, cfg: &ShieldConfig) -> Result<(), Drop> {
    // Pointers to slot `i`'s fields.
    // SAFETY: `g` is a valid map value of this type (the array lookup's);
    // every slot index is masked below SHIELD_WAYS.
    let source = |i: usize| unsafe { addr_of_mut!((*g).source[i & (SHIELD_WAYS - 1)]) };
    // SAFETY: as above.
    let tat = |i: usize| unsafe { addr_of_mut!((*g).tat[i & (SHIELD_WAYS - 1)]) };
    // SAFETY: as above.
    let reported = |i: usize| unsafe { addr_of_mut!((*g).reported[i & (SHIELD_WAYS - 1)]) };
    // SAFETY: reads a slot's address (a valid, aligned field of the map value).
    let slot = match (0..SHIELD_WAYS).find(|&i| unsafe { read_volatile(source(i)) }.same(&addr)) {
        Some(i) => i,
        None => {
            // A source not followed yet: within this CPU's budget of new
            // sources, if any (a spoofed flood is all new sources; dropped
            // here, it does not evict the sources already followed either).
            admit_new(now, cfg.new_interval_ns, cfg.new_tolerance_ns)?;
            // The slot quiet longest: free (0), else the earliest TAT (an
            // over-limit source's TAT runs ahead of the clock: the last to go).
            let mut v = 0;
            // SAFETY: a valid, aligned field of the map value.
            let mut oldest = unsafe { read_volatile(tat(0)) };
            for i in 1..SHIELD_WAYS {
                // SAFETY: as above.
                let t = unsafe { read_volatile(tat(i)) };
                if t < oldest {
                    (v, oldest) = (i, t);
                }
            }
            // SAFETY: valid, aligned fields of the map value.
            unsafe {
                write_volatile(source(v), addr);
                write_volatile(tat(v), now);
                write_volatile(reported(v), 0);
            }
            v
        }
    };
    // SAFETY: a valid, aligned field of the map value.
    let seen = unsafe { read_volatile(tat(slot)) };
    let t = if seen > now { seen } else { now };
    if t - now > cfg.tolerance_ns {
        // SAFETY: as above.
        if now.wrapping_sub(unsafe { read_volatile(reported(slot)) }) >= SHIELD_REPORT_NS {
            // SAFETY: as above.
            unsafe { write_volatile(reported(slot), now) };
            let [a, b] = [src[0].to_ne_bytes(), src[1].to_ne_bytes()];
            let addr = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
            let _ = SHIELD_OVER.insert(ShieldSource { addr }, now, 0);
        }
        return Err(Drop::RateLimited);
    }
    // SAFETY: as above.
    unsafe { write_volatile(tat(slot), t + cfg.interval_ns) };
    Ok(())
}

/// GCRA on this CPU's budget of new sources (`new_interval` 0: no budget).
#[inline(always)]
fn admit_new(now: u64, new_interval: u64, new_tolerance: u64) -> Result<(), Drop> {
    if new_interval == 0 {
        return Ok(());
    }
    let Some(t) = SHIELD_NEW.get_ptr_mut(0) else { return Ok(()) };
    // SAFETY: this CPU's entry; XDP runs without preemption.
    let t = unsafe { &mut *t };
    let tat = if *t > now { *t } else { now };
    if tat - now > new_tolerance {
        return Err(Drop::RateLimited);
    }
    *t = tat + new_interval;
    Ok(())
}
