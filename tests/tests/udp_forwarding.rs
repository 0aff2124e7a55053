//! sip-lb as a child process on 127.0.0.1, with plain UDP sockets as backends
//! and clients: the bytes that arrive are checked against RFC 3261 §16.11 and
//! RFC 3581.
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sip_lb_tests::lb::{Launch, SipLb};
use sip_lb_tests::ports::free_udp_addr;
use sip_lb_tests::process::scratch_dir;
use sip_lb_tests::sip_lb_binary;

struct Lb {
    addr: SocketAddr,
    _lb: SipLb,
}

impl Lb {
    /// `sip-lb run --listen <free port> --workers 2 <extra>`, ready when its control API
    /// answers and the port is bound.
    fn start(extra: &[String]) -> Result<Lb> {
        let addr = free_udp_addr()?;
        let lb = Launch::flags("udp-forwarding", &[addr]).args(&["--workers", "2"]).args(extra).start()?;
        Ok(Lb { addr, _lb: lb })
    }
}

struct Client {
    sock: UdpSocket,
    addr: SocketAddr,
}

impl Client {
    fn new() -> Result<Client> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        let addr = sock.local_addr()?;
        Ok(Client { sock, addr })
    }

    fn recv_timeout(&self, t: Duration) -> Option<String> {
        recv(&self.sock, t).map(|(m, _)| m)
    }
}

fn recv(sock: &UdpSocket, t: Duration) -> Option<(String, SocketAddr)> {
    sock.set_read_timeout(Some(t)).ok()?;
    let mut buf = vec![0u8; 65_536];
    let (n, from) = sock.recv_from(&mut buf).ok()?;
    Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
}

const SDP: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn invite(c: &Client, call_id: &str, cseq: u32, branch: &str) -> String {
    request(c, "INVITE", call_id, cseq, branch, SDP)
}

fn request(c: &Client, method: &str, call_id: &str, cseq: u32, branch: &str, body: &str) -> String {
    format!(
        "{method} sip:bob@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {addr};rport;branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: Alice <sip:alice@example.com>;tag=1928301774\r\n\
         To: Bob <sip:bob@example.com>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         Contact: <sip:alice@{addr}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {len}\r\n\r\n{body}",
        addr = c.addr,
        len = body.len()
    )
}

fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    let head = msg.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

fn branch_of(via: &str) -> &str {
    via.split(';').find_map(|p| p.trim().strip_prefix("branch=")).unwrap_or("")
}

/// Which of the backends received the next datagram, and what.
fn receive_at(backends: &[UdpSocket]) -> Option<(usize, String, SocketAddr)> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        for (i, b) in backends.iter().enumerate() {
            if let Some((m, from)) = recv(b, Duration::from_millis(10)) {
                return Some((i, m, from));
            }
        }
    }
    None
}

fn nothing_arrives(socks: &[&UdpSocket]) -> bool {
    socks.iter().all(|s| recv(s, Duration::from_millis(300)).is_none())
}

fn backends(n: usize) -> Result<(Vec<UdpSocket>, Vec<String>)> {
    let socks: Vec<UdpSocket> = (0..n).map(|_| UdpSocket::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    let mut args = Vec::new();
    for s in &socks {
        args.push("--backend".to_string());
        args.push(s.local_addr()?.to_string());
    }
    Ok((socks, args))
}

#[test]
fn invite_is_forwarded_with_own_via_and_the_response_comes_back() -> Result<()> {
    let (bes, args) = backends(2)?;
    let lb = Lb::start(&args)?;
    let client = Client::new()?;
    let msg = invite(&client, "call-1@test", 1, "z9hG4bK776asdhds");
    client.sock.send_to(msg.as_bytes(), lb.addr)?;
    let (_, fwd, from) = receive_at(&bes).context("INVITE not forwarded")?;
    assert_eq!(from.ip(), lb.addr.ip(), "sent from the balancer's address");

    let vias = headers(&fwd, "Via");
    assert_eq!(vias.len(), 2, "{fwd}");
    assert!(vias[0].starts_with(&format!("SIP/2.0/UDP {};branch=z9hG4bK", lb.addr)), "own Via on top: {}", vias[0]);
    // RFC 3581: empty rport filled with the source port, received added.
    assert_eq!(
        vias[1],
        format!("SIP/2.0/UDP {};rport={};branch=z9hG4bK776asdhds;received=127.0.0.1", client.addr, client.addr.port())
    );
    assert_eq!(headers(&fwd, "Max-Forwards"), ["69"]);
    assert!(fwd.ends_with(SDP), "body unchanged");
    assert_eq!(headers(&fwd, "Content-Length"), [SDP.len().to_string()]);
    for h in ["From", "To", "Call-ID", "CSeq", "Contact", "Content-Type"] {
        assert_eq!(headers(&fwd, h), headers(&msg, h), "{h} unchanged");
    }

    // The backend answers with the Via stack it got, to the balancer (from
    // any address: responses are routed by Via, not by source).
    let response = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=a6c85cf\r\nCall-ID: call-1@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        vias[0], vias[1], headers(&fwd, "From")[0], headers(&fwd, "To")[0]
    );
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    sender.send_to(response.as_bytes(), lb.addr)?;
    let got = client.recv_timeout(Duration::from_secs(2)).context("200 OK not relayed to the client")?;
    assert!(got.starts_with("SIP/2.0 200 OK\r\n"));
    assert_eq!(headers(&got, "Via"), [vias[1]], "own Via removed, client's kept");
    Ok(())
}

#[test]
fn retransmission_cancel_and_ack_reach_the_same_backend_with_the_same_branch() -> Result<()> {
    let (bes, args) = backends(3)?;
    let lb = Lb::start(&args)?;
    let client = Client::new()?;
    for call in 0..20 {
        let call_id = format!("affinity-{call}@test");
        let branch = format!("z9hG4bKaff{call}");
        let inv = invite(&client, &call_id, 1, &branch);
        client.sock.send_to(inv.as_bytes(), lb.addr)?;
        let (first, fwd1, _) = receive_at(&bes).context("INVITE")?;
        client.sock.send_to(inv.as_bytes(), lb.addr)?;
        let (second, fwd2, _) = receive_at(&bes).context("retransmission")?;
        assert_eq!(first, second, "retransmission to the same backend");
        assert_eq!(fwd1, fwd2, "retransmission forwarded byte-identically");
        let cancel = request(&client, "CANCEL", &call_id, 1, &branch, "");
        client.sock.send_to(cancel.as_bytes(), lb.addr)?;
        let (third, fwd3, _) = receive_at(&bes).context("CANCEL")?;
        assert_eq!(third, first, "CANCEL to the INVITE's backend");
        assert_eq!(
            branch_of(headers(&fwd3, "Via")[0]),
            branch_of(headers(&fwd1, "Via")[0]),
            "CANCEL branch == INVITE branch"
        );
        let ack = request(&client, "ACK", &call_id, 1, &branch, "");
        client.sock.send_to(ack.as_bytes(), lb.addr)?;
        let (fourth, fwd4, _) = receive_at(&bes).context("ACK")?;
        assert_eq!(fourth, first, "non-2xx ACK to the INVITE's backend");
        assert_eq!(
            branch_of(headers(&fwd4, "Via")[0]),
            branch_of(headers(&fwd1, "Via")[0]),
            "ACK branch == INVITE branch"
        );
    }
    Ok(())
}

#[test]
fn calls_spread_over_backends_and_registers_go_to_registrars() -> Result<()> {
    let (bes, mut args) = backends(2)?;
    let regs: Vec<UdpSocket> = (0..2).map(|_| UdpSocket::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    for r in &regs {
        args.push("--registrar".into());
        args.push(r.local_addr()?.to_string());
    }
    let lb = Lb::start(&args)?;
    let client = Client::new()?;
    let mut all: Vec<UdpSocket> = bes;
    all.extend(regs);
    let mut count = [0usize; 4];
    for call in 0..200 {
        let msg = invite(&client, &format!("spread-{call}@test"), 1, &format!("z9hG4bKsp{call}"));
        client.sock.send_to(msg.as_bytes(), lb.addr)?;
        let (i, _, _) = receive_at(&all).context("INVITE not forwarded")?;
        count[i] += 1;
    }
    assert_eq!(count[2] + count[3], 0, "no INVITE at a registrar: {count:?}");
    assert!(count[0] >= 60 && count[1] >= 60, "both backends used: {count:?}");
    let mut count = [0usize; 4];
    for call in 0..100 {
        let msg = request(&client, "REGISTER", &format!("reg-{call}@test"), 1, &format!("z9hG4bKrg{call}"), "");
        client.sock.send_to(msg.as_bytes(), lb.addr)?;
        let (i, _, _) = receive_at(&all).context("REGISTER not forwarded")?;
        count[i] += 1;
    }
    assert_eq!(count[0] + count[1], 0, "no REGISTER at a proxy: {count:?}");
    assert!(count[2] >= 25 && count[3] >= 25, "both registrars used: {count:?}");
    Ok(())
}

#[test]
fn bad_requests_get_stateless_replies_and_foreign_responses_are_dropped() -> Result<()> {
    let (bes, args) = backends(1)?;
    let lb = Lb::start(&args)?;
    let client = Client::new()?;

    let no_call_id = invite(&client, "x", 1, "z9hG4bKnocid").replace("Call-ID: x\r\n", "");
    client.sock.send_to(no_call_id.as_bytes(), lb.addr)?;
    let reply = client.recv_timeout(Duration::from_secs(2)).context("no 400")?;
    assert!(reply.starts_with("SIP/2.0 400 "), "{reply}");

    let too_long = invite(&client, "cl@test", 1, "z9hG4bKcl")
        .replace(&format!("Content-Length: {}", SDP.len()), "Content-Length: 9999");
    client.sock.send_to(too_long.as_bytes(), lb.addr)?;
    let reply = client.recv_timeout(Duration::from_secs(2)).context("no 400 for Content-Length")?;
    assert!(reply.starts_with("SIP/2.0 400 "), "{reply}");

    let hops = invite(&client, "mf@test", 1, "z9hG4bKmf").replace("Max-Forwards: 70", "Max-Forwards: 0");
    client.sock.send_to(hops.as_bytes(), lb.addr)?;
    let reply = client.recv_timeout(Duration::from_secs(2)).context("no 483")?;
    assert!(reply.starts_with("SIP/2.0 483 "), "{reply}");
    assert_eq!(headers(&reply, "Call-ID"), ["mf@test"]);

    // A response whose top Via is not ours: a reflection attempt, dropped.
    let victim = UdpSocket::bind("127.0.0.1:0")?;
    let foreign = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKnotours\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: f@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        victim.local_addr()?
    );
    client.sock.send_to(foreign.as_bytes(), lb.addr)?;
    // Keep-alives are dropped too.
    client.sock.send_to(b"\r\n\r\n", lb.addr)?;
    assert!(nothing_arrives(&[&victim, &bes[0], &client.sock]), "foreign response or keep-alive was forwarded");

    // Still forwarding afterwards.
    client.sock.send_to(invite(&client, "after@test", 1, "z9hG4bKafter").as_bytes(), lb.addr)?;
    receive_at(&bes).context("not forwarding after bad input")?;
    Ok(())
}

#[test]
fn bad_configuration_exits_non_zero_naming_the_problem() -> Result<()> {
    let dir = scratch_dir("bad-config")?;
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "listen = [\"127.0.0.1:5060\"]\n\n[[pool]]\nname = \"p\"\ndefault = true\nbackends = [\"not-an-address\"]\n",
    )?;
    let out = Command::new(sip_lb_binary()?).args(["run", "--config"]).arg(&file).output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":6:") && err.contains("not-an-address"), "message names line 6 and the value: {err}");

    let out = Command::new(sip_lb_binary()?).args(["run", "--backend", "nonsense"]).output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--backend") && err.contains("nonsense"), "message names the flag: {err}");
    Ok(())
}
