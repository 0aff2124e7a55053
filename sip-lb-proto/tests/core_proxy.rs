//! The stateless-proxy checklist (../shared/notes/stateless-proxy.md), one
//! test per item, driving `Proxy::handle` with whole SIP messages.

mod support;

use sip_lb_common::call_id_hash;
use sip_lb_proto::proxy::{Action, Chooser, DropReason, Forwarded, Identity, Listener, Policy, Proxy, ReplyCode};
use std::cell::Cell;
use std::net::SocketAddr;
use support::{keys, signed_branch, sip, text, uas_response};

const BACKEND: &str = "10.0.0.100:5060";

/// Always the same backend; records what it was asked.
struct Fixed {
    to: Option<SocketAddr>,
    asked: Cell<Option<(Vec<u8>, u64)>>,
}

impl Chooser for Fixed {
    fn choose(&self, method: &[u8], call_id_hash: u64) -> Option<SocketAddr> {
        self.asked.set(Some((method.to_vec(), call_id_hash)));
        self.to
    }
}

fn backend() -> Fixed {
    Fixed { to: Some(BACKEND.parse().unwrap()), asked: Cell::new(None) }
}

/// Bound to 10.0.0.1:5060, advertising 192.0.2.10:5060.
fn identity() -> Identity {
    Identity {
        listeners: vec![Listener {
            local: "10.0.0.1:5060".parse().unwrap(),
            advertise: "192.0.2.10:5060".parse().unwrap(),
        }],
        aliases: Vec::new(),
    }
}

fn proxy() -> Proxy {
    Proxy::new(identity(), keys(), Policy::default())
}

fn run(msg: &[u8], src: &str) -> (Action, Vec<u8>) {
    run_with(&backend(), msg, src)
}

fn run_with(c: &Fixed, msg: &[u8], src: &str) -> (Action, Vec<u8>) {
    run_on(&proxy(), c, msg, src)
}

fn run_on(p: &Proxy, c: &Fixed, msg: &[u8], src: &str) -> (Action, Vec<u8>) {
    let mut out = Vec::with_capacity(2048);
    let a = p.handle(c, msg, src.parse().unwrap(), 0, &mut out);
    (a, out)
}

/// Our branch in the first Via line of a forwarded request.
fn our_branch(out: &[u8]) -> String {
    let t = text(out);
    let line = t.lines().nth(1).unwrap().to_owned();
    let prefix = "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKslb";
    assert!(line.starts_with(prefix), "{line}");
    let hex = &line[prefix.len()..];
    assert_eq!(hex.len(), 32, "transaction hash and MAC");
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    line["Via: SIP/2.0/UDP 192.0.2.10:5060;branch=".len()..].to_owned()
}

fn forwarded(a: Action) {
    assert_eq!(a, Action::Forward { to: BACKEND.parse().unwrap(), from: 0, what: Forwarded::Request });
}

/// A response relayed to `to`.
fn relayed(to: &str) -> Action {
    Action::Forward { to: to.parse().unwrap(), from: 0, what: Forwarded::Response }
}

const SDP: &str = "v=0
o=alice 2890844526 2890844526 IN IP4 pc33.atlanta.com
s=Session SDP
c=IN IP4 pc33.atlanta.com
t=0 0
m=audio 49172 RTP/AVP 0
a=rtpmap:0 PCMU/8000
";

fn invite() -> Vec<u8> {
    sip(&format!(
        "INVITE sip:bob@biloxi.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds
Max-Forwards: 70
To: Bob <sip:bob@biloxi.com>
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.com
CSeq: 314159 INVITE
Contact: <sip:alice@pc33.atlanta.com>
Content-Type: application/sdp
Content-Length: @

{SDP}"
    ))
}

const ALICE: &str = "192.0.2.101:5060";

#[test]
fn invite_forwarded_exact_bytes() {
    let (a, out) = run(&invite(), ALICE);
    forwarded(a);
    let branch = our_branch(&out);
    let expected = sip(&format!(
        "INVITE sip:bob@biloxi.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;received=192.0.2.101
Max-Forwards: 69
To: Bob <sip:bob@biloxi.com>
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.com
CSeq: 314159 INVITE
Contact: <sip:alice@pc33.atlanta.com>
Content-Type: application/sdp
Content-Length: @

{SDP}"
    ));
    assert_eq!(text(&out), text(&expected));
}

#[test]
fn target_is_chosen_by_call_id_hash_and_method() {
    let c = backend();
    let (a, _) = run_with(&c, &invite(), ALICE);
    forwarded(a);
    let (method, hash) = c.asked.take().unwrap();
    assert_eq!(method, b"INVITE");
    assert_eq!(hash, call_id_hash(b"a84b4c76e66710@pc33.atlanta.com"));
    // Compact form and odd spacing hash the same.
    let compact = text(&invite()).replace("Call-ID: a84b", "i:   a84b");
    run_with(&c, compact.as_bytes(), ALICE);
    assert_eq!(c.asked.take().unwrap().1, hash);
}

#[test]
fn retransmission_cancel_and_non2xx_ack_share_the_branch() {
    let (_, first) = run(&invite(), ALICE);
    let (_, again) = run(&invite(), ALICE);
    assert_eq!(first, again, "a retransmission is forwarded byte-identically");
    let b = our_branch(&first);
    let cancel = sip("CANCEL sip:bob@biloxi.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds
Max-Forwards: 70
To: Bob <sip:bob@biloxi.com>
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.com
CSeq: 314159 CANCEL
Content-Length: 0

");
    let (a, out) = run(&cancel, ALICE);
    forwarded(a);
    assert_eq!(our_branch(&out), b);
    let ack = sip("ACK sip:bob@biloxi.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds
Max-Forwards: 70
To: Bob <sip:bob@biloxi.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.com
CSeq: 314159 ACK
Content-Length: 0

");
    let (a, out) = run(&ack, ALICE);
    forwarded(a);
    assert_eq!(our_branch(&out), b);
    // A new transaction gets a new branch.
    let other = text(&invite()).replace("z9hG4bK776asdhds", "z9hG4bK776asdhdt");
    let (_, out) = run(other.as_bytes(), ALICE);
    assert_ne!(our_branch(&out), b);
}

#[test]
fn rfc2543_client_branch_from_16_11_fields() {
    let old = text(&invite()).replace("branch=z9hG4bK776asdhds", "branch=1234");
    let (_, a) = run(old.as_bytes(), ALICE);
    let (_, b) = run(old.as_bytes(), ALICE);
    assert_eq!(our_branch(&a), our_branch(&b));
    let next = old.replace("CSeq: 314159 INVITE", "CSeq: 314160 INVITE");
    let (_, c) = run(next.as_bytes(), ALICE);
    assert_ne!(our_branch(&a), our_branch(&c));
    let no_branch = text(&invite()).replace(";branch=z9hG4bK776asdhds", "");
    let (act, d) = run(no_branch.as_bytes(), ALICE);
    forwarded(act);
    our_branch(&d);
}

#[test]
fn max_forwards_zero_gets_483_exact_bytes() {
    let msg = text(&invite()).replace("Max-Forwards: 70", "Max-Forwards: 0");
    let (a, out) = run(msg.as_bytes(), ALICE);
    assert_eq!(a, Action::Reply { to: ALICE.parse().unwrap(), code: ReplyCode::TooManyHops });
    let t = text(&out);
    let tag_at = t.find("To: Bob <sip:bob@biloxi.com>;tag=").unwrap() + 33;
    let tag = &t[tag_at..tag_at + 16];
    let expected = format!(
        "SIP/2.0 483 Too Many Hops\r
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;received=192.0.2.101\r
To: Bob <sip:bob@biloxi.com>;tag={tag}\r
From: Alice <sip:alice@atlanta.com>;tag=1928301774\r
Call-ID: a84b4c76e66710@pc33.atlanta.com\r
CSeq: 314159 INVITE\r
Content-Length: 0\r
\r
"
    );
    assert_eq!(t, expected);
    // Deterministic tag: a retransmission gets the same reply.
    assert_eq!(run(msg.as_bytes(), ALICE).1, out);
    // An existing To tag is kept, none added.
    let tagged = msg.replace("To: Bob <sip:bob@biloxi.com>", "To: Bob <sip:bob@biloxi.com>;tag=x1");
    let (_, out) = run(tagged.as_bytes(), ALICE);
    assert!(text(&out).contains("\r\nTo: Bob <sip:bob@biloxi.com>;tag=x1\r\n"));
}

#[test]
fn max_forwards_decremented_or_added() {
    for (given, want) in [("10", "9"), ("1", "0"), ("255", "254"), ("0068", "67")] {
        let msg = text(&invite()).replace("Max-Forwards: 70", &format!("Max-Forwards: {given}"));
        let (a, out) = run(msg.as_bytes(), ALICE);
        forwarded(a);
        let t = text(&out);
        assert!(t.contains(&format!("\r\nMax-Forwards: {want}\r\n")), "{t}");
        let our_via = "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKslb0123456789abcdef0123456789abcdef\r\n".len();
        let received = ";received=192.0.2.101".len();
        assert_eq!(t.len() + given.len(), msg.len() + want.len() + our_via + received, "only the value changed");
    }
    let msg = text(&invite()).replace("Max-Forwards: 70\r\n", "");
    let (a, out) = run(msg.as_bytes(), ALICE);
    forwarded(a);
    let t = text(&out);
    let second = t.lines().nth(2).unwrap();
    assert_eq!(second, "Max-Forwards: 70");
    assert_eq!(t.matches("Max-Forwards").count(), 1);
}

#[test]
fn bad_max_forwards_is_400() {
    for bad in [
        "Max-Forwards: abc",
        "Max-Forwards: 256",
        "Max-Forwards: -1",
        "Max-Forwards: 70\r\nMax-Forwards: 70",
        "Max-Forwards:",
    ] {
        let msg = text(&invite()).replace("Max-Forwards: 70", bad);
        let (a, out) = run(msg.as_bytes(), ALICE);
        assert_eq!(a, Action::Reply { to: ALICE.parse().unwrap(), code: ReplyCode::BadRequest }, "{bad}");
        assert!(out.starts_with(b"SIP/2.0 400 Bad Request\r\n"));
    }
}

/// Issue 9.12: the balancer never routes on the R-URI, so every well-formed
/// absolute URI passes by default (emergency `urn:service:sos`, `im:`,
/// `pres:`); `[sip] schemes` can restrict it, and then the rest get 416.
#[test]
fn every_scheme_passes_unless_the_operator_restricts_them() {
    for ok in [
        "INVITE tel:+1-212-555-1212",
        "INVITE SIPS:bob@biloxi.com",
        "INVITE urn:service:sos",
        "INVITE im:bob@biloxi.com",
        "INVITE pres:bob@biloxi.com",
        "INVITE nobarf:bob@biloxi.com",
    ] {
        let msg = text(&invite()).replace("INVITE sip:bob@biloxi.com", ok);
        let (a, out) = run(msg.as_bytes(), ALICE);
        forwarded(a);
        assert!(text(&out).starts_with(&format!("{ok} SIP/2.0\r\n")), "{ok}");
    }
    let only_sip =
        Policy { schemes: Some(vec![b"sip"[..].into(), b"sips"[..].into(), b"tel"[..].into()]), ..Policy::default() };
    let p = Proxy::new(identity(), keys(), only_sip);
    let msg = text(&invite()).replace("INVITE sip:bob@biloxi.com", "INVITE urn:service:sos");
    let (a, out) = run_on(&p, &backend(), msg.as_bytes(), ALICE);
    assert_eq!(a, Action::Reply { to: ALICE.parse().unwrap(), code: ReplyCode::UnsupportedUriScheme });
    assert!(out.starts_with(b"SIP/2.0 416 Unsupported URI Scheme\r\n"));
    forwarded(run_on(&p, &backend(), &invite(), ALICE).0);
}

#[test]
fn proxy_require_is_420_with_unsupported() {
    let msg = text(&invite())
        .replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nProxy-Require: foo, bar\r\nproxy-require: baz\r\n");
    let (a, out) = run(msg.as_bytes(), ALICE);
    assert_eq!(a, Action::Reply { to: ALICE.parse().unwrap(), code: ReplyCode::BadExtension });
    let t = text(&out);
    assert!(t.starts_with("SIP/2.0 420 Bad Extension\r\n"));
    assert!(t.ends_with("\r\nUnsupported: foo, bar, baz\r\nContent-Length: 0\r\n\r\n"), "{t}");
    // An empty Proxy-Require asks for nothing.
    let msg = text(&invite()).replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nProxy-Require: \r\n");
    forwarded(run(msg.as_bytes(), ALICE).0);
}

/// Issue 9.12: IMS REGISTERs carry `Proxy-Require: sec-agree` for the
/// P-CSCF behind us; listed options pass, unlisted ones still get 420 and
/// only they are named in Unsupported.
#[test]
fn listed_proxy_require_options_pass() {
    let ims = Policy { proxy_require: vec![b"sec-agree"[..].into()], ..Policy::default() };
    let p = Proxy::new(identity(), keys(), ims);
    let msg = text(&invite()).replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nProxy-Require: sec-agree\r\n");
    let (a, out) = run_on(&p, &backend(), msg.as_bytes(), ALICE);
    forwarded(a);
    assert!(text(&out).contains("\r\nProxy-Require: sec-agree\r\n"));
    let msg = text(&invite()).replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nProxy-Require: Sec-Agree, foo\r\n");
    let (a, out) = run_on(&p, &backend(), msg.as_bytes(), ALICE);
    assert_eq!(a, Action::Reply { to: ALICE.parse().unwrap(), code: ReplyCode::BadExtension });
    assert!(text(&out).ends_with("\r\nUnsupported: foo\r\nContent-Length: 0\r\n\r\n"), "{}", text(&out));
}

fn with_route(route_lines: &str, ruri: &str) -> Vec<u8> {
    let t = text(&invite())
        .replace("Max-Forwards: 70\r\n", &format!("Max-Forwards: 70\r\n{route_lines}"))
        .replace("INVITE sip:bob@biloxi.com", &format!("INVITE {ruri}"));
    t.into_bytes()
}

fn head_lines(out: &[u8]) -> Vec<String> {
    let t = text(out);
    let head = &t[..t.find("\r\n\r\n").unwrap()];
    head.split("\r\n").map(str::to_owned).collect()
}

#[test]
fn loose_route_to_us_is_removed() {
    for r in [
        "Route: <sip:192.0.2.10;lr>\r\n",
        "Route: <sip:192.0.2.10:5060;lr>\r\n",
        "Route: <sip:192.0.2.10>\r\n",
        "ROUTE  :  <sip:10.0.0.1;lr;foo=bar>\r\n",
        "Route: \"LB\" <sip:lb@192.0.2.10;transport=udp;lr>;x=1\r\n",
    ] {
        let (a, out) = run(&with_route(r, "sip:bob@biloxi.com"), ALICE);
        forwarded(a);
        let lines = head_lines(&out);
        assert!(!lines.iter().any(|l| l.to_ascii_lowercase().starts_with("route")), "{r}: {lines:?}");
    }
}

#[test]
fn only_our_route_value_is_removed() {
    let r = "Route: <sip:192.0.2.10;lr>, <sip:p2.example.com;lr>\r\nRoute: <sip:p3.example.com;lr>\r\n";
    let (a, out) = run(&with_route(r, "sip:bob@biloxi.com"), ALICE);
    forwarded(a);
    let lines = head_lines(&out);
    assert!(lines.contains(&"Route: <sip:p2.example.com;lr>".to_owned()), "{lines:?}");
    assert!(lines.contains(&"Route: <sip:p3.example.com;lr>".to_owned()));
    // Not us (other port, other host): untouched.
    for r in ["Route: <sip:192.0.2.10:5070;lr>\r\n", "Route: <sip:p1.example.com;lr>\r\n", "Route: <tel:+1>\r\n"] {
        let msg = with_route(r, "sip:bob@biloxi.com");
        let (_, out) = run(&msg, ALICE);
        assert!(text(&out).contains(r), "{r}");
    }
}

#[test]
fn strict_router_request_uri_is_replaced_by_last_route() {
    let r = "Route: <sip:p2.example.com;lr>\r\nRoute: <sip:bob@192.0.2.44:5080>\r\n";
    let (a, out) = run(&with_route(r, "sip:192.0.2.10;lr;slb=t1"), ALICE);
    forwarded(a);
    let lines = head_lines(&out);
    assert_eq!(lines[0], "INVITE sip:bob@192.0.2.44:5080 SIP/2.0");
    assert!(lines.contains(&"Route: <sip:p2.example.com;lr>".to_owned()));
    assert_eq!(lines.iter().filter(|l| l.starts_with("Route")).count(), 1);

    // Single Route, comma-joined values, and our Route both first and R-URI.
    let r = "Route: <sip:bob@biloxi.com>\r\n";
    let (_, out) = run(&with_route(r, "sip:10.0.0.1;slb"), ALICE);
    let lines = head_lines(&out);
    assert_eq!(lines[0], "INVITE sip:bob@biloxi.com SIP/2.0");
    assert!(!lines.iter().any(|l| l.starts_with("Route")));

    let r = "Route: <sip:192.0.2.10;lr>, <sip:p2.example.com;lr>, <sip:carol@chicago.com>\r\n";
    let (_, out) = run(&with_route(r, "sip:192.0.2.10;slb=t1"), ALICE);
    let lines = head_lines(&out);
    assert_eq!(lines[0], "INVITE sip:carol@chicago.com SIP/2.0");
    assert!(lines.contains(&"Route: <sip:p2.example.com;lr>".to_owned()), "{lines:?}");

    let r = "Route: <sip:192.0.2.10;lr>, <sip:carol@chicago.com>\r\n";
    let (_, out) = run(&with_route(r, "sip:192.0.2.10;slb=t1"), ALICE);
    let lines = head_lines(&out);
    assert_eq!(lines[0], "INVITE sip:carol@chicago.com SIP/2.0");
    assert!(!lines.iter().any(|l| l.starts_with("Route")), "{lines:?}");
}

#[test]
fn received_and_rport_on_the_client_via() {
    let base = text(&invite());
    // sent-by equal to the source: untouched.
    let same = base.replace("Via: SIP/2.0/UDP pc33.atlanta.com;", "Via: SIP/2.0/UDP 192.0.2.101;");
    let (_, out) = run(same.as_bytes(), ALICE);
    assert!(text(&out).contains("\r\nVia: SIP/2.0/UDP 192.0.2.101;branch=z9hG4bK776asdhds\r\n"));
    // NAT: private sent-by, rport asked.
    let nat = base.replace("Via: SIP/2.0/UDP pc33.atlanta.com;", "Via: SIP/2.0/UDP 10.1.1.1:4540;rport;");
    let (_, out) = run(nat.as_bytes(), "192.0.2.1:9988");
    assert!(text(&out)
        .contains("\r\nVia: SIP/2.0/UDP 10.1.1.1:4540;rport=9988;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n"));
    // Lower Vias are left alone.
    let two = base.replace(
        "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds",
        "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds, SIP/2.0/UDP 10.9.9.9;rport",
    );
    let (_, out) = run(two.as_bytes(), ALICE);
    assert!(text(&out).contains("\r\nVia: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;received=192.0.2.101, SIP/2.0/UDP 10.9.9.9;rport\r\n"));
}

#[test]
fn stateless_reply_goes_to_source_with_rport_else_sent_by_port() {
    let no_cid = text(&invite()).replace("Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n", "");
    let nat = no_cid.replace("Via: SIP/2.0/UDP pc33.atlanta.com;", "Via: SIP/2.0/UDP 10.1.1.1:4540;rport;");
    let (a, out) = run(nat.as_bytes(), "192.0.2.1:9988");
    assert_eq!(a, Action::Reply { to: "192.0.2.1:9988".parse().unwrap(), code: ReplyCode::BadRequest });
    assert!(text(&out)
        .contains("\r\nVia: SIP/2.0/UDP 10.1.1.1:4540;rport=9988;branch=z9hG4bK776asdhds;received=192.0.2.1\r\n"));
    let port = no_cid.replace("Via: SIP/2.0/UDP pc33.atlanta.com;", "Via: SIP/2.0/UDP pc33.atlanta.com:5070;");
    let (a, _) = run(port.as_bytes(), "192.0.2.1:9988");
    assert_eq!(a, Action::Reply { to: "192.0.2.1:5070".parse().unwrap(), code: ReplyCode::BadRequest });
}

#[test]
fn malformed_requests_get_400() {
    let base = text(&invite());
    let cases = [
        ("missing Call-ID", base.replace("Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n", "")),
        ("missing From", base.replace("From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n", "")),
        ("missing To", base.replace("To: Bob <sip:bob@biloxi.com>\r\n", "")),
        ("missing CSeq", base.replace("CSeq: 314159 INVITE\r\n", "")),
        ("duplicate Call-ID", base.replace("CSeq: 314159 INVITE\r\n", "CSeq: 314159 INVITE\r\ni: other\r\n")),
        ("duplicate To", base.replace("CSeq: 314159 INVITE\r\n", "CSeq: 314159 INVITE\r\nt: <sip:x@y>\r\n")),
        ("CSeq method mismatch", base.replace("CSeq: 314159 INVITE", "CSeq: 314159 OPTIONS")),
        ("CSeq too big", base.replace("CSeq: 314159 INVITE", "CSeq: 4294967296 INVITE")),
        ("CSeq no number", base.replace("CSeq: 314159 INVITE", "CSeq: INVITE")),
        ("empty Call-ID", base.replace("Call-ID: a84b4c76e66710@pc33.atlanta.com", "Call-ID: ")),
        ("bad version", base.replace("sip:bob@biloxi.com SIP/2.0", "sip:bob@biloxi.com SIP/3.0")),
        ("space in R-URI", base.replace("INVITE sip:bob@biloxi.com", "INVITE sip:bob @biloxi.com")),
        ("R-URI not a URI", base.replace("INVITE sip:bob@biloxi.com", "INVITE bob")),
        ("Content-Length too big", base.replace("Content-Length: 156", "Content-Length: 157")),
        ("two Content-Length", base.replace("Content-Length: 156", "Content-Length: 156\r\nl: 156")),
        ("negative Content-Length", base.replace("Content-Length: 156", "Content-Length: -156")),
        ("header line without colon", base.replace("Max-Forwards: 70", "Max-Forwards 70")),
        ("unparseable top Via", base.replace("SIP/2.0/UDP pc33.atlanta.com", "SIP/2.0/UDP pc33.atlanta.com junk")),
    ];
    assert!(base.contains("Content-Length: 156\r\n"));
    for (what, msg) in cases {
        let (a, out) = run(msg.as_bytes(), ALICE);
        assert!(matches!(a, Action::Reply { code: ReplyCode::BadRequest, .. }), "{what}: {a:?}");
        assert!(out.starts_with(b"SIP/2.0 400 Bad Request\r\n"), "{what}");
        assert!(out.ends_with(b"\r\nContent-Length: 0\r\n\r\n"), "{what}");
    }
}

#[test]
fn unanswerable_requests_are_dropped() {
    let no_via = text(&invite()).replace("Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n", "");
    assert_eq!(run(no_via.as_bytes(), ALICE).0, Action::Drop(DropReason::Malformed));
    assert_eq!(run(b"INVITE sip:bob@biloxi.com SIP/2.0", ALICE).0, Action::Drop(DropReason::Malformed));
    for ka in [&b"\r\n\r\n"[..], b"\r\n", b"\n", b""] {
        let (a, out) = run(ka, ALICE);
        assert_eq!(a, Action::Drop(DropReason::KeepAlive));
        assert!(out.is_empty());
    }
}

#[test]
fn ack_is_never_answered() {
    let ack = sip("ACK sip:bob@biloxi.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds
Max-Forwards: 0
To: Bob <sip:bob@biloxi.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.com
CSeq: 314159 ACK
Content-Length: 0

");
    assert_eq!(run(&ack, ALICE).0, Action::Drop(DropReason::AckRejected));
    let ok = text(&ack).replace("Max-Forwards: 0", "Max-Forwards: 70");
    let none = Fixed { to: None, asked: Cell::new(None) };
    assert_eq!(run_with(&none, ok.as_bytes(), ALICE).0, Action::Drop(DropReason::AckNoBackend));
}

#[test]
fn no_backend_is_503() {
    let none = Fixed { to: None, asked: Cell::new(None) };
    let (a, out) = run_with(&none, &invite(), ALICE);
    assert_eq!(a, Action::Reply { to: ALICE.parse().unwrap(), code: ReplyCode::ServiceUnavailable });
    assert!(out.starts_with(b"SIP/2.0 503 Service Unavailable\r\n"));
    assert!(!text(&out).contains("100 Trying"));
}

#[test]
fn body_is_exactly_content_length() {
    // Surplus bytes after the declared body are not forwarded.
    let mut msg = invite();
    msg.extend_from_slice(b"garbage after the body");
    let (a, out) = run(&msg, ALICE);
    forwarded(a);
    assert!(out.ends_with(SDP.replace('\n', "\r\n").as_bytes()));
    // Without Content-Length the body is the rest of the datagram.
    let no_cl = text(&invite()).replace("Content-Length: 156\r\n", "");
    let (a, out) = run(no_cl.as_bytes(), ALICE);
    forwarded(a);
    assert!(out.ends_with(SDP.replace('\n', "\r\n").as_bytes()));
}

/// A MESSAGE of exactly `len` bytes from ALICE.
fn message_of(len: usize) -> Vec<u8> {
    let head = "MESSAGE sip:bob@biloxi.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.101;branch=z9hG4bKbig\r\nTo: <sip:bob@biloxi.com>\r\nFrom: <sip:alice@atlanta.com>;tag=1\r\nCall-ID: big@atlanta.com\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: ";
    let mut body = len - head.len() - 9;
    let mut msg;
    loop {
        msg = format!("{head}{body}\r\n\r\n");
        if msg.len() + body == len {
            break;
        }
        body = len - msg.len();
    }
    let mut msg = msg.into_bytes();
    msg.resize(len, b'x');
    msg
}

#[test]
fn datagram_of_65535_bytes_is_accepted() {
    // Accepted (parsed and answered), but with our Via it would no longer
    // fit in a UDP datagram: issue 9.14, 513 instead of a silent tx error.
    let mut msg = message_of(65_535);
    let (a, out) = run(&msg, ALICE);
    assert_eq!(a, Action::Reply { to: ALICE.parse().unwrap(), code: ReplyCode::MessageTooLarge });
    assert!(out.starts_with(b"SIP/2.0 513 Message Too Large\r\n"), "{}", text(&out[..40]));
    msg.push(b'x');
    assert_eq!(run(&msg, ALICE).0, Action::Drop(DropReason::Malformed));
    // What still fits after our Via is forwarded.
    let (a, out) = run(&message_of(65_400), ALICE);
    forwarded(a);
    assert!(out.len() > 65_400 && out.len() <= 65_507);
}

/// Issue 9.14: a request that grows past the UDP limit with our Via.
#[test]
fn request_too_large_after_our_via_gets_513() {
    // We add our Via line and Max-Forwards; 65,507 is the IPv4 UDP payload limit.
    let added = "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKslb".len() + 32 + 2 + "Max-Forwards: 70\r\n".len();
    let fits = 65_507 - added;
    let (a, out) = run(&message_of(fits), ALICE);
    forwarded(a);
    assert_eq!(out.len(), 65_507);
    let (a, _) = run(&message_of(fits + 1), ALICE);
    assert_eq!(a, Action::Reply { to: ALICE.parse().unwrap(), code: ReplyCode::MessageTooLarge });
}

// ---------------------------------------------------------------- responses

const CALL_ID: &str = "a84b4c76e66710@pc33.atlanta.com";
/// The client's Via of `invite()` from ALICE, as we forward it.
const ALICE_VIA: &str = "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;received=192.0.2.101";

/// Our Via as we wrote it on `invite()` from ALICE.
fn our_via() -> String {
    let (_, fwd) = run(&invite(), ALICE);
    format!("SIP/2.0/UDP 192.0.2.10:5060;branch={}", our_branch(&fwd))
}

/// Our Via, signed with the test key, for a response whose next Via is `next`.
fn signed_via(next: &str) -> String {
    format!("SIP/2.0/UDP 192.0.2.10:5060;branch={}", signed_branch(7, next, CALL_ID))
}

/// The 200 OK Bob sends back through us for `invite()`.
fn ok_200(our_via: &str) -> Vec<u8> {
    ok_200_next(our_via, ALICE_VIA)
}

fn ok_200_next(our_via: &str, next: &str) -> Vec<u8> {
    sip(&format!(
        "SIP/2.0 200 OK
Via: {our_via}
Via: {next}
To: Bob <sip:bob@biloxi.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: {CALL_ID}
CSeq: 314159 INVITE
Contact: <sip:bob@192.0.2.4>
Content-Length: 0

"
    ))
}

/// A response naming `next` as the next hop, correctly signed.
fn ok_200_to(next: &str) -> Vec<u8> {
    ok_200_next(&signed_via(next), next)
}

#[test]
fn response_exact_bytes_our_via_removed() {
    let (a, out) = run(&ok_200(&our_via()), BACKEND);
    assert_eq!(a, relayed("192.0.2.101:5060"));
    let expected = sip("SIP/2.0 200 OK
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;received=192.0.2.101
To: Bob <sip:bob@biloxi.com>;tag=a6c85cf
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.atlanta.com
CSeq: 314159 INVITE
Contact: <sip:bob@192.0.2.4>
Content-Length: 0

");
    assert_eq!(text(&out), text(&expected));
}

#[test]
fn request_then_response_round_trip() {
    let (_, fwd) = run(&invite(), ALICE);
    let branch = our_branch(&fwd);
    let resp = text(&fwd)
        .replacen("INVITE sip:bob@biloxi.com SIP/2.0", "SIP/2.0 180 Ringing", 1)
        .replace("To: Bob <sip:bob@biloxi.com>", "To: Bob <sip:bob@biloxi.com>;tag=a6c85cf");
    assert!(resp.contains(&branch));
    let (a, out) = run(resp.as_bytes(), BACKEND);
    assert_eq!(a, relayed("192.0.2.101:5060"));
    assert!(!text(&out).contains("z9hG4bKslb"));
    assert!(text(&out).starts_with(
        "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;received=192.0.2.101\r\n"
    ));
    // And what a UAS builds from it.
    let (a, _) = run(&uas_response(&fwd, "486 Busy Here"), BACKEND);
    assert_eq!(a, relayed("192.0.2.101:5060"));
}

#[test]
fn response_next_hop_rules() {
    // rport value and received win.
    let r = ok_200_to("SIP/2.0/UDP 10.1.1.1:4540;rport=9988;branch=z9hG4bKkjshdyff;received=192.0.2.1");
    assert_eq!(run(&r, BACKEND).0, relayed("192.0.2.1:9988"));
    // sent-by port, no received.
    let r = ok_200_to("SIP/2.0/UDP 192.0.2.7:5070;branch=z9hG4bK1");
    assert_eq!(run(&r, BACKEND).0, relayed("192.0.2.7:5070"));
    // Host name without received: no DNS, drop.
    let r = ok_200_to("SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds");
    assert_eq!(run(&r, BACKEND).0, Action::Drop(DropReason::ViaHostname));
    // Only our Via.
    let r = text(&ok_200(&our_via())).replace(&format!("Via: {ALICE_VIA}\r\n"), "");
    assert_eq!(run(r.as_bytes(), BACKEND).0, Action::Drop(DropReason::NoNextVia));
    // IPv6 next hop.
    let r = ok_200_to("SIP/2.0/UDP [2001:db8::9:1];branch=z9hG4bK1;rport=6000");
    assert_eq!(run(&r, BACKEND).0, relayed("[2001:db8::9:1]:6000"));
}

#[test]
fn comma_joined_via_in_response_loses_only_ours() {
    let ours = our_via();
    let r = text(&ok_200(&ours)).replace(&format!("Via: {ours}\r\nVia: "), &format!("v: {ours} ,\r\n "));
    let (a, out) = run(r.as_bytes(), BACKEND);
    assert_eq!(a, relayed("192.0.2.101:5060"));
    assert!(
        text(&out).starts_with(
            "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;received=192.0.2.101\r\nTo:"
        ),
        "{}",
        text(&out)
    );
}

#[test]
fn foreign_responses_are_dropped_silently() {
    let mac = &signed_branch(7, ALICE_VIA, CALL_ID)["z9hG4bKslb".len()..];
    for via in [
        format!("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{mac}"),
        format!("SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKslb{mac}"),
        format!("SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKslb{mac}"),
        format!("SIP/2.0/UDP lb.example.com;branch=z9hG4bKslb{mac}"),
        // Our socket address, but not the address we advertise in Via.
        format!("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKslb{mac}"),
        "SIP/2.0/UDP 192.0.2.10".to_owned(),
    ] {
        let (a, out) = run(&ok_200(&via), BACKEND);
        assert_eq!(a, Action::Drop(DropReason::ForeignResponse), "{via}");
        assert!(out.is_empty());
    }
    // Default port 5060 for our advertised address.
    let r = ok_200_next(&signed_via(ALICE_VIA).replace(":5060;", ";"), ALICE_VIA);
    assert_eq!(run(&r, BACKEND).0, relayed("192.0.2.101:5060"));
}

/// Issue 9.6: our branch prefix is public knowledge; only the MAC over the
/// next Via and the Call-ID makes a response ours.
#[test]
fn forged_responses_fail_the_branch_mac() {
    let victim = "SIP/2.0/UDP 127.0.0.1:22;branch=z9hG4bKvictim";
    for forged in [
        // Our prefix and address, any digits.
        ok_200_next("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKslb0123456789abcdef0123456789abcdef", victim),
        // A real branch of ours, the next Via swapped for a victim.
        ok_200_next(&our_via(), victim),
        // A real branch of ours, the received changed.
        ok_200_next(&our_via(), &ALICE_VIA.replace("192.0.2.101", "192.0.2.102")),
        // A real branch of ours with its MAC altered.
        ok_200_next(&format!("{}0000", &our_via()[..our_via().len() - 4]), ALICE_VIA),
        // Old-style branch of ours without the MAC.
        ok_200("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKslb0123456789abcdef"),
    ] {
        let (a, out) = run(&forged, BACKEND);
        assert_eq!(a, Action::Drop(DropReason::BranchMac), "{}", text(&forged));
        assert!(out.is_empty());
    }
    // Another Call-ID with the same Vias.
    let other = text(&ok_200(&our_via())).replace(&format!("Call-ID: {CALL_ID}"), "Call-ID: other@x");
    assert_eq!(run(other.as_bytes(), BACKEND).0, Action::Drop(DropReason::BranchMac));
    // The unchanged response is relayed.
    assert_eq!(run(&ok_200(&our_via()), BACKEND).0, relayed("192.0.2.101:5060"));
}

/// Issue 9.6: during key rotation the previous key still verifies; a node
/// with another secret does not.
#[test]
fn branch_mac_key_rotation() {
    use sip_lb_proto::proxy::{Key, Keys};
    let old = Key::from_secret(support::SECRET);
    let new = Key::from_secret(b"the next secret, also 32 bytes..");
    let rotated = Proxy::new(identity(), Keys::new(new, Some(old)), Policy::default());
    let stranger = Proxy::new(identity(), Keys::new(new, None), Policy::default());
    let resp = ok_200(&our_via());
    assert_eq!(run_on(&rotated, &backend(), &resp, BACKEND).0, relayed("192.0.2.101:5060"));
    assert_eq!(run_on(&stranger, &backend(), &resp, BACKEND).0, Action::Drop(DropReason::BranchMac));
    // The rotated node signs with the new key: the branch changes, the
    // transaction hash does not.
    let (_, a) = run(&invite(), ALICE);
    let (_, b) = run_on(&rotated, &backend(), &invite(), ALICE);
    let (ba, bb) = (our_branch(&a), our_branch(&b));
    assert_eq!(ba[..26], bb[..26]);
    assert_ne!(ba, bb);
}

#[test]
fn malformed_responses_are_dropped() {
    let ours = our_via();
    let r = text(&ok_200(&ours));
    for bad in [
        r.replace("SIP/2.0 200 OK", "SIP/2.0 2000 OK"),
        r.replace("Content-Length: 0", "Content-Length: 10"),
        r.replace("Content-Length: 0", "Content-Length: 0\r\nl: 0"),
        r.replace("Via: SIP/2.0/UDP pc33", "Via: SIP/2.0/UDP pc33 junk"),
        r.replace("\r\n\r\n", "\r\n"),
    ] {
        assert_eq!(run(bad.as_bytes(), BACKEND).0, Action::Drop(DropReason::MalformedResponse), "{bad}");
    }
    let no_via = r.replace(&format!("Via: {ours}\r\n"), "").replace(&format!("Via: {ALICE_VIA}\r\n"), "");
    assert_eq!(run(no_via.as_bytes(), BACKEND).0, Action::Drop(DropReason::MalformedResponse));
    // Surplus after the body is cut.
    let mut extra = ok_200(&ours);
    extra.extend_from_slice(b"junk");
    let (_, out) = run(&extra, BACKEND);
    assert!(out.ends_with(b"Content-Length: 0\r\n\r\n"));
}

#[test]
fn output_buffer_is_reused() {
    let p = proxy();
    let c = backend();
    let mut out = Vec::with_capacity(4096);
    let cap = out.capacity();
    for _ in 0..3 {
        p.handle(&c, &invite(), ALICE.parse().unwrap(), 0, &mut out);
        p.handle(&c, b"\r\n\r\n", ALICE.parse().unwrap(), 0, &mut out);
        assert!(out.is_empty());
    }
    assert_eq!(out.capacity(), cap);
}

/// A reply to an unverified UDP source must not be larger than what it sent
/// (no amplification): a request cut right after its Via would get a longer
/// 400, so it is dropped instead; a whole bad request still gets its 400.
#[test]
fn stateless_reply_never_larger_than_the_request() {
    let cut =
        sip("INVITE sip:bob@example.com SIP/2.0\nVia: SIP/2.0/UDP 198.51.100.7:5060;rport;branch=z9hG4bKcut\nMax-For");
    let (a, out) = run(&cut, "198.51.100.7:5060");
    assert_eq!(a, Action::Drop(DropReason::ReplyWouldAmplify));
    assert!(out.is_empty());

    let whole = sip("INVITE sip:bob@example.com SIP/2.0\nVia: SIP/2.0/UDP 198.51.100.7:5060;rport;branch=z9hG4bKwhole\nMax-Forwards: 70\nFrom: <sip:alice@example.com>;tag=1\nTo: <sip:bob@example.com>\nCSeq: 1 INVITE\nContact: <sip:alice@198.51.100.7>\nContent-Type: application/sdp\nContent-Length: @\n\nv=0\no=- 1 1 IN IP4 198.51.100.7\ns=-\nc=IN IP4 198.51.100.7\nt=0 0\nm=audio 4000 RTP/AVP 0\n");
    let (a, out) = run(&whole, "198.51.100.7:5060");
    assert!(matches!(a, Action::Reply { code: ReplyCode::BadRequest, .. }), "{a:?}");
    assert!(out.len() <= whole.len());
}
