//! The mobility topology: UAs on a client network, sip-lb in a namespace of its own, a farm
//! network behind it. The farm has no route to the client network, so a request for a UA
//! can only reach it through sip-lb (its Path or Record-Route); the UAs reach sip-lb's
//! address and nothing else of the farm.
//!
//! ```text
//!  client ns                      lb ns                                farm ns
//!  UAs 10.203.1.2, .3, ...        sip-lb on 10.203.0.1 (lo, the VIP)   home proxy 10.203.2.2
//!      ---veth--- 10.203.1.1                     10.203.2.1 ---veth--- callers    10.203.2.3, ...
//!  route to the VIP only                                               route to the VIP only
//! ```
//! Forwarding is off in the balancer namespace. Every namespace (and the veths in them)
//! goes on drop; processes started in them must be stopped first (declare them after the
//! [`Edge`]).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{ensure, Context, Result};

use crate::netns::{NetNs, Veth};

/// sip-lb's address, on the balancer namespace's loopback.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 1);

/// The client network's `i`-th UA address.
pub fn client_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 203, 1, 2 + i)
}

/// The farm network's `i`-th address (0: the home proxy).
pub fn farm_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 203, 2, 2 + i)
}

/// The three namespaces, wired.
pub struct Edge {
    pub client: NetNs,
    pub lb: NetNs,
    pub farm: NetNs,
}

impl Edge {
    /// Namespaces `<prefix>c-*`, `<prefix>l-*`, `<prefix>f-*` with `clients` UA addresses and
    /// `farm_hosts` farm addresses.
    pub fn new(prefix: &str, clients: u8, farm_hosts: u8) -> Result<Edge> {
        // SAFETY: no preconditions.
        ensure!(unsafe { libc::geteuid() } == 0, "needs root (network namespaces)");
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let tag = format!("{}{}", std::process::id() % 100_000, SEQ.fetch_add(1, Ordering::Relaxed) % 10);
        let edge = Edge {
            client: NetNs::new(&format!("{prefix}c"))?,
            lb: NetNs::new(&format!("{prefix}l"))?,
            farm: NetNs::new(&format!("{prefix}f"))?,
        };
        edge.wire(prefix, &tag, clients, farm_hosts).context("wiring the edge topology")?;
        Ok(edge)
    }

    fn wire(&self, prefix: &str, tag: &str, clients: u8, farm_hosts: u8) -> Result<()> {
        let (c, l, f) = (&self.client, &self.lb, &self.farm);
        let dev = |side: &str| format!("{prefix}{tag}{side}");
        Veth::new(c, &dev("c"), &format!("{}/24", client_ip(0)), l, &dev("lc"), "10.203.1.1/24")?;
        Veth::new(l, &dev("lf"), "10.203.2.1/24", f, &dev("f"), &format!("{}/24", farm_ip(0)))?;
        for i in 1..clients {
            c.exec(&["ip", "addr", "add", &format!("{}/24", client_ip(i)), "dev", &dev("c")])?;
        }
        for i in 1..farm_hosts {
            f.exec(&["ip", "addr", "add", &format!("{}/24", farm_ip(i)), "dev", &dev("f")])?;
        }
        l.exec(&["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"])?;
        l.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=0"])?;
        c.exec(&["ip", "route", "add", &format!("{VIP}/32"), "via", "10.203.1.1"])?;
        f.exec(&["ip", "route", "add", &format!("{VIP}/32"), "via", "10.203.2.1"])?;
        Ok(())
    }

    /// Whether the farm namespace has a route to `ip`.
    pub fn farm_routes_to(&self, ip: IpAddr) -> bool {
        self.farm.exec(&["ip", "route", "get", &ip.to_string()]).is_ok()
    }
}
