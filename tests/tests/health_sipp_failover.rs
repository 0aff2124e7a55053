//! The failover test with SIPp: three SIPp UAS backends (answering sip-lb's
//! OPTIONS probes as well as calls), a SIPp UAC placing calls through
//! sip-lb, and one UAS killed mid-run and restarted. No call that started on
//! a live backend fails, the dead one is taken out within
//! failures x interval + interval, and it gets calls again after restarting.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::lb::{pool_config, Launch, FAST_HEALTH};
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addrs};
use sip_lb_tests::process::scratch_dir;
use sip_lb_tests::sipp::{
    ensure_sipp, parse_short_log, shared_call_ids, CallLog, Direction, Scenario, Uac, UacOptions, Uas,
};

/// uas_call.xml plus an out-of-dialog OPTIONS -> 200 branch for the probes.
const UAS_WITH_OPTIONS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="sip-lb UAS call, answers OPTIONS">
  <recv request="OPTIONS" optional="true" next="options"/>
  <recv request="INVITE"/>
  <send>
    <![CDATA[
      SIP/2.0 100 Trying
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send next="done">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <label id="options"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpOpt[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <label id="done"/>
  <timewait milliseconds="2000"/>
</scenario>
"#;

fn scenario(dir: &Path) -> Result<Scenario> {
    let path = dir.join("uas_call_options.xml");
    std::fs::write(&path, UAS_WITH_OPTIONS)?;
    Ok(Scenario::File(path))
}

/// Call-IDs whose first message at this UAS was an INVITE: calls it served.
fn started_here(log: &CallLog) -> BTreeSet<String> {
    log.calls
        .iter()
        .filter(|(_, l)| l.first().map(String::as_str) == Some("INVITE"))
        .map(|(id, _)| id.clone())
        .collect()
}

#[test]
fn sipp_calls_survive_a_backend_kill() -> Result<()> {
    ensure_sipp()?;
    let dir = scratch_dir("health-sipp-failover")?;
    let uas = scenario(&dir)?;
    let [lb_addr, a0, a1, a2]: [SocketAddr; 4] = free_udp_addrs(4)?.try_into().unwrap();
    let control = free_tcp_addr()?;
    let b0 = Uas::start("backend0", a0, &uas, &dir)?;
    let mut b1 = Uas::start("backend1", a1, &uas, &dir)?;
    let b2 = Uas::start("backend2", a2, &uas, &dir)?;
    let text = pool_config(lb_addr, control, &[(a0, 1), (a1, 1), (a2, 1)], Some(FAST_HEALTH));
    let lb = Launch::config("health-sipp-lb", &text, &[lb_addr], control).start()?;
    let (interval, failures, successes) = (Duration::from_millis(200), 2u32, 2u32);
    let slack = Duration::from_millis(500);
    for a in [a0, a1, a2] {
        lb.wait_state(a, "up", interval * 3).with_context(|| format!("{a} not up: do the UAS answer OPTIONS?"))?;
    }

    let mut opts = UacOptions::new("uac", Scenario::uac_call(), lb_addr);
    opts.calls = 300;
    opts.rate = 60.0;
    opts.pause = Duration::from_millis(200);
    opts.recv_timeout = Duration::from_secs(4);
    opts.full_messages = false;
    let uac = Uac::start(opts, &dir)?;

    // Calls in progress on all three before the kill: the scenario, not synchronisation.
    std::thread::sleep(Duration::from_millis(1500));
    b1.stop()?;
    let down = lb.wait_state(a1, "down", Duration::from_secs(3))?;
    ensure!(down <= interval * (failures + 1) + slack, "down after {down:?}");
    // The backend stays dead for a second under load: the scenario.
    std::thread::sleep(Duration::from_millis(1000));
    let b1_again = Uas::start("backend1-restarted", a1, &uas, &dir)?;
    let up = lb.wait_state(a1, "up", Duration::from_secs(3))?;
    ensure!(up <= interval * (successes + 1) + slack, "up after {up:?}");
    eprintln!("SIPp failover: down {down:?} after the kill, up {up:?} after the restart");

    let report = uac.wait()?;
    let uac_msgs = parse_short_log(&std::fs::read_to_string(&report.short_log).unwrap_or_default());
    let completed: BTreeSet<String> = uac_msgs
        .iter()
        .filter(|m| m.direction == Direction::Received && m.cseq.ends_with("BYE") && m.label() == "200")
        .map(|m| m.call_id.clone())
        .collect();
    let (l0, l1, l2, l1b) = (b0.received()?, b1.received()?, b2.received()?, b1_again.received()?);
    // Live backends: every call they started completed, none moved between them.
    for (name, log) in [("backend0", &l0), ("backend2", &l2)] {
        let failed: Vec<_> = started_here(log).into_iter().filter(|c| !completed.contains(c)).collect();
        ensure!(
            failed.is_empty(),
            "{name}: {} call(s) failed: {:?}\nUAC: {report}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
    }
    ensure!(shared_call_ids(&[("b0", &l0), ("b2", &l2)]).is_empty(), "a call moved between live backends");
    // The restarted backend takes calls again.
    ensure!(!started_here(&l1b).is_empty(), "the restarted backend got no new call");
    // Failures are bounded by the dead backend's calls in flight and those
    // sent before it was taken out.
    let bound = started_here(&l1).len() as u64 + (60.0 * (down + interval).as_secs_f64()).ceil() as u64;
    ensure!(report.failed() <= bound, "{} failed calls, bound {bound}\nUAC: {report}", report.failed());
    eprintln!(
        "SIPp failover: {} calls, {} completed, {} failed (bound {bound})",
        report.created(),
        completed.len(),
        report.failed()
    );
    Ok(())
}
