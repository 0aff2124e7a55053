//! `NeighbourTable` against a real kernel: two network namespaces joined by
//! a veth pair (`nt0` in A, where the table runs; `nt1` in B), and a second
//! pair (`ot0`/`ot1`) for "routed through another interface". Needs root.
//!
//! Changes made after `start` reach the table through its rtnetlink
//! subscription, so every assertion on them polls with a deadline.

use std::{
    fs::File,
    net::{IpAddr, UdpSocket},
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use sip_lb_afxdp::neigh::{NeighbourTable, NextHop};

const A_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const B_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const GW2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfd];
const OTHER_GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xee];

fn mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Runs `ip -n <ns> <args>`, panicking with its stderr on failure.
fn ip_in(ns: &str, args: &str) {
    let out = Command::new("ip").args(["-n", ns]).args(args.split_whitespace()).output().expect("spawn ip");
    assert!(out.status.success(), "ip -n {ns} {args}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A network namespace named `nt<tag>-<pid>-<n>`, deleted on drop (which
/// also destroys the veth ends in it).
struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Ns {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!("nt{tag}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let out = Command::new("ip").args(["netns", "add", &name]).output().expect("spawn ip");
        assert!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
        let ns = Ns(name);
        ns.ip("link set lo up");
        ns
    }

    fn ip(&self, args: &str) {
        ip_in(&self.0, args)
    }

    /// Runs `f` on a thread that entered this namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(format!("/run/netns/{}", self.0)).expect("open netns");
                // SAFETY: a valid descriptor; CLONE_NEWNET moves only this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("namespace thread panicked")
        })
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A: nt0 10.77.0.1/24 fd77::1/64 (MAC A_MAC), ot0 10.88.0.1/24 fd88::1/64.
/// B: nt1 10.77.0.2/24 fd77::2/64 (MAC B_MAC), ot1 10.88.0.2/24 fd88::2/64.
struct Lab {
    // Declared first: the table (and its thread) go before the namespaces.
    table: NeighbourTable,
    ifindex: u32,
    a: Ns,
    _b: Ns,
}

impl Lab {
    /// The topology, then `before_start` in A, then the table on nt0.
    fn new(before_start: &[&str]) -> Lab {
        // SAFETY: no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "the neighbour table tests create network namespaces and must run as root");
        let (a, b) = (Ns::new("a"), Ns::new("b"));
        for (here, there, name, peer, net) in [(&a, &b, "nt0", "nt1", "77"), (&a, &b, "ot0", "ot1", "88")] {
            here.ip(&format!("link add {name} type veth peer name {peer} netns {}", there.0));
            for (ns, dev, host) in [(here, name, 1), (there, peer, 2)] {
                ns.ip(&format!("addr add 10.{net}.0.{host}/24 dev {dev}"));
                ns.ip(&format!("addr add fd{net}::{host}/64 dev {dev} nodad"));
                ns.ip(&format!("link set {dev} up"));
            }
        }
        a.ip(&format!("link set nt0 address {}", mac(A_MAC)));
        b.ip(&format!("link set nt1 address {}", mac(B_MAC)));
        for cmd in before_start {
            a.ip(cmd);
        }
        let (table, ifindex) = a.run(|| {
            let name = c"nt0";
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert_ne!(ifindex, 0, "nt0 not found");
            (NeighbourTable::start(ifindex).expect("start the table"), ifindex)
        });
        Lab { table, ifindex, a, _b: b }
    }

    fn hop(&self, dst_mac: [u8; 6], src_ip: &str) -> NextHop {
        NextHop { ifindex: self.ifindex, src_mac: A_MAC, dst_mac, src_ip: ip(src_ip) }
    }

    /// Polls `next_hop(dst)` until it equals `want` (5 s deadline).
    fn expect(&self, dst: &str, want: Option<NextHop>) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let got = self.table.next_hop(ip(dst));
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "next_hop({dst}) = {got:?}, want {want:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn static_neighbour_resolves_with_macs_and_source() {
    let lab = Lab::new(&[&format!("neigh replace 10.77.0.2 lladdr {} nud permanent dev nt0", mac(B_MAC))]);
    // Present at start: no polling needed for the first dump.
    assert_eq!(lab.table.next_hop(ip("10.77.0.2")), Some(lab.hop(B_MAC, "10.77.0.1")));
    // Added later: through the subscription.
    lab.a.ip(&format!("neigh replace 10.77.0.20 lladdr {} nud permanent dev nt0", mac(GW_MAC)));
    lab.expect("10.77.0.20", Some(lab.hop(GW_MAC, "10.77.0.1")));
    // Our own address stays in the host.
    assert_eq!(lab.table.next_hop(ip("10.77.0.1")), None);
    // A new interface MAC: the kernel flushes the interface's neighbours
    // (permanent ones too), and so does the mirror; then the new MAC is used.
    let new_mac = [0x02, 0, 0, 0, 0, 0x11];
    lab.a.ip(&format!("link set nt0 address {}", mac(new_mac)));
    lab.expect("10.77.0.2", None);
    lab.a.ip(&format!("neigh replace 10.77.0.2 lladdr {} nud permanent dev nt0", mac(B_MAC)));
    let want = NextHop { src_mac: new_mac, ..lab.hop(B_MAC, "10.77.0.1") };
    lab.expect("10.77.0.2", Some(want));
}

#[test]
fn unresolved_on_link_is_none_until_the_kernel_learns_it() {
    let lab = Lab::new(&[]);
    assert_eq!(lab.table.next_hop(ip("10.77.0.2")), None);
    assert_eq!(lab.table.next_hop(ip("10.77.0.3")), None);
    // The caller's fallback: a datagram through the kernel, which ARPs.
    lab.a.run(|| {
        let s = UdpSocket::bind("10.77.0.1:0").unwrap();
        s.send_to(b"hello", "10.77.0.2:5060").unwrap();
    });
    lab.expect("10.77.0.2", Some(lab.hop(B_MAC, "10.77.0.1")));
    // And an entry written by hand.
    lab.a.ip(&format!("neigh replace 10.77.0.3 lladdr {} nud reachable dev nt0", mac(GW_MAC)));
    lab.expect("10.77.0.3", Some(lab.hop(GW_MAC, "10.77.0.1")));
    // A failed entry is not usable.
    lab.a.ip("neigh replace 10.77.0.3 nud failed dev nt0");
    lab.expect("10.77.0.3", None);
}

#[test]
fn route_via_gateway_gives_the_gateway_mac() {
    let lab = Lab::new(&[
        &format!("neigh replace 10.77.0.254 lladdr {} nud permanent dev nt0", mac(GW_MAC)),
        "route add 198.51.100.0/24 via 10.77.0.254",
    ]);
    assert_eq!(lab.table.next_hop(ip("198.51.100.7")), Some(lab.hop(GW_MAC, "10.77.0.1")));
    // A default route; the route's preferred source wins over the primary address.
    lab.a.ip("addr add 10.77.0.9/32 dev nt0");
    lab.a.ip("route add default via 10.77.0.254 src 10.77.0.9");
    lab.expect("192.0.2.33", Some(lab.hop(GW_MAC, "10.77.0.9")));
    // The more specific route still wins.
    assert_eq!(lab.table.next_hop(ip("198.51.100.7")), Some(lab.hop(GW_MAC, "10.77.0.1")));
}

#[test]
fn ipv6_on_link_gateway_and_learning() {
    let lab = Lab::new(&[
        &format!("neigh replace fd77::fe lladdr {} nud permanent dev nt0", mac(GW_MAC)),
        "-6 route add 2001:db8:1::/48 via fd77::fe",
    ]);
    assert_eq!(lab.table.next_hop(ip("2001:db8:1::5")), Some(lab.hop(GW_MAC, "fd77::1")));
    assert_eq!(lab.table.next_hop(ip("2001:db8:2::5")), None, "no route");
    // On-link, unresolved until a datagram through the kernel makes it solicit.
    assert_eq!(lab.table.next_hop(ip("fd77::2")), None);
    lab.a.run(|| {
        let s = UdpSocket::bind("[fd77::1]:0").unwrap();
        s.send_to(b"hello", "[fd77::2]:5060").unwrap();
    });
    lab.expect("fd77::2", Some(lab.hop(B_MAC, "fd77::1")));
    // A static entry added later, and a route change.
    lab.a.ip(&format!("neigh replace fd77::fd lladdr {} nud permanent dev nt0", mac(GW2_MAC)));
    lab.a.ip("-6 route replace 2001:db8:1::/48 via fd77::fd");
    lab.expect("2001:db8:1::5", Some(lab.hop(GW2_MAC, "fd77::1")));
    lab.a.ip("-6 route del 2001:db8:1::/48");
    lab.expect("2001:db8:1::5", None);
    // The usual IPv6 default route: via the router's link-local address,
    // from our global address.
    lab.a.ip(&format!("neigh replace fe80::1 lladdr {} nud reachable dev nt0", mac(GW_MAC)));
    lab.a.ip("-6 route add default via fe80::1 dev nt0");
    lab.expect("2001:db8:2::5", Some(lab.hop(GW_MAC, "fd77::1")));
}

#[test]
fn route_changes_are_reflected() {
    let lab = Lab::new(&[
        &format!("neigh replace 10.77.0.254 lladdr {} nud permanent dev nt0", mac(GW_MAC)),
        &format!("neigh replace 10.77.0.253 lladdr {} nud permanent dev nt0", mac(GW2_MAC)),
        "route add 203.0.113.0/24 via 10.77.0.254",
    ]);
    assert_eq!(lab.table.next_hop(ip("203.0.113.1")), Some(lab.hop(GW_MAC, "10.77.0.1")));
    lab.a.ip("route replace 203.0.113.0/24 via 10.77.0.253");
    lab.expect("203.0.113.1", Some(lab.hop(GW2_MAC, "10.77.0.1")));
    // Moved to the other interface: no longer ours.
    lab.a.ip("route replace 203.0.113.0/24 via 10.88.0.2 dev ot0");
    lab.expect("203.0.113.1", None);
    lab.a.ip("route replace 203.0.113.0/24 via 10.77.0.254");
    lab.expect("203.0.113.1", Some(lab.hop(GW_MAC, "10.77.0.1")));
    lab.a.ip("route del 203.0.113.0/24");
    lab.expect("203.0.113.1", None);
    // A blackhole route hides a less specific route through us.
    lab.a.ip("route add default via 10.77.0.254");
    lab.expect("203.0.113.1", Some(lab.hop(GW_MAC, "10.77.0.1")));
    lab.a.ip("route add blackhole 203.0.113.0/24");
    lab.expect("203.0.113.1", None);
}

#[test]
fn destination_routed_via_another_interface_is_none() {
    let lab = Lab::new(&[
        &format!("neigh replace 10.88.0.2 lladdr {} nud permanent dev ot0", mac(OTHER_GW_MAC)),
        &format!("neigh replace fd88::2 lladdr {} nud permanent dev ot0", mac(OTHER_GW_MAC)),
        &format!("neigh replace 10.77.0.254 lladdr {} nud permanent dev nt0", mac(GW_MAC)),
        "route add default via 10.77.0.254",
        "route add 192.0.2.0/24 via 10.88.0.2",
        "-6 route add 2001:db8:9::/48 via fd88::2",
    ]);
    assert_eq!(lab.table.next_hop(ip("192.0.2.1")), None);
    assert_eq!(lab.table.next_hop(ip("10.88.0.2")), None, "on-link on the other interface");
    assert_eq!(lab.table.next_hop(ip("2001:db8:9::1")), None);
    assert_eq!(lab.table.next_hop(ip("fd88::2")), None);
    // Anything else takes the default route through us.
    assert_eq!(lab.table.next_hop(ip("192.0.3.1")), Some(lab.hop(GW_MAC, "10.77.0.1")));
}

#[test]
fn start_fails_for_an_unknown_interface() {
    let ns = Ns::new("x");
    let err = ns.run(|| NeighbourTable::start(424242).err().expect("no such interface"));
    assert!(err.to_string().contains("424242"), "{err:#}");
}
