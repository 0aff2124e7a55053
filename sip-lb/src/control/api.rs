//! The control plane's HTTP/1.1 server (hyper), on the `metrics` address
//! (default 127.0.0.1:5070):
//!
//! | method | path                      | answer                                   |
//! |--------|---------------------------|------------------------------------------|
//! | GET    | `/metrics`                | Prometheus/OpenMetrics text              |
//! | GET    | `/backends`               | JSON list of backends (state, counters)  |
//! | GET    | `/stats`                  | JSON snapshot: workers and backends      |
//! | POST   | `/backends/{addr}/drain`  | JSON backend; 404 if not configured      |
//! | POST   | `/backends/{addr}/enable` | same                                     |
//! | POST   | `/reload`                 | `{"generation":N}`, or 422 `{"error":..}`|
//! | GET    | `/bans`                   | JSON list of runtime bans                |
//! | POST   | `/bans/block/{ip}[/{len}][?seconds=N]` | ban a prefix (until lifted without `seconds`) |
//! | POST   | `/bans/unblock/{ip}[/{len}]` | lift it; 404 if it is not banned      |
//! | GET    | `/cluster`                | JSON: VIPs, announced, draining, config digest |
//! | POST   | `/cluster/drain-node[?quiet_ms=N&timeout_s=N]` | withdraw the VIPs, stop once traffic stops; 409 without VIPs |
//!
//! POSTs are refused (403) unless they come from a loopback address, so
//! exposing `/metrics` to a Prometheus server does not expose the admin API.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::Control;

/// Binds the API address and serves it in the background. A failure to bind
/// an explicitly configured address is an error; the built-in default only
/// warns (e.g. a second instance on one host).
pub async fn start(control: Arc<Control>) -> Result<()> {
    let (addr, explicit) = control.api_addr();
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if !explicit => {
            tracing::warn!("control API disabled: cannot bind the default {addr}: {e} (set `metrics`/--control)");
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("binding the control/metrics address {addr}")),
    };
    tracing::info!(addr = %listener.local_addr()?, "control API and /metrics listening");
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("control API accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let control = control.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let control = control.clone();
                    async move { Ok::<_, Infallible>(handle(&control, req, peer).await) }
                });
                if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await {
                    tracing::debug!(%peer, "control API connection: {e}");
                }
            });
        }
    });
    Ok(())
}

type Body = Full<Bytes>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, content_type)
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    reply(status, "application/json", body)
}

fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response<Body> {
    json(status, &serde_json::json!({ "error": msg.to_string() }))
}

async fn handle(control: &Arc<Control>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    // Drain the request body (bounded); none of the endpoints takes one.
    let _ = http_body_util::Limited::new(req.into_body(), 64 * 1024).collect().await;
    if method == Method::POST && !peer.ip().is_loopback() {
        return error(StatusCode::FORBIDDEN, "admin requests are accepted from loopback only");
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["metrics"]) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            super::metrics::render_with(
                control.snapshot(),
                control.xdp_counters(),
                super::metrics::Extra {
                    streams: control.streams(),
                    stun: control.stun(),
                    cluster: Some(super::cluster::metrics::ClusterView::of(control)),
                    hep: control.hep(),
                },
            ),
        ),
        (&Method::GET, ["stats"]) => json(StatusCode::OK, &control.snapshot()),
        (&Method::GET, ["backends"]) => json(StatusCode::OK, &control.snapshot().backends),
        (&Method::POST, ["backends", addr, action @ ("drain" | "enable")]) => {
            let Ok(addr) = crate::config::parse_sip_addr(addr) else {
                return error(StatusCode::BAD_REQUEST, format!("{addr:?} is not an ip:port address"));
            };
            match control.set_drained(addr, *action == "drain") {
                Ok(_) => match control.snapshot().backends.into_iter().find(|b| b.addr == addr) {
                    Some(b) => json(StatusCode::OK, &b),
                    None => error(StatusCode::NOT_FOUND, super::UnknownBackend(addr)),
                },
                Err(e) => error(StatusCode::NOT_FOUND, e),
            }
        }
        (&Method::GET, ["bans"]) => json(StatusCode::OK, &control.bans()),
        (&Method::POST, ["bans", action @ ("block" | "unblock"), rest @ ..]) if matches!(rest.len(), 1 | 2) => {
            let text = rest.join("/");
            let prefix = match sip_lb_proto::shield::Prefix::parse(&text) {
                Ok(p) => p,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            if *action == "unblock" {
                return match control.unblock(&prefix) {
                    true => json(StatusCode::OK, &control.bans()),
                    false => error(StatusCode::NOT_FOUND, format!("{prefix} is not banned")),
                };
            }
            let seconds = query.split('&').find_map(|kv| kv.strip_prefix("seconds="));
            let duration = match seconds.map(str::parse::<u64>) {
                None => None,
                Some(Ok(s)) if s > 0 => Some(std::time::Duration::from_secs(s)),
                Some(_) => return error(StatusCode::BAD_REQUEST, "seconds must be a positive integer"),
            };
            control.block(prefix, duration);
            json(StatusCode::OK, &control.bans())
        }
        (&Method::GET, ["cluster"]) => json(StatusCode::OK, &super::cluster::metrics::ClusterView::of(control)),
        (&Method::POST, ["cluster", "drain-node"]) => match super::cluster::cli::limits_from_query(&query) {
            Err(e) => error(StatusCode::BAD_REQUEST, e),
            Ok(limits) => match control.drain_node(limits) {
                Ok(()) => json(StatusCode::OK, &super::cluster::metrics::ClusterView::of(control)),
                Err(e) => error(StatusCode::CONFLICT, format!("{e:#}")),
            },
        },
        (&Method::POST, ["reload"]) => match control.reload() {
            Ok(g) => json(StatusCode::OK, &serde_json::json!({ "generation": g })),
            Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")),
        },
        (_, ["metrics" | "stats" | "backends" | "reload" | "bans"]) | (_, ["backends", _, "drain" | "enable"]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, format!("{method} not allowed on {path}"))
        }
        _ => error(StatusCode::NOT_FOUND, format!("no endpoint {path}")),
    }
}
