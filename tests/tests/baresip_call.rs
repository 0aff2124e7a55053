//! Real user agents nobody here wrote (issue 13): two baresip UAs (Debian's `baresip-core`)
//! on a client network the farm cannot route to register through sip-lb over UDP with
//! Kamailio as their home registrar and proxy (`path = "force"`: baresip 1.0 says
//! `Supported: path` only in RFC 5626 outbound mode; `record_route = "on"`). Alice calls bob: the INVITE goes alice ->
//! sip-lb -> Kamailio -> (bob's Path) sip-lb -> bob; the call is established, RTP flows
//! between the UAs (directly, on the client network), alice hangs up and her BYE reaches
//! bob through sip-lb. Then RFC 5626 outbound: `ob` in our Path, STUN keep-alives answered.
//! baresip is driven through its ctrl_tcp socket and the tests wait on its events.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Result};
use sip_lb_tests::anycast::within;
use sip_lb_tests::baresip::{account, ensure_baresip, Baresip};
use sip_lb_tests::edge::{client_ip, farm_ip, Edge, VIP};
use sip_lb_tests::lab::kamailio::HomeProxy;
use sip_lb_tests::lb::Launch;
use sip_lb_tests::metrics::Metrics;
use sip_lb_tests::ports::free_tcp_addr;
use sip_lb_tests::process::scratch_dir;

const WITHIN: Duration = Duration::from_secs(10);
/// A second of G.711 at 20 ms a packet.
const MIN_PACKETS: u64 = 50;

#[test]
fn two_baresip_uas_behind_sip_lb_register_call_and_hang_up() -> Result<()> {
    ensure_baresip()?;
    let edge = Edge::new("mo", 2, 1)?;
    within(edge.lb.name(), || call(&edge))
}

fn call(edge: &Edge) -> Result<()> {
    ensure!(!edge.farm_routes_to(client_ip(0).into()), "the farm namespace has a route to the client network");
    let dir = scratch_dir("baresip_call")?;
    let home = SocketAddr::from((farm_ip(0), 5060));
    let mut proxy = HomeProxy::start(&edge.farm, home, &dir)?;
    let (udp, control) = (SocketAddr::from((VIP, 5060)), free_tcp_addr()?);
    let text = format!(
        "listen = [\"{udp}\"]\nworkers = 2\nmetrics = \"{control}\"\npath = \"force\"\nrecord_route = \"on\"\n\n\
         [[pool]]\nname = \"farm\"\nbackends = [\"{home}\"]\n"
    );
    let lb = Launch::config("baresip_call", &text, &[udp], control).start()?;

    // Every out-of-dialog request goes to sip-lb, the only address of the farm side the UAs reach.
    let outbound = format!("sip:{udp};lr");
    let aor = |user: &str| format!("sip:{user}@farm.example");
    let mut alice = Baresip::start(
        &edge.client,
        "alice",
        (client_ip(0), 5060).into(),
        &account(&aor("alice"), &outbound, ""),
        &dir,
    )?;
    let mut bob = Baresip::start(
        &edge.client,
        "bob",
        (client_ip(1), 5060).into(),
        &account(&aor("bob"), &outbound, "answermode=auto"),
        &dir,
    )?;
    alice.wait_registered(WITHIN)?;
    bob.wait_registered(WITHIN)?;
    proxy.wait_logged("REGISTER", 2, WITHIN)?;
    let stored = proxy.log_lines("REGISTER");
    ensure!(
        stored.len() == 2 && stored.iter().all(|l| l.contains(&format!("path=<sip:{udp};lr;slb;"))),
        "Kamailio did not store our Path for both UAs:\n{}",
        stored.join("\n")
    );

    alice.command("dial", &aor("bob"), WITHIN)?;
    let ctx =
        |proxy: &HomeProxy| format!("Kamailio:\n{}\nsip-lb:\n{}", proxy.stderr_tail(20), lb.child.stderr_tail(20));
    bob.wait_event("CALL_ESTABLISHED", WITHIN).map_err(|e| e.context(ctx(&proxy)))?;
    alice.wait_event("CALL_ESTABLISHED", WITHIN).map_err(|e| e.context(ctx(&proxy)))?;
    // Each side received RTP from the other.
    alice.wait_event("CALL_RTPESTAB", WITHIN)?;
    bob.wait_event("CALL_RTPESTAB", WITHIN)?;
    // A second of media each way (50 packets a second), counted by each UA as it runs.
    let (a_tx, a_rx) = alice.wait_rtp_received(MIN_PACKETS, WITHIN)?;
    let (b_tx, b_rx) = bob.wait_rtp_received(MIN_PACKETS, WITHIN)?;
    println!("RTP packets (sent, received): alice ({a_tx}, {a_rx}), bob ({b_tx}, {b_rx})");
    ensure!(a_tx >= MIN_PACKETS && b_tx >= MIN_PACKETS, "alice sent {a_tx}, bob {b_tx}");

    alice.command("hangup", "", WITHIN)?;
    let closed = bob.wait_event("CALL_CLOSED", WITHIN).map_err(|e| e.context(ctx(&proxy)))?;
    // baresip's words for a BYE from the peer.
    ensure!(closed["param"] == "Connection reset by peer", "bob's call ended otherwise: {closed}");
    alice.wait_event("CALL_CLOSED", WITHIN)?;
    proxy.wait_logged("IN-DIALOG", 2, WITHIN)?; // the ACK and the BYE
    ensure!(
        proxy.log_lines("IN-DIALOG").iter().any(|l| l.contains("IN-DIALOG BYE")),
        "Kamailio relayed no BYE:\n{}",
        proxy.stderr_tail(20)
    );

    Ok(())
}

/// RFC 5626 outbound with a real UA: baresip with `sipnat=outbound` registers with
/// `+sip.instance`, `reg-id` and `Supported: outbound, path`; sip-lb's Path for it carries `ob`,
/// which Kamailio (`outbound_mode` 1) requires of the first hop (439 otherwise), and Kamailio's
/// 200 asks for keep-alives every 2 s (`Flow-Timer`): baresip's STUN keep-alives on its flow
/// are answered by sip-lb (`stun = true`).
#[test]
fn a_baresip_ua_using_outbound_gets_ob_in_its_path_and_its_stun_keepalives_answered() -> Result<()> {
    ensure_baresip()?;
    let edge = Edge::new("mo", 1, 1)?;
    within(edge.lb.name(), || outbound(&edge))
}

fn outbound(edge: &Edge) -> Result<()> {
    let dir = scratch_dir("baresip_outbound")?;
    let home = SocketAddr::from((farm_ip(0), 5060));
    let mut proxy = HomeProxy::start(&edge.farm, home, &dir)?;
    let (udp, control) = (SocketAddr::from((VIP, 5060)), free_tcp_addr()?);
    let text = format!(
        "listen = [\"{udp}\"]\nworkers = 2\nmetrics = \"{control}\"\nstun = true\n\n\
         [[pool]]\nname = \"farm\"\nbackends = [\"{home}\"]\n"
    );
    let lb = Launch::config("baresip_outbound", &text, &[udp], control).start()?;
    let account = account("sip:alice@farm.example", &format!("sip:{udp};lr"), "sipnat=outbound");
    let mut alice = Baresip::start(&edge.client, "alice", (client_ip(0), 5060).into(), &account, &dir)?;
    alice.wait_registered(WITHIN)?;
    proxy.wait_logged("REGISTER", 1, WITHIN)?;
    let stored = proxy.log_lines("REGISTER").join("\n");
    ensure!(
        stored.contains("reg-id=1") && stored.contains(&format!("path=<sip:{udp};lr;slb;ob;slb-addr=")),
        "Kamailio did not store an outbound contact with our `ob` Path:\n{stored}"
    );
    let stun = |m: &Metrics, outcome: &str| m.sum("sip_lb_stun_total", &[("outcome", outcome)]);
    lb.control.wait_metrics(WITHIN, "two of baresip's STUN keep-alives answered", |m| {
        stun(m, "answered").is_some_and(|n| n >= 2.0)
    })?;
    let m = lb.control.metrics()?;
    ensure!(
        stun(&m, "would_amplify") == Some(0.0) && stun(&m, "malformed") == Some(0.0),
        "keep-alives not answered: {:?}",
        m.by("sip_lb_stun_total", "outcome")
    );
    Ok(())
}
