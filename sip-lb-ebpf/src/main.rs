//! sip-lb's kernel side: steer each SIP datagram to the worker owning its
//! Call-ID. Two programs share one Call-ID scanner ([`callid`]):
//! - `sip_lb` (XDP): parses L2-L4 ([`headers`]), hashes the Call-ID and
//!   redirects the frame into `CPU_MAP` at the owning worker's CPU, so the
//!   kernel's UDP receive work already runs there; only while the receiving
//!   CPU is busy (`redirect_above`), and never when the owner is this CPU;
//! - `sip_lb_reuseport` (SK_REUSEPORT): in the worker sockets' reuseport
//!   group, picks the owning worker's socket from `WORKER_SOCKS`. It alone
//!   gives Call-ID affinity (also on loopback, without XDP).
//!
//! All maps are in [`maps`]; their types are in `sip_lb_common::maps`.
#![no_std]
#![no_main]

mod callid;
mod headers;
mod maps;
mod shield;
mod xsk;

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{sk_action::SK_PASS, xdp_action},
    helpers::generated::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_skb_load_bytes, bpf_xdp_load_bytes},
    macros::{sk_reuseport, xdp},
    programs::{SkReuseportContext, XdpContext},
    EbpfContext as _,
};
use sip_lb_common::{
    maps::{Counters, PassReason, SteerConfig, MAX_WORKERS, PASS_REASONS, RX_RATE_WINDOW_NS, SCAN_WINDOW},
    worker_for_hash,
};

use crate::maps::{CONFIG, CPU_MAP, REUSEPORT_COUNTERS, RX_RATE, WORKER_SOCKS, XDP_COUNTERS};

/// Shortest payload taken for SIP ("ACK x SIP/2.0" is longer).
const MIN_SIP_LEN: usize = 12;
const UDP_HLEN: usize = 8;

#[inline(always)]
fn count_pass(c: &mut Counters, reason: PassReason) {
    // The volatile read hides the enum's range from LLVM, so the mask stays
    // in the code and the verifier sees a bounded index.
    // SAFETY: reads a local through a valid reference.
    let i = unsafe { core::ptr::read_volatile(&(reason as u32)) } as usize & (PASS_REASONS - 1);
    // SAFETY: i < PASS_REASONS.
    unsafe { *c.passed.get_unchecked_mut(i) += 1 };
}

#[inline(always)]
fn count_steer(c: &mut Counters, worker: usize, hash: u64) {
    // SAFETY: masked index into an array of MAX_WORKERS (a power of two).
    unsafe { *c.steered.get_unchecked_mut(worker & (MAX_WORKERS - 1)) += 1 };
    c.last_hash = hash;
}

/// Window length for a payload of `payload_len` bytes, and whether it is cut.
#[inline(always)]
fn window(payload_len: usize) -> Result<(u32, bool), PassReason> {
    // The volatile read keeps LLVM from testing another register it knows
    // to be related (the UDP length), which the verifier would not connect
    // to the length handed to bpf_xdp_load_bytes (seen once the shield's
    // check became a BPF-to-BPF call).
    // SAFETY: reads a local through a valid reference.
    let payload_len = unsafe { core::ptr::read_volatile(&payload_len) };
    if payload_len < MIN_SIP_LEN {
        return Err(PassReason::NotSip);
    }
    if payload_len > SCAN_WINDOW {
        Ok((SCAN_WINDOW as u32, true))
    } else {
        Ok((payload_len as u32, false))
    }
}

/// Worker index owning `hash`, and the CPU it is pinned to.
#[inline(always)]
fn owner(cfg: &SteerConfig, hash: u64) -> Result<(usize, u32), PassReason> {
    let workers = cfg.workers;
    if workers == 0 || workers > MAX_WORKERS as u32 {
        return Err(PassReason::SteerFailed);
    }
    let w = worker_for_hash(hash, workers) as usize & (MAX_WORKERS - 1);
    Ok((w, cfg.worker_cpus[w]))
}

fn config() -> Result<&'static SteerConfig, PassReason> {
    CONFIG.get(0).ok_or(PassReason::SteerFailed)
}

/// What the XDP program did with a SIP datagram it did not pass for a reason.
enum Steered {
    /// Redirected into the CPU map at the owner's CPU.
    Redirected { worker: usize, hash: u64 },
    /// The owner runs on this CPU: up the stack here, no CPU-map hop.
    KeptLocal { worker: usize, hash: u64 },
    /// This CPU is below the redirect threshold: up the stack here unscanned.
    BelowThreshold,
    /// Dropped by the shield's XDP stage.
    Shielded(shield::Drop),
}

#[xdp(frags)]
pub fn sip_lb(ctx: XdpContext) -> u32 {
    let Some(c) = XDP_COUNTERS.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: this CPU's counters; XDP runs without preemption.
    let c = unsafe { &mut *c };
    let frame_len = headers::frame_len(&ctx);
    c.packets += 1;
    c.bytes += frame_len;
    match xdp_steer(&ctx, frame_len as usize) {
        Ok(Steered::Redirected { worker, hash }) => {
            count_steer(c, worker, hash);
            xdp_action::XDP_REDIRECT
        }
        Ok(Steered::KeptLocal { worker, hash }) => {
            count_steer(c, worker, hash);
            c.kept_local += 1;
            xdp_action::XDP_PASS
        }
        Ok(Steered::BelowThreshold) => {
            c.below_threshold += 1;
            xdp_action::XDP_PASS
        }
        Ok(Steered::Shielded(shield::Drop::Blocked)) => {
            c.shield_blocked += 1;
            xdp_action::XDP_DROP
        }
        Ok(Steered::Shielded(shield::Drop::RateLimited)) => {
            c.shield_rate_limited += 1;
            xdp_action::XDP_DROP
        }
        Err(reason) => {
            count_pass(c, reason);
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn xdp_steer(ctx: &XdpContext, frame_len: usize) -> Result<Steered, PassReason> {
    let payload = headers::udp_payload(ctx, frame_len)?;
    if let Err(d) = shield::check(&payload.src) {
        return Ok(Steered::Shielded(d));
    }
    let (len, cut) = window(payload.len)?;
    let cfg = config()?;
    if !busy(cfg.redirect_above) {
        return Ok(Steered::BelowThreshold);
    }
    let b = callid::scan_buf().ok_or(PassReason::SteerFailed)?;
    // SAFETY: copies `len` <= SCAN_WINDOW bytes into the map value.
    let r = unsafe { bpf_xdp_load_bytes(ctx.ctx, payload.offset as u32, b as *mut c_void, len) };
    let hash = callid::hash_copied(r, b, len as usize, cut)?;
    let (worker, cpu) = owner(cfg, hash)?;
    // SAFETY: no preconditions.
    if cpu == unsafe { bpf_get_smp_processor_id() } {
        return Ok(Steered::KeptLocal { worker, hash });
    }
    match CPU_MAP.redirect(cpu, xdp_action::XDP_PASS as u64) {
        Ok(_) => Ok(Steered::Redirected { worker, hash }),
        Err(_) => Err(PassReason::SteerFailed),
    }
}

/// Counts this SIP datagram in this CPU's rate window; true when the CPU is
/// busy enough for the CPU-map redirect to pay for itself (always with a
/// threshold of 0). The previous window counts too, so the decision holds
/// for a whole window at least instead of flapping.
#[inline(always)]
fn busy(threshold: u32) -> bool {
    if threshold == 0 {
        return true;
    }
    let Some(r) = RX_RATE.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: this CPU's entry; XDP runs without preemption.
    let r = unsafe { &mut *r };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let age = now.wrapping_sub(r.window_start);
    if age >= RX_RATE_WINDOW_NS {
        r.previous = if age < 2 * RX_RATE_WINDOW_NS { r.count } else { 0 };
        r.window_start = now;
        r.count = 0;
    }
    r.count += 1;
    let t = u64::from(threshold);
    r.count > t || r.previous > t
}

#[sk_reuseport]
pub fn sip_lb_reuseport(ctx: SkReuseportContext) -> u32 {
    let Some(c) = REUSEPORT_COUNTERS.get_ptr_mut(0) else {
        return SK_PASS;
    };
    // SAFETY: this CPU's counters; runs in softirq without preemption.
    let c = unsafe { &mut *c };
    c.packets += 1;
    c.bytes += ctx.len() as u64;
    match reuseport_select(&ctx) {
        Ok((worker, hash)) => count_steer(c, worker, hash),
        // SK_PASS without a selection: the kernel picks by 4-tuple hash.
        Err(reason) => count_pass(c, reason),
    }
    SK_PASS
}

#[inline(always)]
fn reuseport_select(ctx: &SkReuseportContext) -> Result<(usize, u64), PassReason> {
    // skb->data is the UDP header here; skb->len is the UDP length.
    let total = ctx.len();
    if total < UDP_HLEN {
        return Err(PassReason::Truncated);
    }
    let (len, cut) = window(total - UDP_HLEN)?;
    let b = callid::scan_buf().ok_or(PassReason::SteerFailed)?;
    // SAFETY: copies `len` <= SCAN_WINDOW bytes into the map value.
    let r = unsafe { bpf_skb_load_bytes(ctx.as_ptr(), UDP_HLEN as u32, b as *mut c_void, len) };
    let hash = callid::hash_copied(r, b, len as usize, cut)?;
    let (worker, _cpu) = owner(config()?, hash)?;
    WORKER_SOCKS.select_reuseport(ctx, worker as u32).map_err(|_| PassReason::SteerFailed)?;
    Ok((worker, hash))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
