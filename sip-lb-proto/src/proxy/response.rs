//! Forwarding a response (RFC 3261 §16.7 step 3, §18.2.2, RFC 3581): only
//! ours (anti-reflection: our branch's MAC must verify over the next Via and
//! the Call-ID), our Via removed, sent to the next Via from the socket our
//! Via names.

use super::action::{Action, DropReason, Forwarded};
use super::branch::{arrival, parse_ours, BRANCH_PREFIX};
use super::splice::Edits;
use super::Proxy;
use crate::sip::header::HeaderName;
use crate::sip::message::{Message, StartLine};
use crate::sip::span::Span;
use crate::sip::text::parse_decimal;
use crate::sip::via::Via;
use std::net::{IpAddr, SocketAddr};

pub(super) fn handle(proxy: &Proxy, m: &Message<'_>, out: &mut Vec<u8>) -> Action {
    let malformed = Action::Drop(DropReason::MalformedResponse);
    if m.defect.is_some() || !matches!(m.start_line, StartLine::Response { .. }) {
        return malformed;
    }
    let buf = m.buf();
    let mut vias = m.all(HeaderName::Via);
    let Some(top_h) = vias.next() else { return malformed };
    let Some(top) = Via::parse(buf, top_h.value) else { return malformed };
    // Ours: our branch marker and sent-by the advertised address of one of
    // our listeners (we only ever write IPs there).
    let branch = top.branch_bytes(buf);
    let named = proxy.identity.listener_named(top.host.of(buf), top.port);
    let (Some(named), true) = (named, branch.starts_with(BRANCH_PREFIX)) else {
        return Action::Drop(DropReason::ForeignResponse);
    };
    let Some((txn, mac)) = parse_ours(branch) else {
        return Action::Drop(DropReason::BranchMac);
    };
    let mut edits = Edits::default();
    let next_span = match top.next {
        // Comma-joined: remove only our value and its comma.
        Some(n) => {
            edits.remove(top_h.value.start(), n as usize);
            Span::new(n as usize, top_h.value.end())
        }
        None => {
            edits.remove(top_h.line.start(), top_h.next as usize);
            match vias.next() {
                Some(h) => h.value,
                None => return Action::Drop(DropReason::NoNextVia),
            }
        }
    };
    let Some(next) = Via::parse(buf, next_span) else { return malformed };
    let next_via = buf.get(next_span.start()..next.end as usize).unwrap_or(&[]);
    let call_id = m.find(HeaderName::CallId).map(|h| m.get(h.value)).unwrap_or(&[]);
    if !proxy.keys.verify(mac, txn, next_via, call_id) {
        return Action::Drop(DropReason::BranchMac);
    }
    // received wins over sent-by; a host name there would need DNS, which
    // the hot path does not do: drop (the UA behind it uses rport/received
    // in practice, see RFC 3581).
    let Some(ip) = next.received_ip(buf).or_else(|| next.host_ip(buf)) else {
        return Action::Drop(DropReason::ViaHostname);
    };
    let port = next.rport_value(buf).or(next.port).unwrap_or(5060);
    // Never reflect to broadcast, multicast or nowhere (RFC 4475 "bcast").
    if !is_unicast(ip) || port == 0 {
        return Action::Drop(DropReason::BadNextHop);
    }

    let mut lengths = m.all(HeaderName::ContentLength);
    let rest = m.rest().len();
    let body_end = match (lengths.next(), lengths.next()) {
        (None, _) => buf.len(),
        (Some(h), None) => match parse_decimal(m.get(h.value), u64::from(u32::MAX)) {
            Some(n) if n as usize <= rest => m.body_start as usize + n as usize,
            _ => return malformed,
        },
        (Some(_), Some(_)) => return malformed,
    };
    out.clear();
    if edits.emit(buf, m.start as usize, body_end, out).is_err() {
        return Action::Drop(DropReason::EditConflict);
    }
    // From the address the client sent its request to (RFC 3581 §4).
    let to = SocketAddr::new(ip, port);
    let from = proxy.identity.listener_towards(arrival(txn), to).unwrap_or(named);
    Action::Forward { to, from, what: Forwarded::Response }
}

fn is_unicast(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => !(v4.is_broadcast() || v4.is_multicast() || v4.is_unspecified()),
        IpAddr::V6(v6) => !(v6.is_multicast() || v6.is_unspecified()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicast_only() {
        for (ip, ok) in [
            ("192.0.2.1", true),
            ("255.255.255.255", false),
            ("224.0.0.1", false),
            ("0.0.0.0", false),
            ("::", false),
            ("ff02::1", false),
            ("2001:db8::1", true),
            ("::ffff:255.255.255.255", false),
        ] {
            assert_eq!(is_unicast(ip.parse().unwrap()), ok, "{ip}");
        }
    }
}
