//! SIPp harness: UAS backends that log every message they receive, a UAC that always ends
//! (`-m`, `-timeout`, `-timeout_error`, `-recv_timeout`) and whose result is parsed from its
//! statistics CSV and exit code.
//!
//! Logs per instance, all in the caller's directory:
//! `<name>.short.log` (`-trace_shortmsg`, one line per message sent/received, parsed here),
//! `<name>.messages.log` (`-trace_msg`, full bytes, for failure evidence),
//! `<name>.errors.log` (`-trace_err`), UAC only: `<name>.stat.csv` (`-trace_stat`) and
//! `<name>.screen.log` (`-trace_screen`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::ports;
use crate::process::{describe_status, tail, ChildGuard};

/// How long a UAS gets to bind its port.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// SIPp's socket buffers (`-buff_size`; the kernel caps it at
/// net.core.rmem_max). SIPp's 64 KiB default overflows when a loaded machine
/// deschedules SIPp for a few milliseconds during a burst of responses: the
/// kernel drops them (RcvbufErrors), the call times out, and a test blames
/// the forwarder for a loss that happened at the load generator.
pub const BUFF_SIZE: &str = "4194304";
/// Extra time past the UAC's own `-timeout` before we kill it ourselves.
const UAC_GRACE: Duration = Duration::from_secs(15);
/// Bound on `apt-get install`.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Path of the `sipp` binary, installing Debian's `sip-tester` with apt-get if it is missing.
/// The lookup (and install) happens once per process.
pub fn ensure_sipp() -> Result<PathBuf> {
    static SIPP: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    SIPP.get_or_init(|| find_or_install_sipp().map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow!(e))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false))
}

fn find_or_install_sipp() -> Result<PathBuf> {
    if let Some(p) = find_in_path("sipp") {
        return Ok(p);
    }
    eprintln!("sipp not found in PATH; running `apt-get install -y sip-tester` (Debian package of SIPp)");
    let mut child = Command::new("apt-get")
        .args(["install", "-y", "sip-tester"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .spawn()
        .context("spawn apt-get (is this Debian/Ubuntu, running as root?)")?;
    let deadline = Instant::now() + INSTALL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("apt-get install sip-tester did not finish within {INSTALL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        bail!("apt-get install -y sip-tester failed with {}", describe_status(status));
    }
    find_in_path("sipp").context("sip-tester installed but `sipp` is still not in PATH")
}

/// The directory holding this crate's XML scenarios (`tests/scenarios`).
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// Which scenario a SIPp instance runs.
#[derive(Clone, Debug)]
pub enum Scenario {
    /// Embedded in SIPp (`-sn uas`, `-sn uac`, ...).
    Builtin(&'static str),
    /// An XML file (`-sf`).
    File(PathBuf),
}

impl Scenario {
    /// A file from [`scenarios_dir`].
    pub fn file(name: &str) -> Self {
        Scenario::File(scenarios_dir().join(name))
    }
    /// UAC: INVITE, [100], [180], [183], 200, ACK, pause (`-d`), BYE, 200.
    pub fn uac_call() -> Self {
        Self::file("uac_call.xml")
    }
    /// UAS: INVITE -> 100, 180, 200; ACK; BYE -> 200.
    pub fn uas_call() -> Self {
        Self::file("uas_call.xml")
    }
    /// UAC: one REGISTER per call, expecting 200.
    pub fn uac_register() -> Self {
        Self::file("uac_register.xml")
    }
    /// UAS: REGISTER -> 200.
    pub fn uas_registrar() -> Self {
        Self::file("uas_registrar.xml")
    }

    fn args(&self) -> Result<Vec<String>> {
        Ok(match self {
            Scenario::Builtin(name) => vec!["-sn".into(), (*name).into()],
            Scenario::File(path) => {
                if !path.is_file() {
                    bail!("SIPp scenario {} not found", path.display());
                }
                vec!["-sf".into(), path.display().to_string()]
            }
        })
    }
}

fn log_args(name: &str, dir: &Path, full_messages: bool) -> Vec<String> {
    let p = |suffix: &str| dir.join(format!("{name}.{suffix}")).display().to_string();
    let mut args = vec![
        "-trace_shortmsg".into(),
        "-shortmessage_file".into(),
        p("short.log"),
        "-trace_err".into(),
        "-error_file".into(),
        p("errors.log"),
    ];
    if full_messages {
        args.extend(["-trace_msg".into(), "-message_file".into(), p("messages.log")]);
    }
    args
}

/// A SIPp UAS listening on a loopback port, stopped by PID on drop.
pub struct Uas {
    guard: ChildGuard,
    addr: SocketAddr,
    short_log: PathBuf,
    message_log: PathBuf,
}

impl Uas {
    /// Start `sipp <scenario> -i <ip> -p <port>` and wait until the port is bound.
    pub fn start(name: &str, addr: SocketAddr, scenario: &Scenario, dir: &Path) -> Result<Self> {
        let sipp = ensure_sipp()?;
        let mut cmd = Command::new(sipp);
        cmd.args(scenario.args()?)
            .args(["-i", &addr.ip().to_string(), "-p", &addr.port().to_string(), "-nostdin"])
            .args(["-buff_size", BUFF_SIZE])
            .args(log_args(name, dir, true));
        let mut guard = ChildGuard::spawn(name, cmd, dir)?;
        guard.set_stop_timeout(Duration::from_secs(2));
        ports::wait_udp_bound(addr.port(), START_TIMEOUT, || guard.ensure_running())
            .with_context(|| format!("start UAS {name} on {addr}"))?;
        Ok(Self {
            guard,
            addr,
            short_log: dir.join(format!("{name}.short.log")),
            message_log: dir.join(format!("{name}.messages.log")),
        })
    }

    /// [`Uas::start`] over TCP (`-t t1`): SIPp listens on TCP `addr` and answers on the
    /// connection each request came on.
    pub fn start_tcp(name: &str, addr: SocketAddr, scenario: &Scenario, dir: &Path) -> Result<Self> {
        let sipp = ensure_sipp()?;
        let mut cmd = Command::new(sipp);
        cmd.args(scenario.args()?)
            .args(["-i", &addr.ip().to_string(), "-p", &addr.port().to_string(), "-nostdin", "-t", "t1"])
            .args(["-buff_size", BUFF_SIZE])
            .args(log_args(name, dir, true));
        let mut guard = ChildGuard::spawn(name, cmd, dir)?;
        guard.set_stop_timeout(Duration::from_secs(2));
        ports::wait_tcp_listening(addr.port(), START_TIMEOUT, || guard.ensure_running())
            .with_context(|| format!("start TCP UAS {name} on {addr}"))?;
        Ok(Self {
            guard,
            addr,
            short_log: dir.join(format!("{name}.short.log")),
            message_log: dir.join(format!("{name}.messages.log")),
        })
    }

    pub fn name(&self) -> &str {
        self.guard.name()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Error if SIPp has exited (e.g. a scenario error), quoting its output.
    pub fn ensure_running(&mut self) -> Result<()> {
        self.guard.ensure_running().map_err(|e| e.context(format!("UAS stdout tail:\n{}", self.guard.stdout_tail(20))))
    }

    /// Every message this UAS sent or received so far (`-trace_shortmsg`, flushed per line).
    pub fn messages(&self) -> Result<Vec<LoggedMessage>> {
        let text = std::fs::read_to_string(&self.short_log).unwrap_or_default();
        Ok(parse_short_log(&text))
    }

    /// Per Call-ID, the messages this UAS *received*, in order.
    pub fn received(&self) -> Result<CallLog> {
        Ok(CallLog::received(&self.messages()?))
    }

    /// The full text of every logged message (sent or received) that mentions `call_id`.
    pub fn full_messages(&self, call_id: &str) -> Result<Vec<String>> {
        let text = std::fs::read_to_string(&self.message_log)
            .with_context(|| format!("read {}", self.message_log.display()))?;
        Ok(split_message_log(&text).into_iter().filter(|m| m.contains(call_id)).collect())
    }

    pub fn message_log_path(&self) -> &Path {
        &self.message_log
    }

    /// Stop SIPp (SIGTERM, SIGKILL after 2 s).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.guard.stop()
    }
}

/// Settings for one UAC run. Build with [`UacOptions::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct UacOptions {
    /// Instance name (log file prefix).
    pub name: String,
    pub scenario: Scenario,
    /// Where requests go (sip-lb).
    pub target: SocketAddr,
    /// Local address; port 0 picks a free one.
    pub local: SocketAddr,
    /// Calls per second (`-r`).
    pub rate: f64,
    /// Total calls (`-m`).
    pub calls: u64,
    /// Length of `<pause/>` (`-d`).
    pub pause: Duration,
    /// SIPp's global timeout (`-timeout` with `-timeout_error`): it quits and fails after this.
    pub timeout: Duration,
    /// A call waiting longer than this for a message fails (`-recv_timeout`).
    pub recv_timeout: Duration,
    /// Max simultaneous calls (`-l`), if set.
    pub max_concurrent: Option<u64>,
    /// Also write the full `-trace_msg` log (large for long runs).
    pub full_messages: bool,
    /// SIPp's `-t` transport mode (`t1`: one TCP connection for all calls); UDP when unset.
    pub transport: Option<String>,
    /// More SIPp arguments (e.g. `-max_socket N` with `-t un`).
    pub extra: Vec<String>,
}

impl UacOptions {
    /// 100 calls at 50 calls/s, 200 ms pause, 30 s timeout, 5 s receive timeout.
    pub fn new(name: &str, scenario: Scenario, target: SocketAddr) -> Self {
        Self {
            name: name.into(),
            scenario,
            target,
            local: SocketAddr::from(([127, 0, 0, 1], 0)),
            rate: 50.0,
            calls: 100,
            pause: Duration::from_millis(200),
            timeout: Duration::from_secs(30),
            recv_timeout: Duration::from_secs(5),
            max_concurrent: None,
            full_messages: true,
            transport: None,
            extra: Vec::new(),
        }
    }
}

/// A running SIPp UAC; [`Uac::wait`] collects its result.
pub struct Uac {
    guard: ChildGuard,
    opts: UacOptions,
    dir: PathBuf,
    started: Instant,
}

impl Uac {
    pub fn start(opts: UacOptions, dir: &Path) -> Result<Self> {
        let sipp = ensure_sipp()?;
        let mut local = opts.local;
        if local.port() == 0 {
            local.set_port(ports::free_udp_port()?);
        }
        let name = &opts.name;
        let p = |suffix: &str| dir.join(format!("{name}.{suffix}")).display().to_string();
        let mut cmd = Command::new(sipp);
        cmd.args(opts.scenario.args()?)
            .arg(opts.target.to_string())
            .args(["-i", &local.ip().to_string(), "-p", &local.port().to_string()])
            .args(["-r", &format!("{}", opts.rate), "-m", &opts.calls.to_string()])
            .args(["-d", &opts.pause.as_millis().to_string()])
            .args(["-timeout", &format!("{}s", opts.timeout.as_secs().max(1)), "-timeout_error"])
            .args(["-recv_timeout", &opts.recv_timeout.as_millis().max(1).to_string()])
            .args(["-nostdin", "-trace_stat", "-stf", &p("stat.csv"), "-fd", "1"])
            .args(["-buff_size", BUFF_SIZE])
            .args(["-trace_screen", "-screen_file", &p("screen.log")])
            .args(log_args(name, dir, opts.full_messages));
        if let Some(t) = &opts.transport {
            cmd.args(["-t", t]);
        }
        if let Some(l) = opts.max_concurrent {
            cmd.args(["-l", &l.to_string()]);
        }
        cmd.args(&opts.extra);
        let guard = ChildGuard::spawn(name, cmd, dir)?;
        Ok(Self { guard, opts, dir: dir.to_owned(), started: Instant::now() })
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Wait for SIPp to end by itself (bounded by its `-timeout` plus a grace period, after which
    /// it is killed and this is an error), then parse its statistics.
    pub fn wait(mut self) -> Result<UacReport> {
        let limit = self.opts.timeout + UAC_GRACE;
        let status = match self.guard.wait_timeout(limit.saturating_sub(self.started.elapsed()))? {
            Some(s) => s,
            None => {
                self.guard.stop()?;
                bail!(
                    "UAC {} did not end within {limit:?} (killed); stdout tail:\n{}",
                    self.opts.name,
                    self.guard.stdout_tail(30)
                );
            }
        };
        let p = |suffix: &str| self.dir.join(format!("{}.{suffix}", self.opts.name));
        let stat_csv = p("stat.csv");
        let counters =
            std::fs::read_to_string(&stat_csv).ok().and_then(|text| parse_stat_csv(&text)).unwrap_or_default();
        let screen = std::fs::read_to_string(p("screen.log")).unwrap_or_default();
        let report = UacReport {
            status,
            elapsed: self.started.elapsed(),
            counters,
            screen,
            stderr: self.guard.stderr(),
            short_log: p("short.log"),
            stat_csv,
            errors_log: p("errors.log"),
        };
        if report.counters.is_empty() {
            bail!(
                "UAC {} ended with {} ({}) and wrote no statistics; stderr:\n{}\nstdout tail:\n{}",
                self.opts.name,
                describe_status(status),
                report.exit_meaning(),
                tail(&report.stderr, 20),
                self.guard.stdout_tail(30)
            );
        }
        Ok(report)
    }
}

/// Start a UAC and wait for its result.
pub fn run_uac(opts: UacOptions, dir: &Path) -> Result<UacReport> {
    Uac::start(opts, dir)?.wait()
}

/// Result of a UAC run.
#[derive(Clone, Debug)]
pub struct UacReport {
    pub status: ExitStatus,
    pub elapsed: Duration,
    /// Cumulative counters from the last line of the statistics CSV, keyed by column name
    /// without the `(C)` suffix (`SuccessfulCall`, `FailedCall`, `FailedMaxUDPRetrans`, ...).
    pub counters: BTreeMap<String, u64>,
    /// The final SIPp screens (`-trace_screen`): per-message counts, retransmissions, timeouts.
    pub screen: String,
    pub stderr: String,
    pub short_log: PathBuf,
    pub stat_csv: PathBuf,
    pub errors_log: PathBuf,
}

impl UacReport {
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
    pub fn created(&self) -> u64 {
        self.counter("TotalCallCreated")
    }
    pub fn successful(&self) -> u64 {
        self.counter("SuccessfulCall")
    }
    pub fn failed(&self) -> u64 {
        self.counter("FailedCall")
    }
    pub fn exit_code(&self) -> Option<i32> {
        self.status.code()
    }
    /// SIPp's documented meaning of its exit code.
    pub fn exit_meaning(&self) -> &'static str {
        exit_meaning(self.status)
    }
    /// Non-zero failure counters (`FailedMaxUDPRetrans=3, ...`), for messages.
    pub fn failure_reasons(&self) -> String {
        self.counters
            .iter()
            .filter(|(k, v)| k.starts_with("Failed") && k.as_str() != "FailedCall" && **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
    /// The first lines of `-trace_err` (unexpected messages, timeouts), for messages.
    pub fn errors_head(&self, lines: usize) -> String {
        std::fs::read_to_string(&self.errors_log)
            .map(|t| t.lines().take(lines).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
    /// The "Scenario Screen" part of the final screens (message table).
    pub fn scenario_screen(&self) -> String {
        let start = self.screen.find("Scenario Screen").map(|i| self.screen[..i].rfind('\n').map_or(0, |j| j + 1));
        let Some(start) = start else {
            return String::new();
        };
        let rest = &self.screen[start..];
        let end = rest[1..].find("---------------------------- Statistics").map_or(rest.len(), |i| i + 1);
        rest[..end].trim_end().to_owned()
    }
}

impl fmt::Display for UacReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "created {}, successful {}, failed {} in {:.1}s; SIPp {} ({})",
            self.created(),
            self.successful(),
            self.failed(),
            self.elapsed.as_secs_f64(),
            describe_status(self.status),
            self.exit_meaning()
        )?;
        let reasons = self.failure_reasons();
        if !reasons.is_empty() {
            write!(f, "; {reasons}")?;
        }
        Ok(())
    }
}

/// SIPp's exit codes (`sipp -h`).
pub fn exit_meaning(status: ExitStatus) -> &'static str {
    match status.code() {
        Some(0) => "all calls succeeded",
        Some(1) => "at least one call failed",
        Some(97) => "exit on internal command",
        Some(99) => "normal exit without calls processed",
        Some(255) => "fatal error",
        Some(254) => "fatal error binding a socket",
        Some(_) => "unknown exit code",
        None => "killed by a signal",
    }
}

/// Cumulative `(C)` counters and `TotalCallCreated` from the last data line of a `-trace_stat`
/// CSV (`;`-separated, first line is the header). `None` if there is no data line.
pub fn parse_stat_csv(text: &str) -> Option<BTreeMap<String, u64>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.next_back()?.split(';').collect();
    let mut out = BTreeMap::new();
    for (name, value) in header.iter().zip(last.iter()) {
        let key = if let Some(k) = name.strip_suffix("(C)") {
            k
        } else if *name == "TotalCallCreated" || *name == "CurrentCall" {
            name
        } else {
            continue;
        };
        if let Ok(v) = value.trim().parse::<u64>() {
            out.insert(key.to_owned(), v);
        }
    }
    Some(out)
}

/// Whether SIPp sent or received a logged message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Received,
    Sent,
}

/// One line of a `-trace_shortmsg` log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedMessage {
    pub direction: Direction,
    pub call_id: String,
    /// e.g. `1 INVITE`.
    pub cseq: String,
    /// Request line or status line.
    pub first_line: String,
}

impl LoggedMessage {
    /// The method of a request (`INVITE`) or the status code of a response (`200`).
    pub fn label(&self) -> String {
        let mut words = self.first_line.split_whitespace();
        match words.next() {
            Some(v) if v.starts_with("SIP/") => words.next().unwrap_or("?").to_owned(),
            Some(method) => method.to_owned(),
            None => "?".to_owned(),
        }
    }
    pub fn is_request(&self) -> bool {
        !self.first_line.starts_with("SIP/")
    }
}

/// Parse a `-trace_shortmsg` log. SIPp writes tab-separated lines:
/// `date \t time \t epoch \t R|S \t Call-ID \t CSeq:<n> <method> \t <first line>`.
/// Lines that do not fit are skipped.
pub fn parse_short_log(text: &str) -> Vec<LoggedMessage> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.len() < 7 {
                return None;
            }
            let direction = match fields[3] {
                "R" => Direction::Received,
                "S" => Direction::Sent,
                _ => return None,
            };
            Some(LoggedMessage {
                direction,
                call_id: fields[4].to_owned(),
                cseq: fields[5].trim_start_matches("CSeq:").trim().to_owned(),
                first_line: fields[6..].join("\t"),
            })
        })
        .collect()
}

/// Split a `-trace_msg` log into messages (each starts with a line of dashes and a timestamp).
pub fn split_message_log(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if line.starts_with("-----------------------------------------------") && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.push_str(line);
        cur.push('\n');
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// Per Call-ID, the labels (method or status code) of the messages in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallLog {
    pub calls: BTreeMap<String, Vec<String>>,
}

impl CallLog {
    /// Build from the *received* messages of a log.
    pub fn received(messages: &[LoggedMessage]) -> Self {
        let mut calls: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in messages.iter().filter(|m| m.direction == Direction::Received) {
            calls.entry(m.call_id.clone()).or_default().push(m.label());
        }
        Self { calls }
    }

    pub fn call_ids(&self) -> BTreeSet<&str> {
        self.calls.keys().map(String::as_str).collect()
    }

    /// Labels received for `call_id` (empty if none).
    pub fn get(&self, call_id: &str) -> &[String] {
        self.calls.get(call_id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Number of Call-IDs with at least one message labelled `label` (e.g. `INVITE`).
    pub fn calls_with(&self, label: &str) -> usize {
        self.calls.values().filter(|v| v.iter().any(|l| l == label)).count()
    }

    /// Total messages labelled `label`, retransmissions included.
    pub fn count(&self, label: &str) -> usize {
        self.calls.values().flatten().filter(|l| *l == label).count()
    }

    /// Call-IDs that lack any of `labels` (e.g. `["INVITE", "ACK", "BYE"]`).
    pub fn incomplete(&self, labels: &[&str]) -> Vec<(&str, &[String])> {
        self.calls
            .iter()
            .filter(|(_, got)| labels.iter().any(|want| !got.iter().any(|l| l == want)))
            .map(|(id, got)| (id.as_str(), got.as_slice()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

/// Call-IDs present in more than one of `logs` (name, log), with the names that saw them.
pub fn shared_call_ids<'a>(logs: &[(&'a str, &'a CallLog)]) -> BTreeMap<&'a str, Vec<&'a str>> {
    let mut seen: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, log) in logs {
        for id in log.calls.keys() {
            seen.entry(id.as_str()).or_default().push(name);
        }
    }
    seen.retain(|_, names| names.len() > 1);
    seen
}

/// `calls` calls spread over backends by Call-ID, each whole: every
/// backend in `logs` (name, what it received) got at least a fifth of them,
/// each with its INVITE, ACK and BYE; together exactly `calls`; and no
/// Call-ID reached two backends. `ctx` explains a failure.
pub fn calls_spread_whole(calls: u64, logs: &[(&str, &CallLog)], ctx: impl Fn() -> String) -> Result<()> {
    for (name, log) in logs {
        let n = log.calls_with("INVITE");
        anyhow::ensure!(n as u64 >= calls / 5, "{name} got {n} of {calls} calls; {}", ctx());
        anyhow::ensure!(
            log.incomplete(&["INVITE", "ACK", "BYE"]).is_empty(),
            "{name}: a call lacks its ACK or BYE; {}",
            ctx()
        );
    }
    let total: usize = logs.iter().map(|(_, l)| l.calls_with("INVITE")).sum();
    anyhow::ensure!(total == calls as usize, "{total} calls reached the backends, not {calls}; {}", ctx());
    let shared = shared_call_ids(logs);
    if let Some((id, at)) = shared.iter().next() {
        bail!("{} calls reached both backends; first {id} at {at:?}", shared.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: &str = "2026-11-25\t01:28:02.693155\t1795570082.693155\tR\t1-9741@127.0.0.1\tCSeq:1 INVITE\tINVITE sip:service@127.0.0.1:15070 SIP/2.0\n\
2026-11-25\t01:28:02.693498\t1795570082.693498\tS\t1-9741@127.0.0.1\tCSeq:1 INVITE\tSIP/2.0 180 Ringing\n\
2026-11-25\t01:28:02.694654\t1795570082.694654\tR\t1-9741@127.0.0.1\tCSeq:1 ACK\tACK sip:service@127.0.0.1:15070 SIP/2.0\n\
2026-11-25\t01:28:02.713977\t1795570082.713977\tR\t2-9741@127.0.0.1\tCSeq:1 INVITE\tINVITE sip:service@127.0.0.1:15070 SIP/2.0\n\
garbage\n";

    #[test]
    fn parses_short_log() {
        let msgs = parse_short_log(SHORT);
        assert_eq!(msgs.len(), 4);
        assert_eq!(msgs[1].direction, Direction::Sent);
        assert_eq!(msgs[1].label(), "180");
        assert_eq!(msgs[2].cseq, "1 ACK");
        let log = CallLog::received(&msgs);
        assert_eq!(log.get("1-9741@127.0.0.1"), ["INVITE", "ACK"]);
        assert_eq!(log.calls_with("INVITE"), 2);
        assert_eq!(log.incomplete(&["INVITE", "ACK"]).len(), 1);
    }

    #[test]
    fn parses_stat_csv() {
        let csv =
            "StartTime;TotalCallCreated;CurrentCall;SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C);\n\
                   a\tb;0;0;0;0;0;0;\n\
                   a\tb;20;0;5;19;0;1;\n";
        let c = parse_stat_csv(csv).unwrap();
        assert_eq!(c["TotalCallCreated"], 20);
        assert_eq!(c["SuccessfulCall"], 19);
        assert_eq!(c["FailedCall"], 1);
    }

    #[test]
    fn finds_shared_call_ids() {
        let a = CallLog::received(&parse_short_log(SHORT));
        let b = CallLog { calls: BTreeMap::from([("2-9741@127.0.0.1".to_owned(), vec!["BYE".to_owned()])]) };
        let shared = shared_call_ids(&[("a", &a), ("b", &b)]);
        assert_eq!(shared.len(), 1);
        assert_eq!(shared["2-9741@127.0.0.1"], ["a", "b"]);
    }
}
