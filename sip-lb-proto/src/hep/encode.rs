//! The HEP v3 encoder: chunks into a caller's buffer, no allocation.

use core::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Chunk types of the generic vendor (0) used here.
mod chunk {
    pub const IP_FAMILY: u16 = 0x0001;
    pub const IP_PROTO: u16 = 0x0002;
    pub const IPV4_SRC: u16 = 0x0003;
    pub const IPV4_DST: u16 = 0x0004;
    pub const IPV6_SRC: u16 = 0x0005;
    pub const IPV6_DST: u16 = 0x0006;
    pub const SRC_PORT: u16 = 0x0007;
    pub const DST_PORT: u16 = 0x0008;
    pub const TS_SEC: u16 = 0x0009;
    pub const TS_USEC: u16 = 0x000a;
    pub const PROTO_TYPE: u16 = 0x000b;
    pub const CAPTURE_ID: u16 = 0x000c;
    pub const AUTH_KEY: u16 = 0x000e;
    pub const PAYLOAD: u16 = 0x000f;
}

/// `AF_INET` / `AF_INET6` as HEP writes them (Linux values, as every
/// capture agent sends).
const FAMILY_V4: u8 = 2;
const FAMILY_V6: u8 = 10;
/// IP protocol number of UDP.
const PROTO_UDP: u8 = 17;
/// HEP's payload type for SIP.
const TYPE_SIP: u8 = 1;
/// The chunk header: vendor, type, length.
const CHUNK_HEADER: usize = 6;

/// One SIP message as it crossed the wire.
#[derive(Clone, Copy, Debug)]
pub struct Capture<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Wall-clock time: seconds and microseconds since the Unix epoch.
    pub ts_sec: u32,
    pub ts_usec: u32,
    /// The agent's `capture_id`, for the collector to tell agents apart.
    pub capture_id: u32,
    /// The collector's password (the auth-key chunk), if it wants one.
    pub auth_key: Option<&'a [u8]>,
    /// The SIP message, byte for byte.
    pub payload: &'a [u8],
}

/// The packet would not fit HEP's 16-bit length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge;

/// Encodes `c` into `out` (cleared first). Mixed families (an IPv4 client
/// relayed to an IPv6 backend) are written as IPv6 with the IPv4 side
/// v4-mapped, since a packet has one family.
pub fn encode(c: &Capture<'_>, out: &mut Out<'_>) -> Result<usize, TooLarge> {
    out.clear();
    out.put(b"HEP3");
    out.put(&[0, 0]); // total length, patched below
    let (src, dst) = (c.src.ip(), c.dst.ip());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.chunk(chunk::IP_FAMILY, &[FAMILY_V4]);
            out.chunk(chunk::IP_PROTO, &[PROTO_UDP]);
            out.chunk(chunk::IPV4_SRC, &s.octets());
            out.chunk(chunk::IPV4_DST, &d.octets());
        }
        _ => {
            out.chunk(chunk::IP_FAMILY, &[FAMILY_V6]);
            out.chunk(chunk::IP_PROTO, &[PROTO_UDP]);
            out.chunk(chunk::IPV6_SRC, &v6(src).octets());
            out.chunk(chunk::IPV6_DST, &v6(dst).octets());
        }
    }
    out.chunk(chunk::SRC_PORT, &c.src.port().to_be_bytes());
    out.chunk(chunk::DST_PORT, &c.dst.port().to_be_bytes());
    out.chunk(chunk::TS_SEC, &c.ts_sec.to_be_bytes());
    out.chunk(chunk::TS_USEC, &c.ts_usec.to_be_bytes());
    out.chunk(chunk::PROTO_TYPE, &[TYPE_SIP]);
    out.chunk(chunk::CAPTURE_ID, &c.capture_id.to_be_bytes());
    if let Some(key) = c.auth_key {
        out.chunk(chunk::AUTH_KEY, key);
    }
    out.chunk(chunk::PAYLOAD, c.payload);
    if out.overflowed || out.len > usize::from(u16::MAX) {
        return Err(TooLarge);
    }
    let total = (out.len as u16).to_be_bytes();
    out.buf[4..6].copy_from_slice(&total);
    Ok(out.len)
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// The largest HEP packet: its length field is 16 bits.
pub const MAX_PACKET: usize = u16::MAX as usize;

/// A write cursor over a caller's buffer (the core does not allocate).
pub struct Out<'b> {
    pub(crate) buf: &'b mut [u8],
    pub(crate) len: usize,
    pub(crate) overflowed: bool,
}

impl<'b> Out<'b> {
    /// A cursor over `buf`; [`MAX_PACKET`] bytes always suffice.
    pub fn new(buf: &'b mut [u8]) -> Out<'b> {
        Out { buf, len: 0, overflowed: false }
    }

    /// The encoded packet.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.overflowed = false;
    }

    pub(crate) fn put(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.len..self.len + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.len += b.len();
            }
            None => self.overflowed = true,
        }
    }

    pub(crate) fn chunk(&mut self, kind: u16, value: &[u8]) {
        let Ok(len) = u16::try_from(CHUNK_HEADER + value.len()) else {
            self.overflowed = true;
            return;
        };
        self.put(&0u16.to_be_bytes());
        self.put(&kind.to_be_bytes());
        self.put(&len.to_be_bytes());
        self.put(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK1\r\nCall-ID: a@b\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";

    fn capture<'a>(src: &str, dst: &str, key: Option<&'a [u8]>) -> Capture<'a> {
        Capture {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            ts_sec: 1_765_000_000,
            ts_usec: 123_456,
            capture_id: 2001,
            auth_key: key,
            payload: INVITE,
        }
    }

    fn encoded(c: &Capture<'_>) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_PACKET];
        let mut out = Out::new(&mut buf);
        let n = encode(c, &mut out).unwrap();
        assert_eq!(n, out.bytes().len());
        out.bytes().to_vec()
    }

    /// The `hep` crate parses what we write, field by field.
    #[test]
    fn round_trip_v4_through_the_hep_crate() {
        let b = encoded(&capture("10.0.0.9:5062", "10.0.0.1:5060", Some(b"s3cret")));
        assert_eq!(&b[..4], b"HEP3");
        assert_eq!(usize::from(u16::from_be_bytes([b[4], b[5]])), b.len());
        let p = hep::parse_packet(&b).unwrap();
        assert_eq!(p.ip_protocol_family, 2);
        assert_eq!(p.ip_protocol_id, 17);
        assert_eq!(p.ipv4_src_address, "10.0.0.9".parse::<core::net::Ipv4Addr>().unwrap());
        assert_eq!(p.ipv4_dst_address, "10.0.0.1".parse::<core::net::Ipv4Addr>().unwrap());
        assert_eq!((p.proto_src_port, p.proto_dst_port), (5062, 5060));
        assert_eq!((p.timestamp_seconds, p.timestamp_micro_seconds_offset), (1_765_000_000, 123_456));
        assert_eq!(p.proto_type, hep::CapProtoType::Sip);
        assert_eq!(p.capture_agent_id, 2001);
        assert_eq!(p.authenticate_key, "s3cret");
        assert_eq!(p.packet_payload.as_bytes(), INVITE);
    }

    #[test]
    fn round_trip_v6_and_mixed_families() {
        let b = encoded(&capture("[2001:db8::9]:5062", "[2001:db8::1]:5060", None));
        let p = hep::parse_packet(&b).unwrap();
        assert_eq!(p.ip_protocol_family, 10);
        assert_eq!(p.ipv6_src_address, "2001:db8::9".parse::<core::net::Ipv6Addr>().unwrap());
        assert_eq!(p.ipv6_dst_address, "2001:db8::1".parse::<core::net::Ipv6Addr>().unwrap());
        assert_eq!(p.authenticate_key, "");
        assert_eq!(p.packet_payload.as_bytes(), INVITE);

        let b = encoded(&capture("10.0.0.9:5062", "[2001:db8::1]:5060", None));
        let p = hep::parse_packet(&b).unwrap();
        assert_eq!(p.ip_protocol_family, 10);
        assert_eq!(p.ipv6_src_address, "::ffff:10.0.0.9".parse::<core::net::Ipv6Addr>().unwrap());
    }

    /// Byte-exact layout of the start, so an encoder change is deliberate.
    #[test]
    fn layout_is_pinned() {
        let b = encoded(&capture("10.0.0.9:5062", "10.0.0.1:5060", None));
        #[rustfmt::skip]
        let head: &[u8] = &[
            b'H', b'E', b'P', b'3', 0, 0,
            0, 0, 0, 1, 0, 7, 2,
            0, 0, 0, 2, 0, 7, 17,
            0, 0, 0, 3, 0, 10, 10, 0, 0, 9,
            0, 0, 0, 4, 0, 10, 10, 0, 0, 1,
            0, 0, 0, 7, 0, 8, 0x13, 0xc6,
            0, 0, 0, 8, 0, 8, 0x13, 0xc4,
        ];
        assert_eq!(&b[..4], &head[..4]);
        assert_eq!(&b[6..head.len()], &head[6..]);
        // 6 header + 4 x 7 + 2 x 10 + 2 x 8 + 2 x 10 (times) + 7 (type) + 10 (id) + 6 + payload
        assert_eq!(b.len(), 6 + 14 + 20 + 16 + 20 + 7 + 10 + 6 + INVITE.len());
    }

    #[test]
    fn too_large_is_refused() {
        let big = vec![b'x'; MAX_PACKET];
        let mut c = capture("10.0.0.9:5062", "10.0.0.1:5060", None);
        c.payload = &big;
        let mut buf = vec![0u8; MAX_PACKET];
        assert_eq!(encode(&c, &mut Out::new(&mut buf)), Err(TooLarge));
        // A small buffer is refused, never overrun.
        let mut small = [0u8; 40];
        c.payload = INVITE;
        assert_eq!(encode(&c, &mut Out::new(&mut small)), Err(TooLarge));
    }
}
