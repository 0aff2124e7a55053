//! SIPp calls through a balancer (comparisons 1, 4 and 5): UAC(s) -> balancer
//! -> two UAS at a fixed call rate. Yields the balancer's CPU time per
//! forwarded message, its peak RSS, and calls lost to reordering (SIPp's
//! Unexpected-Msg count, summed over UACs and UASs).
use std::time::Duration;

use anyhow::Result;

use super::balancer::{Balancer, Kind, Site, Usage};
use super::sipp::{self, Stats, MESSAGES_PER_CALL};
use super::{free_addrs, Env};

pub struct CallRun {
    pub kind: Kind,
    pub workers: usize,
    pub rate: u64,
    pub uac: Stats,
    pub uas: Stats,
    pub usage: Usage,
}

impl CallRun {
    /// Messages a balancer must have forwarded for the completed calls.
    pub fn sipp_messages(&self) -> u64 {
        self.uac.successful * MESSAGES_PER_CALL
    }

    /// The balancer's own count when it has one, else SIPp's.
    pub fn messages(&self) -> u64 {
        self.usage.forwarded.unwrap_or_else(|| self.sipp_messages())
    }

    pub fn unexpected(&self) -> u64 {
        self.uac.unexpected + self.uas.unexpected
    }
}

/// `seconds` of calls at `rate` calls/s, split over `uacs` SIPp UACs (each its
/// own source port, so SO_REUSEPORT can spread them over workers).
pub fn run(env: &Env, kind: Kind, workers: usize, rate: u64, seconds: u64, uacs: usize, tag: &str) -> Result<CallRun> {
    let addrs = free_addrs(3 + uacs)?;
    let (listen, backends, locals) = (addrs[0], &addrs[1..3], &addrs[3..]);
    let lifetime = Duration::from_secs(seconds + 40);
    let name = |role: &str, i: usize| format!("{tag}-{role}{i}");
    let uas = backends
        .iter()
        .enumerate()
        .map(|(i, b)| sipp::start_uas(Site::LOOPBACK, *b, &name("uas", i), &env.logs, lifetime))
        .collect::<Result<Vec<_>>>()?;
    let mut lb = Balancer::start(env, kind, workers, listen, backends, tag, Site::LOOPBACK)?;
    lb.mark();
    let per_uac_rate = (rate / uacs as u64).max(1);
    let running = locals
        .iter()
        .enumerate()
        .map(|(i, l)| {
            sipp::start_uac(
                Site::LOOPBACK,
                listen,
                *l,
                per_uac_rate,
                per_uac_rate * seconds,
                &name("uac", i),
                &env.logs,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let mut uac = Stats::default();
    for u in running {
        uac = uac + u.finish()?;
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut usage = lb.usage();
    lb.stop(&mut usage)?;
    // UAS statistics are dumped every second.
    std::thread::sleep(Duration::from_millis(1100));
    let mut uas_stats = Stats::default();
    for u in uas {
        uas_stats = uas_stats + u.finish()?;
    }
    Ok(CallRun { kind, workers, rate, uac, uas: uas_stats, usage })
}
