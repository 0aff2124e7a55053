//! The CLI side of the control API: `sip-lb backends`, `drain`, `enable`,
//! `reload` (and `top`, in [`super::top`]) talk HTTP/1.1 to a running
//! instance's control address.
use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::snapshot::{BackendSnapshot, Snapshot};
use crate::config::{parse_sip_addr, DEFAULT_CONTROL};

/// Where a running sip-lb serves its control API.
#[derive(clap::Args, Debug, Clone)]
pub struct ControlArgs {
    /// The instance's control address (`metrics` in its config).
    #[arg(long, visible_alias = "metrics", value_name = "ADDR", default_value_t = DEFAULT_CONTROL)]
    pub control: SocketAddr,
}

/// One request, one connection; returns status and body.
pub async fn call(addr: SocketAddr, method: Method, path: &str) -> Result<(StatusCode, Bytes)> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the control API at {addr} (is sip-lb running? see --control)"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let res = sender.send_request(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn api_error(status: StatusCode, body: &[u8]) -> anyhow::Error {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    anyhow::anyhow!("{msg} (HTTP {})", status.as_u16())
}

pub async fn stats(addr: SocketAddr) -> Result<Snapshot> {
    let (status, body) = call(addr, Method::GET, "/stats").await?;
    if !status.is_success() {
        return Err(api_error(status, &body));
    }
    Ok(serde_json::from_slice(&body)?)
}

/// `sip-lb backends`: one line per backend.
pub async fn backends(addr: SocketAddr) -> Result<String> {
    let s = stats(addr).await?;
    let mut out = format!(
        "{:<28} {:<9} {:<20} {:>12} {:>12} {:>8} {:>10}\n",
        "BACKEND", "STATE", "POOL:WEIGHT", "REQUESTS", "RESPONSES", "RTT_MS", "PROBES_BAD"
    );
    for b in &s.backends {
        out += &backend_line(b);
    }
    out += &format!("config generation {}\n", s.generation);
    Ok(out)
}

fn backend_line(b: &BackendSnapshot) -> String {
    let pools: Vec<String> = b.pools.iter().map(|(p, w)| format!("{p}:{w}")).collect();
    format!(
        "{:<28} {:<9} {:<20} {:>12} {:>12} {:>8} {:>10}\n",
        b.addr.to_string(),
        b.state,
        pools.join(","),
        b.requests,
        b.responses,
        b.probe_rtt_ms.map_or_else(|| "-".into(), |r| format!("{r:.2}")),
        format!("{}/{}", b.probe_failures, b.probes),
    )
}

/// `sip-lb drain|enable ADDR`.
pub async fn set_drained(addr: SocketAddr, backend: &str, drain: bool) -> Result<String> {
    let backend = parse_sip_addr(backend).map_err(|e| anyhow::anyhow!("{backend:?}: {e}"))?;
    let path = format!("/backends/{backend}/{}", if drain { "drain" } else { "enable" });
    let (status, body) = call(addr, Method::POST, &path).await?;
    if !status.is_success() {
        return Err(api_error(status, &body));
    }
    let b: BackendSnapshot = serde_json::from_slice(&body)?;
    Ok(format!("{} {}\n", b.addr, b.state))
}

/// `sip-lb reload`: the new generation, or the reason the config was refused.
pub async fn reload(addr: SocketAddr) -> Result<String> {
    let (status, body) = call(addr, Method::POST, "/reload").await?;
    if !status.is_success() {
        bail!("reload rejected, the running config is unchanged: {}", api_error(status, &body));
    }
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(format!("reloaded: config generation {}\n", v["generation"]))
}

/// `sip-lb bans`: the runtime bans.
pub async fn bans(addr: SocketAddr) -> Result<String> {
    let (status, body) = call(addr, Method::GET, "/bans").await?;
    if !status.is_success() {
        bail!("{}", api_error(status, &body));
    }
    let list: Vec<super::bans::BanView> = serde_json::from_slice(&body)?;
    let mut out =
        format!("{:<44} {:<9} {:>10} {:>12} {:>12}\n", "PREFIX", "REASON", "AGE_S", "EXPIRES_IN_S", "PACKETS");
    for b in &list {
        let reason = serde_json::to_value(b.reason)?.as_str().unwrap_or("").to_owned();
        let expires = b.expires_in_s.map_or("never".into(), |s| format!("{s:.0}"));
        out += &format!("{:<44} {:<9} {:>10.0} {:>12} {:>12}\n", b.prefix, reason, b.age_s, expires, b.packets);
    }
    out += &format!("{} ban(s)\n", list.len());
    Ok(out)
}

/// `sip-lb block PREFIX [--for SECONDS]` / `sip-lb unblock PREFIX`.
pub async fn set_ban(addr: SocketAddr, prefix: &str, block: bool, seconds: Option<u64>) -> Result<String> {
    let p = sip_lb_proto::shield::Prefix::parse(prefix).map_err(|e| anyhow::anyhow!(e))?;
    let action = if block { "block" } else { "unblock" };
    let path = match (block, seconds) {
        (true, Some(s)) => format!("/bans/{action}/{p}?seconds={s}"),
        _ => format!("/bans/{action}/{p}"),
    };
    let (status, body) = call(addr, Method::POST, &path).await?;
    if !status.is_success() {
        bail!("{}", api_error(status, &body));
    }
    Ok(match (block, seconds) {
        (true, Some(s)) => format!("banned {p} for {s} s\n"),
        (true, None) => format!("banned {p} until unblocked\n"),
        (false, _) => format!("lifted the ban of {p}\n"),
    })
}
