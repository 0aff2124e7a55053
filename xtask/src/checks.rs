//! Checks `cargo xtask test` runs before the tests: one formatting style,
//! clippy with the workspace lints and no warnings, no declared dependency
//! that nothing uses, and a pure core (no runtime, kernel or OS interface in
//! the dependency tree of `sip-lb-proto`, so nothing in it can do I/O).
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::cargo;

/// Crates whose presence would mean the core can reach sockets, threads,
/// the kernel or the OS.
const NOT_IN_CORE: &[&str] = &["tokio", "aya", "aya-obj", "libc", "mio", "socket2", "getrandom", "nix", "rustix"];

/// Every check, cheapest first.
pub fn all() -> Result<()> {
    fmt()?;
    pure_core()?;
    unused_dependencies()?;
    clippy()
}

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

/// Clippy over every host crate and the XDP program, warnings denied.
pub fn clippy() -> Result<()> {
    eprintln!("xtask: cargo clippy -D warnings (workspace, fuzz crate, XDP program)");
    let deny = ["--", "-D", "warnings"];
    crate::setup::run(cargo().args(["clippy", "--workspace", "--exclude", "sip-lb-ebpf", "--all-targets"]).args(deny))?;
    crate::setup::run(cargo().args(["clippy", "--manifest-path", "fuzz/Cargo.toml", "--bins"]).args(deny))?;
    // The XDP program needs nightly: through rustup, not the $CARGO running us.
    let ebpf = ["clippy", "--target", "bpfel-unknown-none", "-Z", "build-std=core"];
    crate::setup::run(
        std::process::Command::new("rustup")
            .current_dir(crate::workspace_root().join("sip-lb-ebpf"))
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .args(["run", "nightly", "cargo"])
            .args(ebpf)
            .args(deny),
    )
}

/// Every crate's `[dependencies]`, `[dev-dependencies]` and
/// `[build-dependencies]` are named somewhere in the code they serve (as a
/// path `name::` or `use name`); a dependency only declared is an error.
pub fn unused_dependencies() -> Result<()> {
    eprintln!("xtask: no declared-but-unused dependencies");
    let root = crate::workspace_root();
    let mut unused = Vec::new();
    for member in [
        "sip-lb",
        "sip-lb-proto",
        "sip-lb-udp",
        "sip-lb-afxdp",
        "sip-lb-common",
        "sip-lb-ebpf",
        "xtask",
        "tests",
        "fuzz",
    ] {
        let dir = root.join(member);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).context("read Cargo.toml")?;
        let doc: toml::Table = manifest.parse().with_context(|| format!("{member}/Cargo.toml"))?;
        for (section, code) in [
            ("dependencies", &["src"][..]),
            ("dev-dependencies", &["tests", "benches", "src", "fuzz_targets"][..]),
            ("build-dependencies", &["build.rs"][..]),
        ] {
            let Some(deps) = doc.get(section).and_then(|d| d.as_table()) else { continue };
            let text: String = code.iter().map(|c| rust_text(&dir.join(c))).collect();
            let text = if section == "dependencies" { text + &rust_text(&dir.join("fuzz_targets")) } else { text };
            for name in deps.keys() {
                let ident = name.replace('-', "_");
                let used = [format!("{ident}::"), format!("use {ident}"), format!("extern crate {ident}")]
                    .iter()
                    .any(|needle| text.contains(needle.as_str()));
                if !used {
                    unused.push(format!("{member}: {section}.{name}"));
                }
            }
        }
    }
    if !unused.is_empty() {
        bail!("declared but never used (remove them or use them): {unused:?}");
    }
    Ok(())
}

/// All Rust source under `path` (a file or a directory), concatenated.
fn rust_text(path: &Path) -> String {
    if path.is_file() {
        return std::fs::read_to_string(path).unwrap_or_default();
    }
    let Ok(entries) = std::fs::read_dir(path) else { return String::new() };
    let mut text = String::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            text += &rust_text(&p);
        } else if p.extension().is_some_and(|x| x == "rs") {
            text += &std::fs::read_to_string(&p).unwrap_or_default();
        }
    }
    text
}
