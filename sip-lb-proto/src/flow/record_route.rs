//! Record-Route (RFC 3261 §16.6 step 4) and Path (RFC 3327) with the flow
//! token (RFC 5626 §5.2): a dialog created from a connection records a route
//! through us that names the connection, and so does a registration, so a
//! request from the far end (a BYE from the callee, an INVITE to the
//! registered UA) reaches the client on its connection without any table.
//!
//! `Record-Route: <sip:ADVERTISE;lr;slb;slb-flow=<16 hex token><16 hex MAC>>`
//! (`Path:` the same)
//!
//! `slb` is the marker of our own Record-Route values (`proxy::request`'s
//! strict-router check looks for it). The MAC (the branch key) of a
//! Record-Route token covers the token and the Call-ID, not a branch: the
//! route serves every transaction of the dialog. A Path token serves
//! requests of any Call-ID, so its MAC covers the token alone. Domain
//! strings keep the two apart from each other and from the Via token's MAC.

use super::token::{parse_hex, FlowCheck, FlowToken};
use crate::proxy::{Identity, Keys, Proxy};
use crate::sip::message::{Header, Message, MAX_HEADERS};
use crate::sip::params::{addr_uri, params};
use crate::sip::text::{hex64, write_host_port};
use crate::sip::uri::{Scheme, Uri};
use crate::sip::values::values;
use crate::sip::HeaderName;
use std::mem::MaybeUninit;
use std::net::SocketAddr;

/// What the MAC of a Record-Route token is computed over besides the token
/// and the Call-ID (a Via token's MAC covers our branch there instead).
const DOMAIN: &[u8] = b"sip-lb record-route flow v1";
const PATH_DOMAIN: &[u8] = b"sip-lb path flow v1";

/// Which of our route headers to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `Record-Route`: bound to the dialog's Call-ID.
    RecordRoute,
    /// `Path` (RFC 3327): for any request to the registered contact.
    Path,
    /// `Path` for an RFC 5626 outbound registration: with `;ob` (§5.1).
    OutboundPath,
}

/// The URI parameter of the token.
const NAME: &[u8] = b"slb-flow";

/// Whether a method creates a dialog whose later requests must find the
/// connection (RFC 3261 INVITE, RFC 6665 SUBSCRIBE/NOTIFY, RFC 3515 REFER).
pub fn creates_dialog(method: &[u8]) -> bool {
    matches!(method, b"INVITE" | b"SUBSCRIBE" | b"NOTIFY" | b"REFER")
}

/// Inserts our Record-Route or Path (naming `advertise`, where the far
/// end's requests reach us) after our Via, the first header line of `out`,
/// a request the proxy forwarded. False if `out` has no header line.
pub fn insert(
    keys: &Keys,
    out: &mut Vec<u8>,
    kind: Kind,
    advertise: SocketAddr,
    token: FlowToken,
    call_id: &[u8],
) -> bool {
    insert_uri(keys, out, kind, &route_uri(advertise, None), token, call_id)
}

/// `sip:HOST:PORT[;transport=T];lr;slb`: the URI of our Record-Route or
/// Path naming one of our addresses (the token is appended to it).
pub fn route_uri(advertise: SocketAddr, transport: Option<&str>) -> Vec<u8> {
    let mut uri = b"sip:".to_vec();
    write_host_port(&mut uri, advertise.ip(), advertise.port());
    if let Some(t) = transport {
        uri.extend_from_slice(b";transport=");
        uri.extend_from_slice(t.as_bytes());
    }
    uri.extend_from_slice(b";lr;slb");
    uri
}

/// [`insert`] with the URI given ([`route_uri`]'s form).
pub fn insert_uri(keys: &Keys, out: &mut Vec<u8>, kind: Kind, uri: &[u8], token: FlowToken, call_id: &[u8]) -> bool {
    let Some(line) = memchr::memmem::find(out, b"\r\n").map(|i| i + 2) else { return false };
    let Some(after_via) = out.get(line..).and_then(|r| memchr::memmem::find(r, b"\r\n")).map(|i| line + i + 2) else {
        return false;
    };
    let mac = match kind {
        Kind::RecordRoute => keys.current.mac(token.to_u64(), DOMAIN, call_id),
        Kind::Path | Kind::OutboundPath => keys.current.mac(token.to_u64(), PATH_DOMAIN, b""),
    };
    let mut rr = Vec::with_capacity(128);
    rr.extend_from_slice(match kind {
        Kind::RecordRoute => b"Record-Route: <",
        Kind::Path | Kind::OutboundPath => b"Path: <",
    });
    rr.extend_from_slice(uri);
    if kind == Kind::OutboundPath {
        rr.extend_from_slice(b";ob");
    }
    rr.extend_from_slice(b";slb-flow=");
    rr.extend_from_slice(&hex64(token.to_u64()));
    rr.extend_from_slice(&hex64(mac));
    rr.extend_from_slice(b">\r\n");
    out.splice(after_via..after_via, rr);
    true
}

/// Our Record-Route on a request the core forwarded (`out`, from the
/// listener `from`) that goes to a connection's flow `token` (its top Route
/// was our Path or Record-Route with that token), when the operator's
/// `record_route` asks for one (the transport changes, so `auto` does for a
/// dialog-creating request): the far end's later requests in the dialog,
/// sent to the client's Contact, come back by it to the connection. Two
/// values (RFC 5658): on top the one the client reaches (`client_uri`, the
/// stream listener, [`route_uri`]'s form), below the one the farm reaches.
pub fn record_towards(
    proxy: &Proxy,
    request: &[u8],
    from: usize,
    token: FlowToken,
    client_uri: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let mut slots = [const { MaybeUninit::<Header>::uninit() }; MAX_HEADERS];
    let Ok(m) = Message::parse_uninit(request, &mut slots) else { return false };
    if !proxy.policy().routing.records(m.method(), true) {
        return false;
    }
    let Some(advertise) = proxy.identity().listeners.get(from).map(|l| l.advertise) else { return false };
    let call_id = m.find(HeaderName::CallId).map(|h| m.get(h.value)).unwrap_or(&[]);
    // Each goes right after our Via: the lower one first.
    insert(proxy.keys(), out, Kind::RecordRoute, advertise, token, call_id)
        && insert_uri(proxy.keys(), out, Kind::RecordRoute, client_uri, token, call_id)
}

/// Whether a REGISTER is an RFC 5626 outbound registration: a Contact
/// with `reg-id` and `+sip.instance` (§4.2).
pub fn is_outbound_register(request: &[u8]) -> bool {
    let mut slots = [const { MaybeUninit::<Header>::uninit() }; MAX_HEADERS];
    Message::parse_uninit(request, &mut slots).is_ok_and(|m| has_outbound_contact(&m))
}

/// [`is_outbound_register`] of a parsed message.
pub fn has_outbound_contact(m: &Message<'_>) -> bool {
    let buf = m.buf();
    m.all(HeaderName::Contact).flat_map(|h| values(buf, h.value)).any(|v| {
        let params = crate::sip::params::addr_parts(buf, v).params;
        let has = |name: &[u8]| crate::sip::params::param_at(buf, params, v.end(), name).is_some();
        has(b"reg-id") && has(b"+sip.instance")
    })
}

/// Whether a request lists `path` in Supported (RFC 3327 §5.1).
pub fn ua_supports_path(request: &[u8]) -> bool {
    let mut slots = [const { MaybeUninit::<Header>::uninit() }; MAX_HEADERS];
    Message::parse_uninit(request, &mut slots).is_ok_and(|m| lists_path(&m))
}

/// [`ua_supports_path`] of a parsed message.
pub fn lists_path(m: &Message<'_>) -> bool {
    let buf = m.buf();
    m.all(HeaderName::Supported).any(|h| values(buf, h.value).any(|v| v.of(buf).eq_ignore_ascii_case(b"path")))
}

/// The flow named by the top Route of a request, when that Route is ours
/// (one of our addresses) and carries a token, from our Record-Route (for
/// this Call-ID) or our Path: the request is for the client on that
/// connection. A quick substring test keeps requests without
/// one at a `memmem`.
pub fn of_request(identity: &Identity, keys: &Keys, request: &[u8]) -> FlowCheck {
    if memchr::memmem::find(request, b";slb-flow=").is_none() {
        return FlowCheck::None;
    }
    let mut slots = [const { MaybeUninit::<Header>::uninit() }; MAX_HEADERS];
    let Ok(m) = Message::parse_uninit(request, &mut slots) else { return FlowCheck::None };
    let Some(route) = m.find(HeaderName::Route).and_then(|h| values(request, h.value).next()) else {
        return FlowCheck::None;
    };
    let Some(uri) = Uri::parse(request, addr_uri(request, route)) else { return FlowCheck::None };
    if !matches!(uri.scheme, Scheme::Sip | Scheme::Sips) || !identity.is_us(uri.host.of(request), uri.port) {
        return FlowCheck::None;
    }
    let Some(v) = params(request, uri.params.start(), uri.params.end())
        .find(|p| p.name.of(request).eq_ignore_ascii_case(NAME))
        .and_then(|p| p.value)
    else {
        return FlowCheck::None;
    };
    let v = v.of(request);
    let (Some(token), Some(mac)) = (v.get(..16).and_then(parse_hex), v.get(16..).and_then(parse_hex)) else {
        return FlowCheck::Forged;
    };
    let call_id = m.find(HeaderName::CallId).map(|h| m.get(h.value)).unwrap_or(&[]);
    let ok = keys.verify(mac, token, DOMAIN, call_id) || keys.verify(mac, token, PATH_DOMAIN, b"");
    if v.len() != 32 || !ok {
        return FlowCheck::Forged;
    }
    FlowCheck::Token(FlowToken::from_u64(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Key;

    fn keys() -> Keys {
        Keys::new(Key::from_secret(b"a secret of 16+ bytes"), None)
    }

    fn id() -> Identity {
        Identity::single("10.0.0.1:5060".parse().unwrap())
    }

    const FORWARDED: &[u8] = b"INVITE sip:b@x SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKslb1\r\nCall-ID: cid@x\r\nContent-Length: 0\r\n\r\n";

    /// The far end's in-dialog request: our Record-Route value as its Route.
    fn bye_with_route(rr: &str, call_id: &str) -> Vec<u8> {
        format!(
            "BYE sip:alice@192.0.2.1:40000;transport=tcp SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKb\r\n\
             Route: {rr}\r\nCall-ID: {call_id}\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn recorded_route_leads_back_to_the_flow() {
        let t = FlowToken { slot: 4, generation: 9 };
        let mut out = FORWARDED.to_vec();
        assert!(insert(&keys(), &mut out, Kind::RecordRoute, "10.0.0.1:5060".parse().unwrap(), t, b"cid@x"));
        let s = String::from_utf8(out).unwrap();
        let rr = s.lines().find_map(|l| l.strip_prefix("Record-Route: ")).unwrap().to_owned();
        assert!(rr.starts_with("<sip:10.0.0.1:5060;lr;slb;slb-flow=0000000900000004"), "{rr}");
        assert!(s.split("\r\n").nth(2).unwrap().starts_with("Record-Route:"), "right after our Via: {s}");
        assert_eq!(of_request(&id(), &keys(), &bye_with_route(&rr, "cid@x")), FlowCheck::Token(t));
        // Another dialog's Call-ID, another key: forged.
        assert_eq!(of_request(&id(), &keys(), &bye_with_route(&rr, "cid@y")), FlowCheck::Forged);
        let other = Keys::new(Key::from_secret(b"another secret 16+"), None);
        assert_eq!(of_request(&id(), &other, &bye_with_route(&rr, "cid@x")), FlowCheck::Forged);
        // Not our address: not ours to follow.
        let theirs = rr.replace("10.0.0.1", "10.0.0.2");
        assert_eq!(of_request(&id(), &keys(), &bye_with_route(&theirs, "cid@x")), FlowCheck::None);
        // A later Route with a token does not count: only the top one.
        let below = bye_with_route(&format!("<sip:10.0.0.7;lr>, {rr}"), "cid@x");
        assert_eq!(of_request(&id(), &keys(), &below), FlowCheck::None);
        assert_eq!(of_request(&id(), &keys(), FORWARDED), FlowCheck::None);
    }

    #[test]
    fn path_token_serves_any_call_id() {
        let t = FlowToken { slot: 1, generation: 2 };
        let mut out = FORWARDED.to_vec();
        assert!(insert(&keys(), &mut out, Kind::Path, "10.0.0.1:5060".parse().unwrap(), t, b"cid@x"));
        let s = String::from_utf8(out).unwrap();
        let path = s.lines().find_map(|l| l.strip_prefix("Path: ")).unwrap().to_owned();
        for cid in ["cid@x", "a-later-invite@y"] {
            assert_eq!(of_request(&id(), &keys(), &bye_with_route(&path, cid)), FlowCheck::Token(t));
        }
        // A Record-Route token stays bound to its Call-ID.
        let mut out = FORWARDED.to_vec();
        insert(&keys(), &mut out, Kind::RecordRoute, "10.0.0.1:5060".parse().unwrap(), t, b"cid@x");
        let s = String::from_utf8(out).unwrap();
        let rr = s.lines().find_map(|l| l.strip_prefix("Record-Route: ")).unwrap().to_owned();
        assert_eq!(of_request(&id(), &keys(), &bye_with_route(&rr, "a-later-invite@y")), FlowCheck::Forged);
    }

    const CLIENT_URI: &[u8] = b"sip:10.0.0.1:5061;transport=tls;lr;slb";

    /// A request from the far end delivered along a connection's Path gets
    /// our Record-Route naming that connection, when `record_route` asks.
    #[test]
    fn record_towards_a_connection_names_it() {
        use crate::flow::routing::{RecordRoute, Routing};
        use crate::proxy::Policy;
        let proxy = |record_route| {
            let policy = Policy { routing: Routing { record_route, ..Routing::default() }, ..Policy::default() };
            Proxy::new(id(), keys(), policy)
        };
        let t = FlowToken { slot: 3, generation: 5 };
        let invite = b"INVITE sip:a@192.168.1.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKi\r\nCall-ID: in@farm\r\n\r\n";
        let mut out = FORWARDED.to_vec();
        assert!(!record_towards(&proxy(RecordRoute::Off), invite, 0, t, CLIENT_URI, &mut out));
        assert_eq!(out, FORWARDED);
        assert!(record_towards(&proxy(RecordRoute::Auto), invite, 0, t, CLIENT_URI, &mut out));
        let s = String::from_utf8(out).unwrap();
        let rrs: Vec<_> = s.lines().filter_map(|l| l.strip_prefix("Record-Route: ")).collect();
        assert_eq!(rrs.len(), 2, "{s}");
        assert!(rrs[0].starts_with("<sip:10.0.0.1:5061;transport=tls;lr;slb;slb-flow=0000000500000003"), "{s}");
        assert!(rrs[1].starts_with("<sip:10.0.0.1:5060;lr;slb;slb-flow=0000000500000003"), "{s}");
        // The farm's later requests use the lower one first.
        assert_eq!(of_request(&id(), &keys(), &bye_with_route(rrs[1], "in@farm")), FlowCheck::Token(t));
        // Auto: a BYE creates no dialog.
        let bye = String::from_utf8_lossy(invite).replace("INVITE", "BYE");
        assert!(!record_towards(&proxy(RecordRoute::Auto), bye.as_bytes(), 0, t, CLIENT_URI, &mut FORWARDED.to_vec()));
    }

    /// RFC 5626 §5.1: `ob` in the Path of an outbound registration.
    #[test]
    fn outbound_path_says_ob() {
        let reg = |contact: &str| format!("REGISTER sip:x SIP/2.0\r\nContact: {contact}\r\nCall-ID: c\r\n\r\n");
        let ob = reg("<sip:a@192.0.2.1;transport=tcp>;reg-id=1;+sip.instance=\"<urn:uuid:1>\"");
        assert!(is_outbound_register(ob.as_bytes()));
        assert!(!is_outbound_register(reg("<sip:a@192.0.2.1>;reg-id=1").as_bytes()));
        assert!(!is_outbound_register(reg("<sip:a@192.0.2.1;reg-id=1;+sip.instance=x>").as_bytes()), "URI params");
        let t = FlowToken { slot: 1, generation: 2 };
        let mut out = FORWARDED.to_vec();
        assert!(insert(&keys(), &mut out, Kind::OutboundPath, "10.0.0.1:5060".parse().unwrap(), t, b"cid@x"));
        let s = String::from_utf8(out).unwrap();
        let path = s.lines().find_map(|l| l.strip_prefix("Path: ")).unwrap().to_owned();
        assert!(path.starts_with("<sip:10.0.0.1:5060;lr;slb;ob;slb-flow="), "{path}");
        assert_eq!(of_request(&id(), &keys(), &bye_with_route(&path, "any@y")), FlowCheck::Token(t));
    }

    /// RFC 3327 §5: a UA that lists `path` in Supported.
    #[test]
    fn supports_path() {
        let reg = |sup: &str| format!("REGISTER sip:x SIP/2.0\r\n{sup}Call-ID: c\r\n\r\n").into_bytes();
        assert!(ua_supports_path(&reg("Supported: outbound, Path\r\n")));
        assert!(ua_supports_path(&reg("k: path\r\n")));
        assert!(!ua_supports_path(&reg("Supported: pathx\r\n")));
        assert!(!ua_supports_path(&reg("")));
    }

    #[test]
    fn dialog_creating_methods() {
        for m in [&b"INVITE"[..], b"SUBSCRIBE", b"NOTIFY", b"REFER"] {
            assert!(creates_dialog(m));
        }
        for m in [&b"BYE"[..], b"REGISTER", b"OPTIONS", b"ACK", b"invite"] {
            assert!(!creates_dialog(m));
        }
    }
}
