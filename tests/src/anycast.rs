//! The scale-out topology (docs/scale-out.md), in network namespaces:
//!
//! ```text
//!   clients 10.151.1.2 ---- .1.1  router (BIRD: eBGP + BFD, ECMP with L4 hash)
//!                           .2.1 ---- 10.151.2.2  node 0 (sip-lb + BIRD)
//!                           .3.1 ---- 10.151.3.2  node 1 (sip-lb + BIRD)
//!                           .4.1 ---- 10.151.4.2, .4.3  farm (two backends)
//! ```
//!
//! Both nodes listen on the VIP 10.151.100.1:5060; sip-lb puts it on its interface `scvip0`
//! while ready and BIRD announces it; the router installs one multipath route over the nodes
//! that announce it. The farm answers the VIP through the router too, so a response may reach
//! either node. Namespace and interface names start with `sc`; everything goes on drop.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bird::{self, Bird};
use crate::control::Control;
use crate::netns::{self, NetNs, Veth};
use crate::process::{scratch_dir, sip_lb_binary, ChildGuard};

pub const VIP: &str = "10.151.100.1";
pub const CLIENT: &str = "10.151.1.2";
pub const FARM: [&str; 2] = ["10.151.4.2", "10.151.4.3"];
/// The interface sip-lb announces the VIP on (in each node's namespace).
pub const VIP_IF: &str = "scvip0";
/// The shared `[security]` secret: a branch signed by one node verifies on the other.
pub const SECRET: &str = "scale-out test secret, the same on every node";
const ROUTER_AS: u32 = 65000;
const NODE_AS: u32 = 65001;

/// The VIP with the SIP port.
pub fn vip() -> SocketAddr {
    SocketAddr::new(VIP.parse().expect("VIP literal"), 5060)
}

/// The farm's backend addresses.
pub fn farm() -> [SocketAddr; 2] {
    FARM.map(|ip| SocketAddr::new(ip.parse().expect("farm literal"), 5060))
}

/// Node `i`'s own address (its uplink).
pub fn node_ip(i: usize) -> String {
    format!("10.151.{}.2", 2 + i)
}

/// Runs `f` on this thread inside namespace `ns`, then returns to the thread's own namespace.
/// Sockets bound and processes spawned by `f` stay in `ns` (a child process inherits the
/// namespace of the thread that forks it, and [`ChildGuard`]'s parent-death signal follows this
/// thread, which lives on).
pub fn within<T>(ns: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let home = File::open("/proc/thread-self/ns/net").context("opening this thread's namespace")?;
    netns::enter(ns)?;
    let r = f();
    // SAFETY: a namespace fd we opened; CLONE_NEWNET affects this thread only.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        // Carrying on in the wrong namespace would make every later step lie.
        panic!("cannot return from namespace {ns}: {}", std::io::Error::last_os_error());
    }
    r
}

/// The namespaces, links and BIRDs of the topology.
pub struct Anycast {
    // Fields drop in order: the BIRDs stop before their namespaces go.
    pub router_bird: Bird,
    pub node_birds: [Bird; 2],
    pub dir: PathBuf,
    pub clients: NetNs,
    pub router: NetNs,
    pub nodes: [NetNs; 2],
    pub farm: NetNs,
}

impl Anycast {
    /// Builds the topology and starts BIRD everywhere (sip-lb not yet).
    pub fn new(label: &str) -> Result<Anycast> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let tag = format!("{}{}", std::process::id() % 100_000, SEQ.fetch_add(1, Ordering::Relaxed) % 10);
        let dir = scratch_dir(label)?;
        let clients = NetNs::new("sc-cl")?;
        let router = NetNs::new("sc-rt")?;
        let nodes = [NetNs::new("sc-n0")?, NetNs::new("sc-n1")?];
        let farm = NetNs::new("sc-fm")?;
        let link = |peer: &NetNs, role: &str, net: u8, host: &str| -> Result<()> {
            Veth::new(
                &router,
                &format!("scr{role}{tag}"),
                &format!("10.151.{net}.1/24"),
                peer,
                &format!("sc{role}{tag}"),
                &format!("10.151.{net}.{host}/24"),
            )?;
            peer.exec(&["ip", "route", "add", "default", "via", &format!("10.151.{net}.1")])?;
            Ok(())
        };
        link(&clients, "c", 1, "2")?;
        link(&nodes[0], "a", 2, "2")?;
        link(&nodes[1], "b", 3, "2")?;
        link(&farm, "f", 4, "2")?;
        farm.exec(&["ip", "addr", "add", &format!("{}/24", FARM[1]), "dev", &format!("scf{tag}")])?;
        // Routing with an L4 hash: each UDP flow (5-tuple) keeps to one node.
        router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1"])?;

        let peers = [("node0", node_ip(0), NODE_AS), ("node1", node_ip(1), NODE_AS)];
        let peer_refs: Vec<(&str, &str, u32)> = peers.iter().map(|(n, a, s)| (*n, a.as_str(), *s)).collect();
        let router_bird =
            Bird::start(&router, "bird-router", &bird::router_config("10.151.1.1", ROUTER_AS, &peer_refs), &dir)?;
        let node_bird = |i: usize| {
            let conf = bird::node_config(&node_ip(i), NODE_AS, &format!("10.151.{}.1", 2 + i), ROUTER_AS, VIP_IF);
            Bird::start(&nodes[i], &format!("bird-node{i}"), &conf, &dir)
        };
        let node_birds = [node_bird(0)?, node_bird(1)?];
        Ok(Anycast { router_bird, node_birds, dir, clients, router, nodes, farm })
    }

    /// Waits until the router's BGP sessions to both nodes are established.
    pub fn wait_bgp(&self, within: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        for p in ["node0", "node1"] {
            self.router_bird.wait_established(p, within.saturating_sub(t0.elapsed()))?;
        }
        Ok(t0.elapsed())
    }

    /// The gateways of the router's kernel route to the VIP (none, one, or the ECMP set).
    pub fn next_hops(&self) -> Result<Vec<String>> {
        let out = self.router.exec(&["ip", "route", "show", VIP])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut hops: Vec<String> = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_owned())
            .collect();
        hops.sort();
        Ok(hops)
    }

    /// Waits until the router's VIP route has exactly `hops` as gateways; how long that took.
    pub fn wait_next_hops(&self, hops: &[String], within: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        let mut want = hops.to_vec();
        want.sort();
        loop {
            let now = self.next_hops()?;
            if now == want {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > within {
                bail!(
                    "router's next hops for {VIP}: {now:?}, not {want:?} within {within:?}; BIRD:\n{}",
                    self.router_bird.birdc(&["show", "route", "all"]).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The config of node `i`: listens on the VIP, announces it, the farm as one pool with
    /// `weights`, the control API on `control`.
    pub fn node_config(control: SocketAddr, weights: [u32; 2]) -> String {
        let [a, b] = farm();
        format!(
            "listen = [\"{}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n[security]\nsecret = \"{SECRET}\"\n\n\
             [cluster]\nvip = [\"{VIP}\"]\ninterface = \"{VIP_IF}\"\n\n[[pool]]\nname = \"farm\"\n\
             backends = [{{ addr = \"{a}\", weight = {} }}, {{ addr = \"{b}\", weight = {} }}]\n",
            vip(),
            weights[0],
            weights[1]
        )
    }

    /// Starts sip-lb on node `i` with [`Anycast::node_config`] and waits until it announces the
    /// VIP (`/cluster`).
    pub fn start_node(&self, i: usize, weights: [u32; 2]) -> Result<Node> {
        let ns = self.nodes[i].name().to_owned();
        let control = within(&ns, crate::ports::free_tcp_addr)?;
        let config = self.dir.join(format!("node{i}.toml"));
        std::fs::write(&config, Anycast::node_config(control, weights))?;
        let bin = sip_lb_binary()?;
        let mut cmd = self.nodes[i].command(&[bin.to_str().context("binary path")?]);
        cmd.arg("run").arg("--config").arg(&config);
        let n = RESTARTS.fetch_add(1, Ordering::Relaxed);
        let child = ChildGuard::spawn(&format!("sip-lb-node{i}-{n}"), cmd, &self.dir)?;
        let mut node = Node { ns, index: i, child, control: Control::new(control), config };
        node.wait_announced(true, Duration::from_secs(20))?;
        Ok(node)
    }
}

static RESTARTS: AtomicU32 = AtomicU32::new(0);

/// A sip-lb process on one node.
pub struct Node {
    pub ns: String,
    pub index: usize,
    pub child: ChildGuard,
    pub control: Control,
    pub config: PathBuf,
}

impl Node {
    /// `GET path` on its control API (inside its namespace).
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        within(&self.ns, || self.control.get(path))
    }

    /// `/cluster`: digest, vips, announced, draining.
    pub fn cluster(&self) -> Result<serde_json::Value> {
        let (status, body) = self.get("/cluster")?;
        if status != 200 {
            bail!("GET /cluster: HTTP {status}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// `/metrics` as text.
    pub fn metrics_text(&self) -> Result<String> {
        Ok(self.get("/metrics")?.1)
    }

    /// Datagrams its workers received (`/stats`).
    pub fn rx(&self) -> Result<u64> {
        within(&self.ns, || Ok(self.control.stats()?.rx_datagrams()))
    }

    /// Waits until `/cluster` says `announced` is `on`.
    pub fn wait_announced(&mut self, on: bool, within_: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            self.child.ensure_running()?;
            if let Ok(c) = self.cluster() {
                if c["announced"] == on {
                    return Ok(());
                }
            }
            if t0.elapsed() > within_ {
                bail!("node {}: announced != {on} within {within_:?}:\n{}", self.index, self.child.stderr_tail(20));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `sip-lb ARGS --control <its API>` inside its namespace.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        let bin = sip_lb_binary()?;
        within(&self.ns, || {
            Ok(std::process::Command::new(&bin)
                .args(args)
                .arg("--control")
                .arg(self.control.addr.to_string())
                .output()?)
        })
    }
}
