//! Carrier-shaped traffic that the core once mangled or mis-routed (issue 9),
//! one test per defect, with real messages and exact bytes where the output
//! is defined. Items 3 (pools by method) and 4/5 (config side) are also
//! covered in `config_file.rs` and `balance_router.rs`; 6, 12 and 14 in
//! `core_proxy.rs` and `core_props.rs`.

mod support;

use sip_lb_proto::proxy::{Action, Alias, Forwarded, Identity, Listener, Policy, Proxy, ReplyCode};
use std::net::SocketAddr;
use support::{keys, sip, text, uas_response};

const LB: &str = "192.0.2.10:5060";
const BACKEND: &str = "10.0.0.100:5060";
const CLIENT: &str = "198.51.100.7:5060";

fn proxy() -> Proxy {
    support::proxy_at(LB)
}

fn backend(_: &[u8], _: u64) -> Option<SocketAddr> {
    BACKEND.parse().ok()
}

fn run(p: &Proxy, msg: &[u8], src: &str, on: usize) -> (Action, Vec<u8>) {
    let mut out = Vec::new();
    let a = p.handle(&backend, msg, src.parse().unwrap(), on, &mut out);
    (a, out)
}

fn forwarded(a: Action) {
    assert_eq!(a, Action::Forward { to: BACKEND.parse().unwrap(), from: 0, what: Forwarded::Request });
}

/// The branch in the first line after the request line.
fn our_branch(out: &[u8]) -> String {
    let t = text(out);
    let line = t.lines().nth(1).unwrap().to_owned();
    line[line.find("branch=").unwrap() + 7..].to_owned()
}

fn request(head: &str) -> Vec<u8> {
    sip(&format!("{head}\nContent-Length: 0\n\n"))
}

/// An OPTIONS from the client with this top Via, Call-ID and CSeq number.
fn options(via: &str, call_id: &str, cseq: &str) -> Vec<u8> {
    request(&format!(
        "OPTIONS sip:bob@example.com SIP/2.0
Via: {via}
Max-Forwards: 70
From: <sip:alice@example.org>;tag=1
To: <sip:bob@example.com>
Call-ID: {call_id}
CSeq: {cseq} OPTIONS"
    ))
}

/// 9.1: a Route as the first header line shares its offset with our Via and
/// Max-Forwards insertions; all three edits must land.
#[test]
fn route_as_first_header_line_keeps_our_via_and_max_forwards() {
    let msg = request(
        "INVITE sip:bob@example.com SIP/2.0
Route: <sip:192.0.2.10;lr>
Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKr1st
From: <sip:alice@example.org>;tag=1
To: <sip:bob@example.com>
Call-ID: route-first@example.org
CSeq: 1 INVITE",
    );
    let (a, out) = run(&proxy(), &msg, CLIENT, 0);
    forwarded(a);
    let branch = our_branch(&out);
    assert!(branch.starts_with("z9hG4bKslb") && branch.len() == 42, "{branch}");
    let want = sip(&format!(
        "INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}
Max-Forwards: 70
Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKr1st
From: <sip:alice@example.org>;tag=1
To: <sip:bob@example.com>
Call-ID: route-first@example.org
CSeq: 1 INVITE
Content-Length: 0

"
    ));
    assert_eq!(text(&out), text(&want));

    // The strict-routing path with the Route first: R-URI is our Record-Route
    // value, the last Route is the real target and is removed.
    let msg = request(
        "INVITE sip:192.0.2.10;lr;slb=t SIP/2.0
Route: <sip:carol@chicago.example.com>
Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKstrict
From: <sip:alice@example.org>;tag=1
To: <sip:carol@chicago.example.com>
Call-ID: strict-first@example.org
CSeq: 1 INVITE",
    );
    let (a, out) = run(&proxy(), &msg, CLIENT, 0);
    forwarded(a);
    let t = text(&out);
    let lines: Vec<_> = t.lines().collect();
    assert_eq!(lines[0], "INVITE sip:carol@chicago.example.com SIP/2.0");
    assert!(lines[1].starts_with("Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKslb"));
    assert_eq!(lines[2], "Max-Forwards: 70");
    assert!(!t.contains("Route:"), "{t}");
}

/// 9.2: an IP-addressed trunk sends the dialled number to our IP with a
/// loose Route to us: the Route goes, the Request-URI stays.
#[test]
fn request_uri_naming_our_host_is_not_a_strict_route() {
    let msg = request(
        "INVITE sip:+15551234@192.0.2.10 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKtrunk
Route: <sip:192.0.2.10;lr>
Max-Forwards: 70
From: <sip:+15550000@198.51.100.7>;tag=1
To: <sip:+15551234@192.0.2.10>
Call-ID: trunk@198.51.100.7
CSeq: 1 INVITE",
    );
    let (a, out) = run(&proxy(), &msg, CLIENT, 0);
    forwarded(a);
    let t = text(&out);
    assert!(t.starts_with("INVITE sip:+15551234@192.0.2.10 SIP/2.0\r\n"), "{t}");
    assert!(!t.contains("Route:"));
    // Also without any Route: the R-URI is left alone.
    let no_route = text(&msg).replace("Route: <sip:192.0.2.10;lr>\r\n", "");
    let (_, out) = run(&proxy(), no_route.as_bytes(), CLIENT, 0);
    assert!(text(&out).starts_with("INVITE sip:+15551234@192.0.2.10 SIP/2.0\r\n"));
}

/// 9.4: an IPv6 backend behind an IPv4 arrival socket: the request leaves
/// from the IPv6 listener, with that listener's Via, and the response
/// leaves from the IPv4 listener the client sent to (recorded in the branch).
#[test]
fn backend_of_the_other_family_gets_the_listener_of_its_family() {
    let p = support::proxy_with(&[LB, "[2001:db8::10]:5060"], Policy::default());
    let v6 = |_: &[u8], _: u64| "[2001:db8::100]:5060".parse().ok();
    let msg = options("SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKfam", "family@example.org", "1");
    let mut out = Vec::new();
    let a = p.handle(&v6, &msg, CLIENT.parse().unwrap(), 0, &mut out);
    assert_eq!(a, Action::Forward { to: "[2001:db8::100]:5060".parse().unwrap(), from: 1, what: Forwarded::Request });
    assert!(text(&out).lines().nth(1).unwrap().starts_with("Via: SIP/2.0/UDP [2001:db8::10]:5060;branch=z9hG4bKslb"));
    let mut back = Vec::new();
    let a = p.handle(&v6, &uas_response(&out, "200 OK"), "[2001:db8::100]:5060".parse().unwrap(), 1, &mut back);
    assert_eq!(a, Action::Forward { to: CLIENT.parse().unwrap(), from: 0, what: Forwarded::Response });
    // No listener of the backend's family at all: counted, not sent.
    let (a, _) = {
        let mut out = Vec::new();
        (proxy().handle(&v6, &msg, CLIENT.parse().unwrap(), 0, &mut out), out)
    };
    assert_eq!(a, Action::Drop(sip_lb_proto::proxy::DropReason::NoListenerForFamily));
}

/// 9.5: each listen address has its own advertised address; the Via names
/// the socket the request arrived on and the response leaves from it.
#[test]
fn each_listener_advertises_itself_and_answers_from_itself() {
    let p = Proxy::new(
        Identity {
            listeners: vec![
                Listener { local: "0.0.0.0:5060".parse().unwrap(), advertise: "203.0.113.1:5060".parse().unwrap() },
                Listener::at("10.0.0.1:5080".parse().unwrap()),
            ],
            aliases: Vec::new(),
        },
        keys(),
        Policy::default(),
    );
    let msg = options("SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKtwo", "two-listeners@example.org", "1");
    for (on, via) in [(0, "203.0.113.1:5060"), (1, "10.0.0.1:5080")] {
        let (a, out) = run(&p, &msg, CLIENT, on);
        assert_eq!(a, Action::Forward { to: BACKEND.parse().unwrap(), from: on, what: Forwarded::Request });
        assert!(text(&out).lines().nth(1).unwrap().starts_with(&format!("Via: SIP/2.0/UDP {via};branch=")), "{on}");
        // The response may arrive on either socket; it leaves from ours.
        for arrived in [0, 1] {
            let (a, _) = run(&p, &uas_response(&out, "200 OK"), BACKEND, arrived);
            assert_eq!(a, Action::Forward { to: CLIENT.parse().unwrap(), from: on, what: Forwarded::Response });
        }
        // A stateless reply leaves from the arrival socket (the driver's rule)
        // and goes to the source.
        let bad = text(&msg).replace("Max-Forwards: 70", "Max-Forwards: 0");
        let (a, _) = run(&p, bad.as_bytes(), CLIENT, on);
        assert_eq!(a, Action::Reply { to: CLIENT.parse().unwrap(), code: ReplyCode::TooManyHops });
    }
}

/// 9.7 and 9.8: the client cannot choose where responses go.
#[test]
fn received_and_rport_always_come_from_the_packet() {
    let msg = |via: &str| options(via, "stamp@example.org", "1");
    for (via, src, want) in [
        // sent-by equals the source, received names another host.
        (
            "SIP/2.0/UDP 198.51.100.7;received=127.0.0.3;branch=z9hG4bKa",
            CLIENT,
            "SIP/2.0/UDP 198.51.100.7;received=198.51.100.7;branch=z9hG4bKa",
        ),
        // A port chosen by the client.
        (
            "SIP/2.0/UDP 198.51.100.7;rport=4444;branch=z9hG4bKb",
            "198.51.100.7:6000",
            "SIP/2.0/UDP 198.51.100.7;rport=6000;branch=z9hG4bKb;received=198.51.100.7",
        ),
        // Two received params: one left, with the source.
        (
            "SIP/2.0/UDP h.example.org;received=10.0.0.9;branch=z9hG4bKc;received=127.0.0.1",
            CLIENT,
            "SIP/2.0/UDP h.example.org;received=198.51.100.7;branch=z9hG4bKc",
        ),
        // rport= with an empty value is a plain rport (9.8).
        (
            "SIP/2.0/UDP 10.1.1.1:4540;rport=;branch=z9hG4bKd",
            "198.51.100.7:9988",
            "SIP/2.0/UDP 10.1.1.1:4540;rport=9988;branch=z9hG4bKd;received=198.51.100.7",
        ),
    ] {
        let (a, out) = run(&proxy(), &msg(via), src, 0);
        forwarded(a);
        let t = text(&out);
        assert_eq!(t.lines().nth(2).unwrap(), format!("Via: {want}"), "{via}");
        // And the response goes where the packet came from.
        let (a, _) = run(&proxy(), &uas_response(&out, "200 OK"), BACKEND, 0);
        let Action::Forward { to, .. } = a else { panic!("{via}: {a:?}") };
        assert_eq!(to.ip(), src.parse::<SocketAddr>().unwrap().ip(), "{via}");
    }
}

/// 9.9: a branch that is only the cookie says nothing unique: each
/// transaction of that client must still get its own downstream branch.
#[test]
fn bare_cookie_branch_gets_a_branch_per_transaction() {
    let msg =
        |cseq: u32| options("SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK", "badbranch@example.org", &cseq.to_string());
    let b1 = our_branch(&run(&proxy(), &msg(1), CLIENT, 0).1);
    let b2 = our_branch(&run(&proxy(), &msg(2), CLIENT, 0).1);
    assert_ne!(b1, b2);
    assert_eq!(b1, our_branch(&run(&proxy(), &msg(1), CLIENT, 0).1), "a retransmission keeps its branch");
}

/// 9.10: RFC 2543 clients: the CANCEL and the non-2xx ACK (which carries
/// the To tag the INVITE did not) get the INVITE's downstream branch.
#[test]
fn rfc2543_cancel_and_ack_match_the_invite() {
    let m = |method: &str, to_tag: &str| {
        request(&format!(
            "{method} sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 198.51.100.7;branch=2543old
Max-Forwards: 70
From: <sip:alice@example.org>;tag=1
To: <sip:bob@example.com>{to_tag}
Call-ID: old@example.org
CSeq: 5 {method}"
        ))
    };
    let invite = our_branch(&run(&proxy(), &m("INVITE", ""), CLIENT, 0).1);
    assert_eq!(our_branch(&run(&proxy(), &m("CANCEL", ""), CLIENT, 0).1), invite);
    assert_eq!(our_branch(&run(&proxy(), &m("ACK", ";tag=bob486"), CLIENT, 0).1), invite);
    let next = text(&m("INVITE", "")).replace("CSeq: 5", "CSeq: 6");
    assert_ne!(our_branch(&run(&proxy(), next.as_bytes(), CLIENT, 0).1), invite);
}

/// 9.11: names and addresses in `[sip] aliases` are us: their Route is
/// removed instead of looping through a proxy backend.
#[test]
fn aliases_are_recognised_as_us() {
    let mut id = Identity::single(LB.parse().unwrap());
    id.aliases = vec![Alias::new("lb.example.net", None), Alias::new("198.51.100.77", Some(5060))];
    let aliased = Proxy::new(id, keys(), Policy::default());
    let msg = |route: &str| {
        request(&format!(
            "INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKalias
Route: {route}
Max-Forwards: 70
From: <sip:alice@example.org>;tag=1
To: <sip:bob@example.com>
Call-ID: alias@example.org
CSeq: 1 INVITE"
        ))
    };
    for route in ["<sip:lb.example.net;lr>", "<sip:LB.Example.NET:5060;lr>", "<sip:198.51.100.77;lr>"] {
        let (a, out) = run(&aliased, &msg(route), CLIENT, 0);
        forwarded(a);
        assert!(!text(&out).contains("Route:"), "{route}");
        // Without the alias it is someone else's Route, kept.
        let (_, out) = run(&proxy(), &msg(route), CLIENT, 0);
        assert!(text(&out).contains(&format!("Route: {route}\r\n")), "{route}");
    }
    let (_, out) = run(&aliased, &msg("<sip:lb.example.net:7000;lr>"), CLIENT, 0);
    assert!(text(&out).contains("Route: <sip:lb.example.net:7000;lr>"), "other port: not us");
}

/// 9.13: CSeq numbers up to 2^32-1 (§20.16).
#[test]
fn cseq_up_to_32_bits_is_forwarded() {
    for n in ["2147483648", "3000000000", "4294967295"] {
        let msg = options(&format!("SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKcseq{n}"), "cseq@example.org", n);
        forwarded(run(&proxy(), &msg, CLIENT, 0).0);
    }
}

/// 9.15: the core says what it forwarded, whatever the bytes start with
/// (leading CRLF, lower-case version): the driver never looks again.
#[test]
fn forward_says_request_or_response() {
    let msg = options("SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKkind", "kind@example.org", "1");
    let mut lead = b"\r\n\r\n".to_vec();
    lead.extend_from_slice(&msg);
    let (a, fwd) = run(&proxy(), &lead, CLIENT, 0);
    forwarded(a);
    let mut resp = b"\r\n".to_vec();
    resp.extend_from_slice(&text(&uas_response(&fwd, "200 OK")).replacen("SIP/2.0 200", "sip/2.0 200", 1).into_bytes());
    let (a, _) = run(&proxy(), &resp, BACKEND, 0);
    assert_eq!(a, Action::Forward { to: CLIENT.parse().unwrap(), from: 0, what: Forwarded::Response });
}
