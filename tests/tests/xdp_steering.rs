//! End-to-end Call-ID steering with real sockets:
//! - `veth_xdp_steering`: XDP on a veth end in the balancer's network
//!   namespace, two SO_REUSEPORT worker sockets read by threads pinned to CPU 0
//!   and 1, 2000 calls sent from ONE source 5-tuple in the peer namespace;
//! - `veth_below_the_redirect_threshold_reuseport_alone_steers`: the same
//!   with XDP below its redirect threshold (no CPU-map hop, no scan in XDP);
//! - `loopback_reuseport_steering`: the fallback without an interface.
//!
//! Each Call-ID must reach exactly one worker, the one its hash names, and
//! the split must be within 10% of even. Needs root (CI runs as root).

#[allow(dead_code)]
use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    os::fd::{AsFd, BorrowedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use sip_lb::xdp::{Steering, SteeringMode};
use sip_lb_common::{call_id_hash, worker_for_hash};
use sip_lb_proto::shield::ShieldPolicy;
use sip_lb_tests::netns::{self, NetNs, Veth};

const WORKERS: usize = 2;
const CALLS: usize = 2000;
const PORT: u16 = 5060;

fn require_root() {
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "xdp_steering creates namespaces and loads eBPF: run as root (euid is {euid})");
}

/// A bound SO_REUSEPORT UDP socket, as a worker's (the data plane's own I/O
/// layer), with a 200 ms receive timeout.
fn reuseport_socket(addr: SocketAddr) -> UdpSocket {
    let opts =
        sip_lb_udp::SocketOptions { read_timeout: Duration::from_millis(200), ..sip_lb_udp::SocketOptions::DATAPLANE };
    sip_lb_udp::bind(addr, &opts).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

fn pin_to_cpu(cpu: usize) {
    sip_lb_udp::affinity::pin_to_cpu(cpu).unwrap_or_else(|e| panic!("pin to CPU {cpu}: {e}"));
}

fn call_id_of(datagram: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(datagram).ok()?;
    let line = text.split("\r\n").find(|l| l.starts_with("Call-ID:"))?;
    Some(line["Call-ID:".len()..].trim().to_owned())
}

/// Which worker got which Call-IDs.
type Received = Arc<Mutex<Vec<(usize, String)>>>;

/// Starts one pinned reader thread per socket; they stop when `stop` is set.
fn start_workers(
    sockets: Vec<UdpSocket>,
    cpus: &[u32],
    stop: Arc<AtomicBool>,
) -> (Received, Vec<thread::JoinHandle<()>>) {
    let received: Received = Arc::default();
    let handles = sockets
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let (received, stop, cpu) = (received.clone(), stop.clone(), cpus[i] as usize);
            thread::spawn(move || {
                pin_to_cpu(cpu);
                let mut buf = [0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = s.recv(&mut buf) {
                        if let Some(id) = call_id_of(&buf[..n]) {
                            received.lock().unwrap().push((i, id));
                        }
                    }
                }
            })
        })
        .collect();
    (received, handles)
}

fn call_ids() -> Vec<String> {
    (0..CALLS).map(|i| format!("{:08x}-{i}@trunk.carrier.example", (i as u32).wrapping_mul(2654435761))).collect()
}

/// Every Call-ID once, at its hash's worker, split within 10% of even.
fn check(received: &[(usize, String)], ids: &[String]) {
    let mut by_id: HashMap<&str, Vec<usize>> = HashMap::new();
    for (w, id) in received {
        by_id.entry(id.as_str()).or_default().push(*w);
    }
    let mut per_worker = [0usize; WORKERS];
    for id in ids {
        let got = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("Call-ID {id} never arrived ({} of {} did)", by_id.len(), ids.len()));
        assert_eq!(got.len(), 1, "Call-ID {id} handled {} times by {got:?}", got.len());
        let want = worker_for_hash(call_id_hash(id.as_bytes()), WORKERS as u32) as usize;
        assert_eq!(got[0], want, "Call-ID {id} went to worker {} instead of {want}", got[0]);
        per_worker[want] += 1;
    }
    let even = ids.len() / WORKERS;
    for (w, &n) in per_worker.iter().enumerate() {
        assert!(n.abs_diff(even) * 10 <= even, "worker {w} got {n} of {} calls: {per_worker:?}", ids.len());
    }
}

/// Waits until `n` datagrams arrived or `limit` passed.
fn wait_for(received: &Received, n: usize, limit: Duration) {
    let start = Instant::now();
    while received.lock().unwrap().len() < n && start.elapsed() < limit {
        thread::sleep(Duration::from_millis(20));
    }
}

/// A python3 sender: all datagrams from ONE socket (one 5-tuple), paced.
const SENDER: &str = r#"
import socket, sys, time
dst = (sys.argv[1], int(sys.argv[2]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5070))
for n, cid in enumerate(sys.stdin.read().split()):
    msg = ("INVITE sip:bob@example.com SIP/2.0\r\n"
           "Via: SIP/2.0/UDP 10.99.0.2:5070;branch=z9hG4bK-%d\r\n"
           "From: <sip:alice@example.com>;tag=%d\r\nTo: <sip:bob@example.com>\r\n"
           "Call-ID: %s\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n") % (n, n, cid)
    s.sendto(msg.encode(), dst)
    if n % 100 == 99:
        time.sleep(0.005)
"#;

fn send_from(ns: Option<&NetNs>, dst: &str, port: u16, ids: &[String]) {
    use std::io::Write;
    let args = ["python3", "-c", SENDER, dst, &port.to_string()];
    let mut cmd = match ns {
        Some(ns) => ns.command(&args),
        None => {
            let mut c = std::process::Command::new(args[0]);
            c.args(&args[1..]);
            c
        }
    };
    let mut child = cmd.stdin(std::process::Stdio::piped()).spawn().expect("spawn python3 sender");
    child.stdin.take().unwrap().write_all(ids.join("\n").as_bytes()).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "sender failed: {status}");
}

/// 2000 INVITEs from one 5-tuple in a peer namespace to two pinned workers
/// behind XDP on a veth (`redirect_above_pps` as given), each Call-ID checked
/// to reach its worker exactly once; the programs' counters at the end.
fn veth_steering(redirect_above_pps: u32) -> (sip_lb::xdp::XdpCounters, Vec<u32>) {
    require_root();
    let lb = NetNs::new("siplb-lb").expect("balancer netns");
    let peer = NetNs::new("siplb-peer").expect("peer netns");
    Veth::new(&lb, "slb0", "10.99.0.1/24", &peer, "speer0", "10.99.0.2/24").expect("veth pair");
    // Local senders over veth leave the UDP checksum to offload; after an XDP
    // redirect the stack would see it as bad and drop it.
    peer.exec(&["ethtool", "-K", "speer0", "tx", "off"]).expect("ethtool -K speer0 tx off");

    let cpus: Vec<u32> = (0..WORKERS as u32).collect();
    let stop = Arc::new(AtomicBool::new(false));
    // The balancer side lives on a thread inside the balancer namespace.
    let (tx, rx) = std::sync::mpsc::channel();
    let lb_thread = {
        let (stop, cpus) = (stop.clone(), cpus.clone());
        let lb_name = lb.name().to_owned();
        thread::spawn(move || {
            netns::enter(&lb_name).expect("enter balancer netns");
            let addr: SocketAddr = format!("10.99.0.1:{PORT}").parse().unwrap();
            let sockets: Vec<UdpSocket> = (0..WORKERS).map(|_| reuseport_socket(addr)).collect();
            let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|s| s.as_fd()).collect();
            let steering =
                Steering::attach(Some("slb0"), &fds, &cpus, &[PORT], redirect_above_pps, &ShieldPolicy::default())
                    .expect("attach steering");
            let (received, workers) = start_workers(sockets, &cpus, stop.clone());
            tx.send((steering.mode(), received.clone())).unwrap();
            for w in workers {
                w.join().unwrap();
            }
            steering.counters().expect("counters")
        })
    };
    let (mode, received) = rx.recv_timeout(Duration::from_secs(30)).expect("balancer set-up");
    assert_eq!(mode, SteeringMode::XdpDriver { iface: "slb0".into() }, "expected native XDP on veth");

    let ids = call_ids();
    send_from(Some(&peer), "10.99.0.1", PORT, &ids);
    wait_for(&received, CALLS, Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    let counters = lb_thread.join().expect("balancer thread");
    let received = received.lock().unwrap().clone();
    println!("mode: {mode}; {counters}");
    check(&received, &ids);
    (counters, cpus)
}

#[test]
fn veth_xdp_steering() {
    // Threshold 0: XDP steers every datagram to its worker's CPU.
    let (counters, cpus) = veth_steering(0);
    let xdp = counters.xdp.expect("xdp counters");
    assert_eq!(xdp.steered_total(), CALLS as u64, "every INVITE was steered by XDP: {xdp}");
    assert_eq!(xdp.total.below_threshold, 0, "{xdp}");
    #[allow(clippy::needless_range_loop)]
    for w in 0..WORKERS {
        assert_eq!(
            xdp.steered(w),
            counters.reuseport.steered(w),
            "XDP's CPU choice and the reuseport socket choice agree for worker {w}"
        );
        // The CPU map (or, for the receiving CPU's own worker, no hop at all)
        // moved the stack's work: worker w's datagrams met the reuseport
        // selector on worker w's CPU.
        let on_cpu = counters.reuseport.per_cpu[cpus[w] as usize].steered[w];
        assert_eq!(on_cpu, counters.reuseport.steered(w), "worker {w}'s datagrams processed on CPU {}", cpus[w]);
    }
    // Datagrams whose owner is the receiving CPU skip the CPU map: exactly
    // those XDP counted as steered on their owner's own CPU.
    let local: u64 = (0..WORKERS).map(|w| xdp.per_cpu[cpus[w] as usize].steered[w]).sum();
    assert_eq!(xdp.total.kept_local, local, "{xdp}");
}

#[test]
fn veth_below_the_redirect_threshold_reuseport_alone_steers() {
    // A threshold no test reaches: XDP passes every SIP datagram unscanned on
    // the receiving CPU, and the reuseport program still gives each Call-ID
    // its worker (`check`).
    let (counters, _) = veth_steering(u32::MAX);
    let xdp = counters.xdp.as_ref().expect("xdp counters");
    assert_eq!(xdp.total.below_threshold, CALLS as u64, "{xdp}");
    assert_eq!(xdp.steered_total(), 0, "{xdp}");
    assert_eq!(counters.reuseport.steered_total(), CALLS as u64, "{counters}");
}

#[test]
fn loopback_reuseport_steering() {
    require_root();
    // A fresh namespace keeps the port free and the test hermetic.
    let ns = NetNs::new("siplb-lo").expect("netns");
    let cpus: Vec<u32> = (0..WORKERS as u32).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let lb_thread = {
        let (stop, cpus) = (stop.clone(), cpus.clone());
        let name = ns.name().to_owned();
        thread::spawn(move || {
            netns::enter(&name).expect("enter netns");
            let addr: SocketAddr = format!("127.0.0.1:{PORT}").parse().unwrap();
            let sockets: Vec<UdpSocket> = (0..WORKERS).map(|_| reuseport_socket(addr)).collect();
            let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|s| s.as_fd()).collect();
            let steering =
                Steering::attach(None, &fds, &cpus, &[PORT], 0, &ShieldPolicy::default()).expect("attach steering");
            let (received, workers) = start_workers(sockets, &cpus, stop.clone());
            tx.send((steering.mode(), received.clone())).unwrap();
            for w in workers {
                w.join().unwrap();
            }
            steering.counters().expect("counters")
        })
    };
    let (mode, received) = rx.recv_timeout(Duration::from_secs(30)).expect("set-up");
    assert_eq!(mode, SteeringMode::ReuseportOnly);
    let ids = call_ids();
    send_from(Some(&ns), "127.0.0.1", PORT, &ids);
    wait_for(&received, CALLS, Duration::from_secs(10));
    stop.store(true, Ordering::Relaxed);
    let counters = lb_thread.join().expect("balancer thread");
    let received = received.lock().unwrap().clone();
    println!("mode: {mode}; {counters}");
    check(&received, &ids);
    assert!(counters.xdp.is_none());
    assert_eq!(counters.reuseport.steered_total(), CALLS as u64, "{counters}");
}

#[test]
fn missing_interface_is_an_error() {
    require_root();
    let s = reuseport_socket("127.0.0.1:0".parse().unwrap());
    let err = Steering::attach(Some("no-such-if0"), &[s.as_fd()], &[0], &[PORT], 0, &ShieldPolicy::default())
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("does not exist"), "{err:#}");
}
