//! Network namespaces and veth pairs for end-to-end tests, removed on drop
//! (also when the test panics). Uses `ip` (iproute2); needs root.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{bail, Context as _};

/// Runs a command, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(out)
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `<prefix>-<pid>-<n>` with its loopback up.
    pub fn new(prefix: &str) -> anyhow::Result<NetNs> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!("{prefix}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = NetNs { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec <ns> <args>`, checked.
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<Output> {
        run(Command::new("ip").args(["netns", "exec", &self.name]).args(args))
    }

    /// A `Command` running `args` inside the namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Moves the calling thread into the namespace (for good: use a thread
    /// dedicated to this namespace). Threads it spawns inherit it.
    pub fn enter(&self) -> anyhow::Result<()> {
        enter(&self.name)
    }
}

/// Moves the calling thread into the named namespace (see [`NetNs::enter`]);
/// for threads that must not own (and so delete) the namespace.
pub fn enter(name: &str) -> anyhow::Result<()> {
    let f = File::open(format!("/run/netns/{name}")).context("opening the netns file")?;
    // SAFETY: valid fd; CLONE_NEWNET only affects this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({name}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace also destroys the veth ends inside it.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A veth pair with one end in each namespace, each with an address, up.
pub struct Veth {
    pub a: String,
    pub b: String,
}

impl Veth {
    /// `a_name` (address `a_cidr`) in `a_ns`, `b_name` (`b_cidr`) in `b_ns`.
    pub fn new(
        a_ns: &NetNs,
        a_name: &str,
        a_cidr: &str,
        b_ns: &NetNs,
        b_name: &str,
        b_cidr: &str,
    ) -> anyhow::Result<Veth> {
        run(Command::new("ip").args([
            "link",
            "add",
            a_name,
            "netns",
            a_ns.name(),
            "type",
            "veth",
            "peer",
            "name",
            b_name,
            "netns",
            b_ns.name(),
        ]))?;
        for (ns, dev, cidr) in [(a_ns, a_name, a_cidr), (b_ns, b_name, b_cidr)] {
            ns.exec(&["ip", "addr", "add", cidr, "dev", dev])?;
            ns.exec(&["ip", "link", "set", dev, "up"])?;
        }
        Ok(Veth { a: a_name.to_owned(), b: b_name.to_owned() })
    }
}
