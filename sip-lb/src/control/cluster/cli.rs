//! The CLI side of scale-out: `sip-lb drain-node` (over the control API)
//! and `sip-lb config-digest` (offline, from a file).
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hyper::Method;

use super::DrainLimits;
use crate::config::{Config, RunArgs};
use crate::control::client::{call, ControlArgs};

#[derive(clap::Args, Debug, Clone)]
pub struct DrainNodeArgs {
    /// Traffic has stopped once no datagram arrived for this long.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub quiet_ms: u64,
    /// Stop after this long even if datagrams still arrive.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
    #[command(flatten)]
    pub control: ControlArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DigestArgs {
    /// The TOML config file.
    #[arg(long)]
    pub config: std::path::PathBuf,
    /// Also print the canonical text the digest is taken over.
    #[arg(long)]
    pub verbose: bool,
}

/// `sip-lb drain-node`: starts the drain, then waits until the instance has
/// stopped (its control API no longer answers).
pub async fn drain_node(a: DrainNodeArgs) -> Result<String> {
    let addr = a.control.control;
    let path = format!("/cluster/drain-node?quiet_ms={}&timeout_s={}", a.quiet_ms, a.timeout);
    let (status, body) = call(addr, Method::POST, &path).await?;
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        bail!("drain-node refused: {} (HTTP {})", v["error"].as_str().unwrap_or("?"), status.as_u16());
    }
    let start = Instant::now();
    // The instance exits on its own at the timeout at the latest.
    let deadline = start + Duration::from_secs(a.timeout) + Duration::from_secs(10);
    while call(addr, Method::GET, "/cluster").await.is_ok() {
        if Instant::now() >= deadline {
            bail!("VIPs withdrawn, but the instance at {addr} is still running after {:?}", start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(format!(
        "VIPs withdrawn; traffic drained and the instance stopped after {:.1} s\n",
        start.elapsed().as_secs_f64()
    ))
}

/// `sip-lb config-digest --config FILE`.
pub fn config_digest(a: DigestArgs) -> Result<()> {
    let config = Config::load(&RunArgs { config: Some(a.config), ..RunArgs::default() })?;
    if a.verbose {
        print!("{}", super::digest::canonical(&config));
    }
    println!("{}", super::digest::digest(&config));
    Ok(())
}

/// The drain limits of a `/cluster/drain-node` query string.
pub fn limits_from_query(query: &str) -> Result<DrainLimits, String> {
    let mut l = DrainLimits::default();
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("{kv:?}: expected key=value"))?;
        let n: u64 = v.parse().map_err(|_| format!("{k}: {v:?} is not a number"))?;
        match k {
            "quiet_ms" => l.quiet = Duration::from_millis(n),
            "timeout_s" => l.timeout = Duration::from_secs(n),
            _ => return Err(format!("unknown parameter {k}")),
        }
    }
    Ok(l)
}
