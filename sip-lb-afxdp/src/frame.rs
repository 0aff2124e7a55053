//! Frames on the wire for the AF_XDP path: reading a received Ethernet +
//! IPv4/IPv6 + UDP frame ([`parse_udp`]) and writing one around a payload
//! ([`write_udp`]). In AF_XDP mode sip-lb owns layers 2-4 on transmit: MACs,
//! the IPv4 header checksum, the UDP checksum (always computed; mandatory on
//! IPv6), the IP ID and the TTL / hop limit.
//!
//! IP ID (RFC 6864): every IPv4 datagram written here is atomic (DF set, no
//! fragments: anything longer than the MTU goes through the kernel's socket
//! path instead), so the ID carries no meaning; it is still a per-sender
//! counter rather than 0, which old middleboxes handle best.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;
const UDP_HLEN: usize = 8;
/// TTL / hop limit of the datagrams written (Linux's default).
pub const DEFAULT_TTL: u8 = 64;

/// A received UDP datagram: its addresses and where its payload is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Udp {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Range<usize>,
}

fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// Parses Ethernet (up to two VLAN tags), IPv4 (with options, not a
/// fragment) or IPv6 (UDP right after the fixed header), UDP. `None` for
/// anything else or a length that does not add up.
pub fn parse_udp(f: &[u8]) -> Option<Udp> {
    let mut off = ETH_HLEN;
    let mut proto = be16(f.get(..ETH_HLEN)?, 12);
    for _ in 0..2 {
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            proto = be16(f.get(off..off + 4)?, 2);
            off += 4;
        }
    }
    let (src, dst, l4) = match proto {
        ETH_P_IP => {
            let ip = f.get(off..off + 20)?;
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            if ip[0] >> 4 != 4 || ihl < 20 || be16(ip, 6) & 0x3fff != 0 || ip[9] != IPPROTO_UDP {
                return None;
            }
            let total = usize::from(be16(ip, 2));
            if total < ihl + UDP_HLEN || off + total > f.len() {
                return None;
            }
            let s = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let d = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            (IpAddr::V4(s), IpAddr::V4(d), off + ihl)
        }
        ETH_P_IPV6 => {
            let ip = f.get(off..off + 40)?;
            if ip[0] >> 4 != 6 || ip[6] != IPPROTO_UDP {
                return None;
            }
            let s: [u8; 16] = ip[8..24].try_into().ok()?;
            let d: [u8; 16] = ip[24..40].try_into().ok()?;
            (IpAddr::V6(Ipv6Addr::from(s)), IpAddr::V6(Ipv6Addr::from(d)), off + 40)
        }
        _ => return None,
    };
    let udp = f.get(l4..l4 + UDP_HLEN)?;
    let ulen = usize::from(be16(udp, 4));
    if ulen < UDP_HLEN || l4 + ulen > f.len() {
        return None;
    }
    Some(Udp {
        src: SocketAddr::new(src, be16(udp, 0)),
        dst: SocketAddr::new(dst, be16(udp, 2)),
        payload: l4 + UDP_HLEN..l4 + ulen,
    })
}

/// The link layer of a frame to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2 {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

/// Bytes before the payload: Ethernet + IP + UDP headers.
pub const fn header_len(v6: bool) -> usize {
    ETH_HLEN + if v6 { 40 } else { 20 } + UDP_HLEN
}

/// One's-complement sum of `b` as big-endian 16-bit words (odd tail padded).
fn sum(b: &[u8], mut acc: u64) -> u64 {
    let mut words = b.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Writes Ethernet + IP + UDP + `payload` at the start of `buf`; returns the
/// frame's length, or `None` if `buf` is too short or the addresses are of
/// different families. `ip_id` is used for IPv4 only.
pub fn write_udp(
    buf: &mut [u8],
    l2: &L2,
    src: SocketAddr,
    dst: SocketAddr,
    ip_id: u16,
    ttl: u8,
    payload: &[u8],
) -> Option<usize> {
    let v6 = match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => false,
        (IpAddr::V6(_), IpAddr::V6(_)) => true,
        _ => return None,
    };
    let hl = header_len(v6);
    let total = hl + payload.len();
    let udp_len = UDP_HLEN + payload.len();
    if buf.len() < total || udp_len > usize::from(u16::MAX) {
        return None;
    }
    let f = &mut buf[..total];
    f[0..6].copy_from_slice(&l2.dst_mac);
    f[6..12].copy_from_slice(&l2.src_mac);
    let l4 = hl - UDP_HLEN;
    // Pseudo-header sum (addresses, protocol, UDP length) for the UDP checksum.
    let mut pseudo = u64::from(IPPROTO_UDP) + udp_len as u64;
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
            let ip = &mut f[ETH_HLEN..l4];
            ip[0] = 0x45;
            ip[1] = 0;
            ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&ip_id.to_be_bytes());
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF
            ip[8] = ttl;
            ip[9] = IPPROTO_UDP;
            ip[10..12].fill(0);
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = fold(sum(ip, 0));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            pseudo = sum(&ip[12..20], pseudo);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
            let ip = &mut f[ETH_HLEN..l4];
            ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
            ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            ip[6] = IPPROTO_UDP;
            ip[7] = ttl;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            pseudo = sum(&ip[8..40], pseudo);
        }
        _ => return None,
    }
    let (udp, body) = f[l4..].split_at_mut(UDP_HLEN);
    body.copy_from_slice(payload);
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[6..8].fill(0);
    let c = fold(sum(body, sum(udp, pseudo)));
    // A computed 0 is sent as all ones (0 means "no checksum" on IPv4).
    udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L2: L2 = L2 { src_mac: [2, 0, 0, 0, 0, 1], dst_mac: [2, 0, 0, 0, 0, 2] };

    /// The one's-complement sum of a header with its checksum is all ones.
    fn verifies(b: &[u8], pseudo: u64) -> bool {
        fold(sum(b, pseudo)) == 0
    }

    #[test]
    fn ipv4_round_trip_and_checksums() {
        let (src, dst): (SocketAddr, SocketAddr) = ("10.0.0.1:5060".parse().unwrap(), "10.0.1.2:5070".parse().unwrap());
        let mut buf = [0u8; 256];
        let n = write_udp(&mut buf, &L2, src, dst, 0x1234, DEFAULT_TTL, b"OPTIONS sip:x SIP/2.0\r\n\r\n").unwrap();
        let f = &buf[..n];
        assert_eq!(n, header_len(false) + 25);
        assert_eq!(&f[0..6], &L2.dst_mac);
        assert_eq!(&f[6..12], &L2.src_mac);
        let ip = &f[14..34];
        assert!(verifies(ip, 0), "IPv4 header checksum");
        assert_eq!(ip[8], 64);
        assert_eq!(be16(ip, 4), 0x1234);
        assert_eq!(be16(ip, 6), 0x4000, "DF, not a fragment");
        let udp = parse_udp(f).unwrap();
        assert_eq!((udp.src, udp.dst), (src, dst));
        assert_eq!(&f[udp.payload.clone()], b"OPTIONS sip:x SIP/2.0\r\n\r\n");
        let pseudo = sum(&ip[12..20], 17 + (n - 34) as u64);
        assert!(verifies(&f[34..], pseudo), "UDP checksum");
    }

    #[test]
    fn ipv6_round_trip_and_checksum() {
        let (src, dst): (SocketAddr, SocketAddr) =
            ("[fd00::1]:5060".parse().unwrap(), "[fd00:1::2]:5080".parse().unwrap());
        let mut buf = [0u8; 256];
        // Odd length: the padded last byte must count.
        let n = write_udp(&mut buf, &L2, src, dst, 0, DEFAULT_TTL, b"SIP/2.0 200 OK\r\n\r\nx").unwrap();
        let f = &buf[..n];
        let ip = &f[14..54];
        assert_eq!(ip[7], 64, "hop limit");
        let udp = parse_udp(f).unwrap();
        assert_eq!((udp.src, udp.dst), (src, dst));
        assert_eq!(&f[udp.payload.clone()], b"SIP/2.0 200 OK\r\n\r\nx");
        let pseudo = sum(&ip[8..40], 17 + (n - 54) as u64);
        assert!(verifies(&f[54..], pseudo), "UDP checksum");
        assert_ne!(be16(f, 60), 0, "IPv6 UDP checksum is mandatory");
    }

    /// A checksum computed elsewhere: a known IPv4 header (Wikipedia's
    /// example) gets 0xb861.
    #[test]
    fn ipv4_header_checksum_known_value() {
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00,
            0xc7,
        ];
        assert_eq!(fold(sum(&h, 0)), 0xb861);
    }

    #[test]
    fn rejects_what_is_not_one_udp_datagram() {
        let (src, dst): (SocketAddr, SocketAddr) = ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
        let mut buf = [0u8; 128];
        let n = write_udp(&mut buf, &L2, src, dst, 1, 64, b"hello").unwrap();
        assert!(parse_udp(&buf[..n - 1]).is_none(), "UDP length past the frame");
        let mut frag = buf;
        frag[14 + 6] = 0x20; // MF
        assert!(parse_udp(&frag[..n]).is_none(), "fragment");
        let mut tcp = buf;
        tcp[14 + 9] = 6;
        assert!(parse_udp(&tcp[..n]).is_none(), "TCP");
        assert!(write_udp(&mut buf, &L2, src, "[::1]:2".parse().unwrap(), 1, 64, b"x").is_none(), "mixed families");
        assert!(write_udp(&mut buf[..40], &L2, src, dst, 1, 64, b"hello").is_none(), "too short");
    }

    #[test]
    fn vlan_tagged_frames_parse() {
        let (src, dst): (SocketAddr, SocketAddr) = ("10.0.0.1:1".parse().unwrap(), "10.0.0.2:2".parse().unwrap());
        let mut buf = [0u8; 128];
        let n = write_udp(&mut buf, &L2, src, dst, 1, 64, b"hello").unwrap();
        let mut tagged = buf[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        tagged.extend_from_slice(&buf[12..n]);
        let udp = parse_udp(&tagged).unwrap();
        assert_eq!(&tagged[udp.payload], b"hello");
    }
}
