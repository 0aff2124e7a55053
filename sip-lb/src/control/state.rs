//! What the control plane knows about each backend: its health (as the
//! prober last reported it), its admin state (drain/enable), its counter slot. From these it
//! derives which backends the next `Plan`'s router may choose.
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Config;
use crate::dataplane::stats::{BackendSlots, MAX_BACKENDS};

/// The state shown by `sip-lb backends` and exported as a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Healthy and enabled: receives its share of Call-IDs.
    Up,
    /// Failing its probes: its Call-IDs go to the others.
    Down,
    /// Taken out by an operator (`sip-lb drain`): receives no new requests;
    /// responses from it are still relayed.
    Draining,
}

impl State {
    pub const ALL: [State; 3] = [State::Up, State::Down, State::Draining];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Draining => "draining",
        }
    }
}

/// Up or down, as [`super::probing`] last reported: the hysteresis that
/// decides lives there, this is what the Plan and `/backends` show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Up,
    Down,
}

impl Liveness {
    pub fn is_up(self) -> bool {
        self == Liveness::Up
    }
}

/// One backend (an address may serve several pools; it is probed once).
#[derive(Clone, Debug)]
pub struct Backend {
    pub health: Liveness,
    pub drained: bool,
    /// Counter slot in every worker's `Counters`, if one was free.
    pub slot: Option<usize>,
    pub last_rtt: Option<Duration>,
    pub last_code: Option<u16>,
    pub probes_sent: u64,
    pub probes_failed: u64,
    /// Its connection cannot be made (pools reaching backends over
    /// TCP/TLS, `super::links`): down whatever the probes say.
    pub link_down: bool,
}

impl Backend {
    fn new(slot: Option<usize>) -> Backend {
        Backend {
            health: Liveness::Up,
            drained: false,
            slot,
            last_rtt: None,
            last_code: None,
            probes_sent: 0,
            probes_failed: 0,
            link_down: false,
        }
    }

    pub fn state(&self) -> State {
        match (self.drained, self.health.is_up() && !self.link_down) {
            (true, _) => State::Draining,
            (false, true) => State::Up,
            (false, false) => State::Down,
        }
    }

    pub fn eligible(&self) -> bool {
        self.state() == State::Up
    }
}

/// Every configured backend by address, and the counter slots.
#[derive(Debug)]
pub struct Backends {
    map: BTreeMap<SocketAddr, Backend>,
    /// Slot -> owner. A freed slot is reused only once all fresh ones are
    /// taken, with a baseline so the new owner's counters start at zero.
    owners: Vec<Option<SocketAddr>>,
    /// Slot -> (requests, responses) summed over workers when it was reused.
    baseline: Vec<(u64, u64)>,
    fresh: usize,
}

impl Default for Backends {
    fn default() -> Self {
        Backends {
            map: BTreeMap::new(),
            owners: vec![None; MAX_BACKENDS],
            baseline: vec![(0, 0); MAX_BACKENDS],
            fresh: 0,
        }
    }
}

impl Backends {
    /// Makes the set match `config`: new backends start up and enabled,
    /// removed ones are forgotten, the others keep health, drain and slot.
    /// `totals(slot)` reads the current worker sums, for reused slots.
    pub fn sync(&mut self, config: &Config, totals: impl Fn(usize) -> (u64, u64)) {
        let wanted: Vec<SocketAddr> = config.pools.iter().flat_map(|p| p.backends.iter().map(|b| b.addr)).collect();
        let gone: Vec<SocketAddr> = self.map.keys().filter(|a| !wanted.contains(a)).copied().collect();
        for a in gone {
            if let Some(b) = self.map.remove(&a) {
                if let Some(s) = b.slot {
                    self.owners[s] = None;
                }
            }
        }
        for a in wanted {
            if self.map.contains_key(&a) {
                continue;
            }
            let slot = if self.fresh < MAX_BACKENDS {
                self.fresh += 1;
                Some(self.fresh - 1)
            } else {
                let s = self.owners.iter().position(Option::is_none);
                if let Some(s) = s {
                    self.baseline[s] = totals(s);
                }
                s
            };
            if let Some(s) = slot {
                self.owners[s] = Some(a);
            } else {
                tracing::warn!(backend = %a, "more than {MAX_BACKENDS} backends: this one is not counted");
            }
            self.map.insert(a, Backend::new(slot));
        }
    }

    /// Marks every backend healthy (probing switched off).
    pub fn reset_health(&mut self) {
        for b in self.map.values_mut() {
            b.health = Liveness::Up;
        }
    }

    pub fn get(&self, addr: SocketAddr) -> Option<&Backend> {
        self.map.get(&addr)
    }

    pub fn get_mut(&mut self, addr: SocketAddr) -> Option<&mut Backend> {
        self.map.get_mut(&addr)
    }

    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &Backend)> + '_ {
        self.map.iter().map(|(a, b)| (*a, b))
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.map.keys().copied().collect()
    }

    pub fn eligible(&self, addr: SocketAddr) -> bool {
        self.map.get(&addr).is_some_and(Backend::eligible)
    }

    /// The address -> slot table for the next `Plan`.
    pub fn slots(&self) -> BackendSlots {
        BackendSlots::new(self.map.iter().filter_map(|(a, b)| Some((*a, b.slot?))))
    }

    /// What a slot counted before its current owner got it.
    pub fn baseline(&self, slot: usize) -> (u64, u64) {
        self.baseline.get(slot).copied().unwrap_or((0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, PoolConfig};

    fn config(addrs: &[&str]) -> Config {
        let mut c = Config::from_toml_str("[[pool]]\nname = \"p\"\nbackends = [\"10.9.9.9:5060\"]\n").unwrap();
        c.pools = vec![PoolConfig {
            name: "p".into(),
            methods: vec![],
            default: true,
            backends: addrs.iter().map(|a| BackendConfig { addr: a.parse().unwrap(), weight: 1 }).collect(),
        }];
        c
    }

    #[test]
    fn sync_keeps_state_and_slots_of_remaining_backends() {
        let mut b = Backends::default();
        b.sync(&config(&["10.0.0.1:5060", "10.0.0.2:5060"]), |_| (0, 0));
        let a1: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let a2: SocketAddr = "10.0.0.2:5060".parse().unwrap();
        let a3: SocketAddr = "10.0.0.3:5060".parse().unwrap();
        b.get_mut(a2).unwrap().drained = true;
        let s2 = b.get(a2).unwrap().slot;
        b.sync(&config(&["10.0.0.2:5060", "10.0.0.3:5060"]), |_| (0, 0));
        assert!(b.get(a1).is_none());
        assert_eq!(b.get(a2).unwrap().state(), State::Draining);
        assert_eq!(b.get(a2).unwrap().slot, s2);
        assert_eq!(b.get(a3).unwrap().state(), State::Up);
        // Fresh slots first: a3 does not inherit a1's counters.
        assert_eq!(b.get(a3).unwrap().slot, Some(2));
        assert!(b.eligible(a3) && !b.eligible(a2) && !b.eligible(a1));
        assert_eq!(b.slots().slot(a3), Some(2));
    }
}
