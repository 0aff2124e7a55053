//! Scale-out (docs/scale-out.md): this node puts the `[cluster]` VIPs on an
//! interface it owns while it can serve, and BIRD announces them (`direct` +
//! `bgp`); routers spread flows over the nodes with ECMP. sip-lb never
//! speaks BGP, and nodes share no state: the same config (checked by the
//! [`digest`]) makes every node route a Call-ID alike, and the shared
//! `[security]` secret makes every node verify the others' branches.
//!
//! Two places hold each VIP:
//! - the loopback, from start to exit: the listen socket binds to it and
//!   datagrams still routed here after a withdrawal are accepted and
//!   forwarded (BIRD's `direct` protocol must not watch `lo`);
//! - the announce interface (a TUN device that dies with the process, so a
//!   killed sip-lb is withdrawn at once), only while announced: workers running (the
//!   control plane starts after them), at least one backend eligible, and no
//!   `drain-node` under way.
//!
//! `drain-node` withdraws the VIPs, waits until the workers have received
//! nothing for a quiet period (or a timeout), then stops the process (exit
//! 0): a rolling restart without loss.

pub mod cli;
pub mod digest;
pub mod metrics;
pub mod netlink;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tokio::sync::Notify;

use crate::config::ClusterConfig;
use netlink::Netlink;

/// How often the announcer compares what should be announced with what is.
const TICK: Duration = Duration::from_millis(100);

/// The VIPs of this node and whether they are announced.
pub struct Cluster {
    vips: Vec<IpAddr>,
    interface: String,
    netlink: Mutex<Netlink>,
    /// Keeps the announce interface alive (`Netlink::create_owned_link`).
    _link: std::os::fd::OwnedFd,
    announced: AtomicBool,
    draining: AtomicBool,
    /// Signalled when a drain has finished: the control plane stops.
    drained: Notify,
}

/// How `drain-node` decides that traffic has stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainLimits {
    /// No datagram for this long: done.
    pub quiet: Duration,
    /// Stop after this long even if datagrams still arrive.
    pub timeout: Duration,
}

impl Default for DrainLimits {
    fn default() -> Self {
        // Quiet for longer than SIP's T1 (500 ms): a retransmission still
        // aimed at this node would have shown up.
        DrainLimits { quiet: Duration::from_secs(2), timeout: Duration::from_secs(30) }
    }
}

impl Cluster {
    /// With VIPs configured: creates the announce interface and puts the
    /// VIPs on the loopback (before the listen sockets bind to them).
    /// Nothing is announced yet.
    pub fn start(config: &ClusterConfig) -> Result<Option<Arc<Cluster>>> {
        if config.vips.is_empty() {
            return Ok(None);
        }
        let mut nl = Netlink::open()?;
        let link = nl.create_owned_link(&config.interface)?;
        for &vip in &config.vips {
            nl.add_address("lo", vip).with_context(|| format!("adding VIP {vip} to lo"))?;
        }
        tracing::info!(
            vips = ?config.vips,
            interface = %config.interface,
            "cluster: VIPs held on lo; announced on {} once ready",
            config.interface
        );
        Ok(Some(Arc::new(Cluster {
            vips: config.vips.clone(),
            interface: config.interface.clone(),
            netlink: Mutex::new(nl),
            _link: link,
            announced: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            drained: Notify::new(),
        })))
    }

    pub fn vips(&self) -> &[IpAddr] {
        &self.vips
    }

    pub fn is_announced(&self) -> bool {
        self.announced.load(Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Puts the VIPs on (or takes them off) the announce interface, if that
    /// changes anything. `why` goes to the log.
    pub fn set_announced(&self, on: bool, why: &str) {
        if self.is_announced() == on {
            return;
        }
        let mut nl = self.netlink.lock().unwrap_or_else(|e| e.into_inner());
        let mut ok = true;
        for &vip in &self.vips {
            let r = match on {
                true => nl.add_address(&self.interface, vip),
                false => nl.remove_address(&self.interface, vip),
            };
            if let Err(e) = r {
                tracing::error!(%vip, interface = %self.interface, "cluster: cannot change the VIP: {e:#}");
                ok = false;
            }
        }
        if on && !ok {
            // Not announced; the announcer tries again at its next tick.
            return;
        }
        self.announced.store(on, Ordering::Relaxed);
        match on {
            true => tracing::info!(vips = ?self.vips, "cluster: VIPs announced ({why})"),
            false => tracing::warn!(vips = ?self.vips, "cluster: VIPs withdrawn ({why})"),
        }
    }

    /// Starts a drain: withdraws the VIPs now and from then on. False if one
    /// is already under way.
    pub fn begin_drain(&self) -> bool {
        if self.draining.swap(true, Ordering::Relaxed) {
            return false;
        }
        self.set_announced(false, "drain-node");
        true
    }

    /// Resolves when a drain has finished.
    pub async fn drained(&self) {
        self.drained.notified().await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let nl = self.netlink.get_mut().unwrap_or_else(|e| e.into_inner());
        let mut left = Vec::new();
        for &vip in &self.vips {
            if let Err(e) = nl.remove_address(&self.interface, vip) {
                left.push(format!("{vip} on {}: {e:#}", self.interface));
            }
            if let Err(e) = nl.remove_address("lo", vip) {
                left.push(format!("{vip} on lo: {e:#}"));
            }
        }
        // The interface goes when `_link` closes, right after.
        match left.is_empty() {
            true => tracing::info!("cluster: VIPs removed"),
            false => tracing::error!("cluster: could not clean up: {}", left.join("; ")),
        }
    }
}

/// What should be announced: only a ready node that can forward and is not
/// draining (pure, so the rule reads in one place).
pub fn should_announce(draining: bool, eligible_backends: usize) -> (bool, &'static str) {
    match (draining, eligible_backends) {
        (true, _) => (false, "draining"),
        (false, 0) => (false, "no backend up"),
        (false, _) => (true, "ready: workers running, a backend up"),
    }
}

/// The announcer: follows backend states (every [`TICK`]) until a drain.
pub async fn announce(control: Arc<super::Control>, cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(TICK);
    loop {
        tick.tick().await;
        let (on, why) = should_announce(cluster.is_draining(), control.eligible_backends());
        cluster.set_announced(on, why);
    }
}

/// The drain: the VIPs are already withdrawn; waits until the workers'
/// receive counter stays still for `limits.quiet` (or `limits.timeout`
/// passes), then wakes the control plane to stop.
pub async fn drain(control: Arc<super::Control>, cluster: Arc<Cluster>, limits: DrainLimits) {
    let start = Instant::now();
    let mut last = control.rx_datagrams();
    let mut last_change = start;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let rx = control.rx_datagrams();
        if rx != last {
            (last, last_change) = (rx, now);
        }
        if now - last_change >= limits.quiet {
            tracing::info!(after_ms = (last_change - start).as_millis() as u64, "drain-node: traffic stopped; exiting");
            break;
        }
        if now - start >= limits.timeout {
            tracing::warn!(timeout = ?limits.timeout, "drain-node: datagrams still arriving at the timeout; exiting");
            break;
        }
    }
    cluster.drained.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announces_only_when_ready_and_not_draining() {
        assert!(should_announce(false, 2).0);
        assert!(!should_announce(false, 0).0);
        assert!(!should_announce(true, 2).0);
    }
}
