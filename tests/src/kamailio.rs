//! Kamailio run from a config text on loopback, for the tests that use it as a peer nobody here
//! wrote (a TLS client of sip-lb, a TLS backend behind it). In the foreground (`-DD -E`), in a
//! process group of its own, so that the group (Kamailio forks its workers) is killed by that
//! id on drop.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::ports::wait_udp_bound;
use crate::process::ChildGuard;

/// Where Debian's `kamailio` package puts its modules.
pub const MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules/";

/// A running Kamailio; dropping it stops it and kills what is left of its process group.
pub struct Kamailio(pub ChildGuard);

impl Kamailio {
    /// Writes `config` to `dir/<name>.cfg` and starts Kamailio with it; ready once it has bound
    /// `udp` (a `listen=udp:` of the config; Kamailio binds its TLS listeners before it).
    pub fn start(name: &str, config: &str, udp: SocketAddr, dir: &Path) -> Result<Kamailio> {
        let cfg = dir.join(format!("{name}.cfg"));
        std::fs::write(&cfg, config)?;
        let rundir = dir.join(format!("{name}.run"));
        std::fs::create_dir_all(&rundir)?;
        let mut cmd = Command::new("kamailio");
        cmd.arg("-f").arg(&cfg).args(["-DD", "-E", "-m", "32", "-M", "8", "-Y"]).arg(&rundir);
        cmd.arg("-P").arg(rundir.join("kamailio.pid"));
        cmd.process_group(0);
        let mut k = Kamailio(ChildGuard::spawn(name, cmd, dir)?);
        k.0.set_stop_timeout(Duration::from_secs(3));
        wait_udp_bound(udp.port(), Duration::from_secs(10), || k.0.ensure_running())
            .with_context(|| format!("Kamailio did not start: {}", k.0.stderr_tail(30)))?;
        Ok(k)
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let pgid = self.0.pid();
        let _ = self.0.stop();
        // Its children, by the group this kit created for it (gone already: ESRCH).
        if let Ok(pgid) = libc::pid_t::try_from(pgid) {
            // SAFETY: plain syscall.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

/// Fails with how to get it when Kamailio's `tls` module is not installed.
pub fn ensure_tls_module() -> Result<()> {
    ensure!(
        Path::new(MODULES).join("tls.so").is_file(),
        "Kamailio's tls module is missing (Debian kamailio-tls-modules; `cargo xtask setup` installs it)"
    );
    Ok(())
}
