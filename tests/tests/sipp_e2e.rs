//! End-to-end through the real `sip-lb` binary with SIPp on loopback.
//!
//! The binary is not built by this crate (a test can only use `CARGO_BIN_EXE_*` of its own
//! package): `cargo xtask test` builds `sip-lb` first; by hand run `cargo build -p sip-lb`.
//! [`sip_lb_binary`] says where it is looked up (`$SIP_LB_BIN` overrides).
//!
//! Logs of every run (SIPp message logs, statistics, sip-lb stderr) stay in
//! `$TMPDIR/sip-lb-tests/<test>-...`; failure messages print the path.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use sip_lb_tests::ports::{free_udp_addrs, wait_udp_bound};
use sip_lb_tests::process::{scratch_dir, sip_lb_binary, ChildGuard};
use sip_lb_tests::sipp::{ensure_sipp, run_uac, shared_call_ids, CallLog, Scenario, Uac, UacOptions, UacReport, Uas};

/// The tests share two cores with sip-lb and four to six SIPp processes: run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// `sip-lb run --listen <listen> <extra>... --workers 2`, waiting until the port is bound.
fn start_sip_lb(dir: &Path, listen: SocketAddr, extra: &[String]) -> Result<ChildGuard> {
    let bin = sip_lb_binary()?;
    let mut cmd = Command::new(&bin);
    cmd.args(["run", "--listen", &listen.to_string(), "--workers", "2"]).args(extra);
    if std::env::var_os("SIP_LB_LOG").is_none() {
        cmd.env("SIP_LB_LOG", "info");
    }
    let mut lb = ChildGuard::spawn("sip-lb", cmd, dir)?;
    wait_udp_bound(listen.port(), Duration::from_secs(10), || lb.ensure_running())
        .with_context(|| format!("start {} on {listen}", bin.display()))?;
    Ok(lb)
}

fn pool_args(flag: &str, pool: &[&Uas]) -> Vec<String> {
    pool.iter().flat_map(|u| [flag.to_owned(), u.addr().to_string()]).collect()
}

/// Everything a failure message should carry: the UAC's view, the first unexpected messages,
/// sip-lb's stderr, and where the logs are.
fn context(dir: &Path, lb: &ChildGuard, reports: &[&UacReport]) -> String {
    let mut s = String::new();
    for r in reports {
        let _ = writeln!(s, "UAC: {r}\n{}", r.scenario_screen());
        let errors = r.errors_head(12);
        if !errors.is_empty() {
            let _ = writeln!(s, "UAC -trace_err head:\n{errors}");
        }
    }
    let _ = writeln!(s, "sip-lb stderr tail:\n{}", lb.stderr_tail(30));
    let _ = writeln!(s, "logs: {}", dir.display());
    s
}

/// `e` first, then the run's context (the reverse of `anyhow::Context`, which prints last).
fn with_ctx(e: anyhow::Error, ctx: String) -> anyhow::Error {
    anyhow::anyhow!("{e:#}\n\n{ctx}")
}

/// The full bytes each backend logged for `call_id`, for evidence.
fn evidence(call_id: &str, backends: &[&Uas]) -> String {
    let mut s = String::new();
    for b in backends {
        if let Ok(msgs) = b.full_messages(call_id) {
            for m in msgs.iter().take(3) {
                let _ = writeln!(s, "--- at {} ({}):\n{m}", b.name(), b.addr());
            }
        }
    }
    s
}

fn ensure_uac_ok(report: &UacReport, calls: u64, ctx: impl Fn() -> String) -> Result<()> {
    ensure!(
        report.successful() == calls && report.failed() == 0 && report.exit_code() == Some(0),
        "expected {calls} successful calls, 0 failed, exit 0; got {report}\n{}",
        ctx()
    );
    Ok(())
}

/// Each backend in `pool` saw at least `min_share` of `total` Call-IDs carrying `label`.
fn ensure_spread(pool: &[(&Uas, &CallLog)], label: &str, total: usize, min_share: f64) -> Result<String> {
    let mut split = Vec::new();
    for (uas, log) in pool {
        let n = log.calls_with(label);
        split.push(format!("{}={n}", uas.name()));
        ensure!(
            n as f64 >= total as f64 * min_share,
            "{} got {n} of {total} {label} calls, less than {:.0}%",
            uas.name(),
            min_share * 100.0
        );
    }
    Ok(split.join(" "))
}

fn ensure_no_shared(logs: &[(&Uas, &CallLog)]) -> Result<()> {
    let named: Vec<(&str, &CallLog)> = logs.iter().map(|(u, l)| (u.name(), *l)).collect();
    let shared = shared_call_ids(&named);
    if let Some((id, names)) = shared.iter().next() {
        let uases: Vec<&Uas> = logs.iter().map(|(u, _)| *u).collect();
        bail!(
            "{} Call-IDs reached more than one backend; first: {id} at {names:?}\n{}",
            shared.len(),
            evidence(id, &uases)
        );
    }
    Ok(())
}

/// 200 INVITE calls at 100 calls/s through sip-lb to two UAS backends. All succeed; both
/// backends get at least 20% of the calls; INVITE, ACK and BYE of a call reach one backend.
#[test]
fn invite_dialogs_stick_to_one_backend() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const CALLS: u64 = 200;
    ensure_sipp()?;
    let dir = scratch_dir("invite")?;
    let [lb_addr, b1_addr, b2_addr]: [SocketAddr; 3] = free_udp_addrs(3)?.try_into().unwrap();

    let b1 = Uas::start("backend1", b1_addr, &Scenario::uas_call(), &dir)?;
    let b2 = Uas::start("backend2", b2_addr, &Scenario::uas_call(), &dir)?;
    let mut lb = start_sip_lb(&dir, lb_addr, &pool_args("--backend", &[&b1, &b2]))?;

    let mut opts = UacOptions::new("uac", Scenario::uac_call(), lb_addr);
    opts.calls = CALLS;
    opts.rate = 100.0;
    let report = run_uac(opts, &dir)?;
    lb.ensure_running().with_context(|| format!("sip-lb died during the run; UAC: {report}"))?;
    let ctx = || context(&dir, &lb, &[&report]);
    ensure_uac_ok(&report, CALLS, ctx)?;

    let l1 = b1.received()?;
    let l2 = b2.received()?;
    let pool = [(&b1, &l1), (&b2, &l2)];
    ensure_no_shared(&pool).map_err(|e| with_ctx(e, ctx()))?;
    let split = ensure_spread(&pool, "INVITE", CALLS as usize, 0.2).map_err(|e| with_ctx(e, ctx()))?;
    ensure!(
        l1.len() + l2.len() == CALLS as usize,
        "backends saw {} + {} Call-IDs, expected {CALLS} in total\n{}",
        l1.len(),
        l2.len(),
        ctx()
    );
    for (uas, log) in pool {
        if let Some((id, got)) = log.incomplete(&["INVITE", "ACK", "BYE"]).first() {
            bail!(
                "{}: call {id} received {got:?}, expected INVITE, ACK and BYE\n{}\n{}",
                uas.name(),
                evidence(id, &[&b1, &b2]),
                ctx()
            );
        }
    }
    eprintln!("invite: {report}; split {split}; logs {}", dir.display());
    Ok(())
}

/// REGISTERs go to the `--registrar` pool, INVITE dialogs to the `--backend` pool, never mixed.
/// A REGISTER UAC (100 registrations) and an INVITE UAC (60 calls) run at the same time.
#[test]
fn register_goes_to_registrars_only() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const REGISTERS: u64 = 100;
    const CALLS: u64 = 60;
    ensure_sipp()?;
    let dir = scratch_dir("register")?;
    let addrs = free_udp_addrs(5)?;

    let b1 = Uas::start("backend1", addrs[1], &Scenario::uas_call(), &dir)?;
    let b2 = Uas::start("backend2", addrs[2], &Scenario::uas_call(), &dir)?;
    let r1 = Uas::start("registrar1", addrs[3], &Scenario::uas_registrar(), &dir)?;
    let r2 = Uas::start("registrar2", addrs[4], &Scenario::uas_registrar(), &dir)?;
    let mut extra = pool_args("--backend", &[&b1, &b2]);
    extra.extend(pool_args("--registrar", &[&r1, &r2]));
    let mut lb = start_sip_lb(&dir, addrs[0], &extra)?;

    let mut reg = UacOptions::new("uac-register", Scenario::uac_register(), addrs[0]);
    reg.calls = REGISTERS;
    reg.rate = 50.0;
    let mut inv = UacOptions::new("uac-invite", Scenario::uac_call(), addrs[0]);
    inv.calls = CALLS;
    inv.rate = 30.0;
    let reg = Uac::start(reg, &dir)?;
    let inv = Uac::start(inv, &dir)?;
    let reg = reg.wait()?;
    let inv = inv.wait()?;
    lb.ensure_running().with_context(|| format!("sip-lb died during the run; UACs: {reg}; {inv}"))?;
    let ctx = || context(&dir, &lb, &[&reg, &inv]);
    ensure_uac_ok(&reg, REGISTERS, ctx).context("REGISTER UAC")?;
    ensure_uac_ok(&inv, CALLS, ctx).context("INVITE UAC")?;

    let (lb1, lb2, lr1, lr2) = (b1.received()?, b2.received()?, r1.received()?, r2.received()?);
    let all = [&b1, &b2, &r1, &r2];
    for (uas, log, wrong) in
        [(&b1, &lb1, "REGISTER"), (&b2, &lb2, "REGISTER"), (&r1, &lr1, "INVITE"), (&r2, &lr2, "INVITE")]
    {
        if let Some((id, _)) = log.calls.iter().find(|(_, got)| got.iter().any(|l| l == wrong)) {
            bail!(
                "{} received {} {wrong} calls; first: {id}\n{}\n{}",
                uas.name(),
                log.calls_with(wrong),
                evidence(id, &all),
                ctx()
            );
        }
    }
    let registrars = [(&r1, &lr1), (&r2, &lr2)];
    let backends = [(&b1, &lb1), (&b2, &lb2)];
    ensure_no_shared(&[(&b1, &lb1), (&b2, &lb2), (&r1, &lr1), (&r2, &lr2)]).map_err(|e| with_ctx(e, ctx()))?;
    let reg_split = ensure_spread(&registrars, "REGISTER", REGISTERS as usize, 0.2).map_err(|e| with_ctx(e, ctx()))?;
    let inv_split = ensure_spread(&backends, "INVITE", CALLS as usize, 0.2).map_err(|e| with_ctx(e, ctx()))?;
    ensure!(
        lr1.calls_with("REGISTER") + lr2.calls_with("REGISTER") == REGISTERS as usize,
        "registrars saw {} + {} REGISTER Call-IDs, expected {REGISTERS}\n{}",
        lr1.calls_with("REGISTER"),
        lr2.calls_with("REGISTER"),
        ctx()
    );
    eprintln!("register: {reg}; split {reg_split}; invite: {inv}; split {inv_split}; logs {}", dir.display());
    Ok(())
}
