//! A child process that is always cleaned up: killed by PID on drop (SIGTERM, then SIGKILL after
//! a timeout), with stdout and stderr captured to files so failures can quote them.
//!
//! Children also get `PR_SET_PDEATHSIG(SIGTERM)`: if the *thread* that spawned them dies without
//! running destructors (e.g. the test binary is killed), the kernel terminates them. Keep the
//! guard on the thread that spawned it.

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// Default time a child gets between SIGTERM and SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A fresh directory for one test's logs: `$TMPDIR/sip-lb-tests/<label>-<pid>-<n>-<ms>`.
/// It is left in place so a failing test's logs can be read afterwards.
pub fn scratch_dir(label: &str) -> Result<PathBuf> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let dir = std::env::temp_dir().join("sip-lb-tests").join(format!("{label}-{}-{n}-{ms}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

/// Path of the `sip-lb` binary under test. Test crates cannot use `CARGO_BIN_EXE_sip-lb` of
/// another package, so `cargo xtask test` builds it first (by hand: `cargo build -p sip-lb`).
/// Looked up, in order: `$SIP_LB_BIN`; the profile directory of the running executable
/// (`<target>/debug/deps/<test>` -> `<target>/debug/sip-lb`);
/// `$CARGO_TARGET_DIR/debug/sip-lb`; `<workspace>/target/debug/sip-lb`.
pub fn sip_lb_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SIP_LB_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("SIP_LB_BIN={} is not a file", p.display());
        }
        return Ok(p);
    }
    let mut candidates = Vec::new();
    if let Some(mut dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_owned)) {
        if dir.ends_with("deps") {
            dir.pop();
        }
        candidates.push(dir.join("sip-lb"));
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("debug").join("sip-lb"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/sip-lb"));
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => bail!(
            "sip-lb binary not found (looked at {candidates:?}); build it first with \
             `cargo build -p sip-lb` (`cargo xtask test` does), or set SIP_LB_BIN"
        ),
    }
}

/// A spawned child process owned by the test. Dropping it stops the process.
pub struct ChildGuard {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    stop_timeout: Duration,
}

impl ChildGuard {
    /// Spawn `cmd` with stdin closed and stdout/stderr written to `<log_dir>/<name>.stdout` and
    /// `<log_dir>/<name>.stderr`.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Result<Self> {
        let stdout_path = log_dir.join(format!("{name}.stdout"));
        let stderr_path = log_dir.join(format!("{name}.stderr"));
        let stdout = File::create(&stdout_path).with_context(|| format!("create {}", stdout_path.display()))?;
        let stderr = File::create(&stderr_path).with_context(|| format!("create {}", stderr_path.display()))?;
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("spawn {name}: {cmd:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            status: None,
            stdout_path,
            stderr_path,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Time between SIGTERM and SIGKILL in [`stop`](Self::stop) and on drop.
    pub fn set_stop_timeout(&mut self, timeout: Duration) {
        self.stop_timeout = timeout;
    }

    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }

    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Everything the child wrote to stderr so far (lossy UTF-8).
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// The last `lines` lines of stderr.
    pub fn stderr_tail(&self, lines: usize) -> String {
        tail(&self.stderr(), lines)
    }

    /// The last `lines` lines of stdout.
    pub fn stdout_tail(&self, lines: usize) -> String {
        tail(&read_lossy(&self.stdout_path), lines)
    }

    /// The exit status if the child has exited (reaping it), without blocking.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().context("waitpid")?;
        }
        Ok(self.status)
    }

    /// Error (quoting stderr) if the child has already exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.try_status()? {
            None => Ok(()),
            Some(status) => bail!(
                "{} (pid {}) exited early with {}; stderr tail:\n{}",
                self.name,
                self.pid(),
                describe_status(status),
                self.stderr_tail(40)
            ),
        }
    }

    /// Wait up to `timeout` for the child to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send `signal` to the child's PID (no-op once it has been reaped, so a recycled PID is
    /// never hit).
    pub fn signal(&mut self, signal: libc::c_int) -> Result<()> {
        if self.try_status()?.is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.pid()).context("pid out of range")?;
        // SAFETY: plain syscall on the PID of our own unreaped child.
        if unsafe { libc::kill(pid, signal) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(err).context(format!("kill({pid}, {signal})"));
            }
        }
        Ok(())
    }

    /// Stop the child: SIGTERM, wait up to the stop timeout, then SIGKILL. Returns how it ended.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.try_status()? {
            return Ok(status);
        }
        self.signal(libc::SIGTERM)?;
        if let Some(status) = self.wait_timeout(self.stop_timeout)? {
            return Ok(status);
        }
        self.signal(libc::SIGKILL)?;
        let status = self.child.wait().context("waitpid after SIGKILL")?;
        self.status = Some(status);
        Ok(status)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("warning: stopping {} (pid {}): {e:#}", self.name, self.pid());
        }
    }
}

/// "exit code 1" / "signal 15".
pub fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => format!("{status}"),
    }
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_stderr_and_exit() {
        let dir = scratch_dir("process-unit").unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo oops >&2; exit 3"]);
        let mut g = ChildGuard::spawn("sh", cmd, &dir).unwrap();
        let status = g.wait_timeout(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(status.code(), Some(3));
        assert_eq!(g.stderr_tail(1), "oops");
        assert!(g.ensure_running().is_err());
    }

    #[test]
    fn sigkill_after_timeout() {
        let dir = scratch_dir("process-unit").unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "trap '' TERM; while :; do sleep 0.05; done"]);
        let mut g = ChildGuard::spawn("stubborn", cmd, &dir).unwrap();
        g.set_stop_timeout(Duration::from_millis(200));
        std::thread::sleep(Duration::from_millis(100));
        let start = Instant::now();
        let status = g.stop().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(start.elapsed() < Duration::from_secs(3));
    }
}
