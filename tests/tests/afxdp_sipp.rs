//! SIPp through the AF_XDP data path (root; copy mode on veth): REGISTER
//! transactions to a registrar and INVITE/ACK/BYE calls to a proxy farm
//! member, all UAs in the outside namespace of the one-armed topology
//! (`sip_lb_tests::afxdp`), sip-lb with `datapath = "afxdp"` on its veth.
//! Every call and registration must succeed, and the AF_XDP path (not the
//! socket path) must have carried them.

use std::time::Duration;

use sip_lb_tests::afxdp::{self, sa, OneArm, CLIENT4, FARM4, LB4};
use sip_lb_tests::lb::Launch;
use sip_lb_tests::netns;
use sip_lb_tests::ports::free_tcp_addr;
use sip_lb_tests::process::scratch_dir;
use sip_lb_tests::sipp::{ensure_sipp, Scenario, Uac, UacOptions, Uas};

#[test]
fn sipp_register_and_invite_calls_succeed_over_afxdp() {
    // SAFETY: no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "AF_XDP tests need root");
    ensure_sipp().expect("SIPp");
    const REGISTERS: u64 = 60;
    const CALLS: u64 = 60;
    let arm = OneArm::new().expect("topology");
    let dir = scratch_dir("afxdp-sipp").unwrap();
    let (uas_addr, reg_addr) = (sa(FARM4[0], 5060), sa(FARM4[1], 5060));
    // SIPp runs on one thread inside the outside namespace for the whole
    // test: the kit's children die with the thread that spawned them
    // (PR_SET_PDEATHSIG).
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (out, d) = (arm.out.name().to_owned(), dir.clone());
    let l4 = sa(LB4, 5060);
    let sipp = std::thread::spawn(move || -> anyhow::Result<_> {
        netns::enter(&out)?;
        let _uas = Uas::start("uas", uas_addr, &Scenario::uas_call(), &d)?;
        let _registrar = Uas::start("registrar", reg_addr, &Scenario::uas_registrar(), &d)?;
        ready_tx.send(())?;
        go_rx.recv()?;
        let mut reg = UacOptions::new("uac-register", Scenario::uac_register(), l4);
        reg.local = sa(CLIENT4, 0);
        reg.calls = REGISTERS;
        reg.rate = 40.0;
        let mut inv = UacOptions::new("uac-invite", Scenario::uac_call(), l4);
        inv.local = sa(CLIENT4, 0);
        inv.calls = CALLS;
        inv.rate = 30.0;
        let (reg, inv) = (Uac::start(reg, &d)?, Uac::start(inv, &d)?);
        Ok((reg.wait()?, inv.wait()?))
    });
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        panic!("SIPp UAS and registrar did not start: {:?}", sipp.join().map(|r| r.map(|_| ())));
    }

    netns::enter(arm.lb.name()).unwrap();
    let control = free_tcp_addr().unwrap();
    let text = format!(
        "listen = [\"{l4}\"]\nworkers = 2\npin = \"off\"\nmetrics = \"{control}\"\niface = \"{}\"\ndatapath = \"afxdp\"\n\n\
         [[pool]]\nname = \"proxies\"\ndefault = true\nbackends = [\"{uas_addr}\"]\n\n\
         [[pool]]\nname = \"registrars\"\nmethods = [\"REGISTER\"]\nbackends = [\"{reg_addr}\"]\n",
        arm.lb_if
    );
    let mut lb = Launch::config("afxdp-sipp", &text, &[l4], control).start().expect("sip-lb with AF_XDP");
    go_tx.send(()).unwrap();
    let (reg, inv) = sipp.join().expect("SIPp thread").expect("SIPp UACs");
    lb.child.ensure_running().expect("sip-lb still running");
    assert_eq!((reg.successful(), reg.failed()), (REGISTERS, 0), "REGISTER UAC: {reg}\n{}", reg.failure_reasons());
    assert_eq!((inv.successful(), inv.failed()), (CALLS, 0), "INVITE UAC: {inv}\n{}", inv.failure_reasons());

    let m = lb.control.metrics().expect("/metrics");
    let sum = |name: &str| m.sum(name, &[]).unwrap_or(0.0) as u64;
    // Per call: INVITE, ACK, BYE and 100/180/200/200 at least; per REGISTER two messages.
    let frames = sum("sip_lb_afxdp_worker_tx_frames_total");
    assert!(frames >= 2 * REGISTERS + 6 * CALLS, "AF_XDP carried only {frames} frames:\n{}", m.text());
    assert_eq!(sum("sip_lb_afxdp_queue_handoff_full_total"), 0, "{}", m.text());
    lb.stop().expect("clean stop");
    let err = lb.child.stderr();
    assert_eq!(afxdp::summary_sum(&err, "worker", "tx_socket_unresolved"), 0, "{err}");
}
