//! SIPp in the client namespace: the REGISTER and INVITE scenarios of `lab/sipp/`, with the
//! users of `lab/sipp/users.csv` injected (`-inf`), bounded by SIPp's own `-timeout` and by a
//! hard deadline after which the lab kills it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::{describe_status, ChildGuard};
use crate::sipp::{exit_meaning, parse_stat_csv, split_message_log};
use anyhow::{bail, Result};

use super::netns::NetNs;

/// One SIPp run to start.
pub struct Run<'a> {
    pub name: &'a str,
    pub scenario: PathBuf,
    pub users_csv: PathBuf,
    pub local: SocketAddr,
    pub target: SocketAddr,
    pub rate: u64,
    pub calls: u64,
    pub timeout: Duration,
}

/// What a finished run reported.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub created: u64,
    pub successful: u64,
    pub failed: u64,
    pub exit: String,
    pub messages_log: PathBuf,
}

pub fn start(ns: &NetNs, run: &Run<'_>, dir: &Path) -> Result<ChildGuard> {
    let p = |suffix: &str| dir.join(format!("{}.{suffix}", run.name)).display().to_string();
    let mut cmd = ns.command(&["sipp"]);
    cmd.arg("-sf")
        .arg(&run.scenario)
        .arg("-inf")
        .arg(&run.users_csv)
        .arg(run.target.to_string())
        .args(["-i", &run.local.ip().to_string(), "-p", &run.local.port().to_string()])
        .args(["-r", &run.rate.to_string(), "-m", &run.calls.to_string()])
        .args(["-timeout", &format!("{}s", run.timeout.as_secs().max(1)), "-timeout_error"])
        // -nd: no default behaviours (an aborted call must not send a BYE to the farm).
        .args(["-recv_timeout", "5000", "-nd", "-nostdin", "-fd", "1"])
        .args(["-trace_stat", "-stf", &p("stat.csv")])
        .args(["-buff_size", crate::sipp::BUFF_SIZE])
        .args(["-trace_screen", "-screen_file", &p("screen.log")])
        .args(["-trace_msg", "-message_file", &p("messages.log")])
        .args(["-trace_err", "-error_file", &p("errors.log")]);
    ChildGuard::spawn(run.name, cmd, dir)
}

/// Waits for SIPp to end (killing it after `limit`), then reads its statistics.
pub fn finish(mut guard: ChildGuard, limit: Duration, dir: &Path) -> Result<Outcome> {
    let started = Instant::now();
    let status = loop {
        if let Some(s) = guard.wait_timeout(Duration::from_millis(100))? {
            break s;
        }
        if let Err(e) = super::interrupt::check() {
            guard.stop()?;
            return Err(e);
        }
        if started.elapsed() >= limit {
            guard.stop()?;
            bail!(
                "SIPp {} did not end within {limit:?} (killed); stdout tail:\n{}",
                guard.name(),
                guard.stdout_tail(20)
            );
        }
    };
    let name = guard.name().to_owned();
    let p = |suffix: &str| dir.join(format!("{name}.{suffix}"));
    let counters = std::fs::read_to_string(p("stat.csv")).ok().and_then(|t| parse_stat_csv(&t)).unwrap_or_default();
    if counters.is_empty() {
        bail!(
            "SIPp {name} ended with {} ({}) and wrote no statistics; stderr:\n{}",
            describe_status(status),
            exit_meaning(status),
            guard.stderr_tail(20)
        );
    }
    let get = |k: &str| counters.get(k).copied().unwrap_or(0);
    Ok(Outcome {
        created: get("TotalCallCreated"),
        successful: get("SuccessfulCall"),
        failed: get("FailedCall"),
        exit: format!("{} ({})", describe_status(status), exit_meaning(status)),
        messages_log: p("messages.log"),
    })
}

/// From the INVITE run's message log: for every 302 received, whether its Contact is the one
/// registered for the called user (`registered`: user -> contact URI, from the shared table).
/// Returns (right, wrong examples, total 302s).
pub fn check_redirects(messages_log: &Path, registered: &BTreeMap<String, String>) -> Result<(u64, Vec<String>, u64)> {
    let text = std::fs::read_to_string(messages_log)?;
    let (mut right, mut wrong, mut total) = (0, Vec::new(), 0);
    for msg in split_message_log(&text) {
        if !msg.contains("message received") || !msg.lines().any(|l| l.trim_start().starts_with("SIP/2.0 302")) {
            continue;
        }
        total += 1;
        let to_user = header(&msg, &["To:", "t:"]).and_then(|v| uri_user(&v));
        let contact = header(&msg, &["Contact:", "m:"]).map(|v| uri_of(&v));
        match (to_user, contact) {
            (Some(user), Some(contact)) if registered.get(&user).is_some_and(|c| uri_of(c) == contact) => right += 1,
            (user, contact) => {
                if wrong.len() < 5 {
                    wrong.push(format!(
                        "To user {user:?}: Contact {contact:?}, registered {:?}",
                        user.as_ref().and_then(|u| registered.get(u))
                    ));
                }
            }
        }
    }
    Ok((right, wrong, total))
}

fn header(msg: &str, names: &[&str]) -> Option<String> {
    msg.lines().map(str::trim_start).find_map(|l| {
        names.iter().find_map(|n| {
            (l.len() >= n.len() && l[..n.len()].eq_ignore_ascii_case(n)).then(|| l[n.len()..].trim().to_owned())
        })
    })
}

/// `<sip:u@h:p;x>;expires=3` -> `sip:u@h:p;x`; a bare URI up to the first `;` param.
fn uri_of(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].to_owned(),
        _ => value.split(';').next().unwrap_or("").trim().to_owned(),
    }
}

fn uri_user(value: &str) -> Option<String> {
    let uri = uri_of(value);
    let rest = uri.strip_prefix("sip:")?;
    Some(rest.split_once('@')?.0.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        assert_eq!(uri_of("<sip:lab0001@10.77.1.1:5061>;expires=3600"), "sip:lab0001@10.77.1.1:5061");
        assert_eq!(uri_of("sip:a@b;lr"), "sip:a@b");
        assert_eq!(uri_user("<sip:lab0007@lab.invalid>;tag=1").as_deref(), Some("lab0007"));
    }
}
