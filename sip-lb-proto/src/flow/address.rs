//! The flow token of a UDP client: its address (RFC 5626 §5.2), in our
//! Record-Route and Path URIs as `;slb-addr=<IP hex><port hex><MAC hex>`.
//!
//! A connection's token names a slot of the stream layer ([`super::token`]);
//! a datagram's flow is just where it came from (after NAT: the binding the
//! UA keeps open), so the token is that address, MAC'd with the `[security]`
//! key. Any node holding the key can verify it and send to the address; no
//! node keeps a table. A Record-Route token's MAC also covers the Call-ID
//! (it serves one dialog), a Path token's does not (it serves every request
//! to the registered contact). The kind and family are in the MAC's first
//! word, and the fixed domain string keeps these MACs apart from the Via
//! branch's and the connection tokens'.

use super::token::parse_hex;
use crate::proxy::Keys;
use crate::sip::params::{addr_uri, params};
use crate::sip::span::Span;
use crate::sip::text::hex64;
use crate::sip::uri::{Scheme, Uri};
use crate::sip::values::values;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The URI parameter, as written (with its `;` and `=`).
pub const ADDR_PARAM: &[u8] = b";slb-addr=";

/// Its name, for the parameter lookup.
const NAME: &[u8] = b"slb-addr";

/// Mixed into every address token's MAC, before the address.
const DOMAIN: &[u8; 15] = b"sip-lb addr v1 ";

/// The longest parameter: 32 hex digits of an IPv6 address, 4 of the port,
/// 16 of the MAC.
pub const MAX_PARAM: usize = ADDR_PARAM.len() + 32 + 4 + 16;

/// Which header a token was written for: what its MAC covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `Record-Route`: bound to the dialog's Call-ID.
    RecordRoute,
    /// `Path`: any request to the registered contact.
    Path,
}

/// What the top Route of a request says about a UDP flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteFlow {
    /// No address token in our top Route (or the top Route is not ours).
    None,
    /// A token that verifies: the flow's address.
    To(SocketAddr),
    /// An address token that does not verify (or is malformed): 403.
    Forged,
    /// Our URI with a connection's token (`slb-flow`): for the stream
    /// layer's relay, which verifies it and writes its own route.
    Connection,
}

/// What an address token's MAC is computed over: a word with the kind,
/// the family and the port; the domain and the address; the Call-ID for a
/// Record-Route token, nothing for a Path token.
struct MacInput<'c> {
    word: u64,
    domain_and_ip: [u8; DOMAIN.len() + 16],
    call_id: &'c [u8],
}

impl<'c> MacInput<'c> {
    fn new(kind: Kind, addr: SocketAddr, call_id: &'c [u8]) -> Self {
        let (family, octets) = octets(addr.ip());
        let (kind_bits, call_id): (u64, &[u8]) = match kind {
            Kind::RecordRoute => (1, call_id),
            Kind::Path => (2, &[]),
        };
        let mut domain_and_ip = [0u8; DOMAIN.len() + 16];
        domain_and_ip[..DOMAIN.len()].copy_from_slice(DOMAIN);
        domain_and_ip[DOMAIN.len()..].copy_from_slice(&octets);
        MacInput { word: kind_bits << 24 | family << 16 | u64::from(addr.port()), domain_and_ip, call_id }
    }
}

/// The family (4 or 6) and the address as 16 bytes (an IPv4 address, or an
/// IPv4-mapped IPv6 one from a dual-stack socket, in the last 4).
fn octets(ip: IpAddr) -> (u64, [u8; 16]) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let mut o = [0u8; 16];
            o[12..].copy_from_slice(&v4.octets());
            (4, o)
        }
        IpAddr::V6(v6) => (6, v6.octets()),
    }
}

/// Writes `;slb-addr=...` for `addr` into `out`; returns its length.
pub fn write_param(keys: &Keys, kind: Kind, addr: SocketAddr, call_id: &[u8], out: &mut [u8; MAX_PARAM]) -> usize {
    let input = MacInput::new(kind, addr, call_id);
    let m = keys.current.mac(input.word, &input.domain_and_ip, input.call_id);
    let (family, o) = octets(addr.ip());
    let ip = if family == 4 { &o[12..] } else { &o[..] };
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        out[n..n + bytes.len()].copy_from_slice(bytes);
        n += bytes.len();
    };
    put(ADDR_PARAM);
    for pair in ip.chunks(8) {
        let mut w = [0u8; 8];
        w[..pair.len()].copy_from_slice(pair);
        let hex = hex64(u64::from_be_bytes(w));
        put(&hex[..pair.len() * 2]);
    }
    put(&hex64(u64::from(addr.port()))[12..]);
    put(&hex64(m));
    n
}

/// The address an `slb-addr` value names, if its MAC verifies (as a
/// Record-Route token for `call_id`, or as a Path token).
fn verify(keys: &Keys, value: &[u8], call_id: &[u8]) -> Option<SocketAddr> {
    let (ip_hex, rest) = match value.len() {
        28 => value.split_at(8),
        52 => value.split_at(32),
        _ => return None,
    };
    let (port_hex, mac_hex) = rest.split_at(4);
    let mut ip = [0u8; 16];
    for (i, pair) in ip_hex.chunks(2).enumerate() {
        ip[i] = u8::try_from(parse_hex(pair)?).ok()?;
    }
    let ip = match ip_hex.len() {
        8 => IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
        _ => IpAddr::V6(Ipv6Addr::from(ip)),
    };
    let addr = SocketAddr::new(ip, u16::try_from(parse_hex(port_hex)?).ok()?);
    let tag = parse_hex(mac_hex)?;
    let ok = [Kind::RecordRoute, Kind::Path].into_iter().any(|kind| {
        let input = MacInput::new(kind, addr, call_id);
        keys.verify(tag, input.word, &input.domain_and_ip, input.call_id)
    });
    ok.then_some(addr)
}

/// The UDP flow named by the top Route value of a request (`route`, the
/// first Route field's value span), when that URI is ours (`is_us`) and
/// carries an address token (or a connection's). A quick substring test
/// keeps other Routes at one `memmem`.
pub fn of_route(
    keys: &Keys,
    buf: &[u8],
    route: Span,
    call_id: &[u8],
    is_us: impl Fn(&[u8], Option<u16>) -> bool,
) -> RouteFlow {
    let Some(first) = values(buf, route).next() else { return RouteFlow::None };
    if memchr::memmem::find(first.of(buf), b";slb-").is_none() {
        return RouteFlow::None;
    }
    let Some(uri) = Uri::parse(buf, addr_uri(buf, first)) else { return RouteFlow::None };
    if !matches!(uri.scheme, Scheme::Sip | Scheme::Sips) || !is_us(uri.host.of(buf), uri.port) {
        return RouteFlow::None;
    }
    let mut ps = params(buf, uri.params.start(), uri.params.end());
    let Some(p) = ps.find(|p| {
        let name = p.name.of(buf);
        name.eq_ignore_ascii_case(NAME) || name.eq_ignore_ascii_case(super::token::FLOW_NAME)
    }) else {
        return RouteFlow::None;
    };
    if !p.name.of(buf).eq_ignore_ascii_case(NAME) {
        return RouteFlow::Connection;
    }
    match p.value.and_then(|v| verify(keys, v.of(buf), call_id)) {
        Some(addr) => RouteFlow::To(addr),
        None => RouteFlow::Forged,
    }
}

/// Whether a request came from the flow a token names: then it is the
/// client's own (outbound) request, not one for the client (RFC 5626 §5.3).
pub fn is_from(flow: SocketAddr, src: SocketAddr) -> bool {
    flow.port() == src.port() && flow.ip().to_canonical() == src.ip().to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Key;

    fn keys() -> Keys {
        Keys::new(Key::from_secret(b"a secret of 16+ bytes"), None)
    }

    fn param(kind: Kind, addr: &str, call_id: &[u8]) -> String {
        let mut out = [0u8; MAX_PARAM];
        let n = write_param(&keys(), kind, addr.parse().unwrap(), call_id, &mut out);
        String::from_utf8(out[..n].to_vec()).unwrap()
    }

    fn route_flow(route: &str, call_id: &[u8], keys: &Keys) -> RouteFlow {
        let buf = route.as_bytes();
        of_route(keys, buf, Span::new(0, buf.len()), call_id, |host, port| {
            host == b"10.0.0.1" && port.is_none_or(|p| p == 5060)
        })
    }

    #[test]
    fn record_route_token_names_the_address_for_its_dialog_only() {
        let p = param(Kind::RecordRoute, "203.0.113.7:40312", b"cid@x");
        assert!(p.starts_with(";slb-addr=cb0071079d78"), "{p}");
        assert_eq!(p.len(), ADDR_PARAM.len() + 28);
        let route = format!("<sip:10.0.0.1:5060;lr;slb{p}>");
        assert_eq!(route_flow(&route, b"cid@x", &keys()), RouteFlow::To("203.0.113.7:40312".parse().unwrap()));
        assert_eq!(route_flow(&route, b"cid@y", &keys()), RouteFlow::Forged);
        let other = Keys::new(Key::from_secret(b"another secret 16+"), None);
        assert_eq!(route_flow(&route, b"cid@x", &other), RouteFlow::Forged);
        // Another port or address under the same MAC: forged.
        let moved = route.replace("9d78", "9d79");
        assert_eq!(route_flow(&moved, b"cid@x", &keys()), RouteFlow::Forged);
        // Rotation: a token made with the previous key still verifies.
        let rotated =
            Keys::new(Key::from_secret(b"the next secret 16+"), Some(Key::from_secret(b"a secret of 16+ bytes")));
        assert!(matches!(route_flow(&route, b"cid@x", &rotated), RouteFlow::To(_)));
    }

    #[test]
    fn path_token_serves_any_call_id_and_v6() {
        let p = param(Kind::Path, "[2001:db8::5]:5062", b"ignored");
        assert_eq!(p.len(), MAX_PARAM);
        let route = format!("<sip:10.0.0.1;lr;slb{p}>, <sip:10.9.9.9;lr>");
        for cid in [&b"reg@x"[..], b"a-later-invite@y"] {
            assert_eq!(route_flow(&route, cid, &keys()), RouteFlow::To("[2001:db8::5]:5062".parse().unwrap()));
        }
        // An IPv4-mapped source is the IPv4 address.
        let mapped = param(Kind::Path, "[::ffff:192.0.2.9]:5060", b"");
        assert_eq!(mapped, param(Kind::Path, "192.0.2.9:5060", b""));
    }

    #[test]
    fn a_connection_token_is_left_to_the_relay() {
        let route = "<sip:10.0.0.1;lr;slb;slb-flow=00000001000000020123456789abcdef>";
        assert_eq!(route_flow(route, b"", &keys()), RouteFlow::Connection);
        assert_eq!(route_flow(&route.replace("10.0.0.1", "10.0.0.2"), b"", &keys()), RouteFlow::None);
    }

    #[test]
    fn not_ours_or_no_token_is_none_and_garbage_is_forged() {
        let p = param(Kind::Path, "192.0.2.9:5060", b"");
        assert_eq!(route_flow(&format!("<sip:10.0.0.2;lr;slb{p}>"), b"", &keys()), RouteFlow::None);
        assert_eq!(route_flow("<sip:10.0.0.1;lr;slb>", b"", &keys()), RouteFlow::None);
        for bad in [";slb-addr=", ";slb-addr=zz", ";slb-addr=c0000209ffff0123456789abcdeg"] {
            assert_eq!(route_flow(&format!("<sip:10.0.0.1;lr;slb{bad}>"), b"", &keys()), RouteFlow::Forged, "{bad}");
        }
    }

    #[test]
    fn a_request_from_the_flow_itself_is_outbound() {
        let flow: SocketAddr = "192.0.2.9:5060".parse().unwrap();
        assert!(is_from(flow, "[::ffff:192.0.2.9]:5060".parse().unwrap()));
        assert!(!is_from(flow, "192.0.2.9:5061".parse().unwrap()));
        assert!(!is_from(flow, "10.0.0.9:5060".parse().unwrap()));
    }
}
