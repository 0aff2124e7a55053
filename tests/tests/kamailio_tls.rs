//! Kamailio as a TLS peer nobody here wrote (issue 13): SIPp over UDP -> Kamailio (its `tls`
//! module, Debian's `kamailio-tls-modules`) -> TLS -> sip-lb -> SIPp UAS over UDP. Every call
//! succeeds, so sip-lb's certificate, framing and flow tokens work with Kamailio's TLS client,
//! and the responses found Kamailio's connection.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{ensure, Result};
use sip_lb_tests::certs::make_certs;
use sip_lb_tests::kamailio::{ensure_tls_module, tls_relay_config, Kamailio};
use sip_lb_tests::lb::Launch;
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addrs};
use sip_lb_tests::process::scratch_dir;
use sip_lb_tests::sipp::{ensure_sipp, run_uac, Scenario, UacOptions, Uas};

/// A stateful Kamailio that relays every request to sip-lb over TLS (double Record-Route
/// on dialog-creating requests, as a real edge proxy does).
fn kamailio_config(udp: SocketAddr, tls: SocketAddr, lb_tls: SocketAddr, tls_cfg: &Path) -> String {
    let route = format!(
        "    if (is_method(\"CANCEL\")) {{ if (t_check_trans()) t_relay(); exit; }}\n    \
         if (!has_totag()) {{ record_route(); }} else {{ loose_route(); }}\n    \
         $du = \"sip:{lb_tls};transport=tls\";"
    );
    tls_relay_config(udp, tls, tls_cfg, &["rr", "siputils", "textops"], &route)
}

#[test]
fn sipp_udp_to_kamailio_to_sip_lb_over_tls_all_calls_succeed() -> Result<()> {
    const CALLS: u64 = 50;
    ensure_sipp()?;
    ensure_tls_module()?;
    let dir = scratch_dir("kamailio_tls")?;
    let (_ca, cert, key) = make_certs(&dir)?;
    let [lb_udp, kam_udp, backend]: [SocketAddr; 3] =
        free_udp_addrs(3)?.try_into().map_err(|_| anyhow::anyhow!("three ports"))?;
    let (lb_tls, kam_tls, control) = (free_tcp_addr()?, free_tcp_addr()?, free_tcp_addr()?);

    let uas = Uas::start("backend", backend, &Scenario::uas_call(), &dir)?;
    let text = format!(
        "listen = [\"{lb_udp}\", \"tls:{lb_tls}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[[pool]]\nname = \"farm\"\nbackends = [\"{backend}\"]\n",
        cert.display(),
        key.display()
    );
    let lb = Launch::config("kamailio_tls", &text, &[lb_udp], control).start()?;

    // Kamailio: a TLS server certificate of its own (the same test one), no verification of
    // sip-lb's as a client (it has no CA list here).
    let tls_cfg = dir.join("kamailio-tls.cfg");
    std::fs::write(
        &tls_cfg,
        format!(
            "[server:default]\nmethod = TLSv1.2+\ncertificate = {}\nprivate_key = {}\n\n\
             [client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n",
            cert.display(),
            key.display()
        ),
    )?;
    let kam = Kamailio::start("kamailio", &kamailio_config(kam_udp, kam_tls, lb_tls, &tls_cfg), kam_udp, &dir)?;

    let mut opts = UacOptions::new("uac", Scenario::uac_call(), kam_udp);
    opts.calls = CALLS;
    opts.rate = 50.0;
    let report = run_uac(opts, &dir)?;
    let ctx = || {
        format!(
            "UAC: {report}\n{}\nKamailio: {}\nsip-lb: {}\nlogs: {}",
            report.errors_head(10),
            kam.0.stderr_tail(20),
            lb.child.stderr_tail(20),
            dir.display()
        )
    };
    ensure!(
        report.successful() == CALLS && report.failed() == 0 && report.exit_code() == Some(0),
        "expected {CALLS} successful calls; {}",
        ctx()
    );
    let log = uas.received()?;
    ensure!(log.calls_with("INVITE") == CALLS as usize, "backend got {} INVITEs; {}", log.calls_with("INVITE"), ctx());
    let m = lb.control.metrics()?;
    let conns = m.by("sip_lb_tcp_connections_total", "event");
    let msgs = m.by("sip_lb_tcp_messages_total", "outcome");
    ensure!(conns.get("accepted").copied().unwrap_or(0) >= 1, "Kamailio connected over TLS: {conns:?}");
    ensure!(msgs.get("response_delivered").copied().unwrap_or(0) >= 3 * CALLS, "responses on its connection: {msgs:?}");
    ensure!(conns.get("tls_handshake_failed").copied().unwrap_or(0) == 0, "{conns:?}");
    Ok(())
}
