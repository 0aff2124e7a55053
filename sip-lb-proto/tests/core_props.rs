//! Property tests of `Proxy::handle`: no input makes it panic, and a valid
//! request comes out parseable with our Via on top, the original Vias below
//! and the body unchanged.

mod support;

use proptest::prelude::*;
use sip_lb_proto::proxy::{Action, DropReason, Forwarded, Identity, Listener, Policy, Proxy};
use sip_lb_proto::sip::{HeaderName, Message, ParseError, Via};

/// Parses with leaked slots so the view can be returned (tests only).
fn parse_msg(buf: &[u8]) -> Result<Message<'_>, ParseError> {
    Message::parse(buf, Box::leak(Box::new(Message::slots())))
}
use std::net::SocketAddr;

fn proxy() -> Proxy {
    let l = Listener { local: "10.0.0.1:5060".parse().unwrap(), advertise: "192.0.2.10:5060".parse().unwrap() };
    Proxy::new(Identity { listeners: vec![l], aliases: Vec::new() }, support::keys(), Policy::default())
}

const BACKEND: &str = "10.0.0.100:5060";

fn to_backend(_: &[u8], _: u64) -> Option<SocketAddr> {
    BACKEND.parse().ok()
}

fn backend(_: &[u8], h: u64) -> Option<SocketAddr> {
    (!h.is_multiple_of(7)).then(|| "10.0.0.100:5060".parse().unwrap())
}

const SEEDS: &[&[u8]] = &[
    b"INVITE sip:bob@biloxi.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;rport\r\nMax-Forwards: 70\r\nRoute: <sip:192.0.2.10;lr>, <sip:p2.example.com>\r\nTo: Bob <sip:bob@biloxi.com>\r\nFrom: Alice <sip:alice@atlanta.com>;tag=1928301774\r\nCall-ID: a84b4c76e66710@pc33.atlanta.com\r\nCSeq: 314159 INVITE\r\nContent-Length: 4\r\n\r\nv=0\n",
    // Signed before use (`seed`).
    b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKslb0123456789abcdef, SIP/2.0/UDP 10.1.1.1;rport=5;received=192.0.2.9\r\nTo: <sip:b@c>;tag=1\r\nf: <sip:a@b>;tag=2\r\ni: x\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n",
];

fn seed(i: usize) -> Vec<u8> {
    support::resign(SEEDS[i])
}

#[test]
fn seeds_are_forwarded_unmutated() {
    for i in 0..SEEDS.len() {
        let a = proxy().handle(&to_backend, &seed(i), "192.0.2.1:5060".parse().unwrap(), 0, &mut Vec::new());
        assert!(matches!(a, Action::Forward { .. }), "seed {i}: {a:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048), port in 1u16..) {
        let mut out = Vec::new();
        let a = proxy().handle(&backend, &data, SocketAddr::from(([192, 0, 2, 1], port)), 0, &mut out);
        if matches!(a, Action::Drop(_)) {
            prop_assert!(out.is_empty());
        }
    }

    #[test]
    fn mutated_messages_never_panic(
        seed in 0..SEEDS.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..12),
    ) {
        let mut data = self::seed(seed);
        for (at, byte, op) in edits {
            let i = at.index(data.len() + 1);
            match op {
                0 if i < data.len() => data[i] = byte,
                1 => data.insert(i, b"\r\n ;,:<>\"="[byte as usize % 10]),
                _ if i < data.len() => { data.remove(i); }
                _ => {}
            }
        }
        let mut out = Vec::new();
        let _ = proxy().handle(&backend, &data, "192.0.2.1:5060".parse().unwrap(), 0, &mut out);
        // Whatever we send must itself be a parseable SIP message.
        if !out.is_empty() {
            prop_assert!(parse_msg(&out).is_ok());
        }
    }

    #[test]
    fn valid_request_forwarded_intact(
        method in prop::sample::select(vec!["INVITE", "REGISTER", "OPTIONS", "BYE", "MESSAGE", "SUBSCRIBE"]),
        vias in proptest::collection::vec(
            ("[a-z]{1,10}\\.example\\.com|192\\.0\\.2\\.[0-9]{1,2}|\\[2001:db8::[0-9a-f]{1,4}\\]", proptest::option::of(1024u16..), "[a-zA-Z0-9]{1,20}", any::<bool>(), any::<bool>()),
            1..5),
        compact in any::<bool>(),
        call_id in "[a-zA-Z0-9.@-]{1,40}",
        cseq in any::<u32>(),
        max_forwards in proptest::option::of(1u8..),
        body in proptest::collection::vec(any::<u8>(), 0..600),
        src_port in 1u16..,
    ) {
        let mut msg = format!("{method} sip:user@example.com SIP/2.0\r\n").into_bytes();
        let mut via_values = Vec::new();
        for (i, (host, port, branch, rport, joined)) in vias.iter().enumerate() {
            let mut v = format!("SIP/2.0/UDP {host}");
            if let Some(p) = port {
                v.push_str(&format!(":{p}"));
            }
            v.push_str(&format!(";branch=z9hG4bK{branch}"));
            if *rport {
                v.push_str(";rport");
            }
            let name = if compact { "v" } else { "Via" };
            if *joined && i > 0 {
                // Join onto the previous Via line.
                msg.truncate(msg.len() - 2);
                msg.extend_from_slice(format!(" , {v}\r\n").as_bytes());
            } else {
                msg.extend_from_slice(format!("{name}: {v}\r\n").as_bytes());
            }
            via_values.push(v);
        }
        if let Some(mf) = max_forwards {
            msg.extend_from_slice(format!("Max-Forwards: {mf}\r\n").as_bytes());
        }
        msg.extend_from_slice(format!("To: <sip:user@example.com>\r\nFrom: \"A\" <sip:a@example.org>;tag=9\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
        msg.extend_from_slice(&body);

        let src: SocketAddr = SocketAddr::from(([198, 51, 100, 7], src_port));
        let mut out = Vec::new();
        let a = proxy().handle(&to_backend, &msg, src, 0, &mut out);
        prop_assert_eq!(a, Action::Forward { to: BACKEND.parse().unwrap(), from: 0, what: Forwarded::Request });
        let m = parse_msg(&out).unwrap();
        prop_assert_eq!(m.defect, None);
        prop_assert_eq!(m.rest(), &body[..]);
        // Every Via value, in order: ours, then the client's (stamped), then the rest verbatim.
        let mut got = Vec::new();
        for h in m.all(HeaderName::Via) {
            for v in sip_lb_proto::sip::values::values(&out, h.value) {
                got.push(v.of(&out).to_vec());
            }
        }
        prop_assert_eq!(got.len(), via_values.len() + 1);
        let ours = Via::parse(&got[0], sip_lb_proto::sip::Span::new(0, got[0].len())).unwrap();
        prop_assert!(ours.branch_bytes(&got[0]).starts_with(b"z9hG4bKslb"));
        prop_assert_eq!(ours.host.of(&got[0]), b"192.0.2.10");
        let client = String::from_utf8(got[1].clone()).unwrap();
        let expected = via_values[0].replace(";rport", &format!(";rport={src_port}"));
        prop_assert!(client.starts_with(&expected), "{} vs {}", client, expected);
        prop_assert!(client.ends_with(";received=198.51.100.7"));
        for (g, v) in got[2..].iter().zip(&via_values[1..]) {
            prop_assert_eq!(g, v.as_bytes());
        }
        let mf = m.find(HeaderName::MaxForwards).map(|h| m.get(h.value).to_vec());
        let want = max_forwards.map_or(70, |n| n - 1).to_string();
        prop_assert_eq!(mf, Some(want.into_bytes()));
    }

    /// Issue 9.1: wherever Route, Via, Max-Forwards and Call-ID sit in the
    /// header block (Route first or last included), the forwarded request
    /// has our Via first, exactly one Max-Forwards, our Route gone, the
    /// client's Via intact apart from received/rport, and the same body.
    #[test]
    fn any_header_order_forwards_correctly(
        order in Just((0..8usize).collect::<Vec<_>>()).prop_shuffle(),
        our_route in any::<bool>(),
        other_route in any::<bool>(),
        max_forwards in proptest::option::of(1u8..),
        rport in any::<bool>(),
        body in "[a-z=0-9\r\n]{0,200}",
    ) {
        let via = format!("SIP/2.0/UDP 203.0.113.5:5062;branch=z9hG4bKpx{}", if rport { ";rport" } else { "" });
        let lines = [
            our_route.then(|| "Route: <sip:192.0.2.10;lr>".to_owned()),
            other_route.then(|| "Route: <sip:p2.example.com;lr>".to_owned()),
            Some(format!("Via: {via}")),
            max_forwards.map(|n| format!("Max-Forwards: {n}")),
            Some("Call-ID: order@example.com".to_owned()),
            Some("From: <sip:a@example.org>;tag=1".to_owned()),
            Some("To: <sip:b@example.com>".to_owned()),
            Some("CSeq: 7 INVITE".to_owned()),
        ];
        let mut msg = "INVITE sip:b@example.com SIP/2.0\r\n".to_owned();
        for i in &order {
            if let Some(l) = &lines[*i] {
                msg += &format!("{l}\r\n");
            }
        }
        msg += &format!("Content-Length: {}\r\n\r\n{body}", body.len());
        let mut out = Vec::new();
        let a = proxy().handle(&to_backend, msg.as_bytes(), "198.51.100.7:4000".parse().unwrap(), 0, &mut out);
        prop_assert_eq!(a, Action::Forward { to: BACKEND.parse().unwrap(), from: 0, what: Forwarded::Request });
        let m = parse_msg(&out).unwrap();
        prop_assert_eq!(m.defect, None);
        let first = &m.headers()[0];
        prop_assert_eq!(first.name, HeaderName::Via);
        prop_assert!(m.get(first.value).starts_with(b"SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKslb"));
        prop_assert_eq!(m.all(HeaderName::MaxForwards).count(), 1);
        let want_mf = max_forwards.map_or(70, |n| n - 1).to_string();
        prop_assert_eq!(m.get(m.find(HeaderName::MaxForwards).unwrap().value), want_mf.as_bytes());
        let routes: Vec<_> = m.all(HeaderName::Route).map(|h| m.get(h.value).to_vec()).collect();
        // Only the top Route is checked for being us (§16.4).
        let mut want_routes: Vec<Vec<u8>> = order
            .iter()
            .filter_map(|&i| match i {
                0 if our_route => Some(b"<sip:192.0.2.10;lr>".to_vec()),
                1 if other_route => Some(b"<sip:p2.example.com;lr>".to_vec()),
                _ => None,
            })
            .collect();
        if want_routes.first().is_some_and(|r| r.starts_with(b"<sip:192.0.2.10")) {
            want_routes.remove(0);
        }
        prop_assert_eq!(routes, want_routes);
        let vias: Vec<_> = m.all(HeaderName::Via).map(|h| String::from_utf8(m.get(h.value).to_vec()).unwrap()).collect();
        prop_assert_eq!(vias.len(), 2);
        let stamped = if rport { via.replace(";rport", ";rport=4000") + ";received=198.51.100.7" } else { via.clone() + ";received=198.51.100.7" };
        prop_assert_eq!(&vias[1], &stamped);
        prop_assert_eq!(m.rest(), body.as_bytes());
    }

    /// Issue 9.6: a response to a request we forwarded is relayed as the
    /// UAS wrote it; any single-byte change in its next Via or its Call-ID
    /// makes it dropped.
    #[test]
    fn branch_mac_binds_next_via_and_call_id(
        host in "[a-z]{1,8}\\.example\\.com|192\\.0\\.2\\.[0-9]{1,2}",
        rport in any::<bool>(),
        branch in "[a-zA-Z0-9]{1,16}",
        call_id in "[a-zA-Z0-9.@-]{1,30}",
        in_call_id in any::<bool>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let req = format!("INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {host};branch=z9hG4bK{branch}{}\r\nMax-Forwards: 70\r\nTo: <sip:b@example.com>\r\nFrom: <sip:a@example.org>;tag=1\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n", if rport { ";rport" } else { "" });
        let mut fwd = Vec::new();
        let a = proxy().handle(&to_backend, req.as_bytes(), "198.51.100.7:4000".parse().unwrap(), 0, &mut fwd);
        let forwarded = matches!(a, Action::Forward { .. });
        prop_assert!(forwarded, "{:?}", a);
        let resp = support::uas_response(&fwd, "200 OK");
        let relayed = proxy().handle(&to_backend, &resp, BACKEND.parse().unwrap(), 0, &mut Vec::new());
        prop_assert_eq!(relayed, Action::Forward { to: SocketAddr::from(([198, 51, 100, 7], if rport { 4000 } else { 5060 })), from: 0, what: Forwarded::Response });
        // Locate the next Via value or the Call-ID value in the response.
        let t = String::from_utf8(resp.clone()).unwrap();
        let (start, len) = if in_call_id {
            (t.find("Call-ID: ").unwrap() + 9, call_id.len())
        } else {
            let second = t.match_indices("Via: ").nth(1).unwrap().0 + 5;
            (second, t[second..].find("\r\n").unwrap())
        };
        let i = start + at.index(len);
        prop_assume!(resp[i] != byte);
        let mut forged = resp.clone();
        forged[i] = byte;
        let out = proxy().handle(&to_backend, &forged, BACKEND.parse().unwrap(), 0, &mut Vec::new());
        let dropped = matches!(out, Action::Drop(_));
        prop_assert!(dropped, "{:?} after changing byte {} to {:?}", out, i, byte as char);
        // Either the MAC fails or the Via no longer parses at all.
        let why = matches!(out, Action::Drop(DropReason::BranchMac | DropReason::MalformedResponse));
        prop_assert!(why, "{:?}", out);
    }
}
