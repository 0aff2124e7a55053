//! Path and Record-Route for UDP clients (issue 13, RFC 3327, RFC 5626 §5.3), on loopback with
//! real sockets: sip-lb names the UA's source address in a MAC'd token, and a request from the
//! farm routed by it reaches that address; the UA's answer goes back to the farm; a token that
//! does not verify gets 403; `path = "require"` answers 421 over UDP too.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::lb::{Launch, SipLb};
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addr};
use sip_lb_tests::sink::Sink;
use sip_lb_tests::sip::{header, response_to, SipRequest};

const WITHIN: Duration = Duration::from_secs(5);

/// sip-lb with these routing settings in front of one "farm" socket.
fn start(name: &str, settings: &str, farm: &Sink) -> Result<(SipLb, SocketAddr)> {
    let (udp, control) = (free_udp_addr()?, free_tcp_addr()?);
    let text = format!(
        "listen = [\"{udp}\"]\nworkers = 2\nmetrics = \"{control}\"\n{settings}\n\n\
         [security]\nsecret = \"a udp flows test secret, 32 bytes\"\n\n\
         [[pool]]\nname = \"farm\"\nbackends = [\"{}\"]\n",
        farm.addr()
    );
    Ok((Launch::config(name, &text, &[udp], control).start()?, udp))
}

/// A request from the farm (its Via), routed by `route`, to the UA's contact.
fn from_farm(farm: &Sink, method: &str, call_id: &str, route: &str) -> String {
    SipRequest::new(method, farm.addr(), call_id).header("Route", route).build()
}

#[test]
fn a_ua_registered_over_udp_is_reached_through_our_path() -> Result<()> {
    let farm = Sink::loopback()?;
    let ua = Sink::loopback()?;
    let (lb, at) = start("udp_flows_path", "path = \"require\"", &farm)?;

    // RFC 3327 §5.1: without `Supported: path`, 421 to the UA.
    ua.send_to(ua.request("REGISTER", "reg-plain@ua", 1).build(), at)?;
    let (reply, _) = ua.recv_text(WITHIN).context("a 421 to the UA")?;
    ensure!(reply.starts_with("SIP/2.0 421 Extension Required\r\n"), "{reply}");
    ensure!(header(&reply, "Require").as_deref() == Some("path"), "{reply}");

    ua.send_to(ua.request("REGISTER", "reg@ua", 2).header("Supported", "path").build(), at)?;
    let (reg, _) = farm.recv_text(WITHIN).context("the REGISTER at the registrar")?;
    ensure!(header(&reg, "Call-ID").as_deref() == Some("reg@ua"), "only that one reached the farm: {reg}");
    let path = header(&reg, "Path").context("our Path")?;
    ensure!(path.starts_with(&format!("<sip:{at};lr;slb;slb-addr=")), "{path}");

    // Calls to the registered contact, of other Call-IDs, reach the UA's address.
    for n in 0..3 {
        let call_id = format!("call-{n}@farm");
        farm.send_to(from_farm(&farm, "INVITE", &call_id, &path), at)?;
        let (invite, from) = ua.recv_text(WITHIN).with_context(|| format!("INVITE {call_id} at the UA"))?;
        ensure!(from == at, "from sip-lb's socket: {from}");
        ensure!(header(&invite, "Call-ID").as_deref() == Some(call_id.as_str()), "{invite}");
        ensure!(header(&invite, "Route").is_none(), "our Route is consumed: {invite}");
        // The UA's 200 goes back through sip-lb to the farm's Via.
        ua.send_to(response_to(&invite), at)?;
        let (ok, _) = farm.recv_text(WITHIN).context("the 200 at the farm")?;
        ensure!(ok.starts_with("SIP/2.0 200 OK\r\n") && header(&ok, "Call-ID").as_deref() == Some(call_id.as_str()));
    }

    // A token pointing elsewhere does not verify: 403 to the farm, nothing to the UA.
    let forged = path.replacen("slb-addr=7f000001", "slb-addr=7f000002", 1);
    ensure!(forged != path, "the token names 127.0.0.1: {path}");
    farm.send_to(from_farm(&farm, "INVITE", "forged@farm", &forged), at)?;
    let (reply, _) = farm.recv_text(WITHIN).context("403 for a forged token")?;
    ensure!(reply.starts_with("SIP/2.0 403 Forbidden\r\n"), "{reply}");
    ensure!(ua.recv(Duration::from_millis(300)).is_none(), "nothing reached the UA");

    let m = lb.control.metrics()?;
    let code = |c: &str| m.sum("sip_lb_worker_replies_total", &[("code", c)]).unwrap_or(0.0);
    ensure!(code("421") == 1.0 && code("403") == 1.0, "421: {}, 403: {}", code("421"), code("403"));
    Ok(())
}

#[test]
fn record_route_brings_in_dialog_requests_from_each_side_to_the_right_flow() -> Result<()> {
    let farm = Sink::loopback()?;
    let caller = Sink::loopback()?;
    let (_lb, at) = start("udp_flows_rr", "record_route = \"on\"\npath = \"off\"", &farm)?;

    caller.send_to(caller.request("INVITE", "dlg@caller", 1).sdp().build(), at)?;
    let (invite, _) = farm.recv_text(WITHIN).context("the INVITE at the farm")?;
    let rr = header(&invite, "Record-Route").context("our Record-Route")?;
    ensure!(rr.starts_with(&format!("<sip:{at};lr;slb;slb-addr=")), "{rr}");
    let ok = response_to(&invite).replacen("Content-Length:", &format!("Record-Route: {rr}\r\nContent-Length:"), 1);
    farm.send_to(ok, at)?;
    let (ok, _) = caller.recv_text(WITHIN).context("the 200 at the caller")?;
    ensure!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");

    // The callee's BYE from the farm, routed by the recorded route: to the caller.
    farm.send_to(from_farm(&farm, "BYE", "dlg@caller", &rr), at)?;
    let (bye, _) = caller.recv_text(WITHIN).context("the callee's BYE at the caller")?;
    ensure!(bye.starts_with("BYE ") && header(&bye, "Route").is_none(), "{bye}");
    caller.send_to(response_to(&bye), at)?;
    let (ok, _) = farm.recv_text(WITHIN).context("its 200 at the farm")?;
    ensure!(ok.starts_with("SIP/2.0 200 OK\r\n") && ok.contains("CSeq: 1 BYE"), "{ok}");

    // The caller's own BYE with the same route set goes on to the farm.
    caller.send_to(caller.request("BYE", "dlg@caller", 2).header("Route", &rr).build(), at)?;
    let (bye, _) = farm.recv_text(WITHIN).context("the caller's BYE at the farm")?;
    ensure!(bye.starts_with("BYE ") && header(&bye, "Call-ID").as_deref() == Some("dlg@caller"), "{bye}");
    ensure!(header(&bye, "Route").is_none(), "{bye}");
    Ok(())
}
