//! Health probing through `Control` in virtual time: the probing machine
//! inside the control plane, driven as `prober::run` drives it (poll the
//! probes due, answer or not, sleep to the next deadline) but with a clock
//! the test moves. Checks what operators and the data plane see: the
//! `/backends` snapshot (state, probe counters, last code and RTT) and the
//! published Plan's router.
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use sip_lb::config::{Config, RunArgs};
use sip_lb::control::probe::ProbeReply;
use sip_lb::control::reload::build_plan;
use sip_lb::control::snapshot::BackendSnapshot;
use sip_lb::control::{Control, Setup};
use sip_lb::dataplane::SharedPlan;

const A: &str = "10.0.0.1:5060";
const B: &str = "10.0.0.2:5060";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn config_text(health: &str) -> String {
    format!("[[pool]]\nname = \"p\"\nbackends = [\"{A}\", \"{B}\"]\n\n[health]\n{health}")
}

struct Lab {
    control: Arc<Control>,
    plan: SharedPlan,
    file: PathBuf,
    epoch: Instant,
    now: Instant,
    /// Answers on their way, sorted by arrival.
    in_air: Vec<(Instant, ProbeReply)>,
}

/// What a backend does with a probe in the current phase.
#[derive(Clone, Copy, PartialEq)]
enum Does {
    Answer(u16),
    Silent,
    SendFails,
}

impl Lab {
    fn new(name: &str, health: &str) -> Lab {
        let file = std::env::temp_dir().join(format!("sip-lb-vt-{name}-{}.toml", std::process::id()));
        std::fs::write(&file, config_text(health)).unwrap();
        let args = RunArgs { config: Some(file.clone()), ..RunArgs::default() };
        let config = Config::load(&args).unwrap();
        let plan: SharedPlan = Arc::new(ArcSwap::from_pointee(build_plan(&config)));
        let (shield, offenders) = sip_lb::dataplane::SharedShield::new(sip_lb::control::reload::shield_state(&config));
        let control = Control::new(Setup {
            args,
            config,
            plan: plan.clone(),
            workers: vec![],
            cpus: vec![],
            xdp: None,
            afxdp: None,
            shield,
            offenders,
            xdp_shield: None,
            streams: None,
            stun: None,
            links: None,
            certs: None,
            cluster: None,
            hep: None,
        });
        let epoch = Instant::now();
        Lab { control, plan, file, epoch, now: epoch, in_air: Vec::new() }
    }

    fn ms(&self) -> u64 {
        self.now.duration_since(self.epoch).as_millis() as u64
    }

    /// Drives the probing until `until_ms`, deadline to deadline; each probe
    /// answered `rtt_ms` later or not at all. Returns the wake-ups.
    fn run(&mut self, until_ms: u64, rtt_ms: u64, does: impl Fn(SocketAddr) -> Does) -> u64 {
        let until = self.epoch + Duration::from_millis(until_ms);
        let mut due = Vec::new();
        let mut wakeups = 0;
        loop {
            wakeups += 1;
            self.control.poll_probes(self.now, &mut due);
            for p in due.drain(..) {
                match does(p.backend) {
                    Does::Answer(code) => self
                        .in_air
                        .push((self.now + Duration::from_millis(rtt_ms), ProbeReply { token: p.token, code })),
                    Does::Silent => {}
                    Does::SendFails => self.control.on_probe_send_failed(self.now, p.token),
                }
            }
            self.in_air.sort_by_key(|(t, _)| *t);
            while self.in_air.first().is_some_and(|(t, _)| *t <= self.now) {
                let (_, reply) = self.in_air.remove(0);
                self.control.on_probe_reply(self.now, reply);
            }
            let next =
                [self.control.next_probe_deadline(), self.in_air.first().map(|(t, _)| *t)].into_iter().flatten().min();
            match next {
                Some(t) if t <= until => self.now = t,
                _ => {
                    self.now = until;
                    return wakeups;
                }
            }
        }
    }

    fn backend(&self, a: &str) -> BackendSnapshot {
        self.control.snapshot().backends.into_iter().find(|b| b.addr == addr(a)).unwrap()
    }

    /// Where the published Plan sends 1000 Call-IDs.
    fn routed(&self) -> BTreeSet<SocketAddr> {
        let plan = self.plan.load();
        (0..1000u64).filter_map(|h| plan.router.choose(b"INVITE", h.wrapping_mul(0x9e37_79b9_7f4a_7c15))).collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

#[test]
fn a_dead_backend_leaves_the_plan_at_the_exact_deadline_and_comes_back() {
    let mut lab = Lab::new("failover", "interval_ms = 1000\ntimeout_ms = 400\nfailures = 3\nsuccesses = 2\n");
    assert_eq!(lab.routed(), BTreeSet::from([addr(A), addr(B)]));
    // Both answer the probe at 0 (in 7 ms); B dies right after it.
    lab.run(999, 7, |_| Does::Answer(200));
    assert_eq!(lab.backend(B).probe_rtt_ms, Some(7.0));
    // B's probes at 1000, 2000, 3000 time out; down at 3 * 1000 + 400 = 3400, not a ms before.
    lab.run(3399, 7, |b| if b == addr(B) { Does::Silent } else { Does::Answer(200) });
    assert_eq!(lab.backend(B).state, "up");
    assert_eq!(lab.routed().len(), 2);
    lab.run(3400, 7, |b| if b == addr(B) { Does::Silent } else { Does::Answer(200) });
    let b = lab.backend(B);
    assert_eq!((b.state.as_str(), b.healthy, b.probes, b.probe_failures), ("down", false, 4, 3));
    assert_eq!(b.last_probe_code, Some(200)); // the last answer it gave
    assert_eq!(lab.routed(), BTreeSet::from([addr(A)]));
    let a = lab.backend(A);
    assert_eq!((a.state.as_str(), a.probes, a.probe_failures, a.last_probe_code), ("up", 4, 0, Some(200)));

    // Ten minutes down, then it answers 503 (not alive) for a minute: still down.
    let wakeups = lab.run(603_400, 7, |b| if b == addr(B) { Does::SendFails } else { Does::Answer(200) });
    assert!(wakeups < 2 * 600 + 10, "{wakeups} wake-ups for 600 rounds");
    lab.run(663_400, 7, |b| if b == addr(B) { Does::Answer(503) } else { Does::Answer(200) });
    let b = lab.backend(B);
    assert_eq!((b.state.as_str(), b.last_probe_code), ("down", Some(503)));
    assert_eq!(b.probes, 664);
    assert_eq!(b.probe_failures, 663);
    // Then 200s: the answers to the probes at 664 000 and 665 000 bring it
    // back when the second arrives, at 665 007.
    lab.run(665_006, 7, |_| Does::Answer(200));
    assert_eq!(lab.backend(B).state, "down");
    lab.run(665_007, 7, |_| Does::Answer(200));
    assert_eq!(lab.backend(B).state, "up");
    assert_eq!(lab.routed(), BTreeSet::from([addr(A), addr(B)]));
    assert_eq!(lab.ms(), 665_007);
}

#[test]
fn a_drained_backend_changes_health_without_a_new_plan() {
    let mut lab = Lab::new("drain", "interval_ms = 100\ntimeout_ms = 50\nfailures = 1\nsuccesses = 1\n");
    lab.control.set_drained(addr(B), true).unwrap();
    let plan = lab.plan.load_full();
    lab.run(60, 1, |b| if b == addr(B) { Does::Silent } else { Does::Answer(200) });
    let b = lab.backend(B);
    assert_eq!((b.state.as_str(), b.healthy), ("draining", false));
    assert!(Arc::ptr_eq(&plan, &lab.plan.load_full()), "a drained backend's transition published a Plan");
    // A's transition does publish.
    lab.run(160, 1, |b| if b == addr(A) { Does::Silent } else { Does::Answer(200) });
    assert_eq!(lab.backend(A).state, "down");
    assert!(!Arc::ptr_eq(&plan, &lab.plan.load_full()));
    assert!(lab.routed().is_empty());
}

#[test]
fn a_reload_that_disables_probing_marks_all_up_and_stops_probes() {
    let mut lab = Lab::new("disable", "interval_ms = 100\ntimeout_ms = 50\nfailures = 1\nsuccesses = 1\n");
    lab.run(60, 1, |b| if b == addr(B) { Does::Silent } else { Does::Answer(200) });
    assert_eq!(lab.backend(B).state, "down");
    std::fs::write(&lab.file, config_text("enabled = false\n")).unwrap();
    lab.control.reload().unwrap();
    assert_eq!(lab.backend(B).state, "up");
    assert_eq!(lab.routed().len(), 2);
    assert_eq!(lab.control.next_probe_deadline(), None);
    let probes = lab.backend(A).probes;
    lab.run(3_600_000, 1, |_| Does::Silent);
    assert_eq!(lab.backend(A).probes, probes);
    assert_eq!(lab.backend(B).state, "up");
}
