//! The control plane: a small tokio runtime beside the data plane. It owns
//! configuration and publishes new [`Plan`]s; it never touches a datagram.
pub mod reload;

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, RunArgs};
use crate::dataplane::SharedPlan;

/// Serves signals until SIGINT or SIGTERM: SIGHUP re-reads the config.
pub async fn run_until_shutdown(args: RunArgs, running: Config, plan: SharedPlan) -> Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut running = running;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                match reload::reload(&args, &running, &plan) {
                    Ok(next) => running = next,
                    Err(e) => tracing::error!("reload rejected, keeping the running config: {e:#}"),
                }
            }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); return Ok(()); }
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); return Ok(()); }
        }
    }
}
