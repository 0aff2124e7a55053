//! Ethernet / VLAN / IPv4 / IPv6 / UDP parsing for the XDP program, with
//! direct packet access. Finds where the UDP payload starts, or says why the
//! frame is not ours.

use aya_ebpf::{helpers::generated::bpf_xdp_get_buff_len, programs::XdpContext};
use sip_lb_common::maps::PassReason;

use crate::maps::SIP_PORTS;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;
const IPV6_FRAGMENT: u8 = 44;
const UDP_HLEN: usize = 8;

/// Where the SIP payload is, in bytes from the start of the frame, and who
/// sent it.
pub struct Payload {
    pub offset: usize,
    pub len: usize,
    pub src: Source,
}

/// The datagram's source address: IPv6, or IPv4 in its mapped form
/// (`::ffff:a.b.c.d`, bytes 12..16 the address) with `v4` set. Aligned, so
/// that the shield reads the address in words, not byte by byte.
#[repr(C, align(8))]
pub struct Source {
    pub addr: [u8; 16],
    pub v4: bool,
}

/// Bounds-checked pointer to `len` bytes at `off` (the check the verifier wants).
#[inline(always)]
pub fn at(ctx: &XdpContext, off: usize, len: usize) -> Result<*const u8, PassReason> {
    let start = ctx.data() + off;
    if start + len > ctx.data_end() {
        return Err(PassReason::Truncated);
    }
    Ok(start as *const u8)
}

#[inline(always)]
pub fn be16(p: *const u8, i: usize) -> u16 {
    // SAFETY: callers checked `p .. p + i + 2` against data_end.
    unsafe { ((*p.add(i) as u16) << 8) | *p.add(i + 1) as u16 }
}

/// Parses L2-L4; `Ok` only for a complete, unfragmented UDP datagram to a
/// SIP port. `frame_len`: the whole frame's length ([`frame_len`]).
#[inline(always)]
pub fn udp_payload(ctx: &XdpContext, frame_len: usize) -> Result<Payload, PassReason> {
    let eth = at(ctx, 0, ETH_HLEN)?;
    let mut proto = be16(eth, 12);
    let mut off = ETH_HLEN;
    // Up to two tags: 802.1Q, or 802.1ad (QinQ) outer + 802.1Q inner.
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        let tag = at(ctx, off, 4)?;
        proto = be16(tag, 2);
        off += 4;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            let tag = at(ctx, off, 4)?;
            proto = be16(tag, 2);
            off += 4;
        }
    }

    let mut src = Source { v4: false, addr: [0; 16] };
    let l4_off = match proto {
        ETH_P_IP => {
            let ip = at(ctx, off, 20)?;
            // SAFETY: 20 bytes checked above.
            let (vihl, frag, l4) = unsafe { (*ip, be16(ip, 6), *ip.add(9)) };
            // SAFETY: the source address is bytes 12..16 of the 20 checked.
            let a = unsafe { core::ptr::read_unaligned(ip.add(12) as *const [u8; 4]) };
            src.v4 = true;
            src.addr = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]];
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if ihl < 20 {
                return Err(PassReason::Truncated);
            }
            if frag & 0x3fff != 0 {
                return Err(PassReason::Fragment);
            }
            if l4 != IPPROTO_UDP {
                return Err(PassReason::NotIpUdp);
            }
            off + ihl
        }
        ETH_P_IPV6 => {
            let ip = at(ctx, off, 40)?;
            // SAFETY: 40 bytes checked above.
            let next = unsafe { *ip.add(6) };
            if next == IPV6_FRAGMENT {
                return Err(PassReason::Fragment);
            }
            if next != IPPROTO_UDP {
                return Err(PassReason::NotIpUdp);
            }
            // SAFETY: the source address is bytes 8..24 of the 40 checked.
            src.addr = unsafe { core::ptr::read_unaligned(ip.add(8) as *const [u8; 16]) };
            off + 40
        }
        _ => return Err(PassReason::NotIpUdp),
    };

    let udp = at(ctx, l4_off, UDP_HLEN)?;
    let dport = be16(udp, 2);
    let ulen = be16(udp, 4) as usize;
    let bits = SIP_PORTS.get(dport as u32 / 64).copied().unwrap_or(0);
    if bits & (1u64 << (dport % 64)) == 0 {
        return Err(PassReason::OtherPort);
    }
    if ulen < UDP_HLEN {
        return Err(PassReason::Truncated);
    }
    let offset = l4_off + UDP_HLEN;
    let len = ulen - UDP_HLEN;
    if offset + len > frame_len {
        return Err(PassReason::Truncated);
    }
    Ok(Payload { offset, len, src })
}

/// Length of the whole frame, including the fragments of a multi-buffer
/// (jumbo) frame.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> u64 {
    // SAFETY: plain helper call on our context.
    unsafe { bpf_xdp_get_buff_len(ctx.ctx) }
}
