//! `cargo xtask run` with no arguments: sip-lb on loopback in front of two SIPp UAS backends,
//! a SIPp UAC sending calls through it for a few seconds, then a summary. Every process is
//! stopped by PID (the guards' Drop), also on error.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sip_lb_tests::ports::{free_udp_addrs, wait_udp_bound};
use sip_lb_tests::process::{describe_status, scratch_dir, tail, ChildGuard};
use sip_lb_tests::sipp::{ensure_sipp, shared_call_ids, Scenario, Uac, UacOptions, Uas};

/// Calls per second the UAC offers.
const RATE: u64 = 100;
/// Lines of sip-lb's stderr shown after it exits (its per-worker counters are at the end).
const STDERR_TAIL: usize = 25;

/// Run the demo for `seconds` seconds of traffic (at least 1).
pub fn run_demo(sip_lb_bin: &Path, seconds: u64) -> Result<()> {
    let seconds = seconds.max(1);
    if !sip_lb_bin.is_file() {
        bail!("{} not found; build it first (cargo build -p sip-lb)", sip_lb_bin.display());
    }
    let sipp = ensure_sipp()?;
    let dir = scratch_dir("demo")?;
    let [lb_addr, b1_addr, b2_addr]: [SocketAddr; 3] = free_udp_addrs(3)?.try_into().expect("three addresses");

    println!("demo: SIPp is {}; logs go to {}", sipp.display(), dir.display());
    println!("demo: starting two SIPp UAS backends on {b1_addr} and {b2_addr}");
    let b1 = Uas::start("backend1", b1_addr, &Scenario::uas_call(), &dir)?;
    let b2 = Uas::start("backend2", b2_addr, &Scenario::uas_call(), &dir)?;

    println!("demo: starting sip-lb on {lb_addr} with 2 workers");
    let mut cmd = Command::new(sip_lb_bin);
    cmd.args(["run", "--listen", &lb_addr.to_string(), "--workers", "2"]).args([
        "--backend",
        &b1_addr.to_string(),
        "--backend",
        &b2_addr.to_string(),
    ]);
    let mut lb = ChildGuard::spawn("sip-lb", cmd, &dir)?;
    wait_udp_bound(lb_addr.port(), Duration::from_secs(10), || lb.ensure_running()).context("sip-lb did not start")?;

    let calls = RATE * seconds;
    println!("demo: SIPp UAC sends {calls} calls at {RATE} calls/s through sip-lb (INVITE, ACK, 1 s pause, BYE)");
    let mut opts = UacOptions::new("uac", Scenario::uac_call(), lb_addr);
    opts.rate = RATE as f64;
    opts.calls = calls;
    opts.pause = Duration::from_secs(1);
    opts.timeout = Duration::from_secs(seconds + 30);
    opts.full_messages = false;
    let report = Uac::start(opts, &dir)?.wait();

    println!("demo: stopping sip-lb (SIGTERM, pid {})", lb.pid());
    let lb_status = lb.stop()?;
    let report = report?;
    let (l1, l2) = (b1.received()?, b2.received()?);
    let shared = shared_call_ids(&[("backend1", &l1), ("backend2", &l2)]);

    println!("demo: sip-lb exited with {}; last lines of its stderr:", describe_status(lb_status));
    println!("{}", indent(&tail(&lb.stderr(), STDERR_TAIL)));
    println!("demo: summary");
    println!("  calls attempted  {}", report.created());
    println!("  calls succeeded  {}", report.successful());
    println!("  calls failed     {}", report.failed());
    let reasons = report.failure_reasons();
    if !reasons.is_empty() {
        println!("  failure reasons  {reasons}");
    }
    println!(
        "  backend1 {b1_addr}  {} calls ({} INVITE, {} ACK, {} BYE received)",
        l1.calls_with("INVITE"),
        l1.count("INVITE"),
        l1.count("ACK"),
        l1.count("BYE")
    );
    println!(
        "  backend2 {b2_addr}  {} calls ({} INVITE, {} ACK, {} BYE received)",
        l2.calls_with("INVITE"),
        l2.count("INVITE"),
        l2.count("ACK"),
        l2.count("BYE")
    );
    println!("  Call-IDs seen at both backends: {}", shared.len());
    println!("  SIPp {} ({}); logs in {}", describe_status(report.status), report.exit_meaning(), dir.display());

    if report.successful() == 0 || report.failed() > 0 {
        bail!("{} of {} calls failed", report.created() - report.successful(), report.created());
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
}
