//! The veth checksum trap (issue 14), as a new user meets it: sip-lb with XDP
//! on a veth whose peer sends from a local socket with transmit checksum
//! offload left on. The kernel drops the datagrams for bad checksums
//! (`Udp: InCsumErrors`); sip-lb must say so in its log, once, with the fix,
//! and export the counter. Needs root.
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::netns::{NetNs, Veth};
use sip_lb_tests::ports::free_tcp_addr;
use sip_lb_tests::sink::wait_until;

const LB_IP: &str = "10.77.41.1";
const PEER_IP: &str = "10.77.41.2";

#[test]
fn checksum_errors_behind_xdp_are_explained_once() -> Result<()> {
    // SAFETY: no preconditions.
    ensure!(unsafe { libc::geteuid() } == 0, "needs root (namespaces, XDP)");
    let lb_ns = NetNs::new("slb-csum")?;
    let peer = NetNs::new("slb-csump")?;
    let tag = std::process::id() % 10_000;
    let (lb_if, peer_if) = (format!("cs{tag}a"), format!("cs{tag}b"));
    Veth::new(&lb_ns, &lb_if, &format!("{LB_IP}/24"), &peer, &peer_if, &format!("{PEER_IP}/24"))?;
    // Deliberately NOT `ethtool -K <peer> tx off`: that is the trap.

    // sip-lb inside its namespace; its control API on the namespace's loopback.
    let control = free_tcp_addr()?;
    let listen: SocketAddr = format!("{LB_IP}:5060").parse()?;
    let bin = sip_lb_tests::sip_lb_binary()?;
    let dir = sip_lb_tests::process::scratch_dir("csum-trap")?;
    let mut cmd = lb_ns.command(&[bin.to_str().context("binary path")?]);
    cmd.args(["run", "--listen", &listen.to_string(), "--backend", "10.77.41.9:5060", "--workers", "1"]);
    cmd.args(["--iface", &lb_if, "--datapath", "socket", "--xdp-redirect-above", "0"]);
    // The worker on CPU 0 and the sender (below) on CPU 1: every datagram
    // is received on CPU 1 and redirected through the CPU map, which is
    // what loses the partial checksum. A datagram that happened to arrive
    // on the worker's own CPU would be passed locally, checksum intact (the
    // test was flaky under load, when `--pin auto` declined to pin).
    cmd.args(["--pin", "on"]);
    cmd.args(["--control", &control.to_string()]);
    let mut lb = sip_lb_tests::process::ChildGuard::spawn("sip-lb", cmd, &dir)?;
    wait_until(Duration::from_secs(20), || lb.stderr().contains("sip-lb forwarding"))
        .with_context(|| format!("sip-lb did not start:\n{}", lb.stderr_tail(20)))?;

    // A local sender in the peer namespace: partial checksums.
    ensure!(sip_lb_udp::affinity::cpu_count() >= 2, "the trap needs a second CPU to redirect from");
    let send = peer
        .command(&[
            "taskset",
            "-c",
            "1",
            "python3",
            "-c",
            "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             for i in range(50):\n s.sendto(('INVITE sip:a@b SIP/2.0\\r\\nVia: SIP/2.0/UDP 10.77.41.2:5070;branch=z9hG4bK%d\\r\\n\
             Call-ID: csum-%d@x\\r\\nCSeq: 1 INVITE\\r\\nMax-Forwards: 70\\r\\nContent-Length: 0\\r\\n\\r\\n' % (i, i)).encode(), ('10.77.41.1', 5060))",
        ])
        .status()?;
    ensure!(send.success(), "sender failed: {send}");

    let warned = |s: &str| s.contains("InCsumErrors") && s.contains("ethtool -K");
    wait_until(Duration::from_secs(5), || warned(&lb.stderr()))
        .with_context(|| format!("no checksum warning:\n{}", lb.stderr_tail(20)))?;
    let text = lb.stderr();
    ensure!(text.matches("ethtool -K").count() == 1, "warned more than once:\n{text}");
    // The counter is exported (read inside the namespace, where the API listens).
    let metrics = lb_ns.exec(&[
        "python3",
        "-c",
        &format!("import urllib.request;print(urllib.request.urlopen('http://{control}/metrics').read().decode())"),
    ])?;
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let line =
        metrics.lines().find(|l| l.starts_with("sip_lb_kernel_udp_in_csum_errors_total")).context("no counter")?;
    let n: u64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).context("counter value")?;
    ensure!(n > 0, "{line}");
    // The datagrams never reached sip-lb.
    lb.signal(libc::SIGTERM)?;
    lb.wait_timeout(Duration::from_secs(5))?.context("sip-lb did not stop")?;
    let summary = lb.stderr();
    ensure!(summary.contains("worker 0: rx 0 "), "sip-lb received some after all:\n{summary}");
    Ok(())
}
