//! A panicking worker takes sip-lb down instead of black-holing its share of
//! the Call-IDs ("Failure containment", docs/operations.md):
//! - sip-lb runs with 2 workers (Call-ID steering by the reuseport selector)
//!   and the debug-only fault `SIP_LB_FAULT=worker-panic` armed; 200
//!   Call-IDs go through, spread over both workers;
//! - one datagram carrying the trigger panics the worker it lands on: the
//!   process must die of SIGABRT within 5 s, saying which worker panicked;
//! - afterwards no socket is left on the listen port (/proc/net/udp, and a
//!   plain bind of the port succeeds);
//! - the test, acting as the supervisor, starts sip-lb again at once: every
//!   one of 200 new Call-IDs reaches the backend exactly once, over both
//!   workers.
//!
//! And a panicking control-plane task (`SIP_LB_FAULT=control-panic`, on
//! SIGHUP) aborts the process the same way instead of being swallowed by
//! tokio.
//!
//! Prints the time from the trigger datagram to the exit and to the restarted
//! sip-lb answering. Needs root (the reuseport selector is eBPF) and a debug
//! build of sip-lb (release builds ignore SIP_LB_FAULT).
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sip_lb_tests::process::{scratch_dir, ChildGuard};
use sip_lb_tests::sink::Sink;
use sip_lb_tests::sip::{call_id_of, SipRequest};
use sip_lb_tests::sip_lb_binary;

const CALLS: usize = 200;
const TRIGGER: &str = "sip-lb-fault=worker-panic";

/// A port the kernel hands out for 127.0.0.1:0 right now.
fn free_port() -> Result<u16> {
    Ok(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// Whether any UDP socket (v4 or v6, any address) is bound to `port`.
fn udp_port_bound(port: u16) -> Result<bool> {
    let mut text = std::fs::read_to_string("/proc/net/udp").context("read /proc/net/udp")?;
    text.push_str(&std::fs::read_to_string("/proc/net/udp6").unwrap_or_default());
    // "   0: 0100007F:13C4 00000000:0000 ...": the local address is field 1.
    let want = format!(":{port:04X}");
    Ok(text.lines().filter_map(|l| l.split_whitespace().nth(1)).any(|local| local.ends_with(&want)))
}

/// The kit's padded MESSAGE (its readiness 483 is never suppressed as an
/// amplification), with `extra` headers.
fn request(from: SocketAddr, call_id: &str, max_forwards: u32, extra: &[(&str, &str)]) -> String {
    let m = extra
        .iter()
        .fold(SipRequest::padded_message(from, call_id).max_forwards(max_forwards), |m, (n, v)| m.header(n, v));
    m.build()
}

/// The backend: the kit's recording sink.
struct Backend {
    addr: SocketAddr,
    sink: Sink,
}

impl Backend {
    fn start() -> Result<Backend> {
        let sink = Sink::bind((Ipv4Addr::LOCALHOST, 0))?;
        Ok(Backend { addr: sink.addr(), sink })
    }

    /// How often each Call-ID with `prefix` arrived so far.
    fn arrivals(&self, prefix: &str) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for id in self.sink.datagrams().iter().filter_map(|d| call_id_of(&d.bytes)).filter(|id| id.starts_with(prefix))
        {
            *m.entry(id).or_default() += 1;
        }
        m
    }
}

/// Starts sip-lb with 2 workers and `SIP_LB_FAULT=fault`; returns it once a
/// Max-Forwards: 0 request is answered with 483.
fn start_lb(listen: SocketAddr, control: u16, backend: SocketAddr, fault: &str, label: &str) -> Result<ChildGuard> {
    let mut cmd = Command::new(sip_lb_binary()?);
    cmd.args(["run", "--listen", &listen.to_string(), "--backend", &backend.to_string(), "--workers", "2"]);
    cmd.args(["--control", &format!("127.0.0.1:{control}")]);
    // Backtraces on, as an operator would want them: symbolising one is part
    // of the measured time to exit.
    cmd.env("SIP_LB_FAULT", fault).env("SIP_LB_LOG", "info").env("RUST_BACKTRACE", "1");
    // No core file from the intended abort.
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            if libc::setrlimit(libc::RLIMIT_CORE, &zero) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = ChildGuard::spawn(label, cmd, &scratch_dir("fault-worker-panic")?)?;
    let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    probe.set_read_timeout(Some(Duration::from_millis(20)))?;
    let from = probe.local_addr()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    for n in 0.. {
        child.ensure_running()?;
        if Instant::now() > deadline {
            break;
        }
        probe.send_to(request(from, &format!("ready-{label}-{n}"), 0, &[]).as_bytes(), listen)?;
        if let Ok(len) = probe.recv(&mut buf) {
            if buf[..len].starts_with(b"SIP/2.0 483") {
                return Ok(child);
            }
        }
    }
    bail!("{label} did not answer within 10 s; stderr:\n{}", child.stderr_tail(30))
}

/// Sends `CALLS` requests with fresh Call-IDs `<prefix><i>` and waits (up to
/// 3 s) until each has reached the backend; fails naming the missing ones.
fn send_calls(client: &UdpSocket, listen: SocketAddr, backend: &Backend, prefix: &str) -> Result<()> {
    let from = client.local_addr()?;
    for i in 0..CALLS {
        client.send_to(request(from, &format!("{prefix}{i}"), 70, &[]).as_bytes(), listen)?;
        if i % 20 == 19 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let got = backend.arrivals(prefix);
        let twice: Vec<_> = got.iter().filter(|(_, &n)| n > 1).map(|(id, _)| id.clone()).collect();
        ensure!(twice.is_empty(), "delivered more than once: {twice:?}");
        if got.len() == CALLS {
            return Ok(());
        }
        if Instant::now() > deadline {
            let missing: Vec<_> =
                (0..CALLS).map(|i| format!("{prefix}{i}")).filter(|id| !got.contains_key(id)).collect();
            bail!("{} of {CALLS} Call-IDs black-holed, e.g. {:?}", missing.len(), &missing[..missing.len().min(10)]);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for `child` to exit, polling every millisecond.
fn wait_exit(child: &mut ChildGuard, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_status()? {
            return Ok(Some(status));
        }
        thread::sleep(Duration::from_millis(1));
    }
    Ok(None)
}

/// Requests forwarded by each worker, from the summary sip-lb prints on stop
/// ("worker 0: rx 210 tx 210 requests 105 ...").
fn requests_per_worker(stderr: &str) -> Vec<u64> {
    stderr
        .lines()
        .filter(|l| l.starts_with("worker "))
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "requests").nth(1)?.parse().ok())
        .collect()
}

#[test]
fn worker_panic_aborts_the_process_and_a_restart_forwards_every_call_id() -> Result<()> {
    // SAFETY: no preconditions.
    ensure!(unsafe { libc::geteuid() } == 0, "needs root (the reuseport selector is eBPF)");
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let control = free_port()?;
    let backend = Backend::start()?;
    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;

    let mut lb1 = start_lb(listen, control, backend.addr, "worker-panic", "sip-lb-1")?;
    ensure!(
        lb1.stderr().contains("SIP_LB_FAULT=worker-panic armed"),
        "fault not armed (a release build?):\n{}",
        lb1.stderr()
    );
    send_calls(&client, listen, &backend, "before-")?;

    // The trigger: one request whose worker panics on it.
    let from = client.local_addr()?;
    let triggered = Instant::now();
    client.send_to(request(from, "trigger", 70, &[("X-Fault", TRIGGER)]).as_bytes(), listen)?;
    let status = wait_exit(&mut lb1, Duration::from_secs(5))?;
    let to_exit = triggered.elapsed();
    let err1 = lb1.stderr();
    let status = status.with_context(|| format!("sip-lb still running 5 s after a worker panic:\n{err1}"))?;
    ensure!(status.signal() == Some(libc::SIGABRT), "sip-lb ended with {status:?}, not SIGABRT:\n{err1}");
    let line = err1.lines().find(|l| l.contains("panicked") && l.contains("worker ")).unwrap_or_default().to_owned();
    ensure!(!line.is_empty(), "no 'worker N panicked' line:\n{err1}");
    ensure!(!backend.arrivals("trigger").contains_key("trigger"), "the trigger datagram was forwarded");

    // Nothing of sip-lb-1 is left on the port.
    ensure!(!udp_port_bound(listen.port())?, "a socket is still bound on {listen} after the abort");
    drop(UdpSocket::bind(listen).with_context(|| format!("plain bind of {listen} after the abort"))?);

    // The supervisor restarts sip-lb at once.
    let restarted = Instant::now();
    let mut lb2 = start_lb(listen, control, backend.addr, "worker-panic", "sip-lb-2")?;
    let (to_ready, recovery) = (restarted.elapsed(), triggered.elapsed());
    send_calls(&client, listen, &backend, "after-")?;
    lb2.ensure_running()?;
    let status = lb2.stop()?;
    let err2 = lb2.stderr();
    ensure!(status.success() && !err2.contains("panicked"), "sip-lb-2 stopped with {status:?}:\n{err2}");
    let per_worker = requests_per_worker(&err2);
    ensure!(
        per_worker.len() == 2 && per_worker.iter().all(|&n| n > 0),
        "the {CALLS} Call-IDs did not use both workers: {per_worker:?}\n{err2}"
    );
    eprintln!(
        "worker panic: {}\n  trigger datagram -> sip-lb exit (SIGABRT): {to_exit:?}\n  \
         restart -> answering: {to_ready:?}\n  time to recovery (trigger -> restarted sip-lb answering, \
         immediate restart): {recovery:?}\n  all {CALLS} Call-IDs forwarded after the restart; requests per worker \
         {per_worker:?}",
        line.trim()
    );
    Ok(())
}

#[test]
fn control_plane_task_panic_aborts_the_process() -> Result<()> {
    // SAFETY: no preconditions.
    ensure!(unsafe { libc::geteuid() } == 0, "needs root (the reuseport selector is eBPF)");
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
    let control = free_port()?;
    let backend = Backend::start()?;
    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    let mut lb = start_lb(listen, control, backend.addr, "control-panic", "sip-lb-control")?;
    ensure!(
        lb.stderr().contains("SIP_LB_FAULT=control-panic armed"),
        "fault not armed (a release build?):\n{}",
        lb.stderr()
    );
    send_calls(&client, listen, &backend, "control-")?;

    let hup = Instant::now();
    lb.signal(libc::SIGHUP)?;
    let status = wait_exit(&mut lb, Duration::from_secs(5))?;
    let to_exit = hup.elapsed();
    let err = lb.stderr();
    let status = status.with_context(|| format!("sip-lb still running 5 s after a control-plane panic:\n{err}"))?;
    ensure!(status.signal() == Some(libc::SIGABRT), "sip-lb ended with {status:?}, not SIGABRT:\n{err}");
    ensure!(err.contains("panic outside the workers"), "no control-plane panic line:\n{err}");
    ensure!(!udp_port_bound(listen.port())?, "a socket is still bound on {listen} after the abort");
    eprintln!("control-plane task panic: SIGHUP -> sip-lb exit (SIGABRT): {to_exit:?}");
    Ok(())
}
