//! HEP v3 mirroring (`[hep]`) against collectors nobody here wrote: sngrep
//! listening for HEP (`-L udp:IP:PORT`) and saving what it decodes as pcap
//! (`-O`), and Kamailio's sipcapture module logging each HEP packet's chunks
//! from its `event_route[sipcapture:request]`. SIPp calls go through sip-lb
//! to a SIPp UAS; the capture must hold every message of every call in both
//! legs, with the right addresses, message by message as the two SIPp
//! instances logged them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use sip_lb_tests::lb::Launch;
use sip_lb_tests::pcap::{udp_datagrams, Datagram};
use sip_lb_tests::ports::{free_tcp_addr, free_udp_addrs, wait_udp_bound};
use sip_lb_tests::process::{scratch_dir, ChildGuard};
use sip_lb_tests::sipp::{ensure_sipp, parse_short_log, run_uac, Direction, Scenario, UacOptions, Uas};

/// SIPp, sngrep and sip-lb share two cores: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A collector under test.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Collector {
    /// `sngrep -N -q -L udp:ADDR -O capture.pcap`.
    Sngrep,
    /// Kamailio with sipcapture (`kamailio/sipcapture.cfg` of this test),
    /// logging each packet's chunks.
    Kamailio,
}

/// One mirrored message as the collector decoded it.
#[derive(Debug)]
struct Captured {
    src: SocketAddr,
    dst: SocketAddr,
    sec: u32,
    usec: u32,
    first_line: String,
    call_id: String,
    /// What Kamailio read from the capture-id and auth-key chunks.
    id_key: Option<(String, String)>,
}

impl Collector {
    fn start(self, addr: SocketAddr, dir: &Path) -> Result<ChildGuard> {
        let mut cmd = match self {
            Collector::Sngrep => {
                let mut c = Command::new("sngrep");
                c.args(["-N", "-q", "-L", &format!("udp:{addr}"), "-O"]).arg(dir.join("capture.pcap"));
                c
            }
            Collector::Kamailio => {
                let cfg = dir.join("sipcapture.cfg");
                std::fs::write(&cfg, KAMAILIO_CFG.replace("LISTEN", &addr.to_string()))?;
                let mut c = Command::new("kamailio");
                c.args(["-DD", "-E", "-f"]).arg(&cfg);
                c
            }
        };
        let name = if self == Collector::Sngrep { "sngrep" } else { "kamailio" };
        cmd.current_dir(dir);
        let mut g = ChildGuard::spawn(name, cmd, dir).with_context(|| format!("starting {name}"))?;
        wait_udp_bound(addr.port(), Duration::from_secs(10), || g.ensure_running())
            .with_context(|| format!("{name} listening"))?;
        Ok(g)
    }

    /// What it decoded so far.
    fn captured(self, g: &ChildGuard, dir: &Path) -> Result<Vec<Captured>> {
        match self {
            Collector::Sngrep => {
                let bytes = std::fs::read(dir.join("capture.pcap")).unwrap_or_default();
                let got = if bytes.len() >= 24 { udp_datagrams(&bytes)? } else { Vec::new() };
                Ok(got.into_iter().map(from_pcap).collect())
            }
            Collector::Kamailio => Ok(g.stderr().lines().filter_map(from_kamailio_line).collect()),
        }
    }
}

/// Kamailio as a HEP collector: sipcapture decodes each packet and runs the
/// event route, which logs the chunks (the database, never written, is an
/// empty sqlite file in its working directory; the core's
/// complaint that a HEP packet is not SIP comes before and is harmless).
const KAMAILIO_CFG: &str = r#"#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=1
disable_tcp=yes
listen=udp:LISTEN
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "pv.so"
loadmodule "db_sqlite.so"
loadmodule "xlog.so"
loadmodule "textops.so"
loadmodule "sipcapture.so"
modparam("sipcapture", "db_url", "sqlite:///unused.db")
modparam("sipcapture", "capture_on", 0)
modparam("sipcapture", "hep_capture_on", 1)
modparam("sipcapture", "nonsip_hook", 1)
event_route[sipcapture:request] {
    xlog("L_ALERT", "HEP|$hep(0x00c)|$hep(0x00e)|$hep(0x003)|$hep(0x007)|$hep(0x004)|$hep(0x008)|$hep(0x009)|$hep(0x00a)|$(hep(0x00f){line.at,0})|$(hep(0x00f){line.sw,Call-ID})|\n");
    return 0;
}
request_route {
    drop;
}
"#;

fn from_pcap(d: Datagram) -> Captured {
    let text = String::from_utf8_lossy(&d.payload);
    Captured {
        src: d.src,
        dst: d.dst,
        sec: d.sec,
        usec: d.usec,
        first_line: text.split("\r\n").next().unwrap_or("").to_owned(),
        call_id: header(&text, "Call-ID", "i").unwrap_or("").to_owned(),
        id_key: None,
    }
}

/// `... HEP|id|key|src|sport|dst|dport|sec|usec|first line|Call-ID: x|`.
fn from_kamailio_line(line: &str) -> Option<Captured> {
    let f: Vec<&str> = line.split_once("HEP|")?.1.split('|').collect();
    if f.len() < 10 {
        return None;
    }
    let sa = |ip: &str, port: &str| format!("{ip}:{port}").parse::<SocketAddr>().ok();
    Some(Captured {
        src: sa(f[2], f[3])?,
        dst: sa(f[4], f[5])?,
        sec: f[6].parse().ok()?,
        usec: f[7].parse().ok()?,
        first_line: f[8].trim().to_owned(),
        call_id: f[9].split_once(':')?.1.trim().to_owned(),
        id_key: Some((f[0].to_owned(), f[1].to_owned())),
    })
}

/// (src, dst, Call-ID) -> first lines in order, of SIP datagrams.
type Legs = BTreeMap<(SocketAddr, SocketAddr, String), Vec<String>>;

fn header<'a>(msg: &'a str, long: &str, short: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        let n = n.trim();
        (n.eq_ignore_ascii_case(long) || n.eq_ignore_ascii_case(short)).then(|| v.trim())
    })
}

fn legs_of_capture(captured: &[Captured]) -> Legs {
    let mut legs = Legs::new();
    for c in captured {
        legs.entry((c.src, c.dst, c.call_id.clone())).or_default().push(c.first_line.clone());
    }
    legs
}

/// What SIPp logged (`-trace_shortmsg`) as the legs sip-lb must have mirrored:
/// `me` <-> `lb`.
fn legs_of_sipp(short_log: &Path, me: SocketAddr, lb: SocketAddr, into: &mut Legs) -> Result<usize> {
    let text = std::fs::read_to_string(short_log).with_context(|| format!("read {}", short_log.display()))?;
    let msgs = parse_short_log(&text);
    for m in &msgs {
        let key = match m.direction {
            Direction::Sent => (me, lb, m.call_id.clone()),
            Direction::Received => (lb, me, m.call_id.clone()),
        };
        into.entry(key).or_default().push(m.first_line.trim().to_owned());
    }
    Ok(msgs.len())
}

struct Run {
    expected: Legs,
    captured: Vec<Captured>,
    messages: usize,
    calls: u64,
    started: u64,
    ended: u64,
    dropped: f64,
}

/// `calls` calls through sip-lb with `[hep] sample = sample`; what
/// `collector` decoded and the SIPp logs.
fn run(label: &str, collector: Collector, calls: u64, sample: &str) -> Result<Run> {
    ensure_sipp()?;
    let dir = scratch_dir(label)?;
    let [lb_addr, uas_addr, uac_addr, hep_addr]: [SocketAddr; 4] = free_udp_addrs(4)?.try_into().unwrap();
    let mut guard = collector.start(hep_addr, &dir)?;
    let uas = Uas::start("uas", uas_addr, &Scenario::uas_call(), &dir)?;
    let control = free_tcp_addr()?;
    let config = format!(
        "listen = [\"{lb_addr}\"]\nworkers = 2\nmetrics = \"{control}\"\n\n[[pool]]\nname = \"farm\"\n\
         backends = [\"{uas_addr}\"]\n\n[hep]\ncollector = \"{hep_addr}\"\ncapture_id = 4242\npassword = \"hep-s3cret\"\nsample = {sample}\n"
    );
    let lb = Launch::config(label, &config, &[lb_addr], control).start()?;
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut opts = UacOptions::new("uac", Scenario::uac_call(), lb_addr);
    opts.local = uac_addr;
    opts.calls = calls;
    opts.rate = 20.0;
    let report = run_uac(opts, &dir)?;
    ensure!(report.successful() == calls && report.failed() == 0, "UAC: {report}\nlogs: {}", dir.display());
    let ended = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 1;

    let mut expected = Legs::new();
    let messages = legs_of_sipp(&dir.join("uac.short.log"), uac_addr, lb_addr, &mut expected)?
        + legs_of_sipp(&dir.join("uas.short.log"), uas_addr, lb_addr, &mut expected)?;
    // Every message SIPp logged crossed sip-lb once; sip-lb mirrors the sampled calls' ones.
    let m = lb.control.wait_metrics(Duration::from_secs(10), "HEP packets sent", |m| {
        let sent = m.sum("sip_lb_hep_sent_total", &[]).unwrap_or(0.0);
        let dropped = m.sum("sip_lb_hep_dropped_total", &[]).unwrap_or(0.0);
        sample != "1" || sent + dropped >= messages as f64
    })?;
    let sent = m.sum("sip_lb_hep_sent_total", &[]).context("no sip_lb_hep_sent_total")? as usize;
    let dropped = m.sum("sip_lb_hep_dropped_total", &[]).context("no sip_lb_hep_dropped_total")?;
    // The collectors write each packet as they decode it: wait for all of them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let captured = loop {
        let got = collector.captured(&guard, &dir)?;
        if got.len() >= sent {
            break got;
        }
        if Instant::now() > deadline {
            bail!("the collector decoded {} of the {sent} HEP packets sent; logs: {}", got.len(), dir.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    guard.stop()?;
    drop(lb);
    drop(uas);
    Ok(Run { expected, captured, messages, calls, started, ended, dropped })
}

/// Every message of `calls` calls, leg by leg as SIPp logged them, with
/// timestamps within the run.
fn check_all(r: &Run) -> Result<()> {
    ensure!(r.dropped == 0.0, "{} copies dropped", r.dropped);
    ensure!(r.captured.len() == r.messages, "captured {} messages, SIPp logged {}", r.captured.len(), r.messages);
    let got = legs_of_capture(&r.captured);
    if got != r.expected {
        let diff: Vec<_> = r.expected.iter().filter(|(k, v)| got.get(*k) != Some(v)).take(3).collect();
        bail!("capture differs from the SIPp logs; first expected legs not matched: {diff:#?}");
    }
    let calls = got.keys().map(|k| &k.2).collect::<std::collections::BTreeSet<_>>().len() as u64;
    ensure!(calls == r.calls, "{calls} Call-IDs captured of {}", r.calls);
    for c in &r.captured {
        ensure!(
            (r.started..=r.ended).contains(&u64::from(c.sec)) && c.usec < 1_000_000,
            "timestamp {}.{:06} outside the run {}..{}",
            c.sec,
            c.usec,
            r.started,
            r.ended
        );
    }
    Ok(())
}

/// 30 calls, every message mirrored: sngrep's capture is exactly what the
/// UAC and the UAS logged, leg by leg, in order, with sane timestamps.
#[test]
fn sngrep_captures_every_message_of_every_call() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = run("hep-sngrep", Collector::Sngrep, 30, "1")?;
    check_all(&r)?;
    eprintln!("hep: {} messages of {} calls captured by sngrep, leg by leg as SIPp logged them", r.messages, r.calls);
    Ok(())
}

/// The same with Kamailio's sipcapture as the collector; it also reads our
/// capture id and the password from the auth-key chunk.
#[test]
fn kamailio_sipcapture_decodes_every_message() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = run("hep-kamailio", Collector::Kamailio, 30, "1")?;
    check_all(&r)?;
    for c in &r.captured {
        ensure!(
            c.id_key.as_ref().is_some_and(|(id, key)| id == "4242" && key == "hep-s3cret"),
            "capture id / auth key as Kamailio read them: {:?}",
            c.id_key
        );
    }
    eprintln!("hep: {} messages of {} calls decoded by Kamailio sipcapture, id and key read", r.messages, r.calls);
    Ok(())
}

/// `sample = 0.5` over 40 calls: whole calls are captured or not (every leg
/// of a captured call complete), some are and some are not.
#[test]
fn sampling_keeps_whole_calls() -> Result<()> {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let r = run("hep-sample", Collector::Sngrep, 40, "0.5")?;
    ensure!(r.dropped == 0.0, "{} copies dropped", r.dropped);
    let got = legs_of_capture(&r.captured);
    let captured: std::collections::BTreeSet<&String> = got.keys().map(|k| &k.2).collect();
    ensure!(
        !captured.is_empty() && (captured.len() as u64) < r.calls,
        "{} of {} calls captured at sample 0.5",
        captured.len(),
        r.calls
    );
    for (k, v) in &r.expected {
        if captured.contains(&k.2) {
            ensure!(got.get(k) == Some(v), "call {} captured but leg {k:?} incomplete: {:?} vs {v:?}", k.2, got.get(k));
        }
    }
    eprintln!("hep sample 0.5: {} of {} calls captured, each complete", captured.len(), r.calls);
    Ok(())
}
