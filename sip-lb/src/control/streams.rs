//! What a reload changes in the stream layer: the `tls:` listeners'
//! certificate (`[tls]`), the backends' connections (pools' `transport`,
//! `large_over_tcp`, their backends) and `[backend_tls]`. The PEM files are
//! read first, with the config, so a bad certificate refuses the whole
//! reload (the error names the file) and the running one stays; then the
//! new certificate serves new handshakes and the links follow the new
//! config (`stream::links`), before the new Plan is published.
use std::sync::Arc;

use anyhow::{bail, Result};
use tokio_rustls::rustls::ServerConfig;

use super::Control;
use crate::config::Config;

/// The certificates a reload read, not applied yet.
pub(super) struct StreamTls {
    server: Option<Arc<ServerConfig>>,
    connector: Option<tokio_rustls::TlsConnector>,
}

impl Control {
    /// Reads `next`'s certificates; refuses what the running stream layer
    /// cannot take.
    pub(super) fn read_stream_tls(&self, next: &Config) -> Result<StreamTls> {
        if self.links.is_none() && !next.links.is_empty() {
            bail!(
                "pools reaching backends over tcp/tls (or large_over_tcp) need a restart: sip-lb started without \
                 stream listeners or such pools, so no connection layer runs"
            );
        }
        let server = match (&self.certs, &next.tls) {
            (Some(_), Some(t)) => Some(crate::stream::tls::server_config(t)?),
            // The validator requires [tls] with a tls: listener, and listeners do not change.
            _ => None,
        };
        Ok(StreamTls { server, connector: crate::stream::connector(next)? })
    }

    /// Takes `tls` (read from `next`) into the stream layer.
    pub(super) fn apply_streams(&self, next: &Config, tls: StreamTls) {
        if let (Some(certs), Some(server)) = (&self.certs, tls.server) {
            certs.replace(server);
            tracing::info!("[tls] certificate re-read: new handshakes use it");
        }
        if let Some(links) = &self.links {
            links.apply(&next.links, tls.connector);
        }
    }
}
