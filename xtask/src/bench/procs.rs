//! Processes the bench starts (each stopped by its own PID), and what /proc
//! says about them: CPU time (utime+stime) and peak RSS (VmHWM).
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A child with stdout/stderr in `<dir>/<name>.{stdout,stderr}`; killed on drop.
pub struct Child {
    pub name: String,
    child: std::process::Child,
    status: Option<ExitStatus>,
    pub stderr_path: PathBuf,
}

impl Child {
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Self> {
        let stdout_path = dir.join(format!("{name}.stdout"));
        let stderr_path = dir.join(format!("{name}.stderr"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&stdout_path).context("log file")?)
            .stderr(File::create(&stderr_path).context("log file")?);
        // SAFETY: prctl is async-signal-safe. If the bench dies, its children follow.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Self { name: name.into(), child, status: None, stderr_path })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.exited().is_none() {
            // SAFETY: signalling our own child by PID.
            unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
            if self.wait_timeout(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                self.status = self.child.wait().ok();
            }
        }
        self.status
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn fail_if_exited(&mut self) -> Result<()> {
        if let Some(s) = self.exited() {
            let err = self.stderr();
            let tail: Vec<&str> = err.lines().rev().take(8).collect();
            bail!(
                "{} exited early ({s}); stderr ends:\n{}",
                self.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until some socket is bound to UDP `port` in the child's network
/// namespace (from /proc/PID/net/udp).
pub fn wait_udp_bound(port: u16, child: &mut Child, timeout: Duration) -> Result<()> {
    let needle = format!(":{port:04X} ");
    let deadline = Instant::now() + timeout;
    let table_path = format!("/proc/{}/net/udp", child.pid());
    loop {
        let table = std::fs::read_to_string(&table_path).unwrap_or_default();
        if table
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1).is_some_and(|a| format!("{a} ").ends_with(&needle)))
        {
            return Ok(());
        }
        child.fail_if_exited()?;
        if Instant::now() > deadline {
            bail!("{} did not bind UDP port {port} within {timeout:?}", child.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the child's stderr contains `needle`.
pub fn wait_stderr(child: &mut Child, needle: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !child.stderr().contains(needle) {
        child.fail_if_exited()?;
        if Instant::now() > deadline {
            bail!("{} did not log {needle:?} within {timeout:?}", child.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// `pid` and all its descendants (Kamailio forks its children and helpers).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if let Some(f) = stat_fields(p) {
                if let Some(ppid) = f.get(1).and_then(|s| s.parse::<u32>().ok()) {
                    parent_of.push((p, ppid));
                }
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let cur = tree[i];
        tree.extend(parent_of.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    tree
}

/// Fields of /proc/PID/stat after "(comm)": index 0 is state, 1 ppid, 11 utime, 12 stime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// utime+stime of each process (all its threads), in clock ticks.
pub fn cpu_ticks(pids: &[u32]) -> Vec<(u32, u64)> {
    pids.iter()
        .filter_map(|&p| {
            let f = stat_fields(p)?;
            Some((p, f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?))
        })
        .collect()
}

/// CPU seconds used between two `cpu_ticks` snapshots, over processes in both.
pub fn cpu_seconds(before: &[(u32, u64)], after: &[(u32, u64)]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks: u64 =
        after.iter().filter_map(|(p, a)| before.iter().find(|(q, _)| q == p).map(|(_, b)| a.saturating_sub(*b))).sum();
    ticks as f64 / hz
}

/// A point in time for machine-wide CPU accounting: the idle residency of
/// every CPU (cpuidle, exact; /proc/stat's tick sampling undercounts bursty
/// loads about 10x on these VMs) and this process's own CPU time.
#[derive(Clone, Copy, Debug)]
pub struct MachineMark {
    idle_us: u64,
    cpus: usize,
    own_ticks: u64,
    at: Instant,
}

impl MachineMark {
    pub fn now() -> Result<MachineMark> {
        let (idle_us, cpus) = sip_lb_udp::affinity::machine_idle_us()
            .context("no cpuidle residency in /sys/devices/system/cpu/cpu*/cpuidle: cannot measure machine-wide CPU")?;
        let own_ticks = cpu_ticks(&[std::process::id()]).first().map_or(0, |(_, t)| *t);
        Ok(MachineMark { idle_us, cpus, own_ticks, at: Instant::now() })
    }

    /// CPU-seconds the whole machine was busy from `self` to `later`:
    /// CPUs x wall time minus the idle residency accrued meanwhile.
    pub fn busy_s(&self, later: &MachineMark) -> f64 {
        let wall_us = (later.at - self.at).as_secs_f64() * 1e6;
        let idle_us = later.idle_us.saturating_sub(self.idle_us) as f64;
        ((self.cpus as f64 * wall_us - idle_us) / 1e6).max(0.0)
    }

    pub fn wall_s(&self, later: &MachineMark) -> f64 {
        (later.at - self.at).as_secs_f64()
    }
}

/// CPUs' worth of work done by processes other than this one and `measured_s`
/// (the balancer's CPU seconds) between two marks: the other tenants of a
/// shared machine (and SIPp, in call runs), and the kernel's softirq work.
pub fn other_load(before: &MachineMark, after: &MachineMark, measured_s: f64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let own = after.own_ticks.saturating_sub(before.own_ticks) as f64 / hz;
    let wall = before.wall_s(after).max(1e-3);
    ((before.busy_s(after) - own - measured_s) / wall).max(0.0)
}

/// Peak RSS (VmHWM) in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak RSS over a process tree: (largest single process, sum over processes).
/// The sum counts shared memory once per process that touched it.
pub fn tree_hwm_kib(pids: &[u32]) -> (u64, u64) {
    let v: Vec<u64> = pids.iter().filter_map(|&p| vm_hwm_kib(p)).collect();
    (v.iter().copied().max().unwrap_or(0), v.iter().sum())
}
