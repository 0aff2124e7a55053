//! Reading the programs' per-CPU counters back, for metrics.

use std::fmt;

use anyhow::Context as _;
use aya::{maps::PerCpuArray, Ebpf};
use sip_lb_common::maps::{Counters, PassReason, PASS_REASONS};

/// One program's counters: the sum over CPUs and each CPU's own values.
#[derive(Clone, Debug)]
pub struct ProgramCounters {
    pub total: Counters,
    /// Index = CPU number (possible CPUs).
    pub per_cpu: Vec<Counters>,
}

impl ProgramCounters {
    pub(crate) fn read(ebpf: &Ebpf, map: &str) -> anyhow::Result<Self> {
        let array: PerCpuArray<_, Counters> =
            PerCpuArray::try_from(ebpf.map(map).with_context(|| format!("{map} map"))?)?;
        let values = array.get(&0, 0).with_context(|| format!("reading {map}"))?;
        let per_cpu: Vec<Counters> = values.iter().copied().collect();
        let mut total = Counters::zeroed();
        for c in &per_cpu {
            total.packets += c.packets;
            total.bytes += c.bytes;
            total.kept_local += c.kept_local;
            total.below_threshold += c.below_threshold;
            total.shield_blocked += c.shield_blocked;
            total.shield_rate_limited += c.shield_rate_limited;
            for (t, v) in total.passed.iter_mut().zip(c.passed) {
                *t += v;
            }
            for (t, v) in total.steered.iter_mut().zip(c.steered) {
                *t += v;
            }
        }
        Ok(Self { total, per_cpu })
    }

    /// Datagrams steered to `worker`.
    pub fn steered(&self, worker: usize) -> u64 {
        self.total.steered.get(worker).copied().unwrap_or(0)
    }

    /// Datagrams passed unsteered for `reason`.
    pub fn passed(&self, reason: PassReason) -> u64 {
        self.total.passed[reason as usize]
    }

    /// All steered datagrams.
    pub fn steered_total(&self) -> u64 {
        self.total.steered.iter().sum()
    }
}

impl fmt::Display for ProgramCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "packets={} bytes={} steered={}", self.total.packets, self.total.bytes, self.steered_total())?;
        for (name, n) in [
            ("kept_local", self.total.kept_local),
            ("below_threshold", self.total.below_threshold),
            ("shield_blocked", self.total.shield_blocked),
            ("shield_rate_limited", self.total.shield_rate_limited),
        ] {
            if n != 0 {
                write!(f, " {name}={n}")?;
            }
        }
        for r in PassReason::ALL.iter().take(PASS_REASONS) {
            let n = self.passed(*r);
            if n != 0 {
                write!(f, " {}={n}", r.name())?;
            }
        }
        Ok(())
    }
}

/// Counters of both programs. `xdp` is `None` in reuseport-only mode.
#[derive(Clone, Debug)]
pub struct XdpCounters {
    pub xdp: Option<ProgramCounters>,
    pub reuseport: ProgramCounters,
}

impl fmt::Display for XdpCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(x) = &self.xdp {
            write!(f, "xdp: {x}; ")?;
        }
        write!(f, "reuseport: {}", self.reuseport)
    }
}
