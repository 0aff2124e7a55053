//! The three forwarders under test, started the same way: sip-lb, Kamailio as
//! a stateless dispatcher, and the null forwarder. Each listens on one loopback
//! port, forwards to the given backends, and is measured from /proc.
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::nullfwd;
use super::procs::{self, Child};
use super::Env;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    SipLb,
    /// sip-lb with `--iface`: XDP Call-ID steering on the site's interface
    /// (the netns comparison only).
    SipLbXdp,
    /// `--iface --datapath afxdp`: the AF_XDP data path on the site's interface.
    SipLbAfxdp,
    /// `--iface` with `--xdp-redirect-above 0`: every datagram through the
    /// CPU map (what `--iface` did before the redirect threshold).
    SipLbXdpAlways,
    /// `--iface` run from the build in `SIP_LB_BENCH_BASELINE` (e.g. the
    /// previous commit), to compare in one sitting.
    BaselineXdp,
    /// `--iface --datapath afxdp` run from the `SIP_LB_BENCH_BASELINE` build.
    BaselineAfxdp,
    /// sip-lb with `--pin off`, for the latency comparison only.
    SipLbUnpinned,
    /// sip-lb with `--busy-poll 50`, for the latency comparison only.
    SipLbBusyPoll,
    Kamailio,
    Null,
    /// sip-lb's AF_XDP path with `--afxdp-null-forward`: the same I/O and
    /// hand-off, no SIP work (the AF_XDP path's ceiling).
    AfxdpNull,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::SipLb => "sip-lb",
            Kind::SipLbXdp => "sip-lb --iface --datapath socket",
            Kind::SipLbAfxdp => "sip-lb AF_XDP",
            Kind::SipLbXdpAlways => "sip-lb --iface --xdp-redirect-above 0",
            Kind::BaselineXdp => "baseline build --iface",
            Kind::BaselineAfxdp => "baseline build AF_XDP",
            Kind::SipLbUnpinned => "sip-lb --pin off",
            Kind::SipLbBusyPoll => "sip-lb --busy-poll 50",
            Kind::Kamailio => "kamailio",
            Kind::Null => "null forwarder",
            Kind::AfxdpNull => "AF_XDP null forwarder",
        }
    }

    /// "workers" for sip-lb and the null forwarder, "children" for Kamailio.
    pub fn label(self, workers: usize) -> String {
        let unit = match (self, workers) {
            (Kind::Kamailio, 1) => "child",
            (Kind::Kamailio, _) => "children",
            (_, 1) => "worker",
            _ => "workers",
        };
        format!("{} ({workers} {unit})", self.name())
    }
}

/// Where a forwarder runs: on loopback in the bench's own namespace, or in a
/// network namespace of the netns comparison, there with `iface` for
/// [`Kind::SipLbXdp`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Site<'a> {
    pub netns: Option<&'a str>,
    pub iface: Option<&'a str>,
}

impl Site<'_> {
    pub const LOOPBACK: Site<'static> = Site { netns: None, iface: None };

    /// `program args...`, run inside the site's namespace if it has one.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self.netns {
            None => Command::new(program),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
        }
    }
}

pub struct Balancer {
    pub kind: Kind,
    pub listen: SocketAddr,
    child: Child,
    ctl_socket: Option<String>,
    cpu_start: Vec<(u32, u64)>,
    busy_start: procs::MachineMark,
    /// sip-lb's control API (`--metrics`).
    control: Option<SocketAddr>,
}

/// What /proc and the balancer's own counters say at the end of a run.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub cpu_s: f64,
    /// Peak RSS of the largest process and summed over its processes (KiB).
    pub hwm_max_kib: u64,
    pub hwm_sum_kib: u64,
    pub processes: usize,
    /// Messages forwarded by the balancer's own count (sip-lb: shutdown
    /// counters; Kamailio: core:fwd_requests + core:fwd_replies).
    pub forwarded: Option<u64>,
    /// sip-lb only: datagrams received per worker.
    pub per_worker_rx: Vec<u64>,
    /// CPUs busy with other processes meanwhile (see `procs::other_load`).
    pub other_cpus: f64,
    /// The whole machine's busy CPU-seconds over the window (cpuidle
    /// residency): the balancer, its load generators and all softirq work,
    /// wherever the kernel charged it.
    pub machine_cpu_s: f64,
}

impl Balancer {
    pub fn start(
        env: &Env,
        kind: Kind,
        workers: usize,
        listen: SocketAddr,
        backends: &[SocketAddr],
        tag: &str,
        site: Site<'_>,
    ) -> Result<Self> {
        let slug: Vec<&str> =
            kind.name().split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect();
        let name = format!("{}-{workers}-{tag}", slug.join("-"));
        let mut ctl_socket = None;
        let mut control_addr = None;
        let cmd = match kind {
            Kind::SipLb
            | Kind::SipLbXdp
            | Kind::SipLbAfxdp
            | Kind::SipLbXdpAlways
            | Kind::BaselineXdp
            | Kind::BaselineAfxdp
            | Kind::SipLbUnpinned
            | Kind::SipLbBusyPoll
            | Kind::AfxdpNull => {
                let bin = match kind {
                    Kind::BaselineXdp | Kind::BaselineAfxdp => {
                        env.baseline.as_ref().context("no SIP_LB_BENCH_BASELINE build")?
                    }
                    _ => &env.sip_lb,
                };
                let mut c = site.command(bin);
                c.arg("run").arg("--listen").arg(listen.to_string()).arg("--workers").arg(workers.to_string());
                // The bench compares placements it chose: worker i on CPU i,
                // or (the latency comparison) none at all.
                c.args(["--pin", if kind == Kind::SipLbUnpinned { "off" } else { "on" }]);
                if matches!(kind, Kind::SipLbXdp | Kind::SipLbXdpAlways | Kind::BaselineXdp) {
                    c.arg("--iface").arg(site.iface.context("sip-lb --iface needs a site with an interface")?);
                    // --iface alone selects AF_XDP; this contender is the socket path with XDP
                    // steering (a baseline build may predate --datapath: ask its --help).
                    let help = Command::new(bin).args(["run", "--help"]).output().map(|o| o.stdout).unwrap_or_default();
                    if String::from_utf8_lossy(&help).contains("--datapath") {
                        c.args(["--datapath", "socket"]);
                    }
                }
                if matches!(kind, Kind::SipLbAfxdp | Kind::AfxdpNull | Kind::BaselineAfxdp) {
                    c.arg("--iface").arg(site.iface.context("AF_XDP needs a site with an interface")?);
                    c.args(["--datapath", "afxdp"]);
                }
                if kind == Kind::AfxdpNull {
                    c.arg("--afxdp-null-forward");
                }
                if kind == Kind::SipLbXdpAlways {
                    c.args(["--xdp-redirect-above", "0"]);
                }
                if kind == Kind::SipLbBusyPoll {
                    c.args(["--busy-poll", "50"]);
                }
                // Its own control/metrics port, so parallel runs and tests do not collide on 5070.
                let control = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
                c.arg("--metrics").arg(control.to_string());
                control_addr = Some(control);
                for b in backends {
                    c.arg("--backend").arg(b.to_string());
                }
                c
            }
            Kind::Kamailio => {
                let (cfg, ctl) = render_kamailio(env, &name, workers, listen, backends)?;
                ctl_socket = Some(ctl);
                // Pinned to the CPUs sip-lb's workers would get (0..N-1), like
                // sip-lb; taskset execs, so the PID is Kamailio's main process.
                let mut c = site.command("taskset");
                c.args(["-c", &format!("0-{}", workers.min(sip_lb_udp::affinity::cpu_count()) - 1), "kamailio"]);
                // -DD: stay in the foreground (we stop it by PID), still fork children.
                c.arg("-f").arg(cfg).args(["-DD", "-E", "-m", "64", "-M", "8"]);
                c
            }
            Kind::Null => {
                let mut c = site.command(&env.xtask_exe);
                c.arg("bench").envs(nullfwd::child_env(listen, backends, workers));
                c
            }
        };
        let mut child = Child::spawn(&name, cmd, &env.logs)?;
        procs::wait_udp_bound(listen.port(), &mut child, Duration::from_secs(10))?;
        if !matches!(kind, Kind::Kamailio | Kind::Null) {
            // sip-lb binds its sockets before it attaches XDP / AF_XDP and
            // starts its workers: traffic sent in between would take the
            // plain socket path. It logs this line once everything runs.
            procs::wait_stderr(&mut child, "sip-lb forwarding", Duration::from_secs(20))?;
        }
        // Kamailio binds before it forks its children: let them start.
        std::thread::sleep(Duration::from_millis(if kind == Kind::Kamailio { 500 } else { 100 }));
        child.fail_if_exited()?;
        let mut b = Self {
            kind,
            listen,
            child,
            ctl_socket,
            cpu_start: Vec::new(),
            busy_start: procs::MachineMark::now()?,
            control: control_addr,
        };
        b.mark();
        Ok(b)
    }

    /// sip-lb's control API address (`None` for the others).
    pub fn control(&self) -> Option<SocketAddr> {
        self.control
    }

    /// The balancer's (main) process.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Starts the CPU measurement window here.
    pub fn mark(&mut self) {
        self.cpu_start = procs::cpu_ticks(&procs::process_tree(self.child.pid()));
        if let Ok(now) = procs::MachineMark::now() {
            self.busy_start = now;
        }
    }

    /// CPU since `mark`, peak RSS so far; Kamailio's counters. Leaves it running.
    pub fn usage(&mut self) -> Usage {
        let tree = procs::process_tree(self.child.pid());
        let cpu_s = procs::cpu_seconds(&self.cpu_start, &procs::cpu_ticks(&tree));
        let (hwm_max_kib, hwm_sum_kib) = procs::tree_hwm_kib(&tree);
        // `start` read the residency, so it is there now too.
        let now = procs::MachineMark::now().unwrap_or(self.busy_start);
        let other_cpus = procs::other_load(&self.busy_start, &now, cpu_s);
        let forwarded = self.ctl_socket.as_deref().and_then(kamailio_forwarded);
        Usage {
            cpu_s,
            hwm_max_kib,
            hwm_sum_kib,
            processes: tree.len(),
            forwarded,
            per_worker_rx: Vec::new(),
            other_cpus,
            machine_cpu_s: self.busy_start.busy_s(&now),
        }
    }

    /// Stops it by PID; for sip-lb, adds the shutdown counters to `usage`.
    pub fn stop(mut self, usage: &mut Usage) -> Result<()> {
        let tree = procs::process_tree(self.child.pid());
        self.child.stop();
        // Kamailio's main process stops its children; should one outlive it
        // (e.g. the main process needed SIGKILL), end it by its PID.
        std::thread::sleep(Duration::from_millis(50));
        for pid in tree.into_iter().skip(1) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if self.kind == Kind::Kamailio && comm.trim() == "kamailio" {
                // SAFETY: a PID we saw as this balancer's descendant a moment ago.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        if !matches!(self.kind, Kind::Kamailio | Kind::Null) {
            let (fwd, rx) = parse_sip_lb_summary(&self.child.stderr());
            if !rx.is_empty() {
                usage.forwarded = Some(fwd);
                usage.per_worker_rx = rx;
            }
        }
        Ok(())
    }
}

/// Renders the shipped config and dispatcher list into target/bench/.
fn render_kamailio(
    env: &Env,
    name: &str,
    children: usize,
    listen: SocketAddr,
    backends: &[SocketAddr],
) -> Result<(std::path::PathBuf, String)> {
    let dir = &env.repo.join("bench/kamailio");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).with_context(|| format!("reading bench/kamailio/{f}"));
    let list_path = env.out.join(format!("{name}.dispatcher.list"));
    let mut list = read("dispatcher-list.cfg")?;
    for (i, b) in backends.iter().enumerate() {
        list = list.replace(&format!("{{{{BACKEND_{}}}}}", i + 1), &b.to_string());
    }
    std::fs::write(&list_path, list)?;
    let ctl = env.out.join(format!("{name}.ctl")).display().to_string();
    let _ = std::fs::remove_file(&ctl);
    let cfg = read("stateless-dispatcher.cfg")?
        .replace("{{CHILDREN}}", &children.to_string())
        .replace("{{LISTEN}}", &listen.to_string())
        .replace("{{MODULES}}", &kamailio_modules()?)
        .replace("{{LIST_FILE}}", &list_path.display().to_string())
        .replace("{{CTL_SOCKET}}", &ctl);
    let cfg_path = env.out.join(format!("{name}.cfg"));
    std::fs::write(&cfg_path, cfg)?;
    Ok((cfg_path, ctl))
}

fn kamailio_modules() -> Result<String> {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        "/usr/lib/aarch64-linux-gnu/kamailio/modules",
        "/usr/lib/kamailio/modules",
    ];
    candidates
        .iter()
        .find(|d| Path::new(d).join("dispatcher.so").exists())
        .map(|d| format!("{d}/"))
        .context("Kamailio's dispatcher.so not found (is the kamailio package installed?)")
}

/// core:fwd_requests + core:fwd_replies via kamcmd (ctl + kex modules).
fn kamailio_forwarded(ctl: &str) -> Option<u64> {
    let out =
        Command::new("kamcmd").args(["-s", &format!("unix:{ctl}"), "stats.get_statistics", "core:"]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |key: &str| -> Option<u64> {
        text.lines().find(|l| l.contains(key)).and_then(|l| l.rsplit(['=', ' ']).next()?.trim().parse().ok())
    };
    Some(get("fwd_requests")? + get("fwd_replies")?)
}

/// From lines "worker N: rx X tx Y requests R responses S ...": (R+S summed, rx per worker).
fn parse_sip_lb_summary(stderr: &str) -> (u64, Vec<u64>) {
    let mut fwd = 0;
    let mut rx = Vec::new();
    for line in stderr.lines() {
        let Some(at) = line.find("worker ") else { continue };
        let words: Vec<&str> = line[at..].split_whitespace().collect();
        let field = |name: &str| words.windows(2).find(|w| w[0] == name).and_then(|w| w[1].parse::<u64>().ok());
        if let (Some(r), Some(q), Some(s)) = (field("rx"), field("requests"), field("responses")) {
            rx.push(r);
            fwd += q + s;
        }
    }
    (fwd, rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sip_lb_shutdown_summary() {
        let err = "INFO stopping\nworker 0: rx 10 tx 9 requests 6 responses 3 replies 0 drops 1\nworker 1: rx 4 tx 4 requests 4 responses 0 replies 0 drops 0\n";
        assert_eq!(parse_sip_lb_summary(err), (13, vec![10, 4]));
    }
}
