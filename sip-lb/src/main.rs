//! `sip-lb`: command line. The work happens in the library; this file wires
//! the control plane (tokio, signals) to the data plane (pinned workers).
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use clap::{Parser, Subcommand};

use sip_lb::config::{Config, RunArgs};
use sip_lb::control;
use sip_lb::dataplane::{self, affinity, stats::Summary, Dataplane};

#[derive(Parser)]
#[command(name = "sip-lb", version, about = "Stateless SIP load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the balancer until SIGINT/SIGTERM (SIGHUP reloads the config).
    Run(RunArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SIP_LB_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    let result = match Cli::parse().command {
        Command::Run(args) => run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sip-lb: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: RunArgs) -> Result<()> {
    // Everything is validated and bound before any worker starts: a bad config
    // or a busy port exits here, nothing runs half-configured.
    let config = Config::load(&args)?;
    let plan = Arc::new(ArcSwap::from_pointee(control::reload::build_plan(&config)));
    let sockets = dataplane::bind_sockets(&config.listen, config.workers).context("binding listen sockets")?;
    let allowed = affinity::allowed_cpus();
    let cpus: Vec<usize> = (0..config.workers).map(|i| allowed[i % allowed.len()]).collect();

    let dp = Dataplane::start(sockets, &cpus, plan.clone())?;
    tracing::info!(
        listen = ?config.listen,
        advertise = %config.advertise,
        workers = config.workers,
        ?cpus,
        "sip-lb forwarding"
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let served = rt.block_on(control::run_until_shutdown(args, config, plan));

    let stats = dp.stop();
    for (i, s) in stats.iter().enumerate() {
        eprintln!("{}", Summary(i, s));
    }
    served
}
