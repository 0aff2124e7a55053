//! `cargo xtask run` with no arguments: the lab. sip-lb in front of a small Kamailio farm, all
//! on network namespaces and veth pairs (see `topology.rs`), for a bounded time:
//!
//! 1. the farm: two registrars and two redirect servers (`lab/kamailio/*.cfg`) sharing one
//!    SQLite location table (usrloc `db_mode=3`);
//! 2. sip-lb with XDP Call-ID steering on its client-facing veth (`--iface lb0`), REGISTER to
//!    the registrar pool, everything else to the redirect pool;
//! 3. SIPp registers the users of `lab/sipp/users.csv`, then INVITEs them and expects a 302
//!    whose Contact is the registered one (and ACKs it);
//! 4. a counter line every second (sip-lb's `/metrics`), a summary at the end.
//!
//! Everything it starts is stopped by PID and every namespace deleted, also on error or panic
//! (drop order of [`Lab`]); the summary lists what was left behind (nothing, normally).
//!
//! A module of the test kit: `cargo xtask run` and `tests/tests/lab.rs` both call
//! [`run_lab`].

use crate::netns;

mod interrupt;
pub mod kamailio;
mod metrics;
mod sipp;
mod summary;
pub mod topology;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{scratch_dir, ChildGuard};
use crate::sipp::ensure_sipp;
use anyhow::{bail, Context, Result};

use kamailio::Kamailio;
use metrics::Scraper;
use topology::{sip_addr, Role, Topology, CLIENT_IP, FARM, LB_IP, LB_NIC};

use summary::{BackendSplit, Phase, WorkerSplit};

pub use summary::LabSummary;
/// Registrar or redirect server, to pick them out of [`LabSummary::backends`].
pub use topology::Role as BackendRole;

/// sip-lb's control API inside the balancer namespace.
const CONTROL: &str = "127.0.0.1:5070";
/// How long each process gets to come up.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// SIPp's local ports in the client namespace (the registered Contacts carry REGISTER_PORT).
const REGISTER_PORT: u16 = 5061;
const INVITE_PORT: u16 = 5062;

/// Knobs of one lab run.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Traffic time in seconds (REGISTER phase, then INVITEs for the rest); setup and teardown
    /// add a few seconds. At least 4.
    pub seconds: u64,
    /// REGISTERs per second.
    pub register_rate: u64,
    /// INVITEs per second.
    pub invite_rate: u64,
    /// sip-lb workers (one per core).
    pub workers: usize,
    /// Where logs go; default: a fresh directory under `$TMPDIR/sip-lb-tests/`.
    pub log_dir: Option<PathBuf>,
    /// sip-lb's `--datapath` on the lab NIC: "afxdp" (AF_XDP sockets; the
    /// farm side, another interface, leaves by the socket path) or "socket"
    /// (XDP steering). Ignored by a binary without `--datapath`.
    pub datapath: &'static str,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions { seconds: 20, register_rate: 100, invite_rate: 100, workers: 2, log_dir: None, datapath: "afxdp" }
    }
}

/// The workspace root, which holds `lab/`: this crate (`tests/`) is its child; failing that, the current directory or one of its parents.
fn workspace_root() -> PathBuf {
    let has_lab = |p: &Path| p.join("lab/kamailio/registrar.cfg").is_file();
    let from_manifest = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf);
    let cwd = std::env::current_dir().ok();
    from_manifest
        .filter(|p| has_lab(p))
        .or_else(|| cwd.as_deref().and_then(|c| c.ancestors().find(|p| has_lab(p)).map(Path::to_path_buf)))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
}

/// Everything the run owns, in drop order: the scraper thread, SIPp, sip-lb, the farm, then
/// the namespaces (which must be empty of processes to really go away).
#[derive(Default)]
struct Lab {
    scraper: Option<Scraper>,
    sipp: Option<ChildGuard>,
    lb: Option<ChildGuard>,
    farm: Vec<Kamailio>,
    topo: Option<Topology>,
    pids: Vec<u32>,
}

/// Runs the lab (needs root), prints its summary and returns it; `Err` if it could not run.
/// Check [`LabSummary::problems`] for what did not work (also the summary's last line).
pub fn run_lab(sip_lb_bin: &Path, opts: LabOptions) -> Result<LabSummary> {
    let started = Instant::now();
    if !sip_lb_bin.is_file() {
        bail!("{} not found; build it first (cargo build -p sip-lb)", sip_lb_bin.display());
    }
    kamailio::ensure_packages()?;
    ensure_sipp()?;
    let dir = match &opts.log_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => scratch_dir("lab")?,
    };
    let mut lab = Lab::default();
    let previous = interrupt::catch();
    let result = run(&mut lab, sip_lb_bin, &opts, &dir, started);
    let namespaces = lab.topo.as_ref().map(Topology::names).unwrap_or_default();
    let mut pids = std::mem::take(&mut lab.pids);
    pids.sort_unstable();
    pids.dedup();
    println!("lab: stopping everything and deleting the namespaces");
    drop(lab);
    interrupt::restore(previous);
    let mut summary = result?;
    summary.leftover_namespaces = leftover_namespaces(&namespaces);
    summary.leftover_pids = pids.iter().copied().filter(|&p| process_alive(p)).collect();
    summary.namespaces = namespaces;
    summary.pids = pids;
    summary.elapsed = started.elapsed();
    println!("{summary}");
    Ok(summary)
}

fn run(lab: &mut Lab, bin: &Path, opts: &LabOptions, dir: &Path, started: Instant) -> Result<LabSummary> {
    let root = workspace_root();
    println!("lab: logs in {}", dir.display());
    lab.build_topology()?;
    let db = dir.join("location.sqlite");
    let farm_addrs = lab.start_farm(&root, &db, dir)?;
    let lb_addr = sip_addr(LB_IP);
    let xdp = lab.start_balancer(bin, opts, lb_addr, &farm_addrs, dir)?;
    lab.start_scraper(started)?;
    let traffic = lab.drive_traffic(&root, opts, lb_addr, &db, dir)?;
    let m = lab.final_scrape();
    lab.summarize(&m, &db, xdp, traffic, dir)
}

/// One SIPp phase: the calls it was to make and what SIPp reported.
struct Sent {
    planned: u64,
    out: sipp::Outcome,
}

impl Sent {
    fn phase(&self) -> Phase {
        let o = &self.out;
        Phase { planned: self.planned, attempted: o.created, ok: o.successful, failed: o.failed, exit: o.exit.clone() }
    }
}

/// What the REGISTER and INVITE phases did.
struct Traffic {
    users: u64,
    registrations: Sent,
    location_rows: u64,
    invites: Sent,
}

impl Lab {
    /// The namespaces and veth pairs.
    fn build_topology(&mut self) -> Result<()> {
        let topo = self.topo.insert(Topology::create()?);
        println!(
            "lab: namespaces {} (client) -- {} (sip-lb, XDP on {LB_NIC}) -- {} (farm)",
            topo.client.name(),
            topo.lb.name(),
            topo.farm.name()
        );
        Ok(())
    }

    /// The Kamailio farm on a fresh location DB at `db`; returns the instances' SIP addresses,
    /// in [`FARM`] order.
    fn start_farm(&mut self, root: &Path, db: &Path, dir: &Path) -> Result<Vec<String>> {
        let topo = self.topo.as_ref().expect("topology built first");
        kamailio::create_location_db(db)?;
        let cfg_dir = kamailio::config_dir(root);
        let farm_addrs: Vec<String> = FARM.iter().map(|(_, _, ip)| sip_addr(*ip).to_string()).collect();
        // One after the other: at start-up each instance checks the table versions in the shared
        // SQLite file, and concurrent start-ups can meet each other's lock ("database is locked").
        // An instance that still fails that way gets one more try.
        for ((name, role, ip), addr) in FARM.into_iter().zip(&farm_addrs) {
            for attempt in 1..=2 {
                self.farm.push(Kamailio::start(&topo.farm, name, role, ip, &cfg_dir, db, dir)?);
                let k = self.farm.last_mut().expect("just pushed");
                let started = wait_bound(&topo.farm, "-Hlun", std::slice::from_ref(addr), || k.ensure_running());
                match started {
                    Ok(()) => break,
                    Err(_) if attempt == 1 && k.stderr().contains("database is locked") => {
                        println!("lab: Kamailio {name} met a locked database at start-up; starting it again");
                        drop(self.farm.pop());
                    }
                    Err(e) => return Err(e.context(format!("Kamailio {name} did not start"))),
                }
            }
        }
        for k in &self.farm {
            self.pids.extend(k.tree());
        }
        println!(
            "lab: farm up: registrars {} and {}, redirect servers {} and {} (Kamailio, shared location DB {})",
            farm_addrs[0],
            farm_addrs[1],
            farm_addrs[2],
            farm_addrs[3],
            db.display()
        );
        Ok(farm_addrs)
    }

    /// sip-lb on `lb_addr` in front of the farm, with XDP on [`LB_NIC`] if this build has
    /// `--iface`; returns how XDP sits on the NIC.
    fn start_balancer(
        &mut self,
        bin: &Path,
        opts: &LabOptions,
        lb_addr: SocketAddr,
        farm_addrs: &[String],
        dir: &Path,
    ) -> Result<String> {
        let topo = self.topo.as_ref().expect("topology built first");
        let help = Command::new(bin)
            .args(["run", "--help"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut cmd = topo.lb.command(&[&bin.display().to_string(), "run"]);
        cmd.args(["--listen", &lb_addr.to_string(), "--advertise", &lb_addr.to_string()]).args([
            "--workers",
            &opts.workers.to_string(),
            "--metrics",
            CONTROL,
        ]);
        for (i, (_, role, _)) in FARM.iter().enumerate() {
            cmd.args([if *role == Role::Registrar { "--registrar" } else { "--backend" }, &farm_addrs[i]]);
        }
        if help.contains("--iface") {
            cmd.args(["--iface", LB_NIC]);
        }
        if help.contains("--datapath") {
            cmd.args(["--datapath", opts.datapath]);
        }
        let lb = self.lb.insert(ChildGuard::spawn("sip-lb", cmd, dir)?);
        self.pids.push(lb.pid());
        wait_bound(&topo.lb, "-Hlun", &[lb_addr.to_string()], || lb.ensure_running())
            .context("sip-lb did not start")?;
        wait_bound(&topo.lb, "-Hltn", &[CONTROL.to_string()], || lb.ensure_running())
            .context("sip-lb's control API did not start")?;
        let xdp = xdp_state(&topo.lb);
        println!("lab: sip-lb up on {lb_addr}: {} workers, REGISTER -> registrars, other requests -> redirect servers; XDP on {LB_NIC}: {xdp}", opts.workers);
        Ok(xdp)
    }

    /// The scraper thread: a counter line a second, farm instances named.
    fn start_scraper(&mut self, started: Instant) -> Result<()> {
        let topo = self.topo.as_ref().expect("topology built first");
        let names: metrics::Names = FARM.iter().map(|(n, _, ip)| (sip_addr(*ip).to_string(), n.to_string())).collect();
        self.scraper = Some(Scraper::start(topo.lb.name().to_owned(), CONTROL.parse()?, names, started));
        Ok(())
    }

    /// The phase shown in the scraper's counter lines.
    fn set_phase(&self, phase: &str) {
        if let Some(s) = &self.scraper {
            s.set_phase(phase);
        }
    }

    /// Traffic: REGISTER every user once, then INVITEs for the rest of the time.
    fn drive_traffic(
        &mut self,
        root: &Path,
        opts: &LabOptions,
        lb_addr: SocketAddr,
        db: &Path,
        dir: &Path,
    ) -> Result<Traffic> {
        let sipp_dir = root.join("lab").join("sipp");
        let users_csv = sipp_dir.join("users.csv");
        let users =
            std::fs::read_to_string(&users_csv)?.lines().skip(1).filter(|l| !l.trim().is_empty()).count() as u64;
        let traffic_start = Instant::now();
        let registrations = self.register(&sipp_dir, &users_csv, users, opts, lb_addr, dir)?;
        let location_rows = kamailio::location_rows(db)?;
        println!(
            "lab: registrations: {} OK, {} failed; {location_rows} rows in the location DB",
            registrations.out.successful, registrations.out.failed
        );
        let invites = self.call(&sipp_dir, users_csv, traffic_start, opts, lb_addr, dir)?;
        Ok(Traffic { users, registrations, location_rows, invites })
    }

    /// SIPp registers each of the `users` once.
    fn register(
        &mut self,
        sipp_dir: &Path,
        users_csv: &Path,
        users: u64,
        opts: &LabOptions,
        lb_addr: SocketAddr,
        dir: &Path,
    ) -> Result<Sent> {
        let reg_seconds = users.div_ceil(opts.register_rate.max(1));
        println!("lab: SIPp registers {users} users at {}/s through sip-lb", opts.register_rate);
        self.set_phase("REGISTER");
        let reg = sipp::Run {
            name: "register",
            scenario: sipp_dir.join("register.xml"),
            users_csv: users_csv.to_owned(),
            local: SocketAddr::from((CLIENT_IP, REGISTER_PORT)),
            target: lb_addr,
            rate: opts.register_rate.max(1),
            calls: users,
            timeout: Duration::from_secs(reg_seconds + 10),
        };
        let out = self.run_sipp(&reg, dir)?;
        Ok(Sent { planned: reg.calls, out })
    }

    /// SIPp INVITEs the registered users until the traffic time (from `traffic_start`) is up.
    fn call(
        &mut self,
        sipp_dir: &Path,
        users_csv: PathBuf,
        traffic_start: Instant,
        opts: &LabOptions,
        lb_addr: SocketAddr,
        dir: &Path,
    ) -> Result<Sent> {
        let seconds = opts.seconds.max(4);
        let invite_seconds = seconds.saturating_sub(traffic_start.elapsed().as_secs()).saturating_sub(1).max(2);
        let invites = opts.invite_rate.max(1) * invite_seconds;
        println!(
            "lab: SIPp sends {invites} INVITEs at {}/s to those users (expects 302 + registered Contact, sends ACK)",
            opts.invite_rate
        );
        self.set_phase("INVITE");
        let inv = sipp::Run {
            name: "invite",
            scenario: sipp_dir.join("invite.xml"),
            users_csv,
            local: SocketAddr::from((CLIENT_IP, INVITE_PORT)),
            target: lb_addr,
            rate: opts.invite_rate.max(1),
            calls: invites,
            timeout: Duration::from_secs(invite_seconds + 10),
        };
        let out = self.run_sipp(&inv, dir)?;
        Ok(Sent { planned: inv.calls, out })
    }

    /// Runs SIPp in the client namespace to the end (its timeout plus 5 s at most).
    fn run_sipp(&mut self, run: &sipp::Run<'_>, dir: &Path) -> Result<sipp::Outcome> {
        let topo = self.topo.as_ref().expect("topology built first");
        let guard = self.sipp.insert(sipp::start(&topo.client, run, dir)?);
        self.pids.push(guard.pid());
        let out = sipp::finish(self.sipp.take().expect("just set"), run.timeout + Duration::from_secs(5), dir)?;
        interrupt::check()?; // SIPp quits "successfully" on Ctrl-C too
        Ok(out)
    }

    /// Stops the scraper and returns its last scrape (empty if there was none).
    fn final_scrape(&mut self) -> metrics::Metrics {
        // Let the last ACKs land before the final scrape.
        std::thread::sleep(Duration::from_millis(300));
        self.set_phase("done");
        self.scraper.take().and_then(|mut s| s.stop()).unwrap_or_default()
    }

    /// The summary from the last scrape, the location DB, SIPp's message log and the farm's logs.
    fn summarize(&self, m: &metrics::Metrics, db: &Path, xdp: String, t: Traffic, dir: &Path) -> Result<LabSummary> {
        let registered: BTreeMap<String, String> = kamailio::registered_contacts(db)?.into_iter().collect();
        let (right, wrong, seen) = sipp::check_redirects(&t.invites.out.messages_log, &registered)?;
        Ok(LabSummary {
            xdp,
            users: t.users,
            registrations: t.registrations.phase(),
            invites: t.invites.phase(),
            location_rows: t.location_rows,
            redirects_right_contact: right,
            redirects_seen: seen,
            wrong_contacts: wrong,
            backends: backend_splits(&self.farm, m),
            workers: worker_splits(m),
            xdp_seen: m.sum_where("sip_lb_xdp_packets_total", "program", "xdp"),
            xdp_steered: m.sum_where("sip_lb_xdp_steered_total", "program", "xdp"),
            xdp_below_threshold: m.sum("sip_lb_xdp_below_threshold_total", &[]).unwrap_or(0.0) as u64,
            xdp_passed: m.sum_where("sip_lb_xdp_passed_total", "program", "xdp"),
            reuseport_steered: m.sum_where("sip_lb_xdp_steered_total", "program", "reuseport"),
            afxdp_queues: afxdp_queues(m),
            afxdp_tx_socket: m.sum("sip_lb_afxdp_worker_tx_socket_total", &[]).unwrap_or(0.0) as u64,
            log_dir: dir.to_owned(),
            ..LabSummary::default()
        })
    }
}

/// What each farm instance handled (its log) next to what sip-lb sent it and relayed back.
fn backend_splits(farm: &[Kamailio], m: &metrics::Metrics) -> Vec<BackendSplit> {
    let lb_req = m.by("sip_lb_backend_requests_total", "backend");
    let lb_resp = m.by("sip_lb_backend_responses_total", "backend");
    farm.iter()
        .map(|k| {
            let addr = sip_addr(k.ip).to_string();
            BackendSplit {
                name: k.name.to_owned(),
                role: k.role,
                handled: k.logged(if k.role == Role::Registrar { "REGISTER" } else { "REDIRECT" }),
                lb_requests: lb_req.get(&addr).copied().unwrap_or(0),
                lb_responses: lb_resp.get(&addr).copied().unwrap_or(0),
                addr,
            }
        })
        .collect()
}

/// Datagrams received and messages forwarded, per sip-lb worker.
/// Per AF_XDP queue: frames received, sent, handed to their worker, dropped
/// for a full hand-off queue (empty when AF_XDP is not in use).
fn afxdp_queues(m: &metrics::Metrics) -> Vec<summary::AfxdpQueue> {
    let get = |name: &str| m.by(name, "queue");
    let (rx, tx, handed, full) = (
        get("sip_lb_afxdp_queue_rx_frames_total"),
        get("sip_lb_afxdp_queue_tx_frames_total"),
        get("sip_lb_afxdp_queue_handed_off_total"),
        get("sip_lb_afxdp_queue_handoff_full_total"),
    );
    rx.iter()
        .map(|(q, &rx)| summary::AfxdpQueue {
            queue: q.clone(),
            rx,
            tx: tx.get(q).copied().unwrap_or(0),
            handed_off: handed.get(q).copied().unwrap_or(0),
            handoff_full: full.get(q).copied().unwrap_or(0),
        })
        .collect()
}

fn worker_splits(m: &metrics::Metrics) -> Vec<WorkerSplit> {
    let rx = m.per_worker("sip_lb_worker_rx_datagrams_total");
    let req = m.per_worker("sip_lb_worker_requests_forwarded_total");
    let resp = m.per_worker("sip_lb_worker_responses_forwarded_total");
    rx.iter()
        .map(|(k, &rx)| WorkerSplit {
            worker: k.0,
            cpu: k.1.clone(),
            rx,
            requests: req.get(k).copied().unwrap_or(0),
            responses: resp.get(k).copied().unwrap_or(0),
        })
        .collect()
}

/// Waits until `ss <flags>` in `ns` lists every address in `addrs` as a local address.
fn wait_bound(ns: &netns::NetNs, flags: &str, addrs: &[String], mut alive: impl FnMut() -> Result<()>) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        alive()?;
        interrupt::check()?;
        let out = ns.exec(&["ss", flags])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let locals: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().nth(3)).collect();
        let missing: Vec<&String> = addrs.iter().filter(|a| !locals.contains(&a.as_str())).collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{missing:?} not bound within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How XDP sits on the lab NIC, from `ip -d link` in the balancer namespace.
fn xdp_state(ns: &netns::NetNs) -> String {
    let Ok(out) = ns.exec(&["ip", "-d", "link", "show", "dev", LB_NIC]) else {
        return "unknown (ip link failed)".into();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or("");
    let prog = text
        .split_whitespace()
        .skip_while(|w| *w != "prog/xdp")
        .nth(2)
        .map(|id| format!(" (prog id {id})"))
        .unwrap_or_default();
    if first.contains(" xdpgeneric") {
        format!("attached, generic mode{prog}")
    } else if first.contains(" xdpdrv") || first.contains(" xdp ") {
        format!("attached, native mode{prog}")
    } else {
        "not attached (sip-lb did not attach a program; see sip-lb.stderr)".into()
    }
}

fn leftover_namespaces(names: &[String]) -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let present: Vec<&str> = out.lines().filter_map(|l| l.split_whitespace().next()).collect();
    names.iter().filter(|n| present.contains(&n.as_str())).cloned().collect()
}

/// Whether `pid` is a live process (zombies waiting for init to reap them count as gone).
pub fn process_alive(pid: u32) -> bool {
    kamailio::stat_fields(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}
