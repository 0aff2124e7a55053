//! `cargo xtask package`: the Debian package (cargo-deb, configured in
//! `sip-lb/Cargo.toml` and `sip-lb/debian/`). The man pages and shell
//! completions are written first by the freshly built binary from its own
//! CLI definition (`sip-lb generate-docs`), where cargo-deb picks them up.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::{cargo, setup, target_dir};

/// Builds the .deb and returns its path. `dev`: package the debug build
/// (what `cargo xtask test` installs, to spare a release build) instead of
/// the release one.
pub fn build(dev: bool) -> Result<PathBuf> {
    setup::ensure_cargo_deb()?;
    let (profile, dir) = if dev { ("dev", "debug") } else { ("release", "release") };
    eprintln!("xtask: building sip-lb ({profile}) for the package");
    // The same builds as `cargo xtask test` and `run`: other feature sets
    // would rebuild the binary the tests use.
    let build: &[&str] = if dev { &["build", "--bins"] } else { &["build", "--release", "-p", "sip-lb"] };
    setup::run(cargo().args(build))?;
    let out = target_dir().join(dir);
    let docs = out.join("docs");
    eprintln!("xtask: man pages and completions from the CLI into {}", docs.display());
    setup::run(std::process::Command::new(out.join("sip-lb")).arg("generate-docs").arg(&docs))?;
    eprintln!("xtask: cargo deb");
    let deb = cargo()
        .args(["deb", "-p", "sip-lb", "--no-build", "--profile", profile])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running cargo deb")?;
    if !deb.status.success() {
        bail!("cargo deb failed: {}", deb.status);
    }
    // cargo-deb prints the path of the package it wrote, last.
    let text = String::from_utf8_lossy(&deb.stdout);
    let path = text.lines().rev().map(str::trim).find(|l| l.ends_with(".deb")).map(PathBuf::from);
    match path {
        Some(p) if p.is_file() => {
            eprintln!("xtask: package {}", p.display());
            Ok(p)
        }
        _ => bail!("cargo deb did not name the package it wrote: {text}"),
    }
}
