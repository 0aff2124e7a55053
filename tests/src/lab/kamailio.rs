//! The farm: Kamailio registrars and redirect servers from Debian's `kamailio` package, run in
//! the foreground (`-DD -E`) in the farm namespace, each in its own process group so that the
//! whole tree (kamailio forks its workers) can be found and killed by PID.

use std::net::Ipv4Addr;
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
/// Shared memory / private memory per process, MB: plenty for a few hundred contacts.
const SHM_MB: &str = "32";
const PKG_MB: &str = "8";

/// One Kamailio instance (main process and its children). Dropping it stops the tree.
pub struct Kamailio {
    pub name: &'static str,
    pub role: Role,
    pub ip: Ipv4Addr,
    guard: ChildGuard,
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
        let rundir = dir.join(format!("{name}.run"));
        std::fs::create_dir_all(&rundir)?;
        let cfg = cfg_dir.join(role.config_file());
        let mut cmd = ns.command(&["kamailio"]);
        cmd.arg("-f")
            .arg(&cfg)
            .args(["-DD", "-E", "-n", "1", "-m", SHM_MB, "-M", PKG_MB])
            .arg("-Y")
            .arg(&rundir)
            .arg("-P")
            .arg(rundir.join("kamailio.pid"))
            .args(["-l", &format!("udp:{}", sip_addr(ip))])
            .args(["-A", &format!("DBURL=\"sqlite://{}\"", db.display())]);
        // Own process group: kamailio's children are found (and killed) by it, and its
        // shutdown signals never reach us.
        cmd.process_group(0);
        let mut guard = ChildGuard::spawn(name, cmd, dir)?;
        guard.set_stop_timeout(Duration::from_secs(3));
        Ok(Kamailio { name, role, ip, guard })
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub fn ensure_running(&mut self) -> Result<()> {
        self.guard.ensure_running()
    }

    /// PIDs of the whole tree (the process group led by the main process).
    pub fn tree(&self) -> Vec<u32> {
        process_group(self.pid())
    }

    pub fn stderr(&self) -> String {
        self.guard.stderr()
    }

    /// Lines `lab <WHAT> ...` that the lab's configs log, e.g. `REGISTER`, `REDIRECT`.
    pub fn logged(&self, what: &str) -> u64 {
        let needle = format!("lab {what} ");
        self.stderr().lines().filter(|l| l.contains(&needle)).count() as u64
    }

    /// SIGTERM to the main process (it stops its children), then SIGKILL to whatever is left
    /// in the group.
    pub fn stop(&mut self) {
        let tree = self.tree();
        let _ = self.guard.stop();
        kill_group(self.pid());
        // Children are reaped by init; give them a moment to disappear.
        let deadline = Instant::now() + Duration::from_secs(2);
        while tree.iter().any(|&p| super::process_alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
    }
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
