//! Reloads and the stream layer (issue 13):
//! - a reload that re-weights, removes and adds backends of a `transport = "tcp"` pool: the
//!   unchanged backend keeps its connection, the new one gets one, the removed one's
//!   connection carries the answers both ways for what was under way (the answer to an
//!   INVITE in flight, a BYE along the client's Record-Route and its 200) and is then closed;
//! - a reload re-reads the `tls:` listeners' certificate (renewed in place): new handshakes
//!   get the new one (checked with `openssl s_client`), an open connection goes on, and a
//!   broken certificate file is refused by name while the previous one stays;
//! - a first tcp pool for a sip-lb that started without a connection layer needs a restart.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sip_lb_tests::certs::make_certs;
use sip_lb_tests::lb::{Launch, SipLb};
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addr};
use sip_lb_tests::process::scratch_dir;
use sip_lb_tests::sip::{header, response_to, SipRequest};
use sip_lb_tests::stream::{tls_connect, StreamClient};

const WAIT: Duration = Duration::from_secs(5);

type Conn = StreamClient<TcpStream>;

/// A UDP and a TCP listener, a `tcp` pool `farm` of (backend, weight).
fn tcp_pool_config(udp: SocketAddr, tcp: SocketAddr, control: SocketAddr, backends: &[(SocketAddr, u32)]) -> String {
    let list: Vec<String> = backends.iter().map(|(a, w)| format!("{{ addr = \"{a}\", weight = {w} }}")).collect();
    format!(
        "listen = [\"{udp}\", \"tcp:{tcp}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n\
         [[pool]]\nname = \"farm\"\ntransport = \"tcp\"\nbackends = [{}]\n",
        list.join(", ")
    )
}

/// Rewrites the config file and reloads with `sip-lb reload`, which must succeed.
fn reload(lb: &SipLb, text: &str) -> Result<()> {
    std::fs::write(lb.config_path(), text)?;
    let out = lb.cli(&["reload"])?;
    ensure!(out.status.success(), "reload failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Reads messages from `conns` until `n` arrived (within `within`): (connection index, message).
fn collect(conns: &mut [&mut Conn], n: usize, within: Duration) -> Result<Vec<(usize, String)>> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n {
        if Instant::now() >= deadline {
            bail!("{} of {n} messages arrived: {got:?}", got.len());
        }
        for (i, c) in conns.iter_mut().enumerate() {
            if let Ok(m) = c.read_message(Duration::from_millis(20)) {
                got.push((i, m));
            }
        }
    }
    Ok(got)
}

/// An INVITE as a TCP client at `via` sends it.
fn tcp_invite(via: SocketAddr, call_id: &str) -> Vec<u8> {
    SipRequest::new("INVITE", via, call_id).build().replacen("SIP/2.0/UDP", "SIP/2.0/TCP", 1).into_bytes()
}

/// The callee's BYE in the dialog of `invite` (as the backend got it), sent over its
/// connection from `backend`: along our Record-Route, to the client.
fn bye_from(backend: SocketAddr, invite: &str) -> Result<String> {
    let rr = header(invite, "Record-Route").context("Record-Route on an INVITE from a connection")?;
    let id = header(invite, "Call-ID").context("Call-ID")?;
    Ok(format!(
        "BYE sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/TCP {backend};branch=z9hG4bK-bye-{id}\r\n\
         Route: {rr}\r\nMax-Forwards: 70\r\nFrom: Bob <sip:bob@example.com>;tag=be\r\n\
         To: Alice <sip:alice@example.com>;tag=a1\r\nCall-ID: {id}\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n"
    ))
}

/// Whether nothing is waiting to be accepted on `l` (sip-lb made no new connection).
fn nothing_to_accept(l: &TcpListener) -> Result<bool> {
    l.set_nonblocking(true)?;
    Ok(matches!(l.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
}

#[test]
fn a_reload_makes_backend_connections_follow_the_pool() -> Result<()> {
    const REQUESTS: usize = 20;
    let (udp, tcp, control) = (free_udp_addr()?, free_tcp_addr()?, free_tcp_addr()?);
    let listeners =
        [TcpListener::bind("127.0.0.1:0")?, TcpListener::bind("127.0.0.1:0")?, TcpListener::bind("127.0.0.1:0")?];
    let [a, b, c] = [0, 1, 2].map(|i| listeners[i].local_addr().expect("bound"));
    let text = tcp_pool_config(udp, tcp, control, &[(a, 1), (b, 1)]);
    let lb = Launch::config("stream_reload_links", &text, &[udp], control).start()?;
    let mut conn_a = StreamClient::accept(&listeners[0], WAIT)?;
    let mut conn_b = StreamClient::accept(&listeners[1], WAIT)?;
    let mut client = StreamClient::connect(tcp)?;
    let me = client.local_addr();

    // Calls over both connections; one that reached b stays unanswered (in flight).
    for i in 0..REQUESTS {
        client.send(&tcp_invite(me, &format!("before-{i}")))?;
    }
    let got = collect(&mut [&mut conn_a, &mut conn_b], REQUESTS, WAIT)?;
    let on_b: Vec<&String> = got.iter().filter(|(i, _)| *i == 1).map(|(_, m)| m).collect();
    ensure!(!on_b.is_empty() && on_b.len() < REQUESTS, "Call-IDs spread over a and b: {} on b", on_b.len());
    let in_flight = on_b[0].clone();
    let id = header(&in_flight, "Call-ID").context("Call-ID")?;

    // a re-weighted, b removed, c added.
    let t0 = Instant::now();
    reload(&lb, &tcp_pool_config(udp, tcp, control, &[(a, 3), (c, 1)]))?;
    let mut conn_c = StreamClient::accept(&listeners[2], WAIT).context("the added backend gets a connection")?;
    eprintln!("added backend connected {:?} after the reload", t0.elapsed());
    lb.control.wait_state(c, "up", WAIT)?;

    // b's connection still works both ways for what was under way: b's BYE reaches the
    // client along the Record-Route, and the client's 200 comes back to b over it ...
    conn_b.send(bye_from(b, &in_flight)?.as_bytes())?;
    let bye = client.read_message(WAIT).context("b's BYE on the client's connection")?;
    ensure!(bye.starts_with("BYE ") && bye.contains(&format!("Call-ID: {id}")), "{bye}");
    client.send(response_to(&bye).as_bytes())?;
    let ok = conn_b.read_message(WAIT).context("the 200 for b's BYE over b's connection")?;
    ensure!(ok.starts_with("SIP/2.0 200 OK") && header(&ok, "CSeq").as_deref() == Some("9 BYE"), "{ok}");
    // ... and b's answer to the INVITE in flight reaches the client.
    conn_b.send(response_to(&in_flight).as_bytes())?;
    let resp = client.read_message(WAIT)?;
    ensure!(resp.starts_with("SIP/2.0 200 OK") && resp.contains(&format!("Call-ID: {id}")), "{resp}");
    // Then sip-lb closes b's connection, the traffic done.
    let t1 = Instant::now();
    conn_b.wait_closed(Duration::from_secs(10)).context("the removed backend's connection is closed")?;
    eprintln!("removed backend's connection closed {:?} after its last message", t1.elapsed());

    // Calls now go to a and c only, a over the connection it had before the reload.
    for i in 0..REQUESTS {
        client.send(&tcp_invite(me, &format!("after-{i}")))?;
    }
    let got = collect(&mut [&mut conn_a, &mut conn_c], REQUESTS, WAIT)?;
    let on_c = got.iter().filter(|(i, _)| *i == 1).count();
    ensure!(on_c > 0 && on_c < REQUESTS, "Call-IDs spread over a and c: {on_c} of {REQUESTS} on c");
    // (conn_a is the connection accepted before the reload.)
    ensure!(nothing_to_accept(&listeners[0])?, "a kept its one connection");
    ensure!(nothing_to_accept(&listeners[1])?, "no new connection to the removed backend");
    let backends: Vec<SocketAddr> = lb.control.backends()?.iter().map(|b| b.addr).collect();
    ensure!(backends.len() == 2 && backends.contains(&a) && backends.contains(&c), "{backends:?}");
    ensure!(lb.control.backend(a)?.pools == [("farm".to_owned(), 3)], "a re-weighted");

    let m = lb.control.metrics()?;
    let links = m.by("sip_lb_backend_links_total", "event");
    ensure!(links.get("connected") == Some(&3), "a, b and c connected once each: {links:?}");
    for never in ["lost", "connect_failed", "dropped_down", "dropped_full"] {
        ensure!(links.get(never).copied().unwrap_or(0) == 0, "{never}: {links:?}");
    }
    Ok(())
}

/// The SHA-256 fingerprint `openssl x509` prints for the first certificate in `pem`.
fn fingerprint(pem: &[u8]) -> Result<String> {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running openssl (Debian package openssl)")?;
    std::io::Write::write_all(child.stdin.as_mut().context("stdin")?, pem)?;
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "openssl x509: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The fingerprint of the certificate a new handshake with `addr` gets (`openssl s_client`).
fn served(addr: SocketAddr) -> Result<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string()])
        .stdin(Stdio::null())
        .output()
        .context("running openssl s_client")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(text.contains("BEGIN CERTIFICATE"), "no certificate from {addr}: {}", String::from_utf8_lossy(&out.stderr));
    fingerprint(text.as_bytes())
}

fn copy_pair(cert: &Path, key: &Path, to: &Path) -> Result<()> {
    std::fs::copy(cert, to.join("cert.pem"))?;
    std::fs::copy(key, to.join("key.pem"))?;
    Ok(())
}

#[test]
fn a_reload_rereads_the_listeners_certificate() -> Result<()> {
    let old = scratch_dir("stream_reload_cert_old")?;
    let new = scratch_dir("stream_reload_cert_new")?;
    let live = scratch_dir("stream_reload_cert_live")?;
    let (old_ca, old_cert, old_key) = make_certs(&old)?;
    let (new_ca, new_cert, new_key) = make_certs(&new)?;
    copy_pair(&old_cert, &old_key, &live)?;
    let (udp, tls, control, backend) = (free_udp_addr()?, free_tcp_addr()?, free_tcp_addr()?, free_udp_addr()?);
    let text = format!(
        "listen = [\"{udp}\", \"tls:{tls}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n\
         [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[[pool]]\nname = \"farm\"\nbackends = [\"{backend}\"]\n",
        live.join("cert.pem").display(),
        live.join("key.pem").display()
    );
    let lb = Launch::config("stream_reload_cert", &text, &[udp], control).start()?;
    let (old_fp, new_fp) = (fingerprint(&std::fs::read(&old_cert)?)?, fingerprint(&std::fs::read(&new_cert)?)?);
    ensure!(old_fp != new_fp);
    ensure!(served(tls)? == old_fp, "before the reload: the first certificate");
    let mut open = tls_connect(tls, &old_ca, WAIT)?;
    open.send(b"\r\n\r\n")?;
    ensure!(open.read_bytes(2, WAIT)? == b"\r\n", "keep-alive answered");

    // Renewed in place, then reloaded.
    copy_pair(&new_cert, &new_key, &live)?;
    reload(&lb, &text)?;
    ensure!(served(tls)? == new_fp, "after the reload: the new certificate");
    ensure!(tls_connect(tls, &old_ca, WAIT).is_err(), "a client trusting only the old CA is refused now");
    let mut fresh = tls_connect(tls, &new_ca, WAIT)?;
    fresh.send(b"\r\n\r\n")?;
    ensure!(fresh.read_bytes(2, WAIT)? == b"\r\n");
    // The connection made before the reload goes on with its session.
    open.send(b"\r\n\r\n")?;
    ensure!(open.read_bytes(2, WAIT)? == b"\r\n", "the open connection still answered");

    // A broken certificate is refused, by name, and the last good one stays.
    std::fs::write(live.join("cert.pem"), "not a certificate\n")?;
    std::fs::write(lb.config_path(), &text)?;
    let out = lb.cli(&["reload"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    let path = live.join("cert.pem").display().to_string();
    ensure!(!out.status.success() && err.contains(&path), "the reload must fail naming {path}: {err}");
    ensure!(served(tls)? == new_fp, "the previous certificate still serves");
    ensure!(lb.control.stats()?.reload_failures == 1);
    Ok(())
}

#[test]
fn a_first_tcp_pool_without_a_connection_layer_is_refused_by_a_reload() -> Result<()> {
    let (udp, control, backend) = (free_udp_addr()?, free_tcp_addr()?, free_tcp_addr()?);
    let plain = format!(
        "listen = [\"{udp}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n\
         [[pool]]\nname = \"farm\"\nbackends = [\"{backend}\"]\n"
    );
    let lb = Launch::config("stream_reload_first_link", &plain, &[udp], control).start()?;
    std::fs::write(lb.config_path(), plain.replace("name = \"farm\"", "name = \"farm\"\ntransport = \"tcp\""))?;
    let out = lb.cli(&["reload"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && err.contains("need a restart"), "refused, saying why: {err}");
    ensure!(lb.control.stats()?.reload_failures == 1 && lb.control.stats()?.generation == 1);
    Ok(())
}
