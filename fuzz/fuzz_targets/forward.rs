//! The whole sans-IO forwarding step on arbitrary datagrams. The first input
//! byte picks the source address family, whether a backend is available and
//! the proxy identity; the rest is the datagram. Checked: no panic or hang;
//! the step is deterministic (same input, same bytes out); `Drop` leaves
//! `out` empty; a forwarded request is a clean SIP message with our Via on
//! top and the same Call-ID; a forwarded response only ever shrinks; output
//! size is bounded by the input (no allocation blow-up); a stateless reply is
//! never larger than the request (no amplification toward a spoofed source).
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sip_lb_proto::flow::routing::{PathMode, RecordRoute, Routing};
use sip_lb_proto::proxy::branch::BRANCH_PREFIX;
use sip_lb_proto::proxy::{Action, Identity, Key, Keys, Listener, Policy, Proxy};
use sip_lb_proto::sip::{HeaderName, Message, Via};

struct Setup {
    proxies: [Proxy; 2],
}

fn setup() -> &'static Setup {
    static S: OnceLock<Setup> = OnceLock::new();
    S.get_or_init(|| Setup {
        proxies: [
            Proxy::new(Identity::single("192.0.2.10:5060".parse().unwrap()), keys(), Policy::default()),
            Proxy::new(
                Identity {
                    listeners: vec![
                        Listener::at("[2001:db8::10]:5060".parse().unwrap()),
                        Listener::at("127.0.0.1:5060".parse().unwrap()),
                        Listener {
                            local: "0.0.0.0:5062".parse().unwrap(),
                            advertise: "192.0.2.11:5062".parse().unwrap(),
                        },
                    ],
                    aliases: Vec::new(),
                },
                keys(),
                Policy {
                    schemes: Some(vec![b"sip"[..].into(), b"tel"[..].into()]),
                    proxy_require: vec![b"sec-agree"[..].into()],
                    // Our Record-Route and Path with address tokens on every request.
                    routing: Routing { record_route: RecordRoute::On, path: PathMode::Force },
                },
            ),
        ],
    })
}

/// A fixed key: the step must be deterministic under fuzzing.
fn keys() -> Keys {
    Keys::new(Key::from_secret(b"sip-lb fuzzing secret, 32 bytes!"), None)
}

fn call_id(buf: &[u8]) -> Option<&[u8]> {
    let mut slots1 = Message::slots();
    let m = Message::parse(buf, &mut slots1).ok()?;
    // A span, not `m.get`: the slice must outlive the local header slots.
    let value = m.find(HeaderName::CallId)?.value;
    Some(value.of(buf))
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, datagram)) = input.split_first() else { return };
    let s = setup();
    let proxy = &s.proxies[usize::from(sel & 1)];
    let src: SocketAddr = match (sel >> 1) & 3 {
        0 => "192.0.2.2:5060".parse().unwrap(),
        1 => "127.0.0.1:40000".parse().unwrap(),
        2 => "[2001:db8::2]:5070".parse().unwrap(),
        _ => "[::ffff:192.0.2.10]:5060".parse().unwrap(),
    };
    let have_backend = sel & 8 == 0;
    let chooser =
        move |_: &[u8], _: u64| -> Option<SocketAddr> { have_backend.then(|| "10.0.0.100:5060".parse().unwrap()) };

    let on = usize::from(sel >> 4) % proxy.identity().listeners.len();
    let mut out = Vec::new();
    let action = proxy.handle(&chooser, datagram, src, on, &mut out);
    let mut again = Vec::with_capacity(7);
    assert_eq!(action, proxy.handle(&chooser, datagram, src, on, &mut again), "not deterministic");
    assert_eq!(out, again, "not deterministic");

    let len = datagram.len();
    match action {
        Action::Drop(_) => assert!(out.is_empty(), "Drop with bytes in out"),
        Action::Reply { code, .. } => {
            assert!((400..=699).contains(&code.code()));
            assert!(out.len() <= len, "amplification: {}-byte reply to a {len}-byte request", out.len());
            let mut slots2 = Message::slots();
            let m = Message::parse(&out, &mut slots2).expect("our reply parses");
            assert!(!m.is_request());
        }
        Action::Forward { to, from, what } => {
            assert!(to.port() != 0);
            assert!(from < proxy.identity().listeners.len());
            let mut slots3 = Message::slots();
            let m = Message::parse(&out, &mut slots3).expect("forwarded message parses");
            assert_eq!(m.defect, None, "forwarded with a defect: {:?}", String::from_utf8_lossy(&out));
            assert_eq!(call_id(&out), call_id(datagram), "Call-ID changed");
            assert_eq!(m.is_request(), what == sip_lb_proto::proxy::Forwarded::Request);
            if m.is_request() {
                assert!(out.len() <= 2 * len + 512, "request grew from {len} to {}", out.len());
                let top = m.find(HeaderName::Via).expect("our Via");
                let via = Via::parse(&out, top.value).expect("our Via parses");
                assert!(via.branch_bytes(&out).starts_with(BRANCH_PREFIX));
            } else {
                assert!(out.len() <= len, "response grew from {len} to {}", out.len());
            }
        }
    }
});
