//! The shield-flood comparison (issue 14): machine-wide CPU while one source
//! floods sip-lb (XDP on a veth, `sip_lb_tests::nslb`) with REGISTERs at a
//! fixed rate, shield on against shield off, the same flood
//! (`sip_lb_tests::rawflood`, paced). With the shield on, the flood is held
//! to its rate and then banned in XDP; off, every REGISTER goes up the stack
//! and through the worker to a counting backend. A run without flood (sip-lb
//! idle, shield on) measures what the rest of the machine does meanwhile.
//! The three alternate in rotating order, round after round.
//!
//! Machine-wide CPU is the cpuidle residency ([`super::procs::MachineMark`]);
//! sip-lb's own CPU and the flood thread's are beside it.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sip_lb_tests::nslb::NsLb;
use sip_lb_tests::rawflood::{mac_of, Flood, Source};
use sip_lb_tests::sink::Sink;

use super::procs::{cpu_seconds, cpu_ticks, MachineMark};

const NET: &str = "10.77.54.";
const BACKEND_PORT: u16 = 5080;
/// Before the window: the shield bans the flood after a second over its rate.
pub const WARM_UP: Duration = Duration::from_secs(2);

/// What ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// sip-lb, shield on, no flood.
    Idle,
    ShieldOn,
    ShieldOff,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Idle, Mode::ShieldOn, Mode::ShieldOff];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Idle => "no flood (shield on)",
            Mode::ShieldOn => "flood, shield on",
            Mode::ShieldOff => "flood, shield off",
        }
    }
}

/// One measured window.
#[derive(Clone, Debug)]
pub struct FloodRun {
    pub mode: Mode,
    pub round: usize,
    /// Frames the sender wrote per second over its whole run (warm-up included).
    pub sent_pps: f64,
    /// Machine-wide busy CPUs over the window.
    pub busy_cpus: f64,
    /// sip-lb's own CPUs, and the flood thread's.
    pub lb_cpus: f64,
    pub sender_cpus: f64,
    /// Datagrams the worker received in the window, and what XDP dropped.
    pub worker_rx: u64,
    pub xdp_dropped: u64,
}

/// The topology and the frames, made once for all runs.
pub struct Lab {
    lb: NsLb,
    flood: Flood,
}

impl Lab {
    pub fn create() -> Result<Lab> {
        let lb = NsLb::setup("flood", NET, 2)?;
        let flood = Flood::new(
            mac_of(&lb.lb_ns, &lb.lb_if)?,
            mac_of(&lb.peer_ns, &lb.peer_if)?,
            Ipv4Addr::new(10, 77, 54, 4),
            lb.addr(1, 5060),
        );
        Ok(Lab { lb, flood })
    }
}

fn config(lab: &Lab, shield: bool) -> String {
    let shield = if shield {
        "[shield]\nrate = 2000\nburst = 1000\nban_after_over_rate_seconds = 1\nban_seconds = 300\n"
    } else {
        ""
    };
    format!(
        "listen = [\"{}\"]\nworkers = 1\n\n[[pool]]\nname = \"farm\"\nbackends = [\"{}\"]\n\n{shield}",
        lab.lb.addr(1, 5060),
        lab.lb.addr(2, BACKEND_PORT)
    )
}

/// This thread's CPU ticks (utime + stime).
fn thread_ticks() -> u64 {
    // SAFETY: no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, r)| r).split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// One window of `seconds` in `mode`, the flood at `pps`.
pub fn run(lab: &mut Lab, mode: Mode, pps: f64, seconds: f64, round: usize) -> Result<FloodRun> {
    let backend = lab.lb.in_peer(|| Sink::counting(format!("{NET}2:{BACKEND_PORT}")))??;
    let label = format!("shield-flood-{}-{round}", if mode == Mode::ShieldOff { "off" } else { "on" });
    lab.lb.start(&label, &config(lab, mode != Mode::ShieldOff), &["--datapath", "socket"])?;
    let lb_pid = lab.lb.child.as_ref().context("sip-lb")?.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let window = Duration::from_secs_f64(seconds);
    // The flood thread measures its own CPU over the window: (frames, ticks) at its start and end.
    let (marks_tx, marks_rx) = std::sync::mpsc::channel::<(Instant, u64)>();
    let flood_thread = (mode != Mode::Idle).then(|| {
        let (stop, flood, peer, dev) =
            (stop.clone(), lab.flood.clone(), lab.lb.peer_ns.name().to_owned(), lab.lb.peer_if.clone());
        std::thread::spawn(move || -> Result<sip_lb_tests::rawflood::Sent> {
            sip_lb_tests::netns::enter(&peer)?;
            let n = sip_lb_udp::affinity::cpu_count();
            if n > 1 {
                let _ = sip_lb_udp::affinity::pin_to_cpu(n - 1);
            }
            let _ = marks_tx.send((Instant::now(), thread_ticks()));
            let sent = flood.send(&dev, Source::One, Some(pps), &stop, WARM_UP + window + Duration::from_secs(5))?;
            let _ = marks_tx.send((Instant::now(), thread_ticks()));
            Ok(sent)
        })
    });
    // Measuring starts after the warm-up (a measurement window, not synchronisation).
    std::thread::sleep(WARM_UP);
    let stats0 = lab.lb.stats()?;
    let (m0, t0) = (MachineMark::now()?, cpu_ticks(&[lb_pid]));
    std::thread::sleep(window);
    let (m1, t1) = (MachineMark::now()?, cpu_ticks(&[lb_pid]));
    let stats1 = lab.lb.stats()?;
    stop.store(true, Ordering::Relaxed);
    let sent = match flood_thread {
        Some(t) => Some(t.join().map_err(|_| anyhow::anyhow!("flood thread panicked"))??),
        None => None,
    };
    lab.lb.stop()?;
    drop(backend);
    let wall = m0.wall_s(&m1).max(1e-3);
    let marks: Vec<(Instant, u64)> = marks_rx.try_iter().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let sender_cpus = match (marks.first(), marks.last(), sent) {
        (Some(a), Some(b), Some(_)) if marks.len() == 2 => (b.1 - a.1) as f64 / hz / (b.0 - a.0).as_secs_f64(),
        _ => 0.0,
    };
    let xdp = |s: &sip_lb_tests::control::Stats| s.xdp_account.as_ref().map_or(0, |x| x.dropped);
    Ok(FloodRun {
        mode,
        round,
        sent_pps: sent.map_or(0.0, |s| s.pps()),
        busy_cpus: m0.busy_s(&m1) / wall,
        lb_cpus: cpu_seconds(&t0, &t1) / wall,
        sender_cpus,
        worker_rx: stats1.rx_datagrams().saturating_sub(stats0.rx_datagrams()),
        xdp_dropped: xdp(&stats1).saturating_sub(xdp(&stats0)),
    })
}
