//! `sip_lb_xsk` (XDP): the AF_XDP data path's kernel side. For a SIP
//! datagram to one of our addresses and ports that fits one frame, it
//! hashes the Call-ID (the same scanner and hash as `sip_lb`), prepends the
//! owning worker and the hash to the frame (`XskMeta`, via
//! `bpf_xdp_adjust_head`) and redirects into `XSK_MAP[rx_queue_index]`: an
//! XSKMAP redirect only reaches the socket bound to the queue the frame
//! arrived on, so userspace spreads the work by Call-ID itself, from the
//! metadata. Everything else (ARP, ICMP, fragments, IPv6 extension headers,
//! other ports or addresses, multi-buffer frames, no Call-ID) is XDP_PASS,
//! counted by reason, for the kernel and sip-lb's socket path.

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_load_bytes},
    macros::xdp,
    programs::XdpContext,
};
use sip_lb_common::{
    maps::{PassReason, XskAddr, XskMeta, MAX_WORKERS, XSK_META_MAGIC, XSK_PASS_SLOTS},
    worker_for_hash,
};

use crate::{
    callid, headers,
    maps::{CONFIG, XSK_ADDRS, XSK_COUNTERS, XSK_MAP},
    shield::{self, Drop},
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

/// Largest frame redirected: it must fit one UMEM chunk (4 KiB less the
/// kernel's 256-byte headroom and our metadata) with room for userspace to
/// write a slightly longer forwarded datagram into the same chunk.
const XSK_MAX_FRAME: usize = 3072;

#[xdp(frags)]
pub fn sip_lb_xsk(ctx: XdpContext) -> u32 {
    let Some(c) = XSK_COUNTERS.get_ptr_mut(0) else {
        return xdp_action::XDP_PASS;
    };
    // SAFETY: this CPU's counters; XDP runs without preemption.
    let c = unsafe { &mut *c };
    let frame_len = headers::frame_len(&ctx);
    c.packets += 1;
    c.bytes += frame_len;
    match redirect(&ctx, frame_len as usize) {
        Ok(Redirect::Shielded(Drop::Blocked)) => {
            c.shield_blocked += 1;
            xdp_action::XDP_DROP
        }
        Ok(Redirect::Shielded(Drop::RateLimited)) => {
            c.shield_rate_limited += 1;
            xdp_action::XDP_DROP
        }
        Ok(Redirect::Socket { action, worker, hash }) => {
            // SAFETY: masked index into an array of MAX_WORKERS (a power of two).
            unsafe { *c.redirected.get_unchecked_mut(worker & (MAX_WORKERS - 1)) += 1 };
            c.last_hash = hash;
            action
        }
        Err(reason) => {
            // The volatile read keeps the mask in the code (see `count_pass`).
            // SAFETY: reads a local through a valid reference.
            let i = unsafe { core::ptr::read_volatile(&(reason as u32)) } as usize & (XSK_PASS_SLOTS - 1);
            // SAFETY: i < XSK_PASS_SLOTS.
            unsafe { *c.passed.get_unchecked_mut(i) += 1 };
            xdp_action::XDP_PASS
        }
    }
}

/// What `sip_lb_xsk` did with a frame it did not pass for a reason.
enum Redirect {
    /// Into the queue's AF_XDP socket (`action`), for `worker`.
    Socket { action: u32, worker: usize, hash: u64 },
    /// Dropped by the shield's XDP stage.
    Shielded(Drop),
}

#[inline(always)]
fn redirect(ctx: &XdpContext, frame_len: usize) -> Result<Redirect, PassReason> {
    let payload = headers::udp_payload(ctx, frame_len)?;
    if let Err(d) = shield::check(&payload.src) {
        return Ok(Redirect::Shielded(d));
    }
    // One buffer (no fragments of a jumbo frame), small enough for a chunk.
    if ctx.data_end() - ctx.data() != frame_len || frame_len > XSK_MAX_FRAME {
        return Err(PassReason::TooLong);
    }
    if !to_us(ctx)? {
        return Err(PassReason::OtherAddress);
    }
    let (len, cut) = crate::window(payload.len)?;
    let b = callid::scan_buf().ok_or(PassReason::SteerFailed)?;
    // SAFETY: copies `len` <= SCAN_WINDOW bytes into the map value.
    let r = unsafe { bpf_xdp_load_bytes(ctx.ctx, payload.offset as u32, b as *mut c_void, len) };
    let hash = callid::hash_copied(r, b, len as usize, cut)?;
    let cfg = CONFIG.get(0).ok_or(PassReason::SteerFailed)?;
    let workers = cfg.workers;
    if workers == 0 || workers > MAX_WORKERS as u32 {
        return Err(PassReason::SteerFailed);
    }
    let worker = worker_for_hash(hash, workers) as usize & (MAX_WORKERS - 1);
    write_meta(ctx, hash, worker as u32)?;
    // No socket at this queue: the XDP_PASS flag makes the helper pass.
    match XSK_MAP.redirect(ctx.rx_queue_index(), xdp_action::XDP_PASS as u64) {
        Ok(action) => Ok(Redirect::Socket { action, worker, hash }),
        Err(_) => {
            strip_meta(ctx);
            Err(PassReason::NoSocket)
        }
    }
}

/// Prepends `XskMeta` to the frame (`bpf_xdp_adjust_head`: the kernel
/// refuses `bpf_xdp_adjust_meta` to XDP programs here, verified on 6.18),
/// so the AF_XDP descriptor starts with it. Invalidates every packet
/// pointer taken before; [`strip_meta`] undoes it.
#[inline(always)]
fn write_meta(ctx: &XdpContext, hash: u64, worker: u32) -> Result<(), PassReason> {
    let size = size_of::<XskMeta>();
    // SAFETY: helper call on our context; a negative delta grows the frame.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(size as i32)) } != 0 {
        return Err(PassReason::SteerFailed);
    }
    let m = headers::at(ctx, 0, size).map_err(|_| PassReason::SteerFailed)? as *mut u8;
    // SAFETY: `size` bytes at the frame's start, checked against data_end.
    unsafe {
        core::ptr::write_unaligned(m as *mut u64, hash);
        core::ptr::write_unaligned(m.add(8) as *mut u32, worker);
        core::ptr::write_unaligned(m.add(12) as *mut u32, XSK_META_MAGIC);
    }
    Ok(())
}

/// Removes the prepended `XskMeta` again (the frame goes to the kernel).
#[inline(always)]
fn strip_meta(ctx: &XdpContext) {
    // SAFETY: helper call on our context; shrinks by what write_meta added.
    unsafe { bpf_xdp_adjust_head(ctx.ctx, size_of::<XskMeta>() as i32) };
}

/// Whether the destination address is one of ours (`XSK_ADDRS`, exact or
/// the family's wildcard). `udp_payload` already accepted the frame as
/// IPv4/IPv6 UDP, so only the L3 offset is found again here.
#[inline(always)]
fn to_us(ctx: &XdpContext) -> Result<bool, PassReason> {
    let mut off = ETH_HLEN;
    let mut proto = headers::be16(headers::at(ctx, 12, 2)?, 0);
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = headers::be16(headers::at(ctx, off + 2, 2)?, 0);
        off += 4;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            proto = headers::be16(headers::at(ctx, off + 2, 2)?, 0);
            off += 4;
        }
    }
    let (key, any) = if proto == ETH_P_IP {
        let p = headers::at(ctx, off + 16, 4)?;
        // SAFETY: 4 bytes checked above.
        let a = unsafe { core::ptr::read_unaligned(p as *const [u8; 4]) };
        (XskAddr::v4(a), XskAddr::v4([0; 4]))
    } else {
        let p = headers::at(ctx, off + 24, 16)?;
        // SAFETY: 16 bytes checked above.
        let a = unsafe { core::ptr::read_unaligned(p as *const [u8; 16]) };
        (XskAddr::v6(a), XskAddr::v6([0; 16]))
    };
    // SAFETY: the values are plain u8, read and not kept.
    Ok(unsafe { XSK_ADDRS.get(key).is_some() || XSK_ADDRS.get(any).is_some() })
}
