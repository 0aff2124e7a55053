//! A `transport = "tls"` pool reaching a TLS peer nobody here wrote (issue 13): SIPp UAC over
//! UDP -> sip-lb -> TLS -> Kamailio (its `tls` module, requiring sip-lb's client certificate)
//! -> SIPp UAS over UDP. Every call succeeds over one persistent connection, our Via says TLS.
//! A backend whose certificate was not signed by `[backend_tls] ca` gets no connection and
//! counts as down until a reload trusts its CA; so does one whose certificate names another
//! address.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sip_lb_tests::certs::{make_certs, make_client_cert};
use sip_lb_tests::kamailio::{ensure_tls_module, tls_relay_config, Kamailio};
use sip_lb_tests::lb::Launch;
use sip_lb_tests::ports::{free_tcp_addr, free_tcp_addr_on, free_udp_addr_on, free_udp_addrs};
use sip_lb_tests::process::scratch_dir;
use sip_lb_tests::sipp::{ensure_sipp, run_uac, Scenario, UacOptions, Uas};

const WAIT: Duration = Duration::from_secs(10);

/// A stateful Kamailio listening on TLS for sip-lb that relays every request to `uas` over UDP
/// (its responses go back over the connection the request came on, by tm's reply routing).
fn kamailio_config(udp: SocketAddr, tls: SocketAddr, uas: SocketAddr, tls_cfg: &Path) -> String {
    let route =
        format!("    xlog(\"L_INFO\", \"tb-backend $rm over $proto from $si:$sp\\n\");\n    $du = \"sip:{uas}\";");
    tls_relay_config(udp, tls, tls_cfg, &["xlog"], &route)
}

/// Kamailio's `tls` module config: its server certificate, and sip-lb's client certificate
/// required and verified against `ca`.
fn kamailio_tls_cfg(dir: &Path, cert: &Path, key: &Path, ca: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join("kamailio-tls.cfg");
    std::fs::write(
        &path,
        format!(
            "[server:default]\nmethod = TLSv1.2+\ncertificate = {}\nprivate_key = {}\nca_list = {}\n\
             verify_certificate = yes\nrequire_certificate = yes\n",
            cert.display(),
            key.display(),
            ca.display()
        ),
    )?;
    Ok(path)
}

/// sip-lb's config: one `tls` pool of `backend`, trusting `ca` and presenting `client` (cert, key).
fn lb_config(udp: SocketAddr, control: SocketAddr, backend: SocketAddr, ca: &Path, client: (&Path, &Path)) -> String {
    format!(
        "listen = [\"{udp}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n\
         [backend_tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n\
         [[pool]]\nname = \"farm\"\ntransport = \"tls\"\nbackends = [\"{backend}\"]\n",
        ca.display(),
        client.0.display(),
        client.1.display()
    )
}

/// `calls` SIPp calls to sip-lb at `lb_udp`, which must all succeed.
fn calls_succeed(calls: u64, lb_udp: SocketAddr, dir: &Path, ctx: &dyn Fn() -> String) -> Result<()> {
    let mut opts = UacOptions::new("uac", Scenario::uac_call(), lb_udp);
    opts.calls = calls;
    opts.rate = 50.0;
    let report = run_uac(opts, dir)?;
    ensure!(
        report.successful() == calls && report.failed() == 0 && report.exit_code() == Some(0),
        "expected {calls} successful calls; UAC: {report}\n{}\n{}",
        report.errors_head(10),
        ctx()
    );
    Ok(())
}

/// Established TCP connections to `port` (`ss`, from the backend's side: its local port).
fn established_to(port: u16) -> Result<usize> {
    let out = Command::new("ss").args(["-Htn", "state", "established", &format!("sport = :{port}")]).output()?;
    ensure!(out.status.success(), "ss: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count())
}

#[test]
fn sipp_calls_through_sip_lb_to_a_kamailio_tls_backend() -> Result<()> {
    const CALLS: u64 = 50;
    ensure_sipp()?;
    ensure_tls_module()?;
    let dir = scratch_dir("tls_backends")?;
    let (ca, cert, key) = make_certs(&dir)?;
    let (client_cert, client_key) = make_client_cert(&dir)?;
    let [lb_udp, kam_udp, uas_addr]: [SocketAddr; 3] =
        free_udp_addrs(3)?.try_into().map_err(|_| anyhow::anyhow!("three ports"))?;
    let kam_tls = free_tcp_addr()?;

    let uas = Uas::start("uas", uas_addr, &Scenario::uas_call(), &dir)?;
    let tls_cfg = kamailio_tls_cfg(&dir, &cert, &key, &ca)?;
    let kam = Kamailio::start("kamailio", &kamailio_config(kam_udp, kam_tls, uas_addr, &tls_cfg), kam_udp, &dir)?;
    let control = free_tcp_addr()?;
    let text = lb_config(lb_udp, control, kam_tls, &ca, (&client_cert, &client_key));
    let lb = Launch::config("tls_backends", &text, &[lb_udp], control).start()?;
    lb.control.wait_metrics(WAIT, "the backend's TLS connection", |m| {
        m.sum("sip_lb_backend_links_total", &[("event", "connected")]).unwrap_or(0.0) >= 1.0
    })?;
    ensure!(lb.control.backend(kam_tls)?.state == "up");

    let ctx = || {
        format!("Kamailio: {}\nsip-lb: {}\nlogs: {}", kam.0.stderr_tail(20), lb.child.stderr_tail(20), dir.display())
    };
    calls_succeed(CALLS, lb_udp, &dir, &ctx)?;
    let log = uas.received()?;
    ensure!(log.calls_with("INVITE") == CALLS as usize, "UAS got {} INVITEs; {}", log.calls_with("INVITE"), ctx());
    ensure!(log.calls_with("BYE") == CALLS as usize, "UAS got {} BYEs; {}", log.calls_with("BYE"), ctx());

    // Kamailio saw every request arrive over TLS.
    let over_tls = kam.0.stderr().lines().filter(|l| l.contains("tb-backend INVITE over tls")).count();
    ensure!(over_tls == CALLS as usize, "Kamailio logged {over_tls} INVITEs over TLS; {}", ctx());
    // Our Via (below Kamailio's) said TLS, so Kamailio answered on the connection.
    let id = log.call_ids().into_iter().next().context("a call")?.to_owned();
    let invite = uas.full_messages(&id)?.into_iter().find(|m| m.contains("INVITE sip:")).context("INVITE logged")?;
    let ours = format!("Via: SIP/2.0/TLS {lb_udp};branch=");
    ensure!(invite.contains(&ours), "our Via should say TLS ({ours}): {invite}");

    // One connection, made once and kept, carried every request and response.
    let m = lb.control.metrics()?;
    let links = m.by("sip_lb_backend_links_total", "event");
    ensure!(links.get("connected") == Some(&1), "one connection, made once: {links:?}");
    for never in ["lost", "connect_failed", "dropped_down", "dropped_full"] {
        ensure!(links.get(never).copied().unwrap_or(0) == 0, "{never}: {links:?}");
    }
    ensure!(links.get("sent").copied().unwrap_or(0) >= 3 * CALLS, "INVITE, ACK and BYE per call: {links:?}");
    ensure!(links.get("received").copied().unwrap_or(0) >= 3 * CALLS, "responses on the link: {links:?}");
    let conns = established_to(kam_tls.port())?;
    ensure!(conns == 1, "Kamailio should hold exactly one connection from sip-lb, has {conns}");
    Ok(())
}

#[test]
fn a_tls_backend_whose_certificate_is_not_from_the_ca_is_down_until_a_reload_trusts_it() -> Result<()> {
    ensure_sipp()?;
    ensure_tls_module()?;
    let dir = scratch_dir("tls_backends_bad_ca")?;
    // sip-lb trusts the CA of `dir` (which also signed its client certificate); Kamailio's
    // own certificate comes from another CA.
    let (ca, _, _) = make_certs(&dir)?;
    let (client_cert, client_key) = make_client_cert(&dir)?;
    let other = scratch_dir("tls_backends_other_ca")?;
    let (other_ca, other_cert, other_key) = make_certs(&other)?;
    let [lb_udp, kam_udp, uas_addr]: [SocketAddr; 3] =
        free_udp_addrs(3)?.try_into().map_err(|_| anyhow::anyhow!("three ports"))?;
    let (kam_tls, control) = (free_tcp_addr()?, free_tcp_addr()?);
    let _uas = Uas::start("uas", uas_addr, &Scenario::uas_call(), &dir)?;
    let tls_cfg = kamailio_tls_cfg(&other, &other_cert, &other_key, &ca)?;
    let kam = Kamailio::start("kamailio", &kamailio_config(kam_udp, kam_tls, uas_addr, &tls_cfg), kam_udp, &other)?;
    let text = lb_config(lb_udp, control, kam_tls, &ca, (&client_cert, &client_key));
    let lb = Launch::config("tls_backends_bad_ca", &text, &[lb_udp], control).start()?;

    let took = lb.control.wait_state(kam_tls, "down", WAIT).with_context(|| kam.0.stderr_tail(20))?;
    eprintln!("backend with a certificate from another CA down after {took:?}");
    let m = lb.control.wait_metrics(WAIT, "failed handshakes", |m| {
        m.sum("sip_lb_backend_links_total", &[("event", "connect_failed")]).unwrap_or(0.0) >= 2.0
    })?;
    let links = m.by("sip_lb_backend_links_total", "event");
    ensure!(links.get("connected").copied().unwrap_or(0) == 0, "no connection may be made: {links:?}");
    let log = lb.child.stderr();
    // (Both test CAs have the same name: rustls finds the issuer, the signature does not verify.)
    ensure!(log.contains("invalid peer certificate"), "sip-lb should say why: {}", lb.child.stderr_tail(20));

    // `[backend_tls] ca` re-read by a reload serves the next attempt: the backend comes up.
    std::fs::write(lb.config_path(), lb_config(lb_udp, control, kam_tls, &other_ca, (&client_cert, &client_key)))?;
    let out = lb.cli(&["reload"])?;
    ensure!(out.status.success(), "reload: {}", String::from_utf8_lossy(&out.stderr));
    let took = lb.control.wait_state(kam_tls, "up", Duration::from_secs(10))?;
    eprintln!("up {took:?} after the reload trusted its CA");
    let ctx = || {
        format!("Kamailio: {}\nsip-lb: {}\nlogs: {}", kam.0.stderr_tail(20), lb.child.stderr_tail(20), dir.display())
    };
    calls_succeed(10, lb_udp, &dir, &ctx)
}

#[test]
fn a_tls_backend_whose_certificate_names_another_address_is_down() -> Result<()> {
    ensure_tls_module()?;
    let dir = scratch_dir("tls_backends_other_name")?;
    // A certificate from the trusted CA, for 127.0.0.1 and ::1, served at 127.0.0.2.
    let (ca, cert, key) = make_certs(&dir)?;
    let (client_cert, client_key) = make_client_cert(&dir)?;
    let elsewhere = std::net::IpAddr::from([127, 0, 0, 2]);
    let (lb_udp, kam_udp, uas_addr) = (free_udp_addrs(1)?[0], free_udp_addr_on(elsewhere)?, free_udp_addrs(1)?[0]);
    let (kam_tls, control) = (free_tcp_addr_on(elsewhere)?, free_tcp_addr()?);
    let tls_cfg = kamailio_tls_cfg(&dir, &cert, &key, &ca)?;
    let kam = Kamailio::start("kamailio", &kamailio_config(kam_udp, kam_tls, uas_addr, &tls_cfg), kam_udp, &dir)?;
    let text = lb_config(lb_udp, control, kam_tls, &ca, (&client_cert, &client_key));
    let lb = Launch::config("tls_backends_other_name", &text, &[lb_udp], control).start()?;
    lb.control.wait_state(kam_tls, "down", WAIT).with_context(|| kam.0.stderr_tail(20))?;
    let m = lb.control.metrics()?;
    let links = m.by("sip_lb_backend_links_total", "event");
    ensure!(links.get("connected").copied().unwrap_or(0) == 0, "no connection may be made: {links:?}");
    let log = lb.child.stderr();
    ensure!(log.contains("not valid for name \"127.0.0.2\""), "sip-lb should say why: {}", lb.child.stderr_tail(20));
    Ok(())
}
