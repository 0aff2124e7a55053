//! The client's top Via as a server sees it (RFC 3261 §18.2.1, RFC 3581):
//! stamp `received` and fill an empty `rport`, and the address a response
//! to it goes to (§18.2.2).

use super::splice::{Edits, Insert};
use crate::sip::text::same_ip;
use crate::sip::via::{StampKind, Via};
use std::net::SocketAddr;

/// Pushes the received/rport edits for the top Via of a request from `src`.
/// The result names only the packet source: the client cannot choose where
/// responses go. The first `received` gets the source IP and the first
/// `rport` the source port (whatever they said), duplicates are removed,
/// and `;received=` is appended when sent-by differs from the source or
/// `rport` is present (RFC 3581 §4: then even when it would match).
pub fn stamp(buf: &[u8], via: &Via, src: SocketAddr, edits: &mut Edits<'_>) {
    let ip = src.ip().to_canonical();
    let (mut seen_received, mut seen_rport) = (false, false);
    for p in via.stamp_params() {
        let seen = match p.kind {
            StampKind::Received => &mut seen_received,
            StampKind::Rport => &mut seen_rport,
        };
        if std::mem::replace(seen, true) {
            edits.remove(p.start as usize, p.end as usize);
            continue;
        }
        let value = match p.kind {
            StampKind::Received => Insert::Ip(ip),
            StampKind::Rport => Insert::Decimal(u64::from(src.port())),
        };
        match p.value {
            Some(v) => edits.replace(v.start(), v.end(), value),
            None if p.kind == StampKind::Rport => edits.insert(p.name_end as usize, Insert::RportValue(src.port())),
            // `;received` without a value: give it one.
            None => {
                edits.insert(p.name_end as usize, Insert::Bytes(b"="));
                edits.insert(p.name_end as usize, value);
            }
        }
    }
    let differs = !via.host_ip(buf).is_some_and(|h| same_ip(h, src.ip()));
    if !seen_received && (seen_rport || differs) {
        edits.insert(via.end as usize, Insert::Received(ip));
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
        e.emit(v, 0, v.len(), &mut out).unwrap();
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
    fn client_chosen_received_and_rport_are_overwritten() {
        // sent-by equals the source, yet the client names another host/port.
        let (out, to) = stamped(b"SIP/2.0/UDP 192.0.2.1:5060;received=127.0.0.3;branch=z9hG4bKa", "192.0.2.1:5060");
        assert_eq!(out, b"SIP/2.0/UDP 192.0.2.1:5060;received=192.0.2.1;branch=z9hG4bKa");
        assert_eq!(to, "192.0.2.1:5060".parse().unwrap());
        let (out, to) = stamped(b"SIP/2.0/UDP 192.0.2.1:5060;rport=4444;branch=z9hG4bKa", "192.0.2.1:7000");
        assert_eq!(out, b"SIP/2.0/UDP 192.0.2.1:5060;rport=7000;branch=z9hG4bKa;received=192.0.2.1");
        assert_eq!(to, "192.0.2.1:7000".parse().unwrap());
    }

    #[test]
    fn duplicates_are_removed_and_empty_rport_filled_once() {
        let (out, _) = stamped(b"SIP/2.0/UDP h;received=1.1.1.1;received=2.2.2.2;branch=z9hG4bKa", "192.0.2.7:5060");
        assert_eq!(out, b"SIP/2.0/UDP h;received=192.0.2.7;branch=z9hG4bKa");
        let (out, _) = stamped(b"SIP/2.0/UDP h;branch=z9hG4bKa;received=1.1.1.1;received=2.2.2.2", "192.0.2.7:5060");
        assert_eq!(out, b"SIP/2.0/UDP h;branch=z9hG4bKa;received=192.0.2.7");
        let (out, to) = stamped(b"SIP/2.0/UDP h;rport=;branch=z9hG4bKa", "192.0.2.7:5999");
        assert_eq!(out, b"SIP/2.0/UDP h;rport=5999;branch=z9hG4bKa;received=192.0.2.7");
        assert_eq!(to, "192.0.2.7:5999".parse().unwrap());
        let (out, _) = stamped(b"SIP/2.0/UDP h;rport;rport=1;received", "192.0.2.7:5999");
        assert_eq!(out, b"SIP/2.0/UDP h;rport=5999;received=192.0.2.7");
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
