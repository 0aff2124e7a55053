//! A one-armed topology for the AF_XDP tests: sip-lb's namespace with one
//! veth (its "NIC", AF_XDP on it) to an outside namespace that holds the
//! clients (`.2`) and the farm (`.3`, `.4`) as addresses of the peer end, so
//! requests and responses leave by the interface they arrived on, as on a
//! one-armed balancer. Static neighbour entries on both sides (no ARP/ND in
//! the way), TX checksum offload off on both ends (a partial checksum is
//! "bad" after an XDP redirect). IPv4 `10.77.0.0/24` and IPv6 `fd77::/64`
//! (namespaces keep concurrent tests apart); veth names carry the pid and a
//! counter. Everything goes with the namespaces on drop.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, Result};

use crate::netns::{self, NetNs, Veth};
use crate::sink::{Responder, Sink};
use crate::sip::response_to;

pub const LB4: &str = "10.77.0.1";
pub const CLIENT4: &str = "10.77.0.2";
pub const FARM4: [&str; 2] = ["10.77.0.3", "10.77.0.4"];
pub const LB6: &str = "fd77::1";
pub const CLIENT6: &str = "fd77::2";
pub const FARM6: [&str; 2] = ["fd77::3", "fd77::4"];
/// An outside address with no neighbour entry on the balancer's side.
pub const UNRESOLVED4: &str = "10.77.0.9";

pub struct OneArm {
    pub lb: NetNs,
    pub out: NetNs,
    /// sip-lb's interface (in `lb`).
    pub lb_if: String,
    /// The peer end (in `out`).
    pub out_if: String,
}

fn mac(ns: &NetNs, dev: &str) -> Result<String> {
    let out = ns.exec(&["cat", &format!("/sys/class/net/{dev}/address")])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl OneArm {
    pub fn new() -> Result<OneArm> {
        OneArm::named("afx")
    }

    /// [`OneArm::new`] with namespaces named `{prefix}-lb-…` and `{prefix}-out-…`.
    pub fn named(prefix: &str) -> Result<OneArm> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let tag = format!("{}{}", std::process::id() % 100_000, SEQ.fetch_add(1, Ordering::Relaxed));
        let (lb, out) = (NetNs::new(&format!("{prefix}-lb"))?, NetNs::new(&format!("{prefix}-out"))?);
        let (lb_if, out_if) = (format!("xl{tag}"), format!("xo{tag}"));
        Veth::new(&lb, &lb_if, &format!("{LB4}/24"), &out, &out_if, &format!("{CLIENT4}/24"))?;
        lb.exec(&["ip", "addr", "add", &format!("{LB6}/64"), "dev", &lb_if, "nodad"])?;
        for a in FARM4 {
            out.exec(&["ip", "addr", "add", &format!("{a}/24"), "dev", &out_if])?;
        }
        for a in [CLIENT6].iter().chain(&FARM6) {
            out.exec(&["ip", "addr", "add", &format!("{a}/64"), "dev", &out_if, "nodad"])?;
        }
        for (ns, dev) in [(&lb, &lb_if), (&out, &out_if)] {
            ns.exec(&["ethtool", "-K", dev, "tx", "off"])?;
        }
        let (lb_mac, out_mac) = (mac(&lb, &lb_if)?, mac(&out, &out_if)?);
        for a in [CLIENT4, FARM4[0], FARM4[1], CLIENT6, FARM6[0], FARM6[1]] {
            lb.exec(&["ip", "neigh", "replace", a, "lladdr", &out_mac, "dev", &lb_if, "nud", "permanent"])?;
        }
        for a in [LB4, LB6] {
            out.exec(&["ip", "neigh", "replace", a, "lladdr", &lb_mac, "dev", &out_if, "nud", "permanent"])?;
        }
        Ok(OneArm { lb, out, lb_if, out_if })
    }

    /// One more outside IPv4 address (another client), with a static
    /// neighbour entry on the balancer's side like the others.
    pub fn add_outside4(&self, addr: &str) -> Result<()> {
        self.out.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", &self.out_if])?;
        let out_mac = mac(&self.out, &self.out_if)?;
        self.lb.exec(&["ip", "neigh", "replace", addr, "lladdr", &out_mac, "dev", &self.lb_if, "nud", "permanent"])?;
        Ok(())
    }

    /// Runs `f` on a thread inside the outside namespace (sockets it binds stay there).
    pub fn outside<T: Send + 'static>(&self, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        in_ns(self.out.name(), f)
    }
}

/// Runs `f` on a new thread that has entered namespace `name`.
pub fn in_ns<T: Send + 'static>(name: &str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let name = name.to_owned();
    std::thread::spawn(move || {
        netns::enter(&name)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
}

pub fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().expect("an IP literal"), port)
}

/// A recording sink at `addr` in the outside namespace that answers every
/// request with 200 (a backend), or nothing (`answer` false: a client).
pub fn endpoint(arm: &OneArm, addr: SocketAddr, answer: bool) -> Result<Sink> {
    arm.outside(move || {
        let sock = UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
        let responder: Option<Responder> = answer.then(|| -> Responder {
            Box::new(|bytes, _| {
                let msg = String::from_utf8_lossy(bytes);
                (!msg.starts_with("SIP/")).then(|| response_to(&msg).into_bytes())
            })
        });
        Sink::on(sock, true, responder)
    })
}

/// The `afxdp ...` lines of sip-lb's shutdown summary: (line head, field -> value).
pub fn summary_lines(stderr: &str) -> Vec<(String, std::collections::BTreeMap<String, u64>)> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("afxdp "))
        .map(|l| {
            let (head, rest) = l.split_once(": ").unwrap_or((l, ""));
            let words: Vec<&str> = rest.split_whitespace().collect();
            let mut m = std::collections::BTreeMap::new();
            let mut i = 0;
            while i < words.len() {
                if let Some((k, v)) = words[i].split_once('=') {
                    m.insert(k.to_owned(), v.parse().unwrap_or(0));
                    i += 1;
                } else if i + 1 < words.len() {
                    m.insert(words[i].to_owned(), words[i + 1].parse().unwrap_or(0));
                    i += 2;
                } else {
                    i += 1;
                }
            }
            (head.to_owned(), m)
        })
        .collect()
}

/// Sum of `field` over the summary lines whose head starts with `head`.
pub fn summary_sum(stderr: &str, head: &str, field: &str) -> u64 {
    summary_lines(stderr).iter().filter(|(h, _)| h.starts_with(head)).filter_map(|(_, m)| m.get(field)).sum()
}
