//! The lab (`cargo xtask run` with no arguments, `tests/src/lab/`), run briefly: sip-lb with XDP
//! on a veth "NIC" in front of two Kamailio registrars and two Kamailio redirect servers sharing
//! one SQLite location table, SIPp registering 200 users and then calling them.
//!
//! Needs root, iproute2, ethtool, Kamailio (+ SQLite modules), sqlite3 and SIPp (the lab
//! installs missing Debian packages), and `target/debug/sip-lb` (`cargo xtask test` builds it).

use std::process::Command;

use sip_lb_tests::lab::{self, BackendRole, LabOptions};

#[test]
fn lab_registers_redirects_spreads_and_cleans_up() {
    let bin = sip_lb_tests::sip_lb_binary().expect("sip-lb binary");
    // The socket path with XDP steering: what the per-core assertions below are about
    // (`afxdp_lab` runs the lab over AF_XDP).
    let opts =
        LabOptions { seconds: 8, register_rate: 200, invite_rate: 100, datapath: "socket", ..LabOptions::default() };
    let summary = lab::run_lab(&bin, opts).expect("the lab runs"); // prints the summary

    // Registrations: every user, all OK, over both registrars, all in the shared table.
    let r = &summary.registrations;
    assert!(r.attempted >= 200, "{summary}");
    assert_eq!(r.ok, r.attempted, "{summary}");
    assert_eq!(r.failed, 0, "{summary}");
    assert_eq!(summary.location_rows, summary.users, "{summary}");
    let regs: Vec<_> = summary.of_role(BackendRole::Registrar).collect();
    assert_eq!(regs.len(), 2);
    assert_eq!(regs.iter().map(|b| b.handled).sum::<u64>(), r.ok, "{summary}");
    for b in &regs {
        assert!(b.handled > 0, "registrar {} got nothing:\n{summary}", b.name);
        assert!(b.lb_requests >= b.handled, "sip-lb's counter disagrees for {}:\n{summary}", b.name);
    }

    // INVITEs: all answered 302, with the Contact the callee registered (shared location DB,
    // written by the registrars, read by the redirect servers), over both redirect servers.
    let i = &summary.invites;
    assert!(i.attempted >= 200, "{summary}");
    assert_eq!(i.ok, i.attempted, "{summary}");
    assert_eq!(i.failed, 0, "{summary}");
    assert_eq!(summary.redirects_seen, i.ok, "{summary}");
    assert_eq!(summary.redirects_right_contact, summary.redirects_seen, "{summary}");
    let rdrs: Vec<_> = summary.of_role(BackendRole::Redirect).collect();
    assert_eq!(rdrs.len(), 2);
    assert_eq!(rdrs.iter().map(|b| b.handled).sum::<u64>(), i.ok, "{summary}");
    for b in &rdrs {
        assert!(b.handled > 0, "redirect server {} got nothing:\n{summary}", b.name);
        // INVITE + ACK per call reach the same server (Call-ID hash).
        assert!(b.lb_requests >= 2 * b.handled, "INVITE/ACK split for {}:\n{summary}", b.name);
    }

    // Per-core split. The XDP program must be on the lab NIC (`--iface lb0`): a run where it
    // did not attach fails here. Every request is steered to its Call-ID's worker, so although
    // SIPp sends everything over one UDP 5-tuple, every worker (core) forwards requests. At the
    // lab's rates XDP stays below its default redirect threshold: it sees every SIP datagram and
    // leaves it on the receiving CPU, and the reuseport selector does the steering.
    assert!(summary.xdp.starts_with("attached"), "XDP did not attach to the lab NIC: {}\n{summary}", summary.xdp);
    assert!(summary.xdp_below_threshold > 0, "{summary}");
    assert!(summary.reuseport_steered >= summary.xdp_steered + summary.xdp_below_threshold, "{summary}");
    for w in &summary.workers {
        assert!(w.requests > 0, "worker {} forwarded no request:\n{summary}", w.worker);
    }
    // Per-core counters were collected.
    assert!(!summary.workers.is_empty(), "{summary}");
    assert!(summary.workers.iter().map(|w| w.rx).sum::<u64>() > 0, "{summary}");

    // Cleanup: every namespace and process gone.
    assert_eq!(summary.namespaces.len(), 3, "{summary}");
    assert!(summary.pids.len() >= 4 + 1 + 2, "kamailio trees, sip-lb and two SIPp runs: {:?}", summary.pids);
    let listed = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let listed = String::from_utf8_lossy(&listed.stdout);
    for ns in &summary.namespaces {
        assert!(
            !listed.lines().any(|l| l.split_whitespace().next() == Some(ns.as_str())),
            "namespace {ns} left behind"
        );
    }
    let alive: Vec<u32> = summary.pids.iter().copied().filter(|&p| lab::process_alive(p)).collect();
    assert!(alive.is_empty(), "processes left behind: {alive:?}");
    assert!(summary.problems().is_empty(), "{summary}");
}
