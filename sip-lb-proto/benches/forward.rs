//! `Proxy::handle` on typical messages, ns per message.
//! `cargo bench -p sip-lb --bench forward -- --warm-up-time 1 --measurement-time 3`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use sip_lb_proto::proxy::{Action, Chooser, Identity, Key, Keys, Policy, Proxy};
use std::net::SocketAddr;

/// Two backends picked by hash: cheap, like a real ring lookup's cost floor.
struct Pair([SocketAddr; 2]);

impl Chooser for Pair {
    fn choose(&self, _method: &[u8], h: u64) -> Option<SocketAddr> {
        Some(self.0[(h & 1) as usize])
    }
}

const INVITE: &[u8] = b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@192.0.2.101:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO\r\n\
Supported: replaces, timer, 100rel\r\n\
User-Agent: Example UA 1.0\r\n\
Session-Expires: 1800\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 404\r\n\
\r\n\
v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\n\
s=-\r\n\
c=IN IP4 192.0.2.101\r\n\
t=0 0\r\n\
m=audio 49172 RTP/AVP 0 8 9 18 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n\
a=rtcp:49173 IN IP4 192.0.2.101\r\n\
a=ssrc:12345678 cname:alice@atlanta.example.com\r\n\
a=label:1\r\n";

const REGISTER: &[u8] = b"REGISTER sip:registrar.biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKnashds7;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Bob <sip:bob@biloxi.example.com>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:bob@10.1.1.1:5060>\r\n\
Expires: 7200\r\n\
Content-Length: 0\r\n\
\r\n";

/// `{branch}` is signed at start-up (the MAC covers the next Via and Call-ID).
const OK_200: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n\
Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.101\r\n\
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:bob@192.0.2.4>\r\n\
Content-Length: 0\r\n\
\r\n";

fn bench(c: &mut Criterion) {
    let key = Key::from_secret(b"sip-lb bench secret, 32 bytes ok");
    let proxy =
        Proxy::new(Identity::single("192.0.2.10:5060".parse().unwrap()), Keys::new(key, None), Policy::default());
    let next_via = "SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK776asdhds;rport=5060;received=192.0.2.101";
    let mac = key.mac(1, next_via.as_bytes(), b"a84b4c76e66710@pc33.atlanta.example.com");
    let ok_200 = OK_200.replace("{branch}", &format!("z9hG4bKslb{:016x}{mac:016x}", 1));
    let chooser = Pair(["10.0.0.100:5060".parse().unwrap(), "10.0.0.101:5060".parse().unwrap()]);
    let mut out = Vec::with_capacity(65_536);
    let mut g = c.benchmark_group("handle");
    g.throughput(Throughput::Elements(1));
    for (name, msg, src) in [
        ("invite_sdp", INVITE, "192.0.2.101:5060"),
        ("register", REGISTER, "198.51.100.7:40000"),
        ("200_ok", ok_200.as_bytes(), "10.0.0.100:5060"),
    ] {
        let src: SocketAddr = src.parse().unwrap();
        // Sanity: the bench measures the forwarding path, not a reject.
        assert!(matches!(proxy.handle(&chooser, msg, src, 0, &mut out), Action::Forward { .. }), "{name}");
        g.bench_function(name, |b| b.iter(|| proxy.handle(&chooser, black_box(msg), black_box(src), 0, &mut out)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
