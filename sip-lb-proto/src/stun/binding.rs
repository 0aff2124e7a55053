//! The Binding request and its success response (RFC 5389 §6, §15.2).
//!
//! A STUN message starts with two zero bits, a 14-bit type, a 16-bit length
//! (of the attributes, a multiple of 4), the magic cookie and a 96-bit
//! transaction ID; a SIP message starts with a letter, so the first byte
//! tells them apart. The answer is never larger than the request: the source
//! of a UDP datagram is unverified, so a larger answer would amplify a
//! spoofed flood (a client that wants an answer pads its request, e.g. with
//! SOFTWARE or PADDING; 32 bytes are enough for IPv4, 44 for IPv6).

use std::net::{IpAddr, SocketAddr};

/// RFC 5389 §6.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

const HEADER: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;

/// What became of a STUN datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `out` holds the Binding success response.
    Answered,
    /// A Binding request smaller than its answer: not answered.
    WouldAmplify,
    /// Not a well-formed Binding request (another method, a response, a bad
    /// length): not answered.
    Malformed,
}

impl Outcome {
    /// Metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::WouldAmplify => "would_amplify",
            Outcome::Malformed => "malformed",
        }
    }
}

/// Whether `d` looks like STUN (header with the magic cookie) rather than
/// SIP: the cheap test the worker makes before the SIP parser.
pub fn is_stun(d: &[u8]) -> bool {
    d.len() >= HEADER && d[0] & 0xc0 == 0 && d[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// Answers the Binding request `req` from `src` into `out` (cleared first;
/// empty unless [`Outcome::Answered`]). Attributes of the request are not
/// interpreted (RFC 5389 §7.3.1 would answer 420 to unknown
/// comprehension-required ones; a keep-alive carries none).
pub fn answer(req: &[u8], src: SocketAddr, out: &mut Vec<u8>) -> Outcome {
    out.clear();
    if !is_stun(req) {
        return Outcome::Malformed;
    }
    let kind = u16::from_be_bytes([req[0], req[1]]);
    let len = usize::from(u16::from_be_bytes([req[2], req[3]]));
    if kind != BINDING_REQUEST || len % 4 != 0 || HEADER + len != req.len() {
        return Outcome::Malformed;
    }
    let ip = src.ip().to_canonical();
    let value_len: u16 = if ip.is_ipv4() { 8 } else { 20 };
    if HEADER + 4 + usize::from(value_len) > req.len() {
        return Outcome::WouldAmplify;
    }
    let txid = &req[8..HEADER];
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&(4 + value_len).to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(txid);
    out.extend_from_slice(&XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&value_len.to_be_bytes());
    out.push(0);
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = src.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match ip {
        IpAddr::V4(v4) => {
            out.push(0x01);
            out.extend_from_slice(&port.to_be_bytes());
            out.extend(v4.octets().iter().zip(cookie).map(|(a, k)| a ^ k));
        }
        IpAddr::V6(v6) => {
            out.push(0x02);
            out.extend_from_slice(&port.to_be_bytes());
            let key = cookie.iter().chain(txid);
            out.extend(v6.octets().iter().zip(key).map(|(a, k)| a ^ k));
        }
    }
    Outcome::Answered
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Binding request with a SOFTWARE attribute of `pad` bytes (a multiple of 4).
    fn request(pad: usize) -> Vec<u8> {
        let mut r = vec![0x00, 0x01];
        let attrs = if pad == 0 { 0 } else { 4 + pad };
        r.extend_from_slice(&(attrs as u16).to_be_bytes());
        r.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        r.extend_from_slice(b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c");
        if pad > 0 {
            r.extend_from_slice(&0x8022u16.to_be_bytes());
            r.extend_from_slice(&(pad as u16).to_be_bytes());
            r.extend(std::iter::repeat_n(b'x', pad));
        }
        r
    }

    #[test]
    fn answers_ipv4_with_xor_mapped_address() {
        let mut out = Vec::new();
        let src: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        assert_eq!(answer(&request(8), src, &mut out), Outcome::Answered);
        assert_eq!(out.len(), 32);
        assert_eq!(&out[0..4], &[0x01, 0x01, 0x00, 0x0c]);
        assert_eq!(&out[8..20], &request(8)[8..20]);
        // RFC 5769 §2.2 style: port 32853 ^ 0x2112 = 0xa147, 192.0.2.1 ^ cookie = e1 12 a6 43.
        assert_eq!(&out[20..32], &[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]);
    }

    #[test]
    fn answers_ipv6_xored_with_cookie_and_transaction() {
        let mut out = Vec::new();
        let src: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap();
        assert_eq!(answer(&request(20), src, &mut out), Outcome::Answered);
        assert_eq!(out.len(), 44);
        // RFC 5769 §2.3's address and port, with this request's transaction ID.
        let mut want = [0u8; 16];
        let key: Vec<u8> = MAGIC_COOKIE.to_be_bytes().iter().chain(&request(0)[8..20]).copied().collect();
        let ip: std::net::Ipv6Addr = "2001:db8:1234:5678:11:2233:4455:6677".parse().unwrap();
        for (i, (a, k)) in ip.octets().iter().zip(&key).enumerate() {
            want[i] = a ^ k;
        }
        assert_eq!(&out[24..28], &[0x00, 0x02, 0xa1, 0x47]);
        assert_eq!(&out[28..44], &want);
    }

    #[test]
    fn never_larger_than_the_request_and_only_binding_requests() {
        let mut out = Vec::new();
        let v4: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        // A bare 20-byte request would get 32 bytes back.
        assert_eq!(answer(&request(0), v4, &mut out), Outcome::WouldAmplify);
        assert!(out.is_empty());
        assert_eq!(answer(&request(8), "[2001:db8::1]:5060".parse().unwrap(), &mut out), Outcome::WouldAmplify);
        let mut indication = request(8);
        indication[1] = 0x11;
        assert_eq!(answer(&indication, v4, &mut out), Outcome::Malformed);
        let mut short = request(8);
        short.pop();
        assert_eq!(answer(&short, v4, &mut out), Outcome::Malformed);
        assert!(!is_stun(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n"));
        assert!(!is_stun(b"\r\n\r\n"));
    }
}
