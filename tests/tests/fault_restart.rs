//! sip-lb killed and restarted under load, with XDP steering attached to a
//! veth end in its network namespace ("Hostile input and faults"):
//! - a client in the peer namespace sends a steady stream of requests to
//!   sip-lb, whose backend sits in sip-lb's namespace;
//! - sip-lb is SIGKILLed: its XDP link goes with its file descriptors, so no
//!   program is left on the interface (`ip -d link show` and `bpftool net`;
//!   bpftool is required, `cargo xtask setup` installs it);
//! - a new sip-lb attaches again (same mode, no fallback, no error) and every
//!   request sent after it answers arrives at the backend exactly once;
//! - after its SIGTERM stop nothing is left on the interface either.
//!
//! Needs root.
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sip_lb_tests::netns::{self, NetNs, Veth};
use sip_lb_tests::process::{scratch_dir, ChildGuard};
use sip_lb_tests::sip::SipRequest;
use sip_lb_tests::sip_lb_binary;

const LB_IP: &str = "10.77.31.1";
const PEER_IP: &str = "10.77.31.2";
const LB_DEV: &str = "slbk0";
const PEER_DEV: &str = "slbk1";
const PORT: u16 = 5060;

/// The Udp lines of /proc/net/snmp in `ns` (receive-buffer and checksum
/// errors tell a kernel drop from a sip-lb one).
fn udp_snmp(ns: &NetNs) -> String {
    ns.exec(&["cat", "/proc/net/snmp"])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.starts_with("Udp:")).collect::<Vec<_>>().join("\n")
        })
        .unwrap_or_default()
}

/// A UDP socket bound in namespace `ns` (the socket keeps its namespace).
fn socket_in(ns: &str, addr: &str) -> Result<UdpSocket> {
    let (ns, addr) = (ns.to_owned(), addr.to_owned());
    thread::spawn(move || -> Result<UdpSocket> {
        netns::enter(&ns)?;
        Ok(UdpSocket::bind(&addr)?)
    })
    .join()
    .expect("socket thread")
}

/// `ip -d link show DEV` in the namespace: (the text, whether it shows XDP).
fn xdp_on(ns: &NetNs, dev: &str) -> Result<(String, bool)> {
    let out = ns.exec(&["ip", "-d", "link", "show", "dev", dev])?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let attached = text.contains("prog/xdp") || text.split_whitespace().any(|w| w.starts_with("xdp"));
    Ok((text, attached))
}

const NEED_BPFTOOL: &str = "bpftool is required by this test (install it with `cargo xtask setup`)";

/// Fails, never skips, when bpftool cannot be run.
fn require_bpftool() -> Result<()> {
    let out = std::process::Command::new("bpftool").arg("version").output().with_context(|| NEED_BPFTOOL)?;
    ensure!(out.status.success(), "{NEED_BPFTOOL}: `bpftool version` failed: {}", out.status);
    Ok(())
}

/// `bpftool net show dev DEV` in the namespace: (the text, its `xdp:`
/// section). A bpftool that cannot run fails the test.
fn bpftool_net(ns: &NetNs, dev: &str) -> Result<(String, String)> {
    let out = ns.command(&["bpftool", "net", "show", "dev", dev]).output().with_context(|| NEED_BPFTOOL)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "{NEED_BPFTOOL}: `bpftool net show dev {dev}` failed ({}):\n{err}", out.status);
    // "xdp:\n<dev>(<ifindex>) driver id N\n\ntc:..." while attached.
    let xdp = text.split("xdp:").nth(1).and_then(|r| r.split("tc:").next()).unwrap_or("").trim().to_owned();
    Ok((text, xdp))
}

/// Waits (up to 3 s) until no XDP program is on `dev`; fails quoting `ip`.
fn assert_detached(ns: &NetNs, dev: &str, when: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (text, attached) = xdp_on(ns, dev)?;
        if !attached {
            let (b, xdp) = bpftool_net(ns, dev)?;
            ensure!(xdp.is_empty(), "{when}: bpftool still shows an XDP program:\n{b}");
            eprintln!("{when}: bpftool net show dev {dev}:\n{}", b.trim());
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{when}: XDP program still on {dev}:\n{text}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// The kit's padded MESSAGE: sip-lb's amplification guard lets its 483
/// readiness answer out.
fn request(from: SocketAddr, call_id: &str, max_forwards: u32) -> String {
    SipRequest::padded_message(from, call_id).max_forwards(max_forwards).build()
}

/// Starts sip-lb in `ns` with XDP on LB_DEV; ready once a Max-Forwards: 0
/// request from the peer namespace is answered with 483.
fn start_lb(ns: &NetNs, peer: &NetNs, backend: SocketAddr, label: &str) -> Result<ChildGuard> {
    let bin = sip_lb_binary()?;
    let mut cmd = ns.command(&[bin.to_str().context("binary path")?]);
    cmd.args(["run", "--listen", &format!("{LB_IP}:{PORT}"), "--backend", &backend.to_string()]);
    // The subject is the CPU-map steering program: the socket data path
    // (--iface alone now means AF_XDP; afxdp_forwarding covers its SIGKILL).
    cmd.args(["--workers", "2", "--iface", LB_DEV, "--datapath", "socket", "--control", "127.0.0.1:5070"]);
    cmd.env("RUST_LOG", "info");
    let mut child = ChildGuard::spawn(label, cmd, &scratch_dir("fault-restart")?)?;
    let probe = socket_in(peer.name(), &format!("{PEER_IP}:0"))?;
    probe.set_read_timeout(Some(Duration::from_millis(100)))?;
    let from = probe.local_addr()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    let mut n = 0;
    while Instant::now() < deadline {
        child.ensure_running()?;
        n += 1;
        probe.send_to(request(from, &format!("ready-{label}-{n}"), 0).as_bytes(), (LB_IP, PORT))?;
        if let Ok(len) = probe.recv(&mut buf) {
            if buf[..len].starts_with(b"SIP/2.0 483") {
                return Ok(child);
            }
        }
    }
    bail!("{label} did not answer within 10 s; stderr:\n{}", child.stderr_tail(30))
}

#[test]
fn sigkill_and_restart_under_load_leave_no_stale_xdp() -> Result<()> {
    // SAFETY: no preconditions.
    ensure!(unsafe { libc::geteuid() } == 0, "needs root (namespaces, XDP)");
    require_bpftool()?;
    let ns = NetNs::new("slb-kill")?;
    let peer = NetNs::new("slb-kpeer")?;
    Veth::new(&ns, LB_DEV, &format!("{LB_IP}/24"), &peer, PEER_DEV, &format!("{PEER_IP}/24"))?;
    // Partial checksums from a local sender do not survive the XDP redirect.
    peer.exec(&["ethtool", "-K", PEER_DEV, "tx", "off"])?;
    let (text, attached) = xdp_on(&ns, LB_DEV)?;
    ensure!(!attached, "XDP on a fresh veth?\n{text}");

    // The backend: in sip-lb's namespace, recording Call-IDs. Its buffer is a
    // real backend's size, so that a test thread starved on a busy machine
    // does not lose datagrams sip-lb delivered (RcvbufErrors at the sink).
    let be = {
        let ns = ns.name().to_owned();
        thread::spawn(move || -> Result<UdpSocket> {
            netns::enter(&ns)?;
            let opts = sip_lb_udp::SocketOptions {
                reuseport: false,
                read_timeout: Duration::from_millis(20),
                ..sip_lb_udp::SocketOptions::DATAPLANE
            };
            Ok(sip_lb_udp::bind(format!("{LB_IP}:0").parse()?, &opts)?)
        })
        .join()
        .expect("backend socket thread")?
    };
    let be_addr = be.local_addr()?;
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let be_thread = {
        let (seen, stop) = (seen.clone(), stop.clone());
        thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = be.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]);
                    if let Some(l) = msg.split("\r\n").find(|l| l.starts_with("Call-ID:")) {
                        seen.lock().unwrap().push(l["Call-ID:".len()..].trim().to_owned());
                    }
                }
            }
        })
    };
    let count = || seen.lock().unwrap().len();

    let mut lb1 = start_lb(&ns, &peer, be_addr, "sip-lb-1")?;
    let (text1, attached) = xdp_on(&ns, LB_DEV)?;
    ensure!(attached, "no XDP program after start:\n{text1}\n{}", lb1.stderr_tail(10));
    // bpftool must see the program too, or its "nothing left" later proves nothing.
    let (b, xdp) = bpftool_net(&ns, LB_DEV)?;
    ensure!(!xdp.is_empty(), "ip shows XDP on {LB_DEV} but bpftool does not:\n{b}");
    eprintln!("sip-lb-1 attached: bpftool net show dev {LB_DEV}:\n{}", b.trim());
    let mode1 = lb1.stderr().lines().find(|l| l.contains("steering:")).map(str::to_owned).unwrap_or_default();

    // Steady load from the peer namespace: request i leaves at t0 + i ms.
    let next = Arc::new(AtomicUsize::new(0));
    let sending = Arc::new(AtomicBool::new(true));
    let client = socket_in(peer.name(), &format!("{PEER_IP}:0"))?;
    let sender = {
        let (next, sending) = (next.clone(), sending.clone());
        thread::spawn(move || -> Result<(usize, Vec<usize>)> {
            let from = client.local_addr()?;
            let t0 = Instant::now();
            let mut i = 0;
            // A send the kernel refused never left: not sip-lb's loss.
            let mut refused = Vec::new();
            while sending.load(Ordering::Relaxed) && i < 20_000 {
                if client.send_to(request(from, &format!("load-{i}"), 70).as_bytes(), (LB_IP, PORT)).is_err() {
                    refused.push(i);
                }
                i += 1;
                next.store(i, Ordering::SeqCst);
                if let Some(w) = (t0 + Duration::from_millis(i as u64)).checked_duration_since(Instant::now()) {
                    thread::sleep(w);
                }
            }
            Ok((i, refused))
        })
    };
    thread::sleep(Duration::from_millis(700));
    let before_kill = count();
    ensure!(before_kill > 300, "only {before_kill} requests through the first sip-lb");

    lb1.signal(libc::SIGKILL)?;
    let status = lb1.wait_timeout(Duration::from_secs(5))?.context("not dead 5 s after SIGKILL")?;
    let killed_at = next.load(Ordering::SeqCst);
    assert_detached(&ns, LB_DEV, "after SIGKILL")?;
    eprintln!("sip-lb-1 killed ({status:?}) after {before_kill} requests arrived; XDP link gone with its fds");
    thread::sleep(Duration::from_millis(200));

    let mut lb2 = start_lb(&ns, &peer, be_addr, "sip-lb-2")?;
    let ready_at = next.load(Ordering::SeqCst);
    let (text2, attached) = xdp_on(&ns, LB_DEV)?;
    ensure!(attached, "no XDP program after the restart:\n{text2}\n{}", lb2.stderr_tail(10));
    let err2 = lb2.stderr();
    let mode2 = err2.lines().find(|l| l.contains("steering:")).map(str::to_owned).unwrap_or_default();
    ensure!(!err2.contains("attach failed") && !err2.contains("ERROR"), "restart did not attach cleanly:\n{err2}");
    let tail = |l: &str| l.split("steering:").nth(1).unwrap_or("").trim().to_owned();
    ensure!(!mode1.is_empty() && tail(&mode1) == tail(&mode2), "mode changed: {mode1:?} -> {mode2:?}");

    thread::sleep(Duration::from_millis(1500));
    sending.store(false, Ordering::Relaxed);
    let (sent, refused) = sender.join().expect("sender")?;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = (count(), Instant::now());
    while Instant::now() < deadline && last.1.elapsed() < Duration::from_millis(300) {
        thread::sleep(Duration::from_millis(20));
        if count() != last.0 {
            last = (count(), Instant::now());
        }
    }
    lb2.ensure_running()?;
    let status = lb2.stop()?;
    let err2 = lb2.stderr();
    ensure!(status.success() && !err2.contains("panicked"), "sip-lb-2 stopped with {status:?}:\n{err2}");
    assert_detached(&ns, LB_DEV, "after SIGTERM")?;
    stop.store(true, Ordering::Relaxed);
    be_thread.join().expect("backend thread");

    // Everything sent after the restarted sip-lb answered arrived exactly once.
    let seen = seen.lock().unwrap().clone();
    let mut times: HashMap<usize, usize> = HashMap::new();
    for id in &seen {
        if let Some(i) = id.strip_prefix("load-").and_then(|n| n.parse().ok()) {
            *times.entry(i).or_default() += 1;
        }
    }
    let dup: Vec<_> = times.iter().filter(|(_, &n)| n > 1).map(|(i, _)| *i).take(10).collect();
    ensure!(dup.is_empty(), "delivered twice: {dup:?}");
    let workers: Vec<&str> = err2
        .lines()
        .filter(|l| l.starts_with("worker ") || l.starts_with("xdp:") || l.starts_with("reuseport:"))
        .collect();
    let missing: Vec<usize> = (ready_at..sent).filter(|i| !times.contains_key(i) && !refused.contains(i)).collect();
    ensure!(
        missing.is_empty(),
        "{} of {} requests sent after the restart lost, e.g. {:?}; refused sends {}; sip-lb-2 summary:\n{}\nbalancer netns UDP counters:\n{}",
        missing.len(),
        sent - ready_at,
        &missing[..missing.len().min(10)],
        refused.len(),
        workers.join("\n"),
        udp_snmp(&ns)
    );
    let lost_in_gap = (killed_at..ready_at).filter(|i| !times.contains_key(i)).count();
    ensure!(workers.iter().filter(|l| l.starts_with("worker ")).count() == 2, "no per-worker summary:\n{err2}");
    let xdp_line = workers.iter().find(|l| l.starts_with("xdp:")).context("no xdp counters in the summary")?;
    let packets: u64 = xdp_line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("packets="))
        .and_then(|n| n.parse().ok())
        .context("xdp packets")?;
    ensure!(packets as usize >= sent - ready_at, "XDP saw {packets} packets, {} were sent to it", sent - ready_at);
    eprintln!(
        "{sent} sent; {} through sip-lb-1; killed at #{killed_at}, restarted sip-lb answered at #{ready_at} ({lost_in_gap} lost in the gap); \
         all {} after it arrived once; mode {}; sip-lb-2 summary:\n{}",
        before_kill,
        sent - ready_at,
        tail(&mode2),
        workers.join("\n")
    );
    Ok(())
}
