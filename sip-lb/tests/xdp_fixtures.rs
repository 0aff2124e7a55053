//! Fixture tests of the XDP steering program, run in the kernel with
//! BPF_PROG_TEST_RUN (Katran style): crafted frame in, verdict out. The
//! verdict (steered to worker w / passed for a reason) is read back from the
//! program's XDP action and per-CPU counters. Needs root (CI runs as root).

use std::sync::{Mutex, MutexGuard, OnceLock};

use sip_lb::xdp::frame::{Frame, Ip};
use sip_lb::xdp::{PassReason, Verdict, XdpTestProgram, MAX_CALL_ID_SPAN, SCAN_WINDOW};
use sip_lb_common::{call_id_hash, worker_for_hash};

const SIP_PORT: u16 = 5060;

fn require_root() {
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "xdp_fixtures load eBPF programs and must run as root (euid is {euid})");
}

/// Workers on CPUs 0 and 1 (any CPU number works for test runs).
fn program(workers: u32) -> XdpTestProgram {
    require_root();
    let cpus: Vec<u32> = (0..workers).map(|i| i % 2).collect();
    XdpTestProgram::load(&cpus, &[SIP_PORT, 5080]).expect("load XDP program")
}

/// One shared 2-worker program for the simple fixtures; locked because the
/// verdict is read from counter deltas, which parallel tests would mix.
fn two_workers() -> MutexGuard<'static, XdpTestProgram> {
    static P: OnceLock<Mutex<XdpTestProgram>> = OnceLock::new();
    P.get_or_init(|| Mutex::new(program(2))).lock().unwrap_or_else(|e| e.into_inner())
}

/// A SIP request with `call_id_line` after `via_bytes` bytes of Via headers.
fn invite(call_id_line: &str, via_bytes: usize) -> Vec<u8> {
    let mut m = String::from("INVITE sip:bob@example.com SIP/2.0\r\n");
    let mut n = 0;
    while n < via_bytes {
        let via = format!("Via: SIP/2.0/UDP proxy{n}.example.com:5060;branch=z9hG4bK{n:08}\r\n");
        n += via.len();
        m.push_str(&via);
    }
    m.push_str("From: <sip:alice@example.com>;tag=1928301774\r\nTo: <sip:bob@example.com>\r\n");
    m.push_str(call_id_line);
    m.push_str("\r\nCSeq: 314159 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    m.into_bytes()
}

fn expect_steered(p: &XdpTestProgram, frame: &[u8], value: &[u8], workers: u32) {
    let v = p.run(frame).expect("test run");
    let hash = call_id_hash(value);
    assert_eq!(
        v,
        Verdict::Steered { worker: worker_for_hash(hash, workers), hash },
        "Call-ID {:?}",
        String::from_utf8_lossy(value)
    );
}

fn expect_passed(frame: &[u8], reason: PassReason) {
    assert_eq!(two_workers().run(frame).expect("test run"), Verdict::Passed(reason));
}

// ---- L2-L4 ------------------------------------------------------------------

#[test]
fn ipv4_steered() {
    let f = Frame::default().build(&invite("Call-ID: a84b4c76e66710@pc33.atlanta.com", 0));
    expect_steered(&two_workers(), &f, b"a84b4c76e66710@pc33.atlanta.com", 2);
}

#[test]
fn ipv6_steered() {
    let f = Frame { ip: Ip::V6, ..Frame::default() }.build(&invite("Call-ID: v6-call@host", 0));
    expect_steered(&two_workers(), &f, b"v6-call@host", 2);
}

#[test]
fn vlan_8021q_steered() {
    let f = Frame { vlans: vec![0x8100], ..Frame::default() }.build(&invite("Call-ID: vlan@x", 0));
    expect_steered(&two_workers(), &f, b"vlan@x", 2);
}

#[test]
fn qinq_steered() {
    for vlans in [vec![0x88a8, 0x8100], vec![0x8100, 0x8100]] {
        for ip in [Ip::V4 { options: 0, frag: 0 }, Ip::V6] {
            let f = Frame { vlans: vlans.clone(), ip, ..Frame::default() }.build(&invite("Call-ID: qinq@x", 0));
            expect_steered(&two_workers(), &f, b"qinq@x", 2);
        }
    }
}

#[test]
fn three_vlan_tags_not_parsed() {
    let f = Frame { vlans: vec![0x88a8, 0x8100, 0x8100], ..Frame::default() }.build(&invite("Call-ID: x@y", 0));
    expect_passed(&f, PassReason::NotIpUdp);
}

#[test]
fn ipv4_options_steered() {
    for options in [4, 20, 40] {
        let f = Frame { ip: Ip::V4 { options, frag: 0 }, ..Frame::default() }.build(&invite("Call-ID: opts@x", 0));
        expect_steered(&two_workers(), &f, b"opts@x", 2);
    }
}

#[test]
fn fragments_passed() {
    for frag in [0x2000 /* MF */, 0x0010 /* offset */, 0x2010] {
        let f = Frame { ip: Ip::V4 { options: 0, frag }, ..Frame::default() }.build(&invite("Call-ID: f@x", 0));
        expect_passed(&f, PassReason::Fragment);
    }
    // DF alone is not a fragment.
    let f = Frame { ip: Ip::V4 { options: 0, frag: 0x4000 }, ..Frame::default() }.build(&invite("Call-ID: df@x", 0));
    expect_steered(&two_workers(), &f, b"df@x", 2);
    // IPv6 fragment header.
    let f = Frame { ip: Ip::V6, l4: 44, ..Frame::default() }.build(&invite("Call-ID: f@x", 0));
    expect_passed(&f, PassReason::Fragment);
}

#[test]
fn tcp_and_other_protocols_passed() {
    let f = Frame { l4: 6, ..Frame::default() }.build(&invite("Call-ID: tcp@x", 0));
    expect_passed(&f, PassReason::NotIpUdp);
    let f = Frame { ip: Ip::V6, l4: 6, ..Frame::default() }.build(&invite("Call-ID: tcp@x", 0));
    expect_passed(&f, PassReason::NotIpUdp);
    let mut arp = Frame::default().build(&[0; 28]);
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    expect_passed(&arp, PassReason::NotIpUdp);
}

#[test]
fn other_port_passed_and_second_port_steered() {
    let f = Frame { dport: 53, ..Frame::default() }.build(&invite("Call-ID: dns@x", 0));
    expect_passed(&f, PassReason::OtherPort);
    let f = Frame { dport: 5080, ..Frame::default() }.build(&invite("Call-ID: p5080@x", 0));
    expect_steered(&two_workers(), &f, b"p5080@x", 2);
}

#[test]
fn truncated_frames_passed() {
    let full = Frame::default().build(&invite("Call-ID: t@x", 0));
    // (BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.)
    for cut in [14, 20, 14 + 19, 14 + 20 + 7] {
        expect_passed(&full[..cut], PassReason::Truncated);
    }
    // UDP length claims more than the frame holds.
    expect_passed(&full[..full.len() - 10], PassReason::Truncated);
}

#[test]
fn not_sip_passed() {
    expect_passed(&Frame::default().build(b"\r\n\r\n"), PassReason::NotSip);
    expect_passed(&Frame::default().build(b"hello world, this is not sip at all\r\n"), PassReason::NotSip);
}

// ---- the Call-ID header --------------------------------------------------------

#[test]
fn header_forms_steered() {
    let forms: &[(&str, &[u8])] = &[
        ("i: compact@x", b"compact@x"),
        ("I:compact-upper@x", b"compact-upper@x"),
        ("CALL-ID :spaced@x", b"spaced@x"),
        ("call-id\t \t:  tabs@x", b"tabs@x"),
        ("Call-Id: trailing@x   \t", b"trailing@x"),
        ("Call-ID:\r\n folded@x", b"folded@x"),
        ("Call-ID:\r\n\t \r\n  twice-folded@x", b"twice-folded@x"),
        ("Call-ID: inner space@x", b"inner space@x"),
        ("Call-ID:ABCdef-CaseKept@x", b"ABCdef-CaseKept@x"),
    ];
    for (line, value) in forms {
        let f = Frame::default().build(&invite(line, 0));
        expect_steered(&two_workers(), &f, value, 2);
    }
}

#[test]
fn lookalike_headers_not_taken() {
    // Call-Info, In-Reply-To, Identity and a Call-ID in the body must not match.
    let msg = "MESSAGE sip:bob@x SIP/2.0\r\nCall-Info: <http://x>\r\nIn-Reply-To: no@x\r\nIdentity: abc\r\n\
               Content-Length: 20\r\n\r\nCall-ID: body@x\r\n";
    expect_passed(&Frame::default().build(msg.as_bytes()), PassReason::NoCallId);
}

#[test]
fn no_call_id_passed() {
    let msg = "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a\r\nCSeq: 1 OPTIONS\r\n\r\n";
    expect_passed(&Frame::default().build(msg.as_bytes()), PassReason::NoCallId);
    let empty = "OPTIONS sip:x SIP/2.0\r\nCall-ID:\r\nCSeq: 1 OPTIONS\r\n\r\n";
    expect_passed(&Frame::default().build(empty.as_bytes()), PassReason::NoCallId);
    // Datagram ends inside the value.
    let cut = "OPTIONS sip:x SIP/2.0\r\nCall-ID: cut-off";
    expect_passed(&Frame::default().build(cut.as_bytes()), PassReason::NoCallId);
}

#[test]
fn response_steered() {
    let msg = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\ni: resp@x\r\n\r\n";
    expect_steered(&two_workers(), &Frame::default().build(msg.as_bytes()), b"resp@x", 2);
}

#[test]
fn call_id_after_long_via_stack() {
    for via in [600, 1200, 1700] {
        let f = Frame::default().build(&invite("Call-ID: deep@x", via));
        expect_steered(&two_workers(), &f, b"deep@x", 2);
    }
}

#[test]
fn call_id_beyond_window_passed_too_long() {
    let f = Frame::default().build(&invite("Call-ID: far@x", SCAN_WINDOW + 100));
    expect_passed(&f, PassReason::TooLong);
    let long = format!("Call-ID: {}", "x".repeat(MAX_CALL_ID_SPAN + 10));
    expect_passed(&Frame::default().build(&invite(&long, 0)), PassReason::TooLong);
    // Just under the span limit still works.
    let value = "y".repeat(MAX_CALL_ID_SPAN - 2);
    let f = Frame::default().build(&invite(&format!("Call-ID: {value}"), 0));
    expect_steered(&two_workers(), &f, value.as_bytes(), 2);
}

#[test]
fn jumbo_frame_9000() {
    // 9000-byte frame: the kernel's test run puts what exceeds one page in
    // fragments (the program is xdp.frags); the payload copy reads across them.
    let mut payload = invite("Call-ID: jumbo@x", 200);
    let body_at = payload.len();
    payload.resize(9000 - 14 - 20 - 8, b'b');
    payload[body_at - 4..body_at].copy_from_slice(b"\r\n\r\n");
    let f = Frame::default().build(&payload);
    assert_eq!(f.len(), 9000);
    expect_steered(&two_workers(), &f, b"jumbo@x", 2);
    // Deep Call-ID (the scan window ends inside the linear part of the frame).
    let mut payload = invite("Call-ID: jumbo-deep@x", 1800);
    payload.resize(9000 - 14 - 20 - 8, b'b');
    let f = Frame::default().build(&payload);
    expect_steered(&two_workers(), &f, b"jumbo-deep@x", 2);
}

// ---- XDP hash == userspace hash --------------------------------------------------

#[test]
fn xdp_hash_equals_userspace_hash() {
    let mut ids: Vec<Vec<u8>> =
        (0..300).map(|i| format!("{i:x}-{}@host{}.example", i * 7919, i % 13).into_bytes()).collect();
    ids.push(b"a".to_vec());
    ids.push(b"!%*_+`'~()<>:\\\"/[]?{}".to_vec());
    ids.push(b"\xc3\xa9\xe2\x82\xac-utf8@x".to_vec());
    ids.push(b"\x01\x7f\xff-binary".to_vec());
    ids.push("z".repeat(200).into_bytes());
    for workers in [2u32, 3, 7, 64] {
        let p = program(workers);
        for id in &ids {
            let mut line = b"Call-ID: ".to_vec();
            line.extend_from_slice(id);
            let mut msg = b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a\r\n".to_vec();
            msg.extend_from_slice(&line);
            msg.extend_from_slice(b"\r\nCSeq: 1 INVITE\r\n\r\n");
            expect_steered(&p, &Frame::default().build(&msg), id, workers);
        }
    }
}

#[test]
fn counters_sum_bytes_and_packets() {
    let p = program(2);
    let f = Frame::default().build(&invite("Call-ID: count@x", 0));
    for _ in 0..5 {
        p.run_raw(&f).unwrap();
    }
    let c = p.counters().unwrap();
    assert_eq!(c.total.packets, 5);
    assert_eq!(c.total.bytes, 5 * f.len() as u64);
    assert_eq!(c.steered_total(), 5);
}

#[test]
fn verifier_headroom() {
    // The scan loops are sized against the verifier's 1M-instruction budget;
    // keep a margin so a kernel whose verifier walks a bit more still loads it.
    let n = two_workers().verified_insns().expect("prog info").expect("kernel reports verified_insns");
    assert!(n < 700_000, "verifier processed {n} instructions; the budget is 1,000,000");
}

// ---- regressions: XDP must never hash a different Call-ID than userspace ------

#[test]
fn dash_in_call_id_must_be_a_dash() {
    // `'\r' | 0x20 == '-'`: the name compare once took `Call\rID:` for `Call-ID:`.
    let f = Frame::default().build(&invite("Call\rID: cr@x\r\nCall-ID: real@x", 0));
    expect_steered(&two_workers(), &f, b"real@x", 2);
    expect_passed(&Frame::default().build(&invite("Call\rID: cr@x", 0)), PassReason::NoCallId);
}

#[test]
fn values_userspace_would_read_differently_are_given_up() {
    // Userspace keeps a fold or a lone CR inside the value; XDP gives up
    // rather than hash the shorter value.
    for line in [
        "Call-ID: a\r\n b",
        "Call-ID: a\r\n\tb",
        "Call-ID: a\rb",
        "Call-ID: a\r\r\nX: y",
        "Call-ID: trailing-fold@x\r\n ",
        // More leading LWS than XDP skips.
        "Call-ID:                  spaces@x",
        "Call-ID:                \r\n late-fold@x",
        // 8 blanks before the colon: userspace's Call-ID, XDP cannot tell.
        "Call-ID        : eight@x\r\ni: later@x",
    ] {
        let f = Frame::default().build(&invite(line, 0));
        assert_eq!(two_workers().run(&f).expect("test run"), Verdict::Passed(PassReason::NoCallId), "{line:?}");
    }
    // Up to the limits still steers.
    expect_steered(&two_workers(), &Frame::default().build(&invite("Call-ID       : seven@x", 0)), b"seven@x", 2);
    let sixteen = format!("Call-ID:{}sixteen@x", " ".repeat(16));
    expect_steered(&two_workers(), &Frame::default().build(&invite(&sixteen, 0)), b"sixteen@x", 2);
}

// ---- Redirect threshold -------------------------------------------------------

#[test]
fn below_the_redirect_threshold_nothing_is_scanned() {
    let mut p = program(2);
    p.set_redirect_above(u32::MAX).expect("threshold");
    let f = Frame::default().build(&invite("Call-ID: a84b4c76e66710@pc33.atlanta.com", 0));
    assert_eq!(p.run(&f).expect("test run"), Verdict::BelowThreshold);
    // Not SIP traffic is passed for its reason before the rate is counted.
    let other = Frame { dport: 9999, ..Frame::default() }.build(b"INVITE sip:x SIP/2.0\r\n\r\n");
    assert_eq!(p.run(&other).expect("test run"), Verdict::Passed(PassReason::OtherPort));
}

#[test]
fn above_the_redirect_threshold_datagrams_are_steered() {
    const THRESHOLD: u32 = 5;
    const RUNS: u32 = 2000;
    let mut p = program(2);
    p.set_redirect_above(THRESHOLD).expect("threshold");
    let id = b"a84b4c76e66710@pc33.atlanta.com";
    let f = Frame::default().build(&invite(&format!("Call-ID: {}", String::from_utf8_lossy(id)), 0));
    let before = p.counters().expect("counters");
    p.bench(&f, RUNS).expect("test runs");
    let after = p.counters().expect("counters");
    let below = after.total.below_threshold - before.total.below_threshold;
    let steered = after.steered_total() - before.steered_total();
    assert_eq!(below + steered, u64::from(RUNS), "below {below}, steered {steered}");
    // The first THRESHOLD of a window pass unscanned; a window boundary
    // crossed before the count exceeded it starts another such run (rare in
    // the fraction of a millisecond these runs take).
    assert!(below >= u64::from(THRESHOLD) && below <= 20 * u64::from(THRESHOLD), "below {below}");
    // Once busy, the rest are steered, to the Call-ID's worker.
    let w = worker_for_hash(call_id_hash(id), 2) as usize;
    assert_eq!(after.steered(w) - before.steered(w), steered);
    assert!(after.per_cpu.iter().any(|c| c.last_hash == call_id_hash(id)), "no CPU hashed the Call-ID");
}

// ---- The shield's XDP stage ---------------------------------------------------

use std::net::IpAddr;

use sip_lb_proto::shield::{Prefix, PrefixSet, Rate, ShieldPolicy};

fn prefixes(list: &[&str]) -> PrefixSet {
    PrefixSet::new(list.iter().map(|p| Prefix::parse(p).expect("prefix")))
}

/// A 2-worker program of its own with `policy` (the buckets and counters
/// are the program's, so tests do not share them).
fn shielded(policy: &ShieldPolicy) -> XdpTestProgram {
    let mut p = program(2);
    p.set_shield(policy).expect("write the shield maps");
    p
}

fn from(src: &str, ip: Ip) -> Frame {
    Frame { ip, src: Some(src.parse::<IpAddr>().unwrap()), ..Frame::default() }
}

fn v4(src: &str) -> Frame {
    from(src, Ip::V4 { options: 0, frag: 0 })
}

fn v6(src: &str) -> Frame {
    from(src, Ip::V6)
}

fn block_policy() -> ShieldPolicy {
    ShieldPolicy {
        // The last block prefix lies inside an allowed one: allow wins.
        block: prefixes(&["192.0.2.0/24", "2001:db8:bad::/48", "192.0.2.192/26"]),
        allow: prefixes(&["192.0.2.128/25", "2001:db8:bad:1::/64"]),
        ..ShieldPolicy::default()
    }
}

#[test]
fn shield_blocked_ipv4_and_ipv6_prefixes_dropped() {
    let p = shielded(&block_policy());
    let m = invite("Call-ID: blocked@x", 0);
    assert_eq!(p.run(&v4("192.0.2.7").build(&m)).unwrap(), Verdict::Blocked);
    assert_eq!(p.run(&v6("2001:db8:bad:2::7").build(&m)).unwrap(), Verdict::Blocked);
    // A keep-alive from a blocked source is dropped too (before the SIP check).
    assert_eq!(p.run(&v4("192.0.2.8").build(b"\r\n\r\n")).unwrap(), Verdict::Blocked);
    let c = p.counters().unwrap();
    assert_eq!((c.total.shield_blocked, c.total.shield_rate_limited), (3, 0));
    // Outside the prefixes: steered as without the shield.
    expect_steered(&p, &v4("192.0.3.7").build(&m), b"blocked@x", 2);
    expect_steered(&p, &v6("2001:db8:bae::7").build(&m), b"blocked@x", 2);
}

#[test]
fn shield_allowed_prefix_inside_a_blocked_one_steered() {
    let p = shielded(&block_policy());
    let m = invite("Call-ID: allowed@x", 0);
    expect_steered(&p, &v4("192.0.2.130").build(&m), b"allowed@x", 2);
    expect_steered(&p, &v6("2001:db8:bad:1::9").build(&m), b"allowed@x", 2);
    // Blocked inside allowed: allow is checked first.
    expect_steered(&p, &v4("192.0.2.200").build(&m), b"allowed@x", 2);
    assert_eq!(p.counters().unwrap().total.shield_blocked, 0);
}

#[test]
fn shield_other_ports_and_non_udp_unaffected() {
    let p = shielded(&block_policy());
    let m = invite("Call-ID: x@x", 0);
    let other_port = Frame { dport: 53, ..v4("192.0.2.7") };
    assert_eq!(p.run(&other_port.build(&m)).unwrap(), Verdict::Passed(PassReason::OtherPort));
    let tcp = Frame { l4: 6, ..v4("192.0.2.7") };
    assert_eq!(p.run(&tcp.build(&m)).unwrap(), Verdict::Passed(PassReason::NotIpUdp));
    let tcp6 = Frame { l4: 6, ..v6("2001:db8:bad::1") };
    assert_eq!(p.run(&tcp6.build(&m)).unwrap(), Verdict::Passed(PassReason::NotIpUdp));
    assert_eq!(p.counters().unwrap().total.shield_blocked, 0);
}

/// GCRA with repeat runs: in one window (10/s: the 1,000 runs take far less
/// than the 100 ms interval) exactly `burst` datagrams pass, the rest drop;
/// per source and per family; an allowed source is not limited.
#[test]
fn shield_rate_limit_passes_exactly_the_burst() {
    const BURST: u64 = 5;
    const RUNS: u32 = 1000;
    let policy = ShieldPolicy {
        allow: prefixes(&["198.51.100.1"]),
        rate: Some(Rate { per_sec: 10, burst: BURST as u32 }),
        ..ShieldPolicy::default()
    };
    let p = shielded(&policy);
    let m = invite("Call-ID: flood@x", 0);
    let mut limited = 0;
    for (i, f) in [v4("203.0.113.9"), v6("2001:db8::9"), v4("203.0.113.10")].iter().enumerate() {
        let before = p.counters().unwrap().total;
        p.bench(&f.build(&m), RUNS).expect("repeat run");
        let after = p.counters().unwrap().total;
        let steered: u64 = after.steered.iter().sum::<u64>() - before.steered.iter().sum::<u64>();
        assert_eq!(steered, BURST, "source {i}: the burst passes");
        assert_eq!(after.shield_rate_limited - before.shield_rate_limited, u64::from(RUNS) - BURST, "source {i}");
        limited += u64::from(RUNS) - BURST;
        // The next one is over too.
        assert_eq!(p.run(&f.build(&m)).unwrap(), Verdict::RateLimited);
        limited += 1;
    }
    let before = p.counters().unwrap().total;
    p.bench(&v4("198.51.100.1").build(&m), RUNS).expect("repeat run");
    let after = p.counters().unwrap().total;
    assert_eq!(after.steered.iter().sum::<u64>() - before.steered.iter().sum::<u64>(), u64::from(RUNS));
    assert_eq!((after.shield_rate_limited, after.shield_blocked), (limited, 0));
}

/// The AF_XDP program (`sip_lb_xsk`) has the same stage: blocked -> XDP_DROP
/// (counted), an allowed source inside the blocked prefix goes on (here
/// XDP_PASS: no AF_XDP socket is registered in the test).
#[test]
fn shield_xsk_program_drops_blocked_sources() {
    use sip_lb::xdp::xsk::XskProgram;
    require_root();
    let p =
        XskProgram::load(2, &[SIP_PORT], &["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()], &block_policy())
            .expect("load the AF_XDP program");
    let m = invite("Call-ID: xsk@x", 0);
    const XDP_DROP: u32 = 1;
    const XDP_PASS: u32 = 2;
    assert_eq!(p.test_run(&v4("192.0.2.7").build(&m)).unwrap(), XDP_DROP);
    assert_eq!(p.test_run(&v6("2001:db8:bad:2::7").build(&m)).unwrap(), XDP_DROP);
    assert_eq!(p.test_run(&v4("192.0.2.130").build(&m)).unwrap(), XDP_PASS);
    assert_eq!(p.test_run(&v4("192.0.3.7").build(&m)).unwrap(), XDP_PASS);
    let c = p.counters().unwrap();
    let sum = |f: fn(&sip_lb_common::maps::XskCounters) -> u64| c.iter().map(f).sum::<u64>();
    assert_eq!((sum(|c| c.shield_blocked), sum(|c| c.shield_rate_limited)), (2, 0));
    assert_eq!(sum(|c| c.passed[PassReason::NoSocket as usize]), 2);
}

/// Runtime bans and reloads reach the tries: each publish rewrites the copy
/// not in force and flips to it, so the lists alternate between the two
/// copies; a ban drops (counted in its own slot), a lifted ban passes, the
/// config's block list stays through every flip, and a ban inside an
/// allowed prefix is left out.
#[test]
fn shield_bans_published_into_the_tries_and_counted_per_ban() {
    let mut p = shielded(&block_policy());
    let policy = block_policy();
    let m = invite("Call-ID: ban@x", 0);
    let ban = |s: &str, slot| (Prefix::parse(s).unwrap(), slot);
    for round in 0..3 {
        p.set_shield_with_bans(&policy, &[ban("198.51.100.7", 3), ban("2001:db8:77::/48", 4), ban("192.0.2.131", 5)])
            .expect("publish bans");
        assert_eq!(p.run(&v4("198.51.100.7").build(&m)).unwrap(), Verdict::Blocked, "round {round}");
        assert_eq!(p.run(&v6("2001:db8:77::1").build(&m)).unwrap(), Verdict::Blocked, "round {round}");
        assert_eq!(p.run(&v4("192.0.2.7").build(&m)).unwrap(), Verdict::Blocked, "config block, round {round}");
        expect_steered(&p, &v4("192.0.2.131").build(&m), b"ban@x", 2);
        let x = p.shield().expect("shield maps");
        assert_eq!((x.hits(3), x.hits(4), x.hits(5)), (round + 1, 1, 0), "per-ban counts, round {round}");
        // Lifted: passes again; the block list does not.
        p.set_shield_with_bans(&policy, &[ban("2001:db8:77::/48", 4)]).expect("publish");
        expect_steered(&p, &v4("198.51.100.7").build(&m), b"ban@x", 2);
        assert_eq!(p.run(&v6("2001:db8:77::2").build(&m)).unwrap(), Verdict::Blocked);
        assert_eq!(p.run(&v4("192.0.2.8").build(&m)).unwrap(), Verdict::Blocked);
        let x = p.shield().unwrap();
        assert_eq!(x.hits(4), 2);
        x.reset_hits(4).unwrap();
        assert_eq!(x.hits(4), 0);
        assert_eq!(x.hits(0), 2, "the config's block list counts in slot 0");
        x.reset_hits(0).unwrap();
    }
    // A reload that drops the block list (no bans, no rate) turns the stage off.
    p.set_shield_with_bans(&ShieldPolicy::default(), &[]).unwrap();
    expect_steered(&p, &v4("192.0.2.7").build(&m), b"ban@x", 2);
}

/// A source over its rate is reported in SHIELD_OVER once per report
/// interval (so a sustained flood held in XDP can still be banned); the
/// control plane takes the reports and the map is empty after.
#[test]
fn shield_over_rate_sources_reported_for_bans() {
    let policy = ShieldPolicy { rate: Some(Rate { per_sec: 10, burst: 5 }), ..ShieldPolicy::default() };
    let p = shielded(&policy);
    let m = invite("Call-ID: over@x", 0);
    p.bench(&v4("203.0.113.50").build(&m), 1000).expect("repeat run");
    p.bench(&v6("2001:db8::50").build(&m), 1000).expect("repeat run");
    // Within the burst: never reported.
    p.bench(&v4("203.0.113.51").build(&m), 5).expect("repeat run");
    let x = p.shield().expect("shield maps");
    let mut over = Vec::new();
    x.take_over_rate(&mut over);
    over.sort();
    let want: Vec<IpAddr> = vec!["203.0.113.50".parse().unwrap(), "2001:db8::50".parse().unwrap()];
    assert_eq!(over, want, "each flooding source once (the 1,000 runs take well under 250 ms)");
    over.clear();
    x.take_over_rate(&mut over);
    assert!(over.is_empty(), "taken: {over:?}");
}

/// `new_sources`: sources not followed yet are admitted at that rate (per
/// CPU); past its burst a new source is dropped as rate limited, while a
/// source already followed goes on within its own rate.
#[test]
fn shield_new_sources_limited_while_known_ones_pass() {
    let policy = ShieldPolicy {
        rate: Some(Rate { per_sec: 10, burst: 5 }),
        new_sources: Some(Rate { per_sec: 1, burst: 3 }),
        ..ShieldPolicy::default()
    };
    let p = shielded(&policy);
    let m = invite("Call-ID: new@x", 0);
    // Known before the spoofed burst.
    expect_steered(&p, &v4("192.0.2.1").build(&m), b"new@x", 2);
    // The test runs may land on either CPU: each has its own budget of 3 (one spent above, maybe).
    let verdicts: Vec<Verdict> = (10..40).map(|i| p.run(&v4(&format!("198.18.0.{i}")).build(&m)).unwrap()).collect();
    let limited = verdicts.iter().filter(|v| **v == Verdict::RateLimited).count();
    assert!((30 - 6..=30 - 2).contains(&limited), "{limited} of 30 new sources limited: {verdicts:?}");
    // The known source is not a new source: it goes on.
    expect_steered(&p, &v4("192.0.2.1").build(&m), b"new@x", 2);
}

/// A table full of spoofed sources: four times its capacity in distinct
/// IPv4 sources, each new (its one datagram passes), go through every group.
/// A source that spent its burst before the flood keeps its slot (its TAT
/// runs ahead of the clock, so it is the last of its group to be taken):
/// after the flood it gets one datagram per elapsed second, not a fresh
/// burst. The memory is the table's, fixed at load.
#[test]
fn shield_table_full_of_spoofed_sources_keeps_a_source_over_its_burst() {
    use sip_lb_common::maps::SHIELD_MAX_SOURCES;
    use std::time::Instant;
    const BURST: u64 = 100;
    let policy = ShieldPolicy { rate: Some(Rate { per_sec: 1, burst: BURST as u32 }), ..ShieldPolicy::default() };
    let p = shielded(&policy);
    let m = invite("Call-ID: spoofed@x", 0);
    let held = v4("203.0.113.77").build(&m);
    let passed = |p: &XdpTestProgram| p.counters().unwrap().total.steered.iter().sum::<u64>();
    p.bench(&held, 1000).expect("repeat run");
    assert_eq!(passed(&p), BURST, "the burst passes");
    let start = Instant::now();
    let mut spoofed = v4("198.18.0.0").build(&m);
    const SRC: usize = 14 + 12; // Ethernet, then the IPv4 source address.
    for i in 0..4 * SHIELD_MAX_SOURCES {
        spoofed[SRC..SRC + 4].copy_from_slice(&(0x0a00_0000 + i).to_be_bytes());
        p.run_raw(&spoofed).expect("test run");
    }
    let flood = start.elapsed();
    let c = p.counters().unwrap().total;
    assert_eq!(c.shield_rate_limited, 1000 - BURST, "every spoofed source is new: its datagram passes");
    assert_eq!(passed(&p), BURST + u64::from(4 * SHIELD_MAX_SOURCES));
    // Had its slot been taken, a fresh burst of 100 would pass now.
    let before = passed(&p);
    p.bench(&held, 1000).expect("repeat run");
    let again = passed(&p) - before;
    let refilled = flood.as_secs() + 2;
    assert!(
        again <= refilled,
        "{again} passed after a {flood:?} flood: the source lost its bucket (at most {refilled} had it kept it)"
    );
}

/// GCRA refills: after its burst a source passes again one interval later,
/// not before (the stage's clock is the kernel's tick: within a tick of it),
/// and then one datagram per interval.
#[test]
fn shield_bucket_refills_after_one_interval() {
    use std::time::{Duration, Instant};
    const INTERVAL: Duration = Duration::from_millis(50);
    let policy = ShieldPolicy { rate: Some(Rate { per_sec: 20, burst: 3 }), ..ShieldPolicy::default() };
    let p = shielded(&policy);
    let f = v4("203.0.113.80").build(&invite("Call-ID: refill@x", 0));
    let passed = |p: &XdpTestProgram| p.counters().unwrap().total.steered.iter().sum::<u64>();
    let start = Instant::now();
    p.bench(&f, 10).expect("repeat run");
    assert_eq!(passed(&p), 3, "the burst passes");
    let deadline = start + Duration::from_secs(5);
    while p.run(&f).expect("test run") == Verdict::RateLimited {
        assert!(Instant::now() < deadline, "no refill within 5 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    let waited = start.elapsed();
    let mut res = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes one timespec we own.
    assert_eq!(unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) }, 0);
    let tick = Duration::from_nanos(res.tv_nsec as u64);
    assert!(
        waited + 2 * tick >= INTERVAL,
        "refilled after {waited:?}, before the interval ({INTERVAL:?}, tick {tick:?})"
    );
    // Spent again: the next one waits for the next interval.
    assert_eq!(p.run(&f).expect("test run"), Verdict::RateLimited);
    assert_eq!(passed(&p), 4);
}
