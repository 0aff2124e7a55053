//! Test certificates made with `openssl` for each run: a CA and a P-256 certificate it
//! signed for an IP address (127.0.0.1 unless another is given) and ::1 (WebPKI, as rustls uses
//! it, refuses a self-signed certificate as the server's own, hence two levels).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

/// Runs openssl with `args` in `dir`, failing with its stderr.
pub fn openssl(args: &[&str], dir: &Path) -> Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (Debian package openssl)")?;
    ensure!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// In `dir`: (CA certificate, certificate for IPs 127.0.0.1 and ::1, its key).
pub fn make_certs(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    make_certs_for(dir, "127.0.0.1".parse().expect("literal"))
}

/// [`make_certs`] for a server at `ip` (a listener in a namespace of its own).
pub fn make_certs_for(dir: &Path, ip: std::net::IpAddr) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "1", "-subj", "/CN=sip-lb test CA", "-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
        dir,
    )?;
    openssl(
        &[&["req"][..], &ec, &["-subj", &format!("/CN={ip}"), "-keyout", "key.pem", "-out", "server.csr"]].concat(),
        dir,
    )?;
    std::fs::write(dir.join("server.ext"), format!("subjectAltName=IP:{ip},IP:::1\nbasicConstraints=CA:FALSE\n"))?;
    openssl(
        &["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1"]
            .into_iter()
            .chain(["-extfile", "server.ext", "-out", "cert.pem"])
            .collect::<Vec<_>>(),
        dir,
    )?;
    Ok((dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem")))
}

/// A client certificate signed by the CA of [`make_certs`] in `dir`: (certificate, key).
pub fn make_client_cert(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &[&["req"][..], &ec, &["-subj", "/CN=client", "-keyout", "client.key", "-out", "client.csr"]].concat(),
        dir,
    )?;
    std::fs::write(dir.join("client.ext"), "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")?;
    openssl(
        &["x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1"]
            .into_iter()
            .chain(["-extfile", "client.ext", "-out", "client.pem"])
            .collect::<Vec<_>>(),
        dir,
    )?;
    Ok((dir.join("client.pem"), dir.join("client.key")))
}
