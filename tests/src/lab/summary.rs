//! What a lab run found, printed at its end and asserted on by `tests/tests/lab.rs`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::topology::Role;

/// Attempted / succeeded / failed SIPp "calls" of one phase.
#[derive(Clone, Debug, Default)]
pub struct Phase {
    /// Calls the lab asked SIPp for (`-m`).
    pub planned: u64,
    pub attempted: u64,
    pub ok: u64,
    pub failed: u64,
    /// SIPp's exit status and its meaning.
    pub exit: String,
}

/// One Kamailio instance's share.
#[derive(Clone, Debug)]
pub struct BackendSplit {
    pub name: String,
    pub role: Role,
    pub addr: String,
    /// Requests the instance itself logged handling (REGISTER saved, or INVITE redirected).
    pub handled: u64,
    /// Requests sip-lb forwarded to it (its per-backend counter, ACKs and probes included).
    pub lb_requests: u64,
    /// Responses sip-lb relayed from it.
    pub lb_responses: u64,
}

/// One AF_XDP queue of the lab NIC.
#[derive(Clone, Debug)]
pub struct AfxdpQueue {
    pub queue: String,
    pub rx: u64,
    pub tx: u64,
    pub handed_off: u64,
    pub handoff_full: u64,
}

/// One sip-lb worker's (core's) share.
#[derive(Clone, Debug)]
pub struct WorkerSplit {
    pub worker: u32,
    pub cpu: String,
    pub rx: u64,
    pub requests: u64,
    pub responses: u64,
}

#[derive(Clone, Debug, Default)]
pub struct LabSummary {
    pub elapsed: Duration,
    /// How the XDP program sits on the lab's NIC, from `ip link` ("native", "generic", or why not).
    pub xdp: String,
    pub users: u64,
    pub registrations: Phase,
    pub invites: Phase,
    /// Rows in the shared location table after the REGISTER phase.
    pub location_rows: u64,
    /// 302s whose Contact is the called user's registered contact, of all 302s received.
    pub redirects_right_contact: u64,
    pub redirects_seen: u64,
    /// A few examples of 302s with an unexpected Contact.
    pub wrong_contacts: Vec<String>,
    pub backends: Vec<BackendSplit>,
    pub workers: Vec<WorkerSplit>,
    /// Steering programs' counters (zero when not attached): the XDP program on the lab NIC
    /// (frames seen / steered to their Call-ID's worker CPU / passed unsteered) and the
    /// reuseport selector on the workers' sockets (datagrams steered to their Call-ID's worker).
    pub xdp_seen: u64,
    pub xdp_steered: u64,
    /// SIP datagrams XDP left on the receiving CPU unscanned (below its
    /// redirect threshold); the reuseport selector steered them.
    pub xdp_below_threshold: u64,
    pub xdp_passed: u64,
    pub reuseport_steered: u64,
    /// AF_XDP per queue (empty with the socket data path).
    pub afxdp_queues: Vec<AfxdpQueue>,
    /// Datagrams the AF_XDP workers sent through the socket path (the farm
    /// is behind another interface than the lab NIC).
    pub afxdp_tx_socket: u64,
    /// Namespaces and PIDs (Kamailio children included) the run created...
    pub namespaces: Vec<String>,
    pub pids: Vec<u32>,
    /// ...and those still present after cleanup (should be empty).
    pub leftover_namespaces: Vec<String>,
    pub leftover_pids: Vec<u32>,
    pub log_dir: PathBuf,
}

impl LabSummary {
    pub fn of_role(&self, role: Role) -> impl Iterator<Item = &BackendSplit> {
        self.backends.iter().filter(move |b| b.role == role)
    }

    /// Problems that make the run a failure (empty when everything worked).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let r = &self.registrations;
        if r.attempted < r.planned || r.ok != r.attempted || r.failed > 0 {
            p.push(format!(
                "registrations: {} of {} OK, {} failed, {} planned",
                r.ok, r.attempted, r.failed, r.planned
            ));
        }
        let i = &self.invites;
        if i.attempted < i.planned || i.ok != i.attempted || i.failed > 0 {
            p.push(format!(
                "INVITEs: {} of {} redirected, {} failed, {} planned",
                i.ok, i.attempted, i.failed, i.planned
            ));
        }
        if self.redirects_right_contact != self.redirects_seen || self.redirects_seen < i.ok {
            p.push(format!(
                "302 Contacts: {} of {} are the registered contact: {:?}",
                self.redirects_right_contact, self.redirects_seen, self.wrong_contacts
            ));
        }
        for role in [Role::Registrar, Role::Redirect] {
            let idle: Vec<&str> = self.of_role(role).filter(|b| b.handled == 0).map(|b| b.name.as_str()).collect();
            if !idle.is_empty() {
                p.push(format!("{role:?} pool not spread: {idle:?} handled nothing"));
            }
        }
        if !self.leftover_namespaces.is_empty() || !self.leftover_pids.is_empty() {
            p.push(format!("left behind: namespaces {:?}, pids {:?}", self.leftover_namespaces, self.leftover_pids));
        }
        p
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

impl fmt::Display for LabSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.registrations;
        let i = &self.invites;
        writeln!(f, "lab summary ({:.1} s, logs in {})", self.elapsed.as_secs_f64(), self.log_dir.display())?;
        writeln!(f, "  XDP on the lab NIC    {}", self.xdp)?;
        writeln!(
            f,
            "  registrations         {} OK, {} failed of {} ({} users; {} rows in the shared location DB); SIPp {}",
            r.ok, r.failed, r.attempted, self.users, self.location_rows, r.exit
        )?;
        writeln!(
            f,
            "  redirects (302)       {} OK, {} failed of {} INVITEs; SIPp {}",
            i.ok, i.failed, i.attempted, i.exit
        )?;
        writeln!(
            f,
            "  302 Contact checked   {} of {} are the called user's registered contact",
            self.redirects_right_contact, self.redirects_seen
        )?;
        for w in &self.wrong_contacts {
            writeln!(f, "    wrong: {w}")?;
        }
        let total_rx: u64 = self.workers.iter().map(|w| w.rx).sum();
        writeln!(f, "  per core (sip-lb workers)")?;
        for w in &self.workers {
            writeln!(
                f,
                "    worker {} cpu {:<3} rx {:>6} ({:>5.1}%)  requests {:>6}  responses {:>6}",
                w.worker,
                w.cpu,
                w.rx,
                pct(w.rx, total_rx),
                w.requests,
                w.responses
            )?;
        }
        writeln!(
            f,
            "  steering              XDP saw {} frames, steered {}, below its redirect threshold {}, passed {}; \
             reuseport selector steered {}",
            self.xdp_seen, self.xdp_steered, self.xdp_below_threshold, self.xdp_passed, self.reuseport_steered
        )?;
        for q in &self.afxdp_queues {
            writeln!(
                f,
                "  AF_XDP queue {:<8} rx {:>6}  tx {:>6}  handed off {:>6}  hand-off full {}",
                q.queue, q.rx, q.tx, q.handed_off, q.handoff_full
            )?;
        }
        if !self.afxdp_queues.is_empty() {
            writeln!(
                f,
                "  AF_XDP workers        {} datagrams sent by the socket path (farm on another NIC)",
                self.afxdp_tx_socket
            )?;
        }
        for (role, what) in [(Role::Registrar, "REGISTERs saved"), (Role::Redirect, "INVITEs redirected")] {
            let total: u64 = self.of_role(role).map(|b| b.handled).sum();
            writeln!(f, "  per backend: {}", if role == Role::Registrar { "registrars" } else { "redirect servers" })?;
            for b in self.of_role(role) {
                writeln!(
                    f,
                    "    {:<5} {:<16} {what} {:>6} ({:>5.1}%)  sip-lb requests {:>6}  responses {:>6}",
                    b.name,
                    b.addr,
                    b.handled,
                    pct(b.handled, total),
                    b.lb_requests,
                    b.lb_responses
                )?;
            }
        }
        writeln!(
            f,
            "  cleanup               {} namespaces, {} processes created; left behind: {} namespaces, {} processes",
            self.namespaces.len(),
            self.pids.len(),
            self.leftover_namespaces.len(),
            self.leftover_pids.len()
        )?;
        let problems = self.problems();
        if problems.is_empty() {
            write!(f, "  result                OK")
        } else {
            write!(f, "  result                FAILED: {}", problems.join("; "))
        }
    }
}
