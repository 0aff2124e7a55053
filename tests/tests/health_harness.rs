//! Shared pieces of the control-plane end-to-end tests (`health_*`,
//! `reload_*`, `metrics_*`), included with `#[path]`: UDP backends that answer
//! OPTIONS probes and record requests, a UDP client, sip-lb started from a
//! TOML file with its control API on a free port, and a small HTTP GET.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sip_lb_tests::process::{scratch_dir, ChildGuard};
use sip_lb_tests::sip_lb_binary;

/// A request a backend received: (Call-ID, CSeq number, when).
#[derive(Clone, Debug)]
pub struct Seen {
    pub call_id: String,
    pub cseq: u64,
    pub at: Instant,
}

/// A UDP "SIP server" on a thread: answers OPTIONS with 200, records every
/// other request and, if `answer` is set, answers it with 200 too.
pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    answer: bool,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn start(answer: bool) -> Result<Backend> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        let addr = sock.local_addr()?;
        let mut b = Backend { addr, seen: Arc::default(), answer, stop: Arc::default(), thread: None };
        b.spawn(sock)?;
        Ok(b)
    }

    fn spawn(&mut self, sock: UdpSocket) -> Result<()> {
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        big_buffer(&sock);
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = stop.clone();
        let seen = self.seen.clone();
        let answer = self.answer;
        self.thread = Some(std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.starts_with("SIP/") {
                    continue;
                }
                if msg.starts_with("OPTIONS ") {
                    let _ = sock.send_to(response_to(&msg).as_bytes(), from);
                    continue;
                }
                let call_id = header(&msg, "Call-ID").unwrap_or_default();
                let cseq = header(&msg, "CSeq")
                    .and_then(|c| c.split_whitespace().next().and_then(|n| n.parse().ok()))
                    .unwrap_or(0);
                seen.lock().unwrap().push(Seen { call_id, cseq, at: Instant::now() });
                if answer {
                    let _ = sock.send_to(response_to(&msg).as_bytes(), from);
                }
            }
        }));
        Ok(())
    }

    /// Closes the socket: the backend is gone (no answers, no ICMP games).
    pub fn kill(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Binds the same address again and serves.
    pub fn restart(&mut self) -> Result<()> {
        let sock = UdpSocket::bind(self.addr).with_context(|| format!("rebinding {}", self.addr))?;
        self.spawn(sock)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// 4 MiB receive buffer (FORCE works as root), so a test backend on a busy
/// machine does not drop what sip-lb delivered.
pub fn big_buffer(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let v: libc::c_int = 4 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: valid fd and a c_int option value.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

/// A 200 OK for `req`: its Via stack, From, To (+tag), Call-ID, CSeq.
pub fn response_to(req: &str) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for l in req.split("\r\n").skip(1) {
        if l.is_empty() {
            break;
        }
        let name = l.split(':').next().unwrap_or("").trim();
        match name.to_ascii_lowercase().as_str() {
            "via" | "v" | "from" | "f" | "call-id" | "i" | "cseq" => out += &format!("{l}\r\n"),
            "to" | "t" => out += &format!("{l};tag=be\r\n"),
            _ => {}
        }
    }
    out + "Content-Length: 0\r\n\r\n"
}

pub fn header(msg: &str, name: &str) -> Option<String> {
    let head = msg.split("\r\n\r\n").next()?;
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
}

pub struct Client {
    pub sock: UdpSocket,
    pub addr: SocketAddr,
}

impl Client {
    pub fn new() -> Result<Client> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        big_buffer(&sock);
        let addr = sock.local_addr()?;
        Ok(Client { sock, addr })
    }

    pub fn request(&self, method: &str, call_id: &str, cseq: u64) -> String {
        let tag: String = call_id.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        format!(
            "{method} sip:bob@example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP {addr};rport;branch=z9hG4bK-{tag}-{cseq}\r\n\
             Max-Forwards: 70\r\n\
             From: Alice <sip:alice@example.com>;tag=a1\r\n\
             To: Bob <sip:bob@example.com>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {method}\r\n\
             Contact: <sip:alice@{addr}>\r\n\
             Content-Length: 0\r\n\r\n",
            addr = self.addr
        )
    }

    pub fn send(&self, to: SocketAddr, msg: &str) -> Result<()> {
        self.sock.send_to(msg.as_bytes(), to)?;
        Ok(())
    }

    /// Everything that arrives within `t` of the last datagram.
    pub fn drain(&self, t: Duration) -> Vec<String> {
        let _ = self.sock.set_read_timeout(Some(t));
        let mut buf = vec![0u8; 65_536];
        let mut out = Vec::new();
        while let Ok((n, _)) = self.sock.recv_from(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }
}

/// A free TCP port on 127.0.0.1 (for the control API).
pub fn free_tcp_addr() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

/// A free UDP port on 127.0.0.1 (for sip-lb's listen address).
pub fn free_udp_addr() -> Result<SocketAddr> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?)
}

/// `[[pool]]` with the given (addr, weight) backends and a fast `[health]`.
pub fn config_toml(listen: SocketAddr, control: SocketAddr, backends: &[(SocketAddr, u32)], health: &str) -> String {
    let list: Vec<String> = backends.iter().map(|(a, w)| format!("{{ addr = \"{a}\", weight = {w} }}")).collect();
    format!(
        "listen = [\"{listen}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n[[pool]]\nname = \"farm\"\nbackends = [{}]\n\n[health]\n{health}\n",
        list.join(", ")
    )
}

pub const FAST_HEALTH: &str = "interval_ms = 200\ntimeout_ms = 150\nfailures = 2\nsuccesses = 2\n";

pub struct Lb {
    pub addr: SocketAddr,
    pub control: SocketAddr,
    pub config: PathBuf,
    pub child: ChildGuard,
}

impl Lb {
    /// Starts sip-lb on `config_text` (written to a file in a scratch dir),
    /// ready once its control API answers.
    pub fn start(label: &str, addr: SocketAddr, control: SocketAddr, config_text: &str) -> Result<Lb> {
        let dir = scratch_dir(label)?;
        let config = dir.join("sip-lb.toml");
        std::fs::write(&config, config_text)?;
        let mut cmd = Command::new(sip_lb_binary()?);
        cmd.arg("run").arg("--config").arg(&config);
        let child = ChildGuard::spawn("sip-lb", cmd, &dir)?;
        let mut lb = Lb { addr, control, config, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            lb.child.ensure_running()?;
            if matches!(http(control, "GET", "/stats"), Ok((200, _))) {
                return Ok(lb);
            }
            if Instant::now() > deadline {
                bail!("sip-lb's control API did not answer within 10 s; stderr:\n{}", lb.child.stderr_tail(30));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `sip-lb ARGS --control <this instance>`.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        let out = Command::new(sip_lb_binary()?).args(args).arg("--control").arg(self.control.to_string()).output()?;
        Ok(out)
    }

    pub fn metrics(&self) -> Result<String> {
        let (status, body) = http(self.control, "GET", "/metrics")?;
        if status != 200 {
            bail!("/metrics: HTTP {status}: {body}");
        }
        Ok(body)
    }

    /// The state column of `sip-lb backends` for `addr`.
    pub fn state_of(&self, addr: SocketAddr) -> Result<String> {
        let out = self.cli(&["backends"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(&addr.to_string()))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .with_context(|| {
                format!("{addr} not in `sip-lb backends`:\n{text}{}", String::from_utf8_lossy(&out.stderr))
            })
    }

    /// Waits until `sip-lb backends` shows `state` for `addr`.
    pub fn wait_state(&self, addr: SocketAddr, state: &str, within: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        loop {
            if self.state_of(addr)? == state {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > within {
                bail!("{addr} not {state} within {within:?}; stderr:\n{}", self.child.stderr_tail(20));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One HTTP/1.1 request with `Connection: close`; (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")?;
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// The value of one sample line `name{labels} value` whose labels include
/// every `k="v"` in `labels`, summed over the matching lines.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ')?;
        let (n, l) = series.split_once('{').map_or((series, ""), |(n, l)| (n, l));
        if n != name {
            continue;
        }
        if labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))) {
            found = true;
            sum += value.parse::<f64>().ok()?;
        }
    }
    found.then_some(sum)
}

/// Waits until no backend has received anything for `quiet` (at most 5 s):
/// every datagram in flight has landed.
pub fn settle(backends: &[&Backend], quiet: Duration) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let total = || backends.iter().map(|b| b.count()).sum::<usize>();
    let mut last = total();
    let mut since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        let now = total();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return;
        }
    }
}

/// Which backend index received each Call-ID with CSeq `cseq`.
pub fn owners(backends: &[&Backend], cseq: u64) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for (i, b) in backends.iter().enumerate() {
        for s in b.seen().into_iter().filter(|s| s.cseq == cseq) {
            m.insert(s.call_id, i);
        }
    }
    m
}
