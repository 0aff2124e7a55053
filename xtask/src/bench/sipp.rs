//! SIPp calls through a balancer: UAC(s) -> balancer -> two UAS. SIPp's
//! built-in `uac`/`uas` scenarios: INVITE, 180, 200, ACK, BYE, 200, so a
//! completed call is six messages through the balancer. Statistics come from
//! SIPp's `-trace_stat` CSV (cumulative columns of its last line).
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::balancer::Site;
use super::procs::{self, Child};

pub const MESSAGES_PER_CALL: u64 = 6;

#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub created: u64,
    pub successful: u64,
    pub failed: u64,
    pub unexpected: u64,
    pub retransmissions: u64,
}

impl std::ops::Add for Stats {
    type Output = Stats;
    fn add(self, o: Stats) -> Stats {
        Stats {
            created: self.created + o.created,
            successful: self.successful + o.successful,
            failed: self.failed + o.failed,
            unexpected: self.unexpected + o.unexpected,
            retransmissions: self.retransmissions + o.retransmissions,
        }
    }
}

pub struct Uas {
    child: Child,
    stat: PathBuf,
}

/// A SIPp UAS on `addr` at `site`, alive at most `lifetime`.
pub fn start_uas(site: Site<'_>, addr: SocketAddr, name: &str, dir: &Path, lifetime: Duration) -> Result<Uas> {
    let stat = dir.join(format!("{name}.csv"));
    let mut cmd = site.command("sipp");
    cmd.args(["-sn", "uas", "-i", &addr.ip().to_string(), "-p", &addr.port().to_string()]);
    // -aa: answer OPTIONS with 200, as a real backend does; sip-lb's health
    // probes would otherwise mark both UAS down and fail calls.
    cmd.arg("-aa");
    common_args(&mut cmd, &stat, lifetime);
    let mut child = Child::spawn(name, cmd, dir)?;
    procs::wait_udp_bound(addr.port(), &mut child, Duration::from_secs(10))?;
    Ok(Uas { child, stat })
}

impl Uas {
    /// Stops it and reads its last statistics dump (written every second).
    pub fn finish(mut self) -> Result<Stats> {
        self.child.stop();
        parse_stats(&self.stat)
    }
}

fn common_args(cmd: &mut Command, stat: &Path, lifetime: Duration) {
    cmd.args(["-nostdin", "-trace_stat", "-fd", "1", "-stf"]).arg(stat);
    cmd.args(["-timeout", &format!("{}s", lifetime.as_secs().max(1)), "-max_recv_loops", "100000"]);
    // Bigger socket buffers than SIPp's 64 KiB (capped by rmem_max): its own
    // drops under load would fail calls and be charged to the forwarder.
    cmd.args(["-buff_size", sip_lb_tests::sipp::BUFF_SIZE]);
}

pub struct Uac {
    child: Child,
    stat: PathBuf,
    deadline: Duration,
}

/// A SIPp UAC at `site` placing `calls` calls at `rate` calls/s to `target`.
pub fn start_uac(
    site: Site<'_>,
    target: SocketAddr,
    local: SocketAddr,
    rate: u64,
    calls: u64,
    name: &str,
    dir: &Path,
) -> Result<Uac> {
    let stat = dir.join(format!("{name}.csv"));
    // Time for the calls plus slack; SIPp gives up after that.
    let deadline = Duration::from_secs(calls / rate.max(1) + 10);
    let mut cmd = site.command("sipp");
    cmd.args(["-sn", "uac"]).arg(target.to_string());
    cmd.args(["-i", &local.ip().to_string(), "-p", &local.port().to_string()]);
    cmd.args(["-r", &rate.to_string(), "-m", &calls.to_string(), "-d", "0"]);
    common_args(&mut cmd, &stat, deadline);
    let child = Child::spawn(name, cmd, dir)?;
    Ok(Uac { child, stat, deadline })
}

impl Uac {
    /// Waits at most `d` for it to finish its calls; true if it has.
    pub fn wait(&mut self, d: Duration) -> bool {
        self.child.wait_timeout(d).is_some()
    }

    /// Stops it now (calls still open stay unfinished) and reads its last
    /// statistics dump.
    pub fn stop(mut self) -> Result<Stats> {
        self.child.stop();
        parse_stats(&self.stat)
    }

    /// Waits until it has placed all its calls (or its deadline).
    pub fn finish(mut self) -> Result<Stats> {
        if self.child.wait_timeout(self.deadline + Duration::from_secs(5)).is_none() {
            self.child.stop();
        }
        let stats = parse_stats(&self.stat)?;
        if stats.created == 0 {
            bail!(
                "SIPp UAC placed no calls; stderr: {}",
                self.child.stderr().lines().take(5).collect::<Vec<_>>().join(" | ")
            );
        }
        Ok(stats)
    }
}

fn parse_stats(path: &Path) -> Result<Stats> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().context("empty SIPp statistics")?.split(';').collect();
    let last: Vec<&str> = lines.next_back().context("no SIPp statistics line")?.split(';').collect();
    let col = |name: &str| -> u64 {
        header
            .iter()
            .position(|h| *h == name)
            .and_then(|i| last.get(i))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Ok(Stats {
        created: col("TotalCallCreated"),
        successful: col("SuccessfulCall(C)"),
        failed: col("FailedCall(C)"),
        unexpected: col("FailedUnexpectedMessage(C)"),
        retransmissions: col("Retransmissions(C)"),
    })
}
