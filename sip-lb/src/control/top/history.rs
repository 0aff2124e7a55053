//! The last minutes of per-second rates behind the sparklines, per worker
//! and per backend.
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use super::rates::Rates;

/// Points kept per series: more than any terminal is wide.
const POINTS: usize = 300;

#[derive(Default)]
pub struct History {
    workers: BTreeMap<usize, VecDeque<u64>>,
    backends: BTreeMap<SocketAddr, VecDeque<u64>>,
}

fn push(series: &mut VecDeque<u64>, v: f64) {
    if series.len() == POINTS {
        series.pop_front();
    }
    series.push_back(v.round() as u64);
}

impl History {
    /// Appends one poll: workers' received and backends' request rates.
    pub fn record(&mut self, r: &Rates) {
        for w in &r.workers {
            push(self.workers.entry(w.worker).or_default(), w.rx);
        }
        for b in &r.backends {
            if let Some(a) = b.addr {
                push(self.backends.entry(a).or_default(), b.requests);
            }
        }
    }

    /// The last `n` points of worker `w`, oldest first.
    pub fn worker(&self, w: usize, n: usize) -> Vec<u64> {
        last(self.workers.get(&w), n)
    }

    pub fn backend(&self, a: SocketAddr, n: usize) -> Vec<u64> {
        last(self.backends.get(&a), n)
    }
}

fn last(s: Option<&VecDeque<u64>>, n: usize) -> Vec<u64> {
    s.map(|s| s.iter().skip(s.len().saturating_sub(n)).copied().collect()).unwrap_or_default()
}
