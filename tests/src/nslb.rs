//! sip-lb with XDP on a veth, in a namespace of its own, and a peer
//! namespace on the other end for clients and backends: how the shield's
//! XDP stage is tested end to end. Transmit checksum offload is off on the
//! peer end (the veth checksum trap, `docs/shield.md`). Both namespaces, the
//! veth and sip-lb go away on drop. Needs root.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::control::{Control, Stats};
use crate::netns::{self, NetNs, Veth};
use crate::process::{scratch_dir, sip_lb_binary, ChildGuard};
use crate::sink::wait_until;

/// The balancer's end of the veth and the peer's, `<net>.1` and `<net>.2`.
pub struct NsLb {
    /// First, so that it is stopped before the namespaces go.
    pub child: Option<ChildGuard>,
    pub lb_ns: NetNs,
    pub peer_ns: NetNs,
    /// The balancer's interface (XDP attached here) and the peer's.
    pub lb_if: String,
    pub peer_if: String,
    /// `<net>.` : addresses are `net` followed by the host number.
    pub net: String,
    /// The control API, on the balancer namespace's loopback.
    pub control: SocketAddr,
    pub config: PathBuf,
}

impl NsLb {
    /// Namespaces `<prefix>l-*` and `<prefix>p-*`, a veth `<prefix><tag>a/b`
    /// on `net` (e.g. "10.77.52."), and `extra` more peer addresses
    /// (`<net>.3` on).
    pub fn setup(prefix: &str, net: &str, extra: u8) -> Result<NsLb> {
        // SAFETY: no preconditions.
        ensure!(unsafe { libc::geteuid() } == 0, "needs root (namespaces, XDP)");
        let lb_ns = NetNs::new(&format!("{prefix}l"))?;
        let peer_ns = NetNs::new(&format!("{prefix}p"))?;
        let tag = std::process::id() % 100_000;
        let (lb_if, peer_if) = (format!("{prefix}{tag}a"), format!("{prefix}{tag}b"));
        Veth::new(&lb_ns, &lb_if, &format!("{net}1/24"), &peer_ns, &peer_if, &format!("{net}2/24"))?;
        peer_ns.exec(&["ethtool", "-K", &peer_if, "tx", "off"])?;
        for h in 3..3 + extra {
            peer_ns.exec(&["ip", "addr", "add", &format!("{net}{h}/24"), "dev", &peer_if])?;
        }
        let control = crate::ports::free_tcp_addr()?;
        Ok(NsLb { child: None, lb_ns, peer_ns, lb_if, peer_if, net: net.to_owned(), control, config: PathBuf::new() })
    }

    /// `<net><host>`, parsed with `port`.
    pub fn addr(&self, host: u8, port: u16) -> SocketAddr {
        format!("{}{host}:{port}", self.net).parse().expect("address")
    }

    /// Starts sip-lb in the balancer namespace with `config` (written to a
    /// file; `metrics` is set here) and XDP on the veth, with `args` added;
    /// waits until it forwards.
    pub fn start(&mut self, label: &str, config: &str, args: &[&str]) -> Result<()> {
        let dir = scratch_dir(label)?;
        self.config = dir.join("sip-lb.toml");
        std::fs::write(&self.config, format!("metrics = \"{}\"\n{config}", self.control))?;
        let bin = sip_lb_binary()?;
        let mut cmd = self.lb_ns.command(&[bin.to_str().context("binary path")?, "run"]);
        cmd.arg("--config").arg(&self.config).args(["--iface", &self.lb_if]).args(args);
        let child = ChildGuard::spawn("sip-lb", cmd, &dir)?;
        wait_until(Duration::from_secs(30), || child.stderr().contains("sip-lb forwarding"))
            .with_context(|| format!("sip-lb did not start:\n{}", child.stderr_tail(30)))?;
        self.child = Some(child);
        wait_until(Duration::from_secs(10), || self.stats().is_ok()).context("the control API did not answer")?;
        Ok(())
    }

    /// Rewrites the config file (the `metrics` line is kept).
    pub fn write_config(&self, config: &str) -> Result<()> {
        Ok(std::fs::write(&self.config, format!("metrics = \"{}\"\n{config}", self.control))?)
    }

    /// `sip-lb ARGS --control ...`, run inside the balancer namespace.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        let bin = sip_lb_binary()?;
        let mut cmd = self.lb_ns.command(&[bin.to_str().context("binary path")?]);
        cmd.args(args).args(["--control", &self.control.to_string()]);
        Ok(cmd.output()?)
    }

    /// `sip-lb ARGS`, which must succeed: its standard output.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        ensure!(out.status.success(), "sip-lb {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `/stats`, read from inside the balancer namespace.
    pub fn stats(&self) -> Result<Stats> {
        let control = Control::new(self.control);
        self.in_lb(move || control.stats())?
    }

    /// Runs `f` on a thread inside the balancer namespace.
    pub fn in_lb<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        in_ns(self.lb_ns.name(), f)
    }

    /// Runs `f` on a thread inside the peer namespace (sockets it binds stay there).
    pub fn in_peer<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        in_ns(self.peer_ns.name(), f)
    }

    /// Stops sip-lb (SIGTERM, then its exit): its standard error, summary included.
    pub fn stop(&mut self) -> Result<String> {
        let mut child = self.child.take().context("sip-lb not running")?;
        child.signal(libc::SIGTERM)?;
        child.wait_timeout(Duration::from_secs(10))?.context("sip-lb did not stop")?;
        Ok(child.stderr())
    }
}

/// Runs `f` on a thread that entered the namespace `name`.
pub fn in_ns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<T> {
            netns::enter(name)?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace {name} panicked"))?
    })
}
