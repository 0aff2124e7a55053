//! Installs what a fresh Debian machine lacks for building and testing
//! sip-lb, idempotently, saying what it does. Safe to run every time: each
//! step checks first and is silent when nothing is missing.
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian packages and why we need them.
const PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "bpf-linker links the XDP program with LLVM 22"),
    ("libpolly-22-dev", "needed to link bpf-linker against LLVM 22"),
    ("libzstd-dev", "needed to link bpf-linker"),
    ("zlib1g-dev", "needed to link bpf-linker"),
    ("libxml2-dev", "needed to link bpf-linker"),
    ("sip-tester", "SIPp, the SIP client/server in tests and the demo"),
    ("iproute2", "network namespaces and veth pairs for XDP tests"),
    ("ethtool", "turns off veth checksum offload in XDP tests"),
    ("bpftool", "required by the fault tests: checks that no XDP program is left on an interface"),
    ("openssl", "makes the TLS tests' certificates and checks handshakes with s_client"),
    ("prometheus", "evaluates the dashboard's expressions and tests the alert rules (promtool)"),
    ("kamailio", "real SIP backends, registrar and baseline in the lab, the bench and the transport tests"),
    ("kamailio-sqlite-modules", "the lab's registrars share one location database"),
    ("kamailio-tls-modules", "a TLS peer nobody here wrote, for the TLS transport tests"),
    ("baresip-core", "real user agents registering and calling through sip-lb"),
    ("bird2", "BGP and ECMP for the scale-out tests (BIRD announces the VIP)"),
    ("dnsmasq-base", "a real DNS server for the host-name and SRV backend tests"),
    ("sngrep", "a HEP collector nobody here wrote, for the HEP mirroring tests"),
    ("tmux", "drives `sip-lb top` in its terminal UI test"),
    ("systemd", "systemd-analyze verify checks the packaged unit"),
    ("adduser", "the package's maintainer scripts create the sip-lb user"),
    ("man-db", "systemd-analyze verify finds the unit's Documentation=man: pages"),
];

pub fn ensure_all() -> Result<()> {
    ensure_packages(PACKAGES)?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

pub fn ensure_packages(wanted: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<_> = wanted.iter().filter(|(p, _)| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (p, why) in &missing {
        eprintln!("setup: installing Debian package {p} ({why})");
    }
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600"])
        .args(missing.iter().map(|(p, _)| *p))
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn ensure_rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("running rustup (is Rust installed with rustup?)")?;
    let list = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!("setup: installing the nightly toolchain (builds the XDP program)");
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    if !list.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: adding rust-src to nightly (-Z build-std=core for bpfel-unknown-none)");
        run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    Ok(())
}

fn cargo_bin(name: &str) -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"));
    home.join("bin").join(name)
}

fn ensure_bpf_linker() -> Result<()> {
    let on_path = Command::new("bpf-linker").arg("--version").output().is_ok_and(|o| o.status.success());
    if on_path || cargo_bin("bpf-linker").exists() {
        return Ok(());
    }
    eprintln!("setup: building bpf-linker against LLVM 22 (about a minute)");
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--locked", "--no-default-features", "--features", "llvm-22"])
        .env("LLVM_PREFIX", "/usr/lib/llvm-22"))
}

pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// The cargo-deb release `cargo xtask package` is written for.
const CARGO_DEB_VERSION: &str = "3.8.0";

/// cargo-deb, only for `cargo xtask package` and the package test.
pub fn ensure_cargo_deb() -> Result<()> {
    let version = Command::new("cargo").args(["deb", "--version"]).output();
    if version.is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(CARGO_DEB_VERSION)) {
        return Ok(());
    }
    eprintln!("setup: building cargo-deb {CARGO_DEB_VERSION} (builds the Debian package; about two minutes)");
    run(Command::new("cargo").args(["install", "cargo-deb", "--locked", "--version", CARGO_DEB_VERSION]))
}
