//! The lab (`cargo xtask run`, `tests/src/lab/`) over the AF_XDP data path,
//! its default: SIPp clients -- sip-lb with AF_XDP on its client-facing veth
//! -- the Kamailio farm behind its other veth. Requests arrive by AF_XDP and
//! are handled by the AF_XDP workers; the farm is behind another interface,
//! so they leave by the socket path (counted), and the farm's answers come
//! back through the kernel. Everything must succeed and be cleaned up.
//! Root, Kamailio and SIPp as for `lab.rs`.

use sip_lb_tests::lab::{self, LabOptions};

#[test]
fn lab_runs_over_afxdp() {
    let bin = sip_lb_tests::sip_lb_binary().expect("sip-lb binary");
    let opts = LabOptions { seconds: 6, register_rate: 200, invite_rate: 100, ..LabOptions::default() };
    assert_eq!(opts.datapath, "afxdp", "the lab's default data path");
    let summary = lab::run_lab(&bin, opts).expect("the lab runs"); // prints the summary
    assert!(summary.problems().is_empty(), "{summary}");
    let q = summary.afxdp_queues.first().unwrap_or_else(|| panic!("no AF_XDP queue in the summary:\n{summary}"));
    // Every REGISTER and INVITE (and ACK) from the clients came in by AF_XDP.
    let requests = summary.registrations.ok + summary.invites.ok;
    assert!(q.rx >= requests, "queue {} received {} frames for {requests} requests:\n{summary}", q.queue, q.rx);
    assert_eq!(q.handoff_full, 0, "{summary}");
    // The AF_XDP workers (after the 2 socket workers) forwarded requests.
    let by_afxdp: u64 = summary.workers.iter().filter(|w| w.worker >= 2).map(|w| w.requests).sum();
    assert!(by_afxdp >= requests, "AF_XDP workers forwarded {by_afxdp} of {requests} requests:\n{summary}");
    assert!(summary.afxdp_tx_socket >= requests, "the farm is behind the other NIC: socket path\n{summary}");
    assert!(summary.leftover_namespaces.is_empty() && summary.leftover_pids.is_empty(), "{summary}");
}
