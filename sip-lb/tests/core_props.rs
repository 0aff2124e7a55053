//! Property tests of `Proxy::handle`: no input makes it panic, and a valid
//! request comes out parseable with our Via on top, the original Vias below
//! and the body unchanged.

use proptest::prelude::*;
use sip_lb::proxy::{Action, Identity, Proxy};
use sip_lb::sip::{HeaderName, Message, ParseError, Via};

/// Parses with leaked slots so the view can be returned (tests only).
fn parse_msg(buf: &[u8]) -> Result<Message<'_>, ParseError> {
    Message::parse(buf, Box::leak(Box::new(Message::slots())))
}
use std::net::SocketAddr;

fn proxy() -> Proxy {
    Proxy::new(Identity {
        advertise: "192.0.2.10:5060".parse().unwrap(),
        local: vec!["10.0.0.1:5060".parse().unwrap()],
    })
}

fn backend(_: &[u8], h: u64) -> Option<SocketAddr> {
    (!h.is_multiple_of(7)).then(|| "10.0.0.100:5060".parse().unwrap())
}

const SEEDS: &[&[u8]] = &[
    b"INVITE sip:bob@biloxi.com SIP/2.0\r\nVia: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;rport\r\nMax-Forwards: 70\r\nRoute: <sip:192.0.2.10;lr>, <sip:p2.example.com>\r\nTo: Bob <sip:bob@biloxi.com>\r\nFrom: Alice <sip:alice@atlanta.com>;tag=1928301774\r\nCall-ID: a84b4c76e66710@pc33.atlanta.com\r\nCSeq: 314159 INVITE\r\nContent-Length: 4\r\n\r\nv=0\n",
    b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKslb0123456789abcdef, SIP/2.0/UDP 10.1.1.1;rport=5;received=192.0.2.9\r\nTo: <sip:b@c>;tag=1\r\nf: <sip:a@b>;tag=2\r\ni: x\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048), port in 1u16..) {
        let mut out = Vec::new();
        let a = proxy().handle(&backend, &data, SocketAddr::from(([192, 0, 2, 1], port)), &mut out);
        if matches!(a, Action::Drop(_)) {
            prop_assert!(out.is_empty());
        }
    }

    #[test]
    fn mutated_messages_never_panic(
        seed in 0..SEEDS.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..12),
    ) {
        let mut data = SEEDS[seed].to_vec();
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
        let _ = proxy().handle(&backend, &data, "192.0.2.1:5060".parse().unwrap(), &mut out);
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
        cseq in 0u32..0x7fff_ffff,
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
        let a = proxy().handle(&|_: &[u8], _: u64| "10.0.0.100:5060".parse().ok(), &msg, src, &mut out);
        prop_assert_eq!(a, Action::Forward { to: "10.0.0.100:5060".parse().unwrap() });
        let m = parse_msg(&out).unwrap();
        prop_assert_eq!(m.defect, None);
        prop_assert_eq!(m.rest(), &body[..]);
        // Every Via value, in order: ours, then the client's (stamped), then the rest verbatim.
        let mut got = Vec::new();
        for h in m.all(HeaderName::Via) {
            for v in sip_lb::sip::values::values(&out, h.value) {
                got.push(v.of(&out).to_vec());
            }
        }
        prop_assert_eq!(got.len(), via_values.len() + 1);
        let ours = Via::parse(&got[0], sip_lb::sip::Span::new(0, got[0].len())).unwrap();
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
}
