//! Bounded fuzzing runs of the cargo-fuzz crate in `fuzz/` (its own
//! workspace and target dir). `run_short` is what `cargo xtask test` runs;
//! long runs are documented in docs/fuzzing.md.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The targets, in the order they run.
pub const TARGETS: &[&str] = &["parse", "forward", "callid_diff", "stream_framer"];

/// Installs cargo-fuzz if it is missing, then runs every target for
/// `seconds_per_target` seconds from its committed seed corpus. New inputs go
/// to a scratch corpus under `fuzz/target/` so the repository stays clean;
/// a crash leaves its input in `fuzz/artifacts/<target>/` and fails the run.
pub fn run_short(seconds_per_target: u64) -> Result<()> {
    ensure_cargo_fuzz()?;
    let fuzz_dir = fuzz_dir();
    for target in TARGETS {
        let seeds = fuzz_dir.join("corpus").join(target);
        let scratch = fuzz_dir.join("target").join("short-corpus").join(target);
        std::fs::create_dir_all(&scratch).with_context(|| format!("create {}", scratch.display()))?;
        eprintln!("xtask: fuzzing {target} for {seconds_per_target} s (seeds: {})", seeds.display());
        let status = Command::new("cargo")
            .current_dir(&fuzz_dir)
            .args(["+nightly", "fuzz", "run", "--release", target])
            .arg(&scratch)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds_per_target}"))
            .args(["-max_len=8192", "-timeout=5", "-rss_limit_mb=1024", "-malloc_limit_mb=256"])
            .args(["-print_final_stats=1"])
            .status()
            .context("starting cargo fuzz")?;
        if !status.success() {
            bail!(
                "fuzz target {target} failed ({status}); the input is in {}",
                fuzz_dir.join("artifacts").join(target).display()
            );
        }
    }
    Ok(())
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz (cargo install cargo-fuzz --locked)");
    let status =
        Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]).status().context("starting cargo install")?;
    if !status.success() {
        bail!("cargo install cargo-fuzz failed: {status}");
    }
    Ok(())
}
