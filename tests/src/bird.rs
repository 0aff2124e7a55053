//! BIRD 2 (Debian `bird2`) for the scale-out tests: one `bird -f` per network namespace with
//! its own config file and control socket in the test's scratch directory, stopped by PID, and
//! the configs docs/scale-out.md shows: an ECMP router (`merge paths`, BFD) and nodes that
//! announce what sip-lb puts on its VIP interface (`direct` + `bgp`, BFD).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns::NetNs;
use crate::process::ChildGuard;

/// BFD timers: 100 ms, 3 missed -> down in about 300 ms.
pub const BFD: &str = "protocol bfd {\n  interface \"*\" {\n    min rx interval 100 ms;\n    min tx interval 100 ms;\n    multiplier 3;\n  };\n}\n";

/// The ECMP router: learns the VIP from every node over eBGP (with BFD) and installs all the
/// equal paths in the kernel as one multipath route (`merge paths`). `peers`: (name, address,
/// AS) of each node.
pub fn router_config(router_id: &str, local_as: u32, peers: &[(&str, &str, u32)]) -> String {
    let mut c = format!(
        "router id {router_id};\nlog stderr all;\nprotocol device {{ scan time 1; }}\n\
         protocol kernel {{\n  ipv4 {{ import none; export all; }};\n  merge paths on;\n}}\n{BFD}\
         template bgp node {{\n  local as {local_as};\n  ipv4 {{ import all; export none; }};\n  bfd on;\n  \
         hold time 3;\n  connect retry time 1;\n}}\n"
    );
    for (name, addr, asn) in peers {
        c += &format!("protocol bgp {name} from node {{ neighbor {addr} as {asn}; }}\n");
    }
    c
}

/// A sip-lb node: announces the host routes of `vip_interface` (the VIPs sip-lb puts there
/// while it is ready) to its router, nothing else, and takes no routes.
pub fn node_config(router_id: &str, local_as: u32, peer: &str, peer_as: u32, vip_interface: &str) -> String {
    format!(
        "router id {router_id};\nlog stderr all;\nprotocol device {{ scan time 1; }}\n\
         protocol direct vip {{\n  ipv4;\n  interface \"{vip_interface}\";\n}}\n{BFD}\
         protocol bgp uplink {{\n  local as {local_as};\n  neighbor {peer} as {peer_as};\n  \
         ipv4 {{ import none; export where source = RTS_DEVICE; }};\n  bfd on;\n  hold time 3;\n  \
         connect retry time 1;\n}}\n"
    )
}

/// A running `bird -f` in a namespace.
pub struct Bird {
    pub name: String,
    socket: PathBuf,
    pub child: ChildGuard,
}

impl Bird {
    /// Writes `<dir>/<name>.conf`, starts BIRD in `ns` with the control socket
    /// `<dir>/<name>.ctl`, and waits until `birdc` answers.
    pub fn start(ns: &NetNs, name: &str, config: &str, dir: &Path) -> Result<Bird> {
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(&conf, config).with_context(|| format!("write {}", conf.display()))?;
        let socket = dir.join(format!("{name}.ctl"));
        let (c, s) = (conf.display().to_string(), socket.display().to_string());
        let cmd = ns.command(&["bird", "-f", "-c", &c, "-s", &s]);
        let mut child = ChildGuard::spawn(name, cmd, dir)?;
        child.set_stop_timeout(Duration::from_secs(2));
        let bird = Bird { name: name.to_owned(), socket, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while bird.birdc(&["show", "status"]).is_err() {
            bird.child_ensure_running()?;
            if Instant::now() >= deadline {
                bail!("{name}: birdc does not answer; stderr:\n{}", bird.child.stderr_tail(20));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(bird)
    }

    fn child_ensure_running(&self) -> Result<()> {
        // ChildGuard::ensure_running needs &mut; a dead BIRD shows in its stderr.
        let err = self.child.stderr();
        if err.contains("<ERR>") || err.contains("<FATAL>") {
            bail!("{} failed:\n{}", self.name, crate::process::tail(&err, 20));
        }
        Ok(())
    }

    /// Sends `signal` to BIRD (SIGSTOP: a host gone silent, as BFD sees it).
    pub fn child_signal(&self, signal: libc::c_int) -> Result<()> {
        // SAFETY: the PID of our own child, not reaped while the guard lives.
        if unsafe { libc::kill(self.child.pid() as libc::pid_t, signal) } != 0 {
            bail!("kill({}, {signal}): {}", self.child.pid(), std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// `birdc -s <socket> ARGS` (the control socket is a file: no namespace needed).
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("birdc").arg("-s").arg(&self.socket).args(args).output().context("spawning birdc")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || text.contains("Unable to connect") {
            bail!("birdc {args:?}: {}{}", text, String::from_utf8_lossy(&out.stderr));
        }
        Ok(text)
    }

    /// Waits until BGP protocol `protocol` is Established; how long that took.
    pub fn wait_established(&self, protocol: &str, within: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            let text = self.birdc(&["show", "protocols", protocol])?;
            if text.contains("Established") {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > within {
                bail!("{}: BGP {protocol} not established within {within:?}:\n{text}", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
