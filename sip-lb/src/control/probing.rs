//! Health probing as a pure state machine, quinn-proto style: when each
//! backend is due for an OPTIONS, which probes are still out, when they time
//! out, and what answers (or silence) mean for each backend's [`Health`].
//!
//! Time comes in as `now`; probes to send, the next deadline and events go
//! out. It never reads a clock and never touches a socket: [`super::prober`]
//! drives it with tokio, the tests below drive it in virtual time.
//!
//! Schedule: a backend is probed when it joins (at start, on a reload that
//! adds it, when probing is switched on) and then every `interval_ms`. A
//! probe still unanswered `timeout_ms` after it was sent is a timeout; an
//! answer arriving at or after that instant is late and ignored.
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::health::{Health, Outcome, Transition};
use crate::config::HealthConfig;

/// An OPTIONS to send now, carrying `token` in its Via branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub backend: SocketAddr,
    pub token: u64,
}

/// What the machine reports, in the order it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// One probe ended. `alive` says whether it counts as good under the
    /// running config; `rtt` is set for replies.
    Probed { backend: SocketAddr, outcome: Outcome, alive: bool, rtt: Option<Duration> },
    /// The probe just reported (with `outcome`) took the backend down.
    WentDown { backend: SocketAddr, outcome: Outcome },
    /// The probe just reported brought the backend back.
    WentUp { backend: SocketAddr },
}

/// One probed backend.
#[derive(Clone, Copy, Debug)]
struct Target {
    health: Health,
    /// When its next probe is due.
    next: Instant,
    /// When its last probe was sent, for rescheduling on an interval change.
    last_sent: Option<Instant>,
}

/// A probe sent and not yet answered.
#[derive(Clone, Copy, Debug)]
struct Pending {
    backend: SocketAddr,
    sent: Instant,
}

/// The prober's state: schedule, probes in flight, hysteresis per backend.
#[derive(Debug)]
pub struct Probing {
    cfg: HealthConfig,
    targets: BTreeMap<SocketAddr, Target>,
    pending: HashMap<u64, Pending>,
    /// The token of the last probe handed out.
    token: u64,
    events: VecDeque<Event>,
}

impl Probing {
    /// A machine probing nothing until [`Probing::configure`]. Tokens count up
    /// from `token_seed` (a time-derived seed keeps a restarted sip-lb from
    /// taking a late answer to its predecessor's probe for its own).
    pub fn new(token_seed: u64) -> Probing {
        Probing {
            cfg: HealthConfig { enabled: false, ..HealthConfig::default() },
            targets: BTreeMap::new(),
            pending: HashMap::new(),
            token: token_seed,
            events: VecDeque::new(),
        }
    }

    /// Applies a config (at start and on every reload): the backends to
    /// probe and the `[health]` settings. Probes due before `now` end under
    /// the old settings first. Backends that stay keep their health and
    /// schedule (rescheduled from their last probe if the interval changed);
    /// new ones are probed at once; removed ones are forgotten with their
    /// probes in flight. Disabled probing forgets everything, so switching
    /// it on again starts every backend afresh (up).
    pub fn configure(&mut self, now: Instant, cfg: &HealthConfig, backends: impl IntoIterator<Item = SocketAddr>) {
        self.advance(now);
        let interval_changed = cfg.interval_ms != self.cfg.interval_ms;
        self.cfg = *cfg;
        if !cfg.enabled {
            self.targets.clear();
            self.pending.clear();
            return;
        }
        let wanted: BTreeMap<SocketAddr, ()> = backends.into_iter().map(|a| (a, ())).collect();
        self.targets.retain(|a, _| wanted.contains_key(a));
        self.pending.retain(|_, p| wanted.contains_key(&p.backend));
        let interval = self.interval();
        for (a, t) in self.targets.iter_mut() {
            debug_assert!(wanted.contains_key(a));
            if let (true, Some(last)) = (interval_changed, t.last_sent) {
                t.next = (last + interval).max(now);
            }
        }
        for a in wanted.into_keys() {
            self.targets.entry(a).or_insert(Target { health: Health::new(), next: now, last_sent: None });
        }
    }

    /// The next probe to send at `now`, if one is due; the caller sends it
    /// (and reports [`Probing::on_send_failed`] if it could not). Call until
    /// `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Probe> {
        self.advance(now);
        let interval = self.interval();
        let (&backend, target) = self.targets.iter_mut().filter(|(_, t)| t.next <= now).min_by_key(|(_, t)| t.next)?;
        // On schedule: exactly one interval on. Late by more than an interval
        // (a stalled driver): one interval from now, no burst.
        let next = target.next + interval;
        target.next = if next <= now { now + interval } else { next };
        target.last_sent = Some(now);
        self.token = self.token.wrapping_add(1);
        self.pending.insert(self.token, Pending { backend, sent: now });
        Some(Probe { backend, token: self.token })
    }

    /// Ends every probe whose timeout has passed at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// A final answer with `code` to the probe `token`. Unknown tokens (late
    /// answers, answers to a removed backend's probes, duplicates) are
    /// ignored.
    pub fn on_reply(&mut self, now: Instant, token: u64, code: u16) {
        self.advance(now);
        if let Some(p) = self.pending.remove(&token) {
            self.report(p.backend, Outcome::Reply(code), Some(now.saturating_duration_since(p.sent)));
        }
    }

    /// The probe `token` could not be sent: a failed probe.
    pub fn on_send_failed(&mut self, now: Instant, token: u64) {
        self.advance(now);
        if let Some(p) = self.pending.remove(&token) {
            self.report(p.backend, Outcome::SendFailed, None);
        }
    }

    /// When the machine next needs [`Probing::poll_transmit`] or
    /// [`Probing::handle_timeout`]: the earliest probe due or timeout.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timeout = self.timeout();
        let due = self.targets.values().map(|t| t.next);
        let expiries = self.pending.values().map(|p| p.sent + timeout);
        due.chain(expiries).min()
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Whether `backend` is probed and currently up.
    pub fn is_up(&self, backend: SocketAddr) -> Option<bool> {
        self.targets.get(&backend).map(|t| t.health.is_up())
    }

    /// Probes in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.cfg.interval_ms.max(1))
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.timeout_ms)
    }

    /// Times out, oldest first, every probe unanswered at `now`.
    fn advance(&mut self, now: Instant) {
        let timeout = self.timeout();
        let mut late: Vec<(Instant, u64)> =
            self.pending.iter().filter(|(_, p)| now >= p.sent + timeout).map(|(t, p)| (p.sent, *t)).collect();
        late.sort_unstable();
        for (_, token) in late {
            if let Some(p) = self.pending.remove(&token) {
                self.report(p.backend, Outcome::Timeout, None);
            }
        }
    }

    fn report(&mut self, backend: SocketAddr, outcome: Outcome, rtt: Option<Duration>) {
        let Some(t) = self.targets.get_mut(&backend) else {
            return;
        };
        let alive = Health::is_alive(outcome, &self.cfg);
        self.events.push_back(Event::Probed { backend, outcome, alive, rtt });
        match t.health.on_probe(outcome, &self.cfg) {
            Some(Transition::WentDown) => self.events.push_back(Event::WentDown { backend, outcome }),
            Some(Transition::WentUp) => self.events.push_back(Event::WentUp { backend }),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "10.0.0.1:5060";
    const B: &str = "10.0.0.2:5060";
    const V6: &str = "[2001:db8::1]:5060";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn cfg(interval_ms: u64, timeout_ms: u64, failures: u32, successes: u32) -> HealthConfig {
        HealthConfig { enabled: true, interval_ms, timeout_ms, failures, successes, ..HealthConfig::default() }
    }

    /// A simulated network around the machine: each backend answers or not,
    /// time only moves when the test says so, always to the machine's next
    /// deadline (as the tokio driver sleeps).
    struct Sim {
        m: Probing,
        epoch: Instant,
        now: Instant,
        /// Per backend: what to do with a probe. Default: answer 200 at once.
        behaviour: HashMap<SocketAddr, Box<dyn FnMut(u64) -> Answer>>,
        /// Answers on their way: (arrives at, token, code).
        in_air: Vec<(Instant, u64, u16)>,
        /// (ms since epoch, event) in order.
        log: Vec<(u64, Event)>,
        sent: Vec<(u64, Probe)>,
        /// Probes sent per backend so far.
        count: HashMap<SocketAddr, u64>,
        /// Wake-ups of the driver loop, to show the machine is not polled
        /// more often than its deadlines need.
        wakeups: u64,
    }

    /// What a simulated backend does with the n-th probe it gets.
    #[derive(Clone, Copy, Debug)]
    enum Answer {
        /// Answers with this code after this many ms.
        After(u64, u16),
        Silent,
        /// The send fails (no route, ICMP error on the socket).
        SendFails,
    }

    impl Sim {
        fn new(c: &HealthConfig, backends: &[&str]) -> Sim {
            let epoch = Instant::now();
            let mut m = Probing::new(0);
            m.configure(epoch, c, backends.iter().map(|b| addr(b)));
            Sim {
                m,
                epoch,
                now: epoch,
                behaviour: HashMap::new(),
                in_air: Vec::new(),
                log: Vec::new(),
                sent: Vec::new(),
                count: HashMap::new(),
                wakeups: 0,
            }
        }

        fn at(&self, ms: u64) -> Instant {
            self.epoch + Duration::from_millis(ms)
        }

        fn ms(&self, t: Instant) -> u64 {
            t.duration_since(self.epoch).as_millis() as u64
        }

        fn set(&mut self, b: &str, f: impl FnMut(u64) -> Answer + 'static) {
            self.behaviour.insert(addr(b), Box::new(f));
        }

        fn drain_events(&mut self) {
            while let Some(e) = self.m.poll_event() {
                let ms = self.ms(self.now);
                self.log.push((ms, e));
            }
        }

        /// What the driver does on each wake-up: timeouts, transmits, then
        /// the answers that arrive at this instant.
        fn wake(&mut self) {
            self.wakeups += 1;
            let now = self.now;
            self.m.handle_timeout(now);
            while let Some(p) = self.m.poll_transmit(now) {
                let ms = self.ms(now);
                self.sent.push((ms, p));
                let n = self.count.entry(p.backend).or_default();
                *n += 1;
                let n = *n;
                let answer = match self.behaviour.get_mut(&p.backend) {
                    Some(f) => f(n),
                    None => Answer::After(0, 200),
                };
                match answer {
                    Answer::After(d, code) => self.in_air.push((now + Duration::from_millis(d), p.token, code)),
                    Answer::Silent => {}
                    Answer::SendFails => self.m.on_send_failed(now, p.token),
                }
            }
            self.drain_events();
            while let Some(i) = self.in_air.iter().position(|(t, _, _)| *t <= now) {
                let (_, token, code) = self.in_air.swap_remove(i);
                self.m.on_reply(now, token, code);
                self.drain_events();
            }
        }

        /// Runs until `until_ms`, jumping from deadline to deadline (the
        /// machine's, or the next answer's) as the tokio driver sleeps.
        fn run_until(&mut self, until_ms: u64) {
            let until = self.at(until_ms);
            loop {
                self.wake();
                let next_answer = self.in_air.iter().map(|(t, _, _)| *t).min();
                let next = [self.m.poll_timeout(), next_answer].into_iter().flatten().min();
                match next {
                    Some(t) if t <= until => {
                        assert!(t > self.now, "a deadline at or before now after a wake-up");
                        self.now = t;
                    }
                    _ => {
                        self.now = until;
                        return;
                    }
                }
            }
        }

        fn transitions(&self) -> Vec<(u64, Event)> {
            self.log.iter().filter(|(_, e)| !matches!(e, Event::Probed { .. })).copied().collect()
        }
    }

    #[test]
    fn probes_every_backend_every_interval() {
        let mut s = Sim::new(&cfg(1000, 500, 3, 2), &[A, B, V6]);
        s.run_until(10_000);
        // At 0, 1000, ..., 10000: 11 rounds of 3.
        assert_eq!(s.sent.len(), 33);
        for (i, (ms, _)) in s.sent.iter().enumerate() {
            assert_eq!(*ms, (i as u64 / 3) * 1000);
        }
        assert!(s.transitions().is_empty());
        // Every probe answered at once: 0 ms RTT, all alive.
        assert!(s.log.iter().all(|(_, e)| matches!(e,
            Event::Probed { outcome: Outcome::Reply(200), alive: true, rtt: Some(d), .. } if d.is_zero())));
        assert_eq!(s.m.in_flight(), 0);
    }

    /// The failover time, exactly. Probes go out at k * interval. A backend
    /// that answered the probe at 0 and then fell silent times out on the
    /// probes sent at interval, 2*interval, ..., failures*interval; the last
    /// of those times out at **failures * interval + timeout**, which is when
    /// it goes down. Silent from the start, it goes down one interval
    /// earlier: (failures - 1) * interval + timeout.
    #[test]
    fn failover_lands_at_failures_intervals_plus_timeout() {
        for (interval, timeout, failures) in [(2000, 1000, 3), (200, 150, 2), (1000, 1000, 1), (500, 7, 5)] {
            let mut s = Sim::new(&cfg(interval, timeout, failures, 2), &[A, B]);
            s.set(A, |n| if n == 1 { Answer::After(3, 200) } else { Answer::Silent });
            s.set(B, |_| Answer::Silent);
            s.run_until(u64::from(failures + 2) * interval);
            let b_down = u64::from(failures - 1) * interval + timeout;
            let a_down = u64::from(failures) * interval + timeout;
            let expect = vec![
                (b_down, Event::WentDown { backend: addr(B), outcome: Outcome::Timeout }),
                (a_down, Event::WentDown { backend: addr(A), outcome: Outcome::Timeout }),
            ];
            assert_eq!(s.transitions(), expect, "interval {interval} timeout {timeout} failures {failures}");
            assert_eq!(s.m.is_up(addr(A)), Some(false));
        }
    }

    /// Recovery: `successes` good answers in a row, the last at its RTT.
    #[test]
    fn recovers_after_successes_replies() {
        let (interval, timeout, failures, successes) = (1000, 400, 2, 3);
        let mut s = Sim::new(&cfg(interval, timeout, failures, successes), &[A]);
        // Silent for probes 1-2 (down at 1400), answers from probe 3 (at 2000) on, in 25 ms.
        s.set(A, |n| if n <= 2 { Answer::Silent } else { Answer::After(25, 200) });
        s.run_until(10_100);
        assert_eq!(
            s.transitions(),
            vec![
                (1400, Event::WentDown { backend: addr(A), outcome: Outcome::Timeout }),
                // Answers to the probes at 2000, 3000, 4000: up at 4025.
                (4025, Event::WentUp { backend: addr(A) }),
            ]
        );
        // Probes 3-11 answered; each reports the simulated 25 ms RTT.
        let rtts: Vec<Duration> = s
            .log
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Probed { rtt, .. } => *rtt,
                _ => None,
            })
            .collect();
        assert_eq!(rtts, vec![Duration::from_millis(25); 9]);
    }

    #[test]
    fn a_flapping_backend_never_transitions() {
        let mut s = Sim::new(&cfg(1000, 500, 2, 2), &[A]);
        s.set(A, |n| if n % 2 == 0 { Answer::Silent } else { Answer::After(10, 200) });
        s.run_until(600_000);
        assert!(s.transitions().is_empty(), "{:?}", s.transitions());
        assert_eq!(s.sent.len(), 601);
        let failed = s.log.iter().filter(|(_, e)| matches!(e, Event::Probed { alive: false, .. })).count();
        assert_eq!(failed, 300);
        // A status code outside the alive set flaps the same way.
        let mut s = Sim::new(&cfg(1000, 500, 2, 2), &[A]);
        s.set(A, |n| Answer::After(1, if n % 2 == 0 { 503 } else { 200 }));
        s.run_until(600_000);
        assert!(s.transitions().is_empty());
    }

    #[test]
    fn late_replies_are_ignored() {
        let mut s = Sim::new(&cfg(1000, 300, 1, 1), &[A]);
        // Answers exactly at the timeout, and later: both too late.
        s.set(A, |n| Answer::After(if n == 1 { 300 } else { 700 }, 200));
        s.run_until(5_000);
        assert_eq!(s.transitions(), vec![(300, Event::WentDown { backend: addr(A), outcome: Outcome::Timeout })]);
        assert!(s.log.iter().all(|(_, e)| !matches!(e, Event::Probed { outcome: Outcome::Reply(_), .. })));
        // Duplicate answers count once.
        let t0 = Instant::now();
        let mut m = Probing::new(41);
        m.configure(t0, &cfg(1000, 300, 1, 1), [addr(A)]);
        let p = m.poll_transmit(t0).unwrap();
        assert_eq!(p.token, 42);
        m.on_reply(t0 + Duration::from_millis(5), p.token, 200);
        m.on_reply(t0 + Duration::from_millis(6), p.token, 200);
        m.on_reply(t0 + Duration::from_millis(6), 7, 503);
        assert!(matches!(m.poll_event(), Some(Event::Probed { rtt: Some(_), .. })));
        assert_eq!(m.poll_event(), None);
    }

    #[test]
    fn send_failures_count_as_failures() {
        let mut s = Sim::new(&cfg(1000, 500, 3, 1), &[A]);
        s.set(A, |_| Answer::SendFails);
        s.run_until(5_000);
        // Reported when the send fails, not at the timeout: down with the third.
        assert_eq!(s.transitions(), vec![(2000, Event::WentDown { backend: addr(A), outcome: Outcome::SendFailed })]);
        assert_eq!(s.m.in_flight(), 0);
        assert!(s.log.iter().all(|(_, e)| match e {
            Event::Probed { outcome, alive, rtt, .. } => *outcome == Outcome::SendFailed && !alive && rtt.is_none(),
            _ => true,
        }));
    }

    #[test]
    fn removing_a_backend_drops_its_pending_probes() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let c = cfg(1000, 500, 1, 1);
        let mut m = Probing::new(0);
        m.configure(t0, &c, [addr(A), addr(B)]);
        let pa = m.poll_transmit(t0).unwrap();
        let pb = m.poll_transmit(t0).unwrap();
        assert_eq!((pa.backend, pb.backend), (addr(A), addr(B)));
        assert_eq!(m.poll_transmit(t0), None);
        assert_eq!(m.in_flight(), 2);
        m.configure(ms(100), &c, [addr(B)]);
        assert_eq!(m.in_flight(), 1);
        assert_eq!(m.is_up(addr(A)), None);
        // Its answer is ignored, its probe never times out.
        m.on_reply(ms(120), pa.token, 200);
        m.handle_timeout(ms(600));
        let evs: Vec<_> = std::iter::from_fn(|| m.poll_event()).collect();
        assert_eq!(
            evs,
            vec![
                Event::Probed { backend: addr(B), outcome: Outcome::Timeout, alive: false, rtt: None },
                Event::WentDown { backend: addr(B), outcome: Outcome::Timeout },
            ]
        );
        // Added again, it starts afresh: up, probed at once.
        m.configure(ms(700), &c, [addr(A), addr(B)]);
        assert_eq!(m.is_up(addr(A)), Some(true));
        assert_eq!(m.poll_timeout(), Some(ms(700)));
        assert_eq!(m.poll_transmit(ms(700)).map(|p| p.backend), Some(addr(A)));
        // B stays down and on its schedule (next at 1000).
        assert_eq!(m.is_up(addr(B)), Some(false));
        assert_eq!(m.poll_transmit(ms(700)), None);
        assert_eq!(m.poll_timeout(), Some(ms(1000)));
    }

    #[test]
    fn a_reload_that_changes_the_interval_reschedules() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut m = Probing::new(0);
        m.configure(t0, &cfg(10_000, 500, 3, 2), [addr(A)]);
        let p = m.poll_transmit(t0).unwrap();
        m.on_reply(ms(10), p.token, 200);
        assert_eq!(m.poll_timeout(), Some(ms(10_000)));
        // Shorter: due one new interval after the last probe.
        m.configure(ms(100), &cfg(1000, 500, 3, 2), [addr(A)]);
        assert_eq!(m.poll_timeout(), Some(ms(1000)));
        // Shorter than the time already waited: due now.
        m.configure(ms(200), &cfg(150, 100, 3, 2), [addr(A)]);
        assert_eq!(m.poll_timeout(), Some(ms(200)));
        assert!(m.poll_transmit(ms(200)).is_some());
        assert_eq!(m.poll_timeout(), Some(ms(300))); // its timeout (100 ms)
                                                     // Longer: postponed. Same interval, other settings: schedule kept.
        m.configure(ms(250), &cfg(5000, 100, 3, 2), [addr(A)]);
        m.configure(ms(260), &cfg(5000, 200, 4, 1), [addr(A)]);
        assert_eq!(m.poll_timeout(), Some(ms(400))); // the probe at 200 now times out at 400
        m.handle_timeout(ms(400));
        assert_eq!(m.poll_timeout(), Some(ms(5200)));
        // A backend added with the reload is probed at once.
        m.configure(ms(500), &cfg(5000, 200, 4, 1), [addr(A), addr(B)]);
        assert_eq!(m.poll_transmit(ms(500)).map(|p| p.backend), Some(addr(B)));
        assert_eq!(m.poll_timeout(), Some(ms(700)));
    }

    #[test]
    fn disabled_probing_sends_nothing() {
        let mut c = cfg(1000, 500, 1, 1);
        c.enabled = false;
        let mut s = Sim::new(&c, &[A, B]);
        s.run_until(3_600_000);
        assert!(s.sent.is_empty());
        assert!(s.log.is_empty());
        assert_eq!(s.m.poll_timeout(), None);
        // Switched off mid-probe: what was in flight is forgotten, health too.
        let t0 = Instant::now();
        let mut m = Probing::new(0);
        c.enabled = true;
        m.configure(t0, &c, [addr(A)]);
        let p = m.poll_transmit(t0).unwrap();
        m.handle_timeout(t0 + Duration::from_millis(500));
        assert_eq!(m.is_up(addr(A)), Some(false));
        let q = m.poll_transmit(t0 + Duration::from_millis(1000)).unwrap();
        c.enabled = false;
        m.configure(t0 + Duration::from_millis(1100), &c, [addr(A)]);
        while m.poll_event().is_some() {}
        m.on_reply(t0 + Duration::from_millis(1200), q.token, 200);
        m.on_reply(t0 + Duration::from_millis(1200), p.token, 200);
        assert_eq!(m.poll_transmit(t0 + Duration::from_secs(60)), None);
        assert_eq!(m.poll_event(), None);
        assert_eq!((m.poll_timeout(), m.in_flight(), m.is_up(addr(A))), (None, 0, None));
        // On again: probed at once, starting up.
        c.enabled = true;
        m.configure(t0 + Duration::from_secs(61), &c, [addr(A)]);
        assert_eq!(m.is_up(addr(A)), Some(true));
        assert!(m.poll_transmit(t0 + Duration::from_secs(61)).is_some());
    }

    /// A stalled driver does not get a burst of probes when it wakes up.
    #[test]
    fn a_late_driver_gets_one_probe_not_a_burst() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut m = Probing::new(0);
        m.configure(t0, &cfg(100, 50, 3, 2), [addr(A)]);
        assert!(m.poll_transmit(t0).is_some());
        assert!(m.poll_transmit(ms(1050)).is_some());
        assert_eq!(m.poll_transmit(ms(1050)), None);
        assert_eq!(m.poll_timeout(), Some(ms(1100))); // its timeout at 1100, next probe at 1150
        m.handle_timeout(ms(1100));
        assert_eq!(m.poll_timeout(), Some(ms(1150)));
    }

    /// Minutes of probing, several backends and behaviours, in virtual time.
    #[test]
    fn an_hour_of_probing_in_virtual_time() {
        let started = std::time::Instant::now();
        let mut s = Sim::new(&cfg(2000, 1000, 3, 2), &[A, B, V6]);
        // A: fine. B: dead for probes 100-199. V6: answers slowly (900 ms, in time).
        s.set(B, |n| if (100..200).contains(&n) { Answer::Silent } else { Answer::After(3, 200) });
        s.set(V6, |_| Answer::After(900, 200));
        s.run_until(3_600_000);
        let wall = started.elapsed();
        assert_eq!(s.sent.len(), 3 * 1801);
        // B's probe 100 went out at 99 * 2000 ms; down on the third timeout,
        // up with the second good answer (probes 200 and 201, answered in 3 ms).
        assert_eq!(
            s.transitions(),
            vec![
                (101 * 2000 + 1000, Event::WentDown { backend: addr(B), outcome: Outcome::Timeout }),
                (200 * 2000 + 3, Event::WentUp { backend: addr(B) }),
            ]
        );
        // The driver wakes only at deadlines: once per round for the probes,
        // once per answer instant and timeout, nowhere near a ms-by-ms loop.
        assert!(s.wakeups < 4 * 1801 + 100, "{} wake-ups", s.wakeups);
        eprintln!("1 h of probing 3 backends ({} probes, {} wake-ups) simulated in {wall:?}", s.sent.len(), s.wakeups);
    }
}
