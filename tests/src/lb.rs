//! sip-lb under test: started from a config (TOML text written to a scratch directory) and/or
//! command-line flags, ready once its control API answers and every listen address is bound
//! (no fixed sleeps). Dropping it stops it and prints the tail of its log, which the test
//! harness shows when the test fails.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::control::Control;
use crate::ports::{bound_udp_ports, free_tcp_addr};
use crate::process::{describe_status, scratch_dir, sip_lb_binary, ChildGuard};
use crate::sink::{settle, Backend};

/// A `[health]` body that decides within a second: probe every 200 ms, 2 misses down, 2
/// answers up.
pub const FAST_HEALTH: &str = "interval_ms = 200\ntimeout_ms = 150\nfailures = 2\nsuccesses = 2\n";

/// A config with two workers, the control API on `control` and one pool `farm` of the given
/// (addr, weight) backends; `health` is the body of a `[health]` section (none: no probing).
pub fn pool_config(
    listen: SocketAddr,
    control: SocketAddr,
    backends: &[(SocketAddr, u32)],
    health: Option<&str>,
) -> String {
    let list: Vec<String> = backends.iter().map(|(a, w)| format!("{{ addr = \"{a}\", weight = {w} }}")).collect();
    let mut text = format!(
        "listen = [\"{listen}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n[[pool]]\nname = \"farm\"\nbackends = [{}]\n",
        list.join(", ")
    );
    if let Some(h) = health {
        text += &format!("\n[health]\n{h}\n");
    }
    text
}

/// How long sip-lb gets to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What to start: `sip-lb run [--config FILE] [--listen A]... [--control C] ARGS...`.
pub struct Launch {
    label: String,
    config: Option<String>,
    listen: Vec<SocketAddr>,
    listen_flags: bool,
    control: Option<SocketAddr>,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Launch {
    /// From flags: each of `listen` is passed as `--listen`, and the control API goes to a free
    /// port (`--control`) unless [`control`](Self::control) names one.
    pub fn flags(label: &str, listen: &[SocketAddr]) -> Launch {
        Launch {
            label: label.to_owned(),
            config: None,
            listen: listen.to_vec(),
            listen_flags: true,
            control: None,
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// From a config file with this text; it must set `listen` to `listen` and `metrics` to
    /// `control` (sip-lb reads them from the file; the launcher waits on them).
    pub fn config(label: &str, text: &str, listen: &[SocketAddr], control: SocketAddr) -> Launch {
        Launch {
            label: label.to_owned(),
            config: Some(text.to_owned()),
            listen: listen.to_vec(),
            listen_flags: false,
            control: Some(control),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The control API address (with [`flags`](Self::flags)).
    pub fn control(mut self, addr: SocketAddr) -> Launch {
        self.control = Some(addr);
        self
    }

    /// Extra arguments after `run`.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Launch {
        self.args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Spawns sip-lb and waits (up to [`START_TIMEOUT`]) until `GET /stats` answers 200 and
    /// every listen port is bound.
    pub fn start(self) -> Result<SipLb> {
        let dir = scratch_dir(&self.label)?;
        let control = match self.control {
            Some(c) => c,
            None => free_tcp_addr()?,
        };
        let bin = sip_lb_binary()?;
        let mut cmd = Command::new(&bin);
        cmd.arg("run");
        let config = match &self.config {
            Some(text) => {
                let path = dir.join("sip-lb.toml");
                std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
                cmd.arg("--config").arg(&path);
                Some(path)
            }
            None => None,
        };
        if self.listen_flags {
            for l in &self.listen {
                cmd.arg("--listen").arg(l.to_string());
            }
        }
        if self.config.is_none() || self.control.is_none() {
            cmd.arg("--control").arg(control.to_string());
        }
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = ChildGuard::spawn("sip-lb", cmd, &dir)?;
        let mut lb =
            SipLb { addr: self.listen[0], listen: self.listen, control: Control::new(control), config, dir, child };
        lb.wait_ready().with_context(|| format!("starting {} ({})", bin.display(), self.label))?;
        Ok(lb)
    }
}

/// A running sip-lb.
pub struct SipLb {
    /// The first listen address.
    pub addr: SocketAddr,
    pub listen: Vec<SocketAddr>,
    pub control: Control,
    /// The config file, when started from one (rewrite it, then reload).
    pub config: Option<PathBuf>,
    /// Its scratch directory (logs, config).
    pub dir: PathBuf,
    pub child: ChildGuard,
}

impl SipLb {
    /// sip-lb on a free port with [`pool_config`] for `backends` (weight 1 each).
    pub fn pool(label: &str, backends: &[SocketAddr], health: Option<&str>) -> Result<SipLb> {
        let (listen, control) = (crate::ports::free_udp_addr()?, free_tcp_addr()?);
        let weights: Vec<_> = backends.iter().map(|&a| (a, 1)).collect();
        Launch::config(label, &pool_config(listen, control, &weights, health), &[listen], control).start()
    }

    /// Rewrites the config file with [`pool_config`] for this instance's addresses.
    pub fn write_pool(&self, backends: &[(SocketAddr, u32)], health: Option<&str>) -> Result<()> {
        let text = pool_config(self.addr, self.control.addr, backends, health);
        std::fs::write(self.config_path(), text).context("rewriting the config")
    }

    /// Waits until sip-lb has read `sent` datagrams and sent each on (`/stats`: rx, and tx plus
    /// tx errors), then until every backend not in `skip` has received all that `/backends`
    /// says sip-lb forwarded to it. `skip`: backends killed meanwhile, whose count sip-lb's
    /// cannot match; they get a short quiet period instead.
    pub fn wait_delivered(&self, sent: u64, backends: &[&Backend], skip: &[usize]) -> Result<()> {
        let within = Duration::from_secs(5);
        self.control.wait_stats(within, &format!("sip-lb read and sent on {sent} datagrams"), |s| {
            s.rx_datagrams() >= sent && s.workers.iter().map(|w| w.tx_datagrams + w.tx_errors).sum::<u64>() >= sent
        })?;
        let deadline = Instant::now() + within;
        loop {
            let per = self.control.backends()?;
            let short: Vec<String> = backends
                .iter()
                .enumerate()
                .filter(|(i, _)| !skip.contains(i))
                .filter_map(|(_, b)| {
                    let want = per.iter().find(|p| p.addr == b.addr).map_or(0, |p| p.requests);
                    (b.count() as u64 != want).then(|| format!("{} got {} of {want}", b.addr, b.count()))
                })
                .collect();
            if short.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                bail!("not delivered within {within:?}: {short:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !skip.is_empty() {
            let quiet: Vec<&Backend> = skip.iter().map(|&i| backends[i]).collect();
            settle(&quiet, Duration::from_millis(100));
        }
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.child.ensure_running()?;
            let api = self.control.get("/stats");
            let bound = bound_udp_ports()?;
            let unbound: Vec<_> = self.listen.iter().filter(|a| !bound.contains(&a.port())).collect();
            if matches!(api, Ok((200, _))) && unbound.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "not ready within {START_TIMEOUT:?}: control API {}: {:?}; listen ports not bound: {unbound:?}; \
                     stderr tail:\n{}",
                    self.control.addr,
                    api.map(|(s, _)| s),
                    self.child.stderr_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The config file (panics if started from flags only).
    pub fn config_path(&self) -> &PathBuf {
        self.config.as_ref().expect("sip-lb was started without a config file")
    }

    /// Runs `sip-lb ARGS --control <this instance>`.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Ok(Command::new(sip_lb_binary()?).args(args).arg("--control").arg(self.control.addr.to_string()).output()?)
    }

    /// The state of `addr` in `/backends`.
    pub fn state_of(&self, addr: SocketAddr) -> Result<String> {
        Ok(self.control.backend(addr)?.state)
    }

    /// Waits until `/backends` shows `state` for `addr`; how long that took.
    pub fn wait_state(&self, addr: SocketAddr, state: &str, within: Duration) -> Result<Duration> {
        self.control.wait_state(addr, state, within).with_context(|| format!("stderr:\n{}", self.child.stderr_tail(20)))
    }

    /// Waits until sip-lb has read `n` datagrams in all (`/stats`, summed over workers).
    pub fn wait_rx(&self, n: u64, within: Duration) -> Result<()> {
        self.control.wait_stats(within, &format!("sip-lb read {n} datagrams"), |s| s.rx_datagrams() >= n)?;
        Ok(())
    }

    /// Stops sip-lb with SIGTERM and reads its shutdown summary; fails on a panic or an
    /// unsuccessful exit.
    pub fn stop(&mut self) -> Result<Shutdown> {
        self.child.ensure_running()?;
        let status = self.child.stop()?;
        let err = self.child.stderr();
        ensure!(!err.contains("panicked"), "sip-lb panicked:\n{err}");
        ensure!(status.success(), "sip-lb exited with {}:\n{}", describe_status(status), self.child.stderr_tail(30));
        Shutdown::parse(&err, status)
    }
}

impl Drop for SipLb {
    fn drop(&mut self) {
        let _ = self.child.stop();
        // Captured by the test harness: shown only for a failing test.
        eprintln!("sip-lb logs in {}; stderr tail:\n{}", self.dir.display(), self.child.stderr_tail(30));
    }
}

/// One `worker N: rx .. tx .. requests .. responses .. replies .. drops N (reason=n, ...)` line
/// of sip-lb's shutdown summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerTotals {
    pub rx: u64,
    pub tx: u64,
    pub requests: u64,
    pub responses: u64,
    pub replies: u64,
    pub drops: u64,
    /// Dropped by the shield (0 from a sip-lb without one).
    pub shield: u64,
    /// The core's drop reasons and the shield's.
    pub drop_reasons: BTreeMap<String, u64>,
}

/// sip-lb's shutdown summary: the worker lines, summed.
#[derive(Clone, Debug)]
pub struct Shutdown {
    pub status: ExitStatus,
    pub workers: usize,
    pub total: WorkerTotals,
}

impl Shutdown {
    pub fn parse(stderr: &str, status: ExitStatus) -> Result<Shutdown> {
        let mut t = WorkerTotals::default();
        let mut workers = 0;
        for line in stderr.lines().filter(|l| l.starts_with("worker ")) {
            let (counts, reasons) = line.split_once(" (").unwrap_or((line, ""));
            let words: Vec<&str> = counts.split_whitespace().collect();
            let field = |name: &str| -> Result<u64> {
                let i = words.iter().position(|w| *w == name).with_context(|| format!("no {name} in {line}"))?;
                Ok(words.get(i + 1).with_context(|| format!("{name} without a value in {line}"))?.parse()?)
            };
            t.rx += field("rx")?;
            t.tx += field("tx")?;
            t.requests += field("requests")?;
            t.responses += field("responses")?;
            t.replies += field("replies")?;
            t.drops += field("drops")?;
            t.shield += if words.contains(&"shield") { field("shield")? } else { 0 };
            for kv in reasons.trim_end_matches(')').split(", ").filter(|s| !s.is_empty()) {
                let (k, v) = kv.split_once('=').with_context(|| format!("odd drop reason {kv:?} in {line}"))?;
                *t.drop_reasons.entry(k.to_owned()).or_default() += v.parse::<u64>()?;
            }
            workers += 1;
        }
        Ok(Shutdown { status, workers, total: t })
    }

    /// Drops counted for `reason`.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.total.drop_reasons.get(reason).copied().unwrap_or(0)
    }

    /// Datagrams received, summed over workers.
    pub fn rx(&self) -> u64 {
        self.total.rx
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn parses_the_shutdown_summary() {
        let err = "INFO something\n\
                   worker 0: rx 10 tx 8 requests 5 responses 3 replies 1 drops 1 (malformed=1)\n\
                   worker 1: rx 9 tx 4 requests 4 responses 0 replies 0 drops 2 shield 5 (malformed=1, branch_mac=1, blocked=5)\n";
        let s = Shutdown::parse(err, ExitStatus::from_raw(0)).unwrap();
        assert_eq!(s.workers, 2);
        assert_eq!((s.total.rx, s.total.tx, s.total.requests, s.total.responses), (19, 12, 9, 3));
        assert_eq!((s.total.replies, s.total.drops, s.total.shield), (1, 3, 5));
        assert_eq!(s.dropped("blocked"), 5);
        assert_eq!((s.dropped("malformed"), s.dropped("branch_mac"), s.dropped("x")), (2, 1, 0));
    }
}
