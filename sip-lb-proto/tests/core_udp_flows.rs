//! Record-Route and Path for UDP clients (RFC 3327, RFC 5626 §5.3): the
//! core names a datagram's source address in our route with a MAC'd token,
//! and sends a request from the far end whose top Route is that URI to the
//! address, with no table anywhere.

mod support;

use sip_lb_proto::flow::routing::{PathMode, RecordRoute, Routing};
use sip_lb_proto::proxy::{Action, Chooser, Forwarded, Identity, Key, Keys, Policy, Proxy, ReplyCode};
use std::net::SocketAddr;
use support::{keys, sip, text, uas_response};

const LB: &str = "192.0.2.10:5060";
const REGISTRAR: &str = "10.0.0.100:5060";
/// The UA's address as the balancer sees it (after its NAT).
const UA: &str = "203.0.113.7:40312";

struct Farm;

impl Chooser for Farm {
    fn choose(&self, _method: &[u8], _call_id_hash: u64) -> Option<SocketAddr> {
        Some(REGISTRAR.parse().unwrap())
    }
}

fn proxy(record_route: RecordRoute, path: PathMode) -> Proxy {
    let policy = Policy { routing: Routing { record_route, path }, ..Policy::default() };
    Proxy::new(Identity::single(LB.parse().unwrap()), keys(), policy)
}

fn run(p: &Proxy, msg: &[u8], src: &str) -> (Action, String) {
    let mut out = Vec::with_capacity(4096);
    let a = p.handle(&Farm, msg, src.parse().unwrap(), 0, &mut out);
    (a, text(&out))
}

fn to(addr: &str) -> Action {
    Action::Forward { to: addr.parse().unwrap(), from: 0, what: Forwarded::Request }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
}

fn register(supported: &str) -> Vec<u8> {
    sip(&format!(
        "REGISTER sip:example.com SIP/2.0\n\
         Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKreg1;rport\n\
         Max-Forwards: 70\nFrom: <sip:alice@example.com>;tag=a1\nTo: <sip:alice@example.com>\n\
         Call-ID: reg-1@ua\nCSeq: 1 REGISTER\nContact: <sip:alice@192.168.1.20:5060>\n{supported}\
         Expires: 600\nContent-Length: 0\n\n"
    ))
}

/// An INVITE from the farm to the registered contact, routed by the Path
/// the registrar stored.
fn invite_from_farm(route: &str, call_id: &str) -> Vec<u8> {
    sip(&format!(
        "INVITE sip:alice@192.168.1.20:5060 SIP/2.0\n\
         Via: SIP/2.0/UDP 10.0.0.100:5060;branch=z9hG4bKfarm1\n\
         Max-Forwards: 69\nRoute: {route}\nRecord-Route: <sip:10.0.0.100;lr>\n\
         From: <sip:bob@example.com>;tag=b1\nTo: <sip:alice@example.com>\n\
         Call-ID: {call_id}\nCSeq: 1 INVITE\nContact: <sip:bob@10.0.0.200>\nContent-Length: 0\n\n"
    ))
}

/// The Path line our forwarded REGISTER carries.
fn path_of(p: &Proxy, reg: &[u8]) -> String {
    let (a, out) = run(p, reg, UA);
    assert_eq!(a, to(REGISTRAR), "{out}");
    header(&out, "Path").unwrap_or_else(|| panic!("no Path: {out}")).to_owned()
}

#[test]
fn a_registration_path_leads_calls_from_the_farm_to_the_ua_address() {
    let p = proxy(RecordRoute::Off, PathMode::Supported);
    let path = path_of(&p, &register("Supported: path\n"));
    assert!(path.starts_with("<sip:192.0.2.10:5060;lr;slb;slb-addr=cb0071079d78"), "{path}");
    // Any later call to the contact, of any Call-ID, reaches the UA's address.
    for cid in ["call-1@farm", "call-2@farm"] {
        let (a, out) = run(&p, &invite_from_farm(&path, cid), REGISTRAR);
        assert_eq!(a, to(UA), "{out}");
        assert!(header(&out, "Route").is_none(), "our Route is removed: {out}");
        assert!(out.lines().nth(1).unwrap().starts_with("Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKslb"));
        // The UA's answer goes back through us to the farm's Via.
        let (a, back) = run(&p, &uas_response(out.as_bytes(), "180 Ringing"), UA);
        assert_eq!(a, Action::Forward { to: REGISTRAR.parse().unwrap(), from: 0, what: Forwarded::Response }, "{back}");
    }
}

#[test]
fn path_modes() {
    let supported = proxy(RecordRoute::Off, PathMode::Supported);
    let (_, out) = run(&supported, &register(""), UA);
    assert!(header(&out, "Path").is_none(), "{out}");
    let force = proxy(RecordRoute::Off, PathMode::Force);
    path_of(&force, &register(""));
    let require = proxy(RecordRoute::Off, PathMode::Require);
    let (a, out) = run(&require, &register(""), UA);
    assert!(matches!(a, Action::Reply { code: ReplyCode::ExtensionRequired, .. }), "{a:?}");
    assert!(out.starts_with("SIP/2.0 421 ") && out.contains("\r\nRequire: path\r\n"), "{out}");
    path_of(&require, &register("Supported: outbound, path\n"));
    // Off: the REGISTER is forwarded as before.
    let (_, out) = run(&proxy(RecordRoute::Off, PathMode::Off), &register("Supported: path\n"), UA);
    assert!(header(&out, "Path").is_none(), "{out}");
}

#[test]
fn record_route_brings_each_side_in_dialog_requests_to_the_right_flow() {
    let p = proxy(RecordRoute::On, PathMode::Off);
    let invite = sip("INVITE sip:bob@example.com SIP/2.0\n\
         Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKinv1;rport\n\
         Max-Forwards: 70\nFrom: <sip:alice@example.com>;tag=a1\nTo: <sip:bob@example.com>\n\
         Call-ID: dlg-1@ua\nCSeq: 1 INVITE\nContact: <sip:alice@192.168.1.20:5060>\nContent-Length: 0\n\n");
    let (a, out) = run(&p, &invite, UA);
    assert_eq!(a, to(REGISTRAR));
    let rr = header(&out, "Record-Route").unwrap().to_owned();
    assert!(rr.starts_with("<sip:192.0.2.10:5060;lr;slb;slb-addr=cb0071079d78"), "{rr}");
    assert!(out.split("\r\n").nth(2).unwrap().starts_with("Record-Route:"), "right after our Via: {out}");

    let bye = |route: &str, via: &str, cid: &str| {
        sip(&format!(
            "BYE sip:alice@192.168.1.20:5060 SIP/2.0\nVia: {via}\nMax-Forwards: 70\nRoute: {route}\n\
             From: <sip:bob@example.com>;tag=b1\nTo: <sip:alice@example.com>;tag=a1\n\
             Call-ID: {cid}\nCSeq: 2 BYE\nContent-Length: 0\n\n"
        ))
    };
    // The callee's BYE (from the farm) reaches the caller's address.
    let (a, out) = run(&p, &bye(&rr, "SIP/2.0/UDP 10.0.0.100;branch=z9hG4bKb1", "dlg-1@ua"), REGISTRAR);
    assert_eq!(a, to(UA), "{out}");
    // A token is bound to its dialog.
    let (a, out) = run(&p, &bye(&rr, "SIP/2.0/UDP 10.0.0.100;branch=z9hG4bKb2", "dlg-2@ua"), REGISTRAR);
    assert!(matches!(a, Action::Reply { code: ReplyCode::Forbidden, .. }), "{a:?} {out}");
    // The caller's own BYE, with its route set, goes on to the farm.
    let (a, out) = run(&p, &bye(&rr, "SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKb3;rport", "dlg-1@ua"), UA);
    assert_eq!(a, to(REGISTRAR), "{out}");
    assert!(header(&out, "Route").is_none(), "{out}");
}

/// A call from the farm to a registered UDP UA: our Record-Route names the
/// UA too, so the farm's in-dialog requests (the 2xx's ACK, a BYE), sent to
/// the UA's private Contact by that route, reach its address; the UA's own
/// go on to the farm.
#[test]
fn towards_the_client_our_record_route_names_it() {
    let p = proxy(RecordRoute::On, PathMode::Supported);
    let path = path_of(&p, &register("Supported: path\n"));
    let (a, out) = run(&p, &invite_from_farm(&path, "call-9@farm"), REGISTRAR);
    assert_eq!(a, to(UA));
    let rrs: Vec<_> = out.split("\r\n").filter_map(|l| l.strip_prefix("Record-Route: ")).collect();
    assert_eq!(rrs.len(), 2, "{out}");
    assert!(rrs[0].starts_with("<sip:192.0.2.10:5060;lr;slb;slb-addr=cb0071079d78"), "ours names the UA: {out}");
    assert_eq!(rrs[1], "<sip:10.0.0.100;lr>");

    let in_dialog = |method: &str, route: &str, via: &str| {
        sip(&format!(
            "{method} sip:alice@192.168.1.20:5060 SIP/2.0\nVia: {via}\nMax-Forwards: 70\nRoute: {route}\n\
             From: <sip:bob@example.com>;tag=b1\nTo: <sip:alice@example.com>;tag=a1\n\
             Call-ID: call-9@farm\nCSeq: 1 {method}\nContent-Length: 0\n\n"
        ))
    };
    // The farm's ACK for the 2xx, then its BYE: to the UA.
    for method in ["ACK", "BYE"] {
        let (a, out) = run(&p, &in_dialog(method, rrs[0], "SIP/2.0/UDP 10.0.0.100;branch=z9hG4bKf2"), REGISTRAR);
        assert_eq!(a, to(UA), "{method}: {out}");
    }
    // The UA's BYE, by its route set (ours, then the farm's): to the farm.
    let route = format!("{}, {}", rrs[1], rrs[0]).replace("<sip:10.0.0.100;lr>, ", "");
    let (a, out) = run(&p, &in_dialog("BYE", &route, "SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKu2;rport"), UA);
    assert_eq!(a, to(REGISTRAR), "{out}");
}

#[test]
fn a_token_that_does_not_verify_gets_403() {
    let p = proxy(RecordRoute::Off, PathMode::Supported);
    let path = path_of(&p, &register("Supported: path\n"));
    // Pointing the token at another address keeps the MAC: forged.
    let other = path.replace("cb0071079d78", "cb0071089d78");
    let (a, out) = run(&p, &invite_from_farm(&other, "call-3@farm"), REGISTRAR);
    assert!(matches!(a, Action::Reply { code: ReplyCode::Forbidden, .. }), "{a:?}");
    assert!(out.starts_with("SIP/2.0 403 Forbidden\r\n"), "{out}");
    // Another node's key: forged too; the same secret on another node verifies.
    let stranger = Proxy::new(
        Identity::single(LB.parse().unwrap()),
        Keys::new(Key::from_secret(b"another node's own secret"), None),
        Policy::default(),
    );
    let (a, _) = run(&stranger, &invite_from_farm(&path, "call-4@farm"), REGISTRAR);
    assert!(matches!(a, Action::Reply { code: ReplyCode::Forbidden, .. }), "{a:?}");
    let twin = proxy(RecordRoute::Off, PathMode::Off);
    assert_eq!(run(&twin, &invite_from_farm(&path, "call-4@farm"), REGISTRAR).0, to(UA));
}

#[test]
fn a_connection_message_gets_no_address_route() {
    let p = proxy(RecordRoute::On, PathMode::Force);
    let mut out = Vec::new();
    let a = p.handle_connection(&Farm, &register(""), UA.parse().unwrap(), 0, &mut out);
    assert_eq!(a, to(REGISTRAR));
    let out = text(&out);
    assert!(header(&out, "Path").is_none() && header(&out, "Record-Route").is_none(), "{out}");
}

/// RFC 5658: a request that leaves from another listener (here an IPv6
/// client's INVITE to an IPv4 farm) records one route per side, and each
/// side's in-dialog requests lose both of ours.
#[test]
fn across_listeners_two_record_routes_one_per_side() {
    let policy =
        Policy { routing: Routing { record_route: RecordRoute::Auto, path: PathMode::Off }, ..Policy::default() };
    let p = support::proxy_with(&["192.0.2.10:5060", "[2001:db8::10]:5060"], policy);
    let client = "[2001:db8::7]:5070";
    let invite = sip("INVITE sip:bob@example.com SIP/2.0\n\
         Via: SIP/2.0/UDP [2001:db8::7]:5070;branch=z9hG4bKv6inv;rport\n\
         Max-Forwards: 70\nFrom: <sip:alice@example.com>;tag=a1\nTo: <sip:bob@example.com>\n\
         Call-ID: v6-dlg@ua\nCSeq: 1 INVITE\nContact: <sip:alice@[2001:db8::7]:5070>\nContent-Length: 0\n\n");
    let mut out = Vec::new();
    let a = p.handle(&Farm, &invite, client.parse().unwrap(), 1, &mut out);
    assert_eq!(a, Action::Forward { to: REGISTRAR.parse().unwrap(), from: 0, what: Forwarded::Request });
    let out = text(&out);
    let rrs: Vec<_> = out.split("\r\n").filter_map(|l| l.strip_prefix("Record-Route: ")).collect();
    assert_eq!(rrs.len(), 2, "{out}");
    assert!(rrs[0].starts_with("<sip:192.0.2.10:5060;lr;slb;slb-addr=20010db8"), "the farm's side on top: {out}");
    assert!(rrs[1].starts_with("<sip:[2001:db8::10]:5060;lr;slb;slb-addr=20010db8"), "the client's below: {out}");

    let bye = |route: &str, via: &str| {
        sip(&format!(
            "BYE sip:alice@[2001:db8::7]:5070 SIP/2.0\nVia: {via}\nMax-Forwards: 70\nRoute: {route}\n\
             From: <sip:bob@example.com>;tag=b1\nTo: <sip:alice@example.com>;tag=a1\n\
             Call-ID: v6-dlg@ua\nCSeq: 2 BYE\nContent-Length: 0\n\n"
        ))
    };
    // The farm's BYE, with the route set in order: to the client, over IPv6.
    let mut out = Vec::new();
    let farm_bye = bye(&format!("{}, {}", rrs[0], rrs[1]), "SIP/2.0/UDP 10.0.0.100;branch=z9hG4bKfb");
    let a = p.handle(&Farm, &farm_bye, REGISTRAR.parse().unwrap(), 0, &mut out);
    assert_eq!(a, Action::Forward { to: client.parse().unwrap(), from: 1, what: Forwarded::Request });
    assert!(!text(&out).contains("\r\nRoute:"), "both of ours removed: {}", text(&out));
    // The client's BYE, route set reversed, on separate lines, with the
    // farm's own route after ours: only ours go.
    let lines = format!("{}\r\nRoute: {}\r\nRoute: <sip:10.0.0.100;lr>", rrs[1], rrs[0]);
    let client_bye = bye(&lines, "SIP/2.0/UDP [2001:db8::7]:5070;branch=z9hG4bKcb;rport");
    let mut out = Vec::new();
    let a = p.handle(&Farm, &client_bye, client.parse().unwrap(), 1, &mut out);
    assert_eq!(a, Action::Forward { to: REGISTRAR.parse().unwrap(), from: 0, what: Forwarded::Request });
    let routes: Vec<_> = text(&out).split("\r\n").filter(|l| l.starts_with("Route:")).map(str::to_owned).collect();
    assert_eq!(routes, ["Route: <sip:10.0.0.100;lr>"]);
}

/// RFC 5626 §5.1: an outbound registration (Contact with `reg-id` and
/// `+sip.instance`) gets `ob` in our Path; a plain one does not.
#[test]
fn an_outbound_registration_gets_ob_in_our_path() {
    let p = proxy(RecordRoute::Off, PathMode::Supported);
    let outbound = text(&register("Supported: path, outbound\n")).replace(
        "Contact: <sip:alice@192.168.1.20:5060>",
        "Contact: <sip:alice@192.168.1.20:5060;ob>;reg-id=1;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"",
    );
    let path = path_of(&p, outbound.as_bytes());
    assert!(path.starts_with("<sip:192.0.2.10:5060;lr;slb;ob;slb-addr="), "{path}");
    // It still leads calls to the UA.
    assert_eq!(run(&p, &invite_from_farm(&path, "call-ob@farm"), REGISTRAR).0, to(UA));
    assert!(!path_of(&p, &register("Supported: path\n")).contains(";ob"));
}
