//! The farm: Kamailio from Debian's `kamailio` package, run in the foreground (`-DD -E`) in
//! the farm namespace, each instance in its own process group so that the whole tree
//! (kamailio forks its workers) can be found and killed by PID:
//! - [`Kamailio`]: the lab's registrars and redirect servers (`lab/kamailio/*.cfg`);
//! - [`HomeProxy`]: a registrar and stateful proxy in one (usrloc in memory, Path stored
//!   and used, Record-Route), the home of UAs that reach it through sip-lb (the mobility
//!   tests).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::ChildGuard;
use anyhow::{bail, Context, Result};

use super::netns::{run, NetNs};
use super::topology::{sip_addr, Role};

/// Debian's schema files for usrloc's SQLite tables.
const SCHEMA_DIR: &str = "/usr/share/kamailio/db_sqlite";
/// Debian's module directory.
const MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules";
/// Shared memory / private memory per process, MB: plenty for a few hundred contacts.
const SHM_MB: &str = "32";
const PKG_MB: &str = "8";

/// One Kamailio process tree: the main process, in a process group of its own, and the
/// children it forks. Dropping it stops the whole group.
struct Tree {
    guard: ChildGuard,
}

impl Tree {
    /// `kamailio -f CFG -DD -E ... ARGS` in `ns`, logs in `dir/<name>.std{out,err}`.
    fn spawn(ns: &NetNs, name: &str, cfg: &Path, args: &[String], dir: &Path) -> Result<Tree> {
        let rundir = dir.join(format!("{name}.run"));
        std::fs::create_dir_all(&rundir)?;
        let mut cmd = ns.command(&["kamailio"]);
        cmd.arg("-f")
            .arg(cfg)
            .args(["-DD", "-E", "-n", "1", "-m", SHM_MB, "-M", PKG_MB])
            .arg("-Y")
            .arg(&rundir)
            .arg("-P")
            .arg(rundir.join("kamailio.pid"))
            .args(args);
        // Own process group: kamailio's children are found (and killed) by it, and its
        // shutdown signals never reach us.
        cmd.process_group(0);
        let mut guard = ChildGuard::spawn(name, cmd, dir)?;
        guard.set_stop_timeout(Duration::from_secs(3));
        Ok(Tree { guard })
    }

    fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// PIDs of the whole tree (the process group led by the main process).
    fn members(&self) -> Vec<u32> {
        process_group(self.pid())
    }

    /// The lines `lab <WHAT> ...` that the configs log, e.g. `REGISTER`, `REDIRECT`.
    fn log_lines(&self, what: &str) -> Vec<String> {
        let needle = format!("lab {what} ");
        self.guard.stderr().lines().filter(|l| l.contains(&needle)).map(str::to_owned).collect()
    }

    /// How many of them.
    fn logged(&self, what: &str) -> u64 {
        self.log_lines(what).len() as u64
    }

    /// SIGTERM to the main process (it stops its children), then SIGKILL to whatever is left
    /// in the group.
    fn stop(&mut self) {
        let tree = self.members();
        let _ = self.guard.stop();
        kill_group(self.pid());
        // Children are reaped by init; give them a moment to disappear.
        let deadline = Instant::now() + Duration::from_secs(2);
        while tree.iter().any(|&p| super::process_alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One Kamailio instance of the lab (main process and its children). Dropping it stops the tree.
pub struct Kamailio {
    pub name: &'static str,
    pub role: Role,
    pub ip: Ipv4Addr,
    tree: Tree,
}

impl Kamailio {
    pub fn start(
        ns: &NetNs,
        name: &'static str,
        role: Role,
        ip: Ipv4Addr,
        cfg_dir: &Path,
        db: &Path,
        dir: &Path,
    ) -> Result<Kamailio> {
        let args = [
            "-l".to_owned(),
            format!("udp:{}", sip_addr(ip)),
            "-A".to_owned(),
            format!("DBURL=\"sqlite://{}\"", db.display()),
        ];
        let tree = Tree::spawn(ns, name, &cfg_dir.join(role.config_file()), &args, dir)?;
        Ok(Kamailio { name, role, ip, tree })
    }

    pub fn pid(&self) -> u32 {
        self.tree.pid()
    }

    pub fn ensure_running(&mut self) -> Result<()> {
        self.tree.guard.ensure_running()
    }

    /// PIDs of the whole tree (the process group led by the main process).
    pub fn tree(&self) -> Vec<u32> {
        self.tree.members()
    }

    pub fn stderr(&self) -> String {
        self.tree.guard.stderr()
    }

    /// Lines `lab <WHAT> ...` that the lab's configs log, e.g. `REGISTER`, `REDIRECT`.
    pub fn logged(&self, what: &str) -> u64 {
        self.tree.logged(what)
    }

    /// Stops the tree (see [`Tree::stop`]); dropping it does the same.
    pub fn stop(&mut self) {
        self.tree.stop();
    }
}

/// Kamailio as a farm's home registrar and stateful proxy in one, for UAs that reach it
/// through sip-lb: `save("location")` keeps each contact with the Path it came by (usrloc in
/// memory, `use_path`, `path_mode` 1: stored whether or not the UA said it supports Path,
/// returned to those that did), `lookup("location")` turns that Path into the Route of a
/// request to the user, dialog-creating requests are record-routed, in-dialog ones loose
/// routed, everything relayed by `tm`; RFC 5626 outbound registrations are accepted when the
/// first hop's Path has `ob` (`outbound_mode` 1, `Flow-Timer: 2`). Logs `lab REGISTER`, `lab LOOKUP`, `lab IN-DIALOG`
/// and `lab NOT-FOUND` lines (see [`HomeProxy::logged`]).
pub struct HomeProxy {
    pub addr: SocketAddr,
    tree: Tree,
}

impl HomeProxy {
    /// Starts it in `ns` on UDP `addr` (config and logs in `dir`) and waits until it listens.
    pub fn start(ns: &NetNs, addr: SocketAddr, dir: &Path) -> Result<HomeProxy> {
        let cfg = dir.join("home-proxy.cfg");
        std::fs::write(&cfg, home_proxy_config(addr)).with_context(|| format!("writing {}", cfg.display()))?;
        let mut tree = Tree::spawn(ns, "home-proxy", &cfg, &[], dir)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            tree.guard.ensure_running().context("Kamailio (home proxy) exited at start")?;
            let out = ns.exec(&["ss", "-Hlun"])?;
            if String::from_utf8_lossy(&out.stdout).split_whitespace().any(|w| w == addr.to_string()) {
                return Ok(HomeProxy { addr, tree });
            }
            if Instant::now() >= deadline {
                bail!("Kamailio (home proxy) not listening on {addr} within 10 s:\n{}", tree.guard.stderr_tail(20));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many `lab <WHAT> ` lines it logged.
    pub fn logged(&self, what: &str) -> u64 {
        self.tree.logged(what)
    }

    /// The `lab <WHAT> ` lines it logged, in order.
    pub fn log_lines(&self, what: &str) -> Vec<String> {
        self.tree.log_lines(what)
    }

    /// Waits until it has logged `n` `lab <WHAT> ` lines.
    pub fn wait_logged(&mut self, what: &str, n: u64, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        while self.logged(what) < n {
            self.tree.guard.ensure_running()?;
            if Instant::now() >= deadline {
                bail!(
                    "Kamailio logged {} `lab {what}` lines of {n} within {within:?}:\n{}",
                    self.logged(what),
                    self.stderr_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn stderr_tail(&self, lines: usize) -> String {
        self.tree.guard.stderr_tail(lines)
    }
}

/// The home proxy's script (see [`HomeProxy`]).
pub fn home_proxy_config(addr: SocketAddr) -> String {
    format!(
        r#"#!KAMAILIO
# Home registrar and proxy for the mobility tests (tests/src/lab/kamailio.rs, HomeProxy).
debug=2
log_stderror=yes
log_prefix="{{$mt $ci}} "
disable_tcp=yes
auto_aliases=no
dns=no
rev_dns=no
listen=udp:{addr}
server_header="Server: sip-lb-tests home proxy"
user_agent_header="User-Agent: sip-lb-tests home proxy"

loadpath "{MODULES}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"

# In memory only.
modparam("usrloc", "db_mode", 0)
# Store each contact's Path; lookup() makes it the Route (and next hop) of requests to it.
modparam("registrar", "use_path", 1)
# 1: Path is stored whatever the UA said (sip-lb's path = "force" adds it for UAs that do
# not list it in Supported); it is returned in the 200 only to those that did.
modparam("registrar", "path_mode", 1)
# RFC 5626: a REGISTER with reg-id is accepted when its first hop's Path has `ob` (else 439
# First Hop Lacks Outbound Support); the 200 then says Require: outbound and a Flow-Timer.
modparam("registrar", "outbound_mode", 1)
modparam("registrar", "flow_timer", 2)

request_route {{
	if (!mf_process_maxfwd_header("10")) {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}
	if (has_totag()) {{
		if (loose_route()) {{
			xlog("L_INFO", "lab IN-DIALOG $rm ruri=$ru du=$du\n");
			if (!t_relay()) {{ sl_reply_error(); }}
			exit;
		}}
		if (is_method("ACK")) {{
			if (t_check_trans()) {{ t_relay(); }}
			exit;
		}}
		sl_send_reply("404", "Not Here");
		exit;
	}}
	if (is_method("CANCEL")) {{
		if (t_check_trans()) {{ t_relay(); }}
		exit;
	}}
	if (is_method("REGISTER")) {{
		if (save("location")) {{
			xlog("L_INFO", "lab REGISTER user=$tU contact=$ct path=$hdr(Path) supported=$hdr(Supported)\n");
		}}
		exit;
	}}
	if (is_method("INVITE|SUBSCRIBE|REFER")) {{
		record_route();
	}}
	if (!lookup("location")) {{
		xlog("L_INFO", "lab NOT-FOUND $rm user=$rU\n");
		sl_send_reply("404", "Not Found");
		exit;
	}}
	xlog("L_INFO", "lab LOOKUP $rm user=$rU ruri=$ru du=$du\n");
	if (!t_relay()) {{ sl_reply_error(); }}
	exit;
}}
"#
    )
}

fn kill_group(pgid: u32) {
    if process_group(pgid).is_empty() {
        return;
    }
    if let Ok(pgid) = libc::pid_t::try_from(pgid) {
        // SAFETY: plain syscall; the group is the one we created for this instance.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn process_group(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat_fields(pid).is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z' && state != 'X'))
        .collect()
}

/// (state, process group) from `/proc/<pid>/stat`.
pub fn stat_fields(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Creates the usrloc tables in a fresh SQLite file (Debian's schema files, via `sqlite3`).
pub fn create_location_db(path: &Path) -> Result<()> {
    let _ = std::fs::remove_file(path);
    for file in ["standard-create.sql", "usrloc-create.sql"] {
        let sql = Path::new(SCHEMA_DIR).join(file);
        let text = std::fs::read_to_string(&sql).with_context(|| format!("reading {}", sql.display()))?;
        let mut cmd = Command::new("sqlite3");
        cmd.arg(path).arg(text);
        run(&mut cmd).with_context(|| format!("creating the schema from {}", sql.display()))?;
    }
    // WAL: readers (the redirect servers) never block the writers (the registrars).
    run(Command::new("sqlite3").arg(path).arg("PRAGMA journal_mode=WAL;"))?;
    Ok(())
}

/// Rows in the shared location table.
pub fn location_rows(path: &Path) -> Result<u64> {
    let out = run(Command::new("sqlite3").arg(path).arg("SELECT count(*) FROM location;"))?;
    String::from_utf8_lossy(&out.stdout).trim().parse().context("parsing sqlite3 count")
}

/// The contact registered for `user` in the shared table, if any.
pub fn registered_contacts(path: &Path) -> Result<Vec<(String, String)>> {
    let out = run(Command::new("sqlite3")
        .arg("-separator")
        .arg("\t")
        .arg(path)
        .arg("SELECT username, contact FROM location;"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t').map(|(u, c)| (u.to_owned(), c.to_owned())))
        .collect())
}

/// Debian packages the lab needs, installed with apt-get if missing (printing what it does).
pub fn ensure_packages() -> Result<()> {
    let needed: [(&str, &str); 4] = [
        ("/usr/sbin/kamailio", "kamailio"),
        ("/usr/lib/x86_64-linux-gnu/kamailio/modules/db_sqlite.so", "kamailio-sqlite-modules"),
        ("/usr/bin/sqlite3", "sqlite3"),
        ("/usr/sbin/ethtool", "ethtool"),
    ];
    let missing: Vec<&str> = needed.iter().filter(|(p, _)| !Path::new(p).exists()).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("lab: installing missing Debian packages: apt-get install -y {}", missing.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get (Debian, as root?)")
    };
    if install()?.success() {
        return Ok(());
    }
    // A fresh machine may have no package lists yet.
    println!("lab: apt-get install failed; running apt-get update and trying again");
    let _ = Command::new("apt-get").args(["update", "-qq"]).status();
    let status = install()?;
    if !status.success() {
        bail!("apt-get install -y {} failed ({status})", missing.join(" "));
    }
    Ok(())
}

/// The directory holding the shipped configs (`lab/kamailio` at the workspace root).
pub fn config_dir(root: &Path) -> PathBuf {
    root.join("lab").join("kamailio")
}
