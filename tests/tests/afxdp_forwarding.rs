//! The AF_XDP data path end to end (root; copy mode on veth): a one-armed
//! topology (`sip_lb_tests::afxdp`), sip-lb with `--datapath afxdp` on its
//! veth, real UDP from clients to a farm and back, IPv4 then IPv6. The
//! shutdown summary's AF_XDP lines show the datagrams went through the
//! AF_XDP sockets (not the socket path).

use std::time::Duration;

use sip_lb_tests::afxdp::{self, endpoint, sa, OneArm, CLIENT4, CLIENT6, FARM4, FARM6, LB4, LB6};
use sip_lb_tests::lb::{Launch, SipLb};
use sip_lb_tests::netns;
use sip_lb_tests::ports::free_tcp_addr;
use sip_lb_tests::sink::Sink;

const WAIT: Duration = Duration::from_secs(5);

fn require_root() {
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "AF_XDP tests create namespaces and load eBPF: run as root (euid is {euid})");
}

/// sip-lb in `arm.lb` (the calling thread enters it for good), listening on
/// LB4 and LB6:5060, INVITEs to FARM4[0], REGISTERs to FARM6[0].
fn start_lb(arm: &OneArm, label: &str, extra: &str) -> SipLb {
    netns::enter(arm.lb.name()).expect("enter the balancer's namespace");
    let control = free_tcp_addr().unwrap();
    let (l4, l6) = (sa(LB4, 5060), sa(LB6, 5060));
    let text = format!(
        "listen = [\"{l4}\", \"{l6}\"]\nworkers = 2\npin = \"off\"\nmetrics = \"{control}\"\niface = \"{}\"\n\
         datapath = \"afxdp\"\n{extra}\n\
         [[pool]]\nname = \"farm\"\ndefault = true\nbackends = [\"{}\"]\n\n\
         [[pool]]\nname = \"registrars\"\nmethods = [\"REGISTER\"]\nbackends = [\"{}\"]\n",
        arm.lb_if,
        sa(FARM4[0], 5060),
        sa(FARM6[0], 5060),
    );
    Launch::config(label, &text, &[l4, l6], control).start().expect("sip-lb with AF_XDP")
}

/// Sends `n` requests from `client` and waits for `n` answers relayed back.
fn round(client: &Sink, to: std::net::SocketAddr, method: &str, n: usize, tag: &str) {
    for i in 0..n {
        let req = client.request(method, &format!("{tag}-{i}@afxdp.test"), 1);
        client.send_to(req.bytes(), to).unwrap();
    }
    for i in 0..n {
        let (text, from) = client
            .recv_text(WAIT)
            .unwrap_or_else(|| panic!("{tag}: answer {i} of {n} never came back to {}", client.addr()));
        assert!(text.starts_with("SIP/2.0 200"), "{tag}: {text}");
        assert_eq!(from, to, "{tag}: the answer comes from the address the request went to");
    }
}

#[test]
fn ipv4_then_ipv6_forwarded_and_relayed() {
    require_root();
    let arm = OneArm::new().expect("topology");
    let backend4 = endpoint(&arm, sa(FARM4[0], 5060), true).unwrap();
    let backend6 = endpoint(&arm, sa(FARM6[0], 5060), true).unwrap();
    let client4 = endpoint(&arm, sa(CLIENT4, 5062), false).unwrap();
    let client6 = endpoint(&arm, sa(CLIENT6, 5062), false).unwrap();
    let mut lb = start_lb(&arm, "afxdp-v4-v6", "");
    let log = lb.child.stderr();
    assert!(log.contains("datapath: AF_XDP on"), "start-up names the mode:\n{log}");
    assert!(log.contains("copy mode"), "veth binds in copy mode:\n{log}");

    round(&client4, sa(LB4, 5060), "INVITE", 50, "v4");
    assert_eq!(backend4.count(), 50, "every INVITE reached the IPv4 backend once");
    round(&client6, sa(LB6, 5060), "REGISTER", 50, "v6");
    assert_eq!(backend6.count(), 50, "every REGISTER reached the IPv6 backend once");

    // The same story in /metrics (sip_lb_afxdp_*) while running.
    let m = lb.control.metrics().expect("/metrics");
    let sum = |name: &str| m.sum(name, &[]).unwrap_or_else(|| panic!("{name} in /metrics:\n{}", m.text())) as u64;
    assert_eq!(sum("sip_lb_afxdp_queue_rx_frames_total"), 200, "{}", m.text());
    assert_eq!(sum("sip_lb_afxdp_worker_tx_frames_total"), 200, "{}", m.text());
    assert_eq!(sum("sip_lb_afxdp_program_redirected_total"), 200, "{}", m.text());
    assert_eq!(sum("sip_lb_afxdp_queue_handoff_full_total"), 0, "{}", m.text());
    // Each frame read was either handled by its reader (the owner) or
    // handed to its owner: nothing else.
    let (kept, handed) = (sum("sip_lb_afxdp_queue_kept_total"), sum("sip_lb_afxdp_queue_handed_off_total"));
    assert_eq!(kept + handed, 200, "{}", m.text());
    assert!(kept > 0 && handed > 0, "one queue, two workers: both ways used\n{}", m.text());

    let shutdown = lb.stop().expect("clean stop");
    let err = lb.child.stderr();
    assert_eq!(shutdown.total.requests, 100, "{err}");
    assert_eq!(shutdown.total.responses, 100, "{err}");
    // 100 requests + 100 responses in, as many out, all by AF_XDP.
    assert_eq!(afxdp::summary_sum(&err, "queue", "rx"), 200, "{err}");
    assert_eq!(afxdp::summary_sum(&err, "worker", "tx"), 200, "{err}");
    assert_eq!(afxdp::summary_sum(&err, "worker", "tx_socket_unresolved"), 0, "{err}");
}

/// `[hep]` with AF_XDP: the AF_XDP workers mirror what they receive and
/// send, like the socket workers: 20 calls' INVITE and its response are
/// each seen coming in and going out, 80 HEP packets to the collector.
#[test]
fn afxdp_workers_mirror_to_hep() {
    require_root();
    let arm = OneArm::new().expect("topology");
    let _backend = endpoint(&arm, sa(FARM4[0], 5060), true).unwrap();
    let client = endpoint(&arm, sa(CLIENT4, 5062), false).unwrap();
    // The collector in the balancer's namespace, on its loopback.
    netns::enter(arm.lb.name()).expect("enter the balancer's namespace");
    let collector = Sink::bind("127.0.0.1:0").unwrap();
    let hep = format!("[hep]\ncollector = \"{}\"\n", collector.addr());
    let mut lb = start_lb(&arm, "afxdp-hep", &hep);
    round(&client, sa(LB4, 5060), "INVITE", 20, "hep");
    collector.wait_count(80, WAIT).expect("80 HEP packets");
    let shutdown = lb.stop().expect("clean stop");
    let err = lb.child.stderr();
    assert_eq!(afxdp::summary_sum(&err, "worker", "tx"), 40, "all by AF_XDP:\n{err}");
    assert_eq!(collector.count(), 80, "{shutdown:?}");
    assert!(collector.datagrams().iter().all(|d| d.bytes.starts_with(b"HEP3")), "HEPv3 packets only");
}

/// 2000 Call-IDs from ONE client 5-tuple (one RX queue): each is handled by
/// the AF_XDP worker its hash names (the per-worker counts equal the hash
/// model's exactly), the split is within 10% of even, and each call's two
/// requests reach the backend in order.
#[test]
fn one_five_tuple_spreads_over_workers_by_call_id() {
    use sip_lb_common::{call_id_hash, worker_for_hash};
    require_root();
    const CALLS: usize = 2000;
    let arm = OneArm::new().expect("topology");
    let backend = endpoint(&arm, sa(FARM4[0], 5060), true).unwrap();
    let client = endpoint(&arm, sa(CLIENT4, 5062), false).unwrap();
    let mut lb = start_lb(&arm, "afxdp-spread", "");
    let ids: Vec<String> =
        (0..CALLS).map(|i| format!("{:08x}-{i}@trunk.afxdp.test", (i as u32).wrapping_mul(2654435761))).collect();
    let mut want = [0u64; 2];
    for id in &ids {
        want[worker_for_hash(call_id_hash(id.as_bytes()), 2) as usize] += 1;
    }
    for (n, chunk) in ids.chunks(100).enumerate() {
        for cseq in [1, 2] {
            for id in chunk {
                client.send_to(client.request("INVITE", id, cseq).bytes(), sa(LB4, 5060)).unwrap();
            }
        }
        // Paced: wait for this chunk's answers before the next.
        client.wait_count(((n + 1) * chunk.len() * 2) as u64, WAIT).expect("answers relayed");
    }
    let seen = backend.datagrams();
    assert_eq!(seen.len(), 2 * CALLS);
    let mut first_seen = std::collections::HashMap::new();
    for d in &seen {
        let text = d.text();
        let id = sip_lb_tests::sip::headers(&text, "Call-ID")[0].to_owned();
        let cseq = if text.contains("CSeq: 1 ") { 1 } else { 2 };
        if cseq == 1 {
            first_seen.insert(id, true);
        } else {
            assert!(first_seen.contains_key(&id), "CSeq 2 of {id} arrived before CSeq 1");
        }
    }
    lb.stop().expect("clean stop");
    let err = lb.child.stderr();
    let lines = afxdp::summary_lines(&err);
    let got: Vec<u64> = (0..2)
        .map(|w| {
            lines.iter().find(|(h, _)| *h == format!("worker {w}")).and_then(|(_, m)| m.get("rx").copied()).unwrap_or(0)
        })
        .collect();
    // Each Call-ID: two requests and two responses, all on its owner.
    assert_eq!(got, vec![4 * want[0], 4 * want[1]], "per-worker frames vs the hash model:\n{err}");
    let even = CALLS as u64 / 2;
    for (w, &n) in want.iter().enumerate() {
        assert!(n.abs_diff(even) * 10 <= even, "worker {w} owns {n} of {CALLS} calls: {want:?}");
    }
}

/// The kernel keeps its jobs while the program is attached: a backend
/// without a neighbour entry still gets its datagram (socket path, the
/// kernel resolves it), a fragmented 3 KB request is forwarded (passed as
/// `fragment`, reassembled, socket path), ping answers; and the program's
/// counters account for every frame (redirected + passed = seen).
#[test]
fn kernel_paths_still_work_while_attached() {
    require_root();
    let arm = OneArm::new().expect("topology");
    arm.out.exec(&["ip", "addr", "add", &format!("{}/24", afxdp::UNRESOLVED4), "dev", &arm.out_if]).unwrap();
    let far = endpoint(&arm, sa(afxdp::UNRESOLVED4, 5060), true).unwrap();
    let backend = endpoint(&arm, sa(FARM4[0], 5060), true).unwrap();
    let client = endpoint(&arm, sa(CLIENT4, 5062), false).unwrap();
    let client6 = endpoint(&arm, sa(CLIENT6, 5062), false).unwrap();
    netns::enter(arm.lb.name()).unwrap();
    let control = free_tcp_addr().unwrap();
    let (l4, l6) = (sa(LB4, 5060), sa(LB6, 5060));
    let text = format!(
        "listen = [\"{l4}\", \"{l6}\"]\nworkers = 2\npin = \"off\"\nmetrics = \"{control}\"\niface = \"{}\"\ndatapath = \"afxdp\"\n\
         [[pool]]\nname = \"farm\"\ndefault = true\nbackends = [\"{}\"]\n\n\
         [[pool]]\nname = \"far\"\nmethods = [\"REGISTER\"]\nbackends = [\"{}\"]\n",
        arm.lb_if,
        sa(FARM4[0], 5060),
        sa(afxdp::UNRESOLVED4, 5060),
    );
    let mut lb = Launch::config("afxdp-kernel", &text, &[l4, l6], control).start().expect("sip-lb");

    // No neighbour entry for the far registrar: the first REGISTER leaves by socket.
    client.send_to(client.request("REGISTER", "far-1@afxdp.test", 1).bytes(), l4).unwrap();
    far.wait_count(1, WAIT).expect("REGISTER to a backend without a neighbour entry arrives");
    client.wait_count(1, WAIT).expect("its answer is relayed");

    // 3 KB: fragmented by the client's kernel, passed by XDP, reassembled.
    let big = client.request("INVITE", "big-1@afxdp.test", 1).body("text/plain", &"x".repeat(3000));
    client.send_to(big.bytes(), l4).unwrap();
    backend.wait_count(1, WAIT).expect("the fragmented INVITE is forwarded");
    client.wait_count(2, WAIT).expect("its answer is relayed");
    // The same over IPv6: a fragment header, passed as well.
    let big6 = client6.request("INVITE", "big-6@afxdp.test", 1).body("text/plain", &"x".repeat(3000));
    client6.send_to(big6.bytes(), l6).unwrap();
    backend.wait_count(2, WAIT).expect("the fragmented IPv6 INVITE is forwarded");
    client6.wait_count(1, WAIT).expect("its answer is relayed over IPv6");

    let ping = arm.out.exec(&["python3", "-c", PING, LB4]);
    assert!(ping.is_ok(), "ping to the balancer while attached: {ping:?}");

    lb.stop().expect("clean stop");
    let err = lb.child.stderr();
    assert!(afxdp::summary_sum(&err, "worker", "tx_socket_unresolved") >= 1, "{err}");
    let program = afxdp::summary_lines(&err).into_iter().find(|(h, _)| h == "program").expect("program line").1;
    let passed: u64 = program.iter().filter(|(k, _)| *k != "redirected" && *k != "seen").map(|(_, v)| v).sum();
    assert_eq!(program["redirected"] + passed, program["seen"], "every frame counted once: {program:?}");
    assert!(program["fragment"] >= 4, "both 3 KB INVITEs' fragments were passed: {program:?}");
    assert!(program["not_ip_udp"] >= 1, "ICMP was passed: {program:?}");
}

/// One ICMP echo to argv[1] over a raw socket, answered within 2 s (exit 1
/// otherwise); no `ping` binary needed.
const PING: &str = r#"
import socket, struct, sys, time
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(2)
body = b"sip-lb-afxdp-ping"
hdr = struct.pack("!BBHHH", 8, 0, 0, 0x5151, 1)
s.sendto(hdr[:2] + struct.pack("!H", csum(hdr + body + b"\0")) + hdr[4:] + body, (sys.argv[1], 0))
end = time.time() + 2
while time.time() < end:
    data, addr = s.recvfrom(2048)
    ihl = (data[0] & 15) * 4
    if addr[0] == sys.argv[1] and data[ihl] == 0 and data[ihl + 4:ihl + 6] == b"\x51\x51":
        sys.exit(0)
sys.exit(1)
"#;

/// After SIGKILL nothing stays: the XDP link is fd-based, so the program
/// leaves the interface and its XSKMAP is freed (checked with `ip` and
/// `bpftool`).
#[test]
fn sigkill_leaves_no_program_or_xskmap() {
    require_root();
    let arm = OneArm::new().expect("topology");
    let mut lb = start_lb(&arm, "afxdp-kill", "");
    let link = std::process::Command::new("ip").args(["-d", "link", "show", "dev", &arm.lb_if]).output().unwrap();
    let link = String::from_utf8_lossy(&link.stdout).into_owned();
    let prog_id: String = link
        .split("prog/xdp id ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("an XDP program on {}:\n{link}", arm.lb_if))
        .to_owned();
    let info = std::process::Command::new("bpftool").args(["prog", "show", "id", &prog_id]).output().unwrap();
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    let map_ids: Vec<String> = info
        .split("map_ids ")
        .nth(1)
        .map(|s| s.split_whitespace().next().unwrap_or("").split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let xsk_map = map_ids
        .iter()
        .find(|id| {
            let m = std::process::Command::new("bpftool").args(["map", "show", "id", id]).output().unwrap();
            String::from_utf8_lossy(&m.stdout).contains("xskmap")
        })
        .unwrap_or_else(|| panic!("the program uses an XSKMAP: {info}"))
        .clone();
    lb.child.signal(libc::SIGKILL).unwrap();
    sip_lb_tests::sink::wait_until(Duration::from_secs(10), || {
        let l = std::process::Command::new("ip").args(["-d", "link", "show", "dev", &arm.lb_if]).output().unwrap();
        let gone_prog = !String::from_utf8_lossy(&l.stdout).contains("prog/xdp");
        let m = std::process::Command::new("bpftool").args(["map", "show", "id", &xsk_map]).output().unwrap();
        gone_prog && !m.status.success()
    })
    .expect("program detached and XSKMAP freed after SIGKILL");
}

/// `datapath = "afxdp"` written out: a failure to start it is an error
/// naming it, not a silent fallback.
#[test]
fn explicit_afxdp_that_cannot_start_is_an_error() {
    require_root();
    let out = std::process::Command::new(sip_lb_tests::sip_lb_binary().unwrap())
        .args(["run", "--listen", "127.0.0.1:0", "--advertise", "127.0.0.1:5060", "--backend", "127.0.0.1:9"])
        .args(["--control", "127.0.0.1:0"])
        .args(["--iface", "nosuchif0", "--datapath", "afxdp"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("starting the AF_XDP data path on nosuchif0"), "{err}");
}

/// TCP/TLS need the stream relay, which the AF_XDP workers lack: asking for
/// AF_XDP with a TCP listener is refused, saying why (without `datapath`,
/// the same config takes the socket path with a warning).
#[test]
fn explicit_afxdp_with_a_tcp_listener_is_refused() {
    require_root();
    let out = std::process::Command::new(sip_lb_tests::sip_lb_binary().unwrap())
        .args(["run", "--listen", "127.0.0.1:0", "--listen", "tcp:127.0.0.1:0"])
        .args(["--advertise", "127.0.0.1:5060", "--backend", "127.0.0.1:9", "--control", "127.0.0.1:0"])
        .args(["--iface", "lo", "--datapath", "afxdp"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the AF_XDP workers do not relay to connections"), "{err}");
}

/// With `--iface` and no `datapath`, a failure to bind AF_XDP (here: the
/// queue is taken by another AF_XDP socket) falls back to the socket path
/// with XDP steering, says why, and forwards.
#[test]
fn default_falls_back_to_the_socket_path_when_afxdp_cannot_bind() {
    require_root();
    let arm = OneArm::new().expect("topology");
    let backend = endpoint(&arm, sa(FARM4[0], 5060), true).unwrap();
    let client = endpoint(&arm, sa(CLIENT4, 5062), false).unwrap();
    netns::enter(arm.lb.name()).unwrap();
    let ifindex = sip_lb_afxdp::ifindex(&arm.lb_if).unwrap();
    let cfg = sip_lb_afxdp::QueueConfig { mode: sip_lb_afxdp::BindMode::Copy, ..Default::default() };
    let _squatter = sip_lb_afxdp::Queue::bind(ifindex, 0, &cfg).expect("an AF_XDP socket on queue 0");
    let control = free_tcp_addr().unwrap();
    let l4 = sa(LB4, 5060);
    let text = format!(
        "listen = [\"{l4}\"]\nworkers = 2\npin = \"off\"\nmetrics = \"{control}\"\niface = \"{}\"\n\n\
         [[pool]]\nname = \"farm\"\ndefault = true\nbackends = [\"{}\"]\n",
        arm.lb_if,
        sa(FARM4[0], 5060),
    );
    let mut lb = Launch::config("afxdp-fallback", &text, &[l4], control).start().expect("sip-lb");
    let log = lb.child.stderr();
    assert!(log.contains(&format!("datapath: socket (AF_XDP on {} failed", arm.lb_if)), "says why:\n{log}");
    assert!(log.contains("steering: xdp-driver"), "XDP steering took the interface:\n{log}");
    round(&client, l4, "INVITE", 20, "fallback");
    assert_eq!(backend.count(), 20);
    lb.stop().expect("clean stop");
    assert!(afxdp::summary_lines(&lb.child.stderr()).is_empty(), "no AF_XDP counters without AF_XDP");
}

/// SIGINT stops it cleanly (exit 0, the AF_XDP summary printed) and the
/// program leaves the interface.
#[test]
fn sigint_stops_cleanly_and_detaches() {
    require_root();
    let arm = OneArm::new().expect("topology");
    let mut lb = start_lb(&arm, "afxdp-sigint", "");
    let xdp_on = |dev: &str| {
        let l = std::process::Command::new("ip").args(["-d", "link", "show", "dev", dev]).output().unwrap();
        String::from_utf8_lossy(&l.stdout).contains("prog/xdp")
    };
    assert!(xdp_on(&arm.lb_if), "the AF_XDP program is attached while running");
    lb.child.signal(libc::SIGINT).unwrap();
    let status = lb.child.wait_timeout(Duration::from_secs(10)).unwrap().expect("exits within 10 s of SIGINT");
    let err = lb.child.stderr();
    assert!(status.success(), "{status:?}\n{err}");
    assert!(err.contains("SIGINT: stopping") && err.contains("afxdp queue 0:"), "{err}");
    assert!(!xdp_on(&arm.lb_if), "program detached after SIGINT");
}
