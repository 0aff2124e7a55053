//! Checks `cargo xtask test` runs before the tests: one formatting style,
//! and a pure core (no runtime, kernel or OS interface in the dependency
//! tree of `sip-lb-proto`, so nothing in it can do I/O).
use anyhow::{bail, Context, Result};

use crate::cargo;

/// Crates whose presence would mean the core can reach sockets, threads,
/// the kernel or the OS.
const NOT_IN_CORE: &[&str] = &["tokio", "aya", "aya-obj", "libc", "mio", "socket2", "getrandom", "nix", "rustix"];

pub fn fmt() -> Result<()> {
    eprintln!("xtask: cargo fmt --check (workspace and fuzz crate)");
    crate::setup::run(cargo().args(["fmt", "--all", "--check"]))?;
    crate::setup::run(cargo().args(["fmt", "--check", "--manifest-path", "fuzz/Cargo.toml"]))
}

pub fn pure_core() -> Result<()> {
    eprintln!("xtask: sip-lb-proto depends on none of {NOT_IN_CORE:?}");
    let out = cargo()
        .args(["tree", "-p", "sip-lb-proto", "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .output()
        .context("cargo tree")?;
    if !out.status.success() {
        bail!("cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let bad: Vec<&str> =
        tree.lines().filter_map(|l| l.split_whitespace().next()).filter(|name| NOT_IN_CORE.contains(name)).collect();
    if !bad.is_empty() {
        bail!("sip-lb-proto must stay pure, but depends on {bad:?}:\n{tree}");
    }
    Ok(())
}
