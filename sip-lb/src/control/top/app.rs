//! The terminal UI's state and keys, apart from the terminal: the last
//! snapshot and its rates, the sparkline history, the backend order and
//! selection. A key press becomes at most one [`Action`] for the loop.
use std::net::SocketAddr;
use std::time::Duration;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::history::History;
use super::rates::Rates;
use crate::control::snapshot::Snapshot;

/// How the backend table is ordered (`s` cycles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    #[default]
    Address,
    /// Busiest first.
    Requests,
    /// Down, then draining, then up.
    State,
}

impl Sort {
    fn next(self) -> Sort {
        match self {
            Sort::Address => Sort::Requests,
            Sort::Requests => Sort::State,
            Sort::State => Sort::Address,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Sort::Address => "address",
            Sort::Requests => "req/s",
            Sort::State => "state",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    /// Drain (true) or enable (false) this backend through the control API.
    Drain(SocketAddr, bool),
}

pub struct App {
    pub addr: SocketAddr,
    pub now: Snapshot,
    pub rates: Rates,
    pub history: History,
    pub sort: Sort,
    /// Position in [`App::backend_order`].
    pub selected: usize,
    /// The outcome of the last action, or the last polling error.
    pub status: String,
}

impl App {
    pub fn new(addr: SocketAddr, first: Snapshot) -> App {
        let rates = Rates::between(&first, &first, Duration::from_secs(1));
        App {
            addr,
            now: first,
            rates,
            history: History::default(),
            sort: Sort::default(),
            selected: 0,
            status: String::new(),
        }
    }

    /// A new poll, `dt` after the previous one.
    pub fn update(&mut self, now: Snapshot, dt: Duration) {
        self.rates = Rates::between(&self.now, &now, dt);
        self.history.record(&self.rates);
        self.now = now;
        self.selected = self.selected.min(self.now.backends.len().saturating_sub(1));
    }

    /// Indices into `now.backends` (and `rates.backends`), in display order.
    pub fn backend_order(&self) -> Vec<usize> {
        let b = &self.now.backends;
        let mut order: Vec<usize> = (0..b.len()).collect();
        match self.sort {
            Sort::Address => order.sort_by_key(|&i| b[i].addr),
            Sort::Requests => order.sort_by(|&x, &y| {
                let r = |i: usize| self.rates.backends.get(i).map_or(0.0, |r| r.requests);
                r(y).total_cmp(&r(x)).then(b[x].addr.cmp(&b[y].addr))
            }),
            Sort::State => {
                let rank = |s: &str| match s {
                    "down" => 0,
                    "draining" => 1,
                    _ => 2,
                };
                order.sort_by_key(|&i| (rank(&b[i].state), b[i].addr))
            }
        }
        order
    }

    pub fn selected_backend(&self) -> Option<SocketAddr> {
        let order = self.backend_order();
        order.get(self.selected).map(|&i| self.now.backends[i].addr)
    }

    pub fn key(&mut self, k: KeyEvent) -> Option<Action> {
        if k.kind == KeyEventKind::Release {
            return None;
        }
        let last = self.now.backends.len().saturating_sub(1);
        match k.code {
            KeyCode::Char('q') | KeyCode::Esc => return Some(Action::Quit),
            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return Some(Action::Quit),
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => self.selected = (self.selected + 1).min(last),
            KeyCode::Home => self.selected = 0,
            KeyCode::End => self.selected = last,
            KeyCode::Char('s') => {
                // The selection follows its backend into the new order.
                let keep = self.selected_backend();
                self.sort = self.sort.next();
                let order = self.backend_order();
                if let Some(a) = keep {
                    self.selected = order.iter().position(|&i| self.now.backends[i].addr == a).unwrap_or(0);
                }
            }
            KeyCode::Char('d') => return self.selected_backend().map(|a| Action::Drain(a, true)),
            KeyCode::Char('e') => return self.selected_backend().map(|a| Action::Drain(a, false)),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::snapshot::BackendSnapshot;

    fn backend(addr: &str, state: &str, requests: u64) -> BackendSnapshot {
        BackendSnapshot {
            addr: addr.parse().unwrap(),
            pools: vec![],
            state: state.into(),
            healthy: state != "down",
            drained: state == "draining",
            requests,
            responses: 0,
            probes: 0,
            probe_failures: 0,
            last_probe_code: None,
            probe_rtt_ms: None,
        }
    }

    fn press(app: &mut App, c: KeyCode) -> Option<Action> {
        app.key(KeyEvent::new(c, KeyModifiers::NONE))
    }

    #[test]
    fn sort_keys_and_drain_follow_the_selection() {
        let snap = |a: u64, b: u64, c: u64| Snapshot {
            backends: vec![
                backend("10.0.0.1:5060", "up", a),
                backend("10.0.0.2:5060", "down", b),
                backend("10.0.0.3:5060", "draining", c),
            ],
            ..Default::default()
        };
        let mut app = App::new("127.0.0.1:5070".parse().unwrap(), snap(0, 0, 0));
        app.update(snap(10, 30, 20), Duration::from_secs(1));
        let addrs = |app: &App| -> Vec<String> {
            app.backend_order().iter().map(|&i| app.now.backends[i].addr.to_string()).collect()
        };
        assert_eq!(addrs(&app), ["10.0.0.1:5060", "10.0.0.2:5060", "10.0.0.3:5060"]);
        assert_eq!(press(&mut app, KeyCode::Down), None);
        assert_eq!(app.selected_backend(), Some("10.0.0.2:5060".parse().unwrap()));
        press(&mut app, KeyCode::Char('s'));
        assert_eq!(app.sort, Sort::Requests);
        assert_eq!(addrs(&app), ["10.0.0.2:5060", "10.0.0.3:5060", "10.0.0.1:5060"]);
        assert_eq!(app.selected, 0, "the selection stays on 10.0.0.2");
        press(&mut app, KeyCode::Char('s'));
        assert_eq!(addrs(&app), ["10.0.0.2:5060", "10.0.0.3:5060", "10.0.0.1:5060"], "down, draining, up");
        press(&mut app, KeyCode::End);
        assert_eq!(press(&mut app, KeyCode::Char('d')), Some(Action::Drain("10.0.0.1:5060".parse().unwrap(), true)));
        assert_eq!(press(&mut app, KeyCode::Char('e')), Some(Action::Drain("10.0.0.1:5060".parse().unwrap(), false)));
        assert_eq!(press(&mut app, KeyCode::Char('q')), Some(Action::Quit));
        assert_eq!(app.history.backend("10.0.0.2:5060".parse().unwrap(), 10), [30]);
    }
}
