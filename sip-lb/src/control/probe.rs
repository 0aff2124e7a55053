//! SIP OPTIONS probes: building one for a backend and recognising its
//! answer, with the `sip_lb_proto::sip` views. A probe carries a token in its Via
//! branch (`z9hG4bK-slbp-<hex>`); the answer's top Via gives it back
//! (RFC 3261 §8.2.6.2), which is all the matching the prober needs.
use std::net::SocketAddr;

use sip_lb_proto::sip::message::{Message, StartLine};
use sip_lb_proto::sip::text::{write_hex64, write_host_port};
use sip_lb_proto::sip::{HeaderName, Via};

/// Branch prefix of our probes: the magic cookie plus a marker no client
/// branch or forwarded-request branch (`z9hG4bKslb`) has.
pub const PROBE_BRANCH: &[u8] = b"z9hG4bK-slbp-";

/// Writes an OPTIONS request for `backend` into `out` (cleared first).
/// `via` is the probe socket's address as backends should answer to it.
pub fn build(out: &mut Vec<u8>, backend: SocketAddr, via: SocketAddr, token: u64) {
    out.clear();
    out.extend_from_slice(b"OPTIONS sip:");
    write_host_port(out, backend.ip(), backend.port());
    out.extend_from_slice(b" SIP/2.0\r\nVia: SIP/2.0/UDP ");
    write_host_port(out, via.ip(), via.port());
    out.extend_from_slice(b";branch=");
    out.extend_from_slice(PROBE_BRANCH);
    write_hex64(out, token);
    out.extend_from_slice(b";rport\r\nMax-Forwards: 70\r\nFrom: <sip:sip-lb@");
    write_host_port(out, via.ip(), via.port());
    out.extend_from_slice(b">;tag=slbp\r\nTo: <sip:");
    write_host_port(out, backend.ip(), backend.port());
    out.extend_from_slice(b">\r\nCall-ID: slbp-");
    write_hex64(out, token);
    out.extend_from_slice(b"@sip-lb\r\nCSeq: 1 OPTIONS\r\nAccept: application/sdp\r\nUser-Agent: sip-lb health probe\r\nContent-Length: 0\r\n\r\n");
}

/// A final answer to one of our probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeReply {
    pub token: u64,
    pub code: u16,
}

/// Recognises an answer to a probe. `None` for anything else: requests,
/// provisional responses (1xx: keep waiting), other branches, garbage.
pub fn parse_reply(datagram: &[u8]) -> Option<ProbeReply> {
    let mut slots = Message::slots();
    let m = Message::parse(datagram, &mut slots).ok()?;
    let StartLine::Response { code, .. } = m.start_line else {
        return None;
    };
    if code < 200 {
        return None;
    }
    let via = m.find(HeaderName::Via)?;
    let via = Via::parse(datagram, via.value)?;
    let branch = m.get(via.branch?);
    let hex = branch.strip_prefix(PROBE_BRANCH)?;
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    let token = u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
    Some(ProbeReply { token, code })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_str(backend: &str, via: &str, token: u64) -> String {
        let mut out = Vec::new();
        build(&mut out, backend.parse().unwrap(), via.parse().unwrap(), token);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn builds_a_parseable_options_request() {
        let s = build_str("10.0.0.1:5080", "10.0.0.9:40000", 0xabc);
        assert!(s.starts_with("OPTIONS sip:10.0.0.1:5080 SIP/2.0\r\n"), "{s}");
        assert!(s.contains("\r\nVia: SIP/2.0/UDP 10.0.0.9:40000;branch=z9hG4bK-slbp-"), "{s}");
        assert!(s.contains("\r\nMax-Forwards: 70\r\n"));
        assert!(s.contains("\r\nCSeq: 1 OPTIONS\r\n"));
        assert!(s.ends_with("Content-Length: 0\r\n\r\n"));
        let mut slots = Message::slots();
        let m = Message::parse(s.as_bytes(), &mut slots).unwrap();
        assert_eq!(m.method(), b"OPTIONS");
        assert!(m.defect.is_none());
        for h in [HeaderName::Via, HeaderName::From, HeaderName::To, HeaderName::CallId, HeaderName::CSeq] {
            assert!(m.find(h).is_some(), "{h:?} missing");
        }
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let s = build_str("[2001:db8::1]:5060", "[2001:db8::9]:4000", 1);
        assert!(s.starts_with("OPTIONS sip:[2001:db8::1]:5060 SIP/2.0\r\n"), "{s}");
        assert!(s.contains("Via: SIP/2.0/UDP [2001:db8::9]:4000;"), "{s}");
    }

    /// What a UAS sends back: the request's Via, From, To (+tag), Call-ID, CSeq.
    fn answer(request: &str, status: &str) -> String {
        let mut out = format!("SIP/2.0 {status}\r\n");
        for l in request.split("\r\n").skip(1) {
            if l.is_empty() {
                break;
            }
            let name = l.split(':').next().unwrap();
            match name {
                "Via" | "From" | "Call-ID" | "CSeq" => out += &format!("{l}\r\n"),
                "To" => out += &format!("{l};tag=uas\r\n"),
                _ => {}
            }
        }
        out + "Content-Length: 0\r\n\r\n"
    }

    #[test]
    fn parses_the_answer_with_its_token() {
        for token in [0u64, 1, 0xdead_beef, u64::MAX] {
            let req = build_str("127.0.0.1:5080", "127.0.0.1:40000", token);
            let r = parse_reply(answer(&req, "200 OK").as_bytes());
            assert_eq!(r, Some(ProbeReply { token, code: 200 }));
            let r = parse_reply(answer(&req, "503 Service Unavailable").as_bytes());
            assert_eq!(r, Some(ProbeReply { token, code: 503 }));
        }
    }

    #[test]
    fn ignores_provisionals_requests_and_foreign_branches() {
        let req = build_str("127.0.0.1:5080", "127.0.0.1:40000", 7);
        assert_eq!(parse_reply(answer(&req, "100 Trying").as_bytes()), None);
        assert_eq!(parse_reply(req.as_bytes()), None);
        let foreign = answer(&req, "200 OK").replace("z9hG4bK-slbp-", "z9hG4bKother");
        assert_eq!(parse_reply(foreign.as_bytes()), None);
        let bad_hex = answer(&req, "200 OK").replace("z9hG4bK-slbp-", "z9hG4bK-slbp-zz");
        assert_eq!(parse_reply(bad_hex.as_bytes()), None);
        assert_eq!(parse_reply(b"\r\n\r\n"), None);
        assert_eq!(parse_reply(b"garbage"), None);
    }
}
