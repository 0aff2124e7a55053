//! The client's top Via as a server sees it (RFC 3261 §18.2.1, RFC 3581):
//! stamp `received` and fill an empty `rport`, and the address a response
//! to it goes to (§18.2.2).

use super::splice::{Edits, Insert};
use crate::sip::text::same_ip;
use crate::sip::via::Via;
use std::net::SocketAddr;

/// Pushes the received/rport edits for the top Via of a request from `src`.
pub fn stamp(buf: &[u8], via: &Via, src: SocketAddr, edits: &mut Edits<'_>) {
    let empty_rport = via.rport == Some(None);
    if empty_rport {
        edits.insert(via.rport_name_end as usize, Insert::RportValue(src.port()));
    }
    // RFC 3581 §4: with rport, received is added even when it would match.
    let differs = !via.host_ip(buf).is_some_and(|ip| same_ip(ip, src.ip()));
    if !(empty_rport || differs) {
        return;
    }
    let ip = src.ip().to_canonical();
    match via.received {
        Some(r) => edits.replace(r.start(), r.end(), Insert::Ip(ip)),
        None => edits.insert(via.end as usize, Insert::Received(ip)),
    }
}

/// Where a stateless reply to this request goes. The host part is always the
/// packet source: either sent-by equals it or `received` now says so. The
/// port is the source port with `rport`, else sent-by port or 5060.
pub fn reply_target(via: Option<&Via>, src: SocketAddr) -> SocketAddr {
    match via {
        Some(v) if v.rport.is_none() => SocketAddr::new(src.ip(), v.port.unwrap_or(5060)),
        _ => src,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::span::Span;

    fn stamped(v: &[u8], src: &str) -> (Vec<u8>, SocketAddr) {
        let via = Via::parse(v, Span::new(0, v.len())).unwrap();
        let src = src.parse().unwrap();
        let mut e = Edits::default();
        stamp(v, &via, src, &mut e);
        let mut out = Vec::new();
        e.emit(v, 0, v.len(), &mut out);
        (out, reply_target(Some(&via), src))
    }

    #[test]
    fn same_ip_no_rport_untouched() {
        let (out, to) = stamped(b"SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKa", "192.0.2.1:40000");
        assert_eq!(out, b"SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKa");
        assert_eq!(to, "192.0.2.1:5062".parse().unwrap());
    }

    #[test]
    fn hostname_gets_received() {
        let (out, to) = stamped(b"SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKa", "192.0.2.101:5060");
        assert_eq!(out, b"SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKa;received=192.0.2.101");
        assert_eq!(to, "192.0.2.101:5060".parse().unwrap());
    }

    #[test]
    fn rfc3581_example() {
        let (out, to) = stamped(b"SIP/2.0/UDP 10.1.1.1:4540;rport;branch=z9hG4bKkjshdyff", "192.0.2.1:9988");
        assert_eq!(out, b"SIP/2.0/UDP 10.1.1.1:4540;rport=9988;branch=z9hG4bKkjshdyff;received=192.0.2.1");
        assert_eq!(to, "192.0.2.1:9988".parse().unwrap());
        let (out, _) = stamped(b"SIP/2.0/UDP 192.0.2.1:4540;rport", "192.0.2.1:9988");
        assert_eq!(out, b"SIP/2.0/UDP 192.0.2.1:4540;rport=9988;received=192.0.2.1");
    }

    #[test]
    fn stale_received_replaced_and_ipv6() {
        let (out, _) = stamped(b"SIP/2.0/UDP h;received=1.1.1.1;branch=z9hG4bKa", "192.0.2.7:5060");
        assert_eq!(out, b"SIP/2.0/UDP h;received=192.0.2.7;branch=z9hG4bKa");
        let (out, to) = stamped(b"SIP/2.0/UDP [2001:db8::9:1];rport", "[2001:db8::9:2]:6000");
        assert_eq!(out, b"SIP/2.0/UDP [2001:db8::9:1];rport=6000;received=2001:db8::9:2");
        assert_eq!(to, "[2001:db8::9:2]:6000".parse().unwrap());
    }
}
