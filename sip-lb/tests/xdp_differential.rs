//! Differential test of the LOADED XDP program (BPF_PROG_TEST_RUN) against
//! the userspace parser and against the scan's model
//! (`sip_lb_common::callid_scan`), over thousands of generated SIP datagrams
//! (seeded, reproducible): random header orders, compact `i:`, case variants,
//! whitespace before the colon, leading/trailing LWS, folds, lone CRs,
//! look-alike names, odd value bytes, Via stacks up to and past the window.
//!
//! Asserted for every datagram:
//! - program == model: same found/not-found, same pass reason, and when
//!   steered the hash of the model's value and its worker (64 workers);
//! - program vs userspace: wherever both find a Call-ID, the XDP worker is
//!   `worker_for_hash(call_id_hash(userspace value), 64)` and the hashes equal.
//!
//! Needs root (loads eBPF); CI runs as root.

use sip_lb::xdp::frame::Frame;
use sip_lb::xdp::{PassReason, Verdict, XdpTestProgram, MAX_WORKERS, SCAN_WINDOW};
use sip_lb_common::{call_id_hash, callid_scan, worker_for_hash};
use sip_lb_proto::sip::{HeaderName, Message};

const SIP_PORT: u16 = 5060;
const WORKERS: u32 = 64;
const CASES: usize = 6000;

fn require_root() {
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "xdp_differential loads eBPF programs and must run as root (euid is {euid})");
}

/// xorshift64*: seeded, no extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T: ?Sized>(&mut self, xs: &[&'a T]) -> &'a T {
        xs[self.below(xs.len())]
    }
}

/// Ethernet + IPv4 + UDP to port SIP_PORT around `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    Frame { dport: SIP_PORT, ..Frame::default() }.build(payload)
}

fn lws(r: &mut Rng, max: usize) -> Vec<u8> {
    let n = r.below(max + 1);
    (0..n).map(|_| *r.pick(&[&b' ', &b' ', &b'\t'])).collect()
}

/// A Call-ID value: mostly word@word, sometimes odd bytes, inner spaces,
/// lone CRs, folds.
fn value(r: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    let max = if r.chance(5) { 300 } else { 40 };
    let n = 1 + r.below(max);
    for _ in 0..n {
        let b = match r.below(100) {
            0..=79 => b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.@"[r.below(65)],
            80..=89 => {
                let s = b"!%*_+`'~()<>:\\\"/[]?{}";
                s[r.below(s.len())]
            }
            90..=95 => (0x80 + r.below(128)) as u8,
            96 => b' ',
            97 => b'\t',
            98 => *r.pick(&[&0x7fu8, &0x01, &0x00, &0x0b, &0x1f]),
            _ => b'x',
        };
        v.push(b);
    }
    // Inner structure that only one side might keep.
    if r.chance(6) {
        let at = r.below(v.len() + 1);
        let ins: &[u8] = r.pick(&[&b"\r"[..], b"\r\n ", b"\r\n\t", b"\n ", b" \r ", b"\r\r"]);
        v.splice(at..at, ins.iter().copied());
    }
    v
}

fn call_id_line(r: &mut Rng) -> Vec<u8> {
    let name: &[u8] =
        r.pick(&[&b"Call-ID"[..], b"Call-ID", b"call-id", b"CALL-ID", b"cAlL-iD", b"Call-Id", b"i", b"I"]);
    let mut l = name.to_vec();
    // Whitespace before the colon: usually none, sometimes past the 7 XDP sees.
    let before = if r.chance(80) { 0 } else { r.below(11) };
    l.extend((0..before).map(|_| *r.pick(&[&b' ', &b'\t'])));
    l.push(b':');
    // Leading LWS, folds included, sometimes more than the 16 XDP skips.
    match r.below(10) {
        0 => l.extend_from_slice(b"\r\n "),
        1 => l.extend_from_slice(b"\r\n\t \r\n  "),
        2 => l.extend(std::iter::repeat_n(b' ', 10 + r.below(12))),
        3 => l.extend_from_slice(b"\r"),
        4 => l.extend_from_slice(b" \r\n"), // empty value unless a fold follows
        _ => l.extend(lws(r, 2)),
    }
    l.extend(value(r));
    // Trailing LWS, sometimes a whitespace-only fold or lone CR.
    match r.below(12) {
        0 => l.extend_from_slice(b"\r\n "),
        1 => l.extend_from_slice(b"\r"),
        2 => l.extend_from_slice(b" \t "),
        _ => {}
    }
    l
}

fn other_line(r: &mut Rng, i: usize) -> Vec<u8> {
    let lines: &[&str] = &[
        "From: <sip:alice@example.com>;tag=1928301774",
        "To: <sip:bob@example.com>",
        "CSeq: 314159 INVITE",
        "Max-Forwards: 70",
        "Contact: <sip:alice@10.0.0.1:5060>",
        "Call-Info: <http://wwww.example.com/alice/photo.jpg> ;purpose=icon",
        "In-Reply-To: 70710@saturn.bell-tel.com",
        "Identity: abcdefgh",
        "Call-IDx: lookalike@x",
        "Call\rID: cr-dash@x",
        "Call-I: short@x",
        "ix: nope@x",
        "i-x: nope@x",
        "Call_ID: underscore@x",
        " folded-continuation line",
        "\tfolded-continuation tab",
        "\rlone-cr-line: x",
        "X-Weird: a\rb",
        "Subject: folded\r\n  subject",
        "v: SIP/2.0/UDP compact.example.com",
        "l: 0",
    ];
    if r.chance(30) {
        return format!("Via: SIP/2.0/UDP proxy{i}.example.com:5060;branch=z9hG4bK{:08x}", r.next() as u32)
            .into_bytes();
    }
    r.pick(lines).as_bytes().to_vec()
}

fn datagram(r: &mut Rng) -> Vec<u8> {
    let mut m = Vec::new();
    if r.chance(2) {
        m.extend_from_slice(b"\r\n"); // leading CRLF (userspace skips it)
    }
    let start: &str = r.pick(&[
        "INVITE sip:bob@example.com SIP/2.0",
        "BYE sip:bob@example.com SIP/2.0",
        "OPTIONS sip:x SIP/2.0",
        "SIP/2.0 200 OK",
        "SIP/2.0 180 Ringing",
        "invite sip:lower@x SIP/2.0",
    ]);
    m.extend_from_slice(start.as_bytes());
    let eol: &[u8] = if r.chance(10) { b"\n" } else { b"\r\n" };
    m.extend_from_slice(eol);
    // Via stack: up to past the window.
    let via_bytes = match r.below(10) {
        0..=5 => r.below(300),
        6..=8 => r.below(SCAN_WINDOW),
        _ => SCAN_WINDOW - 200 + r.below(400),
    };
    let mut n = 0;
    while m.len() < via_bytes {
        m.extend_from_slice(
            format!(
                "Via: SIP/2.0/UDP sbc{n}.carrier.example.net:5060;branch=z9hG4bK-{:06x}",
                r.next() as u32 & 0xffffff
            )
            .as_bytes(),
        );
        m.extend_from_slice(eol);
        n += 1;
    }
    let mut lines: Vec<Vec<u8>> = (0..r.below(8)).map(|i| other_line(r, i)).collect();
    let ids = match r.below(10) {
        0 => 0,
        1 => 2,
        _ => 1,
    };
    for _ in 0..ids {
        let at = r.below(lines.len() + 1);
        lines.insert(at, call_id_line(r));
    }
    for l in lines {
        m.extend_from_slice(&l);
        m.extend_from_slice(eol);
    }
    if !r.chance(3) {
        m.extend_from_slice(eol); // the blank line
        if r.chance(20) {
            m.extend_from_slice(b"v=0\r\nCall-ID: in-body@x\r\n");
        }
        if r.chance(5) {
            m.extend(std::iter::repeat_n(b'b', r.below(2500)));
        }
    }
    if r.chance(4) {
        m.truncate(r.below(m.len() + 1)); // cut anywhere
    }
    m
}

/// Hand-picked datagrams for the discrepancies the fuzzer found.
fn directed() -> Vec<Vec<u8>> {
    let head = "INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n";
    let tail = "\r\nCSeq: 1 INVITE\r\n\r\n";
    let mut v: Vec<Vec<u8>> = [
        "Call\rID: cr@x\r\nCall-ID: real@x",
        "Call\rID: cr@x",
        "Call-ID: a\r\n b",
        "Call-ID: a\rb",
        "Call-ID: a\r\n \r\nX: y",
        "Call-ID: a\r\r\nX: y",
        "Call-ID:                    spaces@x",
        "Call-ID:                \r\n x",
        "Call-ID        : eight@x\r\ni: later@x",
        "Call-ID       : seven@x\r\ni: later@x",
        "\rX: lone-cr-line\r\nCall-ID: after@x",
        "Call-IDx: no@x\r\ni: yes@x",
        "i : compact@x",
        "Call-ID:\r\n\t \r\n  twice-folded@x",
    ]
    .iter()
    .map(|l| format!("{head}{l}{tail}").into_bytes())
    .collect();
    v.push(b"\r\nINVITE sip:b@x SIP/2.0\r\nCall-ID: leading-crlf@x\r\n\r\n".to_vec());
    v.push(b"INVITE sip:b@x SIP/2.0\r\nCall-ID: end-of-datagram@x\r\n".to_vec());
    v.push(b"INVITE sip:b@x SIP/2.0\r\nCall-ID: end-of-datagram@x\r".to_vec());
    v
}

#[derive(Default, Debug)]
struct Counts {
    both: usize,
    only_xdp: usize,
    only_userspace: usize,
    neither: usize,
    passed: [usize; 8],
}

#[test]
fn xdp_program_model_and_userspace_agree() {
    require_root();
    assert!(WORKERS as usize <= MAX_WORKERS);
    let cpus: Vec<u32> = (0..WORKERS).map(|i| i % 2).collect();
    let p = XdpTestProgram::load(&cpus, &[SIP_PORT]).expect("load XDP program");
    let mut r = Rng(0x5eed_0fc0_ffee_u64);
    let mut cases = directed();
    cases.extend((0..CASES).map(|_| datagram(&mut r)));
    let mut c = Counts::default();
    for (n, payload) in cases.iter().enumerate() {
        let show = || format!("case {n}: {:?}", String::from_utf8_lossy(payload));
        let verdict = p.run(&frame(payload)).unwrap_or_else(|e| panic!("{}: test run: {e:#}", show()));
        // Program == model, exactly.
        let model = callid_scan::scan(payload, SCAN_WINDOW);
        let want = model.map(|(a, b)| {
            let hash = call_id_hash(&payload[a..b]);
            Verdict::Steered { worker: worker_for_hash(hash, WORKERS), hash }
        });
        let want = match want {
            Ok(v) => v,
            Err(reason) => Verdict::Passed(reason),
        };
        assert_eq!(verdict, want, "program vs model, {}", show());
        // Program vs userspace, wherever both find one.
        let mut slots = Message::slots();
        let user = Message::parse(payload, &mut slots)
            .ok()
            .and_then(|m| m.find(HeaderName::CallId).map(|h| m.get(h.value).to_vec()));
        match (verdict, &user) {
            (Verdict::Steered { worker, hash }, Some(u)) => {
                let uh = call_id_hash(u);
                assert_eq!(
                    (hash, worker),
                    (uh, worker_for_hash(uh, WORKERS)),
                    "XDP vs userspace Call-ID {:?}, {}",
                    String::from_utf8_lossy(u),
                    show()
                );
                c.both += 1;
            }
            (Verdict::Steered { .. }, None) => c.only_xdp += 1,
            (Verdict::Passed(reason), u) => {
                c.passed[reason as usize] += 1;
                if u.as_ref().is_some_and(|u| !u.is_empty()) {
                    c.only_userspace += 1;
                } else {
                    c.neither += 1;
                }
            }
            // The program is loaded with threshold 0 (always steer).
            (Verdict::BelowThreshold, _) => panic!("below the redirect threshold with none set, {}", show()),
            (Verdict::Blocked | Verdict::RateLimited, _) => panic!("dropped by the shield with none set, {}", show()),
        }
    }
    let reasons: Vec<String> = PassReason::ALL
        .iter()
        .filter(|r| c.passed[**r as usize] > 0)
        .map(|r| format!("{}={}", r.name(), c.passed[*r as usize]))
        .collect();
    println!(
        "xdp_differential: {} datagrams: both found {}, only XDP {}, only userspace {}, neither {}; XDP passed: {}",
        cases.len(),
        c.both,
        c.only_xdp,
        c.only_userspace,
        c.neither,
        reasons.join(" ")
    );
    // The generator must exercise the interesting cases.
    assert!(c.both > CASES / 3, "{c:?}");
    assert!(c.only_userspace > 50, "{c:?}");
}
