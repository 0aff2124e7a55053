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

/// The config of a Kamailio relaying statefully: it listens on `udp` and on TLS at `tls` (its
/// `tls` module configured by `tls_cfg`), loads tm, sl, pv, maxfwd and `modules`, answers 483
/// past 10 hops, runs `route` (script statements that set where to, e.g. `$du`) and `t_relay`s.
pub fn tls_relay_config(udp: SocketAddr, tls: SocketAddr, tls_cfg: &Path, modules: &[&str], route: &str) -> String {
    let extra: String = modules.iter().map(|m| format!("loadmodule \"{m}.so\"\n")).collect();
    format!(
        r#"#!KAMAILIO
debug=2
log_stderror=yes
auto_aliases=no
dns=no
rev_dns=no
# One UDP worker: two may relay a call's 180 and 200 out of order (seen under load:
# SIPp's UAC got the 180 after the 200).
children=1
tcp_children=2
enable_tls=yes
listen=udp:{udp}
listen=tls:{tls}

loadpath "{MODULES}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
{extra}loadmodule "tls.so"
modparam("tls", "config", "{cfg}")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
{route}
    if (!t_relay()) {{ sl_reply_error(); }}
    exit;
}}
"#,
        cfg = tls_cfg.display()
    )
}
