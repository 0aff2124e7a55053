//! Project tasks: `cargo xtask run`, `cargo xtask test`, `cargo xtask setup`.
mod bench;
mod checks;
mod demo;
mod fuzz;
mod package;
mod setup;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sip_lb_tests::lab;

#[derive(Parser)]
#[command(about = "sip-lb project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing (Debian packages, rust-src, bpf-linker).
    Setup,
    /// Build and run sip-lb. With no arguments: the lab (sip-lb with XDP in
    /// front of a Kamailio farm, in network namespaces) for a bounded time.
    /// Otherwise the arguments go to `sip-lb run`, e.g. `-- --config FILE`.
    Run {
        /// Lab length in seconds (no-argument mode).
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// The older loopback-only demo (SIPp backends, no namespaces).
        #[arg(long)]
        loopback: bool,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Side-by-side performance against Kamailio and a null forwarder;
    /// writes target/bench/report.md.
    Bench {
        /// The 2-minute plan instead of the 10-minute one.
        #[arg(long)]
        quick: bool,
        /// Only these comparisons (comma-separated): cpu, order, rate,
        /// latency, net, fixed. Default: all of them.
        #[arg(long, value_delimiter = ',')]
        only: Vec<bench::Comparison>,
        /// The soak alone (issue 14): half the max rate for --soak-seconds,
        /// RSS over time, loss, the accounting invariant.
        #[arg(long)]
        soak: bool,
        /// Length of the soak (default 600).
        #[arg(long, requires = "soak")]
        soak_seconds: Option<u64>,
    },
    /// Run every fuzz target for a bounded time.
    Fuzz {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// The static checks `test` starts with: rustfmt, clippy -D warnings,
    /// unused dependencies, a pure core crate.
    Check,
    /// The Debian package (cargo-deb): binary, systemd unit, config, man
    /// pages, completions; prints its path.
    Package {
        /// Package the debug build instead of the release one.
        #[arg(long)]
        dev: bool,
    },
    /// Build everything and run every test of the project.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

/// Per fuzz target in `cargo xtask test`: enough to catch regressions on
/// the seed corpus, short enough for CI.
const FUZZ_SECONDS_IN_TEST: u64 = 20;

pub(crate) fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

// `cargo test` without --workspace: the default members, i.e. all but the
// eBPF crate, which only builds for bpfel-unknown-none (via sip-lb/build.rs).
fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Setup => setup::ensure_all(),
        Task::Run { seconds, loopback, args } => {
            setup::ensure_all()?;
            eprintln!("xtask: building sip-lb (release)");
            setup::run(cargo().args(["build", "--release", "-p", "sip-lb"]))?;
            let bin = target_dir().join("release/sip-lb");
            if args.is_empty() && loopback {
                demo::run_demo(&bin, seconds)
            } else if args.is_empty() {
                let summary = lab::run_lab(&bin, lab::LabOptions { seconds: seconds.max(4), ..Default::default() })?;
                let problems = summary.problems();
                if !problems.is_empty() {
                    anyhow::bail!("lab: {}", problems.join("; "));
                }
                Ok(())
            } else {
                let err = exec(Command::new(&bin).arg("run").args(&args));
                Err(err).context("starting sip-lb")
            }
        }
        Task::Bench { quick, only, soak, soak_seconds } => {
            setup::ensure_all()?;
            let soak = soak.then(|| soak_seconds.unwrap_or(bench::SOAK_SECONDS));
            bench::run(bench::Options { quick, only, soak })
        }
        Task::Fuzz { seconds } => {
            setup::ensure_all()?;
            fuzz::run_short(seconds)
        }
        Task::Check => {
            setup::ensure_all()?;
            checks::all()
        }
        Task::Package { dev } => {
            setup::ensure_all()?;
            package::build(dev).map(|p| println!("{}", p.display()))
        }
        Task::Test { args } => {
            setup::ensure_all()?;
            checks::all()?;
            eprintln!("xtask: building every binary (end-to-end tests run target/debug/sip-lb)");
            setup::run(cargo().args(["build", "--bins"]))?;
            // tests/tests/package.rs installs it (debug build: no release build here).
            let deb = package::build(true)?;
            eprintln!("xtask: running every test");
            setup::run(cargo().args(["test", "--no-fail-fast"]).args(&args).env("SIP_LB_DEB", &deb))?;
            if args.is_empty() {
                eprintln!("xtask: short fuzz runs (long runs: docs/fuzzing.md)");
                fuzz::run_short(FUZZ_SECONDS_IN_TEST)?;
            }
            Ok(())
        }
    }
}

/// Replaces xtask with the command, so signals reach sip-lb directly.
fn exec(cmd: &mut Command) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    cmd.exec()
}
