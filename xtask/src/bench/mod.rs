//! `cargo xtask bench`: sip-lb against Kamailio (stateless dispatcher) and a
//! null forwarder on this machine, on loopback. Builds sip-lb (release),
//! installs kamailio and sip-tester if missing, runs the comparisons of the
//! bench issue, and writes target/bench/report.md plus PNG plots.
//!
//! Layout: `calls` (SIPp calls: CPU per message, memory, ordering), `packets`
//! (blaster and sinks: max rate, latency), `balancer` (starting and measuring
//! each forwarder), `report` (tables and plots). Every process it starts is
//! stopped by PID; every load is bounded in time.
mod balancer;
mod calls;
mod netlab;
mod nullfwd;
mod packets;
mod plot;
mod procs;
mod report;
mod shieldflood;
mod sipp;
mod soak;
mod sockets;
mod topology;
mod traffic;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use balancer::Kind;
use packets::Ground;

/// Default length of `--soak`.
pub const SOAK_SECONDS: u64 = soak::DEFAULT_SECONDS;

pub struct Options {
    /// A smaller plan that fits in 2 minutes (the full one fits in 10).
    pub quick: bool,
    /// Only these comparisons; empty: all.
    pub only: Vec<Comparison>,
    /// `--soak`: the soak alone, for this many seconds (`soak.rs`).
    pub soak: Option<u64>,
}

/// The comparisons of the plan, by number in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Comparison {
    /// 1: CPU per message, SIPp calls on loopback.
    Cpu,
    /// 5: ordering with 2 workers.
    Order,
    /// 2: max forwarding rate.
    Rate,
    /// 3: added latency at half the max rate.
    Latency,
    /// 6: machine-wide CPU per message in network namespaces (SIPp calls).
    Net,
    /// 7: max rate and CPU at a fixed rate in network namespaces (blaster).
    NetPackets,
    /// The kernel-path floor: CPU per message at fixed blaster rates.
    Fixed,
    /// 8: machine-wide CPU during a REGISTER flood, shield on vs off (netns, XDP).
    ShieldFlood,
}

/// Where things are.
pub struct Env {
    pub repo: PathBuf,
    /// target/bench: report, plots, rendered Kamailio configs.
    pub out: PathBuf,
    /// target/bench/logs: stdout/stderr/statistics of every process.
    pub logs: PathBuf,
    pub sip_lb: PathBuf,
    /// This binary, re-executed as the null forwarder.
    pub xtask_exe: PathBuf,
    /// Another sip-lb build (`SIP_LB_BENCH_BASELINE`, e.g. the previous
    /// commit's) that the netns comparison also runs with `--iface`.
    pub baseline: Option<PathBuf>,
}

/// How long and at what rates; see `docs/bench-notes.md` for the budget.
pub struct Plan {
    pub name: &'static str,
    /// Comparison 1: call rates (calls/s), seconds per run, alternating rounds.
    pub cpu_rates: Vec<u64>,
    pub cpu_seconds: u64,
    pub cpu_rounds: usize,
    /// Comparison 5: call rates with 2 workers / 2 children, seconds per run.
    pub order_rates: Vec<u64>,
    pub order_seconds: u64,
    /// Comparison 2: seconds per blast, rounds.
    pub blast_seconds: f64,
    pub blast_rounds: usize,
    /// Comparison 3: seconds per paced run; worker counts measured.
    pub latency_seconds: f64,
    pub latency_workers: Vec<usize>,
    /// Packet-level CPU per message and latency at fixed rates (datagrams/s,
    /// 6 per call: 12,000 is 2000 calls/s), 1 worker / 1 child.
    pub fixed_rates: Vec<u64>,
    pub fixed_seconds: f64,
    /// Comparison 6 (network namespaces, machine-wide CPU): call rates,
    /// seconds per run, alternating rounds.
    pub net_rates: Vec<u64>,
    pub net_seconds: u64,
    pub net_rounds: usize,
    /// Comparison 7 (network namespaces, blaster): seconds per max-rate blast,
    /// the fixed rate (datagrams/s), seconds and rounds at it.
    pub net_blast_seconds: f64,
    pub net_fixed_rate: f64,
    pub net_fixed_seconds: f64,
    pub net_fixed_rounds: usize,
    /// Comparison 8: the flood's rate (frames/s), seconds per window, rounds.
    pub flood_pps: f64,
    pub flood_seconds: f64,
    pub flood_rounds: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                name: "quick",
                cpu_rates: vec![1000],
                cpu_seconds: 5,
                cpu_rounds: 1,
                order_rates: vec![1500],
                order_seconds: 5,
                blast_seconds: 2.0,
                blast_rounds: 1,
                latency_seconds: 2.0,
                latency_workers: vec![1],
                fixed_rates: vec![12_000],
                fixed_seconds: 3.0,
                net_rates: vec![2000],
                net_seconds: 4,
                net_rounds: 1,
                net_blast_seconds: 2.0,
                net_fixed_rate: 20_000.0,
                net_fixed_seconds: 2.0,
                net_fixed_rounds: 1,
                flood_pps: 200_000.0,
                flood_seconds: 3.0,
                flood_rounds: 1,
            }
        } else {
            Plan {
                name: "full",
                cpu_rates: vec![1000, 2000],
                cpu_seconds: 10,
                cpu_rounds: 2,
                order_rates: vec![1000, 2000],
                order_seconds: 10,
                blast_seconds: 4.0,
                blast_rounds: 2,
                latency_seconds: 4.0,
                latency_workers: vec![1, 2],
                fixed_rates: vec![6_000, 12_000],
                fixed_seconds: 5.0,
                net_rates: vec![2000],
                net_seconds: 5,
                net_rounds: 3,
                net_blast_seconds: 3.0,
                net_fixed_rate: 20_000.0,
                net_fixed_seconds: 2.0,
                net_fixed_rounds: 3,
                flood_pps: 200_000.0,
                flood_seconds: 4.0,
                flood_rounds: 3,
            }
        }
    }
}

/// Everything measured; runs that failed are listed in `errors`, the rest of
/// the bench goes on.
#[derive(Default)]
pub struct Results {
    pub cpu: Vec<calls::CallRun>,
    pub order: Vec<calls::CallRun>,
    pub rates: Vec<packets::RateRun>,
    pub latency: Vec<(packets::LatencyRun, packets::LatencyRun)>,
    pub fixed: Vec<packets::LatencyRun>,
    pub net: Vec<netlab::NetRun>,
    /// Comparison 7: max rate and a fixed rate in the netns topology.
    pub net_rates: Vec<packets::RateRun>,
    pub net_fixed: Vec<packets::LatencyRun>,
    /// Comparison 8: the shield under a flood.
    pub shield_flood: Vec<shieldflood::FloodRun>,
    pub errors: Vec<String>,
    pub skipped_sip_lb: Option<String>,
    /// /proc/loadavg when measuring began: others' load skews a shared machine.
    pub load_before: String,
}

pub fn run(opts: Options) -> Result<()> {
    if std::env::var(nullfwd::ROLE_ENV).as_deref() == Ok(nullfwd::ROLE) {
        return nullfwd::main_from_env();
    }
    let started = Instant::now();
    let repo = std::env::var_os("SIP_LB_BENCH_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."));
    let repo = repo.canonicalize().context("workspace root")?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo.join("target"));
    let out = target.join("bench");
    let logs = out.join("logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if cfg!(debug_assertions) && std::env::var_os(RELEASE_ENV).is_none() {
        return reexec_release(&cargo, &repo, &target, &opts);
    }
    let baseline = std::env::var_os("SIP_LB_BENCH_BASELINE").map(PathBuf::from);
    if let Some(b) = baseline.as_ref().filter(|b| !b.is_file()) {
        bail!("SIP_LB_BENCH_BASELINE={} is not a file", b.display());
    }
    let env =
        Env { sip_lb: target.join("release/sip-lb"), xtask_exe: std::env::current_exe()?, baseline, repo, out, logs };

    ensure_packages(&[
        ("kamailio", "the stateless dispatcher sip-lb is compared with"),
        ("sip-tester", "SIPp, the call generator"),
    ])?;
    if let Some(seconds) = opts.soak {
        eprintln!("bench: building sip-lb (release)");
        let built =
            Command::new(&cargo).current_dir(&env.repo).args(["build", "--release", "-p", "sip-lb"]).status()?;
        if !built.success() {
            bail!("the release build of sip-lb failed");
        }
        println!("{}", soak::run(&env, seconds)?);
        return Ok(());
    }
    let mut results = Results::default();
    eprintln!("bench: building sip-lb (release)");
    let built = Command::new(cargo).current_dir(&env.repo).args(["build", "--release", "-p", "sip-lb"]).status();
    if !matches!(built, Ok(s) if s.success()) || !env.sip_lb.exists() {
        let why = "the release build of sip-lb failed; its rows are missing".to_string();
        eprintln!("bench: WARNING: {why}");
        results.skipped_sip_lb = Some(why);
    }
    let plan = Plan::new(opts.quick);
    eprintln!("bench: {} plan, results in {}", plan.name, env.out.display());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    results.load_before = load.split(' ').take(3).collect::<Vec<_>>().join(" ");
    eprintln!("bench: load average before: {}", results.load_before);
    measure(&env, &plan, &opts.only, &mut results);
    let report = report::write(&env, &plan, &results, started.elapsed())?;
    println!("{report}");
    eprintln!(
        "bench: done in {:.0} s; report: {}",
        started.elapsed().as_secs_f64(),
        env.out.join("report.md").display()
    );
    Ok(())
}

/// Set in the release xtask the bench re-executes.
const RELEASE_ENV: &str = "SIP_LB_BENCH_RELEASE";

/// `cargo xtask` is a debug build, but the blaster, the sinks and the null
/// forwarder are part of what is measured: run the bench from a release build.
fn reexec_release(cargo: &str, repo: &std::path::Path, target: &std::path::Path, opts: &Options) -> Result<()> {
    use std::os::unix::process::CommandExt;
    eprintln!("bench: building xtask (release): the blaster, sinks and null forwarder must be optimised");
    let ok = Command::new(cargo).current_dir(repo).args(["build", "--release", "-p", "xtask"]).status()?.success();
    if !ok {
        bail!("building xtask in release mode failed");
    }
    let mut cmd = Command::new(target.join("release/xtask"));
    cmd.arg("bench").env(RELEASE_ENV, "1");
    if opts.quick {
        cmd.arg("--quick");
    }
    if let Some(s) = opts.soak {
        cmd.args(["--soak", "--soak-seconds", &s.to_string()]);
    }
    for c in &opts.only {
        use clap::ValueEnum;
        cmd.arg("--only").arg(c.to_possible_value().expect("no skipped variants").get_name());
    }
    Err(cmd.exec()).context("running the release xtask")
}

fn measure(env: &Env, plan: &Plan, only: &[Comparison], r: &mut Results) {
    let sip_lb_ok = r.skipped_sip_lb.is_none();
    let wanted = |c: Comparison| only.is_empty() || only.contains(&c);
    let kinds = |with_null: bool| {
        let mut k = Vec::new();
        if sip_lb_ok {
            k.push(Kind::SipLb);
        }
        k.push(Kind::Kamailio);
        if with_null {
            k.push(Kind::Null);
        }
        k
    };
    // Alternate the order each round so drift on a noisy machine hits both.
    let rotated = |k: &[Kind], round: usize| {
        let mut v = k.to_vec();
        if round % 2 == 1 {
            v.reverse();
        }
        v
    };
    let note = |r: &mut Results, what: String, e: anyhow::Error| {
        eprintln!("bench: {what} FAILED: {e:#}");
        r.errors.push(format!("{what}: {e:#}"));
    };

    // 1 (and 4): CPU per forwarded message at fixed call rates, 1 worker / 1 child.
    for &rate in plan.cpu_rates.iter().filter(|_| wanted(Comparison::Cpu)) {
        for round in 0..plan.cpu_rounds {
            for kind in rotated(&kinds(false), round) {
                let what = format!("calls: {} at {rate} calls/s, round {}", kind.label(1), round + 1);
                eprintln!("bench: {what}");
                match calls::run(env, kind, 1, rate, plan.cpu_seconds, 1, &format!("cpu-{rate}-{round}")) {
                    Ok(c) => r.cpu.push(c),
                    Err(e) => note(r, what, e),
                }
            }
        }
    }
    // 5: ordering with 2 workers / 2 children; two UACs so there are several flows.
    for &rate in plan.order_rates.iter().filter(|_| wanted(Comparison::Order)) {
        for kind in kinds(false) {
            let what = format!("ordering: {} at {rate} calls/s", kind.label(2));
            eprintln!("bench: {what}");
            match calls::run(env, kind, 2, rate, plan.order_seconds, 2, &format!("order-{rate}")) {
                Ok(c) => r.order.push(c),
                Err(e) => note(r, what, e),
            }
        }
    }
    // 2: max forwarding rate.
    for round in (0..plan.blast_rounds).filter(|_| wanted(Comparison::Rate) || wanted(Comparison::Latency)) {
        for workers in [1, 2] {
            for kind in rotated(&kinds(true), round) {
                let what = format!("max rate: {}, round {}", kind.label(workers), round + 1);
                eprintln!("bench: {what}");
                match packets::max_rate(
                    env,
                    Ground::Loopback,
                    kind,
                    workers,
                    plan.blast_seconds,
                    &format!("rate-{round}"),
                ) {
                    Ok(x) => r.rates.push(x),
                    Err(e) => note(r, what, e),
                }
            }
        }
    }
    // 3: latency at 50% of each forwarder's measured maximum, with a baseline
    // (blaster straight to a sink) at the same rate just before.
    for &workers in plan.latency_workers.iter().filter(|_| wanted(Comparison::Latency)) {
        for kind in kinds(true) {
            let max: Vec<f64> =
                r.rates.iter().filter(|x| x.kind == kind && x.workers == workers).map(|x| x.rate).collect();
            if max.is_empty() {
                continue;
            }
            let rate = 0.5 * max.iter().sum::<f64>() / max.len() as f64;
            let what = format!("latency: {} at {rate:.0} msg/s", kind.label(workers));
            eprintln!("bench: {what}");
            // sip-lb runs three times at its rate: pinned (as everywhere in
            // the bench), with --pin off and with busy polling, each after its
            // own baseline.
            let variants: &[Kind] =
                if kind == Kind::SipLb { &[Kind::SipLb, Kind::SipLbUnpinned, Kind::SipLbBusyPoll] } else { &[kind] };
            for &k in variants {
                let run =
                    packets::latency(env, Ground::Loopback, None, workers, rate, plan.latency_seconds, "lat-base")
                        .and_then(|base| {
                            let at = Ground::Loopback;
                            Ok((packets::latency(env, at, Some(k), workers, rate, plan.latency_seconds, "lat")?, base))
                        });
                match run {
                    Ok(pair) => r.latency.push(pair),
                    Err(e) => note(r, format!("{what} ({})", k.name()), e),
                }
            }
        }
    }
    // 6: machine-wide CPU per message in network namespaces, against the lb
    // namespace as a plain IP router.
    if wanted(Comparison::Net) || wanted(Comparison::NetPackets) {
        match netlab::Net::create() {
            Ok(net) => {
                if wanted(Comparison::Net) {
                    net_comparison(env, plan, &net, r, sip_lb_ok);
                }
                if wanted(Comparison::NetPackets) {
                    net_packets(env, plan, &net, r, sip_lb_ok);
                }
            }
            Err(e) => {
                eprintln!("bench: netns comparisons FAILED: {e:#}");
                r.errors.push(format!("netns comparisons: {e:#}"));
            }
        }
    }
    // 8: machine-wide CPU during a flood, shield on vs off, rotating order.
    if wanted(Comparison::ShieldFlood) && sip_lb_ok {
        shield_flood(plan, r);
    }
    // The kernel-path floor for comparison 1: the same per-message CPU figure
    // with the blaster at a fixed rate, where the null forwarder can take part.
    for (i, &rate) in plan.fixed_rates.iter().enumerate().filter(|_| wanted(Comparison::Fixed)) {
        for kind in rotated(&kinds(true), i) {
            let what = format!("fixed rate: {} at {rate} msg/s", kind.label(1));
            eprintln!("bench: {what}");
            match packets::latency(env, Ground::Loopback, Some(kind), 1, rate as f64, plan.fixed_seconds, "fixed") {
                Ok(x) => r.fixed.push(x),
                Err(e) => note(r, what, e),
            }
        }
    }
}

fn net_comparison(env: &Env, plan: &Plan, net: &netlab::Net, r: &mut Results, sip_lb_ok: bool) {
    use netlab::Contender;
    let mut contenders = vec![Contender::Router];
    if sip_lb_ok {
        contenders.extend([
            Contender::Balancer(Kind::SipLb),
            Contender::Balancer(Kind::SipLbXdp),
            Contender::Balancer(Kind::SipLbAfxdp),
        ]);
        if env.baseline.is_some() {
            contenders.push(Contender::Balancer(Kind::BaselineXdp));
        }
    }
    contenders.push(Contender::Balancer(Kind::Kamailio));
    for &rate in &plan.net_rates {
        for round in 0..plan.net_rounds {
            let mut order = contenders.clone();
            let n = order.len();
            order.rotate_left(round % n);
            for c in order {
                let what = format!("netns: {} at {rate} calls/s, round {}", c.name(), round + 1);
                eprintln!("bench: {what}");
                match netlab::run(env, net, c, rate, plan.net_seconds, round) {
                    Ok(x) => r.net.push(x),
                    Err(e) => {
                        eprintln!("bench: {what} FAILED: {e:#}");
                        r.errors.push(format!("{what}: {e:#}"));
                    }
                }
            }
        }
    }
}

/// Comparison 7: the blaster in the netns topology. Max rate with 1 and 2
/// workers, then machine-wide CPU per datagram at a fixed rate (rounds in
/// rotating order) with the lb namespace routing straight to a sink as the
/// baseline ("direct").
fn net_packets(env: &Env, plan: &Plan, net: &netlab::Net, r: &mut Results, sip_lb_ok: bool) {
    let at = Ground::Net(net);
    let mut kinds = Vec::new();
    if sip_lb_ok {
        kinds.extend([Kind::SipLb, Kind::SipLbXdp, Kind::SipLbAfxdp, Kind::AfxdpNull]);
        if env.baseline.is_some() {
            kinds.push(Kind::BaselineAfxdp);
        }
    }
    kinds.push(Kind::Null);
    for workers in [1, 2] {
        for &kind in &kinds {
            let what = format!("netns max rate: {}", kind.label(workers));
            eprintln!("bench: {what}");
            match packets::max_rate(env, at, kind, workers, plan.net_blast_seconds, "net-rate") {
                Ok(x) => r.net_rates.push(x),
                Err(e) => {
                    eprintln!("bench: {what} FAILED: {e:#}");
                    r.errors.push(format!("{what}: {e:#}"));
                }
            }
        }
    }
    let mut fixed: Vec<Option<Kind>> = vec![None];
    fixed.extend(kinds.iter().copied().map(Some));
    fixed.push(Some(Kind::Kamailio));
    let rate = plan.net_fixed_rate;
    for round in 0..plan.net_fixed_rounds {
        let mut order = fixed.clone();
        let n = order.len();
        order.rotate_left(round % n);
        for kind in order {
            let what = format!("netns fixed rate: {} at {rate:.0} msg/s", kind.map_or("direct".into(), |k| k.label(2)));
            eprintln!("bench: {what}");
            match packets::latency(env, at, kind, 2, rate, plan.net_fixed_seconds, "net-fixed") {
                Ok(x) => r.net_fixed.push(x),
                Err(e) => {
                    eprintln!("bench: {what} FAILED: {e:#}");
                    r.errors.push(format!("{what}: {e:#}"));
                }
            }
        }
    }
}

fn shield_flood(plan: &Plan, r: &mut Results) {
    let mut lab = match shieldflood::Lab::create() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bench: shield-flood topology FAILED: {e:#}");
            r.errors.push(format!("shield-flood topology: {e:#}"));
            return;
        }
    };
    for round in 0..plan.flood_rounds {
        let mut order = shieldflood::Mode::ALL.to_vec();
        order.rotate_left(round % shieldflood::Mode::ALL.len());
        for mode in order {
            let what = format!("shield flood: {} at {:.0} frames/s, round {}", mode.name(), plan.flood_pps, round + 1);
            eprintln!("bench: {what}");
            match shieldflood::run(&mut lab, mode, plan.flood_pps, plan.flood_seconds, round) {
                Ok(x) => r.shield_flood.push(x),
                Err(e) => {
                    eprintln!("bench: {what} FAILED: {e:#}");
                    r.errors.push(format!("{what}: {e:#}"));
                }
            }
        }
    }
}

/// `n` distinct free UDP ports on 127.0.0.1 (held open until all are chosen).
pub fn free_addrs(n: usize) -> Result<Vec<SocketAddr>> {
    let socks = (0..n).map(|_| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))).collect::<std::io::Result<Vec<_>>>()?;
    Ok(socks.iter().map(|s| s.local_addr()).collect::<std::io::Result<Vec<_>>>()?)
}

/// Installs missing Debian packages, saying which and why.
fn ensure_packages(wanted: &[(&str, &str)]) -> Result<()> {
    let installed = |p: &str| {
        Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", p])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
    };
    let missing: Vec<_> = wanted.iter().filter(|(p, _)| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (p, why) in &missing {
        eprintln!("bench: installing Debian package {p} ({why})");
    }
    let ok = Command::new("apt-get").args(["update", "-qq"]).status()?.success()
        && Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(missing.iter().map(|(p, _)| *p))
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?
            .success();
    if !ok {
        bail!("apt-get could not install {:?}", missing.iter().map(|(p, _)| *p).collect::<Vec<_>>());
    }
    Ok(())
}
