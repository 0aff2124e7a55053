//! RFC 4475 (SIP torture test messages) and RFC 5118 (IPv6 torture
//! messages), written out under `tests/fixtures/`, through the forwarding
//! step: the valid ones are forwarded intact (only our edits: own Via, the
//! client Via's received/rport, Max-Forwards, our Route), the invalid ones
//! are answered with the right status code or dropped, and nothing is ever
//! forwarded mangled. Plus regression inputs found by fuzzing (`fuzz/`).
//!
//! The fixtures follow the RFC texts; the RFCs' `<allOneLine>` and
//! `<repeat count=N>` notations are expanded (repeat counts shortened where
//! noted in the fixture name's test row) and Content-Length values are the
//! real body lengths unless the message is about a wrong one.

use std::net::SocketAddr;
use std::path::Path;

mod support;

use sip_lb_proto::proxy::{Action, DropReason, Forwarded, Policy, Proxy, ReplyCode};
use sip_lb_proto::sip::{HeaderName, Message, Via};

const BACKEND: &str = "10.0.0.100:5060";
const SRC: &str = "192.0.2.2:5060";

/// What the balancer must do with a fixture: one exact outcome per fixture.
/// Where RFC 4475 allows a proxy several behaviours, the row records the one
/// sip-lb has and a comment says what else the RFC would allow.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Forwarded to the backend, intact.
    Forward,
    /// Stateless reply with this code, to the packet source.
    Reply(u16),
    /// The stateless reply with this code would be larger than the request,
    /// so nothing is sent (`DropReason::ReplyWouldAmplify`: the UDP source
    /// is unverified and we never amplify). Checked exactly: the same
    /// request padded past its body to 1 KiB (bytes after Content-Length
    /// are discarded, RFC 3261 §18.3) gets exactly this reply.
    Suppressed(u16),
    /// Nothing sent.
    Drop(DropReason),
    /// A response (top Via ours) relayed to this address, our Via removed.
    Relay(&'static str),
}
use Expect::*;

const RFC4475: &[(&str, Expect)] = &[
    // 3.1.1 valid messages
    ("wsinv", Forward),
    ("intmeth", Forward),
    ("esc01", Forward),
    ("escnull", Forward),
    ("esc02", Forward),
    ("lwsdisp", Forward),
    ("longreq", Forward),
    ("dblreq", Forward),
    ("semiuri", Forward),
    ("transports", Forward),
    ("mpart01", Forward),
    ("unreason", Relay("192.0.2.198:5060")),
    ("noreason", Relay("192.0.2.105:5060")),
    // 3.1.2 invalid messages
    ("badinv01", Reply(400)),
    ("clerr", Reply(400)),
    ("ncl", Reply(400)),
    ("scalar02", Reply(400)),
    // RFC 4475 asks the UA to discard it; a stateless proxy reads neither
    // the oversized CSeq nor Retry-After and relays it intact.
    ("scalarlg", Relay("192.0.2.129:5060")),
    ("quotbal", Reply(400)),
    ("ltgtruri", Reply(400)),
    ("lwsruri", Reply(400)),
    ("lwsstart", Reply(400)),
    ("trws", Reply(400)),
    // The next five: RFC 4475 lets a proxy forward them without parsing the
    // broken part (or answer 400). sip-lb checks the Request-URI (escruri:
    // headers in it are not allowed, 400) but not Date, Contact, To or From.
    ("escruri", Reply(400)),
    ("baddate", Forward),
    ("regbadct", Forward),
    ("badaspec", Forward),
    ("baddn", Forward),
    ("badvers", Reply(400)),
    ("mismatch01", Suppressed(400)),
    ("mismatch02", Reply(400)),
    ("bigcode", Drop(DropReason::MalformedResponse)),
    // 3.1.3 transaction layer
    ("badbranch", Forward),
    // 3.1.4 application layer
    ("insuf", Reply(400)),
    // Unknown schemes are forwarded by default: the balancer never routes on
    // the R-URI (issue 9.12); `unknown_schemes_get_416_when_restricted`
    // checks these two against a restricting policy.
    ("unkscm", Forward),
    ("novelsc", Forward),
    ("unksm2", Forward),
    ("bext01", Reply(420)),
    ("invut", Forward),
    ("regaut01", Forward),
    ("multi01", Reply(400)),
    ("mcl01", Reply(400)),
    ("bcast", Drop(DropReason::BadNextHop)),
    ("zeromf", Suppressed(483)),
    ("cparam01", Forward),
    ("cparam02", Forward),
    ("regescrt", Forward),
    // 3.2 backward compatibility
    ("inv2543", Forward),
];

const RFC5118: &[(&str, Expect)] = &[
    ("ipv6-good", Forward),
    ("ipv6-bad", Reply(400)),
    ("port-ambiguous", Forward),
    ("port-unambiguous", Forward),
    ("via-received-param-with-delim", Forward),
    ("via-received-param-no-delim", Forward),
    ("ipv4-mapped", Forward),
    ("ipv6-correct-port", Forward),
    ("ipv6-response-to-v6-via", Relay("[2001:db8::9:255]:7070")),
];

fn proxy() -> Proxy {
    support::proxy_with(&["192.0.2.10:5060", "[2001:db8::10]:5060"], Policy::default())
}

fn backend(_: &[u8], _: u64) -> Option<SocketAddr> {
    BACKEND.parse().ok()
}

fn fixture(dir: &str, name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(dir).join(format!("{name}.sip"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Headers of `m` as (name, line bytes), in order.
fn lines<'a>(m: &Message<'a>) -> Vec<(HeaderName, &'a [u8])> {
    m.headers().iter().map(|h| (h.name, m.get(h.line))).collect()
}

/// Forwarded request: parses cleanly, our Via on top, then the original
/// header lines in order, byte for byte, except the ones we may edit (the
/// client's top Via, Max-Forwards, Route); body = the original body.
fn assert_intact_request(name: &str, orig: &[u8], out: &[u8]) {
    let mut slots1 = Message::slots();
    let m =
        Message::parse(out, &mut slots1).unwrap_or_else(|e| panic!("{name}: forwarded message does not parse: {e:?}"));
    assert_eq!(m.defect, None, "{name}: forwarded with a defect");
    let mut slots2 = Message::slots();
    let o = Message::parse(orig, &mut slots2).unwrap();
    let ours = &m.headers()[0];
    assert_eq!(ours.name, HeaderName::Via, "{name}: our Via first");
    let via = Via::parse(out, ours.value).unwrap();
    assert!(via.branch_bytes(out).starts_with(b"z9hG4bKslb"), "{name}");
    let edited = |n: HeaderName| matches!(n, HeaderName::MaxForwards | HeaderName::Route);
    let mut got: Vec<_> = lines(&m).into_iter().skip(1).filter(|(n, _)| !edited(*n)).collect();
    let mut want: Vec<_> = lines(&o).into_iter().filter(|(n, _)| !edited(*n)).collect();
    // The client's top Via may gain received/rport: compare up to its params.
    let gi = got.iter().position(|(n, _)| *n == HeaderName::Via).unwrap();
    let wi = want.iter().position(|(n, _)| *n == HeaderName::Via).unwrap();
    let (g, w) = (got.remove(gi).1, want.remove(wi).1);
    // (received= is rewritten with the packet source, RFC 3261 §18.2.1.)
    let sent_by = &w[..w.iter().position(|&b| b == b';').unwrap_or(w.len())];
    assert!(g.starts_with(sent_by), "{name}: client Via sent-by changed");
    assert_eq!(got, want, "{name}: header lines changed");
    let cl = o
        .find(HeaderName::ContentLength)
        .map(|h| std::str::from_utf8(o.get(h.value)).unwrap().parse::<usize>().unwrap());
    let body = &o.rest()[..cl.unwrap_or(o.rest().len())];
    assert_eq!(m.rest(), body, "{name}: body changed");
    let mf = m.find(HeaderName::MaxForwards).expect("Max-Forwards");
    assert!(m.get(mf.value).iter().all(u8::is_ascii_digit), "{name}: Max-Forwards");
}

fn check(dir: &str, name: &str, expect: Expect) -> Result<(), String> {
    // Responses in the corpus carry an unsigned branch of ours: sign it, as
    // the node that forwarded the request would have.
    let msg = support::resign(&fixture(dir, name));
    let src: SocketAddr = SRC.parse().unwrap();
    let mut out = Vec::new();
    let action = proxy().handle(&backend, &msg, src, 0, &mut out);
    let fail = |why: String| Err(format!("{dir}/{name}: expected {expect:?}, got {action:?}: {why}"));
    match (expect, action) {
        (Forward, Action::Forward { to, what: Forwarded::Request, .. }) if to == BACKEND.parse().unwrap() => {
            assert_intact_request(name, &msg, &out);
            Ok(())
        }
        (Reply(c), Action::Reply { code, to }) if c == code.code() && to.ip() == src.ip() => {
            check_reply(c, &out).or_else(fail)
        }
        (Suppressed(c), Action::Drop(DropReason::ReplyWouldAmplify)) if out.is_empty() => {
            let mut padded = msg.clone();
            padded.resize(1024, b' ');
            let mut big = Vec::new();
            match proxy().handle(&backend, &padded, src, 0, &mut big) {
                Action::Reply { code, to } if code.code() == c && to.ip() == src.ip() && big.len() > msg.len() => {
                    check_reply(c, &big).or_else(fail)
                }
                a => fail(format!("padded to 1 KiB: {a:?}, {} reply bytes", big.len())),
            }
        }
        (Drop(r), Action::Drop(got)) if r == got && out.is_empty() => Ok(()),
        (Relay(addr), Action::Forward { to, what: Forwarded::Response, .. }) if to == addr.parse().unwrap() => {
            let mut slots4 = Message::slots();
            let m = Message::parse(&out, &mut slots4).map_err(|e| format!("{e:?}"))?;
            let mut slots5 = Message::slots();
            let o = Message::parse(&msg, &mut slots5).unwrap();
            // Exactly our Via removed; everything else byte for byte.
            let mut want = lines(&o);
            want.remove(0);
            if lines(&m) != want || m.rest() != o.rest() {
                return fail("relayed response changed".into());
            }
            Ok(())
        }
        _ => fail(String::from_utf8_lossy(&out).chars().take(200).collect()),
    }
}

/// A stateless reply: the status line of `code`, parses, has a Via.
fn check_reply(code: u16, out: &[u8]) -> Result<(), String> {
    if !out.starts_with(format!("SIP/2.0 {code} ").as_bytes()) {
        return Err(String::from_utf8_lossy(out).into_owned());
    }
    let mut slots = Message::slots();
    let m = Message::parse(out, &mut slots).map_err(|e| format!("reply does not parse: {e:?}"))?;
    if m.find(HeaderName::Via).is_none() {
        return Err("reply without Via".into());
    }
    Ok(())
}

fn run_all(dir: &str, table: &[(&str, Expect)]) {
    let failures: Vec<String> = table.iter().filter_map(|(n, e)| check(dir, n, *e).err()).collect();
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), table.len(), failures.join("\n"));
}

#[test]
fn rfc4475_torture_messages() {
    run_all("rfc4475", RFC4475);
}

#[test]
fn rfc5118_ipv6_torture_messages() {
    run_all("rfc5118", RFC5118);
}

#[test]
fn unknown_schemes_get_416_when_restricted() {
    let strict =
        Policy { schemes: Some(vec![b"sip"[..].into(), b"sips"[..].into(), b"tel"[..].into()]), ..Policy::default() };
    let p = support::proxy_with(&["192.0.2.10:5060"], strict);
    let mut out = Vec::new();
    let a = p.handle(&backend, &fixture("rfc4475", "unkscm"), SRC.parse().unwrap(), 0, &mut out);
    assert!(matches!(a, Action::Reply { code: ReplyCode::UnsupportedUriScheme, .. }), "{a:?}");
    assert!(out.starts_with(b"SIP/2.0 416 Unsupported URI Scheme\r\n"));
    // novelsc is so small that its 416 would be larger: no amplification.
    let a = p.handle(&backend, &fixture("rfc4475", "novelsc"), SRC.parse().unwrap(), 0, &mut Vec::new());
    assert_eq!(a, Action::Drop(DropReason::ReplyWouldAmplify));
}

#[test]
fn every_fixture_is_in_a_table() {
    for (dir, table) in [("rfc4475", RFC4475), ("rfc5118", RFC5118)] {
        let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(dir);
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let stem = p.file_stem().unwrap().to_str().unwrap().to_owned();
            assert!(table.iter().any(|(n, _)| *n == stem), "{dir}/{stem} has no expectation");
        }
    }
}
