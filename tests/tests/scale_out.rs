//! Scale-out (issue 15, docs/scale-out.md): two sip-lb nodes announce one VIP with BIRD, a
//! router spreads flows over them with ECMP (L4 hash), a farm of two backends sits behind.
//! Topology and BIRD configs: `sip_lb_tests::anycast`, `sip_lb_tests::bird`. Needs root.
//!
//! The tests share the 10.151.0.0/16 addresses inside their own namespaces and the machine's
//! two cores, so they run one at a time. Timings (BGP, failover) are printed, never asserted.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use sip_lb_tests::anycast::{farm, node_ip, vip, within, Anycast, Node, CLIENT};
use sip_lb_tests::sink::{wait_until, Sink};
use sip_lb_tests::sip::{call_id_of, cseq_of, SipRequest};
use sip_lb_tests::sipp::{shared_call_ids, CallLog, Scenario, Uac, UacOptions, UacReport, Uas};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> Result<MutexGuard<'static, ()>> {
    // SAFETY: no preconditions.
    ensure!(unsafe { libc::geteuid() } == 0, "needs root (namespaces, BIRD, TUN)");
    Ok(ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner()))
}

/// The topology with BGP up, both nodes announcing, the router on two next hops.
fn up(label: &str) -> Result<(Anycast, [Node; 2])> {
    let net = Anycast::new(label)?;
    let bgp = net.wait_bgp(Duration::from_secs(30))?;
    let nodes = [net.start_node(0, [1, 1])?, net.start_node(1, [1, 1])?];
    let ecmp = net.wait_next_hops(&[node_ip(0), node_ip(1)], Duration::from_secs(10))?;
    eprintln!("{label}: BGP established after {bgp:?}; two next hops {ecmp:?} after both nodes announced");
    Ok((net, nodes))
}

/// Two SIPp UAS (INVITE/ACK/BYE) at the farm's addresses.
fn uas_farm(net: &Anycast) -> Result<[Uas; 2]> {
    let [a, b] = farm();
    let s = Scenario::uas_call();
    within(net.farm.name(), || Ok([Uas::start("uas0", a, &s, &net.dir)?, Uas::start("uas1", b, &s, &net.dir)?]))
}

/// A UAC in the clients' namespace calling the VIP with one socket per call (`-t un`), so
/// the calls are distinct flows that the router spreads over the nodes.
fn uac(net: &Anycast, name: &str, rate: f64, calls: u64, pause: Duration) -> Result<Uac> {
    let mut o = UacOptions::new(name, Scenario::uac_call(), vip());
    o.local = SocketAddr::new(CLIENT.parse()?, 0);
    o.rate = rate;
    o.calls = calls;
    o.pause = pause;
    o.timeout = Duration::from_secs(60);
    o.recv_timeout = Duration::from_secs(10);
    o.full_messages = false;
    o.transport = Some("un".into());
    // One socket per call in progress: at most rate x (call length + retransmissions).
    o.extra = vec!["-max_socket".into(), "4000".into()];
    within(net.clients.name(), || Uac::start(o, &net.dir))
}

fn describe(r: &UacReport) -> String {
    format!(
        "created {}, successful {}, failed {} ({}); exit {:?}; errors:\n{}",
        r.created(),
        r.successful(),
        r.failed(),
        r.failure_reasons(),
        r.exit_code(),
        r.errors_head(10)
    )
}

/// Every Call-ID reached exactly one backend, and each got the whole call there.
/// Every call at exactly one backend, whole. `acks_may_be_lost`: calls allowed to lack only
/// their ACK (a node's death: an ACK for a 2xx sent into the blackout is gone, and only the
/// UAS's 200 retransmission would bring another, RFC 3261 §13.3.1.4; INVITE and BYE are
/// retransmitted by their transactions and must arrive).
fn check_farm(uas: &[Uas; 2], calls: u64, acks_may_be_lost: usize) -> Result<()> {
    let logs = [uas[0].received()?, uas[1].received()?];
    let shared = shared_call_ids(&[("uas0", &logs[0]), ("uas1", &logs[1])]);
    ensure!(shared.is_empty(), "{} calls reached both backends, e.g. {:?}", shared.len(), shared.iter().next());
    let total: usize = logs.iter().map(CallLog::len).sum();
    ensure!(total as u64 == calls, "the backends saw {total} calls, the UAC placed {calls}");
    let mut without_ack = 0;
    for (i, l) in logs.iter().enumerate() {
        let bad = l.incomplete(&["INVITE", "BYE"]);
        ensure!(bad.is_empty(), "uas{i}: {} incomplete calls, e.g. {:?}", bad.len(), bad.first());
        let no_ack = l.incomplete(&["INVITE", "ACK", "BYE"]);
        without_ack += no_ack.len();
        ensure!(
            without_ack <= acks_may_be_lost,
            "uas{i}: {} calls without their ACK (at most {acks_may_be_lost} allowed), e.g. {:?}",
            no_ack.len(),
            no_ack.first()
        );
    }
    if acks_may_be_lost > 0 {
        eprintln!("calls whose ACK was lost in the blackout: {without_ack} (at most {acks_may_be_lost} allowed)");
    }
    Ok(())
}

#[test]
fn bgp_brings_up_ecmp_and_config_digests_show_drift() -> Result<()> {
    let _one = serial()?;
    let (net, nodes) = up("scale-bgp")?;
    let bin = sip_lb_tests::sip_lb_binary()?;
    let offline = |path: &std::path::Path| -> Result<String> {
        let out = std::process::Command::new(&bin).arg("config-digest").arg("--config").arg(path).output()?;
        ensure!(out.status.success(), "config-digest: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8(out.stdout)?.trim().to_owned())
    };
    let digest = |n: &Node| -> Result<String> { Ok(n.cluster()?["digest"].as_str().context("digest")?.to_owned()) };
    let (d0, d1) = (digest(&nodes[0])?, digest(&nodes[1])?);
    ensure!(d0 == d1, "same routing, different digests: {d0} vs {d1}");
    ensure!(d0 == offline(&nodes[0].config)?, "the CLI digest differs from the running one");
    for n in &nodes {
        let m = n.metrics_text()?;
        ensure!(m.contains(&format!("sip_lb_config_info{{digest=\"{d0}\"}} 1")), "no config info in:\n{m}");
        ensure!(m.contains("sip_lb_cluster_vip_announced{vip=\"10.151.100.1\"} 1"), "VIP not announced:\n{m}");
    }

    // A node with no backend up withdraws the VIP, and announces it again with one.
    for b in farm() {
        let out = nodes[1].cli(&["drain", &b.to_string()])?;
        ensure!(out.status.success(), "drain {b}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let gone = net.wait_next_hops(&[node_ip(0)], Duration::from_secs(10))?;
    ensure!(nodes[1].cluster()?["announced"] == false, "node 1 still announces without backends");
    let out = nodes[1].cli(&["enable", &farm()[0].to_string()])?;
    ensure!(out.status.success(), "enable: {}", String::from_utf8_lossy(&out.stderr));
    let back = net.wait_next_hops(&[node_ip(0), node_ip(1)], Duration::from_secs(10))?;
    eprintln!("no backend up on node 1: withdrawn from the router in {gone:?}; one enabled: back in {back:?}");

    // Node 1 gets other weights (a botched rollout): its metrics show the drift.
    let text = std::fs::read_to_string(&nodes[1].config)?.replace("weight = 1 }]", "weight = 3 }]");
    std::fs::write(&nodes[1].config, text)?;
    let out = nodes[1].cli(&["reload"])?;
    ensure!(out.status.success(), "reload: {}", String::from_utf8_lossy(&out.stderr));
    let drifted = digest(&nodes[1])?;
    ensure!(drifted != d0, "a changed weight left the digest at {d0}");
    ensure!(drifted == offline(&nodes[1].config)?, "CLI and running digest disagree after the reload");
    let m = nodes[1].metrics_text()?;
    ensure!(m.contains(&format!("sip_lb_config_info{{digest=\"{drifted}\"}} 1")), "drift not in metrics:\n{m}");
    ensure!(digest(&nodes[0])? == d0, "node 0's digest moved");
    Ok(())
}

/// Sends one INVITE per Call-ID, CSeq `cseq`, from a socket inside `node`'s namespace to the
/// VIP (delivered locally: this node alone decides), paced in chunks, and waits until the
/// farm's sinks have them all.
fn through_one_node(node: &Node, ids: &[String], cseq: u64, sinks: &[Sink; 2], before: u64) -> Result<()> {
    let from = SocketAddr::new(node_ip(node.index).parse()?, 0);
    let sock = within(&node.ns, || Ok(UdpSocket::bind(from)?))?;
    let via = sock.local_addr()?;
    let got = || sinks.iter().map(Sink::count).sum::<u64>() - before;
    for (k, chunk) in ids.chunks(250).enumerate() {
        for id in chunk {
            sock.send_to(&SipRequest::new("INVITE", via, id).cseq(cseq).bytes(), vip())?;
        }
        let want = ((k * 250) + chunk.len()) as u64;
        wait_until(Duration::from_secs(10), || got() >= want)
            .with_context(|| format!("through node {}: {} of {want} reached the farm", node.index, got()))?;
    }
    Ok(())
}

#[test]
fn every_node_sends_every_call_id_to_the_same_backend() -> Result<()> {
    let _one = serial()?;
    let (net, nodes) = up("scale-agree")?;
    let [a, b] = farm();
    let sinks = within(net.farm.name(), || Ok([Sink::bind(a)?, Sink::bind(b)?]))?;
    let ids: Vec<String> = (0..10_000).map(|i| format!("agree-{i}-{:x}@scale.test", i * 7919)).collect();
    through_one_node(&nodes[0], &ids, 1, &sinks, 0)?;
    through_one_node(&nodes[1], &ids, 2, &sinks, ids.len() as u64)?;
    let mut owner: [HashMap<String, usize>; 2] = Default::default();
    for (i, s) in sinks.iter().enumerate() {
        for d in s.datagrams() {
            let id = call_id_of(&d.bytes).context("a forwarded request without Call-ID")?;
            let pass = (cseq_of(&d.text()) - 1) as usize;
            ensure!(owner[pass].insert(id.clone(), i).is_none(), "{id} reached the farm twice in pass {pass}");
        }
    }
    ensure!(owner[0].len() == ids.len() && owner[1].len() == ids.len(), "not every Call-ID arrived");
    let differ: Vec<&String> = ids.iter().filter(|id| owner[0][*id] != owner[1][*id]).collect();
    ensure!(
        differ.is_empty(),
        "{} Call-IDs went to another backend through node 1, e.g. {:?}",
        differ.len(),
        differ[0]
    );
    let to_a = owner[0].values().filter(|&&i| i == 0).count();
    ensure!(to_a > 4000 && to_a < 6000, "a lopsided split: {to_a} of {} to {a}", ids.len());
    eprintln!("agreement: {} Call-IDs, same backend through either node ({to_a} to {a})", ids.len());
    drop(sinks);

    // Through the VIP: the router spreads the calls' flows over both nodes, and every message
    // of every call still reaches the one backend that took its INVITE.
    let uas = uas_farm(&net)?;
    let rx0 = [nodes[0].rx()?, nodes[1].rx()?];
    let report = uac(&net, "uac-ecmp", 100.0, 300, Duration::from_millis(100))?.wait()?;
    ensure!(report.failed() == 0 && report.successful() == 300, "ECMP calls: {}", describe(&report));
    check_farm(&uas, 300, 0)?;
    let rx = [nodes[0].rx()? - rx0[0], nodes[1].rx()? - rx0[1]];
    ensure!(rx[0] > 0 && rx[1] > 0, "the router did not spread the calls: datagrams per node {rx:?}");
    eprintln!("ECMP: 300 calls, 0 failed; datagrams per node {rx:?}");
    Ok(())
}

/// How node 0 dies mid-run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Death {
    /// The host as the router sees it: BIRD goes silent (SIGSTOP: no withdrawal, no TCP
    /// close; only BFD notices) and sip-lb is killed.
    Host,
    /// sip-lb alone is killed on a live host: its TUN interface goes with it and BIRD withdraws.
    Process,
}

/// SIPp at 200 calls/s through the VIP; node 0 dies mid-run. Calls started before the death
/// complete: retransmissions reach node 1, which picks the same backend and the same branch.
fn node_death(label: &str, death: Death) -> Result<()> {
    let (net, mut nodes) = up(label)?;
    let uas = uas_farm(&net)?;
    let calls = 1400;
    let uac = uac(&net, &format!("uac-{label}"), 200.0, calls, Duration::from_millis(500))?;
    // Mid-run: node 0 has carried a good share of the traffic.
    wait_until(Duration::from_secs(15), || nodes[0].rx().is_ok_and(|n| n >= 1500)).context("no traffic at node 0")?;
    if death == Death::Host {
        net.node_birds[0].child_signal(libc::SIGSTOP)?;
    }
    nodes[0].child.signal(libc::SIGKILL)?;
    let failover = net.wait_next_hops(&[node_ip(1)], Duration::from_secs(10))?;
    let report = uac.wait()?;
    let how = match death {
        Death::Host => "node death (sip-lb SIGKILL, BIRD frozen: BFD 100 ms x 3)",
        Death::Process => "sip-lb SIGKILL on a live host (BIRD withdraws)",
    };
    let ms = failover.as_secs_f64() * 1e3;
    eprintln!(
        "{how} at 200 calls/s: router down to one next hop {ms:.0} ms after the kill; UAC: {}",
        describe(&report)
    );
    std::fs::write(net.dir.join("failover.txt"), format!("failover_ms {ms:.1}\nfailed_calls {}\n", report.failed()))?;
    ensure!(report.failed() == 0 && report.successful() == calls, "calls lost: {}", describe(&report));
    // The ACKs of the calls answered while the router still sent half the traffic to the dead
    // node: 200 calls/s over the failover time, half of them through node 0.
    check_farm(&uas, calls, (200.0 * failover.as_secs_f64()).ceil() as usize)?;
    if death == Death::Host {
        net.node_birds[0].child_signal(libc::SIGKILL)?;
    }
    Ok(())
}

#[test]
fn a_node_killed_mid_run_loses_no_call() -> Result<()> {
    let _one = serial()?;
    node_death("scale-death", Death::Host)
}

#[test]
fn a_sip_lb_killed_on_a_live_host_is_withdrawn_and_loses_no_call() -> Result<()> {
    let _one = serial()?;
    node_death("scale-crash", Death::Process)
}

#[test]
fn rolling_restart_with_drain_node_loses_no_call() -> Result<()> {
    let _one = serial()?;
    let (net, mut nodes) = up("scale-rolling")?;
    let uas = uas_farm(&net)?;
    let calls = 3000;
    let uac = uac(&net, "uac-rolling", 200.0, calls, Duration::from_millis(500))?;
    wait_until(Duration::from_secs(15), || nodes.iter().all(|n| n.rx().is_ok_and(|r| r >= 500)))
        .context("no traffic at the nodes")?;
    for i in [0, 1] {
        let t0 = Instant::now();
        let out = nodes[i].cli(&["drain-node", "--quiet-ms", "1000", "--timeout", "20"])?;
        ensure!(
            out.status.success(),
            "drain-node {i}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let status = nodes[i].child.wait_timeout(Duration::from_secs(5))?.context("drained node still running")?;
        ensure!(status.success(), "node {i} exited with {status} after drain-node");
        let drained = t0.elapsed();
        ensure!(net.next_hops()? == vec![node_ip(1 - i)], "router still sends to node {i}: {:?}", net.next_hops()?);
        nodes[i] = net.start_node(i, [1, 1])?;
        let back = net.wait_next_hops(&[node_ip(0), node_ip(1)], Duration::from_secs(10))?;
        eprintln!("rolling restart: node {i} drained and exited in {drained:?}; restarted, ECMP again after {back:?}");
    }
    let report = uac.wait()?;
    eprintln!("rolling restart under 200 calls/s: {}", describe(&report));
    ensure!(report.failed() == 0 && report.successful() == calls, "calls lost: {}", describe(&report));
    check_farm(&uas, calls, 0)?;
    Ok(())
}
