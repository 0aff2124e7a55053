//! A real Prometheus server (Debian package `prometheus`) scraping sip-lb, and
//! its HTTP query API: the dashboard's and the alert rules' expressions are
//! evaluated by the program that will evaluate them in production.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::ports::free_tcp_addr;
use crate::process::ChildGuard;
use crate::sink::wait_until;

/// `prometheus` and `promtool`, installed by `cargo xtask setup`.
pub fn binary(name: &str) -> Result<PathBuf> {
    let p = PathBuf::from("/usr/bin").join(name);
    if !p.is_file() {
        bail!("{} not found: install the Debian package prometheus (`cargo xtask setup` does)", p.display());
    }
    Ok(p)
}

/// A Prometheus server scraping `targets` every second, its data in `dir`.
pub struct Prometheus {
    pub addr: SocketAddr,
    _child: ChildGuard,
}

impl Prometheus {
    pub fn start(targets: &[SocketAddr], dir: &Path) -> Result<Prometheus> {
        let addr = free_tcp_addr()?;
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: sip-lb\n    \
                 static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )?;
        let mut cmd = Command::new(binary("prometheus")?);
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"));
        let mut child = ChildGuard::spawn("prometheus", cmd, dir)?;
        wait_until(Duration::from_secs(30), || {
            child.ensure_running().is_ok() && get(addr, "/-/ready").is_ok_and(|(s, _)| s == 200)
        })
        .with_context(|| format!("prometheus did not become ready:\n{}", child.stderr_tail(20)))?;
        Ok(Prometheus { addr, _child: child })
    }

    /// `GET /api/v1/query?query=EXPR`: the result array (as JSON), or the
    /// error Prometheus gave.
    pub fn query(&self, expr: &str) -> Result<Vec<serde_json::Value>> {
        let (status, body) = get(self.addr, &format!("/api/v1/query?query={}", url_encode(expr)))?;
        let v: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("HTTP {status}, not JSON: {body}"))?;
        if v["status"] != "success" {
            bail!("{expr}: {}", v["error"]);
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A GET over HTTP/1.1 that understands chunked answers (Prometheus sends them).
fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no end of HTTP header")?;
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no HTTP status")?;
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    Ok((status, if chunked { dechunk(body)? } else { body.to_owned() }))
}

fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("chunk size line")?;
        let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).context("chunk size")?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..n).context("short chunk")?);
        body = rest.get(n + 2..).context("chunk end")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_promql_and_reads_chunks() {
        assert_eq!(url_encode("rate(a{b=~\"c\"}[5s])"), "rate%28a%7Bb%3D~%22c%22%7D%5B5s%5D%29");
        assert_eq!(dechunk("4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n").unwrap(), "abcdefg");
        assert!(dechunk("4\r\nab").is_err());
    }
}
