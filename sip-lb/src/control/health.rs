//! The health of one backend as a pure state machine: probe outcomes in,
//! up/down transitions out. [`super::probing`] keeps one per backend and
//! feeds it; no sockets, no clock, so the hysteresis is tested event by event.
use crate::config::HealthConfig;

/// What became of one OPTIONS probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A final response with this status code arrived in time.
    Reply(u16),
    /// No final response within `timeout_ms`.
    Timeout,
    /// The probe could not be sent (e.g. ICMP port unreachable reported on
    /// the socket, no route).
    SendFailed,
}

/// A change of health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    WentUp,
    WentDown,
}

/// Consecutive-result hysteresis: `failures` bad probes in a row take an up
/// backend down, `successes` good ones in a row bring a down backend back.
/// A backend starts up, so traffic flows from the first datagram; a dead
/// one leaves after `failures` probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    up: bool,
    /// Consecutive results contradicting the current state.
    streak: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health::new()
    }
}

impl Health {
    pub const fn new() -> Health {
        Health { up: true, streak: 0 }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Whether `outcome` counts as alive under `cfg`.
    pub fn is_alive(outcome: Outcome, cfg: &HealthConfig) -> bool {
        matches!(outcome, Outcome::Reply(code) if cfg.alive.contains(code))
    }

    /// Feeds one probe outcome; returns the transition it caused, if any.
    pub fn on_probe(&mut self, outcome: Outcome, cfg: &HealthConfig) -> Option<Transition> {
        let alive = Health::is_alive(outcome, cfg);
        if alive == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { cfg.failures } else { cfg.successes };
        if self.streak < needed.max(1) {
            return None;
        }
        self.up = alive;
        self.streak = 0;
        Some(if alive { Transition::WentUp } else { Transition::WentDown })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AliveCodes;

    fn cfg(failures: u32, successes: u32) -> HealthConfig {
        HealthConfig { failures, successes, ..HealthConfig::default() }
    }

    #[test]
    fn goes_down_after_failures_in_a_row() {
        let c = cfg(3, 2);
        let mut h = Health::new();
        assert!(h.is_up());
        assert_eq!(h.on_probe(Outcome::Timeout, &c), None);
        assert_eq!(h.on_probe(Outcome::SendFailed, &c), None);
        assert_eq!(h.on_probe(Outcome::Timeout, &c), Some(Transition::WentDown));
        assert!(!h.is_up());
        assert_eq!(h.on_probe(Outcome::Timeout, &c), None);
    }

    #[test]
    fn a_good_probe_resets_the_failure_streak() {
        let c = cfg(2, 1);
        let mut h = Health::new();
        assert_eq!(h.on_probe(Outcome::Timeout, &c), None);
        assert_eq!(h.on_probe(Outcome::Reply(200), &c), None);
        assert_eq!(h.on_probe(Outcome::Timeout, &c), None);
        assert!(h.is_up());
        assert_eq!(h.on_probe(Outcome::Timeout, &c), Some(Transition::WentDown));
    }

    #[test]
    fn comes_back_after_successes_in_a_row() {
        let c = cfg(1, 3);
        let mut h = Health::new();
        assert_eq!(h.on_probe(Outcome::Timeout, &c), Some(Transition::WentDown));
        assert_eq!(h.on_probe(Outcome::Reply(200), &c), None);
        assert_eq!(h.on_probe(Outcome::Reply(200), &c), None);
        assert_eq!(h.on_probe(Outcome::Timeout, &c), None); // streak broken
        assert_eq!(h.on_probe(Outcome::Reply(200), &c), None);
        assert_eq!(h.on_probe(Outcome::Reply(204), &c), None);
        assert_eq!(h.on_probe(Outcome::Reply(200), &c), Some(Transition::WentUp));
        assert!(h.is_up());
    }

    #[test]
    fn reply_codes_count_only_if_listed() {
        let mut c = cfg(1, 1);
        let mut h = Health::new();
        // 503 is not in the default 2xx set: a reply, but not alive.
        assert_eq!(h.on_probe(Outcome::Reply(503), &c), Some(Transition::WentDown));
        assert_eq!(h.on_probe(Outcome::Reply(404), &c), None);
        c.alive = AliveCodes::class(2).with(404);
        assert_eq!(h.on_probe(Outcome::Reply(404), &c), Some(Transition::WentUp));
        assert!(!Health::is_alive(Outcome::Reply(99), &c));
        assert!(!Health::is_alive(Outcome::Reply(700), &c));
    }

    #[test]
    fn thresholds_of_one_flip_immediately() {
        let c = cfg(1, 1);
        let mut h = Health::new();
        for _ in 0..3 {
            assert_eq!(h.on_probe(Outcome::Timeout, &c), Some(Transition::WentDown));
            assert_eq!(h.on_probe(Outcome::Reply(200), &c), Some(Transition::WentUp));
        }
    }
}
