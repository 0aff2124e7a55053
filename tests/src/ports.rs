//! Free UDP ports on loopback, and waiting until some process has bound one.
//!
//! A port is "free" when the kernel hands it out for `bind(127.0.0.1:0)`; we read it and drop the
//! socket. Another process could take it before the child binds it, but on a test machine that
//! race is rare, and [`wait_udp_bound`] turns it into a clear error instead of a hang.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// One free UDP port on 127.0.0.1.
pub fn free_udp_port() -> Result<u16> {
    Ok(free_udp_ports(1)?[0])
}

/// `n` distinct free UDP ports on 127.0.0.1. All sockets stay open until every port is chosen, so
/// the kernel cannot hand out the same port twice.
pub fn free_udp_ports(n: usize) -> Result<Vec<u16>> {
    let mut sockets = Vec::with_capacity(n);
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).context("bind 127.0.0.1:0")?;
        ports.push(s.local_addr()?.port());
        sockets.push(s);
    }
    Ok(ports)
}

/// `n` distinct free loopback UDP addresses.
pub fn free_udp_addrs(n: usize) -> Result<Vec<SocketAddr>> {
    Ok(free_udp_ports(n)?.into_iter().map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p))).collect())
}

/// One free loopback UDP address.
pub fn free_udp_addr() -> Result<SocketAddr> {
    Ok(free_udp_addrs(1)?[0])
}

/// A free UDP port of `ip` ("127.0.0.2", "::1", ...), bound and released.
pub fn free_udp_addr_on(ip: std::net::IpAddr) -> Result<SocketAddr> {
    let s = UdpSocket::bind((ip, 0)).with_context(|| format!("bind {ip}:0"))?;
    Ok(s.local_addr()?)
}

/// A free TCP port on 127.0.0.1 (for the control API).
pub fn free_tcp_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind tcp 127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// A free TCP port of `ip` ("::1", ...), bound and released.
pub fn free_tcp_addr_on(ip: std::net::IpAddr) -> Result<SocketAddr> {
    let l = TcpListener::bind((ip, 0)).with_context(|| format!("bind tcp {ip}:0"))?;
    Ok(l.local_addr()?)
}

/// Local UDP ports currently bound in this network namespace, IPv4 or IPv6, any address
/// (from `/proc/net/udp` and `/proc/net/udp6`).
pub fn bound_udp_ports() -> Result<BTreeSet<u16>> {
    // thread-self: the calling thread's network namespace (a test thread
    // may have entered another one); /proc/net is the main thread's.
    let mut ports =
        parse_proc_net_udp(&std::fs::read_to_string("/proc/thread-self/net/udp").context("read /proc/net/udp")?);
    // Absent when IPv6 is disabled.
    if let Ok(text) = std::fs::read_to_string("/proc/thread-self/net/udp6") {
        ports.extend(parse_proc_net_udp(&text));
    }
    Ok(ports)
}

fn parse_proc_net_udp(text: &str) -> BTreeSet<u16> {
    // "  sl  local_address rem_address ..." then "   0: 0100007F:13C4 00000000:0000 ...";
    // udp6 has 32 hex digits before the colon.
    text.lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter_map(|local| local.split_once(':'))
        .filter_map(|(_, port)| u16::from_str_radix(port, 16).ok())
        .collect()
}

/// Wait until some socket is bound to UDP `port`, polling `/proc/net/udp` every 20 ms.
/// `still_alive` is called on each poll so the caller can fail fast when its child has exited.
pub fn wait_udp_bound(port: u16, timeout: Duration, mut still_alive: impl FnMut() -> Result<()>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if bound_udp_ports()?.contains(&port) {
            return Ok(());
        }
        still_alive()?;
        if Instant::now() >= deadline {
            bail!("nothing bound UDP port {port} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Local TCP ports in LISTEN state in this network namespace, IPv4 or IPv6 (from
/// `/proc/net/tcp` and `/proc/net/tcp6`; state 0A is LISTEN).
pub fn listening_tcp_ports() -> Result<BTreeSet<u16>> {
    let mut out = BTreeSet::new();
    for f in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if let (Some(local), Some(&"0A")) = (cols.get(1), cols.get(3)) {
                if let Some(p) = local.split_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok()) {
                    out.insert(p);
                }
            }
        }
    }
    Ok(out)
}

/// Wait until some socket listens on TCP `port` (polling every 20 ms), like [`wait_udp_bound`].
pub fn wait_tcp_listening(port: u16, timeout: Duration, mut still_alive: impl FnMut() -> Result<()>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if listening_tcp_ports()?.contains(&port) {
            return Ok(());
        }
        still_alive()?;
        if Instant::now() >= deadline {
            bail!("nothing listens on TCP port {port} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_nonzero() {
        let ports = free_udp_ports(8).unwrap();
        let set: BTreeSet<_> = ports.iter().copied().collect();
        assert_eq!(set.len(), 8);
        assert!(!set.contains(&0));
    }

    #[test]
    fn sees_a_bound_port() {
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = s.local_addr().unwrap().port();
        wait_udp_bound(port, Duration::from_secs(1), || Ok(())).unwrap();
    }

    #[test]
    fn parses_proc_net_udp() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                    \x20 123: 0100007F:13C4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0 0\n";
        assert_eq!(parse_proc_net_udp(text), BTreeSet::from([5060]));
    }
}
