//! Running the XDP program on crafted frames with BPF_PROG_TEST_RUN, without
//! attaching it anywhere: the fixture tests and the benchmark use this.

use std::time::Duration;

use anyhow::{bail, Context as _};
use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use sip_lb_common::maps::{names, Counters, PassReason};
use sip_lb_proto::shield::ShieldPolicy;

use super::{counters::ProgramCounters, object};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

/// What the program did with one frame, read from its verdict and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Steered to `worker`; `hash` is the Call-ID hash. XDP_REDIRECT into the
    /// CPU map, or XDP_PASS counted as kept local when the worker's CPU is
    /// the one running the test.
    Steered { worker: u32, hash: u64 },
    /// XDP_PASS, counted under `reason`.
    Passed(PassReason),
    /// XDP_PASS unscanned: this CPU was below the redirect threshold.
    BelowThreshold,
    /// XDP_DROP by the shield: the source is in the block list.
    Blocked,
    /// XDP_DROP by the shield: the source is over its rate.
    RateLimited,
}

/// The XDP program loaded and configured, but not attached.
pub struct XdpTestProgram {
    ebpf: Ebpf,
    shield: Option<super::shield::XdpShield>,
}

impl XdpTestProgram {
    /// Loads the program for `worker_cpus.len()` workers on those CPUs.
    pub fn load(worker_cpus: &[u32], sip_ports: &[u16]) -> anyhow::Result<Self> {
        let mut ebpf = object::open()?;
        object::configure(&mut ebpf, worker_cpus, sip_ports)?;
        object::configure_cpu_map(&mut ebpf, worker_cpus)?;
        object::load_xdp(&mut ebpf)?;
        Ok(Self { ebpf, shield: None })
    }

    /// Sets the redirect threshold (SIP datagrams per CPU and rate window;
    /// 0, the default here, redirects always).
    pub fn set_redirect_above(&mut self, per_window: u32) -> anyhow::Result<()> {
        object::set_redirect_above(&mut self.ebpf, per_window)
    }

    /// Writes the shield's XDP stage from `policy` (as `Steering::attach`
    /// does), with no bans.
    pub fn set_shield(&mut self, policy: &ShieldPolicy) -> anyhow::Result<()> {
        self.set_shield_with_bans(policy, &[])
    }

    /// Writes `policy` and the runtime `bans` (prefix, hit slot), as the
    /// control plane does on a ban or reload.
    pub fn set_shield_with_bans(
        &mut self,
        policy: &ShieldPolicy,
        bans: &[(sip_lb_proto::shield::Prefix, u32)],
    ) -> anyhow::Result<()> {
        if self.shield.is_none() {
            self.shield = Some(super::shield::XdpShield::take(&mut self.ebpf)?);
        }
        self.shield.as_ref().context("shield maps")?.publish(policy, bans)
    }

    /// The shield's maps (after a `set_shield*`).
    pub fn shield(&self) -> Option<&super::shield::XdpShield> {
        self.shield.as_ref()
    }

    fn prog(&self) -> anyhow::Result<&Xdp> {
        Ok(self.ebpf.program(names::XDP_PROG).context("XDP program")?.try_into()?)
    }

    /// Instructions the verifier processed to accept the program (its
    /// budget is 1,000,000): how much room the scan loops leave.
    pub fn verified_insns(&self) -> anyhow::Result<Option<u32>> {
        Ok(self.prog()?.info()?.verified_instruction_count())
    }

    /// The counters so far.
    pub fn counters(&self) -> anyhow::Result<ProgramCounters> {
        ProgramCounters::read(&self.ebpf, names::XDP_COUNTERS)
    }

    /// Runs `frame` once; returns the raw XDP action.
    pub fn run_raw(&self, frame: &[u8]) -> anyhow::Result<u32> {
        let opts = TestRunOptions { data_in: Some(frame), repeat: 1, ..TestRunOptions::new() };
        let r = self.prog()?.test_run(opts).context("BPF_PROG_TEST_RUN")?;
        Ok(r.return_value)
    }

    /// Runs `frame` once and explains the verdict from the counters it moved.
    pub fn run(&self, frame: &[u8]) -> anyhow::Result<Verdict> {
        let before = self.counters()?;
        let action = self.run_raw(frame)?;
        let after = self.counters()?;
        let delta = |f: fn(&Counters) -> &[u64]| -> Vec<usize> {
            f(&after.total)
                .iter()
                .zip(f(&before.total))
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(i, _)| i)
                .collect()
        };
        let steered = delta(|c| &c.steered);
        let passed = delta(|c| &c.passed);
        let kept_local = after.total.kept_local != before.total.kept_local;
        let below = after.total.below_threshold != before.total.below_threshold;
        let blocked = after.total.shield_blocked != before.total.shield_blocked;
        let limited = after.total.shield_rate_limited != before.total.shield_rate_limited;
        match (action, steered.as_slice(), passed.as_slice()) {
            (XDP_DROP, [], []) if blocked && !limited => Ok(Verdict::Blocked),
            (XDP_DROP, [], []) if limited && !blocked => Ok(Verdict::RateLimited),
            (XDP_PASS, [], []) if below => Ok(Verdict::BelowThreshold),
            (XDP_REDIRECT, [w], []) | (XDP_PASS, [w], []) if (action == XDP_PASS) == kept_local => {
                // The CPU that ran it is the one whose packet count moved.
                let hash = after
                    .per_cpu
                    .iter()
                    .zip(&before.per_cpu)
                    .find(|(a, b)| a.packets != b.packets)
                    .map(|(a, _)| a.last_hash)
                    .context("no CPU counted the packet")?;
                Ok(Verdict::Steered { worker: *w as u32, hash })
            }
            (XDP_PASS, [], [r]) => Ok(Verdict::Passed(PassReason::ALL[*r])),
            _ => bail!("inconsistent run: action {action}, steered {steered:?}, passed {passed:?}"),
        }
    }

    /// Runs `frame` `repeat` times in the kernel; mean time per run.
    pub fn bench(&self, frame: &[u8], repeat: u32) -> anyhow::Result<Duration> {
        let opts = TestRunOptions { data_in: Some(frame), repeat, ..TestRunOptions::new() };
        let r = self.prog()?.test_run(opts).context("BPF_PROG_TEST_RUN")?;
        Ok(r.duration)
    }
}
